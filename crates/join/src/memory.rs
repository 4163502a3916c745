//! In-process join state for the embedded default.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Expired, Put, Side};

#[derive(Default)]
struct Entry {
    left: Option<Vec<u8>>,
    right: Option<Vec<u8>>,
    join_id: Option<String>,
    report_id: Option<String>,
    keep_until_ms: i64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// (deadline, key) of left sides still waiting.
    deadlines: BTreeSet<(i64, String)>,
    /// Puts so far; every few thousand, entries past their keep time are dropped.
    puts: u64,
}

/// Join state in this process (a map and a deadline index behind one lock; entries are dropped once their
/// keep time passes).
#[derive(Clone, Default)]
pub struct MemoryJoin {
    inner: Arc<Mutex<Inner>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl MemoryJoin {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn put(
        &self,
        key: &str,
        side: Side,
        record: &[u8],
        deadline_ms: i64,
        keep_ms: i64,
        proposed_id: &str,
    ) -> Put {
        let mut inner = self.lock();
        let now = now_ms();
        let entry = inner.entries.entry(key.to_owned()).or_default();
        if entry.keep_until_ms != 0 && entry.keep_until_ms < now {
            *entry = Entry::default();
        }
        entry.keep_until_ms = now + keep_ms;
        match side {
            Side::Left => entry.left = Some(record.to_vec()),
            Side::Right => entry.right = Some(record.to_vec()),
        }
        let put = match (&entry.left, &entry.right) {
            (Some(left), Some(_)) if entry.report_id.is_some() => Put::Late { left: left.clone() },
            (Some(left), Some(right)) => {
                let join_id = entry
                    .join_id
                    .get_or_insert_with(|| proposed_id.to_owned())
                    .clone();
                Put::Joined {
                    left: left.clone(),
                    right: right.clone(),
                    join_id,
                }
            }
            _ => Put::Waiting,
        };
        let waiting_left = side == Side::Left && matches!(put, Put::Waiting);
        if waiting_left {
            inner.deadlines.insert((deadline_ms, key.to_owned()));
        }
        inner.puts += 1;
        if inner.puts.is_multiple_of(4096) {
            inner.entries.retain(|_, e| e.keep_until_ms >= now);
        }
        put
    }

    pub(crate) fn expired(
        &self,
        now_ms: i64,
        limit: usize,
        mut propose_id: impl FnMut() -> String,
    ) -> Vec<Expired> {
        let mut inner = self.lock();
        let due: Vec<(i64, String)> = inner
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(limit)
            .cloned()
            .collect();
        let mut expired = Vec::new();
        for (deadline, key) in due {
            let report = inner.entries.get_mut(&key).and_then(|entry| {
                let left = entry.left.clone().filter(|_| entry.right.is_none())?;
                let report_id = entry.report_id.get_or_insert_with(&mut propose_id).clone();
                Some(Expired {
                    key: key.clone(),
                    left,
                    report_id,
                })
            });
            match report {
                Some(report) => expired.push(report),
                // Joined meanwhile, or gone: nothing to report.
                None => {
                    inner.deadlines.remove(&(deadline, key));
                }
            }
        }
        expired
    }

    pub(crate) fn forget_expired(&self, keys: &[String]) {
        let mut inner = self.lock();
        inner.deadlines.retain(|(_, key)| !keys.contains(key));
    }
}

//! Join state in the database (table `join_state` through `orderflow-store`, PostgreSQL or SQLite): durable
//! and shared by every instance, so neither a restart nor a Redis loss drops a half-made join. A batch of
//! puts is one statement; the join id is fixed when a key is first stored.

use std::time::{SystemTime, UNIX_EPOCH};

use orderflow_store::{JoinEntry, JoinPut, Store};

use crate::{Expired, Put, PutRequest, Side, StateError};

/// Join state in the source-of-truth database; cheap to clone.
#[derive(Clone)]
pub struct DbJoin {
    store: Store,
    name: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a put did, from the key's entry after it.
fn outcome(entry: Option<&JoinEntry>) -> Result<Put, StateError> {
    let Some(entry) = entry else {
        return Err(StateError::Reply {
            reply: "no join entry came back for a key that was put".into(),
            source: None,
        });
    };
    Ok(match (&entry.left, &entry.right) {
        (Some(left), Some(_)) if entry.report_id.is_some() => Put::Late { left: left.clone() },
        (Some(left), Some(right)) => Put::Joined {
            left: left.clone(),
            right: right.clone(),
            join_id: entry.join_id.clone().unwrap_or_default(),
        },
        _ => Put::Waiting,
    })
}

impl DbJoin {
    /// The join called `name` (one table holds any number of joins) in `store`.
    pub fn new(store: Store, name: impl Into<String>) -> Self {
        Self {
            store,
            name: name.into(),
        }
    }

    pub(crate) async fn put_batch(&self, puts: &[PutRequest<'_>]) -> Result<Vec<Put>, StateError> {
        let now = now_ms();
        let rows: Vec<JoinPut> = puts
            .iter()
            .map(|put| JoinPut {
                key: put.key.to_owned(),
                left: (put.side == Side::Left).then(|| put.record.to_vec()),
                right: (put.side == Side::Right).then(|| put.record.to_vec()),
                deadline_ms: put.deadline_ms,
                keep_until_ms: now.saturating_add(put.keep_ms.max(1)),
                proposed_id: put.proposed_id.to_owned(),
            })
            .collect();
        let entries = self.store.join_put(&self.name, &rows).await?;
        let by_key: std::collections::HashMap<&str, &JoinEntry> =
            entries.iter().map(|e| (e.key.as_str(), e)).collect();
        puts.iter()
            .map(|put| outcome(by_key.get(put.key).copied()))
            .collect()
    }

    pub(crate) async fn expired(
        &self,
        now_ms: i64,
        limit: usize,
        propose_id: impl FnMut() -> String,
    ) -> Result<Vec<Expired>, StateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .store
            .join_expired(&self.name, now_ms, limit, propose_id)
            .await?
            .into_iter()
            .map(|e| Expired {
                key: e.key,
                left: e.left,
                report_id: e.report_id,
            })
            .collect())
    }

    pub(crate) async fn forget_expired(&self, keys: &[String]) -> Result<(), StateError> {
        Ok(self.store.join_forget(&self.name, keys).await?)
    }

    pub(crate) async fn prune(&self, now_ms: i64) -> Result<u64, StateError> {
        Ok(self.store.join_prune(now_ms, 10_000).await?)
    }
}

//! The audit trail: a hash chain of every event, and its verification.
//!
//! Row `n` stores `hash_n = SHA-256(hash_{n-1} || n || event id || topic || key || payload)` (lengths
//! prefixed, so fields cannot bleed into each other), starting from 32 zero bytes. Appends lock the chain's
//! head row, so the chain is one sequence however many appenders run. [`verify`](crate::Store::verify_audit)
//! recomputes the chain and names the first row that does not fit: a changed row fails its own hash, a
//! removed row leaves a gap in the positions, reordered rows fail the link to their predecessor.

use sha2::{Digest, Sha256};

/// One event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The event's id (appended once).
    pub event_id: String,
    /// The topic it was read from.
    pub topic: String,
    /// Its key, when it had one.
    pub key: Option<String>,
    /// The record's value, as published.
    pub payload: Vec<u8>,
}

/// What verifying the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every row fits; this many rows.
    Intact(u64),
    /// The chain breaks at this position.
    Broken {
        /// Position of the first row that does not fit.
        seq: i64,
        /// How it does not fit.
        reason: String,
    },
}

/// Chain hash of `entry` at position `seq` after `prev`.
pub fn chain_hash(prev: &[u8], seq: i64, entry: &AuditEntry) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    for field in [
        entry.event_id.as_bytes(),
        entry.topic.as_bytes(),
        entry.key.as_deref().unwrap_or_default().as_bytes(),
        entry.payload.as_slice(),
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().to_vec()
}

/// A stored row, as verification reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub seq: i64,
    pub event_id: String,
    pub topic: String,
    pub msg_key: Option<String>,
    pub payload: Vec<u8>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Checks rows in position order against the chain; `expected_seq` and `prev` carry over between pages.
pub(crate) fn check_rows(
    rows: &[AuditRow],
    expected_seq: &mut i64,
    prev: &mut Vec<u8>,
) -> Option<AuditVerdict> {
    for row in rows {
        let broken = |reason: &str| {
            Some(AuditVerdict::Broken {
                seq: row.seq,
                reason: reason.to_owned(),
            })
        };
        if row.seq != *expected_seq {
            return Some(AuditVerdict::Broken {
                seq: *expected_seq,
                reason: format!("row {} is missing (next is {})", expected_seq, row.seq),
            });
        }
        if row.prev_hash != *prev {
            return broken(
                "its link to the previous row does not match (a row before it was changed, removed or moved)",
            );
        }
        let entry = AuditEntry {
            event_id: row.event_id.clone(),
            topic: row.topic.clone(),
            key: row.msg_key.clone(),
            payload: row.payload.clone(),
        };
        if chain_hash(prev, row.seq, &entry) != row.hash {
            return broken("its content does not match its hash (the row was changed)");
        }
        prev.clone_from(&row.hash);
        *expected_seq += 1;
    }
    None
}

/// The audit queries, the same SQL on both backends.
macro_rules! audit_queries {
    ($store:ident, $db:ty) => {
        impl $store {
            /// Appends `entries` to the chain inside `tx` (which the caller commits), after locking its head.
            pub async fn append_audit(
                tx: &mut sqlx::Transaction<'static, $db>,
                entries: &[$crate::AuditEntry],
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::StoreError> {
                if entries.is_empty() {
                    return Ok(());
                }
                // Writing the head first takes its row lock (PostgreSQL) or the write lock (SQLite): appends
                // are serial from here to the commit.
                sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
                    .execute(&mut **tx)
                    .await?;
                let (mut seq, mut prev): (i64, Vec<u8>) =
                    sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                        .fetch_one(&mut **tx)
                        .await?;
                let mut rows = Vec::with_capacity(entries.len());
                for entry in entries {
                    seq += 1;
                    let hash = $crate::audit::chain_hash(&prev, seq, entry);
                    rows.push((seq, entry, std::mem::replace(&mut prev, hash.clone()), hash));
                }
                for chunk in rows.chunks(1_000) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO audit_log (seq, event_id, topic, msg_key, payload, prev_hash, hash, recorded_at) ",
                    );
                    insert.push_values(chunk, |mut row, (seq, entry, prev_hash, hash)| {
                        row.push_bind(*seq)
                            .push_bind(entry.event_id.as_str())
                            .push_bind(entry.topic.as_str())
                            .push_bind(entry.key.as_deref())
                            .push_bind(entry.payload.as_slice())
                            .push_bind(prev_hash.as_slice())
                            .push_bind(hash.as_slice())
                            .push_bind(at);
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(prev.as_slice())
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Recomputes the whole chain, a page at a time.
            pub async fn verify_audit(&self) -> Result<$crate::AuditVerdict, $crate::StoreError> {
                let (head_seq, head_hash): (i64, Vec<u8>) =
                    sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await?;
                let (mut expected, mut prev) = (1_i64, vec![0_u8; 32]);
                loop {
                    let rows: Vec<$crate::audit::AuditRow> = sqlx::query_as(
                        "SELECT seq, event_id, topic, msg_key, payload, prev_hash, hash FROM audit_log \
                         WHERE seq >= $1 ORDER BY seq LIMIT 5000",
                    )
                    .bind(expected)
                    .fetch_all(&self.pool)
                    .await?;
                    if rows.is_empty() {
                        break;
                    }
                    if let Some(broken) = $crate::audit::check_rows(&rows, &mut expected, &mut prev) {
                        return Ok(broken);
                    }
                }
                let count = expected - 1;
                if count != head_seq || prev != head_hash {
                    return Ok($crate::AuditVerdict::Broken {
                        seq: count + 1,
                        reason: format!(
                            "the chain ends at row {count} but its head says {head_seq} (rows at the end were removed)"
                        ),
                    });
                }
                Ok($crate::AuditVerdict::Intact(count as u64))
            }
        }
    };
}

pub(crate) use audit_queries;

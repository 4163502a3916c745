//! Durable windowed join state (table `join_state`): the database backend of `orderflow-join`.
//!
//! Per join (`join_name`) and key, a row holds the left record (which waits and can expire), the right record
//! (which completes it), the id fixed for the join's output when the key is first stored, the id fixed for
//! the expiry report, and the left record's deadline while it waits. A batch of puts is one upsert statement
//! (per 500 keys): atomic, and concurrent instances putting the same key wait on its row, so each sees the
//! other's side and both answer the one stored join id.

/// One record put into a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPut {
    /// The key both sides share (an order id).
    pub key: String,
    /// The left record, when this put stores one.
    pub left: Option<Vec<u8>>,
    /// The right record, when this put stores one.
    pub right: Option<Vec<u8>>,
    /// When a waiting left record expires (epoch ms); only read with `left`.
    pub deadline_ms: i64,
    /// Until when the entry is kept at least (epoch ms).
    pub keep_until_ms: i64,
    /// The join id to fix if this put stores the key first.
    pub proposed_id: String,
}

/// A key's entry after a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinEntry {
    /// The key.
    pub key: String,
    /// The left record, if stored.
    pub left: Option<Vec<u8>>,
    /// The right record, if stored.
    pub right: Option<Vec<u8>>,
    /// The join id, fixed when the key was first stored.
    pub join_id: Option<String>,
    /// The expiry report's id, once the left side was reported expired.
    pub report_id: Option<String>,
}

/// A waiting left record past its deadline, with the report id fixed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinExpired {
    /// The key.
    pub key: String,
    /// The left record.
    pub left: Vec<u8>,
    /// The report's id (fixed on the first sweep that found it).
    pub report_id: String,
}

/// Puts of one batch merged per key (a key may come more than once), in first-seen order.
pub(crate) fn merge(puts: &[JoinPut]) -> Vec<JoinPut> {
    let mut merged: Vec<JoinPut> = Vec::with_capacity(puts.len());
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for put in puts {
        match at.get(put.key.as_str()) {
            Some(&i) => {
                let into = &mut merged[i];
                if put.left.is_some() {
                    into.left.clone_from(&put.left);
                    into.deadline_ms = put.deadline_ms;
                }
                if put.right.is_some() {
                    into.right.clone_from(&put.right);
                }
                into.keep_until_ms = into.keep_until_ms.max(put.keep_until_ms);
            }
            None => {
                at.insert(&put.key, merged.len());
                merged.push(put.clone());
            }
        }
    }
    merged
}

/// The statements of the join state for one backend (`$lock`: the row lock clause, empty on SQLite).
macro_rules! join_queries {
    ($store:ident, $db:ty, $lock:expr) => {
        impl $store {
            /// Stores `puts` (merged per key) and returns each key's entry afterwards, in the order the keys
            /// first appear: one statement per 500 keys, each atomic. A key's join id is fixed when the key is
            /// first stored (its first put's proposal), so every put that completes the join, now or on any
            /// reprocessing, answers the same id.
            pub async fn join_put(
                &self,
                name: &str,
                puts: &[$crate::JoinPut],
            ) -> Result<Vec<$crate::JoinEntry>, $crate::StoreError> {
                let puts = $crate::join::merge(puts);
                let mut entries: std::collections::HashMap<String, $crate::JoinEntry> =
                    std::collections::HashMap::with_capacity(puts.len());
                // 7 parameters a row: well under both backends' limits at 500 rows.
                for chunk in puts.chunks(500) {
                    let mut upsert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO join_state (join_name, join_key, left_record, right_record, deadline_ms, \
                         keep_until_ms, join_id) ",
                    );
                    upsert.push_values(chunk, |mut row, put| {
                        // Only a left side without its right one waits on a deadline.
                        let waits = put.left.is_some() && put.right.is_none();
                        row.push_bind(name)
                            .push_bind(put.key.as_str())
                            .push_bind(put.left.as_deref())
                            .push_bind(put.right.as_deref())
                            .push_bind(waits.then_some(put.deadline_ms))
                            .push_bind(put.keep_until_ms)
                            .push_bind(put.proposed_id.as_str());
                    });
                    // The stored join id stays; once both sides are there, nothing waits.
                    upsert.push(
                        " ON CONFLICT (join_name, join_key) DO UPDATE SET \
                         left_record = COALESCE(excluded.left_record, join_state.left_record), \
                         right_record = COALESCE(excluded.right_record, join_state.right_record), \
                         deadline_ms = CASE \
                           WHEN COALESCE(excluded.right_record, join_state.right_record) IS NOT NULL THEN NULL \
                           ELSE COALESCE(join_state.deadline_ms, excluded.deadline_ms) END, \
                         keep_until_ms = CASE WHEN excluded.keep_until_ms > join_state.keep_until_ms \
                           THEN excluded.keep_until_ms ELSE join_state.keep_until_ms END \
                         RETURNING join_key, left_record, right_record, join_id, report_id",
                    );
                    let rows: Vec<(String, Option<Vec<u8>>, Option<Vec<u8>>, Option<String>, Option<String>)> =
                        upsert.build_query_as().fetch_all(&self.pool).await?;
                    for (key, left, right, join_id, report_id) in rows {
                        entries.insert(
                            key.clone(),
                            $crate::JoinEntry {
                                key,
                                left,
                                right,
                                join_id,
                                report_id,
                            },
                        );
                    }
                }
                Ok(puts
                    .iter()
                    .filter_map(|put| entries.remove(&put.key))
                    .collect())
            }

            /// Up to `limit` waiting left records of join `name` whose deadline is at or before `now_ms`,
            /// oldest first, each with its report id (fixed now from `propose_id` if it had none).
            pub async fn join_expired(
                &self,
                name: &str,
                now_ms: i64,
                limit: i64,
                mut propose_id: impl FnMut() -> String,
            ) -> Result<Vec<$crate::JoinExpired>, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let rows: Vec<(String, Option<Vec<u8>>, Option<String>)> = sqlx::query_as(concat!(
                    "SELECT join_key, left_record, report_id FROM join_state WHERE join_name = $1 \
                     AND deadline_ms IS NOT NULL AND deadline_ms <= $2 AND right_record IS NULL \
                     ORDER BY deadline_ms LIMIT $3",
                    $lock
                ))
                .bind(name)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let mut expired = Vec::with_capacity(rows.len());
                for (key, left, report_id) in rows {
                    let Some(left) = left else { continue };
                    let report_id = match report_id {
                        Some(id) => id,
                        None => {
                            let id = propose_id();
                            sqlx::query(
                                "UPDATE join_state SET report_id = $1 WHERE join_name = $2 AND join_key = $3",
                            )
                            .bind(&id)
                            .bind(name)
                            .bind(&key)
                            .execute(&mut *tx)
                            .await?;
                            id
                        }
                    };
                    expired.push($crate::JoinExpired { key, left, report_id });
                }
                tx.commit().await?;
                Ok(expired)
            }

            /// Takes `keys` of join `name` off the deadlines (their expiry reports are out).
            pub async fn join_forget(&self, name: &str, keys: &[String]) -> Result<(), $crate::StoreError> {
                for chunk in keys.chunks(500) {
                    let mut forget = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE join_state SET deadline_ms = NULL WHERE join_name = ",
                    );
                    forget.push_bind(name).push(" AND join_key IN (");
                    let mut list = forget.separated(", ");
                    for key in chunk {
                        list.push_bind(key.as_str());
                    }
                    forget.push(")");
                    forget.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            /// Deletes up to `limit` entries (of any join) kept until before `now_ms`; returns how many.
            pub async fn join_prune(&self, now_ms: i64, limit: i64) -> Result<u64, $crate::StoreError> {
                Ok(sqlx::query(
                    "DELETE FROM join_state WHERE (join_name, join_key) IN \
                     (SELECT join_name, join_key FROM join_state WHERE keep_until_ms < $1 LIMIT $2)",
                )
                .bind(now_ms)
                .bind(limit)
                .execute(&self.pool)
                .await?
                .rows_affected())
            }
        }
    };
}

pub(crate) use join_queries;

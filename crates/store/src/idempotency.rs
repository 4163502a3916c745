//! Idempotency keys (the IETF httpapi `Idempotency-Key` draft): the response a request with a key got is kept
//! with its key, in the transaction of the change the request made, so a retry with the same key is answered
//! the same and changes nothing again, across API instances and restarts.
//!
//! Concurrent requests with one key race on the key's row: the first insert wins, and on PostgreSQL a second
//! one waits for the first transaction to end, then finds the row and answers from it. Keys are per client
//! (the credential the gateway named) and count for a configurable time after their first use.

use chrono::{DateTime, Utc};

/// A key as a request brings it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client the key belongs to (keys of different clients never meet).
    pub client: String,
    /// The key itself.
    pub key: String,
    /// What identifies the request: method, path and body, hashed. The same key with another request is
    /// refused.
    pub fingerprint: String,
    /// Rows of this key older than this are expired: the key is free again.
    pub expired_before: DateTime<Utc>,
}

/// The response a key's first request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptResponse {
    /// The fingerprint of that request.
    pub fingerprint: String,
    /// Its HTTP status.
    pub status: u16,
    /// Its JSON body.
    pub body: String,
    /// Its `Location` header, if it had one.
    pub location: Option<String>,
}

/// What a write under an idempotency key came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedWrite {
    /// Written, with the response kept under the key.
    Written,
    /// The key was used already (by this request earlier, or by another one): nothing was written, and this
    /// is the response kept for it.
    Kept(KeptResponse),
    /// (Updates only) the stored order was no longer at the expected version: nothing was written.
    Moved,
}

/// The idempotency queries, the same SQL on both backends.
macro_rules! idempotency_queries {
    ($store:ident, $db:ty) => {
        impl $store {
            /// The response kept for `key`, if the key was used within its time.
            pub async fn kept_response(
                &self,
                key: &$crate::IdempotencyKey,
            ) -> Result<Option<$crate::KeptResponse>, $crate::StoreError> {
                let row: Option<(String, i32, String, Option<String>)> = sqlx::query_as(
                    "SELECT fingerprint, status, body, location FROM idempotency_keys \
                     WHERE client = $1 AND idem_key = $2 AND created_at >= $3",
                )
                .bind(&key.client)
                .bind(&key.key)
                .bind(key.expired_before)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(fingerprint, status, body, location)| $crate::KeptResponse {
                    fingerprint,
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                    location,
                }))
            }

            /// Claims `key` inside `tx` with `response`: `true` when the key was free (an expired row is
            /// replaced), `false` when it is taken (the caller rolls back and reads what it holds).
            async fn claim_key(
                tx: &mut sqlx::Transaction<'_, $db>,
                key: &$crate::IdempotencyKey,
                response: &$crate::KeptResponse,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::StoreError> {
                sqlx::query("DELETE FROM idempotency_keys WHERE client = $1 AND idem_key = $2 AND created_at < $3")
                    .bind(&key.client)
                    .bind(&key.key)
                    .bind(key.expired_before)
                    .execute(&mut **tx)
                    .await?;
                let claimed = sqlx::query(
                    "INSERT INTO idempotency_keys (client, idem_key, fingerprint, status, body, location, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (client, idem_key) DO NOTHING",
                )
                .bind(&key.client)
                .bind(&key.key)
                .bind(&response.fingerprint)
                .bind(i32::from(response.status))
                .bind(&response.body)
                .bind(response.location.as_deref())
                .bind(now)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                Ok(claimed == 1)
            }

            /// The response kept for a key another transaction holds (read after this one rolled back).
            async fn taken(&self, key: &$crate::IdempotencyKey) -> Result<$crate::KeyedWrite, $crate::StoreError> {
                match self.kept_response(key).await? {
                    Some(kept) => Ok($crate::KeyedWrite::Kept(kept)),
                    // Only a row that expired between the two reads: gone now, so the caller may try again.
                    None => Err($crate::StoreError::Conflict(format!(
                        "idempotency key '{}' changed hands while it was being claimed",
                        key.key
                    ))),
                }
            }

            /// Writes `order` and its event like [`Self::insert_orders`], and keeps `response` under `key`, in
            /// one transaction; when `key` is taken, writes nothing and answers what it holds.
            pub async fn insert_order_once(
                &self,
                order: &orderflow_domain::Order,
                event: &orderflow_events::EncodedEvent,
                key: &$crate::IdempotencyKey,
                response: &$crate::KeptResponse,
            ) -> Result<$crate::KeyedWrite, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                // The key first: a concurrent request with it waits here, not after writing its order.
                if !Self::claim_key(&mut tx, key, response, order.created_at).await? {
                    tx.rollback().await?;
                    return self.taken(key).await;
                }
                Self::write_orders(&mut tx, &[(order, event)]).await?;
                tx.commit().await?;
                Ok($crate::KeyedWrite::Written)
            }

            /// [`Self::update_order`] that keeps `response` under `key` in the same transaction; when `key` is
            /// taken, writes nothing and answers what it holds.
            pub async fn update_order_once(
                &self,
                before: &orderflow_domain::Order,
                after: &orderflow_domain::Order,
                event: &orderflow_events::EncodedEvent,
                key: &$crate::IdempotencyKey,
                response: &$crate::KeptResponse,
            ) -> Result<$crate::KeyedWrite, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::claim_key(&mut tx, key, response, after.updated_at).await? {
                    tx.rollback().await?;
                    return self.taken(key).await;
                }
                if !Self::move_order(&mut tx, before, after, event).await? {
                    tx.rollback().await?;
                    return Ok($crate::KeyedWrite::Moved);
                }
                tx.commit().await?;
                Ok($crate::KeyedWrite::Written)
            }

            /// Removes keys first used before `before`; returns how many.
            pub async fn idempotency_prune(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::StoreError> {
                Ok(sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }
        }
    };
}
pub(crate) use idempotency_queries;

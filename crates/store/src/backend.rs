//! The SQL both backends share, written once and instantiated per backend.
//!
//! Both PostgreSQL and SQLite accept `$n` positional parameters and the column types used here decode on
//! both (UUIDs are native on PostgreSQL and 16-byte BLOBs on SQLite), so one body serves both. A macro is
//! used rather than generics because sqlx's per-database trait bounds would drown the queries.

macro_rules! shared_queries {
    ($store:ident, $db:ty) => {
        impl $store {
            /// Writes the order, its lines and its event to the outbox in one transaction.
            pub async fn insert_order(
                &self,
                order: &orderflow_domain::Order,
                event: &orderflow_events::EncodedEvent,
            ) -> Result<(), $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO orders (id, customer_id, currency, status, version, total_minor, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(order.id.as_uuid())
                .bind(order.customer_id.as_str())
                .bind(order.currency.code())
                .bind(order.status.as_str())
                .bind(order.version)
                .bind(order.total_minor.get())
                .bind(order.created_at)
                .bind(order.updated_at)
                .execute(&mut *tx)
                .await?;

                let mut items = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_minor) ",
                );
                items.push_values(order.items.iter().enumerate(), |mut row, (line, item)| {
                    // Both fit: at most NewOrder::MAX_ITEMS lines and Quantity::MAX units.
                    row.push_bind(order.id.as_uuid())
                        .push_bind(line as i32)
                        .push_bind(item.sku.as_str())
                        .push_bind(item.quantity.get() as i32)
                        .push_bind(item.unit_price_minor.get());
                });
                items.build().execute(&mut *tx).await?;

                sqlx::query(
                    "INSERT INTO outbox (event_id, topic, msg_key, event_type, payload, headers, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(event.event_id)
                .bind(event.topic)
                .bind(event.key.as_str())
                .bind(event.event_type)
                .bind(event.payload.as_slice())
                .bind($crate::rows::headers_to_json(&event.headers))
                .bind(order.updated_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            /// Reads one order with its lines.
            pub async fn get_order(
                &self,
                id: orderflow_domain::OrderId,
            ) -> Result<Option<orderflow_domain::Order>, $crate::StoreError> {
                let mut conn = self.pool.acquire().await?;
                let row: Option<$crate::rows::OrderRow> = sqlx::query_as(
                    "SELECT id, customer_id, currency, status, version, total_minor, created_at, updated_at \
                     FROM orders WHERE id = $1",
                )
                .bind(id.as_uuid())
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let items: Vec<$crate::rows::ItemRow> = sqlx::query_as(
                    "SELECT sku, quantity, unit_price_minor FROM order_items WHERE order_id = $1 ORDER BY line_no",
                )
                .bind(id.as_uuid())
                .fetch_all(&mut *conn)
                .await?;
                row.into_order(items).map(Some)
            }

            /// The oldest unpublished outbox rows, in publication order.
            pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<$crate::OutboxRecord>, $crate::StoreError> {
                let rows: Vec<$crate::rows::OutboxRow> = sqlx::query_as(
                    "SELECT id, event_id, topic, msg_key, event_type, payload, headers \
                     FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map($crate::rows::OutboxRow::into_record).collect()
            }

            /// Stamps the given outbox rows as published at `at`.
            pub async fn outbox_mark_published(
                &self,
                ids: &[i64],
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::StoreError> {
                if ids.is_empty() {
                    return Ok(());
                }
                let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE outbox SET published_at = ");
                update.push_bind(at).push(" WHERE id IN (");
                let mut list = update.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                update.push(")");
                update.build().execute(&self.pool).await?;
                Ok(())
            }

            /// Number of outbox rows not yet published.
            pub async fn outbox_backlog(&self) -> Result<i64, $crate::StoreError> {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            /// Deletes rows published before `before`; returns how many.
            pub async fn outbox_prune(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::StoreError> {
                let done = sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use shared_queries;

//! The SQL both backends share, written once and instantiated per backend.
//!
//! Both PostgreSQL and SQLite accept `$n` positional parameters and the column types used here decode on
//! both (UUIDs are native on PostgreSQL and 16-byte BLOBs on SQLite), so one body serves both. A macro is
//! used rather than generics because sqlx's per-database trait bounds would drown the queries.

macro_rules! shared_queries {
    ($store:ident, $db:ty) => {
        impl $store {
            /// Writes orders, their lines and their events to the outbox in one transaction (a group commit:
            /// one round of statements and one durable commit for the whole batch).
            pub async fn insert_orders(
                &self,
                orders: &[(&orderflow_domain::Order, &orderflow_events::EncodedEvent)],
            ) -> Result<(), $crate::StoreError> {
                if orders.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                Self::write_orders(&mut tx, orders).await?;
                tx.commit().await?;
                Ok(())
            }

            /// Writes orders, their lines and their events to the outbox inside `tx`.
            async fn write_orders(
                tx: &mut sqlx::Transaction<'_, $db>,
                orders: &[(&orderflow_domain::Order, &orderflow_events::EncodedEvent)],
            ) -> Result<(), $crate::StoreError> {
                // Chunks stay under both backends' limit on bound parameters (SQLite: 32,766).
                for chunk in orders.chunks(500) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO orders (id, customer_id, currency, status, version, total_minor, created_at, updated_at) ",
                    );
                    insert.push_values(chunk, |mut row, (order, _)| {
                        row.push_bind(order.id.as_uuid())
                            .push_bind(order.customer_id.as_str())
                            .push_bind(order.currency.code())
                            .push_bind(order.status.as_str())
                            .push_bind(order.version)
                            .push_bind(order.total_minor.get())
                            .push_bind(order.created_at)
                            .push_bind(order.updated_at);
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                let lines: Vec<_> = orders
                    .iter()
                    .flat_map(|(order, _)| order.items.iter().enumerate().map(move |(line, item)| (order, line, item)))
                    .collect();
                for chunk in lines.chunks(2_000) {
                    let mut items = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_minor) ",
                    );
                    items.push_values(chunk, |mut row, (order, line, item)| {
                        // Both fit: at most NewOrder::MAX_ITEMS lines and Quantity::MAX units.
                        row.push_bind(order.id.as_uuid())
                            .push_bind(*line as i32)
                            .push_bind(item.sku.as_str())
                            .push_bind(item.quantity.get() as i32)
                            .push_bind(item.unit_price_minor.get());
                    });
                    items.build().execute(&mut **tx).await?;
                }
                let events: Vec<_> = orders.iter().map(|(order, event)| (*event, order.updated_at)).collect();
                Self::insert_outbox(tx, &events).await
            }

            /// Adds `events` to the outbox inside `tx`, each stamped with the time of the change it describes;
            /// one statement per chunk (under both backends' limit on bound parameters).
            async fn insert_outbox(
                tx: &mut sqlx::Transaction<'_, $db>,
                events: &[(&orderflow_events::EncodedEvent, chrono::DateTime<chrono::Utc>)],
            ) -> Result<(), $crate::StoreError> {
                for chunk in events.chunks(500) {
                    let mut outbox = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO outbox (event_id, topic, msg_key, event_type, payload, headers, created_at) ",
                    );
                    outbox.push_values(chunk, |mut row, (event, at)| {
                        row.push_bind(event.event_id)
                            .push_bind(event.topic)
                            .push_bind(event.key.as_str())
                            .push_bind(event.event_type)
                            .push_bind(event.payload.as_slice())
                            .push_bind($crate::rows::headers_to_json(&event.headers))
                            .push_bind(*at);
                    });
                    outbox.build().execute(&mut **tx).await?;
                }
                if <$db as sqlx::Database>::NAME == <sqlx::Postgres as sqlx::Database>::NAME {
                    // Delivered when the transaction commits (several in one transaction fold into one):
                    // a relay listening in another process wakes at once instead of at its next poll.
                    sqlx::query($crate::NOTIFY_OUTBOX)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// Moves an order from `before` to `after` (same id, next version) and writes `event` to the outbox,
            /// in one transaction; `false`, writing nothing, when the stored order is no longer at `before`'s
            /// version (a concurrent change won: read it again and decide anew).
            pub async fn update_order(
                &self,
                before: &orderflow_domain::Order,
                after: &orderflow_domain::Order,
                event: &orderflow_events::EncodedEvent,
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                if !Self::move_order(&mut tx, before, after, event).await? {
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            /// [`Self::update_order`]'s statements inside `tx`; `false` when the order moved on meanwhile.
            async fn move_order(
                tx: &mut sqlx::Transaction<'_, $db>,
                before: &orderflow_domain::Order,
                after: &orderflow_domain::Order,
                event: &orderflow_events::EncodedEvent,
            ) -> Result<bool, $crate::StoreError> {
                let updated = sqlx::query(
                    "UPDATE orders SET status = $1, version = $2, updated_at = $3 WHERE id = $4 AND version = $5",
                )
                .bind(after.status.as_str())
                .bind(after.version)
                .bind(after.updated_at)
                .bind(before.id.as_uuid())
                .bind(before.version)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if updated != 1 {
                    return Ok(false);
                }
                Self::insert_outbox(tx, &[(event, after.updated_at)]).await?;
                Ok(true)
            }

            /// Applies a pipeline status change inside `tx` when the order is still where the change starts from
            /// and below its version; `false` (nothing written) for a re-delivered, late or overtaken change.
            pub async fn advance_status(
                tx: &mut sqlx::Transaction<'static, $db>,
                change: &$crate::StatusChange,
            ) -> Result<bool, $crate::StoreError> {
                if change.from.is_empty() {
                    return Ok(false);
                }
                let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE orders SET status = ");
                update
                    .push_bind(change.to.as_str())
                    .push(", version = ")
                    .push_bind(change.version)
                    .push(", updated_at = ")
                    .push_bind(change.at)
                    .push(" WHERE id = ")
                    .push_bind(change.order_id.as_uuid())
                    .push(" AND version < ")
                    .push_bind(change.version)
                    .push(" AND status IN (");
                let mut statuses = update.separated(", ");
                for status in change.from {
                    statuses.push_bind(status.as_str());
                }
                update.push(")");
                let updated = update.build().execute(&mut **tx).await?.rows_affected();
                Ok(updated == 1)
            }

            /// Every customer's tier (reference data).
            pub async fn customer_tiers(&self) -> Result<Vec<(String, String)>, $crate::StoreError> {
                Ok(sqlx::query_as("SELECT id, tier FROM customers ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?)
            }

            /// The tiers of the given customers that have one, as `(id, tier)`.
            pub async fn customer_tiers_of(
                &self,
                ids: &[&str],
            ) -> Result<Vec<(String, String)>, $crate::StoreError> {
                let mut found = Vec::new();
                // Chunks stay under both backends' limit on bound parameters.
                for chunk in ids.chunks(500) {
                    let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id, tier FROM customers WHERE id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    list.push_unseparated(")");
                    found.extend(query.build_query_as::<(String, String)>().fetch_all(&self.pool).await?);
                }
                Ok(found)
            }

            /// Sets a customer's tier.
            pub async fn set_customer_tier(&self, id: &str, tier: &str) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO customers (id, tier) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET tier = $2",
                )
                .bind(id)
                .bind(tier)
                .execute(&self.pool)
                .await?;
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

            /// The ids of the orders `filter` selects, in (created_at, id) order, at most `filter.limit`.
            pub async fn list_orders(
                &self,
                filter: &$crate::OrderFilter,
            ) -> Result<Vec<orderflow_domain::OrderId>, $crate::StoreError> {
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT id FROM orders WHERE 1 = 1");
                if let Some(customer) = &filter.customer_id {
                    query.push(" AND customer_id = ").push_bind(customer.as_str());
                }
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(after) = filter.created_after {
                    query.push(" AND created_at > ").push_bind(after);
                }
                if let Some((at, id)) = filter.after {
                    query
                        .push(" AND (created_at > ")
                        .push_bind(at)
                        .push(" OR (created_at = ")
                        .push_bind(at)
                        .push(" AND id > ")
                        .push_bind(id.as_uuid())
                        .push("))");
                }
                query.push(" ORDER BY created_at, id LIMIT ").push_bind(filter.limit);
                let ids: Vec<(uuid::Uuid,)> = query.build_query_as().fetch_all(&self.pool).await?;
                Ok(ids
                    .into_iter()
                    .map(|(id,)| orderflow_domain::OrderId::from_uuid(id))
                    .collect())
            }

            /// Reads the orders among `ids` that exist, with their lines: two queries, however many ids.
            pub async fn get_orders(
                &self,
                ids: &[orderflow_domain::OrderId],
            ) -> Result<Vec<orderflow_domain::Order>, $crate::StoreError> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut conn = self.pool.acquire().await?;
                let mut orders = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id, customer_id, currency, status, version, total_minor, created_at, updated_at \
                     FROM orders WHERE id IN (",
                );
                let mut list = orders.separated(", ");
                for id in ids {
                    list.push_bind(id.as_uuid());
                }
                orders.push(")");
                let rows: Vec<$crate::rows::OrderRow> =
                    orders.build_query_as().fetch_all(&mut *conn).await?;
                let mut items = sqlx::QueryBuilder::<$db>::new(
                    "SELECT order_id, sku, quantity, unit_price_minor FROM order_items WHERE order_id IN (",
                );
                let mut list = items.separated(", ");
                for id in ids {
                    list.push_bind(id.as_uuid());
                }
                items.push(") ORDER BY order_id, line_no");
                let lines: Vec<(uuid::Uuid, String, i32, i64)> =
                    items.build_query_as().fetch_all(&mut *conn).await?;
                let mut by_order: std::collections::HashMap<uuid::Uuid, Vec<$crate::rows::ItemRow>> =
                    std::collections::HashMap::new();
                for (order, sku, quantity, unit_price_minor) in lines {
                    by_order.entry(order).or_default().push($crate::rows::ItemRow {
                        sku,
                        quantity,
                        unit_price_minor,
                    });
                }
                rows.into_iter()
                    .map(|row| {
                        let lines = by_order.remove(&row.id).unwrap_or_default();
                        row.into_order(lines)
                    })
                    .collect()
            }

            /// The newest orders (ids are time-ordered), without their lines: for consoles.
            pub async fn recent_orders(&self, limit: i64) -> Result<Vec<$crate::OrderSummary>, $crate::StoreError> {
                let rows: Vec<$crate::rows::OrderRow> = sqlx::query_as(
                    "SELECT id, customer_id, currency, status, version, total_minor, created_at, updated_at \
                     FROM orders ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map($crate::rows::OrderRow::into_summary).collect())
            }

            /// Connections of the pool: (open, idle, the most it opens).
            pub fn pool_usage(&self) -> (u32, usize, u32) {
                (self.pool.size(), self.pool.num_idle(), self.pool.options().get_max_connections())
            }

            /// The oldest unpublished outbox rows, in publication order.
            pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<$crate::OutboxRecord>, $crate::StoreError> {
                let rows: Vec<$crate::rows::OutboxRow> = sqlx::query_as(
                    "SELECT id, event_id, topic, msg_key, event_type, payload, headers, created_at \
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

            /// Orders still `CREATED` or `PAID` that last moved before `before`: how many per status, and the
            /// `limit` that waited longest (id, status, last move).
            pub async fn stranded_orders(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> Result<$crate::Stranded, $crate::StoreError> {
                let counts: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT status, COUNT(*) FROM orders WHERE status IN ('CREATED', 'PAID') AND updated_at < $1 \
                     GROUP BY status",
                )
                .bind(before)
                .fetch_all(&self.pool)
                .await?;
                let oldest: Vec<(uuid::Uuid, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "SELECT id, status, updated_at FROM orders WHERE status IN ('CREATED', 'PAID') \
                     AND updated_at < $1 ORDER BY updated_at LIMIT $2",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let count = |status: &str| counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                Ok($crate::Stranded {
                    created: count("CREATED"),
                    paid: count("PAID"),
                    oldest: oldest
                        .into_iter()
                        .map(|(id, status, at)| (orderflow_domain::OrderId::from_uuid(id), status, at))
                        .collect(),
                })
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

            /// Every version of `subject`, oldest first, with its schema.
            pub async fn registry_versions(
                &self,
                subject: &str,
            ) -> Result<Vec<orderflow_registry::RegisteredVersion>, $crate::StoreError> {
                let rows: Vec<(i64, i64, String, bool)> = sqlx::query_as(
                    "SELECT v.version, v.schema_id, s.schema, v.deleted FROM registry_versions v \
                     JOIN registry_schemas s ON s.id = v.schema_id WHERE v.subject = $1 ORDER BY v.version",
                )
                .bind(subject)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(version, id, schema, deleted)| orderflow_registry::RegisteredVersion {
                        subject: subject.to_owned(),
                        version: version as u32,
                        id: id as u32,
                        schema,
                        deleted,
                    })
                    .collect())
            }

            /// The schema with this id.
            pub async fn registry_schema(&self, id: u32) -> Result<Option<String>, $crate::StoreError> {
                let row: Option<(String,)> = sqlx::query_as("SELECT schema FROM registry_schemas WHERE id = $1")
                    .bind(i64::from(id))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|(s,)| s))
            }

            /// Every subject, sorted.
            pub async fn registry_subjects(&self) -> Result<Vec<String>, $crate::StoreError> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT DISTINCT subject FROM registry_versions ORDER BY subject")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(s,)| s).collect())
            }

            /// Stores a schema (deduplicated by fingerprint) as the next version of `subject`, atomically.
            pub async fn registry_append(
                &self,
                subject: &str,
                fingerprint: &str,
                schema: &str,
            ) -> Result<orderflow_registry::RegisteredVersion, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO registry_schemas (fingerprint, schema) VALUES ($1, $2) ON CONFLICT (fingerprint) DO NOTHING",
                )
                .bind(fingerprint)
                .bind(schema)
                .execute(&mut *tx)
                .await?;
                let (id,): (i64,) = sqlx::query_as("SELECT id FROM registry_schemas WHERE fingerprint = $1")
                    .bind(fingerprint)
                    .fetch_one(&mut *tx)
                    .await?;
                let (version,): (i64,) = sqlx::query_as(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM registry_versions WHERE subject = $1",
                )
                .bind(subject)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO registry_versions (subject, version, schema_id) VALUES ($1, $2, $3)")
                    .bind(subject)
                    .bind(version)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(orderflow_registry::RegisteredVersion {
                    subject: subject.to_owned(),
                    version: version as u32,
                    id: id as u32,
                    schema: schema.to_owned(),
                    deleted: false,
                })
            }

            /// The compatibility level stored for `subject` ('' is the global level).
            pub async fn registry_compatibility(&self, subject: &str) -> Result<Option<String>, $crate::StoreError> {
                self.registry_setting("registry_config", "compatibility", subject).await
            }

            /// Sets (or, with `None`, removes) the compatibility level of `subject` ('' is the global level).
            pub async fn registry_set_compatibility(
                &self,
                subject: &str,
                level: Option<&str>,
            ) -> Result<(), $crate::StoreError> {
                self.registry_put_setting("registry_config", "compatibility", subject, level).await
            }

            /// The mode stored for `subject` ('' is the global mode).
            pub async fn registry_mode(&self, subject: &str) -> Result<Option<String>, $crate::StoreError> {
                self.registry_setting("registry_mode", "mode", subject).await
            }

            /// Sets (or, with `None`, removes) the mode of `subject` ('' is the global mode).
            pub async fn registry_set_mode(&self, subject: &str, mode: Option<&str>) -> Result<(), $crate::StoreError> {
                self.registry_put_setting("registry_mode", "mode", subject, mode).await
            }

            /// A per-subject registry setting: `column` of `table` keyed by subject.
            async fn registry_setting(
                &self,
                table: &'static str,
                column: &'static str,
                subject: &str,
            ) -> Result<Option<String>, $crate::StoreError> {
                let sql = format!("SELECT {column} FROM {table} WHERE subject = $1");
                let row: Option<(String,)> = sqlx::query_as(&sql)
                    .bind(subject)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|(value,)| value))
            }

            /// Sets (or, with `None`, removes) a per-subject registry setting.
            async fn registry_put_setting(
                &self,
                table: &'static str,
                column: &'static str,
                subject: &str,
                value: Option<&str>,
            ) -> Result<(), $crate::StoreError> {
                match value {
                    Some(value) => {
                        let sql = format!(
                            "INSERT INTO {table} (subject, {column}) VALUES ($1, $2) \
                             ON CONFLICT (subject) DO UPDATE SET {column} = excluded.{column}"
                        );
                        sqlx::query(&sql).bind(subject).bind(value).execute(&self.pool).await?;
                    }
                    None => {
                        let sql = format!("DELETE FROM {table} WHERE subject = $1");
                        sqlx::query(&sql).bind(subject).execute(&self.pool).await?;
                    }
                }
                Ok(())
            }

            /// Marks `versions` of `subject` soft-deleted (`permanent` false) or removes them.
            pub async fn registry_delete(
                &self,
                subject: &str,
                versions: &[u32],
                permanent: bool,
            ) -> Result<(), $crate::StoreError> {
                let sql = if permanent {
                    "DELETE FROM registry_versions WHERE subject = $1 AND version = $2"
                } else {
                    "UPDATE registry_versions SET deleted = TRUE WHERE subject = $1 AND version = $2"
                };
                let mut tx = self.pool.begin().await?;
                for version in versions {
                    sqlx::query(sql)
                        .bind(subject)
                        .bind(i64::from(*version))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use shared_queries;

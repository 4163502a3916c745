//! Stock and reservations: the inventory role's effects, exactly once per order.
//!
//! The order id keys the reservation, so a re-delivered `order.enriched` finds the reservation made before
//! and gets its outcome back (with the same event id, to publish again) instead of taking stock twice. Stock
//! is taken line by line with `stock >= quantity` guards under a savepoint, in SKU order so that concurrent
//! orders cannot deadlock, and the `stock >= 0` constraint makes overselling impossible whatever runs at the
//! same time. A cancel gives allocated stock back once; a cancel that comes before the reservation leaves a
//! marker, so the order is never allocated afterwards.

use chrono::{DateTime, Utc};
use orderflow_domain::OrderId;
use uuid::Uuid;

/// A product and its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Product code.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// List price, in minor units.
    pub price_minor: i64,
    /// Units in stock.
    pub stock: i32,
}

/// One thing the inventory role asks of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOp {
    /// Reserve every line of a paid order, or none.
    Reserve {
        /// The order.
        order_id: OrderId,
        /// (SKU, units); the same SKU may come twice.
        lines: Vec<(String, i32)>,
        /// Id for the event reporting the outcome, used if this is the first reservation of the order.
        event_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Give back what a cancelled order holds.
    Release {
        /// The order.
        order_id: OrderId,
        /// Id of the marker left when nothing was reserved yet.
        marker_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
}

/// What an [`InventoryOp`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOutcome {
    /// Every line is reserved (now or by an earlier delivery).
    Allocated {
        /// The order.
        order_id: OrderId,
        /// Id of the event reporting it.
        event_id: Uuid,
        /// (SKU, units) reserved, by SKU.
        lines: Vec<(String, i32)>,
    },
    /// Not reserved (now or by an earlier delivery).
    Rejected {
        /// The order.
        order_id: OrderId,
        /// Id of the event reporting it.
        event_id: Uuid,
        /// Why.
        reason: String,
        /// The line that could not be served.
        sku: Option<String>,
    },
    /// The order was cancelled before it could be reserved: nothing is, nothing is reported.
    Cancelled {
        /// The order.
        order_id: OrderId,
    },
    /// A cancel gave the order's stock back.
    Released {
        /// The order.
        order_id: OrderId,
    },
    /// A cancel found nothing to give back (rejected, released before, or marked).
    Unchanged {
        /// The order.
        order_id: OrderId,
    },
}

/// Stock of one product against what live reservations hold, for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLine {
    /// Product code.
    pub sku: String,
    /// Units in stock now.
    pub stock: i32,
    /// Units held by ALLOCATED reservations.
    pub allocated: i64,
}

/// Sums the units per SKU, sorted by SKU (the lock order).
pub(crate) fn merge_lines(lines: &[(String, i32)]) -> Vec<(String, i32)> {
    let mut merged: std::collections::BTreeMap<&str, i32> = std::collections::BTreeMap::new();
    for (sku, quantity) in lines {
        *merged.entry(sku.as_str()).or_default() += *quantity;
    }
    merged.into_iter().map(|(sku, q)| (sku.to_owned(), q)).collect()
}

/// Rows per multi-row statement: well under both backends' bind-parameter limits (6 per reservation row).
pub(crate) const CHUNK: usize = 1000;

/// A reservation as stored, or as a batch leaves it.
#[derive(Debug, Clone)]
pub(crate) struct Reservation {
    /// `ALLOCATED`, `REJECTED`, `RELEASED` or `CANCELLED`.
    pub(crate) status: String,
    /// Id of the event that reported it (or of the cancel marker).
    pub(crate) event_id: Uuid,
    /// Why it was rejected.
    pub(crate) reason: Option<String>,
    /// The line that could not be served.
    pub(crate) sku: Option<String>,
    /// (SKU, units) reserved, by SKU.
    pub(crate) lines: Vec<(String, i32)>,
    /// When it last changed (set for those the batch creates or changes).
    pub(crate) updated_at: Option<DateTime<Utc>>,
}

impl Reservation {
    /// A stored reservation, before its lines are read.
    pub(crate) fn stored(
        status: String,
        event_id: Uuid,
        reason: Option<String>,
        sku: Option<String>,
    ) -> Self {
        Self {
            status,
            event_id,
            reason,
            sku,
            lines: Vec::new(),
            updated_at: None,
        }
    }

    /// Whether it holds (or held) stock, so its lines matter.
    pub(crate) fn has_lines(&self) -> bool {
        matches!(self.status.as_str(), "ALLOCATED" | "RELEASED")
    }

    fn outcome(&self, order_id: OrderId) -> InventoryOutcome {
        match self.status.as_str() {
            "ALLOCATED" | "RELEASED" => InventoryOutcome::Allocated {
                order_id,
                event_id: self.event_id,
                lines: self.lines.clone(),
            },
            "REJECTED" => InventoryOutcome::Rejected {
                order_id,
                event_id: self.event_id,
                reason: self.reason.clone().unwrap_or_default(),
                sku: self.sku.clone(),
            },
            _ => InventoryOutcome::Cancelled { order_id },
        }
    }
}

fn op_order(op: &InventoryOp) -> OrderId {
    match op {
        InventoryOp::Reserve { order_id, .. } | InventoryOp::Release { order_id, .. } => *order_id,
    }
}

/// The distinct orders of `ops`.
pub(crate) fn order_ids(ops: &[InventoryOp]) -> Vec<Uuid> {
    let ids: std::collections::BTreeSet<Uuid> = ops.iter().map(|op| op_order(op).as_uuid()).collect();
    ids.into_iter().collect()
}

/// The products whose stock `ops` may change, by SKU (the lock order): the lines of orders not reserved
/// yet, and those of allocated reservations a cancel may give back.
pub(crate) fn skus_needed(
    ops: &[InventoryOp],
    known: &std::collections::HashMap<Uuid, Reservation>,
) -> Vec<String> {
    let mut skus = std::collections::BTreeSet::new();
    for op in ops {
        match op {
            InventoryOp::Reserve { order_id, lines, .. } if !known.contains_key(&order_id.as_uuid()) => {
                skus.extend(lines.iter().map(|(sku, _)| sku.clone()));
            }
            InventoryOp::Release { order_id, .. } => {
                if let Some(reservation) = known.get(&order_id.as_uuid())
                    && reservation.status == "ALLOCATED"
                {
                    skus.extend(reservation.lines.iter().map(|(sku, _)| sku.clone()));
                }
            }
            InventoryOp::Reserve { .. } => {}
        }
    }
    skus.into_iter().collect()
}

/// A batch of ops played in order against the stock locked for it: what each came to, and what to write.
pub(crate) struct Plan {
    /// What each op came to, in order.
    pub(crate) outcomes: Vec<InventoryOutcome>,
    reservations: std::collections::HashMap<Uuid, Reservation>,
    /// Reservations the batch creates, in the order it created them.
    created: Vec<Uuid>,
    /// Stored allocations the batch gives back, with when.
    released: Vec<(Uuid, DateTime<Utc>)>,
    stock_before: std::collections::HashMap<String, i64>,
    stock: std::collections::HashMap<String, i64>,
}

impl Plan {
    /// Plays `ops` in order: `known` holds the stored reservations of their orders (with lines), `stock`
    /// the units of every product they need (a product missing from it does not exist).
    pub(crate) fn play(
        ops: &[InventoryOp],
        known: std::collections::HashMap<Uuid, Reservation>,
        stock: std::collections::HashMap<String, i64>,
    ) -> Self {
        let mut plan = Self {
            outcomes: Vec::with_capacity(ops.len()),
            reservations: known,
            created: Vec::new(),
            released: Vec::new(),
            stock_before: stock.clone(),
            stock,
        };
        for op in ops {
            let outcome = match op {
                InventoryOp::Reserve {
                    order_id,
                    lines,
                    event_id,
                    at,
                } => plan.reserve(*order_id, lines, *event_id, *at),
                InventoryOp::Release {
                    order_id,
                    marker_id,
                    at,
                } => plan.release(*order_id, *marker_id, *at),
            };
            plan.outcomes.push(outcome);
        }
        plan
    }

    fn create(&mut self, order_id: OrderId, reservation: Reservation) {
        self.created.push(order_id.as_uuid());
        self.reservations.insert(order_id.as_uuid(), reservation);
    }

    fn reserve(
        &mut self,
        order_id: OrderId,
        lines: &[(String, i32)],
        event_id: Uuid,
        at: DateTime<Utc>,
    ) -> InventoryOutcome {
        if let Some(reservation) = self.reservations.get(&order_id.as_uuid()) {
            return reservation.outcome(order_id);
        }
        let lines = merge_lines(lines);
        // Every line or none: the first line (by SKU) that cannot be served rejects the order.
        let short = lines
            .iter()
            .find_map(|(sku, quantity)| match self.stock.get(sku) {
                None => Some((sku.clone(), "unknown product")),
                Some(units) if *units < i64::from(*quantity) => Some((sku.clone(), "out of stock")),
                Some(_) => None,
            });
        let reservation = match short {
            Some((sku, reason)) => Reservation {
                status: "REJECTED".into(),
                event_id,
                reason: Some(reason.into()),
                sku: Some(sku),
                lines: Vec::new(),
                updated_at: Some(at),
            },
            None => {
                for (sku, quantity) in &lines {
                    if let Some(units) = self.stock.get_mut(sku) {
                        *units -= i64::from(*quantity);
                    }
                }
                Reservation {
                    status: "ALLOCATED".into(),
                    event_id,
                    reason: None,
                    sku: None,
                    lines,
                    updated_at: Some(at),
                }
            }
        };
        let outcome = reservation.outcome(order_id);
        self.create(order_id, reservation);
        outcome
    }

    fn release(&mut self, order_id: OrderId, marker_id: Uuid, at: DateTime<Utc>) -> InventoryOutcome {
        let id = order_id.as_uuid();
        let Some(reservation) = self.reservations.get_mut(&id) else {
            // The cancel came first: a marker keeps the order from being allocated afterwards.
            self.create(
                order_id,
                Reservation {
                    status: "CANCELLED".into(),
                    event_id: marker_id,
                    reason: None,
                    sku: None,
                    lines: Vec::new(),
                    updated_at: Some(at),
                },
            );
            return InventoryOutcome::Unchanged { order_id };
        };
        if reservation.status != "ALLOCATED" {
            return InventoryOutcome::Unchanged { order_id };
        }
        reservation.status = "RELEASED".into();
        reservation.updated_at = Some(at);
        for (sku, quantity) in &reservation.lines {
            *self.stock.entry(sku.clone()).or_default() += i64::from(*quantity);
        }
        if !self.created.contains(&id) {
            self.released.push((id, at));
        }
        InventoryOutcome::Released { order_id }
    }

    /// Units to add to (or, negative, take from) each product's stock, by SKU.
    pub(crate) fn stock_deltas(&self) -> Vec<(String, i64)> {
        let mut deltas: Vec<(String, i64)> = self
            .stock
            .iter()
            .map(|(sku, after)| {
                (
                    sku.clone(),
                    after - self.stock_before.get(sku).copied().unwrap_or(0),
                )
            })
            .filter(|(_, delta)| *delta != 0)
            .collect();
        deltas.sort();
        deltas
    }

    /// The reservations to insert, in the order the batch created them, as the batch leaves them.
    pub(crate) fn created(&self) -> Vec<(Uuid, &Reservation)> {
        self.created
            .iter()
            .filter_map(|id| self.reservations.get(id).map(|r| (*id, r)))
            .collect()
    }

    /// Stored allocations the batch gives back, with when.
    pub(crate) fn released_before(&self) -> Vec<(Uuid, DateTime<Utc>)> {
        self.released.clone()
    }
}

/// The inventory queries, the same SQL on both backends.
macro_rules! inventory_queries {
    ($store:ident, $db:ty, $lock:expr) => {
        impl $store {
            /// Creates or replaces a product. Its stock ledger follows: units received move by as much as the
            /// stock does, so stock plus allocated units still equals what was received.
            pub async fn put_product(&self, product: &$crate::Product) -> Result<(), $crate::StoreError> {
                self.put_products(std::slice::from_ref(product)).await
            }

            /// Creates or replaces every product of `products` in one transaction (all or none), as
            /// [`Self::put_product`] does one.
            pub async fn put_products(&self, products: &[$crate::Product]) -> Result<(), $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                for product in products {
                    sqlx::query(
                        "INSERT INTO products (sku, name, price_minor, stock, received) VALUES ($1, $2, $3, $4, $4) \
                         ON CONFLICT (sku) DO UPDATE SET name = $2, price_minor = $3, \
                         received = products.received - products.stock + $4, stock = $4",
                    )
                    .bind(&product.sku)
                    .bind(&product.name)
                    .bind(product.price_minor)
                    .bind(product.stock)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// The unit prices of those of `skus` the catalogue holds.
            pub async fn product_prices(&self, skus: &[&str]) -> Result<Vec<(String, i64)>, $crate::StoreError> {
                let mut found = Vec::new();
                // Chunks stay under both backends' limit on bound parameters.
                for chunk in skus.chunks(500) {
                    let mut query =
                        sqlx::QueryBuilder::<$db>::new("SELECT sku, price_minor FROM products WHERE sku IN (");
                    let mut list = query.separated(", ");
                    for sku in chunk {
                        list.push_bind(*sku);
                    }
                    list.push_unseparated(")");
                    found.extend(query.build_query_as::<(String, i64)>().fetch_all(&self.pool).await?);
                }
                Ok(found)
            }

            /// Puts `products` in the catalogue if it holds none yet, in one transaction; says whether it did.
            /// A catalogue someone filled is never touched.
            pub async fn seed_catalogue(&self, products: &[$crate::Product]) -> Result<bool, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM products")
                    .fetch_one(&mut *tx)
                    .await?;
                if count > 0 || products.is_empty() {
                    return Ok(false);
                }
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO products (sku, name, price_minor, stock, received) ",
                );
                insert.push_values(products, |mut row, p| {
                    row.push_bind(p.sku.as_str())
                        .push_bind(p.name.as_str())
                        .push_bind(p.price_minor)
                        .push_bind(p.stock)
                        .push_bind(p.stock);
                });
                insert.build().execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            /// One product, if it exists.
            pub async fn get_product(&self, sku: &str) -> Result<Option<$crate::Product>, $crate::StoreError> {
                let row: Option<(String, String, i64, i32)> =
                    sqlx::query_as("SELECT sku, name, price_minor, stock FROM products WHERE sku = $1")
                        .bind(sku)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(sku, name, price_minor, stock)| $crate::Product {
                    sku,
                    name,
                    price_minor,
                    stock,
                }))
            }

            /// Every product's stock against the units its live reservations hold.
            pub async fn stock_lines(&self) -> Result<Vec<$crate::StockLine>, $crate::StoreError> {
                let rows: Vec<(String, i32, Option<i64>)> = sqlx::query_as(
                    "SELECT p.sku, p.stock, CAST((SELECT SUM(l.quantity) FROM inventory_reservation_lines l \
                     JOIN inventory_reservations r ON r.order_id = l.order_id \
                     WHERE l.sku = p.sku AND r.status = 'ALLOCATED') AS BIGINT) \
                     FROM products p ORDER BY p.sku",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(sku, stock, allocated)| $crate::StockLine {
                        sku,
                        stock,
                        allocated: allocated.unwrap_or(0),
                    })
                    .collect())
            }

            /// Applies `ops` in order in one transaction and says what each came to.
            ///
            /// The batch costs a fixed number of statements, however many orders it holds: the reservations
            /// it touches are read at once, the stock of every product it needs is locked at once in SKU
            /// order (so concurrent batches queue rather than deadlock, and hold their locks for a few
            /// statements only), the ops are played in order against that stock, and the result is written
            /// with one stock update and multi-row inserts. Every line of an order or none is reserved, as
            /// if the ops ran one by one.
            pub async fn apply_inventory(
                &self,
                ops: &[$crate::InventoryOp],
            ) -> Result<Vec<$crate::InventoryOutcome>, $crate::StoreError> {
                use $crate::inventory::{Plan, Reservation};
                if ops.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.pool.begin().await?;
                let orders = $crate::inventory::order_ids(ops);
                let mut known: std::collections::HashMap<uuid::Uuid, Reservation> =
                    std::collections::HashMap::new();
                for chunk in orders.chunks($crate::inventory::CHUNK) {
                    let mut query = sqlx::QueryBuilder::<$db>::new(
                        "SELECT order_id, status, event_id, reason, sku FROM inventory_reservations WHERE order_id IN (",
                    );
                    let mut ids = query.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    query.push(")");
                    let rows: Vec<(uuid::Uuid, String, uuid::Uuid, Option<String>, Option<String>)> =
                        query.build_query_as().fetch_all(&mut *tx).await?;
                    for (order_id, status, event_id, reason, sku) in rows {
                        known.insert(order_id, Reservation::stored(status, event_id, reason, sku));
                    }
                }
                let with_lines: Vec<uuid::Uuid> = known
                    .iter()
                    .filter(|(_, r)| r.has_lines())
                    .map(|(id, _)| *id)
                    .collect();
                for chunk in with_lines.chunks($crate::inventory::CHUNK) {
                    let mut query = sqlx::QueryBuilder::<$db>::new(
                        "SELECT order_id, sku, quantity FROM inventory_reservation_lines WHERE order_id IN (",
                    );
                    let mut ids = query.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    query.push(") ORDER BY order_id, sku");
                    let rows: Vec<(uuid::Uuid, String, i32)> =
                        query.build_query_as().fetch_all(&mut *tx).await?;
                    for (order_id, sku, quantity) in rows {
                        if let Some(reservation) = known.get_mut(&order_id) {
                            reservation.lines.push((sku, quantity));
                        }
                    }
                }
                let skus = $crate::inventory::skus_needed(ops, &known);
                let mut stock: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
                for chunk in skus.chunks($crate::inventory::CHUNK) {
                    let mut query =
                        sqlx::QueryBuilder::<$db>::new("SELECT sku, stock FROM products WHERE sku IN (");
                    let mut names = query.separated(", ");
                    for sku in chunk {
                        names.push_bind(sku.as_str());
                    }
                    query.push(") ORDER BY sku");
                    query.push($lock);
                    let rows: Vec<(String, i32)> = query.build_query_as().fetch_all(&mut *tx).await?;
                    stock.extend(rows.into_iter().map(|(sku, units)| (sku, i64::from(units))));
                }
                let plan = Plan::play(ops, known, stock);
                let deltas = plan.stock_deltas();
                for chunk in deltas.chunks($crate::inventory::CHUNK) {
                    let mut query = sqlx::QueryBuilder::<$db>::new("WITH v(sku, delta) AS (");
                    query.push_values(chunk, |mut row, (sku, delta)| {
                        row.push_bind(sku.as_str()).push_bind(*delta);
                    });
                    query.push(
                        ") UPDATE products SET stock = stock + CAST((SELECT delta FROM v WHERE v.sku = products.sku) AS INTEGER) \
                         WHERE sku IN (SELECT sku FROM v)",
                    );
                    query.build().execute(&mut *tx).await?;
                }
                let created = plan.created();
                for chunk in created.chunks($crate::inventory::CHUNK) {
                    let mut query = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO inventory_reservations (order_id, status, event_id, reason, sku, updated_at) ",
                    );
                    query.push_values(chunk, |mut row, (order_id, r)| {
                        row.push_bind(*order_id)
                            .push_bind(r.status.as_str())
                            .push_bind(r.event_id)
                            .push_bind(r.reason.as_deref())
                            .push_bind(r.sku.as_deref())
                            .push_bind(r.updated_at);
                    });
                    query.build().execute(&mut *tx).await?;
                }
                let lines: Vec<(uuid::Uuid, &str, i32)> = created
                    .iter()
                    .flat_map(|(order_id, r)| r.lines.iter().map(|(sku, q)| (*order_id, sku.as_str(), *q)))
                    .collect();
                for chunk in lines.chunks($crate::inventory::CHUNK) {
                    let mut query = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO inventory_reservation_lines (order_id, sku, quantity) ",
                    );
                    query.push_values(chunk, |mut row, (order_id, sku, quantity)| {
                        row.push_bind(*order_id).push_bind(*sku).push_bind(*quantity);
                    });
                    query.build().execute(&mut *tx).await?;
                }
                for (order_id, at) in plan.released_before() {
                    sqlx::query(
                        "UPDATE inventory_reservations SET status = 'RELEASED', updated_at = $1 WHERE order_id = $2",
                    )
                    .bind(at)
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(plan.outcomes)
            }
        }
    };
}

pub(crate) use inventory_queries;

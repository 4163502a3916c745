//! Orders: the input that creates one ([`NewOrder`]), the stored order ([`Order`]) and its lifecycle.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Currency, CustomerId, FieldError, MinorUnits, OrderId, Quantity, Sku, ValidationErrors};

/// Where an order is in its lifecycle (`CREATED -> PAID | PAYMENT_FAILED`, `PAID -> ALLOCATED | REJECTED`,
/// `CANCELLED` from CREATED, PAID or ALLOCATED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Accepted and recorded; waiting for payment.
    Created,
    /// Payment captured.
    Paid,
    /// Payment declined or failed.
    PaymentFailed,
    /// Stock reserved.
    Allocated,
    /// Stock could not be reserved.
    Rejected,
    /// Cancelled by the customer.
    Cancelled,
}

impl OrderStatus {
    /// The status as stored and shown (`CREATED`, `PAID`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Paid => "PAID",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::Allocated => "ALLOCATED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

impl OrderStatus {
    /// Whether no step moves an order on from this status: payment failed, allocated, rejected or cancelled.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::PaymentFailed | Self::Allocated | Self::Rejected | Self::Cancelled
        )
    }

    /// The highest version a pipeline step gives an order (the stock outcome).
    pub const LAST_STEP_VERSION: i64 = 3;

    /// The order version the pipeline gives an order entering this status: 1 created, 2 payment outcome
    /// (PAID, PAYMENT_FAILED), 3 stock outcome (ALLOCATED, REJECTED); `None` for CANCELLED, which follows
    /// the version of the cancelled order (see [`Order::cancel`]).
    pub fn step_version(&self) -> Option<i64> {
        match self {
            Self::Created => Some(1),
            Self::Paid | Self::PaymentFailed => Some(2),
            Self::Allocated | Self::Rejected => Some(Self::LAST_STEP_VERSION),
            Self::Cancelled => None,
        }
    }

    /// The statuses from which a pipeline event may move an order to `self`: CREATED before a payment
    /// outcome; CREATED or PAID before a stock outcome, since the outcomes travel on different topics and
    /// the stock outcome (which only follows a payment) may be seen first. Empty when no pipeline event
    /// leads here. A change also needs the order below its version, so a late payment never moves an
    /// allocated order back.
    pub fn pipeline_predecessors(&self) -> &'static [OrderStatus] {
        match self {
            Self::Paid | Self::PaymentFailed => &[Self::Created],
            Self::Allocated | Self::Rejected => &[Self::Created, Self::Paid],
            Self::Created | Self::Cancelled => &[],
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an order status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status '{0}'")]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "CREATED" => Self::Created,
            "PAID" => Self::Paid,
            "PAYMENT_FAILED" => Self::PaymentFailed,
            "ALLOCATED" => Self::Allocated,
            "REJECTED" => Self::Rejected,
            "CANCELLED" => Self::Cancelled,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }
}

/// One validated line of a new order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrderItem {
    /// Product ordered.
    pub sku: Sku,
    /// Units ordered.
    pub quantity: Quantity,
    /// Price of one unit, in minor units of the order's currency.
    pub unit_price_minor: MinorUnits,
}

/// A validated request to create an order; only [`NewOrder::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    customer_id: CustomerId,
    currency: Currency,
    items: Vec<NewOrderItem>,
    total: MinorUnits,
}

impl NewOrder {
    /// Most lines accepted in one order.
    pub const MAX_ITEMS: usize = 100;

    /// Parses a fully priced order document of the shape
    /// `{"customer_id": "...", "currency": "EUR", "items": [{"sku": "...", "quantity": 1, "unit_price_minor": 100}]}`,
    /// reporting every missing, wrong-typed or out-of-range field at once. Tools and tests build orders this
    /// way; the API never takes a client's price: it parses an [`OrderRequest`] and prices it from the
    /// catalogue ([`OrderRequest::price`]).
    pub fn parse(doc: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let (customer_id, currency, lines) = parse_request(doc, true, &mut errors);
        // With prices required, a line is only kept when its price parsed.
        let items = lines.map(|lines| {
            lines
                .into_iter()
                .filter_map(|(sku, quantity, price)| {
                    price.map(|unit_price_minor| NewOrderItem {
                        sku,
                        quantity,
                        unit_price_minor,
                    })
                })
                .collect::<Vec<_>>()
        });
        let total = items.as_ref().and_then(|items| total_of(items, &mut errors));
        match (customer_id, currency, items, total) {
            (Some(customer_id), Some(currency), Some(items), Some(total)) if errors.is_empty() => Ok(Self {
                customer_id,
                currency,
                items,
                total,
            }),
            _ => Err(errors),
        }
    }

    /// The customer placing the order.
    pub fn customer_id(&self) -> &CustomerId {
        &self.customer_id
    }

    /// The currency every price is in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The order lines (at least one).
    pub fn items(&self) -> &[NewOrderItem] {
        &self.items
    }

    /// Sum of quantity x unit price over all lines.
    pub fn total(&self) -> MinorUnits {
        self.total
    }
}

/// Sum of quantity x unit price over `items`; `None` (with an error) when it does not fit.
fn total_of(items: &[NewOrderItem], errors: &mut ValidationErrors) -> Option<MinorUnits> {
    items
        .iter()
        .try_fold(MinorUnits::ZERO, |acc, i| {
            acc.checked_add(i.unit_price_minor.checked_mul(i.quantity)?)
        })
        .or_else(|| {
            errors.push("items", "the order total is too large");
            None
        })
}

/// One parsed line: product, units and the unit price given (if any).
type ParsedLine = (Sku, Quantity, Option<MinorUnits>);

/// The customer, currency and lines of an order document; `price_required` says whether every line must
/// carry `unit_price_minor`.
fn parse_request(
    doc: &Value,
    price_required: bool,
    errors: &mut ValidationErrors,
) -> (Option<CustomerId>, Option<Currency>, Option<Vec<ParsedLine>>) {
    let Some(obj) = doc.as_object() else {
        errors.push("", "the request body must be a JSON object");
        return (None, None, None);
    };
    let customer_id = string_field(obj.get("customer_id"), "customer_id", errors).and_then(|s| {
        CustomerId::parse(s)
            .map_err(|m| errors.push("customer_id", m))
            .ok()
    });
    let currency = string_field(obj.get("currency"), "currency", errors)
        .and_then(|s| Currency::parse(s).map_err(|m| errors.push("currency", m)).ok());
    let items = parse_items(obj.get("items"), price_required, errors);
    (customer_id, currency, items)
}

/// One line of an [`OrderRequest`]: what and how many; the price is the catalogue's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedItem {
    /// Product ordered.
    pub sku: Sku,
    /// Units ordered.
    pub quantity: Quantity,
    /// The unit price the client expects, when it sent one: it must be the catalogue's.
    pub quoted_unit_price: Option<MinorUnits>,
}

/// A validated order request as a client sends it: customer, currency and lines, without trusted prices.
/// [`OrderRequest::price`] turns it into a [`NewOrder`] with the catalogue's prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    customer_id: CustomerId,
    currency: Currency,
    items: Vec<RequestedItem>,
}

/// Why an [`OrderRequest`] could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// Lines whose product the catalogue does not hold (or the total does not fit), one error per line.
    #[error("order lines cannot be priced: {0}")]
    Unpriceable(ValidationErrors),
    /// Lines whose quoted price is not the catalogue's: `items[i].unit_price_minor` and what it costs now.
    #[error("quoted prices differ from the catalogue: {}", .0.iter().map(|q| format!("{} (quoted {}, price {})", q.field, q.quoted, q.price)).collect::<Vec<_>>().join(", "))]
    QuoteDiffers(Vec<QuoteMismatch>),
}

/// A line whose quoted price is not the catalogue's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteMismatch {
    /// The field, `items[i].unit_price_minor`.
    pub field: String,
    /// The product.
    pub sku: String,
    /// The unit price the client sent.
    pub quoted: i64,
    /// The catalogue's unit price.
    pub price: i64,
}

impl OrderRequest {
    /// Parses `{"customer_id": "...", "currency": "EUR", "items": [{"sku": "...", "quantity": 1}]}`; a line
    /// may quote `unit_price_minor`, which must then be the catalogue's. Every bad field is reported at once.
    pub fn parse(doc: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let (customer_id, currency, lines) = parse_request(doc, false, &mut errors);
        match (customer_id, currency, lines) {
            (Some(customer_id), Some(currency), Some(lines)) if errors.is_empty() => Ok(Self {
                customer_id,
                currency,
                items: lines
                    .into_iter()
                    .map(|(sku, quantity, quoted_unit_price)| RequestedItem {
                        sku,
                        quantity,
                        quoted_unit_price,
                    })
                    .collect(),
            }),
            _ => Err(errors),
        }
    }

    /// The customer the order is for.
    pub fn customer_id(&self) -> &CustomerId {
        &self.customer_id
    }

    /// The lines requested.
    pub fn items(&self) -> &[RequestedItem] {
        &self.items
    }

    /// The order with each line at `price_of` its product (the catalogue's unit price, `None` for a product
    /// it does not hold). Unknown products are reported before quotes that differ.
    pub fn price(self, price_of: impl Fn(&Sku) -> Option<MinorUnits>) -> Result<NewOrder, PricingError> {
        let mut unknown = ValidationErrors::default();
        let mut differing = Vec::new();
        let mut items = Vec::with_capacity(self.items.len());
        for (i, line) in self.items.into_iter().enumerate() {
            let Some(price) = price_of(&line.sku) else {
                unknown.push(
                    format!("items[{i}].sku"),
                    format!("no product '{}' in the catalogue", line.sku),
                );
                continue;
            };
            if let Some(quoted) = line.quoted_unit_price.filter(|q| *q != price) {
                differing.push(QuoteMismatch {
                    field: format!("items[{i}].unit_price_minor"),
                    sku: line.sku.to_string(),
                    quoted: quoted.get(),
                    price: price.get(),
                });
            }
            items.push(NewOrderItem {
                sku: line.sku,
                quantity: line.quantity,
                unit_price_minor: price,
            });
        }
        if !unknown.is_empty() {
            return Err(PricingError::Unpriceable(unknown));
        }
        if !differing.is_empty() {
            return Err(PricingError::QuoteDiffers(differing));
        }
        let mut errors = ValidationErrors::default();
        let total = total_of(&items, &mut errors).ok_or(PricingError::Unpriceable(errors))?;
        Ok(NewOrder {
            customer_id: self.customer_id,
            currency: self.currency,
            items,
            total,
        })
    }
}

fn string_field<'a>(value: Option<&'a Value>, field: &str, errors: &mut ValidationErrors) -> Option<&'a str> {
    match value {
        None | Some(Value::Null) => {
            errors.push(field, "is required");
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push(field, "must be a string");
            None
        }
    }
}

fn integer_field(value: Option<&Value>, field: &str, errors: &mut ValidationErrors) -> Option<i64> {
    match value {
        None | Some(Value::Null) => {
            errors.push(field, "is required");
            None
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => Some(v),
            None if n.is_u64() => {
                errors.push(field, "is too large");
                None
            }
            None => {
                errors.push(field, "must be an integer (minor units, never a fraction)");
                None
            }
        },
        Some(_) => {
            errors.push(field, "must be an integer");
            None
        }
    }
}

fn parse_items(
    value: Option<&Value>,
    price_required: bool,
    errors: &mut ValidationErrors,
) -> Option<Vec<ParsedLine>> {
    let list = match value {
        None | Some(Value::Null) => {
            errors.push("items", "is required");
            return None;
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            errors.push("items", "must be an array");
            return None;
        }
    };
    if list.is_empty() {
        errors.push("items", "must contain at least one item");
        return None;
    }
    if list.len() > NewOrder::MAX_ITEMS {
        errors.push(
            "items",
            format!("must contain at most {} items", NewOrder::MAX_ITEMS),
        );
        return None;
    }
    let before = errors.errors().len();
    let mut items = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = |f: &str| format!("items[{i}].{f}");
        let Some(obj) = item.as_object() else {
            errors
                .0
                .push(FieldError::new(format!("items[{i}]"), "must be an object"));
            continue;
        };
        let sku = string_field(obj.get("sku"), &at("sku"), errors)
            .and_then(|s| Sku::parse(s).map_err(|m| errors.push(at("sku"), m)).ok());
        let quantity = integer_field(obj.get("quantity"), &at("quantity"), errors).and_then(|q| {
            Quantity::parse(q)
                .map_err(|m| errors.push(at("quantity"), m))
                .ok()
        });
        let given = obj.get("unit_price_minor").filter(|v| !v.is_null());
        let price = if given.is_some() || price_required {
            integer_field(given, &at("unit_price_minor"), errors).and_then(|p| {
                MinorUnits::unit_price(p)
                    .map_err(|m| errors.push(at("unit_price_minor"), m))
                    .ok()
            })
        } else {
            None
        };
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            items.push((sku, quantity, price));
        }
    }
    (errors.errors().len() == before).then_some(items)
}

/// One line of a recorded order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// Product ordered.
    pub sku: Sku,
    /// Units ordered.
    pub quantity: Quantity,
    /// Price of one unit, in minor units.
    pub unit_price_minor: MinorUnits,
}

impl OrderItem {
    /// Rebuilds a line from stored or transported parts, checking each like new input.
    pub fn from_parts(sku: &str, quantity: i64, unit_price_minor: i64) -> Result<Self, String> {
        Ok(Self {
            sku: Sku::parse(sku).map_err(|e| format!("sku: {e}"))?,
            quantity: Quantity::parse(quantity).map_err(|e| format!("quantity: {e}"))?,
            unit_price_minor: MinorUnits::unit_price(unit_price_minor)
                .map_err(|e| format!("unit_price_minor: {e}"))?,
        })
    }
}

/// A recorded order as the source of truth holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub id: OrderId,
    /// Who placed it.
    pub customer_id: CustomerId,
    /// Currency of every amount.
    pub currency: Currency,
    /// Current lifecycle state.
    pub status: OrderStatus,
    /// Increases by one with every change; state only ever moves to a higher version.
    pub version: i64,
    /// The order lines.
    pub items: Vec<OrderItem>,
    /// Sum over the lines, in minor units.
    pub total_minor: MinorUnits,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// Turns a validated request into version 1 of a new order, created at `now`.
    ///
    /// Times are kept to the microsecond, the finest precision every store holds, so the order answered on
    /// creation is the order read back later.
    pub fn create(new: NewOrder, now: DateTime<Utc>) -> Self {
        let now = now.trunc_subsecs(6);
        Self {
            id: OrderId::new(),
            customer_id: new.customer_id,
            currency: new.currency,
            status: OrderStatus::Created,
            version: 1,
            items: new
                .items
                .into_iter()
                .map(|i| OrderItem {
                    sku: i.sku,
                    quantity: i.quantity,
                    unit_price_minor: i.unit_price_minor,
                })
                .collect(),
            total_minor: new.total,
            created_at: now,
            updated_at: now,
        }
    }

    /// The order cancelled at `now`, when its status allows it: CREATED, PAID or ALLOCATED (allocated stock is
    /// released by the inventory role on `order.cancelled`).
    ///
    /// A cancellation is final, so its version is above every pipeline step ([`OrderStatus::step_version`]):
    /// a payment or stock event that arrives late can then never move any copy of the order back.
    pub fn cancel(&self, now: DateTime<Utc>) -> Result<Self, TransitionError> {
        match self.status {
            OrderStatus::Created | OrderStatus::Paid | OrderStatus::Allocated => Ok(Self {
                status: OrderStatus::Cancelled,
                version: self.version.max(OrderStatus::LAST_STEP_VERSION) + 1,
                updated_at: now.trunc_subsecs(6).max(self.updated_at),
                ..self.clone()
            }),
            from => Err(TransitionError {
                from,
                to: OrderStatus::Cancelled,
            }),
        }
    }
}

/// A status change the order's lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an order in status {} cannot become {}", from.as_str(), to.as_str())]
pub struct TransitionError {
    /// The order's current status.
    pub from: OrderStatus,
    /// The status asked for.
    pub to: OrderStatus,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(doc: Value) -> Vec<String> {
        NewOrder::parse(&doc)
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_valid_order_parses_with_its_total() {
        let doc = json!({"customer_id": "c-1", "currency": "EUR",
            "items": [{"sku": "A", "quantity": 2, "unit_price_minor": 150}, {"sku": "B", "quantity": 1, "unit_price_minor": 5}]});
        let order = NewOrder::parse(&doc).expect("valid");
        assert_eq!(order.total().get(), 305);
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        let created = Order::create(order, now);
        assert_eq!(created.status, OrderStatus::Created);
        assert_eq!(
            created.created_at.timestamp_subsec_nanos(),
            123_456_000,
            "kept to the microsecond"
        );
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let doc = json!({"customer_id": 5, "currency": "XXZ",
            "items": [{"sku": "", "quantity": 0, "unit_price_minor": -1}, {"sku": "B", "quantity": 1.5}]});
        assert_eq!(
            fields(doc),
            vec![
                "customer_id",
                "currency",
                "items[0].sku",
                "items[0].quantity",
                "items[0].unit_price_minor",
                "items[1].quantity",
                "items[1].unit_price_minor"
            ]
        );
    }

    #[test]
    fn missing_and_empty_inputs_are_rejected() {
        assert_eq!(fields(json!({})), vec!["customer_id", "currency", "items"]);
        assert_eq!(
            fields(json!({"customer_id": "c", "currency": "EUR", "items": []})),
            vec!["items"]
        );
        assert_eq!(fields(json!([1, 2])), vec![""]);
    }

    #[test]
    fn too_many_items_are_rejected() {
        let item = json!({"sku": "A", "quantity": 1, "unit_price_minor": 1});
        let doc =
            json!({"customer_id": "c", "currency": "EUR", "items": vec![item; NewOrder::MAX_ITEMS + 1]});
        assert_eq!(fields(doc), vec!["items"]);
    }

    #[test]
    fn pipeline_steps_move_forward_and_cancel_outranks_them() {
        use OrderStatus::*;
        for to in [Paid, PaymentFailed, Allocated, Rejected] {
            assert!(!to.pipeline_predecessors().is_empty());
            for from in to.pipeline_predecessors() {
                assert!(to.step_version() > from.step_version(), "{from} -> {to}");
            }
        }
        assert_eq!(Allocated.pipeline_predecessors(), &[Created, Paid]);
        assert!(Created.pipeline_predecessors().is_empty());
        assert!(Cancelled.pipeline_predecessors().is_empty());
        let highest = [Created, Paid, PaymentFailed, Allocated, Rejected]
            .iter()
            .filter_map(OrderStatus::step_version)
            .max();
        assert_eq!(highest, Some(OrderStatus::LAST_STEP_VERSION));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [OrderStatus::Created, OrderStatus::Paid, OrderStatus::Cancelled] {
            assert_eq!(s.as_str().parse::<OrderStatus>(), Ok(s));
        }
    }

    #[test]
    fn cancel_is_allowed_from_created_paid_and_allocated_only() {
        let doc = json!({"customer_id": "c", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unit_price_minor": 10}]});
        let order = Order::create(NewOrder::parse(&doc).expect("valid"), Utc::now());
        for status in [OrderStatus::Created, OrderStatus::Paid, OrderStatus::Allocated] {
            let cancelled = Order {
                status,
                ..order.clone()
            }
            .cancel(Utc::now())
            .expect("allowed");
            assert_eq!(cancelled.status, OrderStatus::Cancelled);
            assert_eq!(cancelled.version, OrderStatus::LAST_STEP_VERSION + 1);
            assert!(cancelled.updated_at >= order.updated_at);
        }
        for status in [
            OrderStatus::PaymentFailed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ] {
            let refused = Order {
                status,
                ..order.clone()
            }
            .cancel(Utc::now());
            assert_eq!(
                refused.map(|_| ()),
                Err(TransitionError {
                    from: status,
                    to: OrderStatus::Cancelled
                })
            );
        }
    }

    fn catalogue(sku: &Sku) -> Option<MinorUnits> {
        match sku.as_str() {
            "A" => MinorUnits::unit_price(150).ok(),
            "B" => MinorUnits::unit_price(5).ok(),
            _ => None,
        }
    }

    #[test]
    fn a_request_is_priced_from_the_catalogue_whatever_the_client_would_pay() {
        let doc = json!({"customer_id": "c-1", "currency": "EUR",
            "items": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1, "unit_price_minor": 5}]});
        let order = OrderRequest::parse(&doc)
            .expect("valid")
            .price(catalogue)
            .expect("priced");
        assert_eq!(order.total().get(), 305);
        assert_eq!(order.items()[0].unit_price_minor.get(), 150);

        let cheaper = json!({"customer_id": "c-1", "currency": "EUR",
            "items": [{"sku": "B", "quantity": 1}, {"sku": "A", "quantity": 1, "unit_price_minor": 1}]});
        let refused = OrderRequest::parse(&cheaper).expect("valid").price(catalogue);
        assert_eq!(
            refused,
            Err(PricingError::QuoteDiffers(vec![QuoteMismatch {
                field: "items[1].unit_price_minor".into(),
                sku: "A".into(),
                quoted: 1,
                price: 150,
            }]))
        );

        let unknown = json!({"customer_id": "c-1", "currency": "EUR",
            "items": [{"sku": "A", "quantity": 1, "unit_price_minor": 1}, {"sku": "NOPE", "quantity": 1}]});
        match OrderRequest::parse(&unknown).expect("valid").price(catalogue) {
            Err(PricingError::Unpriceable(errors)) => {
                let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["items[1].sku"]);
            }
            other => panic!("expected the unknown line named, got {other:?}"),
        }
    }

    #[test]
    fn a_request_still_checks_a_quoted_price_and_every_other_field() {
        let doc = json!({"customer_id": "", "currency": "EUR",
            "items": [{"sku": "A", "quantity": 0, "unit_price_minor": -1}]});
        let fields: Vec<String> = OrderRequest::parse(&doc)
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default();
        assert_eq!(
            fields,
            ["customer_id", "items[0].quantity", "items[0].unit_price_minor"]
        );
    }
}

//! `/v1/orders`: create an order (one transaction with its outbox event) and read one back cache-aside.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use orderflow_domain::{Order, OrderId, OrderRequest, OrderStatus, ValidationErrors};
use orderflow_events::{OrderCancelled, OrderCreated};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::identity::Caller;
use crate::{ApiError, AppState, idempotency};
use orderflow_store::KeyedWrite;

/// One order line as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemView {
    /// The product.
    sku: String,
    /// Units ordered.
    quantity: u32,
    /// The catalogue's unit price when the order was placed, in minor units of the order's currency.
    unit_price_minor: i64,
    /// `quantity` times `unit_price_minor`.
    line_total_minor: i64,
}

/// An order as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    /// The order's id.
    #[schema(format = Uuid)]
    id: String,
    /// Whose order it is.
    customer_id: String,
    /// ISO 4217 code.
    currency: &'static str,
    /// Where the order is in its lifecycle.
    #[schema(value_type = OrderStatus)]
    status: &'static str,
    /// Grows by one with each change of status.
    #[schema(minimum = 1)]
    version: i64,
    /// The lines, priced.
    items: Vec<OrderItemView>,
    /// The sum of the lines, in minor units.
    total_minor: i64,
    /// When the order was placed.
    created_at: DateTime<Utc>,
    /// When it last changed.
    updated_at: DateTime<Utc>,
}

/// The body of `POST /v1/orders`: who orders, in which currency, and what.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewOrder)]
#[allow(dead_code)] // Read by `OrderRequest::parse`, which reports every offending field at once; this type describes it.
pub(crate) struct NewOrderBody {
    /// Who orders.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,64}$", min_length = 1, max_length = 64)]
    customer_id: String,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
    /// What is ordered, one line per product.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<NewOrderItemBody>,
}

/// One line of a new order: a product and how many.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewOrderItem)]
#[allow(dead_code)] // Describes a line `OrderRequest::parse` reads.
pub(crate) struct NewOrderItemBody {
    /// A product of the catalogue; an unknown SKU is refused with 422 naming the line (items[i].sku).
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,64}$", min_length = 1, max_length = 64)]
    sku: String,
    /// Units.
    #[schema(minimum = 1, maximum = 10000)]
    quantity: u32,
    /// Optional quote: the unit price the client expects. The server charges the catalogue's price; a
    /// quote that differs from it is refused with 409 naming the line (problem type /problems/price-changed).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    unit_price_minor: i64,
}

/// The optional body of `POST /v1/orders/{id}/cancel`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Cancel)]
#[allow(dead_code)] // Read by `cancel_reason`; this type describes it.
pub(crate) struct CancelBody {
    /// Why the order is cancelled; kept with its order.cancelled event.
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// The values of `wait_for`: an order status, or `terminal` for any of the statuses that end an order.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)] // Read by `wait_params`; this type describes the values.
pub(crate) enum WaitForValue {
    Created,
    Paid,
    PaymentFailed,
    Allocated,
    Rejected,
    Cancelled,
    #[schema(rename = "terminal")]
    Terminal,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id.to_string(),
            customer_id: o.customer_id.to_string(),
            currency: o.currency.code(),
            status: o.status.as_str(),
            version: o.version,
            items: o
                .items
                .iter()
                .map(|i| OrderItemView {
                    sku: i.sku.to_string(),
                    quantity: i.quantity.get(),
                    unit_price_minor: i.unit_price_minor.get(),
                    line_total_minor: i
                        .unit_price_minor
                        .checked_mul(i.quantity)
                        .map_or(i64::MAX, |m| m.get()),
                })
                .collect(),
            total_minor: o.total_minor.get(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// Accepts `application/json` and any `application/*+json`, with parameters such as `charset`.
fn is_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(if value.is_empty() {
            "none".into()
        } else {
            value.to_owned()
        }))
    }
}

/// The `traceparent` the request's events carry: the request span's own context when traces are exported
/// (so consumers continue this request's trace), else the caller's header passed on unchanged.
fn event_traceparent(headers: &HeaderMap) -> Option<String> {
    orderflow_telemetry::traceparent(&tracing::Span::current()).or_else(|| {
        headers
            .get(orderflow_telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .filter(|v| orderflow_telemetry::is_traceparent(v))
            .map(str::to_owned)
    })
}

/// `POST /v1/orders`: validates, prices each line from the catalogue, then writes order, lines and
/// `order.created` in one transaction (shared with the POSTs arriving meanwhile: a group commit); 201 after
/// commit.
///
/// With an `Idempotency-Key` the order, its event and the response are written in a transaction of their
/// own, so a retry with the key gets this response (and no second order), whichever instance it reaches.
/// A caller bound to a customer places orders for that customer only (`403` otherwise).
#[utoipa::path(
    post,
    path = "/v1/orders",
    operation_id = "createOrder",
    summary = "Place an order (scope orders:write)",
    description = "Prices every line from the product catalogue (never from the client). Unknown products get \
        422 naming each line; a quoted unit_price_minor that is not the catalogue's gets 409 naming each line. \
        A credential bound to a customer (an API key's customer_id, or the token claim \
        gateway.jwt.customer_claim) places orders for that customer only: another customer_id gets 403.",
    params(idempotency::KeyHeader),
    request_body = NewOrderBody,
    responses(
        (status = 201, description = "Created; committed with its order.created event", body = OrderView,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Validation),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from)?;
    let key = idempotency::key(&headers, &caller, "POST /v1/orders", &body, state.idempotency_ttl)?;
    if let Some(key) = &key
        && let Some(kept) = state.store.kept_response(key).await?
    {
        return idempotency::replay(kept, key);
    }
    is_json(&headers)?;
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(ApiError::MalformedJson)?;
    let request = OrderRequest::parse(&doc).map_err(ApiError::Validation)?;
    if let Some(own) = &caller.customer
        && own != request.customer_id().as_str()
    {
        return Err(ApiError::ForeignCustomer(own.clone()));
    }
    let new = state.catalogue.price(request).await?;

    let order = Order::create(new, Utc::now());
    let traceparent = event_traceparent(&headers);
    let traceparent = traceparent.as_deref();
    let event = state
        .codec
        .encode(&OrderCreated::from_order(&order), traceparent)?;
    let location = format!("/v1/orders/{}", order.id);
    let rendered = render_order(&order);
    match &key {
        None => state.orders.insert(order.clone(), event).await?,
        Some(key) => {
            let kept = idempotency::kept(key, StatusCode::CREATED, &rendered, Some(&location));
            match state.store.insert_order_once(&order, &event, key, &kept).await? {
                KeyedWrite::Written => {}
                KeyedWrite::Kept(first) => return idempotency::replay(first, key),
                KeyedWrite::Moved => {
                    return Err(ApiError::Conflict("the order changed while being created".into()));
                }
            }
        }
    }
    if let Some(relay) = &state.relay_wakeup {
        relay.notify_one();
    }
    // Write-through: the writer's next GET sees this version (or a newer one), on any instance.
    state.cache.refresh(&order.id.to_string(), &order).await;

    let mut response = (StatusCode::CREATED, json_order(rendered)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Longest a `GET /v1/orders/{id}?wait_for=...` may wait, in milliseconds.
pub const MAX_WAIT_MS: u64 = 30_000;
/// How long a `wait_for` read waits when `timeout_ms` is absent, in milliseconds.
pub const DEFAULT_WAIT_MS: u64 = 10_000;
/// How often a waiting read looks at the order again.
const WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(20);

/// What a `GET` with `wait_for` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    /// A status: reached when the order has it, or has gone past the step that sets it, or is terminal.
    Status(OrderStatus),
    /// Any terminal status.
    Terminal,
}

impl WaitFor {
    fn reached(self, order: &Order) -> bool {
        if order.status.is_terminal() {
            return true;
        }
        match self {
            Self::Terminal => false,
            Self::Status(wanted) => {
                order.status == wanted || wanted.step_version().is_some_and(|step| order.version >= step)
            }
        }
    }
}

/// The `wait_for` and `timeout_ms` query parameters of `GET /v1/orders/{id}`, parsed; `None` without
/// `wait_for`.
fn wait_params(query: Option<&str>) -> Result<Option<(WaitFor, std::time::Duration)>, ApiError> {
    let (mut wait_for, mut timeout_ms) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match name.as_ref() {
            "wait_for" => &mut wait_for,
            "timeout_ms" => &mut timeout_ms,
            other => {
                return Err(ApiError::BadQuery(format!(
                    "unknown query parameter '{other}' (expected one of: wait_for, timeout_ms)"
                )));
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(ApiError::BadQuery(format!(
                "query parameter '{name}' is given twice"
            )));
        }
    }
    let timeout = match &timeout_ms {
        None => DEFAULT_WAIT_MS,
        Some(text) => match text.parse::<u64>() {
            Ok(ms) if ms <= MAX_WAIT_MS => ms,
            _ => {
                return Err(ApiError::BadQuery(format!(
                    "timeout_ms must be a whole number of milliseconds from 0 to {MAX_WAIT_MS}, not '{text}'"
                )));
            }
        },
    };
    let Some(wanted) = wait_for else {
        if timeout_ms.is_some() {
            return Err(ApiError::BadQuery("timeout_ms is given without wait_for".into()));
        }
        return Ok(None);
    };
    let wanted = match wanted.as_str() {
        "terminal" => WaitFor::Terminal,
        status => WaitFor::Status(status.parse().map_err(|_| {
            ApiError::BadQuery(format!(
                "wait_for must be an order status (CREATED, PAID, PAYMENT_FAILED, ALLOCATED, REJECTED, CANCELLED) or 'terminal', not '{status}'"
            ))
        })?),
    };
    Ok(Some((wanted, std::time::Duration::from_millis(timeout))))
}

/// `GET /v1/orders/{id}`: through the order cache (in-process, then Redis, then the database); misses are
/// coalesced so a hot order is loaded once however many requests arrive.
///
/// With `wait_for=<STATUS>|terminal` (and `timeout_ms`, default 10 s, at most 30 s) it answers once the
/// order reached that status (or went past it, or ended), or when the time is up: `200` with the current
/// state either way, so a client reads its own write without polling.
///
/// A caller bound to a customer gets `404` for another customer's order, as for one that does not exist.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    operation_id = "getOrder",
    summary = "Read an order, or wait until it reaches a status (scope orders:read)",
    description = "A credential bound to a customer gets 404 for another customer's order, as for one that \
        does not exist. timeout_ms is only allowed with wait_for (400 otherwise).",
    params(
        ("id" = String, Path, format = Uuid, description = "The order's id (a UUID)"),
        ("wait_for" = Option<WaitForValue>, Query, description = "Wait until the order has this status, has \
            gone past the step that sets it, or has ended ('terminal': any of PAYMENT_FAILED, ALLOCATED, \
            REJECTED, CANCELLED), or until timeout_ms passes; the answer is the current state either way."),
        ("timeout_ms" = Option<u64>, Query, minimum = 0, maximum = 30000, description = "How long wait_for \
            may wait, in milliseconds (default 10000); only with wait_for."),
    ),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let order_id: OrderId = id.parse().map_err(|_| ApiError::InvalidOrderId(id.clone()))?;
    let wait = wait_params(query.as_deref())?;
    let key = order_id.to_string();
    // The order as this caller may see it (another customer's is as missing as an unknown one).
    let visible = || async {
        state
            .cache
            .get_or_load(&key, loader(&state, order_id))
            .await
            .map_err(ApiError::load)?
            .filter(|order| caller.may_see(order))
            .ok_or_else(|| ApiError::OrderNotFound(id.clone()))
    };
    if let Some((wanted, timeout)) = wait {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let order = visible().await?;
            if wanted.reached(&order) || tokio::time::Instant::now() + WAIT_STEP > deadline {
                return Ok(json_order(render_order(&order)));
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }
    if caller.customer.is_some() {
        return Ok(json_order(render_order(&visible().await?)));
    }
    let body = state
        .cache
        .get_or_load_rendered(&key, loader(&state, order_id), render_order)
        .await
        .map_err(ApiError::load)?
        .ok_or(ApiError::OrderNotFound(id))?;
    Ok(json_order(body))
}

/// An order read from the source of truth.
type OrderLoad =
    std::pin::Pin<Box<dyn Future<Output = Result<Option<Order>, orderflow_store::StoreError>> + Send>>;

/// Loads order `id` from the source of truth: what the cache calls on a miss.
fn loader(state: &AppState, id: OrderId) -> impl Fn() -> OrderLoad + Send + Sync + 'static {
    let store = state.store.clone();
    move || {
        let store = store.clone();
        Box::pin(async move { store.get_order(id).await })
    }
}

/// A `200` with an order's JSON body.
fn json_order(body: Bytes) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// An order's JSON body; rendered once per in-process cache entry.
fn render_order(order: &Order) -> Bytes {
    // Serialising a plain struct of strings and numbers to memory cannot fail.
    serde_json::to_vec(&OrderView::from(order))
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Longest cancellation reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The optional body of a cancel: `{"reason": "..."}`; empty (or `null`) means no reason.
fn cancel_reason(headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    is_json(headers)?;
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(ApiError::MalformedJson)?;
    let mut errors = ValidationErrors::default();
    let reason = match &doc {
        serde_json::Value::Object(fields) => {
            for name in fields.keys().filter(|k| k.as_str() != "reason") {
                errors.push(name.as_str(), "unknown field");
            }
            match fields.get("reason") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(r)) if r.chars().count() <= MAX_REASON_CHARS => {
                    Some(r.clone())
                }
                Some(serde_json::Value::String(_)) => {
                    errors.push("reason", format!("at most {MAX_REASON_CHARS} characters"));
                    None
                }
                Some(_) => {
                    errors.push("reason", "must be a string");
                    None
                }
            }
        }
        // `null` is the absent body written as JSON.
        serde_json::Value::Null => None,
        _ => {
            errors.push("", "expected a JSON object");
            None
        }
    };
    if errors.is_empty() {
        Ok(reason)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// `POST /v1/orders/{id}/cancel` (with an optional `Idempotency-Key`, as for create): from CREATED, PAID or ALLOCATED only (409 otherwise). The status change and
/// `order.cancelled` commit in one transaction, guarded by the order's version (a concurrent change makes it
/// decide again on the new state); the new version is written through the cache, so the caller's next GET
/// shows it.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    operation_id = "cancelOrder",
    summary = "Cancel an order that is CREATED, PAID or ALLOCATED (scope orders:write)",
    description = "A credential bound to a customer gets 404 for another customer's order. A paid order is \
        refunded once it is cancelled.",
    params(
        ("id" = String, Path, format = Uuid, description = "The order's id (a UUID)"),
        idempotency::KeyHeader,
    ),
    request_body(content = Option<CancelBody>, description = "Optional: why"),
    responses(
        (status = 200, description = "The cancelled order", body = OrderView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::Validation),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let order_id: OrderId = id.parse().map_err(|_| ApiError::InvalidOrderId(id.clone()))?;
    let body = body.map_err(ApiError::from)?;
    let request = format!("POST /v1/orders/{order_id}/cancel");
    let key = idempotency::key(&headers, &caller, &request, &body, state.idempotency_ttl)?;
    if let Some(key) = &key
        && let Some(kept) = state.store.kept_response(key).await?
    {
        return idempotency::replay(kept, key);
    }
    let reason = cancel_reason(&headers, &body)?;
    let traceparent = event_traceparent(&headers);
    let traceparent = traceparent.as_deref();
    for _ in 0..CANCEL_ATTEMPTS {
        let current = state
            .store
            .get_order(order_id)
            .await?
            .filter(|order| caller.may_see(order))
            .ok_or_else(|| ApiError::OrderNotFound(id.clone()))?;
        let cancelled = match current.cancel(Utc::now()) {
            Ok(cancelled) => cancelled,
            Err(refused) => {
                // A request with this key may have cancelled it since the key was first looked up: its
                // answer, committed with the cancel, is the answer.
                if let Some(key) = &key
                    && let Some(kept) = state.store.kept_response(key).await?
                {
                    return idempotency::replay(kept, key);
                }
                return Err(ApiError::Transition(refused));
            }
        };
        let event = state.codec.encode(
            &OrderCancelled::from_order(&cancelled, current.status, reason.clone()),
            traceparent,
        )?;
        let rendered = render_order(&cancelled);
        let written = match &key {
            None => state.store.update_order(&current, &cancelled, &event).await?,
            Some(key) => {
                let kept = idempotency::kept(key, StatusCode::OK, &rendered, None);
                match state
                    .store
                    .update_order_once(&current, &cancelled, &event, key, &kept)
                    .await?
                {
                    KeyedWrite::Written => true,
                    KeyedWrite::Kept(first) => return idempotency::replay(first, key),
                    KeyedWrite::Moved => false,
                }
            }
        };
        if written {
            if let Some(relay) = &state.relay_wakeup {
                relay.notify_one();
            }
            state.cache.refresh(&id, &cancelled).await;
            return Ok(json_order(rendered));
        }
    }
    Err(ApiError::Conflict(format!("order {id} kept changing; try again")))
}

/// How many times a cancel re-reads an order that changed under it before giving up with 409.
const CANCEL_ATTEMPTS: usize = 3;

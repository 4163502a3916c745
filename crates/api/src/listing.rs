//! `GET /v1/orders`: a customer's (or, for staff, anyone's) orders, page by page with an opaque keyset cursor,
//! oldest first. A page holds `limit` orders (50 by default, 500 at most); `next_cursor` fetches the next,
//! and is `null` on the last. Orders placed later appear on later pages: the order is stable.

use axum::Json;
use axum::extract::{RawQuery, State};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use orderflow_domain::{OrderId, OrderStatus};
use orderflow_store::OrderFilter;
use serde::Serialize;

use crate::identity::Caller;
use crate::orders::OrderView;
use crate::{ApiError, AppState};

/// Orders per page when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 50;
/// Most orders per page.
pub const MAX_LIMIT: i64 = 500;

/// One page of orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// The orders of the page, oldest first.
    orders: Vec<OrderView>,
    /// Pass as cursor to fetch the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The cursor after the order placed at `at` with id `id`: opaque to clients (base64url of both).
fn cursor(at: DateTime<Utc>, id: OrderId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}.{id}", at.timestamp_micros()))
}

/// Reads a cursor made by [`cursor`].
fn parse_cursor(text: &str) -> Option<(DateTime<Utc>, OrderId)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (micros, id) = raw.split_once('.')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

/// The query parameters, parsed; a caller bound to a customer lists that customer's orders only.
fn filter(query: Option<&str>, caller: &Caller) -> Result<(OrderFilter, bool), ApiError> {
    let mut filter = OrderFilter {
        customer_id: None,
        status: None,
        created_after: None,
        after: None,
        limit: DEFAULT_LIMIT,
    };
    let mut seen = std::collections::HashSet::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !seen.insert(name.clone()) {
            return Err(ApiError::BadQuery(format!(
                "query parameter '{name}' is given twice"
            )));
        }
        match name.as_ref() {
            "customer_id" => filter.customer_id = Some(value.into_owned()),
            "status" => {
                filter.status = Some(value.parse::<OrderStatus>().map_err(|_| {
                    ApiError::BadQuery(format!(
                        "status must be an order status (CREATED, PAID, PAYMENT_FAILED, ALLOCATED, REJECTED, CANCELLED), not '{value}'"
                    ))
                })?);
            }
            "created_after" => {
                let at = DateTime::parse_from_rfc3339(&value).map_err(|source| ApiError::BadTime {
                    name: "created_after".into(),
                    value: value.to_string(),
                    source,
                })?;
                filter.created_after = Some(at.with_timezone(&Utc));
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadQuery(format!(
                            "limit must be a whole number from 1 to {MAX_LIMIT}, not '{value}'"
                        ))
                    })?;
            }
            "cursor" => {
                filter.after = Some(parse_cursor(&value).ok_or_else(|| {
                    ApiError::BadQuery(
                        "cursor is not one this API gave out (use next_cursor as it is)".into(),
                    )
                })?);
            }
            other => {
                return Err(ApiError::BadQuery(format!(
                    "unknown query parameter '{other}' (expected one of: customer_id, status, created_after, limit, cursor)"
                )));
            }
        }
    }
    // A bound caller asking for another customer's orders gets none (as if that customer had none).
    let foreign = match (&caller.customer, &filter.customer_id) {
        (Some(own), Some(asked)) => own != asked,
        _ => false,
    };
    if let Some(own) = &caller.customer {
        filter.customer_id = Some(own.clone());
    }
    Ok((filter, foreign))
}

/// `GET /v1/orders?customer_id=&status=&created_after=&limit=&cursor=`.
#[utoipa::path(
    get,
    path = "/v1/orders",
    operation_id = "listOrders",
    summary = "List orders, oldest first, a page at a time (scope orders:read)",
    description = "Keyset pagination: pages are stable (orders placed later appear on later pages). A \
        credential bound to a customer lists only that customer's orders: naming another customer_id gives \
        an empty page. Filters combine.",
    params(
        ("customer_id" = Option<String>, Query, description = "Only this customer's orders."),
        ("status" = Option<OrderStatus>, Query, description = "Only orders in this status."),
        ("created_after" = Option<DateTime<Utc>>, Query, description = "Only orders placed after this RFC 3339 time."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Orders per page (50 by default)."),
        ("cursor" = Option<String>, Query, description = "The next_cursor of the previous page, as given. \
            Any other value is refused with 400."),
    ),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<OrderPage>, ApiError> {
    let (filter, foreign) = filter(query.as_deref(), &caller)?;
    if foreign {
        return Ok(Json(OrderPage {
            orders: Vec::new(),
            next_cursor: None,
        }));
    }
    let ids = state.store.list_orders(&filter).await?;
    let mut found = state.store.get_orders(&ids).await?;
    // The page keeps the listing's order.
    found.sort_by_key(|order| (order.created_at, order.id.as_uuid()));
    let next_cursor = (i64::try_from(ids.len()).unwrap_or(i64::MAX) >= filter.limit)
        .then(|| found.last().map(|last| cursor(last.created_at, last.id)))
        .flatten();
    Ok(Json(OrderPage {
        orders: found.iter().map(OrderView::from).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_cursor_reads_back_and_foreign_text_is_refused() {
        let at = DateTime::from_timestamp_micros(1_765_000_000_123_456).unwrap();
        let id = OrderId::new();
        assert_eq!(parse_cursor(&cursor(at, id)), Some((at, id)));
        assert_eq!(parse_cursor("not a cursor"), None);
    }

    #[test]
    fn a_bound_caller_lists_its_own_orders_only() {
        let bound = Caller {
            client: "key:alice".into(),
            customer: Some("alice".into()),
        };
        let (filter, foreign) = super::filter(Some("customer_id=bob&limit=10"), &bound).unwrap();
        assert!(foreign);
        assert_eq!(filter.customer_id.as_deref(), Some("alice"));
        let (filter, foreign) = super::filter(None, &bound).unwrap();
        assert!(!foreign);
        assert_eq!(
            (filter.customer_id.as_deref(), filter.limit),
            (Some("alice"), DEFAULT_LIMIT)
        );
        for bad in [
            "limit=0",
            "limit=501",
            "status=LOST",
            "color=red",
            "cursor=xyz",
            "limit=1&limit=2",
        ] {
            assert!(super::filter(Some(bad), &Caller::default()).is_err(), "{bad}");
        }
    }
}

//! `GET /v1/analytics/...`: the analytics aggregates as JSON. Ranges are `from` and `to` query parameters
//! (RFC 3339); each endpoint has a default range and a longest one it serves.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use orderflow_analytics::AnalyticsError;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::{ApiError, AppState};

/// Longest range of the hourly endpoints (revenue, customers, top products).
const MAX_HOURLY_SECS: i64 = 31 * 24 * 3600;
/// Longest range of the windowed order counts.
const MAX_WINDOWED_SECS: i64 = 24 * 3600;

/// The query parameters, each allowed at most once and only when `allowed` names it.
fn params(query: Option<String>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut params = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            return Err(ApiError::BadQuery(format!(
                "unknown query parameter '{name}' (expected one of: {})",
                allowed.join(", ")
            )));
        }
        if params.insert(name.to_string(), value.to_string()).is_some() {
            return Err(ApiError::BadQuery(format!(
                "query parameter '{name}' is given twice"
            )));
        }
    }
    Ok(params)
}

fn instant(params: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            // An unencoded `+` in an offset (`+02:00`) arrives as a space.
            DateTime::parse_from_rfc3339(&v.replace(' ', "+"))
                .map(|t| t.timestamp())
                .map_err(|source| ApiError::BadTime {
                    name: name.to_owned(),
                    value: v.clone(),
                    source,
                })
        })
        .transpose()
}

/// The `[from, to]` range asked for: `default_secs` back from now when absent, at most `max_secs` long.
fn range(
    params: &BTreeMap<String, String>,
    default_secs: i64,
    max_secs: i64,
) -> Result<(i64, i64), ApiError> {
    let to = instant(params, "to")?.unwrap_or_else(|| Utc::now().timestamp());
    let from = instant(params, "from")?.unwrap_or(to - default_secs);
    if from > to {
        return Err(ApiError::BadQuery("'from' is after 'to'".into()));
    }
    if to - from > max_secs {
        return Err(ApiError::BadQuery(format!(
            "the range is longer than the {} hours this endpoint serves",
            max_secs / 3600
        )));
    }
    Ok((from, to))
}

fn rfc3339(secs: i64) -> Value {
    DateTime::<Utc>::from_timestamp(secs, 0).map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// Redis trouble is unavailability (503); anything else the analytics refuse is a fault of the service (500).
fn analytics_error(error: AnalyticsError) -> ApiError {
    match error {
        AnalyticsError::Redis(_) => ApiError::Unavailable(std::sync::Arc::new(error)),
        other => ApiError::Internal(std::sync::Arc::new(other)),
    }
}

/// Revenue over a range.
#[derive(Serialize, ToSchema)]
pub(crate) struct Revenue {
    /// Start of the range.
    #[schema(value_type = DateTime<Utc>)]
    from: Value,
    /// End of the range.
    #[schema(value_type = DateTime<Utc>)]
    to: Value,
    /// One entry per hour with revenue.
    hours: Vec<RevenueHour>,
    /// Revenue over the range per currency, in minor units.
    total_minor: BTreeMap<String, i64>,
}

/// Revenue of one hour.
#[derive(Serialize, ToSchema)]
pub(crate) struct RevenueHour {
    /// The hour's start.
    #[schema(value_type = DateTime<Utc>)]
    hour: Value,
    /// Revenue per currency, in minor units.
    revenue_minor: BTreeMap<String, i64>,
}

/// Orders per hopping window.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrderWindows {
    /// How long a window is.
    window_secs: i64,
    /// How far apart windows start.
    hop_secs: i64,
    /// The windows starting in the range.
    windows: Vec<OrderWindow>,
}

/// Orders created in one window.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrderWindow {
    /// Window start.
    #[schema(value_type = DateTime<Utc>)]
    start: Value,
    /// Window end.
    #[schema(value_type = DateTime<Utc>)]
    end: Value,
    /// Orders created in it.
    orders: u64,
}

/// Distinct customers over a range.
#[derive(Serialize, ToSchema)]
pub(crate) struct Customers {
    /// Start of the range.
    #[schema(value_type = DateTime<Utc>)]
    from: Value,
    /// End of the range.
    #[schema(value_type = DateTime<Utc>)]
    to: Value,
    /// Distinct customers per hour.
    hours: Vec<CustomersHour>,
    /// Distinct customers over the whole range (estimated).
    total: u64,
}

/// Distinct customers of one hour.
#[derive(Serialize, ToSchema)]
pub(crate) struct CustomersHour {
    /// The hour's start.
    #[schema(value_type = DateTime<Utc>)]
    hour: Value,
    /// Distinct customers (estimated).
    customers: u64,
}

/// The best-selling products.
#[derive(Serialize, ToSchema)]
pub(crate) struct TopProducts {
    /// Most units first.
    products: Vec<ProductUnits>,
}

/// Units sold of one product.
#[derive(Serialize, ToSchema)]
pub(crate) struct ProductUnits {
    /// The product.
    sku: String,
    /// Units ordered.
    units: i64,
}

/// Orders per funnel stage.
#[derive(Serialize, ToSchema)]
pub(crate) struct Funnel {
    /// Orders placed.
    created: u64,
    /// Orders paid.
    paid: u64,
    /// Orders allocated.
    allocated: u64,
    /// Orders whose payment failed.
    payment_failed: u64,
    /// Paid orders inventory rejected.
    rejected: u64,
    /// Orders cancelled.
    cancelled: u64,
    /// Orders whose captured payment was refunded (rejected or cancelled after payment).
    refunded: u64,
    /// Rates between stages.
    conversion: Conversion,
}

/// Conversion rates of the funnel, from 0 to 1 (0 while the earlier stage is empty).
#[derive(Serialize, ToSchema)]
pub(crate) struct Conversion {
    /// Paid over created.
    created_to_paid: f64,
    /// Allocated over paid.
    paid_to_allocated: f64,
    /// Allocated over created.
    created_to_allocated: f64,
}

/// Revenue per hour and per currency over the range (default: the last 24 hours), and its total.
#[utoipa::path(
    get,
    path = "/v1/analytics/revenue",
    operation_id = "revenue",
    summary = "Revenue per hour and currency (scope analytics:read)",
    description = "Revenue is captured payments less refunds. Cross-field rules: from must not be after to, \
        and the range may span at most 744 hours (400 otherwise).",
    params(RangeParams),
    responses(
        (status = 200, description = "Revenue", body = Revenue),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub(crate) async fn revenue(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Revenue>, ApiError> {
    let params = params(query, &["from", "to"])?;
    let (from, to) = range(&params, 24 * 3600, MAX_HOURLY_SECS)?;
    let hours = state.analytics.revenue(from, to).await.map_err(analytics_error)?;
    let mut total: BTreeMap<String, i64> = BTreeMap::new();
    for hour in &hours {
        for (currency, minor) in &hour.by_currency {
            *total.entry(currency.clone()).or_default() += minor;
        }
    }
    Ok(Json(Revenue {
        from: rfc3339(from),
        to: rfc3339(to),
        hours: hours
            .iter()
            .map(|h| RevenueHour {
                hour: rfc3339(h.hour),
                revenue_minor: h.by_currency.clone(),
            })
            .collect(),
        total_minor: total,
    }))
}

/// Orders created per hopping window starting in the range (default: the last 15 minutes).
#[utoipa::path(
    get,
    path = "/v1/analytics/orders-per-minute",
    operation_id = "ordersPerMinute",
    summary = "Orders per one-minute window, hopping (scope analytics:read)",
    description = "Cross-field rules: from must not be after to, and the range may span at most 24 hours (400 \
        otherwise).",
    params(RangeParams),
    responses(
        (status = 200, description = "Windows", body = OrderWindows),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub(crate) async fn orders_per_minute(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<OrderWindows>, ApiError> {
    let params = params(query, &["from", "to"])?;
    let (from, to) = range(&params, 15 * 60, MAX_WINDOWED_SECS)?;
    let windows = state
        .analytics
        .orders_per_window(from, to)
        .await
        .map_err(analytics_error)?;
    let hopping = state.analytics.hopping();
    Ok(Json(OrderWindows {
        window_secs: hopping.size_secs,
        hop_secs: hopping.hop_secs,
        windows: windows
            .iter()
            .map(|w| OrderWindow {
                start: rfc3339(w.start),
                end: rfc3339(w.end),
                orders: w.orders,
            })
            .collect(),
    }))
}

/// Distinct customers per hour and over the range (default: the last 24 hours).
#[utoipa::path(
    get,
    path = "/v1/analytics/customers",
    operation_id = "customers",
    summary = "Unique customers per hour, estimated (scope analytics:read)",
    description = "Cross-field rules: from must not be after to, and the range may span at most 744 hours \
        (400 otherwise).",
    params(RangeParams),
    responses(
        (status = 200, description = "Customers", body = Customers),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub(crate) async fn customers(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Customers>, ApiError> {
    let params = params(query, &["from", "to"])?;
    let (from, to) = range(&params, 24 * 3600, MAX_HOURLY_SECS)?;
    let customers = state
        .analytics
        .unique_customers(from, to)
        .await
        .map_err(analytics_error)?;
    Ok(Json(Customers {
        from: rfc3339(from),
        to: rfc3339(to),
        hours: customers
            .per_hour
            .iter()
            .map(|(hour, n)| CustomersHour {
                hour: rfc3339(*hour),
                customers: *n,
            })
            .collect(),
        total: customers.total,
    }))
}

/// The products ordered most, by units: over the range when `from` or `to` is given, else ever.
#[utoipa::path(
    get,
    path = "/v1/analytics/top-products",
    operation_id = "topProducts",
    summary = "Best-selling products by units (scope analytics:read)",
    description = "Cross-field rules: from must not be after to, and the range may span at most 744 hours \
        (400 otherwise).",
    params(
        RangeParams,
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many products (10 by default)."),
    ),
    responses(
        (status = 200, description = "Products", body = TopProducts),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub(crate) async fn top_products(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<TopProducts>, ApiError> {
    let params = params(query, &["from", "to", "limit"])?;
    let limit = match params.get("limit") {
        None => 10,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::BadQuery(format!("'limit' must be a whole number from 1 to 100, got '{v}'"))
            })?,
    };
    let bounded = params.contains_key("from") || params.contains_key("to");
    let range = if bounded {
        Some(range(&params, 24 * 3600, MAX_HOURLY_SECS)?)
    } else {
        None
    };
    let products = state
        .analytics
        .top_products(range, limit)
        .await
        .map_err(analytics_error)?;
    Ok(Json(TopProducts {
        products: products
            .iter()
            .map(|(sku, units)| ProductUnits {
                sku: sku.clone(),
                units: *units,
            })
            .collect(),
    }))
}

/// Orders per funnel stage, ever, with the conversion rates between stages.
#[utoipa::path(
    get,
    path = "/v1/analytics/funnel",
    operation_id = "funnel",
    summary = "Created -> paid -> allocated, with conversion rates (scope analytics:read)",
    responses(
        (status = 200, description = "Funnel", body = Funnel),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub(crate) async fn funnel(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Funnel>, ApiError> {
    params(query, &[])?;
    let funnel = state.analytics.funnel().await.map_err(analytics_error)?;
    Ok(Json(Funnel {
        created: funnel.created,
        paid: funnel.paid,
        allocated: funnel.allocated,
        payment_failed: funnel.payment_failed,
        rejected: funnel.rejected,
        cancelled: funnel.cancelled,
        refunded: funnel.refunded,
        conversion: Conversion {
            created_to_paid: funnel.paid_rate(),
            paid_to_allocated: funnel.allocated_rate(),
            created_to_allocated: funnel.overall_rate(),
        },
    }))
}

/// The `from` and `to` query parameters of the ranged endpoints.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by `range`; this type only describes them.
pub(crate) struct RangeParams {
    /// RFC 3339 start (inclusive).
    from: Option<DateTime<Utc>>,
    /// RFC 3339 end.
    to: Option<DateTime<Utc>>,
}

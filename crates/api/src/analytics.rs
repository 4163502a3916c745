//! `GET /v1/analytics/...`: the analytics aggregates as JSON. Ranges are `from` and `to` query parameters
//! (RFC 3339); each endpoint has a default range and a longest one it serves.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use orderflow_analytics::AnalyticsError;
use serde_json::{Value, json};

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

/// Revenue per hour and per currency over the range (default: the last 24 hours), and its total.
pub(crate) async fn revenue(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = params(query, &["from", "to"])?;
    let (from, to) = range(&params, 24 * 3600, MAX_HOURLY_SECS)?;
    let hours = state.analytics.revenue(from, to).await.map_err(analytics_error)?;
    let mut total: BTreeMap<String, i64> = BTreeMap::new();
    for hour in &hours {
        for (currency, minor) in &hour.by_currency {
            *total.entry(currency.clone()).or_default() += minor;
        }
    }
    Ok(Json(json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "hours": hours
            .iter()
            .map(|h| json!({"hour": rfc3339(h.hour), "revenue_minor": h.by_currency}))
            .collect::<Vec<_>>(),
        "total_minor": total,
    })))
}

/// Orders created per hopping window starting in the range (default: the last 15 minutes).
pub(crate) async fn orders_per_minute(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = params(query, &["from", "to"])?;
    let (from, to) = range(&params, 15 * 60, MAX_WINDOWED_SECS)?;
    let windows = state
        .analytics
        .orders_per_window(from, to)
        .await
        .map_err(analytics_error)?;
    let hopping = state.analytics.hopping();
    Ok(Json(json!({
        "window_secs": hopping.size_secs,
        "hop_secs": hopping.hop_secs,
        "windows": windows
            .iter()
            .map(|w| json!({"start": rfc3339(w.start), "end": rfc3339(w.end), "orders": w.orders}))
            .collect::<Vec<_>>(),
    })))
}

/// Distinct customers per hour and over the range (default: the last 24 hours).
pub(crate) async fn customers(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = params(query, &["from", "to"])?;
    let (from, to) = range(&params, 24 * 3600, MAX_HOURLY_SECS)?;
    let customers = state
        .analytics
        .unique_customers(from, to)
        .await
        .map_err(analytics_error)?;
    Ok(Json(json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "hours": customers
            .per_hour
            .iter()
            .map(|(hour, n)| json!({"hour": rfc3339(*hour), "customers": n}))
            .collect::<Vec<_>>(),
        "total": customers.total,
    })))
}

/// The products ordered most, by units: over the range when `from` or `to` is given, else ever.
pub(crate) async fn top_products(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "products": products
            .iter()
            .map(|(sku, units)| json!({"sku": sku, "units": units}))
            .collect::<Vec<_>>(),
    })))
}

/// Orders per funnel stage, ever, with the conversion rates between stages.
pub(crate) async fn funnel(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    params(query, &[])?;
    let funnel = state.analytics.funnel().await.map_err(analytics_error)?;
    Ok(Json(json!({
        "created": funnel.created,
        "paid": funnel.paid,
        "allocated": funnel.allocated,
        "payment_failed": funnel.payment_failed,
        "rejected": funnel.rejected,
        "cancelled": funnel.cancelled,
        "refunded": funnel.refunded,
        "conversion": {
            "created_to_paid": funnel.paid_rate(),
            "paid_to_allocated": funnel.allocated_rate(),
            "created_to_allocated": funnel.overall_rate(),
        },
    })))
}

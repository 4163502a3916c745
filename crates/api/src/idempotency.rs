//! The `Idempotency-Key` request header (IETF httpapi draft) on `POST /v1/orders` and
//! `POST /v1/orders/{id}/cancel`: a retried request with the same key gets the first one's response and makes
//! no second change; the same key with another request gets `422`. Keys belong to the calling client and are
//! kept in the database ([`orderflow_store::IdempotencyKey`]) for `orders.idempotency_ttl_secs`.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orderflow_store::{IdempotencyKey, KeptResponse};
use sha2::{Digest, Sha256};

use crate::ApiError;
use crate::identity::Caller;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Longest key accepted, in characters.
pub const MAX_KEY_CHARS: usize = 255;

/// The `Idempotency-Key` header as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `key`; this type only describes it.
pub(crate) struct KeyHeader {
    /// Makes the request safe to retry (IETF httpapi Idempotency-Key draft): a structured-field string such
    /// as "8e03978e" (or the bare key), 1 to 255 visible ASCII characters. A request repeating a key of the
    /// same client within orders.idempotency_ttl_secs (24 h by default) gets the first response again
    /// (status, body, Location) and changes nothing; the same key with a different method, path or body
    /// gets 422 (/problems/idempotency-key-reused); a malformed key gets 400. Concurrent requests with one
    /// key wait for the first. The schema lists the token characters every client can send; any visible
    /// ASCII is accepted.
    #[param(rename = "Idempotency-Key", pattern = "^[A-Za-z0-9._~:+/=-]{1,255}$")]
    key: Option<String>,
}

/// The request's key, if it has one: `None` without the header, `400` for a malformed one. The value is a
/// structured-field string (`"…"`, as the draft has it) or, leniently, the bare key.
pub(crate) fn key(
    headers: &HeaderMap,
    caller: &Caller,
    request: &str,
    body: &[u8],
    ttl: Duration,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidIdempotencyKey(
            "the header is given more than once".into(),
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey("it must be visible ASCII".into()))?
        .trim();
    let key = match text.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .filter(|k| !k.contains(['"', '\\']))
            .ok_or_else(|| ApiError::InvalidIdempotencyKey("an unterminated or escaped string".into()))?,
        None => text,
    };
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(ApiError::InvalidIdempotencyKey(format!(
            "it must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
        )));
    }
    let expired_before = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| chrono::Utc::now().checked_sub_signed(ttl))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    Ok(Some(IdempotencyKey {
        client: caller.client.clone(),
        key: key.to_owned(),
        fingerprint: fingerprint(request, body),
        expired_before,
    }))
}

/// SHA-256 over the method and path (`request`) and the body, JSON bodies with their object keys sorted so
/// that the same document written another way is the same request.
fn fingerprint(request: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(request.as_bytes());
    hash.update(b"\n");
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(doc) => canonical(&doc, &mut hash),
        Err(_) => hash.update(body),
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `value` to `hash` with every object's keys in sorted order.
fn canonical(value: &serde_json::Value, hash: &mut Sha256) {
    match value {
        serde_json::Value::Object(fields) => {
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            hash.update(b"{");
            for name in names {
                hash.update(serde_json::Value::String(name.clone()).to_string().as_bytes());
                hash.update(b":");
                canonical(&fields[name.as_str()], hash);
                hash.update(b",");
            }
            hash.update(b"}");
        }
        serde_json::Value::Array(items) => {
            hash.update(b"[");
            for item in items {
                canonical(item, hash);
                hash.update(b",");
            }
            hash.update(b"]");
        }
        scalar => hash.update(scalar.to_string().as_bytes()),
    }
}

/// What to keep for a response about to be sent.
pub(crate) fn kept(
    key: &IdempotencyKey,
    status: StatusCode,
    body: &[u8],
    location: Option<&str>,
) -> KeptResponse {
    KeptResponse {
        fingerprint: key.fingerprint.clone(),
        status: status.as_u16(),
        body: String::from_utf8_lossy(body).into_owned(),
        location: location.map(str::to_owned),
    }
}

/// The kept response, sent again: `422` when the key was first used for another request.
pub(crate) fn replay(kept: KeptResponse, key: &IdempotencyKey) -> Result<Response, ApiError> {
    if kept.fingerprint != key.fingerprint {
        return Err(ApiError::IdempotencyKeyReused(key.key.clone()));
    }
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        Bytes::from(kept.body),
    )
        .into_response();
    if let Some(location) = kept.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn keys_are_structured_strings_or_bare_and_bounded() {
        let caller = Caller::default();
        let ttl = Duration::from_secs(60);
        let parsed = key(&with("\"abc-1\""), &caller, "POST /v1/orders", b"{}", ttl)
            .unwrap()
            .unwrap();
        assert_eq!(parsed.key, "abc-1");
        let bare = key(&with("abc-1"), &caller, "POST /v1/orders", b"{}", ttl)
            .unwrap()
            .unwrap();
        assert_eq!(bare.fingerprint, parsed.fingerprint);
        assert!(
            key(&HeaderMap::new(), &caller, "POST /v1/orders", b"{}", ttl)
                .unwrap()
                .is_none()
        );
        for bad in ["\"\"", "\"open", &"k".repeat(MAX_KEY_CHARS + 1)] {
            assert!(
                key(&with(bad), &caller, "POST /v1/orders", b"{}", ttl).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace_but_not_content_or_route() {
        let a = fingerprint("POST /v1/orders", br#"{"a": 1, "b": [1, {"c": 2, "d": 3}]}"#);
        let b = fingerprint("POST /v1/orders", br#"{"b":[1,{"d":3,"c":2}],"a":1}"#);
        assert_eq!(a, b);
        assert_ne!(
            a,
            fingerprint("POST /v1/orders", br#"{"a": 2, "b": [1, {"c": 2, "d": 3}]}"#)
        );
        assert_ne!(
            a,
            fingerprint("POST /v1/other", br#"{"a": 1, "b": [1, {"c": 2, "d": 3}]}"#)
        );
    }
}

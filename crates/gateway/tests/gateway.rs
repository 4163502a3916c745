//! The gateway over real HTTP in front of a real upstream, with rate limits in a real redis-server:
//! authentication (API keys, HS256, RS256 and ES256 tokens), scopes, rate limits shared by two
//! instances, body limits, timeouts, request ids and upstream failover.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::response::IntoResponse;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use orderflow_gateway::{ApiKeySettings, Authenticator, Gateway, GatewaySettings, JwtKeySettings, Upstreams};
use orderflow_redis::{RedisConnection, RedisTarget};
use serde_json::{Value, json};

const HS_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

/// An upstream that echoes what reached it (method, path, headers); `/slow` sleeps 3 s.
async fn start_upstream() -> String {
    async fn echo(request: Request) -> axum::response::Response {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
            .collect();
        axum::Json(json!({
            "method": request.method().as_str(),
            "path": request.uri().path(),
            "headers": headers,
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(echo)).await });
    format!("http://{addr}")
}

/// Starts a gateway forwarding to `upstreams`; returns its base URL.
async fn start_gateway(settings: &GatewaySettings, redis: Option<RedisConnection>, prefix: &str) -> String {
    let auth = Authenticator::new(settings).unwrap();
    let gateway = Gateway::new(settings, auth, redis, prefix).unwrap();
    let upstreams = Upstreams::new(&settings.upstreams, settings.max_body_bytes).unwrap();
    let app = gateway
        .proxy(upstreams)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn key(id: &str, secret: &str, scopes: &[&str]) -> ApiKeySettings {
    ApiKeySettings {
        id: id.into(),
        key: Some(secret.to_owned().into()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..ApiKeySettings::default()
    }
}

fn settings(upstream: &str) -> GatewaySettings {
    let mut settings = GatewaySettings {
        upstreams: vec![upstream.to_owned()],
        api_keys: vec![
            key(
                "writer",
                "writer-key-0123456789",
                &["orders:write", "orders:read"],
            ),
            key("reader", "reader-key-0123456789", &["orders:read"]),
            key("admin", "admin-key-0123456789", &["admin"]),
        ],
        timeout_ms: 1000,
        max_body_bytes: 1024,
        ..GatewaySettings::default()
    };
    settings.jwt.hs256_secret = Some(HS_SECRET.to_owned().into());
    settings
}

async fn redis() -> RedisConnection {
    let server = orderflow_testkit::redis();
    RedisConnection::connect(&RedisTarget {
        urls: vec![server.url()],
        cluster: false,
        ca_pem: None,
        connect_timeout: Duration::from_secs(2),
    })
    .await
    .unwrap()
}

async fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if method == "POST" {
        request = request.header("content-type", "application/json").body("{}");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes an RSA and a P-256 key pair with the openssl tool; returns their folder.
fn key_pairs() -> PathBuf {
    let dir = orderflow_testkit::temp_dir("jwt-keys").unwrap();
    openssl(
        &dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    openssl(&dir, &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub"]);
    openssl(
        &dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    openssl(&dir, &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub"]);
    dir
}

#[tokio::test]
async fn every_business_route_needs_a_credential_and_its_scope() {
    let upstream = start_upstream().await;
    let base = start_gateway(&settings(&upstream), None, "").await;
    let routes = [
        ("POST", "/v1/orders"),
        ("GET", "/v1/orders/01890000-0000-7000-8000-000000000000"),
        ("POST", "/v1/orders/01890000-0000-7000-8000-000000000000/cancel"),
        ("GET", "/v1/analytics/revenue"),
        ("GET", "/v1/analytics/funnel"),
        ("GET", "/metrics"),
        ("GET", "/registry/subjects"),
        ("POST", "/registry/subjects/x/versions"),
    ];
    for (method, path) in routes {
        let (status, headers, body) = call(method, &format!("{base}{path}"), &[]).await;
        assert_eq!(status, 401, "{method} {path} without credentials");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(body["type"], "/problems/unauthenticated");
        assert!(headers.contains_key("www-authenticate"));
        let (status, _, _) = call(method, &format!("{base}{path}"), &[("x-api-key", "not-a-key")]).await;
        assert_eq!(status, 401, "{method} {path} with an unknown key");
    }
    let (status, _, _) = call("GET", &format!("{base}/healthz"), &[]).await;
    assert_eq!(status, 200, "health is public");

    // A reader may read but not write; the writer both; analytics needs its own scope; admin everything.
    let order = format!("{base}/v1/orders/01890000-0000-7000-8000-000000000000");
    let reader = [("x-api-key", "reader-key-0123456789")];
    assert_eq!(call("GET", &order, &reader).await.0, 200);
    let (status, headers, body) = call("POST", &format!("{base}/v1/orders"), &reader).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (403, Some("/problems/forbidden"))
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    let writer = [("authorization", "Bearer writer-key-0123456789")];
    assert_eq!(call("POST", &format!("{base}/v1/orders"), &writer).await.0, 200);
    assert_eq!(
        call("GET", &format!("{base}/v1/analytics/revenue"), &writer)
            .await
            .0,
        403
    );
    assert_eq!(call("GET", &format!("{base}/metrics"), &writer).await.0, 403);
    // HTTP Basic with the key as password (what schema-registry clients send from `http://u:key@host`).
    let basic = [("authorization", "Basic dTpyZWFkZXIta2V5LTAxMjM0NTY3ODk=")]; // u:reader-key-0123456789
    assert_eq!(call("GET", &order, &basic).await.0, 200);
    assert_eq!(
        call("GET", &format!("{base}/registry/subjects"), &basic).await.0,
        200
    );
    assert_eq!(
        call("POST", &format!("{base}/registry/subjects/x/versions"), &basic)
            .await
            .0,
        403
    );
    let admin = [("x-api-key", "admin-key-0123456789")];
    assert_eq!(
        call("GET", &format!("{base}/v1/analytics/revenue"), &admin)
            .await
            .0,
        200
    );
    assert_eq!(call("GET", &format!("{base}/metrics"), &admin).await.0, 200);

    // What reaches the upstream: no credential, a request id (the caller's when well-formed).
    let (_, headers, echoed) = call(
        "GET",
        &order,
        &[("x-api-key", "reader-key-0123456789"), ("x-request-id", "req-42")],
    )
    .await;
    assert_eq!(headers["x-request-id"], "req-42");
    assert_eq!(echoed["headers"]["x-request-id"], "req-42");
    assert!(
        echoed["headers"].get("x-api-key").is_none(),
        "credentials never reach the upstream"
    );
    let (_, headers, echoed) = call(
        "GET",
        &order,
        &[("authorization", "Bearer reader-key-0123456789")],
    )
    .await;
    assert!(echoed["headers"].get("authorization").is_none());
    let generated = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        generated.len(),
        36,
        "a generated request id is a UUID: {generated}"
    );
    assert_eq!(echoed["headers"]["x-request-id"], generated.as_str());
}

#[tokio::test]
async fn tokens_signed_with_hs256_rs256_and_es256_are_checked() {
    let dir = key_pairs();
    let upstream = start_upstream().await;
    let mut settings = settings(&upstream);
    settings.jwt.issuer = Some("https://issuer.test".into());
    settings.jwt.keys = vec![
        JwtKeySettings {
            kid: Some("rsa-1".into()),
            algorithm: "RS256".into(),
            public_key_file: dir.join("rsa.pub"),
        },
        JwtKeySettings {
            kid: Some("ec-1".into()),
            algorithm: "ES256".into(),
            public_key_file: dir.join("ec.pub"),
        },
    ];
    let base = start_gateway(&settings, None, "").await;
    let url = format!("{base}/v1/orders/01890000-0000-7000-8000-000000000000");
    let claims = |exp: u64, scope: &str| json!({"sub": "shop-1", "iss": "https://issuer.test", "exp": exp, "scope": scope});
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(dir.join("rsa.pem")).unwrap()).unwrap();
    let ec = EncodingKey::from_ec_pem(&std::fs::read(dir.join("ec.pem")).unwrap()).unwrap();
    let hs = EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap();
    let valid = [
        token(Algorithm::HS256, &hs, None, claims(now() + 300, "orders:read")),
        token(
            Algorithm::RS256,
            &rsa,
            Some("rsa-1"),
            claims(now() + 300, "orders:read"),
        ),
        token(
            Algorithm::ES256,
            &ec,
            Some("ec-1"),
            claims(now() + 300, "orders:read"),
        ),
    ];
    for jwt in &valid {
        let bearer = format!("Bearer {jwt}");
        assert_eq!(call("GET", &url, &[("authorization", &bearer)]).await.0, 200);
        let (status, _, body) = call(
            "POST",
            &format!("{base}/v1/orders"),
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(status, 403, "orders:read does not allow writing: {body}");
    }
    // An `scp` list grants scopes too.
    let listed = token(
        Algorithm::ES256,
        &ec,
        Some("ec-1"),
        json!({"sub": "shop-2", "iss": "https://issuer.test", "exp": now() + 300, "scp": ["orders:write"]}),
    );
    let bearer = format!("Bearer {listed}");
    assert_eq!(
        call(
            "POST",
            &format!("{base}/v1/orders"),
            &[("authorization", &bearer)]
        )
        .await
        .0,
        200
    );

    let expired = token(
        Algorithm::RS256,
        &rsa,
        Some("rsa-1"),
        claims(now() - 120, "orders:read"),
    );
    let wrong_issuer = token(
        Algorithm::HS256,
        &hs,
        None,
        json!({"sub": "x", "iss": "https://evil.test", "exp": now() + 300, "scope": "admin"}),
    );
    let no_subject = token(
        Algorithm::HS256,
        &hs,
        None,
        json!({"iss": "https://issuer.test", "exp": now() + 300}),
    );
    let no_issuer = token(
        Algorithm::HS256,
        &hs,
        None,
        json!({"sub": "x", "exp": now() + 300, "scope": "admin"}),
    );
    let other_secret = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!!").unwrap(),
        None,
        claims(now() + 300, "admin"),
    );
    // The RSA token with its payload swapped for one granting admin: the signature no longer matches.
    let tampered = {
        let good = &valid[1];
        let parts: Vec<&str> = good.split('.').collect();
        let forged = token(Algorithm::HS256, &hs, None, claims(now() + 300, "admin"));
        let forged_payload = forged.split('.').nth(1).unwrap();
        format!("{}.{}.{}", parts[0], forged_payload, parts[2])
    };
    // The RSA public key used as an HS256 secret (algorithm confusion) must not verify.
    let confused = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(&std::fs::read(dir.join("rsa.pub")).unwrap()).unwrap(),
        Some("rsa-1"),
        claims(now() + 300, "admin"),
    );
    let unsigned = format!("eyJhbGciOiJub25lIn0.{}.", valid[0].split('.').nth(1).unwrap());
    for (name, jwt) in [
        ("expired", &expired),
        ("wrong issuer", &wrong_issuer),
        ("no subject", &no_subject),
        ("no issuer while one is configured", &no_issuer),
        ("other secret", &other_secret),
        ("tampered", &tampered),
        ("algorithm confusion", &confused),
        ("alg none", &unsigned),
    ] {
        let (status, headers, body) = call("GET", &url, &[("authorization", &format!("Bearer {jwt}"))]).await;
        assert_eq!(status, 401, "{name} token: {body}");
        assert_eq!(headers["content-type"], "application/problem+json");
    }
    let (_, _, body) = call("GET", &url, &[("authorization", &format!("Bearer {expired}"))]).await;
    assert_eq!(body["detail"], "the token has expired");
}

#[tokio::test]
async fn over_the_limit_answers_429_with_a_retry_after_that_holds() {
    let upstream = start_upstream().await;
    let mut settings = settings(&upstream);
    settings.rate_limit.requests_per_second = 1.0;
    settings.rate_limit.burst = 3;
    let base = start_gateway(&settings, None, "").await;
    let url = format!("{base}/v1/orders/01890000-0000-7000-8000-000000000000");
    let reader = [("x-api-key", "reader-key-0123456789")];
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) = call("GET", &url, &reader).await;
        assert_eq!(status, 200);
        assert_eq!(headers["ratelimit-limit"], "3");
        assert_eq!(headers["ratelimit-remaining"], remaining);
    }
    let (status, headers, body) = call("GET", &url, &reader).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["ratelimit-remaining"], "0");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(
        retry_after, 1,
        "one request per second comes back within a second"
    );
    // Callers without a valid credential share a budget per address: a flood of forged keys gets 429.
    let mut refused = 0;
    for _ in 0..5 {
        if call("GET", &url, &[("x-api-key", "forged-key-0123456789")])
            .await
            .0
            == 429
        {
            refused += 1;
        }
    }
    assert!(refused >= 2, "{refused} of 5 forged calls were limited");
    // Another client has its own budget.
    assert_eq!(
        call("GET", &url, &[("x-api-key", "writer-key-0123456789")])
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        call("GET", &url, &reader).await.0,
        200,
        "after Retry-After the client may call again"
    );
}

#[tokio::test]
async fn two_gateway_instances_share_one_clients_budget_through_redis() {
    let upstream = start_upstream().await;
    let mut settings = settings(&upstream);
    settings.rate_limit.requests_per_second = 0.2;
    settings.rate_limit.burst = 4;
    let prefix = format!("{}:", orderflow_testkit::unique("gw"));
    let first = start_gateway(&settings, Some(redis().await), &prefix).await;
    let second = start_gateway(&settings, Some(redis().await), &prefix).await;
    let path = "/v1/orders/01890000-0000-7000-8000-000000000000";
    let reader = [("x-api-key", "reader-key-0123456789")];
    let mut allowed = 0;
    for i in 0..8 {
        let base = if i % 2 == 0 { &first } else { &second };
        let (status, headers, _) = call("GET", &format!("{base}{path}"), &reader).await;
        match status {
            200 => allowed += 1,
            429 => {
                let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(
                    (1..=5).contains(&retry),
                    "retry after {retry} s at 0.2 requests/s"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        allowed, 4,
        "the burst of 4 is spent across both instances, not 4 each"
    );
    // Without Redis each instance would keep its own budget: the same calls pass 8 times.
    let alone_a = start_gateway(&settings, None, "").await;
    let alone_b = start_gateway(&settings, None, "").await;
    let mut separate = 0;
    for i in 0..8 {
        let base = if i % 2 == 0 { &alone_a } else { &alone_b };
        if call("GET", &format!("{base}{path}"), &reader).await.0 == 200 {
            separate += 1;
        }
    }
    assert_eq!(separate, 8);
}

#[tokio::test]
async fn bodies_are_bounded_slow_upstreams_time_out_and_dead_ones_are_skipped() {
    let upstream = start_upstream().await;
    let dead = format!("http://127.0.0.1:{}", orderflow_testkit::free_port().unwrap());
    let mut settings = settings(&upstream);
    settings.upstreams = vec![dead.clone(), upstream.clone()];
    let base = start_gateway(&settings, None, "").await;
    let writer = [("x-api-key", "writer-key-0123456789")];
    for _ in 0..4 {
        let (status, _, _) = call("GET", &format!("{base}/v1/orders/x"), &writer).await;
        assert_eq!(status, 200, "a refused connection moves on to the next upstream");
    }
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/orders"))
        .header("x-api-key", "writer-key-0123456789")
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let started = std::time::Instant::now();
    let (status, headers, _) = call(
        "GET",
        &format!("{base}/slow"),
        &[("x-api-key", "admin-key-0123456789")],
    )
    .await;
    assert_eq!(status, 504);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(started.elapsed() < Duration::from_secs(3));

    settings.upstreams = vec![dead];
    let nowhere = start_gateway(&settings, None, "").await;
    let (status, headers, _) = call("GET", &format!("{nowhere}/v1/orders/x"), &writer).await;
    assert_eq!(
        status, 503,
        "no upstream took the request, so it may be sent again"
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(headers["retry-after"], "1");
}

#[test]
fn settings_without_a_secret_or_with_unknown_scopes_are_refused() {
    let mut settings = GatewaySettings {
        api_keys: vec![ApiKeySettings {
            id: "x".into(),
            ..ApiKeySettings::default()
        }],
        ..GatewaySettings::default()
    };
    assert!(Authenticator::new(&settings).is_err());
    settings.api_keys = vec![key("x", "", &["orders:read"])];
    assert!(Authenticator::new(&settings).is_err(), "an empty key is refused");
    settings.api_keys = vec![key("x", "k-0123456789abcdef", &["orders:delete"])];
    let error = Authenticator::new(&settings).err().unwrap().to_string();
    assert!(error.contains("orders:delete"), "{error}");
    settings.api_keys = vec![];
    settings.jwt.hs256_secret = Some("short".to_owned().into());
    assert!(
        Authenticator::new(&settings).is_err(),
        "an HS256 secret under 32 bytes is refused"
    );
    let empty = GatewaySettings::default();
    let auth = Authenticator::new(&empty).unwrap();
    assert!(
        Gateway::new(&empty, auth, None, "").is_err(),
        "a gateway without credentials does not start"
    );
}

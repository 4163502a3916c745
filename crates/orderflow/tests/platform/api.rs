//! The API's boundary: bad input gets problem details and writes nothing; fuzzing through the gateway finds
//! no server error and no response the OpenAPI document does not describe.

use std::process::Command;

use orderflow_roles::{Platform, Role};
use orderflow_testkit::unique;
use serde_json::{Value, json};

use crate::support::*;

/// A new, existing [`temp_dir`].
fn temp_dir_created() -> std::path::PathBuf {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_details_and_writes_nothing() {
    let mut settings = embedded_settings(&temp_dir());
    let db_url = orderflow_testkit::postgres().fresh_database().expect("database");
    settings.database.url = Some(db_url.clone());
    let platform = Platform::start(settings, &[Role::Orders])
        .await
        .expect("platform starts");
    let base = format!("http://{}", platform.http_addr.expect("http"));

    let item = |q: Value, p: Value| json!({"customer_id": "c", "currency": "EUR", "items": [{"sku": "S", "quantity": q, "unit_price_minor": p}]});
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("application/json", "{\"customer_id\": ".into(), 400, None),
        ("application/json", "".into(), 400, None),
        ("text/plain", order_body().to_string(), 415, None),
        ("application/x-www-form-urlencoded", "customer_id=c".into(), 415, None),
        ("application/json", json!({"currency": "EUR", "items": [{"sku": "S", "quantity": 1, "unit_price_minor": 1}]}).to_string(), 422, Some("customer_id")),
        ("application/json", json!({"customer_id": 42, "currency": "EUR", "items": [{"sku": "S", "quantity": 1, "unit_price_minor": 1}]}).to_string(), 422, Some("customer_id")),
        ("application/json", item(json!(0), json!(100)).to_string(), 422, Some("items[0].quantity")),
        ("application/json", item(json!(-3), json!(100)).to_string(), 422, Some("items[0].quantity")),
        ("application/json", item(json!("2"), json!(100)).to_string(), 422, Some("items[0].quantity")),
        ("application/json", item(json!(1), json!(0)).to_string(), 422, Some("items[0].unit_price_minor")),
        ("application/json", item(json!(1), json!(-100)).to_string(), 422, Some("items[0].unit_price_minor")),
        ("application/json", item(json!(1), json!(9.99)).to_string(), 422, Some("items[0].unit_price_minor")),
        ("application/json", json!({"customer_id": "c", "currency": "EUR", "items": []}).to_string(), 422, Some("items")),
        ("application/json", json!({"customer_id": "c", "currency": "ABC", "items": [{"sku": "S", "quantity": 1, "unit_price_minor": 1}]}).to_string(), 422, Some("currency")),
        ("application/json", json!([1, 2, 3]).to_string(), 422, Some("")),
    ];
    for (content_type, body, expected, field) in cases {
        let (status, problem_type, problem) = post(&base, content_type, &body).await;
        assert_eq!(status, expected, "{content_type} {body} -> {problem}");
        assert_eq!(problem_type, "application/problem+json", "{body}");
        assert_eq!(problem["status"], expected, "{body}");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("/problems/")),
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{problem}"
        );
        if let Some(field) = field {
            let fields: Vec<&str> = problem["errors"]
                .as_array()
                .expect("field errors")
                .iter()
                .filter_map(|e| e["field"].as_str())
                .collect();
            assert!(
                fields.contains(&field),
                "{body}: expected an error on {field}, got {fields:?}"
            );
        }
    }

    for (path, expected) in [
        ("/v1/orders/not-a-uuid", 400),
        (&format!("/v1/orders/{}", uuid::Uuid::now_v7()) as &str, 404),
        ("/v2/nothing", 404),
        ("/v1/analytics/revenue?from=yesterday", 400),
        (
            "/v1/analytics/revenue?from=2026-12-01T10:00:00Z&to=2026-11-01T10:00:00Z",
            400,
        ),
        (
            "/v1/analytics/revenue?from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            400,
        ),
        ("/v1/analytics/customers?color=blue", 400),
        (
            "/v1/analytics/orders-per-minute?from=2026-12-01T10:00:00Z&from=2026-12-01T11:00:00Z",
            400,
        ),
        ("/v1/analytics/top-products?limit=0", 400),
        ("/v1/analytics/top-products?limit=ten", 400),
        ("/v1/analytics/funnel?x=1", 400),
        (
            &format!("/v1/orders/{}?wait_for=SHIPPED", uuid::Uuid::now_v7()) as &str,
            400,
        ),
        (
            &format!(
                "/v1/orders/{}?wait_for=PAID&timeout_ms=60000",
                uuid::Uuid::now_v7()
            ) as &str,
            400,
        ),
        (
            &format!("/v1/orders/{}?timeout_ms=10", uuid::Uuid::now_v7()) as &str,
            400,
        ),
        (
            &format!("/v1/orders/{}?color=blue", uuid::Uuid::now_v7()) as &str,
            400,
        ),
        (
            &format!(
                "/v1/orders/{}?wait_for=terminal&timeout_ms=5",
                uuid::Uuid::now_v7()
            ) as &str,
            404,
        ),
    ] {
        let response = http_get(format!("{base}{path}")).await.expect("GET");
        assert_eq!(response.status().as_u16(), expected, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }

    let pool = sqlx::PgPool::connect(&db_url).await.expect("pg");
    for table in ["orders", "order_items", "outbox"] {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(n, 0, "bad input wrote to {table}");
    }
    platform.stop().await.expect("clean stop");
}

/// `orderflow catalog import` loads products from a CSV file (a bad row writes nothing and names its line),
/// and the API charges the catalogue's prices: a line without a price gets the catalogue's, a quote that
/// differs gets `409` naming the line, an unknown product `422` naming the line, and neither writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_sets_every_price_and_catalog_import_loads_it() {
    let dir = temp_dir_created();
    let db_url = orderflow_testkit::postgres().fresh_database().expect("database");
    assert!(
        run_binary(&["migrate", "--database-url", &db_url], &[])
            .status
            .success()
    );
    let import = |csv: &str| {
        let file = dir.join(format!("{}.csv", unique("catalogue")));
        std::fs::write(&file, csv).expect("csv");
        run_binary(
            &[
                "catalog",
                "import",
                file.to_str().expect("path"),
                "--database-url",
                &db_url,
            ],
            &[],
        )
    };
    let store = orderflow_store::Store::connect(&db_url, 2).await.expect("store");
    let refused = import("sku,name,price_minor,stock\nTEA,Green tea,450,10\nCUP,Cup,-3,5\n");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("price_minor"),
        "{stderr}"
    );
    assert!(
        store.get_product("TEA").await.expect("read").is_none(),
        "a bad file wrote rows"
    );
    let imported = import("sku,name,price_minor,stock\nTEA,Green tea,450,10\nCUP,Cup,1200,5\n");
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let tea = store.get_product("TEA").await.expect("read").expect("imported");
    assert_eq!((tea.price_minor, tea.stock), (450, 10));

    let mut settings = embedded_settings(&dir);
    settings.database.url = Some(db_url.clone());
    let platform = Platform::start(settings, &[Role::Orders])
        .await
        .expect("platform starts");
    let base = format!("http://{}", platform.http_addr.expect("http"));
    let client = reqwest::Client::new();
    let post = |items: Value| {
        let client = client.clone();
        let url = format!("{base}/v1/orders");
        async move {
            let response = client
                .post(url)
                .json(&json!({"customer_id": "c-1", "currency": "EUR", "items": items}))
                .send()
                .await
                .expect("POST");
            let status = response.status().as_u16();
            let kind = response.headers()["content-type"]
                .to_str()
                .expect("type")
                .to_owned();
            (status, kind, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, _, created) =
        post(json!([{"sku": "TEA", "quantity": 2}, {"sku": "CUP", "quantity": 1, "unit_price_minor": 1200}]))
            .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["items"][0]["unit_price_minor"], 450);
    assert_eq!(created["total_minor"], 2 * 450 + 1200);

    let (status, kind, problem) =
        post(json!([{"sku": "TEA", "quantity": 1}, {"sku": "CUP", "quantity": 1, "unit_price_minor": 1}]))
            .await;
    assert_eq!(
        (status, kind.as_str()),
        (409, "application/problem+json"),
        "{problem}"
    );
    assert_eq!(problem["type"], "/problems/price-changed");
    assert_eq!(
        problem["errors"][0]["field"], "items[1].unit_price_minor",
        "{problem}"
    );

    let (status, kind, problem) =
        post(json!([{"sku": "TEA", "quantity": 1}, {"sku": "NOPE", "quantity": 1}])).await;
    assert_eq!(
        (status, kind.as_str()),
        (422, "application/problem+json"),
        "{problem}"
    );
    assert_eq!(problem["errors"][0]["field"], "items[1].sku", "{problem}");

    let pool = sqlx::PgPool::connect(&db_url).await.expect("pg");
    let (orders,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(orders, 1, "only the order at the catalogue's prices was written");
    platform.stop().await.expect("clean stop");
}

/// Schemathesis against `/openapi.json`, through the gateway with a valid key: no 5xx, and every status,
/// content type and body as the document says. Bounded (20 examples per operation, a fixed seed) so it
/// stays a few seconds; raise `FUZZ_EXAMPLES` for a longer hunt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_the_api_through_the_gateway_finds_no_server_error_or_schema_violation() {
    let st = tokio::task::spawn_blocking(orderflow_testkit::schemathesis)
        .await
        .expect("task")
        .expect("schemathesis");
    let dir = temp_dir();
    let mut settings = embedded_settings(&dir);
    let key = unique("fuzz-key");
    settings.gateway.api_keys.push(orderflow_gateway::ApiKeySettings {
        id: "fuzz".into(),
        key: Some(key.clone().into()),
        scopes: vec!["admin".into()],
        requests_per_second: Some(1e6),
        burst: Some(1_000_000),
        ..Default::default()
    });
    let platform = Platform::start(settings, Role::ALL).await.expect("platform");
    let base = format!("http://{}", platform.http_addr.expect("http"));
    // Fuzz a ready process (a 503 before the consumers joined would be a server error to the fuzzer).
    eventually("readiness", || async {
        let ready = reqwest::get(format!("{base}/readyz")).await.ok()?;
        (ready.status() == 200).then_some(())
    })
    .await;
    let examples = std::env::var("FUZZ_EXAMPLES").unwrap_or_else(|_| "20".into());
    let out = tokio::task::spawn_blocking(move || {
        // Schemathesis keeps a cache (`.schemathesis/`) in its working directory: a throw-away one.
        Command::new(st)
            .current_dir(temp_dir_created())
            .args(["run", &format!("{base}/openapi.json"), "--no-color", "--seed", "1"])
            .args(["-n", &examples, "-H", &format!("X-Api-Key: {key}")])
            .args([
                "-c",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .output()
            .expect("st runs")
    })
    .await
    .expect("task");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("No issues found"),
        "{report}"
    );
    let spec: Value = serde_json::from_str(orderflow_api::OPENAPI).expect("the OpenAPI document");
    let operations: usize = spec["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|path| path.as_object().map_or(0, |methods| methods.len()))
        .sum();
    assert!(
        report.contains(&format!("Tested: {operations}")),
        "every one of the {operations} operations was exercised: {report}"
    );
    platform.stop().await.expect("stop");
}

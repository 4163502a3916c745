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

/// Schemathesis against `/openapi.json`, through the gateway, with every check it has (no 5xx; every status,
/// content type, header and body as the document says; schema-valid data accepted and invalid data refused,
/// with the rules the schema cannot express taken from `crates/api/schemathesis.toml`; authentication not
/// ignored; resources usable after creation and gone after deletion), at least 1,000 generated cases once with
/// a valid key and once without. A fixed seed keeps it repeatable; raise `FUZZ_EXAMPLES` (examples per
/// operation, 40 by default) for a longer hunt.
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
    let spec: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .expect("the OpenAPI document")
        .json()
        .await
        .expect("the OpenAPI document is JSON");
    // Generated from the routes: the API's, the operator routes, the registry, metrics and the document.
    let paths = spec["paths"].as_object().expect("paths");
    for route in [
        "/v1/orders",
        "/v1/orders/{id}/cancel",
        "/v1/analytics/funnel",
        "/readyz",
        "/admin/consumers/{group}/hold",
        "/registry/subjects/{subject}/versions",
        "/registry/config",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            paths.contains_key(route),
            "{route} is described: {:?}",
            paths.keys()
        );
    }
    // Every parameterless GET it describes is served (no route-not-found). `/metrics` answers its documented
    // 404 here: a test process installs no metrics recorder (the binary does).
    let client = reqwest::Client::new();
    for (path, methods) in paths {
        if path.contains('{') || methods.get("get").is_none() || path == "/metrics" {
            continue;
        }
        let status = client
            .get(format!("{base}{path}"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("GET")
            .status();
        assert_ne!(status, 404, "GET {path} is described and served");
    }
    // Schemathesis leaves out the operation serving the document it was given.
    let operations: usize = paths
        .iter()
        .filter(|(path, _)| path.as_str() != "/openapi.json")
        .map(|(_, item)| {
            ["get", "put", "post", "delete", "patch"]
                .iter()
                .filter(|method| item.get(**method).is_some())
                .count()
        })
        .sum();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/schemathesis.toml");
    let examples = std::env::var("FUZZ_EXAMPLES").unwrap_or_else(|_| "40".into());
    for credential in [Some(format!("X-Api-Key: {key}")), None] {
        let (st, base, examples) = (st.clone(), base.clone(), examples.clone());
        let who = if credential.is_some() {
            "with a key"
        } else {
            "without a key"
        };
        let out = tokio::task::spawn_blocking(move || {
            let mut command = Command::new(st);
            // Schemathesis keeps a cache (`.schemathesis/`) in its working directory: a throw-away one.
            command
                .current_dir(temp_dir_created())
                .args(["--config-file", config, "run", &format!("{base}/openapi.json")])
                .args(["--no-color", "--seed", "1", "-n", &examples, "-c", "all"])
                // Its warnings say where generated data mostly fails validation (random SKUs are not in the
                // catalogue, random ids name no order): expected here, and not failures.
                .args(["--warnings", "off"]);
            if let Some(header) = &credential {
                command.args(["-H", header]);
            }
            command.output().expect("st runs")
        })
        .await
        .expect("task");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && report.contains("No issues found"),
            "{who}: {report}"
        );
        assert!(
            report.contains(&format!("Tested: {operations}")),
            "{who}: every one of the {operations} operations was exercised: {report}"
        );
        let generated: usize = report
            .lines()
            .find_map(|line| line.trim().split_once(" generated"))
            .and_then(|(n, _)| n.trim().parse().ok())
            .expect("the number of generated cases");
        assert!(generated >= 1_000, "{who}: only {generated} cases: {report}");
        println!("{who}: {generated} cases, {operations} operations, no issues");
    }
    platform.stop().await.expect("stop");
}

/// `Idempotency-Key`: twenty concurrent POSTs with one key, spread over two API instances on one database,
/// make one order and all get its `201`; the key with another body gets `422`; another client's same key is
/// its own; a retried cancel is answered the same and cancels once. Ownership: a key bound to a customer
/// places orders for it only (`403`), and another customer's order is `404` to it (read, wait, cancel), even
/// when it forges the identity headers the gateway sets; staff and unbound keys see every order. Listing
/// pages through a customer's orders once each, oldest first, and a bound key lists its own orders only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_makes_one_order_across_instances_and_bound_keys_see_and_list_only_their_own() {
    let db_url = orderflow_testkit::postgres().fresh_database().expect("database");
    let mut settings = embedded_settings(&temp_dir_created());
    settings.database.url = Some(db_url.clone());
    let mut keys = Vec::new();
    for (id, scopes, customer) in [
        ("shop", vec!["orders:write", "orders:read"], None),
        ("alice", vec!["orders:write", "orders:read"], Some("alice")),
        ("bob", vec!["orders:write", "orders:read"], Some("bob")),
        ("staff", vec!["admin"], Some("alice")),
    ] {
        let key = unique(id);
        settings.gateway.api_keys.push(orderflow_gateway::ApiKeySettings {
            id: id.into(),
            key: Some(key.clone().into()),
            scopes: scopes.into_iter().map(str::to_owned).collect(),
            customer_id: customer.map(str::to_owned),
            ..Default::default()
        });
        keys.push(key);
    }
    let [shop, alice, bob, staff] = [&keys[0], &keys[1], &keys[2], &keys[3]];
    let roles = [Role::Orders, Role::Gateway];
    let first = Platform::start(settings.clone(), &roles)
        .await
        .expect("first instance");
    settings.data_dir = Some(temp_dir_created());
    let second = Platform::start(settings, &roles).await.expect("second instance");
    let bases = [first.http_addr, second.http_addr].map(|a| format!("http://{}", a.expect("http")));
    let store = first.backends.store.clone();
    store
        .put_product(&orderflow_store::Product {
            sku: "TEA".into(),
            name: "Green tea".into(),
            price_minor: 450,
            stock: 1_000,
        })
        .await
        .expect("product");
    let client = reqwest::Client::new();
    let order_for = |customer: &str| json!({"customer_id": customer, "currency": "EUR", "items": [{"sku": "TEA", "quantity": 1}]});
    let send = |base: &str, path: &str, key: &str, idempotency: Option<&str>, body: Value| {
        let mut request = client
            .post(format!("{base}{path}"))
            .header("x-api-key", key)
            .json(&body);
        if let Some(idempotency) = idempotency {
            request = request.header("idempotency-key", idempotency);
        }
        async move {
            let response = request.send().await.expect("POST");
            let location = response
                .headers()
                .get("location")
                .map(|v| v.to_str().expect("location").to_owned());
            let (status, kind, body) = answer(response).await;
            (status, kind, body, location)
        }
    };

    // Twenty at once, half on each instance: one order.
    let key = format!("\"{}\"", unique("retry"));
    let answers = futures::future::join_all(
        (0..20).map(|i| send(&bases[i % 2], "/v1/orders", shop, Some(&key), order_for("c-9"))),
    )
    .await;
    let (status, _, created, location) = &answers[0];
    assert_eq!(*status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    for answer in &answers {
        assert_eq!(&answer.0, status);
        assert_eq!(&answer.2, created, "every retry gets the first response");
        assert_eq!(&answer.3, location);
    }
    let pool = sqlx::PgPool::connect(&db_url).await.expect("pg");
    let count = |sql: &'static str, id: Option<String>| {
        let pool = pool.clone();
        async move {
            let mut query = sqlx::query_as::<_, (i64,)>(sql);
            if let Some(id) = id {
                query = query.bind(uuid::Uuid::parse_str(&id).expect("uuid"));
            }
            query.fetch_one(&pool).await.expect("count").0
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM orders WHERE customer_id = 'c-9'", None).await,
        1
    );
    assert_eq!(count("SELECT COUNT(*) FROM outbox", None).await, 1);

    // The key with another body; the same key of another client.
    let (status, kind, problem, _) = send(&bases[1], "/v1/orders", shop, Some(&key), order_for("c-8")).await;
    assert_eq!(
        (status, kind.as_str()),
        (422, "application/problem+json"),
        "{problem}"
    );
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    let (status, _, own, _) = send(&bases[0], "/v1/orders", bob, Some(&key), order_for("bob")).await;
    assert_eq!(status, 201, "{own}");
    assert_ne!(own["id"], created["id"]);
    let (status, _, problem, _) = send(&bases[0], "/v1/orders", shop, Some("\"\""), order_for("c-9")).await;
    assert_eq!(status, 400, "{problem}");

    // A retried cancel: the same answer, one cancellation.
    let cancel_key = unique("cancel");
    let path = format!("/v1/orders/{id}/cancel");
    let cancels = futures::future::join_all((0..4).map(|i| {
        send(
            &bases[i % 2],
            &path,
            shop,
            Some(&cancel_key),
            json!({"reason": "twice"}),
        )
    }))
    .await;
    for (status, _, body, _) in &cancels {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, &cancels[0].2);
    }
    assert_eq!(cancels[0].2["status"], "CANCELLED");
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM outbox WHERE event_type = 'order.cancelled' AND msg_key = $1::text",
            Some(id.clone())
        )
        .await,
        1
    );

    // Ownership.
    let (status, _, mine, _) = send(&bases[0], "/v1/orders", alice, None, order_for("alice")).await;
    assert_eq!(status, 201, "{mine}");
    let mine = mine["id"].as_str().expect("id").to_owned();
    let (status, _, problem, _) = send(&bases[0], "/v1/orders", alice, None, order_for("bob")).await;
    assert_eq!(status, 403, "{problem}");
    let read = |key: &str, path: String, forged: Option<&str>| {
        let mut request = client.get(format!("{}{path}", bases[1])).header("x-api-key", key);
        if let Some(forged) = forged {
            request = request
                .header("x-orderflow-customer", forged)
                .header("x-orderflow-client", "key:alice");
        }
        async move { answer(request.send().await.expect("GET")).await.0 }
    };
    let missing = uuid::Uuid::now_v7();
    for (who, key, forged, expected) in [
        ("alice", alice, None, 200),
        ("staff", staff, None, 200),
        ("shop", shop, None, 200),
        ("shop forging bob", shop, Some("bob"), 200),
        ("bob", bob, None, 404),
        ("bob forging alice", bob, Some("alice"), 404),
    ] {
        assert_eq!(
            read(key, format!("/v1/orders/{mine}"), forged).await,
            expected,
            "{who}"
        );
        assert_eq!(
            read(
                key,
                format!("/v1/orders/{mine}?wait_for=terminal&timeout_ms=10"),
                forged
            )
            .await,
            expected,
            "{who} waiting"
        );
    }
    assert_eq!(read(bob, format!("/v1/orders/{missing}"), None).await, 404);
    let (status, _, problem, _) = send(
        &bases[0],
        &format!("/v1/orders/{mine}/cancel"),
        bob,
        None,
        json!({}),
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (404, Some("/problems/order-not-found"))
    );
    let (status, _, _, _) = send(
        &bases[0],
        &format!("/v1/orders/{mine}/cancel"),
        alice,
        None,
        json!({}),
    )
    .await;
    assert_eq!(status, 200);

    // Listing: pages of two walk through alice's six orders once each, oldest first, on either instance;
    // bob cannot list them, staff can; filters combine.
    for _ in 0..5 {
        let (status, _, _, _) = send(&bases[1], "/v1/orders", alice, None, order_for("alice")).await;
        assert_eq!(status, 201);
    }
    let list = |key: &str, base: &str, query: String| {
        let request = client
            .get(format!("{base}/v1/orders?{query}"))
            .header("x-api-key", key);
        async move { answer(request.send().await.expect("GET")).await }
    };
    let (mut listed, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let query = match &cursor {
            Some(cursor) => format!("limit=2&cursor={cursor}"),
            None => "limit=2".to_owned(),
        };
        let (status, _, page) = list(alice, &bases[pages % 2], query).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for order in page["orders"].as_array().expect("orders") {
            assert_eq!(order["customer_id"], "alice");
            listed.push(order["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let (all,): (Vec<uuid::Uuid>,) = sqlx::query_as(
        "SELECT ARRAY(SELECT id FROM orders WHERE customer_id = 'alice' ORDER BY created_at, id)",
    )
    .fetch_one(&pool)
    .await
    .expect("ids");
    let all: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(listed, all, "every order once, oldest first");
    assert_eq!(all.len(), 6);
    let (_, _, page) = list(bob, &bases[0], "customer_id=alice".into()).await;
    assert_eq!(page["orders"], json!([]), "bob lists none of alice's orders");
    let (_, _, page) = list(staff, &bases[0], "customer_id=alice&status=CANCELLED".into()).await;
    let cancelled: Vec<&str> = page["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["id"].as_str().expect("id"))
        .collect();
    assert_eq!(cancelled, [mine.as_str()]);
    let (status, kind, _) = list(alice, &bases[0], "limit=501".into()).await;
    assert_eq!((status, kind.as_str()), (400, "application/problem+json"));
    first.stop().await.expect("stop");
    second.stop().await.expect("stop");
}

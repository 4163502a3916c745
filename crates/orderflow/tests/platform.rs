//! End to end: orders posted over HTTP reach the database, Kafka and the read model, on real servers from
//! the harness and in the embedded default; bad input changes nothing; the binary starts and stops cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orderflow_roles::{Platform, Role, Settings};
use orderflow_testkit::{read_topic, unique};
use redis::AsyncCommands;
use serde_json::{Value, json};

fn order_body() -> Value {
    json!({"customer_id": "cust-1", "currency": "EUR",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1250}, {"sku": "SKU-2", "quantity": 1, "unit_price_minor": 99}]})
}

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(unique("orderflow-e2e"))
}

/// A new, existing [`temp_dir`].
fn temp_dir_created() -> std::path::PathBuf {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The API key every test calls with: written as the development key of each data dir, so the gateway of
/// `up` (and of `Platform` with every role) accepts it.
const TEST_KEY: &str = "ofk_platform-tests";

fn write_test_key(data_dir: &std::path::Path) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    std::fs::write(data_dir.join("api-key"), TEST_KEY).expect("api key");
}

/// `base` with [`TEST_KEY`] as the URL's password (sent as HTTP Basic, as registry clients do).
fn with_key(base: &str) -> String {
    base.replacen("http://", &format!("http://test:{TEST_KEY}@"), 1)
}

/// A client sending [`TEST_KEY`].
fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", reqwest::header::HeaderValue::from_static(TEST_KEY));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// `GET url` with [`TEST_KEY`].
async fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}

fn embedded_settings(data_dir: &std::path::Path) -> Settings {
    write_test_key(data_dir);
    let mut settings = Settings {
        data_dir: Some(data_dir.to_owned()),
        ..Settings::default()
    };
    settings.http.listen = "127.0.0.1:0".parse().expect("addr");
    settings
}

async fn post(base: &str, content_type: &str, body: &str) -> (u16, String, Value) {
    let response = client()
        .post(format!("{base}/v1/orders"))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("POST");
    answer(response).await
}

/// Status, content type and JSON body (null when not JSON) of a response.
async fn answer(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, content_type, response.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/orders/{id}` as JSON.
async fn get_order(base: &str, id: &str) -> Value {
    http_get(format!("{base}/v1/orders/{id}"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

/// Puts the products of [`order_body`] in stock, so orders for them can be allocated.
async fn stock_products(store: &orderflow_store::Store) {
    for sku in ["SKU-1", "SKU-2"] {
        let product = orderflow_store::Product {
            sku: sku.into(),
            name: sku.into(),
            price_minor: 1_250,
            stock: 100,
        };
        store.put_product(&product).await.expect("product");
    }
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Settings on the harness's PostgreSQL (a fresh database), Kafka and Redis, with topic and key prefixes of
/// their own (`name` and a unique suffix) and `partitions` per topic.
fn real_server_settings(name: &str, partitions: i32) -> Settings {
    let (pg, kafka, redis_server) = (
        orderflow_testkit::postgres(),
        orderflow_testkit::kafka(),
        orderflow_testkit::redis(),
    );
    let mut settings = embedded_settings(&temp_dir());
    settings.database.url = Some(pg.fresh_database().expect("database"));
    settings.kafka.bootstrap_servers = Some(kafka.bootstrap_servers());
    settings.kafka.topic_prefix = format!("{}.", unique(name));
    settings.kafka.partitions = Some(partitions);
    settings.cache.redis_url = Some(redis_server.url());
    settings.cache.key_prefix = format!("{}:", unique(name));
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_flows_through_postgres_kafka_and_redis() {
    let (kafka, redis_server) = (orderflow_testkit::kafka(), orderflow_testkit::redis());
    let mut settings = real_server_settings("e2e", 3);
    settings.projector.group = unique("projector");
    let prefix = settings.kafka.topic_prefix.clone();
    let (topic, key_prefix, db_url) = (
        format!("{}order.created", settings.kafka.topic_prefix),
        settings.cache.key_prefix.clone(),
        settings.database.url.clone(),
    );

    let platform = Platform::start(settings, Role::ALL)
        .await
        .expect("platform starts");
    stock_products(&platform.backends.store).await;
    let base = format!("http://{}", platform.http_addr.expect("http"));
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = client()
        .post(format!("{base}/v1/orders"))
        .header("content-type", "application/json")
        .header("traceparent", TRACEPARENT)
        .body(order_body().to_string())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let created: Value = response.json().await.expect("json");
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"], "CREATED");
    assert_eq!(created["version"], 1);
    assert_eq!(created["total_minor"], 2599);
    assert_eq!(uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(), 7);

    // PostgreSQL holds the order and its lines.
    let pool = sqlx::PgPool::connect(&db_url.expect("url")).await.expect("pg");
    let (status, total): (String, i64) =
        sqlx::query_as("SELECT status, total_minor FROM orders WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .expect("order row");
    assert_eq!((status.as_str(), total), ("CREATED", 2599));
    let (lines,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM order_items WHERE order_id = $1::uuid")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .expect("items");
    assert_eq!(lines, 2);

    // An independent consumer reads order.created keyed by the order id.
    let bootstrap = kafka.bootstrap_servers();
    let records =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic, 1, Duration::from_secs(30)))
            .await
            .expect("reader")
            .expect("records");
    let record = records
        .iter()
        .find(|r| r.key == id)
        .expect("an order.created record keyed by the order id");
    // Decoded with a codec that fetches the writer schema over HTTP from the embedded registry.
    let remote = std::sync::Arc::new(
        orderflow_registry::RegistryClient::new(&format!("{}/registry", with_key(&base))).expect("client"),
    );
    let codec = orderflow_events::AvroCodec::connect(remote, &prefix)
        .await
        .expect("codec over REST");
    let event: orderflow_events::OrderCreated = codec.decode(&record.payload).await.expect("avro event");
    assert_eq!(event.order_id, id);
    assert_eq!(event.total_minor, 2599);
    assert_eq!(
        record.headers.get("schema-id").map(String::as_str),
        Some(&*u32::from_be_bytes(record.payload[1..5].try_into().expect("id")).to_string())
    );

    // An independent client (Python confluent-kafka, its own Avro deserializer) reads the same record from
    // the broker, fetching the writer schema from the embedded registry's REST API.
    let python = tokio::task::spawn_blocking(orderflow_testkit::interop_python)
        .await
        .expect("task")
        .expect("python env");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/consume_avro.py");
    let (bootstrap, topic_name, registry_url, order_id) = (
        kafka.bootstrap_servers(),
        format!("{prefix}order.created"),
        format!("{}/registry", with_key(&base)),
        id.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&bootstrap, &topic_name, &registry_url, &order_id])
            .output()
    })
    .await
    .expect("task")
    .expect("python runs");
    assert!(
        out.status.success(),
        "python consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Value = serde_json::from_slice(&out.stdout).expect("python printed json");
    assert_eq!(decoded["value"]["order_id"], id.as_str());
    assert_eq!(decoded["value"]["total_minor"], 2599);
    assert_eq!(decoded["value"]["items"][0]["sku"], "SKU-1");
    assert_eq!(decoded["headers"]["event-type"], "order.created");
    // The same trace (the span id is the request's own span when traces are exported in this process).
    let carried = decoded["headers"]["traceparent"].as_str().unwrap_or_default();
    assert_eq!(
        carried.get(..36),
        TRACEPARENT.get(..36),
        "the request's trace context travels with the event: {carried}"
    );

    // The read model follows the pipeline: the projector wrote the Redis hash (before any GET could have
    // populated it), and as payments, enrichment and inventory report, the orders role writes each status
    // through, up to ALLOCATED.
    let mut conn = redis::Client::open(redis_server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("{key_prefix}order:{{{id}}}");
    let cached: Value = eventually("the allocated order in Redis", || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move {
            let v = conn
                .hget::<_, _, Option<String>>(&key, "v")
                .await
                .ok()
                .flatten()?;
            let v: Value = serde_json::from_str(&v).expect("cached order json");
            (v["version"] == 3).then_some(v)
        }
    })
    .await;
    assert_eq!(cached["status"], "ALLOCATED");
    let version: i64 = conn.hget(&key, "ver").await.expect("version field");
    assert_eq!(version, 3);
    let ttl: i64 = conn.ttl(&key).await.expect("ttl");
    assert!(ttl > 0, "cache entries expire");

    let fetched: Value = get_order(&base, &id).await;
    assert_eq!(
        (fetched["status"].as_str(), fetched["version"].as_i64()),
        (Some("ALLOCATED"), Some(3))
    );
    assert_eq!(fetched["items"], created["items"]);
    platform.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_flows_through_the_embedded_default() {
    let dir = temp_dir();
    let platform = Platform::start(embedded_settings(&dir), Role::ALL)
        .await
        .expect("platform starts");
    assert!(platform.backends.bus.is_embedded());
    assert_eq!(platform.backends.store.backend().name(), "sqlite");
    stock_products(&platform.backends.store).await;
    let base = format!("http://{}", platform.http_addr.expect("http"));

    let (status, _, created) = post(
        &base,
        "application/json; charset=utf-8",
        &order_body().to_string(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id: orderflow_domain::OrderId = created["id"].as_str().expect("id").parse().expect("order id");

    // The write went through the in-process cache (the projector refreshes it too), and the relay publishes
    // the event to the mock cluster.
    let store = platform.backends.store.clone();
    eventually("the relay", || {
        let store = store.clone();
        async move { (store.outbox_backlog().await.ok()? == 0).then_some(()) }
    })
    .await;
    let cache = platform.backends.cache.clone();
    let projected = eventually("the cached order", || {
        let cache = cache.clone();
        async move {
            // A loader that fails proves the value came from the cache, not from a database read.
            let not_loaded =
                || async { Err::<Option<orderflow_domain::Order>, _>(std::io::Error::other("not cached")) };
            cache
                .get_or_load(&id.to_string(), not_loaded)
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    assert_eq!(projected.total_minor.get(), 2599);
    assert_eq!(
        platform.backends.store.outbox_backlog().await.expect("backlog"),
        0
    );

    // The pipeline runs on the mock cluster too (payments, enrichment, inventory at-least-once, one charge
    // by the ledger, one reservation per order) and the orders role follows: the API shows it ALLOCATED.
    let paid = eventually("the order to be allocated", || {
        let base = base.clone();
        async move {
            let order: Value = http_get(format!("{base}/v1/orders/{id}"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (order["status"] == "ALLOCATED").then_some(order)
        }
    })
    .await;
    assert_eq!(
        (paid["version"].as_i64(), &paid["items"]),
        (Some(3), &created["items"])
    );
    assert_eq!(store.charge_totals().await.expect("ledger").charges, 1);

    // Analytics run in process here and the API serves them: the order is counted through the funnel and
    // its payment is this hour's revenue.
    let funnel = eventually("the order through the analytics funnel", || {
        let base = base.clone();
        async move {
            let funnel: Value = http_get(format!("{base}/v1/analytics/funnel"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (funnel["allocated"] == 1).then_some(funnel)
        }
    })
    .await;
    assert_eq!((&funnel["created"], &funnel["paid"]), (&json!(1), &json!(1)));
    assert_eq!(funnel["conversion"]["created_to_allocated"], 1.0);
    let revenue: Value = http_get(format!("{base}/v1/analytics/revenue"))
        .await
        .expect("revenue")
        .json()
        .await
        .expect("json");
    assert_eq!(revenue["total_minor"]["EUR"], 2599, "{revenue}");
    // An offset's `+` sent unencoded in the query still reads as an offset.
    let now = chrono::Utc::now().with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).expect("offset"));
    let offset_range = format!(
        "{base}/v1/analytics/revenue?from={}&to={}",
        (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S%:z"),
        (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S%:z")
    );
    let revenue: Value = http_get(offset_range)
        .await
        .expect("revenue")
        .json()
        .await
        .expect("json");
    assert_eq!(revenue["total_minor"]["EUR"], 2599, "{revenue}");
    platform.stop().await.expect("clean stop");
    assert!(
        dir.join("orderflow.db").exists(),
        "SQLite lives under the data directory"
    );
    let _ = std::fs::remove_dir_all(dir);
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

/// Starts the real binary; returns it with the base URL and the start-up banner it printed.
fn spawn_binary(args: &[&str], data_dir: &std::path::Path) -> (std::process::Child, String, Vec<String>) {
    spawn_binary_with(args, data_dir, &[])
}

/// [`spawn_binary`] with extra environment variables (configuration layered over the defaults).
fn spawn_binary_with(
    args: &[&str],
    data_dir: &std::path::Path,
    env: &[(&str, String)],
) -> (std::process::Child, String, Vec<String>) {
    let (child, banner) = spawn_until_banner(args, data_dir, env);
    let url = banner
        .iter()
        .find_map(|l| l.strip_prefix("orderflow listening on "))
        .expect("the banner says where it listens")
        .trim()
        .to_owned();
    (child, url, banner)
}

/// Starts the real binary and waits for its start-up banner (which ends with the cache line).
fn spawn_until_banner(
    args: &[&str],
    data_dir: &std::path::Path,
    env: &[(&str, String)],
) -> (std::process::Child, Vec<String>) {
    spawn_with_stderr(args, data_dir, env, Stdio::null())
}

/// [`spawn_until_banner`] with the process's log (stderr) going to `stderr`.
fn spawn_with_stderr(
    args: &[&str],
    data_dir: &std::path::Path,
    env: &[(&str, String)],
    stderr: Stdio,
) -> (std::process::Child, Vec<String>) {
    write_test_key(data_dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("ORDERFLOW_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    while !banner
        .iter()
        .any(|l: &String| l.trim_start().starts_with("cache:"))
    {
        banner.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the binary prints its start-up banner"),
        );
    }
    (child, banner)
}

/// Sends SIGTERM and expects a clean exit within the shutdown deadline.
async fn terminate(mut child: std::process::Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "did not stop within the shutdown deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
}

fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    cmd.args(args).env_remove("ORDERFLOW_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_uses_real_servers_when_configured() {
    let db = orderflow_testkit::postgres().fresh_database().expect("database");
    let kafka = orderflow_testkit::kafka().bootstrap_servers();
    let redis_url = orderflow_testkit::redis().url();
    let prefix = format!("{}.", unique("cli"));

    let migrated = run_binary(&["migrate", "--database-url", &db], &[]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&migrated.stdout).trim(),
        "migrations applied (postgresql)"
    );

    let topics = [
        "topics",
        "apply",
        "--kafka-bootstrap",
        &kafka,
        "--topic-prefix",
        &prefix,
    ];
    let first = run_binary(&topics, &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report = String::from_utf8_lossy(&first.stdout).into_owned();
    // The topic table, and the retry and dead-letter topics of every role.
    let mut prefixed = Settings::default();
    prefixed.kafka.topic_prefix = prefix.clone();
    let expected = orderflow_bus::topics::TOPICS.len() + orderflow_roles::routing_topics(&prefixed).len();
    assert_eq!(
        report.lines().filter(|l| l.ends_with("created")).count(),
        expected,
        "{report}"
    );
    let again = String::from_utf8_lossy(&run_binary(&topics, &[]).stdout).into_owned();
    assert_eq!(
        again.lines().filter(|l| l.ends_with(" ok")).count(),
        expected,
        "{again}"
    );

    let dir = temp_dir();
    let args = [
        "run",
        "--role",
        "orders",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--kafka-bootstrap",
        &kafka,
    ];
    let (child, base, banner) = spawn_binary(
        &[&args[..], &["--topic-prefix", &prefix, "--redis-url", &redis_url]].concat(),
        &dir,
    );
    let banner = banner.join("\n");
    assert!(banner.contains("roles:    orders"), "{banner}");
    assert!(
        banner.contains("database: postgresql (postgres://postgres@127.0.0.1:"),
        "{banner}"
    );
    assert!(banner.contains(&format!("kafka:    {kafka}")), "{banner}");
    assert!(banner.contains("cache:    redis (redis://127.0.0.1:"), "{banner}");

    let (status, _, created) = post(&base, "application/json", &order_body().to_string()).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id");
    let fetched: Value = get_order(&base, id).await;
    assert_eq!(fetched, created);
    terminate(child).await;
    assert!(
        !dir.join("orderflow.db").exists(),
        "no SQLite file when PostgreSQL is configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_embedded_and_stops_on_sigterm() {
    let dir = temp_dir();
    let (child, base, banner) = spawn_binary(&["up", "--listen", "127.0.0.1:0"], &dir);
    let banner = banner.join("\n");
    assert!(
        banner.contains(
            "roles:    gateway, orders, payments, enrichment, inventory, projector, analytics, audit"
        ),
        "{banner}"
    );
    assert!(banner.contains("gateway:  development API key"), "{banner}");
    let anonymous = reqwest::Client::new()
        .post(format!("{base}/v1/orders"))
        .header("content-type", "application/json")
        .body(order_body().to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "the gateway guards the API of `up`"
    );
    assert!(banner.contains("database: sqlite"), "{banner}");
    assert!(banner.contains("kafka:    embedded mock cluster"), "{banner}");
    assert!(banner.contains("cache:    in-process"), "{banner}");
    let (status, _, created) = post(&base, "application/json", &order_body().to_string()).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id");
    let fetched = http_get(format!("{base}/v1/orders/{id}")).await.expect("GET");
    assert_eq!(fetched.status().as_u16(), 200);
    terminate(child).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_configuration_and_arguments_fail_with_a_clear_message() {
    let run = run_binary;
    let out = run(&["migrate"], &[("ORDERFLOW_HTTP__LISTEN", "not-an-address")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: invalid configuration"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let out = run(&["run", "--role", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'nope'"));

    let out = run(
        &[
            "migrate",
            "--database-url",
            "postgres://orderflow:s3cret@127.0.0.1:1/none",
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: connecting to postgres://orderflow:***@127.0.0.1:1/none"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "secrets are never printed: {stderr}");

    let out = run(&["topics", "apply"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a Kafka cluster"));
}

/// A schema folder holding the committed `order.created` v1 and the given v2 (edited from v1 by `edit`).
fn schema_dir_with_v2(edit: impl FnOnce(&mut Vec<Value>)) -> std::path::PathBuf {
    let v1_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/schemas/order.created/v1.avsc"
    );
    let v1 = std::fs::read_to_string(v1_path).expect("committed v1");
    let mut v2: Value = serde_json::from_str(&v1).expect("json");
    let mut fields = v2["fields"].as_array().expect("fields").clone();
    edit(&mut fields);
    v2["fields"] = Value::Array(fields);
    let dir = temp_dir().join("schemas");
    let topic = dir.join("order.created");
    std::fs::create_dir_all(&topic).expect("dir");
    std::fs::write(topic.join("v1.avsc"), v1).expect("v1");
    std::fs::write(topic.join("v2.avsc"), v2.to_string()).expect("v2");
    std::fs::write(topic.join("COMPATIBILITY"), "FULL_TRANSITIVE\n").expect("level");
    dir
}

fn check_output(dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let dir = dir.display().to_string();
    let out = run_binary(&[&["schemas", "check", "--dir", &dir][..], extra].concat(), &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_check_rejects_breaking_changes_naming_the_field_and_rule() {
    let (ok, text) = check_output(
        &schema_dir_with_v2(|f| f.push(json!({"name": "channel", "type": "string", "default": "web"}))),
        &[],
    );
    assert!(ok, "adding a field with a default is compatible: {text}");
    assert!(
        text.contains("order.created") && text.contains("v2") && text.contains("ok"),
        "{text}"
    );

    let removed = schema_dir_with_v2(|f| f.retain(|field| field["name"] != "currency"));
    let (ok, text) = check_output(&removed, &[]);
    assert!(!ok, "removing a field without default must fail: {text}");
    assert!(
        text.contains("FORWARD rule broken") && text.contains("'currency'"),
        "{text}"
    );

    let retyped = schema_dir_with_v2(|f| {
        for field in f.iter_mut().filter(|field| field["name"] == "total_minor") {
            field["type"] = json!("string");
        }
    });
    let (ok, text) = check_output(&retyped, &[]);
    assert!(!ok, "an incompatible type change must fail: {text}");
    assert!(
        text.contains("BACKWARD rule broken") && text.contains("'total_minor'"),
        "{text}"
    );

    let added = schema_dir_with_v2(|f| f.push(json!({"name": "channel", "type": "string"})));
    let (ok, text) = check_output(&added, &[]);
    assert!(
        !ok && text.contains("BACKWARD rule broken") && text.contains("'channel'"),
        "{text}"
    );

    // The registry's compatibility endpoint (the embedded one, served by the orders role) says the same.
    let platform = Platform::start(embedded_settings(&temp_dir()), &[Role::Orders])
        .await
        .expect("platform");
    let registry = format!("http://{}/registry", platform.http_addr.expect("http"));
    let only_registry = schema_dir_with_v2(|f| f.retain(|field| field["name"] != "currency"));
    std::fs::remove_file(only_registry.join("order.created/v1.avsc")).expect("leave only v2 locally");
    let (ok, text) =
        tokio::task::spawn_blocking(move || check_output(&only_registry, &["--registry", &registry]))
            .await
            .expect("check");
    assert!(!ok, "{text}");
    assert!(
        text.contains("registry order.created-value") && text.contains("'currency'"),
        "{text}"
    );
    platform.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_list_show_and_replay_dead_letters() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let kafka = orderflow_testkit::kafka().bootstrap_servers();
    let prefix = format!("{}.", unique("dlq"));
    let cluster = ["--kafka-bootstrap", &kafka, "--topic-prefix", &prefix];
    let applied = run_binary(&[&["topics", "apply"][..], &cluster].concat(), &[]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // A dead letter as the consumer runtime writes it, in the dead-letter topic `topics apply` created.
    let created = format!("{prefix}order.created");
    let dead = format!("{created}.dlq");
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .expect("producer");
    let headers = [
        ("event-id", "ev-1"),
        ("original-topic", created.as_str()),
        ("original-partition", "2"),
        ("original-offset", "17"),
        ("original-timestamp", "1700000000000"),
        ("consumer-group", "payments"),
        ("error-kind", "permanent"),
        ("error-message", "cannot decode"),
        ("attempts", "1"),
    ]
    .iter()
    .fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    });
    producer
        .send(
            FutureRecord::to(&dead)
                .partition(0)
                .key("order-1")
                .payload("not avro")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");

    let listed = run_binary(&[&["dlq", "list"][..], &cluster].concat(), &[]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "{dead} 0:0 from {created}/2/17 group=payments kind=permanent attempts=1 error=\"cannot decode\""
        )),
        "{text}"
    );

    let shown = run_binary(
        &[&["dlq", "show", "order.created", "0", "0"][..], &cluster].concat(),
        &[],
    );
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(text.contains("key: order-1"), "{text}");
    assert!(text.contains("header error-message: cannot decode"), "{text}");
    assert!(text.contains("value: not avro"), "{text}");

    let missing = run_binary(
        &[&["dlq", "show", "order.created", "0", "5"][..], &cluster].concat(),
        &[],
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no dead letter at"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let replayed = run_binary(
        &[&["dlq", "replay", "order.created.dlq"][..], &cluster].concat(),
        &[],
    );
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout).trim(),
        "replayed 1 dead letter(s)"
    );
    let back = orderflow_testkit::read_topic(&kafka, &created, 1, Duration::from_secs(30)).expect("read");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].key, "order-1");
    assert_eq!(back[0].payload, b"not avro");
    assert_eq!(back[0].headers.get("event-id").map(String::as_str), Some("ev-1"));
    assert!(
        !back[0].headers.contains_key("error-kind"),
        "routing headers are dropped"
    );

    let out = run_binary(&["dlq", "list"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dead letters live in a Kafka cluster"));
}

/// The sum of `orderflow_cache_loads_total` over the given instances' `/metrics`.
async fn cache_loads(bases: &[String]) -> u64 {
    let mut total = 0;
    for base in bases {
        let text = http_get(format!("{base}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        total += text
            .lines()
            .filter(|l| l.starts_with("orderflow_cache_loads_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    total
}

/// A spawned orderflow process, killed if a failing test leaves it running.
struct Instance(Option<std::process::Child>);

impl Instance {
    /// Stops it with SIGTERM and expects a clean exit.
    async fn terminate(&mut self) {
        if let Some(child) = self.0.take() {
            terminate(child).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two `orderflow run --role orders` processes sharing a fresh database and the Redis server, with cache keys
/// under `<prefix>:` and `env` layered over their configuration; returns them, their base URLs and the
/// database URL.
fn orders_instances(prefix: &str, env: &[(&str, String)]) -> (Vec<Instance>, Vec<String>, String) {
    let db = orderflow_testkit::postgres().fresh_database().expect("database");
    let kafka = orderflow_testkit::kafka().bootstrap_servers();
    let redis_url = orderflow_testkit::redis().url();
    let migrated = run_binary(&["migrate", "--database-url", &db], &[]);
    assert!(migrated.status.success());
    let mut env = env.to_vec();
    env.push(("ORDERFLOW_CACHE__KEY_PREFIX", format!("{prefix}:")));
    let topic_prefix = format!("{prefix}.");
    let (mut children, mut bases) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let args = [
            "run",
            "--role",
            "orders",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--kafka-bootstrap",
            &kafka,
            "--topic-prefix",
            &topic_prefix,
            "--redis-url",
            &redis_url,
        ];
        let (child, base, _) = spawn_binary_with(&args, &temp_dir(), &env);
        children.push(Instance(Some(child)));
        bases.push(base);
    }
    (children, bases, db)
}

/// Two `orderflow run --role orders` processes share PostgreSQL and Redis; a hot order's cache entry
/// expires (deleted from Redis, gone from both in-process tiers) and 1,000 GETs arrive at once, half at
/// each process, over connections opened beforehand. Returns how many times the database was asked.
async fn http_stampede(protection: bool) -> u64 {
    let prefix = unique("stampede");
    // Generous Redis timeouts: CI runs this beside other tests on two cores with debug builds, and a Redis
    // call that times out sends its reader to the database by design (that is the breaker's job, tested in
    // the cache crate), which is not what this test measures.
    let env = [
        ("ORDERFLOW_CACHE__L1_TTL_MS", "200".to_owned()),
        ("ORDERFLOW_CACHE__STAMPEDE_PROTECTION", protection.to_string()),
        ("ORDERFLOW_CACHE__REDIS_TIMEOUT_MS", "3000".to_owned()),
        ("ORDERFLOW_CACHE__LOCK_WAIT_MS", "3000".to_owned()),
    ];
    let (instances, bases, db) = orders_instances(&prefix, &env);
    let redis_url = orderflow_testkit::redis().url();
    let (status, _, created) = post(&bases[0], "application/json", &order_body().to_string()).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id").to_owned();

    // The hot key expires everywhere.
    let client = redis::Client::open(redis_url.as_str()).expect("client");
    let mut redis = client.get_multiplexed_async_connection().await.expect("redis");
    let _: i64 = redis.del(format!("{prefix}:order:{{{id}}}")).await.expect("DEL");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = cache_loads(&bases).await;

    // The database answers slowly while the GETs arrive (the table is locked for a moment), so every reader
    // is in before the first load completes, however slowly this machine schedules them: the count then
    // shows what the protection does, not how fast the first load was.
    let pool = sqlx::PgPool::connect(&db).await.expect("database");
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let readers = 1000;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(readers));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..readers {
        let addr = bases[i % 2].trim_start_matches("http://").to_owned();
        let (barrier, id, sent) = (barrier.clone(), id.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            barrier.wait().await;
            let request =
                format!("GET /v1/orders/{id} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("send");
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.expect("read");
            String::from_utf8_lossy(&response).into_owned()
        }));
    }
    // Every request is sent, and the servers get a moment to take them in, before the database answers.
    eventually("every GET sent", || {
        let sent = sent.clone();
        async move { (sent.load(std::sync::atomic::Ordering::Relaxed) == readers).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    lock.commit().await.expect("unlock");
    for task in tasks {
        let response = task.await.expect("reader");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{}",
            response.lines().next().unwrap_or("")
        );
        assert!(response.contains(&id));
    }
    let loads = cache_loads(&bases).await - before;
    for mut instance in instances {
        instance.terminate().await;
    }
    loads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_order_expiring_under_1000_gets_over_two_processes_is_loaded_once() {
    let loads = http_stampede(true).await;
    eprintln!("stampede protection on: {loads} database load(s) for 1000 GETs over two processes");
    assert_eq!(loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_stampede_protection_the_same_gets_load_the_database_many_times() {
    let loads = http_stampede(false).await;
    eprintln!("stampede protection off: {loads} database loads for 1000 GETs over two processes");
    assert!(loads > 10, "expected a visible stampede, got {loads}");
}

async fn cancel(base: &str, id: &str, body: Option<&str>) -> (u16, String, Value) {
    let mut request = client().post(format!("{base}/v1/orders/{id}/cancel"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    answer(request.send().await.expect("POST cancel")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_read_back_at_once_on_every_instance_and_bad_cancels_change_nothing() {
    let (instances, bases, _) = orders_instances(&unique("cancel"), &[]);
    let (a, b) = (&bases[0], &bases[1]);
    let (status, _, created) = post(a, "application/json", &order_body().to_string()).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id").to_owned();
    // Read-your-writes after a 201, on the other instance too; this also puts version 1 in b's own tier.
    assert_eq!(get_order(b, &id).await["version"], 1);
    assert_eq!(get_order(a, &id).await["version"], 1);

    let (status, _, cancelled) = cancel(a, &id, Some(r#"{"reason": "changed my mind"}"#)).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "CANCELLED");
    // A cancellation outranks every pipeline step (versions 1 to 3).
    assert_eq!(cancelled["version"], 4);
    // The GET right after the cancel shows it, whichever instance serves it.
    for base in [a, b] {
        let read = get_order(base, &id).await;
        assert_eq!(
            (read["status"].clone(), read["version"].clone()),
            (json!("CANCELLED"), json!(4)),
            "{base}"
        );
    }

    let (status, content_type, problem) = cancel(b, &id, None).await;
    assert_eq!((status, content_type.as_str()), (409, "application/problem+json"));
    assert_eq!(problem["type"], "/problems/invalid-transition");
    let (status, _, problem) = cancel(a, &uuid::Uuid::now_v7().to_string(), None).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (404, Some("/problems/order-not-found"))
    );
    let (status, _, problem) = cancel(a, "not-a-uuid", None).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (400, Some("/problems/invalid-order-id"))
    );
    let (status, _, created2) = post(a, "application/json", &order_body().to_string()).await;
    assert_eq!(status, 201);
    let id2 = created2["id"].as_str().expect("id");
    let (status, _, problem) = cancel(a, id2, Some(r#"{"reason": 5, "extra": true}"#)).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (422, Some("/problems/validation"))
    );
    let (status, _, _) = cancel(a, id2, Some("{not json")).await;
    assert_eq!(status, 400);
    assert_eq!(
        get_order(b, id2).await["status"],
        "CREATED",
        "refused cancels change nothing"
    );
    for mut instance in instances {
        instance.terminate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_on_an_intact_trail_and_names_the_tampered_row() {
    let db = orderflow_testkit::postgres().fresh_database().expect("database");
    let verify = || run_binary(&["audit", "verify", "--database-url", &db], &[]);
    assert!(
        run_binary(&["migrate", "--database-url", &db], &[])
            .status
            .success()
    );
    let out = verify();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "audit trail intact: 0 rows"
    );

    let store = orderflow_store::Store::connect(&db, 2).await.expect("store");
    let orderflow_store::Store::Postgres(pg) = &store else {
        panic!("postgres")
    };
    let entries: Vec<orderflow_store::AuditEntry> = (0..3)
        .map(|i| orderflow_store::AuditEntry {
            event_id: uuid::Uuid::now_v7().to_string(),
            topic: "order.created".into(),
            key: Some(format!("order-{i}")),
            payload: vec![i; 8],
        })
        .collect();
    let mut tx = pg.pool().begin().await.expect("tx");
    orderflow_store::PgStore::append_audit(&mut tx, &entries, chrono::Utc::now())
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    let out = verify();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "audit trail intact: 3 rows"
    );

    let pool = sqlx::PgPool::connect(&db).await.expect("pg");
    sqlx::query("UPDATE audit_log SET msg_key = 'order-x' WHERE seq = 2")
        .execute(&pool)
        .await
        .expect("tamper");
    let out = verify();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("audit trail broken at row 2"), "{stderr}");
}

/// Orders for the kill test (a few thousand keep it within a minute in a debug build).
fn kill_test_orders() -> usize {
    std::env::var("KILL_TEST_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// One role running as its own `orderflow run --role <role>` process.
struct RoleProcess {
    role: &'static str,
    instance: Instance,
}

/// Starts `role` with `args` (the shared backends) under the stable instance id `role`, so a restart takes
/// the killed process's place in its groups at once and fences its open transactions.
async fn start_role(
    role: &'static str,
    args: Vec<String>,
    dir: std::path::PathBuf,
) -> (RoleProcess, Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let mut all = vec!["run".to_owned(), "--role".to_owned(), role.to_owned()];
        all.extend(args);
        if role == "orders" {
            all.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let env = [("ORDERFLOW_KAFKA__INSTANCE_ID", role.to_owned())];
        let (child, banner) = spawn_until_banner(&refs, &dir, &env);
        (
            RoleProcess {
                role,
                instance: Instance(Some(child)),
            },
            banner,
        )
    })
    .await
    .expect("start role")
}

impl RoleProcess {
    /// SIGKILL: no drain, no commit, no goodbye to the group.
    fn kill(&mut self) {
        if let Some(mut child) = self.instance.0.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_role_process_mid_run_and_restarting_it_changes_no_outcome() {
    use orderflow_roles::payments::{Decision, ProviderSettings, SimulatedProvider};
    let orders_n = kill_test_orders();
    let scarce_stock = (orders_n / 10) as i32;
    let prefix = unique("kill");
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let db = orderflow_testkit::postgres().fresh_database().expect("database");
    let migrated = run_binary(&["migrate", "--database-url", &db], &[]);
    assert!(migrated.status.success());
    let store = orderflow_store::Store::connect(&db, 2).await.expect("store");
    for (sku, stock) in [("PLENTY", 1_000_000), ("SCARCE", scarce_stock)] {
        let product = orderflow_store::Product {
            sku: sku.into(),
            name: sku.into(),
            price_minor: 1_000,
            stock,
        };
        store.put_product(&product).await.expect("product");
    }
    // A short session timeout so a killed member without a static id would be noticed soon; the provider
    // declines and fails some charges, deterministically.
    let config = dir.join("kill.toml");
    std::fs::write(
        &config,
        format!(
            "[cache]\nkey_prefix = \"{prefix}:\"\n\n[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\n\
             [payments.provider]\nseed = 3\nfailure_rate = 0.05\ndecline_above_minor = 40000\n"
        ),
    )
    .expect("config");
    let provider = SimulatedProvider::new(ProviderSettings {
        seed: 3,
        failure_rate: 0.05,
        decline_above_minor: Some(40_000),
        ..ProviderSettings::default()
    });
    let args: Vec<String> = [
        "--config",
        config.to_str().expect("path"),
        "--database-url",
        &db,
        "--kafka-bootstrap",
        &orderflow_testkit::kafka().bootstrap_servers(),
        "--topic-prefix",
        &format!("{prefix}."),
        "--redis-url",
        &orderflow_testkit::redis().url(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let roles = [
        "orders",
        "payments",
        "enrichment",
        "inventory",
        "projector",
        "analytics",
        "audit",
    ];
    let mut running = Vec::new();
    let mut base = String::new();
    for role in roles {
        let (process, banner) = start_role(role, args.clone(), dir.clone()).await;
        if let Some(url) = banner
            .iter()
            .find_map(|l| l.strip_prefix("orderflow listening on "))
        {
            base = url.trim().to_owned();
        }
        running.push(process);
    }

    // Orders in two halves; while each is placed, three roles are killed and restarted one after another,
    // and the orders role itself is killed and restarted between the halves.
    let mut placed: Vec<(Value, bool)> = Vec::new();
    let half = orders_n / 2;
    for (round, victims) in [
        ["payments", "enrichment", "inventory"],
        ["projector", "analytics", "audit"],
    ]
    .into_iter()
    .enumerate()
    {
        let client = client();
        let placing = orderflow_testkit::workload::place_orders(
            &client,
            &base,
            round * half,
            if round == 0 { half } else { orders_n - half },
        );
        let killing = async {
            let mut restarted = Vec::new();
            for victim in victims {
                tokio::time::sleep(Duration::from_millis(700)).await;
                let index = running
                    .iter()
                    .position(|p: &RoleProcess| p.role == victim)
                    .expect("running");
                let mut process = running.remove(index);
                process.kill();
                tokio::time::sleep(Duration::from_millis(300)).await;
                restarted.push(start_role(victim, args.clone(), dir.clone()).await.0);
            }
            restarted
        };
        let (orders, restarted) = tokio::join!(placing, killing);
        placed.extend(orders.expect("orders placed"));
        running.extend(restarted);
        if round == 0 {
            let index = running.iter().position(|p| p.role == "orders").expect("orders");
            running.remove(index).kill();
            let (process, banner) = start_role("orders", args.clone(), dir.clone()).await;
            base = banner
                .iter()
                .find_map(|l| l.strip_prefix("orderflow listening on "))
                .expect("listening")
                .trim()
                .to_owned();
            running.push(process);
        }
    }
    assert_eq!(placed.len(), orders_n);

    // Every order ends where the rules say.
    let pool = sqlx::PgPool::connect(&db).await.expect("pg");
    let started = Instant::now();
    let statuses = loop {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, status FROM orders")
            .fetch_all(&pool)
            .await
            .expect("orders");
        let terminal = ["PAYMENT_FAILED", "ALLOCATED", "REJECTED", "CANCELLED"];
        if rows
            .iter()
            .filter(|(_, s)| terminal.contains(&s.as_str()))
            .count()
            == orders_n
        {
            break rows
                .into_iter()
                .map(|(id, s)| (id.to_string(), s))
                .collect::<std::collections::HashMap<_, _>>();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "orders did not all finish"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (order, cancelled) in &placed {
        let id = order["id"].as_str().expect("id");
        let event = orderflow_events::OrderCreated {
            event_id: String::new(),
            event_type: "order.created".into(),
            order_id: id.into(),
            order_version: 1,
            occurred_at: 0,
            customer_id: order["customer_id"].as_str().expect("customer").into(),
            currency: "EUR".into(),
            items: Vec::new(),
            total_minor: order["total_minor"].as_i64().expect("total"),
        };
        let expected: &[&str] = match (*cancelled, provider.decide(&event).0) {
            (true, _) => &["CANCELLED"],
            (false, Decision::Captured) => &["ALLOCATED", "REJECTED"],
            (false, _) => &["PAYMENT_FAILED"],
        };
        let status = statuses[id].as_str();
        assert!(
            expected.contains(&status),
            "order {id} is {status}, expected {expected:?}"
        );
    }

    // Stock reconciles and never went negative; one charge per order.
    for line in store.stock_lines().await.expect("stock") {
        let initial = if line.sku == "SCARCE" {
            i64::from(scarce_stock)
        } else {
            1_000_000
        };
        assert!(line.stock >= 0);
        assert_eq!(
            i64::from(line.stock) + line.allocated,
            initial,
            "{} reconciles",
            line.sku
        );
    }
    assert_eq!(
        store.charge_totals().await.expect("charges").charges,
        orders_n as i64
    );

    // Analytics revenue is the paid, non-cancelled orders' sum; each order was counted created once.
    let (paid_not_cancelled,): (i64,) = sqlx::query_as(
        "SELECT COALESCE(SUM(c.amount_minor), 0)::BIGINT FROM payment_charges c JOIN orders o ON o.id = c.order_id
         WHERE c.outcome = 'CAPTURED' AND o.status <> 'CANCELLED'",
    )
    .fetch_one(&pool)
    .await
    .expect("revenue");
    let revenue_url = format!(
        "{base}/v1/analytics/revenue?from={}&to={}",
        (chrono::Utc::now() - chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%SZ"),
        (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let funnel = eventually("analytics to settle", || {
        let (revenue_url, base) = (revenue_url.clone(), base.clone());
        async move {
            let revenue: Value = http_get(&revenue_url).await.ok()?.json().await.ok()?;
            let funnel: Value = http_get(format!("{base}/v1/analytics/funnel"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (revenue["total_minor"]["EUR"].as_i64() == Some(paid_not_cancelled)).then_some(funnel)
        }
    })
    .await;
    assert_eq!(funnel["created"].as_u64(), Some(orders_n as u64));

    // The audit trail holds each event once, and its chain verifies.
    let audited = eventually("the audit trail to hold every order", || {
        let pool = pool.clone();
        async move {
            let (created,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE topic LIKE '%order.created'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (created as usize == orders_n).then_some(())
        }
    });
    audited.await;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM audit_log")
            .fetch_one(&pool)
            .await
            .expect("audit rows");
    assert_eq!(rows, distinct, "an event was appended twice");
    let verified = run_binary(&["audit", "verify", "--database-url", &db], &[]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    for mut process in running {
        process.instance.terminate().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The roles that talk to Kafka (all but the gateway), each of which gets its own Kafka user.
fn secured_roles() -> impl Iterator<Item = Role> {
    Role::ALL.iter().copied().filter(|r| *r != Role::Gateway)
}

/// The least-privilege ACLs of `role`: exactly what [`Role::kafka_access`] says it needs.
fn role_acls(role: Role, settings: &Settings) -> Vec<orderflow_testkit::Acl> {
    role.kafka_access(settings)
        .grants()
        .into_iter()
        .map(|grant| orderflow_testkit::Acl {
            principal: format!("User:{}", role.name()),
            resource: grant.resource,
            name: grant.name,
            prefixed: grant.prefixed,
            operation: grant.operation,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_runs_with_least_privilege_credentials_over_tls_and_no_secret_reaches_a_log() {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let secret_file = |name: &str, secret: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{secret}\n")).expect("secret file");
        path.display().to_string()
    };
    // Every secret is random, so finding one in a log can only mean it was printed.
    let kafka_users: Vec<(String, String)> = secured_roles()
        .map(|r| (r.name().to_owned(), unique(&format!("kafka-pw-{}", r.name()))))
        .collect();
    let users = kafka_users.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
        orderflow_testkit::KafkaServer::start_secured_tls(&refs)
    })
    .await
    .expect("task")
    .expect("secured kafka");
    let kafka_ca = kafka.ca_file().expect("TLS").display().to_string();
    let prefix = format!("{}.", unique("sec"));
    let key_prefix = format!("{}:", unique("sec"));
    let redis_password = unique("redis-pw");
    let redis = orderflow_testkit::RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "orderflow",
        "on",
        &format!(">{redis_password}"),
        &format!("~{key_prefix}*"),
        &format!("~{{{key_prefix}*"),
        &format!("&{key_prefix}*"),
        "+@all",
        "-@dangerous",
    ])
    .expect("redis with an ACL user");

    // PostgreSQL: a migration role owning the database, and the service's role with rows only.
    let pg = orderflow_testkit::postgres();
    let db_url = pg.fresh_database().expect("database");
    let db_name = db_url.rsplit('/').next().expect("name").to_owned();
    let (migrator_pw, app_pw) = (unique("migrator-pw"), unique("app-pw"));
    let (migrator, app) = (
        unique("migrator").replace('-', "_"),
        unique("app").replace('-', "_"),
    );
    for sql in [
        format!("CREATE ROLE {migrator} LOGIN PASSWORD '{migrator_pw}'"),
        format!("CREATE ROLE {app} LOGIN PASSWORD '{app_pw}'"),
        format!("ALTER DATABASE {db_name} OWNER TO {migrator}"),
    ] {
        pg.psql("postgres", &sql).expect("roles");
    }
    pg.psql(&db_name, &format!("ALTER SCHEMA public OWNER TO {migrator}"))
        .expect("schema owner");
    let role_url = |user: &str| format!("postgres://{user}@127.0.0.1:{}/{db_name}", pg.port());
    let migrated = run_binary(
        &["migrate", "--grant-to", &app],
        &[
            ("ORDERFLOW_DATABASE__URL", &role_url(&migrator)),
            (
                "ORDERFLOW_DATABASE__PASSWORD_FILE",
                &secret_file("migrator-pw", &migrator_pw),
            ),
        ],
    );
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    // The administrator (logging in with PLAIN, the roles with SCRAM) creates the topics and grants each
    // role exactly what it needs.
    let admin_env = [
        ("ORDERFLOW_KAFKA__SECURITY__PROTOCOL", "SASL_SSL"),
        ("ORDERFLOW_KAFKA__SECURITY__CA_FILE", kafka_ca.as_str()),
        ("ORDERFLOW_KAFKA__SECURITY__SASL_MECHANISM", "PLAIN"),
        (
            "ORDERFLOW_KAFKA__SECURITY__USERNAME",
            orderflow_testkit::KAFKA_ADMIN.0,
        ),
        (
            "ORDERFLOW_KAFKA__SECURITY__PASSWORD",
            orderflow_testkit::KAFKA_ADMIN.1,
        ),
    ];
    let applied = run_binary(
        &[
            "topics",
            "apply",
            "--kafka-bootstrap",
            &kafka.bootstrap_servers(),
            "--topic-prefix",
            &prefix,
        ],
        &admin_env,
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let mut settings = Settings::default();
    settings.kafka.topic_prefix = prefix.clone();
    let acls: Vec<_> = secured_roles().flat_map(|r| role_acls(r, &settings)).collect();
    let broker = &kafka;
    tokio::task::block_in_place(|| broker.create_acls(&acls)).expect("acls");

    // Each role runs as its own process with its own Kafka user, the service's database role and the Redis
    // ACL user; every password comes from a file.
    let redis_pw_file = secret_file("redis-pw", &redis_password);
    let app_pw_file = secret_file("app-pw", &app_pw);
    let config = |role: &str, kafka_password_file: &str, extra: &str| {
        let path = dir.join(format!("{role}.toml"));
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"{}\"\npassword_file = \"{app_pw_file}\"\nmigrate_on_start = false\n\n\
                 [kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\nmanage_topics = false\n\n\
                 [kafka.security]\nprotocol = \"SASL_SSL\"\nca_file = \"{kafka_ca}\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
                 username = \"{role}\"\npassword_file = \"{kafka_password_file}\"\n\n\
                 [cache]\nredis_url = \"redis://orderflow@127.0.0.1:{}/\"\nredis_password_file = \"{redis_pw_file}\"\n\
                 key_prefix = \"{key_prefix}\"\n{extra}",
                role_url(&app),
                kafka.bootstrap_servers(),
                redis.port(),
            ),
        )
        .expect("config");
        path.display().to_string()
    };
    let mut processes = Vec::new();
    let mut orders_base = String::new();
    let mut logs = Vec::new();
    for (role, password) in &kafka_users {
        let file = secret_file(&format!("kafka-pw-{role}"), password);
        let config = config(role, &file, "");
        let log = dir.join(format!("{role}.log"));
        logs.push(log.clone());
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut args = vec![
            "run".to_owned(),
            "--role".to_owned(),
            role.clone(),
            "--config".to_owned(),
            config,
        ];
        if role == "orders" {
            args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let data = dir.join(role);
        let (child, banner) = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn_with_stderr(&refs, &data, &[], Stdio::from(stderr))
        })
        .await
        .expect("start");
        if role == "orders" {
            orders_base = banner
                .iter()
                .find_map(|l| l.strip_prefix("orderflow listening on "))
                .expect("listening")
                .trim()
                .to_owned();
        }
        logs.push(dir.join(format!("{role}.banner")));
        std::fs::write(dir.join(format!("{role}.banner")), banner.join("\n")).expect("banner");
        processes.push(Instance(Some(child)));
    }
    // The gateway in front: a shop key read from a file, rate limits shared in Redis as the ACL user.
    let shop_key = unique("shop-key");
    let shop_key_file = secret_file("shop-key", &shop_key);
    let gateway_config = dir.join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "[gateway]\nupstreams = [\"{orders_base}\"]\ndev_key = false\n\n\
             [[gateway.api_keys]]\nid = \"shop\"\nkey_file = \"{shop_key_file}\"\n\
             scopes = [\"orders:write\", \"orders:read\", \"analytics:read\"]\n\n\
             [cache]\nredis_url = \"redis://orderflow@127.0.0.1:{}/\"\nredis_password_file = \"{redis_pw_file}\"\n\
             key_prefix = \"{key_prefix}\"\n",
            redis.port()
        ),
    )
    .expect("gateway config");
    let gateway_log = dir.join("gateway.log");
    logs.push(gateway_log.clone());
    let stderr = std::fs::File::create(&gateway_log).expect("log");
    let (gateway_data, gateway_config) = (dir.join("gateway"), gateway_config.display().to_string());
    let (child, banner) = tokio::task::spawn_blocking(move || {
        spawn_with_stderr(
            &[
                "run",
                "--role",
                "gateway",
                "--config",
                &gateway_config,
                "--listen",
                "127.0.0.1:0",
            ],
            &gateway_data,
            &[],
            Stdio::from(stderr),
        )
    })
    .await
    .expect("gateway");
    assert!(banner.iter().any(|l| l.contains("shared in Redis")), "{banner:?}");
    let gateway = banner
        .iter()
        .find_map(|l| l.strip_prefix("orderflow listening on "))
        .expect("listening")
        .trim()
        .to_owned();
    processes.push(Instance(Some(child)));

    // Orders placed through the gateway all finish, with every role confined to its grants.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", shop_key.parse().expect("header"));
    let shop = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    let app_pool = sqlx::PgPool::connect(&db_url).await.expect("pg");
    for (sku, stock) in [("PLENTY", 1_000_000), ("SCARCE", 10)] {
        sqlx::query("INSERT INTO products (sku, name, price_minor, stock) VALUES ($1, $1, 1000, $2)")
            .bind(sku)
            .bind(stock)
            .execute(&app_pool)
            .await
            .expect("product");
    }
    const ORDERS: usize = 120;
    let placed = orderflow_testkit::workload::place_orders(&shop, &gateway, 0, ORDERS)
        .await
        .expect("orders placed through the gateway");
    assert_eq!(placed.len(), ORDERS);
    let started = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE status NOT IN ('PAYMENT_FAILED', 'ALLOCATED', 'REJECTED', 'CANCELLED')",
        )
        .fetch_one(&app_pool)
        .await
        .expect("count");
        let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
            .fetch_one(&app_pool)
            .await
            .expect("audit");
        if open == 0 && audited >= ORDERS as i64 * 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{open} orders still open, {audited} events audited; logs in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Reads come back through the gateway from the Redis read model, and analytics counted every order.
    let id = placed[0].0["id"].as_str().expect("id");
    let order = shop
        .get(format!("{gateway}/v1/orders/{id}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(order.status().as_u16(), 200);
    let funnel: Value = eventually("analytics counts every order", || {
        let (shop, url) = (shop.clone(), format!("{gateway}/v1/analytics/funnel"));
        async move {
            let funnel: Value = shop.get(url).send().await.ok()?.json().await.ok()?;
            (funnel["created"].as_u64()? == ORDERS as u64).then_some(funnel)
        }
    })
    .await;
    assert!(funnel["paid"].as_u64().expect("paid") > 0, "{funnel}");
    // The service's database role cannot change the schema or rewrite the audit trail.
    let app_only = sqlx::PgPool::connect(&format!(
        "postgres://{app}:{app_pw}@127.0.0.1:{}/{db_name}",
        pg.port()
    ))
    .await
    .expect("app pool");
    for forbidden in [
        "CREATE TABLE sneaky (id INT)",
        "DROP TABLE orders",
        "UPDATE audit_log SET topic = 'x'",
        "DELETE FROM audit_log",
    ] {
        let refused = sqlx::query(forbidden).execute(&app_only).await;
        assert!(refused.is_err(), "the service role may not: {forbidden}");
    }
    // Redis: the service user cannot touch keys outside its prefix.
    let client = redis::Client::open(format!(
        "redis://orderflow:{redis_password}@127.0.0.1:{}/",
        redis.port()
    ))
    .expect("redis client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let outside: redis::RedisResult<()> = redis::cmd("SET")
        .arg("elsewhere")
        .arg("1")
        .query_async(&mut conn)
        .await;
    assert!(outside.is_err(), "keys outside the prefix are refused");
    for process in &mut processes {
        process.terminate().await;
    }

    // A wrong Kafka password fails at start, with one clear line, and the wrong password nowhere.
    let wrong = unique("wrong-pw");
    let wrong_file = secret_file("wrong-pw", &wrong);
    let wrong_config = config("payments", &wrong_file, "");
    let started = Instant::now();
    let out = run_binary(&["run", "--role", "payments", "--config", &wrong_config], &[]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fails fast: {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: kafka: Kafka at")
            && last.contains("user 'payments'")
            && last.contains("Authentication"),
        "{stderr}"
    );
    assert!(!stderr.contains(&wrong));

    // No secret reached any log or banner.
    let mut secrets: Vec<&str> = kafka_users.iter().map(|(_, p)| p.as_str()).collect();
    secrets.extend([
        redis_password.as_str(),
        migrator_pw.as_str(),
        app_pw.as_str(),
        shop_key.as_str(),
    ]);
    let mut scanned = 0;
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("log");
        scanned += text.len();
        for secret in &secrets {
            assert!(!text.contains(secret), "a secret appears in {}", log.display());
        }
    }
    for output in [&migrated, &applied] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in &secrets {
            assert!(!text.contains(secret));
        }
    }
    assert!(scanned > 1_000, "the logs were written ({scanned} bytes)");
}

/// A client trusting only the CA in `ca_file`.
fn trusting(ca_file: &std::path::Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_file).expect("ca")).expect("pem");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_certificate_reload_on_the_listener_and_tls_to_postgres_by_sslmode() {
    let dir = temp_dir();
    let (first, second) = (dir.join("ca-1"), dir.join("ca-2"));
    for folder in [&first, &second] {
        std::fs::create_dir_all(folder).expect("dir");
        orderflow_testkit::make_certificates(folder).expect("certificates");
    }
    let (cert, key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(first.join("server.crt"), &cert).expect("cert");
    std::fs::copy(first.join("server.key"), &key).expect("key");
    let mut settings = embedded_settings(&dir);
    settings.http.tls = Some(orderflow_api::TlsSettings {
        cert_file: cert.clone(),
        key_file: key.clone(),
        reload_secs: 1,
    });
    let platform = Platform::start(settings, &[Role::Orders])
        .await
        .expect("platform");
    let addr = platform.http_addr.expect("addr");
    let url = format!("https://127.0.0.1:{}/healthz", addr.port());
    let answer = trusting(&first.join("ca.crt"))
        .get(&url)
        .send()
        .await
        .expect("https");
    assert_eq!(answer.status().as_u16(), 200);
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", addr.port())).await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| r.status().as_u16() != 200),
        "plain HTTP is not served"
    );

    // A renewed certificate (from another CA) replaces the files: new connections get it, no restart.
    std::fs::copy(second.join("server.key"), &key).expect("key");
    std::fs::copy(second.join("server.crt"), &cert).expect("cert");
    let renewed = trusting(&second.join("ca.crt"));
    eventually("the renewed certificate", || {
        let (renewed, url) = (renewed.clone(), url.clone());
        async move {
            renewed
                .get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    assert!(
        trusting(&first.join("ca.crt")).get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );
    platform.stop().await.expect("stop");

    // PostgreSQL over TLS: the mode is the URL's `sslmode`, the CA its `sslrootcert`.
    let pg = tokio::task::spawn_blocking(orderflow_testkit::PostgresServer::start_tls)
        .await
        .expect("task")
        .expect("postgres with TLS");
    let db = pg.fresh_database().expect("database");
    let verified = format!("{db}?sslmode=verify-full&sslrootcert={}", pg.ca_file().display());
    let store = orderflow_store::Store::connect(&verified, 1)
        .await
        .expect("verified TLS");
    store.migrate().await.expect("migrations over TLS");
    let wrong_ca = format!(
        "{db}?sslmode=verify-full&sslrootcert={}",
        second.join("ca.crt").display()
    );
    assert!(
        orderflow_store::Store::connect(&wrong_ca, 1).await.is_err(),
        "a server certificate from another CA is refused"
    );
    let plain = orderflow_testkit::postgres().fresh_database().expect("database");
    assert!(
        orderflow_store::Store::connect(&format!("{plain}?sslmode=require"), 1)
            .await
            .is_err(),
        "sslmode=require refuses a server without TLS"
    );
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

/// Posts an order with the caller's trace context `traceparent`; returns the created order.
async fn post_traced(base: &str, traceparent: &str) -> Value {
    let response = client()
        .post(format!("{base}/v1/orders"))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(order_body().to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.expect("json")
}

/// The spans every test of this binary ends, kept in memory: the subscriber is process-wide, so it is
/// installed once, by the first test that asks.
fn finished_spans() -> &'static opentelemetry_sdk::trace::InMemorySpanExporter {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    static TRACING: std::sync::OnceLock<(
        opentelemetry_sdk::trace::InMemorySpanExporter,
        opentelemetry_sdk::trace::SdkTracerProvider,
    )> = std::sync::OnceLock::new();
    let (exporter, _) = TRACING.get_or_init(|| {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = orderflow_telemetry::otel_layer(&provider)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only global subscriber of this test binary");
        (exporter, provider)
    });
    exporter
}

fn attribute(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_from_the_http_handler_through_the_relay_to_every_consumer() {
    let exporter = finished_spans();
    let dir = temp_dir();
    let platform = Platform::start(embedded_settings(&dir), Role::ALL)
        .await
        .expect("platform starts");
    stock_products(&platform.backends.store).await;
    let base = format!("http://{}", platform.http_addr.expect("http"));

    const TRACE: &str = "5e1d1b3a2f4c4d6e8a9b0c1d2e3f4a5b";
    const CALLER_SPAN: &str = "1111222233334444";
    post_traced(&base, &format!("00-{TRACE}-{CALLER_SPAN}-01")).await;

    // Every consumer this process runs (one per consumer role, and the orders role's status follower).
    let consumers = platform.backends.consumers.clone();
    let groups: std::collections::BTreeSet<String> = eventually("every role's consumer", || {
        let consumers = consumers.clone();
        async move {
            let groups: std::collections::BTreeSet<String> = consumers
                .list()
                .iter()
                .map(|(_, h)| h.group().to_owned())
                .collect();
            (groups.len() == 7).then_some(groups)
        }
    })
    .await;
    let trace = eventually(
        "a span of every consumer in the request's trace, with its parents",
        || {
            let groups = groups.clone();
            async move {
                let spans: Vec<_> = exporter
                    .get_finished_spans()
                    .ok()?
                    .into_iter()
                    .filter(|s| s.span_context.trace_id().to_string() == TRACE)
                    .collect();
                let seen: std::collections::BTreeSet<String> = spans
                    .iter()
                    .filter_map(|s| attribute(s, "messaging.consumer.group.name"))
                    .collect();
                // A span can end before its parent: wait until every parent but the caller's is there too.
                let ids: std::collections::HashSet<_> =
                    spans.iter().map(|s| s.span_context.span_id()).collect();
                let whole = spans
                    .iter()
                    .all(|s| ids.contains(&s.parent_span_id) || s.parent_span_id.to_string() == CALLER_SPAN);
                (groups.is_subset(&seen) && whole).then_some(spans)
            }
        },
    )
    .await;

    // The chain: caller -> gateway -> HTTP handler -> relay -> consumers of order.created.
    let gateway = trace
        .iter()
        .find(|s| s.name == "gateway")
        .expect("the gateway's span");
    assert_eq!(gateway.parent_span_id.to_string(), CALLER_SPAN);
    let request = trace
        .iter()
        .find(|s| s.name == "POST /v1/orders")
        .expect("the HTTP handler's span");
    assert_eq!(request.parent_span_id, gateway.span_context.span_id());
    let relay = trace
        .iter()
        .find(|s| s.name.ends_with("order.created publish"))
        .expect("the relay's span");
    assert_eq!(relay.parent_span_id, request.span_context.span_id());
    let first_hop: Vec<_> = trace
        .iter()
        .filter(|s| s.parent_span_id == relay.span_context.span_id())
        .filter_map(|s| attribute(s, "messaging.consumer.group.name"))
        .collect();
    assert!(
        first_hop.iter().any(|g| g.ends_with("payments")),
        "payments consumes order.created as a child of the relay's span: {first_hop:?}"
    );
    // Later hops are children of the consumer span whose output they read (payments -> its outcome), so
    // every span but the gateway's has its parent in the trace (the waiting above required it).
    let later: Vec<_> = trace
        .iter()
        .filter(|s| s.name.starts_with("payment.") || s.name.starts_with("inventory."))
        .collect();
    assert!(!later.is_empty(), "consumers of the later hops are in the trace");
    platform.stop().await.expect("clean stop");
}

/// Sum of the samples of `name` whose labels include every pair of `labels`, in a Prometheus text page.
fn metric_sum(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_load_lag_rises_while_a_consumer_is_held_then_drains() {
    orderflow_api::metrics::install().expect("recorder");
    let mut settings = real_server_settings("metrics", 2);
    settings.ops.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let platform = Platform::start(settings, Role::ALL)
        .await
        .expect("platform starts");
    stock_products(&platform.backends.store).await;
    let base = format!("http://{}", platform.http_addr.expect("http"));
    let ops = format!("http://{}", platform.ops_addr.expect("ops listener"));
    let projector = platform
        .backends
        .consumers
        .list()
        .into_iter()
        .find(|(role, _)| *role == Role::Projector)
        .map(|(_, handle)| handle.group().to_owned())
        .expect("the projector's consumer");
    let scrape = || async {
        // The ops listener needs no key; the API's /metrics needs admin.
        reqwest::get(format!("{ops}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    };

    // Ready: every dependency answers and every consumer has its partitions.
    let ready: Value = eventually("readiness", || async {
        let response = reqwest::get(format!("{ops}/readyz")).await.ok()?;
        (response.status() == 200).then_some(())?;
        response.json().await.ok()
    })
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    for dependency in ["database", "kafka", "redis"] {
        assert_eq!(ready["dependencies"][dependency]["status"], "ok", "{ready}");
    }
    assert_eq!(ready["consumers"].as_array().map(Vec::len), Some(7), "{ready}");
    assert!(
        ready["consumers"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["assigned_partitions"].as_u64() > Some(0)),
        "{ready}"
    );

    // An operator holds the projector; unknown groups get a problem.
    let held = client()
        .post(format!("{base}/admin/consumers/{projector}/hold"))
        .send()
        .await
        .expect("hold");
    assert_eq!(held.status(), 200);
    assert_eq!(held.json::<Value>().await.expect("json")["held"], true);
    let missing = client()
        .post(format!("{base}/admin/consumers/no-such-group/hold"))
        .send()
        .await
        .expect("hold");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"].to_str().ok(),
        Some("application/problem+json")
    );
    let anonymous = reqwest::Client::new()
        .post(format!("{base}/admin/consumers/{projector}/release"))
        .send()
        .await
        .expect("release without a key");
    assert_eq!(anonymous.status(), 401, "holds need a credential");

    let before = scrape().await;
    const ORDERS: usize = 60;
    let mut ids = Vec::with_capacity(ORDERS);
    for _ in 0..ORDERS {
        let (status, _, created) = post(&base, "application/json", &order_body().to_string()).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    // The lag of the held projector rises to at least one record per order, while the others keep up.
    let peak = eventually("the held projector's lag to rise", || async {
        let page = scrape().await;
        let lag = metric_sum(&page, "orderflow_consumer_lag", &[("group", &projector)]);
        (lag >= ORDERS as f64).then_some(lag)
    })
    .await;
    let page = scrape().await;
    assert_eq!(
        metric_sum(&page, "orderflow_consumer_held", &[("group", &projector)]),
        1.0
    );
    let posted = |page: &str| {
        metric_sum(
            page,
            "orderflow_http_requests_total",
            &[("route", "/v1/orders"), ("method", "POST"), ("status", "201")],
        )
    };
    assert!(
        posted(&page) - posted(&before) >= ORDERS as f64,
        "requests are counted per route"
    );
    assert!(
        metric_sum(
            &page,
            "orderflow_http_request_duration_seconds_count",
            &[("route", "/v1/orders"), ("method", "POST")]
        ) >= ORDERS as f64
    );
    // The projector's lag counts every followed topic, so it can pass ORDERS before the relay has had the
    // last order.created acknowledged: wait for the outbox counters to catch up.
    eventually(
        "every order to be published and its relay latency observed",
        || async {
            let page = scrape().await;
            (metric_sum(&page, "orderflow_outbox_published_total", &[]) >= ORDERS as f64
                && metric_sum(&page, "orderflow_outbox_relay_seconds_count", &[]) >= ORDERS as f64)
                .then_some(())
        },
    )
    .await;

    // Released, it drains: one offset per partition may remain, the marker of the last transaction.
    let released = client()
        .post(format!("{base}/admin/consumers/{projector}/release"))
        .send()
        .await
        .expect("release");
    assert_eq!(released.status(), 200);
    let drained = eventually("the projector's lag to drain", || async {
        let page = scrape().await;
        let partitions = page
            .lines()
            .filter(|l| {
                l.starts_with("orderflow_consumer_lag{") && l.contains(&format!("group=\"{projector}\""))
            })
            .count() as f64;
        let lag = metric_sum(&page, "orderflow_consumer_lag", &[("group", &projector)]);
        (partitions > 0.0 && lag <= partitions).then_some(lag)
    })
    .await;
    assert!(drained < peak, "lag {peak} drained to {drained}");
    println!("held projector: lag rose to {peak}, drained to {drained} after release");
    let page = scrape().await;
    let e2e = metric_sum(
        &page,
        "orderflow_consumer_end_to_end_seconds_count",
        &[("group", &projector)],
    );
    assert!(
        e2e >= ORDERS as f64,
        "end-to-end latency recorded per record: {e2e}"
    );
    // The held records waited: some took longer than the hold's first seconds.
    let fast = metric_sum(
        &page,
        "orderflow_consumer_end_to_end_seconds_bucket",
        &[("group", &projector), ("le", "1")],
    );
    assert!(
        fast < e2e,
        "held records show in the latency histogram ({fast} of {e2e} under 1 s)"
    );

    // Reads: the cache serves repeated GETs, and the hit counter moves.
    let hits = |page: &str| metric_sum(page, "orderflow_cache_hits_total", &[]);
    let before_reads = hits(&page);
    for id in ids.iter().take(10) {
        for _ in 0..3 {
            get_order(&base, id).await;
        }
    }
    let page = scrape().await;
    assert!(hits(&page) - before_reads >= 20.0, "repeated reads hit the cache");
    assert!(metric_sum(&page, "orderflow_db_pool_max_connections", &[]) > 0.0);
    assert!(
        metric_sum(&page, "orderflow_kafka_tx_messages_total", &[]) > 0.0,
        "librdkafka statistics"
    );
    platform.stop().await.expect("clean stop");
}

/// The integer a console figure shows (`"1,234"` or `1234`).
fn figure(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_pipeline_live_in_a_headless_browser() {
    orderflow_api::metrics::install().expect("recorder");
    let (python, script) = tokio::task::spawn_blocking(orderflow_testkit::console_check)
        .await
        .expect("task")
        .expect("selenium virtualenv");
    let dir = temp_dir();
    let platform = Platform::start(embedded_settings(&dir), Role::ALL)
        .await
        .expect("platform starts");
    stock_products(&platform.backends.store).await;
    let base = format!("http://{}", platform.http_addr.expect("http"));

    // The page itself is public; its figures need the key (here in the URL's fragment, never sent).
    let page = reqwest::get(format!("{base}/")).await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("<title>Orderflow console</title>")
    );
    let anonymous = reqwest::get(format!("{base}/console/state"))
        .await
        .expect("state");
    assert_eq!(anonymous.status(), 401);

    // Load while the browser watches: orders go in and are read back.
    let load = tokio::spawn({
        let base = base.clone();
        async move {
            let mut placed = Vec::new();
            loop {
                let (status, _, created) = post(&base, "application/json", &order_body().to_string()).await;
                assert_eq!(status, 201, "{created}");
                placed.push(created["id"].as_str().expect("id").to_owned());
                let _ = get_order(&base, &placed[placed.len() / 2]).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let screenshot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!("{base}/#key={TEST_KEY}");
    let run = {
        let screenshot = screenshot.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(script)
                .args(["--url", &url, "--timeout", "30", "--screenshot"])
                .arg(&screenshot)
                .output()
        })
    };
    let out = run.await.expect("task").expect("the browser check runs");
    load.abort();
    assert!(
        out.status.success(),
        "browser check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let (first, last) = (&report["first"], &report["last"]);
    assert!(
        figure(&last["processed_total"]) > figure(&first["processed_total"]),
        "records processed rise without a reload: {report}"
    );
    assert!(
        figure(&last["orders_total"]) >= figure(&first["orders_total"]),
        "{report}"
    );
    assert!(figure(&last["orders_total"]) > Some(0), "{report}");
    assert_eq!(report["roles"], 7, "one row per consumer: {report}");
    assert!(
        report["rows"].as_u64() > Some(0),
        "recent orders are listed: {report}"
    );
    assert!(
        last["e2e_p99"]
            .as_str()
            .is_some_and(|t| t.ends_with("ms") || t.ends_with(" s")),
        "end-to-end latency is shown: {report}"
    );
    assert!(
        last["cache_hit_ratio"].as_str().is_some_and(|t| t.ends_with('%')),
        "the cache hit ratio is shown: {report}"
    );
    let png = std::fs::read(&screenshot).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    println!("console screenshot: {}", screenshot.display());
    platform.stop().await.expect("clean stop");
}

/// What an OTLP/HTTP collector received: (path, content type, body) of each export request.
type Exports = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// An HTTP server on 127.0.0.1 that takes OTLP/HTTP exports (any path, answering 200 with an empty
/// protobuf message, as a collector does) and keeps them.
async fn otlp_receiver() -> (String, Exports) {
    let exports: Exports = Default::default();
    let app = axum::Router::new().fallback({
        let exports = exports.clone();
        move |request: axum::extract::Request| {
            let exports = exports.clone();
            async move {
                let path = request.uri().path().to_owned();
                let kind = request
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = axum::body::to_bytes(request.into_body(), 16 << 20)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                exports.lock().expect("exports").push((path, kind, body));
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), exports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_its_traces_over_otlp_when_configured() {
    let (endpoint, exports) = otlp_receiver().await;
    let dir = temp_dir();
    let (child, base, banner) = spawn_binary_with(
        &["up", "--listen", "127.0.0.1:0"],
        &dir,
        &[
            ("ORDERFLOW_TRACING__OTLP_ENDPOINT", endpoint.clone()),
            (
                "ORDERFLOW_TRACING__SERVICE_NAME",
                "orderflow-otlp-test".to_owned(),
            ),
        ],
    );
    assert!(
        banner
            .iter()
            .any(|l| l.contains(&format!("traces:   OTLP/HTTP to {endpoint}"))),
        "{banner:?}"
    );
    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let created = post_traced(&base, &format!("00-{TRACE}-b7ad6b7169203331-01")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    eventually("the order through the pipeline", || {
        let (base, id) = (base.clone(), id.clone());
        async move { (get_order(&base, &id).await["version"] == 3).then_some(()) }
    })
    .await;
    // Stopping flushes what the batch exporter still holds.
    terminate(child).await;

    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&TRACE[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let received = exports.lock().expect("exports").clone();
    assert!(!received.is_empty(), "the collector received exports");
    for (path, kind, _) in &received {
        assert_eq!(path, "/v1/traces");
        assert_eq!(kind, "application/x-protobuf");
    }
    let all: Vec<u8> = received.into_iter().flat_map(|(_, _, body)| body).collect();
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&trace_id), "spans of the request's trace were exported");
    assert!(
        contains(b"orderflow-otlp-test"),
        "under the configured service name"
    );
    assert!(contains(b"POST /v1/orders"), "the HTTP handler's span");
    assert!(contains(b"order.created publish"), "the relay's span");
    assert!(contains(b"order.created process"), "consumers' spans");
    let _ = std::fs::remove_dir_all(dir);
}

//! An order's journey: posted over HTTP, through PostgreSQL, Kafka and Redis (or the embedded default) to its
//! terminal state, and a cancel read back at once on every instance.

use std::process::Command;
use std::time::{Duration, Instant};

use orderflow_roles::{Platform, Role};
use orderflow_testkit::{read_topic, unique};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::*;

/// `base` with [`TEST_KEY`] as the URL's password (sent as HTTP Basic, as registry clients do).
fn with_key(base: &str) -> String {
    base.replacen("http://", &format!("http://test:{TEST_KEY}@"), 1)
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
    // One long-polling read waits for it, without the client polling.
    let asked = Instant::now();
    let paid: Value = http_get(format!(
        "{base}/v1/orders/{id}?wait_for=ALLOCATED&timeout_ms=20000"
    ))
    .await
    .expect("GET wait_for")
    .json()
    .await
    .expect("order");
    assert_eq!(paid["status"], "ALLOCATED", "{paid}");
    assert!(asked.elapsed() < Duration::from_secs(20), "answered when reached");
    // A status the order went past answers at once, and so does a timeout before it is reached.
    let past: Value = http_get(format!("{base}/v1/orders/{id}?wait_for=PAID&timeout_ms=30000"))
        .await
        .expect("GET past")
        .json()
        .await
        .expect("order");
    assert_eq!(past["status"], "ALLOCATED");
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

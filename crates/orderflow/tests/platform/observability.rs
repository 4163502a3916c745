//! Observability: one trace per request across every hop, metrics that follow the load, the live console,
//! and OTLP export.

use std::process::Command;
use std::time::{Duration, Instant};

use orderflow_roles::{Platform, Role};
use serde_json::Value;

use crate::support::*;

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
    let prefix = settings.kafka.topic_prefix.clone();
    let platform = Platform::start(settings, Role::ALL)
        .await
        .expect("platform starts");
    stock_products(&platform.backends.store).await;
    let base = format!("http://{}", platform.http_addr.expect("http"));
    let ops = format!("http://{}", platform.ops_addr.expect("ops listener"));
    // A role registers its consumer when its task first runs, which on a busy machine can be just after
    // the platform is up.
    let started = Instant::now();
    let projector = loop {
        let found = platform
            .backends
            .consumers
            .list()
            .into_iter()
            .find(|(role, _)| *role == Role::Projector)
            .map(|(_, handle)| handle.group().to_owned());
        if let Some(group) = found {
            break group;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the projector's consumer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
    // `orderflow consumers` shows the same from outside: the cluster's view of every group (members, lag
    // per partition from committed offsets) and, from the process's readiness, which consumer is held.
    let kafka = orderflow_testkit::kafka().bootstrap_servers();
    let shown = {
        let (ops, prefix) = (ops.clone(), prefix.clone());
        tokio::task::spawn_blocking(move || {
            run_binary(
                &[
                    "consumers",
                    "--json",
                    "--ops",
                    &ops,
                    "--kafka-bootstrap",
                    &kafka,
                    "--topic-prefix",
                    &prefix,
                ],
                &[],
            )
        })
        .await
        .expect("task")
    };
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let groups: Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    let groups = groups.as_array().expect("a list of groups");
    assert_eq!(groups.len(), 7, "one group per consuming role: {groups:?}");
    for group in groups {
        let is_projector = group["group"] == projector.as_str();
        assert_eq!(group["state"], "Stable", "{group}");
        assert!(
            !group["members"].as_array().expect("members").is_empty(),
            "{group}"
        );
        assert_eq!(group["processes"][0]["held"], is_projector, "{group}");
        if is_projector {
            assert!(group["lag"].as_i64() >= Some(ORDERS as i64), "{group}");
            assert!(
                group["partitions"]
                    .as_array()
                    .expect("partitions")
                    .iter()
                    .any(|p| p["topic"] == format!("{prefix}order.created") && p["lag"].as_i64() > Some(0)),
                "{group}"
            );
        }
    }
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
    // The stranded-order sweep ran, and found every order moving.
    for status in ["CREATED", "PAID"] {
        assert!(
            page.contains(&format!("orderflow_orders_stranded{{status=\"{status}\"}} 0")),
            "the sweeper reports {status}"
        );
    }
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
    // The last 15 minutes: records/s of every role (7 lines), lag of every group, p50 and p99, dead letters.
    let charts = &report["charts"];
    assert_eq!(charts["throughput"], 7, "{report}");
    assert_eq!(charts["lag"], 7, "{report}");
    assert_eq!(charts["latency"], 2, "{report}");
    assert_eq!(charts["dead-letters"], 1, "{report}");
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

//! HTTP benchmark (prints its figures): throughput of `GET /v1/orders/{id}` on cache hits against a
//! hello-world route of the same server, in one run, with the same load tool and the same connections.
//!
//! The server is the API's router (same middleware on the hello route) on a runtime of its own, with the
//! cache on a real redis-server started by the test harness and SQLite as the store. Orders are created with
//! `POST /v1/orders` first, which writes them through the cache, so every measured GET is a hit. Three cache
//! set-ups, each against its own server's hello route: the default (in-process tier in front of Redis, whose
//! short in-process TTL sends a share of reads to Redis), Redis only (in-process tier off) and in-process
//! only (every GET an in-process hit). Rounds interleave hello and orders (alternating which goes first) so
//! drift on a shared machine hits both alike; the load tool runs on a thread of its own.
//!
//! First it prints the router's own cost per request without sockets (the handler's share of the gap).
//!
//! Run: `cargo bench -p orderflow-api --bench http`. `BENCH_CONNECTIONS` (default 32), `BENCH_SECONDS` per
//! round (default 1.5), `BENCH_ROUNDS` (default 8), `BENCH_ORDERS` (default 10,000), `BENCH_SETUPS` (e.g.
//! `1,3`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a benchmark fails by panicking

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use orderflow_api::AppState;
use orderflow_cache::{CacheSettings, OrderCache, RedisConnection, TieredCache};
use orderflow_events::AvroCodec;
use orderflow_registry::RegistryService;
use orderflow_store::Store;
use tower_http::trace::TraceLayer;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The API's router plus `GET /hello`, the hello route behind the same layers as the API's routes.
fn app(state: AppState) -> Router {
    let hello = Router::new()
        .route("/hello", get(|| async { "Hello, world!" }))
        .layer(DefaultBodyLimit::max(orderflow_api::MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http());
    hello.merge(orderflow_api::router(state))
}

async fn serve(state: AppState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app(state)).await.expect("serve") });
    addr
}

/// One HTTP/1.1 keep-alive connection.
async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

/// Creates `n` orders through the API (which writes each through the cache) and returns their paths.
async fn create_orders(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut sender = connect(addr).await;
    let body = r#"{"customer_id":"c-1","currency":"EUR","items":[{"sku":"SKU-1","quantity":2,"unit_price_minor":1250},{"sku":"SKU-2","quantity":1,"unit_price_minor":990}]}"#;
    let mut paths = Vec::with_capacity(n);
    for _ in 0..n {
        let request = hyper::Request::post(format!("http://{addr}/v1/orders"))
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request");
        sender.ready().await.expect("ready");
        let response = sender.send_request(request).await.expect("create");
        assert_eq!(response.status(), 201, "create answered {}", response.status());
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        paths.push(format!("/v1/orders/{}", doc["id"].as_str().expect("id")));
    }
    paths
}

/// What one round measured.
struct Round {
    requests: u64,
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Closed loop: `connections` keep-alive connections each send the next request when the last is answered,
/// cycling through `paths`, for `seconds`. Every answer must be 200.
///
/// The client is a minimal HTTP/1.1 one (pre-built requests, responses framed by `Content-Length`) written
/// here on purpose: a load tool must cost far less than the server it measures, and a general client (hyper's
/// costs two tasks and several wakeups per request) saturated its core before the server did.
async fn load(addr: SocketAddr, paths: Arc<Vec<String>>, connections: usize, seconds: f64) -> Round {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        paths
            .iter()
            .map(|path| format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes())
            .collect(),
    );
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        streams.push(stream);
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for (c, mut stream) in streams.into_iter().enumerate() {
        let (stop, count, requests) = (stop.clone(), count.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut histogram =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
            let mut buffer: Vec<u8> = Vec::with_capacity(16 * 1024);
            let mut i = c * 7919;
            while !stop.load(Ordering::Relaxed) {
                let request = &requests[i % requests.len()];
                i += 1;
                let begun = Instant::now();
                stream.write_all(request).await.expect("send");
                let length = loop {
                    if let Some(length) = response_length(&buffer) {
                        break length;
                    }
                    let read = stream.read_buf(&mut buffer).await.expect("read");
                    assert!(read > 0, "the server closed the connection");
                };
                assert!(
                    buffer.starts_with(b"HTTP/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&buffer[..length])
                );
                buffer.drain(..length);
                histogram
                    .record((begun.elapsed().as_micros() as u64).max(1))
                    .expect("record");
                count.fetch_add(1, Ordering::Relaxed);
            }
            histogram
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
    for task in tasks {
        histogram.add(task.await.expect("connection")).expect("merge");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = count.load(Ordering::Relaxed);
    Round {
        requests,
        per_second: requests as f64 / elapsed,
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
    }
}

/// The length of the complete response at the start of `buffer` (head plus `Content-Length` body), or
/// `None` while it is incomplete.
fn response_length(buffer: &[u8]) -> Option<usize> {
    let head = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = std::str::from_utf8(&buffer[..head])
        .expect("utf-8 head")
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().expect("content-length"))
        })
        .expect("responses carry a Content-Length");
    (buffer.len() >= head + body).then_some(head + body)
}

/// `n` requests through `router` (no sockets), spread over `tasks` tasks cycling through `paths`; returns
/// the wall time per request per task.
async fn router_alone(router: &Router, paths: &Arc<Vec<String>>, n: usize, tasks: usize) -> Duration {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (router, paths) = (router.clone(), paths.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..n / tasks {
                let path = &paths[(i * tasks + t) % paths.len()];
                let request = hyper::Request::get(path.as_str())
                    .body(axum::body::Body::empty())
                    .expect("request");
                let response = tower::ServiceExt::oneshot(router.clone(), request)
                    .await
                    .expect("infallible");
                assert_eq!(response.status(), 200);
                std::hint::black_box(response.into_body().collect().await.expect("body"));
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
    started.elapsed() * tasks as u32 / n as u32
}

fn state(store: &Store, codec: &Arc<AvroCodec>, cache: OrderCache) -> AppState {
    AppState {
        catalogue: orderflow_api::Catalogue::new(store.clone()),
        idempotency_ttl: std::time::Duration::from_secs(86_400),
        store: store.clone(),
        orders: orderflow_store::OrderWriter::spawn(store.clone(), Default::default()),
        cache,
        codec: codec.clone(),
        registry: None,
        analytics: orderflow_analytics::Analytics::Memory(Arc::new(
            orderflow_analytics::MemoryAnalytics::new(orderflow_analytics::Hopping::default())
                .expect("hopping"),
        )),
        relay_wakeup: None,
    }
}

fn main() {
    let connections: usize = env_or("BENCH_CONNECTIONS", 32);
    let seconds: f64 = env_or("BENCH_SECONDS", 1.5);
    let rounds: usize = env_or("BENCH_ROUNDS", 8).max(1);
    let orders: usize = env_or("BENCH_ORDERS", 10_000);

    let redis = orderflow_testkit::RedisServer::start().expect("redis-server");
    let dir = std::env::temp_dir().join(format!("orderflow-http-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    // The server runs as the binary runs it: a multi-threaded runtime with a worker per core.
    let server = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("server runtime");
    let (paths, setups, store, codec) = server.block_on(async {
        let store = Store::connect(&format!("sqlite://{}", dir.join("bench.db").display()), 8)
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        // The products the posted order buys, at the prices it quotes.
        for (sku, price_minor) in [("SKU-1", 1_250), ("SKU-2", 990)] {
            let product = orderflow_store::Product {
                sku: sku.into(),
                name: sku.into(),
                price_minor,
                stock: i32::MAX / 2,
            };
            store.put_product(&product).await.expect("product");
        }
        let registry = RegistryService::new(Arc::new(store.clone()));
        let codec = Arc::new(
            AvroCodec::connect(Arc::new(registry), "orderflow.")
                .await
                .expect("codec"),
        );
        let settings = CacheSettings {
            redis_url: Some(redis.url()),
            ..CacheSettings::default()
        };
        let default_cache = settings.connect().await.expect("cache");
        let target = settings.redis_target().expect("target").expect("redis");
        let mut tiered = settings.tiered();
        tiered.l1_capacity = None;
        let redis_only: OrderCache = TieredCache::new(
            Some(RedisConnection::connect(&target).await.expect("redis")),
            tiered,
        );
        // In process only, entries living as long as the run: every GET after the first is an in-process hit,
        // which isolates the HTTP and serialisation cost from Redis's.
        let memory_only: OrderCache = TieredCache::new(None, CacheSettings::default().tiered());
        let default_addr = serve(state(&store, &codec, default_cache.clone())).await;
        let redis_only_addr = serve(state(&store, &codec, redis_only.clone())).await;
        let memory_only_addr = serve(state(&store, &codec, memory_only.clone())).await;
        let paths = Arc::new(create_orders(default_addr, orders).await);
        let setups = vec![
            ("in-process + Redis (default)", default_addr, default_cache),
            ("Redis only (in-process tier off)", redis_only_addr, redis_only),
            ("in-process only (no Redis)", memory_only_addr, memory_only),
        ];
        (paths, setups, store, codec)
    });
    let only: Option<String> = std::env::var("BENCH_SETUPS").ok();
    let hello = Arc::new(vec!["/hello".to_owned()]);

    // The server's own cost per request, without sockets: the router called in a loop, on one task and on
    // one task per core (which shows contention between the runtime's workers).
    server.block_on(async {
        let router = app(state(&store, &codec, setups[2].2.clone()));
        // The in-process-only cache starts empty: a first pass loads every order.
        router_alone(&router, &paths, paths.len(), 1).await;
        for tasks in [1, 2] {
            for (label, cycle) in [("/hello", &hello), ("/v1/orders/{id}", &paths)] {
                let per = router_alone(&router, cycle, 400_000, tasks).await;
                println!("router alone, {tasks} task(s), in-process hits, GET {label}: {per:?} per request per task");
            }
        }
    });

    // The load tool has a runtime (one thread) of its own, as an external tool would.
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    println!(
        "GET /v1/orders/{{id}} on cache hits vs GET /hello on the same server: {connections} keep-alive \
         connections, closed loop, {seconds} s per round, {rounds} rounds, {orders} orders"
    );
    for (index, (name, addr, cache)) in setups.iter().enumerate() {
        // `BENCH_SETUPS=1,3` runs the first and third only.
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n.trim() == (index + 1).to_string()))
        {
            continue;
        }
        let addr = *addr;
        let (mut hello_total, mut orders_total, mut ratios) = (0.0, 0.0, Vec::new());
        let stats = cache.stats();
        let loads_before = stats.loads.load(Ordering::Relaxed);
        let (l1_before, l2_before) = (
            stats.l1_hits.load(Ordering::Relaxed),
            stats.l2_hits.load(Ordering::Relaxed),
        );
        // Warm the connections' path once so the first round is not the first touch.
        client.block_on(load(addr, paths.clone(), connections, 0.5));
        for round in 1..=rounds {
            // Which route goes first alternates, so neither always follows the other.
            let (h, o) = if round % 2 == 1 {
                let h = client.block_on(load(addr, hello.clone(), connections, seconds));
                (
                    h,
                    client.block_on(load(addr, paths.clone(), connections, seconds)),
                )
            } else {
                let o = client.block_on(load(addr, paths.clone(), connections, seconds));
                (
                    client.block_on(load(addr, hello.clone(), connections, seconds)),
                    o,
                )
            };
            hello_total += h.per_second;
            orders_total += o.per_second;
            ratios.push(o.per_second / h.per_second);
            println!(
                "  {name}, round {round}: hello {:.0} req/s (p50 {} µs, p99 {} µs, {} requests); \
                 orders {:.0} req/s (p50 {} µs, p99 {} µs, {} requests); ratio {:.1} %",
                h.per_second,
                h.p50_us,
                h.p99_us,
                h.requests,
                o.per_second,
                o.p50_us,
                o.p99_us,
                o.requests,
                100.0 * o.per_second / h.per_second
            );
        }
        let loads = stats.loads.load(Ordering::Relaxed) - loads_before;
        ratios.sort_by(f64::total_cmp);
        println!(
            "{name}: hello {:.0} req/s, GET order {:.0} req/s over {rounds} rounds: {:.1} % of hello \
             (median round {:.1} %; {} in-process hits, {} Redis hits, {loads} database loads)",
            hello_total / rounds as f64,
            orders_total / rounds as f64,
            100.0 * orders_total / hello_total,
            100.0 * ratios[ratios.len() / 2],
            stats.l1_hits.load(Ordering::Relaxed) - l1_before,
            stats.l2_hits.load(Ordering::Relaxed) - l2_before,
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

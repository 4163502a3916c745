//! Cache benchmark (prints its figures): L1 hit time, and L2 (Redis) hit latency percentiles at fixed
//! rates (20,000 and 50,000 gets/s; `BENCH_RATES` overrides) against a real redis-server started by the
//! test harness, and the hit ratio of Zipf(1.1) reads over 1M orders (`BENCH_ZIPF_ORDERS` overrides).
//!
//! It also drives L2 hits closed loop with 20 clients and, beside them, `redis-benchmark` with plain GETs at
//! the same concurrency against the same server: Redis's own floor on this machine.
//!
//! Run: `cargo bench -p orderflow-cache --bench cache`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark fails by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hdrhistogram::Histogram;
use orderflow_cache::{TieredCache, TieredSettings};
use orderflow_domain::{NewOrder, Order};

fn order() -> Order {
    let items: Vec<_> = (0..3)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i}"), "quantity": 1, "unit_price_minor": 100}))
        .collect();
    let doc = serde_json::json!({"customer_id": "c", "currency": "EUR", "items": items});
    Order::create(NewOrder::parse(&doc).expect("valid"), Utc::now())
}

fn loader(
    value: Order,
) -> impl Fn() -> std::future::Ready<Result<Option<Order>, std::io::Error>> + Clone + Send + Sync + 'static {
    move || std::future::ready(Ok(Some(value.clone())))
}

async fn l1_hit() {
    let cache = TieredCache::<Order>::new(
        None,
        TieredSettings {
            namespace: "order".into(),
            ..TieredSettings::default()
        },
    );
    let load = loader(order());
    cache.get_or_load("hot", load.clone()).await.expect("warm");
    let n = 1_000_000;
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(cache.get_or_load("hot", load.clone()).await.expect("hit"));
    }
    let per = started.elapsed() / n;
    println!("L1 hit: {per:?} per get ({n} gets, one task)");
}

async fn l2_hits_at_rate(redis_url: &str, rate: u64, seconds: u64) {
    let conn = redis::aio::ConnectionManager::new(redis::Client::open(redis_url).expect("client"))
        .await
        .expect("redis");
    let settings = TieredSettings {
        namespace: "order".into(),
        l1_capacity: None,
        beta: 0.0,
        ..TieredSettings::default()
    };
    let cache = TieredCache::<Order>::new(Some(conn.into()), settings);
    let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
    let value = order();
    for key in &keys {
        cache.refresh(key, &value).await;
    }
    let keys = Arc::new(keys);
    let new_histogram = || {
        Arc::new(std::sync::Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist"),
        ))
    };
    // From when each request was due (a stalled sender cannot hide queueing) and from when it started.
    let (histogram, service) = (new_histogram(), new_histogram());
    let total = rate * seconds;
    let batch = rate / 1000; // one batch per millisecond
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for tick in 0..(total / batch) {
        let due = started + Duration::from_millis(tick);
        tokio::time::sleep_until(due.into()).await;
        for j in 0..batch {
            let (cache, keys, load) = (cache.clone(), keys.clone(), loader(value.clone()));
            let (histogram, service) = (histogram.clone(), service.clone());
            tasks.push(tokio::spawn(async move {
                let key = &keys[((tick * batch + j) % keys.len() as u64) as usize];
                let begun = Instant::now();
                cache.get_or_load(key, load).await.expect("get");
                let (since_due, since_start) = (
                    due.elapsed().as_micros() as u64,
                    begun.elapsed().as_micros() as u64,
                );
                histogram
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(since_due.max(1))
                    .expect("record");
                service
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(since_start.max(1))
                    .expect("record");
            }));
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = started.elapsed();
    let h = histogram.lock().unwrap_or_else(|p| p.into_inner());
    let sv = service.lock().unwrap_or_else(|p| p.into_inner());
    let hits = cache.stats().l2_hits.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "L2 hit at {rate} gets/s for {seconds} s: achieved {:.0} gets/s; service p50 {} µs, p99 {} µs; \
         from due time p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs; {hits} L2 hits, {} loads",
        total as f64 / elapsed.as_secs_f64(),
        sv.value_at_quantile(0.50),
        sv.value_at_quantile(0.99),
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        cache.stats().loads.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// L2 hits the way `redis-benchmark -t get -c <clients>` drives Redis: `clients` tasks each issuing its next
/// get when the last is answered, `total` gets in all; then, when `redis-benchmark` is installed, the same
/// load of plain GETs by it against the same server, so the cache's figures sit beside Redis's own floor on
/// this machine.
async fn l2_hits_closed_loop(redis: &orderflow_testkit::RedisServer, clients: usize, total: usize) {
    let conn = redis::aio::ConnectionManager::new(redis::Client::open(redis.url()).expect("client"))
        .await
        .expect("redis");
    let settings = TieredSettings {
        namespace: "closed".into(),
        l1_capacity: None,
        beta: 0.0,
        ..TieredSettings::default()
    };
    let cache = TieredCache::<Order>::new(Some(conn.into()), settings);
    let keys: Arc<Vec<String>> = Arc::new((0..10_000).map(|i| format!("k{i}")).collect());
    let value = order();
    for key in keys.iter() {
        cache.refresh(key, &value).await;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (cache, keys, load) = (cache.clone(), keys.clone(), loader(value.clone()));
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
            for i in 0..total / clients {
                let key = &keys[(i * clients + c) % keys.len()];
                let begun = Instant::now();
                cache.get_or_load(key, load.clone()).await.expect("get");
                histogram
                    .record((begun.elapsed().as_micros() as u64).max(1))
                    .expect("record");
            }
            histogram
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
    for task in tasks {
        histogram.add(task.await.expect("task")).expect("merge");
    }
    let elapsed = started.elapsed();
    println!(
        "L2 hit, {clients} clients closed loop: {:.0} gets/s, p50 {} µs, p99 {} µs, max {} µs",
        total as f64 / elapsed.as_secs_f64(),
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
    let output = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &redis.port().to_string(),
            "-t",
            "get",
            "--csv",
        ])
        .args([
            "-c",
            &clients.to_string(),
            "-n",
            &total.to_string(),
            "-r",
            "10000",
        ])
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
            if let Some(row) = text.lines().find(|l| l.starts_with("\"GET\"")) {
                let f: Vec<&str> = row.split(',').map(|v| v.trim_matches('"')).collect();
                if f.len() >= 8 {
                    println!(
                        "redis-benchmark GET, same server, {clients} clients: {} gets/s, p50 {} ms, p99 {} ms, max {} ms",
                        f[1], f[4], f[6], f[7]
                    );
                }
            }
        }
        _ => println!("redis-benchmark not found: no floor to compare with"),
    }
}

/// Zipf(s) ranks over `n` keys by inverse CDF: hand-written because it is a binary search over a table, and
/// the workspace has no distributions crate.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += (k as f64).powf(-s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut impl rand::Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Hit ratio of Zipf(1.1) reads over `n` orders, with the cache filled the way Orderflow fills it (every
/// write goes through the cache), and for comparison filled by reads alone (cache-aside), whose ratio is
/// bounded by first reads of never-read orders.
async fn zipf_hit_ratio(redis_url: &str, n: usize, warmup: u64, measured: u64) {
    let zipf = Arc::new(Zipf::new(n, 1.1));
    let value = order();
    for write_through in [true, false] {
        let conn = redis::aio::ConnectionManager::new(redis::Client::open(redis_url).expect("client"))
            .await
            .expect("redis");
        let settings = TieredSettings {
            namespace: format!("zipf{}", u8::from(write_through)),
            l1_capacity: Some(100_000),
            l1_ttl: Duration::from_secs(2),
            ttl: Duration::from_secs(3600),
            ..TieredSettings::default()
        };
        let cache = TieredCache::<Order>::new(Some(conn.into()), settings);
        let started = Instant::now();
        if write_through {
            let workers = 64;
            let mut tasks = Vec::new();
            for w in 0..workers {
                let (cache, value) = (cache.clone(), value.clone());
                tasks.push(tokio::spawn(async move {
                    for k in (w..n).step_by(workers) {
                        cache.refresh(&format!("o{k}"), &value).await;
                    }
                }));
            }
            for task in tasks {
                task.await.expect("fill");
            }
        }
        let filled = started.elapsed();
        let run = |count: u64| {
            let (cache, zipf, value) = (cache.clone(), zipf.clone(), value.clone());
            async move {
                let workers = 16;
                let mut tasks = Vec::new();
                for _ in 0..workers {
                    let (cache, zipf, value) = (cache.clone(), zipf.clone(), value.clone());
                    let seed = rand::random::<u64>();
                    tasks.push(tokio::spawn(async move {
                        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
                        for _ in 0..count / workers {
                            let key = format!("o{}", zipf.sample(&mut rng));
                            cache.get_or_load(&key, loader(value.clone())).await.expect("get");
                        }
                    }));
                }
                for task in tasks {
                    task.await.expect("reads");
                }
            }
        };
        run(warmup).await;
        let stats = cache.stats();
        let loads_before = stats.loads.load(std::sync::atomic::Ordering::Relaxed);
        let read_started = Instant::now();
        run(measured).await;
        let loads = stats.loads.load(std::sync::atomic::Ordering::Relaxed) - loads_before;
        println!(
            "Zipf(1.1) over {n} orders, {}: {:.3} % hits over {measured} reads after {warmup} warm-up reads \
             ({loads} loads; {:.0} reads/s; fill took {filled:?})",
            if write_through {
                "filled on write (as Orderflow runs)"
            } else {
                "filled on read only (cache-aside)"
            },
            100.0 * (1.0 - loads as f64 / measured as f64),
            measured as f64 / read_started.elapsed().as_secs_f64(),
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        l1_hit().await;
        let redis = orderflow_testkit::RedisServer::start().expect("redis-server");
        let rates: Vec<u64> = std::env::var("BENCH_RATES")
            .ok()
            .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![20_000, 50_000]);
        for rate in rates {
            l2_hits_at_rate(&redis.url(), rate, 5).await;
        }
        l2_hits_closed_loop(&redis, 20, 250_000).await;
        let orders = std::env::var("BENCH_ZIPF_ORDERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        zipf_hit_ratio(&redis.url(), orders, 1_000_000, 1_000_000).await;
    });
}

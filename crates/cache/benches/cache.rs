//! Cache benchmark (prints its figures): L1 hit time, and L2 (Redis) hit latency percentiles at fixed
//! rates (20,000 and 50,000 gets/s) against a real redis-server started by the test harness.
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        l1_hit().await;
        let redis = orderflow_testkit::RedisServer::start().expect("redis-server");
        for rate in [20_000, 50_000] {
            l2_hits_at_rate(&redis.url(), rate, 5).await;
        }
    });
}

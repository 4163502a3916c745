//! What the gateway costs: the same request sent straight to the API, to the API behind the gateway's
//! layers in the same process (`orderflow up`), and through a standalone gateway that forwards over HTTP
//! (`orderflow run --role gateway`). Rounds alternate between the three so that a noisy machine affects
//! each alike. Prints requests/s and latency percentiles per path, and the overhead against direct.
//!
//! `cargo bench -p orderflow-roles --bench gateway` (`GATEWAY_BENCH_SECS`, `GATEWAY_BENCH_CONNECTIONS`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench fails by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use orderflow_roles::{Platform, Role, Settings};
use tokio_util::sync::CancellationToken;

const KEY: &str = "bench-key-0123456789abcdef";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `connections` clients against `url` for `secs`; returns the latency histogram (µs).
async fn load(url: &str, connections: u64, secs: u64) -> Histogram<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, stop) = (url.to_owned(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = client.get(&url).header("x-api-key", KEY).send().await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.unwrap();
                histogram.record(started.elapsed().as_micros() as u64).unwrap();
            }
            histogram
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for task in tasks {
        total.add(task.await.unwrap()).unwrap();
    }
    total
}

#[tokio::main]
async fn main() {
    let secs = env_or("GATEWAY_BENCH_SECS", 5);
    let connections = env_or("GATEWAY_BENCH_CONNECTIONS", 16);
    let dir = std::env::temp_dir().join(format!("orderflow-gateway-bench-{}", std::process::id()));
    let mut settings = Settings {
        data_dir: Some(dir.clone()),
        ..Settings::default()
    };
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.gateway.api_keys.push(orderflow_gateway::ApiKeySettings {
        id: "bench".into(),
        key: Some(KEY.to_owned().into()),
        scopes: vec!["orders:read".into(), "orders:write".into()],
        requests_per_second: Some(1e9),
        burst: Some(u32::MAX),
        ..Default::default()
    });

    // Three doors: the orders role alone (the direct API), a second embedded platform with the gateway in
    // front of its API (as `up` runs it), and a standalone gateway forwarding to the direct API.
    let direct = Platform::start(settings.clone(), &[Role::Orders]).await.unwrap();
    let direct_url = format!("http://{}", direct.http_addr.unwrap());
    let mut guarded_settings = settings.clone();
    guarded_settings.data_dir = Some(dir.join("guarded"));
    let guarded = Platform::start(guarded_settings, &[Role::Gateway, Role::Orders])
        .await
        .unwrap();
    let guarded_url = format!("http://{}", guarded.http_addr.unwrap());
    let mut proxy_settings = settings.clone();
    proxy_settings.gateway.upstreams = vec![direct_url.clone()];
    let shutdown = CancellationToken::new();
    let proxy = orderflow_roles::gateway::start_proxy(&proxy_settings, None, shutdown.clone())
        .await
        .unwrap();
    let proxy_url = format!("http://{}", proxy.addr);
    tokio::spawn(proxy.serve);

    // One order in each store, read back again and again (a cache hit: the cheapest request, so the
    // gateway's share is as large as it gets).
    let client = reqwest::Client::new();
    let mut paths = Vec::new();
    for base in [&direct_url, &guarded_url] {
        let created: serde_json::Value = client
            .post(format!("{base}/v1/orders"))
            .header("x-api-key", KEY)
            .json(&serde_json::json!({"customer_id": "c-1", "currency": "EUR",
                "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 100}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        paths.push(format!("/v1/orders/{}", created["id"].as_str().unwrap()));
    }
    let targets = [
        ("direct to the API", format!("{direct_url}{}", paths[0])),
        ("gateway in process (up)", format!("{guarded_url}{}", paths[1])),
        (
            "standalone gateway (HTTP hop)",
            format!("{proxy_url}{}", paths[0]),
        ),
    ];
    for (_, url) in &targets {
        load(url, connections, 1).await; // warm-up
    }
    let mut results: Vec<(Histogram<u64>, f64)> = targets
        .iter()
        .map(|_| (Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(), 0.0))
        .collect();
    let rounds = 3;
    for _ in 0..rounds {
        for (i, (_, url)) in targets.iter().enumerate() {
            let histogram = load(url, connections, secs).await;
            results[i].1 += histogram.len() as f64 / secs as f64 / f64::from(rounds);
            results[i].0.add(histogram).unwrap();
        }
    }
    println!(
        "GET /v1/orders/{{id}} (cached), {connections} connections, {rounds} alternating rounds of {secs} s per path"
    );
    println!(
        "{:<32} {:>10} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "path", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "req/s vs dir", "p99 added µs"
    );
    let (direct_rate, direct_p99) = (results[0].1, results[0].0.value_at_quantile(0.99) as i64);
    for ((name, _), (histogram, rate)) in targets.iter().zip(&results) {
        let p99 = histogram.value_at_quantile(0.99) as i64;
        println!(
            "{name:<32} {rate:>10.0} {:>9} {p99:>9} {:>9} {:>11.1}% {:>12}",
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.999),
            (rate / direct_rate - 1.0) * 100.0,
            p99 - direct_p99,
        );
    }
    shutdown.cancel();
    guarded.stop().await.unwrap();
    direct.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

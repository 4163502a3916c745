//! `orderflow bench`: the pipeline benchmark.
//!
//! Starts every role in this process against the configured backends (the embedded default, or real
//! PostgreSQL, Kafka and Redis), drives `POST /v1/orders` over HTTP, and watches `order.state` (which the
//! projector publishes after it updated the read model) for each order's terminal state. It reports orders/s
//! accepted (201s), orders/s reaching a terminal state, and the end-to-end latency from the 201 to the
//! terminal state being visible, p50/p99/p99.9. Without `--rate` it runs flat out, then (unless
//! `--no-half`) again at half the terminal rate it measured, so both figures come from one run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use orderflow_events::{OrderState, topics};
use orderflow_roles::{Platform, Role, Settings};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::mpsc;

/// The statuses an order ends in.
const TERMINAL: [&str; 4] = ["ALLOCATED", "REJECTED", "PAYMENT_FAILED", "CANCELLED"];
/// How many products the bench stocks; order `n` buys product `n % PRODUCTS` (a catalogue, not one hot row).
const PRODUCTS: u64 = 1_000;

/// How to run the benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds of measured load per phase
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of unmeasured load first (warms caches, connections and the JIT of the broker)
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Concurrent HTTP connections
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Orders per second to offer (open loop); flat out when absent
    #[arg(long)]
    pub rate: Option<f64>,
    /// Skip the second phase at half the measured terminal rate
    #[arg(long)]
    pub no_half: bool,
    /// Seconds to wait after a phase for its orders to reach a terminal state
    #[arg(long, default_value_t = 60.0)]
    pub drain: f64,
}

/// Orders accepted and not yet seen terminal, with when their 201 arrived.
type Pending = Arc<Mutex<HashMap<String, Instant>>>;

/// What one phase measured.
struct Phase {
    offered: Option<f64>,
    accepted: u64,
    errors: u64,
    load_secs: f64,
    terminal: u64,
    terminal_secs: f64,
    latency: Histogram<u64>,
}

/// What the watcher counts for the phase under way.
struct Watch {
    pending: Pending,
    /// Terminal states seen before their order's 201 was recorded (lock after `pending`).
    early: Mutex<HashMap<String, Instant>>,
    latency: Mutex<Histogram<u64>>,
    terminal: AtomicU64,
    last_terminal: Mutex<Option<Instant>>,
}

impl Watch {
    /// Records an order answered 201 at `at`: pending, or done at once when its terminal state came first.
    fn accepted(&self, id: String, at: Instant) {
        let early = {
            let mut pending = lock(&self.pending);
            let early = lock(&self.early).remove(&id);
            if early.is_none() {
                pending.insert(id, at);
            }
            early
        };
        if let Some(seen) = early {
            self.terminal_seen(at, seen);
        }
    }

    /// Counts an order accepted at `accepted` whose terminal state was seen at `seen`.
    fn terminal_seen(&self, accepted: Instant, seen: Instant) {
        let micros = seen.saturating_duration_since(accepted).as_micros() as u64;
        let _ = lock(&self.latency).record(micros.max(1));
        self.terminal.fetch_add(1, Ordering::Relaxed);
        let mut last = lock(&self.last_terminal);
        *last = Some(last.map_or(seen, |l| l.max(seen)));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the benchmark and prints its figures.
pub async fn run(mut settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    if args.duration <= 0.0 || args.connections == 0 || args.rate.is_some_and(|r| r <= 0.0) {
        bail!("--duration, --connections and --rate must be positive");
    }
    settings.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    // The load goes through the gateway with a key of its own, unlimited so the pipeline is what is
    // measured.
    let key: String = (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect();
    settings.gateway.api_keys.push(orderflow_gateway::ApiKeySettings {
        id: "bench".into(),
        key: Some(key.clone().into()),
        scopes: vec!["orders:write".into(), "orders:read".into()],
        requests_per_second: Some(1e9),
        burst: Some(u32::MAX),
        ..Default::default()
    });
    let embedded = settings.kafka.cluster().is_none();
    let platform = Platform::start(settings.clone(), Role::ALL)
        .await
        .context("starting the platform")?;
    let base = format!(
        "http://{}",
        platform.http_addr.context("the orders role has no listener")?
    );
    let backends = platform.backends.clone();
    for n in 0..PRODUCTS {
        backends
            .store
            .put_product(&orderflow_store::Product {
                sku: format!("BENCH-{n:04}"),
                name: format!("bench product {n}"),
                price_minor: 1_000,
                stock: i32::MAX / 2,
            })
            .await
            .context("stocking the bench products")?;
    }

    let watch = Arc::new(Watch {
        pending: Arc::default(),
        early: Mutex::default(),
        latency: Mutex::new(histogram()?),
        terminal: AtomicU64::new(0),
        last_terminal: Mutex::new(None),
    });
    let stop_watching = start_watcher(&backends, watch.clone())?;

    println!(
        "orderflow bench: all roles in this process; database {}, kafka {}, redis {}; {} connections",
        backends.store.backend().name(),
        if embedded {
            "embedded mock cluster"
        } else {
            "real cluster"
        },
        if backends.redis.is_some() {
            "real"
        } else {
            "none (in process)"
        },
        args.connections
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", reqwest::header::HeaderValue::from_str(&key)?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .default_headers(headers)
        .build()?;
    if args.warmup > 0.0 {
        load(&client, &base, &args, None, args.warmup, &watch).await;
        drain(&watch, args.drain).await;
    }
    let first = measure(&client, &base, &args, args.rate, &watch).await?;
    report(&first);
    if args.rate.is_none() && !args.no_half {
        let half = (first.terminal as f64 / first.terminal_secs.max(f64::EPSILON)) / 2.0;
        let second = measure(&client, &base, &args, Some(half), &watch).await?;
        report(&second);
    }
    stop_watching.cancel();
    platform.stop().await.context("stopping the platform")?;
    Ok(())
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("latency histogram")
}

/// Runs one measured phase and waits for its orders to finish.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    args: &BenchArgs,
    rate: Option<f64>,
    watch: &Arc<Watch>,
) -> anyhow::Result<Phase> {
    // Orders of an earlier phase that never finished are not this phase's.
    lock(&watch.pending).clear();
    lock(&watch.early).clear();
    *lock(&watch.latency) = histogram()?;
    watch.terminal.store(0, Ordering::SeqCst);
    *lock(&watch.last_terminal) = None;
    let started = Instant::now();
    let (accepted, errors) = load(client, base, args, rate, args.duration, watch).await;
    let load_secs = started.elapsed().as_secs_f64();
    let left = drain(watch, args.drain).await;
    if left > 0 {
        eprintln!(
            "warning: {left} accepted orders did not reach a terminal state within {} s",
            args.drain
        );
    }
    let last = lock(&watch.last_terminal).unwrap_or(started);
    Ok(Phase {
        offered: rate,
        accepted,
        errors,
        load_secs,
        terminal: watch.terminal.load(Ordering::SeqCst),
        terminal_secs: last.duration_since(started).as_secs_f64(),
        latency: lock(&watch.latency).clone(),
    })
}

/// Waits until every accepted order was seen terminal or `secs` passed; answers how many are left.
async fn drain(watch: &Watch, secs: f64) -> usize {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let left = lock(&watch.pending).len();
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts orders for `secs`, flat out or at `rate` per second; answers (accepted, errors).
async fn load(
    client: &reqwest::Client,
    base: &str,
    args: &BenchArgs,
    rate: Option<f64>,
    secs: f64,
    watch: &Arc<Watch>,
) -> (u64, u64) {
    let started = tokio::time::Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let (client, url, watch, next) = (
            client.clone(),
            format!("{base}/v1/orders"),
            watch.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            let (mut accepted, mut errors) = (0u64, 0u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if let Some(rate) = rate {
                    // Open loop: order n is due at n / rate, whatever happened to the ones before.
                    let due = started + Duration::from_secs_f64(n as f64 / rate);
                    if due >= until {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                } else if tokio::time::Instant::now() >= until {
                    break;
                }
                let body = format!(
                    r#"{{"customer_id":"c-{}","currency":"EUR","items":[{{"sku":"BENCH-{:04}","quantity":1,"unit_price_minor":1000}}]}}"#,
                    n % 10_000,
                    n % PRODUCTS
                );
                match post(&client, &url, body).await {
                    Some((id, at)) => {
                        watch.accepted(id, at);
                        accepted += 1;
                    }
                    None => errors += 1,
                }
            }
            (accepted, errors)
        });
    }
    let (mut accepted, mut errors) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        if let Ok((a, e)) = done {
            accepted += a;
            errors += e;
        }
    }
    (accepted, errors)
}

/// Posts one order; answers its id and when the 201 arrived.
async fn post(client: &reqwest::Client, url: &str, body: String) -> Option<(String, Instant)> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if response.status().as_u16() != 201 {
        return None;
    }
    let at = Instant::now();
    let created: serde_json::Value = response.json().await.ok()?;
    created["id"].as_str().map(|id| (id.to_owned(), at))
}

/// Consumes `order.state` on a thread of its own and records every pending order that turns terminal.
fn start_watcher(
    backends: &orderflow_roles::Backends,
    watch: Arc<Watch>,
) -> anyhow::Result<tokio_util::sync::CancellationToken> {
    let bus = &backends.bus;
    let group = bus.group(&format!("orderflow-bench-{}", std::process::id()));
    let consumer: BaseConsumer = bus
        .consumer_config("orderflow-bench", &group)
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "5")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the order.state watcher")?;
    consumer
        .subscribe(&[&bus.topic(topics::ORDER_STATE)])
        .context("subscribing to order.state")?;
    // Wait for the assignment, so the first orders' states are not missed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        if Instant::now() >= deadline {
            bail!("the order.state watcher got no partitions within 30 s");
        }
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            tracing::warn!(error = %e, "order.state watcher");
        }
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, Instant)>();
    let stopped = stop.clone();
    std::thread::spawn(move || {
        while !stopped.is_cancelled() {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50))
                && tx
                    .send((message.payload().unwrap_or_default().to_vec(), Instant::now()))
                    .is_err()
            {
                break;
            }
        }
    });
    let codec = backends.codec.clone();
    tokio::spawn(async move {
        while let Some((payload, seen)) = rx.recv().await {
            let Ok(state) = codec.decode::<OrderState>(&payload).await else {
                continue;
            };
            if !TERMINAL.contains(&state.status.as_str()) {
                continue;
            }
            let accepted = {
                let mut pending = lock(&watch.pending);
                let accepted = pending.remove(&state.order_id);
                if accepted.is_none() {
                    // Its 201 may not be recorded yet: keep the sighting for it.
                    lock(&watch.early).insert(state.order_id.clone(), seen);
                }
                accepted
            };
            if let Some(accepted) = accepted {
                watch.terminal_seen(accepted, seen);
            }
        }
    });
    Ok(stop)
}

fn report(phase: &Phase) {
    let ms = |q: f64| phase.latency.value_at_quantile(q) as f64 / 1000.0;
    let offered = phase
        .offered
        .map_or("flat out".to_owned(), |r| format!("{r:.0} orders/s offered"));
    println!("phase: {offered}");
    println!(
        "  accepted   {:>9.0} orders/s  ({} in {:.1} s, {} errors)",
        phase.accepted as f64 / phase.load_secs,
        phase.accepted,
        phase.load_secs,
        phase.errors
    );
    println!(
        "  terminal   {:>9.0} orders/s  ({} in {:.1} s)",
        phase.terminal as f64 / phase.terminal_secs.max(f64::EPSILON),
        phase.terminal,
        phase.terminal_secs
    );
    println!(
        "  end to end p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        phase.latency.max() as f64 / 1000.0
    );
}

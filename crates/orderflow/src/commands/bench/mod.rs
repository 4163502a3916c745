//! `orderflow bench`: the pipeline benchmark.
//!
//! Starts every role in this process against the configured backends (the embedded default, or real
//! PostgreSQL, Kafka and Redis), drives `POST /v1/orders` over HTTP, and watches `order.state` (which the
//! projector publishes after it updated the read model) for each order's terminal state. It reports orders/s
//! accepted (201s), orders/s reaching a terminal state, and the end-to-end latency from the 201 to the
//! terminal state being visible, p50/p99/p99.9. Without `--rate` it runs flat out, then (unless
//! `--no-half`) again at half the terminal rate it measured and at a trickle of 20 orders/s, so every figure
//! comes from one run. Each phase also reports the machine's CPU time per order and the records each order
//! cost the event log; [`hops`] breaks the latency down per stage from the records' timestamps.
//!
//! Then it measures the machine's ceilings on the same servers ([`ceilings`]: database inserts, Kafka
//! produce and consume, Redis, a hello-world route) and shows the pipeline as a share of each; `--report`
//! writes all of it as Markdown.

mod ceilings;
mod hops;
mod resources;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use orderflow_events::{OrderState, topics};
use orderflow_roles::{Platform, Role, Settings};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::mpsc;

use ceilings::Ceiling;
use hops::{Hops, Step};

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
    /// Orders per second of the trickle phase (latency of a nearly idle pipeline); 0 skips it
    #[arg(long, default_value_t = 20.0)]
    pub trickle: f64,
    /// Seconds each ceiling is measured for; 0 skips the ceilings
    #[arg(long, default_value_t = 5.0)]
    pub ceiling_secs: f64,
    /// Also write the results as Markdown to this file
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
}

/// Orders accepted and not yet seen terminal, with when their 201 arrived.
type Pending = Arc<Mutex<HashMap<String, Instant>>>;

/// What one phase measured.
struct Phase {
    name: &'static str,
    offered: Option<f64>,
    accepted: u64,
    errors: u64,
    load_secs: f64,
    terminal: u64,
    terminal_secs: f64,
    latency: Histogram<u64>,
    /// CPU seconds the whole machine spent per terminal order.
    cpu_per_order: Option<f64>,
    /// Records produced and fetched through the event log per terminal order (every client of the process).
    records_out_per_order: f64,
    records_in_per_order: f64,
    hops: Vec<(&'static str, u64, u64, u64)>,
}

/// What the watcher counts for the phase under way.
struct Watch {
    pending: Pending,
    /// Terminal states seen before their order's 201 was recorded (lock after `pending`).
    early: Mutex<HashMap<String, Instant>>,
    latency: Mutex<Histogram<u64>>,
    terminal: AtomicU64,
    last_terminal: Mutex<Option<Instant>>,
    hops: Mutex<Hops>,
}

impl Watch {
    /// Records an order answered 201 at `at`: pending, or done at once when its terminal state came first.
    fn accepted(&self, id: String, at: Instant) {
        lock(&self.hops).accepted(&id, chrono::Utc::now().timestamp_millis());
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
    if args.duration <= 0.0
        || args.connections == 0
        || args.rate.is_some_and(|r| r <= 0.0)
        || args.trickle < 0.0
        || args.ceiling_secs < 0.0
    {
        bail!(
            "--duration, --connections and --rate must be positive; --trickle and --ceiling-secs not negative"
        );
    }
    // The pipeline runs as in production, metrics recorder included.
    orderflow_api::metrics::install()?;
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
        hops: Mutex::new(Hops::new()?),
    });
    let stop_watching = start_watcher(&backends, watch.clone())?;

    let setup = Setup {
        database: backends.store.backend().name(),
        kafka: if embedded {
            "embedded mock cluster".into()
        } else {
            format!("real cluster ({})", backends.bus.bootstrap_servers())
        },
        redis: if backends.redis.is_some() {
            "real"
        } else {
            "none (in process)"
        },
        durability: ceilings::database_durability(&backends.store)
            .await
            .unwrap_or_else(|e| format!("unknown ({e})")),
        producer: "idempotent, acks=all".into(),
        connections: args.connections,
        cores: resources::cores(),
    };
    println!(
        "orderflow bench: all roles in this process; database {}, kafka {}, redis {}; {} connections",
        setup.database, setup.kafka, setup.redis, setup.connections
    );
    println!("  durability: {}; producers {}", setup.durability, setup.producer);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", reqwest::header::HeaderValue::from_str(&key)?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .default_headers(headers)
        .build()?;
    let driver = Driver {
        client: &client,
        base: &base,
        args: &args,
        watch: &watch,
    };
    if args.warmup > 0.0 {
        let bar = progress("warm-up", args.warmup);
        driver.load(None, args.warmup).await;
        bar.finish_and_clear();
        drain(&watch, args.drain).await;
    }
    let mut phases = Vec::new();
    let first = driver.measure("flat out", args.rate, args.duration).await?;
    report(&first);
    let flat_out = first.terminal as f64 / first.terminal_secs.max(f64::EPSILON);
    phases.push(first);
    if args.rate.is_none() && !args.no_half {
        let half = driver
            .measure("half load", Some(flat_out / 2.0), args.duration)
            .await?;
        report(&half);
        phases.push(half);
        if args.trickle > 0.0 {
            let secs = args.duration.min(15.0);
            let trickle = driver.measure("trickle", Some(args.trickle), secs).await?;
            report(&trickle);
            phases.push(trickle);
        }
    }
    // The pipeline's peak, before the ceilings (the mock cluster keeps their records in this process).
    let peak_rss = resources::peak_rss_bytes();
    let mut measured = Vec::new();
    if args.ceiling_secs > 0.0 {
        measured = measure_ceilings(&backends, &client, &args).await;
        print_ceilings(&measured, flat_out);
    }
    if let Some(bytes) = peak_rss {
        println!("peak RSS of this process: {:.0} MB", bytes as f64 / 1e6);
    }
    if let Some(path) = &args.report {
        let text = markdown(&setup, &phases, &measured, flat_out, peak_rss);
        std::fs::write(path, text).with_context(|| format!("writing the report to {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    stop_watching.cancel();
    platform.stop().await.context("stopping the platform")?;
    Ok(())
}

/// What the pipeline ran on.
struct Setup {
    database: &'static str,
    kafka: String,
    redis: &'static str,
    durability: String,
    producer: String,
    connections: usize,
    cores: usize,
}

/// A progress bar over `secs` seconds (drawn only on a terminal).
fn progress(label: &str, secs: f64) -> ProgressBar {
    let bar = ProgressBar::new((secs * 10.0).ceil() as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {elapsed:>4} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    let ticker = bar.clone();
    tokio::spawn(async move {
        while !ticker.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ticker.inc(1);
        }
    });
    bar
}

/// Every ceiling this deployment has; a ceiling that fails is reported and skipped.
async fn measure_ceilings(
    backends: &orderflow_roles::Backends,
    client: &reqwest::Client,
    args: &BenchArgs,
) -> Vec<Ceiling> {
    let secs = args.ceiling_secs;
    let mut measured = Vec::new();
    let bar = progress("ceilings", secs * 4.0 + 2.0);
    bar.set_message("database");
    match ceilings::database(&backends.store, secs).await {
        Ok(c) => measured.push(c),
        Err(e) => eprintln!("warning: database ceiling: {e:#}"),
    }
    bar.set_message("kafka");
    match ceilings::kafka(&backends.bus, secs).await {
        Ok(c) => measured.extend(c),
        Err(e) => eprintln!("warning: kafka ceiling: {e:#}"),
    }
    if let Some(redis) = &backends.redis {
        bar.set_message("redis");
        match ceilings::redis(redis, &backends.key_prefix, secs).await {
            Ok(c) => measured.push(c),
            Err(e) => eprintln!("warning: redis ceiling: {e:#}"),
        }
    }
    bar.set_message("http");
    match ceilings::http(client, args.connections, secs).await {
        Ok(c) => measured.push(c),
        Err(e) => eprintln!("warning: http ceiling: {e:#}"),
    }
    bar.finish_and_clear();
    measured
}

/// How many of a ceiling's units one order needs, for the ratios: one order insert, the records the phase
/// measured per order, one request.
fn units_per_order(ceiling: &Ceiling, phase: Option<&Phase>) -> Option<f64> {
    match ceiling.unit {
        "orders" | "requests" => Some(1.0),
        "records" if ceiling.name.contains("produce") => phase.map(|p| p.records_out_per_order),
        "records" => phase.map(|p| p.records_in_per_order),
        _ => None,
    }
}

fn print_ceilings(measured: &[Ceiling], flat_out: f64) {
    println!("ceilings of this machine (same run, same servers):");
    for c in measured {
        println!(
            "  {:<45} {:>10.0} {}/s   pipeline flat out = {:.1} % of it (per order, {})",
            c.name,
            c.per_sec,
            c.unit,
            100.0 * flat_out / c.per_sec.max(f64::EPSILON),
            c.how
        );
    }
}

/// The whole run as Markdown.
fn markdown(
    setup: &Setup,
    phases: &[Phase],
    measured: &[Ceiling],
    flat_out: f64,
    peak_rss: Option<u64>,
) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# orderflow bench
"
    );
    let _ = writeln!(
        md,
        "All roles in one process on {} cores. Database: {} ({}). Kafka: {} (producers {}). Redis: {}. {} HTTP connections.
",
        setup.cores, setup.database, setup.durability, setup.kafka, setup.producer, setup.redis, setup.connections
    );
    let _ = writeln!(
        md,
        "## Pipeline
"
    );
    let _ = writeln!(
        md,
        "| phase | offered | accepted/s | terminal/s | p50 ms | p99 ms | p99.9 ms | CPU per order | records out / in per order |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for p in phases {
        let ms = |q: f64| p.latency.value_at_quantile(q) as f64 / 1000.0;
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {:.1} / {:.1} |",
            p.name,
            p.offered.map_or("flat out".to_owned(), |r| format!("{r:.0}/s")),
            p.accepted as f64 / p.load_secs,
            p.terminal as f64 / p.terminal_secs.max(f64::EPSILON),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            p.cpu_per_order
                .map_or("n/a".into(), |s| format!("{:.0} µs", s * 1e6)),
            p.records_out_per_order,
            p.records_in_per_order
        );
    }
    if let Some(bytes) = peak_rss {
        let _ = writeln!(
            md,
            "\nPeak RSS of the process while the pipeline ran: {:.0} MB.",
            bytes as f64 / 1e6
        );
    }
    let _ = writeln!(
        md,
        "
## Stage latencies (record timestamps, ms)
"
    );
    let _ = writeln!(
        md,
        "| hop | {} |",
        phases
            .iter()
            .map(|p| format!("{} p50 / p99", p.name))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|---|{}", "---|".repeat(phases.len()));
    for (i, hop) in hops::HOPS.iter().enumerate() {
        let cells: Vec<String> = phases
            .iter()
            .map(|p| {
                p.hops
                    .get(i)
                    .map_or("n/a".into(), |(_, p50, p99, n)| format!("{p50} / {p99} ({n})"))
            })
            .collect();
        let _ = writeln!(md, "| {hop} | {} |", cells.join(" | "));
    }
    if !measured.is_empty() {
        let first = phases.first();
        let _ = writeln!(
            md,
            "
## Ceilings of this machine (same run, same servers)
"
        );
        let _ = writeln!(
            md,
            "| ceiling | rate | how | per order | pipeline flat out uses |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for c in measured {
            let per_order = units_per_order(c, first);
            let share = per_order.map_or("n/a".into(), |u| {
                format!("{:.1} %", 100.0 * flat_out * u / c.per_sec.max(f64::EPSILON))
            });
            let _ = writeln!(
                md,
                "| {} | {:.0} {}/s | {} | {} | {} |",
                c.name,
                c.per_sec,
                c.unit,
                c.how,
                per_order.map_or("n/a".into(), |u| format!("{u:.1} {}", c.unit)),
                share
            );
        }
    }
    md
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("latency histogram")
}

/// Drives the load of every phase: the client, the API's address, the arguments and the watcher.
struct Driver<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    args: &'a BenchArgs,
    watch: &'a Arc<Watch>,
}

impl Driver<'_> {
    /// Runs one measured phase of `secs` and waits for its orders to finish.
    async fn measure(&self, name: &'static str, rate: Option<f64>, secs: f64) -> anyhow::Result<Phase> {
        let (args, watch) = (self.args, self.watch);
        // Orders of an earlier phase that never finished are not this phase's.
        lock(&watch.pending).clear();
        lock(&watch.early).clear();
        *lock(&watch.latency) = histogram()?;
        watch.terminal.store(0, Ordering::SeqCst);
        *lock(&watch.last_terminal) = None;
        *lock(&watch.hops) = Hops::new()?;
        let records = || {
            orderflow_api::metrics::snapshot().map_or((0.0, 0.0), |text| {
                (
                    resources::metric_sum(&text, "orderflow_kafka_tx_messages_total"),
                    resources::metric_sum(&text, "orderflow_kafka_rx_messages_total"),
                )
            })
        };
        let (cpu_before, records_before) = (resources::machine_busy_secs(), records());
        let bar = progress(name, secs);
        let started = Instant::now();
        let (accepted, errors) = self.load(rate, secs).await;
        let load_secs = started.elapsed().as_secs_f64();
        bar.set_message("draining");
        let left = drain(watch, args.drain).await;
        bar.finish_and_clear();
        // librdkafka reports its counters every 5 s: let the last report of the phase arrive.
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        let (cpu_after, records_after) = (resources::machine_busy_secs(), records());
        let terminal = watch.terminal.load(Ordering::SeqCst);
        let per_order = |total: f64| total / terminal.max(1) as f64;
        if left > 0 {
            eprintln!(
                "warning: {left} accepted orders did not reach a terminal state within {} s",
                args.drain
            );
        }
        let last = lock(&watch.last_terminal).unwrap_or(started);
        Ok(Phase {
            name,
            offered: rate,
            accepted,
            errors,
            load_secs,
            terminal,
            terminal_secs: last.duration_since(started).as_secs_f64(),
            latency: lock(&watch.latency).clone(),
            cpu_per_order: cpu_before
                .zip(cpu_after)
                .map(|(before, after)| per_order(after - before)),
            records_out_per_order: per_order(records_after.0 - records_before.0),
            records_in_per_order: per_order(records_after.1 - records_before.1),
            hops: lock(&watch.hops).summary(),
        })
    }

    /// Posts orders for `secs`, flat out or at `rate` per second; answers (accepted, errors).
    async fn load(&self, rate: Option<f64>, secs: f64) -> (u64, u64) {
        let (client, base, args, watch) = (self.client, self.base, self.args, self.watch);
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

/// Consumes `order.state` (and, for the stage latencies, every lifecycle topic) on a thread of its own and
/// records every pending order that turns terminal.
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
    let state_topic = bus.topic(topics::ORDER_STATE);
    let steps: Vec<(String, Step)> = [
        (topics::ORDER_CREATED, Step::Created),
        (topics::PAYMENT_RECEIVED, Step::Payment),
        (topics::PAYMENT_FAILED, Step::Payment),
        (topics::ORDER_ENRICHED, Step::Enriched),
        (topics::INVENTORY_ALLOCATED, Step::Inventory),
        (topics::INVENTORY_REJECTED, Step::Inventory),
    ]
    .into_iter()
    .map(|(topic, step)| (bus.topic(topic), step))
    .collect();
    let mut subscription: Vec<&str> = steps.iter().map(|(t, _)| t.as_str()).collect();
    subscription.push(&state_topic);
    consumer
        .subscribe(&subscription)
        .context("subscribing to the lifecycle topics")?;
    // Wait for the assignment, so the first orders' states are not missed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        if Instant::now() >= deadline {
            bail!("the order.state watcher got no partitions within 30 s");
        }
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            tracing::warn!(error = &e as &dyn std::error::Error, "order.state watcher");
        }
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, i64, Instant)>();
    let stopped = stop.clone();
    let hops_watch = watch.clone();
    std::thread::spawn(move || {
        while !stopped.is_cancelled() {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let ms = message.timestamp().to_millis().unwrap_or_default();
            if message.topic() == state_topic {
                let payload = message.payload().unwrap_or_default().to_vec();
                if tx.send((payload, ms, Instant::now())).is_err() {
                    break;
                }
            } else if let Some((_, step)) = steps.iter().find(|(t, _)| t == message.topic())
                && let Some(Ok(order)) = message.key().map(std::str::from_utf8)
            {
                lock(&hops_watch.hops).seen(*step, order, ms);
            }
        }
    });
    let codec = backends.codec.clone();
    tokio::spawn(async move {
        while let Some((payload, ms, seen)) = rx.recv().await {
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
                lock(&watch.hops).terminal(&state.order_id, ms);
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
    println!("phase {}: {offered}", phase.name);
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
    if let Some(cpu) = phase.cpu_per_order {
        println!(
            "  CPU per order {:.0} µs (whole machine); records per order {:.1} produced, {:.1} fetched",
            cpu * 1e6,
            phase.records_out_per_order,
            phase.records_in_per_order
        );
    }
    for (hop, p50, p99, n) in &phase.hops {
        println!("    {hop:<50} p50 {p50:>5} ms  p99 {p99:>5} ms  ({n} orders)");
    }
}

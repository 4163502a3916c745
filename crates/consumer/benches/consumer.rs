//! Consumer runtime benchmark (prints its figures) on the real single-node broker, redis-server and
//! PostgreSQL started by the test harness, all sharing this machine:
//! - Kafka -> Kafka: copy records inside Kafka transactions (outputs + offsets per transaction);
//! - Kafka -> Redis: one dedup-checked script per record (`RedisEffects`), pipelined per batch;
//! - Kafka -> PostgreSQL: dedup rows and effect rows per batch in one transaction (`DbEffects`);
//! - added latency: records produced at a fixed rate, time from send to the handler seeing them;
//! - tracing: the transactional copy without a trace subscriber, then with a span per record exported.
//!
//! Run: `cargo bench -p orderflow-consumer --bench consumer` (`BENCH_RECORDS` sets the records per run).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a benchmark fails by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use orderflow_bus::topics::Cleanup;
use orderflow_bus::{Bus, KafkaSettings};
use orderflow_consumer::effects::{
    DbEffects, DbHandler, Grouping, RedisEffect, RedisEffects, RedisHandler, db_error,
};
use orderflow_consumer::{
    ConsumerRuntime, ConsumerSettings, Delivery, Handler, HandlerError, Output, Record,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use sqlx::{Postgres, Transaction};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 6;

fn bus() -> Bus {
    Bus::connect(KafkaSettings {
        bootstrap_servers: Some(orderflow_testkit::kafka().bootstrap_servers()),
        topic_prefix: format!("{}.", orderflow_testkit::unique("bench")),
        partitions: Some(PARTITIONS),
        consumer: std::env::var("BENCH_CONSUMER")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        ..KafkaSettings::default()
    })
    .unwrap()
}

async fn topic(bus: &Bus, base: &str) -> String {
    let name = bus.topic(base);
    bus.ensure_topics(&[(name.clone(), Cleanup::Delete { days: 1 })])
        .await
        .unwrap();
    name
}

/// Produces `n` records of about 100 bytes over `keys` keys, as fast as the producer goes.
async fn preload(bus: &Bus, topic: &str, n: usize, keys: usize) {
    let producer = bus.producer("bench-preload").unwrap();
    let body = "x".repeat(90);
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("order-{}", i % keys);
        let payload = format!("{i:08}{body}");
        let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn settings(bus: &Bus, topic: &str, delivery: Delivery) -> ConsumerSettings {
    let mut s = ConsumerSettings::new(bus.topic("bench-group"), vec![topic.to_owned()], delivery);
    s.instance_id = Some("bench".into());
    s.max_batch = 2_000;
    s.concurrency = PARTITIONS as usize;
    s.high_water = 20_000;
    s.low_water = 5_000;
    s
}

/// Runs `runtime` until it has processed `n` records; returns records per second from the first record on.
async fn throughput<H: Handler>(runtime: ConsumerRuntime<H>, n: u64) -> f64 {
    let runtime = Arc::new(runtime);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        async move { runtime.run(shutdown).await }
    });
    let stats = runtime.stats().clone();
    while stats.processed() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let first = stats.processed();
    while stats.processed() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    (n - first) as f64 / elapsed.as_secs_f64()
}

struct Copy(String);

impl Handler for Copy {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        Ok(batch
            .iter()
            .map(|r| Output {
                topic: self.0.clone(),
                key: r.key.clone(),
                payload: r.payload.clone().unwrap_or_default(),
                headers: Vec::new(),
            })
            .collect())
    }
}

struct Count;

impl RedisHandler for Count {
    fn effect(&self, record: &Record) -> Result<Option<RedisEffect>, HandlerError> {
        let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
        Ok(Some(RedisEffect {
            keys: vec![format!("{{{key}}}:records")],
            args: vec![],
        }))
    }
}

struct Ledger;

impl DbHandler<Postgres> for Ledger {
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        let ids: Vec<String> = records.iter().map(|r| r.event_id()).collect();
        let keys: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
            .collect();
        sqlx::query("INSERT INTO ledger (event_id, key) SELECT * FROM unnest($1::text[], $2::text[])")
            .bind(&ids)
            .bind(&keys)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

/// Records, per record, the time from send (micros in the payload) and from the broker's append (the
/// topic uses LogAppendTime) to the handler.
struct Latency {
    from_send: std::sync::Mutex<Histogram<u64>>,
    from_append: std::sync::Mutex<Histogram<u64>>,
    recording: AtomicBool,
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

impl Handler for Latency {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let now = now_micros();
        if self.recording.load(Ordering::Relaxed) {
            let mut from_send = self.from_send.lock().unwrap();
            let mut from_append = self.from_append.lock().unwrap();
            for r in batch {
                let sent: u64 = std::str::from_utf8(r.payload.as_deref().unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(now);
                from_send.record(now.saturating_sub(sent)).unwrap();
                // The append time has millisecond resolution, truncated: this errs on the high side.
                let appended = r.timestamp_ms.unwrap_or_default().max(0) as u64 * 1_000;
                from_append.record(now.saturating_sub(appended)).unwrap();
            }
        }
        Ok(Vec::new())
    }
}

async fn added_latency(rate: u64, seconds: u64) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let bus = bus();
    let input = bus.topic("latency");
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        bus.client_config("bench-admin").create().unwrap();
    admin
        .create_topics(
            &[NewTopic::new(&input, PARTITIONS, TopicReplication::Fixed(1))
                .set("message.timestamp.type", "LogAppendTime")],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap();
    let histogram = || std::sync::Mutex::new(Histogram::new(3).unwrap());
    let handler = Latency {
        from_send: histogram(),
        from_append: histogram(),
        recording: AtomicBool::new(false),
    };
    let mut s = settings(&bus, &input, Delivery::AtLeastOnce);
    s.max_batch = 500;
    let runtime = Arc::new(ConsumerRuntime::new(bus.clone(), s, handler));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        async move { runtime.run(shutdown).await }
    });
    while runtime.stats().assigned() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let producer: rdkafka::producer::FutureProducer = bus
        .producer_config("bench-latency")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let acks = Arc::new(histogram());
    let interval = Duration::from_secs(1) / rate as u32;
    let total = rate * (seconds + 1);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        let warm = i >= rate; // after a one-second warm-up
        if i == rate {
            runtime.handler().recording.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep_until(start + interval * i as u32).await;
        let sent = now_micros();
        let payload = sent.to_string();
        let key = format!("k{}", i % 1_000);
        if let Ok(delivery) = producer.send_result(FutureRecord::to(&input).key(&key).payload(&payload)) {
            let acks = acks.clone();
            tokio::spawn(async move {
                if delivery.await.is_ok_and(|r| r.is_ok()) && warm {
                    acks.lock().unwrap().record(now_micros() - sent).unwrap();
                }
            });
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let line = |what: &str, h: &Histogram<u64>| {
        println!(
            "  {what}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms ({} records)",
            ms(h, 0.5),
            ms(h, 0.99),
            ms(h, 0.999),
            h.len()
        );
    };
    println!("latency at {rate} records/s for {seconds} s:");
    line(
        "consumer added (broker append -> handler)",
        &runtime.handler().from_append.lock().unwrap(),
    );
    line("producer send -> broker ack", &acks.lock().unwrap());
    line(
        "end to end (producer send -> handler)",
        &runtime.handler().from_send.lock().unwrap(),
    );
}

/// Kafka -> Redis: a counter per key behind the dedup check, records grouped into script calls by `grouping`.
async fn redis_throughput(n: usize, keys: usize, grouping: Grouping) -> f64 {
    let bus = bus();
    let input = topic(&bus, "redis-in").await;
    preload(&bus, &input, n, keys).await;
    let client = redis::Client::open(orderflow_testkit::redis().url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let effects = RedisEffects::new(
        conn,
        "bench",
        "redis.call('INCR', keys[1])",
        Duration::from_secs(3600),
        Count,
    )
    .grouping(grouping);
    let runtime = ConsumerRuntime::new(
        bus.clone(),
        settings(&bus, &input, Delivery::AtLeastOnce),
        effects,
    );
    throughput(runtime, n as u64).await
}

/// Lets the broker and Redis finish the previous phase's background work (log flushes, lazy frees) so each
/// phase is measured on its own.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    runtime.block_on(async {
        // Keys stand for entities (orders); `BENCH_KEYS` changes how many.
        let keys: usize = std::env::var("BENCH_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        println!("{n} records of ~100 bytes, {PARTITIONS} partitions, {keys} keys; servers share the 2 cores");
        if run("kafka") {
            let bus = bus();
            let input = topic(&bus, "tx-in").await;
            let output = topic(&bus, "tx-out").await;
            preload(&bus, &input, n, keys).await;
            let rt = ConsumerRuntime::new(
                bus.clone(),
                settings(&bus, &input, Delivery::Transactional),
                Copy(output),
            );
            let rate = throughput(rt, n as u64).await;
            println!("Kafka -> Kafka (transactional copy): {rate:.0} records/s");
        }
        if run("tracing") {
            // The cost of observability on the hot path: the same transactional copy with the metrics
            // recorder installed, first with no trace subscriber (spans are disabled), then with every
            // per-record span exported through OpenTelemetry's batch processor (to memory).
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap();
            let bus = bus();
            let plain_in = topic(&bus, "plain-in").await;
            let traced_in = topic(&bus, "traced-in").await;
            let output = topic(&bus, "traced-out").await;
            preload(&bus, &plain_in, n, keys).await;
            preload(&bus, &traced_in, n, keys).await;
            let mut plain = settings(&bus, &plain_in, Delivery::Transactional);
            plain.group = bus.topic("bench-plain");
            let rt = ConsumerRuntime::new(bus.clone(), plain, Copy(output.clone()));
            let untraced = throughput(rt, n as u64).await;
            println!("Kafka -> Kafka, metrics on, no trace subscriber: {untraced:.0} records/s");
            let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
            let provider = orderflow_telemetry::provider(exporter.clone(), "bench", 1.0);
            {
                use tracing_subscriber::layer::SubscriberExt as _;
                let subscriber = tracing_subscriber::registry().with(orderflow_telemetry::otel_layer(&provider));
                tracing::subscriber::set_global_default(subscriber).unwrap();
            }
            let mut traced = settings(&bus, &traced_in, Delivery::Transactional);
            traced.group = bus.topic("bench-traced");
            let rt = ConsumerRuntime::new(bus.clone(), traced, Copy(output));
            let with_spans = throughput(rt, n as u64).await;
            let _ = provider.force_flush();
            let spans = exporter.get_finished_spans().map(|s| s.len()).unwrap_or_default();
            println!(
                "Kafka -> Kafka, metrics on, a span per record exported: {with_spans:.0} records/s \
                 ({:+.1} %, {spans} spans exported)",
                (with_spans / untraced - 1.0) * 100.0
            );
        }
        if run("redis") {
            settle().await;
            let rate = redis_throughput(n, keys, Grouping::SingleServer(1_000)).await;
            let client = redis::Client::open(orderflow_testkit::redis().url()).unwrap();
            let mut conn = redis::aio::ConnectionManager::new(client).await.unwrap();
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .unwrap();
            let shown = ["evalsha", "sadd", "incr", "expire"];
            for line in stats.lines().filter(|l| {
                shown
                    .iter()
                    .any(|c| l.starts_with(&format!("cmdstat_{c}:")))
            }) {
                println!("  redis {line}");
            }
            println!("Kafka -> Redis (dedup check + effect per event, up to 1,000 events per script call): {rate:.0} events/s");
        }
        if run("redis-cluster-safe") {
            settle().await;
            let rate = redis_throughput(n, keys, Grouping::PerHashTag).await;
            println!("Kafka -> Redis (dedup check + effect per event, one script call per hash tag: Cluster-safe grouping): {rate:.0} events/s");
        }
        if run("postgres") {
            settle().await;
            let bus = bus();
            let input = topic(&bus, "pg-in").await;
            preload(&bus, &input, n, keys).await;
            let url = orderflow_testkit::postgres().fresh_database().unwrap();
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(PARTITIONS as u32)
                .connect(&url)
                .await
                .unwrap();
            sqlx::query("CREATE TABLE ledger (event_id TEXT NOT NULL, key TEXT NOT NULL)")
                .execute(&pool)
                .await
                .unwrap();
            let effects = DbEffects::new(pool, "bench", Ledger);
            effects.ensure_schema().await.unwrap();
            let rt = ConsumerRuntime::new(
                bus.clone(),
                settings(&bus, &input, Delivery::AtLeastOnce),
                effects,
            );
            let rate = throughput(rt, n as u64).await;
            println!("Kafka -> PostgreSQL (dedup row + effect row per event, one transaction per batch): {rate:.0} events/s");
        }
        if run("latency") {
            settle().await;
            added_latency(10_000, 10).await;
        }
    });
}

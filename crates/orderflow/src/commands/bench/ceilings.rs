//! The machine's ceilings, measured in the same run as the pipeline on the same servers: what the database,
//! the event log, Redis and the HTTP stack each do on their own, flat out, with the settings the pipeline
//! uses. The report shows every pipeline figure as a ratio of these.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use orderflow_bus::Bus;
use orderflow_bus::topics::Cleanup;
use orderflow_redis::RedisConnection;
use orderflow_store::Store;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

/// Orders per transaction in the database ceiling (the group commit's batches are this size under load).
const DB_BATCH: usize = 100;
/// Concurrent transactions in the database ceiling.
const DB_WORKERS: usize = 4;
/// Body of a record in the Kafka ceiling: about an `order.created` of one line.
const RECORD_BYTES: usize = 200;
/// Records in flight in the Kafka ceiling's producer.
const KAFKA_IN_FLIGHT: usize = 20_000;

/// One ceiling: how many units per second, of what.
#[derive(Debug, Clone)]
pub struct Ceiling {
    /// What was measured.
    pub name: &'static str,
    /// Units per second.
    pub per_sec: f64,
    /// The unit (`orders`, `records`, `requests`, `ops`).
    pub unit: &'static str,
    /// How it was measured.
    pub how: String,
}

/// The durability the database runs with, as it reports it.
pub async fn database_durability(store: &Store) -> anyhow::Result<String> {
    Ok(match store {
        Store::Postgres(pg) => {
            let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(pg.pool()).await?;
            let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(pg.pool())
                .await?;
            let pages: String = sqlx::query_scalar("SHOW full_page_writes")
                .fetch_one(pg.pool())
                .await?;
            format!("PostgreSQL fsync={fsync}, synchronous_commit={sync}, full_page_writes={pages}")
        }
        Store::Sqlite(sqlite) => {
            let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(sqlite.pool())
                .await?;
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(sqlite.pool())
                .await?;
            let sync = match sync {
                0 => "OFF",
                1 => "NORMAL",
                2 => "FULL",
                _ => "EXTRA",
            };
            format!("SQLite journal_mode={journal}, synchronous={sync}")
        }
    })
}

/// Inserts batches of orders (one line each) with their outbox rows into scratch tables shaped like the
/// real ones, one transaction per batch, [`DB_WORKERS`] at once, for `secs`. The scratch tables are
/// dropped afterwards; the real tables and the relay never see these rows.
pub async fn database(store: &Store, secs: f64) -> anyhow::Result<Ceiling> {
    let payload = vec![7u8; RECORD_BYTES];
    macro_rules! run {
        ($pool:expr, $db:ty, $ddl:expr) => {{
            let pool = $pool.clone();
            for statement in $ddl {
                sqlx::query(statement).execute(&pool).await.context("creating the scratch tables")?;
            }
            let done = Arc::new(AtomicU64::new(0));
            let until = Instant::now() + Duration::from_secs_f64(secs);
            let started = Instant::now();
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..DB_WORKERS {
                let (pool, done, payload) = (pool.clone(), done.clone(), payload.clone());
                workers.spawn(async move {
                    while Instant::now() < until {
                        let now = chrono::Utc::now();
                        let ids: Vec<uuid::Uuid> = (0..DB_BATCH).map(|_| uuid::Uuid::now_v7()).collect();
                        let mut tx = pool.begin().await?;
                        let mut orders = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO bench_ceiling_orders (id, customer_id, currency, status, version, total_minor, created_at, updated_at) ",
                        );
                        orders.push_values(&ids, |mut row, id| {
                            row.push_bind(*id).push_bind("c-1").push_bind("EUR").push_bind("CREATED")
                                .push_bind(1i64).push_bind(1_000i64).push_bind(now).push_bind(now);
                        });
                        orders.build().execute(&mut *tx).await?;
                        let mut items = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO bench_ceiling_items (order_id, line_no, sku, quantity, unit_price_minor) ",
                        );
                        items.push_values(&ids, |mut row, id| {
                            row.push_bind(*id).push_bind(0i32).push_bind("BENCH-0001").push_bind(1i32).push_bind(1_000i64);
                        });
                        items.build().execute(&mut *tx).await?;
                        let mut outbox = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO bench_ceiling_outbox (event_id, topic, msg_key, event_type, payload, headers, created_at) ",
                        );
                        outbox.push_values(&ids, |mut row, id| {
                            row.push_bind(uuid::Uuid::now_v7()).push_bind("order.created").push_bind(id.to_string())
                                .push_bind("order.created").push_bind(payload.as_slice()).push_bind("[]").push_bind(now);
                        });
                        outbox.build().execute(&mut *tx).await?;
                        tx.commit().await?;
                        done.fetch_add(DB_BATCH as u64, Ordering::Relaxed);
                    }
                    Ok::<(), sqlx::Error>(())
                });
            }
            let mut failure = None;
            while let Some(result) = workers.join_next().await {
                if let Ok(Err(e)) = result {
                    failure.get_or_insert(e);
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            for table in ["bench_ceiling_orders", "bench_ceiling_items", "bench_ceiling_outbox"] {
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(&pool).await?;
            }
            if let Some(e) = failure {
                return Err(e).context("the database ceiling");
            }
            done.load(Ordering::Relaxed) as f64 / elapsed
        }};
    }
    let per_sec = match store {
        Store::Postgres(pg) => run!(
            pg.pool(),
            sqlx::Postgres,
            [
                "CREATE TABLE IF NOT EXISTS bench_ceiling_orders (id UUID PRIMARY KEY, customer_id TEXT NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL, version BIGINT NOT NULL, total_minor BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)",
                "CREATE TABLE IF NOT EXISTS bench_ceiling_items (order_id UUID NOT NULL, line_no INT NOT NULL, sku TEXT NOT NULL, quantity INT NOT NULL, unit_price_minor BIGINT NOT NULL, PRIMARY KEY (order_id, line_no))",
                "CREATE TABLE IF NOT EXISTS bench_ceiling_outbox (id BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL UNIQUE, topic TEXT NOT NULL, msg_key TEXT NOT NULL, event_type TEXT NOT NULL, payload BYTEA NOT NULL, headers TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)",
            ]
        ),
        Store::Sqlite(sqlite) => run!(
            sqlite.pool(),
            sqlx::Sqlite,
            [
                "CREATE TABLE IF NOT EXISTS bench_ceiling_orders (id BLOB PRIMARY KEY, customer_id TEXT NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL, total_minor INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS bench_ceiling_items (order_id BLOB NOT NULL, line_no INTEGER NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL, unit_price_minor INTEGER NOT NULL, PRIMARY KEY (order_id, line_no))",
                "CREATE TABLE IF NOT EXISTS bench_ceiling_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id BLOB NOT NULL UNIQUE, topic TEXT NOT NULL, msg_key TEXT NOT NULL, event_type TEXT NOT NULL, payload BLOB NOT NULL, headers TEXT NOT NULL, created_at TEXT NOT NULL)",
            ]
        ),
    };
    Ok(Ceiling {
        name: "database: order + line + outbox inserts",
        per_sec,
        unit: "orders",
        how: format!(
            "{DB_WORKERS} connections, {DB_BATCH} orders per transaction, scratch tables shaped like the real ones"
        ),
    })
}

/// Produces records of [`RECORD_BYTES`] with the relay's producer settings (idempotent, `acks=all`) for
/// `secs`, then reads them back with the consumers' settings (`read_committed`); answers both rates.
pub async fn kafka(bus: &Bus, secs: f64) -> anyhow::Result<[Ceiling; 2]> {
    let topic = bus.topic(&format!("bench.ceiling.{}", std::process::id()));
    bus.ensure_topics(&[(topic.clone(), Cleanup::Delete { days: 1 })])
        .await
        .context("creating the ceiling topic")?;
    let producer = bus.producer("orderflow-bench-ceiling")?;
    let payload = vec![7u8; RECORD_BYTES];
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let (mut sent, mut acked, mut failed) = (0u64, 0u64, 0u64);
    while Instant::now() < until {
        while in_flight.len() < KAFKA_IN_FLIGHT && Instant::now() < until {
            let key = uuid::Uuid::now_v7().to_string();
            match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&payload)) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    sent += 1;
                }
                Err(_) => break, // the local queue is full: wait for acknowledgements
            }
        }
        match in_flight.next().await {
            Some(Ok(Ok(_))) => acked += 1,
            Some(_) => failed += 1,
            None => tokio::task::yield_now().await,
        }
    }
    while let Some(delivery) = in_flight.next().await {
        match delivery {
            Ok(Ok(_)) => acked += 1,
            _ => failed += 1,
        }
    }
    let produce_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {sent} ceiling records were not acknowledged"
    );

    let consumer: BaseConsumer = bus
        .consumer_config("orderflow-bench-ceiling", &bus.group("orderflow-bench-ceiling"))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the ceiling consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .context("reading the ceiling topic's partitions")?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(&topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let read = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(secs * 4.0 + 30.0);
        let mut read = 0u64;
        while read < acked && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                std::hint::black_box(message.payload());
                read += 1;
            }
        }
        (read, started.elapsed().as_secs_f64())
    })
    .await?;
    let (read, consume_secs) = read;
    Ok([
        Ceiling {
            name: "kafka: produce (idempotent, acks=all, lz4)",
            per_sec: acked as f64 / produce_secs,
            unit: "records",
            how: format!("{acked} records of {RECORD_BYTES} B, up to {KAFKA_IN_FLIGHT} in flight"),
        },
        Ceiling {
            name: "kafka: consume (read_committed)",
            per_sec: read as f64 / consume_secs.max(f64::EPSILON),
            unit: "records",
            how: format!("{read} records by one consumer"),
        },
    ])
}

/// Pipelined `SET` and `GET` of order-sized values from 4 tasks for `secs`.
pub async fn redis(connection: &RedisConnection, prefix: &str, secs: f64) -> anyhow::Result<Ceiling> {
    const PIPELINE: usize = 100;
    const TASKS: usize = 4;
    let value = vec![7u8; RECORD_BYTES];
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (mut connection, done, value) = (connection.clone(), done.clone(), value.clone());
        let prefix = format!("{prefix}bench:ceiling:{task}:");
        tasks.spawn(async move {
            let mut round = 0u64;
            while Instant::now() < until {
                let mut pipe = redis::pipe();
                for i in 0..PIPELINE {
                    let key = format!("{prefix}{}", (round as usize * PIPELINE + i) % 10_000);
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(value.as_slice())
                        .arg("EX")
                        .arg(60)
                        .ignore();
                    pipe.cmd("GET").arg(&key).ignore();
                }
                let () = pipe.query_async(&mut connection).await?;
                done.fetch_add(2 * PIPELINE as u64, Ordering::Relaxed);
                round += 1;
            }
            Ok::<(), redis::RedisError>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result?.context("the redis ceiling")?;
    }
    Ok(Ceiling {
        name: "redis: SET + GET, pipelined",
        per_sec: done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        unit: "ops",
        how: format!("{TASKS} tasks, pipelines of {PIPELINE} SET and {PIPELINE} GET of {RECORD_BYTES} B"),
    })
}

/// A hello-world route on the same stack as the API (axum, hyper, the same listener code), driven by the
/// same client and connections as the order load.
pub async fn http(client: &reqwest::Client, connections: usize, secs: f64) -> anyhow::Result<Ceiling> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(orderflow_api::serve(
        listener,
        app,
        stop.clone().cancelled_owned(),
    ));
    let url = format!("http://{addr}/hello");
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        tasks.spawn(async move {
            while Instant::now() < until {
                if let Ok(response) = client.get(&url).send().await
                    && response.status().is_success()
                    && response.bytes().await.is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let per_sec = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;
    Ok(Ceiling {
        name: "http: hello-world route, same stack",
        per_sec,
        unit: "requests",
        how: format!("{connections} connections"),
    })
}

//! The consumer runtime on the real Kafka broker from the harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use orderflow_consumer::routing::headers;
use orderflow_consumer::{
    ConsumerRuntime, ConsumerSettings, Delivery, Handler, HandlerError, Output, Record, RetryPolicy,
};
use support::*;
use tokio_util::sync::CancellationToken;

/// Remembers every record it saw, in order, and fails the ones its rule says.
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<Record>>,
    calls: AtomicU32,
    fail: Option<fn(&Record, u32) -> Option<HandlerError>>,
    output_topic: Option<String>,
    delay: Duration,
}

impl Handler for Recorder {
    async fn handle(&self, batch: &[Record]) -> Result<Vec<Output>, HandlerError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(rule) = self.fail {
            for record in batch {
                if let Some(error) = rule(record, call) {
                    return Err(error);
                }
            }
        }
        self.seen.lock().unwrap().extend(batch.iter().cloned());
        Ok(match &self.output_topic {
            Some(topic) => batch
                .iter()
                .map(|r| {
                    Output::new(
                        topic.clone(),
                        r.key.clone().unwrap_or_default(),
                        r.payload.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            None => Vec::new(),
        })
    }
}

impl Recorder {
    fn payloads(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
            .collect()
    }
}

/// The dead-letter topic of `topic` for `runtime`'s group.
fn dlq_of<H: Handler>(runtime: &ConsumerRuntime<H>, topic: &str) -> String {
    orderflow_consumer::routing::dlq_topic(topic, &runtime.settings().routing_name)
}

/// Retry topic `level` of `topic` for `runtime`'s group.
fn retry_of<H: Handler>(runtime: &ConsumerRuntime<H>, topic: &str, level: usize) -> String {
    orderflow_consumer::routing::retry_topic(topic, &runtime.settings().routing_name, level)
}

fn settings(bus: &Bench, topic: &str, delivery: Delivery) -> ConsumerSettings {
    let mut settings = ConsumerSettings::new(bus.name("group"), vec![topic.to_owned()], delivery);
    settings.retry = RetryPolicy {
        in_place_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        topic_delays: vec![Duration::from_millis(200), Duration::from_millis(400)],
    };
    settings.drain_timeout = Duration::from_secs(5);
    // A watchful stall watchdog: a partition it wrongly took for starved would restart the runtime.
    settings.stall_timeout = Duration::from_secs(3);
    settings
}

/// Runs `runtime` on a task of its own; returns the task and its shutdown switch.
fn start<H: Handler>(
    runtime: &Arc<ConsumerRuntime<H>>,
) -> (
    tokio::task::JoinHandle<Result<(), orderflow_consumer::ConsumerError>>,
    CancellationToken,
) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        async move { runtime.run(shutdown).await }
    });
    (task, shutdown)
}

/// A runtime for `handler` on `topic` with the test settings.
fn runtime_for<H: Handler>(
    bench: &Bench,
    topic: &str,
    delivery: Delivery,
    handler: H,
) -> Arc<ConsumerRuntime<H>> {
    Arc::new(ConsumerRuntime::new(
        bench.bus.clone(),
        settings(bench, topic, delivery),
        handler,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_handled_in_partition_order_and_its_offset_committed() {
    let bench = Bench::new(3).await;
    let topic = bench.topic("in").await;
    let sent = bench.produce_numbered(&topic, 3_000, 30).await;

    let runtime = runtime_for(&bench, &topic, Delivery::AtLeastOnce, Recorder::default());
    let (running, shutdown) = start(&runtime);
    let handler = runtime.handler().clone();
    wait_for(Duration::from_secs(60), || handler.payloads().len() >= sent.len()).await;
    shutdown.cancel();
    running.await.unwrap().expect("clean stop");

    // Per key, records arrive in the order they were produced.
    let mut per_key: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
    for record in handler.seen.lock().unwrap().iter() {
        let n: u64 = String::from_utf8_lossy(record.payload.as_deref().unwrap())
            .parse()
            .unwrap();
        per_key.entry(record.key.clone().unwrap()).or_default().push(n);
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), sent.len());
    for numbers in per_key.values() {
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "order kept per key");
    }
    // Committed offsets reach the end of every partition.
    let committed = bench.committed(&runtime.settings().group, &topic).await;
    let ends = bench.ends(&topic).await;
    assert_eq!(committed, ends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_dead_lettered_with_its_origin_while_the_partition_proceeds() {
    let bench = Bench::new(1).await;
    let topic = bench.topic("poison").await;
    bench
        .produce(&topic, &[("k", "1"), ("k", "poison"), ("k", "3")])
        .await;
    let recorder = Recorder {
        fail: Some(|r, _| {
            (r.payload.as_deref() == Some(b"poison")).then(|| HandlerError::permanent("cannot decode"))
        }),
        ..Recorder::default()
    };
    let runtime = runtime_for(&bench, &topic, Delivery::AtLeastOnce, recorder);
    let (running, shutdown) = start(&runtime);
    let handler = runtime.handler().clone();
    wait_for(Duration::from_secs(60), || handler.payloads().len() >= 2).await;
    let dead = bench.read(&dlq_of(&runtime, &topic), 1).await;
    shutdown.cancel();
    running.await.unwrap().expect("clean stop");

    assert_eq!(handler.payloads(), vec!["1", "3"]);
    assert_eq!(dead.len(), 1);
    let h = &dead[0].headers;
    assert_eq!(dead[0].payload, b"poison");
    assert_eq!(dead[0].key, "k");
    assert_eq!(h[headers::ORIGINAL_TOPIC], topic);
    assert_eq!(h[headers::ORIGINAL_PARTITION], "0");
    assert_eq!(h[headers::ORIGINAL_OFFSET], "1");
    assert!(h[headers::ORIGINAL_TIMESTAMP].parse::<i64>().unwrap() > 0);
    assert_eq!(h[headers::CONSUMER_GROUP], runtime.settings().group);
    assert_eq!(h[headers::ERROR_KIND], "permanent");
    assert_eq!(h[headers::ERROR_MESSAGE], "cannot decode");
    assert_eq!(h[headers::ATTEMPTS], "1");
    let committed = bench.committed(&runtime.settings().group, &topic).await;
    assert_eq!(committed, BTreeMap::from([(0, 3)]));
}

static FLAKY_FAILURES: AtomicU32 = AtomicU32::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_that_clears_is_retried_in_place_and_succeeds() {
    let bench = Bench::new(1).await;
    let topic = bench.topic("flaky").await;
    bench
        .produce(&topic, &[("k", "1"), ("k", "flaky"), ("k", "3")])
        .await;
    let recorder = Recorder {
        fail: Some(|r, _| {
            (r.payload.as_deref() == Some(b"flaky") && FLAKY_FAILURES.fetch_add(1, Ordering::SeqCst) < 2)
                .then(|| HandlerError::transient("database busy"))
        }),
        ..Recorder::default()
    };
    let runtime = runtime_for(&bench, &topic, Delivery::AtLeastOnce, recorder);
    let (task, shutdown) = start(&runtime);
    let handler = runtime.handler().clone();
    wait_for(Duration::from_secs(60), || handler.payloads().len() >= 3).await;
    shutdown.cancel();
    task.await.unwrap().expect("clean stop");
    assert_eq!(handler.payloads(), vec!["1", "flaky", "3"]);
    // Nothing left the partition: no retry topic or dead-letter record was needed.
    assert_eq!(bench.ends(&retry_of(&runtime, &topic, 1)).await[&0], 0);
    assert_eq!(bench.ends(&dlq_of(&runtime, &topic)).await[&0], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_that_does_not_clear_climbs_the_retry_topics_into_the_dead_letters() {
    let bench = Bench::new(1).await;
    let topic = bench.topic("stuck").await;
    bench
        .produce(&topic, &[("k", "1"), ("k", "stuck"), ("k", "3")])
        .await;
    let recorder = Recorder {
        fail: Some(|r, _| {
            (r.payload.as_deref() == Some(b"stuck")).then(|| HandlerError::transient("timeout"))
        }),
        ..Recorder::default()
    };
    let runtime = runtime_for(&bench, &topic, Delivery::AtLeastOnce, recorder);
    let (task, shutdown) = start(&runtime);
    let dead = bench.read(&dlq_of(&runtime, &topic), 1).await;
    let handler = runtime.handler().clone();
    shutdown.cancel();
    task.await.unwrap().expect("clean stop");

    assert_eq!(handler.payloads(), vec!["1", "3"], "the partition went on");
    assert_eq!(bench.ends(&retry_of(&runtime, &topic, 1)).await[&0], 1);
    assert_eq!(bench.ends(&retry_of(&runtime, &topic, 2)).await[&0], 1);
    assert_eq!(dead.len(), 1);
    let h = &dead[0].headers;
    assert_eq!(h[headers::ORIGINAL_TOPIC], topic);
    assert_eq!(h[headers::ORIGINAL_OFFSET], "1");
    assert_eq!(h[headers::ERROR_KIND], "transient");
    // Three attempts in place on the topic and on each of the two retry topics.
    assert_eq!(h[headers::ATTEMPTS], "9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_outputs_appear_exactly_once_and_a_restart_reprocesses_nothing() {
    let bench = Bench::new(3).await;
    let input = bench.topic("tx-in").await;
    let output = bench.topic("tx-out").await;
    let sent = bench.produce_numbered(&input, 2_000, 50).await;
    let make = || {
        let mut s = settings(&bench, &input, Delivery::Transactional);
        s.instance_id = Some("a".into());
        Arc::new(ConsumerRuntime::new(
            bench.bus.clone(),
            s,
            Recorder {
                output_topic: Some(output.clone()),
                ..Recorder::default()
            },
        ))
    };
    let runtime = make();
    let (task, shutdown) = start(&runtime);
    let handler = runtime.handler().clone();
    wait_for(Duration::from_secs(60), || handler.payloads().len() >= sent.len()).await;
    shutdown.cancel();
    task.await.unwrap().expect("clean stop");
    let committed = bench.committed(&runtime.settings().group, &input).await;
    assert_eq!(committed, bench.ends(&input).await);

    // A second run of the same group finds nothing left to do.
    let again = make();
    let (task, shutdown) = start(&again);
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    task.await.unwrap().expect("clean stop");
    assert!(again.handler().payloads().is_empty());

    // Reading for one more than expected shows there is no duplicate.
    let out = bench
        .read_for(&output, sent.len() + 1, Duration::from_secs(5))
        .await;
    let mut got: Vec<String> = out
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    got.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(got, want, "each output exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_an_aborted_transaction_are_never_handled() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let bench = Bench::new(1).await;
    let topic = bench.topic("aborted").await;
    let producer: FutureProducer = bench
        .bus
        .producer_config("aborting")
        .set("transactional.id", bench.name("aborting"))
        .create()
        .unwrap();
    let p = Arc::new(producer);
    let (tp, t) = (p.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        tp.init_transactions(Duration::from_secs(30)).unwrap();
        tp.begin_transaction().unwrap();
        for i in 0..10 {
            let payload = format!("aborted-{i}");
            let _ = tp.send_result(FutureRecord::to(&t).key("k").payload(&payload));
        }
        tp.flush(Duration::from_secs(10)).unwrap();
        tp.abort_transaction(Duration::from_secs(30)).unwrap();
        tp.begin_transaction().unwrap();
        for i in 0..5 {
            let payload = format!("committed-{i}");
            let _ = tp.send_result(FutureRecord::to(&t).key("k").payload(&payload));
        }
        tp.commit_transaction(Duration::from_secs(30)).unwrap();
    })
    .await
    .unwrap();

    let runtime = runtime_for(&bench, &topic, Delivery::AtLeastOnce, Recorder::default());
    let (task, shutdown) = start(&runtime);
    let handler = runtime.handler().clone();
    wait_for(Duration::from_secs(60), || handler.payloads().len() >= 5).await;
    // Give any aborted record time to show up, had it been delivered, and the stall watchdog time to look
    // with fresh measurements: the partition ends past the last record handled (aborted records and
    // transaction markers), yet nothing is owed to this member.
    tokio::time::sleep(Duration::from_secs(14)).await;
    shutdown.cancel();
    task.await.unwrap().expect("clean stop");
    let payloads = handler.payloads();
    assert_eq!(payloads.len(), 5, "{payloads:?}");
    assert!(payloads.iter().all(|p| p.starts_with("committed-")));
    assert_eq!(runtime.stats().stalls(), 0, "not taken for starved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_with_the_same_transactional_id_is_fenced_and_outputs_stay_exactly_once() {
    let bench = Bench::new(2).await;
    let input = bench.topic("zombie-in").await;
    let output = bench.topic("zombie-out").await;
    let make = || {
        let mut s = settings(&bench, &input, Delivery::Transactional);
        s.instance_id = Some("same".into());
        // Input partitions only (no retry topics), so after the successor joins each member holds one of them
        // and the zombie has work that makes it meet the fence.
        s.retry.topic_delays.clear();
        Arc::new(ConsumerRuntime::new(
            bench.bus.clone(),
            s,
            Recorder {
                output_topic: Some(output.clone()),
                ..Recorder::default()
            },
        ))
    };
    let first_batch = bench.produce_numbered(&input, 500, 10).await;
    let zombie = make();
    let (zombie_task, _zombie_stop) = start(&zombie);
    let zh = zombie.handler().clone();
    wait_for(Duration::from_secs(60), || {
        zh.payloads().len() >= first_batch.len()
    })
    .await;

    let successor = make();
    let (task, shutdown) = start(&successor);
    // Keep input flowing so the zombie tries to commit again.
    let mut sent = first_batch.clone();
    for round in 0..5 {
        let more: Vec<(String, String)> = (0..100)
            .map(|i| (format!("k{i}"), format!("{}", 10_000 + round * 100 + i)))
            .collect();
        let refs: Vec<(&str, &str)> = more.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        bench.produce(&input, &refs).await;
        sent.extend(more.into_iter().map(|(_, v)| v));
    }
    let stopped = tokio::time::timeout(Duration::from_secs(60), zombie_task)
        .await
        .expect("the zombie stops")
        .unwrap();
    assert!(
        matches!(stopped, Err(orderflow_consumer::ConsumerError::Fenced(_))),
        "{stopped:?}"
    );

    let out = bench.read(&output, sent.len()).await;
    shutdown.cancel();
    task.await.unwrap().expect("clean stop");
    let mut got: Vec<String> = out
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "each output exactly once");
}

mod effects {
    use super::*;
    use orderflow_consumer::effects::{
        DEDUP_RETENTION, DbEffects, DbHandler, RedisEffect, RedisEffects, RedisHandler, db_error,
    };
    use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

    /// Appends one row per applied record, with no constraint: a duplicate effect would show as two rows.
    /// `delay` is how long each batch takes besides.
    #[derive(Default)]
    struct Ledger {
        delay: Duration,
    }

    impl DbHandler<Postgres> for Ledger {
        async fn apply(
            &self,
            tx: &mut Transaction<'static, Postgres>,
            records: &[&Record],
        ) -> Result<(), HandlerError> {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let ids: Vec<String> = records.iter().map(|r| r.event_id()).collect();
            sqlx::query("INSERT INTO ledger (event_id) SELECT unnest($1::text[])")
                .bind(&ids)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            Ok(())
        }
    }

    impl DbHandler<Sqlite> for Ledger {
        async fn apply(
            &self,
            tx: &mut Transaction<'static, Sqlite>,
            records: &[&Record],
        ) -> Result<(), HandlerError> {
            for record in records {
                sqlx::query("INSERT INTO ledger (event_id) VALUES (?)")
                    .bind(record.event_id())
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
            }
            Ok(())
        }
    }

    async fn pg_ledger() -> PgPool {
        let url = orderflow_testkit::postgres().fresh_database().expect("database");
        let pool = PgPool::connect(&url).await.expect("connect");
        sqlx::query("CREATE TABLE ledger (event_id TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    async fn pg_counts(pool: &PgPool) -> (i64, i64) {
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM ledger")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// Moves the group's committed offsets back to the start of every partition.
    async fn rewind(bench: &Bench, group: &str, topic: &str) {
        let consumer: rdkafka::consumer::BaseConsumer =
            bench.bus.consumer_config("rewinder", group).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..bench.bus.settings().partitions() {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(0))
                .unwrap();
        }
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::Consumer;
            consumer
                .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                .unwrap();
        })
        .await
        .unwrap();
    }

    async fn run_until_processed<H: Handler>(runtime: &Arc<ConsumerRuntime<H>>, n: u64) {
        let (task, shutdown) = start(runtime);
        let stats = runtime.stats().clone();
        wait_for(Duration::from_secs(60), || stats.processed() >= n).await;
        shutdown.cancel();
        task.await.unwrap().expect("clean stop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_effects_are_applied_once_even_after_a_forced_rewind() {
        let bench = Bench::new(3).await;
        let topic = bench.topic("db").await;
        let sent = bench.produce_numbered(&topic, 1_500, 20).await;
        let pool = pg_ledger().await;
        let make = || {
            let s = settings(&bench, &topic, Delivery::AtLeastOnce);
            let effects = DbEffects::new(pool.clone(), s.group.clone(), Ledger::default());
            (s, effects)
        };
        let (s, effects) = make();
        effects.ensure_schema().await.unwrap();
        let group = s.group.clone();
        let first = Arc::new(ConsumerRuntime::new(bench.bus.clone(), s, effects));
        run_until_processed(&first, sent.len() as u64).await;
        assert_eq!(pg_counts(&pool).await, (1_500, 1_500));

        rewind(&bench, &group, &topic).await;
        let (s, effects) = make();
        let second = Arc::new(ConsumerRuntime::new(bench.bus.clone(), s, effects));
        run_until_processed(&second, sent.len() as u64).await;
        assert_eq!(
            pg_counts(&pool).await,
            (1_500, 1_500),
            "re-delivered records changed nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_effects_are_applied_once_even_after_a_forced_rewind() {
        let bench = Bench::new(2).await;
        let topic = bench.topic("sqlite").await;
        let sent = bench.produce_numbered(&topic, 600, 10).await;
        let dir = std::env::temp_dir().join(orderflow_testkit::unique("ledger"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("ledger.db").display());
        let pool = SqlitePool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE ledger (event_id TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let counts = |pool: SqlitePool| async move {
            sqlx::query_as::<_, (i64, i64)>("SELECT count(*), count(DISTINCT event_id) FROM ledger")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        let make = || {
            let s = settings(&bench, &topic, Delivery::AtLeastOnce);
            let effects = DbEffects::new(pool.clone(), s.group.clone(), Ledger::default());
            (s, effects)
        };
        let (s, effects) = make();
        effects.ensure_schema().await.unwrap();
        let group = s.group.clone();
        let first = Arc::new(ConsumerRuntime::new(bench.bus.clone(), s, effects));
        run_until_processed(&first, sent.len() as u64).await;
        assert_eq!(counts(pool.clone()).await, (600, 600));
        rewind(&bench, &group, &topic).await;
        let (s, effects) = make();
        let second = Arc::new(ConsumerRuntime::new(bench.bus.clone(), s, effects));
        run_until_processed(&second, sent.len() as u64).await;
        assert_eq!(counts(pool.clone()).await, (600, 600));
    }

    /// Dedup rows older than the retention go, the consumer's recent ones and other consumers' stay.
    #[tokio::test]
    async fn expired_dedup_rows_are_pruned_on_both_backends() {
        let pg = pg_ledger().await;
        let effects = DbEffects::new(pg.clone(), "pruned", Ledger::default());
        effects.ensure_schema().await.unwrap();
        sqlx::query(
            "INSERT INTO consumer_dedup (consumer, event_id, applied_at) VALUES \
             ('pruned', 'old', now() - interval '40 days'), ('pruned', 'new', now()), \
             ('other', 'old', now() - interval '40 days')",
        )
        .execute(&pg)
        .await
        .unwrap();
        assert_eq!(effects.pruner().prune(DEDUP_RETENTION).await.unwrap(), 1);
        let left: Vec<(String, String)> =
            sqlx::query_as("SELECT consumer, event_id FROM consumer_dedup ORDER BY consumer, event_id")
                .fetch_all(&pg)
                .await
                .unwrap();
        assert_eq!(
            left,
            [("other".into(), "old".into()), ("pruned".into(), "new".into())]
        );

        let dir = std::env::temp_dir().join(orderflow_testkit::unique("dedup"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("dedup.db").display());
        let lite = SqlitePool::connect(&url).await.unwrap();
        let effects = DbEffects::new(lite.clone(), "pruned", Ledger::default());
        effects.ensure_schema().await.unwrap();
        sqlx::query(
            "INSERT INTO consumer_dedup (consumer, event_id, applied_at) VALUES \
             ('pruned', 'old', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days')), \
             ('pruned', 'new', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), \
             ('other', 'old', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days'))",
        )
        .execute(&lite)
        .await
        .unwrap();
        assert_eq!(effects.pruner().prune(DEDUP_RETENTION).await.unwrap(), 1);
        let left: Vec<(String, String)> =
            sqlx::query_as("SELECT consumer, event_id FROM consumer_dedup ORDER BY consumer, event_id")
                .fetch_all(&lite)
                .await
                .unwrap();
        assert_eq!(
            left,
            [("other".into(), "old".into()), ("pruned".into(), "new".into())]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Counts records per key, in a counter whose hash tag is the key.
    struct Counter(String);

    impl RedisHandler for Counter {
        fn effect(&self, record: &Record) -> Result<Option<RedisEffect>, HandlerError> {
            let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
            Ok(Some(RedisEffect {
                keys: vec![format!("{{{}-{key}}}:count", self.0)],
                args: vec![b"1".to_vec()],
            }))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_effects_are_applied_once_even_after_a_forced_rewind() {
        let bench = Bench::new(3).await;
        let topic = bench.topic("redis").await;
        let keys = 25;
        let sent = bench.produce_numbered(&topic, 2_000, keys).await;
        let client = redis::Client::open(orderflow_testkit::redis().url()).unwrap();
        let connection = redis::aio::ConnectionManager::new(client).await.unwrap();
        let prefix = bench.name("rk");
        let make = || {
            let s = settings(&bench, &topic, Delivery::AtLeastOnce);
            let effects = RedisEffects::new(
                connection.clone(),
                s.group.clone(),
                "redis.call('INCRBY', keys[1], args[1])",
                Duration::from_secs(3600),
                Counter(prefix.clone()),
            );
            (s, effects)
        };
        let (s, effects) = make();
        let first = Arc::new(ConsumerRuntime::new(bench.bus.clone(), s, effects));
        run_until_processed(&first, sent.len() as u64).await;
        let total = |mut c: redis::aio::ConnectionManager, prefix: String| async move {
            let mut sum = 0i64;
            for k in 0..keys {
                let v: Option<i64> = redis::cmd("GET")
                    .arg(format!("{{{prefix}-key-{k}}}:count"))
                    .query_async(&mut c)
                    .await
                    .unwrap();
                sum += v.unwrap_or_default();
            }
            sum
        };
        assert_eq!(total(connection.clone(), prefix.clone()).await, 2_000);
        rewind(&bench, &first.settings().group, &topic).await;
        let (s, effects) = make();
        let second = Arc::new(ConsumerRuntime::new(bench.bus.clone(), s, effects));
        run_until_processed(&second, sent.len() as u64).await;
        assert_eq!(
            total(connection.clone(), prefix.clone()).await,
            2_000,
            "re-delivered records changed nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_joining_and_leaving_under_load_lose_nothing_and_duplicate_no_effect() {
        let bench = Bench::new(6).await;
        let topic = bench.topic("rebalance").await;
        let pool = pg_ledger().await;
        // Each batch takes a little while, so batches are in flight when partitions move.
        let ledger = || Ledger {
            delay: Duration::from_millis(5),
        };
        let group = bench.name("members");
        let member = |name: &str| {
            let mut s = settings(&bench, &topic, Delivery::AtLeastOnce);
            s.group = group.clone();
            s.instance_id = Some(name.to_owned());
            s.max_batch = 20;
            Arc::new(ConsumerRuntime::new(
                bench.bus.clone(),
                s,
                DbEffects::new(pool.clone(), group.clone(), ledger()),
            ))
        };
        DbEffects::new(pool.clone(), group.clone(), ledger())
            .ensure_schema()
            .await
            .unwrap();

        // Load: records keep arriving while members come and go.
        let producing = tokio::spawn({
            let bus = bench.bus.clone();
            let topic = topic.clone();
            async move {
                let producer = bus.producer("load").unwrap();
                let mut sent = 0usize;
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_secs(12) {
                    for _ in 0..50 {
                        let payload = sent.to_string();
                        let key = format!("k{}", sent % 97);
                        producer
                            .send(
                                rdkafka::producer::FutureRecord::to(&topic)
                                    .key(&key)
                                    .payload(&payload),
                                Duration::from_secs(10),
                            )
                            .await
                            .unwrap();
                        sent += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                sent
            }
        });
        let a = member("a");
        let (task_a, stop_a) = start(&a);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = member("b");
        let (task_b, stop_b) = start(&b);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let c = member("c");
        let (task_c, stop_c) = start(&c);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop_a.cancel();
        task_a.await.unwrap().expect("a stops cleanly");
        let sent = producing.await.unwrap() as i64;

        let counts = || pg_counts(&pool);
        let start = std::time::Instant::now();
        while counts().await.1 < sent {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "all records applied: {:?} of {sent}",
                counts().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_b.cancel();
        stop_c.cancel();
        task_b.await.unwrap().expect("b stops cleanly");
        task_c.await.unwrap().expect("c stops cleanly");
        let (rows, distinct) = counts().await;
        assert_eq!(distinct, sent, "nothing lost");
        assert_eq!(rows, sent, "no effect duplicated");
        // Every member had work, and partitions moved between them.
        assert!(a.stats().processed() > 0 && b.stats().processed() > 0 && c.stats().processed() > 0);
        assert!(a.stats().revocations() > 0);
    }
}

/// The example processor run as a separate process (built by `cargo test` with the examples).
mod processes {
    use std::process::{Child, Command};
    use std::time::Instant;

    use super::*;

    /// Kills the process when dropped, so a failing test leaves nothing behind.
    struct Processor(Child);

    impl Drop for Processor {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl std::ops::Deref for Processor {
        type Target = Child;
        fn deref(&self) -> &Child {
            &self.0
        }
    }

    impl std::ops::DerefMut for Processor {
        fn deref_mut(&mut self) -> &mut Child {
            &mut self.0
        }
    }

    fn processor(bench: &Bench, args: &[&str], delay_ms: u64) -> Processor {
        let exe = std::env::current_exe().unwrap();
        let path = exe
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .join("examples")
            .join("processor");
        assert!(path.exists(), "{} is built by cargo test", path.display());
        Command::new(path)
            .arg(bench.bus.bootstrap_servers())
            .arg(&bench.bus.settings().topic_prefix)
            .args(args)
            .env("PROCESSOR_BATCH_DELAY_MS", delay_ms.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map(Processor)
            .unwrap()
    }

    async fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "the processor did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn terminate(child: &Child) {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_a_transactional_processor_mid_batch_and_restarting_it_yields_each_output_once() {
        let bench = Bench::new(3).await;
        let input = bench.topic("kill-in").await;
        let output = bench.topic("kill-out").await;
        let group = bench.name("copier");
        let mut sent = bench.produce_numbered(&input, 20_000, 100).await;
        let args = ["copy", &input, &group, "p1", &output];

        let mut first = processor(&bench, &args, 20);
        // Wait until some transactions have committed, then kill it while it is busy.
        let partial = bench.read_for(&output, 1, Duration::from_secs(60)).await;
        assert!(!partial.is_empty(), "the processor produced output");
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.kill().unwrap();
        first.wait().unwrap();
        // Its open transaction is left behind; what is visible stops short of the end.
        let visible = bench
            .read_for(&output, sent.len(), Duration::from_secs(3))
            .await
            .len();
        assert!(visible < sent.len(), "killed before the end: {visible}");

        let mut second = processor(&bench, &args, 0);
        let out = bench.read(&output, sent.len()).await;
        assert_eq!(out.len(), sent.len());
        terminate(&second);
        assert!(wait_exit(&mut second, Duration::from_secs(20)).await.success());
        let out = bench
            .read_for(&output, sent.len() + 1, Duration::from_secs(5))
            .await;
        let mut got: Vec<String> = out
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        got.sort();
        sent.sort();
        assert_eq!(got, sent, "each output exactly once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_under_load_exits_within_the_deadline_with_all_completed_work_committed() {
        let bench = Bench::new(3).await;
        let input = bench.topic("term-in").await;
        let group = bench.name("ledger");
        let url = orderflow_testkit::postgres().fresh_database().expect("database");
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TABLE ledger (event_id TEXT NOT NULL, partition INT NOT NULL, record_offset BIGINT NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        bench.produce_numbered(&input, 20_000, 100).await;
        let mut child = processor(&bench, &["ledger", &input, &group, "p1", &url], 20);
        let rows = || async {
            sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM ledger")
                .fetch_one(&pool)
                .await
                .unwrap()
                .0
        };
        let start = Instant::now();
        while rows().await < 1_000 {
            assert!(start.elapsed() < Duration::from_secs(60), "processing started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        terminate(&child);
        let stopping = Instant::now();
        let status = wait_exit(&mut child, Duration::from_secs(20)).await;
        let took = stopping.elapsed();
        assert!(status.success(), "{status:?}");
        // The drain deadline is 5 s; leaving the group is bounded too.
        assert!(took < Duration::from_secs(10), "stopped in {took:?}");

        let done: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
            "SELECT partition, max(record_offset), count(*), count(DISTINCT record_offset) FROM ledger GROUP BY partition",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(rows().await < 20_000, "stopped before the end");
        let committed = bench.committed(&group, &input).await;
        for (partition, max_offset, count, distinct) in done {
            assert_eq!(count, distinct, "no record applied twice");
            assert_eq!(count, max_offset + 1, "no gap in partition {partition}");
            assert_eq!(
                committed[&partition],
                max_offset + 1,
                "partition {partition}: every completed record committed, nothing more"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_handler_pauses_and_resumes_partitions_without_losing_the_assignment() {
    // A short poll interval: a member that stopped polling while its handler is busy would be thrown out.
    let bench = Bench::with_consumer(
        2,
        &[("session.timeout.ms", "6000"), ("max.poll.interval.ms", "7000")],
    )
    .await;
    let topic = bench.topic("slow").await;
    let sent = bench.produce_numbered(&topic, 2_000, 20).await;
    let mut s = settings(&bench, &topic, Delivery::AtLeastOnce);
    s.concurrency = 1;
    s.max_batch = 10;
    s.high_water = 50;
    s.low_water = 10;
    let runtime = Arc::new(ConsumerRuntime::new(
        bench.bus.clone(),
        s,
        Recorder {
            delay: Duration::from_millis(40),
            ..Recorder::default()
        },
    ));
    let (task, shutdown) = start(&runtime);
    let stats = runtime.stats().clone();
    // Two partitions of the topic and of each of its two retry topics.
    let assigned = 2 * 3;
    wait_for(Duration::from_secs(30), || stats.assigned() == assigned).await;
    let started = std::time::Instant::now();
    let handler = runtime.handler().clone();
    let mut peak_paused = 0;
    while handler.payloads().len() < sent.len() {
        peak_paused = peak_paused.max(stats.paused());
        assert_eq!(stats.assigned(), assigned, "the member kept its partitions");
        assert!(started.elapsed() < Duration::from_secs(90), "all processed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Saturated for longer than the poll interval, yet never revoked.
    assert!(
        started.elapsed() > Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stats.revocations(), 0);
    assert!(peak_paused >= 1, "partitions were paused");
    assert!(
        stats.pauses() >= 2 && stats.resumes() >= 2,
        "paused {} resumed {}",
        stats.pauses(),
        stats.resumes()
    );
    shutdown.cancel();
    task.await.unwrap().expect("clean stop");
    assert_eq!(handler.payloads().len(), sent.len(), "nothing lost or repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_when_it_moves_away_is_consumed_again_when_it_comes_back() {
    let bench = Bench::new(2).await;
    let topic = bench.topic("moves").await;
    let sent = bench.produce_numbered(&topic, 1_500, 20).await;
    let group = bench.name("movers");
    // Slow members with a small buffer: their partitions are paused most of the time.
    let member = || {
        let mut s = settings(&bench, &topic, Delivery::AtLeastOnce);
        s.group = group.clone();
        s.concurrency = 1;
        s.max_batch = 10;
        s.high_water = 50;
        s.low_water = 10;
        Arc::new(ConsumerRuntime::new(
            bench.bus.clone(),
            s,
            Recorder {
                delay: Duration::from_millis(30),
                ..Recorder::default()
            },
        ))
    };
    let a = member();
    let (task_a, stop_a) = start(&a);
    wait_for(Duration::from_secs(30), || a.stats().paused() >= 1).await;
    // A second member takes partitions away from `a` while they are paused, then leaves: they come back.
    let b = member();
    let (task_b, stop_b) = start(&b);
    wait_for(Duration::from_secs(30), || {
        a.stats().revocations() > 0 && b.stats().processed() > 0
    })
    .await;
    stop_b.cancel();
    task_b.await.unwrap().expect("b stops cleanly");

    let seen = || {
        let mut all = a.handler().payloads();
        all.extend(b.handler().payloads());
        all.into_iter().collect::<std::collections::HashSet<String>>()
    };
    let started = std::time::Instant::now();
    while seen().len() < sent.len() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "every record handled after the partitions came back: {} of {} (a holds {} partitions, {} paused)",
            seen().len(),
            sent.len(),
            a.stats().assigned(),
            a.stats().paused()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_a.cancel();
    task_a.await.unwrap().expect("a stops cleanly");
}

static POISON_FIXED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_dead_letter_twice_applies_its_effect_once() {
    use orderflow_consumer::dlq;
    use orderflow_consumer::effects::{DbEffects, DbHandler, db_error};
    use sqlx::{PgPool, Postgres, Transaction};

    /// Refuses "poison" until the fix is deployed.
    struct Ledger;
    impl DbHandler<Postgres> for Ledger {
        async fn apply(
            &self,
            tx: &mut Transaction<'static, Postgres>,
            records: &[&Record],
        ) -> Result<(), HandlerError> {
            for record in records {
                let payload =
                    String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default()).into_owned();
                if payload == "poison" && !POISON_FIXED.load(Ordering::SeqCst) {
                    return Err(HandlerError::permanent("unknown field"));
                }
                sqlx::query("INSERT INTO ledger (payload) VALUES ($1)")
                    .bind(&payload)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
            }
            Ok(())
        }
    }

    let bench = Bench::new(1).await;
    let topic = bench.topic("replay").await;
    let url = orderflow_testkit::postgres().fresh_database().expect("database");
    let pool = PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE ledger (payload TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let s = settings(&bench, &topic, Delivery::AtLeastOnce);
    let effects = DbEffects::new(pool.clone(), s.group.clone(), Ledger);
    effects.ensure_schema().await.unwrap();
    let runtime = Arc::new(ConsumerRuntime::new(bench.bus.clone(), s, effects));
    let (task, shutdown) = start(&runtime);
    bench
        .produce(&topic, &[("k", "1"), ("k", "poison"), ("k", "3")])
        .await;
    let dead_topic = dlq_of(&runtime, &topic);
    let dead = bench.read(&dead_topic, 1).await;
    assert_eq!(dead.len(), 1);

    POISON_FIXED.store(true, Ordering::SeqCst);
    assert_eq!(dlq::replay(&bench.bus, &dead_topic, None).await.unwrap(), 1);
    assert_eq!(
        dlq::replay(&bench.bus, &dead_topic, Some((0, 0))).await.unwrap(),
        1
    );
    let payloads = || async {
        sqlx::query_as::<_, (String,)>("SELECT payload FROM ledger ORDER BY payload")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(p,)| p)
            .collect::<Vec<_>>()
    };
    let stats = runtime.stats().clone();
    // 3 records, then the 2 replays.
    wait_for(Duration::from_secs(30), || stats.processed() >= 5).await;
    shutdown.cancel();
    task.await.unwrap().expect("clean stop");
    assert_eq!(payloads().await, vec!["1", "3", "poison"]);
    // The replays went to this group's first retry topic, not back to the topic every group reads.
    assert_eq!(bench.ends(&topic).await[&0], 3);
    assert_eq!(bench.ends(&retry_of(&runtime, &topic, 1)).await[&0], 2);
    let listed = dlq::list(&bench.bus, &dead_topic).await.unwrap();
    assert_eq!(listed.len(), 1, "replay leaves the dead letter in place");
}

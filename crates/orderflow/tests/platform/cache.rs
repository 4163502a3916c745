//! The read path across processes: a hot order expiring under 1,000 GETs is loaded once, and without
//! stampede protection many times.

use std::time::Duration;

use orderflow_testkit::unique;
use redis::AsyncCommands;

use crate::support::*;

/// The sum of `orderflow_cache_loads_total` over the given instances' `/metrics`.
async fn cache_loads(bases: &[String]) -> u64 {
    let mut total = 0;
    for base in bases {
        let text = http_get(format!("{base}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        total += text
            .lines()
            .filter(|l| l.starts_with("orderflow_cache_loads_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    total
}

/// Two `orderflow run --role orders` processes share PostgreSQL and Redis; a hot order's cache entry
/// expires (deleted from Redis, gone from both in-process tiers) and 1,000 GETs arrive at once, half at
/// each process, over connections opened beforehand. Returns how many times the database was asked.
async fn http_stampede(protection: bool) -> u64 {
    let prefix = unique("stampede");
    // Generous Redis timeouts: CI runs this beside other tests on two cores with debug builds, and a Redis
    // call that times out sends its reader to the database by design (that is the breaker's job, tested in
    // the cache crate), which is not what this test measures.
    let env = [
        ("ORDERFLOW_CACHE__L1_TTL_MS", "200".to_owned()),
        ("ORDERFLOW_CACHE__STAMPEDE_PROTECTION", protection.to_string()),
        ("ORDERFLOW_CACHE__REDIS_TIMEOUT_MS", "3000".to_owned()),
        ("ORDERFLOW_CACHE__LOCK_WAIT_MS", "3000".to_owned()),
    ];
    let (instances, bases, db) = orders_instances(&prefix, &env);
    let redis_url = orderflow_testkit::redis().url();
    let (status, _, created) = post(&bases[0], "application/json", &order_body().to_string()).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id").to_owned();

    // The hot key expires everywhere.
    let client = redis::Client::open(redis_url.as_str()).expect("client");
    let mut redis = client.get_multiplexed_async_connection().await.expect("redis");
    let _: i64 = redis.del(format!("{prefix}:order:{{{id}}}")).await.expect("DEL");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = cache_loads(&bases).await;

    // The database answers slowly while the GETs arrive (the table is locked for a moment), so every reader
    // is in before the first load completes, however slowly this machine schedules them: the count then
    // shows what the protection does, not how fast the first load was.
    let pool = sqlx::PgPool::connect(&db).await.expect("database");
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let readers = 1000;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(readers));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..readers {
        let addr = bases[i % 2].trim_start_matches("http://").to_owned();
        let (barrier, id, sent) = (barrier.clone(), id.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            barrier.wait().await;
            let request =
                format!("GET /v1/orders/{id} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("send");
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.expect("read");
            String::from_utf8_lossy(&response).into_owned()
        }));
    }
    // Every request is sent, and the servers get a moment to take them in, before the database answers.
    eventually("every GET sent", || {
        let sent = sent.clone();
        async move { (sent.load(std::sync::atomic::Ordering::Relaxed) == readers).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    lock.commit().await.expect("unlock");
    for task in tasks {
        let response = task.await.expect("reader");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{}",
            response.lines().next().unwrap_or("")
        );
        assert!(response.contains(&id));
    }
    let loads = cache_loads(&bases).await - before;
    for mut instance in instances {
        instance.terminate().await;
    }
    loads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_order_expiring_under_1000_gets_over_two_processes_is_loaded_once() {
    let loads = http_stampede(true).await;
    eprintln!("stampede protection on: {loads} database load(s) for 1000 GETs over two processes");
    assert_eq!(loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_stampede_protection_the_same_gets_load_the_database_many_times() {
    let loads = http_stampede(false).await;
    eprintln!("stampede protection off: {loads} database loads for 1000 GETs over two processes");
    assert!(loads > 10, "expected a visible stampede, got {loads}");
}

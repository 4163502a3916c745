//! The Cluster connection through a master failover, and writes acknowledged only once a replica has
//! them, on Redis Clusters of the tests' own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use orderflow_redis::{RedisConnection, RedisTarget};
use orderflow_testkit::RedisCluster;

/// One round of writes over keys in every slot range, as the roles make them (plain commands, scripts and
/// single-slot pipelines), acknowledged by a replica as the roles do.
async fn round(connection: &RedisConnection) -> redis::RedisResult<()> {
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    for key in 0..48 {
        let mut c = connection.clone();
        let _: i64 = redis::cmd("INCR")
            .arg(format!("failover:{key}"))
            .query_async(&mut c)
            .await?;
        let _: i64 = script
            .key(format!("{{failover:{key}}}:script"))
            .arg(2)
            .invoke_async(&mut c)
            .await?;
        let _: (i64, i64) = redis::pipe()
            .atomic()
            .incr(format!("{{failover:{key}}}:a"), 1)
            .incr(format!("{{failover:{key}}}:b"), 1)
            .query_async(&mut c)
            .await?;
    }
    connection.wait_replicated().await
}

/// A Redis Cluster of the test's own and a connection to it.
async fn start_cluster() -> (RedisCluster, RedisConnection) {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start().expect("redis cluster"))
        .await
        .expect("task");
    let target = RedisTarget {
        urls: cluster.urls(),
        cluster: true,
        ..RedisTarget::default()
    };
    let connection = RedisConnection::connect(&target).await.expect("connect");
    (cluster, connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_connection_serves_again_soon_after_a_master_is_killed_and_comes_back() {
    let (cluster, connection) = start_cluster().await;
    round(&connection).await.expect("a healthy cluster serves");

    // Writers keep going through the failover.
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (connection, failures, stop) = (connection.clone(), failures.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if round(&connection).await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = cluster.masters().expect("masters")[0];
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(victim).expect("the node comes back");
        cluster
            .wait_healthy(Duration::from_secs(60))
            .expect("healthy again");
        cluster
    })
    .await
    .expect("task");
    let healthy = Instant::now();

    // Once the cluster is healthy again, the same connection serves every key within seconds.
    let served = loop {
        match round(&connection).await {
            Ok(()) => break healthy.elapsed(),
            Err(e) => assert!(
                healthy.elapsed() < Duration::from_secs(30),
                "still failing 30 s after the cluster healed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    assert!(
        failures.load(Ordering::Relaxed) > 0,
        "the failover was felt by the writers"
    );
    eprintln!("served again {served:?} after the cluster healed");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_replica_has_not_confirmed_are_not_acknowledged() {
    let (cluster, connection) = start_cluster().await;
    round(&connection)
        .await
        .expect("a healthy cluster confirms the writes");

    // Every replica frozen: still connected to its master, confirming nothing.
    let masters = cluster.masters().expect("masters");
    let replicas: Vec<usize> = (0..cluster.ports().len())
        .filter(|i| !masters.contains(i))
        .collect();
    assert!(!replicas.is_empty(), "the cluster has replicas");
    for &replica in &replicas {
        cluster.freeze(replica);
    }
    let started = Instant::now();
    let outcome = round(&connection).await;
    let waited = started.elapsed();
    for &replica in &replicas {
        cluster.thaw(replica);
    }
    let error = outcome.expect_err("writes no replica confirmed are not acknowledged");
    assert!(error.is_timeout() || error.is_io_error(), "{error}");
    assert!(
        waited >= orderflow_redis::REPLICATION_WAIT && waited < Duration::from_secs(10),
        "failed after {waited:?}"
    );

    // Once the replicas go on, the same writes are confirmed.
    round(&connection).await.expect("confirmed again");
}

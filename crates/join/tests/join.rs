//! The join state behaves the same in process, on a real redis-server, on a real Redis Cluster, and in the
//! database (a real PostgreSQL server and SQLite).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::atomic::{AtomicU32, Ordering};

use orderflow_join::{DbJoin, JoinState, MemoryJoin, Put, PutRequest, RedisJoin, Side};
use orderflow_redis::{RedisConnection, RedisTarget};
use orderflow_store::Store;
use orderflow_testkit::unique;

const KEEP: i64 = 60_000;

async fn redis(cluster: bool) -> JoinState {
    let target = if cluster {
        RedisTarget {
            urls: orderflow_testkit::redis_cluster().urls(),
            cluster: true,
            ..RedisTarget::default()
        }
    } else {
        RedisTarget {
            urls: vec![orderflow_testkit::redis().url()],
            ..RedisTarget::default()
        }
    };
    let connection = RedisConnection::connect(&target).await.unwrap();
    JoinState::Redis(RedisJoin::new(connection, format!("{}:", unique("join"))))
}

fn ids() -> impl FnMut() -> String {
    let n = AtomicU32::new(0);
    move || format!("report-{}", n.fetch_add(1, Ordering::Relaxed))
}

async fn joins_once_expires_once_and_flags_late_sides(state: JoinState) {
    // Left then right: joined, with the first proposed id, however often either side comes again.
    assert_eq!(
        state
            .put("a", Side::Left, b"order-a", 1_000, KEEP, "j1")
            .await
            .unwrap(),
        Put::Waiting
    );
    let joined = Put::Joined {
        left: b"order-a".to_vec(),
        right: b"pay-a".to_vec(),
        join_id: "j1".into(),
    };
    assert_eq!(
        state
            .put("a", Side::Right, b"pay-a", 0, KEEP, "j1")
            .await
            .unwrap(),
        joined
    );
    assert_eq!(
        state
            .put("a", Side::Right, b"pay-a", 0, KEEP, "j2")
            .await
            .unwrap(),
        joined
    );
    assert_eq!(
        state
            .put("a", Side::Left, b"order-a", 1_000, KEEP, "j3")
            .await
            .unwrap(),
        joined
    );

    // Right first, then left: joined at once.
    assert_eq!(
        state
            .put("b", Side::Right, b"pay-b", 0, KEEP, "k1")
            .await
            .unwrap(),
        Put::Waiting
    );
    // The id is one of the proposals (which one is the backend's choice), fixed from then on.
    let Put::Joined { join_id: fixed, .. } = state
        .put("b", Side::Left, b"order-b", 1_000, KEEP, "k2")
        .await
        .unwrap()
    else {
        panic!("b joins")
    };
    assert!(fixed == "k1" || fixed == "k2", "{fixed}");
    assert!(matches!(
        state.put("b", Side::Right, b"pay-b", 0, KEEP, "k3").await.unwrap(),
        Put::Joined { join_id, .. } if join_id == fixed
    ));

    // A left side past its deadline is reported once, with a fixed report id, until forgotten.
    assert_eq!(
        state
            .put("c", Side::Left, b"order-c", 2_000, KEEP, "l1")
            .await
            .unwrap(),
        Put::Waiting
    );
    assert_eq!(
        state
            .put("d", Side::Left, b"order-d", 9_000, KEEP, "m1")
            .await
            .unwrap(),
        Put::Waiting
    );
    let mut propose = ids();
    assert!(state.expired(1_999, 10, &mut propose).await.unwrap().is_empty());
    let due = state.expired(2_000, 10, &mut propose).await.unwrap();
    assert_eq!(due.len(), 1, "a and b joined, d is not due: {due:?}");
    assert_eq!(
        (due[0].key.as_str(), due[0].left.as_slice()),
        ("c", b"order-c".as_slice())
    );
    let again = state.expired(2_000, 10, &mut propose).await.unwrap();
    assert_eq!(again[0].report_id, due[0].report_id, "the report id is fixed");
    state.forget_expired(&["c".to_owned()]).await.unwrap();
    assert!(state.expired(2_000, 10, &mut propose).await.unwrap().is_empty());

    // Its payment, arriving now, is late.
    assert_eq!(
        state
            .put("c", Side::Right, b"pay-c", 0, KEEP, "l2")
            .await
            .unwrap(),
        Put::Late {
            left: b"order-c".to_vec()
        }
    );
    // Joined keys were taken off the deadline index by the sweep: only d is left, later.
    assert_eq!(state.expired(9_000, 10, &mut propose).await.unwrap()[0].key, "d");
}

async fn database(url: &str) -> JoinState {
    let store = Store::connect(url, 4).await.unwrap();
    store.migrate().await.unwrap();
    JoinState::Database(DbJoin::new(store, "test"))
}

#[tokio::test]
async fn in_postgres() {
    let url = orderflow_testkit::postgres().fresh_database().unwrap();
    joins_once_expires_once_and_flags_late_sides(database(&url).await).await;
}

#[tokio::test]
async fn in_sqlite() {
    let dir = std::env::temp_dir().join(unique("orderflow-join-test"));
    std::fs::create_dir_all(&dir).unwrap();
    joins_once_expires_once_and_flags_late_sides(
        database(&format!("sqlite://{}/join.db", dir.display())).await,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_batch_answers_each_put_as_one_by_one_would_and_state_in_the_database_outlives_its_store() {
    let url = orderflow_testkit::postgres().fresh_database().unwrap();
    let first = database(&url).await;
    let put = |key, side, record, id| PutRequest {
        key,
        side,
        record,
        deadline_ms: i64::MAX,
        keep_ms: KEEP,
        proposed_id: id,
    };
    // Both sides of one key in one batch, a lone left, and the same right twice.
    let outcomes = first
        .put_batch(&[
            put("p", Side::Left, b"order-p", "p1"),
            put("q", Side::Left, b"order-q", "q1"),
            put("p", Side::Right, b"pay-p", "p2"),
            put("r", Side::Right, b"pay-r", "r1"),
            put("r", Side::Right, b"pay-r", "r2"),
        ])
        .await
        .unwrap();
    let joined_p = Put::Joined {
        left: b"order-p".to_vec(),
        right: b"pay-p".to_vec(),
        join_id: "p1".into(),
    };
    assert_eq!(
        outcomes,
        vec![
            joined_p.clone(),
            Put::Waiting,
            joined_p,
            Put::Waiting,
            Put::Waiting
        ]
    );
    drop(first);
    // Another instance (or this one restarted, or after Redis lost everything) completes q and r.
    let second = database(&url).await;
    // In the database the id is fixed when a key is first stored: by the first instance's put.
    assert!(matches!(
        second.put("q", Side::Right, b"pay-q", 0, KEEP, "q2").await.unwrap(),
        Put::Joined { join_id, .. } if join_id == "q1"
    ));
    assert!(matches!(
        second.put("r", Side::Left, b"order-r", i64::MAX, KEEP, "r3").await.unwrap(),
        Put::Joined { join_id, .. } if join_id == "r1"
    ));
    // Entries past their keep time go.
    assert_eq!(second.prune(i64::MAX).await.unwrap(), 3);
}

#[tokio::test]
async fn in_process() {
    joins_once_expires_once_and_flags_late_sides(JoinState::Memory(MemoryJoin::new())).await;
}

#[tokio::test]
async fn on_redis() {
    joins_once_expires_once_and_flags_late_sides(redis(false).await).await;
}

#[tokio::test]
async fn on_a_redis_cluster() {
    joins_once_expires_once_and_flags_late_sides(redis(true).await).await;
}

#[tokio::test]
async fn state_on_redis_outlives_the_client_that_wrote_it() {
    let prefix = format!("{}:", unique("join"));
    let target = RedisTarget {
        urls: vec![orderflow_testkit::redis().url()],
        ..RedisTarget::default()
    };
    let first = RedisJoin::new(RedisConnection::connect(&target).await.unwrap(), prefix.clone());
    let first = JoinState::Redis(first);
    first
        .put("x", Side::Left, b"order-x", i64::MAX, KEEP, "x1")
        .await
        .unwrap();
    drop(first);
    // A restarted (or another) instance completes the join.
    let second = RedisJoin::new(RedisConnection::connect(&target).await.unwrap(), prefix);
    let put = JoinState::Redis(second)
        .put("x", Side::Right, b"pay-x", 0, KEEP, "x2")
        .await
        .unwrap();
    assert!(matches!(put, Put::Joined { left, join_id, .. } if left == b"order-x" && join_id == "x2"));
}

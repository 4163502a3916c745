//! The read model on a real redis-server from the harness, and in process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use chrono::Utc;
use orderflow_cache::{CacheSettings, ReadModel};
use orderflow_domain::{NewOrder, Order, OrderStatus};
use redis::AsyncCommands;

fn order() -> Order {
    let doc = serde_json::json!({"customer_id": "c-9", "currency": "JPY",
        "items": [{"sku": "A", "quantity": 3, "unit_price_minor": 120}, {"sku": "B", "quantity": 1, "unit_price_minor": 5}]});
    Order::create(NewOrder::parse(&doc).expect("valid"), Utc::now())
}

/// A plain connection to the harness's redis-server, to look at keys the way an operator would.
async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(orderflow_testkit::redis().url()).expect("client");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

fn settings(redis_url: Option<String>) -> CacheSettings {
    CacheSettings {
        redis_url,
        key_prefix: format!("{}:", orderflow_testkit::unique("rm")),
        ttl_secs: 60,
        ..CacheSettings::default()
    }
}

async fn versions_only_move_forward(model: &ReadModel) {
    let v1 = order();
    assert!(model.get(v1.id).await.expect("get").is_none());
    assert!(model.put(&v1).await.expect("put"));
    assert_eq!(model.get(v1.id).await.expect("get"), Some(v1.clone()));

    let v2 = Order {
        status: OrderStatus::Paid,
        version: 2,
        ..v1.clone()
    };
    assert!(model.put(&v2).await.expect("put"));
    assert!(
        !model.put(&v1).await.expect("put"),
        "an older version must not replace a newer one"
    );
    assert!(
        !model.put(&v2).await.expect("put"),
        "the same version is not written twice"
    );
    assert_eq!(
        model.get(v1.id).await.expect("get").map(|o| o.status),
        Some(OrderStatus::Paid)
    );

    model.invalidate(v1.id).await.expect("invalidate");
    assert!(model.get(v1.id).await.expect("get").is_none());
}

#[tokio::test]
async fn redis_read_model_is_version_checked() {
    let model = ReadModel::connect(settings(Some(orderflow_testkit::redis().url())))
        .await
        .expect("connect");
    assert_eq!(model.backend_name(), "redis");
    versions_only_move_forward(&model).await;
}

#[tokio::test]
async fn in_process_read_model_is_version_checked() {
    let model = ReadModel::connect(settings(None)).await.expect("in process");
    assert_eq!(model.backend_name(), "in-process");
    versions_only_move_forward(&model).await;
}

#[tokio::test]
async fn redis_entries_are_hash_tagged_hashes_with_a_jittered_ttl() {
    let settings = settings(Some(orderflow_testkit::redis().url()));
    let prefix = settings.key_prefix.clone();
    let model = ReadModel::connect(settings).await.expect("connect");
    let o = order();
    model.put(&o).await.expect("put");

    let key = format!("{prefix}order:{{{}}}", o.id);
    let mut conn = raw_connection().await;
    let status: String = conn.hget(&key, "status").await.expect("hget");
    assert_eq!(status, "CREATED");
    let version: i64 = conn.hget(&key, "version").await.expect("hget");
    assert_eq!(version, 1);
    let ttl: i64 = conn.ttl(&key).await.expect("ttl");
    assert!((54..=66).contains(&ttl), "ttl {ttl} outside 60 s +- 10 %");
}

#[tokio::test]
async fn a_corrupt_entry_is_an_error_not_a_panic() {
    let settings = settings(Some(orderflow_testkit::redis().url()));
    let prefix = settings.key_prefix.clone();
    let model = ReadModel::connect(settings).await.expect("connect");
    let o = order();
    let mut conn = raw_connection().await;
    let _: () = conn
        .hset(format!("{prefix}order:{{{}}}", o.id), "version", "x")
        .await
        .expect("hset");
    assert!(model.get(o.id).await.is_err());
    assert!(
        model.put(&o).await.expect("put"),
        "a corrupt entry is replaced by a good one"
    );
    assert_eq!(model.get(o.id).await.expect("get"), Some(o));
}

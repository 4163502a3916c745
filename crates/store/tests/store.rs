//! The store on a real PostgreSQL server (from the harness) and on a SQLite file: the same behaviour on both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::time::Duration;

use chrono::Utc;
use orderflow_domain::{NewOrder, Order};
use orderflow_events::{AvroCodec, EncodedEvent, OrderCreated};
use orderflow_registry::{MemoryStorage, RegistryService};
use orderflow_store::{
    Backend, Charge, ChargeOutcome, ChargeTotals, InventoryOp, InventoryOutcome, Product, Store,
};

async fn postgres() -> Store {
    let url = orderflow_testkit::postgres().fresh_database().expect("database");
    let store = Store::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn sqlite() -> (Store, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let store = Store::connect(&format!("sqlite://{}/nested/of.db", dir.path()), 4)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    (store, dir)
}

/// A tiny temp dir so the test needs no extra crate.
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(orderflow_testkit::unique("orderflow-store-test"));
            std::fs::create_dir_all(&p).expect("temp dir");
            Self(p)
        }
        pub fn path(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn encoded(order: &Order) -> EncodedEvent {
    let registry = std::sync::Arc::new(RegistryService::new(
        std::sync::Arc::new(MemoryStorage::default()),
    ));
    let codec = AvroCodec::connect(registry, "").await.expect("codec");
    codec
        .encode(&OrderCreated::from_order(order), None)
        .expect("encode")
}

fn order(customer: &str, lines: usize) -> Order {
    let items: Vec<_> = (0..lines)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i}"), "quantity": i + 1, "unit_price_minor": 100 * (i + 1)}))
        .collect();
    let doc = serde_json::json!({"customer_id": customer, "currency": "EUR", "items": items});
    Order::create(NewOrder::parse(&doc).expect("valid order"), Utc::now())
}

async fn round_trip_and_outbox(store: Store) {
    let first = order("alice", 3);
    let second = order("bob", 1);
    for o in [&first, &second] {
        store.insert_order(o, &encoded(o).await).await.expect("insert");
    }
    let read = store.get_order(first.id).await.expect("get").expect("present");
    assert_eq!(read.items, first.items);
    assert_eq!(read.total_minor, first.total_minor);
    assert_eq!(read.customer_id, first.customer_id);
    assert_eq!(
        read.created_at.timestamp_micros(),
        first.created_at.timestamp_micros()
    );
    assert!(
        store
            .get_order(orderflow_domain::OrderId::new())
            .await
            .expect("get")
            .is_none()
    );
    // Many at once: each with its own lines, unknown ids left out.
    let mut many = store
        .get_orders(&[second.id, orderflow_domain::OrderId::new(), first.id])
        .await
        .expect("get many");
    many.sort_by_key(|o| o.customer_id.to_string());
    assert_eq!(many.len(), 2);
    assert_eq!((&many[0].items, &many[1].items), (&first.items, &second.items));
    assert!(store.get_orders(&[]).await.expect("none").is_empty());

    let pending = store.outbox_pending(10).await.expect("pending");
    assert_eq!(pending.len(), 2);
    assert_eq!(
        pending[0].key,
        first.id.to_string(),
        "publication order is commit order"
    );
    assert_eq!(pending[1].key, second.id.to_string());
    assert!(pending[0].headers.iter().any(|(k, _)| k == "event-id"));
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 2);

    store
        .outbox_mark_published(&[pending[0].id], Utc::now())
        .await
        .expect("mark");
    let left = store.outbox_pending(10).await.expect("pending");
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), vec![pending[1].id]);
    assert_eq!(
        store
            .outbox_prune(Utc::now() + chrono::Duration::seconds(1))
            .await
            .expect("prune"),
        1
    );
}

async fn a_failed_event_write_leaves_no_order(store: Store) {
    let first = order("carol", 2);
    let event = encoded(&first).await;
    store.insert_order(&first, &event).await.expect("insert");
    // Same event id again: the outbox insert violates its unique key after the order rows were written.
    let second = order("dave", 2);
    assert!(store.insert_order(&second, &event).await.is_err());
    assert!(
        store.get_order(second.id).await.expect("get").is_none(),
        "the order must roll back with its event"
    );
    assert_eq!(store.outbox_backlog().await.expect("backlog"), 1);
}

#[tokio::test]
async fn postgres_round_trips_orders_and_outbox_rows() {
    let store = postgres().await;
    assert_eq!(store.backend(), Backend::Postgres);
    round_trip_and_outbox(store).await;
}

#[tokio::test]
async fn sqlite_round_trips_orders_and_outbox_rows() {
    let (store, _dir) = sqlite().await;
    assert_eq!(store.backend(), Backend::Sqlite);
    round_trip_and_outbox(store).await;
}

#[tokio::test]
async fn postgres_writes_order_and_event_atomically() {
    a_failed_event_write_leaves_no_order(postgres().await).await;
}

#[tokio::test]
async fn sqlite_writes_order_and_event_atomically() {
    let (store, _dir) = sqlite().await;
    a_failed_event_write_leaves_no_order(store).await;
}

#[tokio::test]
async fn only_one_relay_lease_at_a_time_on_postgres() {
    let store = postgres().await;
    let first = store.acquire_relay_lease().await.expect("first lease");
    let second = tokio::time::timeout(Duration::from_millis(500), store.acquire_relay_lease()).await;
    assert!(
        second.is_err(),
        "a second relay must wait while the first holds the lease"
    );
    drop(first);
    let mut second = tokio::time::timeout(Duration::from_secs(5), store.acquire_relay_lease())
        .await
        .expect("the lease is released when its holder goes away")
        .expect("lease");
    second.check().await.expect("held");
}

#[tokio::test]
async fn every_postgres_commit_is_durable_even_when_the_server_default_is_not() {
    let url = orderflow_testkit::postgres().fresh_database().expect("database");
    // The harness's server trades durability for speed: its default does not wait for the flush.
    let mut plain = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("plain connection");
    let (default,): (String,) = sqlx::query_as("SHOW synchronous_commit")
        .fetch_one(&mut plain)
        .await
        .expect("show");
    assert_eq!(
        default, "off",
        "the test needs a server whose default is not durable"
    );
    let Store::Postgres(pg) = Store::connect(&url, 4).await.expect("connect") else {
        panic!("a postgres URL gives the PostgreSQL store")
    };
    for _ in 0..4 {
        let (setting,): (String,) = sqlx::query_as("SHOW synchronous_commit")
            .fetch_one(pg.pool())
            .await
            .expect("show");
        assert_eq!(setting, "on", "a store session must commit durably");
    }
}

#[tokio::test]
async fn unsupported_urls_are_rejected() {
    assert!(Store::connect("mysql://x", 1).await.is_err());
}

async fn registry_keeps_versions_in_the_database(store: Store) {
    let registry = RegistryService::new(std::sync::Arc::new(store.clone()));
    let v1 = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"long"}]}"#;
    let v2 = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"long"},{"name":"b","type":"int","default":0}]}"#;
    let first = registry.register("e-value", v1).await.expect("v1");
    assert_eq!(
        registry.register("e-value", v1).await.expect("again").id,
        first.id
    );
    let second = registry.register("e-value", v2).await.expect("v2");
    assert_eq!(second.version, 2);
    assert_eq!(
        registry.register("f-value", v2).await.expect("other subject").id,
        second.id
    );
    // A fresh service on the same database sees the same state.
    let reopened = RegistryService::new(std::sync::Arc::new(store));
    assert_eq!(
        reopened.version("e-value", "latest").await.expect("latest").id,
        second.id
    );
    assert_eq!(
        reopened.subjects().await.expect("subjects"),
        vec!["e-value", "f-value"]
    );
    reopened
        .set_compatibility(Some("e-value"), orderflow_registry::Compatibility::Full)
        .await
        .expect("config");
    assert_eq!(
        reopened.compatibility(Some("e-value")).await.expect("level"),
        orderflow_registry::Compatibility::Full
    );
    let bad = r#"{"type":"record","name":"E","fields":[{"name":"b","type":"int","default":0}]}"#;
    assert!(
        reopened.register("e-value", bad).await.is_err(),
        "FULL refuses removing 'a'"
    );
}

/// Confluent's `SchemaRegistryClient` (Python) against the registry's REST API over `store`: every endpoint
/// a user's tooling calls, with Confluent's error codes (`tests/interop/registry_client.py`).
async fn confluent_client_drives_the_registry(store: Store) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = orderflow_registry::router(RegistryService::new(std::sync::Arc::new(store)));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let python = tokio::task::spawn_blocking(orderflow_testkit::interop_python)
        .await
        .expect("task")
        .expect("python env");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/registry_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&url)
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn confluent_client_drives_the_registry_on_postgres() {
    confluent_client_drives_the_registry(postgres().await).await;
}

#[tokio::test]
async fn confluent_client_drives_the_registry_on_sqlite() {
    let (store, _dir) = sqlite().await;
    confluent_client_drives_the_registry(store).await;
}

#[tokio::test]
async fn postgres_stores_the_embedded_registry() {
    registry_keeps_versions_in_the_database(postgres().await).await;
}

#[tokio::test]
async fn sqlite_stores_the_embedded_registry() {
    let (store, _dir) = sqlite().await;
    registry_keeps_versions_in_the_database(store).await;
}

fn charge(order: orderflow_domain::OrderId, outcome: ChargeOutcome, amount: i64) -> Charge {
    Charge {
        order_id: order,
        payment_id: uuid::Uuid::now_v7(),
        event_id: uuid::Uuid::now_v7(),
        order_version: 1,
        amount_minor: amount,
        currency: "EUR".into(),
        outcome,
        reason: (outcome != ChargeOutcome::Captured).then(|| "declined: over limit".into()),
        attempts: 1,
        charged_at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
    }
}

async fn one_charge_per_order_however_often_asked(store: Store) {
    let a = orderflow_domain::OrderId::new();
    let b = orderflow_domain::OrderId::new();
    let first = vec![
        charge(a, ChargeOutcome::Captured, 1_000),
        charge(b, ChargeOutcome::Declined, 9_000),
    ];
    let mut recorded = store.record_charges(&first).await.unwrap();
    recorded.sort_by_key(|c| c.order_id != a);
    assert_eq!(recorded, first);

    // Asked again (a re-delivery, with freshly drawn ids and another decision, and twice in one batch): the
    // ledger answers with the first charge and only counts the attempts.
    let again = vec![
        charge(a, ChargeOutcome::Failed, 1_000),
        charge(a, ChargeOutcome::Failed, 1_000),
        charge(b, ChargeOutcome::Captured, 9_000),
    ];
    let answered = store.record_charges(&again).await.unwrap();
    assert_eq!(answered.len(), 2);
    let stored_a = store.get_charge(a).await.unwrap().unwrap();
    assert_eq!(stored_a.payment_id, first[0].payment_id);
    assert_eq!(stored_a.event_id, first[0].event_id);
    assert_eq!(stored_a.outcome, ChargeOutcome::Captured);
    assert_eq!(stored_a.attempts, 2);
    assert_eq!(
        store.get_charge(b).await.unwrap().unwrap().outcome,
        ChargeOutcome::Declined
    );
    assert_eq!(
        store.get_charge(orderflow_domain::OrderId::new()).await.unwrap(),
        None
    );

    let totals = store.charge_totals().await.unwrap();
    assert_eq!(
        totals,
        ChargeTotals {
            charges: 2,
            attempts: 4,
            captured: 1,
            captured_minor: 1_000
        }
    );
}

#[tokio::test]
async fn postgres_ledger_keeps_one_charge_per_order() {
    one_charge_per_order_however_often_asked(postgres().await).await;
}

#[tokio::test]
async fn sqlite_ledger_keeps_one_charge_per_order() {
    let (store, _dir) = sqlite().await;
    one_charge_per_order_however_often_asked(store).await;
}

fn claim(order: orderflow_domain::OrderId, reason: &'static str) -> orderflow_store::RefundClaim {
    orderflow_store::RefundClaim {
        order_id: order,
        event_id: uuid::Uuid::now_v7(),
        refund_id: uuid::Uuid::now_v7(),
        order_version: 4,
        reason,
        at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
    }
}

/// A refund owed is made once, in full, whether the claim or the capture comes first, however often either
/// is asked again; an order never captured keeps its claim unsettled.
async fn a_refund_is_made_once_whichever_comes_first(store: Store) {
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let (paid_first, claimed_first, declined) = (
        orderflow_domain::OrderId::new(),
        orderflow_domain::OrderId::new(),
        orderflow_domain::OrderId::new(),
    );
    let all = [paid_first, claimed_first, declined];
    // Captured, then rejected.
    store
        .record_charges(&[charge(paid_first, ChargeOutcome::Captured, 1_000)])
        .await
        .unwrap();
    assert!(store.settle_refunds(&all, now).await.unwrap().is_empty());
    let first = claim(paid_first, "rejected");
    store.claim_refunds(std::slice::from_ref(&first)).await.unwrap();
    // Cancelled before its payment was captured, and one whose payment was declined.
    let early = claim(claimed_first, "cancelled");
    store
        .claim_refunds(&[early.clone(), claim(declined, "cancelled")])
        .await
        .unwrap();
    store
        .record_charges(&[charge(declined, ChargeOutcome::Declined, 5_000)])
        .await
        .unwrap();
    let refunds = store.settle_refunds(&all, now).await.unwrap();
    assert_eq!(
        refunds.len(),
        1,
        "only the captured charge is refunded: {refunds:?}"
    );
    assert_eq!(
        (refunds[0].order_id, refunds[0].amount_minor),
        (paid_first, 1_000)
    );
    assert_eq!(refunds[0].event_id, first.event_id);
    store
        .record_charges(&[charge(claimed_first, ChargeOutcome::Captured, 2_500)])
        .await
        .unwrap();
    // Settled now that it is captured; then claimed again (a re-delivery, with fresh ids) and settled again,
    // twice: the same two refunds, with the first claims' ids and times.
    let later = now + chrono::Duration::seconds(1);
    assert_eq!(
        store.settle_refunds(&[claimed_first], later).await.unwrap().len(),
        1
    );
    store
        .claim_refunds(&[claim(paid_first, "rejected"), claim(claimed_first, "cancelled")])
        .await
        .unwrap();
    for _ in 0..2 {
        let mut refunds = store.settle_refunds(&all, Utc::now()).await.unwrap();
        refunds.sort_by_key(|r| r.order_id != paid_first);
        let seen: Vec<_> = refunds
            .iter()
            .map(|r| {
                (
                    r.order_id,
                    r.event_id,
                    r.amount_minor,
                    r.reason.as_str(),
                    r.refunded_at,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (paid_first, first.event_id, 1_000, "rejected", now),
                (claimed_first, early.event_id, 2_500, "cancelled", later),
            ]
        );
    }
}

#[tokio::test]
async fn postgres_makes_each_refund_once() {
    a_refund_is_made_once_whichever_comes_first(postgres().await).await;
}

#[tokio::test]
async fn sqlite_makes_each_refund_once() {
    let (store, _dir) = sqlite().await;
    a_refund_is_made_once_whichever_comes_first(store).await;
}

#[tokio::test]
async fn pipeline_outcomes_move_an_order_forward_in_any_arrival_order() {
    use orderflow_domain::OrderStatus::*;
    use orderflow_store::{PgStore, StatusChange};
    let store = postgres().await;
    let order = order("c-1", 1);
    store.insert_order(&order, &encoded(&order).await).await.unwrap();
    let Store::Postgres(pg) = &store else {
        panic!("postgres")
    };
    let change = |to: orderflow_domain::OrderStatus| StatusChange {
        order_id: order.id,
        from: to.pipeline_predecessors(),
        to,
        version: to.step_version().unwrap(),
        at: Utc::now(),
    };
    let apply = |c: StatusChange| async move {
        let mut tx = pg.pool().begin().await.unwrap();
        let moved = PgStore::advance_status(&mut tx, &c).await.unwrap();
        tx.commit().await.unwrap();
        moved
    };
    // The stock outcome is seen before the payment: it applies, and the payment then changes nothing.
    assert!(apply(change(Allocated)).await);
    assert!(!apply(change(Paid)).await);
    assert!(!apply(change(Allocated)).await, "a re-delivery changes nothing");
    let stored = store.get_order(order.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.version), (Allocated, 3));

    // A cancelled order (version 4) takes no pipeline outcome.
    let other = self::order("c-2", 1);
    store.insert_order(&other, &encoded(&other).await).await.unwrap();
    let cancelled = other.cancel(Utc::now()).unwrap();
    assert!(
        store
            .update_order(&other, &cancelled, &encoded(&other).await)
            .await
            .unwrap()
    );
    let mut late = change(Paid);
    late.order_id = other.id;
    assert!(!apply(late).await);
    assert_eq!(
        store.get_order(other.id).await.unwrap().unwrap().status,
        Cancelled
    );
}

fn reserve(order_id: orderflow_domain::OrderId, lines: &[(&str, i32)]) -> InventoryOp {
    InventoryOp::Reserve {
        order_id,
        lines: lines.iter().map(|(sku, q)| ((*sku).to_owned(), *q)).collect(),
        event_id: uuid::Uuid::now_v7(),
        at: Utc::now(),
    }
}

fn release(order_id: orderflow_domain::OrderId) -> InventoryOp {
    InventoryOp::Release {
        order_id,
        marker_id: uuid::Uuid::now_v7(),
        at: Utc::now(),
    }
}

async fn stock_of(store: &Store) -> Vec<(String, i32, i64)> {
    store
        .stock_lines()
        .await
        .expect("stock")
        .into_iter()
        .map(|l| (l.sku, l.stock, l.allocated))
        .collect()
}

/// One batch mixing every case plays as if its ops ran one by one, and playing it again changes nothing.
async fn a_batch_of_inventory_ops_plays_in_order(store: Store) {
    for (sku, stock) in [("A", 5), ("B", 2)] {
        let product = Product {
            sku: sku.into(),
            name: sku.into(),
            price_minor: 100,
            stock,
        };
        store.put_product(&product).await.expect("product");
    }
    let ids: Vec<orderflow_domain::OrderId> = (0..7).map(|_| orderflow_domain::OrderId::new()).collect();
    let ops = vec![
        reserve(ids[0], &[("B", 1), ("A", 2), ("A", 1)]), // allocated: A 3, B 1
        reserve(ids[1], &[("A", 2), ("B", 2)]),           // B short: rejected, A untouched
        reserve(ids[2], &[("Z", 1)]),                     // unknown product
        release(ids[3]),                                  // cancel first: a marker
        reserve(ids[3], &[("A", 1)]),                     // never allocated after its cancel
        reserve(ids[4], &[("A", 2)]),                     // allocated: A 5 of 5
        release(ids[4]),                                  // given back in the same batch
        reserve(ids[5], &[("A", 2), ("B", 1)]),           // fits only thanks to the release
        reserve(ids[0], &[("A", 1)]),                     // a re-delivery: the first outcome again
    ];
    let outcomes = store.apply_inventory(&ops).await.expect("apply");
    let allocated_first = match &outcomes[0] {
        InventoryOutcome::Allocated { event_id, lines, .. } => {
            assert_eq!(lines, &[("A".to_owned(), 3), ("B".to_owned(), 1)]);
            *event_id
        }
        other => panic!("first order: {other:?}"),
    };
    assert!(
        matches!(&outcomes[1], InventoryOutcome::Rejected { reason, sku, .. } if reason == "out of stock" && sku.as_deref() == Some("B")),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(&outcomes[2], InventoryOutcome::Rejected { reason, sku, .. } if reason == "unknown product" && sku.as_deref() == Some("Z")),
        "{:?}",
        outcomes[2]
    );
    assert!(matches!(outcomes[3], InventoryOutcome::Unchanged { .. }));
    assert!(matches!(outcomes[4], InventoryOutcome::Cancelled { .. }));
    assert!(matches!(outcomes[5], InventoryOutcome::Allocated { .. }));
    assert!(matches!(outcomes[6], InventoryOutcome::Released { .. }));
    assert!(matches!(outcomes[7], InventoryOutcome::Allocated { .. }));
    assert!(
        matches!(&outcomes[8], InventoryOutcome::Allocated { event_id, .. } if *event_id == allocated_first),
        "a re-delivery gets the recorded outcome: {:?}",
        outcomes[8]
    );
    // A: 5 - 3 - 2 + 2 - 2 = 0 left, 5 allocated; B: 2 - 1 - 1 = 0 left, 2 allocated.
    let expected = vec![("A".to_owned(), 0, 5), ("B".to_owned(), 0, 2)];
    assert_eq!(stock_of(&store).await, expected);

    // The whole batch again (a re-delivery after a crash): the same outcomes, the stock untouched, and a
    // later cancel of a stored allocation gives its stock back once.
    let again = store.apply_inventory(&ops[..3]).await.expect("again");
    assert_eq!(&again[..], &outcomes[..3]);
    assert_eq!(stock_of(&store).await, expected);
    let released = store
        .apply_inventory(&[release(ids[0]), release(ids[0])])
        .await
        .expect("release");
    assert!(matches!(released[0], InventoryOutcome::Released { .. }));
    assert!(matches!(released[1], InventoryOutcome::Unchanged { .. }));
    assert_eq!(
        stock_of(&store).await,
        vec![("A".to_owned(), 3, 2), ("B".to_owned(), 1, 1)]
    );
}

#[tokio::test]
async fn postgres_plays_a_batch_of_inventory_ops_in_order() {
    a_batch_of_inventory_ops_plays_in_order(postgres().await).await;
}

#[tokio::test]
async fn sqlite_plays_a_batch_of_inventory_ops_in_order() {
    let (store, _dir) = sqlite().await;
    a_batch_of_inventory_ops_plays_in_order(store).await;
}

/// Concurrent batches taking the same products in opposite orders neither deadlock nor oversell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inventory_batches_on_postgres_never_deadlock_or_oversell() {
    let store = postgres().await;
    let skus: Vec<String> = (0..20).map(|i| format!("SKU-{i:02}")).collect();
    for sku in &skus {
        let product = Product {
            sku: sku.clone(),
            name: sku.clone(),
            price_minor: 100,
            stock: 60,
        };
        store.put_product(&product).await.expect("product");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for batch in 0..16 {
        let (store, skus) = (store.clone(), skus.clone());
        tasks.spawn(async move {
            let ops: Vec<InventoryOp> = (0..50)
                .map(|i| {
                    let (a, b) = (&skus[(batch + i) % 20], &skus[(batch * 7 + i * 3 + 1) % 20]);
                    let lines = if batch % 2 == 0 {
                        [(a.as_str(), 1), (b.as_str(), 1)]
                    } else {
                        [(b.as_str(), 1), (a.as_str(), 1)]
                    };
                    reserve(orderflow_domain::OrderId::new(), &lines)
                })
                .collect();
            store.apply_inventory(&ops).await
        });
    }
    let (mut allocated, mut rejected) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        for outcome in done.expect("task").expect("no deadlock, no error") {
            match outcome {
                InventoryOutcome::Allocated { .. } => allocated += 1,
                InventoryOutcome::Rejected { .. } => rejected += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    // 1,600 units asked of 1,200 in stock: some orders are served, some are not.
    assert!(
        allocated > 0 && rejected > 0,
        "{allocated} allocated, {rejected} rejected"
    );
    for (sku, stock, held) in stock_of(&store).await {
        assert!(stock >= 0, "{sku} oversold");
        assert_eq!(i64::from(stock) + held, 60, "{sku} reconciles");
    }
}

/// Orders still `CREATED` or `PAID` long after their last change are found, oldest first; moving and
/// finished orders are not.
async fn stranded_orders_are_those_that_stopped_moving(store: Store) {
    let orders: Vec<Order> = (0..5).map(|i| order(&format!("stranded-{i}"), 1)).collect();
    for o in &orders {
        store.insert_order(o, &encoded(o).await).await.expect("insert");
    }
    // (status, minutes since the last change) of each order.
    let states = [
        ("PAID", 60),
        ("CREATED", 30),
        ("CREATED", 0),
        ("ALLOCATED", 90),
        ("PAYMENT_FAILED", 90),
    ];
    let sql = "UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3";
    for (o, (status, minutes)) in orders.iter().zip(states) {
        let at = Utc::now() - chrono::Duration::minutes(minutes);
        let updated = match &store {
            Store::Postgres(pg) => sqlx::query(sql)
                .bind(status)
                .bind(at)
                .bind(o.id.as_uuid())
                .execute(pg.pool())
                .await
                .map(|r| r.rows_affected()),
            Store::Sqlite(lite) => sqlx::query(sql)
                .bind(status)
                .bind(at)
                .bind(o.id.as_uuid())
                .execute(lite.pool())
                .await
                .map(|r| r.rows_affected()),
        };
        assert_eq!(updated.expect("age the order"), 1);
    }
    let before = Utc::now() - chrono::Duration::minutes(10);
    let stranded = store.stranded_orders(before, 20).await.expect("sweep");
    assert_eq!((stranded.created, stranded.paid), (1, 1));
    let named: Vec<(orderflow_domain::OrderId, String)> = stranded
        .oldest
        .iter()
        .map(|(id, status, _)| (*id, status.clone()))
        .collect();
    assert_eq!(
        named,
        [
            (orders[0].id, "PAID".to_owned()),
            (orders[1].id, "CREATED".to_owned())
        ],
        "the longest waiting first"
    );
    let limited = store.stranded_orders(before, 1).await.expect("sweep");
    assert_eq!((limited.created, limited.paid, limited.oldest.len()), (1, 1, 1));
}

#[tokio::test]
async fn postgres_finds_stranded_orders() {
    stranded_orders_are_those_that_stopped_moving(postgres().await).await;
}

#[tokio::test]
async fn sqlite_finds_stranded_orders() {
    let (store, _dir) = sqlite().await;
    stranded_orders_are_those_that_stopped_moving(store).await;
}

/// The catalogue is seeded only while it is empty: a filled one is never touched.
async fn a_catalogue_is_seeded_only_when_empty(store: Store) {
    let product = |sku: &str, stock| Product {
        sku: sku.into(),
        name: sku.into(),
        price_minor: 100,
        stock,
    };
    assert!(
        store
            .seed_catalogue(&[product("A", 5), product("B", 7)])
            .await
            .expect("seed")
    );
    assert!(
        !store
            .seed_catalogue(&[product("A", 99), product("C", 1)])
            .await
            .expect("again")
    );
    let lines: Vec<(String, i32)> = stock_of(&store)
        .await
        .into_iter()
        .map(|(s, n, _)| (s, n))
        .collect();
    assert_eq!(lines, [("A".to_owned(), 5), ("B".to_owned(), 7)]);
}

#[tokio::test]
async fn postgres_seeds_an_empty_catalogue_only() {
    a_catalogue_is_seeded_only_when_empty(postgres().await).await;
}

#[tokio::test]
async fn sqlite_seeds_an_empty_catalogue_only() {
    let (store, _dir) = sqlite().await;
    a_catalogue_is_seeded_only_when_empty(store).await;
}

async fn the_stock_ledger_follows_every_stock_write(store: Store) {
    let product = |stock| orderflow_store::Product {
        sku: "SKU-L".into(),
        name: "ledger".into(),
        price_minor: 100,
        stock,
    };
    // Large stock put again and again (as the bench does) never overflows what was received.
    for _ in 0..3 {
        store.put_product(&product(i32::MAX / 2)).await.expect("put");
    }
    store.put_product(&product(7)).await.expect("put");
    let ledger = store.stock_ledger().await.expect("ledger");
    let line = ledger.iter().find(|l| l.sku == "SKU-L").expect("line");
    assert_eq!((line.stock, line.allocated, line.received), (7, 0, Some(7)));
    assert!(line.balances());
}

#[tokio::test]
async fn postgres_keeps_the_stock_ledger() {
    the_stock_ledger_follows_every_stock_write(postgres().await).await;
}

#[tokio::test]
async fn sqlite_keeps_the_stock_ledger() {
    let (store, _dir) = sqlite().await;
    the_stock_ledger_follows_every_stock_write(store).await;
}

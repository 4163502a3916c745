//! The roles on real servers from the harness: PostgreSQL and Kafka (KRaft).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use orderflow_domain::{OrderId, OrderStatus};
use orderflow_events::{AvroCodec, OrderCreated, PaymentFailed, PaymentReceived};
use orderflow_roles::payments::{Decision, ProviderSettings, SimulatedProvider};
use orderflow_roles::{Platform, Role, Settings};
use orderflow_testkit::checks::{StockLine, assert_stock_reconciles, eventually, revenue_once_refunded};
use orderflow_testkit::{read_topic, unique};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

fn real_settings(tag: &str) -> Settings {
    let mut settings = Settings {
        data_dir: Some(std::env::temp_dir().join(unique("orderflow-roles"))),
        ..Settings::default()
    };
    settings.http.listen = "127.0.0.1:0".parse().unwrap();
    settings.database.url = Some(orderflow_testkit::postgres().fresh_database().unwrap());
    settings.kafka.bootstrap_servers = Some(orderflow_testkit::kafka().bootstrap_servers());
    settings.kafka.topic_prefix = format!("{}.", unique(tag));
    settings.kafka.partitions = Some(3);
    settings
}

/// Places an order for `qty` units of `sku` at the catalogue's price.
async fn post_order(client: &reqwest::Client, base: &str, customer: &str, sku: &str, qty: i64) -> Value {
    let body = json!({"customer_id": customer, "currency": "EUR",
        "items": [{"sku": sku, "quantity": qty}]});
    let response = client
        .post(format!("{base}/v1/orders"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}

/// A product priced `price` with plenty in stock (put in the catalogue the first time): its SKU.
async fn priced(store: &orderflow_store::Store, price: i64) -> String {
    let sku = format!("AT-{price}");
    if store.get_product(&sku).await.unwrap().is_none() {
        let product = orderflow_store::Product {
            sku: sku.clone(),
            name: format!("product at {price}"),
            price_minor: price,
            stock: 1_000_000,
        };
        store.put_product(&product).await.unwrap();
    }
    sku
}

/// The JSON body of a GET.
async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// What the provider must answer for an order, computed here from the same seed and rules.
fn expected(provider: &SimulatedProvider, order: &Value) -> Decision {
    let event = OrderCreated {
        event_id: String::new(),
        event_type: "order.created".into(),
        order_id: order["id"].as_str().unwrap().into(),
        order_version: 1,
        occurred_at: 0,
        customer_id: order["customer_id"].as_str().unwrap().into(),
        currency: "EUR".into(),
        items: Vec::new(),
        total_minor: order["total_minor"].as_i64().unwrap(),
    };
    provider.decide(&event).0
}

/// What the payment topics say about one order.
#[derive(Default)]
struct Reported {
    /// Event ids seen.
    events: HashSet<String>,
    /// Payment ids seen.
    payments: HashSet<String>,
    /// Reported as payment.received.
    captured: bool,
    /// The reason of a payment.failed.
    reason: Option<String>,
}

/// Per order id, what every payment record read says.
async fn payments_by_order(
    codec: &AvroCodec,
    prefix: &str,
    received: usize,
    failed: usize,
) -> HashMap<String, Reported> {
    let bootstrap = orderflow_testkit::kafka().bootstrap_servers();
    let mut by_order: HashMap<String, Reported> = HashMap::new();
    let records = read_topic(
        &bootstrap,
        &format!("{prefix}payment.received"),
        received,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(records.len(), received, "payment.received records");
    for r in records {
        let e: PaymentReceived = codec.decode(&r.payload).await.unwrap();
        assert_eq!(r.key, e.order_id);
        assert_eq!(e.order_version, 2);
        let entry = by_order.entry(e.order_id).or_default();
        entry.events.insert(e.event_id);
        entry.payments.insert(e.payment_id);
        entry.captured = true;
    }
    let records = read_topic(
        &bootstrap,
        &format!("{prefix}payment.failed"),
        failed,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(records.len(), failed, "payment.failed records");
    for r in records {
        let e: PaymentFailed = codec.decode(&r.payload).await.unwrap();
        let entry = by_order.entry(e.order_id).or_default();
        entry.events.insert(e.event_id);
        entry.payments.insert(e.payment_id);
        entry.reason = Some(e.reason);
    }
    by_order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_charge_each_order_once_and_orders_follow_the_outcome() {
    const ORDERS: usize = 240;
    let mut settings = real_settings("payments");
    settings.payments.provider = ProviderSettings {
        seed: 11,
        failure_rate: 0.1,
        decline_above_minor: Some(20_000),
        latency_jitter_ms: 3,
        ..ProviderSettings::default()
    };
    let provider = SimulatedProvider::new(settings.payments.provider.clone());
    let prefix = settings.kafka.topic_prefix.clone();
    let platform = Platform::start(settings, &[Role::Orders, Role::Payments])
        .await
        .unwrap();
    let base = format!("http://{}", platform.http_addr.unwrap());
    let (store, codec) = (platform.backends.store.clone(), platform.backends.codec.clone());

    let client = reqwest::Client::new();
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        // Every seventh order is over the provider's limit.
        let unit_price = if i % 7 == 0 { 30_000 } else { 1_000 + i as i64 };
        let sku = priced(&store, unit_price).await;
        orders.push(post_order(&client, &base, &format!("cust-{}", i % 13), &sku, 1).await);
    }
    let decisions: HashMap<String, Decision> = orders
        .iter()
        .map(|o| (o["id"].as_str().unwrap().to_owned(), expected(&provider, o)))
        .collect();
    let captured = decisions.values().filter(|d| **d == Decision::Captured).count();
    let provider_failures = decisions
        .values()
        .filter(|d| matches!(d, Decision::Failed(_)))
        .count();
    assert!(captured > 0 && provider_failures > 0 && captured + provider_failures < ORDERS);

    // Exactly one payment event per order, on the topic the seeded provider dictates.
    let by_order = payments_by_order(&codec, &prefix, captured, ORDERS - captured).await;
    assert_eq!(by_order.len(), ORDERS);
    for (id, decision) in &decisions {
        let reported = &by_order[id];
        assert_eq!(
            (reported.events.len(), reported.payments.len()),
            (1, 1),
            "order {id}"
        );
        match decision {
            Decision::Captured => assert!(reported.captured),
            Decision::Declined(r) | Decision::Failed(r) => {
                assert_eq!(reported.reason.as_deref(), Some(r.as_str()))
            }
        }
    }
    let totals = store.charge_totals().await.unwrap();
    assert_eq!((totals.charges, totals.attempts), (ORDERS as i64, ORDERS as i64));
    let paid_total: i64 = orders
        .iter()
        .filter(|o| decisions[o["id"].as_str().unwrap()] == Decision::Captured)
        .map(|o| o["total_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(totals.captured_minor, paid_total);

    // The orders service follows: each order is PAID or PAYMENT_FAILED at version 2, in the database and
    // over HTTP (the follower drops the cached version 1).
    let status_of = |id: &str| {
        if decisions[id] == Decision::Captured {
            OrderStatus::Paid
        } else {
            OrderStatus::PaymentFailed
        }
    };
    for order in &orders {
        let id = order["id"].as_str().unwrap();
        let order_id: OrderId = id.parse().unwrap();
        let stored = eventually("the status follower", Duration::from_secs(30), || {
            let store = store.clone();
            async move {
                let o = store.get_order(order_id).await.unwrap().unwrap();
                (o.status != OrderStatus::Created).then_some(o)
            }
        })
        .await;
        assert_eq!((stored.status, stored.version), (status_of(id), 2), "order {id}");
    }
    let first = orders[1]["id"].as_str().unwrap();
    let read: Value = client
        .get(format!("{base}/v1/orders/{first}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], status_of(first).as_str());

    // Cancel follows the status the pipeline reached: allowed after PAID, refused after PAYMENT_FAILED.
    let paid = orders
        .iter()
        .find(|o| status_of(o["id"].as_str().unwrap()) == OrderStatus::Paid)
        .unwrap();
    let failed = orders
        .iter()
        .find(|o| status_of(o["id"].as_str().unwrap()) != OrderStatus::Paid)
        .unwrap();
    let cancel = |id: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/v1/orders/{id}/cancel"))
                .send()
                .await
                .unwrap()
        }
    };
    let ok = cancel(paid["id"].as_str().unwrap().to_owned()).await;
    assert_eq!(ok.status().as_u16(), 200);
    let cancelled: Value = ok.json().await.unwrap();
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["version"].as_i64()),
        (Some("CANCELLED"), Some(4))
    );
    assert_eq!(
        cancel(failed["id"].as_str().unwrap().to_owned())
            .await
            .status()
            .as_u16(),
        409
    );

    // Every order.created published again (same event ids, as a relay crash before marking would do):
    // the ledger counts the attempts but charges nothing more, and every payment event is repeated with
    // the same event and payment id, so consumers dedupe it.
    assert_eq!(republish(&format!("{prefix}order.created"), ORDERS).await, ORDERS);
    let attempts = eventually(
        "the re-delivered orders to be charged",
        Duration::from_secs(60),
        || {
            let store = store.clone();
            async move {
                let t = store.charge_totals().await.unwrap();
                (t.attempts == 2 * ORDERS as i64).then_some(t)
            }
        },
    )
    .await;
    assert_eq!(attempts.charges, ORDERS as i64);
    assert_eq!(attempts.captured_minor, paid_total);
    let again = payments_by_order(&codec, &prefix, 2 * captured, 2 * (ORDERS - captured)).await;
    for (id, reported) in &again {
        assert_eq!(reported.events, by_order[id].events, "order {id}");
        assert_eq!(reported.payments, by_order[id].payments, "order {id}");
    }
    // And no order moved: the duplicates carry the version the orders already have.
    let cancelled_id: OrderId = paid["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        store.get_order(cancelled_id).await.unwrap().unwrap().status,
        OrderStatus::Cancelled
    );

    platform.stop().await.unwrap();
}

fn with_redis(mut settings: Settings) -> Settings {
    settings.cache.redis_url = Some(orderflow_testkit::redis().url());
    settings.cache.key_prefix = format!("{}:", unique("roles"));
    settings
}

/// Deletes every key of the deployment with Redis key prefix `key_prefix` from the harness's Redis (other
/// tests share it, so no FLUSHALL); returns the keys deleted. One script finds and deletes them, so the loss
/// is atomic as a FLUSHALL or an empty restart is: a separate KEYS and DEL would leave keys written between
/// the two (an analytics order mark whose count was deleted, which a rebuild would then skip).
async fn delete_keys(key_prefix: &str) -> Vec<String> {
    let mut redis = redis::Client::open(orderflow_testkit::redis().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::Script::new(
        r"
local keys = redis.call('KEYS', ARGV[1])
for i = 1, #keys, 1000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
end
return keys",
    )
    .arg(format!("*{key_prefix}*"))
    .invoke_async(&mut redis)
    .await
    .unwrap()
}

/// Decoded records of `topic` (full name), reading until `expected` arrived or `timeout` passed.
async fn read_events<E: orderflow_events::Event>(
    codec: &AvroCodec,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<E> {
    let bootstrap = orderflow_testkit::kafka().bootstrap_servers();
    let topic = topic.to_owned();
    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic, expected, timeout))
        .await
        .unwrap()
        .unwrap();
    let mut events = Vec::new();
    for r in records {
        events.push(codec.decode::<E>(&r.payload).await.unwrap());
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_tiers_come_from_the_database_while_redis_does_not_answer() {
    let url = orderflow_testkit::postgres().fresh_database().unwrap();
    let store = orderflow_store::Store::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    store.set_customer_tier("cust-gold", "gold").await.unwrap();
    let redis = tokio::task::spawn_blocking(|| orderflow_testkit::RedisServer::start().unwrap())
        .await
        .unwrap();
    let target = orderflow_redis::RedisTarget {
        urls: vec![redis.url()],
        ..Default::default()
    };
    let connection = orderflow_redis::RedisConnection::connect(&target).await.unwrap();
    let tiers = orderflow_roles::enrichment::CustomerTiers::new(Some(connection), "tiers:");
    tiers.load(&store).await.unwrap();
    let customers = ["cust-gold", "cust-plain", "cust-gold"];
    let want = ["gold", "standard", "gold"];
    assert_eq!(tiers.lookup(&store, &customers).await.unwrap(), want);

    redis.kill();
    assert_eq!(
        tiers.lookup(&store, &customers).await.unwrap(),
        want,
        "read from the database while Redis is down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_joins_paid_orders_with_their_tier_and_its_state_survives_a_restart_and_a_redis_loss() {
    const ORDERS: usize = 30;
    let mut settings = with_redis(real_settings("enrich"));
    let store = orderflow_store::Store::connect(settings.database.url.as_deref().unwrap(), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.set_customer_tier("cust-gold", "gold").await.unwrap();
    settings.payments.provider.decline_above_minor = Some(5_000);
    let (prefix, key_prefix) = (
        settings.kafka.topic_prefix.clone(),
        settings.cache.key_prefix.clone(),
    );

    // First the orders arrive with no payments role running: the join holds them, in the database.
    let first = Platform::start(settings.clone(), &[Role::Orders, Role::Enrichment])
        .await
        .unwrap();
    let base = format!("http://{}", first.http_addr.unwrap());
    let client = reqwest::Client::new();
    let mut orders = Vec::new();
    for i in 0..ORDERS {
        let customer = if i % 2 == 0 { "cust-gold" } else { "cust-plain" };
        // Every third order is declined by the provider.
        let price = if i % 3 == 0 { 9_000 } else { 1_000 + i as i64 };
        let sku = priced(&store, price).await;
        orders.push(post_order(&client, &base, customer, &sku, 1).await);
    }
    let orderflow_store::Store::Postgres(pg) = &store else {
        panic!("postgres")
    };
    let pool = pg.pool().clone();
    eventually(
        "the orders to wait in the join state",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM join_state WHERE join_name = 'enrichment' AND left_record IS NOT NULL",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (n as usize == ORDERS).then_some(())
            }
        },
    )
    .await;
    first.stop().await.unwrap();

    // Redis loses every key of this deployment (the customer tiers among them) while nothing runs.
    let lost = delete_keys(&key_prefix).await;
    assert!(
        lost.iter().any(|k| k.contains("customer-tier")),
        "the tiers were in Redis: {lost:?}"
    );

    // Restarted with payments: the orders consumed before the restart are joined from the stored state, and
    // the tiers Redis lost are reloaded before the first one is read.
    let second = Platform::start(settings, &[Role::Payments, Role::Enrichment])
        .await
        .unwrap();
    let codec = second.backends.codec.clone();
    let paid: Vec<&Value> = orders
        .iter()
        .filter(|o| o["total_minor"].as_i64().unwrap() <= 5_000)
        .collect();
    let enriched: Vec<orderflow_events::OrderEnriched> = read_events(
        &codec,
        &format!("{prefix}order.enriched"),
        paid.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(enriched.len(), paid.len(), "one order.enriched per paid order");
    let by_id: HashMap<&str, &orderflow_events::OrderEnriched> =
        enriched.iter().map(|e| (e.order_id.as_str(), e)).collect();
    assert_eq!(by_id.len(), paid.len());
    for order in paid {
        let e = by_id[order["id"].as_str().unwrap()];
        let tier = if order["customer_id"] == "cust-gold" {
            "gold"
        } else {
            "standard"
        };
        assert_eq!(e.customer_tier, tier);
        assert_eq!(e.paid_minor, order["total_minor"].as_i64().unwrap());
        assert_eq!((e.total_minor, e.order_version), (e.paid_minor, 2));
        assert_eq!(e.items.len(), 1);
    }
    // Nothing was reported unpaid: the window (5 minutes) has not passed.
    let unpaid: Vec<orderflow_events::OrderUnpaid> = read_events(
        &codec,
        &format!("{prefix}order.unpaid"),
        1,
        Duration::from_secs(2),
    )
    .await;
    assert!(unpaid.is_empty());
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_without_a_payment_in_the_window_are_reported_once_and_late_payments_join_nothing() {
    const ORDERS: usize = 5;
    let mut settings = with_redis(real_settings("unpaid"));
    settings.enrichment.window_secs = 1;
    settings.enrichment.grace_secs = 0;
    settings.enrichment.sweep_interval_ms = 100;
    let prefix = settings.kafka.topic_prefix.clone();
    let platform = Platform::start(settings.clone(), &[Role::Orders, Role::Enrichment])
        .await
        .unwrap();
    let base = format!("http://{}", platform.http_addr.unwrap());
    let codec = platform.backends.codec.clone();
    let client = reqwest::Client::new();
    let mut ids = HashSet::new();
    for _ in 0..ORDERS {
        let sku = priced(&platform.backends.store, 1_500).await;
        let order = post_order(&client, &base, "cust-slow", &sku, 2).await;
        ids.insert(order["id"].as_str().unwrap().to_owned());
    }
    let topic = format!("{prefix}order.unpaid");
    let unpaid: Vec<orderflow_events::OrderUnpaid> =
        read_events(&codec, &topic, ORDERS, Duration::from_secs(30)).await;
    assert_eq!(
        unpaid.iter().map(|u| u.order_id.clone()).collect::<HashSet<_>>(),
        ids
    );
    assert!(
        unpaid
            .iter()
            .all(|u| u.total_minor == 3_000 && u.waited_ms == 1_000)
    );
    // Sweeps go on, but each order is reported once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: Vec<orderflow_events::OrderUnpaid> =
        read_events(&codec, &topic, ORDERS + 1, Duration::from_secs(2)).await;
    assert_eq!(again.len(), ORDERS);

    // The payments come now, too late: they are charged, but the join emits nothing for them.
    let payments = Platform::start(settings, &[Role::Payments]).await.unwrap();
    let received: Vec<PaymentReceived> = read_events(
        &codec,
        &format!("{prefix}payment.received"),
        ORDERS,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(received.len(), ORDERS);
    let enriched: Vec<orderflow_events::OrderEnriched> = read_events(
        &codec,
        &format!("{prefix}order.enriched"),
        1,
        Duration::from_secs(3),
    )
    .await;
    assert!(enriched.is_empty(), "late payments are not joined");
    payments.stop().await.unwrap();
    platform.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_never_oversells_releases_on_cancel_and_every_rejected_or_cancelled_paid_order_is_refunded()
{
    const ORDERS: usize = 24;
    const STOCK: i32 = 10;
    let settings = with_redis(real_settings("inventory"));
    let settings_prefix = settings.kafka.topic_prefix.clone();
    let store = orderflow_store::Store::connect(settings.database.url.as_deref().unwrap(), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let product = |sku: &str, stock| orderflow_store::Product {
        sku: sku.into(),
        name: format!("product {sku}"),
        price_minor: 1_000,
        stock,
    };
    store.put_product(&product("SKU-1", STOCK)).await.unwrap();
    let roles = [Role::Orders, Role::Payments, Role::Enrichment, Role::Inventory];
    let platform = Platform::start(settings, &roles).await.unwrap();
    let base = format!("http://{}", platform.http_addr.unwrap());
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let order = post_order(&client, &base, &format!("c-{i}"), "SKU-1", 1).await;
        ids.push(order["id"].as_str().unwrap().parse::<OrderId>().unwrap());
    }
    // An order for a product sold out from the start.
    store.put_product(&product("SKU-9", 0)).await.unwrap();
    let unknown = post_order(&client, &base, "c-x", "SKU-9", 1).await;
    let unknown: OrderId = unknown["id"].as_str().unwrap().parse().unwrap();

    let final_status = |id: OrderId| {
        let store = store.clone();
        async move {
            eventually(
                "the order to reach a stock outcome",
                Duration::from_secs(60),
                || {
                    let store = store.clone();
                    async move {
                        let o = store.get_order(id).await.unwrap().unwrap();
                        matches!(o.status, OrderStatus::Allocated | OrderStatus::Rejected).then_some(o)
                    }
                },
            )
            .await
        }
    };
    let mut allocated = Vec::new();
    for id in &ids {
        let order = final_status(*id).await;
        assert_eq!(order.version, 3);
        if order.status == OrderStatus::Allocated {
            allocated.push(*id);
        }
    }
    assert_eq!(
        allocated.len(),
        STOCK as usize,
        "exactly the stock is sold, never more"
    );
    assert_eq!(final_status(unknown).await.status, OrderStatus::Rejected);
    let lines = store.stock_lines().await.unwrap();
    assert_eq!((lines[0].stock, lines[0].allocated), (0, i64::from(STOCK)));

    // Cancelling an allocated order gives its unit back, once.
    let cancelled = allocated[0];
    let response = client
        .post(format!("{base}/v1/orders/{cancelled}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let stock = eventually("the stock to come back", Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let p = store.get_product("SKU-1").await.unwrap().unwrap();
            (p.stock == 1).then_some(p.stock)
        }
    })
    .await;
    let lines = store.stock_lines().await.unwrap();
    assert_eq!(
        i64::from(stock) + lines[0].allocated,
        i64::from(STOCK),
        "stock reconciles"
    );
    let order = store.get_order(cancelled).await.unwrap().unwrap();
    assert_eq!((order.status, order.version), (OrderStatus::Cancelled, 4));
    // A rejected order cannot be cancelled.
    let rejected = ids.iter().find(|id| !allocated.contains(id)).unwrap();
    let response = client
        .post(format!("{base}/v1/orders/{rejected}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);

    // Every rejected order was paid and is refunded once, in full, and so is the cancelled one: a
    // payment.refunded each, and the ledger's refunds, agree.
    let mut owed: Vec<OrderId> = ids.iter().filter(|id| !allocated.contains(id)).copied().collect();
    owed.push(unknown);
    owed.push(cancelled);
    let refunded_topic = format!("{}payment.refunded", settings_prefix);
    let refunds = eventually(
        "a refund per rejected or cancelled order",
        Duration::from_secs(60),
        || {
            let (topic, codec, owed) = (
                refunded_topic.clone(),
                platform.backends.codec.clone(),
                owed.clone(),
            );
            async move {
                let records = tokio::task::spawn_blocking(move || {
                    read_topic(
                        &orderflow_testkit::kafka().bootstrap_servers(),
                        &topic,
                        usize::MAX,
                        Duration::from_secs(2),
                    )
                })
                .await
                .unwrap()
                .unwrap();
                let mut refunds: HashMap<String, (String, i64)> = HashMap::new();
                for record in records {
                    let event: orderflow_events::PaymentRefunded =
                        codec.decode(&record.payload).await.unwrap();
                    // The same refund reported again keeps its event id.
                    let known = refunds.insert(
                        event.order_id.clone(),
                        (event.event_id.clone(), event.amount_minor),
                    );
                    assert!(known.is_none_or(|(id, _)| id == event.event_id));
                }
                (refunds.len() == owed.len()).then_some(refunds)
            }
        },
    )
    .await;
    for id in &owed {
        assert_eq!(refunds[&id.to_string()].1, 1_000, "order {id} refunded in full");
    }
    platform.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_every_event_once_and_verification_catches_tampering() {
    use orderflow_store::AuditVerdict;
    const ORDERS: usize = 20;
    let settings = real_settings("audit");
    let db_url = settings.database.url.clone().unwrap();
    let prefix = settings.kafka.topic_prefix.clone();
    let platform = Platform::start(settings, &[Role::Orders, Role::Payments, Role::Audit])
        .await
        .unwrap();
    let base = format!("http://{}", platform.http_addr.unwrap());
    let store = platform.backends.store.clone();
    let client = reqwest::Client::new();
    for i in 0..ORDERS {
        let sku = priced(&store, 700).await;
        post_order(&client, &base, &format!("c-{i}"), &sku, 1).await;
    }
    // order.created and one payment event per order; re-publishing order.created (same event ids) makes
    // payments report again (same event ids), and the trail still holds each event once.
    let expected = 2 * ORDERS as u64;
    eventually("every event in the audit trail", Duration::from_secs(60), || {
        let store = store.clone();
        async move { (store.verify_audit().await.unwrap() == AuditVerdict::Intact(expected)).then_some(()) }
    })
    .await;
    assert_eq!(republish(&format!("{prefix}order.created"), ORDERS).await, ORDERS);
    eventually(
        "the re-published orders to be charged again",
        Duration::from_secs(60),
        || {
            let store = store.clone();
            async move { (store.charge_totals().await.unwrap().attempts == 2 * ORDERS as i64).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Intact(expected)
    );
    platform.stop().await.unwrap();

    let store = orderflow_store::Store::connect(&db_url, 2).await.unwrap();
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let broken_at = |verdict: AuditVerdict| match verdict {
        AuditVerdict::Broken { seq, reason } => (seq, reason),
        intact => panic!("tampering went unnoticed: {intact:?}"),
    };
    // A changed row.
    let (payload,): (Vec<u8>,) = sqlx::query_as("SELECT payload FROM audit_log WHERE seq = 5")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET payload = $1 WHERE seq = 5")
        .bind(b"forged".as_slice())
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken_at(store.verify_audit().await.unwrap());
    assert_eq!(seq, 5);
    assert!(reason.contains("changed"), "{reason}");
    sqlx::query("UPDATE audit_log SET payload = $1 WHERE seq = 5")
        .bind(&payload)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Intact(expected)
    );

    // Two rows swapped: the one at 11 moved before the one at 10.
    let swap = |pool: sqlx::PgPool| async move {
        for (from, to) in [(10, -1), (11, 10), (-1, 11)] {
            sqlx::query("UPDATE audit_log SET seq = $2 WHERE seq = $1")
                .bind(from as i64)
                .bind(to as i64)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    swap(pool.clone()).await;
    assert_eq!(broken_at(store.verify_audit().await.unwrap()).0, 10);
    swap(pool.clone()).await;
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Intact(expected)
    );

    // A removed row (put back afterwards), and a removed last row.
    sqlx::query("CREATE TABLE audit_saved AS SELECT * FROM audit_log WHERE seq = 7")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE seq = 7")
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken_at(store.verify_audit().await.unwrap());
    assert_eq!(seq, 7);
    assert!(reason.contains("missing"), "{reason}");
    sqlx::query("INSERT INTO audit_log SELECT * FROM audit_saved")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Intact(expected)
    );
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(expected as i64)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(broken_at(store.verify_audit().await.unwrap()).0, expected as i64);
}

/// How many orders the lifecycle test places (`LIFECYCLE_ORDERS`, default 10,000).
fn lifecycle_orders() -> usize {
    std::env::var("LIFECYCLE_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Copies `count` records of `topic` back onto it (same keys, values and headers), as a producer retry or
/// a relay crash would.
async fn republish(topic: &str, count: usize) -> usize {
    let (b, t) = (orderflow_testkit::kafka().bootstrap_servers(), topic.to_owned());
    let records = tokio::task::spawn_blocking(move || read_topic(&b, &t, count, Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    send_again(topic, &records[..records.len().min(count)]).await
}

/// Publishes the records of `topic` keyed `key` again (read for 3 s), as a redelivery would; returns how many.
async fn republish_of(topic: &str, key: &str) -> usize {
    let (b, t) = (orderflow_testkit::kafka().bootstrap_servers(), topic.to_owned());
    let records = tokio::task::spawn_blocking(move || read_topic(&b, &t, usize::MAX, Duration::from_secs(3)))
        .await
        .unwrap()
        .unwrap();
    let of_key: Vec<_> = records.into_iter().filter(|r| r.key == key).collect();
    send_again(topic, &of_key).await
}

/// Publishes `records` to `topic` again, with their keys and headers; returns how many.
async fn send_again(topic: &str, records: &[orderflow_testkit::Record]) -> usize {
    let bootstrap = orderflow_testkit::kafka().bootstrap_servers();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = records.iter().map(|record| {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        producer.send(
            FutureRecord::to(topic)
                .key(&record.key)
                .payload(&record.payload)
                .headers(headers),
            Duration::from_secs(30),
        )
    });
    let sent = futures::future::join_all(sends).await;
    sent.iter().filter(|r| r.is_ok()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_orders_end_where_the_rules_say_and_everything_reconciles() {
    use orderflow_store::AuditVerdict;
    let orders_n = lifecycle_orders();
    // A quarter of the orders want the scarce product; there is enough for a tenth.
    let scarce_stock = (orders_n / 10) as i32;
    let mut settings = with_redis(real_settings("lifecycle"));
    settings.payments.provider = ProviderSettings {
        seed: 3,
        failure_rate: 0.05,
        decline_above_minor: Some(40_000),
        ..ProviderSettings::default()
    };
    settings.database.max_connections = 24;
    let provider = SimulatedProvider::new(settings.payments.provider.clone());
    let prefix = settings.kafka.topic_prefix.clone();
    let key_prefix = settings.cache.key_prefix.clone();
    let db_url = settings.database.url.clone().unwrap();
    let store = orderflow_store::Store::connect(&db_url, 4).await.unwrap();
    store.migrate().await.unwrap();
    for (sku, price_minor, stock) in orderflow_testkit::workload::catalogue(scarce_stock) {
        let product = orderflow_store::Product {
            sku: sku.into(),
            name: sku.into(),
            price_minor,
            stock,
        };
        store.put_product(&product).await.unwrap();
    }
    let roles = [
        Role::Orders,
        Role::Payments,
        Role::Enrichment,
        Role::Inventory,
        Role::Projector,
        Role::Analytics,
        Role::Audit,
    ];
    let began = chrono::Utc::now();
    let platform = Platform::start(settings, &roles).await.unwrap();
    let base = format!("http://{}", platform.http_addr.unwrap());
    let client = reqwest::Client::new();

    // Place the orders from 8 clients; every 10th is cancelled at once (from CREATED or PAID, whichever
    // it is in by then; a 409 is fine when the payment already failed).
    let half = orders_n / 2;
    let mut placed = orderflow_testkit::workload::place_orders(&reqwest::Client::new(), &base, 0, half)
        .await
        .unwrap();
    // Halfway, Redis loses every key of this deployment (as in a FLUSHALL or a restart that comes back
    // empty): the analytics aggregates that counted the first orders, the cache, the read model, the tiers.
    // The second half is placed after it.
    let lost = delete_keys(&key_prefix).await;
    assert!(
        lost.iter().any(|k| k.ends_with("analytics}:funnel")),
        "analytics had counted orders before the loss: {} keys lost",
        lost.len()
    );
    placed.extend(
        orderflow_testkit::workload::place_orders(&reqwest::Client::new(), &base, half, orders_n - half)
            .await
            .unwrap(),
    );
    assert_eq!(placed.len(), orders_n);

    // Events delivered again on purpose: 500 order.created and 500 payment.received copies.
    assert_eq!(republish(&format!("{prefix}order.created"), 500).await, 500);
    assert_eq!(republish(&format!("{prefix}payment.received"), 500).await, 500);

    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let terminal = "status IN ('PAYMENT_FAILED', 'ALLOCATED', 'REJECTED', 'CANCELLED')";
    eventually(
        "every order to reach a terminal state",
        Duration::from_secs(600),
        || {
            let pool = pool.clone();
            async move {
                let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM orders WHERE {terminal}"))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                (n as usize == orders_n).then_some(())
            }
        },
    )
    .await;

    // Cancel some allocated orders: their stock comes back.
    let allocated: Vec<(uuid::Uuid,)> =
        sqlx::query_as("SELECT id FROM orders WHERE status = 'ALLOCATED' ORDER BY id LIMIT 100")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (id,) in &allocated {
        let response = client
            .post(format!("{base}/v1/orders/{id}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    let late_cancels: HashSet<String> = allocated.iter().map(|(id,)| id.to_string()).collect();

    // Every order ends where the rules say.
    let statuses: HashMap<String, String> =
        sqlx::query_as::<_, (uuid::Uuid, String)>("SELECT id, status FROM orders")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, status)| (id.to_string(), status))
            .collect();
    for (order, cancelled) in &placed {
        let id = order["id"].as_str().unwrap();
        let status = statuses[id].as_str();
        let cancelled = *cancelled || late_cancels.contains(id);
        let expected: &[&str] = match (cancelled, expected(&provider, order)) {
            (true, _) => &["CANCELLED"],
            (false, Decision::Captured) => &["ALLOCATED", "REJECTED"],
            (false, _) => &["PAYMENT_FAILED"],
        };
        assert!(
            expected.contains(&status),
            "order {id} is {status}, expected one of {expected:?}"
        );
        let scarce = order["items"].as_array().unwrap().len() == 2;
        if status == "REJECTED" {
            assert!(scarce, "only orders for the scarce product are rejected: {id}");
        }
    }

    // Stock never went negative and reconciles with the reservations; the scarce product sold out.
    // Every cancelled order that held stock gives it back: the 100 late cancels, and any cancel placed "at
    // once" that still found its order allocated.
    let late: Vec<uuid::Uuid> = allocated.iter().map(|(id,)| *id).collect();
    eventually("the cancelled orders' stock released", Duration::from_secs(60), || {
        let (pool, late) = (pool.clone(), late.clone());
        async move {
            let (held,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM inventory_reservations r JOIN orders o ON o.id = r.order_id
                 WHERE o.status = 'CANCELLED' AND r.status = 'ALLOCATED'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            let (released,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM inventory_reservations WHERE status = 'RELEASED' AND order_id = ANY($1)",
            )
            .bind(&late)
            .fetch_one(&pool)
            .await
            .unwrap();
            (held == 0 && released as usize == late.len()).then_some(())
        }
    })
    .await;
    let lines = store.stock_lines().await.unwrap();
    assert_stock_reconciles(
        lines.iter().map(|l| StockLine {
            sku: &l.sku,
            stock: l.stock.into(),
            allocated: l.allocated,
        }),
        |sku| {
            if sku == "SCARCE" {
                scarce_stock.into()
            } else {
                1_000_000
            }
        },
    );
    let (rejected,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders WHERE status = 'REJECTED'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(rejected > 0, "the scarce product ran out");

    // One charge per order, however often the orders were delivered.
    let totals = store.charge_totals().await.unwrap();
    assert_eq!(totals.charges, orders_n as i64);
    assert_eq!(totals.attempts, orders_n as i64 + 500);

    // The audit trail holds every event once and its chain is intact.
    let (start, mut previous) = (Instant::now(), None);
    let rows = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let verdict = store.verify_audit().await.unwrap();
        let AuditVerdict::Intact(rows) = verdict else {
            panic!("audit trail broken: {verdict:?}")
        };
        if previous == Some(rows) {
            break rows;
        }
        previous = Some(rows);
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the audit trail did not settle"
        );
    };
    assert!(rows >= 2 * orders_n as u64, "{rows} audited events");

    // Every rejected or cancelled paid order is refunded once; analytics revenue is captured less refunded,
    // and the funnel counts each order once per stage, re-deliveries and the Redis loss notwithstanding (the
    // aggregates were rebuilt from the database).
    let expected = eventually("every refund owed to be made", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { revenue_once_refunded(&pool).await.unwrap() }
    })
    .await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_as::<_, (i64,)>(sql).fetch_one(&pool).await.unwrap().0 }
    };
    let captured = count("SELECT COUNT(*) FROM payment_charges WHERE outcome = 'CAPTURED'").await;
    let cancelled = count("SELECT COUNT(*) FROM orders WHERE status = 'CANCELLED'").await;
    let allocations =
        count("SELECT COUNT(*) FROM inventory_reservations WHERE status IN ('ALLOCATED', 'RELEASED')").await;
    let refunded = count("SELECT COUNT(*) FROM payment_refunds WHERE refunded_at IS NOT NULL").await;
    assert!(expected > 0);
    assert!(refunded > 0, "rejected and cancelled paid orders were refunded");
    let range = format!(
        "from={}&to={}",
        (began - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let revenue_url = format!("{base}/v1/analytics/revenue?{range}");
    let funnel_url = format!("{base}/v1/analytics/funnel");
    // Topics are counted concurrently: a late order.created partition can trail the payments. On a timeout
    // the last answers are named, so that a count that went wrong tells apart from one still on its way.
    let waited = Instant::now();
    let funnel = loop {
        let revenue = get_json(&client, &revenue_url).await;
        let funnel = get_json(&client, &funnel_url).await;
        if revenue["total_minor"]["EUR"].as_i64() == Some(expected)
            && funnel["created"].as_i64() == Some(orders_n as i64)
            && funnel["cancelled"].as_i64() == Some(cancelled)
            && funnel["refunded"].as_i64() == Some(refunded)
        {
            break funnel;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "analytics did not count every order within 120 s: revenue {revenue} (expected EUR {expected}), \
             funnel {funnel} (expected created {orders_n}, cancelled {cancelled}, refunded {refunded})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(funnel["created"].as_i64(), Some(orders_n as i64));
    assert_eq!(funnel["paid"].as_i64(), Some(captured));
    assert_eq!(funnel["allocated"].as_i64(), Some(allocations));
    let customers = get_json(&client, &format!("{base}/v1/analytics/customers?{range}")).await;
    let unique = customers["total"].as_u64().unwrap();
    assert!(
        (290..=310).contains(&unique),
        "about 300 distinct customers, HyperLogLog says {unique}"
    );
    let top = get_json(&client, &format!("{base}/v1/analytics/top-products?limit=1")).await;
    assert_eq!(top["products"][0]["sku"], "PLENTY");
    platform.stop().await.unwrap();
}

/// The newest (highest version) value per order among every record of `topic` (read for 3 s), decoded as `E`.
async fn newest_per_order<E: orderflow_events::Event>(codec: &AvroCodec, topic: &str) -> HashMap<String, E> {
    let (bootstrap, t) = (orderflow_testkit::kafka().bootstrap_servers(), topic.to_owned());
    let records =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &t, usize::MAX, Duration::from_secs(3)))
            .await
            .unwrap()
            .unwrap();
    let mut newest: HashMap<String, E> = HashMap::new();
    for record in records {
        let event: E = codec.decode(&record.payload).await.unwrap();
        assert_eq!(record.key, event.order_id(), "keyed by order id");
        if newest
            .get(event.order_id())
            .is_none_or(|seen| seen.order_version() <= event.order_version())
        {
            newest.insert(event.order_id().to_owned(), event);
        }
    }
    newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_publishes_each_orders_state_and_history_and_never_moves_back() {
    use orderflow_events::{OrderReadModel, OrderState};
    let settings = with_redis(real_settings("projector"));
    let prefix = settings.kafka.topic_prefix.clone();
    let key_prefix = settings.cache.key_prefix.clone();
    let store = orderflow_store::Store::connect(settings.database.url.as_deref().unwrap(), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let product = orderflow_store::Product {
        sku: "SKU-1".into(),
        name: "product".into(),
        price_minor: 1_000,
        stock: 100,
    };
    store.put_product(&product).await.unwrap();
    let roles = [
        Role::Orders,
        Role::Payments,
        Role::Enrichment,
        Role::Inventory,
        Role::Projector,
    ];
    let platform = Platform::start(settings, &roles).await.unwrap();
    let codec = platform.backends.codec.clone();
    let base = format!("http://{}", platform.http_addr.unwrap());
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..6 {
        let order = post_order(&client, &base, &format!("c-{i}"), "SKU-1", 1).await;
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let cancelled = &ids[0];
    let status = client
        .post(format!("{base}/v1/orders/{cancelled}/cancel"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);

    // order.state ends with each order's final status (the cancelled one's, or ALLOCATED).
    let state_topic = format!("{prefix}order.state");
    let states = eventually(
        "every order's final state on order.state",
        Duration::from_secs(60),
        || {
            let (codec, topic, ids) = (codec.clone(), state_topic.clone(), ids.clone());
            async move {
                let newest = newest_per_order::<OrderState>(&codec, &topic).await;
                ids.iter()
                    .all(|id| {
                        let want = if id == &ids[0] { "CANCELLED" } else { "ALLOCATED" };
                        newest.get(id).is_some_and(|s| s.status == want)
                    })
                    .then_some(newest)
            }
        },
    )
    .await;
    assert_eq!(states[&ids[1]].order_version, 3);
    assert!(states[cancelled].order_version >= 4);

    // order.read-model carries the whole order and its history, in version order.
    let read_models = newest_per_order::<OrderReadModel>(&codec, &format!("{prefix}order.read-model")).await;
    let allocated = &read_models[&ids[1]];
    let history: Vec<&str> = allocated.history.iter().map(|h| h.status.as_str()).collect();
    assert_eq!(history, ["CREATED", "PAID", "ALLOCATED"]);
    assert!(allocated.history.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!((allocated.total_minor, allocated.items.len()), (1_000, 1));
    assert_eq!(read_models[cancelled].history.last().unwrap().status, "CANCELLED");

    // The read model lives in Redis under the order's hash tag.
    let redis_url = orderflow_testkit::redis().url();
    let redis = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let header_key = format!("{key_prefix}rm:{{{}}}", ids[1]);
    let stored = || {
        let (mut redis, key) = (redis.clone(), header_key.clone());
        async move {
            let (status, version): (String, i64) = redis::cmd("HMGET")
                .arg(&key)
                .arg("s")
                .arg("v")
                .query_async(&mut redis)
                .await
                .unwrap();
            (status, version)
        }
    };
    assert_eq!(stored().await, ("ALLOCATED".to_owned(), 3));

    // Every order.created again (old versions): nothing moves back, in Redis or through the API.
    assert_eq!(republish(&format!("{prefix}order.created"), 6).await, 6);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stored().await, ("ALLOCATED".to_owned(), 3));
    let order = get_json(&client, &format!("{base}/v1/orders/{}", ids[1])).await;
    assert_eq!(
        (&order["status"], &order["version"]),
        (&json!("ALLOCATED"), &json!(3))
    );
    let newest = newest_per_order::<OrderState>(&codec, &state_topic).await;
    assert_eq!(newest[&ids[1]].status, "ALLOCATED");

    // One order's entry alone is lost (the marker stays, so nothing is rebuilt; as when a Redis node came
    // back empty and served its slots for a moment), and its payment arrives again: the projector folds in
    // the order's state from the database, so it publishes the current state, not PAID.
    let before = states_of(&codec, &state_topic, &ids[1]).await.len();
    let entry = delete_keys(&header_key).await;
    assert!(entry.contains(&header_key), "{entry:?}");
    assert!(republish_of(&format!("{prefix}payment.received"), &ids[1]).await >= 1);
    eventually("the lost entry to be back", Duration::from_secs(60), || {
        let (mut redis, key) = (redis.clone(), header_key.clone());
        async move {
            let version: Option<i64> = redis::cmd("HGET")
                .arg(&key)
                .arg("v")
                .query_async(&mut redis)
                .await
                .ok()?;
            version.map(|_| ())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let published: Vec<(String, i64)> = states_of(&codec, &state_topic, &ids[1])
        .await
        .into_iter()
        .skip(before)
        .map(|s| (s.status, s.order_version))
        .collect();
    assert!(!published.is_empty(), "the replayed payment was projected");
    assert!(
        published
            .iter()
            .all(|(status, version)| status == "ALLOCATED" && *version == 3),
        "every state published for the order the model had lost is its current one: {published:?}"
    );

    // Redis loses the read model, and old changes arrive before the projector notices: it applies them to
    // what is left and publishes states older than the orders' own. Once the rebuild has every change in
    // again, it publishes each order's state once more: the last record of every order (what compaction
    // keeps) is its current state.
    let lost = delete_keys(&key_prefix).await;
    assert!(
        lost.iter().any(|k| k.ends_with("rm}:epoch")),
        "the model's marker went too: {lost:?}"
    );
    assert_eq!(republish(&format!("{prefix}order.created"), 6).await, 6);
    eventually(
        "each order's last order.state record to be its current state again",
        Duration::from_secs(60),
        || {
            let (codec, topic, ids) = (codec.clone(), state_topic.clone(), ids.clone());
            async move {
                let last = last_per_order::<OrderState>(&codec, &topic).await;
                ids.iter()
                    .all(|id| {
                        let want = if id == &ids[0] { "CANCELLED" } else { "ALLOCATED" };
                        last.get(id).is_some_and(|s| s.status == want)
                    })
                    .then_some(())
            }
        },
    )
    .await;
    platform.stop().await.unwrap();
}

/// Every `order.state` record of order `id` in `topic` (read for 3 s), oldest first.
async fn states_of(codec: &AvroCodec, topic: &str, id: &str) -> Vec<orderflow_events::OrderState> {
    let (bootstrap, t) = (orderflow_testkit::kafka().bootstrap_servers(), topic.to_owned());
    let records =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &t, usize::MAX, Duration::from_secs(3)))
            .await
            .unwrap()
            .unwrap();
    let mut states = Vec::new();
    for record in records.iter().filter(|r| r.key == id) {
        states.push(codec.decode(&record.payload).await.unwrap());
    }
    states
}

/// The last record per order among every record of `topic` (read for 3 s), decoded as `E`: what compaction
/// keeps of it.
async fn last_per_order<E: orderflow_events::Event>(codec: &AvroCodec, topic: &str) -> HashMap<String, E> {
    let (bootstrap, t) = (orderflow_testkit::kafka().bootstrap_servers(), topic.to_owned());
    let records =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, &t, usize::MAX, Duration::from_secs(3)))
            .await
            .unwrap()
            .unwrap();
    let mut last: HashMap<String, E> = HashMap::new();
    for record in records {
        let event: E = codec.decode(&record.payload).await.unwrap();
        last.insert(event.order_id().to_owned(), event);
    }
    last
}

/// Commits `group`'s offsets at the current end of every partition of `topics`, as if it had consumed them:
/// whatever those partitions hold is lost to the group.
fn skip_to_end(group: &str, topics: &[String], partitions: i32) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set(
            "bootstrap.servers",
            orderflow_testkit::kafka().bootstrap_servers(),
        )
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    for topic in topics {
        for partition in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .unwrap();
            offsets
                .add_partition_offset(topic, partition, rdkafka::Offset::Offset(high))
                .unwrap();
        }
    }
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_drives_stranded_orders_on_through_the_steps_own_retry_topics() {
    const ORDERS: usize = 8;
    let mut settings = real_settings("drive");
    settings.orders.stranded_after_secs = 2;
    settings.orders.sweep_interval_secs = 1;
    let store = orderflow_store::Store::connect(settings.database.url.as_deref().unwrap(), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
        .put_product(&orderflow_store::Product {
            sku: "SKU-1".into(),
            name: "product SKU-1".into(),
            price_minor: 1_000,
            stock: 100,
        })
        .await
        .unwrap();

    // Orders are paid while no enrichment runs.
    let platform = Platform::start(settings.clone(), &[Role::Orders, Role::Payments, Role::Inventory])
        .await
        .unwrap();
    let base = format!("http://{}", platform.http_addr.unwrap());
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let order = post_order(&client, &base, &format!("c{i}"), "SKU-1", 1).await;
        ids.push(order["id"].as_str().unwrap().parse::<OrderId>().unwrap());
    }
    let statuses = |store: orderflow_store::Store, ids: Vec<OrderId>| async move {
        store
            .get_orders(&ids)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.status)
            .collect::<Vec<_>>()
    };
    eventually("every order to be paid", Duration::from_secs(30), || {
        let (store, ids) = (store.clone(), ids.clone());
        async move {
            let s = statuses(store, ids).await;
            (s.len() == ORDERS && s.iter().all(|s| *s == OrderStatus::Paid)).then_some(())
        }
    })
    .await;

    // Enrichment's group loses every record it had not read: its offsets jump to the end of its inputs.
    // Only the sweep can bring these orders to it now.
    let prefix = settings.kafka.topic_prefix.clone();
    let inputs: Vec<String> = ["order.created", "payment.received", "payment.failed"]
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    skip_to_end(
        &format!("{prefix}{}", settings.enrichment.group),
        &inputs,
        settings.kafka.partitions.unwrap(),
    );
    let enrichment = Platform::start(settings.clone(), &[Role::Enrichment])
        .await
        .unwrap();
    eventually(
        "the stranded orders to be driven on to ALLOCATED",
        Duration::from_secs(90),
        || {
            let (store, ids) = (store.clone(), ids.clone());
            async move {
                let s = statuses(store, ids).await;
                s.iter().all(|s| *s == OrderStatus::Allocated).then_some(())
            }
        },
    )
    .await;

    // The republished records went to the steps' own retry topics; the audited topic got none.
    let created = format!("{prefix}order.created");
    let bootstrap = orderflow_testkit::kafka().bootstrap_servers();
    let on_created = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &created, ORDERS + 1, Duration::from_secs(3))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(on_created.len(), ORDERS, "order.created holds each order once");
    let bootstrap = orderflow_testkit::kafka().bootstrap_servers();
    let retried = format!("{prefix}order.created.{}.retry.1", settings.enrichment.group);
    let driven = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &retried, ORDERS, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(driven.len() >= ORDERS, "{} records driven on", driven.len());
    assert!(
        driven
            .iter()
            .all(|r| r.headers.get("original-topic") == Some(&format!("{prefix}order.created")))
    );
    enrichment.stop().await.unwrap();
    platform.stop().await.unwrap();
}

//! The two-tier cache on a real redis-server: stampedes, versions, negative caching, stale serving, and
//! Redis failing and coming back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use orderflow_cache::{BreakerState, TieredCache, TieredSettings};
use orderflow_domain::{NewOrder, Order};
use orderflow_testkit::RedisServer;

fn order(version: i64) -> Order {
    let doc = serde_json::json!({"customer_id": "c", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unit_price_minor": 10}]});
    Order {
        version,
        ..Order::create(NewOrder::parse(&doc).expect("valid"), Utc::now())
    }
}

async fn connection(url: &str) -> redis::aio::ConnectionManager {
    redis::aio::ConnectionManager::new(redis::Client::open(url).expect("client"))
        .await
        .expect("redis")
}

fn settings(prefix: &str) -> TieredSettings {
    TieredSettings {
        namespace: "order".into(),
        key_prefix: prefix.to_owned(),
        ..TieredSettings::default()
    }
}

/// 1,000 concurrent reads of one cold key, half through each of two instances (own L1, own single-flight,
/// own connection: as two processes); returns how many times the source was loaded.
async fn stampede(protection: bool) -> usize {
    let url = orderflow_testkit::redis().url();
    let prefix = format!("{}:", orderflow_testkit::unique("stampede"));
    let settings = TieredSettings {
        stampede_protection: protection,
        ..settings(&prefix)
    };
    let instances = [
        TieredCache::<Order>::new(Some(connection(&url).await), settings.clone()),
        TieredCache::<Order>::new(Some(connection(&url).await), settings),
    ];
    let loads = Arc::new(AtomicUsize::new(0));
    let value = order(1);
    let mut readers = Vec::new();
    for i in 0..1000 {
        let (cache, loads, value) = (instances[i % 2].clone(), loads.clone(), value.clone());
        readers.push(tokio::spawn(async move {
            cache
                .get_or_load("hot", move || {
                    let (loads, value) = (loads.clone(), value.clone());
                    async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await; // a slow query
                        Ok::<_, std::io::Error>(Some(value))
                    }
                })
                .await
        }));
    }
    for reader in readers {
        let got = reader.await.expect("task").expect("read");
        assert_eq!(got.map(|o| o.id), Some(value.id));
    }
    loads.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_over_two_instances_loads_the_source_once() {
    let loads = stampede(true).await;
    eprintln!("with stampede protection: {loads} load(s) for 1000 concurrent reads");
    assert_eq!(loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_protection_the_same_stampede_loads_many_times() {
    let loads = stampede(false).await;
    eprintln!("without stampede protection: {loads} loads for 1000 concurrent reads");
    assert!(loads > 10, "expected a visible stampede, got {loads}");
}

#[tokio::test]
async fn an_older_version_never_replaces_a_newer_one() {
    let url = orderflow_testkit::redis().url();
    let prefix = format!("{}:", orderflow_testkit::unique("versions"));
    let writer = TieredCache::<Order>::new(Some(connection(&url).await), settings(&prefix));
    let reader = TieredCache::<Order>::new(Some(connection(&url).await), settings(&prefix));
    let v1 = order(1);
    let v2 = Order {
        version: 2,
        status: orderflow_domain::OrderStatus::Paid,
        ..v1.clone()
    };
    writer.refresh("o", &v2).await;
    writer.refresh("o", &v1).await; // an out-of-order refresh
    let never = || async { Err::<Option<Order>, _>(std::io::Error::other("must not load")) };
    assert_eq!(
        reader
            .get_or_load("o", never)
            .await
            .expect("cached")
            .map(|o| o.version),
        Some(2)
    );
    assert_eq!(
        writer
            .get_or_load("o", never)
            .await
            .expect("cached")
            .map(|o| o.version),
        Some(2),
        "L1 too"
    );
}

#[tokio::test]
async fn not_found_is_cached_briefly() {
    let url = orderflow_testkit::redis().url();
    let prefix = format!("{}:", orderflow_testkit::unique("negative"));
    let settings = TieredSettings {
        negative_ttl: Duration::from_secs(1),
        l1_capacity: None,
        ..settings(&prefix)
    };
    let cache = TieredCache::<Order>::new(Some(connection(&url).await), settings);
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = {
        let loads = loads.clone();
        move || {
            let loads = loads.clone();
            async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<Option<Order>, std::io::Error>(None)
            }
        }
    };
    for _ in 0..5 {
        assert!(
            cache
                .get_or_load("missing", loader.clone())
                .await
                .expect("read")
                .is_none()
        );
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one load, then the cached 'not found'"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cache.get_or_load("missing", loader).await.expect("read");
    assert_eq!(loads.load(Ordering::SeqCst), 2, "'not found' expires");
}

#[tokio::test]
async fn an_expired_entry_is_served_stale_while_one_refresh_runs() {
    let url = orderflow_testkit::redis().url();
    let prefix = format!("{}:", orderflow_testkit::unique("stale"));
    let settings = TieredSettings {
        ttl: Duration::from_millis(100),
        ttl_jitter: 0.0,
        beta: 0.0,
        stale_for: Duration::from_secs(10),
        l1_capacity: None,
        ..settings(&prefix)
    };
    let cache = TieredCache::<Order>::new(Some(connection(&url).await), settings);
    let version = Arc::new(AtomicU64::new(1));
    let base = order(1);
    let loader = {
        let (version, base) = (version.clone(), base.clone());
        move || {
            let (version, base) = (version.clone(), base.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok::<_, std::io::Error>(Some(Order {
                    version: version.load(Ordering::SeqCst) as i64,
                    ..base
                }))
            }
        }
    };
    assert_eq!(
        cache
            .get_or_load("o", loader.clone())
            .await
            .expect("load")
            .map(|o| o.version),
        Some(1)
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    version.store(2, Ordering::SeqCst);
    let stale = cache.get_or_load("o", loader.clone()).await.expect("stale read");
    assert_eq!(
        stale.map(|o| o.version),
        Some(1),
        "the expired value is served at once"
    );
    assert_eq!(cache.stats().stale_served.load(Ordering::Relaxed), 1);
    // One background refresh replaces it shortly; until then readers keep getting the stale value.
    let mut refreshed = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        refreshed = cache
            .get_or_load("o", loader.clone())
            .await
            .expect("read")
            .map(|o| o.version);
        if refreshed == Some(2) {
            break;
        }
    }
    assert_eq!(refreshed, Some(2), "refreshed in the background");
    assert_eq!(cache.stats().loads.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_redis_going_down_and_the_cache_heals_when_it_is_back() {
    let redis = RedisServer::start().expect("dedicated redis");
    let prefix = format!("{}:", orderflow_testkit::unique("breaker"));
    let settings = TieredSettings {
        l1_capacity: None,
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_millis(200),
        redis_timeout: Duration::from_millis(100),
        ..settings(&prefix)
    };
    let cache = TieredCache::<Order>::new(Some(connection(&redis.url()).await), settings);
    let value = order(1);
    let loader = {
        let value = value.clone();
        move || {
            let value = value.clone();
            async move { Ok::<_, std::io::Error>(Some(value)) }
        }
    };
    cache.get_or_load("o", loader.clone()).await.expect("warm");
    cache.get_or_load("o", loader.clone()).await.expect("hit");
    assert_eq!(cache.stats().l2_hits.load(Ordering::Relaxed), 1);

    redis.kill();
    for _ in 0..50 {
        let got = cache
            .get_or_load("o", loader.clone())
            .await
            .expect("every read succeeds without Redis");
        assert_eq!(got.map(|o| o.id), Some(value.id));
    }
    assert_eq!(cache.breaker_state(), BreakerState::Open);
    let errors_when_open = cache.stats().redis_errors.load(Ordering::Relaxed);
    assert!(
        errors_when_open < 20,
        "the breaker stops calling a dead Redis ({errors_when_open} errors)"
    );

    redis.restart().expect("redis back");
    let hits_before = cache.stats().l2_hits.load(Ordering::Relaxed);
    let mut healed = false;
    for _ in 0..100 {
        cache.get_or_load("o", loader.clone()).await.expect("read");
        if cache.stats().l2_hits.load(Ordering::Relaxed) > hits_before {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healed, "hits resume without restarting anything");
    assert_eq!(cache.breaker_state(), BreakerState::Closed);
}

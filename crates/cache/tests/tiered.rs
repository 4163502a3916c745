//! The two-tier cache on a real redis-server: stampedes, versions, negative caching, stale serving, and
//! Redis failing and coming back; a Redis Cluster losing a master; TLS with an ACL user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use orderflow_cache::{
    BreakerState, CacheSettings, RedisConnection, RedisTarget, TieredCache, TieredSettings,
};
use orderflow_domain::{NewOrder, Order};
use orderflow_testkit::{RedisCluster, RedisServer};

fn order(version: i64) -> Order {
    let doc = serde_json::json!({"customer_id": "c", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unit_price_minor": 10}]});
    Order {
        version,
        ..Order::create(NewOrder::parse(&doc).expect("valid"), Utc::now())
    }
}

async fn connection(url: &str) -> RedisConnection {
    RedisConnection::connect(&RedisTarget {
        urls: vec![url.to_owned()],
        ..RedisTarget::default()
    })
    .await
    .expect("redis")
}

/// The shared redis-server as a target.
fn standalone() -> RedisTarget {
    RedisTarget {
        urls: vec![orderflow_testkit::redis().url()],
        ..RedisTarget::default()
    }
}

/// A value loader that counts its calls.
fn counting_loader(
    value: Order,
    loads: Arc<AtomicUsize>,
) -> impl Fn() -> std::future::Ready<Result<Option<Order>, std::io::Error>> + Clone + Send + Sync + 'static {
    move || {
        loads.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Some(value.clone())))
    }
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
async fn stampede(protection: bool, target: RedisTarget) -> usize {
    let prefix = format!("{}:", orderflow_testkit::unique("stampede"));
    let settings = TieredSettings {
        stampede_protection: protection,
        ..settings(&prefix)
    };
    let instances = [
        TieredCache::<Order>::new(
            Some(RedisConnection::connect(&target).await.expect("redis")),
            settings.clone(),
        ),
        TieredCache::<Order>::new(
            Some(RedisConnection::connect(&target).await.expect("redis")),
            settings,
        ),
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
    let loads = stampede(true, standalone()).await;
    eprintln!("with stampede protection: {loads} load(s) for 1000 concurrent reads");
    assert_eq!(loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_on_a_redis_cluster_loads_the_source_once() {
    let target = RedisTarget {
        urls: orderflow_testkit::redis_cluster().urls(),
        cluster: true,
        ..RedisTarget::default()
    };
    let loads = stampede(true, target).await;
    eprintln!("on a Redis Cluster, with stampede protection: {loads} load(s) for 1000 concurrent reads");
    assert_eq!(loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_protection_the_same_stampede_loads_many_times() {
    let loads = stampede(false, standalone()).await;
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
async fn rendered_reads_render_a_hot_entry_once_and_follow_new_versions() {
    let prefix = format!("{}:", orderflow_testkit::unique("rendered"));
    let cache = TieredCache::<Order>::new(
        Some(connection(&orderflow_testkit::redis().url()).await),
        settings(&prefix),
    );
    let renders = Arc::new(AtomicUsize::new(0));
    let render = {
        let renders = renders.clone();
        move |o: &Order| {
            renders.fetch_add(1, Ordering::SeqCst);
            bytes::Bytes::from(format!("v{}", o.version))
        }
    };
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = counting_loader(order(1), loads.clone());
    for _ in 0..100 {
        let body = cache
            .get_or_load_rendered("k", loader.clone(), &render)
            .await
            .expect("get");
        assert_eq!(body.as_deref(), Some(&b"v1"[..]));
    }
    // One load, and the miss plus the first in-process hit rendered; the other 98 hits reused the bytes.
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(renders.load(Ordering::SeqCst), 2);

    cache.refresh("k", &order(2)).await;
    let body = cache
        .get_or_load_rendered("k", loader.clone(), &render)
        .await
        .expect("get");
    assert_eq!(body.as_deref(), Some(&b"v2"[..]));
    let missing = cache
        .get_or_load_rendered(
            "absent",
            || std::future::ready(Ok::<_, std::io::Error>(None)),
            &render,
        )
        .await
        .expect("get");
    assert_eq!(missing, None);
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

/// Reads every key once (each read must succeed with `value`); returns how many were Redis hits.
async fn hit_round<F>(cache: &TieredCache<Order>, loader: &F, keys: &[String], value: &Order) -> u64
where
    F: Fn() -> std::future::Ready<Result<Option<Order>, std::io::Error>> + Clone + Send + Sync + 'static,
{
    let hits_before = cache.stats().l2_hits.load(Ordering::Relaxed);
    for key in keys {
        let got = cache
            .get_or_load(key, loader.clone())
            .await
            .expect("every read succeeds");
        assert_eq!(got.map(|o| o.id), Some(value.id));
    }
    cache.stats().l2_hits.load(Ordering::Relaxed) - hits_before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_reads_continue_while_a_master_fails_over() {
    // A cluster of its own: killing a master must not disturb the other tests.
    let cluster = RedisCluster::start().expect("redis cluster");
    let prefix = format!("{}:", orderflow_testkit::unique("cluster"));
    let connection = RedisConnection::connect(&RedisTarget {
        urls: cluster.urls()[..2].to_vec(), // two seeds are enough: the client discovers the rest
        cluster: true,
        ..RedisTarget::default()
    })
    .await
    .expect("cluster connection");
    let settings = TieredSettings {
        l1_capacity: None,
        beta: 0.0,
        breaker_cooldown: Duration::from_millis(200),
        ..settings(&prefix)
    };
    let cache = TieredCache::<Order>::new(Some(connection), settings);
    let value = order(1);
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = counting_loader(value.clone(), loads.clone());
    let keys: Vec<String> = (0..300).map(|i| format!("o{i}")).collect(); // spread over every master's slots
    for key in &keys {
        cache.get_or_load(key, loader.clone()).await.expect("warm");
    }
    let warm_hits = hit_round(&cache, &loader, &keys, &value).await;
    assert_eq!(warm_hits, 300, "every key is a hit on the healthy cluster");
    tokio::time::sleep(Duration::from_millis(200)).await; // let the replicas catch up

    let masters = cluster.masters().expect("masters");
    let victim = masters[0];
    cluster.kill(victim);
    let killed = std::time::Instant::now();
    // Reads go on during the failover (from Redis where it answers, from the loader where it does not) and
    // the client follows the promoted replica: a whole round of hits comes back without restarting anything.
    let mut recovered = None;
    let mut rounds = 0;
    while killed.elapsed() < Duration::from_secs(60) {
        rounds += 1;
        if hit_round(&cache, &loader, &keys, &value).await == 300 {
            recovered = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_masters = cluster.masters().expect("masters");
    eprintln!(
        "killed node {victim}; masters {masters:?} -> {new_masters:?}; all hits again after {recovered:?} \
         ({rounds} rounds, {} loads, {} redis errors)",
        loads.load(Ordering::SeqCst),
        cache.stats().redis_errors.load(Ordering::Relaxed)
    );
    assert!(recovered.is_some(), "the client follows the failover");
    assert!(
        !new_masters.contains(&victim) && new_masters.len() == 3,
        "a replica took over"
    );
}

#[tokio::test]
async fn tls_with_an_acl_user_confined_to_its_key_prefix() {
    let redis = RedisServer::start_tls(&[
        "--user",
        "default",
        "off",
        "--user",
        "cache",
        "on",
        ">s3cret",
        "~orderflow:*",
        "+@all",
    ])
    .expect("TLS redis");
    let tls_url = redis.tls_url().expect("tls url");
    let with_password = |password: &str| CacheSettings {
        redis_url: Some(tls_url.replace("rediss://", &format!("rediss://cache:{password}@"))),
        redis_ca_file: Some(redis.ca_file()),
        key_prefix: "orderflow:".into(),
        memory_capacity: 0,
        ..CacheSettings::default()
    };
    let cache = with_password("s3cret")
        .connect()
        .await
        .expect("connects over TLS as the ACL user");
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = counting_loader(order(1), loads.clone());
    cache.get_or_load("o", loader.clone()).await.expect("load");
    cache.get_or_load("o", loader.clone()).await.expect("hit");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(
        cache.stats().l2_hits.load(Ordering::Relaxed),
        1,
        "the second read came from Redis"
    );
    assert_eq!(cache.stats().redis_errors.load(Ordering::Relaxed), 0);

    let refused = with_password("wrong").connect().await;
    assert!(refused.is_err(), "a wrong password is refused at start-up");
    let untrusted = CacheSettings {
        redis_ca_file: None,
        ..with_password("s3cret")
    }
    .connect()
    .await;
    assert!(
        untrusted.is_err(),
        "a server certificate from an unknown CA is refused"
    );
}

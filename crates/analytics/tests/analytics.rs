//! The analytics aggregates behave the same in process, on a real redis-server and on a real Redis Cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::Arc;
use std::time::Duration;

use orderflow_analytics::{
    Analytics, AnalyticsError, Fact, FactKind, FactPage, FactSource, Hopping, MemoryAnalytics,
    RedisAnalytics, SourceError,
};
use orderflow_redis::{RedisConnection, RedisTarget};
use orderflow_testkit::unique;

/// 2026-12-01T10:00:00Z.
const T0: i64 = 1_764_583_200;

/// A source of truth held in a vector, served four facts a page.
struct Facts(Vec<Fact>);

impl FactSource for Facts {
    async fn page(&self, after: Option<String>) -> Result<FactPage, SourceError> {
        let start: usize = after.map_or(Ok(0), |a| a.parse())?;
        let end = (start + 4).min(self.0.len());
        Ok(FactPage {
            facts: self.0[start..end].to_vec(),
            next: (end < self.0.len()).then(|| end.to_string()),
        })
    }
}

/// Fresh aggregates on Redis, rebuilt from nothing (a new deployment) so that they take updates.
async fn redis(cluster: bool) -> Analytics {
    let analytics = unbuilt_redis(cluster).await.0;
    assert_eq!(
        analytics.rebuild_if_lost(&Facts(Vec::new())).await.unwrap(),
        Some(0)
    );
    analytics
}

/// Aggregates on Redis that were never built, and their key prefix.
async fn unbuilt_redis(cluster: bool) -> (Analytics, String) {
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
    let prefix = format!("{}:", unique("analytics"));
    let analytics = Analytics::Redis(
        RedisAnalytics::new(
            connection,
            &prefix,
            Hopping::default(),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        )
        .unwrap(),
    );
    (analytics, prefix)
}

fn memory() -> Analytics {
    Analytics::Memory(Arc::new(MemoryAnalytics::new(Hopping::default()).unwrap()))
}

fn fact(kind: FactKind, order: &str, at: i64) -> Fact {
    Fact {
        kind,
        order_id: order.into(),
        at,
        customer: String::new(),
        currency: String::new(),
        amount_minor: 0,
        items: Vec::new(),
    }
}

fn created(order: &str, at: i64, customer: &str, items: &[(&str, i64)]) -> Fact {
    Fact {
        customer: customer.into(),
        items: items.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect(),
        ..fact(FactKind::Created, order, at)
    }
}

fn paid(order: &str, at: i64, amount: i64) -> Fact {
    Fact {
        currency: "EUR".into(),
        amount_minor: amount,
        ..fact(FactKind::Paid, order, at)
    }
}

fn refunded(order: &str, at: i64, amount: i64) -> Fact {
    Fact {
        currency: "EUR".into(),
        amount_minor: amount,
        ..fact(FactKind::Refunded, order, at)
    }
}

async fn counts_each_order_once_and_revenue_excludes_refunded_payments(analytics: Analytics) {
    let facts = vec![
        created("a", T0 + 5, "alice", &[("SKU-1", 2), ("SKU-2", 1)]),
        created("b", T0 + 15, "bob", &[("SKU-1", 1)]),
        created("c", T0 + 65, "alice", &[("SKU-3", 7)]),
        created("d", T0 + 3_605, "carol", &[("SKU-2", 1)]),
        paid("a", T0 + 20, 1_000),
        paid("b", T0 + 30, 2_000),
        // c: cancelled, its refund arriving before its payment; d: cancelled in the next hour after it was
        // paid, and refunded; b: rejected, and refunded.
        fact(FactKind::Cancelled, "c", T0 + 70),
        refunded("c", T0 + 75, 4_000),
        paid("c", T0 + 80, 4_000),
        paid("d", T0 + 3_610, 8_000),
        fact(FactKind::Cancelled, "d", T0 + 7_300),
        refunded("d", T0 + 7_301, 8_000),
        refunded("b", T0 + 41, 2_000),
        fact(FactKind::Allocated, "a", T0 + 40),
        fact(FactKind::Rejected, "b", T0 + 40),
    ];
    assert_eq!(analytics.apply(&facts).await.unwrap(), facts.len());
    // Everything delivered again, in another order: nothing changes.
    let mut again = facts.clone();
    again.reverse();
    assert_eq!(analytics.apply(&again).await.unwrap(), 0);

    let revenue = analytics.revenue(T0, T0 + 7_300).await.unwrap();
    let per_hour: Vec<(i64, i64)> = revenue.iter().map(|h| (h.hour, h.by_currency["EUR"])).collect();
    assert_eq!(per_hour, vec![(T0, 1_000), (T0 + 3_600, 0)]);

    let funnel = analytics.funnel().await.unwrap();
    assert_eq!(
        (
            funnel.created,
            funnel.paid,
            funnel.allocated,
            funnel.rejected,
            funnel.cancelled,
            funnel.refunded
        ),
        (4, 4, 1, 1, 2, 3)
    );
    assert_eq!(funnel.paid_rate(), 1.0);
    assert_eq!(funnel.allocated_rate(), 0.25);

    // One-minute windows every 10 s: the window starting at T0 holds a and b; at T0+10, b and c.
    let windows = analytics.orders_per_window(T0, T0 + 30).await.unwrap();
    let counts: Vec<(i64, u64)> = windows.iter().map(|w| (w.start - T0, w.orders)).collect();
    assert_eq!(counts, vec![(0, 2), (10, 2), (20, 1)]);
    assert!(windows.iter().all(|w| w.end - w.start == 60));
    // Windows start at or after `from`, on the hop.
    let later = analytics.orders_per_window(T0 + 5, T0 + 30).await.unwrap();
    assert_eq!(later.first().map(|w| w.start - T0), Some(10));

    let customers = analytics.unique_customers(T0, T0 + 3_600).await.unwrap();
    assert_eq!(customers.per_hour, vec![(T0, 2), (T0 + 3_600, 1)]);
    assert_eq!(customers.total, 3);

    let top = analytics.top_products(None, 2).await.unwrap();
    assert_eq!(top, vec![("SKU-3".to_owned(), 7), ("SKU-1".to_owned(), 3)]);
    let first_hour = analytics.top_products(Some((T0, T0 + 100)), 10).await.unwrap();
    assert_eq!(
        first_hour,
        vec![
            ("SKU-3".to_owned(), 7),
            ("SKU-1".to_owned(), 3),
            ("SKU-2".to_owned(), 1)
        ]
    );
}

fn lifecycle() -> Vec<Fact> {
    vec![
        created("a", T0 + 5, "alice", &[("SKU-1", 2)]),
        created("b", T0 + 15, "bob", &[("SKU-2", 1)]),
        paid("a", T0 + 20, 1_000),
        paid("b", T0 + 30, 2_000),
        fact(FactKind::Allocated, "a", T0 + 40),
        fact(FactKind::Cancelled, "b", T0 + 50),
        refunded("b", T0 + 51, 2_000),
        created("c", T0 + 3_605, "carol", &[("SKU-1", 1)]),
        paid("c", T0 + 3_610, 4_000),
    ]
}

async fn revenue_and_funnel(analytics: &Analytics) -> (Vec<(i64, i64)>, (u64, u64, u64, u64)) {
    let revenue = analytics.revenue(T0, T0 + 3_600).await.unwrap();
    let funnel = analytics.funnel().await.unwrap();
    (
        revenue.iter().map(|h| (h.hour, h.by_currency["EUR"])).collect(),
        (funnel.created, funnel.paid, funnel.allocated, funnel.cancelled),
    )
}

/// Lost aggregates refuse updates until a rebuild from the source of truth restores them; what arrives
/// again afterwards (the updates refused meanwhile, re-deliveries) is not counted twice.
async fn a_rebuild_restores_lost_aggregates_exactly(analytics: Analytics, lose: impl AsyncFn()) {
    let all = lifecycle();
    let expected = (vec![(T0, 1_000), (T0 + 3_600, 4_000)], (3, 3, 1, 1));

    // Counted as events arrive, then lost.
    analytics.apply(&all[..5]).await.unwrap();
    lose().await;
    assert!(!analytics.intact().await.unwrap());
    assert!(matches!(
        analytics.apply(&all[5..]).await,
        Err(AnalyticsError::Lost)
    ));

    // Meanwhile the source of truth holds everything: the rebuild folds it all, in pages.
    assert_eq!(
        analytics.rebuild_if_lost(&Facts(all.clone())).await.unwrap(),
        Some(all.len())
    );
    assert!(analytics.intact().await.unwrap());
    assert_eq!(revenue_and_funnel(&analytics).await, expected);

    // The refused updates, retried, and every event delivered again change nothing.
    assert_eq!(analytics.apply(&all[5..]).await.unwrap(), 0);
    assert_eq!(analytics.apply(&all).await.unwrap(), 0);
    // Intact aggregates are not rebuilt again.
    assert_eq!(
        analytics.rebuild_if_lost(&Facts(all.clone())).await.unwrap(),
        None
    );
    assert_eq!(revenue_and_funnel(&analytics).await, expected);
}

#[tokio::test]
async fn in_process_aggregates_load_before_they_count() {
    // In process, "lost" is how a process starts: what happened before it was not counted here.
    let analytics = Analytics::Memory(Arc::new(MemoryAnalytics::unloaded(Hopping::default()).unwrap()));
    let all = lifecycle();
    assert!(!analytics.intact().await.unwrap());
    assert!(matches!(
        analytics.apply(&all[5..]).await,
        Err(AnalyticsError::Lost)
    ));
    assert_eq!(
        analytics.rebuild_if_lost(&Facts(all.clone())).await.unwrap(),
        Some(all.len())
    );
    assert_eq!(analytics.apply(&all).await.unwrap(), 0);
    assert_eq!(
        revenue_and_funnel(&analytics).await,
        (vec![(T0, 1_000), (T0 + 3_600, 4_000)], (3, 3, 1, 1))
    );
}

#[tokio::test]
async fn on_redis_a_flush_is_noticed_and_rebuilt() {
    let (analytics, prefix) = unbuilt_redis(false).await;
    assert_eq!(
        analytics.rebuild_if_lost(&Facts(Vec::new())).await.unwrap(),
        Some(0)
    );
    let url = orderflow_testkit::redis().url();
    a_rebuild_restores_lost_aggregates_exactly(analytics, async || {
        // Everything of this deployment's analytics goes, as in a FLUSHALL (other tests share the server).
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}analytics}}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(keys.len() > 3, "{keys:?}");
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn in_process() {
    counts_each_order_once_and_revenue_excludes_refunded_payments(memory()).await;
}

#[tokio::test]
async fn on_redis() {
    counts_each_order_once_and_revenue_excludes_refunded_payments(redis(false).await).await;
}

#[tokio::test]
async fn on_redis_cluster() {
    counts_each_order_once_and_revenue_excludes_refunded_payments(redis(true).await).await;
}

#[test]
fn hopping_windows_must_tile_an_hour() {
    let bad = Hopping {
        size_secs: 60,
        hop_secs: 7,
    };
    assert!(MemoryAnalytics::new(bad).is_err());
}

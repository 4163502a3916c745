//! Order analytics: revenue per tumbling hour, orders per hopping window, unique customers per hour
//! (HyperLogLog), top products (sorted sets) and the created -> paid -> allocated funnel.
//!
//! Updates come in as [`Fact`]s, one per lifecycle event, and are idempotent per order and kind: a fact
//! seen again (a re-delivery, a replay) changes nothing. Revenue is counted when a payment is received and
//! taken back when it is refunded (its order rejected or cancelled), whichever of the two arrives first, so
//! the revenue reported is always the captured payments less the refunded ones. Times are event times (seconds since the epoch),
//! so a replay lands in the same buckets.
//!
//! Aggregates are derived state and may be lost (Redis flushed, restarted empty, or a process restarted for the
//! in-process store). Each store keeps an epoch marker beside its aggregates; while it is missing, updates
//! are refused ([`AnalyticsError::Lost`]) and [`Analytics::rebuild_if_lost`] refolds every order from the
//! source of truth (a [`FactSource`]: the database), under a lock so one process rebuilds, then sets the
//! marker. Updates refused meanwhile are retried by their caller and counted once, since the rebuild left
//! its marks.
//!
//! Two stores hold the same aggregates: [`RedisAnalytics`] (standalone or Cluster; every key shares one
//! hash tag so a batch is applied by one atomic script) and [`MemoryAnalytics`] (in process, for the
//! embedded default).

mod memory;
mod redis_store;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use memory::MemoryAnalytics;
pub use redis_store::RedisAnalytics;

/// Seconds in a tumbling revenue / customer bucket.
pub const HOUR: i64 = 3600;

/// What happened to an order, as analytics counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactKind {
    /// The order was placed.
    Created,
    /// Its payment was captured.
    Paid,
    /// Its payment was declined or failed.
    PaymentFailed,
    /// Its stock was reserved.
    Allocated,
    /// Its stock could not be reserved.
    Rejected,
    /// The customer cancelled it.
    Cancelled,
    /// Its captured payment was refunded.
    Refunded,
}

impl FactKind {
    /// The short name used in stored state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Paid => "paid",
            Self::PaymentFailed => "failed",
            Self::Allocated => "allocated",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }
}

/// One lifecycle event reduced to what analytics needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// What happened.
    pub kind: FactKind,
    /// The order it happened to.
    pub order_id: String,
    /// When, seconds since the epoch (event time).
    pub at: i64,
    /// Who placed the order (for [`FactKind::Created`]).
    pub customer: String,
    /// ISO 4217 code (for [`FactKind::Paid`] and [`FactKind::Refunded`]).
    pub currency: String,
    /// Amount captured, or refunded, in minor units (for [`FactKind::Paid`] and [`FactKind::Refunded`]).
    pub amount_minor: i64,
    /// Products and units ordered (for [`FactKind::Created`]).
    pub items: Vec<(String, i64)>,
}

/// The hopping window of the orders count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hopping {
    /// Window length in seconds (60: orders per minute).
    pub size_secs: i64,
    /// How far consecutive windows start apart, in seconds; divides both `size_secs` and an hour.
    pub hop_secs: i64,
}

impl Default for Hopping {
    fn default() -> Self {
        Self {
            size_secs: 60,
            hop_secs: 10,
        }
    }
}

impl Hopping {
    /// Checks the shape: both positive, the hop divides the size and an hour.
    pub fn validated(self) -> Result<Self, AnalyticsError> {
        if self.hop_secs <= 0
            || self.size_secs <= 0
            || self.size_secs % self.hop_secs != 0
            || HOUR % self.hop_secs != 0
        {
            return Err(AnalyticsError::Settings(format!(
                "hopping window of {} s every {} s: the hop must divide the window and an hour",
                self.size_secs, self.hop_secs
            )));
        }
        Ok(self)
    }
}

/// Revenue of one hour, per currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueHour {
    /// Start of the hour, seconds since the epoch.
    pub hour: i64,
    /// Minor units per ISO 4217 code.
    pub by_currency: BTreeMap<String, i64>,
}

/// Orders created in one hopping window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowCount {
    /// Window start, seconds since the epoch.
    pub start: i64,
    /// Window end (exclusive).
    pub end: i64,
    /// Orders created in it.
    pub orders: u64,
}

/// Unique customers over a range of hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customers {
    /// Estimated distinct customers per hour (hours without orders left out).
    pub per_hour: Vec<(i64, u64)>,
    /// Estimated distinct customers over the whole range.
    pub total: u64,
}

/// Orders that reached each stage, and the conversion between stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Funnel {
    /// Orders placed.
    pub created: u64,
    /// Orders paid.
    pub paid: u64,
    /// Orders with stock reserved.
    pub allocated: u64,
    /// Orders whose payment failed.
    pub payment_failed: u64,
    /// Orders whose stock was refused.
    pub rejected: u64,
    /// Orders cancelled.
    pub cancelled: u64,
    /// Orders whose payment was refunded.
    pub refunded: u64,
}

impl Funnel {
    /// Paid over created (0 when nothing was created).
    pub fn paid_rate(&self) -> f64 {
        ratio(self.paid, self.created)
    }

    /// Allocated over paid.
    pub fn allocated_rate(&self) -> f64 {
        ratio(self.allocated, self.paid)
    }

    /// Allocated over created.
    pub fn overall_rate(&self) -> f64 {
        ratio(self.allocated, self.created)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Any error of a [`FactSource`].
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// One page of facts read by a rebuild.
#[derive(Debug, Clone, Default)]
pub struct FactPage {
    /// Every fact of the page's orders.
    pub facts: Vec<Fact>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<String>,
}

/// Where a rebuild reads what happened to every order: the source of truth the aggregates derive from.
pub trait FactSource: Sync {
    /// The page of facts starting at cursor `after` (`None`: from the start).
    fn page(&self, after: Option<String>) -> impl Future<Output = Result<FactPage, SourceError>> + Send;
}

/// How long a process waits for a rebuild another process is running before giving up for now.
const REBUILD_WAIT: Duration = Duration::from_secs(30);

/// Why an analytics update or query failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The aggregates are not intact (their store lost them) and are being rebuilt; try again.
    #[error("the analytics aggregates were lost and are being rebuilt")]
    Lost,
    /// A rebuild could not read its source.
    #[error("reading the facts to rebuild analytics from")]
    Source(#[source] SourceError),
    /// Redis answered with an error or could not be reached.
    #[error("analytics in Redis")]
    Redis(#[from] redis::RedisError),
    /// Redis answered something the store did not expect.
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// A range or setting the store cannot serve.
    #[error("{0}")]
    Settings(String),
}

/// The start of the hour holding `at`.
pub fn hour_of(at: i64) -> i64 {
    at - at.rem_euclid(HOUR)
}

/// The hours from the one holding `from` to the one holding `to`, both included.
fn hours(from: i64, to: i64) -> impl Iterator<Item = i64> {
    (hour_of(from)..=hour_of(to)).step_by(HOUR as usize)
}

/// Analytics on Redis or in process; cheap to clone.
#[derive(Clone)]
pub enum Analytics {
    /// Shared by every process of a deployment.
    Redis(RedisAnalytics),
    /// This process only (embedded default).
    Memory(Arc<MemoryAnalytics>),
}

impl Analytics {
    /// Applies `facts` in order; returns how many changed anything (the rest were seen before). Refused with
    /// [`AnalyticsError::Lost`] while the aggregates are not intact.
    pub async fn apply(&self, facts: &[Fact]) -> Result<usize, AnalyticsError> {
        self.apply_as(facts, None).await
    }

    async fn apply_as(&self, facts: &[Fact], rebuild: Option<&str>) -> Result<usize, AnalyticsError> {
        match self {
            Self::Redis(r) => r.apply(facts, rebuild).await,
            Self::Memory(m) => m.apply(facts, rebuild),
        }
    }

    /// Whether the aggregates are intact: their epoch marker is there, so nothing was lost since the last
    /// rebuild.
    pub async fn intact(&self) -> Result<bool, AnalyticsError> {
        match self {
            Self::Redis(r) => r.intact().await,
            Self::Memory(m) => Ok(m.intact()),
        }
    }

    /// Rebuilds the aggregates from `source` if they are not intact; returns the facts applied, or `None`
    /// when they were intact or another process rebuilt them meanwhile. Only one process rebuilds at a
    /// time (a lock that expires should it die); the others wait for it, then [`AnalyticsError::Lost`].
    /// Facts already counted are kept and not counted again, so a rebuild over partial aggregates or an
    /// interrupted one is safe to run.
    pub async fn rebuild_if_lost(&self, source: &impl FactSource) -> Result<Option<usize>, AnalyticsError> {
        if self.intact().await? {
            return Ok(None);
        }
        let token = match self {
            Self::Redis(r) => r.begin_rebuild().await?,
            Self::Memory(m) => m.begin_rebuild(),
        };
        let Some(token) = token else {
            let waited = std::time::Instant::now();
            while waited.elapsed() < REBUILD_WAIT {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if self.intact().await? {
                    return Ok(None);
                }
            }
            return Err(AnalyticsError::Lost);
        };
        self.refold_holding(source, &token, &|_| {}).await.map(Some)
    }

    /// Rebuilds the aggregates from `source` whether or not they are intact (`orderflow rebuild
    /// analytics`); returns the facts newly applied. Facts already counted are not counted again, so this
    /// is safe while the analytics role runs; it waits for a rebuild another process holds. `progress` sees
    /// the running count of facts read.
    pub async fn rebuild(
        &self,
        source: &impl FactSource,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<usize, AnalyticsError> {
        // The role may be rebuilding aggregates it found lost: wait for it, then rebuild as asked.
        let waited = std::time::Instant::now();
        let token = loop {
            let token = match self {
                Self::Redis(r) => r.begin_rebuild().await?,
                Self::Memory(m) => m.begin_rebuild(),
            };
            match token {
                Some(token) => break token,
                None if waited.elapsed() > REBUILD_WAIT * 20 => return Err(AnalyticsError::Lost),
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        self.refold_holding(source, &token, progress).await
    }

    /// [`Self::refold`] under the rebuild lock `token`, which is given up should it fail.
    async fn refold_holding(
        &self,
        source: &impl FactSource,
        token: &str,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<usize, AnalyticsError> {
        let result = self.refold(source, token, progress).await;
        if result.is_err() {
            match self {
                Self::Redis(r) => {
                    // Best effort: should this fail too, the lock expires by itself.
                    let _ = r.abandon_rebuild(token).await;
                }
                Self::Memory(m) => m.abandon_rebuild(token),
            }
        }
        result
    }

    async fn refold(
        &self,
        source: &impl FactSource,
        token: &str,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<usize, AnalyticsError> {
        let (mut applied, mut read) = (0, 0);
        let mut after = None;
        loop {
            let page = source.page(after).await.map_err(AnalyticsError::Source)?;
            read += page.facts.len();
            applied += self.apply_as(&page.facts, Some(token)).await?;
            progress(read);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let finished = match self {
            Self::Redis(r) => r.finish_rebuild(token).await?,
            Self::Memory(m) => m.finish_rebuild(token),
        };
        if finished {
            Ok(applied)
        } else {
            Err(AnalyticsError::Lost)
        }
    }

    /// The hopping window this store counts orders in.
    pub fn hopping(&self) -> Hopping {
        match self {
            Self::Redis(r) => r.hopping(),
            Self::Memory(m) => m.hopping(),
        }
    }

    /// Revenue per hour from the hour holding `from` to the one holding `to` (hours without revenue left out).
    pub async fn revenue(&self, from: i64, to: i64) -> Result<Vec<RevenueHour>, AnalyticsError> {
        match self {
            Self::Redis(r) => r.revenue(from, to).await,
            Self::Memory(m) => Ok(m.revenue(from, to)),
        }
    }

    /// Orders per hopping window, for every window starting in `[from, to)` (windows aligned to the hop).
    pub async fn orders_per_window(&self, from: i64, to: i64) -> Result<Vec<WindowCount>, AnalyticsError> {
        let hop = self.hopping();
        // The first window starting at or after `from`.
        let first = from + (hop.hop_secs - from.rem_euclid(hop.hop_secs)) % hop.hop_secs;
        // Every hop slot any of those windows covers.
        let slots: Vec<i64> = (first..to + hop.size_secs)
            .step_by(hop.hop_secs as usize)
            .collect();
        let counts = match self {
            Self::Redis(r) => r.slot_counts(&slots).await?,
            Self::Memory(m) => m.slot_counts(&slots),
        };
        let per_window = (hop.size_secs / hop.hop_secs) as usize;
        Ok(slots
            .iter()
            .enumerate()
            .take_while(|(_, start)| **start < to)
            .map(|(i, &start)| WindowCount {
                start,
                end: start + hop.size_secs,
                orders: counts[i..].iter().take(per_window).sum(),
            })
            .collect())
    }

    /// Distinct customers who placed orders, per hour and over the hours from `from` to `to`.
    pub async fn unique_customers(&self, from: i64, to: i64) -> Result<Customers, AnalyticsError> {
        match self {
            Self::Redis(r) => r.unique_customers(from, to).await,
            Self::Memory(m) => Ok(m.unique_customers(from, to)),
        }
    }

    /// The `limit` products ordered most (by units) over the hours from `from` to `to`, or ever.
    pub async fn top_products(
        &self,
        range: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, AnalyticsError> {
        match self {
            Self::Redis(r) => r.top_products(range, limit).await,
            Self::Memory(m) => Ok(m.top_products(range, limit)),
        }
    }

    /// Orders per funnel stage, ever.
    pub async fn funnel(&self) -> Result<Funnel, AnalyticsError> {
        match self {
            Self::Redis(r) => r.funnel().await,
            Self::Memory(m) => Ok(m.funnel()),
        }
    }
}

/// Sorts product totals by units (then name) and keeps the first `limit`.
fn top(mut totals: Vec<(String, i64)>, limit: usize) -> Vec<(String, i64)> {
    totals.retain(|(_, units)| *units > 0);
    totals.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    totals.truncate(limit);
    totals
}

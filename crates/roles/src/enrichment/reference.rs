//! Reference data for enrichment: each customer's tier, loaded from the database into Redis (or into this
//! process in the embedded default) and refreshed on an interval.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use orderflow_redis::RedisConnection;
use orderflow_store::Store;

use crate::RoleError;

/// The tier of a customer the reference data does not know.
pub const DEFAULT_TIER: &str = "standard";

/// A field every loaded tier hash holds (no customer id has a space): when it is missing, Redis lost the hash
/// and it is reloaded at once, rather than every customer reading as the default tier until the next refresh.
const LOADED: &str = "loaded marker";

/// Where the customer tiers are held.
#[derive(Clone)]
pub enum CustomerTiers {
    /// A Redis hash shared by every instance (`<prefix>ref:{customer-tier}`).
    Redis {
        /// The connection.
        connection: RedisConnection,
        /// The hash's key.
        key: String,
    },
    /// A map in this process.
    Memory(Arc<RwLock<HashMap<String, String>>>),
}

impl CustomerTiers {
    /// Tiers in Redis under `prefix`, or in process without Redis.
    pub fn new(redis: Option<RedisConnection>, prefix: &str) -> Self {
        match redis {
            Some(connection) => Self::Redis {
                connection,
                key: format!("{prefix}ref:{{customer-tier}}"),
            },
            None => Self::Memory(Arc::default()),
        }
    }

    /// Replaces the held tiers with the database's (on Redis: built aside, then swapped in at once).
    pub async fn load(&self, store: &Store) -> Result<usize, RoleError> {
        let tiers = store.customer_tiers().await?;
        let count = tiers.len();
        match self {
            Self::Redis { connection, key } => {
                let mut conn = connection.clone();
                // Same hash tag, same slot: the swap works on a Cluster too.
                let loading = format!("{key}:loading");
                let mut pipe = redis::pipe();
                pipe.atomic().del(&loading).hset(&loading, LOADED, "1");
                for chunk in tiers.chunks(1_000) {
                    pipe.hset_multiple(&loading, chunk);
                }
                pipe.rename(&loading, key);
                pipe.query_async::<()>(&mut conn)
                    .await
                    .map_err(|source| RoleError::Reference {
                        context: "loading the customer tiers into Redis",
                        source,
                    })?;
            }
            Self::Memory(map) => {
                let fresh: HashMap<String, String> = tiers.into_iter().collect();
                *map.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
            }
        }
        Ok(count)
    }

    /// The tier of each customer, in order ([`DEFAULT_TIER`] for unknown ones). When Redis lost the tiers,
    /// they are reloaded from `store` first; when Redis does not answer, they are read from `store`, so a
    /// Redis outage slows enrichment down rather than stopping it.
    pub async fn lookup(&self, store: &Store, customers: &[&str]) -> Result<Vec<String>, RoleError> {
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<Option<String>> = match self {
            Self::Redis { connection, key } => {
                let read = |mut conn: orderflow_redis::RedisConnection| async move {
                    let mut found: Vec<Option<String>> = redis::cmd("HMGET")
                        .arg(key)
                        .arg(LOADED)
                        .arg(customers)
                        .query_async(&mut conn)
                        .await
                        .map_err(|source| RoleError::Reference {
                            context: "reading customer tiers from Redis",
                            source,
                        })?;
                    let loaded = !found.is_empty() && found.remove(0).is_some();
                    Ok::<_, RoleError>((loaded, found))
                };
                match read(connection.clone()).await {
                    Ok((true, found)) => found,
                    Ok((false, _)) => {
                        tracing::warn!("the customer tiers are gone from Redis; reloading them");
                        match self.load(store).await {
                            Ok(_) => read(connection.clone()).await?.1,
                            Err(e) => from_store(store, customers, &e).await?,
                        }
                    }
                    Err(e) => from_store(store, customers, &e).await?,
                }
            }
            Self::Memory(map) => {
                let map = map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
                customers.iter().map(|c| map.get(*c).cloned()).collect()
            }
        };
        Ok(found
            .into_iter()
            .map(|tier| tier.unwrap_or_else(|| DEFAULT_TIER.to_owned()))
            .collect())
    }
}

/// The tiers of `customers`, in order, read from the database because Redis failed with `error`.
async fn from_store(
    store: &Store,
    customers: &[&str],
    error: &RoleError,
) -> Result<Vec<Option<String>>, RoleError> {
    tracing::debug!(
        error = error as &dyn std::error::Error,
        "reading customer tiers from the database: Redis failed"
    );
    let mut unique: Vec<&str> = customers.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let tiers: HashMap<String, String> = store.customer_tiers_of(&unique).await?.into_iter().collect();
    Ok(customers.iter().map(|c| tiers.get(*c).cloned()).collect())
}

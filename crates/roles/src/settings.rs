//! Settings of a whole Orderflow process, grouped by the port or role they configure.

use std::net::SocketAddr;
use std::path::PathBuf;

use orderflow_bus::KafkaSettings;
use orderflow_cache::CacheSettings;
use orderflow_outbox::RelaySettings;
use serde::Deserialize;

use crate::analytics::AnalyticsSettings;
use crate::audit::AuditSettings;
use crate::enrichment::EnrichmentSettings;
use crate::inventory::InventorySettings;
use crate::payments::PaymentsSettings;

/// Everything a process needs; every field has a default, so an empty configuration runs embedded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the embedded defaults keep their files (the SQLite database).
    pub data_dir: Option<PathBuf>,
    /// HTTP listener.
    pub http: HttpSettings,
    /// The gateway in front of the API.
    pub gateway: orderflow_gateway::GatewaySettings,
    /// Source of truth.
    pub database: DatabaseSettings,
    /// Event log.
    pub kafka: KafkaSettings,
    /// Read model / cache.
    pub cache: CacheSettings,
    /// Schema registry.
    pub registry: RegistrySettings,
    /// Outbox relay.
    pub relay: RelaySettings,
    /// Orders role.
    pub orders: OrdersSettings,
    /// Payments role and its simulated provider.
    pub payments: PaymentsSettings,
    /// Enrichment role (order x payment join).
    pub enrichment: EnrichmentSettings,
    /// Inventory role.
    pub inventory: InventorySettings,
    /// Projector consumer.
    pub projector: ProjectorSettings,
    /// Analytics role and its aggregates.
    pub analytics: AnalyticsSettings,
    /// Audit role.
    pub audit: AuditSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// The ops listener.
    pub ops: OpsSettings,
    /// Tracing export.
    pub tracing: orderflow_telemetry::TracingSettings,
}

/// The ops listener: `/metrics`, `/healthz` and `/readyz` on an address of their own, for every role
/// (consumer-only processes serve no API). Unauthenticated: bind it where only the scraper reaches it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsSettings {
    /// Address to listen on; absent means no ops listener.
    pub listen: Option<SocketAddr>,
}

/// HTTP listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate (plain HTTP when absent).
    pub tls: Option<orderflow_api::TlsSettings>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
        }
    }
}

impl HttpSettings {
    /// `https` with a certificate, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Database settings.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host/db` or `sqlite://path`; absent means SQLite under the data dir.
    pub url: Option<String>,
    /// Pool size.
    pub max_connections: u32,
    /// Apply pending migrations when a role starts (turn off where the service's role may not run DDL).
    pub migrate_on_start: bool,
    /// A file holding the password, put into `url` at start (so the URL in the configuration has none).
    pub password_file: Option<PathBuf>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            migrate_on_start: true,
            password_file: None,
        }
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// Schema registry settings.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Base URL of a Confluent-compatible registry; absent means the embedded registry, kept in the
    /// Orderflow database and served by the orders role under `/registry`.
    pub url: Option<String>,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("url", &self.url.as_deref().map(redact_url))
            .finish()
    }
}

/// Orders role settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersSettings {
    /// Kafka consumer group of the status follower (payment and stock outcomes).
    pub status_group: String,
    /// Seconds after its last change an order still `CREATED` or `PAID` counts as stranded: every step
    /// answers within seconds, and enrichment reports an unpaid order within its window and grace.
    pub stranded_after_secs: u64,
    /// Seconds between two sweeps for stranded orders.
    pub sweep_interval_secs: u64,
    /// Whether the sweep drives stranded orders on (hands their `order.created` again to the steps that owe
    /// them an answer, through those steps' own retry topics) besides reporting them.
    pub drive_on_stranded: bool,
    /// Seconds an `Idempotency-Key` holds after its first use: a retry with it within that time gets the first
    /// response; after it, the key is free again (and its row is pruned by the sweep).
    pub idempotency_ttl_secs: u64,
}

impl Default for OrdersSettings {
    fn default() -> Self {
        Self {
            status_group: "orderflow-orders-status".into(),
            stranded_after_secs: 600,
            sweep_interval_secs: 60,
            drive_on_stranded: true,
            idempotency_ttl_secs: 24 * 60 * 60,
        }
    }
}

/// Projector consumer settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorSettings {
    /// Kafka consumer group.
    pub group: String,
    /// Partitions worked on at once.
    pub concurrency: usize,
    /// How long an order's read model stays in Redis after its last change.
    pub ttl_secs: u64,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            group: "orderflow-projector".into(),
            concurrency: 4,
            ttl_secs: 7 * 24 * 3600,
        }
    }
}

/// Graceful-shutdown settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// How long roles get to finish in-flight work after SIGTERM (seconds).
    pub deadline_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { deadline_secs: 20 }
    }
}

impl Settings {
    /// The data directory (default `./data`).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from("data"))
    }

    /// Reads the secrets configured as files into the settings that use them: `database.password_file`
    /// into `database.url`. Called once after loading the configuration.
    pub fn read_secret_files(&mut self) -> Result<(), String> {
        if let Some(path) = &self.database.password_file {
            let password = std::fs::read_to_string(path)
                .map_err(|e| format!("database.password_file {}: {e}", path.display()))?;
            let url = self
                .database
                .url
                .as_deref()
                .ok_or("database.password_file needs database.url")?;
            let mut parsed = url::Url::parse(url).map_err(|e| format!("database.url: {e}"))?;
            parsed
                .set_password(Some(password.trim()))
                .map_err(|()| "database.url cannot carry a password".to_owned())?;
            self.database.url = Some(parsed.to_string());
        }
        Ok(())
    }

    /// The configured database URL, or the embedded SQLite file under the data directory.
    pub fn database_url(&self) -> String {
        match self.database.url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", self.data_dir().join("orderflow.db").display()),
        }
    }
}

/// A URL with any password replaced by `***`, safe to print.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "<unparseable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        let shown = redact_url("postgres://app:s3cret@db:5432/orders");
        assert!(!shown.contains("s3cret"));
        assert!(shown.contains("app:***@db"));
        assert_eq!(redact_url("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(redact_url("not a url with s3cret"), "<unparseable URL>");
    }

    #[test]
    fn no_database_url_means_sqlite_in_the_data_dir() {
        let settings = Settings {
            data_dir: Some("/tmp/x".into()),
            ..Settings::default()
        };
        assert_eq!(settings.database_url(), "sqlite:///tmp/x/orderflow.db");
    }

    #[test]
    fn debug_output_hides_the_database_password() {
        let settings = Settings {
            database: DatabaseSettings {
                url: Some("postgres://u:hunter2@h/d".into()),
                ..Default::default()
            },
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}

//! `orderflow migrate` and `orderflow audit verify`: the commands that work on the database directly.

use anyhow::{Context, bail};
use orderflow_roles::{Settings, redact_url};
use orderflow_store::{AuditVerdict, Store};

/// Connects to the configured database with one connection.
pub(crate) async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    let url = settings.database_url();
    Store::connect(&url, 1)
        .await
        .with_context(|| format!("connecting to {}", redact_url(&url)))
}

/// Applies pending migrations, then grants the service's privileges to `grant_to` when given.
pub async fn migrate(settings: &Settings, grant_to: Option<&str>) -> anyhow::Result<()> {
    let store = connect(settings).await?;
    store.migrate().await?;
    println!("migrations applied ({})", store.backend().name());
    if let Some(role) = grant_to {
        store.grant_service_role(role).await?;
        println!("granted the service's privileges to {role}");
    }
    Ok(())
}

/// Recomputes the audit trail's hash chain; fails naming the first row that does not fit.
pub async fn verify_audit(settings: &Settings) -> anyhow::Result<()> {
    let store = connect(settings).await?;
    match store.verify_audit().await? {
        AuditVerdict::Intact(rows) => {
            println!("audit trail intact: {rows} rows");
            Ok(())
        }
        AuditVerdict::Broken { seq, reason } => bail!("audit trail broken at row {seq}: {reason}"),
    }
}

//! `orderflow reconcile`: runs every check of `orderflow_roles::reconcile` and prints a table (or JSON);
//! fails when any check found a mismatch.

use std::time::Duration;

use anyhow::bail;
use orderflow_roles::{Backends, Settings};

/// Checks the deployment `settings` point at.
pub async fn run(settings: Settings, within: Option<u64>, json: bool) -> anyhow::Result<()> {
    let within = Duration::from_secs(within.unwrap_or(settings.orders.stranded_after_secs));
    let backends = Backends::connect(&settings).await?;
    let checks = orderflow_roles::reconcile::reconcile(&backends, within).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(5);
        println!("{:<width$}  {:<8}  detail", "check", "result");
        for check in &checks {
            println!("{:<width$}  {:<8}  {}", check.check, check.result, check.detail);
        }
    }
    let failed = checks.iter().filter(|c| c.failed()).count();
    if failed > 0 {
        bail!("reconcile found {failed} mismatch(es)");
    }
    Ok(())
}

//! `orderflow rebuild read-model|analytics`: rebuilds derived state in Redis while the platform runs, with a
//! progress spinner on terminals.

use orderflow_roles::{Backends, Settings};

use crate::cli::RebuildCommand;

/// Rebuilds what `command` names on the deployment `settings` point at.
pub async fn run(settings: Settings, command: RebuildCommand) -> anyhow::Result<()> {
    let backends = Backends::connect(&settings).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let started = std::time::Instant::now();
    let outcome = match command {
        RebuildCommand::ReadModel { from } => {
            let progress = |n: usize| bar.set_message(format!("{n} change(s) applied"));
            orderflow_roles::projector::rebuild(&settings.projector, &backends, from, &progress)
                .await
                .map(|applied| format!("read model rebuilt: {applied} change(s) applied"))
        }
        RebuildCommand::Analytics => {
            let progress = |n: usize| bar.set_message(format!("{n} fact(s) read"));
            orderflow_roles::analytics::rebuild(&settings.analytics, &backends, &progress)
                .await
                .map(|applied| format!("analytics rebuilt: {applied} fact(s) newly applied"))
        }
    };
    bar.finish_and_clear();
    println!("{} in {:.1} s", outcome?, started.elapsed().as_secs_f64());
    Ok(())
}

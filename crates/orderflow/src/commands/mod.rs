//! One module per command; [`run`] dispatches the parsed command line to them.

pub mod bench;
mod catalog;
mod consumers;
mod database;
mod dlq;
mod rebuild;
mod reconcile;
mod schemas;
mod serve;
mod topics;

use orderflow_roles::{Role, Settings};

use crate::cli::{AuditCommand, CatalogCommand, Command, SchemasCommand, TopicsCommand};

/// Runs `command` with `settings`.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Up => serve::serve(settings, Role::ALL).await,
        Command::Run { role } => serve::serve(settings, &[role]).await,
        Command::Migrate { grant_to } => database::migrate(&settings, grant_to.as_deref()).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => database::verify_audit(&settings).await,
        Command::Catalog {
            command: CatalogCommand::Import { file },
        } => catalog::import(&settings, &file).await,
        // Handled before settings and logging are set up (see main).
        Command::Completions { .. } => Ok(()),
        Command::Dlq { command } => dlq::run(settings, command).await,
        Command::Consumers { role, ops, all, json } => consumers::run(settings, role, &ops, all, json).await,
        Command::Rebuild { command } => rebuild::run(settings, command).await,
        Command::Reconcile { within, json } => reconcile::run(settings, within, json).await,
        Command::Bench(args) => bench::run(settings, args).await,
        Command::Schemas {
            command: SchemasCommand::Check { dir, registry },
        } => schemas::check(dir.as_deref(), registry.as_deref(), &settings.kafka.topic_prefix).await,
        Command::Topics {
            command: TopicsCommand::Acls { role },
        } => {
            topics::acls(&settings, role);
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::Apply,
        } => topics::apply(&settings).await,
    }
}

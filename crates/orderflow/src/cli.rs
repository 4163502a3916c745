//! The command line: global flags, the commands and their arguments (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use orderflow_roles::Role;

use crate::commands::bench::BenchArgs;
use crate::config::Overrides;

/// Event-driven order platform: HTTP orders, a PostgreSQL outbox, Kafka consumers and a Redis read model.
#[derive(Debug, Parser)]
#[command(name = "orderflow", version)]
pub struct Cli {
    /// TOML configuration file
    #[arg(long, short, global = true, env = "ORDERFLOW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `orderflow=debug,rdkafka=warn`
    #[arg(
        long,
        global = true,
        env = "ORDERFLOW_LOG",
        default_value = "info,sqlx=warn,rdkafka=warn"
    )]
    pub log: String,
    /// How log lines are written: `text` (coloured only on a terminal) or `json` (one object per line)
    #[arg(long, global = true, env = "ORDERFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Flags that override the configuration file and environment.
    #[command(flatten)]
    pub overrides: Overrides,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormat> for orderflow_telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in this process
    Up,
    /// Run one role
    Run {
        /// The role to run
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Apply pending database migrations
    Migrate {
        /// Then grant this PostgreSQL role what the running service needs (rows only, no DDL)
        #[arg(long, value_name = "ROLE")]
        grant_to: Option<String>,
    },
    /// Manage Kafka topics
    Topics {
        /// The topics command.
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Work with the event schemas
    Schemas {
        /// The schemas command.
        #[command(subcommand)]
        command: SchemasCommand,
    },
    /// Inspect and replay dead letters (records consumers gave up on)
    Dlq {
        /// The dead-letter command.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Benchmark the whole pipeline in this process: orders/s accepted and terminal, end-to-end latency
    Bench(BenchArgs),
    /// Check the deployment against its source of truth: orders terminal, charges, stock ledger, analytics
    /// revenue, read model, order.state, audit chain, dead letters; exits non-zero on any mismatch
    Reconcile {
        /// How long an order may still be on its way before it counts as stranded (seconds; default
        /// orders.stranded_after_secs)
        #[arg(long, value_name = "SECS")]
        within: Option<u64>,
        /// Print the checks as JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Every consumer group: its state, members and lag per topic partition; held and paused consumers from
    /// the processes' readiness (--ops)
    Consumers {
        /// Only this role's group
        #[arg(long, value_enum)]
        role: Option<Role>,
        /// A process's ops listener or API (`http://10.0.0.5:9090`), read for held and paused consumers;
        /// repeat for each process
        #[arg(long, value_name = "URL")]
        ops: Vec<String>,
        /// Every partition, the retry topics' idle ones included
        #[arg(long)]
        all: bool,
        /// Print the groups as JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Rebuild derived state in Redis while the platform runs
    Rebuild {
        /// What to rebuild.
        #[command(subcommand)]
        command: RebuildCommand,
    },
    /// Manage the product catalogue (prices and stock)
    Catalog {
        /// The catalogue command.
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Print a shell completion script (`orderflow completions bash > /etc/bash_completion.d/orderflow`)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Check the audit trail
    Audit {
        /// The audit command.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `orderflow catalog …`
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Create or update products from a CSV file with the header `sku,name,price_minor,stock` (all rows in
    /// one transaction: a bad row writes nothing); a product's stock becomes the file's
    Import {
        /// The CSV file (`-` reads standard input)
        file: PathBuf,
    },
}

/// `orderflow audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; fails naming the first row that was changed, removed or moved
    Verify,
}

/// `orderflow dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: of one dead-letter topic, of every group's for a topic, or of all of them
    List {
        /// A dead-letter topic (`order.created.orderflow-payments.dlq`) or a topic (`order.created`: every
        /// group's dead letters of it)
        topic: Option<String>,
        /// Only the dead letters of this consumer group (its name, e.g. `orderflow-payments`)
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        filter: DlqFilter,
        /// One JSON object per dead letter (headers, key, value in base64) instead of one line of text
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its headers and value
    Show {
        /// The dead-letter topic (`order.created.orderflow-payments.dlq`), or the topic with --group
        topic: String,
        /// Partition of the dead letter
        partition: i32,
        /// Offset of the dead letter
        offset: i64,
        /// The consumer group whose dead letter it is, when TOPIC names the original topic
        #[arg(long)]
        group: Option<String>,
    },
    /// Hand dead letters back to the group that gave up on them: those of a dead-letter topic, of every
    /// group's for a topic, or of every topic of --group; filtered, and read a chunk at a time
    Replay {
        /// A dead-letter topic (`order.created.orderflow-payments.dlq`) or a topic (`order.created`: every
        /// group's dead letters of it, or --group's); absent: every dead-letter topic of --group
        #[arg(required_unless_present = "group")]
        topic: Option<String>,
        /// Only the dead letters of this consumer group (its name, e.g. `orderflow-payments`)
        #[arg(long)]
        group: Option<String>,
        /// Only the dead letter in this partition (with --offset and a dead-letter topic)
        #[arg(long, requires = "offset", requires = "topic")]
        partition: Option<i32>,
        /// Only the dead letter at this offset (with --partition)
        #[arg(long, requires = "partition")]
        offset: Option<i64>,
        #[command(flatten)]
        filter: DlqFilter,
        /// Count what would be replayed; send nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters `dlq list` and `dlq replay` take.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DlqFilter {
    /// Only dead letters of this error kind (`permanent`: the handler refused the record; `transient`: its
    /// retries ran out)
    #[arg(long, value_name = "KIND")]
    pub error_kind: Option<String>,
    /// Only dead letters written since this time: RFC 3339 (`2026-12-06T10:00:00Z`) or an age (`90m`, `2h`,
    /// `1d`)
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<i64>,
}

/// `--since`: an RFC 3339 time or an age back from now, as milliseconds since the epoch.
fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_millis());
    }
    let age = humantime::parse_duration(text)
        .map_err(|_| format!("'{text}' is neither an RFC 3339 time nor an age such as 90m, 2h or 1d"))?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .map(|since| since.timestamp_millis())
        .ok_or_else(|| format!("'{text}' is too long ago"))
}

/// `orderflow rebuild …`
#[derive(Debug, Subcommand)]
pub enum RebuildCommand {
    /// The read model (per order: header, status, history), then every order's state published again
    ReadModel {
        /// Where from: the projector's input topics (the model's changelog) or the database
        #[arg(long, value_enum, default_value = "kafka")]
        from: orderflow_roles::projector::RebuildSource,
    },
    /// The analytics aggregates, from the database (orders of the last analytics.order_marks_secs)
    Analytics,
}

/// `orderflow schemas …`
#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Check each topic's newest schema against its earlier versions (and a registry's, with --registry)
    Check {
        /// Check the schema folders under DIR instead of the schemas built into this binary
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Also ask this Confluent-compatible registry whether each newest schema is compatible
        #[arg(long, value_name = "URL")]
        registry: Option<String>,
    },
}

/// `orderflow topics …`
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics and check existing ones against the topic table
    Apply,
    /// Print the least-privilege Kafka ACLs of each role (one line per grant, for kafka-acls or Terraform)
    Acls {
        /// Only this role
        #[arg(long, value_enum)]
        role: Option<Role>,
    },
}

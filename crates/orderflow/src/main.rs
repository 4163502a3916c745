//! `orderflow`: runs the platform (every role, or one) and its operational commands.

mod bench;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use orderflow_bus::Bus;
use orderflow_bus::topics::TopicAction;
use orderflow_roles::{Platform, Role, Settings, redact_url};
use orderflow_store::Store;

/// Event-driven order platform: HTTP orders, a PostgreSQL outbox, Kafka consumers and a Redis read model.
#[derive(Debug, Parser)]
#[command(name = "orderflow", version)]
struct Cli {
    /// TOML configuration file
    #[arg(long, short, global = true, env = "ORDERFLOW_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `orderflow=debug,rdkafka=warn`
    #[arg(
        long,
        global = true,
        env = "ORDERFLOW_LOG",
        default_value = "info,sqlx=warn,rdkafka=warn"
    )]
    log: String,
    #[command(flatten)]
    overrides: config::Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in this process
    Up,
    /// Run one role
    Run {
        /// The role to run
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Apply pending database migrations
    Migrate {
        /// Then grant this PostgreSQL role what the running service needs (rows only, no DDL)
        #[arg(long, value_name = "ROLE")]
        grant_to: Option<String>,
    },
    /// Manage Kafka topics
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Work with the event schemas
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
    /// Inspect and replay dead letters (records consumers gave up on)
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Benchmark the whole pipeline in this process: orders/s accepted and terminal, end-to-end latency
    Bench(bench::BenchArgs),
    /// Check the audit trail
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; fails naming the first row that was changed, removed or moved
    Verify,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters: of one topic, or of every dead-letter topic
    List {
        /// The topic (`order.created`) or its dead-letter topic (`order.created.dlq`)
        topic: Option<String>,
    },
    /// Show one dead letter with its headers and value
    Show {
        /// The topic (`order.created`) or its dead-letter topic (`order.created.dlq`)
        topic: String,
        /// Partition of the dead letter
        partition: i32,
        /// Offset of the dead letter
        offset: i64,
    },
    /// Republish dead letters to their original topic (every one of the topic, or one)
    Replay {
        /// The topic (`order.created`) or its dead-letter topic (`order.created.dlq`)
        topic: String,
        /// Only the dead letter in this partition (with --offset)
        #[arg(long, requires = "offset")]
        partition: Option<i32>,
        /// Only the dead letter at this offset (with --partition)
        #[arg(long, requires = "partition")]
        offset: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
enum SchemasCommand {
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

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create missing topics and check existing ones against the topic table
    Apply,
    /// Print the least-privilege Kafka ACLs of each role (one line per grant, for kafka-acls or Terraform)
    Acls {
        /// Only this role
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    /// Authenticates, checks scopes and rate limits, and forwards to orders instances
    Gateway,
    /// REST API and outbox relay
    Orders,
    /// Charges each created order with the simulated payment provider
    Payments,
    /// Joins orders with their payments and reference data
    Enrichment,
    /// Reserves stock for paid orders and releases it on cancel
    Inventory,
    /// Redis read model
    Projector,
    /// Revenue, order counts, unique customers, top products and the funnel
    Analytics,
    /// Hash-chained audit trail of every event
    Audit,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Gateway => Role::Gateway,
            RoleArg::Orders => Role::Orders,
            RoleArg::Payments => Role::Payments,
            RoleArg::Enrichment => Role::Enrichment,
            RoleArg::Inventory => Role::Inventory,
            RoleArg::Projector => Role::Projector,
            RoleArg::Analytics => Role::Analytics,
            RoleArg::Audit => Role::Audit,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match config::load(cli.config.as_deref(), &cli.overrides) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Before the async runtime: the OTLP exporter runs on threads of its own.
    let _tracing = match orderflow_telemetry::init(&cli.log, &settings.tracing) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: tracing: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Up => serve(settings, Role::ALL).await,
        Command::Run { role } => serve(settings, &[role.into()]).await,
        Command::Migrate { grant_to } => {
            let url = settings.database_url();
            let store = Store::connect(&url, 1)
                .await
                .with_context(|| format!("connecting to {}", redact_url(&url)))?;
            store.migrate().await?;
            println!("migrations applied ({})", store.backend().name());
            if let Some(role) = grant_to {
                store.grant_service_role(&role).await?;
                println!("granted the service's privileges to {role}");
            }
            Ok(())
        }
        Command::Dlq { command } => dead_letters(settings, command).await,
        Command::Bench(args) => bench::run(settings, args).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let url = settings.database_url();
            let store = Store::connect(&url, 1)
                .await
                .with_context(|| format!("connecting to {}", redact_url(&url)))?;
            match store.verify_audit().await? {
                orderflow_store::AuditVerdict::Intact(rows) => {
                    println!("audit trail intact: {rows} rows");
                    Ok(())
                }
                orderflow_store::AuditVerdict::Broken { seq, reason } => {
                    bail!("audit trail broken at row {seq}: {reason}")
                }
            }
        }
        Command::Schemas {
            command: SchemasCommand::Check { dir, registry },
        } => check_schemas(dir.as_deref(), registry.as_deref(), &settings.kafka.topic_prefix).await,
        Command::Topics {
            command: TopicsCommand::Acls { role },
        } => {
            let roles: Vec<Role> = match role {
                Some(role) => vec![role.into()],
                None => Role::ALL.to_vec(),
            };
            println!(
                "{:<11} {:<9} {:<16} {:<8} resource",
                "role", "operation", "resource type", "pattern"
            );
            for role in roles {
                for grant in role.kafka_access(&settings).grants() {
                    let pattern = if grant.prefixed { "PREFIXED" } else { "LITERAL" };
                    println!(
                        "{:<11} {:<9} {:<16} {pattern:<8} {}",
                        role.name(),
                        grant.operation,
                        grant.resource,
                        grant.name
                    );
                }
            }
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::Apply,
        } => {
            if settings.kafka.cluster().is_none() {
                bail!(
                    "topics apply needs a Kafka cluster: set --kafka-bootstrap or ORDERFLOW_KAFKA__BOOTSTRAP_SERVERS"
                );
            }
            let bus = Bus::connect(settings.kafka.clone())?;
            bus.verify(std::time::Duration::from_secs(15)).await?;
            let mut reports = bus.apply_topics().await?;
            let cleanup = orderflow_bus::topics::Cleanup::Delete {
                days: orderflow_consumer::ROUTING_RETENTION_DAYS,
            };
            let routing: Vec<(String, orderflow_bus::topics::Cleanup)> =
                orderflow_roles::routing_topics(&settings)
                    .into_iter()
                    .map(|topic| (topic, cleanup))
                    .collect();
            reports.extend(bus.ensure_routing_topics(&routing).await?);
            for report in reports {
                let action = match report.action {
                    TopicAction::Created => "created".to_owned(),
                    TopicAction::Unchanged => "ok".to_owned(),
                    TopicAction::Differs(why) => format!("differs: {why}"),
                };
                println!("{:<40} {action}", report.topic);
            }
            Ok(())
        }
    }
}

async fn check_schemas(
    dir: Option<&std::path::Path>,
    registry: Option<&str>,
    prefix: &str,
) -> anyhow::Result<()> {
    use orderflow_events::check;
    let topics = match dir {
        Some(dir) => check::read_dir(dir).map_err(anyhow::Error::msg)?,
        None => check::committed(),
    };
    if topics.is_empty() {
        bail!("no schemas found");
    }
    let client = registry
        .map(orderflow_registry::RegistryClient::new)
        .transpose()?;
    let mut failed = 0;
    for topic in &topics {
        let latest = topic.versions.last().map_or(0, |(n, _)| *n);
        let mut problems = check::check(topic).err().unwrap_or_default();
        if let (Some(client), Some((_, text))) = (&client, topic.versions.last()) {
            let subject = orderflow_registry::value_subject(&format!("{prefix}{}", topic.topic));
            match client.test_compatibility(&subject, text).await {
                Ok(Ok(())) => {}
                Ok(Err(reasons)) => {
                    problems.extend(reasons.into_iter().map(|r| format!("registry {subject}: {r}")))
                }
                Err(e) if e.error_code() == 40401 => {}
                Err(e) => problems.push(format!("registry {subject}: {e}")),
            }
        }
        if problems.is_empty() {
            println!("{:<22} v{latest:<3} {:<20} ok", topic.topic, topic.level.as_str());
        } else {
            failed += 1;
            for problem in problems {
                println!("{:<22} {problem}", topic.topic);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} schema(s) break their compatibility rules");
    }
    Ok(())
}

async fn serve(settings: Settings, roles: &[Role]) -> anyhow::Result<()> {
    if roles == [Role::Gateway] {
        return serve_gateway(settings).await;
    }
    let database = redact_url(&settings.database_url());
    orderflow_api::metrics::install()?;
    let platform = Platform::start(settings.clone(), roles).await?;
    print_banner(&settings, &platform, roles, &database);

    let shutdown = platform.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        shutdown.cancel();
    });
    platform.wait().await?;
    Ok(())
}

/// A standalone gateway: no database, no Kafka; Redis only for shared rate limits.
async fn serve_gateway(settings: Settings) -> anyhow::Result<()> {
    orderflow_api::metrics::install()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = orderflow_roles::gateway::start_proxy(&settings, None, shutdown.clone()).await?;
    let ops = match settings.ops.listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("ops listener on {listen}"))?;
            let addr = listener.local_addr()?;
            let app = orderflow_roles::ops::gateway_listener_routes(shutdown.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move { orderflow_api::serve(listener, app, stop.cancelled_owned()).await });
            Some(addr)
        }
        None => None,
    };
    println!(
        "orderflow listening on {}://{}",
        settings.http.scheme(),
        running.addr
    );
    println!("  roles:    gateway");
    println!("  upstreams: {}", settings.gateway.upstreams.join(", "));
    print_gateway(&settings, running.shared_limits);
    if let Some(addr) = ops {
        println!("  ops:      http://{addr} (/metrics, /healthz, /readyz)");
    }
    match settings.cache.redis_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => println!("  cache:    redis ({}), for rate limits only", redact_url(url)),
        None => println!("  cache:    none (rate limits in this process)"),
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        shutdown.cancel();
    });
    running.serve.await?;
    Ok(())
}

fn print_gateway(settings: &Settings, shared_limits: bool) {
    let gateway = &settings.gateway;
    let credentials = if gateway.has_credentials() {
        format!(
            "{} API key(s){}",
            gateway.api_keys.len(),
            if gateway.jwt.is_configured() { ", JWT" } else { "" }
        )
    } else {
        format!(
            "development API key (every scope) in {}",
            orderflow_roles::gateway::dev_key_path(settings).display()
        )
    };
    let limits = if !gateway.rate_limit.enabled {
        "off".to_owned()
    } else {
        format!(
            "{}/s, burst {} per client ({})",
            gateway.rate_limit.requests_per_second,
            gateway.rate_limit.burst,
            if shared_limits {
                "shared in Redis"
            } else {
                "in this process"
            }
        )
    };
    println!("  gateway:  {credentials}; rate limits {limits}");
}

fn print_banner(settings: &Settings, platform: &Platform, roles: &[Role], database: &str) {
    let names: Vec<&str> = roles.iter().map(Role::name).collect();
    let backends = &platform.backends;
    if let Some(addr) = platform.http_addr {
        println!("orderflow listening on {}://{addr}", settings.http.scheme());
    }
    println!("  roles:    {}", names.join(", "));
    if roles.contains(&Role::Gateway) {
        print_gateway(settings, backends.redis.is_some());
    }
    println!("  database: {} ({database})", backends.store.backend().name());
    if backends.bus.is_embedded() {
        println!(
            "  kafka:    embedded mock cluster at {} (memory only: the log is lost on exit, no transactional isolation)",
            backends.bus.bootstrap_servers()
        );
    } else {
        println!("  kafka:    {}", backends.bus.bootstrap_servers());
    }
    if let (Some(addr), true) = (platform.http_addr, roles.contains(&Role::Orders)) {
        println!("  console:  {}://{addr}/", settings.http.scheme());
    }
    if let Some(addr) = platform.ops_addr {
        println!("  ops:      http://{addr} (/metrics, /healthz, /readyz)");
    }
    if let Some(endpoint) = settings
        .tracing
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        println!("  traces:   OTLP/HTTP to {}", redact_url(endpoint));
    }
    // The cache line ends the banner.
    match settings.cache.redis_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => println!("  cache:    redis ({})", redact_url(url)),
        None => println!("  cache:    {}", settings.cache.backend_name()),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The full dead-letter topic for a name given on the command line (`order.created` or `order.created.dlq`).
fn dlq_topic(bus: &Bus, name: &str) -> String {
    let base = name.strip_suffix(".dlq").unwrap_or(name);
    let base = base.strip_prefix(&bus.settings().topic_prefix).unwrap_or(base);
    orderflow_consumer::routing::dlq_topic(&bus.topic(base))
}

async fn dead_letters(settings: Settings, command: DlqCommand) -> anyhow::Result<()> {
    use orderflow_consumer::dlq;
    if settings.kafka.cluster().is_none() {
        bail!(
            "dead letters live in a Kafka cluster: set kafka.bootstrap_servers (the embedded cluster exists only inside `orderflow up`)"
        );
    }
    let bus = Bus::connect(settings.kafka)?;
    match command {
        DlqCommand::List { topic } => {
            let topics = match topic {
                Some(name) => vec![dlq_topic(&bus, &name)],
                None => dlq::topics(&bus).await?,
            };
            let mut total = 0;
            for topic in topics {
                let letters = dlq::list(&bus, &topic).await?;
                total += letters.len();
                for letter in letters {
                    println!("{topic} {}", letter.summary());
                }
            }
            eprintln!("{total} dead letter(s)");
        }
        DlqCommand::Show {
            topic,
            partition,
            offset,
        } => {
            let letter = dlq::show(&bus, &dlq_topic(&bus, &topic), partition, offset).await?;
            println!("topic: {}", letter.topic);
            println!("partition: {}", letter.partition);
            println!("offset: {}", letter.offset);
            println!(
                "key: {}",
                letter
                    .key
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
            );
            for (name, value) in &letter.headers {
                println!("header {name}: {}", String::from_utf8_lossy(value));
            }
            match std::str::from_utf8(&letter.payload) {
                Ok(text) if !text.contains('\0') => println!("value: {text}"),
                _ => println!("value (hex): {}", hex(&letter.payload)),
            }
        }
        DlqCommand::Replay {
            topic,
            partition,
            offset,
        } => {
            let only = partition.zip(offset);
            let sent = dlq::replay(&bus, &dlq_topic(&bus, &topic), only).await?;
            println!("replayed {sent} dead letter(s)");
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

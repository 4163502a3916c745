//! Faults: killing any role's process (the gateway and the orders process running the relay included)
//! while it holds work, and restarting it, changes no outcome; server faults (PostgreSQL, Redis, Kafka, the
//! network) lose no accepted order. Every role runs as two processes in both, so partitions move between
//! the members of each consumer group as the faults land. Each run ends with `orderflow reconcile` and
//! prints its row of the soak table.

use std::time::{Duration, Instant};

use orderflow_testkit::checks::{StockLine, assert_stock_reconciles, revenue_once_refunded};
use orderflow_testkit::unique;
use serde_json::Value;

use crate::support::*;

/// Orders for the kill test (10,000 by default, as for the other fault kinds).
fn kill_test_orders() -> usize {
    std::env::var("KILL_TEST_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Projector processes in the kill test (`KILL_TEST_PROJECTORS`; as many as every other role by default).
fn projectors() -> usize {
    std::env::var("KILL_TEST_PROJECTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(kill_test_processes)
        .clamp(1, kill_test_processes())
}

/// Processes per role in the kill test (`KILL_TEST_PROCESSES`, 1 or 2; 2 by default): with two, every
/// consumer group has two members, and partitions move between them as the kills land. Consumers get their
/// share of partitions before the first order, and each victim is the first process of its role seen
/// holding work.
fn kill_test_processes() -> usize {
    std::env::var("KILL_TEST_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .clamp(1, 2)
}

/// One fault run at a time: each starts a platform of its own (and servers, for the server faults) and
/// places thousands of orders, and two at once on two cores starve each other past their deadlines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The flags that point a process at the configuration file, the database, Kafka under topic prefix
/// `<prefix>.`, and Redis.
fn backend_args(
    config: &std::path::Path,
    db: &str,
    kafka: &str,
    prefix: &str,
    redis_url: &str,
) -> Vec<String> {
    [
        "--config",
        config.to_str().expect("path"),
        "--database-url",
        db,
        "--kafka-bootstrap",
        kafka,
        "--topic-prefix",
        &format!("{prefix}."),
        "--redis-url",
        redis_url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// One role running as its own `orderflow run --role <role>` process.
struct RoleProcess {
    role: &'static str,
    /// Its instance id (`<role>-a` or `<role>-b`).
    name: String,
    /// Where its ops listener (metrics) answers, the same across restarts.
    ops: String,
    instance: Instance,
}

/// The fixed addresses of one process (kept across its restarts, so the gateway's upstreams and the
/// metrics scrapes find the successor): its ops listener, and its API for the orders role and the gateway.
#[derive(Clone, Copy)]
struct Ports {
    ops: u16,
    http: u16,
}

impl Ports {
    fn free() -> Self {
        Self {
            ops: stable_port(),
            http: stable_port(),
        }
    }
}

/// A free port below the kernel's ephemeral range (32768 and up by default), so that no client connection
/// of another process takes it while its process is down between a kill and the restart.
fn stable_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    loop {
        let port = 20_000 + (RandomState::new().hash_one(Instant::now()) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts `role` with `args` (the shared backends) under the stable instance id `name`, so a restart takes
/// the killed process's place in its groups at once and fences its open transactions.
async fn start_role(
    role: &'static str,
    name: String,
    ports: Ports,
    args: Vec<String>,
    dir: std::path::PathBuf,
) -> RoleProcess {
    tokio::task::spawn_blocking(move || {
        let mut all = vec!["run".to_owned(), "--role".to_owned(), role.to_owned()];
        all.extend(args);
        if matches!(role, "orders" | "gateway") {
            all.extend(["--listen".to_owned(), format!("127.0.0.1:{}", ports.http)]);
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let env = [
            ("ORDERFLOW_KAFKA__INSTANCE_ID", name.clone()),
            ("ORDERFLOW_OPS__LISTEN", format!("127.0.0.1:{}", ports.ops)),
            ("ORDERFLOW_LOG", "warn,orderflow_consumer=info".to_owned()),
        ];
        // Each process logs to `<name>.log`, its restarts after it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .expect("role log");
        let (child, _) = spawn_with_stderr(&refs, &dir, &env, std::process::Stdio::from(log));
        RoleProcess {
            role,
            name,
            ops: format!("http://127.0.0.1:{}", ports.ops),
            instance: Instance(Some(child)),
        }
    })
    .await
    .expect("start role")
}

/// Work the process holds right now, if any: records fetched and not yet committed (in-flight batches or
/// lag on its consumers' partitions) from its metrics, for the orders role also events committed and not
/// yet published by the relay. The gateway's work (requests it forwards) shows as interrupted requests at
/// the client instead.
async fn work_held(process: &RoleProcess, pool: &sqlx::PgPool) -> Option<String> {
    if process.role == "orders" {
        let (pending,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(pool)
            .await
            .ok()?;
        if pending > 0 {
            return Some(format!("{pending} events not yet published"));
        }
    }
    let text = http_get(format!("{}/metrics", process.ops))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let (batches, lag) = (
        metric_sum(&text, "orderflow_consumer_in_flight_batches"),
        metric_sum(&text, "orderflow_consumer_lag"),
    );
    (batches > 0.0 || lag > 0.0).then(|| format!("{batches} batches in flight, lag {lag}"))
}

/// Runs `orderflow reconcile` with the run's backend flags until it passes (derived state may take a few
/// seconds to settle), failing the test with its table after 60 s.
async fn reconcile_passes(args: &[String]) {
    let mut reconcile_args = vec!["reconcile", "--within", "60"];
    reconcile_args.extend(args.iter().map(String::as_str));
    let started = Instant::now();
    loop {
        let out = run_binary(&reconcile_args, &[]);
        if out.status.success() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "reconcile fails:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Prints a row of the soak table and appends it to `$FAULT_TABLE` when set.
fn record_row(row: &str) {
    eprintln!("{row}");
    if let Ok(table) = std::env::var("FAULT_TABLE") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(table)
            .expect("fault table");
        writeln!(file, "{row}").expect("fault table row");
    }
}

/// The sum of every series of `metric` in a Prometheus text exposition.
fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the consumers behind `metrics` (a `/metrics` URL) hold at least one partition.
async fn wait_assigned(what: &str, metrics: String) {
    eventually(what, move || {
        let metrics = metrics.clone();
        async move {
            let text = http_get(metrics).await.ok()?.text().await.ok()?;
            (metric_sum(&text, "orderflow_consumer_assigned_partitions") > 0.0).then_some(())
        }
    })
    .await;
}

/// Orders not yet terminal: the work on its way through the pipeline.
async fn orders_in_flight(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_as::<_, (i64,)>(
        "SELECT COUNT(*) FROM orders WHERE status NOT IN ('PAYMENT_FAILED', 'ALLOCATED', 'REJECTED', 'CANCELLED')",
    )
    .fetch_one(pool)
    .await
    .map_or(0, |(n,)| n)
}

impl RoleProcess {
    /// SIGKILL: no drain, no commit, no goodbye to the group.
    fn kill(&mut self) {
        if let Some(mut child) = self.instance.0.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_role_process_mid_run_and_restarting_it_changes_no_outcome() {
    let _turn = ONE_AT_A_TIME.lock().await;
    use orderflow_roles::payments::{Decision, ProviderSettings, SimulatedProvider};
    let orders_n = kill_test_orders();
    let scarce_stock = (orders_n / 10) as i32;
    let prefix = unique("kill");
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let db = orderflow_testkit::postgres().fresh_database().expect("database");
    let migrated = run_binary(&["migrate", "--database-url", &db], &[]);
    assert!(migrated.status.success());
    let store = orderflow_store::Store::connect(&db, 2).await.expect("store");
    for (sku, price_minor, stock) in orderflow_testkit::workload::catalogue(scarce_stock) {
        let product = orderflow_store::Product {
            sku: sku.into(),
            name: sku.into(),
            price_minor,
            stock,
        };
        store.put_product(&product).await.expect("product");
    }
    // A short session timeout so a killed member without a static id would be noticed soon; the provider
    // declines and fails some charges, deterministically.
    let config = dir.join("kill.toml");
    let config_text = format!(
        "[cache]\nkey_prefix = \"{prefix}:\"\n\n[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\n\
         [payments.provider]\nseed = 3\nfailure_rate = 0.05\ndecline_above_minor = 40000\n"
    );
    let provider = SimulatedProvider::new(ProviderSettings {
        seed: 3,
        failure_rate: 0.05,
        decline_above_minor: Some(40_000),
        ..ProviderSettings::default()
    });
    // With two processes per role, partitions move between them when one is killed and comes back. The
    // clients reach the orders processes through a standalone gateway, so either can be killed under them.
    let roles = [
        "orders",
        "payments",
        "enrichment",
        "inventory",
        "projector",
        "analytics",
        "audit",
        "gateway",
    ];
    let names: Vec<(&'static str, String)> = roles
        .iter()
        .flat_map(|&role| {
            // One gateway (the clients' door). The projector runs as many as the others
            // (`KILL_TEST_PROJECTORS` sets its own number): with two, the last `order.state` record of about
            // one order in 10,000 used to end older than the order, when the newer state a batch published
            // after re-reading was itself overtaken on its way.
            let sides = match role {
                "gateway" => 1,
                "projector" => projectors(),
                _ => kill_test_processes(),
            };
            ["a", "b"]
                .into_iter()
                .take(sides)
                .map(move |side| (role, format!("{role}-{side}")))
        })
        .collect();
    let ports: std::collections::HashMap<String, Ports> = names
        .iter()
        .map(|(_, name)| (name.clone(), Ports::free()))
        .collect();
    let upstreams: Vec<String> = names
        .iter()
        .filter(|(role, _)| *role == "orders")
        .map(|(_, name)| format!("\"http://127.0.0.1:{}\"", ports[name].http))
        .collect();
    let base = format!("http://127.0.0.1:{}", ports["gateway-a"].http);
    std::fs::write(
        &config,
        format!(
            "{config_text}\n[gateway]\nupstreams = [{}]\n\n[gateway.rate_limit]\nenabled = false\n",
            upstreams.join(", ")
        ),
    )
    .expect("config");
    let args = backend_args(
        &config,
        &db,
        &orderflow_testkit::kafka().bootstrap_servers(),
        &prefix,
        &orderflow_testkit::redis().url(),
    );
    let mut running = Vec::new();
    for (role, name) in &names {
        running.push(start_role(role, name.clone(), ports[name], args.clone(), dir.clone()).await);
    }
    let pool = sqlx::PgPool::connect(&db).await.expect("pg");
    // Every consumer has its share of partitions before the first order.
    for process in running.iter().filter(|p| p.role != "gateway") {
        let metrics = format!("{}/metrics", process.ops);
        wait_assigned(&format!("{} to be assigned partitions", process.name), metrics).await;
    }

    // Orders in two halves; while each is placed, one process of each of four roles is killed and
    // restarted one after another, each while it holds work: records fetched and not committed, events not
    // yet published (the orders process, which runs the relay), or requests on their way (the gateway, last,
    // so the requests the clients had to send again in the second half were cut by its kill).
    let mut placed: Vec<(Value, bool)> = Vec::new();
    let half = orders_n / 2;
    let last_overdue = std::sync::Arc::new(std::sync::Mutex::new(None));
    let overdue_watch = tokio::spawn(watch_overdue(db.clone(), last_overdue.clone()));
    let mut last_kill = Instant::now();
    let mut in_flight: Vec<i64> = Vec::new();
    for (round, victims) in [
        ["payments", "enrichment", "inventory", "orders"],
        ["projector", "analytics", "audit", "gateway"],
    ]
    .into_iter()
    .enumerate()
    {
        let client = client();
        let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let placing = orderflow_testkit::workload::place_orders_through_outages(
            &client,
            &base,
            round * half,
            if round == 0 { half } else { orders_n - half },
            interrupted.clone(),
        );
        let killing = async {
            let mut restarted = Vec::new();
            let mut held = Vec::new();
            for victim in victims {
                tokio::time::sleep(Duration::from_millis(700)).await;
                // The first of the role's processes seen holding work is killed at once (watched for 5 s).
                let watching = Instant::now();
                let mut chosen = None;
                while chosen.is_none() && victim != "gateway" && watching.elapsed() < Duration::from_secs(5) {
                    for (index, process) in running.iter().enumerate().filter(|(_, p)| p.role == victim) {
                        if let Some(work) = work_held(process, &pool).await {
                            chosen = Some((index, Some(work)));
                            break;
                        }
                    }
                    if chosen.is_none() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                let (index, work) = chosen.unwrap_or_else(|| {
                    let index = running.iter().position(|p: &RoleProcess| p.role == victim);
                    (index.expect("running"), None)
                });
                let mut process = running.remove(index);
                let killed_at = Instant::now();
                process.kill();
                held.push((
                    process.name.clone(),
                    work,
                    orders_in_flight(&pool).await,
                    killed_at,
                ));
                tokio::time::sleep(Duration::from_millis(300)).await;
                let name = process.name.clone();
                restarted
                    .push(start_role(victim, name.clone(), ports[&name], args.clone(), dir.clone()).await);
            }
            (restarted, held)
        };
        let (orders, (restarted, held)) = tokio::join!(placing, killing);
        placed.extend(orders.expect("orders placed"));
        running.extend(restarted);
        let seen: Vec<String> = held
            .iter()
            .map(|(name, work, waiting, _)| {
                format!(
                    "{name}: {}, {waiting} orders in flight",
                    work.as_deref().unwrap_or("requests on their way")
                )
            })
            .collect();
        eprintln!(
            "round {round}: killed {}; {} requests cut off and sent again",
            seen.join("; "),
            interrupted.load(std::sync::atomic::Ordering::Relaxed)
        );
        for (name, work, waiting, killed_at) in &held {
            assert!(
                work.is_some() || name.starts_with("gateway"),
                "{name} was killed while it held work: {seen:?}"
            );
            in_flight.push(*waiting);
            last_kill = *killed_at;
        }
        if round == 1 {
            assert!(
                interrupted.load(std::sync::atomic::Ordering::Relaxed) > 0,
                "the gateway was killed while it forwarded requests"
            );
        }
    }
    assert_eq!(placed.len(), orders_n);

    // Every order ends where the rules say. A POST resent after the gateway or the orders process was killed
    // under it may have placed an order the clients never heard of (no idempotency key yet): such orders
    // count as orders like any other.
    let started = Instant::now();
    let statuses = loop {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, status FROM orders")
            .fetch_all(&pool)
            .await
            .expect("orders");
        let terminal = ["PAYMENT_FAILED", "ALLOCATED", "REJECTED", "CANCELLED"];
        if rows
            .iter()
            .filter(|(_, s)| terminal.contains(&s.as_str()))
            .count()
            == rows.len()
            && rows.len() >= orders_n
        {
            break rows
                .into_iter()
                .map(|(id, s)| (id.to_string(), s))
                .collect::<std::collections::HashMap<_, _>>();
        }
        if started.elapsed() > Duration::from_secs(300) {
            let mut by_status = std::collections::BTreeMap::new();
            for (_, status) in &rows {
                *by_status.entry(status.clone()).or_insert(0) += 1;
            }
            let notable: Vec<String> = running
                .iter()
                .flat_map(|p| {
                    let text =
                        std::fs::read_to_string(dir.join(format!("{}.log", p.name))).unwrap_or_default();
                    text.lines()
                        .filter(|l| {
                            [
                                "restarting",
                                "did not return",
                                "role stopped",
                                "revoked",
                                "stall",
                                "ERROR orderflow",
                            ]
                            .iter()
                            .any(|w| l.contains(w))
                        })
                        .map(|l| format!("{}: {l}", p.name))
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "orders did not all finish within 300 s: {by_status:?}; the roles' notable log lines (in {}):\n{}",
                dir.display(),
                notable.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (order, cancelled) in &placed {
        let id = order["id"].as_str().expect("id");
        let event = orderflow_events::OrderCreated {
            event_id: String::new(),
            event_type: "order.created".into(),
            order_id: id.into(),
            order_version: 1,
            occurred_at: 0,
            customer_id: order["customer_id"].as_str().expect("customer").into(),
            currency: "EUR".into(),
            items: Vec::new(),
            total_minor: order["total_minor"].as_i64().expect("total"),
        };
        let expected: &[&str] = match (*cancelled, provider.decide(&event).0) {
            (true, _) => &["CANCELLED"],
            (false, Decision::Captured) => &["ALLOCATED", "REJECTED"],
            (false, _) => &["PAYMENT_FAILED"],
        };
        let status = statuses[id].as_str();
        assert!(
            expected.contains(&status),
            "order {id} is {status}, expected {expected:?}"
        );
    }

    // Stock reconciles and never went negative; one charge per order.
    let lines = store.stock_lines().await.expect("stock");
    assert_stock_reconciles(
        lines.iter().map(|l| StockLine {
            sku: &l.sku,
            stock: l.stock.into(),
            allocated: l.allocated,
        }),
        |sku| {
            if sku == "SCARCE" {
                scarce_stock.into()
            } else {
                1_000_000
            }
        },
    );
    let all_orders = statuses.len();
    assert_eq!(
        store.charge_totals().await.expect("charges").charges,
        all_orders as i64
    );

    // Analytics revenue is captured less refunded, once every rejected or cancelled paid order was refunded;
    // each order was counted created once.
    let revenue_url = format!(
        "{base}/v1/analytics/revenue?from={}&to={}",
        (chrono::Utc::now() - chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%SZ"),
        (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let funnel = eventually("refunds and analytics to settle", || {
        let (revenue_url, base, pool) = (revenue_url.clone(), base.clone(), pool.clone());
        async move {
            let expected = revenue_once_refunded(&pool).await.ok()??;
            let revenue: Value = http_get(&revenue_url).await.ok()?.json().await.ok()?;
            let funnel: Value = http_get(format!("{base}/v1/analytics/funnel"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (revenue["total_minor"]["EUR"].as_i64() == Some(expected)).then_some(funnel)
        }
    })
    .await;
    assert_eq!(funnel["created"].as_u64(), Some(all_orders as u64));

    // The audit trail holds each event once, and its chain verifies.
    let audited = eventually("the audit trail to hold every order", || {
        let pool = pool.clone();
        async move {
            let (created,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE topic LIKE '%order.created'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (created as usize == all_orders).then_some(())
        }
    });
    audited.await;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM audit_log")
            .fetch_one(&pool)
            .await
            .expect("audit rows");
    assert_eq!(rows, distinct, "an event was appended twice");
    let verified = run_binary(&["audit", "verify", "--database-url", &db], &[]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    // The independent oracle agrees, as after the server faults.
    reconcile_passes(&args).await;

    // The run's row of the soak table: every order placed is in the database and terminal (asserted
    // above), and the funnel counted each order created once (asserted above); effects counted twice would
    // show as more payments in the funnel than captured charges.
    overdue_watch.abort();
    let _ = overdue_watch.await;
    let recovered = (*last_overdue.lock().expect("overdue watch"))
        .map(|at| at.saturating_duration_since(last_kill))
        .unwrap_or_default();
    let (captured,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM payment_charges WHERE outcome = 'CAPTURED'")
            .fetch_one(&pool)
            .await
            .expect("captured");
    let duplicated = (funnel["paid"].as_i64().unwrap_or(0) - captured).max(0);
    let row = format!(
        "| role processes killed mid-batch ({} per role, {} projector(s), one gateway; {}) | {} | 0 | 0 | {duplicated} | {:.1} s |",
        kill_test_processes(),
        projectors(),
        [
            "payments",
            "enrichment",
            "inventory",
            "orders",
            "projector",
            "analytics",
            "audit",
            "gateway"
        ]
        .join(", "),
        in_flight
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" + "),
        recovered.as_secs_f64()
    );
    record_row(&row);
    assert_eq!(duplicated, 0, "no payment counted twice");

    for mut process in running {
        process.instance.terminate().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Platform processes in a server-fault run (`FAULT_TEST_PROCESSES`, 1 or 2; `default` otherwise), each
/// running every role: with two, every consumer group has two members.
fn fault_test_processes(default: usize) -> usize {
    std::env::var("FAULT_TEST_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(1, 2)
}

/// Orders for the server-fault test.
fn server_fault_orders() -> usize {
    std::env::var("SERVER_FAULT_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Orders in the database, and how many of them are not terminal yet.
async fn progress(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT COUNT(*), COUNT(*) FILTER (WHERE status IN ('CREATED', 'PAID')) FROM orders")
        .fetch_one(pool)
        .await
        .unwrap_or((0, 0))
}

/// Waits until at least `n` orders are in the database, then returns the progress; fails should `placing`
/// end first, or should no order arrive for a minute (a stall, however many orders the run asks for).
async fn wait_for_orders<T: std::fmt::Debug>(
    pool: &sqlx::PgPool,
    n: i64,
    placing: &mut tokio::task::JoinHandle<T>,
) -> (i64, i64) {
    let (mut seen, mut since) = (-1, Instant::now());
    loop {
        let progress = progress(pool).await;
        if progress.0 >= n {
            return progress;
        }
        if placing.is_finished() {
            panic!("placing orders ended at {progress:?}: {:?}", placing.await);
        }
        if progress.0 > seen {
            (seen, since) = (progress.0, Instant::now());
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "orders stopped arriving: {progress:?} (none for a minute)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fault a server-fault run injects while orders are on their way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Redis is SIGKILLed and comes back empty 3 s later.
    RedisLoss,
    /// The PostgreSQL postmaster is SIGKILLed and restarted into crash recovery.
    PostgresCrash,
    /// Every connection to PostgreSQL, Redis and Kafka is delayed by 100 ms for 3 s, then cut (open
    /// connections closed, new ones refused) for 3 s, then let through again (the run has a broker of its
    /// own that advertises the proxy's address).
    NetworkCut,
    /// The Redis Cluster master serving the analytics aggregates' slot is SIGKILLed (its replica takes
    /// over after 1 s), and restarted 3 s later as a replica (the run has a cluster of six nodes of its own).
    RedisFailover,
    /// The Kafka node leading the first `order.created` partition is SIGKILLed, and restarted 5 s later
    /// (the run has a cluster of three nodes of its own, replication 3, `min.insync.replicas` 2).
    KafkaLeaderKill,
}

/// A run's own servers, so that its faults hit no other test: PostgreSQL with production durability and
/// Redis without persistence (a restart comes back empty), each reached through a TCP proxy.
struct Servers {
    pg: Option<orderflow_testkit::PostgresServer>,
    redis: Option<orderflow_testkit::RedisServer>,
    /// A Redis Cluster instead, for the failover.
    redis_cluster: Option<orderflow_testkit::RedisCluster>,
    pg_proxy: orderflow_testkit::TcpProxy,
    /// In front of the single Redis server.
    redis_proxy: Option<orderflow_testkit::TcpProxy>,
    /// A Kafka cluster of the run's own (three nodes), or `None` for the harness's broker.
    kafka: Option<orderflow_testkit::KafkaCluster>,
    /// A broker of the run's own that clients reach only through the proxy, for the network cut.
    kafka_proxied: Option<(orderflow_testkit::KafkaServer, orderflow_testkit::TcpProxy)>,
    /// The topic prefix, with its dot.
    topic_prefix: String,
}

impl Servers {
    async fn start(
        kafka_cluster: bool,
        kafka_proxied: bool,
        redis_cluster: bool,
        topic_prefix: String,
    ) -> Self {
        use orderflow_testkit::{
            KafkaCluster, KafkaServer, PostgresServer, RedisCluster, RedisServer, TcpProxy,
        };
        tokio::task::spawn_blocking(move || {
            let kafka_proxied = kafka_proxied.then(|| {
                let external = orderflow_testkit::free_port().expect("port");
                let proxy = TcpProxy::start(([127, 0, 0, 1], external).into()).expect("proxy");
                let broker = KafkaServer::start_behind(&proxy, external).expect("kafka");
                (broker, proxy)
            });
            let pg = PostgresServer::start_durable().expect("postgresql");
            let (redis, cluster) = if redis_cluster {
                (None, Some(RedisCluster::start().expect("redis cluster")))
            } else {
                (Some(RedisServer::start().expect("redis")), None)
            };
            Self {
                pg_proxy: TcpProxy::start(([127, 0, 0, 1], pg.port()).into()).expect("proxy"),
                redis_proxy: redis
                    .as_ref()
                    .map(|r| TcpProxy::start(([127, 0, 0, 1], r.port()).into()).expect("proxy")),
                pg: Some(pg),
                redis,
                redis_cluster: cluster,
                kafka: kafka_cluster.then(|| KafkaCluster::start().expect("kafka cluster")),
                kafka_proxied,
                topic_prefix,
            }
        })
        .await
        .expect("servers")
    }

    /// `bootstrap.servers` of the run's Kafka.
    fn kafka_bootstrap(&self) -> String {
        match (&self.kafka, &self.kafka_proxied) {
            (Some(cluster), _) => cluster.bootstrap_servers(),
            (None, Some((_, proxy))) => format!("127.0.0.1:{}", proxy.port()),
            (None, None) => orderflow_testkit::kafka().bootstrap_servers(),
        }
    }

    /// Settings for the run's Kafka: a cluster of three replicates every topic three times.
    fn kafka_settings(&self) -> &'static str {
        match &self.kafka {
            Some(_) => "[kafka]\nreplication_factor = 3\nmin_insync_replicas = 2\n\n",
            None => "",
        }
    }

    /// A fresh database: its URL directly and through the proxy.
    fn database(&self) -> (String, String) {
        let pg = self.pg.as_ref().expect("postgresql");
        let direct = pg.fresh_database().expect("database");
        let proxied = direct.replace(
            &format!("127.0.0.1:{}/", pg.port()),
            &format!("127.0.0.1:{}/", self.pg_proxy.port()),
        );
        assert_ne!(direct, proxied, "the database URL names the server's port");
        (direct, proxied)
    }

    /// Redis through the proxy, or the Cluster's nodes.
    fn redis_url(&self) -> String {
        match (&self.redis_proxy, &self.redis_cluster) {
            (Some(proxy), _) => format!("redis://127.0.0.1:{}/", proxy.port()),
            (None, Some(cluster)) => cluster.urls().join(","),
            (None, None) => unreachable!("a run has Redis"),
        }
    }

    /// Settings for the run's Redis.
    fn redis_settings(&self) -> &'static str {
        match &self.redis_cluster {
            Some(_) => "redis_cluster = true\n",
            None => "",
        }
    }

    /// Keys in the single Redis server now.
    async fn redis_keys(&self) -> i64 {
        let url = self.redis.as_ref().expect("redis").url();
        let mut conn = redis::Client::open(url)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        redis::cmd("DBSIZE").query_async(&mut conn).await.expect("dbsize")
    }

    async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::RedisLoss => {
                assert!(self.redis_keys().await > 0, "Redis held state before its loss");
                let redis = self.redis.take().expect("redis");
                redis.kill();
                tokio::time::sleep(Duration::from_secs(3)).await;
                let redis = tokio::task::spawn_blocking(move || redis.restart().map(|()| redis))
                    .await
                    .expect("task")
                    .expect("redis back");
                self.redis = Some(redis);
            }
            Fault::PostgresCrash => {
                let pg = self.pg.take().expect("postgresql");
                pg.kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
                let pg = tokio::task::spawn_blocking(move || pg.restart().map(|()| pg))
                    .await
                    .expect("task")
                    .expect("postgresql back");
                self.pg = Some(pg);
            }
            Fault::KafkaLeaderKill => {
                let cluster = self.kafka.as_ref().expect("a Kafka cluster of the run's own");
                let topic = format!("{}order.created", self.topic_prefix);
                let leader = cluster
                    .leader(&topic, 0)
                    .expect("metadata")
                    .expect("the partition has a leader");
                cluster.kill(leader);
                tokio::time::sleep(Duration::from_secs(5)).await;
                let cluster = self.kafka.take().expect("cluster");
                let cluster = tokio::task::spawn_blocking(move || cluster.restart(leader).map(|()| cluster))
                    .await
                    .expect("task")
                    .expect("the node rejoins");
                self.kafka = Some(cluster);
            }
            Fault::NetworkCut => {
                let proxies: Vec<&orderflow_testkit::TcpProxy> = std::iter::once(&self.pg_proxy)
                    .chain(&self.redis_proxy)
                    .chain(self.kafka_proxied.as_ref().map(|(_, proxy)| proxy))
                    .collect();
                for proxy in &proxies {
                    proxy.delay(Duration::from_millis(100));
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                for proxy in &proxies {
                    proxy.delay(Duration::ZERO);
                    proxy.cut();
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                for proxy in &proxies {
                    proxy.restore();
                }
            }
            Fault::RedisFailover => {
                let cluster = self
                    .redis_cluster
                    .take()
                    .expect("a Redis Cluster of the run's own");
                let tag = format!("{{{}:analytics}}", self.topic_prefix.trim_end_matches('.'));
                let mut conn = redis::cluster::ClusterClient::new(cluster.urls())
                    .expect("cluster client")
                    .get_async_connection()
                    .await
                    .expect("cluster");
                let slot: i64 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(&tag)
                    .query_async(&mut conn)
                    .await
                    .expect("keyslot");
                let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut conn)
                    .await
                    .expect("slots");
                drop(conn);
                let port = master_of(&slots, slot).expect("the slot has a master");
                let victim = cluster.ports().iter().position(|&p| p == port).expect("a node");
                cluster.kill(victim);
                tokio::time::sleep(Duration::from_secs(3)).await;
                let cluster = tokio::task::spawn_blocking(move || {
                    cluster.restart(victim)?;
                    cluster.wait_healthy(Duration::from_secs(60)).map(|_| cluster)
                })
                .await
                .expect("task")
                .expect("the cluster heals");
                self.redis_cluster = Some(cluster);
            }
        }
    }
}

/// The port of the master serving `slot`, from a `CLUSTER SLOTS` answer.
fn master_of(slots: &[redis::Value], slot: i64) -> Option<u16> {
    slots.iter().find_map(|range| {
        let redis::Value::Array(fields) = range else {
            return None;
        };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end)), Some(redis::Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        let Some(redis::Value::Int(port)) = master.get(1) else {
            return None;
        };
        ((*start..=*end).contains(&slot)).then(|| u16::try_from(*port).ok()).flatten()
    })
}

/// Runs `orderflow up` on a run's own servers (and the harness's Kafka), places [`server_fault_orders`]
/// orders from clients that ride out outages, and injects `faults` one after another at even intervals of
/// the run, each while orders are on their way. Then no order answered `201` may be missing, every order
/// must be terminal within 60 s of the later of the last fault and the last order, and `orderflow reconcile`
/// must pass.
async fn run_through(tag: &str, faults: &[Fault]) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let orders_n = server_fault_orders();
    let prefix = unique(tag);
    let mut servers = Servers::start(
        faults.contains(&Fault::KafkaLeaderKill),
        faults.contains(&Fault::NetworkCut),
        faults.contains(&Fault::RedisFailover),
        format!("{prefix}."),
    )
    .await;
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let (direct, db) = servers.database();
    let migrated = run_binary(&["migrate", "--database-url", &direct], &[]);
    assert!(migrated.status.success());
    let store = orderflow_store::Store::connect(&direct, 2).await.expect("store");
    for (sku, price_minor, stock) in orderflow_testkit::workload::catalogue((orders_n / 10) as i32) {
        let product = orderflow_store::Product {
            sku: sku.into(),
            name: sku.into(),
            price_minor,
            stock,
        };
        store.put_product(&product).await.expect("product");
    }
    store.close().await;
    // No rate limit (the clients place as fast as they can); orders still waiting 15 s after their last
    // change are handed back to their steps, looked for every 5 s.
    let config = dir.join("faults.toml");
    std::fs::write(
        &config,
        format!(
            "{}[cache]\nkey_prefix = \"{prefix}:\"\n{}\n[gateway.rate_limit]\nenabled = false\n\n\
             [orders]\nstranded_after_secs = 15\nsweep_interval_secs = 5\n\n\
             [payments.provider]\nseed = 3\nfailure_rate = 0.05\ndecline_above_minor = 40000\n",
            servers.kafka_settings(),
            servers.redis_settings()
        ),
    )
    .expect("config");
    let args = backend_args(
        &config,
        &db,
        &servers.kafka_bootstrap(),
        &prefix,
        &servers.redis_url(),
    );
    let mut up_args = vec!["up"];
    up_args.extend(args.iter().map(String::as_str));
    up_args.extend(["--listen", "127.0.0.1:0"]);
    let log_path = dir.join("orderflow.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let (child, banner) = spawn_with_stderr(
        &up_args,
        &dir,
        &[("ORDERFLOW_LOG", "warn,orderflow_consumer=info".to_owned())],
        std::process::Stdio::from(log),
    );
    let mut platforms = vec![Instance(Some(child))];
    let base = banner
        .iter()
        .find_map(|l| l.strip_prefix("orderflow listening on "))
        .expect("listening")
        .trim()
        .to_owned();
    // A second platform runs every role too, so every consumer group has two members and the faults land
    // while partitions move between them.
    let mut logs = vec![log_path.clone()];
    let mut bases = vec![base.clone()];
    // Two platforms: every consumer group has two members, so partitions move between them as the faults
    // land.
    let processes = fault_test_processes(2);
    for n in 1..processes {
        let (second_dir, second_log) = (dir.join(format!("p{n}")), dir.join(format!("orderflow-{n}.log")));
        let log = std::fs::File::create(&second_log).expect("log file");
        let (child, banner) = spawn_with_stderr(
            &up_args,
            &second_dir,
            &[("ORDERFLOW_LOG", "warn,orderflow_consumer=info".to_owned())],
            std::process::Stdio::from(log),
        );
        platforms.push(Instance(Some(child)));
        logs.push(second_log);
        bases.push(
            banner
                .iter()
                .find_map(|l| l.strip_prefix("orderflow listening on "))
                .expect("listening")
                .trim()
                .to_owned(),
        );
    }
    // Every platform's consumers have their share of partitions before the first order.
    for base in &bases {
        let metrics = format!("{base}/metrics");
        wait_assigned("every platform to be assigned partitions", metrics).await;
    }

    let mut placing = tokio::spawn({
        let base = base.clone();
        async move {
            orderflow_testkit::workload::place_orders_through_outages(
                &client(),
                &base,
                0,
                orders_n,
                Default::default(),
            )
            .await
        }
    });
    let mut last_fault = Instant::now();
    let mut last_fault_start = Instant::now();
    let mut in_flight = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        // Watched directly, not through the proxy: the observer must not depend on what is cut.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&direct)
            .await
            .expect("pg");
        let at = (i + 1) as i64 * orders_n as i64 / (faults.len() + 1) as i64;
        let (seen, waiting) = wait_for_orders(&pool, at, &mut placing).await;
        pool.close().await;
        assert!(
            waiting > 0 && (seen as usize) < orders_n,
            "{fault:?} lands mid-run: {seen} orders placed, {waiting} on their way"
        );
        in_flight.push(waiting);
        last_fault_start = Instant::now();
        servers.inject(*fault).await;
        last_fault = Instant::now();
    }

    // Time to recover: from the last fault until the last moment an order was overdue (waiting more than
    // 10 s in a non-terminal status), watched until every order is terminal.
    let last_overdue = std::sync::Arc::new(std::sync::Mutex::new(None));
    let overdue_watch = tokio::spawn(watch_overdue(direct.clone(), last_overdue.clone()));
    let placed = placing.await.expect("placing").expect("orders placed");
    let placed_by = Instant::now();
    assert_eq!(placed.len(), orders_n, "every order was answered 201 in the end");

    // No order answered 201 is missing, and every order is terminal in time.
    let pool = sqlx::PgPool::connect(&direct).await.expect("pg");
    let deadline = last_fault.max(placed_by) + Duration::from_secs(60);
    loop {
        let (total, waiting) = progress(&pool).await;
        if total as usize >= orders_n && waiting == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let statuses: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status")
                    .fetch_all(&pool)
                    .await
                    .expect("statuses");
            panic!(
                "{waiting} of {total} orders not terminal 60 s after the last fault or order: {statuses:?}; \
                 the consumers:\n{}\nwhat the log says besides stranded orders ({}):\n{}",
                consumer_metrics(&base).await,
                dir.display(),
                logs.iter()
                    .map(|log| log_besides_stranded(log, 80 / logs.len()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    overdue_watch.abort();
    let _ = overdue_watch.await;
    let last_overdue = *last_overdue.lock().expect("overdue watch");
    let recovered = last_overdue
        .map(|at| at.saturating_duration_since(last_fault_start))
        .unwrap_or_default();
    let ids: Vec<uuid::Uuid> = placed
        .iter()
        .map(|(order, _)| order["id"].as_str().expect("id").parse().expect("uuid"))
        .collect();
    let (found,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        found as usize, orders_n,
        "every order answered 201 is in the database"
    );

    // The independent oracle: charges, stock, analytics, the read model, order.state, the audit chain and
    // dead letters all agree with the database (derived state may take a few seconds to settle).
    reconcile_passes(&args).await;

    // What the faults cost, as a row of the soak table (`scripts/soak.sh`): effects counted twice would
    // show as more orders or payments in the analytics funnel than in the database.
    let funnel: Value = client()
        .get(format!("{base}/v1/analytics/funnel"))
        .send()
        .await
        .expect("funnel")
        .json()
        .await
        .expect("funnel body");
    let (orders_in_db, captured): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM orders), (SELECT COUNT(*) FROM payment_charges WHERE outcome = 'CAPTURED')",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    let duplicated = (funnel["created"].as_i64().unwrap_or(0) - orders_in_db).max(0)
        + (funnel["paid"].as_i64().unwrap_or(0) - captured).max(0);
    let names: Vec<String> = faults.iter().map(|f| format!("{f:?}")).collect();
    let row = format!(
        "| {} | {} | {} | 0 | {duplicated} | {:.1} s |",
        names.join(" + "),
        in_flight
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" + "),
        orders_n - found as usize,
        recovered.as_secs_f64()
    );
    record_row(&row);
    assert_eq!(duplicated, 0, "no effect counted twice");
    for mut platform in platforms {
        platform.terminate().await;
    }
    drop(servers);
}

/// Every 500 ms until aborted, notes in `last` when it last saw an order waiting more than 10 s in a
/// non-terminal status (a failed query, the database being down, counts as one).
async fn watch_overdue(url: String, last: std::sync::Arc<std::sync::Mutex<Option<Instant>>>) {
    let mut pool = None;
    loop {
        if pool.is_none() {
            pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(1))
                .connect(&url)
                .await
                .ok();
        }
        let overdue: Option<(i64,)> = match &pool {
            Some(pool) => sqlx::query_as(
                "SELECT COUNT(*) FROM orders WHERE status IN ('CREATED', 'PAID') \
                 AND updated_at < now() - interval '10 seconds'",
            )
            .fetch_one(pool)
            .await
            .ok(),
            None => None,
        };
        if overdue.is_none_or(|(n,)| n > 0) {
            if overdue.is_none() {
                pool = None;
            }
            if let Ok(mut last) = last.lock() {
                *last = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The consumer lines of the platform's metrics (lag, work in flight, assignment, restarts), for a failure
/// message: which stage stopped moving.
async fn consumer_metrics(base: &str) -> String {
    let text = match client().get(format!("{base}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(e) => return format!("(metrics unavailable: {e})"),
    };
    text.lines()
        .filter(|l| l.starts_with("orderflow_consumer_") && !l.contains("_bucket"))
        .filter(|l| !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `lines` lines of the log besides the sweeper's reports of stranded orders and refused
/// connections to a killed server: what went wrong while orders stopped moving.
fn log_besides_stranded(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("order stranded") && !l.contains("Connection refused"))
        .collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_loss_and_a_postgresql_crash_mid_run_lose_no_accepted_order_and_reconcile_passes() {
    run_through("crash", &[Fault::RedisLoss, Fault::PostgresCrash]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_kafka_partition_leader_mid_run_loses_no_accepted_order_and_reconcile_passes() {
    run_through("leader", &[Fault::KafkaLeaderKill]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_failover_mid_run_loses_no_accepted_order_and_reconcile_passes() {
    run_through("failover", &[Fault::RedisFailover]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_to_postgresql_redis_and_kafka_mid_run_loses_no_accepted_order_and_reconcile_passes() {
    run_through("netcut", &[Fault::NetworkCut]).await;
}

//! `orderflow consumers`: every consumer group as the cluster sees it (state, members, lag per partition),
//! with what the processes themselves say (held, paused) when their ops listeners are given.

use anyhow::{Context, bail};
use orderflow_bus::Bus;
use orderflow_consumer::groups::{self, GroupView};
use orderflow_consumer::routing;
use orderflow_roles::{Role, Settings};
use serde::Serialize;

/// What one process says of one of its consumers (from its `/readyz`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct ProcessConsumer {
    /// The process's URL.
    #[serde(default)]
    ops: String,
    /// The consumer's group.
    group: String,
    /// Partitions it holds.
    assigned_partitions: u64,
    /// Whether an operator holds it.
    held: bool,
    /// Partitions paused for backpressure.
    #[serde(default)]
    paused_partitions: u64,
}

/// A group with the role it belongs to and what the processes say of it.
#[derive(Debug, Serialize)]
struct Row {
    role: &'static str,
    #[serde(flatten)]
    view: GroupView,
    lag: i64,
    processes: Vec<ProcessConsumer>,
}

/// Reads every group (or `only`'s) from the cluster and the processes at `ops`, and prints them.
pub async fn run(
    settings: Settings,
    only: Option<Role>,
    ops: &[String],
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    if settings.kafka.cluster().is_none() {
        bail!(
            "consumer groups live in a Kafka cluster: set kafka.bootstrap_servers (the embedded cluster exists only inside `orderflow up`)"
        );
    }
    let mut said = Vec::new();
    for url in ops {
        said.extend(process_consumers(url).await?);
    }
    let bus = Bus::connect(settings.kafka.clone())?;
    let mut rows = Vec::new();
    for role in Role::ALL.iter().filter(|r| only.is_none_or(|o| o == **r)) {
        let access = role.kafka_access(&settings);
        let Some(group) = access.group else { continue };
        let mut view = groups::describe(&bus, &group, &access.read).await?;
        if !all {
            view.partitions
                .retain(|p| p.lag > 0 || routing::retry_level(base(&settings, &p.topic)) == 0);
        }
        let processes = said.iter().filter(|p| p.group == group).cloned().collect();
        let lag = view.lag();
        rows.push(Row {
            role: role.name(),
            view,
            lag,
            processes,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<20} {:>7} {:>8} {:>5} {:>6}",
        "GROUP", "STATE", "MEMBERS", "LAG", "HELD", "PAUSED"
    );
    for row in &rows {
        let (held, paused) = if ops.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            let held = row.processes.iter().filter(|p| p.held).count();
            let paused: u64 = row.processes.iter().map(|p| p.paused_partitions).sum();
            (format!("{held}/{}", row.processes.len()), paused.to_string())
        };
        println!(
            "{:<32} {:<20} {:>7} {:>8} {:>5} {:>6}",
            row.view.group,
            row.view.state,
            row.view.members.len(),
            row.lag,
            held,
            paused
        );
        for member in &row.view.members {
            println!("  member {} from {}", member.client_id, member.host);
        }
        for p in &row.view.partitions {
            let committed = p.committed.map_or_else(|| "-".to_owned(), |c| c.to_string());
            println!(
                "  {}[{}] committed {committed} end {} lag {}",
                p.topic, p.partition, p.end, p.lag
            );
        }
    }
    Ok(())
}

/// A topic's name without the deployment prefix.
fn base<'a>(settings: &Settings, topic: &'a str) -> &'a str {
    topic
        .strip_prefix(settings.kafka.topic_prefix.as_str())
        .unwrap_or(topic)
}

/// The consumers a process lists in its readiness report.
async fn process_consumers(url: &str) -> anyhow::Result<Vec<ProcessConsumer>> {
    #[derive(serde::Deserialize)]
    struct Report {
        consumers: Vec<ProcessConsumer>,
    }
    let ready = format!("{}/readyz", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .get(&ready)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("reading {ready}"))?;
    // Not ready (503) still carries the report.
    let report: Report = response
        .json()
        .await
        .with_context(|| format!("{ready} is not a readiness report"))?;
    Ok(report
        .consumers
        .into_iter()
        .map(|c| ProcessConsumer {
            ops: url.to_owned(),
            ..c
        })
        .collect())
}

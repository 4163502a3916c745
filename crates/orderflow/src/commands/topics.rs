//! `orderflow topics apply` and `orderflow topics acls`.

use anyhow::bail;
use orderflow_bus::Bus;
use orderflow_bus::topics::{Cleanup, TopicAction};
use orderflow_roles::{Role, Settings};

/// Prints the least-privilege Kafka ACLs of `role`, or of every role.
pub fn acls(settings: &Settings, role: Option<Role>) {
    let roles: Vec<Role> = match role {
        Some(role) => vec![role],
        None => Role::ALL.to_vec(),
    };
    println!(
        "{:<11} {:<9} {:<16} {:<8} resource",
        "role", "operation", "resource type", "pattern"
    );
    for role in roles {
        for grant in role.kafka_access(settings).grants() {
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
}

/// Creates missing topics (the topic table and every consumer group's retry and dead-letter topics) and
/// reports existing ones that differ.
pub async fn apply(settings: &Settings) -> anyhow::Result<()> {
    if settings.kafka.cluster().is_none() {
        bail!(
            "topics apply needs a Kafka cluster: set --kafka-bootstrap or ORDERFLOW_KAFKA__BOOTSTRAP_SERVERS"
        );
    }
    let bus = Bus::connect(settings.kafka.clone())?;
    bus.verify(std::time::Duration::from_secs(15)).await?;
    let mut reports = bus.apply_topics().await?;
    let cleanup = Cleanup::Delete {
        days: orderflow_consumer::ROUTING_RETENTION_DAYS,
    };
    let routing: Vec<(String, Cleanup)> = orderflow_roles::routing_topics(settings)
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

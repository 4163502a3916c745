//! What each role needs from Kafka, so it can run with least-privilege ACLs: the topics it reads (its
//! inputs and their retry topics), the topics it writes (its outputs, and the retry and dead-letter topics
//! of its inputs), its consumer group and the prefix of its transactional ids. `orderflow topics acls` prints
//! these; the security test grants exactly these and runs every role.

use orderflow_consumer::RetryPolicy;
use orderflow_consumer::routing::{dlq_topic, retry_topic};
use orderflow_events::topics;

use crate::{Role, Settings};

/// One role's Kafka needs, with full (prefixed) names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaAccess {
    /// Topics it reads.
    pub read: Vec<String>,
    /// Topics it writes.
    pub write: Vec<String>,
    /// Its consumer group, when it consumes.
    pub group: Option<String>,
    /// The prefix of its transactional ids (`<group>-<instance>`), when it consumes.
    pub transactional_id_prefix: Option<String>,
}

/// One ALLOW grant of a role's Kafka ACLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaGrant {
    /// `READ`, `WRITE` or `DESCRIBE`.
    pub operation: &'static str,
    /// `TOPIC`, `GROUP` or `TRANSACTIONAL_ID`.
    pub resource: &'static str,
    /// The resource's name, or its prefix when `prefixed`.
    pub name: String,
    /// Whether `name` is a prefix.
    pub prefixed: bool,
}

impl KafkaAccess {
    /// The ACL grants these needs stand for: read and write on the topics, read on the group, write and
    /// describe on the transactional ids.
    pub fn grants(&self) -> Vec<KafkaGrant> {
        let grant = |operation, resource, name: &str, prefixed| KafkaGrant {
            operation,
            resource,
            name: name.to_owned(),
            prefixed,
        };
        let mut grants: Vec<KafkaGrant> = self
            .read
            .iter()
            .map(|t| grant("READ", "TOPIC", t, false))
            .collect();
        grants.extend(self.write.iter().map(|t| grant("WRITE", "TOPIC", t, false)));
        if let Some(group) = &self.group {
            grants.push(grant("READ", "GROUP", group, false));
        }
        if let Some(prefix) = &self.transactional_id_prefix {
            grants.push(grant("WRITE", "TRANSACTIONAL_ID", prefix, true));
            grants.push(grant("DESCRIBE", "TRANSACTIONAL_ID", prefix, true));
        }
        grants
    }
}

fn names(topics: &[orderflow_events::LifecycleTopic]) -> Vec<&'static str> {
    topics.iter().map(|t| t.name()).collect()
}

/// Base names of what a role consumes and publishes.
fn flows(role: Role) -> (Vec<&'static str>, Vec<&'static str>) {
    match role {
        Role::Gateway => (vec![], vec![]),
        Role::Orders => (
            names(&crate::orders::FOLLOWED),
            vec![topics::ORDER_CREATED, topics::ORDER_CANCELLED],
        ),
        Role::Payments => (
            names(&crate::payments::INPUTS),
            vec![
                topics::PAYMENT_RECEIVED,
                topics::PAYMENT_FAILED,
                topics::PAYMENT_REFUNDED,
            ],
        ),
        Role::Enrichment => (
            names(&crate::enrichment::INPUTS),
            vec![topics::ORDER_ENRICHED, topics::ORDER_UNPAID],
        ),
        Role::Inventory => (
            names(&crate::inventory::INPUTS),
            vec![topics::INVENTORY_ALLOCATED, topics::INVENTORY_REJECTED],
        ),
        Role::Projector => (
            names(&crate::projector::FOLLOWED),
            vec![topics::ORDER_STATE, topics::ORDER_READ_MODEL],
        ),
        Role::Analytics => (names(&crate::analytics::COUNTED), vec![]),
        Role::Audit => (names(&crate::audit::AUDITED), vec![]),
    }
}

fn group_name(role: Role, settings: &Settings) -> Option<&str> {
    Some(match role {
        Role::Gateway => return None,
        Role::Orders => &settings.orders.status_group,
        Role::Payments => &settings.payments.group,
        Role::Enrichment => &settings.enrichment.group,
        Role::Inventory => &settings.inventory.group,
        Role::Projector => &settings.projector.group,
        Role::Analytics => &settings.analytics.group,
        Role::Audit => &settings.audit.group,
    })
}

impl Role {
    /// What this role needs from Kafka under `settings` (topic prefix, group names).
    pub fn kafka_access(&self, settings: &Settings) -> KafkaAccess {
        let prefix = &settings.kafka.topic_prefix;
        let full = |base: &str| format!("{prefix}{base}");
        let levels = RetryPolicy::default().topic_delays.len();
        let (inputs, outputs) = flows(*self);
        let mut access = KafkaAccess::default();
        let group = group_name(*self, settings);
        for input in inputs {
            let topic = full(input);
            if let Some(group) = group {
                for level in 1..=levels {
                    access.read.push(retry_topic(&topic, group, level));
                    access.write.push(retry_topic(&topic, group, level));
                }
                access.write.push(dlq_topic(&topic, group));
            }
            access.read.push(topic);
        }
        access.write.extend(outputs.into_iter().map(full));
        if *self == Role::Orders && settings.orders.drive_on_stranded {
            // The sweep hands stranded orders back to payments and enrichment through their retry topics.
            let created = full(topics::ORDER_CREATED);
            for group in [&settings.payments.group, &settings.enrichment.group] {
                access.write.push(retry_topic(&created, group, 1));
            }
        }
        access.read.sort();
        access.write.sort();
        if let Some(group) = group {
            let group = full(group);
            access.transactional_id_prefix = Some(group.clone());
            access.group = Some(group);
        }
        access
    }
}

/// The retry and dead-letter topics of every role under `settings`, which `orderflow topics apply` creates
/// with the topic table (roles create them too, unless `kafka.manage_topics` is off).
pub fn routing_topics(settings: &Settings) -> Vec<String> {
    let mut topics: Vec<String> = Role::ALL
        .iter()
        .flat_map(|role| {
            let access = role.kafka_access(settings);
            access.read.into_iter().chain(access.write)
        })
        .filter(|t| t.ends_with(".dlq") || orderflow_consumer::routing::retry_level(t) > 0)
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_reads_created_with_its_retries_and_writes_its_outcomes() {
        let mut settings = Settings::default();
        settings.kafka.topic_prefix = "p.".into();
        let access = Role::Payments.kafka_access(&settings);
        assert!(access.read.contains(&"p.order.created".to_owned()));
        assert!(
            access
                .read
                .contains(&"p.order.created.orderflow-payments.retry.3".to_owned())
        );
        assert!(
            access
                .write
                .contains(&"p.order.created.orderflow-payments.dlq".to_owned())
        );
        // Another group that reads the same topic has retry topics of its own.
        let enrichment = Role::Enrichment.kafka_access(&settings);
        assert!(
            enrichment
                .read
                .contains(&"p.order.created.orderflow-enrichment.retry.1".to_owned())
        );
        assert!(
            !enrichment
                .read
                .contains(&"p.order.created.orderflow-payments.retry.1".to_owned())
        );
        assert!(access.write.contains(&"p.payment.received".to_owned()));
        assert!(!access.read.contains(&"p.payment.received".to_owned()));
        assert_eq!(access.group.as_deref(), Some("p.orderflow-payments"));
        assert_eq!(Role::Gateway.kafka_access(&settings), KafkaAccess::default());
        // The orders role's sweep writes into the payments and enrichment groups' first retry topics.
        let orders = Role::Orders.kafka_access(&settings);
        assert!(
            orders
                .write
                .contains(&"p.order.created.orderflow-payments.retry.1".to_owned())
        );
        assert!(
            orders
                .write
                .contains(&"p.order.created.orderflow-enrichment.retry.1".to_owned())
        );
    }
}

//! `orderflow dlq list|show|replay`: inspect and replay the records consumers gave up on.

use anyhow::bail;
use orderflow_bus::Bus;
use orderflow_consumer::{dlq, routing};
use orderflow_roles::Settings;

use crate::cli::DlqCommand;

/// The full dead-letter topic a command names: a dead-letter topic (`order.created.orderflow-payments.dlq`,
/// with or without the deployment prefix), or a topic and `--group`.
fn dlq_topic(bus: &Bus, name: &str, group: Option<&str>) -> anyhow::Result<String> {
    let prefix = &bus.settings().topic_prefix;
    let base = name.strip_prefix(prefix.as_str()).unwrap_or(name);
    match group {
        _ if routing::is_dlq(base) => Ok(bus.topic(base)),
        Some(group) => Ok(routing::dlq_topic(&bus.topic(base), group)),
        None => bail!(
            "{name} is not a dead-letter topic: name one as `orderflow dlq list` prints it, or add --group <consumer group>"
        ),
    }
}

/// The dead-letter topics `dlq list` reads: the one named, every group's of a topic, or all.
async fn listed_topics(bus: &Bus, name: Option<&str>, group: Option<&str>) -> anyhow::Result<Vec<String>> {
    let every = dlq::topics(bus).await?;
    let Some(name) = name else {
        return Ok(match group {
            // `<topic>.<group>.dlq` for any topic.
            Some(group) => every
                .into_iter()
                .filter(|t| t.ends_with(&format!(".{group}.dlq")))
                .collect(),
            None => every,
        });
    };
    if group.is_some() || routing::is_dlq(name) {
        return Ok(vec![dlq_topic(bus, name, group)?]);
    }
    // Every group's dead-letter topic of `name`: `<name>.<group>.dlq`, the group being one dot-free part.
    let prefix = &bus.settings().topic_prefix;
    let source = bus.topic(name.strip_prefix(prefix.as_str()).unwrap_or(name));
    Ok(every
        .into_iter()
        .filter(|t| {
            t.strip_prefix(&source)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.strip_suffix(".dlq"))
                .is_some_and(|group| !group.is_empty() && !group.contains('.'))
        })
        .collect())
}

/// Lists, shows or replays dead letters.
pub async fn run(settings: Settings, command: DlqCommand) -> anyhow::Result<()> {
    if settings.kafka.cluster().is_none() {
        bail!(
            "dead letters live in a Kafka cluster: set kafka.bootstrap_servers (the embedded cluster exists only inside `orderflow up`)"
        );
    }
    let bus = Bus::connect(settings.kafka)?;
    match command {
        DlqCommand::List { topic, group } => {
            let topics = listed_topics(&bus, topic.as_deref(), group.as_deref()).await?;
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
            group,
        } => {
            let topic = dlq_topic(&bus, &topic, group.as_deref())?;
            let letter = dlq::show(&bus, &topic, partition, offset).await?;
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
            group,
            partition,
            offset,
        } => {
            let only = partition.zip(offset);
            let topic = dlq_topic(&bus, &topic, group.as_deref())?;
            let sent = dlq::replay(&bus, &topic, only).await?;
            println!("replayed {sent} dead letter(s)");
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

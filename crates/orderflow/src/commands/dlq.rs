//! `orderflow dlq list|show|replay`: inspect and replay the records consumers gave up on.

use anyhow::bail;
use orderflow_bus::Bus;
use orderflow_roles::Settings;

use crate::cli::DlqCommand;

/// The full dead-letter topic for a name given on the command line (`order.created` or `order.created.dlq`).
fn dlq_topic(bus: &Bus, name: &str) -> String {
    let base = name.strip_suffix(".dlq").unwrap_or(name);
    let base = base.strip_prefix(&bus.settings().topic_prefix).unwrap_or(base);
    orderflow_consumer::routing::dlq_topic(&bus.topic(base))
}

/// Lists, shows or replays dead letters.
pub async fn run(settings: Settings, command: DlqCommand) -> anyhow::Result<()> {
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

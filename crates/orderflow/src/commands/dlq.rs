//! `orderflow dlq list|show|replay`: inspect and replay the records consumers gave up on.

use anyhow::bail;
use orderflow_bus::Bus;
use orderflow_consumer::{dlq, routing};
use orderflow_roles::Settings;

use crate::cli::{DlqCommand, DlqFilter};

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
        DlqCommand::List {
            topic,
            group,
            filter,
            json,
        } => {
            let filter = filter_of(&filter);
            let topics = listed_topics(&bus, topic.as_deref(), group.as_deref()).await?;
            let mut total = 0;
            for topic in topics {
                total += list(&bus, &topic, &filter, json).await?;
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
            filter,
            dry_run,
        } => {
            if let (Some(topic), Some(only)) = (&topic, partition.zip(offset)) {
                let topic = dlq_topic(&bus, topic, group.as_deref())?;
                if dry_run {
                    dlq::show(&bus, &topic, only.0, only.1).await?;
                    println!("would replay 1 dead letter(s)");
                } else {
                    let sent = dlq::replay(&bus, &topic, Some(only)).await?;
                    println!("replayed {sent} dead letter(s)");
                }
                return Ok(());
            }
            let filter = filter_of(&filter);
            let topics = listed_topics(&bus, topic.as_deref(), group.as_deref()).await?;
            let progress = Progress::new();
            let mut total = dlq::ReplayReport::default();
            for topic in &topics {
                let done = total;
                let report = dlq::replay_matching(&bus, topic, &filter, dry_run, |now| {
                    progress.show(&done, now, dry_run);
                })
                .await?;
                total.read += report.read;
                total.matched += report.matched;
                total.replayed += report.replayed;
            }
            progress.finish();
            if dry_run {
                println!(
                    "would replay {} dead letter(s) of {} read in {} topic(s)",
                    total.matched,
                    total.read,
                    topics.len()
                );
            } else {
                println!("replayed {} dead letter(s)", total.replayed);
                if total.read > total.matched {
                    eprintln!(
                        "{} dead letter(s) did not match the filter",
                        total.read - total.matched
                    );
                }
            }
        }
    }
    Ok(())
}

fn filter_of(args: &DlqFilter) -> dlq::Filter {
    dlq::Filter {
        error_kind: args.error_kind.clone(),
        since_ms: args.since,
    }
}

/// Prints the dead letters of `topic` that `filter` takes as they are read (a chunk at a time); returns
/// how many.
async fn list(bus: &Bus, topic: &str, filter: &dlq::Filter, json: bool) -> anyhow::Result<usize> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let reader = {
        let (bus, topic) = (bus.clone(), topic.to_owned());
        tokio::spawn(async move { dlq::stream(&bus, &topic, 256, tx).await })
    };
    let mut listed = 0;
    while let Some(chunk) = rx.recv().await {
        for letter in chunk.iter().filter(|l| filter.matches(l)) {
            listed += 1;
            if json {
                println!("{}", letter_json(letter));
            } else {
                println!("{topic} {}", letter.summary());
            }
        }
    }
    reader.await??;
    Ok(listed)
}

/// A dead letter as one JSON object: position, time, key, headers, and the value in base64.
fn letter_json(letter: &dlq::DeadLetter) -> serde_json::Value {
    use base64::Engine as _;
    let headers: serde_json::Map<String, serde_json::Value> = letter
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned().into()))
        .collect();
    serde_json::json!({
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": letter
            .timestamp_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339()),
        "key": letter.key.as_deref().map(String::from_utf8_lossy),
        "headers": headers,
        "value_base64": base64::engine::general_purpose::STANDARD.encode(&letter.payload),
    })
}

/// The replay's progress on stderr (drawn only on a terminal).
struct Progress(indicatif::ProgressBar);

impl Progress {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self(bar)
    }

    fn show(&self, before: &dlq::ReplayReport, now: &dlq::ReplayReport, dry_run: bool) {
        let verb = if dry_run { "would replay" } else { "replayed" };
        self.0.set_message(format!(
            "read {}, {verb} {}",
            before.read + now.read,
            before.matched + now.matched
        ));
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! `orderflow schemas check`.

use anyhow::bail;

/// Checks each topic's newest schema against its earlier versions, and against `registry` when given.
pub async fn check(
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
                Err(e) => problems.push(format!(
                    "registry {subject}: {}",
                    orderflow_telemetry::ErrorChain(&e)
                )),
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

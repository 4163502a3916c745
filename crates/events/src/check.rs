//! Schema evolution checks for tooling (`orderflow schemas check`): the latest version of each topic's
//! schema against its earlier committed versions, under the topic's compatibility level.

use std::path::Path;

use apache_avro::Schema;
use orderflow_registry::{Compatibility, compat};

use crate::committed_schemas;

/// The committed versions of one topic's schema.
#[derive(Debug, Clone)]
pub struct TopicSchemas {
    /// Base topic.
    pub topic: String,
    /// Level its subject enforces.
    pub level: Compatibility,
    /// `(version, schema text)`, oldest first.
    pub versions: Vec<(u32, String)>,
}

/// The schemas built into this binary.
pub fn committed() -> Vec<TopicSchemas> {
    committed_schemas()
        .map(|(topic, level, versions)| TopicSchemas {
            topic: topic.to_owned(),
            level,
            versions: versions.iter().map(|(n, t)| (*n, (*t).to_owned())).collect(),
        })
        .collect()
}

/// The schemas in a folder laid out like `crates/events/schemas` (`<topic>/v<N>.avsc`, optional
/// `<topic>/COMPATIBILITY`).
pub fn read_dir(dir: &Path) -> Result<Vec<TopicSchemas>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut topics = Vec::new();
    for entry in entries.flatten().filter(|e| e.path().is_dir()) {
        let path = entry.path();
        let level = match std::fs::read_to_string(path.join("COMPATIBILITY")) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|e| format!("{}: {e}", path.join("COMPATIBILITY").display()))?,
            Err(_) => Compatibility::default(),
        };
        let mut versions = Vec::new();
        for file in std::fs::read_dir(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .flatten()
        {
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(n) = name
                .strip_prefix('v')
                .and_then(|n| n.strip_suffix(".avsc"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let text = std::fs::read_to_string(file.path())
                .map_err(|e| format!("{}: {e}", file.path().display()))?;
            versions.push((n, text));
        }
        versions.sort();
        topics.push(TopicSchemas {
            topic: entry.file_name().to_string_lossy().into_owned(),
            level,
            versions,
        });
    }
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(topics)
}

/// Checks the latest version against the earlier ones; each problem names the version, the rule broken
/// and the field involved.
pub fn check(topic: &TopicSchemas) -> Result<(), Vec<String>> {
    let mut parsed = Vec::new();
    let mut problems = Vec::new();
    for (n, text) in &topic.versions {
        match Schema::parse_str(text) {
            Ok(schema) => parsed.push((*n, schema)),
            Err(e) => problems.push(format!("v{n} is not a valid Avro schema: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some((latest, new)) = parsed.pop() else {
        return Err(vec!["no schema versions".into()]);
    };
    compat::check(topic.level, &new, &parsed).map_err(|broken| {
        broken
            .iter()
            .map(|b| format!("v{latest} under {}: {b}", topic.level))
            .collect()
    })
}

//! The committed schema versions, embedded at build time, and their parsed latest versions.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;
use orderflow_registry::Compatibility;

/// A topic's committed schemas: name, compatibility level, `(version, text)` oldest first.
type CommittedTopic = (&'static str, &'static str, &'static [(u32, &'static str)]);

include!(concat!(env!("OUT_DIR"), "/schema_files.rs"));

/// Every committed version of the schema of `topic` (oldest first) as `(version, text)`.
pub fn schema_versions(topic: &str) -> &'static [(u32, &'static str)] {
    SCHEMA_FILES
        .iter()
        .find(|(t, _, _)| *t == topic)
        .map(|(_, _, v)| *v)
        .unwrap_or_default()
}

/// Every topic with committed schemas: `(topic, compatibility level, versions oldest first)`.
pub fn committed_schemas()
-> impl Iterator<Item = (&'static str, Compatibility, &'static [(u32, &'static str)])> {
    SCHEMA_FILES
        .iter()
        .map(|(t, level, v)| (*t, level.parse().unwrap_or_default(), *v))
}

/// The latest schema of every topic, parsed once, with the level each topic's subject enforces.
pub struct SchemaSet {
    latest: HashMap<&'static str, (u32, &'static str, Schema)>,
    levels: HashMap<&'static str, Compatibility>,
}

impl SchemaSet {
    /// The set every codec uses: the latest committed version of each topic (parsed on first use).
    pub fn get() -> Result<&'static SchemaSet, String> {
        static SET: OnceLock<Result<SchemaSet, String>> = OnceLock::new();
        SET.get_or_init(|| {
            let mut set = SchemaSet::parse(
                SCHEMA_FILES
                    .iter()
                    .filter_map(|(t, _, v)| v.last().map(|(n, text)| (*t, *n, *text))),
            )?;
            set.levels = committed_schemas().map(|(t, level, _)| (t, level)).collect();
            Ok(set)
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// A set from `(topic, version, schema text)` triples, e.g. a schema's next version under test.
    pub fn parse(
        schemas: impl IntoIterator<Item = (&'static str, u32, &'static str)>,
    ) -> Result<SchemaSet, String> {
        let mut latest = HashMap::new();
        for (topic, version, text) in schemas {
            let schema = Schema::parse_str(text).map_err(|e| format!("schema {topic} v{version}: {e}"))?;
            latest.insert(topic, (version, text, schema));
        }
        Ok(SchemaSet {
            latest,
            levels: HashMap::new(),
        })
    }

    /// The latest schema of `topic`: its version number, text and parsed form.
    pub fn latest(&self, topic: &str) -> Option<&(u32, &'static str, Schema)> {
        self.latest.get(topic)
    }

    /// The compatibility level the topic's subject must enforce (BACKWARD unless the topic pins one).
    pub fn level(&self, topic: &str) -> Compatibility {
        self.levels.get(topic).copied().unwrap_or_default()
    }

    /// Every topic with a schema.
    pub fn topics(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.latest.keys().copied()
    }
}

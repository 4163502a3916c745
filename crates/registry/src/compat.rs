//! Compatibility modes and checks, on Avro's schema-resolution rules (through `apache-avro`'s checker),
//! not on text comparison.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility as Resolution, SchemaCompatibility};
use serde::{Deserialize, Serialize};

/// Which earlier versions a new schema must be compatible with, and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// The new schema reads data written with the latest version (consumers upgrade first).
    #[default]
    Backward,
    /// The new schema reads data written with every earlier version.
    BackwardTransitive,
    /// The latest version reads data written with the new schema (producers upgrade first).
    Forward,
    /// Every earlier version reads data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl Compatibility {
    /// The level's name as the REST API spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(&self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    fn backward(&self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(&self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "NONE" => Self::None,
            "BACKWARD" => Self::Backward,
            "BACKWARD_TRANSITIVE" => Self::BackwardTransitive,
            "FORWARD" => Self::Forward,
            "FORWARD_TRANSITIVE" => Self::ForwardTransitive,
            "FULL" => Self::Full,
            "FULL_TRANSITIVE" => Self::FullTransitive,
            _ => return Err(format!("unknown compatibility level '{s}'")),
        })
    }
}

/// One broken rule: which earlier version, which direction, and the resolution error naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incompatibility {
    /// The earlier version the new schema was checked against.
    pub version: u32,
    /// `BACKWARD` (new cannot read old data) or `FORWARD` (old cannot read new data).
    pub rule: &'static str,
    /// What schema resolution reported, with the field involved.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let direction = match self.rule {
            "BACKWARD" => format!(
                "the new schema cannot read data written with version {}",
                self.version
            ),
            _ => format!(
                "version {} cannot read data written with the new schema",
                self.version
            ),
        };
        write!(f, "{} rule broken: {direction}: {}", self.rule, self.reason)
    }
}

/// Whether `reader` can resolve every datum written with `writer`; the error names the field and cause.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Resolution::Full) => Ok(()),
        Ok(Resolution::Partial) => {
            Err("only some data would resolve (enum symbols or union branches are missing)".into())
        }
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            Err(text)
        }
    }
}

/// Checks `new` against `previous` (oldest first, with their version numbers) under `mode`; returns every
/// broken rule.
pub fn check(
    mode: Compatibility,
    new: &Schema,
    previous: &[(u32, Schema)],
) -> Result<(), Vec<Incompatibility>> {
    let against: &[(u32, Schema)] = if mode.transitive() {
        previous
    } else {
        previous.last().map(std::slice::from_ref).unwrap_or_default()
    };
    let mut broken = Vec::new();
    for (version, old) in against {
        // BACKWARD: the new schema reads old data; FORWARD: the old schema reads new data.
        let rules = [
            ("BACKWARD", mode.backward(), old, new),
            ("FORWARD", mode.forward(), new, old),
        ];
        for (rule, applies, writer, reader) in rules {
            if !applies {
                continue;
            }
            if let Err(reason) = can_read(writer, reader) {
                broken.push(Incompatibility {
                    version: *version,
                    rule,
                    reason,
                });
            }
        }
    }
    if broken.is_empty() { Ok(()) } else { Err(broken) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"E","fields":[{fields}]}}"#)).expect("schema")
    }

    #[test]
    fn adding_a_field_with_a_default_is_fully_compatible() {
        let v1 = schema(r#"{"name":"a","type":"long"}"#);
        let v2 = schema(r#"{"name":"a","type":"long"},{"name":"b","type":"string","default":"x"}"#);
        assert_eq!(check(Compatibility::FullTransitive, &v2, &[(1, v1)]), Ok(()));
    }

    #[test]
    fn adding_a_field_without_default_breaks_backward_and_names_it() {
        let v1 = schema(r#"{"name":"a","type":"long"}"#);
        let v2 = schema(r#"{"name":"a","type":"long"},{"name":"b","type":"string"}"#);
        let broken = check(Compatibility::Backward, &v2, &[(1, v1.clone())]).expect_err("incompatible");
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].rule, "BACKWARD");
        assert!(broken[0].reason.contains("'b'"), "{}", broken[0]);
        assert_eq!(
            check(Compatibility::Forward, &v2, &[(1, v1)]),
            Ok(()),
            "old readers ignore the new field"
        );
    }

    #[test]
    fn removing_a_field_without_default_breaks_forward() {
        let v1 = schema(r#"{"name":"a","type":"long"},{"name":"b","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"long"}"#);
        assert_eq!(check(Compatibility::Backward, &v2, &[(1, v1.clone())]), Ok(()));
        let broken = check(Compatibility::Forward, &v2, &[(1, v1)]).expect_err("incompatible");
        assert!(broken[0].reason.contains("'b'") && broken[0].to_string().starts_with("FORWARD rule broken"));
    }

    #[test]
    fn changing_a_type_incompatibly_names_the_field_and_types() {
        let v1 = schema(r#"{"name":"a","type":"long"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"}"#);
        let broken = check(Compatibility::Backward, &v2, &[(1, v1)]).expect_err("incompatible");
        assert!(broken[0].reason.contains("'a'"), "{}", broken[0]);
        let promoted = schema(r#"{"name":"a","type":"double"}"#);
        assert_eq!(
            check(
                Compatibility::Backward,
                &promoted,
                &[(1, schema(r#"{"name":"a","type":"int"}"#))]
            ),
            Ok(())
        );
    }

    #[test]
    fn transitive_modes_check_every_earlier_version() {
        let v1 = schema(r#"{"name":"a","type":"long"}"#);
        let v2 = schema(r#"{"name":"a","type":"long"},{"name":"b","type":"string","default":"x"}"#);
        let v3 = schema(r#"{"name":"a","type":"long"},{"name":"b","type":"string"}"#);
        let history = [(1, v1), (2, v2)];
        assert_eq!(
            check(Compatibility::Backward, &v3, &history),
            Ok(()),
            "v2 data always has b"
        );
        let broken = check(Compatibility::BackwardTransitive, &v3, &history).expect_err("v1 data lacks b");
        assert_eq!(broken.iter().map(|b| b.version).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!("full_transitive".parse(), Ok(Compatibility::FullTransitive));
        assert!("SIDEWAYS".parse::<Compatibility>().is_err());
    }
}

//! Embeds every schema version under `schemas/<topic>/v<N>.avsc`, so adding a version needs no code change.

use std::fmt::Write as _;
use std::path::Path;

/// One topic folder: its name, compatibility level and `(version, file path)` pairs.
type Topic = (String, String, Vec<(u32, String)>);

fn main() {
    // Read when the script runs, not baked in when it is compiled: a build script binary may be reused for
    // a checkout at another path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = Path::new(&manifest_dir).join("schemas");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut topics: Vec<Topic> = Vec::new();
    for topic in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        if !topic.path().is_dir() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", topic.path().display());
        let mut versions: Vec<(u32, String)> = std::fs::read_dir(topic.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| {
                let name = f.file_name().to_string_lossy().into_owned();
                let n = name.strip_prefix('v')?.strip_suffix(".avsc")?.parse().ok()?;
                Some((n, f.path().display().to_string()))
            })
            .collect();
        versions.sort();
        let level = std::fs::read_to_string(topic.path().join("COMPATIBILITY"))
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|_| "BACKWARD".to_owned());
        topics.push((topic.file_name().to_string_lossy().into_owned(), level, versions));
    }
    topics.sort();
    let mut out = String::from(
        "/// Every committed schema version per base topic (oldest first), with the topic's compatibility level.\n",
    );
    out.push_str("pub static SCHEMA_FILES: &[CommittedTopic] = &[\n");
    for (topic, level, versions) in topics {
        let _ = write!(out, "    ({topic:?}, {level:?}, &[");
        for (n, path) in versions {
            let _ = write!(out, "({n}, include_str!({path:?})), ");
        }
        out.push_str("]),\n");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("schema_files.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        println!("cargo:warning=cannot write {}: {e}", dest.display());
    }
}

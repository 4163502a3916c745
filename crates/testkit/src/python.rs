//! A Python virtualenv with an independent Kafka + Avro client (confluent-kafka), for interoperability
//! tests; built once per machine from `python/requirements.txt` into the harness cache folder.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

use crate::HarnessError;
use crate::kafka::cache_dir;

const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/requirements.txt");

/// The interpreter of the interop virtualenv, creating it (python3 -m venv, pip install) when missing.
pub fn interop_python() -> Result<PathBuf, HarnessError> {
    let root = cache_dir().join("python-interop");
    let python = root.join("venv/bin/python");
    let done = root.join(".complete");
    if done.exists() {
        return Ok(python);
    }
    std::fs::create_dir_all(&root).map_err(|e| HarnessError::io("create the python cache folder", e))?;
    let lock =
        File::create(root.join(".lock")).map_err(|e| HarnessError::io("create the python cache lock", e))?;
    lock.lock()
        .map_err(|e| HarnessError::io("lock the python cache", e))?;
    if done.exists() {
        return Ok(python);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), HarnessError> {
        let out = cmd.output().map_err(|e| HarnessError::io(what, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HarnessError::Failed(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    let _ = std::fs::remove_dir_all(root.join("venv"));
    run(
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(root.join("venv")),
        "python3 -m venv (install python3-venv)",
    )?;
    run(
        Command::new(&python).args(["-m", "pip", "install", "-q", "-r", REQUIREMENTS]),
        "pip install",
    )?;
    File::create(&done).map_err(|e| HarnessError::io("mark the python cache complete", e))?;
    Ok(python)
}

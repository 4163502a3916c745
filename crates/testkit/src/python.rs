//! Python virtualenvs for tests, each built once per machine from its pinned requirements into the harness
//! cache folder: an independent Kafka + Avro client (confluent-kafka) for interoperability tests, the
//! Schemathesis API fuzzer, and Selenium for the console's browser check.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

use crate::HarnessError;
use crate::kafka::cache_dir;

const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/requirements.txt");

/// The interpreter of the interop virtualenv, creating it (python3 -m venv, pip install) when missing.
pub fn interop_python() -> Result<PathBuf, HarnessError> {
    venv("python-interop", REQUIREMENTS).map(|bin| bin.join("python"))
}

/// The `st` command of a virtualenv with Schemathesis (pinned in `python/schemathesis-requirements.txt`),
/// the API fuzzer, creating it when missing.
pub fn schemathesis() -> Result<PathBuf, HarnessError> {
    const PINNED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/python/schemathesis-requirements.txt"
    );
    venv("python-schemathesis", PINNED).map(|bin| bin.join("st"))
}

/// A browser check of the console: the interpreter of a virtualenv with Selenium (pinned in
/// `python/selenium-requirements.txt`) and the script `python/console_check.py` it runs. The browser is
/// Debian's Chromium with its chromedriver (`scripts/test.sh` installs both).
pub fn console_check() -> Result<(PathBuf, PathBuf), HarnessError> {
    const PINNED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/selenium-requirements.txt");
    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/console_check.py");
    let python = venv("python-selenium", PINNED)?.join("python");
    Ok((python, PathBuf::from(SCRIPT)))
}

/// The `bin` folder of virtualenv `name` in the cache, built from `requirements` once per machine.
fn venv(name: &str, requirements: &str) -> Result<PathBuf, HarnessError> {
    let root = cache_dir().join(name);
    let bin = root.join("venv/bin");
    let python = bin.join("python");
    let done = root.join(".complete");
    if done.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&root).map_err(|e| HarnessError::io("create the python cache folder", e))?;
    let lock =
        File::create(root.join(".lock")).map_err(|e| HarnessError::io("create the python cache lock", e))?;
    lock.lock()
        .map_err(|e| HarnessError::io("lock the python cache", e))?;
    if done.exists() {
        return Ok(bin);
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
        Command::new(&python).args(["-m", "pip", "install", "-q", "-r", requirements]),
        "pip install",
    )?;
    File::create(&done).map_err(|e| HarnessError::io("mark the python cache complete", e))?;
    Ok(bin)
}

//! Child server processes: ports, readiness polling, stop/start, and cleanup that survives a crash.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::HarnessError;

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand it out again immediately).
pub fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| HarnessError::io("bind a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("read a free port", e))
}

/// A fresh directory under the system temp dir, named after the server and this process.
pub fn temp_dir(server: &str) -> Result<PathBuf, HarnessError> {
    let dir = std::env::temp_dir().join(format!(
        "orderflow-test-{server}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| HarnessError::io("create a temp dir", e))?;
    Ok(dir)
}

/// Polls `ready` every 50 ms until it holds or `timeout` passes; `describe` names the wait in the error.
pub fn wait_until(
    describe: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<Duration, HarnessError> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(HarnessError::Timeout(format!("{describe} after {timeout:?}")))
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A server process that can be stopped and started again on the same ports and data.
pub struct ServerProcess {
    name: &'static str,
    dir: PathBuf,
    command: Box<dyn Fn() -> Command + Send + Sync>,
    child: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Child>>,
}

impl ServerProcess {
    /// Wraps a command line; nothing runs until [`ServerProcess::spawn`].
    pub fn new(
        name: &'static str,
        dir: PathBuf,
        command: impl Fn() -> Command + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            dir,
            command: Box::new(command),
            child: Mutex::new(None),
            watchdog: Mutex::new(None),
        }
    }

    /// The server's scratch directory (data, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the process with output appended to `<dir>/<name>.log`, and (once) a watchdog that kills it and
    /// removes the directory when this test process exits for any reason.
    pub fn spawn(&self) -> Result<(), HarnessError> {
        let log = self.dir.join(format!("{}.log", self.name));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| HarnessError::io("open the server log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io("open the server log", e))?;
        let child = (self.command)()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| HarnessError::io(self.name, e))?;
        let pid = child.id();
        *lock(&self.child) = Some(child);
        let mut watchdog = lock(&self.watchdog);
        if watchdog.is_none() {
            *watchdog = Some(self.spawn_watchdog()?);
        } else {
            // A restart: the watchdog must kill the new process too.
            self.record_pid(pid)?;
        }
        Ok(())
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pids", self.name))
    }

    fn record_pid(&self, pid: u32) -> Result<(), HarnessError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.pid_file())
            .map_err(|e| HarnessError::io("write the pid file", e))?;
        writeln!(f, "{pid}").map_err(|e| HarnessError::io("write the pid file", e))
    }

    fn spawn_watchdog(&self) -> Result<Child, HarnessError> {
        if let Some(child) = lock(&self.child).as_ref() {
            self.record_pid(child.id())?;
        }
        // A shell loop rather than a thread: it must outlive this process, even a SIGKILLed one.
        let script = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
            for pid in $(cat "$2" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
            sleep 2
            for pid in $(cat "$2" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
            rm -rf "$3"
        "#;
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(self.pid_file())
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| HarnessError::io("start the cleanup watchdog", e))
    }

    /// Kills the process (SIGKILL: a crash, not a clean shutdown) and waits for it to exit.
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): it keeps its connections open but answers nothing, as a server
    /// stuck on a slow disk or starved of CPU does. [`ServerProcess::thaw`] lets it go on.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = lock(&self.child).as_ref() {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status();
        }
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Path of the server's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut w) = lock(&self.watchdog).take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

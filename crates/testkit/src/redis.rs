//! A throw-away standalone redis-server on a free loopback port, without persistence.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::HarnessError;
use crate::process::{ServerProcess, free_port, log_tail, temp_dir, wait_until};

/// A running redis-server owned by the test process.
pub struct RedisServer {
    port: u16,
    process: ServerProcess,
    /// How long start-up took.
    pub startup: Duration,
}

/// Sends `PING` and expects `+PONG` (answers `-NOAUTH` count as alive too).
fn pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

impl RedisServer {
    /// Starts redis-server with `extra` arguments (e.g. `["--requirepass", "x"]`); returns when it answers.
    pub fn start_with(extra: &[&str]) -> Result<Self, HarnessError> {
        let started = Instant::now();
        let binary = which("redis-server").ok_or_else(|| {
            HarnessError::Missing("redis-server not found: install the Debian package 'redis-server'".into())
        })?;
        let dir = temp_dir("redis")?;
        let port = free_port()?;
        let d = dir.clone();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let process = ServerProcess::new("redis", dir, move || {
            let mut cmd = Command::new(&binary);
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--protected-mode", "no", "--daemonize", "no", "--dir"])
            .arg(&d)
            .args(&extra);
            cmd
        });
        process.spawn()?;
        let server = Self {
            port,
            process,
            startup: Duration::ZERO,
        };
        server.wait_ready()?;
        Ok(Self {
            startup: started.elapsed(),
            ..server
        })
    }

    /// Starts a plain redis-server.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(&[])
    }

    fn wait_ready(&self) -> Result<(), HarnessError> {
        wait_until("redis-server to answer PING", Duration::from_secs(30), || {
            pings(self.port)
        })
        .map(|_| ())
        .map_err(|e| HarnessError::Failed(format!("{e}\n{}", log_tail(&self.process.log_path(), 20))))
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (like a crash; it has no persistence, so data is gone).
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Starts it again on the same port after [`RedisServer::kill`].
    pub fn restart(&self) -> Result<(), HarnessError> {
        self.process.spawn()?;
        self.wait_ready()
    }
}

/// Full path of an executable on PATH.
pub(crate) fn which(program: &str) -> Option<std::path::PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| path.into())
}

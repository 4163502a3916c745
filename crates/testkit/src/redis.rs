//! A throw-away standalone redis-server on a free loopback port, without persistence.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::HarnessError;
use crate::process::{ServerProcess, free_port, log_tail, temp_dir, wait_until};

/// A running redis-server owned by the test process.
pub struct RedisServer {
    port: u16,
    process: ServerProcess,
    tls_port: Option<u16>,
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
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

impl RedisServer {
    /// Starts redis-server with `extra` arguments (e.g. `["--requirepass", "x"]`); returns when it answers.
    pub fn start_with(extra: &[&str]) -> Result<Self, HarnessError> {
        let dir = temp_dir("redis")?;
        let port = free_port()?;
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::start_in(dir, port, extra)
    }

    /// Starts redis-server in `dir` on `port` with `extra` arguments.
    pub(crate) fn start_in(dir: PathBuf, port: u16, extra: Vec<String>) -> Result<Self, HarnessError> {
        let started = Instant::now();
        let binary = which("redis-server").ok_or_else(|| {
            HarnessError::Missing("redis-server not found: install the Debian package 'redis-server'".into())
        })?;
        let d = dir.clone();
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
            tls_port: None,
        };
        server.wait_ready()?;
        Ok(Self {
            startup: started.elapsed(),
            ..server
        })
    }

    /// Starts redis-server that also listens with TLS on a second port, with a certificate for `127.0.0.1`
    /// and `localhost` signed by a throw-away CA ([`RedisServer::ca_pem`]).
    pub fn start_tls(extra: &[&str]) -> Result<Self, HarnessError> {
        let dir = temp_dir("redis")?;
        let (port, tls_port) = (free_port()?, free_port()?);
        make_certificates(&dir)?;
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let mut args: Vec<String> = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &file("server.crt"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let server = Self::start_in(dir, port, args)?;
        Ok(Self {
            tls_port: Some(tls_port),
            ..server
        })
    }

    /// `rediss://127.0.0.1:<tls port>/` when started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("rediss://127.0.0.1:{p}/"))
    }

    /// The PEM file of the CA that signed the TLS certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.process.dir().join("ca.crt")
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
        .map_err(|e| HarnessError::not_ready(log_tail(&self.process.log_path(), 20))(e))
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

    /// Freezes the server (SIGSTOP): its connections stay open, nothing is answered or replicated.
    pub fn freeze(&self) {
        self.process.freeze();
    }

    /// Lets a frozen server go on.
    pub fn thaw(&self) {
        self.process.thaw();
    }

    /// True while the server process runs.
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Starts it again on the same port after [`RedisServer::kill`].
    pub fn restart(&self) -> Result<(), HarnessError> {
        self.process.spawn()?;
        self.wait_ready()
    }
}

/// Writes a CA (`ca.crt`) and a server certificate for 127.0.0.1/localhost (`server.crt`, `server.key`)
/// into `dir` with the openssl command-line tool.
pub fn make_certificates(dir: &Path) -> Result<(), HarnessError> {
    let openssl = which("openssl").ok_or_else(|| {
        HarnessError::Missing("openssl not found: install the Debian package 'openssl'".into())
    })?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=orderflow-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
        ],
    ];
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        .map_err(|e| HarnessError::io("write the certificate extensions", e))?;
    for step in steps {
        let out = Command::new(&openssl)
            .args(step)
            .current_dir(dir)
            .output()
            .map_err(|e| HarnessError::io("run openssl", e))?;
        if !out.status.success() {
            return Err(HarnessError::Failed(format!(
                "openssl {}: {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    Ok(())
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

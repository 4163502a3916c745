//! A throw-away PostgreSQL cluster: `initdb` into a temp dir, `postgres` on a free loopback port.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::HarnessError;
use crate::process::{ServerProcess, free_port, log_tail, temp_dir, wait_until};

/// A running PostgreSQL server owned by the test process.
pub struct PostgresServer {
    port: u16,
    bin: PathBuf,
    process: ServerProcess,
    next_db: AtomicU32,
    /// How long `initdb` plus start-up took.
    pub startup: Duration,
}

/// Finds the directory holding `initdb`/`postgres` (Debian keeps them out of PATH).
fn bin_dir() -> Result<PathBuf, HarnessError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    let which = Command::new("sh").args(["-c", "command -v initdb"]).output();
    match which {
        Ok(out) if out.status.success() => {
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            Ok(path.parent().map(Path::to_path_buf).unwrap_or_default())
        }
        _ => Err(HarnessError::Missing(
            "PostgreSQL server binaries (initdb) not found: install the Debian package 'postgresql'".into(),
        )),
    }
}

/// PostgreSQL refuses to run as root; when we are root, run it as the `postgres` system user.
fn run_as() -> Option<(u32, u32)> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

fn command(bin: &Path, program: &str, user: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut cmd = Command::new(bin.join(program));
    cmd.current_dir(dir).env_remove("PGDATA");
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl PostgresServer {
    /// Creates a cluster in a temp dir and starts it; returns when it accepts connections.
    /// Tests trade durability for speed (`fsync`, `synchronous_commit` and `full_page_writes` off).
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_inner(false, false)
    }

    /// Like [`PostgresServer::start`] with production durability: `fsync`, `synchronous_commit` and
    /// `full_page_writes` on, as benchmarks measure.
    pub fn start_durable() -> Result<Self, HarnessError> {
        Self::start_inner(false, true)
    }

    /// Like [`PostgresServer::start`], also accepting TLS with a certificate for 127.0.0.1 signed by a
    /// throw-away CA ([`PostgresServer::ca_file`]).
    pub fn start_tls() -> Result<Self, HarnessError> {
        Self::start_inner(true, false)
    }

    /// The CA that signed the TLS certificate of a server from [`PostgresServer::start_tls`].
    pub fn ca_file(&self) -> PathBuf {
        self.process.dir().join("ca.crt")
    }

    fn start_inner(tls: bool, durable: bool) -> Result<Self, HarnessError> {
        let started = Instant::now();
        let bin = bin_dir()?;
        let dir = temp_dir("postgres")?;
        let user = run_as();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| HarnessError::io("hand the temp dir to the postgres user", e))?;
        }
        let data = dir.join("data");
        let init = command(&bin, "initdb", user, &dir)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .map_err(|e| HarnessError::io("run initdb", e))?;
        if !init.status.success() {
            return Err(HarnessError::Failed(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr).trim()
            )));
        }
        let mut tls_args = Vec::new();
        if tls {
            crate::redis::make_certificates(&dir)?;
            let key = dir.join("server.key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| HarnessError::io("restrict the key file", e))?;
            if let Some((uid, gid)) = user {
                for file in ["server.key", "server.crt"] {
                    std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid))
                        .map_err(|e| HarnessError::io("hand the certificate to the postgres user", e))?;
                }
            }
            tls_args = vec![
                "-c".to_owned(),
                "ssl=on".to_owned(),
                "-c".to_owned(),
                format!("ssl_cert_file={}", dir.join("server.crt").display()),
                "-c".to_owned(),
                format!("ssl_key_file={}", key.display()),
            ];
        }
        let port = free_port()?;
        let (b, d, s) = (bin.clone(), data.clone(), dir.clone());
        let process = ServerProcess::new("postgres", dir.clone(), move || {
            let mut cmd = command(&b, "postgres", user, &s);
            cmd.arg("-D")
                .arg(&d)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&s)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    if durable { "fsync=on" } else { "fsync=off" },
                    "-c",
                    if durable {
                        "synchronous_commit=on"
                    } else {
                        "synchronous_commit=off"
                    },
                    "-c",
                    if durable {
                        "full_page_writes=on"
                    } else {
                        "full_page_writes=off"
                    },
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=128MB",
                ])
                .args(&tls_args);
            cmd
        });
        process.spawn()?;
        let server = Self {
            port,
            bin,
            process,
            next_db: AtomicU32::new(0),
            startup: Duration::ZERO,
        };
        server.wait_ready()?;
        Ok(Self {
            startup: started.elapsed(),
            ..server
        })
    }

    fn wait_ready(&self) -> Result<(), HarnessError> {
        wait_until(
            "PostgreSQL to accept connections",
            Duration::from_secs(60),
            || self.psql("postgres", "SELECT 1").is_ok(),
        )
        .map(|_| ())
        .map_err(|e| HarnessError::not_ready(log_tail(&self.process.log_path(), 20))(e))
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one SQL statement with `psql` against `db`; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        let psql = if self.bin.join("psql").exists() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| HarnessError::io("run psql", e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(HarnessError::Failed(format!(
                "psql: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Creates an empty database for one test and returns its URL.
    pub fn fresh_database(&self) -> Result<String, HarnessError> {
        let name = format!(
            "test_{}_{:06x}",
            self.next_db.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>() >> 8
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Kills the server (like a crash).
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Starts it again on the same port and data after [`PostgresServer::kill`].
    pub fn restart(&self) -> Result<(), HarnessError> {
        // A killed postmaster leaves its pid file and shared memory; PostgreSQL recovers from both, but
        // refuses to start while the killed postmaster's backends still hold the shared memory: they exit
        // within moments, so a start that stops at once is tried again.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let _ = std::fs::remove_file(self.process.dir().join("data").join("postmaster.pid"));
            self.process.spawn()?;
            let up = wait_until("PostgreSQL to start", Duration::from_secs(5), || {
                self.psql("postgres", "SELECT 1").is_ok() || !self.process.is_running()
            });
            // Answering, or still starting (recovery can be slow): wait for it. Stopped: start again.
            if up.is_err() || self.process.is_running() || Instant::now() >= deadline {
                return self.wait_ready();
            }
            self.process.kill();
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

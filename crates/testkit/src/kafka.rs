//! A throw-away Apache Kafka broker in KRaft mode (combined broker + controller, one node).
//!
//! The broker's jars come from Maven Central through Maven (version pinned in `kafka/pom.xml`) into a cache
//! folder, once per machine: `$TESTKIT_CACHE_DIR` or `~/.cache/orderflow`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::HarnessError;
use crate::process::{ServerProcess, free_port, log_tail, temp_dir, wait_until};
use crate::redis::which;

/// The pinned broker version (keep in step with `kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.1.1";

const POM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/pom.xml");

/// The administrator of a secured broker (a super user, SCRAM-SHA-512 and PLAIN).
pub const KAFKA_ADMIN: (&str, &str) = ("admin", "admin-secret");

/// A running single-node KRaft broker owned by the test process.
pub struct KafkaServer {
    port: u16,
    process: ServerProcess,
    /// Whether clients must log in (SASL/SCRAM) and are held to ACLs.
    secured: bool,
    /// The CA of the client listener's certificate, when it speaks TLS (`SASL_SSL`).
    ca_file: Option<PathBuf>,
    /// How long formatting plus start-up took (jar download excluded).
    pub startup: Duration,
}

/// The harness's cache folder: `$TESTKIT_CACHE_DIR` or `~/.cache/orderflow`.
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("TESTKIT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join(".cache/orderflow")
        })
}

/// Makes sure the broker's jars are in the cache (fetching them with Maven when missing); returns their folder.
pub fn kafka_jars() -> Result<PathBuf, HarnessError> {
    let root = cache_dir().join(format!("kafka-{KAFKA_VERSION}"));
    let libs = root.join("libs");
    let done = root.join(".complete");
    if done.exists() {
        return Ok(libs);
    }
    std::fs::create_dir_all(&root).map_err(|e| HarnessError::io("create the Kafka cache folder", e))?;
    // Several test binaries may get here at once: one fetches, the others wait for it.
    let lock = File::create(root.join(".lock")).map_err(|e| HarnessError::io("create the cache lock", e))?;
    lock.lock()
        .map_err(|e| HarnessError::io("lock the Kafka cache", e))?;
    if done.exists() {
        return Ok(libs);
    }
    let mvn = which("mvn").ok_or_else(|| {
        HarnessError::Missing(
            "Maven (mvn) not found: install the Debian package 'maven' to fetch Kafka".into(),
        )
    })?;
    let staging = root.join("libs.partial");
    let _ = std::fs::remove_dir_all(&staging);
    let out = Command::new(mvn)
        .args([
            "-q",
            "-B",
            "-f",
            POM,
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
        ])
        .arg(format!("-DoutputDirectory={}", staging.display()))
        .output()
        .map_err(|e| HarnessError::io("run mvn", e))?;
    if !out.status.success() {
        return Err(HarnessError::Failed(format!(
            "fetching Kafka {KAFKA_VERSION} with Maven failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )));
    }
    let _ = std::fs::remove_dir_all(&libs);
    std::fs::rename(&staging, &libs).map_err(|e| HarnessError::io("move the Kafka jars into place", e))?;
    File::create(&done).map_err(|e| HarnessError::io("mark the Kafka cache complete", e))?;
    Ok(libs)
}

pub(crate) fn java(libs: &Path) -> Command {
    let mut cmd = Command::new("java");
    let opts = std::env::var("TESTKIT_KAFKA_JAVA_OPTS")
        .unwrap_or_else(|_| "-Xms256m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1".into());
    cmd.args(opts.split_whitespace())
        .arg("-Djava.awt.headless=true")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()));
    cmd
}

/// A random KRaft cluster id: 16 random bytes in URL-safe base64 without padding (22 characters), the
/// textual form of Kafka's `Uuid`.
pub(crate) fn cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: [u8; 16] = rand::random();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Formats the log dir of the node configured by `config` for cluster `id`, with `extra` tool arguments.
pub(crate) fn format_log_dir(
    libs: &Path,
    config: &Path,
    id: &str,
    extra: &[String],
) -> Result<(), HarnessError> {
    let format = java(libs)
        .args(["kafka.tools.StorageTool", "format", "--config"])
        .arg(config)
        // `=` form: an id may start with '-', which the tool would otherwise take for an option.
        .arg(format!("--cluster-id={id}"))
        .args(extra)
        .output()
        .map_err(|e| HarnessError::io("run java (is a JDK 17+ installed?)", e))?;
    if !format.status.success() {
        return Err(HarnessError::Failed(format!(
            "formatting the KRaft log dir failed: {}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        )));
    }
    Ok(())
}

impl KafkaServer {
    /// Formats a log dir and starts a broker with the default test settings plus `extra` properties.
    pub fn start_with(extra: &[(&str, &str)]) -> Result<Self, HarnessError> {
        Self::start_inner(extra, None, false, None)
    }

    /// Starts a broker whose clients reach it through a [`TcpProxy`](crate::TcpProxy): a second listener,
    /// `EXTERNAL` on a port of its own, advertises the proxy's address, so that every connection a client
    /// opens (bootstrap and partition leaders alike) passes through the proxy and a cut there cuts them all.
    /// [`KafkaServer::bootstrap_servers`] stays the direct listener; clients use the proxy's port.
    pub fn start_behind(proxy: &crate::TcpProxy, external: u16) -> Result<Self, HarnessError> {
        Self::start_inner(&[], None, false, Some((external, proxy.port())))
    }

    /// Starts a broker whose clients must log in with SASL (SCRAM-SHA-512, or PLAIN for the
    /// administrator) and are held to ACLs: [`KAFKA_ADMIN`] is a super user, each of `users` (name,
    /// password) may do nothing until ACLs are added ([`KafkaServer::create_acls`]).
    pub fn start_secured(users: &[(&str, &str)]) -> Result<Self, HarnessError> {
        Self::start_inner(&[], Some(users), false, None)
    }

    /// [`KafkaServer::start_secured`] with TLS on the client listener (`SASL_SSL`): a certificate for
    /// 127.0.0.1 signed by a throw-away CA ([`KafkaServer::ca_file`]).
    pub fn start_secured_tls(users: &[(&str, &str)]) -> Result<Self, HarnessError> {
        Self::start_inner(&[], Some(users), true, None)
    }

    /// The CA file clients must trust, when the listener speaks TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The `security.protocol` of the client listener.
    pub fn security_protocol(&self) -> &'static str {
        match (self.secured, self.ca_file.is_some()) {
            (false, _) => "PLAINTEXT",
            (true, false) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    fn start_inner(
        extra: &[(&str, &str)],
        users: Option<&[(&str, &str)]>,
        tls: bool,
        external: Option<(u16, u16)>,
    ) -> Result<Self, HarnessError> {
        let libs = kafka_jars()?;
        let started = Instant::now();
        let dir = temp_dir("kafka")?;
        let (port, controller) = (free_port()?, free_port()?);
        let mut props = vec![
            ("process.roles".to_owned(), "broker,controller".to_owned()),
            ("node.id".into(), "1".into()),
            (
                "controller.quorum.voters".into(),
                format!("1@127.0.0.1:{controller}"),
            ),
            (
                "listeners".into(),
                format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
            ),
            (
                "advertised.listeners".into(),
                format!("PLAINTEXT://127.0.0.1:{port}"),
            ),
            ("controller.listener.names".into(), "CONTROLLER".into()),
            ("inter.broker.listener.name".into(), "PLAINTEXT".into()),
            (
                "listener.security.protocol.map".into(),
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
            ),
            ("log.dirs".into(), dir.join("logs").display().to_string()),
            ("auto.create.topics.enable".into(), "false".into()),
            ("offsets.topic.replication.factor".into(), "1".into()),
            ("offsets.topic.num.partitions".into(), "4".into()),
            ("transaction.state.log.replication.factor".into(), "1".into()),
            ("transaction.state.log.min.isr".into(), "1".into()),
            ("transaction.state.log.num.partitions".into(), "4".into()),
            (
                "share.coordinator.state.topic.replication.factor".into(),
                "1".into(),
            ),
            ("share.coordinator.state.topic.min.isr".into(), "1".into()),
            ("group.initial.rebalance.delay.ms".into(), "0".into()),
        ];
        if let Some((external, advertised)) = external {
            let listeners = [
                (
                    "listeners",
                    format!(
                        "PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},EXTERNAL://127.0.0.1:{external}"
                    ),
                ),
                (
                    "advertised.listeners",
                    format!("PLAINTEXT://127.0.0.1:{port},EXTERNAL://127.0.0.1:{advertised}"),
                ),
                (
                    "listener.security.protocol.map",
                    "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT".to_owned(),
                ),
            ];
            for (k, v) in listeners {
                props.retain(|(key, _)| key != k);
                props.push((k.to_owned(), v));
            }
        }
        let (admin, admin_password) = KAFKA_ADMIN;
        let mut scram = Vec::new();
        if let Some(users) = users {
            // Clients log in on SASL_PLAINTEXT with SCRAM-SHA-512 (or PLAIN); the broker itself talks to
            // its controller and to itself with PLAIN as the administrator.
            let plain = format!(
                "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{admin}\" password=\"{admin_password}\" user_{admin}=\"{admin_password}\";"
            );
            let secured: Vec<(String, String)> = vec![
                (
                    "listeners".into(),
                    format!("CLIENT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
                ),
                (
                    "advertised.listeners".into(),
                    format!("CLIENT://127.0.0.1:{port}"),
                ),
                ("inter.broker.listener.name".into(), "CLIENT".into()),
                (
                    "listener.security.protocol.map".into(),
                    format!(
                        "CLIENT:{},CONTROLLER:SASL_PLAINTEXT",
                        if tls { "SASL_SSL" } else { "SASL_PLAINTEXT" }
                    ),
                ),
                ("sasl.enabled.mechanisms".into(), "SCRAM-SHA-512,PLAIN".into()),
                ("sasl.mechanism.inter.broker.protocol".into(), "PLAIN".into()),
                ("sasl.mechanism.controller.protocol".into(), "PLAIN".into()),
                (
                    "listener.name.controller.sasl.enabled.mechanisms".into(),
                    "PLAIN".into(),
                ),
                (
                    "listener.name.controller.plain.sasl.jaas.config".into(),
                    plain.clone(),
                ),
                ("listener.name.client.plain.sasl.jaas.config".into(), plain),
                (
                    "listener.name.client.scram-sha-512.sasl.jaas.config".into(),
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
                ),
                (
                    "authorizer.class.name".into(),
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
                ),
                ("super.users".into(), format!("User:{admin}")),
            ];
            let mut secured = secured;
            if tls {
                crate::redis::make_certificates(&dir)?;
                // One PEM file with the key and the certificate is the broker's key store; the CA is its
                // trust store for its own inter-broker connections.
                let key = std::fs::read_to_string(dir.join("server.key"))
                    .map_err(|e| HarnessError::io("read the broker key", e))?;
                let cert = std::fs::read_to_string(dir.join("server.crt"))
                    .map_err(|e| HarnessError::io("read the broker certificate", e))?;
                std::fs::write(dir.join("keystore.pem"), format!("{key}{cert}"))
                    .map_err(|e| HarnessError::io("write the broker key store", e))?;
                let file = |name: &str| dir.join(name).display().to_string();
                secured.extend([
                    ("ssl.keystore.type".to_owned(), "PEM".to_owned()),
                    ("ssl.keystore.location".to_owned(), file("keystore.pem")),
                    ("ssl.truststore.type".to_owned(), "PEM".to_owned()),
                    ("ssl.truststore.location".to_owned(), file("ca.crt")),
                ]);
            }
            for (k, v) in secured {
                props.retain(|(key, _)| *key != k);
                props.push((k, v));
            }
            for (name, password) in std::iter::once(&KAFKA_ADMIN).chain(users.iter()) {
                scram.push(format!(
                    "--add-scram=SCRAM-SHA-512=[name={name},password={password}]"
                ));
            }
        }
        for (k, v) in extra {
            props.retain(|(key, _)| key != k);
            props.push(((*k).to_owned(), (*v).to_owned()));
        }
        let config = dir.join("server.properties");
        let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&config, text).map_err(|e| HarnessError::io("write server.properties", e))?;

        format_log_dir(&libs, &config, &cluster_id(), &scram)?;
        let ca_file = tls.then(|| dir.join("ca.crt"));
        let process = ServerProcess::new("kafka", dir, move || {
            let mut cmd = java(&libs);
            cmd.arg("kafka.Kafka").arg(&config);
            cmd
        });
        process.spawn()?;
        let server = Self {
            port,
            process,
            secured: users.is_some(),
            ca_file,
            startup: Duration::ZERO,
        };
        server.wait_ready()?;
        Ok(Self {
            startup: started.elapsed(),
            ..server
        })
    }

    /// Starts a broker with the default test settings.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(&[])
    }

    /// librdkafka properties that log in as [`KAFKA_ADMIN`] on a secured broker (none otherwise).
    pub fn admin_properties(&self) -> Vec<(&'static str, String)> {
        if !self.secured {
            return Vec::new();
        }
        let mut props = vec![
            ("security.protocol", self.security_protocol().into()),
            ("sasl.mechanisms", "SCRAM-SHA-512".into()),
            ("sasl.username", KAFKA_ADMIN.0.into()),
            ("sasl.password", KAFKA_ADMIN.1.into()),
        ];
        if let Some(ca) = &self.ca_file {
            props.push(("ssl.ca.location", ca.display().to_string()));
        }
        props
    }

    /// Adds ALLOW ACLs on a secured broker, as the administrator (through the Python admin client: the
    /// Rust client has no ACL calls).
    pub fn create_acls(&self, acls: &[Acl]) -> Result<(), HarnessError> {
        use std::io::Write;
        let python = crate::interop_python()?;
        let spec = serde_json::json!({
            "bootstrap": self.bootstrap_servers(),
            "protocol": self.security_protocol(),
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
            "username": KAFKA_ADMIN.0,
            "password": KAFKA_ADMIN.1,
            "acls": acls.iter().map(|a| serde_json::json!({
                "principal": a.principal,
                "resource": a.resource,
                "name": a.name,
                "pattern": if a.prefixed { "PREFIXED" } else { "LITERAL" },
                "operation": a.operation,
            })).collect::<Vec<_>>(),
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/create_acls.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| HarnessError::io("run the ACL script", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(spec.to_string().as_bytes())
                .map_err(|e| HarnessError::io("send the ACLs", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| HarnessError::io("wait for the ACL script", e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HarnessError::Failed(format!(
                "creating ACLs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// Ready means the controller has unfenced the broker: creating a topic succeeds.
    fn wait_ready(&self) -> Result<(), HarnessError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap_servers())
            .set("socket.timeout.ms", "2000");
        for (k, v) in self.admin_properties() {
            config.set(k, v);
        }
        let admin: AdminClient<DefaultClientContext> = config
            .create()
            .map_err(|e| HarnessError::step("admin client")(e.into()))?;
        let probe = NewTopic::new("__testkit_ready", 1, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(2)));
        wait_until("Kafka to accept a topic", Duration::from_secs(90), || {
            if !self.process.is_running() {
                return false;
            }
            let result = futures::executor::block_on(admin.create_topics([&probe], &opts));
            matches!(
                result.as_deref(),
                Ok([Ok(_)] | [Err((_, RDKafkaErrorCode::TopicAlreadyExists))])
            )
        })
        .map(|_| ())
        .map_err(|e| HarnessError::not_ready(log_tail(&self.process.log_path(), 30))(e))
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL, like a crash).
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Starts it again on the same ports and log dir after [`KafkaServer::kill`].
    pub fn restart(&self) -> Result<(), HarnessError> {
        self.process.spawn()?;
        self.wait_ready()
    }
}

/// One ALLOW ACL for [`KafkaServer::create_acls`].
#[derive(Debug, Clone)]
pub struct Acl {
    /// `User:<name>`.
    pub principal: String,
    /// `TOPIC`, `GROUP` or `TRANSACTIONAL_ID`.
    pub resource: &'static str,
    /// The resource's name, or its prefix when `prefixed`.
    pub name: String,
    /// Whether `name` is a prefix.
    pub prefixed: bool,
    /// `READ`, `WRITE`, `DESCRIBE`, ...
    pub operation: &'static str,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = super::cluster_id();
        assert_eq!(id.len(), 22);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(id, super::cluster_id());
    }
}

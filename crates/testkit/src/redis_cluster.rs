//! A throw-away Redis Cluster on loopback: six redis-server nodes, three masters with one replica each,
//! built with `redis-cli --cluster create`. Nodes can be killed (a master's replica takes over) and
//! restarted (the node rejoins, as a replica of its successor).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::HarnessError;
use crate::process::{free_port, temp_dir, wait_until};
use crate::redis::{RedisServer, which};

/// Milliseconds a node may be unreachable before its replica is promoted.
const NODE_TIMEOUT_MS: u64 = 1000;

/// A running six-node Redis Cluster owned by the test process.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// How long start-up took (nodes up, slots assigned, every node agreeing).
    pub startup: Duration,
}

impl RedisCluster {
    /// Starts six nodes, joins them into a cluster of three masters and three replicas, and returns when
    /// every node reports the cluster healthy.
    pub fn start() -> Result<Self, HarnessError> {
        let started = Instant::now();
        let mut nodes = Vec::with_capacity(6);
        for _ in 0..6 {
            let dir = temp_dir("redis-cluster")?;
            // The cluster bus gets its own free port (the default, port + 10000, may be taken or too high).
            let bus = free_port()?.to_string();
            let timeout = NODE_TIMEOUT_MS.to_string();
            let args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                &timeout,
                // The slots of a failed master without a replica do not stop the others from serving.
                "--cluster-require-full-coverage",
                "no",
                // Replicas sync at once instead of waiting for more replicas (a failover needs synced data).
                "--repl-diskless-sync-delay",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            nodes.push(RedisServer::start_in(dir, free_port()?, args)?);
        }
        let cli = which("redis-cli").ok_or_else(|| {
            HarnessError::Missing("redis-cli not found: install the Debian package 'redis-tools'".into())
        })?;
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(|e| HarnessError::io("run redis-cli --cluster create", e))?;
        if !out.status.success() {
            return Err(HarnessError::Failed(format!(
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let cluster = Self {
            nodes,
            startup: Duration::ZERO,
        };
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(Self {
            startup: started.elapsed(),
            ..cluster
        })
    }

    /// `redis://127.0.0.1:<port>/` of every node, as seed addresses for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes' ports, in start order (indices for [`RedisCluster::kill`] and [`RedisCluster::restart`]).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Indices of the nodes that are masters now (as the first reachable node sees it).
    pub fn masters(&self) -> Result<Vec<usize>, HarnessError> {
        let nodes = self.query_any(&["CLUSTER", "NODES"])?;
        let ports = self.ports();
        let mut masters = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            // A serving master: flagged master, not failed, reachable (or the node asked), owning slots.
            let serving = flags.split(',').any(|f| f == "master")
                && !flags.contains("fail")
                && (flags.contains("myself") || fields.get(7) == Some(&"connected"))
                && fields.len() > 8;
            if !serving {
                continue;
            }
            let port = address
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(i) = port.and_then(|p| ports.iter().position(|&q| q == p)) {
                masters.push(i);
            }
        }
        masters.sort_unstable();
        Ok(masters)
    }

    /// Kills node `index` (SIGKILL: a crash).
    pub fn kill(&self, index: usize) {
        if let Some(node) = self.nodes.get(index) {
            node.kill();
        }
    }

    /// Freezes node `index` (SIGSTOP) until [`RedisCluster::thaw`]: it stays connected but acknowledges
    /// nothing, as a replica that has fallen behind.
    pub fn freeze(&self, index: usize) {
        if let Some(node) = self.nodes.get(index) {
            node.freeze();
        }
    }

    /// Lets a frozen node go on.
    pub fn thaw(&self, index: usize) {
        if let Some(node) = self.nodes.get(index) {
            node.thaw();
        }
    }

    /// Starts node `index` again with its cluster state; it rejoins the cluster.
    pub fn restart(&self, index: usize) -> Result<(), HarnessError> {
        match self.nodes.get(index) {
            Some(node) => node.restart(),
            None => Err(HarnessError::Failed(format!("no cluster node {index}"))),
        }
    }

    /// Waits until every running node reports `cluster_state:ok`, three masters serve all 16384 slots and
    /// each master has a replica in sync (so that a master can fail over).
    pub fn wait_healthy(&self, timeout: Duration) -> Result<Duration, HarnessError> {
        wait_until("the Redis Cluster to be healthy", timeout, || {
            let running: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.is_running()).collect();
            !running.is_empty()
                && running.iter().all(|n| {
                    query(n.port(), &["CLUSTER", "INFO"]).is_ok_and(|info| {
                        info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                    })
                })
                && self.masters().is_ok_and(|masters| {
                    masters.len() == 3
                        && masters.iter().all(|&m| {
                            query(self.nodes[m].port(), &["INFO", "replication"])
                                .is_ok_and(|info| info.contains("state=online"))
                        })
                })
        })
    }

    fn query_any(&self, args: &[&str]) -> Result<String, HarnessError> {
        let mut last = HarnessError::Failed("no cluster node is running".into());
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match query(node.port(), args) {
                Ok(out) => return Ok(out),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Runs one command with redis-cli against the node on `port` and returns its output.
fn query(port: u16, args: &[&str]) -> Result<String, HarnessError> {
    let cli = which("redis-cli").ok_or_else(|| HarnessError::Missing("redis-cli not found".into()))?;
    let out = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| HarnessError::io("run redis-cli", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HarnessError::Failed(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

//! Redis processes the limit tests control: a node that can be killed and restarted on the
//! same port (optionally with an append-only file, so its data survives the restart), and a
//! 3-master Redis Cluster. The same approach as `src/store/redis/testing.rs` (that module is
//! `cfg(test)` in the library, so the e2e binary cannot reach it): free ports from the OS,
//! one temporary directory per node, readiness by `PING` / `cluster_state:ok` with a
//! deadline, and `kill_on_drop`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How long a node may take to answer `PING` (or a cluster to reach `cluster_state:ok`).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A port nobody listens on right now (the OS picks it; it is released for the server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `redis-cli -p <port> <args>` and returns its trimmed stdout (empty on failure).
pub async fn cli(port: u16, args: &[&str]) -> String {
    let Ok(out) = Command::new("redis-cli")
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
    else {
        return String::new();
    };
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One `redis-server` that a test may kill (as a crash would) and start again on the same
/// port and directory.
pub struct RedisNode {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
    dir: TempDir,
}

impl RedisNode {
    /// A standalone node without persistence: a restart comes back empty.
    pub async fn start() -> Self {
        Self::start_with(free_port(), Vec::new()).await
    }

    /// A standalone node with an append-only file fsynced on every write: a restart (even
    /// after SIGKILL) comes back with everything that was acknowledged.
    pub async fn start_persistent() -> Self {
        let extra = ["--appendonly", "yes", "--appendfsync", "always"]
            .map(str::to_owned)
            .to_vec();
        Self::start_with(free_port(), extra).await
    }

    async fn start_with(port: u16, extra: Vec<String>) -> Self {
        let mut node = Self {
            child: None,
            port,
            extra,
            dir: tempfile::tempdir().unwrap(),
        };
        node.spawn();
        node.wait_ready().await;
        node
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let has_aof = self.extra.iter().any(|a| a == "--appendonly");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""]);
        if !has_aof {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join(format!("redis-{}.log", self.port)))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        self.child = Some(
            cmd.spawn()
                .expect("redis-server must be installed (scripts/test installs it)"),
        );
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while cli(self.port, &["PING"]).await != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server with SIGKILL (a crash: no shutdown save) and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts the server again on the same port and directory and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn();
        self.wait_ready().await;
    }
}

/// A Redis Cluster of three masters (no replicas) on free ports.
pub struct RedisCluster {
    nodes: Vec<RedisNode>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok`.
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            // An explicit bus port: the default (port + 10000) may be taken or above 65535.
            let extra = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                format!("nodes-{port}.conf"),
                "--cluster-node-timeout".into(),
                "5000".into(),
                "--cluster-port".into(),
                free_port().to_string(),
            ];
            nodes.push(RedisNode::start_with(port, extra).await);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        for node in &nodes {
            while !cli(node.port, &["CLUSTER", "INFO"])
                .await
                .contains("cluster_state:ok")
            {
                assert!(
                    Instant::now() < deadline,
                    "cluster did not reach cluster_state:ok"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Self { nodes }
    }

    /// Every node's URL, for `store.cluster_urls`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Keys stored on every node together (each master holds its own slots).
    pub async fn dbsize(&self) -> u64 {
        let mut total = 0;
        for n in &self.nodes {
            total += cli(n.port, &["DBSIZE"]).await.parse::<u64>().unwrap_or(0);
        }
        total
    }
}

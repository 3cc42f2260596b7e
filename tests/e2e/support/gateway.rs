//! Spawns the real `sentinel serve` on port 0 and waits for its `listening` log line.

use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The bootstrap key of the `test` tenant that every test gateway gets.
pub const TEST_KEY: &str = "sk-sntl-e2e-test-key-0123456789abcdefghijklmnop";
/// The admin key every test gateway gets.
pub const ADMIN_KEY: &str = "e2e-admin-secret-do-not-log";
const TENANT_BLOCK: &str =
    "\n[[tenants]]\nid = \"test\"\nkeys = [{ name = \"e2e\", key_env = \"E2E_TEST_KEY\" }]\n";

/// A running gateway process.
pub struct Gateway {
    pub addr: std::net::SocketAddr,
    pub child: Child,
    pub logs: Arc<RwLock<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `sentinel serve` with `config` (TOML). `listen` is forced to 127.0.0.1:0.
    pub async fn start(config: &str) -> Self {
        Self::start_with_env(config, &[]).await
    }

    /// Same, with extra environment variables.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("sentinel.toml");
        let config = if config.contains("[[tenants]]") {
            config.to_owned()
        } else {
            format!("{config}{TENANT_BLOCK}")
        };
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentinel"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("SENTINEL_LOG_FORMAT", "json")
            .env("SENTINEL_SERVER__LISTEN", "127.0.0.1:0")
            .env("SENTINEL_LOG", "info")
            .env("E2E_TEST_KEY", TEST_KEY)
            .env("SENTINEL_ADMIN_KEY", ADMIN_KEY)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sentinel");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(RwLock::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&logs);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "listening" {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                }
                sink.write().unwrap().push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(addr)) => addr.parse().unwrap(),
            _ => panic!(
                "gateway did not start; logs:\n{}",
                logs.read().unwrap().join("\n")
            ),
        };
        Self {
            addr,
            child,
            logs,
            dir,
        }
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The gateway's working directory (holds the embedded store under `data/`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.logs.read().unwrap().join("\n")
    }
}

/// A client sending the `test` tenant's key on every request.
pub fn client() -> reqwest::Client {
    client_with_key(TEST_KEY)
}

/// A client sending `key` as a bearer token on every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A client without credentials.
pub fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

/// A config with one OpenAI-compatible provider `mock` at `upstream` and models routed to it.
pub fn basic_config(upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
request_timeout = "20s"
shutdown_grace = "10s"

[[providers]]
name = "mock"
kind = "openai_compatible"
base_url = "http://{upstream}/v1"
timeout = "5s"
stream_idle_timeout = "5s"
max_retries = 2

[[models]]
name = "demo"
routes = [{{ provider = "mock", model = "mock-gpt" }}]

[[models]]
name = "same-name"
routes = [{{ provider = "mock", model = "same-name" }}]

[[models]]
name = "embed"
routes = [{{ provider = "mock", model = "mock-embedding" }}]
{extra}
"#
    )
}

/// Posts `body` to the gateway's chat endpoint with `client`; returns the status code.
pub async fn chat_status(client: &reqwest::Client, gw: &Gateway, body: &serde_json::Value) -> u16 {
    post_chat(client, gw, body).await.status().as_u16()
}

/// Posts `body` to the gateway's chat endpoint with `client`.
pub async fn post_chat(
    client: &reqwest::Client,
    gw: &Gateway,
    body: &serde_json::Value,
) -> reqwest::Response {
    client
        .post(gw.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

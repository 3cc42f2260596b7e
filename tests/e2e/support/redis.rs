//! A private `redis-server` on a free port, for tests that need a real Redis.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A running private Redis; killed on drop.
pub struct RedisServer {
    pub port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server must be installed (scripts/test installs it)");
            let server = Self {
                port,
                _child: child,
                _dir: dir,
            };
            if server.wait_ready().await {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn wait_ready(&self) -> bool {
        for _ in 0..200 {
            if self.ping().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Whether the server answers PING.
    pub async fn ping(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if conn.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(conn.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG"))
    }
}

// --- outage helpers (stop with the data kept, restart on the same port) ---

impl RedisServer {
    /// Takes the server down: `SHUTDOWN SAVE` writes its data to its directory and exits, so
    /// [`RedisServer::restart`] brings back everything acknowledged before the outage. Waits
    /// until the process has exited.
    pub async fn shutdown_save(&mut self) {
        if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)).await {
            // The server closes the connection instead of answering.
            let _ = conn.write_all(b"SHUTDOWN SAVE\r\n").await;
            let mut buf = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
        }
        let exited = tokio::time::timeout(Duration::from_secs(10), self.child_mut().wait()).await;
        assert!(
            exited.is_ok(),
            "redis-server did not exit after SHUTDOWN SAVE"
        );
    }

    /// Starts the server again on the same port and directory (loading the data saved by
    /// [`RedisServer::shutdown_save`]) and waits until it answers PING.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.data_dir())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server restarts");
        *self.child_mut() = child;
        assert!(
            self.wait_ready().await,
            "redis-server did not come back on port {}",
            self.port
        );
    }

    #[expect(
        clippy::used_underscore_binding,
        reason = "the fields are named for start(), which only keeps them alive"
    )]
    fn child_mut(&mut self) -> &mut Child {
        &mut self._child
    }

    #[expect(
        clippy::used_underscore_binding,
        reason = "the fields are named for start(), which only keeps them alive"
    )]
    fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

//! Binding, the accept loop and graceful shutdown.
//!
//! Every accepted socket gets `TCP_NODELAY` (without it, a response head and body written
//! separately stall ~40 ms on the client's delayed ACK). Connections are served by hyper's
//! auto (HTTP/1.1 + h2c) builder with a header-read timeout against slow clients. On
//! SIGTERM/SIGINT the listener closes at once, in-flight requests and streams get up to
//! `shutdown_grace`, then background work drains.
//!
//! [`serve_lanes`] runs the accept loop on every serving lane ([`crate::lanes`]): each lane
//! thread accepts from its own handle on the one listening socket and serves what it accepted.

pub mod routes;
pub mod stack;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tasks::Tasks;

/// Largest request head (request line + headers) a client may send.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start serving lane {lane}: {source}")]
    Lane { lane: usize, source: std::io::Error },
}

/// How every lane serves its connections.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    pub grace: Duration,
}

/// Runs before a lane accepts, on the lane's runtime (e.g. to open its own connections).
pub type LaneStart =
    std::sync::Arc<dyn Fn(usize) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// The serving lanes, started by [`serve_lanes`].
#[derive(Debug)]
pub struct Lanes {
    done: Vec<tokio::sync::oneshot::Receiver<bool>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    release: CancellationToken,
}

/// Starts `count` lane threads serving `app` from `listener` until `shutdown` is cancelled.
/// Returns once every lane has run `on_start` and is accepting.
pub async fn serve_lanes(
    listener: TcpListener,
    count: usize,
    app: Router,
    tasks: &Tasks,
    shutdown: CancellationToken,
    options: ServeOptions,
    on_start: LaneStart,
) -> Result<Lanes, ServeError> {
    // Handing the socket to the lanes' runtimes is part of binding it.
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let listener = listener
        .into_std()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let release = CancellationToken::new();
    let mut lanes = Lanes {
        done: Vec::with_capacity(count),
        threads: Vec::with_capacity(count),
        release: release.clone(),
    };
    let mut ready = Vec::with_capacity(count);
    for lane in 0..count.max(1) {
        let lane_err = |source| ServeError::Lane { lane, source };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let spec = LaneSpec {
            lane,
            listener: listener.try_clone().map_err(lane_err)?,
            app: app.clone(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            options: options.clone(),
            on_start: on_start.clone(),
            release: release.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("sentinel-lane-{lane}"))
            .spawn(move || spec.run(ready_tx, done_tx))
            .map_err(lane_err)?;
        lanes.threads.push(thread);
        lanes.done.push(done_rx);
        ready.push(ready_rx);
    }
    for (lane, ready) in ready.into_iter().enumerate() {
        let started = ready.await.unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the lane thread ended before it was ready",
            ))
        });
        if let Err(source) = started {
            lanes.release.cancel();
            return Err(ServeError::Lane { lane, source });
        }
    }
    Ok(lanes)
}

/// Everything one lane thread needs.
struct LaneSpec {
    lane: usize,
    listener: std::net::TcpListener,
    app: Router,
    tasks: Tasks,
    shutdown: CancellationToken,
    options: ServeOptions,
    on_start: LaneStart,
    release: CancellationToken,
}

impl LaneSpec {
    /// The lane thread: its runtime, its start-up, its accept loop, then its background work
    /// until released. Reports readiness (or why not) on `ready`, and on `done` whether
    /// serving ended cleanly.
    fn run(
        self,
        ready: tokio::sync::oneshot::Sender<std::io::Result<()>>,
        done: tokio::sync::oneshot::Sender<bool>,
    ) {
        crate::lanes::enter(self.lane);
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        let grace = self.options.grace;
        runtime.block_on(async move {
            (self.on_start)(self.lane).await;
            let listener = match TcpListener::from_std(self.listener) {
                Ok(listener) => listener,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let clean = serve(
                listener,
                self.app,
                &self.tasks,
                self.shutdown,
                self.options.header_read_timeout,
                self.options.grace,
            )
            .await;
            let _ = done.send(clean);
            // This lane's audit and cache-fill writers, and the work its requests left behind
            // (stream drains), run here until the process has drained them.
            self.release.cancelled().await;
        });
        runtime.shutdown_timeout(grace);
    }
}

impl Lanes {
    /// Waits until every lane has stopped serving; whether all finished within the grace.
    pub async fn stopped(&mut self) -> bool {
        let mut clean = true;
        for done in self.done.drain(..) {
            // A lane that ended without reporting did not finish cleanly.
            clean &= done.await.unwrap_or(false);
        }
        clean
    }

    /// Lets the lane threads end (after background work has drained) and joins them.
    pub async fn release(mut self) {
        self.release.cancel();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a serving lane panicked");
                }
            }
        });
        if joined.await.is_err() {
            tracing::error!("joining the serving lanes failed");
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // An early return must not leave lane threads waiting forever.
        self.release.cancel();
    }
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets open connections
/// finish for at most `grace`. Returns whether every connection finished in time.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tasks: &Tasks,
    shutdown: CancellationToken,
    header_read_timeout: Duration,
    grace: Duration,
) -> bool {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, %peer, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tasks.spawn("connection", async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "shutting down: listener closed, finishing in-flight requests"
    );
    tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok()
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

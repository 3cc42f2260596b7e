//! The bundled mock upstream: an OpenAI-, Azure- and Anthropic-shaped LLM API that answers
//! instantly (or as slowly and badly as asked).
//!
//! It serves `sentinel mock-provider` (demos and load tests), the gateway's keyless demo route
//! and the end-to-end tests, which start it on port 0 and steer it through [`MockControl`].
//! It must never be a benchmark's bottleneck, so it runs on bare hyper (HTTP/1.1 keep-alive
//! and h2c), sets TCP_NODELAY, touches only atomics per request, and serialises each answer
//! once from borrowing structs.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`,
//! `POST /v1/messages` (Anthropic), and Azure's `POST /openai/deployments/{d}/chat/completions`
//! and `.../embeddings`.

mod anthropic;
mod chat;
mod control;
mod embeddings;
mod service;
mod stream;
mod text;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

pub use self::anthropic::{CACHE_CREATION_TOKENS, CACHE_READ_TOKENS, CACHE_TEST_MARKER};
pub use self::chat::TOOL_ARGUMENTS;
pub use self::control::{MockControl, RecordedRequest, StreamGate, RECORDED_REQUESTS};
pub use self::embeddings::MODELS;
use self::service::Shared;
pub use self::text::{EMBEDDING_DIMS, TOKENS_PER_MESSAGE};
use crate::tasks::Tasks;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the mock behaves.
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Delay before response headers.
    pub latency: Duration,
    /// Delay between stream events.
    pub chunk_interval: Duration,
    /// Content chunks per streamed text answer.
    pub chunks: usize,
    /// Share (0..=1) of POST requests that fail with `fail_kind`.
    pub fail_rate: f64,
    /// How those requests fail.
    pub fail_kind: FailKind,
    /// Fixed reply text; by default `Mock reply to: <first 40 chars of the last user message>`.
    pub reply: Option<String>,
    /// Keep the last [`RECORDED_REQUESTS`] requests for [`MockControl::requests`].
    pub record_requests: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunk_interval: Duration::ZERO,
            chunks: 8,
            fail_rate: 0.0,
            fail_kind: FailKind::Status500,
            reply: None,
            record_requests: true,
        }
    }
}

/// How a request fails on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailKind {
    /// 500 with a server error body.
    #[default]
    Status500,
    /// 429 with `retry-after: 1`.
    Status429,
    /// No answer until the client gives up (or the mock shuts down).
    Hang,
    /// The connection is closed without a response.
    Reset,
    /// Streams send one valid event, then `data: {not json`, then end without `[DONE]`;
    /// non-streaming answers are cut in the middle of their JSON.
    MalformedSse,
}

impl FailKind {
    const ALL: [Self; 5] = [
        Self::Status500,
        Self::Status429,
        Self::Hang,
        Self::Reset,
        Self::MalformedSse,
    ];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status500 => "500",
            Self::Status429 => "429",
            Self::Hang => "hang",
            Self::Reset => "reset",
            Self::MalformedSse => "malformed-sse",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Status500 => 0,
            Self::Status429 => 1,
            Self::Hang => 2,
            Self::Reset => 3,
            Self::MalformedSse => 4,
        }
    }

    fn from_code(code: u8) -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .unwrap_or_default()
    }
}

impl fmt::Display for FailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--fail-kind` value that is not one of the known kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fail kind {0:?}: expected 500, 429, hang, reset or malformed-sse")]
pub struct ParseFailKindError(String);

impl FromStr for FailKind {
    type Err = ParseFailKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseFailKindError(s.to_owned()))
    }
}

/// A running mock provider. It serves until the [`Tasks`] it was started with shut down;
/// dropping this handle does not stop it.
#[derive(Debug)]
pub struct MockProvider {
    addr: SocketAddr,
    control: Arc<MockControl>,
}

impl MockProvider {
    /// Binds `listen` (port 0 picks a free port) and serves in tasks owned by `tasks`.
    pub async fn start(
        listen: SocketAddr,
        options: MockOptions,
        tasks: &Tasks,
    ) -> io::Result<Self> {
        if !(0.0..=1.0).contains(&options.fail_rate) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mock provider: fail_rate must be within 0..=1",
            ));
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(MockControl::new(options.latency, options.record_requests));
        let shared = Arc::new(Shared::new(
            options,
            Arc::clone(&control),
            tasks.shutdown_token(),
        ));

        let mut builder = auto::Builder::new(TaskExecutor(tasks.clone()));
        // No header-read timeout: its clients are local and trusted, and the timer it arms
        // on every request is a measurable share of the mock's CPU.
        builder.http1().header_read_timeout(None).keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        tasks.spawn(
            "mock-provider-accept",
            accept_loop(listener, Arc::new(builder), shared, tasks.clone()),
        );
        tracing::debug!(%addr, "mock provider listening");
        Ok(Self { addr, control })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/v1`, the base URL a provider config points at.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The handle for counting, recording and steering.
    pub fn control(&self) -> Arc<MockControl> {
        Arc::clone(&self.control)
    }
}

/// Runs hyper's background work (HTTP/2 streams) as tracked tasks.
#[derive(Clone)]
struct TaskExecutor(Tasks);

impl<F> hyper::rt::Executor<F> for TaskExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn("mock-provider-h2", fut);
    }
}

type Builder = auto::Builder<TaskExecutor>;

async fn accept_loop(
    listener: TcpListener,
    builder: Arc<Builder>,
    shared: Arc<Shared>,
    tasks: Tasks,
) {
    let shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "mock provider: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Without it, a response head and body written separately wait for the peer's ACK.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "mock provider: cannot set TCP_NODELAY");
        }
        tasks.spawn(
            "mock-provider-conn",
            serve_connection(stream, Arc::clone(&builder), Arc::clone(&shared)),
        );
    }
}

async fn serve_connection(stream: TcpStream, builder: Arc<Builder>, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let service = service_fn(move |request| service::handle(Arc::clone(&shared), request));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::trace!(error = %err, "mock provider: connection ended with an error");
    }
}

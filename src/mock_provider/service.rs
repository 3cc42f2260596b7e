//! One request, start to finish: count and record it, route it, inject the failure it is due,
//! wait the configured latency, and answer in the endpoint's dialect.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use super::control::{MockControl, RecordedRequest};
use super::{anthropic, chat, embeddings, stream, FailKind, MockOptions};

/// The response body type of every mock answer.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Returned by the service to make hyper drop the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("mock provider: connection reset on purpose")]
pub struct ResetConnection;

/// What every request handler shares: immutable options plus the control handle.
#[derive(Debug)]
pub struct Shared {
    pub options: MockOptions,
    pub control: Arc<MockControl>,
    pub shutdown: CancellationToken,
    models: Bytes,
}

impl Shared {
    pub fn new(
        options: MockOptions,
        control: Arc<MockControl>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            options,
            control,
            shutdown,
            models: embeddings::model_list(),
        }
    }

    /// Seconds since the epoch, for `created` fields.
    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// A stream body playing `events` with this mock's chunk interval and gate.
    pub fn sse(&self, events: stream::SseBuilder) -> Response<Body> {
        let body = stream::body(
            events,
            self.options.chunk_interval,
            Arc::clone(&self.control),
            self.shutdown.clone(),
        );
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        response
    }
}

/// Which API family an endpoint speaks, for the shape of its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

#[derive(Clone, Copy, Debug)]
enum Endpoint<'a> {
    /// `deployment` is set on Azure's paths and stands in for the model.
    Chat {
        deployment: Option<&'a str>,
    },
    Embeddings {
        deployment: Option<&'a str>,
    },
    Messages,
    Models,
}

impl<'a> Endpoint<'a> {
    fn route(path: &'a str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::Chat { deployment: None }),
            "/v1/embeddings" => Some(Self::Embeddings { deployment: None }),
            "/v1/messages" => Some(Self::Messages),
            "/v1/models" => Some(Self::Models),
            _ => {
                let rest = path.strip_prefix("/openai/deployments/")?;
                let (deployment, op) = rest.split_once('/')?;
                if deployment.is_empty() {
                    return None;
                }
                match op {
                    "chat/completions" => Some(Self::Chat {
                        deployment: Some(deployment),
                    }),
                    "embeddings" => Some(Self::Embeddings {
                        deployment: Some(deployment),
                    }),
                    _ => None,
                }
            }
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Models => Method::GET,
            _ => Method::POST,
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Self::Messages => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }
}

/// The service function: one request in, one response (or a dropped connection) out.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ResetConnection> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let seq = shared.control.count(path);
    // A client that goes away while sending its body gets nothing back.
    let body = body
        .collect()
        .await
        .map_err(|_| ResetConnection)?
        .to_bytes();
    if shared.control.is_recording() {
        shared
            .control
            .record(RecordedRequest {
                method: parts.method.clone(),
                path: path.to_owned(),
                query: parts.uri.query().map(str::to_owned),
                headers: parts.headers.clone(),
                body: body.clone(),
            })
            .await;
    }

    let Some(endpoint) = Endpoint::route(path) else {
        let message = format!("Unknown request URL: {} {path}", parts.method);
        return Ok(openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            &message,
        ));
    };
    if parts.method != endpoint.method() {
        let message = format!("Method {} is not allowed on {path}", parts.method);
        return Ok(openai_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            None,
            &message,
        ));
    }

    let failure = if endpoint.method() == Method::POST {
        decide_failure(&shared)
    } else {
        None
    };
    let latency = shared.control.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let malformed = match failure {
        None => false,
        Some(FailKind::MalformedSse) => true,
        Some(FailKind::Status500) => return Ok(server_error(endpoint.dialect())),
        Some(FailKind::Status429) => return Ok(rate_limited(endpoint.dialect())),
        Some(FailKind::Reset) => return Err(ResetConnection),
        Some(FailKind::Hang) => {
            // Dropped with the connection when the client gives up; released by shutdown.
            shared.shutdown.cancelled().await;
            return Err(ResetConnection);
        }
    };

    let seq = seq.to_string();
    Ok(match endpoint {
        Endpoint::Models => json_response(StatusCode::OK, shared.models.clone()),
        Endpoint::Chat { deployment } => chat::chat(&shared, &seq, deployment, &body, malformed),
        Endpoint::Embeddings { deployment } => embeddings::embeddings(deployment, &body, malformed),
        Endpoint::Messages => anthropic::messages(&shared, &seq, &parts.headers, &body, malformed),
    })
}

/// A forced failure from [`MockControl::fail_next`] first, else one drawn at `fail_rate`.
fn decide_failure(shared: &Shared) -> Option<FailKind> {
    shared.control.take_forced_failure().or_else(|| {
        let rate = shared.options.fail_rate;
        (rate > 0.0 && rand::random::<f64>() < rate).then_some(shared.options.fail_kind)
    })
}

// === responses ===

/// A JSON response with a ready body.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Serialises `value` as the 200 answer; for a malformed-answer failure, sends only its first
/// half.
pub fn answer<T: serde::Serialize>(value: &T, malformed: bool) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            if malformed {
                body.truncate(body.len() / 2);
            }
            json_response(StatusCode::OK, body.into())
        }
        Err(err) => openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            &err.to_string(),
        ),
    }
}

/// OpenAI's error shape.
pub fn openai_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> Response<Body> {
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    json_response(status, body.to_string().into())
}

/// Anthropic's error shape.
pub fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    json_response(status, body.to_string().into())
}

/// A 400 for a body that does not parse, in the endpoint's dialect.
pub fn invalid_body(dialect: Dialect, err: &serde_json::Error) -> Response<Body> {
    let message = format!("Invalid request body: {err}");
    match dialect {
        Dialect::OpenAi => openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            &message,
        ),
        Dialect::Anthropic => {
            anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", &message)
        }
    }
}

fn server_error(dialect: Dialect) -> Response<Body> {
    let message = "The mock provider failed on purpose (fail kind 500).";
    match dialect {
        Dialect::OpenAi => openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            message,
        ),
        Dialect::Anthropic => {
            anthropic_error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", message)
        }
    }
}

/// Retry hint sent with every mock 429.
pub const RETRY_AFTER_SECS: Duration = Duration::from_secs(1);

fn rate_limited(dialect: Dialect) -> Response<Body> {
    let message = "Rate limit reached (mock provider, fail kind 429).";
    let mut response = match dialect {
        Dialect::OpenAi => openai_error(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
            message,
        ),
        Dialect::Anthropic => {
            anthropic_error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
    };
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS.as_secs()));
    response
}

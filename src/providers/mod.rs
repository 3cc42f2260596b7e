//! Provider wire mapping: where a request goes, with which headers, in which shape.
//!
//! `openai`, `azure` and `openai_compatible` speak OpenAI's protocol: the client's bytes are
//! forwarded unchanged unless the model id differs at the provider or the gateway must ask for
//! stream usage. `anthropic` is translated both ways (`anthropic.rs`).

pub mod anthropic;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use memchr::memmem;

use crate::config::{ProviderConfig, ProviderKind};
use crate::error::{ErrorCode, GatewayError};
use crate::openai::chat::{ChatRequest, StreamOptions};
use crate::openai::embeddings::EmbeddingsRequest;

/// Anthropic Messages API version sent on every call.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Which client endpoint is being proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Embeddings,
}

impl Endpoint {
    /// The client-facing path, also the `route` metric label.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }
}

/// URL and headers of one route's endpoint, computed once at start-up.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub kind: ProviderKind,
    /// Parsed once here; cloning a `Uri` is a reference-count bump.
    pub uri: http::Uri,
    pub headers: HeaderMap,
}

/// Why a target could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
#[error("provider {provider}: {reason}")]
pub struct TargetError {
    provider: String,
    reason: String,
}

/// The target for `endpoint` of `model` at `provider`; `None` when the provider has no such
/// endpoint (Anthropic has no embeddings).
pub fn target(
    provider: &ProviderConfig,
    model: &str,
    endpoint: Endpoint,
) -> Result<Option<UpstreamTarget>, TargetError> {
    let err = |reason: String| TargetError {
        provider: provider.name.clone(),
        reason,
    };
    let base = provider.base_url.as_str().trim_end_matches('/');
    let path = match (provider.kind, endpoint) {
        (ProviderKind::Openai | ProviderKind::OpenaiCompatible, Endpoint::Chat) => {
            "/chat/completions".to_owned()
        }
        (ProviderKind::Openai | ProviderKind::OpenaiCompatible, Endpoint::Embeddings) => {
            "/embeddings".to_owned()
        }
        (ProviderKind::Azure, Endpoint::Chat | Endpoint::Embeddings) => {
            let what = if endpoint == Endpoint::Chat {
                "chat/completions"
            } else {
                "embeddings"
            };
            let deployment: String =
                url::form_urlencoded::byte_serialize(model.as_bytes()).collect();
            let version: String = url::form_urlencoded::byte_serialize(
                provider
                    .api_version
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes(),
            )
            .collect();
            format!("/deployments/{deployment}/{what}?api-version={version}")
        }
        (ProviderKind::Anthropic, Endpoint::Chat) => "/messages".to_owned(),
        (ProviderKind::Anthropic, Endpoint::Embeddings) => return Ok(None),
    };
    let uri: http::Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| err(format!("bad URL: {e}")))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(key) = &provider.api_key {
        let (name, value) = match provider.kind {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => (
                http::header::AUTHORIZATION,
                format!("Bearer {}", key.expose()),
            ),
            ProviderKind::Azure => (HeaderName::from_static("api-key"), key.expose().to_owned()),
            ProviderKind::Anthropic => (
                HeaderName::from_static("x-api-key"),
                key.expose().to_owned(),
            ),
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| err("the API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if provider.kind == ProviderKind::Anthropic {
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    Ok(Some(UpstreamTarget {
        kind: provider.kind,
        uri,
        headers,
    }))
}

/// The upstream body of a chat request.
///
/// `chat` may be changed in place (model id, usage request); `client_wants_usage` is what the
/// client asked before any change.
pub fn chat_body(
    kind: ProviderKind,
    chat: &mut ChatRequest,
    raw: &Bytes,
    rewritten: bool,
    upstream_model: &str,
    client_wants_usage: bool,
) -> Result<Bytes, GatewayError> {
    if kind == ProviderKind::Anthropic {
        return anthropic::to_messages_request(chat, upstream_model)
            .map_err(|e| GatewayError::new(ErrorCode::InvalidBody, e.to_string()));
    }
    // Azure picks the model from the deployment in the URL, not the body.
    let rename = kind != ProviderKind::Azure && chat.model != upstream_model;
    let ask_usage = chat.is_stream() && !client_wants_usage;
    if !rewritten && !rename && !ask_usage {
        return Ok(raw.clone());
    }
    if !rewritten
        && !rename
        && chat.stream_options.is_none()
        && memmem::find(raw, b"\"stream_options\"").is_none()
    {
        if let Some(spliced) = splice_usage_request(raw) {
            return Ok(spliced);
        }
    }
    if rename {
        upstream_model.clone_into(&mut chat.model);
    }
    if ask_usage {
        chat.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
    }
    serde_json::to_vec(chat).map(Bytes::from).map_err(|e| {
        GatewayError::new(
            ErrorCode::Internal,
            format!("cannot encode the upstream request: {e}"),
        )
    })
}

/// Inserts `"stream_options":{"include_usage":true}` as the first member of the body object:
/// cheaper than re-encoding the whole request, and the rest of the bytes stay the client's.
fn splice_usage_request(raw: &[u8]) -> Option<Bytes> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true}"#;
    let open = raw.iter().position(|b| !b.is_ascii_whitespace())?;
    if raw[open] != b'{' {
        return None;
    }
    let rest = &raw[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = BytesMut::with_capacity(raw.len() + MEMBER.len() + 1);
    out.extend_from_slice(&raw[..=open]);
    out.extend_from_slice(MEMBER);
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(rest);
    Some(out.freeze())
}

/// The upstream body of an embeddings request.
pub fn embeddings_body(
    kind: ProviderKind,
    emb: &mut EmbeddingsRequest,
    raw: &Bytes,
    rewritten: bool,
    upstream_model: &str,
) -> Result<Bytes, GatewayError> {
    let rename = kind != ProviderKind::Azure && emb.model != upstream_model;
    if !rewritten && !rename {
        return Ok(raw.clone());
    }
    if rename {
        upstream_model.clone_into(&mut emb.model);
    }
    serde_json::to_vec(emb).map(Bytes::from).map_err(|e| {
        GatewayError::new(
            ErrorCode::Internal,
            format!("cannot encode the upstream request: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> (ChatRequest, Bytes) {
        (
            serde_json::from_str(body).unwrap(),
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    #[test]
    fn unchanged_requests_forward_the_clients_bytes() {
        let (mut c, raw) =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"zzz":1}"#);
        let out = chat_body(ProviderKind::Openai, &mut c, &raw, false, "m", false).unwrap();
        assert_eq!(out.as_ptr(), raw.as_ptr());
    }

    #[test]
    fn stream_usage_is_spliced_in_and_stays_valid_json() {
        let (mut c, raw) = chat(
            r#" {"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"x":[1]}"#,
        );
        let out = chat_body(
            ProviderKind::OpenaiCompatible,
            &mut c,
            &raw,
            false,
            "m",
            false,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["x"][0], 1);
        assert_eq!(
            splice_usage_request(b"{}").unwrap(),
            Bytes::from_static(br#"{"stream_options":{"include_usage":true}}"#)
        );
    }

    #[test]
    fn rename_and_existing_stream_options_reencode() {
        let (mut c, raw) = chat(
            r#"{"model":"alias","stream":true,"stream_options":{"foo":1},"messages":[{"role":"user","content":"hi"}],"k":true}"#,
        );
        let out = chat_body(ProviderKind::Openai, &mut c, &raw, false, "real", false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "real");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["foo"], 1);
        assert_eq!(v["k"], true);
    }

    #[test]
    fn azure_targets_the_deployment() {
        let p = ProviderConfig {
            name: "az".into(),
            kind: ProviderKind::Azure,
            base_url: url::Url::parse("https://x.openai.azure.com/openai").unwrap(),
            api_key: Some(crate::config::Secret::new("secret")),
            timeout: std::time::Duration::from_secs(1),
            stream_idle_timeout: std::time::Duration::from_secs(1),
            max_retries: 0,
            api_version: Some("2024-10-21".into()),
            circuit_breaker: crate::config::BreakerConfig {
                consecutive_failures: 1,
                error_ratio: 1.0,
                min_requests: 1,
                window: std::time::Duration::from_secs(1),
                cooldown: std::time::Duration::from_secs(1),
            },
        };
        let t = target(&p, "gpt4o", Endpoint::Chat).unwrap().unwrap();
        assert_eq!(t.uri.to_string(), "https://x.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21");
        assert!(t.headers["api-key"].is_sensitive());
        assert!(t.headers.get("authorization").is_none());
    }
}

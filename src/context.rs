//! Per-request values that layers insert as request extensions (see `server/stack.rs` for
//! who inserts and who reads each).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

/// The request's id: the client's `x-request-id` if it is sane, else a new UUIDv7.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Longest incoming id that is kept.
    pub const MAX_LEN: usize = 128;

    /// Keeps an incoming id made of 1..=128 characters from `[A-Za-z0-9._:-]`.
    pub fn from_client(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        // Sane bytes are ASCII, so the conversion cannot fail.
        sane.then(|| value.to_str().ok().map(|s| Self(Arc::from(s))))
            .flatten()
    }

    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        Self(Arc::from(
            &*uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf),
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When the gateway first saw the request; the base of latency and overhead figures.
#[derive(Debug, Clone, Copy)]
pub struct RequestStart(pub Instant);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_refuses_others() {
        assert!(RequestId::from_client(&HeaderValue::from_static("req_123-abc.def:9")).is_some());
        for bad in ["", "has space", "semi;colon", "new\tline", &"x".repeat(129)] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(RequestId::from_client(&v).is_none(), "{bad:?}");
        }
        let generated = RequestId::generate();
        assert_eq!(generated.as_str().len(), 36);
        assert_eq!(generated.as_str().as_bytes()[14], b'7', "UUIDv7");
    }
}

/// The request body, read once and parsed once by the parse layer. Later layers read the typed
/// form; the proxy forwards `raw` unchanged unless a layer rewrote the typed form.
#[derive(Debug, Clone)]
pub struct ParsedBody {
    /// The bytes as the client sent them.
    pub raw: bytes::Bytes,
    /// The typed request.
    pub api: ApiRequest,
    /// Set by a layer that changed `api` (e.g. redaction), so the proxy re-serialises it.
    pub rewritten: bool,
}

/// The typed body of a proxied endpoint.
#[derive(Debug, Clone)]
pub enum ApiRequest {
    Chat(Box<crate::openai::chat::ChatRequest>),
    Embeddings(Box<crate::openai::embeddings::EmbeddingsRequest>),
}

impl ApiRequest {
    /// The model the client asked for.
    pub fn model(&self) -> &str {
        match self {
            Self::Chat(c) => &c.model,
            Self::Embeddings(e) => &e.model,
        }
    }
}

//! Cache keys. An answer may be reused only for a request that would produce the same answer:
//! the key covers the model and every field that changes the answer (messages, tools,
//! `temperature`, `top_p`, `max_tokens`, `response_format`, `seed`, `stop`, penalties, unknown
//! fields...). Left out: fields that only change the delivery (`stream`, `stream_options`) or
//! bookkeeping (`user`, `metadata`, `store`). The tenant is not in the hash: every store key
//! already sits under the tenant.
//!
//! The hash is taken over the parsed request serialised straight into SHA-256: known fields in
//! the struct's fixed order, unknown ones sorted (`serde_json`'s map is ordered), so the key
//! order and formatting of what the client sent do not matter, and no intermediate JSON tree
//! or string is built. A domain tag keeps exact keys and semantic partitions apart.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::openai::chat::{ChatMessage, ChatRequest, MessageContent, Role, Stop, Tool};

/// Unknown request fields that do not change the answer.
const IGNORED_EXTRA: [&str; 2] = ["metadata", "store"];

/// What the key sees of a request (`stream`, `stream_options` and `user` are not here).
#[derive(serde::Serialize)]
struct KeyView<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(flatten)]
    extra: Extra<'a>,
}

/// The request's unknown fields minus [`IGNORED_EXTRA`].
struct Extra<'a>(&'a Map<String, Value>);

impl Serialize for Extra<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in self.0 {
            if !IGNORED_EXTRA.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl<'a> KeyView<'a> {
    fn new(req: &'a ChatRequest, messages: &'a [ChatMessage]) -> Self {
        Self {
            model: &req.model,
            messages,
            max_tokens: req.max_tokens,
            max_completion_tokens: req.max_completion_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            stop: req.stop.as_ref(),
            tools: req.tools.as_deref(),
            tool_choice: req.tool_choice.as_ref(),
            response_format: req.response_format.as_ref(),
            seed: req.seed,
            extra: Extra(&req.extra),
        }
    }
}

fn digest(domain: &[u8], view: &KeyView<'_>) -> Option<String> {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    serde_json::to_writer(&mut hasher, view).ok()?;
    Some(crate::store::hex(&hasher.finalize()))
}

/// The exact-cache key of a chat request.
pub fn exact(req: &ChatRequest) -> Option<String> {
    digest(b"exact\n", &KeyView::new(req, &req.messages))
}

/// The semantic cache's view of a request: the partition (a hash of everything but the last
/// user message) and that message's text. `None` when the last message is not a plain user
/// text (tool results, images): such requests are only cached exactly.
pub fn semantic(req: &ChatRequest) -> Option<(String, String)> {
    let (last, context) = req.messages.split_last()?;
    if last.role != Role::User || last.tool_calls.is_some() {
        return None;
    }
    let text = match last.content.as_ref()? {
        MessageContent::Text(t) => t.clone(),
        MessageContent::Parts(parts) if parts.iter().all(|p| p.kind == "text") => {
            MessageContent::Parts(parts.clone()).text()
        }
        MessageContent::Parts(_) => return None,
    };
    Some((digest(b"semantic\n", &KeyView::new(req, context))?, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ChatRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn order_whitespace_and_delivery_fields_do_not_matter() {
        let a =
            req(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#);
        let b = req(r#"{ "temperature" : 0.50, "stream": true, "user": "u1",
                         "stream_options": {"include_usage": true},
                         "metadata": {"team": "x"}, "store": true,
                         "messages": [ {"content":"hi", "role":"user"} ], "model":"m" }"#);
        assert_eq!(exact(&a), exact(&b));
        // Unknown fields, nested objects included, are compared as data, not as text.
        assert_eq!(
            exact(&req(
                r#"{"model":"m","messages":[],"logit_bias":{"2":1,"1":2},"x":{"b":[1,{"d":1,"c":2}],"a":0}}"#
            )),
            exact(&req(
                r#"{"x":{"a":0,"b":[1,{"c":2,"d":1}]},"logit_bias":{"1":2,"2":1},"messages":[],"model":"m"}"#
            ))
        );
        for changed in [
            r#"{"model":"m2","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.6}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"seed":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"max_tokens":9}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"logit_bias":{"1":2}}"#,
        ] {
            assert_ne!(exact(&a), exact(&req(changed)), "{changed}");
        }
    }

    #[test]
    fn the_semantic_partition_ignores_only_the_last_user_message() {
        let a = req(
            r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"What is the capital of France?"}]}"#,
        );
        let b = req(
            r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"Tell me France's capital"}]}"#,
        );
        let c = req(
            r#"{"model":"m","messages":[{"role":"system","content":"t"},{"role":"user","content":"Tell me France's capital"}]}"#,
        );
        let (pa, ta) = semantic(&a).unwrap();
        let (pb, _) = semantic(&b).unwrap();
        assert_eq!(pa, pb);
        assert_ne!(pa, semantic(&c).unwrap().0);
        assert_eq!(ta, "What is the capital of France?");
        assert_ne!(
            Some(pa),
            exact(&a),
            "partitions and exact keys never collide"
        );
        let tool =
            req(r#"{"model":"m","messages":[{"role":"tool","content":"r","tool_call_id":"x"}]}"#);
        assert!(semantic(&tool).is_none());
    }
}

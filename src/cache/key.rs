//! Cache keys. An answer may be reused only for a request that would produce the same answer:
//! the key covers the model and every field that changes the answer (messages, tools,
//! `temperature`, `top_p`, `max_tokens`, `response_format`, `seed`, `stop`, penalties, unknown
//! fields...),
//! in canonical JSON (sorted keys, no whitespace) so key order and formatting do not matter.
//! Left out: fields that only change the delivery (`stream`, `stream_options`) or bookkeeping
//! (`user`, `metadata`, `store`). The tenant is not in the hash: every store key already sits
//! under the tenant.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::openai::chat::{ChatRequest, MessageContent, Role};

/// Request fields that do not change the answer.
const IGNORED: [&str; 5] = ["stream", "stream_options", "user", "metadata", "store"];

fn canonical(req: &ChatRequest) -> Option<serde_json::Map<String, Value>> {
    let Ok(Value::Object(mut map)) = serde_json::to_value(req) else {
        return None;
    };
    for field in IGNORED {
        map.remove(field);
    }
    Some(map)
}

fn digest(value: &Value) -> String {
    crate::store::hex(&Sha256::digest(value.to_string().as_bytes()))
}

/// The exact-cache key of a chat request.
pub fn exact(req: &ChatRequest) -> Option<String> {
    canonical(req).map(|m| digest(&Value::Object(m)))
}

/// The semantic cache's view of a request: the partition (a hash of everything but the last
/// user message) and that message's text. `None` when the last message is not a plain user
/// text (tool results, images): such requests are only cached exactly.
pub fn semantic(req: &ChatRequest) -> Option<(String, String)> {
    let last = req.messages.last()?;
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
    let mut map = canonical(req)?;
    if let Some(Value::Array(messages)) = map.get_mut("messages") {
        messages.pop();
    }
    map.insert("semantic".into(), Value::Bool(true));
    Some((digest(&Value::Object(map)), text))
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
                         "messages": [ {"content":"hi", "role":"user"} ], "model":"m" }"#);
        assert_eq!(exact(&a), exact(&b));
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

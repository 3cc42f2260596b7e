//! A cached answer: the complete chat completion (OpenAI's JSON, as a client received it) and
//! what it cost, encoded compactly (LZ4 above 1 KiB) for the store; rebuilt from a finished
//! stream; replayed as SSE to a streaming client.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::openai::usage::Usage;

/// Bodies above this are compressed.
const COMPRESS_ABOVE: usize = 1024;
/// Encoding version (first byte).
const VERSION: u8 = 1;
const FLAG_LZ4: u8 = 1;
/// Largest answer cached (bytes, uncompressed).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Characters per replayed content chunk: small enough to look like a stream, large enough
/// not to waste frames.
const REPLAY_CHUNK_CHARS: usize = 32;

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    /// What the answer cost when it was produced (what a hit saves), nano-USD.
    pub cost_nano: i64,
    /// The `chat.completion` JSON.
    pub body: Bytes,
}

impl CachedAnswer {
    /// `[version][flags][cost: i64 LE][body, LZ4 with its size prepended when flagged]`.
    pub fn encode(&self) -> Vec<u8> {
        let compress = self.body.len() > COMPRESS_ABOVE;
        let payload = if compress {
            lz4_flex::compress_prepend_size(&self.body)
        } else {
            self.body.to_vec()
        };
        let mut out = Vec::with_capacity(payload.len() + 10);
        out.push(VERSION);
        out.push(if compress { FLAG_LZ4 } else { 0 });
        out.extend_from_slice(&self.cost_nano.to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes [`CachedAnswer::encode`]'s bytes; `None` for anything else (a miss, never a
    /// panic).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        let (&flags, rest) = rest.split_first()?;
        if version != VERSION || rest.len() < 8 {
            return None;
        }
        let (cost, payload) = rest.split_at(8);
        let cost_nano = i64::from_le_bytes(cost.try_into().ok()?);
        let body = if flags & FLAG_LZ4 != 0 {
            lz4_flex::decompress_size_prepended(payload)
                .ok()
                .filter(|b| b.len() <= MAX_ANSWER_BYTES)?
        } else {
            payload.to_vec()
        };
        Some(Self {
            cost_nano,
            body: Bytes::from(body),
        })
    }
}

/// The `chat.completion` a finished text stream amounts to.
pub fn from_stream(
    id: &str,
    model: &str,
    text: &str,
    finish_reason: Option<&str>,
    usage: Option<&Usage>,
) -> Bytes {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut answer = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason.unwrap_or("stop"),
        }],
    });
    if let (Some(usage), Some(map)) = (usage, answer.as_object_mut()) {
        map.insert("usage".into(), json!(usage));
    }
    Bytes::from(answer.to_string())
}

/// `data: <json>\n\n`.
fn event(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Splits `text` into pieces of about [`REPLAY_CHUNK_CHARS`] characters, at char boundaries.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in text.char_indices() {
        if count == REPLAY_CHUNK_CHARS {
            out.push(&text[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Replays a cached completion as a `chat.completion.chunk` stream: a role chunk, content
/// chunks, tool calls (whole, in one chunk), the finish chunk, the usage chunk when the client
/// asked for it, and `data: [DONE]`. `None` if the cached body is not a chat completion.
pub fn replay_sse(body: &[u8], include_usage: bool) -> Option<Bytes> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    let id = answer.get("id")?.clone();
    let model = answer.get("model")?.clone();
    let created = answer.get("created").cloned().unwrap_or(json!(0));
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
    let mut out = Vec::with_capacity(body.len() * 2);
    for choice in answer.get("choices")?.as_array()? {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let message = choice.get("message")?;
        event(
            &mut out,
            &chunk(
                json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            ),
        );
        if let Some(text) = message.get("content").and_then(Value::as_str) {
            for piece in pieces(text) {
                event(
                    &mut out,
                    &chunk(
                        json!([{"index": index, "delta": {"content": piece}, "finish_reason": null}]),
                    ),
                );
            }
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let deltas: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({"index": i, "id": c.get("id"), "type": "function", "function": c.get("function")})
                })
                .collect();
            event(
                &mut out,
                &chunk(
                    json!([{"index": index, "delta": {"tool_calls": deltas}, "finish_reason": null}]),
                ),
            );
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        event(
            &mut out,
            &chunk(json!([{"index": index, "delta": {}, "finish_reason": finish}])),
        );
    }
    if include_usage {
        let mut last = chunk(json!([]));
        if let Some(map) = last.as_object_mut() {
            map.insert(
                "usage".into(),
                answer.get("usage").cloned().unwrap_or(Value::Null),
            );
        }
        event(&mut out, &last);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_small_and_large_and_refuses_junk() {
        for body in ["{\"a\":1}".to_owned(), "x".repeat(50_000)] {
            let a = CachedAnswer {
                cost_nano: 123_456,
                body: Bytes::from(body.clone()),
            };
            let enc = a.encode();
            if body.len() > COMPRESS_ABOVE {
                assert!(enc.len() < body.len() / 10, "compressed");
            }
            assert_eq!(CachedAnswer::decode(&enc), Some(a));
        }
        for junk in [
            &b""[..],
            b"\x01",
            b"\x02\x00aaaaaaaa",
            b"\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00zz",
        ] {
            assert!(CachedAnswer::decode(junk).is_none());
        }
    }

    #[test]
    fn replays_are_valid_chunk_streams() {
        let body = from_stream(
            "chatcmpl-1",
            "m",
            "Hello there, this is a reply long enough to need several chunks. ✓",
            Some("stop"),
            Some(&Usage {
                prompt_tokens: 5,
                completion_tokens: 12,
                total_tokens: 17,
                ..Usage::default()
            }),
        );
        let sse = String::from_utf8(replay_sse(&body, true).unwrap().to_vec()).unwrap();
        assert!(sse.ends_with("data: [DONE]\n\n"));
        let mut text = String::new();
        let mut saw_usage = false;
        for data in sse.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
            if data == "[DONE]" {
                continue;
            }
            let chunk: crate::openai::chat::ChatCompletionChunk =
                serde_json::from_str(data).unwrap();
            assert_eq!(chunk.object, "chat.completion.chunk");
            for c in &chunk.choices {
                text.push_str(c.delta.content.as_deref().unwrap_or(""));
            }
            saw_usage |= chunk.usage.is_some_and(|u| u.total_tokens == 17);
        }
        assert!(text.starts_with("Hello there") && text.ends_with('✓'));
        assert!(saw_usage);
        let without = String::from_utf8(replay_sse(&body, false).unwrap().to_vec()).unwrap();
        assert!(!without.contains("\"usage\""));
    }
}

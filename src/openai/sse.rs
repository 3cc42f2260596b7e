//! Observing an OpenAI SSE stream as it passes through.
//!
//! [`SseObserver::observe`] takes each frame from the upstream and returns the bytes to send
//! on. Complete events go out at once; only an event split across frames waits for its end.
//! Frames whose events need no change are returned as the same `Bytes` (no copy). The
//! observer notes the first token, the usage chunk and `data: [DONE]`, and removes the usage
//! chunk when the gateway asked for it on the client's behalf.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde::Deserialize;

use super::usage::Usage;

/// What the observer has seen so far.
#[derive(Debug)]
pub struct SseObserver {
    strip_usage: bool,
    pending: BytesMut,
    usage: Option<Usage>,
    done: bool,
    first_token_at: Option<Instant>,
    saw_error: bool,
    content_chunks: u64,
    /// The assembled answer, when asked for ([`SseObserver::collect_text`]).
    text: Option<Assembled>,
}

/// Longest assembled text kept (bytes); the rest is not needed by anyone who asks.
const MAX_TEXT: usize = 256 * 1024;

#[derive(Deserialize)]
struct TextChunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<TextChoice>,
}

#[derive(Deserialize)]
struct TextChoice {
    #[serde(default)]
    delta: Option<TextDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// What a collected stream amounted to (see [`SseObserver::collect_text`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assembled {
    pub id: Option<String>,
    pub model: Option<String>,
    pub text: String,
    pub finish_reason: Option<String>,
    /// Tool calls went by: the text alone is not the whole answer.
    pub tool_calls: bool,
}

#[derive(Deserialize)]
struct TextDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct UsageChunk {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Vec<serde::de::IgnoredAny>,
}

impl SseObserver {
    /// `strip_usage`: drop the final usage-only chunk (the client did not ask for it).
    pub fn new(strip_usage: bool) -> Self {
        Self {
            strip_usage,
            pending: BytesMut::new(),
            usage: None,
            done: false,
            first_token_at: None,
            saw_error: false,
            content_chunks: 0,
            text: None,
        }
    }

    /// Usage reported by the upstream, if any.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Also assembles the streamed `delta.content` (costs a parse per content chunk, so only
    /// when someone needs the text: the judge, the cache).
    pub fn collect_text(&mut self) {
        self.text.get_or_insert_with(Assembled::default);
    }

    /// The assembled answer, if collecting.
    pub fn take_text(&mut self) -> Option<Assembled> {
        self.text.take()
    }

    /// Chunks that carried generated content: about one token each, the estimate of the
    /// completion when the upstream reports no usage.
    pub fn content_chunks(&self) -> u64 {
        self.content_chunks
    }

    /// Whether `data: [DONE]` went by.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether an `{"error": ...}` event went by.
    pub fn saw_error(&self) -> bool {
        self.saw_error
    }

    /// When the first content or tool-call token went by.
    pub fn first_token_at(&self) -> Option<Instant> {
        self.first_token_at
    }

    /// Feeds one upstream frame; returns what to send to the client now.
    pub fn observe(&mut self, frame: Bytes) -> Bytes {
        if self.pending.is_empty() {
            let complete = last_event_end(&frame);
            if complete == frame.len() {
                return self.pass_events(frame);
            }
            let mut out = frame;
            let tail = out.split_off(complete);
            self.pending.extend_from_slice(&tail);
            return if out.is_empty() {
                out
            } else {
                self.pass_events(out)
            };
        }
        self.pending.extend_from_slice(&frame);
        let complete = last_event_end(&self.pending);
        if complete == 0 {
            return Bytes::new();
        }
        let ready = self.pending.split_to(complete).freeze();
        self.pass_events(ready)
    }

    /// The upstream ended: whatever incomplete event is left goes out as it is.
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending).freeze();
        if !rest.is_empty() {
            self.inspect(&rest);
        }
        rest
    }

    /// Inspects complete events; returns them, minus a stripped usage chunk.
    fn pass_events(&mut self, events: Bytes) -> Bytes {
        // Usually no usage chunk, or one; `Vec::new` does not allocate until a push.
        let mut strip: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        while start < events.len() {
            let end = next_event_end(&events[start..]).map_or(events.len(), |e| start + e);
            let event = &events[start..end];
            if self.inspect(event) && self.strip_usage {
                strip.push((start, end));
            }
            start = end;
        }
        if strip.is_empty() {
            return events;
        }
        let mut out = BytesMut::with_capacity(events.len());
        let mut kept_from = 0;
        for (s, e) in strip {
            out.extend_from_slice(&events[kept_from..s]);
            kept_from = e;
        }
        out.extend_from_slice(&events[kept_from..]);
        out.freeze()
    }

    /// Notes what one event says; returns true if it is a usage-only chunk.
    fn inspect(&mut self, event: &[u8]) -> bool {
        let Some(data) = event_data(event) else {
            return false;
        };
        if data == b"[DONE]" {
            self.done = true;
            return false;
        }
        if let Some(acc) = self.text.as_mut().filter(|t| t.text.len() < MAX_TEXT) {
            if memmem::find(data, b"\"choices\"").is_some() {
                if let Ok(chunk) = serde_json::from_slice::<TextChunk>(data) {
                    acc.id = acc.id.take().or(chunk.id);
                    acc.model = acc.model.take().or(chunk.model);
                    for choice in &chunk.choices {
                        if let Some(piece) =
                            choice.delta.as_ref().and_then(|d| d.content.as_deref())
                        {
                            acc.text.push_str(piece);
                        }
                        if choice.finish_reason.is_some() {
                            acc.finish_reason.clone_from(&choice.finish_reason);
                        }
                    }
                }
            }
            if memmem::find(data, b"\"tool_calls\"").is_some() {
                acc.tool_calls = true;
            }
        }
        if has_token(data) {
            self.content_chunks += 1;
            if self.first_token_at.is_none() {
                self.first_token_at = Some(Instant::now());
            }
        }
        if data.starts_with(b"{\"error\"") {
            self.saw_error = true;
            return false;
        }
        if memmem::find(data, b"\"usage\"").is_none() {
            return false;
        }
        match serde_json::from_slice::<UsageChunk>(data) {
            Ok(UsageChunk {
                usage: Some(usage),
                choices,
            }) => {
                self.usage = Some(usage);
                choices.is_empty()
            }
            _ => false,
        }
    }
}

/// Does this chunk carry generated content (non-empty `content` or a tool call)?
fn has_token(data: &[u8]) -> bool {
    if memmem::find(data, b"\"tool_calls\"").is_some() {
        return true;
    }
    let mut rest = data;
    while let Some(at) = memmem::find(rest, b"\"content\"") {
        rest = &rest[at + 9..];
        let after = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b':'))
            .map(|i| &rest[i..]);
        if let Some(value) = after {
            if value.starts_with(b"\"") && !value.starts_with(b"\"\"") {
                return true;
            }
        }
    }
    false
}

/// Index just past the last complete event (after its blank line), or 0.
fn last_event_end(buf: &[u8]) -> usize {
    let lf = memmem::rfind(buf, b"\n\n").map_or(0, |i| i + 2);
    let crlf = memmem::rfind(buf, b"\r\n\r\n").map_or(0, |i| i + 4);
    lf.max(crlf)
}

/// Index just past the first event's blank line.
fn next_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `data:` payload of an event (single-line data, as OpenAI sends).
fn event_data(event: &[u8]) -> Option<&[u8]> {
    event
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"data:"))
        .map(|d| d.strip_prefix(b" ").unwrap_or(d))
        .map(|d| d.strip_suffix(b"\r").unwrap_or(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(strip: bool, split: usize) -> (String, SseObserver) {
        let mut obs = SseObserver::new(strip);
        let mut out = Vec::new();
        for piece in STREAM.as_bytes().chunks(split) {
            out.extend_from_slice(&obs.observe(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&obs.finish());
        (String::from_utf8(out).unwrap(), obs)
    }

    #[test]
    fn passes_everything_and_reads_usage_at_any_split() {
        for split in [1, 2, 7, 33, 100, STREAM.len()] {
            let (out, obs) = run(false, split);
            assert_eq!(out, STREAM, "split {split}");
            assert_eq!(obs.usage().unwrap().total_tokens, 7);
            assert!(obs.is_done());
            assert!(obs.first_token_at().is_some());
        }
    }

    #[test]
    fn strips_only_the_usage_chunk() {
        for split in [1, 5, 64, STREAM.len()] {
            let (out, obs) = run(true, split);
            assert!(!out.contains("\"total_tokens\""), "split {split}: {out}");
            assert!(out.ends_with("data: [DONE]\n\n"));
            assert_eq!(out.matches("data: ").count(), 5);
            assert_eq!(obs.usage().unwrap().prompt_tokens, 5);
        }
    }

    #[test]
    fn whole_frames_are_not_copied() {
        let mut obs = SseObserver::new(false);
        let frame =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n");
        let out = obs.observe(frame.clone());
        assert_eq!(out.as_ptr(), frame.as_ptr());
    }

    #[test]
    fn empty_role_chunk_is_not_a_token() {
        assert!(!has_token(
            br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(has_token(br#"{"choices":[{"delta":{"content": "a"}}]}"#));
        assert!(has_token(br#"{"choices":[{"delta":{"tool_calls":[]}}]}"#));
    }

    #[test]
    fn cut_stream_is_flushed_and_not_done() {
        let mut obs = SseObserver::new(true);
        let out = obs.observe(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"cho",
        ));
        assert!(out.ends_with(b"\n\n"));
        assert_eq!(&obs.finish()[..], b"data: {\"cho");
        assert!(!obs.is_done());
    }
}

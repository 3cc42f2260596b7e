//! Anthropic's dialect: `POST /v1/messages`, streamed (Anthropic's named SSE events) or not.
//! Errors use Anthropic's shape on this endpoint.

use std::borrow::Cow;

use http::{HeaderMap, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::TOOL_ARGUMENTS;
use super::service::{answer, anthropic_error, invalid_body, Body, Dialect, Shared};
use super::stream::SseBuilder;
use super::text::{self, TOKENS_PER_MESSAGE};

/// A `system` containing this text makes the answer report prompt-cache tokens.
pub const CACHE_TEST_MARKER: &str = "cache-test";
/// `cache_read_input_tokens` reported when the system prompt carries [`CACHE_TEST_MARKER`].
pub const CACHE_READ_TOKENS: u64 = 10;
/// `cache_creation_input_tokens` reported when the system prompt carries [`CACHE_TEST_MARKER`].
pub const CACHE_CREATION_TOKENS: u64 = 5;

// === requests ===

#[derive(Deserialize)]
struct MessagesIn<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(borrow)]
    messages: Vec<MessageIn<'a>>,
    #[serde(default, borrow)]
    system: Option<ContentIn<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<ToolIn>>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: ContentIn<'a>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ContentIn<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Blocks(#[serde(borrow)] Vec<BlockIn<'a>>),
}

#[derive(Deserialize)]
struct BlockIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolIn {
    name: String,
}

impl ContentIn<'_> {
    fn texts(&self) -> impl Iterator<Item = &str> {
        let (one, blocks) = match self {
            Self::Text(text) => (Some(&**text), &[][..]),
            Self::Blocks(blocks) => (None, &blocks[..]),
        };
        one.into_iter()
            .chain(blocks.iter().filter_map(|b| b.text.as_deref()))
    }

    fn text(&self) -> String {
        self.texts().collect::<Vec<_>>().join("\n")
    }

    fn words(&self) -> u64 {
        self.texts().map(text::words).sum()
    }

    fn has_tool_result(&self) -> bool {
        matches!(self, Self::Blocks(blocks) if blocks.iter().any(|b| b.kind == "tool_result"))
    }
}

impl MessagesIn<'_> {
    fn input_tokens(&self) -> u64 {
        let system = self.system.as_ref().map_or(0, ContentIn::words);
        system
            + self
                .messages
                .iter()
                .map(|m| m.content.words() + TOKENS_PER_MESSAGE)
                .sum::<u64>()
    }

    /// The tool to call: the first one, when tools are offered, the user spoke last (and not
    /// only to hand back a tool result), and `tool_choice` is not `none`.
    fn tool_to_call(&self) -> Option<&str> {
        let last = self.messages.last()?;
        let fresh_question = last.role == "user" && !last.content.has_tool_result();
        let choice = self
            .tool_choice
            .as_ref()
            .and_then(|c| c.get("type"))
            .and_then(Value::as_str);
        if !fresh_question || choice == Some("none") {
            return None;
        }
        self.tools.as_deref()?.first().map(|t| t.name.as_str())
    }

    fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or_else(String::new, |m| m.content.text())
    }

    fn cache_test(&self) -> bool {
        self.system
            .as_ref()
            .is_some_and(|s| s.texts().any(|t| t.contains(CACHE_TEST_MARKER)))
    }
}

// === answers ===

#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [BlockOut<'a>],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: UsageOut,
}

#[derive(Serialize)]
#[expect(clippy::struct_field_names, reason = "Anthropic's wire names")]
struct UsageOut {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaOut<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct StopOut {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct OutputUsageOut {
    output_tokens: u64,
}

/// Anthropic's stream events; the SSE `event:` name is the `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventOut<'a> {
    MessageStart {
        message: MessageOut<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: BlockOut<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: u32,
        delta: DeltaOut<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopOut,
        usage: OutputUsageOut,
    },
    MessageStop,
}

impl EventOut<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::Ping => "ping",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }
}

/// What the mock answers: text, or a call to the named tool.
enum Reply<'a> {
    Text(String),
    Tool { name: &'a str, id: String },
}

impl Reply<'_> {
    fn output_tokens(&self) -> u64 {
        match self {
            Self::Text(text) => text::words(text),
            Self::Tool { name, .. } => text::words(name) + text::words(TOOL_ARGUMENTS),
        }
    }

    fn stop_reason(&self) -> &'static str {
        match self {
            Self::Text(_) => "end_turn",
            Self::Tool { .. } => "tool_use",
        }
    }

    /// The content block, empty (`text: ""`, `input: {}`) when it opens a stream.
    fn block(&self, opening: bool) -> BlockOut<'_> {
        match self {
            Self::Text(text) => BlockOut::Text {
                text: if opening { "" } else { text },
            },
            Self::Tool { name, id } => BlockOut::ToolUse {
                id,
                name,
                input: Empty {},
            },
        }
    }
}

/// `POST /v1/messages`.
pub fn messages(
    shared: &Shared,
    seq: &str,
    headers: &HeaderMap,
    body: &[u8],
    malformed: bool,
) -> Response<Body> {
    if !headers.contains_key("anthropic-version") {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let request: MessagesIn<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_body(Dialect::Anthropic, &err),
    };
    let Some(model) = request.model.as_deref() else {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: Field required",
        );
    };
    let id = format!("msg_mock_{seq}");
    let reply = match request.tool_to_call() {
        Some(name) => Reply::Tool {
            name,
            id: format!("toolu_mock_{seq}"),
        },
        None => Reply::Text(text::reply(
            shared.options.reply.as_deref(),
            &request.last_user_text(),
        )),
    };
    let (cache_read, cache_creation) = if request.cache_test() {
        (CACHE_READ_TOKENS, CACHE_CREATION_TOKENS)
    } else {
        (0, 0)
    };
    let usage = |output_tokens| UsageOut {
        input_tokens: request.input_tokens(),
        output_tokens,
        cache_read_input_tokens: cache_read,
        cache_creation_input_tokens: cache_creation,
    };

    if !request.stream.unwrap_or(false) {
        let content = [reply.block(false)];
        let message = MessageOut {
            id: &id,
            kind: "message",
            role: "assistant",
            model,
            content: &content,
            stop_reason: Some(reply.stop_reason()),
            stop_sequence: None,
            usage: usage(reply.output_tokens()),
        };
        return answer(&message, malformed);
    }

    let start = MessageOut {
        id: &id,
        kind: "message",
        role: "assistant",
        model,
        content: &[],
        stop_reason: None,
        stop_sequence: None,
        usage: usage(1),
    };
    match events(start, &reply, shared.options.chunks, malformed) {
        Ok(events) => shared.sse(events),
        Err(err) => anthropic_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            &err.to_string(),
        ),
    }
}

fn events(
    start: MessageOut<'_>,
    reply: &Reply<'_>,
    content_chunks: usize,
    malformed: bool,
) -> Result<SseBuilder, serde_json::Error> {
    let mut events = SseBuilder::new();
    let push =
        |events: &mut SseBuilder, event: &EventOut<'_>| events.event(Some(event.name()), event);

    push(&mut events, &EventOut::MessageStart { message: start })?;
    if malformed {
        events.raw(b"event: content_block_delta\ndata: {not json\n\n");
        return Ok(events);
    }
    push(
        &mut events,
        &EventOut::ContentBlockStart {
            index: 0,
            content_block: reply.block(true),
        },
    )?;
    push(&mut events, &EventOut::Ping)?;
    let deltas: Vec<DeltaOut<'_>> = match reply {
        Reply::Text(text) => text::pieces(text, content_chunks)
            .into_iter()
            .map(|text| DeltaOut::TextDelta { text })
            .collect(),
        Reply::Tool { .. } => text::pieces(TOOL_ARGUMENTS, TOOL_ARGUMENTS.chars().count())
            .into_iter()
            .map(|partial_json| DeltaOut::InputJsonDelta { partial_json })
            .collect(),
    };
    for delta in deltas {
        push(
            &mut events,
            &EventOut::ContentBlockDelta { index: 0, delta },
        )?;
        events.first_content_sent();
    }
    push(&mut events, &EventOut::ContentBlockStop { index: 0 })?;
    let delta = StopOut {
        stop_reason: reply.stop_reason(),
        stop_sequence: None,
    };
    push(
        &mut events,
        &EventOut::MessageDelta {
            delta,
            usage: OutputUsageOut {
                output_tokens: reply.output_tokens(),
            },
        },
    )?;
    push(&mut events, &EventOut::MessageStop)?;
    Ok(events)
}

//! `POST /v1/chat/completions` (and Azure's deployment path), streamed or not.
//!
//! Requests are read into small borrowing structs that keep only what the mock needs; answers
//! are written from borrowing structs, so an answer costs one serialisation and no `Value`
//! trees.

use std::borrow::Cow;

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::service::{answer, invalid_body, openai_error, Body, Dialect, Shared};
use super::stream::SseBuilder;
use super::text::{self, TOKENS_PER_MESSAGE};

/// Arguments of every mock tool call.
pub const TOOL_ARGUMENTS: &str = "{}";

// === requests ===

#[derive(Deserialize)]
struct ChatIn<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(borrow)]
    messages: Vec<MessageIn<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptionsIn>,
    #[serde(default, borrow)]
    tools: Option<Vec<ToolIn<'a>>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    /// Test hook: answer with this client-error status instead of a completion.
    #[serde(default)]
    mock_status: Option<u16>,
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Option<ContentIn<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ContentIn<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<PartIn<'a>>),
}

#[derive(Deserialize)]
struct PartIn<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct StreamOptionsIn {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ToolIn<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionIn<'a>>,
}

#[derive(Deserialize)]
struct FunctionIn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

impl ContentIn<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text),
            Self::Parts(parts) => Cow::Owned(
                parts
                    .iter()
                    .filter_map(|p| p.text.as_deref())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }

    fn words(&self) -> u64 {
        match self {
            Self::Text(text) => text::words(text),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .map(text::words)
                .sum(),
        }
    }
}

impl ChatIn<'_> {
    fn prompt_tokens(&self) -> u64 {
        self.messages
            .iter()
            .map(|m| m.content.as_ref().map_or(0, ContentIn::words) + TOKENS_PER_MESSAGE)
            .sum()
    }

    fn last_user_text(&self) -> Cow<'_, str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .and_then(|m| m.content.as_ref())
            .map_or(Cow::Borrowed(""), ContentIn::text)
    }

    /// The tool to call: the first one, when tools are offered, the user spoke last and
    /// `tool_choice` is not `"none"`.
    fn tool_to_call(&self) -> Option<&str> {
        let user_last = self.messages.last().is_some_and(|m| m.role == "user");
        let allowed = self.tool_choice.as_ref().and_then(Value::as_str) != Some("none");
        if !(user_last && allowed) {
            return None;
        }
        self.tools
            .as_deref()?
            .iter()
            .find_map(|t| t.function.as_ref())
            .map(|f| &*f.name)
    }
}

// === answers ===

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
}

impl UsageOut {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptDetails { cached_tokens: 0 },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
            },
        }
    }
}

#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: UsageOut,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoiceOut<'a>],
    #[serde(skip_serializing_if = "ChunkUsage::is_omitted")]
    usage: ChunkUsage,
}

/// `usage` on a chunk: left out unless the client asked for usage; then `null` on every
/// chunk but the last, which carries the counts.
enum ChunkUsage {
    Omitted,
    Null,
    Counts(UsageOut),
}

impl ChunkUsage {
    fn is_omitted(&self) -> bool {
        matches!(self, Self::Omitted)
    }
}

impl Serialize for ChunkUsage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Counts(usage) => usage.serialize(serializer),
            Self::Omitted | Self::Null => serializer.serialize_none(),
        }
    }
}

#[derive(Serialize)]
struct ChunkChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Default, Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDeltaOut<'a>; 1]>,
}

impl<'a> DeltaOut<'a> {
    fn role(content: Option<&'a str>) -> Self {
        Self {
            role: Some("assistant"),
            content,
            tool_calls: None,
        }
    }

    fn content(piece: &'a str) -> Self {
        Self {
            content: Some(piece),
            ..Self::default()
        }
    }

    /// A tool-call fragment; the first one names the call (`(id, function name)`).
    fn tool_call(head: Option<(&'a str, &'a str)>, arguments: &'a str) -> Self {
        let call = ToolCallDeltaOut {
            index: 0,
            id: head.map(|(id, _)| id),
            kind: head.map(|_| "function"),
            function: FunctionDeltaOut {
                name: head.map(|(_, name)| name),
                arguments,
            },
        };
        Self {
            tool_calls: Some([call]),
            ..Self::default()
        }
    }
}

#[derive(Serialize)]
struct ToolCallDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaOut<'a>,
}

#[derive(Serialize)]
struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// What the mock answers: text, or a call to the named tool.
enum Reply<'a> {
    Text(String),
    Tool { name: &'a str, call_id: String },
}

impl Reply<'_> {
    fn completion_tokens(&self) -> u64 {
        match self {
            Self::Text(text) => text::words(text),
            Self::Tool { name, .. } => text::words(name) + text::words(TOOL_ARGUMENTS),
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self {
            Self::Text(_) => "stop",
            Self::Tool { .. } => "tool_calls",
        }
    }
}

/// Everything an answer repeats: the id, timestamp, model and token counts.
struct Envelope<'a> {
    id: String,
    created: u64,
    model: &'a str,
    prompt_tokens: u64,
}

/// `POST /v1/chat/completions` (and Azure's deployment path).
pub fn chat(
    shared: &Shared,
    seq: &str,
    deployment: Option<&str>,
    body: &[u8],
    malformed: bool,
) -> Response<Body> {
    let request: ChatIn<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_body(Dialect::OpenAi, &err),
    };
    let Some(model) = deployment.or(request.model.as_deref()) else {
        return missing_model();
    };
    if let Some(status) = request
        .mock_status
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        return openai_error(
            status,
            "invalid_request_error",
            Some("mock_status"),
            "refused on request (mock_status)",
        );
    }
    let envelope = Envelope {
        id: format!("chatcmpl-mock-{seq}"),
        created: Shared::now(),
        model,
        prompt_tokens: request.prompt_tokens(),
    };
    let reply = match request.tool_to_call() {
        Some(name) => Reply::Tool {
            name,
            call_id: format!("call_mock_{seq}"),
        },
        None => Reply::Text(text::reply(
            shared.options.reply.as_deref(),
            &request.last_user_text(),
        )),
    };
    if !request.stream.unwrap_or(false) {
        return answer(&completion(&envelope, &reply), malformed);
    }
    let include_usage = request
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    match chunks(
        &envelope,
        &reply,
        include_usage,
        shared.options.chunks,
        malformed,
    ) {
        Ok(events) => shared.sse(events),
        Err(err) => openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            &err.to_string(),
        ),
    }
}

fn completion<'a>(envelope: &'a Envelope<'a>, reply: &'a Reply<'a>) -> CompletionOut<'a> {
    let message = match reply {
        Reply::Text(text) => MessageOut {
            role: "assistant",
            content: Some(text),
            tool_calls: None,
            refusal: None,
        },
        Reply::Tool { name, call_id } => MessageOut {
            role: "assistant",
            content: None,
            tool_calls: Some([ToolCallOut {
                id: call_id,
                kind: "function",
                function: FunctionOut {
                    name,
                    arguments: TOOL_ARGUMENTS,
                },
            }]),
            refusal: None,
        },
    };
    CompletionOut {
        id: &envelope.id,
        object: "chat.completion",
        created: envelope.created,
        model: envelope.model,
        choices: [ChoiceOut {
            index: 0,
            message,
            logprobs: None,
            finish_reason: reply.finish_reason(),
        }],
        usage: UsageOut::new(envelope.prompt_tokens, reply.completion_tokens()),
    }
}

/// Writes the `chat.completion.chunk` events of one answer.
struct ChunkWriter<'a> {
    envelope: &'a Envelope<'a>,
    include_usage: bool,
    events: SseBuilder,
}

impl ChunkWriter<'_> {
    fn push(
        &mut self,
        delta: DeltaOut<'_>,
        finish_reason: Option<&'static str>,
    ) -> Result<(), serde_json::Error> {
        let choices = [ChunkChoiceOut {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        let usage = if self.include_usage {
            ChunkUsage::Null
        } else {
            ChunkUsage::Omitted
        };
        self.events
            .event(None, &chunk(self.envelope, &choices, usage))
    }
}

/// The SSE events of a streamed answer.
fn chunks(
    envelope: &Envelope<'_>,
    reply: &Reply<'_>,
    include_usage: bool,
    content_chunks: usize,
    malformed: bool,
) -> Result<SseBuilder, serde_json::Error> {
    let mut out = ChunkWriter {
        envelope,
        include_usage,
        events: SseBuilder::new(),
    };
    // OpenAI leaves `content` out of the role chunk of a tool call.
    let content = matches!(reply, Reply::Text(_)).then_some("");
    out.push(DeltaOut::role(content), None)?;
    if malformed {
        out.events.raw(b"data: {not json\n\n");
        return Ok(out.events);
    }
    match reply {
        Reply::Text(text) => {
            for piece in text::pieces(text, content_chunks) {
                out.push(DeltaOut::content(piece), None)?;
                out.events.first_content_sent();
            }
        }
        Reply::Tool { name, call_id } => {
            out.push(DeltaOut::tool_call(Some((call_id, name)), ""), None)?;
            out.events.first_content_sent();
            // The arguments arrive in fragments, as a model streams them.
            for fragment in text::pieces(TOOL_ARGUMENTS, TOOL_ARGUMENTS.chars().count()) {
                out.push(DeltaOut::tool_call(None, fragment), None)?;
            }
        }
    }
    out.push(DeltaOut::default(), Some(reply.finish_reason()))?;
    if include_usage {
        let usage = UsageOut::new(envelope.prompt_tokens, reply.completion_tokens());
        out.events
            .event(None, &chunk(envelope, &[], ChunkUsage::Counts(usage)))?;
    }
    out.events.raw(b"data: [DONE]\n\n");
    Ok(out.events)
}

fn chunk<'a>(
    envelope: &'a Envelope<'a>,
    choices: &'a [ChunkChoiceOut<'a>],
    usage: ChunkUsage,
) -> ChunkOut<'a> {
    ChunkOut {
        id: &envelope.id,
        object: "chat.completion.chunk",
        created: envelope.created,
        model: envelope.model,
        choices,
        usage,
    }
}

/// The 400 for a request that names no model (outside Azure, where the deployment does).
pub fn missing_model() -> Response<Body> {
    openai_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        "you must provide a model parameter",
    )
}

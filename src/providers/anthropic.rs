//! Anthropic Messages API (`POST {base_url}/messages`, `anthropic-version: 2023-06-01`) spoken
//! on behalf of OpenAI clients.
//!
//! Sits in the proxy leaf. When a route's provider is Anthropic, the proxy turns the parsed
//! [`ChatRequest`] into a Messages body with [`to_messages_request`] and turns the answer back
//! into OpenAI's shapes: [`from_messages_response`] for a JSON body, [`StreamTranslator`] for an
//! SSE stream, [`error_type_and_message`] for an error body. Everything here is pure: no I/O, no
//! clock except `created`, and nothing the upstream sends can make it panic.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::openai::chat::{
    AssistantMessage, ChatCompletion, ChatMessage, ChatRequest, Choice, ChunkChoice, ContentPart,
    Delta, FunctionCall, FunctionCallDelta, MessageContent, Role, Stop, Tool, ToolCall,
    ToolCallDelta,
};
use crate::openai::usage::{PromptTokensDetails, Usage};

/// `max_tokens` sent when the client set no cap: Anthropic requires the field.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Largest single SSE event accepted from the upstream; a bigger one is treated as malformed
/// rather than buffered without bound.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// How much of a non-JSON error body is quoted back to the client.
const MAX_RAW_ERROR_CHARS: usize = 500;

/// Why a request or response could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The OpenAI request uses something the Messages API cannot express (the client's fault).
    #[error("the request cannot be sent to Anthropic: {0}")]
    Unsupported(String),
    /// The upstream sent a body or stream event that is not valid Messages API output.
    #[error("Anthropic sent a malformed response: {0}")]
    Malformed(String),
    /// The stream ended before `message_stop`.
    #[error("Anthropic's stream ended before message_stop")]
    Truncated,
    /// The upstream reported an error where a message was expected (e.g. an `error` event
    /// mid-stream). `kind` is Anthropic's error type, such as `overloaded_error`.
    #[error("Anthropic reported {kind}: {message}")]
    Upstream { kind: String, message: String },
}

fn unsupported(what: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported(what.into())
}

fn malformed(what: impl Into<String>) -> TranslateError {
    TranslateError::Malformed(what.into())
}

// === request ===

/// The Messages request body. Borrows from the [`ChatRequest`] wherever it can.
#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDefinition<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a Value>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: MessageRole,
    content: Vec<Block<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum MessageRole {
    User,
    Assistant,
}

/// A content block of a request message.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: Source<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Document {
        source: Source<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent<'a>>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolResultContent<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Serialize)]
struct ToolDefinition<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
}

#[derive(Serialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

/// Translates an OpenAI chat request into an Anthropic Messages request body.
///
/// `upstream_model` replaces `req.model`; `stream` in the output equals [`ChatRequest::is_stream`].
/// OpenAI-only options (`logit_bias`, `seed`, `response_format`, `stream_options`, penalties, ...)
/// are dropped; `top_k`, `metadata` and `thinking` in `extra` are passed through.
pub fn to_messages_request(
    req: &ChatRequest,
    upstream_model: &str,
) -> Result<Bytes, TranslateError> {
    check_single_choice(req)?;
    let (system, messages) = translate_messages(&req.messages)?;
    let tools = translate_tools(req.tools.as_deref())?;
    // Anthropic rejects a tool_choice without tools; OpenAI ignores it, so do we.
    let tool_choice = if tools.is_empty() {
        None
    } else {
        translate_tool_choice(
            req.tool_choice.as_ref(),
            req.extra.get("parallel_tool_calls"),
        )?
    };
    let stop_sequences = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.as_str()],
        Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
    };
    let body = MessagesRequest {
        model: upstream_model,
        max_tokens: req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        system,
        messages,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: passthrough(req, "top_k"),
        stop_sequences,
        stream: req.is_stream(),
        tools,
        tool_choice,
        metadata: metadata(req)?,
        thinking: passthrough(req, "thinking"),
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| unsupported(format!("the request could not be encoded: {e}")))
}

/// Anthropic answers with exactly one choice.
fn check_single_choice(req: &ChatRequest) -> Result<(), TranslateError> {
    match req.extra.get("n") {
        None | Some(Value::Null) => Ok(()),
        Some(n) if n.as_u64() == Some(1) => Ok(()),
        Some(n) => Err(unsupported(format!(
            "n = {n}: Anthropic returns exactly one choice per request"
        ))),
    }
}

fn passthrough<'a>(req: &'a ChatRequest, key: &str) -> Option<&'a Value> {
    req.extra.get(key).filter(|v| !v.is_null())
}

/// `metadata` from `extra` (Anthropic's shape), with OpenAI's `user` as `user_id` unless set.
fn metadata(req: &ChatRequest) -> Result<Option<Map<String, Value>>, TranslateError> {
    let mut meta = match req.extra.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(unsupported("metadata must be an object")),
    };
    if let Some(user) = &req.user {
        meta.get_or_insert_with(Map::new)
            .entry("user_id")
            .or_insert_with(|| Value::String(user.clone()));
    }
    Ok(meta)
}

/// Splits the conversation into the top-level `system` text and alternating messages.
fn translate_messages(
    messages: &[ChatMessage],
) -> Result<(Option<String>, Vec<Message<'_>>), TranslateError> {
    let mut system: Vec<Cow<'_, str>> = Vec::new();
    let mut out: Vec<Message<'_>> = Vec::new();
    for msg in messages {
        match msg.role {
            Role::System | Role::Developer => {
                if let Some(content) = &msg.content {
                    let text = system_text(content)?;
                    if !text.is_empty() {
                        system.push(text);
                    }
                }
            }
            Role::User => append(&mut out, MessageRole::User, user_blocks(msg)?),
            Role::Assistant => append(&mut out, MessageRole::Assistant, assistant_blocks(msg)?),
            Role::Tool => append(&mut out, MessageRole::User, vec![tool_result(msg)?]),
            Role::Function => {
                return Err(unsupported(
                    "messages with role \"function\" (legacy function calling); use tools",
                ))
            }
        }
    }
    // Anthropic wants the answers to the previous turn's tool calls first in a user message;
    // a user message that came between the calls and their results is moved behind them.
    for msg in &mut out {
        if msg.role == MessageRole::User {
            msg.content
                .sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, out))
}

/// Adds blocks as a message, merged into the previous one if it has the same role (Anthropic
/// requires user and assistant turns to alternate). Messages without blocks are skipped:
/// Anthropic rejects empty content.
fn append<'a>(out: &mut Vec<Message<'a>>, role: MessageRole, blocks: Vec<Block<'a>>) {
    if blocks.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => out.push(Message {
            role,
            content: blocks,
        }),
    }
}

fn system_text(content: &MessageContent) -> Result<Cow<'_, str>, TranslateError> {
    match content {
        MessageContent::Text(s) => Ok(Cow::Borrowed(s)),
        MessageContent::Parts(parts) => {
            let texts = parts
                .iter()
                .map(|p| match (p.kind.as_str(), p.text.as_deref()) {
                    ("text", Some(text)) => Ok(text),
                    (kind, _) => Err(unsupported(format!(
                        "content part {kind:?} in a system message"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Cow::Owned(texts.join("\n")))
        }
    }
}

fn text_block<'a>(text: &'a str, cache_control: Option<&'a Value>) -> Option<Block<'a>> {
    // Anthropic rejects empty text blocks; an empty string says nothing anyway.
    (!text.is_empty()).then_some(Block::Text {
        text,
        cache_control,
    })
}

fn user_blocks(msg: &ChatMessage) -> Result<Vec<Block<'_>>, TranslateError> {
    match &msg.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(s)) => Ok(text_block(s, None).into_iter().collect()),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|p| user_part(p).transpose())
            .collect(),
    }
}

/// One part of a user message (or of a tool result): text, image or PDF file.
fn user_part(part: &ContentPart) -> Result<Option<Block<'_>>, TranslateError> {
    let cache_control = part.extra.get("cache_control");
    match part.kind.as_str() {
        "text" => {
            let text = part
                .text
                .as_deref()
                .ok_or_else(|| unsupported("a text part without text"))?;
            Ok(text_block(text, cache_control))
        }
        "image_url" => {
            let url = match part.extra.get("image_url") {
                Some(Value::Object(o)) => o.get("url").and_then(Value::as_str),
                Some(Value::String(s)) => Some(s.as_str()),
                _ => None,
            }
            .ok_or_else(|| unsupported("an image_url part without a url"))?;
            Ok(Some(Block::Image {
                source: image_source(url)?,
                cache_control,
            }))
        }
        "file" => {
            let file = part.extra.get("file");
            let data = file
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    unsupported("a file part without file_data (file_id references cannot be sent to Anthropic)")
                })?;
            match parse_data_url(data) {
                Some((media_type @ "application/pdf", data)) => Ok(Some(Block::Document {
                    source: Source::Base64 { media_type, data },
                    cache_control,
                })),
                _ => Err(unsupported(
                    "file parts must be base64 data: URLs of type application/pdf",
                )),
            }
        }
        other => Err(unsupported(format!("content part type {other:?}"))),
    }
}

fn image_source(url: &str) -> Result<Source<'_>, TranslateError> {
    if has_scheme(url, "data:") {
        let (media_type, data) = parse_data_url(url)
            .ok_or_else(|| unsupported("an image data: URL that is not base64"))?;
        Ok(Source::Base64 { media_type, data })
    } else if has_scheme(url, "https://") || has_scheme(url, "http://") {
        Ok(Source::Url { url })
    } else {
        Err(unsupported("image URLs must be data: URLs or http(s) URLs"))
    }
}

fn has_scheme(url: &str, prefix: &str) -> bool {
    url.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// `data:<media type>[;params];base64,<data>` -> (media type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    if !has_scheme(url, "data:") {
        return None;
    }
    let (meta, data) = url.get("data:".len()..)?.split_once(',')?;
    let mut params = meta.split(';');
    let media_type = params.next().filter(|m| !m.is_empty())?;
    params
        .any(|p| p.eq_ignore_ascii_case("base64"))
        .then_some((media_type, data))
}

fn assistant_blocks(msg: &ChatMessage) -> Result<Vec<Block<'_>>, TranslateError> {
    if msg.extra.get("function_call").is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            "assistant function_call (legacy function calling); use tool_calls",
        ));
    }
    let mut blocks = match &msg.content {
        None => Vec::new(),
        Some(MessageContent::Text(s)) => text_block(s, None).into_iter().collect(),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|p| {
                let text = match p.kind.as_str() {
                    "text" => p.text.as_deref(),
                    "refusal" => p.extra.get("refusal").and_then(Value::as_str),
                    other => {
                        return Some(Err(unsupported(format!(
                            "content part type {other:?} in an assistant message"
                        ))))
                    }
                };
                text.and_then(|t| text_block(t, p.extra.get("cache_control")))
                    .map(Ok)
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    for call in msg.tool_calls.iter().flatten() {
        if call.kind != "function" {
            return Err(unsupported(format!("tool call type {:?}", call.kind)));
        }
        blocks.push(Block::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input: parse_arguments(&call.id, &call.function.arguments)?,
        });
    }
    Ok(blocks)
}

/// A tool call's JSON-encoded arguments as the object Anthropic's `input` must be.
fn parse_arguments(id: &str, arguments: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => Ok(input),
        Ok(_) => Err(unsupported(format!(
            "tool call {id}: arguments must be a JSON object"
        ))),
        Err(e) => Err(unsupported(format!(
            "tool call {id}: arguments are not valid JSON: {e}"
        ))),
    }
}

fn tool_result(msg: &ChatMessage) -> Result<Block<'_>, TranslateError> {
    let tool_use_id = msg
        .tool_call_id
        .as_deref()
        .ok_or_else(|| unsupported("a tool message without tool_call_id"))?;
    let content = match &msg.content {
        None => None,
        Some(MessageContent::Text(s)) => (!s.is_empty()).then_some(ToolResultContent::Text(s)),
        Some(MessageContent::Parts(parts)) => {
            let blocks = parts
                .iter()
                .filter_map(|p| user_part(p).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            if blocks.iter().any(|b| matches!(b, Block::Document { .. })) {
                return Err(unsupported("file parts in a tool message"));
            }
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    Ok(Block::ToolResult {
        tool_use_id,
        content,
    })
}

fn translate_tools(tools: Option<&[Tool]>) -> Result<Vec<ToolDefinition<'_>>, TranslateError> {
    tools
        .unwrap_or_default()
        .iter()
        .map(|tool| {
            if tool.kind != "function" {
                return Err(unsupported(format!("tool type {:?}", tool.kind)));
            }
            let f = tool
                .function
                .as_ref()
                .ok_or_else(|| unsupported("a function tool without a function"))?;
            let input_schema = match &f.parameters {
                Some(schema) if !schema.is_null() => Cow::Borrowed(schema),
                _ => Cow::Owned(serde_json::json!({"type": "object"})),
            };
            Ok(ToolDefinition {
                name: &f.name,
                description: f.description.as_deref(),
                input_schema,
            })
        })
        .collect()
}

fn translate_tool_choice<'a>(
    choice: Option<&'a Value>,
    parallel_tool_calls: Option<&Value>,
) -> Result<Option<ToolChoice<'a>>, TranslateError> {
    let no_parallel = matches!(parallel_tool_calls, Some(Value::Bool(false)));
    let simple = |kind| ToolChoice {
        kind,
        name: None,
        disable_parallel_tool_use: None,
    };
    let mut out = match choice {
        None | Some(Value::Null) if no_parallel => simple("auto"),
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => simple("auto"),
            "required" => simple("any"),
            "none" => simple("none"),
            other => return Err(unsupported(format!("tool_choice {other:?}"))),
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| unsupported("tool_choice of type function without a name"))?;
            ToolChoice {
                kind: "tool",
                name: Some(name),
                disable_parallel_tool_use: None,
            }
        }
        Some(other) => return Err(unsupported(format!("tool_choice {other}"))),
    };
    if no_parallel && out.kind != "none" {
        out.disable_parallel_tool_use = Some(true);
    }
    Ok(Some(out))
}

// === response ===

#[derive(Deserialize)]
struct MessagesResponse {
    id: String,
    #[serde(default)]
    content: Vec<ResponseBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// `thinking`, `redacted_thinking`, server tool blocks: not part of OpenAI's message.
    #[serde(other)]
    Other,
}

/// Anthropic's `usage`. Every field may be absent (and `message_delta` repeats only some).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[expect(clippy::struct_field_names, reason = "Anthropic's wire names")]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Takes the counts a later event reports (they are cumulative), keeps the others.
    fn update(&mut self, later: Self) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }

    /// OpenAI counts cached tokens inside `prompt_tokens`; Anthropic's `input_tokens` excludes
    /// both cache reads and cache writes.
    fn to_openai(self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let cache_write = self.cache_creation_input_tokens.unwrap_or(0);
        let prompt = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(cache_read)
            .saturating_add(cache_write);
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: cache_read,
                cache_write_tokens: cache_write,
            }),
            completion_tokens_details: None,
        }
    }
}

/// Translates an Anthropic Messages JSON response into an OpenAI chat completion.
///
/// `client_model` is the model name the client asked for; it goes into `model`. An Anthropic
/// error body in place of a message gives [`TranslateError::Upstream`].
pub fn from_messages_response(
    body: &[u8],
    client_model: &str,
) -> Result<ChatCompletion, TranslateError> {
    let resp: MessagesResponse = serde_json::from_slice(body).map_err(|e| {
        upstream_error_in(body)
            .unwrap_or_else(|| malformed(format!("not a Messages response: {e}")))
    })?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in resp.content {
        match block {
            ResponseBlock::Text { text: t } => text.push_str(&t),
            ResponseBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".to_owned(),
                function: FunctionCall {
                    name,
                    arguments: encode_arguments(&input)?,
                },
            }),
            ResponseBlock::Other => {}
        }
    }
    // OpenAI leaves content null on a pure tool-call answer.
    let content = (!text.is_empty() || calls.is_empty()).then_some(text);
    let message = AssistantMessage {
        role: Role::Assistant,
        content,
        tool_calls: (!calls.is_empty()).then_some(calls),
        extra: Map::new(),
    };
    Ok(ChatCompletion {
        id: format!("chatcmpl-{}", resp.id),
        object: "chat.completion".to_owned(),
        created: unix_now(),
        model: client_model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish_reason(resp.stop_reason.as_deref()).to_owned()),
            extra: Map::new(),
        }],
        usage: Some(resp.usage.unwrap_or_default().to_openai()),
        extra: Map::new(),
    })
}

fn encode_arguments(input: &Value) -> Result<String, TranslateError> {
    if input.is_null() {
        return Ok("{}".to_owned());
    }
    serde_json::to_string(input).map_err(|e| malformed(format!("tool input: {e}")))
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and whatever Anthropic adds next.
        _ => "stop",
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === errors ===

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// An Anthropic error body, as a [`TranslateError::Upstream`].
fn upstream_error_in(body: &[u8]) -> Option<TranslateError> {
    let ErrorEnvelope { error } = serde_json::from_slice(body).ok()?;
    Some(TranslateError::Upstream {
        kind: error.kind.unwrap_or_else(|| "api_error".to_owned()),
        message: error.message.unwrap_or_default(),
    })
}

/// Reads an Anthropic error body (`{"type":"error","error":{"type":..,"message":..}}`) as the
/// OpenAI error type and message the gateway renders. A body that is not Anthropic's JSON
/// (a proxy's HTML page, an empty body) gives a type from `status` and a short quote of it.
pub fn error_type_and_message(status: u16, body: &[u8]) -> (&'static str, String) {
    if let Ok(ErrorEnvelope { error }) = serde_json::from_slice(body) {
        let kind = error
            .kind
            .as_deref()
            .map_or_else(|| type_for_status(status), |k| openai_error_type(k, status));
        let message = error
            .message
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| format!("Anthropic returned HTTP {status}"));
        return (kind, message);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("Anthropic returned HTTP {status}")
    } else {
        let quoted: String = text.chars().take(MAX_RAW_ERROR_CHARS).collect();
        format!("Anthropic returned HTTP {status}: {quoted}")
    };
    (type_for_status(status), message)
}

/// OpenAI's error `type` for an Anthropic error type (OpenAI SDKs pick the exception by
/// status; the type is what clients log and match on).
fn openai_error_type(anthropic_type: &str, status: u16) -> &'static str {
    match anthropic_type {
        "invalid_request_error"
        | "not_found_error"
        | "request_too_large"
        | "authentication_error" => "invalid_request_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_error",
        "billing_error" => "insufficient_quota",
        "api_error" | "overloaded_error" | "timeout_error" => "api_error",
        _ => type_for_status(status),
    }
}

fn type_for_status(status: u16) -> &'static str {
    match status {
        403 => "permission_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

// === stream ===

/// One event of Anthropic's stream, by its `type`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: Option<MessageDeltaBody>,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorBody,
    },
    /// Anthropic may add event types; its versioning policy says to ignore unknown ones.
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    id: String,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// `thinking_delta`, `signature_delta`, `citations_delta`, ...
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Where the translator is in the stream.
#[derive(Debug)]
enum Phase {
    Streaming,
    /// `message_stop` arrived and `data: [DONE]` went out.
    Done,
    /// The error was reported once (an `Err` from `push`, or an error chunk); the rest of the
    /// upstream is ignored and `finish` returns it again.
    Failed(TranslateError),
}

/// A `tool_use` block of the current message, by Anthropic's block index.
#[derive(Debug)]
struct ToolBlock {
    /// Position among the message's tool calls: OpenAI's `tool_calls[].index`.
    index: u32,
    sent_arguments: bool,
}

/// Incremental translator of an Anthropic Messages SSE stream into OpenAI chunks.
///
/// Every chunk is `data: {json}\n\n`, shares one id (`chatcmpl-` + Anthropic's message id),
/// `created` and `model`, and is emitted as soon as the event that causes it is complete.
#[derive(Debug)]
pub struct StreamTranslator {
    client_model: String,
    created: u64,
    sse: SseParser,
    phase: Phase,
    /// `data: {"id":..,"object":..,"created":..,"model":..,`, known once `message_start` came.
    chunk_prefix: Option<String>,
    tool_blocks: HashMap<u64, ToolBlock>,
    next_tool_index: u32,
    raw_usage: AnthropicUsage,
    usage: Option<Usage>,
    /// An error found after some output of the same `push`: returned by the next call.
    unreported: Option<TranslateError>,
}

impl StreamTranslator {
    /// A translator whose chunks carry `client_model` and the current time.
    pub fn new(client_model: &str) -> Self {
        Self::with_created(client_model, unix_now())
    }

    /// A translator whose chunks carry `created` (unix seconds) instead of the current time.
    pub fn with_created(client_model: &str, created: u64) -> Self {
        Self {
            client_model: client_model.to_owned(),
            created,
            sse: SseParser::default(),
            phase: Phase::Streaming,
            chunk_prefix: None,
            tool_blocks: HashMap::new(),
            next_tool_index: 0,
            raw_usage: AnthropicUsage::default(),
            usage: None,
            unreported: None,
        }
    }

    /// Feeds raw upstream bytes, split anywhere. Returns the OpenAI SSE bytes to send now
    /// (possibly empty). An `Err` means the upstream sent something malformed; it is
    /// returned once (by the next call, when the same input translated to some output before
    /// it), later input is ignored and [`finish`](Self::finish) returns it again.
    pub fn push(&mut self, input: &[u8]) -> Result<Bytes, TranslateError> {
        if let Some(e) = self.unreported.take() {
            return Err(e);
        }
        let mut out = BytesMut::new();
        let mut rest = input;
        while matches!(self.phase, Phase::Streaming) {
            let handled = match self.sse.next_event(&mut rest) {
                Ok(Some(event)) => self.handle(&event, &mut out),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if let Err(e) = handled {
                self.phase = Phase::Failed(e.clone());
                if out.is_empty() {
                    return Err(e);
                }
                // The events translated before the malformed one go out first, so the client
                // sees the same stream however the upstream's bytes were split; the error
                // follows on the next call.
                self.unreported = Some(e);
                break;
            }
        }
        Ok(out.freeze())
    }

    /// Whether the stream failed (its error may still be waiting to be returned).
    pub fn failed(&self) -> bool {
        matches!(self.phase, Phase::Failed(_))
    }

    /// The upstream ended. Returns the output still owed, or an error if the stream did not
    /// end with `message_stop` ([`TranslateError::Truncated`]), carried an error event
    /// ([`TranslateError::Upstream`]) or was malformed. On `Ok`, the output so far ended with
    /// `data: [DONE]\n\n`.
    pub fn finish(&mut self) -> Result<Bytes, TranslateError> {
        let mut out = BytesMut::new();
        if matches!(self.phase, Phase::Streaming) {
            // An upstream that closes right after its last data line, without the blank line,
            // still sent that event whole. An event cut inside its JSON is a cut stream.
            if let Some(event) = self.sse.flush() {
                if self.handle(&event, &mut out).is_err() {
                    self.phase = Phase::Failed(TranslateError::Truncated);
                }
            }
        }
        match &self.phase {
            Phase::Done => Ok(out.freeze()),
            Phase::Failed(e) => Err(e.clone()),
            Phase::Streaming => {
                self.phase = Phase::Failed(TranslateError::Truncated);
                Err(TranslateError::Truncated)
            }
        }
    }

    /// The usage so far in OpenAI's shape, once `message_delta` arrived.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    fn handle(&mut self, event: &SseEvent, out: &mut BytesMut) -> Result<(), TranslateError> {
        match parse_event(event)? {
            StreamEvent::MessageStart { message } => {
                if self.chunk_prefix.is_some() {
                    return Err(malformed("a second message_start"));
                }
                self.chunk_prefix = Some(self.prefix_for(&message.id)?);
                self.raw_usage = message.usage.unwrap_or_default();
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    tool_calls: None,
                };
                self.write_delta(out, delta, None)
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => self.block_start(out, index, content_block),
            StreamEvent::ContentBlockDelta { index, delta } => self.block_delta(out, index, delta),
            StreamEvent::ContentBlockStop { index } => match self.tool_blocks.remove(&index) {
                // A call without arguments streams none; OpenAI clients parse "{}" (as the
                // non-streaming answer gives) but fail on "".
                Some(block) if !block.sent_arguments => {
                    self.write_tool_call(out, arguments_delta(block.index, "{}".to_owned()))
                }
                _ => Ok(()),
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    self.raw_usage.update(usage);
                }
                self.usage = Some(self.raw_usage.to_openai());
                let stop_reason = delta.and_then(|d| d.stop_reason);
                let reason = finish_reason(stop_reason.as_deref());
                self.write_delta(out, Delta::default(), Some(reason))
            }
            StreamEvent::MessageStop => {
                let usage = self.usage.get_or_insert_with(|| self.raw_usage.to_openai());
                let usage = usage.clone();
                self.write_chunk(out, &[], Some(&usage))?;
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.phase = Phase::Done;
                Ok(())
            }
            StreamEvent::Error { error } => {
                let kind = error.kind.unwrap_or_else(|| "api_error".to_owned());
                let message = error.message.unwrap_or_default();
                let body = serde_json::json!({"error": {
                    "message": message,
                    "type": openai_error_type(&kind, 0),
                    "code": null,
                    "param": null,
                }});
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(body.to_string().as_bytes());
                out.extend_from_slice(b"\n\n");
                self.phase = Phase::Failed(TranslateError::Upstream { kind, message });
                Ok(())
            }
            StreamEvent::Ping | StreamEvent::Unknown => Ok(()),
        }
    }

    fn block_start(
        &mut self,
        out: &mut BytesMut,
        index: u64,
        block: StartBlock,
    ) -> Result<(), TranslateError> {
        match block {
            StartBlock::Text { text } => self.write_text(out, text),
            StartBlock::ToolUse { id, name } => {
                let tool_index = self.next_tool_index;
                self.next_tool_index = tool_index.saturating_add(1);
                self.tool_blocks.insert(
                    index,
                    ToolBlock {
                        index: tool_index,
                        sent_arguments: false,
                    },
                );
                let call = ToolCallDelta {
                    index: tool_index,
                    id: Some(id),
                    kind: Some("function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: Some(name),
                        arguments: Some(String::new()),
                    }),
                };
                self.write_tool_call(out, call)
            }
            StartBlock::Other => Ok(()),
        }
    }

    fn block_delta(
        &mut self,
        out: &mut BytesMut,
        index: u64,
        delta: BlockDelta,
    ) -> Result<(), TranslateError> {
        match delta {
            BlockDelta::TextDelta { text } => self.write_text(out, text),
            BlockDelta::InputJsonDelta { partial_json } => match self.tool_blocks.get_mut(&index) {
                Some(block) if !partial_json.is_empty() => {
                    block.sent_arguments = true;
                    let call = arguments_delta(block.index, partial_json);
                    self.write_tool_call(out, call)
                }
                // Input of a block that is not a client tool call (server tools).
                _ => Ok(()),
            },
            BlockDelta::Other => Ok(()),
        }
    }

    fn prefix_for(&self, message_id: &str) -> Result<String, TranslateError> {
        let encode = |s: &str| serde_json::to_string(s).map_err(|e| malformed(e.to_string()));
        Ok(format!(
            "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},",
            encode(&format!("chatcmpl-{message_id}"))?,
            self.created,
            encode(&self.client_model)?,
        ))
    }

    fn write_text(&self, out: &mut BytesMut, text: String) -> Result<(), TranslateError> {
        if text.is_empty() {
            return Ok(());
        }
        let delta = Delta {
            role: None,
            content: Some(text),
            tool_calls: None,
        };
        self.write_delta(out, delta, None)
    }

    fn write_tool_call(
        &self,
        out: &mut BytesMut,
        call: ToolCallDelta,
    ) -> Result<(), TranslateError> {
        let delta = Delta {
            role: None,
            content: None,
            tool_calls: Some(vec![call]),
        };
        self.write_delta(out, delta, None)
    }

    fn write_delta(
        &self,
        out: &mut BytesMut,
        delta: Delta,
        finish_reason: Option<&str>,
    ) -> Result<(), TranslateError> {
        let choice = ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish_reason.map(str::to_owned),
        };
        self.write_chunk(out, std::slice::from_ref(&choice), None)
    }

    /// Writes one `data: {chunk}\n\n`. Fails if no `message_start` gave the chunk id yet.
    fn write_chunk(
        &self,
        out: &mut BytesMut,
        choices: &[ChunkChoice],
        usage: Option<&Usage>,
    ) -> Result<(), TranslateError> {
        let prefix = self
            .chunk_prefix
            .as_deref()
            .ok_or_else(|| malformed("content before message_start"))?;
        let encode_err = |e: serde_json::Error| malformed(format!("chunk encoding: {e}"));
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(b"\"choices\":");
        serde_json::to_writer(out.writer(), choices).map_err(encode_err)?;
        if let Some(usage) = usage {
            out.extend_from_slice(b",\"usage\":");
            serde_json::to_writer(out.writer(), usage).map_err(encode_err)?;
        }
        out.extend_from_slice(b"}\n\n");
        Ok(())
    }
}

fn parse_event(event: &SseEvent) -> Result<StreamEvent, TranslateError> {
    match serde_json::from_slice::<StreamEvent>(&event.data) {
        Ok(parsed) => Ok(parsed),
        // `event: error` whose data lacks the `type` field.
        Err(_) if event.name.as_deref() == Some(b"error") => {
            let ErrorEnvelope { error } = serde_json::from_slice(&event.data)
                .map_err(|e| malformed(format!("error event: {e}")))?;
            Ok(StreamEvent::Error { error })
        }
        Err(e) => {
            let name = event.name.as_deref().map(String::from_utf8_lossy);
            Err(malformed(format!(
                "event {}: {e}",
                name.as_deref().unwrap_or("(unnamed)")
            )))
        }
    }
}

fn arguments_delta(index: u32, arguments: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: Some(FunctionCallDelta {
            name: None,
            arguments: Some(arguments),
        }),
    }
}

// === impl SseParser ===

/// One dispatched SSE event: its `event:` name and its `data:` lines joined by `\n`.
#[derive(Debug)]
struct SseEvent {
    name: Option<Vec<u8>>,
    data: Vec<u8>,
}

/// A byte-level SSE parser (WHATWG event-stream rules): lines end in `\n`, `\r\n` or `\r`, an
/// event ends at a blank line, `:` starts a comment. Bytes are kept until a line is complete,
/// so input may be split anywhere, including inside a UTF-8 character or a `\r\n`.
#[derive(Debug, Default)]
struct SseParser {
    /// The current line so far (without its terminator).
    line: Vec<u8>,
    /// The last byte seen was `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    name: Option<Vec<u8>>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Consumes `input` up to the end of the next complete event and returns it, or consumes
    /// all of it and returns `None`.
    fn next_event(&mut self, input: &mut &[u8]) -> Result<Option<SseEvent>, TranslateError> {
        while !input.is_empty() {
            if std::mem::take(&mut self.after_cr) {
                if let Some((b'\n', rest)) = input.split_first() {
                    *input = rest;
                    continue;
                }
            }
            let Some(at) = input.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.line.extend_from_slice(input);
                *input = &[];
                self.check_size()?;
                break;
            };
            let (line, rest) = input.split_at(at);
            self.line.extend_from_slice(line);
            self.check_size()?;
            if let Some((&terminator, rest)) = rest.split_first() {
                self.after_cr = terminator == b'\r';
                *input = rest;
            } else {
                *input = rest;
            }
            if let Some(event) = self.end_line() {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// The stream ended: the pending line and event, as if a blank line had followed.
    fn flush(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            // A field line cannot dispatch an event by itself.
            let _ = self.end_line();
        }
        self.dispatch()
    }

    fn check_size(&self) -> Result<(), TranslateError> {
        if self.line.len().saturating_add(self.data.len()) > MAX_EVENT_BYTES {
            return Err(malformed(format!(
                "an event larger than {MAX_EVENT_BYTES} bytes"
            )));
        }
        Ok(())
    }

    fn end_line(&mut self) -> Option<SseEvent> {
        if self.line.is_empty() {
            return self.dispatch();
        }
        if self.line.first() != Some(&b':') {
            let (field, value) = match self.line.iter().position(|&b| b == b':') {
                Some(at) => {
                    let (field, value) = self.line.split_at(at);
                    let value = value.get(1..).unwrap_or_default();
                    (field, value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (self.line.as_slice(), &[][..]),
            };
            match field {
                b"event" => self.name = Some(value.to_vec()),
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                // `id` and `retry` matter to reconnecting browsers, not to a proxy.
                _ => {}
            }
        }
        self.line.clear();
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let name = self.name.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            name,
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::chat::ChatCompletionChunk;
    use serde_json::json;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    fn translate(body: Value) -> Result<Value, TranslateError> {
        to_messages_request(&request(body), "claude-up")
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    // === request tests ===

    #[test]
    fn system_multi_turn_and_merged_roles() {
        let out = translate(json!({
            "model": "client-model",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": [{"type": "text", "text": "Answer"}, {"type": "text", "text": "in French."}]},
                {"role": "user", "content": [{"type": "text", "text": "part a"}, {"type": "text", "text": "part b"}]},
                {"role": "assistant", "content": "Bonjour"},
                {"role": "assistant", "content": "Ça va?"},
                {"role": "user", "content": ""},
                {"role": "user", "content": "Fine", "name": "bob"}
            ],
            "max_tokens": 100,
            "max_completion_tokens": 200,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "user": "u-42",
            "seed": 7,
            "response_format": {"type": "json_object"},
            "stream_options": {"include_usage": true},
            "logit_bias": {"1": 2},
            "frequency_penalty": 0.1,
            "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 1024}
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "model": "claude-up",
                "max_tokens": 200,
                "system": "You are terse.\n\nAnswer\nin French.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Hi"},
                        {"type": "text", "text": "part a"},
                        {"type": "text", "text": "part b"}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Bonjour"},
                        {"type": "text", "text": "Ça va?"}
                    ]},
                    {"role": "user", "content": [{"type": "text", "text": "Fine"}]}
                ],
                "temperature": 0.5,
                "top_p": 0.9,
                "top_k": 5,
                "stop_sequences": ["END"],
                "stream": false,
                "metadata": {"user_id": "u-42"},
                "thinking": {"type": "enabled", "budget_tokens": 1024}
            })
        );
    }

    #[test]
    fn defaults_stream_and_metadata_passthrough() {
        let out = translate(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stop": ["a", "b"],
            "user": "ignored-when-metadata-has-one",
            "metadata": {"user_id": "from-metadata"}
        }))
        .unwrap();
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(out["stream"], true);
        assert_eq!(out["stop_sequences"], json!(["a", "b"]));
        assert_eq!(out["metadata"], json!({"user_id": "from-metadata"}));
        assert!(out.get("system").is_none());
        assert!(out.get("tools").is_none());
        assert!(out.get("temperature").is_none());

        let out = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": 10}),
        )
        .unwrap();
        assert_eq!(out["max_tokens"], 10);
        assert_eq!(out["stream"], false);
        assert!(out.get("metadata").is_none());
    }

    #[test]
    fn tools_and_tool_choice() {
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
             "strict": true}},
            {"type": "function", "function": {"name": "ping"}}
        ]);
        let with_choice = |choice: Value, parallel: Value| {
            translate(
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                             "tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel}),
            )
        };
        let out = with_choice(json!("auto"), Value::Null).unwrap();
        assert_eq!(
            out["tools"],
            json!([
                {"name": "get_weather", "description": "Weather now",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "ping", "input_schema": {"type": "object"}}
            ])
        );
        assert_eq!(out["tool_choice"], json!({"type": "auto"}));
        assert_eq!(
            with_choice(json!("required"), Value::Null).unwrap()["tool_choice"],
            json!({"type": "any"})
        );
        assert_eq!(
            with_choice(json!("none"), Value::Null).unwrap()["tool_choice"],
            json!({"type": "none"})
        );
        assert_eq!(
            with_choice(
                json!({"type": "function", "function": {"name": "ping"}}),
                Value::Null
            )
            .unwrap()["tool_choice"],
            json!({"type": "tool", "name": "ping"})
        );
        assert!(with_choice(Value::Null, Value::Null)
            .unwrap()
            .get("tool_choice")
            .is_none());
        // parallel_tool_calls: false becomes Anthropic's disable_parallel_tool_use.
        assert_eq!(
            with_choice(Value::Null, json!(false)).unwrap()["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            with_choice(json!("required"), json!(false)).unwrap()["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            with_choice(json!("auto"), json!(true)).unwrap()["tool_choice"],
            json!({"type": "auto"})
        );
        // Anthropic's "none" takes no parallelism flag.
        assert_eq!(
            with_choice(json!("none"), json!(false)).unwrap()["tool_choice"],
            json!({"type": "none"})
        );

        assert!(matches!(
            with_choice(json!("sometimes"), Value::Null),
            Err(TranslateError::Unsupported(_))
        ));
        assert!(matches!(
            with_choice(json!({"type": "function"}), Value::Null),
            Err(TranslateError::Unsupported(_))
        ));
        assert!(matches!(
            with_choice(json!(3), Value::Null),
            Err(TranslateError::Unsupported(_))
        ));

        // tool_choice without tools is dropped, as OpenAI ignores it.
        let out = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                   "tool_choice": "required"}),
        )
        .unwrap();
        assert!(out.get("tool_choice").is_none());

        let err = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                   "tools": [{"type": "code_interpreter"}]}),
        );
        assert!(
            matches!(err, Err(TranslateError::Unsupported(m)) if m.contains("code_interpreter"))
        );
    }

    #[test]
    fn tool_calls_and_results() {
        let out = translate(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"role": "user", "content": "Thanks"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "call_3", "type": "function", "function": {"name": "now", "arguments": ""}}
                ]},
                {"role": "user", "content": "(waiting)"},
                {"role": "tool", "tool_call_id": "call_3", "content": ""}
            ]
        }))
        .unwrap();
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                    {"type": "text", "text": "Thanks"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_3", "name": "now", "input": {}}
                ]},
                // The tool result is moved ahead of the user text that came between.
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_3"},
                    {"type": "text", "text": "(waiting)"}
                ]}
            ])
        );
    }

    #[test]
    fn bad_tool_messages_are_rejected() {
        let with = |msg: Value| {
            translate(json!({"model": "m", "messages": [{"role": "user", "content": "x"}, msg]}))
        };
        let bad_args = with(json!({"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\": "}}]}));
        assert!(
            matches!(bad_args, Err(TranslateError::Unsupported(m)) if m.contains("not valid JSON"))
        );
        let array_args = with(json!({"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}));
        assert!(
            matches!(array_args, Err(TranslateError::Unsupported(m)) if m.contains("JSON object"))
        );
        let no_id = with(json!({"role": "tool", "content": "r"}));
        assert!(matches!(no_id, Err(TranslateError::Unsupported(m)) if m.contains("tool_call_id")));
        let legacy = with(json!({"role": "function", "name": "f", "content": "r"}));
        assert!(matches!(legacy, Err(TranslateError::Unsupported(_))));
    }

    #[test]
    fn tool_use_round_trips_through_openai() {
        let input = json!({"city": "Paris", "units": ["c", "f"], "deep": {"n": 1.5}});
        let response = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": input}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 4}
        });
        let completion = from_messages_response(response.to_string().as_bytes(), "gpt").unwrap();
        let assistant = serde_json::to_value(&completion.choices[0].message).unwrap();
        let out = translate(json!({"model": "m", "messages": [
            {"role": "user", "content": "?"},
            assistant,
            {"role": "tool", "tool_call_id": "toolu_9", "content": "sunny"}
        ]}))
        .unwrap();
        assert_eq!(
            out["messages"][1]["content"],
            json!([{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": input}])
        );
        assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "toolu_9");
    }

    #[test]
    fn image_and_file_parts() {
        let out = translate(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
        ]}]}))
        .unwrap();
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
            ])
        );
        let part = |p: Value| {
            translate(json!({"model": "m", "messages": [{"role": "user", "content": [p]}]}))
        };
        for bad in [
            json!({"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}),
            json!({"type": "image_url", "image_url": {"url": "ftp://example.com/x.png"}}),
            json!({"type": "image_url", "image_url": {}}),
            json!({"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}),
            json!({"type": "file", "file": {"file_id": "file-1"}}),
            json!({"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}}),
        ] {
            assert!(
                matches!(part(bad.clone()), Err(TranslateError::Unsupported(_))),
                "{bad}"
            );
        }
        // An image in a system message cannot be expressed either.
        let sys = translate(
            json!({"model": "m", "messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]}),
        );
        assert!(matches!(sys, Err(TranslateError::Unsupported(_))));
    }

    #[test]
    fn more_than_one_choice_is_rejected() {
        let with_n = |n: Value| {
            translate(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": n}))
        };
        assert!(
            matches!(with_n(json!(2)), Err(TranslateError::Unsupported(m)) if m.contains("n = 2"))
        );
        assert!(matches!(
            with_n(json!(0)),
            Err(TranslateError::Unsupported(_))
        ));
        assert!(with_n(json!(1)).unwrap().get("n").is_none());
        assert!(with_n(Value::Null).is_ok());
    }

    // === response tests ===

    #[test]
    fn response_with_text_tool_use_and_cache_usage() {
        let body = json!({
            "id": "msg_01ABC", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me "},
                {"type": "text", "text": "look."},
                {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "rust"}},
                {"type": "tool_use", "id": "toolu_2", "name": "noop", "input": {}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 300,
                      "cache_creation_input_tokens": 40}
        });
        let c = from_messages_response(body.to_string().as_bytes(), "my-model").unwrap();
        assert_eq!(c.id, "chatcmpl-msg_01ABC");
        assert_eq!(c.object, "chat.completion");
        assert_eq!(c.model, "my-model");
        assert!(c.created > 1_600_000_000);
        assert_eq!(c.choices.len(), 1);
        let choice = &c.choices[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(choice.message.role, Role::Assistant);
        assert_eq!(choice.message.content.as_deref(), Some("Let me look."));
        let calls = choice.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (
                calls[0].id.as_str(),
                calls[0].kind.as_str(),
                calls[0].function.name.as_str()
            ),
            ("toolu_1", "function", "search")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap(),
            json!({"q": "rust"})
        );
        assert_eq!(calls[1].function.arguments, "{}");
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 350,
                completion_tokens: 20,
                total_tokens: 370,
                prompt_tokens_details: Some(PromptTokensDetails {
                    cached_tokens: 300,
                    cache_write_tokens: 40
                }),
                completion_tokens_details: None,
            })
        );
    }

    #[test]
    fn pure_tool_call_has_null_content_and_usage_is_always_present() {
        let body = br#"{"id":"m","content":[{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use"}"#;
        let c = from_messages_response(body, "x").unwrap();
        assert_eq!(c.choices[0].message.content, None);
        assert_eq!(c.usage.as_ref().unwrap().total_tokens, 0);
        let body = br#"{"id":"m","content":[],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let c = from_messages_response(body, "x").unwrap();
        assert_eq!(c.choices[0].message.content.as_deref(), Some(""));
        assert_eq!(c.choices[0].message.tool_calls, None);
        assert_eq!(c.usage.unwrap().total_tokens, 3);
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("something_new", "stop"),
        ] {
            let body =
                json!({"id": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": stop});
            let c = from_messages_response(body.to_string().as_bytes(), "x").unwrap();
            assert_eq!(
                c.choices[0].finish_reason.as_deref(),
                Some(finish),
                "{stop}"
            );
        }
        let body = br#"{"id":"m","content":[],"stop_reason":null}"#;
        assert_eq!(
            from_messages_response(body, "x").unwrap().choices[0]
                .finish_reason
                .as_deref(),
            Some("stop")
        );
    }

    #[test]
    fn malformed_and_error_responses() {
        assert!(matches!(
            from_messages_response(b"not json", "x"),
            Err(TranslateError::Malformed(_))
        ));
        assert!(matches!(
            from_messages_response(b"{\"content\":[]}", "x"),
            Err(TranslateError::Malformed(_))
        ));
        assert!(matches!(
            from_messages_response(br#"{"id":"m","content":[{"type":"text"}]}"#, "x"),
            Err(TranslateError::Malformed(_))
        ));
        let err = from_messages_response(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "x",
        );
        assert_eq!(
            err,
            Err(TranslateError::Upstream {
                kind: "overloaded_error".into(),
                message: "Overloaded".into()
            })
        );
    }

    #[test]
    fn error_bodies_become_openai_types() {
        let body =
            |t: &str| format!(r#"{{"type":"error","error":{{"type":"{t}","message":"msg {t}"}}}}"#);
        for (status, kind, want) in [
            (400, "invalid_request_error", "invalid_request_error"),
            (401, "authentication_error", "invalid_request_error"),
            (403, "permission_error", "permission_error"),
            (404, "not_found_error", "invalid_request_error"),
            (413, "request_too_large", "invalid_request_error"),
            (429, "rate_limit_error", "rate_limit_error"),
            (500, "api_error", "api_error"),
            (529, "overloaded_error", "api_error"),
            (402, "billing_error", "insufficient_quota"),
            (429, "brand_new_error", "rate_limit_error"),
        ] {
            assert_eq!(
                error_type_and_message(status, body(kind).as_bytes()),
                (want, format!("msg {kind}"))
            );
        }
        assert_eq!(
            error_type_and_message(502, b"<html>Bad Gateway</html>"),
            (
                "api_error",
                "Anthropic returned HTTP 502: <html>Bad Gateway</html>".to_owned()
            )
        );
        assert_eq!(
            error_type_and_message(400, b""),
            (
                "invalid_request_error",
                "Anthropic returned HTTP 400".to_owned()
            )
        );
        assert_eq!(
            error_type_and_message(403, br#"{"error":{"message":""}}"#),
            ("permission_error", "Anthropic returned HTTP 403".to_owned())
        );
        let long = "é".repeat(5000);
        let (_, msg) = error_type_and_message(500, long.as_bytes());
        assert!(
            msg.chars().count() < MAX_RAW_ERROR_CHARS + 40,
            "{}",
            msg.len()
        );
    }

    // === stream tests ===

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XYZ\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n",
        "\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n",
        "\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM\"}}\n",
        "\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n",
        "\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello, \"}}\n",
        "\n",
        ": keep-alive comment\n",
        "\n",
        "event:content_block_delta\n",
        "data:{\"type\":\"content_block_delta\",\"index\":1,\n",
        "data: \"delta\":{\"type\":\"text_delta\",\"text\":\"wörld 👋\"}}\n",
        "\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n",
        "\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01A\",\"name\":\"get_weather\",\"input\":{}}}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \\\"San\"}}\n",
        "\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" Francisco, CA\\\"}\"}}\n",
        "\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":2}\n",
        "\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02B\",\"name\":\"get_time\",\"input\":{}}}\n",
        "\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":3}\n",
        "\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n",
        "\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n",
        "\n",
    );

    const CREATED: u64 = 1_700_000_000;

    /// Feeds `input` in pieces of the given sizes (cycled), then finishes.
    fn feed(
        input: &[u8],
        sizes: &[usize],
    ) -> (Vec<u8>, Result<(), TranslateError>, StreamTranslator) {
        let mut t = StreamTranslator::with_created("gpt-client", CREATED);
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            i += 1;
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            match t.push(piece) {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Err(e), t),
            }
        }
        let end = t.finish().map(|b| out.extend_from_slice(&b));
        (out, end, t)
    }

    /// Output as a list of `data:` payloads, checking the framing on the way.
    fn payloads(out: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.is_empty() || text.ends_with("\n\n"), "{text}");
        text.split_terminator("\n\n")
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("bad event {e:?}"))
                    .to_owned()
            })
            .collect()
    }

    #[derive(Debug, Default, PartialEq)]
    struct Assembled {
        content: String,
        tool_calls: Vec<(String, String, String)>,
        finish_reason: Option<String>,
        usage: Option<Usage>,
        chunks: usize,
    }

    fn assemble(out: &[u8]) -> Assembled {
        let payloads = payloads(out);
        assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
        let mut a = Assembled::default();
        for p in &payloads[..payloads.len() - 1] {
            let chunk: ChatCompletionChunk = serde_json::from_str(p).unwrap();
            assert_eq!(chunk.id, "chatcmpl-msg_01XYZ");
            assert_eq!(chunk.object, "chat.completion.chunk");
            assert_eq!(chunk.created, CREATED);
            assert_eq!(chunk.model, "gpt-client");
            a.chunks += 1;
            if let Some(usage) = chunk.usage {
                assert!(chunk.choices.is_empty());
                assert!(a.usage.replace(usage).is_none(), "two usage chunks");
                continue;
            }
            assert_eq!(chunk.choices.len(), 1);
            let choice = &chunk.choices[0];
            assert_eq!(choice.index, 0);
            if let Some(reason) = &choice.finish_reason {
                assert!(a.finish_reason.replace(reason.clone()).is_none());
            }
            a.content
                .push_str(choice.delta.content.as_deref().unwrap_or(""));
            for call in choice.delta.tool_calls.iter().flatten() {
                let i = call.index as usize;
                if i == a.tool_calls.len() {
                    a.tool_calls
                        .push((call.id.clone().unwrap(), String::new(), String::new()));
                    assert_eq!(call.kind.as_deref(), Some("function"));
                }
                let f = call.function.as_ref().unwrap();
                a.tool_calls[i].1.push_str(f.name.as_deref().unwrap_or(""));
                a.tool_calls[i]
                    .2
                    .push_str(f.arguments.as_deref().unwrap_or(""));
            }
        }
        a
    }

    fn expected_usage() -> Usage {
        Usage {
            prompt_tokens: 130,
            completion_tokens: 89,
            total_tokens: 219,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: 100,
                cache_write_tokens: 5,
            }),
            completion_tokens_details: None,
        }
    }

    #[test]
    fn full_stream_translates() {
        let (out, end, t) = feed(STREAM.as_bytes(), &[STREAM.len()]);
        end.unwrap();
        let first = payloads(&out)[0].clone();
        let first: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(first["choices"][0]["finish_reason"], Value::Null);
        let a = assemble(&out);
        assert_eq!(a.content, "Hello, wörld 👋");
        assert_eq!(
            a.tool_calls,
            vec![
                (
                    "toolu_01A".to_owned(),
                    "get_weather".to_owned(),
                    "{\"location\": \"San Francisco, CA\"}".to_owned()
                ),
                (
                    "toolu_02B".to_owned(),
                    "get_time".to_owned(),
                    "{}".to_owned()
                ),
            ]
        );
        assert_eq!(a.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(a.usage, Some(expected_usage()));
        // role, 2 text, 1+2 weather, 1+1 time, finish, usage.
        assert_eq!(a.chunks, 10);
        assert_eq!(t.usage(), Some(&expected_usage()));
        assert!(out.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn stream_output_does_not_depend_on_splits_or_line_endings() {
        let (whole, end, _) = feed(STREAM.as_bytes(), &[STREAM.len()]);
        end.unwrap();
        let (bytewise, end, _) = feed(STREAM.as_bytes(), &[1]);
        end.unwrap();
        assert_eq!(whole, bytewise);
        let crlf = STREAM.replace('\n', "\r\n");
        let cr = STREAM.replace('\n', "\r");
        for input in [&crlf, &cr] {
            for sizes in [&[input.len()][..], &[1], &[2, 3, 5, 7]] {
                let (out, end, _) = feed(input.as_bytes(), sizes);
                end.unwrap();
                assert_eq!(out, whole, "sizes {sizes:?}");
            }
        }
    }

    #[test]
    fn every_two_and_three_way_split_gives_the_same_output() {
        let (whole, end, _) = feed(STREAM.as_bytes(), &[STREAM.len()]);
        end.unwrap();
        let input = STREAM.replace('\n', "\r\n");
        let bytes = input.as_bytes();
        for i in 0..=bytes.len() {
            let mut t = StreamTranslator::with_created("gpt-client", CREATED);
            let mut out = t.push(&bytes[..i]).unwrap().to_vec();
            out.extend_from_slice(&t.push(&bytes[i..]).unwrap());
            out.extend_from_slice(&t.finish().unwrap());
            assert_eq!(out, whole, "split at {i}");
        }
        for i in (0..bytes.len()).step_by(29) {
            for j in (i..bytes.len()).step_by(11) {
                let mut t = StreamTranslator::with_created("gpt-client", CREATED);
                let mut out = Vec::new();
                for piece in [&bytes[..i], &bytes[i..j], &bytes[j..]] {
                    out.extend_from_slice(&t.push(piece).unwrap());
                }
                out.extend_from_slice(&t.finish().unwrap());
                assert_eq!(out, whole, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn stream_cut_before_message_stop_fails() {
        let cut = STREAM.find("event: message_stop").unwrap();
        let (out, end, t) = feed(&STREAM.as_bytes()[..cut], &[64]);
        assert_eq!(end, Err(TranslateError::Truncated));
        assert!(!out.ends_with(b"data: [DONE]\n\n"));
        // The usage seen so far stays readable for billing.
        assert_eq!(t.usage(), Some(&expected_usage()));

        // Any cut short of message_stop's data is a cut stream, never a panic or a [DONE].
        let stop_end = STREAM.rfind("}\n").unwrap() + 1;
        for i in 0..stop_end {
            let (out, end, _) = feed(&STREAM.as_bytes()[..i], &[97]);
            assert_eq!(end, Err(TranslateError::Truncated), "cut at {i}");
            assert!(!out.windows(6).any(|w| w == b"[DONE]"), "cut at {i}");
        }
        // Without its final blank line the message_stop event is still whole.
        let (out, end, _) = feed(&STREAM.as_bytes()[..stop_end], &[97]);
        end.unwrap();
        assert!(out.ends_with(b"data: [DONE]\n\n"));

        let mut t = StreamTranslator::new("m");
        assert_eq!(t.finish(), Err(TranslateError::Truncated));
        assert_eq!(t.usage(), None);
    }

    #[test]
    fn good_events_before_a_malformed_one_go_out_first_then_the_error() {
        let good = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        );
        let bad = "event: content_block_delta\ndata: {not json\n\n";
        // In one read: the good events come back now, the error on the next call.
        let mut t = StreamTranslator::with_created("demo", 1);
        let out = t.push(format!("{good}{bad}").as_bytes()).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("\"content\":\"Hi\""));
        assert!(t.failed());
        assert!(matches!(t.push(b"more"), Err(TranslateError::Malformed(_))));
        assert!(t.finish().is_err());
        // In two reads: the same bytes out, the error on the read that carried it.
        let mut t = StreamTranslator::with_created("demo", 1);
        assert_eq!(t.push(good.as_bytes()).unwrap(), out);
        assert!(!t.failed());
        assert!(matches!(
            t.push(bad.as_bytes()),
            Err(TranslateError::Malformed(_))
        ));
    }

    #[test]
    fn error_event_is_forwarded_and_fails_the_stream() {
        let input = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: error\n",
            "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let (out, end, t) = feed(input.as_bytes(), &[input.len()]);
        assert_eq!(
            end,
            Err(TranslateError::Upstream {
                kind: "overloaded_error".into(),
                message: "Overloaded".into()
            })
        );
        let events = payloads(&out);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[1].contains("\"content\":\"Hi\""));
        let error: Value = serde_json::from_str(&events[2]).unwrap();
        assert_eq!(
            error,
            json!({"error": {"message": "Overloaded", "type": "api_error", "code": null, "param": null}})
        );
        assert_eq!(t.usage(), None);

        // An error before message_start, bytewise; data without "type" under `event: error`.
        let input = "event: error\ndata: {\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}\n\n";
        let (out, end, _) = feed(input.as_bytes(), &[1]);
        assert!(
            matches!(end, Err(TranslateError::Upstream { kind, .. }) if kind == "rate_limit_error")
        );
        let error: Value = serde_json::from_str(&payloads(&out)[0]).unwrap();
        assert_eq!(error["error"]["type"], "rate_limit_error");
        assert_eq!(error["error"]["message"], "slow down");
    }

    #[test]
    fn malformed_events_fail_without_panicking() {
        let start = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\n";
        for bad in [
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":\n\n",
            "data: hello\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":\"zero\",\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\"}}\n\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"again\"}}\n\n",
            "data: {\"no_type\":true}\n\n",
            "data: \u{1}\n\n",
        ] {
            let input = format!("{start}{bad}");
            let mut t = StreamTranslator::new("m");
            let first = t.push(start.as_bytes()).unwrap();
            assert!(!first.is_empty());
            let err = t.push(bad.as_bytes());
            assert!(matches!(err, Err(TranslateError::Malformed(_))), "{bad}: {err:?}");
            // Reported once; later input is ignored; finish repeats the error.
            assert_eq!(t.push(b"data: {\"type\":\"message_stop\"}\n\n").unwrap(), Bytes::new());
            assert!(matches!(t.finish(), Err(TranslateError::Malformed(_))), "{bad}");
            let (_, end, _) = feed(input.as_bytes(), &[1]);
            assert!(matches!(end, Err(TranslateError::Malformed(_))), "{bad} bytewise");
        }
        // Content before message_start has no id to go with.
        let mut t = StreamTranslator::new("m");
        let early = b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n";
        assert!(
            matches!(t.push(early), Err(TranslateError::Malformed(m)) if m.contains("message_start"))
        );
        // Invalid UTF-8 inside the JSON.
        let mut t = StreamTranslator::new("m");
        t.push(start.as_bytes()).unwrap();
        let bad_utf8 = b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\xff\"}}\n\n";
        assert!(matches!(
            t.push(bad_utf8),
            Err(TranslateError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_events_and_fields_are_ignored() {
        let input = concat!(
            "id: 1\nretry: 10\nevent: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XYZ\",\"usage\":{\"input_tokens\":2,\"output_tokens\":1}}}\n\n",
            "event: brand_new\ndata: {\"type\":\"brand_new\",\"x\":[1,2]}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"s\",\"name\":\"web_search\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":1}\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"citations_delta\",\"citation\":{}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"pre\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":7,\"input_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\",\"extra\":1}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        );
        let (out, end, t) = feed(input.as_bytes(), &[3]);
        end.unwrap();
        let a = assemble(&out);
        assert_eq!(a.content, "pre");
        assert!(a.tool_calls.is_empty());
        assert_eq!(a.finish_reason.as_deref(), Some("length"));
        // message_delta's later input count wins over message_start's.
        assert_eq!(
            a.usage
                .as_ref()
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((4, 7))
        );
        assert_eq!(t.usage().map(|u| u.total_tokens), Some(11));
        assert!(out.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn sse_parser_follows_the_event_stream_rules() {
        let input: &[u8] = b": comment\r\nevent: a\ndata: one\ndata:two\ndata\nid: 7\nretry: 5\n\n\
event: no-data\n\n\
data:  lead\r\r\
data: x\xc3";
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        // Bytewise, so every state is crossed at a boundary.
        for b in input {
            let mut rest = std::slice::from_ref(b);
            while let Some(e) = parser.next_event(&mut rest).unwrap() {
                events.push(e);
            }
        }
        let flushed = parser.flush().unwrap();
        let got: Vec<(Option<&[u8]>, &[u8])> = events
            .iter()
            .chain([&flushed])
            .map(|e| (e.name.as_deref(), e.data.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(&b"a"[..]), &b"one\ntwo\n"[..]),
                // The name of an event without data does not leak into the next one; only one
                // space after the colon is removed; a lone \r ends a line.
                (None, &b" lead"[..]),
                (None, &b"x\xc3"[..]),
            ]
        );
        assert!(parser.flush().is_none());
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut t = StreamTranslator::new("m");
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(matches!(t.push(b"data: "), Ok(b) if b.is_empty()));
        assert!(matches!(t.push(&big), Err(TranslateError::Malformed(m)) if m.contains("larger")));
    }

    /// A tiny deterministic generator, so failures reproduce.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % bound.max(1)
        }
    }

    #[test]
    fn random_splits_and_corruption_never_panic() {
        let (whole, end, _) = feed(STREAM.as_bytes(), &[STREAM.len()]);
        end.unwrap();
        let mut rng = Lcg(0x5eed);
        let inputs = [STREAM.to_owned(), STREAM.replace('\n', "\r\n")];
        for round in 0..400 {
            let input = inputs[round % 2].as_bytes();
            let sizes: Vec<usize> = (0..8).map(|_| 1 + rng.next(40)).collect();
            let (out, end, _) = feed(input, &sizes);
            end.unwrap();
            assert_eq!(out, whole, "sizes {sizes:?}");

            // Corrupt a few bytes: the translator may fail, but never panics, and output it
            // does produce is well-framed.
            let mut bad = input.to_vec();
            for _ in 0..=rng.next(4) {
                let at = rng.next(bad.len());
                bad[at] = u8::try_from(rng.next(256)).unwrap();
            }
            let (out, end, _) = feed(&bad, &sizes);
            if end.is_ok() {
                assert!(out.ends_with(b"data: [DONE]\n\n"));
            }
            // Truncate anywhere before message_stop's data is complete.
            let stop_end = input.iter().rposition(|&b| b == b'}').unwrap() + 1;
            let cut = rng.next(stop_end);
            let (_, end, _) = feed(&input[..cut], &sizes);
            assert!(end.is_err(), "cut at {cut}");
        }
    }
}

//! Local token counting with OpenAI's BPE encodings, for when the upstream sends no `usage`
//! block and for the limits and budget reservations before the call.
//!
//! The ranks are tiktoken-rs's, compiled into the binary by `build.rs`; the counting is this
//! module's own ([`super::bpe`], [`super::split`]): tiktoken-rs's tables take about 40 MB
//! resident for `o200k_base` and its backtracking split regex was the largest single cost of
//! a short request. Building an encoding is compiling its split automaton, once, on first use
//! (about 5 ms), so async callers [`Tokenizer::prepare`] the encoding on the blocking pool
//! first, and `serve` prepares the default one at start-up; the rare synchronous caller (an
//! upstream that sent no usage) builds it in place once. The tokenizer is cheap to clone (two
//! `Arc`s and the override list).
//!
//! Counts match Python tiktoken's `encode(text, disallowed_special=())` exactly, except that a
//! piece of over 100 KB (an unbroken run of letters or whitespace) is merged in chunks: text
//! that looks like a special token (`<|endoftext|>`) is encoded as plain text, as a client's
//! message would be. `tests/data/token_counts.json` (made by `scripts/token-counts`) pins
//! this, and `tokens::tests` compares with tiktoken-rs over random text.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use super::bpe::Counter;
use crate::openai::chat::{ChatMessage, ChatRequest, MessageContent, Role};

/// Tokens every message costs on top of its text (`<|start|>{role}<|message|>…<|end|>`),
/// per OpenAI's cookbook `num_tokens_from_messages` for all current chat models.
const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens a message's `name` costs on top of its text, per the same cookbook.
const TOKENS_PER_NAME: u64 = 1;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING: u64 = 3;

/// A BPE encoding Sentinel can count with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-4.5, GPT-5 and the o-series; the default.
    O200kBase,
    /// `cl100k_base`: GPT-4 (and -turbo), GPT-3.5 and the text-embedding models.
    Cl100kBase,
}

impl Encoding {
    /// The encoding's name as tiktoken spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts tokens the way OpenAI's models see them. Build one at start-up and share it.
#[derive(Clone)]
pub struct Tokenizer {
    o200k: Arc<LazyCounter>,
    cl100k: Arc<LazyCounter>,
    overrides: Overrides,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("o200k_built", &self.o200k.is_built())
            .field("cl100k_built", &self.cl100k.is_built())
            .field("overrides", &self.overrides)
            .finish()
    }
}

/// One encoding's counter, built on first use.
struct LazyCounter {
    // `None` only if the split pattern failed to compile, which would be a bug caught by every
    // counting test; counting then falls back to an estimate instead of failing requests (see
    // `count_with`).
    counter: OnceLock<Option<Counter>>,
    build: fn() -> Option<Counter>,
}

impl LazyCounter {
    fn new(build: fn() -> Option<Counter>) -> Arc<Self> {
        Arc::new(Self {
            counter: OnceLock::new(),
            build,
        })
    }

    /// The counter, building it now if nobody has (blocks this thread for a few ms once).
    fn get(&self) -> Option<&Counter> {
        self.counter
            .get_or_init(|| {
                let built = (self.build)();
                // What compiling the automaton freed (1.8 MB at ready, measured).
                crate::memory::release_now();
                built
            })
            .as_ref()
    }

    fn is_built(&self) -> bool {
        self.counter.get().is_some()
    }
}

// === impl Tokenizer ===

impl Tokenizer {
    /// A tokenizer with per-model encoding overrides; the tables are built on first use.
    ///
    /// An override key is an exact model name, or a prefix ending in `*` (`"my-ft-*"`). Exact
    /// names win over prefixes, and the longest prefix wins among prefixes.
    pub fn new(overrides: Vec<(String, Encoding)>) -> Self {
        Self {
            o200k: LazyCounter::new(|| Counter::build(Encoding::O200kBase)),
            cl100k: LazyCounter::new(|| Counter::build(Encoding::Cl100kBase)),
            overrides: Overrides::new(overrides),
        }
    }

    /// Builds `model`'s encoding on the blocking pool if it is not built yet, so the counts
    /// that follow on this async task do not stall its worker.
    pub async fn prepare(&self, model: &str) {
        self.prepare_encoding(self.encoding_for(model)).await;
    }

    /// Builds `encoding` on the blocking pool if it is not built yet.
    pub async fn prepare_encoding(&self, encoding: Encoding) {
        let lazy = self.lazy(encoding);
        if !lazy.is_built() {
            let lazy = Arc::clone(lazy);
            // A failed join means the build panicked; counting then builds (or estimates) in
            // place, as a synchronous caller would.
            let _ = tokio::task::spawn_blocking(move || {
                lazy.get();
            })
            .await;
        }
    }

    /// A process-wide tokenizer without overrides, built on first use. Prefer passing a
    /// configured [`Tokenizer`] around; this exists for call sites with no access to one.
    pub fn global() -> &'static Tokenizer {
        static GLOBAL: OnceLock<Tokenizer> = OnceLock::new();
        GLOBAL.get_or_init(|| Tokenizer::new(Vec::new()))
    }

    /// Whether both encodings can be built, i.e. counts are exact rather than estimated
    /// (builds them).
    pub fn is_exact(&self) -> bool {
        self.o200k.get().is_some() && self.cl100k.get().is_some()
    }

    /// The encoding `model` uses: an override if one matches, else OpenAI's published mapping,
    /// else `o200k_base` (what every current OpenAI model uses, and the better guess for an
    /// unknown one).
    pub fn encoding_for(&self, model: &str) -> Encoding {
        let base = base_model(model);
        self.overrides
            .lookup(model)
            .or_else(|| self.overrides.lookup(base))
            .unwrap_or_else(|| builtin_encoding(base))
    }

    /// Tokens of `text` alone, with `model`'s encoding.
    pub fn count_text(&self, model: &str, text: &str) -> u64 {
        count_with(self.counter(self.encoding_for(model)), text)
    }

    /// Tokens the prompt of a chat request costs, by OpenAI's cookbook formula: 3 per message
    /// plus its role and content, 1 more plus the name's tokens for a named message, plus 3 to
    /// prime the reply.
    ///
    /// Beyond the cookbook (approximations, since OpenAI does not publish how these render):
    /// - multi-part content counts the text of its text parts; images, audio and files are not
    ///   counted at all, so such prompts are undercounted;
    /// - an assistant's tool calls count their function name and arguments as text, and a tool
    ///   message its `tool_call_id`;
    /// - `tools` counts as the compact JSON of the definitions, which is near but not equal to
    ///   the TypeScript-like form OpenAI renders them in.
    pub fn count_chat_prompt(&self, model: &str, req: &ChatRequest) -> u64 {
        let counter = self.counter(self.encoding_for(model));
        let mut total = REPLY_PRIMING;
        for message in &req.messages {
            total = total.saturating_add(count_message(counter, message));
        }
        if let Some(tools) = req.tools.as_ref().filter(|tools| !tools.is_empty()) {
            // Serialising typed JSON values cannot fail in practice; if it ever did, the tools
            // go uncounted rather than failing the request.
            if let Ok(json) = serde_json::to_string(tools) {
                total = total.saturating_add(count_with(counter, &json));
            }
        }
        total
    }

    /// Tokens of a completion's text. Same as [`Tokenizer::count_text`]: the reply priming is
    /// already counted on the prompt side.
    pub fn count_completion(&self, model: &str, text: &str) -> u64 {
        self.count_text(model, text)
    }

    fn lazy(&self, encoding: Encoding) -> &Arc<LazyCounter> {
        match encoding {
            Encoding::O200kBase => &self.o200k,
            Encoding::Cl100kBase => &self.cl100k,
        }
    }

    fn counter(&self, encoding: Encoding) -> Option<&Counter> {
        self.lazy(encoding).get()
    }
}

/// One message's share of the prompt: overhead, role, content, name, tool calls.
fn count_message(counter: Option<&Counter>, message: &ChatMessage) -> u64 {
    let mut total = TOKENS_PER_MESSAGE.saturating_add(count_with(counter, role_name(message.role)));
    match &message.content {
        Some(MessageContent::Text(text)) => total = total.saturating_add(count_with(counter, text)),
        Some(MessageContent::Parts(parts)) => {
            // Each text part on its own: no joined copy of a possibly large content.
            for text in parts.iter().filter_map(|part| part.text.as_deref()) {
                total = total.saturating_add(count_with(counter, text));
            }
        }
        None => {}
    }
    if let Some(name) = &message.name {
        total = total
            .saturating_add(TOKENS_PER_NAME)
            .saturating_add(count_with(counter, name));
    }
    for call in message.tool_calls.iter().flatten() {
        total = total
            .saturating_add(count_with(counter, &call.function.name))
            .saturating_add(count_with(counter, &call.function.arguments));
    }
    if let Some(id) = &message.tool_call_id {
        total = total.saturating_add(count_with(counter, id));
    }
    total
}

/// Ordinary encoding: special-token text is plain text, as with tiktoken's
/// `encode(text, disallowed_special=())`.
fn count_with(counter: Option<&Counter>, text: &str) -> u64 {
    let tokens = match counter {
        Some(counter) => counter.count(text),
        None => estimate(text),
    };
    u64::try_from(tokens).unwrap_or(u64::MAX)
}

/// About four bytes per token for English text; used only where exact counting is impossible.
fn estimate(text: &str) -> usize {
    text.len().div_ceil(4)
}

/// The role as it appears in the rendered prompt.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Function => "function",
    }
}

/// The bare model id: no routing prefix (`openai/gpt-4o` → `gpt-4o`) and no fine-tune
/// wrapper (`ft:gpt-4o-mini:org::id` → `gpt-4o-mini`), since both use the base model's encoding.
fn base_model(model: &str) -> &str {
    let model = model.rsplit('/').next().unwrap_or(model);
    match model.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or(rest),
        None => model,
    }
}

/// OpenAI's published model → encoding mapping; unknown models get `o200k_base`.
fn builtin_encoding(model: &str) -> Encoding {
    // "gpt-4-" rather than "gpt-4" so gpt-4o, gpt-4.1 and gpt-4.5 (o200k) do not match.
    let cl100k = model == "gpt-4"
        || model.starts_with("gpt-4-")
        || model.starts_with("gpt-3.5")
        || model.starts_with("gpt-35-") // Azure's spelling
        || model.starts_with("text-embedding-3-")
        || model.starts_with("text-embedding-ada-002");
    if cl100k {
        Encoding::Cl100kBase
    } else {
        Encoding::O200kBase
    }
}

// === impl Overrides ===

/// Configured model → encoding overrides, split so lookups need no parsing.
#[derive(Clone, Debug, Default)]
struct Overrides {
    exact: HashMap<String, Encoding>,
    /// Sorted longest first, so the most specific prefix wins.
    prefixes: Vec<(String, Encoding)>,
}

impl Overrides {
    fn new(entries: Vec<(String, Encoding)>) -> Self {
        let mut overrides = Self::default();
        for (key, encoding) in entries {
            match key.strip_suffix('*') {
                Some(prefix) => overrides.prefixes.push((prefix.to_owned(), encoding)),
                None => {
                    overrides.exact.insert(key, encoding);
                }
            }
        }
        overrides
            .prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        overrides
    }

    fn lookup(&self, model: &str) -> Option<Encoding> {
        self.exact.get(model).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| model.starts_with(prefix.as_str()))
                .map(|(_, encoding)| *encoding)
        })
    }
}

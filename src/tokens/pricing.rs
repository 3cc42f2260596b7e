//! Model prices and the cost of a request, in integer money.
//!
//! Prices are written in `config/pricing.toml` (and in a user's `[pricing."model"]` overrides)
//! as USD per million tokens, the unit providers publish. They are parsed once into pico-USD
//! per token (`$0.15 / 1M tokens` = `150_000` pico-USD per token) from the number's exact
//! decimal form, so no binary-float error ever reaches a cost. Costs are summed in pico-USD and
//! rounded half-up once, to nano-USD, the unit records and budgets store: summing a million
//! records then gives exactly the sum of their costs.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::openai::usage::TokenCounts;

/// Pico-USD per nano-USD.
const PICO_PER_NANO: u128 = 1_000;
/// Nano-USD per USD.
const NANO_PER_USD: u64 = 1_000_000_000;
/// Decimal places a per-million price may have: one more would be a fraction of a pico-USD
/// per token.
const MAX_PRICE_DECIMALS: usize = 6;
/// Pico-USD per token for one USD per million tokens.
const PICO_PER_TOKEN_PER_USD_PER_MILLION: u64 = 1_000_000;

/// A model's prices in pico-USD per token, ready for integer arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Uncached prompt tokens.
    pub input: u64,
    /// Completion tokens that are not reasoning.
    pub output: u64,
    /// Prompt tokens read from the provider's prompt cache; defaults to `input`.
    pub cached_input: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic); defaults to `input`.
    pub cache_write: u64,
    /// Reasoning tokens; defaults to `output`, which is how OpenAI bills them.
    pub reasoning: u64,
}

/// One model's prices as written in a file: USD per million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// USD per million uncached prompt tokens.
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
    /// USD per million cache-read prompt tokens; `input` when absent.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// USD per million cache-write prompt tokens; `input` when absent.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// USD per million reasoning tokens; `output` when absent.
    #[serde(default)]
    pub reasoning: Option<f64>,
    /// Where the price comes from and when it was checked; for people, not used in costing.
    #[serde(default)]
    pub source: Option<String>,
}

/// Why a pricing file or override was refused. Every price error names the model and field.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The file is not valid TOML or does not have the `[models."id"]` shape.
    #[error("pricing file is invalid: {0}")]
    Toml(#[from] toml::de::Error),
    /// A price below zero.
    #[error("price `{field}` of model `{model}` is negative ({value})")]
    Negative {
        model: String,
        field: &'static str,
        value: f64,
    },
    /// NaN or infinity.
    #[error("price `{field}` of model `{model}` is not a finite number ({value})")]
    NotFinite {
        model: String,
        field: &'static str,
        value: f64,
    },
    /// More decimals than a whole pico-USD per token can hold.
    #[error(
        "price `{field}` of model `{model}` has more than {MAX_PRICE_DECIMALS} decimal places \
         ({value} USD per million tokens)"
    )]
    TooPrecise {
        model: String,
        field: &'static str,
        value: f64,
    },
    /// A price whose pico-USD form does not fit in 64 bits.
    #[error("price `{field}` of model `{model}` is too large ({value})")]
    TooLarge {
        model: String,
        field: &'static str,
        value: f64,
    },
}

/// Prices by model id. Built once at start-up (built-in file plus user overrides), then
/// read-only.
#[derive(Debug, Clone, Default)]
pub struct PricingTable {
    // A BTreeMap so `models()` (check-config output) is sorted; with a few dozen entries a
    // lookup is as cheap as hashing.
    prices: BTreeMap<String, Price>,
}

/// The shape of `config/pricing.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    #[serde(default)]
    models: BTreeMap<String, PriceEntry>,
}

// === impl PricingTable ===

impl PricingTable {
    /// The prices shipped in `config/pricing.toml`, compiled into the binary.
    pub fn builtin() -> Result<Self, PricingError> {
        Self::from_toml(include_str!("../../config/pricing.toml"))
    }

    /// Parses a pricing file: `[models."gpt-4o-mini"]` tables of USD per million tokens.
    pub fn from_toml(text: &str) -> Result<Self, PricingError> {
        let file: PricingFile = toml::from_str(text)?;
        Self::default().with_overrides(file.models.iter().map(|(id, e)| (id.as_str(), e)))
    }

    /// Adds models or replaces them whole (an override does not inherit the built-in entry's
    /// optional fields: its own defaults apply).
    pub fn with_overrides<'a>(
        mut self,
        overrides: impl IntoIterator<Item = (&'a str, &'a PriceEntry)>,
    ) -> Result<Self, PricingError> {
        for (model, entry) in overrides {
            let price = Price::from_entry(model, entry)?;
            self.prices.insert(model.to_owned(), price);
        }
        Ok(self)
    }

    /// The price of `model`: the exact id; else the id without a routing prefix
    /// (`openai/gpt-4o` → `gpt-4o`); else the longest known id that the model extends by a
    /// date or `latest` suffix (`gpt-4o-2024-08-06` → `gpt-4o`,
    /// `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`).
    ///
    /// Only date-like suffixes are stripped: `o3-pro` or `gpt-4o-audio-preview` are priced
    /// differently from `o3` and `gpt-4o`, and an unknown price (flagged `cost_unknown`) is
    /// better than a wrong one. Fine-tuned ids (`ft:…`) are never priced as their base model
    /// for the same reason.
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(price) = self.prices.get(model) {
            return Some(*price);
        }
        let bare = model.rsplit('/').next().unwrap_or(model);
        if let Some(price) = self.prices.get(bare) {
            return Some(*price);
        }
        // Right to left over '-' boundaries, so the longest known prefix wins
        // (gpt-4o-mini-2024-07-18 is gpt-4o-mini, not gpt-4o).
        bare.match_indices('-').rev().find_map(|(at, _)| {
            let (prefix, suffix) = (&bare[..at], &bare[at + 1..]);
            if is_version_suffix(suffix) {
                self.prices.get(prefix).copied()
            } else {
                None
            }
        })
    }

    /// The priced model ids, sorted.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.prices.keys().map(String::as_str)
    }
}

/// Whether `suffix` is a snapshot date or alias that does not change the price:
/// `2024-08-06`, `20250929`, `0613` (OpenAI's old MMDD snapshots) or `latest`.
fn is_version_suffix(suffix: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if suffix == "latest" || digits(suffix, 8) || digits(suffix, 4) {
        return true;
    }
    let mut parts = suffix.split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(y), Some(m), Some(d), None) if digits(y, 4) && digits(m, 2) && digits(d, 2)
    )
}

// === impl Price ===

impl Price {
    /// Converts a file entry, applying the defaults for absent fields.
    fn from_entry(model: &str, entry: &PriceEntry) -> Result<Self, PricingError> {
        let field = |name: &'static str, value: f64| pico_per_token(model, name, value);
        let input = field("input", entry.input)?;
        let output = field("output", entry.output)?;
        Ok(Self {
            input,
            output,
            cached_input: entry
                .cached_input
                .map_or(Ok(input), |v| field("cached_input", v))?,
            cache_write: entry
                .cache_write
                .map_or(Ok(input), |v| field("cache_write", v))?,
            reasoning: entry
                .reasoning
                .map_or(Ok(output), |v| field("reasoning", v))?,
        })
    }
}

/// USD per million tokens → pico-USD per token, exactly.
///
/// The float is printed with `{}`, which gives the shortest decimal that reads back as the same
/// float: the number as it was written in the file (`0.15`, not `0.1499999…`). That decimal is
/// then scaled by 10^6 with integer arithmetic.
fn pico_per_token(model: &str, field: &'static str, value: f64) -> Result<u64, PricingError> {
    let model = model.to_owned();
    if !value.is_finite() {
        return Err(PricingError::NotFinite {
            model,
            field,
            value,
        });
    }
    if value < 0.0 {
        return Err(PricingError::Negative {
            model,
            field,
            value,
        });
    }
    // abs() turns -0.0 (which passed the check above) into 0.0, so no '-' is printed.
    let text = value.abs().to_string();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if fraction.len() > MAX_PRICE_DECIMALS {
        return Err(PricingError::TooPrecise {
            model,
            field,
            value,
        });
    }
    let too_large = || PricingError::TooLarge {
        model: model.clone(),
        field,
        value,
    };
    // `{}` of a finite non-negative f64 is plain digits, so these parses only fail on overflow.
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut scaled_fraction = 0_u64;
    for position in 0..MAX_PRICE_DECIMALS {
        let digit = fraction
            .as_bytes()
            .get(position)
            .map_or(0, |b| u64::from(b.wrapping_sub(b'0')));
        scaled_fraction = scaled_fraction * 10 + digit;
    }
    whole
        .checked_mul(PICO_PER_TOKEN_PER_USD_PER_MILLION)
        .and_then(|w| w.checked_add(scaled_fraction))
        .ok_or_else(too_large)
}

// === cost ===

/// The cost of one request in nano-USD, rounded half-up from the exact pico-USD sum.
///
/// `counts` is normalised the OpenAI way: `prompt` includes the cached (`cached`) and
/// cache-write (`cache_write`) tokens, and `completion` includes `reasoning`. OpenAI reports
/// that shape directly (it has no cache writes); for Anthropic the provider adapter builds
/// `prompt = input_tokens + cache_read_input_tokens + cache_creation_input_tokens` and sets
/// `cached` / `cache_write` from the two cache fields (`providers/anthropic.rs`), so one
/// formula serves both:
///
/// ```text
/// (prompt − cached − cache_write) × input + cached × cached_input + cache_write × cache_write
///   + (completion − reasoning) × output + reasoning × reasoning
/// ```
///
/// Subtractions saturate: a provider reporting more cached than prompt tokens is charged for
/// what it reported, never for negative tokens. The result saturates at `i64::MAX`.
pub fn cost_nano(price: &Price, counts: &TokenCounts) -> i64 {
    let uncached = counts
        .prompt
        .saturating_sub(counts.cached)
        .saturating_sub(counts.cache_write);
    let plain_completion = counts.completion.saturating_sub(counts.reasoning);
    let pico = [
        (uncached, price.input),
        (counts.cached, price.cached_input),
        (counts.cache_write, price.cache_write),
        (plain_completion, price.output),
        (counts.reasoning, price.reasoning),
    ]
    .into_iter()
    // u64 × u64 always fits in u128; only the sum of five could (absurdly) overflow.
    .fold(0_u128, |sum, (tokens, rate)| {
        sum.saturating_add(u128::from(tokens) * u128::from(rate))
    });
    let nano = pico.saturating_add(PICO_PER_NANO / 2) / PICO_PER_NANO;
    i64::try_from(nano).unwrap_or(i64::MAX)
}

/// Exact decimal USD for a nano-USD amount, trailing zeros trimmed: `1234` → `"0.000001234"`,
/// `1_500_000_000` → `"1.5"`, `0` → `"0"`.
pub fn format_usd(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    let magnitude = nano.unsigned_abs();
    let whole = magnitude / NANO_PER_USD;
    let fraction = magnitude % NANO_PER_USD;
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let digits = format!("{fraction:09}");
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

/// A nano-USD amount as an f64 of USD, for JSON display only; never sum these.
#[expect(
    clippy::cast_precision_loss,
    reason = "exact below 2^53 nano-USD (about $9 million); display only"
)]
pub fn usd_f64(nano: i64) -> f64 {
    // One correctly rounded division: the nearest f64 to the exact decimal amount.
    nano as f64 / 1e9
}

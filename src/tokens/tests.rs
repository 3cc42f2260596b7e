//! Tokenizer checks against Python tiktoken's counts, and pricing golden tests.

use serde::Deserialize;

use super::bpe::tests_support::{lookup, probe_distances, vocabulary_len};
use super::*;
use crate::openai::chat::ChatRequest;
use crate::openai::usage::{TokenCounts, Usage};

// === tokenizer ===

/// `tests/data/token_counts.json`, written by `scripts/token-counts` with Python tiktoken.
#[derive(Deserialize)]
struct Golden {
    models: GoldenModels,
    texts: Vec<GoldenText>,
    chats: Vec<GoldenChat>,
}

#[derive(Deserialize)]
struct GoldenModels {
    o200k_base: String,
    cl100k_base: String,
}

#[derive(Deserialize)]
struct GoldenText {
    text: String,
    o200k_base: u64,
    cl100k_base: u64,
}

#[derive(Deserialize)]
struct GoldenChat {
    request: ChatRequest,
    o200k_base: u64,
    cl100k_base: u64,
}

fn golden() -> Golden {
    serde_json::from_str(include_str!("../../tests/data/token_counts.json")).unwrap()
}

fn tokenizer() -> &'static Tokenizer {
    // One shared instance: building the tables is the slow part of these tests.
    Tokenizer::global()
}

#[test]
fn text_counts_equal_python_tiktoken() {
    let golden = golden();
    let tok = tokenizer();
    assert!(tok.is_exact());
    assert!(golden.texts.len() >= 40);
    assert_eq!(
        tok.encoding_for(&golden.models.o200k_base),
        Encoding::O200kBase
    );
    assert_eq!(
        tok.encoding_for(&golden.models.cl100k_base),
        Encoding::Cl100kBase
    );
    let mut mismatches = Vec::new();
    for entry in &golden.texts {
        let o200k = tok.count_text(&golden.models.o200k_base, &entry.text);
        let cl100k = tok.count_text(&golden.models.cl100k_base, &entry.text);
        if (o200k, cl100k) != (entry.o200k_base, entry.cl100k_base) {
            mismatches.push(format!(
                "{:?}: rust ({o200k}, {cl100k}) python ({}, {})",
                entry.text, entry.o200k_base, entry.cl100k_base
            ));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[test]
fn chat_prompt_counts_equal_python_cookbook_formula() {
    let golden = golden();
    let tok = tokenizer();
    for entry in &golden.chats {
        let o200k = tok.count_chat_prompt(&golden.models.o200k_base, &entry.request);
        let cl100k = tok.count_chat_prompt(&golden.models.cl100k_base, &entry.request);
        assert_eq!(
            (o200k, cl100k),
            (entry.o200k_base, entry.cl100k_base),
            "{:?}",
            entry.request.messages
        );
    }
}

#[test]
fn encodings_follow_openai_model_families() {
    let tok = tokenizer();
    for model in [
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
        "chatgpt-4o-latest",
        "gpt-4.1-nano",
        "gpt-4.5-preview",
        "o1",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-nano",
        "llama-3-70b",
        "",
        "openai/gpt-4o",
        "ft:gpt-4o-mini:acme::abc123",
    ] {
        assert_eq!(tok.encoding_for(model), Encoding::O200kBase, "{model}");
    }
    for model in [
        "gpt-4",
        "gpt-4-0613",
        "gpt-4-turbo",
        "gpt-4-turbo-2024-04-09",
        "gpt-3.5-turbo",
        "gpt-35-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "openai/gpt-4",
        "azure/openai/gpt-3.5-turbo-0125",
        "ft:gpt-3.5-turbo:acme::x",
    ] {
        assert_eq!(tok.encoding_for(model), Encoding::Cl100kBase, "{model}");
    }
}

#[test]
fn overrides_win_exact_first_then_longest_prefix() {
    let tok = Tokenizer::new(vec![
        ("my-*".to_owned(), Encoding::Cl100kBase),
        ("my-new-*".to_owned(), Encoding::O200kBase),
        ("my-new-legacy".to_owned(), Encoding::Cl100kBase),
        ("gpt-4o".to_owned(), Encoding::Cl100kBase),
    ]);
    assert_eq!(tok.encoding_for("my-model"), Encoding::Cl100kBase);
    assert_eq!(tok.encoding_for("my-new-model"), Encoding::O200kBase);
    assert_eq!(tok.encoding_for("my-new-legacy"), Encoding::Cl100kBase);
    assert_eq!(tok.encoding_for("gpt-4o"), Encoding::Cl100kBase);
    assert_eq!(tok.encoding_for("vllm/gpt-4o"), Encoding::Cl100kBase);
    // An exact override does not leak onto longer names.
    assert_eq!(tok.encoding_for("gpt-4o-mini"), Encoding::O200kBase);
    assert_eq!(tok.count_text("gpt-4o", "hello world"), 2);
}

#[test]
fn special_token_text_is_counted_as_plain_text() {
    let tok = tokenizer();
    assert!(tok.count_text("gpt-4o", "<|endoftext|>") > 1);
    assert_eq!(
        tok.count_completion("gpt-4o", "<|endoftext|>"),
        tok.count_text("gpt-4o", "<|endoftext|>")
    );
}

#[test]
fn an_empty_chat_costs_only_the_reply_priming() {
    let req: ChatRequest = serde_json::from_str(r#"{"model":"gpt-4o","messages":[]}"#).unwrap();
    assert_eq!(tokenizer().count_chat_prompt("gpt-4o", &req), 3);
    let req: ChatRequest =
        serde_json::from_str(r#"{"model":"gpt-4o","messages":[],"tools":[]}"#).unwrap();
    assert_eq!(tokenizer().count_chat_prompt("gpt-4o", &req), 3);
}

#[test]
fn pathological_inputs_are_counted_without_panicking() {
    let tok = tokenizer();
    let inputs = [
        " ".repeat(50_000),
        "\n".repeat(20_000),
        " \t\r\n".repeat(10_000),
        "a".repeat(5_000),
        "😀".repeat(5_000),
        "\u{0301}".repeat(5_000),
        "1".repeat(10_000),
        "<|endoftext|>".repeat(1_000),
        "\0".repeat(1_000),
    ];
    for text in &inputs {
        for model in ["gpt-4o", "gpt-4"] {
            let n = tok.count_text(model, text);
            assert!(n > 0 && n <= text.len() as u64, "{model}: {n}");
        }
    }
}

#[test]
fn whitespace_runs_too_long_for_tiktoken_are_counted() {
    let tok = tokenizer();
    // Python tiktoken and tiktoken-rs both overflow their regex stack on a run this long; the
    // automaton splits it like any other, and the run is merged in bounded chunks.
    let run = 1_500_000;
    let text = " ".repeat(run) + "x";
    for model in ["gpt-4o", "gpt-4"] {
        let whole = tok.count_text(model, &text);
        // The run minus one space, then " x": the run's count is the same as for a run that
        // ends the text one space shorter.
        let alone = tok.count_text(model, &" ".repeat(run - 1));
        assert_eq!(whole, alone + 1, "{model}");
        assert!(whole < run as u64 / 4, "{model}: {whole}");
    }
}

#[test]
fn pieces_past_the_merge_limit_are_merged_in_bounded_chunks() {
    use super::bpe::tests_support::chunks;

    let short = "word".repeat(20_000);
    assert_eq!(chunks(&short), vec![short.as_str()]);
    // Multi-byte chars across every cut: each chunk ends on a char boundary.
    let long = format!("{}{}", "ab".repeat(60_000), "é".repeat(70_001));
    let parts = chunks(&long);
    assert_eq!(parts.concat(), long);
    assert_eq!(parts.len(), 3);
    assert!(
        parts.iter().all(|part| part.len() <= 100_000),
        "{:?}",
        parts.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    // A piece of 120 KB (two chunks) still counts within a token or two of tiktoken-rs.
    let letters = "ab".repeat(60_000);
    for (model, expected) in tiktoken_rs_counts(&letters) {
        let counted = tokenizer().count_text(model, &letters);
        assert!(
            counted.abs_diff(expected) <= 2,
            "{model}: {counted} vs {expected}"
        );
    }
}

/// What tiktoken-rs's `encode_ordinary` counts for `text`, by a model of each encoding.
fn tiktoken_rs_counts(text: &str) -> [(&'static str, u64); 2] {
    [
        ("gpt-4o", tiktoken_rs::o200k_base_singleton()),
        ("gpt-4", tiktoken_rs::cl100k_base_singleton()),
    ]
    .map(|(model, table)| (model, table.encode_ordinary(text).len() as u64))
}

/// Text drawn from the characters tiktoken's split patterns tell apart: cased and uncased
/// letters, marks, digits of two scripts, each kind of whitespace, punctuation, contractions
/// and special-token text.
fn split_edge_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let atoms = prop::sample::select(vec![
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\r",
        "\u{a0}",
        "\u{3000}",
        "\u{2028}",
        "a",
        "Z",
        "hello",
        "World",
        "ABC",
        "é",
        "ß",
        "ſ",
        "K",
        "ǅ",
        "ʰ",
        "中文",
        "\u{301}",
        "١٢٣",
        "7",
        "1234567",
        "'s",
        "'T",
        "'re",
        "'LL",
        "'",
        ".",
        "/",
        "!?",
        "\"",
        "😀",
        "<|endoftext|>",
        "\0",
        "-",
        "_",
        "\u{200d}",
        "ﬀ",
    ]);
    prop::collection::vec(atoms, 0..48).prop_map(|parts| parts.concat())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// The automaton split and the compact merge count exactly what tiktoken-rs encodes.
    #[test]
    fn counts_equal_tiktoken_rs_on_random_text(text in split_edge_text()) {
        for (model, expected) in tiktoken_rs_counts(&text) {
            proptest::prop_assert_eq!(tokenizer().count_text(model, &text), expected, "{} {:?}", model, text);
        }
    }

    /// Long runs of letters are single pieces of 100 bytes or more: the heap merge.
    #[test]
    fn long_pieces_count_as_tiktoken_rs_does(text in "[abxqz]{100,400}|[aeé]{60,200}") {
        for (model, expected) in tiktoken_rs_counts(&text) {
            proptest::prop_assert_eq!(tokenizer().count_text(model, &text), expected, "{} {:?}", model, text);
        }
    }
}

#[test]
fn long_pieces_merge_as_tiktoken_rs_does() {
    // Pieces of 100 bytes or more take the heap merge; these have no single token.
    let inputs = [
        "a".repeat(5_000),
        "ab".repeat(300),
        "xq7".repeat(200),
        "Zx".repeat(80),
        "😀".repeat(40),
        "\u{0301}".repeat(300),
        "-=".repeat(120),
        " ".repeat(3_000),
        "\n".repeat(500),
    ];
    for text in &inputs {
        for (model, expected) in tiktoken_rs_counts(text) {
            assert_eq!(
                tokenizer().count_text(model, text),
                expected,
                "{model}: {text:.20?}"
            );
        }
    }
}

#[test]
fn every_ordinary_token_is_in_the_compact_table() {
    assert_eq!(vocabulary_len(Encoding::O200kBase), 199_998);
    assert_eq!(vocabulary_len(Encoding::Cl100kBase), 100_256);
    for (encoding, reference, len) in [
        (
            Encoding::O200kBase,
            tiktoken_rs::o200k_base_singleton(),
            199_998,
        ),
        (
            Encoding::Cl100kBase,
            tiktoken_rs::cl100k_base_singleton(),
            100_256,
        ),
    ] {
        for rank in 0..len {
            let bytes = reference.decode_bytes(&[rank]).unwrap();
            assert_eq!(
                lookup(encoding, &bytes),
                Some((rank, bytes.as_slice())),
                "{encoding} rank {rank}"
            );
        }
        // Bytes that are no token: two tokens' worth, and none at all.
        assert_eq!(lookup(encoding, b"<|endoftext|>"), None);
        assert_eq!(lookup(encoding, b""), None);
    }
}

#[test]
fn compiled_tables_keep_probes_short() {
    for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
        let distances = probe_distances(encoding);
        let total: usize = distances.iter().sum();
        let longest = distances.iter().max().copied().unwrap_or(0);
        // Linear probing at most 40 % full averages about a third of a step for a good hash.
        assert!(
            total * 2 < distances.len(),
            "{encoding}: {total} steps over {} tokens",
            distances.len()
        );
        assert!(longest < 64, "{encoding}: longest distance {longest}");
    }
}

// === pricing ===

fn table() -> PricingTable {
    PricingTable::builtin().unwrap()
}

fn entry(input: f64, output: f64) -> PriceEntry {
    PriceEntry {
        input,
        output,
        cached_input: None,
        cache_write: None,
        reasoning: None,
        source: None,
    }
}

#[test]
fn builtin_table_prices_every_listed_model_with_a_source() {
    let table = table();
    let listed = [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o1",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-3.5-turbo",
        "gpt-4-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "claude-opus-4-1",
        "claude-opus-4",
        "claude-sonnet-4-5",
        "claude-sonnet-4",
        "claude-3-7-sonnet",
        "claude-3-5-haiku",
        "claude-haiku-4-5",
    ];
    for model in listed {
        assert!(table.price(model).is_some(), "{model}");
    }
    let file: toml::Table = toml::from_str(include_str!("../../config/pricing.toml")).unwrap();
    for (model, entry) in file["models"].as_table().unwrap() {
        assert!(entry.get("source").is_some(), "{model} has no source");
    }
    assert!(table.models().count() >= listed.len());
    assert!(table
        .models()
        .zip(table.models().skip(1))
        .all(|(a, b)| a < b));
}

#[test]
fn prices_are_parsed_exactly_into_pico_usd_per_token() {
    let table = PricingTable::from_toml(
        r#"
        [models."m"]
        input = 0.15
        output = 0.6
        cached_input = 0.075
        [models."tiny"]
        input = 0.000001
        output = 1234.5
        [models."zero"]
        input = 0
        output = -0.0
        "#,
    )
    .unwrap();
    assert_eq!(
        table.price("m").unwrap(),
        Price {
            input: 150_000,
            output: 600_000,
            cached_input: 75_000,
            cache_write: 150_000,
            reasoning: 600_000,
        }
    );
    let tiny = table.price("tiny").unwrap();
    assert_eq!((tiny.input, tiny.output), (1, 1_234_500_000));
    assert_eq!(table.price("zero").unwrap().output, 0);
}

#[test]
fn bad_prices_are_refused_naming_model_and_field() {
    let cases = [
        (
            "input = 0.0000001\noutput = 1",
            "input",
            "more than 6 decimal places",
        ),
        ("input = 1\noutput = -0.5", "output", "negative"),
        (
            "input = 1\noutput = 1\ncached_input = nan",
            "cached_input",
            "not a finite",
        ),
        (
            "input = 1\noutput = 1\nreasoning = inf",
            "reasoning",
            "not a finite",
        ),
        ("input = 1e300\noutput = 1", "input", "too large"),
    ];
    for (body, field, problem) in cases {
        let err = PricingTable::from_toml(&format!("[models.\"acme-1\"]\n{body}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`acme-1`"), "{err}");
        assert!(err.contains(&format!("`{field}`")), "{err}");
        assert!(err.contains(problem), "{err}");
    }
    let err =
        PricingTable::from_toml("[models.\"m\"]\ninput = 1\noutput = 1\ninptu = 2").unwrap_err();
    assert!(err.to_string().contains("inptu"), "{err}");
    assert!(PricingTable::from_toml("[models.\"m\"]\ninput = 1").is_err());
}

#[test]
fn lookup_strips_provider_prefixes_and_snapshot_dates_only() {
    let table = table();
    let gpt_4o = table.price("gpt-4o");
    assert!(gpt_4o.is_some());
    assert_eq!(table.price("gpt-4o-2024-08-06"), gpt_4o);
    assert_eq!(table.price("openai/gpt-4o"), gpt_4o);
    assert_eq!(table.price("openai/gpt-4o-2024-11-20"), gpt_4o);
    assert_eq!(
        table.price("gpt-4o-mini-2024-07-18"),
        table.price("gpt-4o-mini")
    );
    assert_ne!(table.price("gpt-4o-mini"), gpt_4o);
    assert_eq!(
        table.price("claude-sonnet-4-5-20250929"),
        table.price("claude-sonnet-4-5")
    );
    assert_eq!(
        table.price("claude-3-7-sonnet-latest"),
        table.price("claude-3-7-sonnet")
    );
    assert_eq!(
        table.price("gpt-3.5-turbo-0125"),
        table.price("gpt-3.5-turbo")
    );
    for unknown in [
        "llama-3-70b",
        "",
        "-",
        "gpt-4o-",
        "o3-pro",
        "gpt-4o-audio-preview",
        "ft:gpt-4o-mini:acme::abc",
        "claude-opus-4-7",
        "gpt-4o-2024-8-6",
    ] {
        assert_eq!(table.price(unknown), None, "{unknown}");
    }
}

#[test]
fn overrides_replace_and_add_models() {
    let cheap = entry(0.01, 0.02);
    let new = PriceEntry {
        cache_write: Some(0.5),
        ..entry(1.0, 2.0)
    };
    let table = table()
        .with_overrides([("gpt-4o", &cheap), ("acme-1", &new)])
        .unwrap();
    assert_eq!(table.price("gpt-4o").unwrap().input, 10_000);
    assert_eq!(table.price("gpt-4o").unwrap().cached_input, 10_000);
    assert_eq!(table.price("acme-1").unwrap().cache_write, 500_000);
    let bad = entry(-1.0, 0.0);
    assert!(table.with_overrides([("x", &bad)]).is_err());
}

#[test]
fn openai_cost_counts_cached_and_reasoning_inside_their_totals() {
    let usage: Usage = serde_json::from_str(
        r#"{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,
            "prompt_tokens_details":{"cached_tokens":400},
            "completion_tokens_details":{"reasoning_tokens":200}}"#,
    )
    .unwrap();
    let price = table().price("o4-mini-2025-04-16").unwrap();
    // 600 × $1.10 + 400 × $0.275 + 300 × $4.40 + 200 × $4.40, per million tokens.
    let nano = cost_nano(&price, &TokenCounts::from(&usage));
    assert_eq!(nano, 2_970_000);
    assert_eq!(format_usd(nano), "0.00297");

    let with_reasoning_price = PriceEntry {
        reasoning: Some(8.0),
        ..entry(1.1, 4.4)
    };
    let price = PricingTable::default()
        .with_overrides([("r", &with_reasoning_price)])
        .unwrap()
        .price("r")
        .unwrap();
    // 1000 × $1.10 + 300 × $4.40 + 200 × $8.
    assert_eq!(cost_nano(&price, &TokenCounts::from(&usage)), 4_020_000);
}

#[test]
fn anthropic_cost_prices_cache_reads_and_writes_separately() {
    // The Anthropic adapter maps {input 10, cache_read 300, cache_creation 40, output 20} to
    // prompt 350 (all three), cached 300, cache_write 40.
    let counts = TokenCounts {
        prompt: 350,
        completion: 20,
        cached: 300,
        cache_write: 40,
        reasoning: 0,
    };
    let price = table().price("claude-sonnet-4-5-20250929").unwrap();
    // 10 × $3 + 300 × $0.30 + 40 × $3.75 + 20 × $15, per million tokens.
    assert_eq!(cost_nano(&price, &counts), 570_000);
}

#[test]
fn costs_round_half_up_to_nano_usd() {
    let table = PricingTable::default()
        .with_overrides([
            ("half", &entry(0.0005, 0.0)),
            ("below", &entry(0.000_499, 0.0)),
        ])
        .unwrap();
    let tokens = |prompt| TokenCounts {
        prompt,
        ..TokenCounts::default()
    };
    let half = table.price("half").unwrap();
    let below = table.price("below").unwrap();
    assert_eq!(cost_nano(&half, &tokens(1)), 1); // 500 pico
    assert_eq!(cost_nano(&half, &tokens(3)), 2); // 1500 pico
    assert_eq!(cost_nano(&below, &tokens(1)), 0); // 499 pico
    assert_eq!(cost_nano(&below, &tokens(0)), 0);
}

#[test]
fn summed_costs_do_not_drift() {
    let table = table();
    let price = table.price("gpt-4o-mini").unwrap();
    let one = TokenCounts {
        prompt: 7,
        completion: 3,
        ..TokenCounts::default()
    };
    let sum: i64 = (0..10_000).map(|_| cost_nano(&price, &one)).sum();
    let all = TokenCounts {
        prompt: 70_000,
        completion: 30_000,
        ..TokenCounts::default()
    };
    assert_eq!(sum, cost_nano(&price, &all));
    assert_eq!(format_usd(sum), "0.0285");

    // With a cost that is not a whole nano-USD, each request rounds once: the sum differs from
    // the cost at once by at most half a nano-USD per request, and is the same on every run.
    let price = PricingTable::default()
        .with_overrides([("odd", &entry(0.000_777, 0.0))])
        .unwrap()
        .price("odd")
        .unwrap();
    let one = TokenCounts {
        prompt: 1,
        ..TokenCounts::default()
    };
    let sum: i64 = (0..10_000).map(|_| cost_nano(&price, &one)).sum();
    assert_eq!(sum, 10_000);
    let at_once = cost_nano(
        &price,
        &TokenCounts {
            prompt: 10_000,
            ..TokenCounts::default()
        },
    );
    assert_eq!(at_once, 7_770);
    assert!((sum - at_once).abs() <= 10_000 / 2);
}

#[test]
fn inconsistent_or_huge_counts_saturate() {
    let price = table().price("claude-opus-4").unwrap();
    let more_cached_than_prompt = TokenCounts {
        prompt: 10,
        cached: 50,
        completion: 1,
        reasoning: 5,
        ..TokenCounts::default()
    };
    // Charged for the 50 cached and 5 reasoning tokens reported, never for negative ones.
    assert_eq!(
        cost_nano(&price, &more_cached_than_prompt),
        (50 * 1_500_000 + 5 * 75_000_000) / 1_000
    );
    let huge = TokenCounts {
        prompt: u64::MAX,
        completion: u64::MAX,
        cached: 0,
        cache_write: 0,
        reasoning: 0,
    };
    assert_eq!(cost_nano(&price, &huge), i64::MAX);
}

#[test]
fn usd_formats_exactly() {
    assert_eq!(format_usd(0), "0");
    assert_eq!(format_usd(1), "0.000000001");
    assert_eq!(format_usd(1234), "0.000001234");
    assert_eq!(format_usd(1_500_000_000), "1.5");
    assert_eq!(format_usd(1_000_000_000), "1");
    assert_eq!(format_usd(12_345_678_901), "12.345678901");
    assert_eq!(format_usd(-2_500), "-0.0000025");
    assert_eq!(format_usd(i64::MAX), "9223372036.854775807");
    assert_eq!(format_usd(i64::MIN), "-9223372036.854775808");
    assert!((usd_f64(1234) - 0.000_001_234).abs() < f64::EPSILON);
    assert!((usd_f64(1_500_000_000) - 1.5).abs() < f64::EPSILON);
}

#[tokio::test]
async fn tables_are_built_on_first_use_and_only_the_needed_one() {
    let tok = Tokenizer::new(Vec::new());
    let before = format!("{tok:?}");
    assert!(
        before.contains("o200k_built: false") && before.contains("cl100k_built: false"),
        "{before}"
    );
    tok.prepare("gpt-4o").await;
    let after = format!("{tok:?}");
    assert!(
        after.contains("o200k_built: true") && after.contains("cl100k_built: false"),
        "{after}"
    );
    // Clones share the built table.
    let clone = tok.clone();
    assert!(format!("{clone:?}").contains("o200k_built: true"));
    assert_eq!(clone.count_text("gpt-4o", "hello world"), 2);
}

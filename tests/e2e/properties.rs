//! Property tests over the code that reads what others send: request parsing, the OpenAI SSE
//! observer, the Anthropic translation (requests, responses and the stream translator with
//! its byte-level SSE parser) and config loading. Nothing here may panic on any input, and
//! stream handling must not depend on where the network split the bytes.

use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Value};

use sentinel::config::{Config, MapEnv};
use sentinel::context::ApiRequest;
use sentinel::middleware::parse::{parse, BodyKind};
use sentinel::openai::sse::SseObserver;
use sentinel::providers::anthropic::{
    from_messages_response, to_messages_request, StreamTranslator,
};

/// Cuts `bytes` at the given fractions of its length (sorted, deduplicated).
fn split_at_fractions(bytes: &[u8], cuts: &[f64]) -> Vec<Bytes> {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "positions inside a short test buffer"
    )]
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|f| (f * bytes.len() as f64) as usize)
        .collect();
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for end in at {
        pieces.push(Bytes::copy_from_slice(&bytes[start..end]));
        start = end;
    }
    pieces
}

// === strategies ===

/// Text with the characters that break naive parsers: quotes, escapes, newlines, multi-byte
/// UTF-8, `data:` look-alikes.
fn tricky_text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            "[a-zA-Z0-9 ]{1,8}",
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("data: [DONE]".to_owned()),
            Just("é".to_owned()),
            Just("漢字".to_owned()),
            Just("🦀".to_owned()),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

/// One OpenAI stream event as the upstream frames it.
fn openai_event() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => tricky_text().prop_map(|t| {
            let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                "model": "m", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]});
            format!("data: {chunk}\n\n")
        }),
        1 => (0_u64..5000, 0_u64..5000).prop_map(|(p, c)| {
            let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                "model": "m", "choices": [],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}});
            format!("data: {chunk}\n\n")
        }),
        1 => Just(": keep-alive\n\n".to_owned()),
        1 => Just("data: [DONE]\n\n".to_owned()),
    ]
}

/// A well-formed Anthropic Messages stream with some text deltas.
fn anthropic_stream() -> impl Strategy<Value = String> {
    (
        vec(tricky_text(), 0..6),
        1_u64..9999,
        1_u64..9999,
        any::<bool>(),
    )
        .prop_map(|(deltas, input, output, crlf)| {
            let mut events = vec![
                (
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_1",
                    "type": "message", "role": "assistant", "model": "claude-x", "content": [],
                    "stop_reason": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
            ];
            for d in deltas {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta",
                    "index": 0, "delta": {"type": "text_delta", "text": d}}),
                ));
            }
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            events.push((
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}}),
            ));
            events.push(("message_stop", json!({"type": "message_stop"})));
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut stream = String::new();
            for (name, data) in events {
                let _ = write!(stream, "event: {name}{nl}data: {data}{nl}{nl}");
            }
            stream
        })
}

/// JSON values shaped like (and often almost) chat requests (also used by `hostile.rs`).
pub fn chatish_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        tricky_text().prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("tool"),
            Just("demo")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(
                (
                    prop_oneof![
                        Just("role"),
                        Just("content"),
                        Just("name"),
                        Just("type"),
                        Just("text"),
                        Just("tool_calls"),
                        Just("function"),
                        Just("arguments"),
                        Just("image_url"),
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    });
    (
        prop_oneof![Just(json!("demo")), Just(json!("")), value.clone()],
        prop_oneof![
            vec(
                (
                    tricky_text(),
                    prop_oneof![Just("user"), Just("system"), Just("assistant")]
                ),
                0..4
            )
            .prop_map(|m| json!(m
                .into_iter()
                .map(|(c, r)| json!({"role": r, "content": c}))
                .collect::<Vec<_>>())),
            value.clone(),
        ],
        vec(
            (
                prop_oneof![
                    Just("max_tokens"),
                    Just("max_completion_tokens"),
                    Just("temperature"),
                    Just("stream"),
                    Just("stream_options"),
                    Just("n"),
                    Just("tools"),
                    Just("tool_choice"),
                    Just("stop"),
                    Just("top_p"),
                    Just("response_format"),
                    Just("user"),
                    Just("seed"),
                ],
                value,
            ),
            0..4,
        ),
    )
        .prop_map(|(model, messages, extra)| {
            let mut body = json!({"model": model, "messages": messages});
            for (k, v) in extra {
                body[k] = v;
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Passing through (no usage to strip), the observer returns exactly the bytes it was
    /// given, however they were split, and reads the same usage and end marker.
    #[test]
    fn sse_observer_passes_any_bytes_through_unchanged(
        events in vec(openai_event(), 0..12),
        noise in vec(any::<u8>(), 0..64),
        cuts in vec(0.0_f64..1.0, 0..10),
    ) {
        let mut input = events.concat().into_bytes();
        input.extend_from_slice(&noise);
        let mut whole = SseObserver::new(false);
        let mut out_whole = whole.observe(Bytes::from(input.clone())).to_vec();
        out_whole.extend_from_slice(&whole.finish());
        let mut split = SseObserver::new(false);
        let mut out_split = Vec::new();
        for piece in split_at_fractions(&input, &cuts) {
            out_split.extend_from_slice(&split.observe(piece));
        }
        out_split.extend_from_slice(&split.finish());
        prop_assert_eq!(&out_whole, &input);
        prop_assert_eq!(&out_split, &input);
        prop_assert_eq!(whole.usage(), split.usage());
        prop_assert_eq!(whole.is_done(), split.is_done());
    }

    /// Stripping the usage chunk and assembling the text do not depend on the splits either,
    /// and only usage-only chunks are removed.
    #[test]
    fn sse_observer_strips_and_assembles_the_same_for_any_split(
        events in vec(openai_event(), 0..12),
        cuts in vec(0.0_f64..1.0, 0..10),
    ) {
        let input = events.concat().into_bytes();
        let run = |pieces: Vec<Bytes>| {
            let mut o = SseObserver::new(true);
            o.collect_text();
            let mut out = Vec::new();
            for p in pieces {
                out.extend_from_slice(&o.observe(p));
            }
            out.extend_from_slice(&o.finish());
            (out, o.usage().cloned(), o.take_text())
        };
        let whole = run(vec![Bytes::from(input.clone())]);
        let split = run(split_at_fractions(&input, &cuts));
        prop_assert_eq!(&whole, &split);
        let kept: String = events
            .iter()
            .filter(|e| !e.contains("\"usage\""))
            .cloned()
            .collect();
        prop_assert_eq!(String::from_utf8(whole.0).unwrap(), kept);
    }

    /// The Anthropic stream translator gives the same OpenAI bytes for any split of a
    /// well-formed stream (CRLF or LF), ends with `[DONE]` and reports the stream's usage.
    #[test]
    fn anthropic_stream_translation_ignores_splits(
        stream in anthropic_stream(),
        cuts in vec(0.0_f64..1.0, 0..12),
    ) {
        let run = |pieces: Vec<Bytes>| {
            let mut t = StreamTranslator::with_created("demo", 1);
            let mut out = Vec::new();
            for p in pieces {
                out.extend_from_slice(&t.push(&p).unwrap());
            }
            out.extend_from_slice(&t.finish().unwrap());
            (out, t.usage().cloned())
        };
        let whole = run(vec![Bytes::from(stream.clone())]);
        let split = run(split_at_fractions(stream.as_bytes(), &cuts));
        prop_assert_eq!(&whole, &split);
        prop_assert!(whole.0.ends_with(b"data: [DONE]\n\n"));
        prop_assert!(whole.1.is_some());
    }

    /// Arbitrary bytes as an Anthropic stream: no panic, and the verdict (the bytes sent
    /// before the first error, and whether there was one) does not depend on the splits.
    #[test]
    fn anthropic_stream_translator_survives_any_bytes(
        prefix in anthropic_stream(),
        noise in vec(any::<u8>(), 0..256),
        cuts in vec(0.0_f64..1.0, 0..12),
    ) {
        let mut input = prefix.into_bytes();
        input.truncate(input.len() / 2);
        input.extend_from_slice(&noise);
        let run = |pieces: Vec<Bytes>| {
            let mut t = StreamTranslator::with_created("demo", 1);
            let mut out = Vec::new();
            for p in pieces {
                match t.push(&p) {
                    Ok(b) => out.extend_from_slice(&b),
                    Err(_) => return (out, true),
                }
            }
            match t.finish() {
                Ok(b) => { out.extend_from_slice(&b); (out, false) }
                Err(_) => (out, true),
            }
        };
        let whole = run(vec![Bytes::from(input.clone())]);
        let split = run(split_at_fractions(&input, &cuts));
        prop_assert_eq!(whole, split);
    }

    /// Any body: parsing never panics and every refusal is a 4xx; whatever parses can be
    /// translated for Anthropic without panicking (it may be refused as unsupported).
    #[test]
    fn request_parsing_refuses_with_4xx_and_never_panics(body in chatish_json()) {
        let raw = serde_json::to_vec(&body).unwrap();
        match parse(BodyKind::Chat, &raw) {
            Ok(ApiRequest::Chat(chat)) => {
                prop_assert!(!chat.model.trim().is_empty());
                prop_assert!(!chat.messages.is_empty());
                let _ = to_messages_request(&chat, "claude-x");
            }
            Ok(ApiRequest::Embeddings(_)) => prop_assert!(false, "a chat body parsed as embeddings"),
            Err(e) => prop_assert!(e.code.status().is_client_error(), "{e:?}"),
        }
        if let Err(e) = parse(BodyKind::Embeddings, &raw) {
            prop_assert!(e.code.status().is_client_error(), "{e:?}");
        }
    }

    #[test]
    fn raw_bytes_never_panic_the_parsers(raw in vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse(BodyKind::Chat, &raw) {
            prop_assert!(e.code.status().is_client_error());
        }
        let _ = from_messages_response(&raw, "demo");
    }

    /// Anthropic responses of any shape: a completion or an error, never a panic.
    #[test]
    fn anthropic_responses_of_any_shape(body in chatish_json(), text in tricky_text()) {
        let _ = from_messages_response(&serde_json::to_vec(&body).unwrap(), "demo");
        let shaped = json!({"id": "msg", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": text}, body],
            "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}});
        let _ = from_messages_response(&serde_json::to_vec(&shaped).unwrap(), "demo");
    }

    /// Config loading: the shipped config with any line dropped or replaced by junk either
    /// loads or fails with a message; it never panics.
    #[test]
    fn config_loading_never_panics(
        drop_line in any::<prop::sample::Index>(),
        junk in prop_oneof![
            Just(String::new()),
            "[a-z_.]{1,12} = [0-9a-z\"\\[\\]{}.,-]{0,16}",
            "\\[\\[?[a-z_.]{0,12}\\]?\\]?",
            any::<String>(),
        ],
    ) {
        let shipped = include_str!("../../config/sentinel.toml");
        let lines: Vec<&str> = shipped.lines().collect();
        let at = drop_line.index(lines.len());
        let mut edited: Vec<&str> = lines.clone();
        edited[at] = &junk;
        let env = MapEnv::from_pairs([("SENTINEL_DEMO_KEY", "sk-sntl-demo-local-only-0123456789abcdefghijkl")]);
        match Config::from_toml(&edited.join("\n"), Path::new("sentinel.toml"), &env) {
            Ok(_) => {}
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let _ = Config::from_toml(&junk, Path::new("junk.toml"), &env);
    }
}

//! Prompt-injection heuristics: weighted signals combined into a score in 0..=1.
//!
//! Each signal is a case-insensitive pattern with a weight; the score is the noisy-OR of the
//! weights of the signals present, `1 - Π(1 - wᵢ)`, so independent signals reinforce each other
//! without ever passing 1, and repeating one phrase does not raise the score. Signal families:
//! - instruction override: "ignore all previous instructions", "disregard the above",
//!   "forget everything you were told";
//! - role hijack: "you are now DAN", "act as … without restrictions", "developer mode", fake
//!   `system:` / `### system` headers, chat-template control tokens (`<|im_start|>system`,
//!   `[INST]`, `<<SYS>>`);
//! - system-prompt exfiltration: "reveal / print / repeat your system prompt (instructions,
//!   initial prompt)", "repeat the text above";
//! - encoded payloads: base64 blobs whose decoded text itself scores (decoded up to two levels
//!   deep); hiding instructions in an encoding is evidence of intent, so the decoded score is
//!   raised rather than just carried over.
//!
//! Each pattern declares the anchor words it cannot match without; one Aho-Corasick pass finds
//! which anchors occur and only the signals whose anchors are all present run their regex. Benign
//! uses of the same words ("follow the instructions in the manual", "ignore the previous e-mail") carry no
//! override qualifier and do not match.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use regex::Regex;

use super::pii::regex;

/// One heuristic: a pattern and how strongly its presence indicates an injection attempt.
struct Signal {
    pattern: &'static str,
    weight: f64,
    /// Words the pattern cannot match without (case-insensitive): every group must have at least
    /// one word present before the regex runs at all.
    anchors: &'static [&'static [&'static str]],
}

/// The signals. Weights: 0.6+ for phrases that are injection attempts on their own; 0.3–0.4 for
/// cues that also appear in benign role-play or documentation and need corroboration.
const SIGNALS: &[Signal] = &[
    // --- instruction override ---
    Signal {
        pattern: r"(?i)(?-u:\b)(?:ignore|disregard|forget|override|bypass|skip|drop)\s+(?:(?:all|any|every|each|of|the|your|my|these|those|prior\s+to|previous|prior|above|earlier|preceding|foregoing|former|initial|original|system|developer|safety)\s+){1,5}(?:instructions?|prompts?|rules|directions|directives|guidelines|guardrails|constraints|context|commands|messages?|restrictions)(?-u:\b)",
        weight: 0.55,
        anchors: &[
            &[
                "ignore",
                "disregard",
                "forget",
                "override",
                "bypass",
                "skip",
                "drop",
            ],
            &[
                "instruction",
                "prompt",
                "rules",
                "direction",
                "directive",
                "guideline",
                "guardrail",
                "constraint",
                "context",
                "command",
                "message",
                "restriction",
            ],
        ],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)(?:ignore|disregard|forget)\s+(?:all\s+|about\s+)?(?:everything\s+|anything\s+|all\s+|the\s+)?(?:above|before|prior|previously|you\s+(?:were|have\s+been)\s+told|i\s+said|that\s+came\s+before)(?-u:\b)",
        weight: 0.6,
        anchors: &[&["ignore", "disregard", "forget"]],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)forget\s+everything(?-u:\b)",
        weight: 0.45,
        anchors: &[&["forget"]],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)(?:new|updated|real|actual)\s+instructions:",
        weight: 0.35,
        anchors: &[&["instructions:"]],
    },
    // --- role hijack ---
    Signal {
        pattern: r"(?-u:\b)(?:[Yy]ou\s+are\s+(?:now\s+)?|[Aa]ct\s+as\s+|[Bb]ecome\s+)(?:DAN|STAN|DUDE|AIM)(?-u:\b)|(?i:(?-u:\b)do\s+anything\s+now(?-u:\b))",
        weight: 0.7,
        anchors: &[&["dan", "stan", "dude", "aim", "anything"]],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)you\s+are\s+now\s+(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken|free\s+from|no\s+longer\s+bound)",
        weight: 0.6,
        anchors: &[
            &["you"],
            &[
                "unrestricted",
                "unfiltered",
                "uncensored",
                "jailbr",
                "free",
                "bound",
            ],
        ],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)(?:act|behave|respond|pretend|roleplay)\s+(?:as|like|to\s+be)?\s*(?:\S+\s+){0,8}?(?:without|with\s+no|free\s+of)\s+(?:any\s+)?(?:restrictions|limitations|limits|filters|rules|guidelines|censorship|ethics|safety)",
        weight: 0.55,
        anchors: &[
            &["act", "behave", "respond", "pretend", "roleplay"],
            &[
                "restriction",
                "limit",
                "filter",
                "rules",
                "guideline",
                "censor",
                "ethic",
                "safety",
            ],
        ],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)(?:developer|god|jailbreak|dan|unrestricted)\s+mode(?-u:\b)",
        weight: 0.35,
        anchors: &[
            &["mode"],
            &["developer", "god", "jailbreak", "dan", "unrestricted"],
        ],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)jailbr(?:eak|oken)",
        weight: 0.3,
        anchors: &[&["jailbr"]],
    },
    Signal {
        pattern: r"(?i)(?m)^[ \t]*(?:#{1,6}|\[|<)?[ \t]*(?:system|developer)[ \t]*(?:prompt|message)?[ \t]*(?::|\]|>)",
        weight: 0.3,
        anchors: &[&["system", "developer"]],
    },
    Signal {
        pattern: r"(?i)<\|im_start\|>\s*(?:system|developer)|<\|(?:system|im_sep|endoftext)\|>|<\|start_header_id\|>\s*system|\[/?INST\]|<</?SYS>>",
        weight: 0.7,
        anchors: &[&["<|", "[inst]", "[/inst]", "<<sys>>", "<</sys>>"]],
    },
    // --- system-prompt exfiltration ---
    Signal {
        pattern: r"(?i)(?-u:\b)(?:reveal|print|repeat|show|display|output|return|tell\s+me|give\s+me|leak|dump|disclose|recite|write\s+out|what\s+(?:is|are|was|were))\s+(?:me\s+)?your\s+(?:(?:full|entire|exact|complete|original|hidden|secret|initial|system|internal|verbatim)\s+)*(?:system\s+prompt|initial\s+prompt|prompt|instructions|system\s+message|rules|guidelines|directives|configuration)(?-u:\b)",
        weight: 0.6,
        anchors: &[
            &["your"],
            &[
                "prompt",
                "instruction",
                "message",
                "rules",
                "guideline",
                "directive",
                "configuration",
            ],
        ],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)(?:reveal|print|repeat|show|display|output|tell\s+me|give\s+me|leak|dump|disclose|recite|write\s+out|what\s+(?:is|are|was|were))\s+(?:me\s+)?the\s+(?:(?:full|entire|exact|complete|original|hidden|secret|initial|internal|verbatim)\s+)*(?:system\s+prompt|initial\s+prompt|system\s+message|hidden\s+prompt|pre-?prompt|developer\s+message)(?-u:\b)",
        weight: 0.6,
        anchors: &[&["prompt", "message"]],
    },
    Signal {
        pattern: r"(?i)(?-u:\b)(?:repeat|print|output|copy)\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:words|text|everything|content)\s+(?:above|before\s+this)",
        weight: 0.5,
        anchors: &[&["repeat", "print", "output", "copy"], &["above", "before"]],
    },
];

/// The shortest base64 run worth decoding: 24 characters decode to 18 bytes, about the length of
/// the shortest override phrase. Shorter runs are ordinary identifiers.
const MIN_BASE64: usize = 24;
/// Candidates decoded per text, so a text made of blobs cannot multiply the scan cost.
const MAX_BLOBS: usize = 8;
/// Decoding levels (base64 of base64 counts twice).
const MAX_DEPTH: u8 = 2;

/// One compiled signal.
#[derive(Debug)]
struct Compiled {
    re: Regex,
    weight: f64,
    /// One bit mask of anchor ids per anchor group.
    groups: Vec<u64>,
}

/// The compiled injection heuristics.
#[derive(Debug)]
pub(crate) struct InjectionDetector {
    /// Every anchor word of every signal, in one automaton: one pass over the text tells which
    /// signals can match at all. Most prompts contain few or none of the anchors, so most
    /// regexes never run; a `RegexSet` over all patterns measured ~30 µs on a 4 kB prompt,
    /// this ~3 µs.
    anchors: AhoCorasick,
    signals: Vec<Compiled>,
    standard: GeneralPurpose,
    url_safe: GeneralPurpose,
}

impl InjectionDetector {
    #[expect(
        clippy::expect_used,
        reason = "built-in constant anchors, compiled once at start-up and covered by tests"
    )]
    pub(crate) fn new() -> Self {
        let mut words: Vec<&str> = Vec::new();
        let mut signals = Vec::with_capacity(SIGNALS.len());
        for signal in SIGNALS {
            let groups = signal
                .anchors
                .iter()
                .map(|group| {
                    group.iter().fold(0u64, |mask, word| {
                        let id = words.iter().position(|w| w == word).unwrap_or_else(|| {
                            words.push(word);
                            words.len() - 1
                        });
                        mask | (1u64 << id)
                    })
                })
                .collect();
            signals.push(Compiled {
                re: regex(signal.pattern),
                weight: signal.weight,
                groups,
            });
        }
        debug_assert!(words.len() <= 64, "anchor ids must fit a u64 mask");
        // A full DFA: the anchor set is small and fixed, and an overlapping search over the
        // default NFA measured ~40 µs on a 4 kB prompt against a few µs for the DFA.
        let anchors = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(&words)
            .expect("built-in anchor words compile");
        // Padding is optional in the wild; accept both forms.
        let config = GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true);
        Self {
            anchors,
            signals,
            standard: GeneralPurpose::new(&alphabet::STANDARD, config),
            url_safe: GeneralPurpose::new(&alphabet::URL_SAFE, config),
        }
    }

    /// Test hook: whether every signal whose regex matches `text` also has its anchors present,
    /// i.e. the anchor gate never hides a match.
    #[cfg(test)]
    pub(crate) fn anchors_cover(&self, text: &str) -> bool {
        let present = self
            .anchors
            .find_overlapping_iter(text)
            .fold(0u64, |mask, m| mask | (1u64 << m.pattern().as_usize()));
        self.signals
            .iter()
            .all(|s| !s.re.is_match(text) || s.groups.iter().all(|g| g & present != 0))
    }

    /// The injection score of `text`, 0..=1.
    pub(crate) fn score(&self, text: &str) -> f64 {
        self.score_at(text, 0)
    }

    fn score_at(&self, text: &str, depth: u8) -> f64 {
        // Overlapping search so one anchor cannot hide another (`instructions` / `instructions:`).
        let present = self
            .anchors
            .find_overlapping_iter(text)
            .fold(0u64, |mask, m| mask | (1u64 << m.pattern().as_usize()));
        let mut clean = 1.0;
        for signal in &self.signals {
            if signal.groups.iter().all(|g| g & present != 0) && signal.re.is_match(text) {
                clean *= 1.0 - signal.weight;
            }
        }
        if depth < MAX_DEPTH {
            let mut decoded = Vec::new();
            for blob in base64_runs(text).take(MAX_BLOBS) {
                decoded.clear();
                let ok = if blob.contains(['-', '_']) {
                    self.url_safe.decode_vec(blob, &mut decoded)
                } else {
                    self.standard.decode_vec(blob, &mut decoded)
                };
                // Only text can carry instructions; binary data (images, keys) is skipped.
                let Ok(()) = ok else { continue };
                let Ok(inner_text) = std::str::from_utf8(&decoded) else {
                    continue;
                };
                let inner = self.score_at(inner_text, depth + 1);
                if inner > 0.0 {
                    // Encoding an instruction is itself a signal of intent.
                    clean *= 1.0 - (inner + 0.3).min(0.95);
                }
            }
        }
        1.0 - clean
    }
}

/// Whether `b` belongs to the standard or URL-safe base64 alphabet.
const fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Runs of at least [`MIN_BASE64`] base64 characters (plus up to two `=`), found with a plain
/// byte loop: a regex for this spends most of its time starting a match at every word.
fn base64_runs(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            let start = at;
            while at < bytes.len() && is_base64(bytes[at]) {
                at += 1;
            }
            if at - start >= MIN_BASE64 {
                let mut end = at;
                while end < bytes.len() && end - at < 2 && bytes[end] == b'=' {
                    end += 1;
                }
                at = end;
                // Base64 characters are ASCII, so both ends are char boundaries.
                return text.get(start..end);
            }
            at += 1;
        }
        None
    })
}

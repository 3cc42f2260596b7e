//! Cuts text into the pieces tiktoken encodes one at a time, with the `regex` crate's automata
//! instead of tiktoken-rs's backtracking `fancy-regex`.
//!
//! Both encodings' split patterns end in `…|\s+(?!\S)|…`: a whitespace run that stops before
//! a non-space keeps its last whitespace char for the next piece (so `"  x"` splits `" "`,
//! `" x"`). Only that branch needs a lookahead, and it is what sends tiktoken-rs through
//! fancy-regex's backtracking VM for every piece: most of its counting time on short prompts,
//! and a stack overflow on a run of about a million spaces. Here it is three patterns in one
//! automaton, tried in order at each position:
//!
//! 1. the encoding's other branches, plus `\s+$` (a run that reaches the end of the text has
//!    nothing to give back, so the lookahead takes all of it);
//! 2. `\s+\s`, whose match gives back its last char: the run minus one, exactly what
//!    `\s+(?!\S)` matches before a non-space (greedy, so it takes the whole run first);
//! 3. the encoding's last branch, for a single whitespace char before a non-space.
//!
//! `tokens::tests` checks the pieces against tiktoken-rs's own over random text.

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};

use super::tokenizer::Encoding;

/// `o200k_base`'s pattern (tiktoken's `O200K_BASE_PAT_STR`), its lookahead split out.
const O200K_BASE: [&str; 3] = [
    concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"|\s*[\r\n]+",
        r"|\s+$",
    ),
    r"\s+\s",
    r"\s+",
];

/// `cl100k_base`'s pattern as tiktoken-rs writes it, its lookahead split out. Its possessive
/// quantifiers (`?+`, `++`, `*+`) are plain greedy ones here: each guards a class disjoint
/// from what follows it, so backtracking into it could never find another match.
const CL100K_BASE: [&str; 3] = [
    concat!(
        r"'(?i:[sdmt]|ll|ve|re)",
        r"|[^\r\n\p{L}\p{N}]?\p{L}+",
        r"|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"|\s+$",
        r"|\s*[\r\n]",
    ),
    r"\s+\s",
    r"\s",
];

/// The pattern whose match ends with one char of lookahead, given back to the next piece.
const LOOKAHEAD: usize = 1;

/// One encoding's pre-tokenizer.
#[derive(Debug)]
pub(super) struct Splitter {
    regex: Regex,
}

impl Splitter {
    /// `None` only if the automaton cannot be built, which these constant patterns rule out.
    pub(super) fn new(encoding: Encoding) -> Option<Self> {
        let patterns = match encoding {
            Encoding::O200kBase => O200K_BASE,
            Encoding::Cl100kBase => CL100K_BASE,
        };
        Some(Self {
            regex: Regex::new_many(&patterns).ok()?,
        })
    }

    /// The pieces of `text`, in order, as tiktoken's `find_iter` yields them.
    pub(super) fn pieces<'t>(&'t self, text: &'t str) -> impl Iterator<Item = &'t str> + 't {
        let mut at = 0;
        std::iter::from_fn(move || {
            let (start, end) = self.next_piece(text, at)?;
            at = end;
            Some(&text[start..end])
        })
    }

    /// The next piece at or after byte `at`, as byte offsets.
    fn next_piece(&self, text: &str, at: usize) -> Option<(usize, usize)> {
        if at >= text.len() {
            return None;
        }
        let anchored = Input::new(text).range(at..).anchored(Anchored::Yes);
        // The patterns cover every char, so the anchored search always matches; the
        // unanchored one would skip what none matches, as `find_iter` does.
        let found = self
            .regex
            .search(&anchored)
            .or_else(|| self.regex.search(&Input::new(text).range(at..)))?;
        let mut end = found.end();
        if found.pattern().as_usize() == LOOKAHEAD {
            // `\s+\s` matched at least two chars; give the last one back.
            let last = text[found.start()..end]
                .chars()
                .next_back()
                .map_or(0, char::len_utf8);
            end -= last;
        }
        Some((found.start(), end))
    }
}

//! Deny terms: tenant-configured words or phrases whose presence blocks a request.
//!
//! All terms go into one Aho-Corasick automaton, built when the policy is compiled, so a scan is
//! a single pass however many terms there are. Matching is case-insensitive and whole-word: a
//! term's edge that is a letter or digit must not touch another letter, digit or `_` in the text
//! (`ass` does not match `class`), while an edge that is punctuation (`$$$`) matches anywhere.
//!
//! The automaton folds ASCII case only; for non-ASCII terms the term's lower- and upper-case
//! forms are added as extra patterns, which covers the common spellings (`Straße`/`STRASSE` is
//! out of reach, as is any mixed-case non-ASCII spelling). Whitespace inside a phrase must match
//! exactly.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::ShieldError;

/// Total term bytes up to which the automaton is built as a full DFA (a few MB at most).
const DFA_MAX_BYTES: usize = 16 * 1024;

/// A compiled set of deny terms.
#[derive(Debug, Clone)]
pub(crate) struct DenyTerms {
    automaton: AhoCorasick,
}

impl DenyTerms {
    /// Builds the automaton, or `None` when there are no terms.
    pub(crate) fn new(terms: &[String]) -> Result<Option<Self>, ShieldError> {
        if terms.is_empty() {
            return Ok(None);
        }
        let mut patterns: Vec<String> = Vec::with_capacity(terms.len());
        for term in terms {
            let term = term.trim();
            if term.is_empty() {
                return Err(ShieldError::EmptyDenyTerm);
            }
            patterns.push(term.to_owned());
            if !term.is_ascii() {
                patterns.push(term.to_lowercase());
                patterns.push(term.to_uppercase());
            }
        }
        patterns.sort_unstable();
        patterns.dedup();
        // Standard semantics so every overlapping candidate can be checked: with leftmost
        // semantics a rejected `class` could hide an accepted `ass` starting inside it.
        // A full DFA scans several times faster than the default NFA on an overlapping search;
        // its memory grows with the term list, so very long lists keep the library's choice.
        let total: usize = patterns.iter().map(String::len).sum();
        let kind = (total <= DFA_MAX_BYTES).then_some(AhoCorasickKind::DFA);
        let automaton = AhoCorasick::builder()
            .kind(kind)
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(&patterns)?;
        Ok(Some(Self { automaton }))
    }

    /// Whether any term occurs in `text` as a whole word or phrase.
    pub(crate) fn is_present(&self, text: &str) -> bool {
        self.automaton
            .find_overlapping_iter(text)
            .any(|m| whole_word(text, m.start(), m.end()))
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether the match `start..end` is not glued to word characters on an edge that is itself a
/// word character.
fn whole_word(text: &str, start: usize, end: usize) -> bool {
    let (Some(before), Some(matched), Some(after)) =
        (text.get(..start), text.get(start..end), text.get(end..))
    else {
        return false;
    };
    let glued_left = matched.chars().next().is_some_and(is_word_char)
        && before.chars().next_back().is_some_and(is_word_char);
    let glued_right = matched.chars().next_back().is_some_and(is_word_char)
        && after.chars().next().is_some_and(is_word_char);
    !glued_left && !glued_right
}

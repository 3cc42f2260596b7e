//! PII detection: finds candidate spans with one compiled regex per kind, keeps the candidates
//! that pass validation (checksums, range tables, boundary rules), and resolves overlaps so each
//! span is reported once, by its most specific kind.
//!
//! Decisions worth knowing (each has a test in `tests.rs`):
//! - E-mail: `local@domain.tld` with a 2–24 letter TLD. An address inside a code block is still an
//!   address (the gateway cannot tell a real one from an example, and code is where real ones
//!   leak); `foo@bar` (no TLD) and decorators such as `@property` are not.
//! - Phone: a `+CC` international number (separators optional), or a national number written
//!   in groups separated by spaces, dots or dashes (`415-555-2671`, `(415) 555 2671`,
//!   `06 12 34 56 78`), 9–15 digits in all (E.164's maximum). A bare digit run without `+` is
//!   *not* a phone: it is indistinguishable from order ids and invoice numbers. Dates, dotted
//!   quads, SSN-shaped numbers and runs that continue into more digits are rejected.
//! - IP address: a dotted quad with every octet ≤ 255 is an IPv4 address even when it is
//!   "really" a version string (`1.2.3.4`); a prefixed `v1.2.3.4` or a longer `1.2.3.4.5` is not.
//!   IPv6 candidates are validated by `std`'s parser and need two non-empty groups and five hex
//!   digits, so `::`, `::1`, `a::b` and `std::vector` are not addresses.
//! - US SSN: `AAA-GG-SSSS` with dashes only (nine bare digits are too ambiguous); area 000, 666
//!   and 900–999, group 00 and serial 0000 are invalid and never match.
//!
//! All regexes use ASCII classes and ASCII word boundaries (`(?-u:\b)`): Unicode `\b` would
//! force the regex engine off its DFA onto a much slower NFA on any non-ASCII text.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use regex::Regex;

use super::financial;
use super::secrets::Secrets;

/// The kinds of PII the shield knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PiiKind {
    Email,
    Phone,
    CreditCard,
    Iban,
    UsSsn,
    IpAddress,
    Secret,
}

impl PiiKind {
    /// The rule name on findings, audit records and metrics.
    pub(crate) const fn rule(self) -> &'static str {
        match self {
            Self::Email => "pii.email",
            Self::Phone => "pii.phone",
            Self::CreditCard => "pii.credit_card",
            Self::Iban => "pii.iban",
            Self::UsSsn => "pii.us_ssn",
            Self::IpAddress => "pii.ip_address",
            Self::Secret => "pii.secret",
        }
    }

    /// What redaction writes in place of the match.
    pub(crate) const fn placeholder(self) -> &'static str {
        match self {
            Self::Email => "[EMAIL]",
            Self::Phone => "[PHONE]",
            Self::CreditCard => "[CREDIT_CARD]",
            Self::Iban => "[IBAN]",
            Self::UsSsn => "[US_SSN]",
            Self::IpAddress => "[IP_ADDRESS]",
            Self::Secret => "[SECRET]",
        }
    }

    /// Who wins an overlap: secret > e-mail > card > IBAN > SSN > phone > IP. A secret is the
    /// most damaging leak and its patterns the most specific; e-mail (not ranked by the brief)
    /// sits next because its `@` makes it unambiguous; checksummed numbers beat shape-only ones.
    const fn priority(self) -> u8 {
        match self {
            Self::Secret => 6,
            Self::Email => 5,
            Self::CreditCard => 4,
            Self::Iban => 3,
            Self::UsSsn => 2,
            Self::Phone => 1,
            Self::IpAddress => 0,
        }
    }
}

/// A validated match: byte offsets into the scanned text, always on char boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: PiiKind,
}

/// Compiles one of the built-in patterns.
///
/// The patterns are constants and every one is exercised by the unit tests, so a failure here is
/// a programming error caught before release, not something a request can trigger.
#[expect(
    clippy::expect_used,
    reason = "built-in constant patterns, compiled once at start-up and covered by tests"
)]
pub(crate) fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in shield pattern compiles")
}

/// The compiled PII detectors.
#[derive(Debug)]
pub(crate) struct PiiDetectors {
    email: Regex,
    phone: Regex,
    card: Regex,
    iban: Regex,
    ssn: Regex,
    ipv4: Regex,
    ipv6: Regex,
    secrets: Secrets,
}

impl PiiDetectors {
    pub(crate) fn new() -> Self {
        Self {
            email: regex(
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}(?-u:\b)",
            ),
            // Optional `+CC` or US trunk `1`, optional `(area)`, then 2+ digit groups. The
            // second alternative is a compact E.164 number, accepted only after a `+`.
            phone: regex(
                r"(?:\+[0-9]{1,3}[ .\-]?|1[ .\-])?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9]{2,5}(?:[ .\-][0-9]{2,8}){1,4}|\+[0-9]{9,15}",
            ),
            card: regex(r"(?-u:\b)[0-9](?:[ \-]?[0-9]){12,18}(?-u:\b)"),
            // Over-long on purpose: the country's length table decides where the IBAN ends.
            iban: regex(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){10,32}"),
            ssn: regex(r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)"),
            ipv4: regex(r"(?-u:\b)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?-u:\b)"),
            ipv6: regex(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}"),
            secrets: Secrets::new(),
        }
    }

    /// Finds every PII span of `text` into `out` (cleared first), sorted by start and
    /// non-overlapping.
    pub(crate) fn detect(&self, text: &str, out: &mut Vec<Span>) {
        out.clear();
        self.secrets.find(text, out);
        self.find_validated(&self.email, PiiKind::Email, text, out, |_, _, _| true);
        self.find_validated(&self.card, PiiKind::CreditCard, text, out, |t, s, e| {
            financial::is_card(&t[s..e])
        });
        for m in self.iban.find_iter(text) {
            if let Some(end) = financial::iban_end(text, m.start(), m.end()) {
                out.push(Span {
                    start: m.start(),
                    end,
                    kind: PiiKind::Iban,
                });
            }
        }
        self.find_validated(&self.ssn, PiiKind::UsSsn, text, out, is_ssn);
        self.find_validated(&self.phone, PiiKind::Phone, text, out, is_phone);
        self.find_validated(&self.ipv4, PiiKind::IpAddress, text, out, is_ipv4);
        self.find_validated(&self.ipv6, PiiKind::IpAddress, text, out, is_ipv6);
        resolve_overlaps(out);
    }

    fn find_validated(
        &self,
        re: &Regex,
        kind: PiiKind,
        text: &str,
        out: &mut Vec<Span>,
        valid: impl Fn(&str, usize, usize) -> bool,
    ) {
        let _ = self;
        for m in re.find_iter(text) {
            if valid(text, m.start(), m.end()) {
                out.push(Span {
                    start: m.start(),
                    end: m.end(),
                    kind,
                });
            }
        }
    }
}

/// Keeps, for every group of overlapping spans, the most specific (then the longest), and sorts
/// the survivors by start. `O(n log n)` so a text stuffed with matches cannot make it quadratic.
fn resolve_overlaps(spans: &mut Vec<Span>) {
    if spans.len() < 2 {
        return;
    }
    spans.sort_unstable_by(|a, b| {
        b.kind
            .priority()
            .cmp(&a.kind.priority())
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    // start -> end of the spans kept so far; they never overlap each other, so only the nearest
    // kept span on each side can collide with a candidate.
    let mut kept: BTreeMap<usize, usize> = BTreeMap::new();
    spans.retain(|s| {
        let left_clear = kept
            .range(..=s.start)
            .next_back()
            .is_none_or(|(_, &end)| end <= s.start);
        let right_clear = kept.range(s.start..s.end).next().is_none();
        let keep = left_clear && right_clear;
        if keep {
            kept.insert(s.start, s.end);
        }
        keep
    });
    spans.sort_unstable_by_key(|s| s.start);
}

// === boundaries ===

pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

pub(crate) fn byte_before(text: &str, i: usize) -> Option<u8> {
    i.checked_sub(1)
        .and_then(|j| text.as_bytes().get(j).copied())
}

pub(crate) fn byte_at(text: &str, i: usize) -> Option<u8> {
    text.as_bytes().get(i).copied()
}

/// Whether the number at `start` continues to the left: `…7.` / `…7-` / `…7/` before it.
fn continues_left(text: &str, start: usize) -> bool {
    matches!(byte_before(text, start), Some(b'.' | b'-' | b'/'))
        && byte_before(text, start - 1).is_some_and(|b| b.is_ascii_digit())
}

/// Whether the number ending at `end` continues to the right: `.7` / `-7` / `/7` after it.
fn continues_right(text: &str, end: usize) -> bool {
    matches!(byte_at(text, end), Some(b'.' | b'-' | b'/'))
        && byte_at(text, end + 1).is_some_and(|b| b.is_ascii_digit())
}

// === validators ===

fn is_ssn(text: &str, start: usize, end: usize) -> bool {
    if continues_left(text, start) || continues_right(text, end) {
        return false;
    }
    let b = &text.as_bytes()[start..end];
    let num = |r: std::ops::Range<usize>| {
        b[r].iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (area, group, serial) = (num(0..3), num(4..6), num(7..11));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn is_phone(text: &str, start: usize, end: usize) -> bool {
    let prev = byte_before(text, start);
    if prev.is_some_and(|b| is_word(b) || b == b'+') || continues_left(text, start) {
        return false;
    }
    if byte_at(text, end).is_some_and(is_word) || continues_right(text, end) {
        return false;
    }
    let s = &text[start..end];
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    if !(9..=15).contains(&digits) {
        return false;
    }
    if s.starts_with('+') {
        return true;
    }
    // Group lengths and separators, to reject shapes that belong to something else.
    let mut groups = [0usize; 8];
    let mut n = 0;
    let mut seps = [0u8; 8];
    for b in s.bytes() {
        if b.is_ascii_digit() {
            groups[n] += 1;
        } else if matches!(b, b' ' | b'.' | b'-') && groups[n] > 0 && n + 1 < groups.len() {
            seps[n] = b;
            n += 1;
        }
    }
    let groups = &groups[..=n];
    let seps = &seps[..n];
    let dotted_quad = n == 3 && seps.iter().all(|&c| c == b'.') && groups.iter().all(|&g| g <= 3);
    let ssn_shape = groups == [3, 2, 4] && seps.iter().all(|&c| c == b'-');
    let date = n >= 2
        && seps[0] == seps[1]
        && matches!(seps[0], b'-' | b'.')
        && matches!((groups[0], groups[1], groups[2]), (4, 2, 2) | (2, 2, 4));
    !(dotted_quad || ssn_shape || date)
}

fn is_ipv4(text: &str, start: usize, end: usize) -> bool {
    !continues_left(text, start)
        && !continues_right(text, end)
        && text[start..end].parse::<Ipv4Addr>().is_ok()
}

fn is_ipv6(text: &str, start: usize, end: usize) -> bool {
    let s = &text[start..end];
    if byte_before(text, start).is_some_and(|b| is_word(b) || b == b':' || b == b'.')
        || byte_at(text, end).is_some_and(|b| is_word(b) || b == b':')
    {
        return false;
    }
    // Two non-empty groups and five hex digits: `::1` and `a::b` are valid addresses but far
    // more often a loopback literal or a code path than someone's address.
    s.split(':').filter(|g| !g.is_empty()).count() >= 2
        && s.bytes().filter(u8::is_ascii_hexdigit).count() >= 5
        && s.parse::<Ipv6Addr>().is_ok()
}

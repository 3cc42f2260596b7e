//! Credentials (`pii.secret`): provider API keys, tokens and private keys, recognised by their
//! published prefixes and shapes.
//!
//! One alternation compiled into one regex, so the text is scanned once however many formats
//! are known; every format maps to the same rule, so no capture groups are needed (they would
//! push the regex engine off its fastest path). Formats:
//! OpenAI (`sk-`, `sk-proj-`, `sk-svcacct-`, `sk-admin-`), Anthropic (`sk-ant-`), Sentinel's own
//! keys (`sk-sntl-`), AWS access key ids (`AKIA`/`ASIA` + 16), GitHub (`ghp_`, `gho_`, `ghs_`,
//! `ghu_`, `ghr_`, `github_pat_`), Slack (`xox[baprs]-`), Google API keys (`AIza` + 35), Stripe
//! (`sk_live_`, `rk_live_` and their `_test_` twins), `Bearer <token>` with a token of 20+
//! characters, JWTs, and PEM private key blocks (up to `-----END … PRIVATE KEY-----`, or to the
//! end of the base64 body when the block is truncated).

use regex::Regex;

use super::pii::{regex, PiiKind, Span};

/// The body of a PEM block: base64 lines, RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`), and JSON
/// string escapes (`\n`) as whole units so a redaction never cuts an escape in half.
const PEM_BODY: &str = r"(?:[A-Za-z0-9+/=\r\n\t :,.\-]|\\[nrt])";
/// The body of a truncated PEM block: as above without spaces, so it stops at the first prose
/// word after the base64 rather than swallowing the rest of the text.
const PEM_TAIL: &str = r"(?:[A-Za-z0-9+/=\r\n\t:,.\-]|\\[nrt])";

/// The compiled credential detector.
#[derive(Debug)]
pub(crate) struct Secrets {
    re: Regex,
}

impl Secrets {
    pub(crate) fn new() -> Self {
        let token_patterns = [
            // `sk-` keys: OpenAI (all variants), Anthropic and Sentinel share the prefix.
            r"sk-[A-Za-z0-9_\-]{20,}",
            // Fixed-length formats end at a word boundary, or they would match the start of
            // any longer upper-case identifier.
            r"(?:(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35})(?-u:\b)",
            r"gh[pousr]_[A-Za-z0-9]{36,}",
            r"github_pat_[A-Za-z0-9_]{22,}",
            r"xox[baprs]-[A-Za-z0-9\-]{10,}",
            r"[sr]k_(?:live|test)_[0-9A-Za-z]{16,}",
            r"[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+[A-Za-z0-9\-._~+/]{20,}=*",
            r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
        ];
        // A leading word boundary keeps `task-…` or `risk_live_…` from matching as `sk-…` keys;
        // open-ended formats need no trailing one, their repetition runs to the token's end. The
        // PEM block starts with `-`, where a leading `\b` would demand a word character before it.
        let tokens = token_patterns.join("|");
        let pem = format!(
            r"-----BEGIN [A-Z0-9 ]{{0,24}}PRIVATE KEY-----(?:{PEM_BODY}*?-----END [A-Z0-9 ]{{0,24}}PRIVATE KEY-----|{PEM_TAIL}*)"
        );
        Self {
            re: regex(&format!(r"(?-u:\b)(?:{tokens})|{pem}")),
        }
    }

    /// Appends every credential span of `text` to `out`.
    pub(crate) fn find(&self, text: &str, out: &mut Vec<Span>) {
        for m in self.re.find_iter(text) {
            let mut start = m.start();
            // Keep the scheme readable: `Authorization: Bearer [SECRET]`.
            let s = m.as_str();
            if s.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("bearer")) {
                start += s.len() - s[6..].trim_start_matches([' ', '\t']).len();
            }
            out.push(Span {
                start,
                end: m.end(),
                kind: PiiKind::Secret,
            });
        }
    }
}

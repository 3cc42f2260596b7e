//! Redaction: rewrites a text with typed placeholders (`[EMAIL]`, `[SECRET]`, …) in place of the
//! detected spans.

use super::pii::Span;

/// Replaces every span of `text` with its kind's placeholder.
///
/// `spans` must be sorted by start and non-overlapping, with char-boundary offsets, which is what
/// [`super::pii::PiiDetectors::detect`] returns; a span that is not (which would be a bug) is
/// skipped rather than allowed to panic on a bad slice.
pub(crate) fn apply(text: &mut String, spans: &[Span]) {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        let (Some(keep), true) = (text.get(at..span.start), text.is_char_boundary(span.end)) else {
            continue;
        };
        out.push_str(keep);
        out.push_str(span.kind.placeholder());
        at = span.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    *text = out;
}

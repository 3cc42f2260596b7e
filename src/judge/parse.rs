//! Reading the judge model's answer: strict JSON `{score, verdict}` when the model obeys,
//! and the first JSON object inside fenced or chatty text when it does not. Scores are
//! clamped to 0..=10; anything without a numeric score is malformed.

use serde_json::Value;

/// A parsed verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub score: f64,
    pub verdict: String,
}

/// Longest verdict kept (characters).
const MAX_VERDICT: usize = 500;

/// Parses the judge's reply text.
pub fn parse(text: &str) -> Option<Parsed> {
    let value: Value = serde_json::from_str(text.trim())
        .ok()
        .or_else(|| first_object(text))?;
    let score = match value.get("score")? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    if !score.is_finite() {
        return None;
    }
    let verdict: String = value
        .get("verdict")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(MAX_VERDICT)
        .collect();
    Some(Parsed {
        score: score.clamp(0.0, 10.0),
        verdict,
    })
}

/// The first balanced `{...}` in `text` that parses as a JSON object.
fn first_object(text: &str) -> Option<Value> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(offset) = text[start..].find('{') {
        let open = start + offset;
        let (mut depth, mut in_str, mut escaped) = (0i32, false, false);
        for (i, &b) in bytes.iter().enumerate().skip(open) {
            if in_str {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        if let Ok(v @ Value::Object(_)) = serde_json::from_str(&text[open..=i]) {
                            return Some(v);
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
        start = open + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_fenced_chatty_and_clamped() {
        assert_eq!(
            parse(r#"{"score": 8.5, "verdict": "good"}"#),
            Some(Parsed {
                score: 8.5,
                verdict: "good".into()
            })
        );
        let fenced =
            "Here you go:\n```json\n{\"verdict\": \"has {braces}\", \"score\": \"7\"}\n```";
        let score = |text: &str| parse(text).unwrap().score;
        assert!((score(fenced) - 7.0).abs() < f64::EPSILON);
        assert_eq!(parse(fenced).unwrap().verdict, "has {braces}");
        assert!((score(r#"{"score": 42}"#) - 10.0).abs() < f64::EPSILON);
        assert!(score(r#"{"score": -3, "verdict": "x"}"#).abs() < f64::EPSILON);
        for bad in [
            "",
            "eight",
            r#"{"verdict": "no score"}"#,
            r#"{"score": "high"}"#,
            "{",
            "[1,2]",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}

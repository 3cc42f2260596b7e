//! `GET /`: the operator dashboard, one self-contained HTML page compiled into the binary
//! (`dashboard/index.html`: markup, one inline `<style>`, one inline `<script>`, no framework,
//! nothing loaded from elsewhere).
//!
//! The page holds no data, so it is served without a key. It reads the gateway's own
//! endpoints every 3 s: `/metrics` (requests per second from `sentinel_requests_total`
//! deltas, judge scores from the `sentinel_judge_score` histogram) and `/health` without a
//! key; `/admin/tenants` and `/v1/usage?tenant=...&group_by=model` (today and this month,
//! per tenant) with the admin key the operator types, kept in the tab's `sessionStorage` only.
//!
//! The answer carries a strict Content-Security-Policy: scripts and styles are allowed only
//! by the SHA-256 of the page's own inline blocks (computed once, at first request), requests
//! only to this origin, no framing. An injected script or a request elsewhere is refused by
//! the browser, which matters on a page where an admin key is typed.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderValue};
use sha2::{Digest, Sha256};

/// The page.
pub const PAGE: &str = include_str!("dashboard/index.html");

/// The page's Content-Security-Policy (see the module docs).
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    // The policy is ASCII (base64 digests); a failure would only drop the header's value to
    // the strictest policy, which blocks the page's own script visibly rather than silently.
    HeaderValue::from_str(&policy(PAGE))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// `GET /`.
pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, CSP.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}

/// The text of every `<tag>...</tag>` block of `page` (tags written without attributes).
fn inline_blocks<'a>(page: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut blocks = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        blocks.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    blocks
}

/// `'sha256-...'` sources for every inline block of `tag`.
fn hashes(page: &str, tag: &str) -> String {
    inline_blocks(page, tag)
        .into_iter()
        .map(|block| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(block))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Content-Security-Policy of `page`.
fn policy(page: &str) -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes(page, "script"),
        hashes(page, "style"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        assert_eq!(inline_blocks(PAGE, "script").len(), 1);
        assert_eq!(inline_blocks(PAGE, "style").len(), 1);
        for external in [
            "<script src",
            "<link rel=\"stylesheet\"",
            "http://",
            "https://",
            "//cdn",
        ] {
            let hits: Vec<&str> = PAGE
                .lines()
                .filter(|l| l.contains(external))
                // The SVG namespace is an identifier, never fetched.
                .filter(|l| !l.contains("http://www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{external}: {hits:?}");
        }
        assert!(
            !PAGE.contains("style=\""),
            "inline style attributes would need 'unsafe-inline'"
        );
        assert!(
            !PAGE.contains("localStorage"),
            "the key stays in sessionStorage"
        );
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_blocks() {
        let csp = policy(PAGE);
        let script = inline_blocks(PAGE, "script")[0];
        let digest = STANDARD.encode(Sha256::digest(script));
        assert!(
            csp.contains(&format!("script-src 'sha256-{digest}';")),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self'"));
        assert!(!csp.contains("unsafe"));
        assert_eq!(
            inline_blocks("a<b>1</b>c<b>2</b><b>3", "b"),
            vec!["1", "2"],
            "an unclosed block is ignored"
        );
        assert!(HeaderValue::from_str(&csp).is_ok());
    }

    #[test]
    fn the_page_reads_the_documented_endpoints() {
        for path in ["'/metrics'", "'/health'", "'/admin/tenants'", "'/v1/usage'"] {
            assert!(PAGE.contains(path), "{path}");
        }
        assert!(PAGE.contains("sessionStorage"));
    }
}

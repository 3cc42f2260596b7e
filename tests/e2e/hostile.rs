//! Hostile clients against the running gateway: ten thousand generated bodies, slowloris
//! heads and oversized headers. The gateway must answer every body with a 2xx or an
//! OpenAI-shaped 4xx (never a 5xx, never a hang), and cut off clients that never finish
//! their request head or send more header than it accepts, while serving everyone else.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::properties::chatish_json;
use crate::support::gateway::{basic_config, chat_status, client_with_key, Gateway, TEST_KEY};
use crate::support::upstream::Upstream;

/// How many generated bodies go through the gateway.
const BODIES: usize = 10_000;

/// A body for request `i`: mostly structured near-misses of a chat request, some of them
/// cut short or with bytes flipped, and some raw junk.
fn hostile_body(runner: &mut TestRunner, i: usize) -> Vec<u8> {
    let value = chatish_json()
        .new_tree(runner)
        .map_or(Value::Null, |t| t.current());
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    match i % 10 {
        // Truncated JSON.
        7 => bytes.truncate(bytes.len() / 2),
        // A flipped byte, possibly invalid UTF-8.
        8 if !bytes.is_empty() => {
            let at = (i * 7919) % bytes.len();
            bytes[at] ^= 0x80 | u8::try_from(i % 127).unwrap_or(1);
        }
        // Raw junk.
        9 => {
            bytes = (0..(i % 300))
                .map(|k| u8::try_from((k * 31 + i) % 256).unwrap_or(0))
                .collect();
        }
        _ => {}
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_generated_bodies_get_2xx_or_openai_shaped_4xx() {
    let up = Upstream::start().await;
    up.mock.control().set_recording(false);
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let client = client_with_key(TEST_KEY);
    let mut runner = TestRunner::new(RunnerConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5e7_1e1),
        ..RunnerConfig::default()
    });
    let bodies: Vec<(usize, Vec<u8>)> = (0..BODIES)
        .map(|i| (i, hostile_body(&mut runner, i)))
        .collect();
    let url = gw.url("/v1/chat/completions");
    let outcomes: Vec<(u16, Option<String>)> = stream::iter(bodies)
        .map(|(i, body)| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("body {i} got no answer: {e}"));
                let status = resp.status().as_u16();
                let text = resp.bytes().await.unwrap_or_default();
                let problem = if status >= 500 {
                    Some(format!(
                        "body {i}: {status} for {}",
                        String::from_utf8_lossy(&body)
                    ))
                } else if status >= 400 {
                    match serde_json::from_slice::<Value>(&text) {
                        Ok(v)
                            if v["error"]["message"]
                                .as_str()
                                .is_some_and(|m| !m.is_empty())
                                && v["error"]["type"].is_string()
                                && v["error"].get("code").is_some()
                                && v["error"].get("param").is_some() =>
                        {
                            None
                        }
                        _ => Some(format!(
                            "body {i}: {status} not OpenAI-shaped: {}",
                            String::from_utf8_lossy(&text)
                        )),
                    }
                } else {
                    None
                };
                (status, problem)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let problems: Vec<&String> = outcomes.iter().filter_map(|(_, p)| p.as_ref()).collect();
    assert!(
        problems.is_empty(),
        "{} problems, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(3)]
    );
    let ok = outcomes
        .iter()
        .filter(|(s, _)| (200..300).contains(s))
        .count();
    let refused = outcomes
        .iter()
        .filter(|(s, _)| (400..500).contains(s))
        .count();
    assert_eq!(ok + refused, BODIES);
    // The generator must exercise both sides, or it proves nothing.
    assert!(
        ok > 100 && refused > 1000,
        "{ok} answered, {refused} refused"
    );
    // And the gateway is still healthy.
    assert_eq!(
        chat_status(
            &client,
            &gw,
            &serde_json::json!({"model": "demo", "messages": [{"role": "user", "content": "ok?"}]})
        )
        .await,
        200
    );
}

/// Reads until the server closes the connection; returns what it sent. Fails if it is still
/// open after `limit`.
async fn read_until_closed(conn: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t0.elapsed()), conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(elapsed) => panic!("the connection was still open after {limit:?} ({elapsed})"),
        }
    }
}

/// Sends `head` on a new connection: the server must answer 431 (or nothing) and close it.
async fn assert_head_refused(addr: &str, head: &str) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // The server may close before it has read everything: a failed write is fine.
    let _ = conn.write_all(head.as_bytes()).await;
    let sent = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(
        sent.is_empty() || sent.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&sent[..sent.len().min(200)])
    );
}

#[tokio::test]
async fn slowloris_heads_and_oversized_headers_are_cut_off() {
    let up = Upstream::start().await;
    let config = basic_config(up.addr(), "").replace(
        "shutdown_grace = \"10s\"",
        "shutdown_grace = \"10s\"\nheader_read_timeout = \"1s\"",
    );
    let gw = Gateway::start(&config).await;
    let addr = gw
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();

    // Slowloris: a head that never ends, one byte every 200 ms. Dripping does not extend the
    // 1 s allowance: the server closes the connection (perhaps with a 408) soon after it.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let drip = async {
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
            .take(200)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
        }
    };
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), drip)
        .await
        .expect("the server never cut the slow client off");
    let sent = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(8), "cut off only after {took:?}");
    assert!(
        sent.is_empty() || sent.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&sent)
    );

    // A header larger than the 64 KiB the server reads: 431, then the connection closes.
    assert_head_refused(
        &addr,
        &format!(
            "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(100 * 1024)
        ),
    )
    .await;

    // Thousands of small headers: refused the same way.
    let mut head = String::from("GET /health/live HTTP/1.1\r\nHost: x\r\n");
    for i in 0..2000 {
        let _ = write!(head, "X-H{i}: v\r\n");
    }
    head.push_str("\r\n");
    assert_head_refused(&addr, &head).await;

    // Meanwhile everyone else is served.
    let client = client_with_key(TEST_KEY);
    assert_eq!(
        chat_status(
            &client,
            &gw,
            &serde_json::json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
        )
        .await,
        200
    );
}

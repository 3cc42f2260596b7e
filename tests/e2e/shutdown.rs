//! Graceful shutdown: SIGTERM mid-stream lets the stream finish, then the process exits 0.

use std::time::Duration;

use serde_json::json;

use crate::support::gateway::{basic_config, client, Gateway};
use crate::support::upstream::Upstream;
use crate::support::{sse_content, sse_data};

#[tokio::test]
async fn sigterm_mid_stream_finishes_the_stream_and_exits_zero() {
    let up = Upstream::start().await;
    let mut gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let gate = up.mock.control().hold_streams();
    let mut resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "long answer"}]}))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while sse_content(&text).is_empty() {
        let chunk = resp.chunk().await.unwrap().expect("first tokens");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    gw.terminate();
    // The listener closes at once: new connections are refused while the stream goes on.
    let addr = gw.addr;
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("listener closed after SIGTERM");
    gate.release();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        sse_data(&text).last().unwrap(),
        "[DONE]",
        "the in-flight stream completed"
    );
    let status = tokio::time::timeout(Duration::from_secs(15), gw.child.wait())
        .await
        .expect("exited")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let log = gw.log_text();
    assert!(log.contains("stopped"));
    // Every background task (the lanes' audit and fill writers among them) ended by itself,
    // not by the grace running out.
    assert!(
        !log.contains("did not finish in time"),
        "background work outlived the drain: {log}"
    );
}

//! LLM-as-judge on the real request path: sampled answers are scored by a judge model behind
//! its own provider, off the request path, and the verdict lands on the audit record.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::gateway::{client, post_chat, Gateway};
use crate::support::upstream::Upstream;
use sentinel::mock_provider::MockOptions;

/// The main mock serves `demo`; `judge` routes to a second mock whose replies are verdicts.
fn config(main: std::net::SocketAddr, judge: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
request_timeout = "20s"

[[providers]]
name = "mock"
kind = "openai_compatible"
base_url = "http://{main}/v1"
max_retries = 0

[[providers]]
name = "judge-mock"
kind = "openai_compatible"
base_url = "http://{judge}/v1"
timeout = "10s"
max_retries = 0

[[models]]
name = "demo"
routes = [{{ provider = "mock", model = "mock-gpt" }}]

[[models]]
name = "judge"
routes = [{{ provider = "judge-mock", model = "judge-gpt" }}]

[judge]
enabled = true
model = "judge"
sample_rate = 1.0
{extra}
"#
    )
}

async fn judged_record(gw: &Gateway, request_id: &str, deadline: Duration) -> Option<Value> {
    let c = client();
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        let resp = c
            .get(gw.url(&format!("/v1/audit/{request_id}")))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            let record: Value = resp.json().await.unwrap();
            if !record["judge"].is_null() {
                return Some(record);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

#[tokio::test]
async fn sampled_answers_are_scored_and_the_verdict_lands_on_the_record() {
    let main = Upstream::start().await;
    let judge = Upstream::with(MockOptions {
        reply: Some(r#"{"score": 8.5, "verdict": "Accurate and concise."}"#.into()),
        ..MockOptions::default()
    })
    .await;
    let gw = Gateway::start(&config(main.addr(), judge.addr(), "min_score = 9.0")).await;
    let resp = post_chat(
        &client(),
        &gw,
        &json!({"model": "demo", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let record = judged_record(&gw, &id, Duration::from_secs(10))
        .await
        .expect("the verdict arrives");
    assert_eq!(record["judge"]["score"], 8.5);
    assert_eq!(record["judge"]["verdict"], "Accurate and concise.");
    assert_eq!(record["judge"]["model"], "judge");
    assert_eq!(record["judge"]["low"], true, "8.5 is below min_score 9");

    // The judge saw the rubric with the question, the instructions and the answer.
    let asked = judge.mock.control().requests().await;
    let prompt: Value = asked.last().unwrap().json().unwrap();
    let text = prompt["messages"][0]["content"].as_str().unwrap();
    assert!(text.contains("What is the capital of France?"));
    assert!(text.contains("Be brief."));
    assert!(
        text.contains("Mock reply to:"),
        "the answer is in the prompt"
    );
    assert_eq!(prompt["response_format"]["type"], "json_object");

    // Judge spend is the reserved tenant's, not the judged tenant's.
    let usage: Value = client()
        .get(gw.url("/v1/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["totals"]["requests"], 1, "{usage}");
    let metrics = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sentinel_judge_score_count{model=\"judge\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sentinel_judge_low_scores_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_judge_never_delays_the_client_and_streams_are_judged_too() {
    let main = Upstream::start().await;
    let judge = Upstream::with(MockOptions {
        reply: Some(r#"{"score": 7, "verdict": "ok"}"#.into()),
        latency: Duration::from_secs(2),
        ..MockOptions::default()
    })
    .await;
    let gw = Gateway::start(&config(main.addr(), judge.addr(), "")).await;
    let c = client();
    let started = Instant::now();
    let resp = post_chat(
        &c,
        &gw,
        &json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "Stream please"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = resp.text().await.unwrap();
    let elapsed = started.elapsed();
    assert!(text.contains("[DONE]"));
    assert!(
        elapsed < Duration::from_millis(1500),
        "the client waited {elapsed:?} for a 2 s judge"
    );
    let record = judged_record(&gw, &id, Duration::from_secs(10))
        .await
        .expect("the verdict arrives after the judge's 2 s");
    assert_eq!(record["judge"]["score"], 7.0);
    let asked = judge.mock.control().requests().await;
    let prompt: Value = asked.last().unwrap().json().unwrap();
    assert!(
        prompt["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("Mock reply to: Stream please"),
        "the assembled stream text was judged"
    );
}

#[tokio::test]
async fn malformed_verdicts_are_retried_once_then_counted_as_failures() {
    let main = Upstream::start().await;
    let judge = Upstream::with(MockOptions {
        reply: Some("I think it is quite good!".into()),
        ..MockOptions::default()
    })
    .await;
    let gw = Gateway::start(&config(main.addr(), judge.addr(), "")).await;
    let resp = post_chat(
        &client(),
        &gw,
        &json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let until = Instant::now() + Duration::from_secs(10);
    let mut metrics = String::new();
    while Instant::now() < until {
        metrics = reqwest::get(gw.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("sentinel_judge_failures_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        metrics.contains("sentinel_judge_failures_total 1"),
        "{metrics}"
    );
    assert_eq!(
        judge.mock.control().calls("/v1/chat/completions"),
        2,
        "asked once, retried once"
    );
}

#[tokio::test]
async fn the_sample_rate_is_honoured_per_tenant_within_statistical_bounds() {
    let main = Upstream::start().await;
    let judge = Upstream::with(MockOptions {
        reply: Some(r#"{"score": 6, "verdict": "fine"}"#.into()),
        record_requests: false,
        ..MockOptions::default()
    })
    .await;
    // The global rate says everything; the tenant's override says 30 %.
    let extra = "\n[[tenants]]\nid = \"test\"\njudge = { sample_rate = 0.3 }\nkeys = [{ name = \"e2e\", key_env = \"E2E_TEST_KEY\" }]\n";
    let gw = Gateway::start(&config(main.addr(), judge.addr(), extra)).await;
    let c = client();
    let n = 1000;
    let body = json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]});
    let sends = (0..n).map(|_| post_chat(&c, &gw, &body));
    let mut expected = 0u64;
    for resp in futures_util::future::join_all(sends).await {
        assert_eq!(resp.status(), 200);
        let id = resp.headers()["x-request-id"].to_str().unwrap();
        // The decision is a pure function of the request id, so the client can predict it.
        expected += u64::from(sentinel::judge::sample(id, 0.3));
    }
    // Binomial(1000, 0.3): mean 300, sd 14.5; 4 sd either side.
    assert!(
        (242..=358).contains(&expected),
        "{expected} of {n} sampled at rate 0.3"
    );
    let until = Instant::now() + Duration::from_secs(20);
    let mut judged = 0;
    while Instant::now() < until {
        judged = judge.mock.control().calls("/v1/chat/completions");
        if judged >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(judged, expected, "exactly the sampled answers were judged");
}

#[tokio::test]
async fn a_failing_judge_upstream_is_counted_and_never_reaches_the_client() {
    let main = Upstream::start().await;
    let judge = Upstream::start().await;
    judge
        .mock
        .control()
        .fail_next(100, sentinel::mock_provider::FailKind::Status500);
    let gw = Gateway::start(&config(main.addr(), judge.addr(), "")).await;
    let resp = post_chat(
        &client(),
        &gw,
        &json!({"model": "demo", "messages": [{"role": "user", "content": "judge me"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200, "the client is not affected");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(10);
    let mut metrics = String::new();
    while Instant::now() < until {
        metrics = reqwest::get(gw.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("sentinel_judge_failures_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        metrics.contains("sentinel_judge_failures_total 1"),
        "{metrics}"
    );
    assert!(judged_record(&gw, &id, Duration::from_millis(300))
        .await
        .is_none());
}

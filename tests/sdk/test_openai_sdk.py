"""The official openai Python SDK against a running gateway: chat (JSON and stream),
embeddings, models, and error mapping to the SDK's exception types."""

import json
import os
import socket
import subprocess
import tempfile

import openai
import pytest

BIN = os.environ.get("SENTINEL_BIN", "target/debug/sentinel")
DEMO_KEY = "sk-sntl-sdk-test-0123456789abcdefghijklmnopqrstuv"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway():
    mock_port = free_port()
    config = open("config/sentinel.toml").read().replace("127.0.0.1:9100", f"127.0.0.1:{mock_port}")
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "sentinel.toml")
    with open(path, "w") as f:
        f.write(config)
    env = dict(os.environ, SENTINEL_LOG_FORMAT="json", SENTINEL_SERVER__LISTEN="127.0.0.1:0",
               SENTINEL_DEMO_KEY=DEMO_KEY)
    proc = subprocess.Popen([BIN, "serve", "--config", path], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    addr = None
    for line in proc.stderr:  # readiness: the "listening" log line carries the bound address
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("message") == "listening":
            addr = event["addr"]
            break
    assert addr, "gateway did not start"
    yield f"http://{addr}/v1"
    proc.terminate()
    assert proc.wait(timeout=15) == 0


@pytest.fixture()
def client(gateway):
    return openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)


def test_chat_non_stream(client):
    raw = client.chat.completions.with_raw_response.create(
        model="demo", messages=[{"role": "user", "content": "hello sdk"}])
    assert raw.headers["x-sentinel-provider"] == "mock"
    completion = raw.parse()
    assert "hello sdk" in completion.choices[0].message.content
    assert completion.usage.total_tokens > 0


def test_chat_stream(client):
    stream = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "stream sdk"}], stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream sdk" in text
    assert all(c.usage is None for c in chunks), "no usage chunk unless asked"


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "x"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_embeddings(client):
    result = client.embeddings.create(model="demo-embed", input=["one", "two"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) > 0


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "demo" in ids


def test_bad_key_is_an_authentication_error(gateway):
    bad = openai.OpenAI(base_url=gateway, api_key="sk-sntl-" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "invalid_api_key"


def test_errors_map_to_sdk_exceptions(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=[])
    assert err.value.code == "invalid_body"


def test_stream_replayed_from_the_cache_is_valid_for_the_sdk(client):
    messages = [{"role": "user", "content": "cache replay for the sdk"}]
    first = client.chat.completions.create(model="demo", messages=messages)
    text = first.choices[0].message.content
    # The fill is written off the request path: repeat until the answer comes from the cache.
    for _ in range(100):
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=messages, stream=True, stream_options={"include_usage": True})
        if raw.headers["x-sentinel-cache"] == "exact":
            break
    assert raw.headers["x-sentinel-cache"] == "exact"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

"""Locust load test for Sentinel: several tenants, OpenAI-shaped traffic, strict checks.

Tenants and keys (both may be combined):
  SENTINEL_LOADTEST_KEYS          "tenant=sk-sntl-...,tenant2=sk-sntl-..."  existing keys
  SENTINEL_ADMIN_KEY              admin key: lets the test create tenants of its own
  SENTINEL_LOADTEST_NEW_TENANTS   how many tenants to create through /admin/tenants at test
                                  start (default 3 when no keys are given, else 0)
Other knobs:
  SENTINEL_LOADTEST_MODEL         chat model (default "demo")
  SENTINEL_LOADTEST_EMBED_MODEL   embeddings model (default "demo-embed"; "" skips embeddings)
  SENTINEL_LOADTEST_REPORT        write per-tenant request counts here (JSON) at test stop
  SENTINEL_LOADTEST_RPM           rpm limit given to created tenants (default: none)

Tags (`--tags` / `--exclude-tags`): chat, stream, cache, embeddings, usage, audit, models.
Every response is checked: status 200, the OpenAI shape, Sentinel's headers, and streams are
read to `data: [DONE]`; anything else is a locust failure.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import threading
import time

from locust import HttpUser, between, events, tag, task
from locust.runners import MasterRunner

MODEL = os.environ.get("SENTINEL_LOADTEST_MODEL", "demo")
EMBED_MODEL = os.environ.get("SENTINEL_LOADTEST_EMBED_MODEL", "demo-embed")
CACHE_VALUES = {"miss", "exact", "semantic", "bypass"}

# Prompts repeated by the `cache` task: a small fixed set, so that with the exact cache on
# most of these requests are hits (x-sentinel-cache: exact) after the first round.
CACHED_PROMPTS = [
    "What is the capital of France?",
    "Summarise the plot of Hamlet in one sentence.",
    "Translate 'good morning' into German.",
    "Give me three synonyms for 'fast'.",
]
TOPICS = ["databases", "rust", "gardening", "astronomy", "tax law", "sourdough", "jazz", "rivers"]


class Tenants:
    """The tenants this process drives, and what it sent to each (for the audit check)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.list: list[tuple[str, str]] = []  # (tenant id, key)
        self.ready = False
        self.next = itertools.count()
        # tenant -> {"started": n, "completed": n, "cache_hits": n}; audited requests only
        # (POST /v1/chat/completions and /v1/embeddings; GET routes are not audited).
        self.counts: dict[str, dict[str, int]] = {}

    def load(self, host: str):
        with self.lock:
            if self.ready:
                return
            for item in filter(None, os.environ.get("SENTINEL_LOADTEST_KEYS", "").split(",")):
                tenant, _, key = item.strip().partition("=")
                if not key:
                    raise SystemExit(f"SENTINEL_LOADTEST_KEYS: '{item}' is not tenant=key")
                self.list.append((tenant, key))
            default_new = "0" if self.list else "3"
            new = int(os.environ.get("SENTINEL_LOADTEST_NEW_TENANTS", default_new))
            if new:
                self.list += create_tenants(host, new)
            if not self.list:
                raise SystemExit("no tenants: set SENTINEL_LOADTEST_KEYS or SENTINEL_ADMIN_KEY")
            for tenant, _ in self.list:
                self.counts.setdefault(tenant, {"started": 0, "completed": 0, "cache_hits": 0})
            self.ready = True

    def assign(self) -> tuple[str, str]:
        """Round-robin, so every tenant gets users."""
        return self.list[next(self.next) % len(self.list)]

    def bump(self, tenant: str, field: str):
        with self.lock:
            self.counts[tenant][field] += 1


TENANTS = Tenants()


def create_tenants(host: str, n: int) -> list[tuple[str, str]]:
    """Creates n tenants with one key each through the admin API."""
    import requests  # locust depends on it

    admin = os.environ.get("SENTINEL_ADMIN_KEY")
    if not admin:
        raise SystemExit("SENTINEL_LOADTEST_NEW_TENANTS needs SENTINEL_ADMIN_KEY")
    h = {"authorization": f"Bearer {admin}"}
    run = secrets.token_hex(3)
    out = []
    for i in range(n):
        tenant = f"lt-{run}-{i + 1}"
        body = {"id": tenant, "name": f"load test {run} #{i + 1}"}
        if os.environ.get("SENTINEL_LOADTEST_RPM"):
            body["limits"] = {"rpm": int(os.environ["SENTINEL_LOADTEST_RPM"])}
        r = requests.post(f"{host}/admin/tenants", json=body, headers=h, timeout=10)
        if r.status_code not in (200, 201):
            raise SystemExit(f"POST /admin/tenants {tenant}: {r.status_code} {r.text[:300]}")
        r = requests.post(f"{host}/admin/tenants/{tenant}/keys", json={"name": "loadtest"}, headers=h, timeout=10)
        if r.status_code not in (200, 201) or not r.json().get("key", "").startswith("sk-sntl-"):
            raise SystemExit(f"POST /admin/tenants/{tenant}/keys: {r.status_code} {r.text[:300]}")
        out.append((tenant, r.json()["key"]))
    return out


@events.test_start.add_listener
def _test_start(environment, **_):
    # Every worker loads its own tenants; a distributed run's master sends no requests.
    if not isinstance(environment.runner, MasterRunner):
        TENANTS.load(environment.host.rstrip("/"))


@events.test_stop.add_listener
def _test_stop(environment, **_):
    path = os.environ.get("SENTINEL_LOADTEST_REPORT")
    if path:
        with TENANTS.lock:
            with open(path, "w") as f:
                json.dump({"tenants": TENANTS.counts}, f, indent=2)


class ShapeError(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise ShapeError(msg)


def check_common_headers(resp):
    need(resp.headers.get("x-request-id"), "no x-request-id header")
    cache = resp.headers.get("x-sentinel-cache")
    need(cache in CACHE_VALUES, f"x-sentinel-cache is {cache!r}")
    return cache


def check_completion(body):
    need(body.get("object") == "chat.completion", f"object is {body.get('object')!r}")
    need(isinstance(body.get("id"), str), "no id")
    choices = body.get("choices")
    need(isinstance(choices, list) and choices, "no choices")
    msg = choices[0].get("message") or {}
    need(msg.get("role") == "assistant", "choices[0].message.role is not assistant")
    need(isinstance(msg.get("content"), str) and msg["content"], "empty content")
    need(choices[0].get("finish_reason"), "no finish_reason")
    usage = body.get("usage") or {}
    for f in ("prompt_tokens", "completion_tokens", "total_tokens"):
        need(isinstance(usage.get(f), int), f"usage.{f} missing")


class SentinelUser(HttpUser):
    """One simulated client, bound to one tenant for its whole life."""

    wait_time = between(0.05, 0.4)

    def on_start(self):
        TENANTS.load(self.host.rstrip("/"))  # no-op after test_start; covers odd runners
        self.tenant, key = TENANTS.assign()
        self.auth = {"authorization": f"Bearer {key}"}

    # --- helpers ------------------------------------------------------------------------
    def chat(self, name, messages, tag_value, **extra):
        body = {"model": MODEL, "messages": messages, **extra}
        headers = {**self.auth, "x-sentinel-tags": f"loadtest={tag_value}"}
        TENANTS.bump(self.tenant, "started")
        with self.client.post("/v1/chat/completions", json=body, headers=headers, name=name,
                              catch_response=True) as resp:
            TENANTS.bump(self.tenant, "completed")
            try:
                need(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
                cache = check_common_headers(resp)
                need(resp.headers.get("x-sentinel-cost-usd") is not None, "no x-sentinel-cost-usd")
                check_completion(resp.json())
            except (ShapeError, ValueError) as e:
                resp.failure(str(e))
                return None
            resp.success()
            if cache in ("exact", "semantic"):
                TENANTS.bump(self.tenant, "cache_hits")
            return cache

    # --- tasks --------------------------------------------------------------------------
    @tag("chat")
    @task(10)
    def chat_completion(self):
        topic = random.choice(TOPICS)
        self.chat("chat", [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"Explain one surprising fact about {topic}. ({secrets.token_hex(4)})"},
        ], "chat", max_tokens=64, temperature=0.7)

    @tag("cache")
    @task(4)
    def chat_repeated(self):
        # Same body every time (temperature 0): the exact cache's best case.
        self.chat("chat (repeated prompt)", [{"role": "user", "content": random.choice(CACHED_PROMPTS)}],
                  "cache", temperature=0)

    @tag("stream")
    @task(6)
    def chat_stream(self):
        body = {"model": MODEL, "stream": True, "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Write a haiku about {random.choice(TOPICS)}."}]}
        headers = {**self.auth, "x-sentinel-tags": "loadtest=stream", "accept": "text/event-stream"}
        TENANTS.bump(self.tenant, "started")
        started = time.perf_counter()
        with self.client.post("/v1/chat/completions", json=body, headers=headers, name="chat (stream)",
                              stream=True, catch_response=True) as resp:
            try:
                need(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
                need(resp.headers.get("content-type", "").startswith("text/event-stream"),
                     f"content-type {resp.headers.get('content-type')!r}")
                check_common_headers(resp)
                chunks, done, text, size = 0, False, [], 0
                for line in resp.iter_lines():
                    size += len(line) + 1
                    if not line or not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    need(not done, "data after [DONE]")
                    if data == b"[DONE]":
                        done = True
                        continue
                    event = json.loads(data)
                    need("error" not in event, f"error event in stream: {event.get('error')}")
                    need(event.get("object") == "chat.completion.chunk", f"chunk object {event.get('object')!r}")
                    for choice in event.get("choices") or []:
                        text.append((choice.get("delta") or {}).get("content") or "")
                    chunks += 1
                need(done, f"stream ended without [DONE] after {chunks} chunks")
                need(chunks >= 2 and "".join(text), "empty stream")
                # Locust timed the headers; report the whole stream instead.
                resp.request_meta["response_time"] = (time.perf_counter() - started) * 1000
                resp.request_meta["response_length"] = size
            except (ShapeError, ValueError) as e:
                resp.failure(str(e))
            else:
                resp.success()
            finally:
                TENANTS.bump(self.tenant, "completed")

    @tag("embeddings")
    @task(2)
    def embeddings(self):
        if not EMBED_MODEL:
            return
        TENANTS.bump(self.tenant, "started")
        with self.client.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": [random.choice(TOPICS), "hello"]},
                              headers=self.auth, name="embeddings", catch_response=True) as resp:
            TENANTS.bump(self.tenant, "completed")
            try:
                need(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
                check_common_headers(resp)
                body = resp.json()
                need(body.get("object") == "list", f"object {body.get('object')!r}")
                data = body.get("data") or []
                need(len(data) == 2, f"{len(data)} embeddings for 2 inputs")
                need(all(d.get("object") == "embedding" and d.get("embedding") for d in data), "bad embedding item")
            except (ShapeError, ValueError) as e:
                resp.failure(str(e))
            else:
                resp.success()

    @tag("usage")
    @task(1)
    def usage(self):
        with self.client.get("/v1/usage", headers=self.auth, name="usage", catch_response=True) as resp:
            try:
                need(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
                body = resp.json()
                need(body.get("tenant") == self.tenant, f"usage of {body.get('tenant')!r}, expected {self.tenant!r}")
                totals = body.get("totals") or {}
                for f in ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "cache_hits", "cost_saved_usd"):
                    need(f in totals, f"totals.{f} missing")
            except (ShapeError, ValueError) as e:
                resp.failure(str(e))
            else:
                resp.success()

    @tag("audit")
    @task(1)
    def audit(self):
        with self.client.get("/v1/audit?limit=20", headers=self.auth, name="audit", catch_response=True) as resp:
            try:
                need(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
                body = resp.json()
                need(isinstance(body.get("data"), list) and "next_cursor" in body, "not {data, next_cursor}")
                for rec in body["data"]:
                    need(rec.get("tenant") == self.tenant, f"record of tenant {rec.get('tenant')!r}")
                    need(rec.get("hash") and "prev_hash" in rec, "record without hash chain fields")
            except (ShapeError, ValueError) as e:
                resp.failure(str(e))
            else:
                resp.success()

    @tag("models")
    @task(1)
    def models(self):
        with self.client.get("/v1/models", headers=self.auth, name="models", catch_response=True) as resp:
            try:
                need(resp.status_code == 200, f"status {resp.status_code}")
                body = resp.json()
                need(body.get("object") == "list", "not a list")
                need(any(m.get("id") == MODEL for m in body.get("data") or []), f"{MODEL} not listed")
            except (ShapeError, ValueError) as e:
                resp.failure(str(e))
            else:
                resp.success()

"""Runs a throwaway Sentinel stack for the operations scripts (scripts/demo, scripts/loadtest,
scripts/test-prometheus): the bundled mock provider and a gateway on the embedded store, both
in a temporary directory, on ports the kernel picks (port 0, read back from the JSON logs, so
parallel runs never collide). Standard library only.

    from harness import Stack, new_key
    with Stack(tenants=[{"id": "acme", "keys": [("ci", new_key())]}]) as s:
        status, headers, body = s.request("GET", "/v1/models", key=...)
        ...
        s.stop()          # SIGTERM both processes; raises unless each exits 0

The binary is $SENTINEL_BIN, else target/debug/sentinel (built with `cargo build --bin
sentinel` only when missing). Every SENTINEL_* variable of the caller's environment is
dropped for the children so that a stray override cannot change the config under test.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "admin-" + secrets.token_urlsafe(24)


def new_key() -> str:
    """A fresh tenant key in Sentinel's format: `sk-sntl-` + 43 URL-safe characters."""
    return "sk-sntl-" + secrets.token_urlsafe(32)


def binary() -> Path:
    env = os.environ.get("SENTINEL_BIN")
    if env:
        return Path(env)
    path = ROOT / "target" / "debug" / "sentinel"
    if not path.is_file():
        print("==> target/debug/sentinel is missing: cargo build --bin sentinel", file=sys.stderr, flush=True)
        subprocess.run(["cargo", "build", "--locked", "--bin", "sentinel"], cwd=ROOT, check=True)
    return path


class StackError(RuntimeError):
    pass


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


class Proc:
    """A child process whose stderr (JSON logs) goes to a file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path):
        self.name, self.cmd, self.log = name, cmd, log
        self._fh = open(log, "wb")
        self.p = subprocess.Popen(cmd, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=ROOT)

    def wait_log(self, message: str, timeout: float) -> dict:
        """The first JSON log event whose message is `message` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("message") == message:
                    return ev
            if self.p.poll() is not None:
                raise StackError(f"{self.name} exited with {self.p.returncode} before '{message}':\n{self.tail()}")
            time.sleep(0.05)
        raise StackError(f"{self.name}: no '{message}' within {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 25) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + l for l in lines[-n:])

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; SIGKILL after `timeout` (and return -9)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._fh.close()
        return self.p.returncode


class Stack:
    """Mock provider + gateway. `tenants`: [{"id", "keys": [(name, secret)], "limits": {...},
    "budget": {...}, "models": [...]}]; `extra_toml` is appended to the generated config."""

    def __init__(self, tenants=(), extra_toml: str = "", mock_args=(), admin_key: str = ADMIN_KEY,
                 keep_dir: bool = False):
        self.tenants = list(tenants)
        self.extra_toml = extra_toml
        self.mock_args = list(mock_args)
        self.admin_key = admin_key
        self.keep_dir = keep_dir
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-ops-"))
        self.mock: Proc | None = None
        self.gateway: Proc | None = None
        self.base = ""
        self.mock_addr = ""
        self.key_env: dict[str, str] = {}
        self.config = self.dir / "sentinel.toml"

    # --- lifecycle ----------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not issubclass(exc_type, (SystemExit, KeyboardInterrupt)):
            for proc in (self.gateway, self.mock):
                if proc is not None:
                    print(f"--- {proc.name} log (tail) ---\n{proc.tail()}", file=sys.stderr, flush=True)
        self.kill()
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_") and k not in ("RUST_LOG",)}
        env.update(SENTINEL_LOG_FORMAT="json", SENTINEL_LOG="info", NO_COLOR="1")
        env.update(extra)
        return env

    def config_text(self) -> str:
        store = self.dir / "sentinel.db"
        spill = self.dir / "audit-spill.log"
        out = [
            "[server]",
            'listen = "127.0.0.1:0"',
            'shutdown_grace = "5s"',
            'request_timeout = "30s"',
            "",
            "[store]",
            'backend = "embedded"',
            f"path = {_toml_str(str(store))}",
            "",
            "[demo]",
            'mock_provider = ""',
            "",
            "[audit]",
            f"spill_path = {_toml_str(str(spill))}",
            "",
            "[[providers]]",
            'name = "mock"',
            'kind = "openai_compatible"',
            f'base_url = "http://{self.mock_addr}/v1"',
            'timeout = "10s"',
            'stream_idle_timeout = "10s"',
            "max_retries = 0",
            "",
            "[[models]]",
            'name = "demo"',
            'routes = [{ provider = "mock", model = "mock-gpt" }]',
            "",
            "[[models]]",
            'name = "demo-embed"',
            'routes = [{ provider = "mock", model = "mock-embedding" }]',
            "",
        ]
        self.key_env = {}
        for i, t in enumerate(self.tenants):
            out += ["[[tenants]]", f"id = {_toml_str(t['id'])}"]
            if t.get("models") is not None:
                out.append("models = " + json.dumps(t["models"]))
            for field in ("limits", "budget"):
                if t.get(field):
                    inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in t[field].items())
                    out.append(f"{field} = {{ {inner} }}")
            keys = []
            for j, (name, secret) in enumerate(t.get("keys", [])):
                var = f"SENTINEL_OPS_KEY_{i}_{j}"
                self.key_env[var] = secret
                keys.append(f"{{ name = {_toml_str(name)}, key_env = {_toml_str(var)} }}")
            out.append("keys = [" + ", ".join(keys) + "]")
            out.append("")
        out.append(self.extra_toml)
        return "\n".join(out) + "\n"

    def start(self, timeout: float = 30.0):
        exe = str(binary())
        self.mock = Proc("mock-provider", [exe, "mock-provider", "--port", "0", *self.mock_args],
                         self._env({}), self.dir / "mock.log")
        self.mock_addr = self.mock.wait_log("mock provider listening", timeout)["addr"]
        self.config = self.dir / "sentinel.toml"
        self.config.write_text(self.config_text())
        self.gateway = Proc("gateway", [exe, "serve", "--config", str(self.config)],
                            self._env({"SENTINEL_ADMIN_KEY": self.admin_key, **self.key_env}),
                            self.dir / "gateway.log")
        addr = self.gateway.wait_log("listening", timeout)["addr"]
        self.base = f"http://{addr}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _, _ = self.request("GET", "/health/ready", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"gateway not ready within {timeout}s:\n{self.gateway.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Graceful stop; raises StackError unless both processes exit 0 on SIGTERM."""
        problems = []
        for proc in (self.gateway, self.mock):
            if proc is None:
                continue
            rc = proc.stop()
            if rc != 0:
                problems.append(f"{proc.name} exited with {rc} after SIGTERM:\n{proc.tail()}")
        self.gateway = self.mock = None
        if problems:
            raise StackError("\n".join(problems))

    def kill(self) -> None:
        for proc in (self.gateway, self.mock):
            if proc is not None:
                proc.stop(timeout=5)
        self.gateway = self.mock = None

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Runs `sentinel ARGS --config <this stack's config>` (e.g. `audit verify`)."""
        return subprocess.run([str(binary()), *args, "--config", str(self.config)], cwd=ROOT,
                              env=self._env({"SENTINEL_ADMIN_KEY": self.admin_key, **self.key_env}),
                              capture_output=True, text=True, timeout=timeout)

    # --- HTTP ---------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, key: str | None = None, body=None,
                headers: dict | None = None, timeout: float = 10):
        """(status, headers as a lower-cased dict, body bytes); never raises on HTTP errors."""
        data, h = _encoded(key, body, headers)
        req = urllib.request.Request(self.url(path), data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def json(self, method: str, path: str, key: str | None = None, body=None, expect=200, **kw):
        """The decoded JSON answer; StackError unless the status is `expect` (int or tuple)."""
        status, headers, raw = self.request(method, path, key=key, body=body, **kw)
        if status not in ((expect,) if isinstance(expect, int) else expect):
            raise StackError(f"{method} {path}: expected {expect}, got {status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def admin(self, method: str, path: str, body=None, expect=(200, 201)):
        return self.json(method, path, key=self.admin_key, body=body, expect=expect)

    def stream(self, path: str, key: str, body, timeout: float = 10):
        """POST a streaming request: (status, headers, [data payload strings])."""
        data, h = _encoded(key, body, {"accept": "text/event-stream"})
        req = urllib.request.Request(self.url(path), data=data, method="POST", headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, _sse_data(resp)
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, [e.read().decode(errors="replace")]

    def connection(self, timeout: float = 10) -> "Connection":
        """One keep-alive connection to the gateway, as an SDK's connection pool keeps."""
        return Connection(self.base, timeout)

    def metrics(self, path: str = "/metrics") -> str:
        status, _, raw = self.request("GET", path)
        if status != 200:
            raise StackError(f"GET {path}: {status}")
        return raw.decode()


def _encoded(key: str | None, body, headers: dict | None) -> tuple[bytes | None, dict]:
    """A request's JSON body and headers (content type, bearer key, then `headers`)."""
    data = None if body is None else json.dumps(body).encode()
    h = {"content-type": "application/json"} if data is not None else {}
    if key:
        h["authorization"] = f"Bearer {key}"
    h.update(headers or {})
    return data, h


def _sse_data(resp) -> list[str]:
    """The `data:` payloads of an SSE response, read to its end."""
    events = []
    for raw in resp:
        line = raw.decode().strip()
        if line.startswith("data:"):
            events.append(line[5:].strip())
    return events


class Connection:
    """One keep-alive HTTP/1.1 connection, as the OpenAI SDKs' connection pools keep. The
    gateway serves a connection on one lane, so `/v1/audit` lists the requests sent over it
    in the order they were sent (ARCHITECTURE.md, "Audit order"); `Stack.request` opens a
    connection per request instead. Not retried: a failure is the caller's to see."""

    def __init__(self, base: str, timeout: float = 10):
        url = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)

    def _send(self, method: str, path: str, key: str | None, body, headers: dict | None):
        data, h = _encoded(key, body, headers)
        self.conn.request(method, path, body=data, headers=h)
        return self.conn.getresponse()

    def request(self, method: str, path: str, key: str | None = None, body=None,
                headers: dict | None = None):
        """(status, headers as a lower-cased dict, body bytes), like `Stack.request`."""
        resp = self._send(method, path, key, body, headers)
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw

    def stream(self, path: str, key: str, body):
        """POST a streaming request: (status, headers, [data payload strings])."""
        resp = self._send("POST", path, key, body, {"accept": "text/event-stream"})
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status != 200:
            return resp.status, headers, [resp.read().decode(errors="replace")]
        return resp.status, headers, _sse_data(resp)

    def close(self) -> None:
        self.conn.close()


def config_accepts(extra_toml: str) -> tuple[bool, str]:
    """Whether this build's `check-config` accepts a minimal config plus `extra_toml`
    (features that are not built yet are refused by name); (ok, the refusal message)."""
    with tempfile.TemporaryDirectory(prefix="sentinel-probe-") as d:
        path = Path(d) / "probe.toml"
        path.write_text(
            f'[store]\npath = {_toml_str(str(Path(d) / "probe.db"))}\n[demo]\nmock_provider = ""\n'
            '[[providers]]\nname = "mock"\nkind = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
            '[[models]]\nname = "demo"\nroutes = [{ provider = "mock", model = "mock-gpt" }]\n'
            + extra_toml + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        p = subprocess.run([str(binary()), "check-config", "--config", str(path)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=30)
        if p.returncode == 0:
            return True, ""
        lines = [l for l in p.stderr.splitlines() if l.startswith("error:")] or p.stderr.splitlines()[-1:]
        return False, (lines[-1] if lines else f"exit {p.returncode}").replace(str(path) + ": ", "")


def wait_for(fn, timeout: float, interval: float = 0.1):
    """Calls fn() until it returns something truthy or `timeout` passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)

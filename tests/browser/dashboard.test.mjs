// The operator dashboard and the API reference in a real browser: Debian's headless Chromium,
// driven by playwright-core (no browser download), against the real debug binary.
//
// It starts `sentinel mock-provider` and `sentinel serve` on free ports with a temporary
// config (two tenants, an admin key, the judge on, prices for the mock model), sends traffic,
// then checks that:
// - a wrong admin key shows a visible message;
// - with the right key the page shows requests/s, totals, cost, tenants and judge scores,
//   keeps the key in sessionStorage only, logs no console error and makes no request outside
//   the gateway's origin; a screenshot goes to target/dashboard.png;
// - /docs renders every operation from /openapi.json, also from this origin only
//   (target/docs.png).
//
// Run: SENTINEL_BIN=target/debug/sentinel node --test tests/browser/dashboard.test.mjs
// (scripts/test does, after installing chromium and `npm ci` here).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.SENTINEL_BIN || path.join(ROOT, 'target', 'debug', 'sentinel');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const OUT_DIR = path.join(ROOT, 'target');
const ADMIN_KEY = 'browser-test-admin-key-not-a-secret';
const KEYS = {
  demo: 'sk-sntl-browser-demo-key-0123456789abcdefghijklmn',
  acme: 'sk-sntl-browser-acme-key-0123456789abcdefghijklmn',
};
// Chromium flags: no sandbox (root in a container), and nothing that phones home.
const CHROMIUM_ARGS = [
  '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

const children = [];
const dirs = [];
let base = '';
let context;
let traffic;

function tempDir(prefix) {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

/** Spawns the binary and resolves with the `addr` of its first log line whose message is `ready`. */
function start(args, { cwd, env, ready }) {
  const child = spawn(BIN, args, {
    cwd,
    env: { ...process.env, SENTINEL_LOG_FORMAT: 'json', SENTINEL_LOG: 'info', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  const logs = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args[0]} did not start:\n${logs.join('\n')}`)), 60_000);
    child.on('exit', (code) => reject(new Error(`${args[0]} exited with ${code}:\n${logs.join('\n')}`)));
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      logs.push(line);
      try {
        const event = JSON.parse(line);
        if (event.message === ready) {
          clearTimeout(timer);
          resolve(event.addr);
        }
      } catch { /* not JSON */ }
    });
  });
}

async function chat(tenant, content) {
  const resp = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEYS[tenant]}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo', messages: [{ role: 'user', content }] }),
  });
  const body = await resp.text();
  assert.equal(resp.status, 200, body);
}

/** A page that records console errors, page errors and every URL it requests. */
async function watchedPage() {
  const page = await context.newPage();
  const seen = { errors: [], requests: [] };
  page.on('console', (msg) => { if (msg.type() === 'error') seen.errors.push(msg.text()); });
  page.on('pageerror', (err) => seen.errors.push(String(err)));
  page.on('request', (req) => seen.requests.push(req.url()));
  page.on('requestfailed', (req) => seen.errors.push(`request failed: ${req.url()} ${req.failure()?.errorText}`));
  return { page, seen };
}

function assertSameOrigin(requests) {
  const foreign = requests.filter((url) => !url.startsWith(base + '/') && !url.startsWith('data:'));
  assert.deepEqual(foreign, [], 'every request stays on the gateway');
}

before(async () => {
  const work = tempDir('sentinel-browser-');
  const mock = await start(['mock-provider', '--port', '0'], { cwd: work, ready: 'mock provider listening' });
  // The mock answers "Mock reply to: <first 40 characters of the prompt>". This rubric puts a
  // verdict with the question as the score in those characters, so asking "7" scores 7.
  writeFileSync(path.join(work, 'rubric.md'), '{"score": {{question}}, "verdict": "mock"}\n{{answer}}\n');
  writeFileSync(path.join(work, 'sentinel.toml'), `
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "mock"
kind = "openai_compatible"
base_url = "http://${mock}/v1"
max_retries = 0

[[models]]
name = "demo"
routes = [{ provider = "mock", model = "mock-gpt" }]

[[models]]
name = "judge"
routes = [{ provider = "mock", model = "mock-judge" }]

# Prices high enough that the dashboard shows cents, not zeros.
[pricing."mock-gpt"]
input = 1000.0
output = 3000.0
cached_input = 500.0

[judge]
enabled = true
model = "judge"
sample_rate = 1.0
rubric = "rubric.md"

[[tenants]]
id = "demo"
name = "Demo tenant"
keys = [{ name = "demo", key_env = "BROWSER_DEMO_KEY" }]

[[tenants]]
id = "acme"
name = "Acme"
keys = [{ name = "acme", key_env = "BROWSER_ACME_KEY" }]
`);
  const addr = await start(['serve', '--config', 'sentinel.toml'], {
    cwd: work,
    env: { SENTINEL_ADMIN_KEY: ADMIN_KEY, BROWSER_DEMO_KEY: KEYS.demo, BROWSER_ACME_KEY: KEYS.acme },
    ready: 'listening',
  });
  base = `http://${addr}`;

  const scores = ['7', '9', '8', '6', '9', '10', '8', '7'];
  for (let i = 0; i < scores.length; i++) await chat(i % 3 === 0 ? 'acme' : 'demo', scores[i]);

  context = await chromium.launchPersistentContext(tempDir('sentinel-chromium-'), {
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
    viewport: { width: 1360, height: 860 },
  });
});

after(async () => {
  clearInterval(traffic);
  await context?.close();
  for (const child of children) child.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : null)));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

test('a wrong admin key shows a visible message', async () => {
  const { page, seen } = await watchedPage();
  await page.goto(`${base}/`);
  await page.fill('#admin-key', 'not-the-admin-key');
  await page.click('#connect');
  await page.waitForSelector('#error:not([hidden])');
  const message = await page.textContent('#error');
  assert.match(message, /admin key was refused/);
  assert.match(message, /401 invalid_api_key|403 admin_required/);
  // The refused key is not kept, and the form is back.
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.ok(await page.isVisible('#admin-key'));
  // The only console errors are the browser's own lines about the refused request.
  assert.deepEqual(seen.errors.filter((e) => !/status of 40[13]/.test(e)), []);
  assertSameOrigin(seen.requests);
  await page.close();
});

test('with the admin key the dashboard shows live numbers', async () => {
  // Keep requests flowing so requests/s has something to measure between two polls.
  let n = 0;
  traffic = setInterval(() => { chat(n++ % 2 ? 'demo' : 'acme', String(5 + (n % 5))).catch(() => {}); }, 150);
  const { page, seen } = await watchedPage();
  await page.goto(`${base}/`);
  // Before the key: public numbers only, tenants wait for the key.
  await page.waitForFunction(() => document.getElementById('total').textContent !== '—');
  assert.equal(await page.textContent('#cost-month'), '—');
  assert.match(await page.textContent('#tenants-empty'), /Enter the admin key/);
  mkdirSync(OUT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(OUT_DIR, 'dashboard-no-key.png') });

  await page.fill('#admin-key', ADMIN_KEY);
  await page.click('#connect');
  await page.waitForFunction(() => {
    const num = (id) => Number(document.getElementById(id).textContent.replace(/[^0-9.]/g, ''));
    return num('rps') > 0 && num('total') > 0
      && document.querySelectorAll('#tenants tbody tr').length >= 2
      && document.getElementById('cost-month').textContent.startsWith('$')
      && document.getElementById('judge-count').textContent.includes('scored')
      // Two rate samples draw the sparkline (one more poll, for the screenshot).
      && document.querySelector('#spark polyline') !== null;
  }, null, { timeout: 20_000, polling: 250 });

  const text = (sel) => page.textContent(sel);
  assert.match(await text('#health'), /health: ok/);
  assert.match(await text('#cost-today'), /^\$\d/);
  assert.notEqual(await text('#cost-today'), '$0.00');
  assert.match(await text('#cache-ratio'), /%$/);
  assert.match(await text('#judge-avg'), /\/ 10$/);
  const rows = await page.$$eval('#tenants tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  const ids = rows.map((r) => r[0]);
  assert.ok(ids.includes('demo') && ids.includes('acme'), JSON.stringify(rows));
  assert.ok(ids.some((id) => id.startsWith('_judge')), 'judge calls are shown under _judge');
  const demo = rows.find((r) => r[0] === 'demo');
  assert.ok(Number(demo[1].replace(/,/g, '')) > 0, JSON.stringify(demo));
  assert.match(demo[6], /^demo \(\d/);
  assert.ok(await page.$$eval('#judge-bars .bar', (bars) => bars.length) >= 10);
  assert.ok(await page.isHidden('#error'));

  // The key lives in this tab's sessionStorage only; the input no longer holds it.
  assert.equal(await page.evaluate(() => sessionStorage.getItem('sentinel.adminKey')), ADMIN_KEY);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.equal(await page.inputValue('#admin-key'), '');

  await page.screenshot({ path: path.join(OUT_DIR, 'dashboard.png'), fullPage: true });

  assert.deepEqual(seen.errors, [], 'no console errors');
  assertSameOrigin(seen.requests);
  assert.ok(seen.requests.some((u) => u.includes('/v1/usage?tenant=demo')));

  // Forgetting the key clears the tenant figures.
  await page.click('#forget');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.equal(await text('#cost-month'), '—');
  clearInterval(traffic);
  await page.close();
});

test('/docs renders every operation of /openapi.json from this origin', async () => {
  const { page, seen } = await watchedPage();
  await page.goto(`${base}/docs`);
  await page.waitForSelector('.opblock', { timeout: 20_000 });
  const operations = await page.$$eval('.opblock', (blocks) => blocks.length);
  assert.ok(operations >= 22, `${operations} operations rendered`);
  assert.match(await page.textContent('.info .title'), /Sentinel/);
  // Expanding an operation makes Swagger UI resolve the schemas it references: a broken
  // reference would show in its error panel. (All of them would take ~15 s of rendering on
  // two cores; the Rust tests and openapi-spec-validator already resolve every $ref.)
  const expand = ['createChatCompletion', 'getUsage', 'getAuditRecord', 'createTenant', 'createKey', 'getHealth'];
  for (const id of expand) await page.click(`[id$="-${id}"] .opblock-summary-control`);
  await page.waitForFunction((n) => document.querySelectorAll('.opblock-body').length >= n, expand.length);
  await page.waitForTimeout(500);
  assert.equal(await page.$$eval('.errors-wrapper, .opblock-body .errors', (e) => e.length), 0);
  assert.ok(await page.isVisible('text=text/event-stream'), 'the SSE answer is documented');
  const chat = await page.$('#operations-openai-createChatCompletion');
  await chat.screenshot({ path: path.join(OUT_DIR, 'docs-chat.png') });
  await page.screenshot({ path: path.join(OUT_DIR, 'docs.png') });
  assert.deepEqual(seen.errors, [], 'no console errors');
  assertSameOrigin(seen.requests);
  assert.ok(seen.requests.includes(`${base}/openapi.json`));
  await page.close();
});

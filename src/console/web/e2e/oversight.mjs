// Browser journeys of the oversight screens (issue 13 §2 §4), run with node:test against the
// real `kura demo` on loopback through Debian's Chromium, like e2e/run.mjs (whose start-up,
// browser and CSP checks are copied here so each journey file runs alone):
//   node --test --test-concurrency=1 e2e/oversight.mjs
// The auditor acknowledges an alert raised by failed logins; the applicant views, downloads
// and files the usage report and records a publication; the reviewer sees the filed report.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../../..');
const out = process.env.E2E_OUT ?? join(repo, 'target/e2e');
mkdirSync(out, { recursive: true });
const password = process.env.E2E_PASSWORD ?? `e2e-${randomBytes(9).toString('hex')}`;
const patients = process.env.E2E_PATIENTS ?? '3000';

let base = process.env.E2E_BASE_URL ?? '';
let server = null;
let serverLog = '';
let dataDir = null;
let browser = null;

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

async function waitReady(url, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (server && server.exitCode !== null) throw new Error(`kura demo exited (${server.exitCode}):\n${serverLog.slice(-4000)}`);
    try {
      const r = await fetch(`${url}/api/v1/openapi.json`);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`kura demo did not answer within ${ms / 1000}s:\n${serverLog.slice(-4000)}`);
}

before(async () => {
  if (!base) {
    const bin =
      process.env.KURA_BIN ?? join(process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(repo, 'target'), 'debug/kura');
    assert.ok(existsSync(bin), `kura binary not found at ${bin}; run \`cargo build\` first or set KURA_BIN`);
    const port = await freePort();
    dataDir = mkdtempSync(join(tmpdir(), 'kura-e2e-'));
    server = spawn(bin, ['demo', '--data-dir', dataDir, '--port', String(port), '--demo-password', password, '--patients', patients], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
    });
    server.stdout.on('data', (d) => (serverLog += d));
    server.stderr.on('data', (d) => (serverLog += d));
    base = `http://127.0.0.1:${port}`;
    await waitReady(base, 600_000);
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => {
      const t = setTimeout(() => {
        server.kill('SIGKILL');
        r();
      }, 10_000);
      server.on('exit', () => {
        clearTimeout(t);
        r();
      });
    });
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** A fresh browser context (own cookies) with CSP / page-error tracking. */
async function open(locale = 'ja-JP') {
  const context = await browser.newContext({ locale, viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to (load|execute|apply)/i.test(text)) problems.push(`CSP: ${text}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    if (!r.url().startsWith(base)) problems.push(`request outside the server: ${r.url()}`);
  });
  page.on('request', (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith('data:') && !r.url().startsWith('blob:'))
      problems.push(`request outside the server: ${r.url()}`);
  });
  await page.goto(`${base}/`);
  return { context, page, problems };
}

async function login(page, user) {
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#login-submit');
  await page.waitForSelector('#who');
  assert.match(await page.textContent('#who'), new RegExp(user));
}

/** Wait until the element's text is exactly `text` (screens re-render asynchronously). */
async function waitText(page, selector, text) {
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent?.trim() === want,
    [selector, text],
    { timeout: 10_000 },
  );
}

async function shot(page, name) {
  await page.screenshot({ path: join(out, `${name}.png`), fullPage: true });
}

function clean(problems) {
  assert.deepEqual(problems, [], 'no CSP violations, page errors or outside requests');
}

/** Type into the CodeMirror editor of cell `i` (0-based) using the keyboard only. */

test('auditor acknowledges the alert that failed logins raised', async () => {
  for (let i = 0; i < 3; i++) {
    await fetch(`${base}/api/v1/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'intruder', password: 'wrong password' }),
    });
  }
  const { context, page, problems } = await open('ja-JP');
  await login(page, 'auditor1');
  await page.click('a[data-nav="alerts"]');
  const row = page.locator('tr.alert[data-rule="failed_logins"]');
  await row.waitFor();
  assert.match(await row.locator('.alert-message').textContent(), /intruder/);
  assert.ok((await row.locator('a.event-link').count()) >= 3, 'links to the events that raised it');
  await shot(page, 'oversight-alerts');
  await row.locator('.ack-comment').fill('checked: no such account; scanner from the test network');
  await row.locator('.ack-submit').click();
  await page.waitForSelector('tr.alert[data-rule="failed_logins"]', { state: 'detached' });
  await page.selectOption('#alert-status', 'acknowledged');
  const acked = page.locator('tr.alert[data-rule="failed_logins"]');
  await acked.waitFor();
  assert.match(await acked.textContent(), /auditor1/);
  clean(problems);
  await context.close();
});

test('applicant views, files the usage report and records a publication; reviewer sees it filed', async () => {
  const { context, page, problems } = await open('en-US');
  await login(page, 'researcher1');
  await page.click('a[data-nav="reports"]');
  await page.waitForSelector('#usage-app');
  await page.selectOption('#usage-app', 'A-DEMO-0001');
  await page.click('#usage-show');
  await page.waitForSelector('#usage-figures');
  assert.match(await page.textContent('#usage-figures'), /Queries answered/);
  const csvHref = await page.getAttribute('#usage-csv', 'href');
  const csv = await page.evaluate(async (u) => (await fetch(u, { credentials: 'same-origin' })).text(), csvHref);
  assert.match(csv, /^section,item,value/);
  await page.click('#usage-file');
  await waitText(page, '#usage-msg', 'The usage report was filed.');
  await page.fill('#pub-citation', 'Kura T. ALS registry counts. J Epi 2026;1:1-9');
  await page.fill('#pub-date', '2026-10-01');
  await page.click('#pub-submit');
  await page.waitForFunction(() => document.querySelector('#pub-list')?.textContent?.includes('ALS registry counts'));
  await shot(page, 'oversight-usage-report');
  clean(problems);
  await context.close();

  const rev = await open('ja-JP');
  await login(rev.page, 'reviewer1');
  await rev.page.click('a[data-nav="reports"]');
  await rev.page.waitForSelector('#usage-filed tr[data-application="A-DEMO-0001"]');
  await shot(rev.page, 'oversight-reviewer-reports');
  clean(rev.problems);
  await rev.context.close();
});

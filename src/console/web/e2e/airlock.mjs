// Browser journey of the output airlock (issue 13 §1, 成果物の持ち出し審査), run with node:test
// against the real `kura demo` on loopback through Debian's Chromium, like e2e/run.mjs (whose
// start-up, browser and CSP checks are copied here so each journey file runs alone):
//   node --test --test-concurrency=1 e2e/airlock.mjs
// researcher1 answers a query in the notebook and asks to release it; reviewer1 checks the
// snapshot (table, chart, a suppressed cell's record) and approves — one of two; reviewer2
// approves as the second checker; researcher1 downloads the CSV (equal to the snapshot, byte for
// byte), the chart and the release record; reviewer1 finds it in the release register.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, readFileSync } from 'node:fs';
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
async function typeInCell(page, i, text) {
  const editor = page.locator('.cell').nth(i).locator('.cm-content');
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
}

const SQL = 'SELECT prefecture_code, COUNT(DISTINCT pid) AS patients FROM nanbyo_survey GROUP BY prefecture_code';

let releaseId = '';

test('researcher1 asks to release a notebook result', async () => {
  const { context, page, problems } = await open('ja-JP');
  await login(page, 'researcher1');
  await page.waitForSelector('#app-picker tr[data-app="A-DEMO-0001"]');
  await page.click('tr[data-app="A-DEMO-0001"] a[data-open]');
  await page.waitForSelector('.nb-layout');
  const before = await page.locator('#nb-notebooks li').count();
  await page.click('#new-notebook');
  await page.waitForFunction((n) => document.querySelectorAll('#nb-notebooks li').length === n + 1, before);
  await page.waitForSelector('.cell-sql .cm-content');
  await typeInCell(page, 0, SQL);
  await page.keyboard.press('Shift+Enter');
  const result = page.locator('.cell').nth(0).locator('.result');
  await result.waitFor({ timeout: 120_000 });
  await result.locator('.release-btn').click();
  const form = result.locator('.release-form');
  await form.waitFor();
  assert.equal(await form.locator('.rel-pick:checked').count(), 1, 'this result is ticked');
  await form.locator('.rel-justification').fill('都道府県別の患者数を年次報告の論文に掲載するため');
  await form.locator('.rel-publication').fill('難病研究年報 2027');
  await shot(page, 'airlock-01-request');
  await form.locator('.rel-submit').click();
  await form.locator('a.rel-link').waitFor();
  releaseId = (await form.locator('a.rel-link').textContent()).trim();
  assert.match(releaseId, /^rel_[0-9a-f]{24}$/);
  await page.click('a[data-nav="releases"]');
  await page.waitForSelector(`tr.release[data-id="${releaseId}"][data-status="pending"]`);
  clean(problems);
  await context.close();
});

test('reviewer1 checks the snapshot and approves as the first of two checkers', async () => {
  const { context, page, problems } = await open('ja-JP');
  await login(page, 'reviewer1');
  await page.click('a[data-nav="releases"]');
  const row = page.locator(`tr.release[data-id="${releaseId}"]`);
  await row.waitFor();
  assert.ok(Number(await page.textContent('#release-counts tr[data-application="A-DEMO-0001"] .pending-count')) >= 1);
  await shot(page, 'airlock-02-inbox');
  await row.locator('a.release-open').click();
  await page.waitForSelector('.output[data-output="result-1"] .snapshot-table');
  const suppressed = page.locator('.snapshot-table td[data-suppressed="true"]');
  assert.ok((await suppressed.count()) > 0, 'the snapshot shows suppressed cells');
  assert.equal((await suppressed.first().textContent()).trim(), '<5');
  await suppressed.first().click();
  await page.waitForSelector('.cell-inspector .cell-reason');
  assert.ok((await page.locator('.cell-inspector li.rule[data-outcome="withheld"], .cell-inspector li.rule[data-outcome="fail"]').count()) > 0);
  const released = page.locator('.snapshot-table td.num.cell').first();
  await released.click();
  await page.waitForSelector('.cell-inspector .cell-band');
  assert.equal(await page.locator('.cell-inspector li.rule[data-rule="k"]').getAttribute('data-outcome'), 'pass');
  await shot(page, 'airlock-03-snapshot');
  await page.locator('.output .chart-tab').click();
  await page.waitForSelector('.output .chart-box[data-drawn="true"] canvas');
  await page.fill('#decision-comment', '全セルが 5 人以上または秘匿済み。公表可。');
  await page.click('#approve');
  await waitText(page, '#checkers-state', '承認 1 / 2 名');
  assert.equal(await page.getAttribute('#release-title', 'data-status'), 'pending');
  await shot(page, 'airlock-04-first-check');
  clean(problems);
  await context.close();
});

test('reviewer2 approves as the second checker', async () => {
  const { context, page, problems } = await open('en-US');
  await login(page, 'reviewer2');
  await page.goto(`${base}/#/releases/${releaseId}`);
  await page.waitForSelector('#decision-form');
  assert.match(await page.textContent('#decisions'), /reviewer1/);
  await page.fill('#decision-comment', 'Second check: counts by prefecture, small cells suppressed. Approved.');
  await page.click('#approve');
  await page.waitForSelector('#release-title[data-status="approved"]');
  await waitText(page, '#checkers-state', '2 of 2 approvals');
  await shot(page, 'airlock-05-approved');
  clean(problems);
  await context.close();
});

test('researcher1 downloads the approved files; the register lists them', async () => {
  const { context, page, problems } = await open('en-US');
  await login(page, 'researcher1');
  await page.goto(`${base}/#/releases/${releaseId}`);
  await page.waitForSelector('#release-title[data-status="approved"]');
  const snapshotCsv = await page.evaluate(async (id) => {
    const r = await fetch(`/api/v1/releases/${id}`, { credentials: 'same-origin' });
    return (await r.json()).outputs[0].csv;
  }, releaseId);
  for (const name of ['result-1.csv', 'result-1.png', 'release.json']) {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(`button.download[data-file="${name}"]`)]);
    assert.equal(download.suggestedFilename(), `${releaseId}-${name}`);
    const path = await download.path();
    const bytes = readFileSync(path);
    if (name.endsWith('.csv')) assert.equal(bytes.toString('utf8'), snapshotCsv, 'the CSV equals the snapshot byte for byte');
    if (name.endsWith('.png')) assert.equal(bytes.subarray(1, 4).toString('latin1'), 'PNG');
    if (name.endsWith('.json')) assert.equal(JSON.parse(bytes.toString('utf8')).release.id, releaseId);
  }
  await page.waitForSelector('#release-downloads');
  await shot(page, 'airlock-06-downloads');
  clean(problems);
  await context.close();

  const rev = await open('ja-JP');
  await login(rev.page, 'reviewer1');
  await rev.page.click('a[data-nav="release-register"]');
  const entry = rev.page.locator(`#release-register tr[data-release="${releaseId}"]`);
  await entry.waitFor();
  assert.equal((await entry.locator('.downloads').textContent()).trim(), '3');
  await shot(rev.page, 'airlock-07-register');
  clean(rev.problems);
  await rev.context.close();
});

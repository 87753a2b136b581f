// The harness every browser journey shares: the real `kura demo` on loopback, Debian's
// Chromium through playwright-core (never a downloaded browser), a fresh context per journey
// that fails on a CSP violation, a page error or a request outside the server, and the checks
// of issue 17: the raw-code scan (a Japanese screen shows no raw code and no English sentence,
// an English screen no Japanese), the axe-core check (no serious or critical violation) and
// keyboard helpers that assert a visible focus at every step.
//
// Environment:
//   KURA_BIN       path of the kura binary (default: $CARGO_TARGET_DIR/debug/kura or <repo>/target/debug/kura)
//   E2E_BASE_URL   use an already running server instead of starting `kura demo`
//   E2E_PASSWORD   demo password (default: a random one passed to `kura demo --demo-password`)
//   E2E_PATIENTS   synthetic patients for the demo (default 3000)
//   E2E_OUT        screenshot directory (default: <repo>/target/e2e)
//   E2E_DOCS       1: also write the user guides' screenshots into docs/img (viewport only, small)
//   CHROMIUM       browser executable (default /usr/bin/chromium)
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '../../../..');
const out = process.env.E2E_OUT ?? join(repo, 'target/e2e');
mkdirSync(out, { recursive: true });
const docsImg = join(repo, 'docs/img');
export const password = process.env.E2E_PASSWORD ?? `e2e-${randomBytes(9).toString('hex')}`;
const patients = process.env.E2E_PATIENTS ?? '3000';

const env = { base: process.env.E2E_BASE_URL ?? '', server: null, log: '', dataDir: null, browser: null };

/** The server's base URL (set once `before` ran). */
export function base() {
  return env.base;
}

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
    if (env.server && env.server.exitCode !== null) throw new Error(`kura demo exited (${env.server.exitCode}):\n${env.log.slice(-4000)}`);
    try {
      const r = await fetch(`${url}/api/v1/openapi.json`);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`kura demo did not answer within ${ms / 1000}s:\n${env.log.slice(-4000)}`);
}

/** Register the suite's set-up and tear-down: one demo server and one browser per file. */
export function useDemo() {
  before(async () => {
    if (!env.base) {
      const bin =
        process.env.KURA_BIN ?? join(process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(repo, 'target'), 'debug/kura');
      assert.ok(existsSync(bin), `kura binary not found at ${bin}; run \`cargo build\` first or set KURA_BIN`);
      const port = await freePort();
      env.dataDir = mkdtempSync(join(tmpdir(), 'kura-e2e-'));
      env.server = spawn(bin, ['demo', '--data-dir', env.dataDir, '--port', String(port), '--demo-password', password, '--patients', patients], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
      });
      env.server.stdout.on('data', (d) => (env.log += d));
      env.server.stderr.on('data', (d) => (env.log += d));
      env.base = `http://127.0.0.1:${port}`;
      await waitReady(env.base, 600_000);
    }
    env.browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  after(async () => {
    await env.browser?.close();
    const server = env.server;
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
    if (env.dataDir) rmSync(env.dataDir, { recursive: true, force: true });
  });
}

/** Pages on which axe-core is running: its own probes set inline styles, which CSP blocks. */
const auditing = new WeakSet();

/** A fresh browser context (own cookies) with CSP / page-error / outside-request tracking. */
export async function open(locale = 'ja-JP') {
  const context = await env.browser.newContext({ locale, viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    const text = m.text();
    if (auditing.has(page) && /Applying inline style/.test(text)) return;
    if (/Content Security Policy|Refused to (load|execute|apply)/i.test(text)) problems.push(`CSP: ${text}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    if (!r.url().startsWith(env.base)) problems.push(`request outside the server: ${r.url()}`);
  });
  page.on('request', (r) => {
    if (!r.url().startsWith(env.base) && !r.url().startsWith('data:') && !r.url().startsWith('blob:'))
      problems.push(`request outside the server: ${r.url()}`);
  });
  page.on('dialog', (d) => void d.accept());
  await page.goto(`${env.base}/`);
  return { context, page, problems };
}

export async function login(page, user) {
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#login-submit');
  try {
    await page.waitForSelector('#who');
  } catch (e) {
    throw new Error(`${e.message}\n${serverLogTail()}`);
  }
  assert.match(await page.textContent('#who'), new RegExp(user));
}

/** The end of the demo server's output, for a failure that may have its cause there. */
export function serverLogTail() {
  return env.server ? `kura demo output (last 3000 characters):\n${env.log.slice(-3000)}` : '';
}

/** Log in over the API (no browser): a bearer token, for setting the scene of a journey. */
export async function apiLogin(user) {
  const r = await fetch(`${env.base}/api/v1/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: user, password }),
  });
  if (r.status !== 200) assert.fail(`login ${user}: ${r.status} ${await r.text()}\n${serverLogTail()}`);
  return (await r.json()).token;
}

export async function apiCall(token, method, path, body) {
  const r = await fetch(`${env.base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: r.status, body: json };
}

/** Wait until the element's text is exactly `text` (screens re-render asynchronously). */
export async function waitText(page, selector, text) {
  await page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent?.trim() === want, [selector, text], { timeout: 10_000 });
}

/** A screenshot into target/e2e; with `docs`, also the user guide's image (viewport only). */
export async function shot(page, name, docs = null) {
  // caret 'initial': hiding the caret would inject a <style> element, which the CSP refuses.
  await page.screenshot({ path: join(out, `${name}.png`), fullPage: true, caret: 'initial' });
  if (docs && process.env.E2E_DOCS === '1') {
    mkdirSync(docsImg, { recursive: true });
    await page.screenshot({ path: join(docsImg, `${docs}.png`), fullPage: false, caret: 'initial' });
  }
}

export function clean(problems) {
  assert.deepEqual(problems, [], 'no CSP violations, page errors or outside requests');
}

/** Open `app`'s notebooks from the picker and start a new notebook. */
export async function freshNotebook(page, app) {
  await page.goto(`${base()}/#/apps`);
  await page.click(`tr[data-app="${app}"] a[data-open]`);
  await page.waitForSelector('.nb-layout');
  const before = await page.locator('#nb-notebooks li').count();
  await page.click('#new-notebook');
  await page.waitForFunction((n) => document.querySelectorAll('#nb-notebooks li').length === n + 1, before);
  await page.waitForSelector('.cell-sql .cm-content');
}

/** Type into the CodeMirror editor of cell `i` (0-based): select all, replace. */
export async function typeInCell(page, i, text) {
  const editor = page.locator('.cell').nth(i).locator('.cm-content');
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  // insertText avoids CodeMirror's auto-closing brackets doubling what we type.
  await page.keyboard.insertText(text);
}

// ---- the raw-code scan (issue 17 §1)

const codes = JSON.parse(readFileSync(join(here, '../src/i18n/codes.json'), 'utf8'));
const CODE_TABLES = ['status', 'outcome', 'action', 'error', 'type', 'bool', 'mode', 'role', 'dataset', 'severity', 'rule'];
/** Every stable code the console must show by its label. */
export const RAW_CODES = [...new Set(CODE_TABLES.flatMap((t) => Object.keys(codes[t] ?? {})))].concat(['Utf8', 'Int32', 'Int64', 'Float64', 'Boolean']);

/** The English side of the catalogue: [ja, en] pairs read from the TypeScript dictionaries. */
function catalogueEnglish() {
  const files = ['../src/i18n.ts', '../src/i18n/console.ts', '../src/i18n/oversight.ts'];
  const pairs = [];
  const re = /\[\s*'((?:[^'\\]|\\.)*)',\s*'((?:[^'\\]|\\.)*)',?\s*\]/g;
  for (const f of files) {
    const p = join(here, f);
    if (!existsSync(p)) continue;
    for (const m of readFileSync(p, 'utf8').matchAll(re)) pairs.push([m[1], m[2]]);
  }
  for (const t of [...CODE_TABLES, 'hidden']) for (const v of Object.values(codes[t] ?? {})) if (Array.isArray(v)) pairs.push(v);
  return pairs
    .filter(([ja, en]) => ja !== en && en.replace(/\{[a-z]+\}/g, '').trim().length >= 12)
    .map(([, en]) => en.split(/\{[a-z]+\}/)[0].trim())
    .filter((en) => en.length >= 12);
}
const ENGLISH = catalogueEnglish();

/**
 * The people-facing text of the screen: visible text nodes and the title / aria-label /
 * placeholder / alt attributes, outside code, SQL, user content and identifiers (marked
 * translate="no", or <code>, <pre>, <kbd>, the editors) and outside elements in the other
 * language on purpose (the language switch carries lang="en" / lang="ja").
 */
async function screenText(page) {
  return page.evaluate(() => {
    const skip = (el) => !!el.closest('[translate="no"], script, style, code, pre, kbd, .editor, [lang]:not(html)');
    const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
    const texts = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const n = walker.currentNode;
      const el = n.parentElement;
      if (!el || skip(el) || !visible(el)) continue;
      const t = n.textContent.replace(/\s+/g, ' ').trim();
      if (t) texts.push(t);
    }
    for (const el of document.body.querySelectorAll('[title], [aria-label], [placeholder], [alt]')) {
      if (skip(el)) continue;
      for (const a of ['title', 'aria-label', 'placeholder', 'alt']) {
        const v = el.getAttribute(a);
        if (v && v.trim()) texts.push(v.trim());
      }
    }
    return texts;
  });
}

/**
 * Fail when a Japanese screen shows a raw code or an English sentence (or an English
 * catalogue string), or an English screen shows Japanese or a raw snake_case / dotted code.
 */
export async function scanScreen(page, lang, where) {
  const texts = await screenText(page);
  const problems = [];
  const codeSet = new Set(RAW_CODES);
  for (const t of texts) {
    const tokens = t.match(/[A-Za-z][A-Za-z0-9_.]*[A-Za-z0-9]|[A-Za-z]/g) ?? [];
    if (lang === 'ja') {
      for (const tok of tokens) if (codeSet.has(tok)) problems.push(`raw code \`${tok}\` in “${t}”`);
      const sentence = t.match(/[A-Za-z]{2,}(?:[ ,'’:;-]+[A-Za-z]{2,}){2,}/);
      if (sentence) problems.push(`English sentence “${sentence[0]}” in “${t}”`);
      for (const en of ENGLISH) if (t.includes(en)) problems.push(`English catalogue text “${en}” in “${t}”`);
    } else {
      if (/[\u3040-\u30ff\u3400-\u9fff]/.test(t)) problems.push(`Japanese text in “${t}”`);
      for (const tok of tokens) if (codeSet.has(tok) && /[_.]|^(Utf8|Int32|Int64|Float64|true|false)$/.test(tok)) problems.push(`raw code \`${tok}\` in “${t}”`);
    }
  }
  assert.deepEqual([...new Set(problems)], [], `raw-code scan (${lang}) of ${where}`);
}

// ---- axe-core (issue 17 §5)

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/**
 * Run axe-core inside the page (evaluated through the DevTools protocol, so the page's CSP
 * is untouched) and fail on any serious or critical violation (WCAG 2.1 A/AA rules).
 */
export async function axeCheck(page, where) {
  auditing.add(page);
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }, resultTypes: ['violations'] });
    return r.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  });
  // Let the console messages of axe's own probes arrive before CSP counts again.
  await page.waitForTimeout(100);
  auditing.delete(page);
  assert.deepEqual(violations, [], `axe-core on ${where}`);
}

/** Both checks of a screen. */
export async function checkScreen(page, lang, where) {
  await scanScreen(page, lang, where);
  await axeCheck(page, where);
}

// ---- keyboard only (issue 17 §5)

/** Describe the element that has the focus (through shadow roots), and whether its focus shows. */
async function focused(page) {
  return page.evaluate(() => {
    let el = document.activeElement;
    while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
    if (!el || el === document.body) return null;
    const host = el.getRootNode() instanceof ShadowRoot ? el.getRootNode().host : el;
    const st = getComputedStyle(el);
    const hostSt = getComputedStyle(host);
    const ring = (s) => (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || (s.boxShadow && s.boxShadow !== 'none');
    // A date input's calendar button is a focus stop inside the browser's own (closed) shadow
    // tree: the page's :focus no longer matches, and Chromium draws that button's ring itself.
    const datePicker = el.tagName === 'INPUT' && /^(date|datetime-local|month|week|time)$/.test(el.type);
    const shown = ring(st) || ring(hostSt) || !!host.closest('.cm-focused') || !!el.closest('.cm-focused') || datePicker;
    return { tag: el.tagName.toLowerCase(), id: el.id, cls: String(el.className), text: (el.textContent ?? '').trim().slice(0, 60), shown, key: host.dataset?.e2eKey ?? '' };
  });
}

/**
 * Press Tab (Shift+Tab with `back`) until the focused element matches `selector` (checked on
 * the element or its shadow host), asserting at every step that the focus is visible.
 */
export async function tabTo(page, selector, { max = 250, back = false } = {}) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
    const f = await focused(page);
    if (!f) continue;
    assert.ok(f.shown, `focus is visible on <${f.tag} id="${f.id}" class="${f.cls}"> “${f.text}”`);
    const hit = await page.evaluate((sel) => {
      let el = document.activeElement;
      while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
      const host = el?.getRootNode() instanceof ShadowRoot ? el.getRootNode().host : el;
      return !!(el?.matches?.(sel) || host?.matches?.(sel) || host?.closest?.(sel));
    }, selector);
    if (hit) return;
  }
  assert.fail(`Tab never reached ${selector}`);
}

/** Log in with the keyboard only: Tab to the fields, type, Enter. */
export async function keyboardLogin(page, user) {
  await tabTo(page, '#username');
  await page.keyboard.type(user);
  await page.keyboard.press('Tab');
  await page.keyboard.type(password);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#who');
}

// Browser journeys of issue 5, run with node:test against the real `kura demo` on loopback,
// driving Debian's Chromium through playwright-core (never a downloaded browser).
//
//   node --test --test-concurrency=1 e2e/run.mjs
//
// The harness (server, browser, environment variables) is e2e/lib.mjs.
//
// Every journey also fails on a Content-Security-Policy violation or an uncaught page error,
// so "nothing loaded from outside, no inline code" is checked on every screen we visit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base as baseUrl, clean, login, open, shot, typeInCell, useDemo, waitText } from './lib.mjs';

useDemo();
const base = () => baseUrl();

/** Open the application's notebooks from the picker; `fresh` starts a new notebook. */
async function openNotebook(page, app, fresh = false) {
  await page.goto(`${base()}/#/apps`);
  await page.waitForSelector(`tr[data-app="${app}"]`);
  await page.click(`tr[data-app="${app}"] a[data-open]`);
  await page.waitForSelector('.nb-layout');
  if (fresh || (await page.locator('.cell').count()) === 0) {
    const before = await page.locator('#nb-notebooks li').count();
    await page.click('#new-notebook');
    await page.waitForFunction((n) => document.querySelectorAll('#nb-notebooks li').length === n + 1, before);
  }
  await page.waitForSelector('.cell-sql .cm-content');
}

const GROUPED = 'SELECT prefecture_code, disease_no, COUNT(DISTINCT pid) AS patients FROM nanbyo_survey GROUP BY prefecture_code, disease_no';

test('researcher1 runs a grouped count, sees a <5 cell and draws a chart', async () => {
  const { context, page, problems } = await open();
  await shot(page, '01-login', 'login');
  await login(page, 'researcher1');
  await page.waitForSelector('#app-picker tr[data-app="A-DEMO-0001"]');
  const row = await page.textContent('#app-picker tr[data-app="A-DEMO-0001"]');
  assert.match(row, /\d{4}年\d{1,2}月\d{1,2}日/, 'the picker shows the term as a Japanese date');
  await shot(page, '02-app-picker', 'app-picker');

  await openNotebook(page, 'A-DEMO-0001', true);
  await typeInCell(page, 0, GROUPED);
  await page.keyboard.press('Shift+Enter');
  const result = page.locator('.cell').nth(0).locator('.result');
  await result.waitFor({ timeout: 120_000 });
  assert.match(await page.locator('.cell').nth(0).locator('.exec-count').textContent(), /\[\d+\]/, 'execution count shown');
  assert.match(await page.locator('.cell').nth(0).locator('.exec-time').textContent(), /\d+\.\d\d s/, 'execution time shown');
  const suppressed = result.locator('td.suppressed[data-reason="small_cell"]');
  assert.ok((await suppressed.count()) > 0, 'at least one suppressed cell on this page');
  assert.equal((await suppressed.first().textContent()).trim(), '<5');
  assert.ok(await result.locator('.legend').first().isVisible(), 'legend explains <5');
  // Shift+Enter moved focus to a new cell (Jupyter behaviour).
  assert.equal(await page.locator('.cell').count(), 2);
  await shot(page, '03-notebook-suppressed');

  await result.locator('.chart-tab').click();
  await page.waitForSelector('.chart-box[data-drawn="true"] canvas');
  const canvas = await result.locator('canvas').boundingBox();
  assert.ok(canvas && canvas.width > 200 && canvas.height > 100, 'chart drawn');
  await result.locator('.chart-controls select').first().selectOption('stacked');
  await shot(page, '04-chart');

  // A Markdown cell renders on Shift+Enter; raw HTML in it stays text (no markup injection).
  await page.click('#add-md');
  const mdIndex = (await page.locator('.cell').count()) - 1;
  await page.keyboard.insertText('# 所見 <img src=x onerror="window.__pwned=1">\n\n*k* 未満は秘匿');
  await page.keyboard.press('Shift+Enter');
  const md = page.locator('.cell').nth(mdIndex).locator('.md-rendered');
  await md.waitFor();
  assert.match(await md.locator('h1').textContent(), /所見/);
  assert.equal(await md.locator('img').count(), 0, 'raw HTML in Markdown is not rendered');
  assert.equal(await page.evaluate(() => window.__pwned ?? 0), 0);
  // Move the Markdown cell to the top with the keyboard-reachable button.
  for (let i = mdIndex; i > 0; i--) await page.locator('.cell').nth(i).locator('.move-up').click();
  assert.ok(await page.locator('.cell').nth(0).evaluate((el) => el.classList.contains('cell-markdown')));

  // The notebook is saved on the server: a reload brings the SQL back.
  await page.click('#save');
  await page.waitForSelector('.save-status:has-text("保存しました")');
  await page.reload();
  await page.waitForSelector('.cell-sql .cm-content');
  assert.ok(await page.locator('.cell').nth(0).evaluate((el) => el.classList.contains('cell-markdown')), 'cell order saved');
  assert.match(await page.locator('.cell').nth(1).locator('.cm-content').textContent(), /COUNT\(DISTINCT pid\)/);

  // Catalogue browser and history.
  await page.goto(`${base()}/#/catalog/A-DEMO-0001`);
  await page.waitForSelector('#catalog details[data-table="nanbyo_survey"]');
  await page.click('#catalog details[data-table="nanbyo_survey"] summary');
  await shot(page, '05-catalog');
  await page.goto(`${base()}/#/history/A-DEMO-0001`);
  await page.waitForSelector('#history tr[data-outcome]');
  clean(problems);
  await context.close();
});

test('a refused query shows its code and the fix', async () => {
  const { context, page, problems } = await open();
  await login(page, 'researcher1');
  await openNotebook(page, 'A-DEMO-0001');
  await page.click('#add-sql');
  const last = (await page.locator('.cell').count()) - 1;
  await typeInCell(page, last, 'SELECT pid, birth_year FROM patient');
  await page.keyboard.press('Shift+Enter');
  const err = page.locator('.cell').nth(last).locator('.error-box');
  await err.waitFor({ timeout: 60_000 });
  assert.equal(await err.getAttribute('data-code'), 'row_level_output');
  const msg = await err.locator('.msg').textContent();
  assert.ok(msg.length > 20, 'the message explains the fix');
  assert.doesNotMatch(msg, /[0-9a-f]{16,}/, 'no pseudonyms or data values echoed');
  await shot(page, '06-refused', 'refused');
  clean(problems);
  await context.close();
});

const DP_SQL = 'SELECT sex, count(DISTINCT pid) AS patients FROM patient GROUP BY sex';

/** The ε left as the notebook's budget meter shows it. */
async function epsLeft(page) {
  await page.waitForSelector('#budget .eps-left');
  return Number(await page.getAttribute('#budget .eps-left', 'data-remaining'));
}

test('researcher1 runs a DP query, sees intervals and the budget fall, then the cached answer for free', async () => {
  const { context, page, problems } = await open();
  await login(page, 'researcher1');
  await openNotebook(page, 'A-DEMO-0002', true);
  const cell = page.locator('.cell').nth(0);
  await cell.locator('.dp-eps').fill('0.5');
  await typeInCell(page, 0, DP_SQL);
  const before = await epsLeft(page);
  assert.match(await page.getAttribute('#budget .renews', 'data-date'), /\d{4}-04-01/, 'the meter shows the renewal date');
  assert.match(await page.textContent('#budget .renews'), /\d{4}年4月1日/);

  // Dry run: the cost and what would remain, nothing spent.
  await cell.locator('.dp-cost').click();
  await page.waitForFunction(() => /0\.5/.test(document.querySelector('.dp-cost-out')?.textContent ?? ''));
  assert.equal(await epsLeft(page), before, 'the dry run spends nothing');

  await cell.locator('.run-cell').click();
  const result = cell.locator('.result');
  await result.waitFor({ timeout: 120_000 });
  const noised = result.locator('td[data-noised="true"]');
  assert.ok((await noised.count()) > 0, 'noised cells are shown');
  assert.match(await noised.first().textContent(), /±|\[/, 'each noised cell carries its 95% interval');
  assert.ok((await result.locator('.noise').count()) > 0, 'a per-column note with scale and ε');
  assert.equal(await result.locator('#dp-cached').count(), 0);
  const after = await epsLeft(page);
  assert.ok(Math.abs(before - 0.5 - after) < 1e-6, `the budget fell by 0.5 (${before} → ${after})`);
  const first = await result.locator('tbody').textContent();
  await shot(page, '07-dp-result');

  // The identical query again: the stored answer, marked cached, budget unchanged.
  await cell.locator('.run-cell').click();
  await page.waitForSelector('.cell >> nth=0 >> #dp-cached', { timeout: 60_000 });
  assert.equal(await cell.locator('.result tbody').textContent(), first, 'the same answer, not fresh noise');
  assert.equal(await epsLeft(page), after, 'nothing spent on a cached answer');
  await shot(page, '08-dp-cached');

  // Asking for more than is left is a clear bilingual refusal.
  await page.click('#add-sql');
  const last = (await page.locator('.cell').count()) - 1;
  await typeInCell(page, last, 'SELECT count(*) AS n FROM patient');
  await page.locator('.cell').nth(last).locator('.dp-eps').fill(String(after + 0.5));
  await page.locator('.cell').nth(last).locator('.run-cell').click();
  const err = page.locator('.cell').nth(last).locator('.error-box');
  await err.waitFor({ timeout: 60_000 });
  const code = await err.getAttribute('data-code');
  // after ≤ 2.5 of the demo's 3.0, so after + 0.5 is within the yearly budget but above what is left.
  assert.equal(code, 'budget_exhausted');
  assert.ok(await page.locator('.cell').nth(last).locator('.budget-exhausted').isVisible());
  assert.match(await err.locator('.msg').textContent(), /予算/);
  assert.equal(await epsLeft(page), after, 'a refusal spends nothing');
  clean(problems);
  await context.close();
});

let newApp = '';

test('an applicant submits, reviewer1 approves, the named user pledges and queries', async () => {
  // researcher1 applies and names researcher2, who has no approval yet.
  let { context, page, problems } = await open();
  await login(page, 'researcher1');
  await page.goto(`${base()}/#/apply/new`);
  await page.waitForSelector('#application-form');
  const today = new Date();
  const iso = (d) => d.toISOString().slice(0, 10);
  const fyEnd = `${today.getMonth() >= 3 ? today.getFullYear() + 1 : today.getFullYear()}-03-31`;
  const fill = async (key, v) => page.fill(`[data-key="${key}"]`, v);
  await fill('title', 'ALS 患者の呼吸機能の推移 / Course of respiratory function in ALS');
  await fill('research_group', '神経変性疾患調査研究班');
  await fill('applicant.affiliation', '○○大学大学院医学研究科');
  await fill('applicant.title', '教授');
  await fill('applicant.name', '研究 一郎');
  await fill('diseases', '2');
  await fill('purpose', 'ALS の呼吸機能低下の経過を明らかにし、NIV 導入時期の指標を得る。');
  await fill('necessity', '全国規模の臨床調査個人票でなければ症例数が足りないため。');
  await fill('expected_results', '診療ガイドラインの改訂に資する。');
  await fill('plan_and_methods', '年度別・重症度別の集計のみを行い、個票は出力しない。');
  await fill('ethics_review.committee', '○○大学医学研究科倫理委員会');
  await fill('ethics_review.approval_number', 'R-2026-001');
  await fill('named_users', 'researcher2, ○○大学大学院医学研究科, 講師');
  await fill('scope.fiscal_years', '2022, 2023');
  await fill('term.start', iso(today));
  await fill('term.end', fyEnd);
  await fill('place_of_use', 'kura 利用環境内（データは持ち出さない）');
  await fill('publication_plan', '学会発表。個人が特定される属性は秘匿する。');
  await fill('contact', '○○大学 研究支援課 03-0000-0000');
  await shot(page, '07-application-form', 'application-form');
  await page.click('#save-draft');
  await page.waitForSelector('.messages .flash');
  await page.click('#submit-application');
  await page.waitForURL(/#\/apply\/(?!new$)[^/]+$/);
  newApp = decodeURIComponent(page.url().split('#/apply/')[1]);
  assert.ok(newApp && newApp !== 'new', 'application id in the URL');
  await page.waitForSelector('.badge[data-status="submitted"]');
  await shot(page, '08-application-submitted');
  clean(problems);
  await context.close();

  // reviewer1 approves from the inbox.
  ({ context, page, problems } = await open());
  await login(page, 'reviewer1');
  await page.waitForSelector(`#inbox tr[data-app="${newApp}"]`);
  await shot(page, '09-review-inbox');
  await page.click(`#inbox tr[data-app="${newApp}"] a`);
  await page.waitForSelector('#decision');
  // A term crossing the fiscal year is refused in the form itself.
  const end = await page.inputValue('#ap-end');
  await page.fill('#ap-end', `${Number(fyEnd.slice(0, 4))}-04-30`);
  await page.click('#approve');
  await page.waitForSelector('.messages .flash.error');
  await page.fill('#ap-end', end);
  await page.fill('#ap-diseases', '2');
  await page.fill('#decision-reason', '承認します。');
  await shot(page, '10-review-decision');
  await page.click('#approve');
  await page.waitForSelector('.badge[data-status="approved"]', { timeout: 300_000 });
  clean(problems);
  await context.close();

  // researcher2 accepts the pledge, then queries.
  ({ context, page, problems } = await open());
  await login(page, 'researcher2');
  await page.goto(`${base()}/#/apply/${encodeURIComponent(newApp)}`);
  await page.waitForSelector('#pledge #pledge-agree');
  await page.check('#pledge-agree');
  await shot(page, '11-pledge', 'pledge');
  await page.click('#accept-pledge');
  await page.waitForSelector('#pledge .flash');
  await openNotebook(page, newApp);
  await typeInCell(page, 0, 'SELECT fiscal_year, severity, COUNT(DISTINCT pid) AS patients FROM nanbyo_survey GROUP BY fiscal_year, severity');
  await page.keyboard.press('Shift+Enter');
  await page.locator('.cell').nth(0).locator('.result').waitFor({ timeout: 120_000 });
  const years = await page.locator('.cell').nth(0).locator('.result-table tbody tr td:first-child').allTextContents();
  assert.ok(years.length > 0);
  for (const y of years) assert.ok(['2022', '2023'].includes(y.trim()), `only approved fiscal years, got ${y}`);
  await shot(page, '12-named-user-query');
  clean(problems);
  await context.close();
});

test('auditor1 finds those events and sees the chain verified', async () => {
  const { context, page, problems } = await open();
  await login(page, 'auditor1');
  await page.waitForSelector('#chain-status[data-ok="true"]');
  assert.ok(newApp, 'the approval journey ran first');
  await page.fill('#au-app', newApp);
  await page.click('#audit-search');
  await page.waitForSelector(`#audit-list[data-query*="application=${encodeURIComponent(newApp)}"] tbody tr`);
  const actions = await page.locator('#audit-list tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-action')));
  for (const want of [/submit/, /decision|approve/, /pledge/, /query/]) {
    assert.ok(actions.some((a) => want.test(a)), `an event matching ${want} among ${actions.join(', ')}`);
  }
  const q = page.locator('#audit-list tbody tr[data-action*="query"]').first();
  await q.locator('.show-detail').click();
  await page.waitForSelector('#audit-detail:not([hidden])');
  assert.match(await page.textContent('#audit-detail'), /SELECT fiscal_year/);
  await shot(page, '13-audit');
  // Filter by user: researcher1's refused query is there.
  await page.fill('#au-app', '');
  await page.fill('#au-user', 'researcher1');
  await page.selectOption('#au-outcome', 'denied');
  await page.click('#audit-search');
  await page.waitForSelector('#audit-list[data-query*="user=researcher1"][data-query*="outcome=denied"] tbody tr');
  const actors = await page.locator('#audit-list tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-actor')));
  assert.ok(actors.every((a) => a === 'researcher1'), `only researcher1: ${actors.join(', ')}`);
  clean(problems);
  await context.close();
});

test('pms1 sees only M01 products', async () => {
  const { context, page, problems } = await open();
  await login(page, 'pms1');
  await page.waitForSelector('#pms-cases .result, #pms-cases .error-box', { timeout: 120_000 });
  assert.equal(await page.locator('#pms-cases .error-box').count(), 0, 'cases view answered');
  await page.waitForSelector('#pms-adverse-events .result', { timeout: 120_000 });
  await page.waitForSelector('#pms-deaths .result, #pms-deaths .error-box', { timeout: 120_000 });
  await shot(page, '14-pms-dashboard');
  // In the standing scope's notebook every treatment row belongs to M01.
  await page.click('#pms-notebook');
  await page.waitForSelector('.nb-layout');
  if ((await page.locator('.cell').count()) === 0) await page.click('#new-notebook');
  await page.waitForSelector('.cell-sql .cm-content');
  await typeInCell(page, 0, 'SELECT manufacturer_code, product_code, COUNT(DISTINCT pid) AS patients FROM regen_treatment GROUP BY manufacturer_code, product_code');
  await page.keyboard.press('Shift+Enter');
  const res = page.locator('.cell').nth(0).locator('.result');
  await res.waitFor({ timeout: 120_000 });
  const makers = await res.locator('.result-table tbody tr td:first-child').evaluateAll((tds) => tds.map((td) => td.getAttribute('data-value')));
  assert.ok(makers.length > 0, 'some products');
  assert.deepEqual([...new Set(makers)], ['M01']);
  await shot(page, '15-pms-notebook');
  // Another manufacturer's scope is refused by the server.
  const other = await page.evaluate(async () => {
    const r = await fetch('/api/v1/query', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': document.cookie.match(/(?:^|; )(?:kura_csrf|csrf_token)=([^;]+)/)?.[1] ?? '' },
      body: JSON.stringify({ application: 'PMS-M02', sql: 'SELECT COUNT(DISTINCT pid) AS n FROM regen_treatment' }),
    });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(other.status, 403);
  assert.equal(other.body.error.code, 'forbidden');
  clean(problems);
  await context.close();
});

test('the language switch changes the labels; the default follows Accept-Language', async () => {
  const ja = await open('ja-JP');
  await waitText(ja.page, '#login-submit', 'ログイン');
  await ja.page.click('#lang-switch');
  await waitText(ja.page, '#login-submit', 'Log in');
  assert.equal(await ja.page.getAttribute('html', 'lang'), 'en');
  await login(ja.page, 'researcher1');
  await waitText(ja.page, 'nav a[data-nav="apps"]', 'Approved applications');
  await ja.page.waitForSelector('#app-picker, .empty');
  await shot(ja.page, '16-english');
  await ja.page.click('#lang-switch');
  await waitText(ja.page, 'nav a[data-nav="apps"]', '利用申請（承認済み）');
  clean(ja.problems);
  await ja.context.close();

  const en = await open('en-US');
  await waitText(en.page, '#login-submit', 'Log in');
  clean(en.problems);
  await en.context.close();
});

test('an expired session returns to the login screen with a message', async () => {
  const { context, page, problems } = await open();
  await login(page, 'researcher1');
  await page.waitForSelector('#app-picker');
  // The browser loses the session (as when it expires): the next API call is 401.
  await context.clearCookies();
  await page.click('nav a[data-nav="apply"]');
  await page.waitForSelector('#login-submit');
  assert.match(await page.textContent('#flash'), /セッション|session/i);
  await shot(page, '17-session-expired');
  clean(problems);
  await context.close();
});

// Browser journeys of issue 17 (console: Japanese first, readable results, the notebook
// habits of Jupyter, screens for every role), against the real `kura demo`:
//   node --test --test-concurrency=1 e2e/console.mjs
// Every role — researcher, reviewer, auditor, PMS team (pms1), operator (admin1) — in
// Japanese and in English, each asserting its fixes; every screen visited passes the
// raw-code scan and axe-core (lib.mjs); then one keyboard-only journey per role.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { apiCall, apiLogin, base, checkScreen, clean, freshNotebook, keyboardLogin, login, open, scanScreen, shot, tabTo, typeInCell, useDemo } from './lib.mjs';

useDemo();

const AGE = ['0-4', '5-9', '10-14', '15-19', '20-24', '25-29', '30-34', '35-39', '40-44', '45-49', '50-54', '55-59', '60-64', '65-69', '70-74', '75-79', '80-84', '85-89', '90+'];
const BY_AGE = 'SELECT s.age_band, p.sex, COUNT(DISTINCT s.pid) AS patients FROM nanbyo_survey s JOIN patient p ON p.pid = s.pid WHERE s.disease_no = 2 GROUP BY s.age_band, p.sex';
const BY_PREF = 'SELECT prefecture_code, COUNT(DISTINCT pid) AS patients FROM patient GROUP BY prefecture_code';

/** Run SQL in cell i with Ctrl+Enter (runs and stays); the cell's result or error. */
async function runIn(page, i, sql) {
  await typeInCell(page, i, sql);
  await page.keyboard.press('Control+Enter');
  const cell = page.locator('.cell').nth(i);
  await cell.locator('.result, .error-box').first().waitFor({ timeout: 120_000 });
  return cell;
}

/** The column-0 values of a result, in display order (all pages). */
async function firstColumn(result) {
  const values = [];
  for (;;) {
    values.push(...(await result.locator('tbody tr td:first-child').evaluateAll((tds) => tds.map((td) => td.getAttribute('data-value') ?? td.textContent))));
    const next = result.locator('.pager .next');
    if ((await next.count()) === 0 || (await next.isDisabled())) break;
    await next.click();
  }
  return values;
}

/** Whether `values` follow the order of `domain` (repeats allowed). */
function inDomainOrder(values, domain) {
  const ranks = values.map((v) => domain.indexOf(v));
  return ranks.every((r, i) => r >= 0 && (i === 0 || r >= ranks[i - 1]));
}

async function badLogin(page, lang) {
  await page.fill('#username', 'researcher1');
  await page.fill('#password', 'not the password');
  await page.click('#login-submit');
  await page.waitForSelector('#login-error:not([hidden])');
  const text = await page.textContent('#login-error');
  assert.equal(await page.getAttribute('#login-error', 'data-code'), 'invalid_credentials');
  assert.doesNotMatch(text, /invalid_credentials/);
  if (lang === 'ja') assert.match(text, /^ユーザー名またはパスワードが違います/);
  else assert.match(text, /^Username or password is wrong/);
  await scanScreen(page, lang, 'login error');
}

test('researcher1 (ja): labels beside codes, domain order with hidden cells in place, notebook keys, outputs kept', async () => {
  const { context, page, problems } = await open('ja-JP');
  await badLogin(page, 'ja');
  await login(page, 'researcher1');
  const scope = page.locator('#app-picker tr[data-app="A-DEMO-0001"] dd[data-scope="diseases"]');
  assert.match(await scope.textContent(), /2 筋萎縮性側索硬化症/, 'disease numbers with their names');
  assert.match(await page.textContent('#app-picker tr[data-app="A-DEMO-0001"] dd[data-scope="fiscal_years"]'), /すべての年度/);
  await checkScreen(page, 'ja', 'picker');

  await freshNotebook(page, 'A-DEMO-0001');
  assert.match(await page.inputValue('#nb-title'), /^ノートブック（\d{4}年\d{1,2}月\d{1,2}日）$/, 'a default title in Japanese');

  // Completion waits for Ctrl+Space or a dot; ranked by the tables of the query.
  await typeInCell(page, 0, 'SELECT s FROM patient');
  await page.waitForTimeout(400);
  assert.equal(await page.locator('.cm-tooltip-autocomplete').count(), 0, 'no completion popped up unasked');
  await page.keyboard.press('Home');
  for (let i = 0; i < 8; i++) await page.keyboard.press('ArrowRight');
  await page.keyboard.press('Control+Space');
  await page.locator('.cm-tooltip-autocomplete').waitFor();
  const first = (await page.locator('.cm-tooltip-autocomplete li').first().textContent()).trim();
  assert.match(first, /^sex/, `a column of the query's table comes first, got ${first}`);
  assert.equal(await page.locator('.cm-tooltip-autocomplete li:has-text("SQLEXCEPTION")').count(), 0);
  await page.keyboard.press('Escape');
  await typeInCell(page, 0, 'SELECT count(*) AS n FROM patient p WHERE p');
  await page.keyboard.type('.');
  await page.locator('.cm-tooltip-autocomplete').waitFor();
  await page.keyboard.press('Escape');

  // Age bands in domain order, hidden cells in their rows, marked <5 with the reason.
  const cell = await runIn(page, 0, BY_AGE);
  const result = cell.locator('.result');
  await result.waitFor();
  const ages = await firstColumn(result);
  assert.ok(inDomainOrder(ages, AGE), `age bands in domain order: ${ages.join(' ')}`);
  if ((await result.locator('.pager').count()) > 0) {
    while (!(await result.locator('.pager .prev').isDisabled())) await result.locator('.pager .prev').click();
  }
  assert.equal(await result.locator('tbody tr').first().locator('td').first().getAttribute('data-value'), '0-4', 'page 1 starts at 0-4');
  const hidden = result.locator('td.suppressed');
  assert.ok((await hidden.count()) > 0, 'hidden cells on page 1, in place');
  const h0 = hidden.first();
  assert.match((await h0.textContent()).trim(), /^(<5|秘匿)$/);
  assert.match(await h0.getAttribute('title'), /秘匿/, 'the reason on hover');
  assert.match(await result.locator('tbody tr td:nth-child(2)').first().textContent(), /^[MF] (男性|女性)$/, 'sex with its label');
  // Chart: the x axis follows the domain, every label shown; the legend (sex) in domain order.
  await result.locator('.chart-tab').click();
  await page.waitForSelector('.chart-box[data-drawn="true"] canvas');
  const labels = JSON.parse(await result.locator('.chart-box').getAttribute('data-labels'));
  assert.ok(inDomainOrder(labels, AGE), `chart axis in domain order: ${labels}`);
  assert.deepEqual(JSON.parse(await result.locator('.chart-box').getAttribute('data-series')), ['M 男性', 'F 女性']);
  await shot(page, 'c-chart-domain-order', 'chart');
  await result.locator('.tab').first().click();

  // Prefectures with their names, in JIS order; sortable; numbers with separators.
  await page.click('#add-sql');
  const pref = (await runIn(page, 1, BY_PREF)).locator('.result');
  const firstRow = pref.locator('tbody tr').first();
  assert.equal(await firstRow.locator('td').first().getAttribute('data-value'), '01');
  assert.equal((await firstRow.locator('td').first().textContent()).trim(), '01 北海道');
  await pref.locator('th button.sort').nth(1).click();
  assert.equal(await pref.locator('th').nth(1).getAttribute('aria-sort'), 'ascending');
  const nums = await pref.locator('tbody td.num:not(.suppressed)').evaluateAll((tds) => tds.map((td) => [td.getAttribute('data-value'), td.textContent]));
  for (let i = 1; i < nums.length; i++) assert.ok(Number(nums[i][0]) >= Number(nums[i - 1][0]), 'sorted ascending');
  for (const [v, text] of nums) assert.equal(text, Number(v).toLocaleString('ja-JP'), 'thousands separators');
  await shot(page, 'c-notebook-labels', 'notebook');

  // Copy within the enclave: the released values become a Markdown table below.
  const before = await page.locator('.cell').count();
  await pref.locator('.copy-md').click();
  await page.waitForFunction((n) => document.querySelectorAll('.cell').length === n + 1, before);
  assert.ok((await page.locator('.cell').nth(2).locator('.md-rendered table').count()) === 1, 'a Markdown table of the result');
  // How a result leaves: the release panel says so, in Japanese.
  await pref.locator('details.release summary').click();
  assert.match(await pref.locator('.release-explain').textContent(), /公開申請/);

  // A typo: where and what, in Japanese, no engine text.
  await page.click('#add-sql');
  const last = (await page.locator('.cell').count()) - 1;
  const err = (await runIn(page, last, 'SELEC sex FROM patient')).locator('.error-box');
  assert.equal(await err.getAttribute('data-code'), 'invalid_sql');
  const msg = await err.textContent();
  assert.match(msg, /1 行 1 列目/);
  assert.match(msg, /SELECT/);
  assert.doesNotMatch(msg, /ParserError|Expected|SQL error/);
  await checkScreen(page, 'ja', 'notebook with results');

  // Command mode: Esc leaves the editor; B, A add cells, D D deletes, Z undoes, M / Y change type.
  await page.locator('.cell').nth(last).locator('.cm-content').click();
  await page.keyboard.press('Escape');
  const isCell = () => page.evaluate(() => document.activeElement?.classList.contains('cell'));
  assert.ok(await isCell(), 'Esc puts the cell in command mode');
  const count = () => page.locator('.cell').count();
  const n0 = await count();
  await page.keyboard.press('b');
  assert.equal(await count(), n0 + 1, 'B inserts below');
  await page.keyboard.press('a');
  assert.equal(await count(), n0 + 2, 'A inserts above');
  await page.keyboard.press('d');
  await page.keyboard.press('d');
  assert.equal(await count(), n0 + 1, 'D D deletes');
  await page.keyboard.press('z');
  assert.equal(await count(), n0 + 2, 'Z brings it back');
  await page.keyboard.press('m');
  assert.ok(await page.evaluate(() => document.activeElement?.classList.contains('cell-markdown')), 'M makes it Markdown');
  await page.keyboard.press('y');
  assert.ok(await page.evaluate(() => document.activeElement?.classList.contains('cell-sql')), 'Y makes it SQL');
  await page.keyboard.press('k');
  await page.keyboard.press('?');
  await page.waitForSelector('#shortcut-sheet[open]');
  assert.match(await page.textContent('#shortcut-sheet'), /コマンドモード/);
  await checkScreen(page, 'ja', 'shortcut sheet');
  await shot(page, 'c-shortcuts', 'shortcuts');
  await page.keyboard.press('Escape');

  // Outputs are saved with the notebook and shown on reopening.
  await page.click('#save');
  await page.waitForSelector('.save-status[data-saved]');
  await page.reload();
  await page.waitForSelector('.cell .result');
  assert.ok((await page.locator('.cell .result').count()) >= 2, 'both results are back');
  assert.match(await page.locator('.saved-output').first().textContent(), /保存された出力/);
  assert.equal(await page.locator('.saved-output[data-stale="true"]').count(), 0, 'same extract: not stale');
  assert.equal(await page.locator('.cell .error-box[data-code="invalid_sql"]').count(), 1, 'the refusal is kept too');
  await checkScreen(page, 'ja', 'reopened notebook');

  await page.goto(`${base()}/#/catalog/A-DEMO-0001`);
  await page.click('#catalog details[data-table="patient"] summary');
  assert.match(await page.textContent('#catalog details[data-table="patient"]'), /文字列/, 'types in words');
  await checkScreen(page, 'ja', 'catalogue');
  await page.goto(`${base()}/#/history/A-DEMO-0001`);
  await page.waitForSelector('#history tr[data-outcome="denied"]');
  assert.match(await page.textContent('#history tr[data-outcome="denied"] .badge'), /拒否/);
  await checkScreen(page, 'ja', 'history');
  clean(problems);
  await context.close();
});

test('researcher1 (en): the same screens in English, no Japanese', async () => {
  const { context, page, problems } = await open('en-US');
  await badLogin(page, 'en');
  await login(page, 'researcher1');
  assert.match(await page.textContent('#app-picker tr[data-app="A-DEMO-0001"] dd[data-scope="fiscal_years"]'), /all fiscal years/);
  await checkScreen(page, 'en', 'picker');
  await freshNotebook(page, 'A-DEMO-0001');
  assert.match(await page.inputValue('#nb-title'), /^Notebook \(\d{1,2} [A-Z][a-z]{2} \d{4}\)$/);
  const pref = (await runIn(page, 0, BY_PREF)).locator('.result');
  const tokyo = pref.locator('td[data-value="13"]');
  assert.equal((await tokyo.textContent()).trim(), '13 Tokyo');
  await page.click('#add-sql');
  const err = (await runIn(page, 1, 'SELECT sex,\n  count(*) AS n FROM patient GROUP sex')).locator('.error-box');
  assert.match(await err.textContent(), /Line 2, column 30: expected the end of the statement, found `GROUP`/);
  await page.locator('.cell').nth(1).locator('.cm-content').click();
  await page.keyboard.press('Escape');
  await page.keyboard.press('?');
  await page.waitForSelector('#shortcut-sheet[open]');
  await checkScreen(page, 'en', 'notebook and shortcut sheet');
  await page.keyboard.press('Escape');
  await shot(page, 'c-english', 'english');
  clean(problems);
  await context.close();
});

let submitted = '';

async function submitApplication() {
  const token = await apiLogin('researcher1');
  const today = new Date();
  const fyEnd = `${today.getMonth() >= 3 ? today.getFullYear() + 1 : today.getFullYear()}-03-31`;
  const form = {
    title: 'ALS の呼吸機能 / ALS respiratory function',
    research_group: '神経変性疾患調査研究班',
    applicant: { name: '研究 一郎', affiliation: '○○大学', title: '教授' },
    diseases: [2],
    purpose: 'ALS の呼吸機能低下の経過を明らかにする。',
    necessity: '全国規模の記録が必要なため。',
    expected_results: '診療指針に資する。',
    prior_work: '登録報告。',
    plan_and_methods: '集計のみ。',
    ethics_review: { committee: '○○大学倫理委員会', approval_number: 'R-1' },
    named_users: [{ username: 'researcher2', affiliation: '○○大学', title: '講師' }],
    scope: { datasets: ['nanbyo'], fiscal_years: [2022, 2023], prefectures: null },
    term: { start: today.toISOString().slice(0, 10), end: fyEnd },
    place_of_use: 'kura 利用環境内',
    publication_plan: '学会発表',
    contact: '研究支援課',
  };
  const created = await apiCall(token, 'POST', '/applications', form);
  assert.ok([200, 201].includes(created.status), JSON.stringify(created.body));
  const id = created.body.id;
  const s = await apiCall(token, 'POST', `/applications/${encodeURIComponent(id)}/submit`);
  assert.equal(s.status, 200, JSON.stringify(s.body));
  return id;
}

test('reviewer1 (ja, en): inbox counts opening on what needs action, text first, terms readable, approved read-only', async () => {
  submitted = await submitApplication();
  for (const lang of ['ja', 'en']) {
    const { context, page, problems } = await open(lang === 'ja' ? 'ja-JP' : 'en-US');
    await login(page, 'reviewer1');
    await page.waitForSelector('#inbox-counts');
    assert.equal(await page.inputValue('#status-filter'), 'needs_action', 'the default is needs action');
    const needs = Number(await page.getAttribute('#inbox-counts button[data-status="needs_action"] .count', 'data-count'));
    assert.ok(needs >= 1, 'a count per status');
    assert.equal(await page.locator('#inbox tbody tr').count(), needs);
    assert.ok(await page.locator(`#inbox tr[data-app="${submitted}"]`).isVisible());
    assert.equal((await page.textContent(`#inbox tr[data-app="${submitted}"] .badge`)).trim(), lang === 'ja' ? '審査中' : 'Submitted');
    await checkScreen(page, lang, 'review inbox');
    if (lang === 'ja') await shot(page, 'c-review-inbox', 'review-inbox');
    await page.click(`#inbox tr[data-app="${submitted}"] a`);
    await page.waitForSelector('#decision');
    const textFirst = await page.evaluate(() => {
      const a = document.querySelector('#application-text');
      const d = document.querySelector('#decision');
      return !!(a && d && a.compareDocumentPosition(d) & Node.DOCUMENT_POSITION_FOLLOWING);
    });
    assert.ok(textFirst, 'the application text comes before the decision');
    assert.match(await page.textContent('#application-text dd[data-key="scope.fiscal_years"]'), lang === 'ja' ? /2022年度、2023年度/ : /FY2022/);
    await checkScreen(page, lang, 'review detail');
    if (lang === 'ja') await shot(page, 'c-review-decision', 'review-decision');
    await page.goto(`${base()}/#/review/A-DEMO-0001`);
    await page.waitForSelector('#approval-terms');
    const terms = await page.textContent('#approval-terms');
    assert.doesNotMatch(terms, /[{}]|null|T\d\d:\d\d:\d\d\.\d+/, 'no JSON dump, no raw timestamp');
    assert.match(terms, lang === 'ja' ? /JST/ : /JST/, 'the approval time with its zone');
    assert.equal(await page.locator('#application-text input, #application-text textarea').count(), 0, 'nothing looks editable');
    assert.ok(await page.locator('#read-only-note').isVisible());
    assert.match(await page.getAttribute('#link-usage', 'href'), /A-DEMO-0001/);
    assert.match(await page.getAttribute('#link-releases', 'href'), /A-DEMO-0001/);
    await checkScreen(page, lang, 'approved application');
    clean(problems);
    await context.close();
  }
});

test('auditor1 (ja, en): SQL and reference in the list, search by reference, CSV export that is itself audited', async () => {
  const token = await apiLogin('researcher1');
  const refused = await apiCall(token, 'POST', '/query', { application: 'A-DEMO-0001', sql: 'SELECT pid, birth_year FROM patient' });
  assert.equal(refused.status, 400);
  const ref = refused.body.error.ref;
  assert.ok(ref);
  for (const lang of ['ja', 'en']) {
    const { context, page, problems } = await open(lang === 'ja' ? 'ja-JP' : 'en-US');
    await login(page, 'auditor1');
    await page.waitForSelector('#chain-status[data-ok="true"]');
    await page.waitForSelector('#audit-list tbody tr');
    assert.ok((await page.locator('#audit-list .sql-snippet').count()) > 0, 'SQL shown in the list');
    await page.fill('#au-ref', ref);
    await page.click('#audit-search');
    await page.waitForSelector(`#audit-list[data-query*="reference=${ref}"] tbody tr`);
    const rows = page.locator('#audit-list tbody tr');
    assert.equal(await rows.count(), 1, 'exactly the event of that reference');
    assert.equal(await rows.first().getAttribute('data-ref'), ref);
    assert.match(await rows.first().locator('.sql-snippet').textContent(), /SELECT pid, birth_year/);
    assert.match(await rows.first().textContent(), lang === 'ja' ? /拒否/ : /Refused/);
    await checkScreen(page, lang, 'audit log');
    if (lang === 'ja') await shot(page, 'c-audit', 'audit');
    const href = await page.getAttribute('#audit-export', 'href');
    assert.match(href, new RegExp(`reference=${ref}`));
    const csv = await page.evaluate(async (u) => (await fetch(u, { credentials: 'same-origin' })).text(), href);
    const lines = csv.trim().split('\n');
    assert.match(lines[0], /^seq,at,actor,action,application,outcome,code,reference,sql/);
    assert.equal(lines.length, 2, 'header and the one event');
    assert.ok(lines[1].includes(ref));
    // The export itself is in the log.
    await page.fill('#au-ref', '');
    await page.selectOption('#au-action', 'audit.export');
    await page.click('#audit-search');
    await page.waitForSelector('#audit-list[data-query*="action=audit.export"] tbody tr[data-action="audit.export"]');
    await checkScreen(page, lang, 'audit log, exports');
    clean(problems);
    await context.close();
  }
});

test('pms1 (ja, en): products and seriousness by label, hidden cells explained', async () => {
  for (const lang of ['ja', 'en']) {
    const { context, page, problems } = await open(lang === 'ja' ? 'ja-JP' : 'en-US');
    await login(page, 'pms1');
    await page.waitForSelector('#pms-adverse-events .result', { timeout: 120_000 });
    await page.waitForSelector('#pms-deaths .result', { timeout: 120_000 });
    await page.waitForSelector('#pms-cases .result', { timeout: 120_000 });
    const serious = await page.locator('#pms-adverse-events tbody td[data-value="true"], #pms-adverse-events tbody td[data-value="false"]').allTextContents();
    assert.ok(serious.length > 0);
    for (const s of serious) assert.ok((lang === 'ja' ? ['重篤', '非重篤'] : ['Serious', 'Not serious']).includes(s.trim()), `seriousness by label: ${s}`);
    const product = (await page.locator('#pms-adverse-events tbody tr td:first-child').first().textContent()).trim();
    assert.match(product, /^P\d\d \S/, `product code with its name: ${product}`);
    const deaths = page.locator('#pms-deaths');
    const hidden = await deaths.locator('td.suppressed').count();
    const cells = await deaths.locator('tbody td.num, tbody td.suppressed').count();
    if (hidden * 2 >= cells && hidden > 0) assert.ok(await deaths.locator('.coarser').isVisible(), 'a hint to use coarser groups');
    await checkScreen(page, lang, 'PMS dashboard');
    if (lang === 'ja') await shot(page, 'c-pms', 'pms');
    clean(problems);
    await context.close();
  }
});

test('admin1 (ja, en): users (add, disable, reset, roles), extracts (status, rebuild, destroy), key fingerprints', async () => {
  for (const lang of ['ja', 'en']) {
    const { context, page, problems } = await open(lang === 'ja' ? 'ja-JP' : 'en-US');
    await login(page, 'admin1');
    await page.waitForURL(/#\/admin\/users$/);
    await page.waitForSelector('#admin-users tr[data-user="researcher1"]');
    const name = `e2e-${lang}`;
    await page.fill('#nu-username', name);
    await page.fill('#nu-name', lang === 'ja' ? '試験 太郎' : 'Test User');
    await page.click('#add-user-submit');
    await page.waitForSelector(`#admin-users tr[data-user="${name}"]`);
    const temp = (await page.textContent('#admin-msg .temp-password')).trim();
    assert.match(temp, /^[0-9a-f]{24}$/, 'a temporary password, shown once');
    const row = () => page.locator(`#admin-users tr[data-user="${name}"]`);
    await row().locator('.disable-user').click();
    await page.waitForSelector(`#admin-users tr[data-user="${name}"][data-disabled="true"]`);
    await row().locator('.enable-user').click();
    await page.waitForSelector(`#admin-users tr[data-user="${name}"][data-disabled="false"]`);
    await row().locator('.reset-password').click();
    await page.waitForFunction((t) => (document.querySelector('#admin-msg .temp-password')?.textContent ?? t).trim() !== t, temp);
    const reset = (await page.textContent('#admin-msg .temp-password')).trim();
    await row().locator(`input[value="auditor"]`).check();
    await page.evaluate(() => document.querySelector('#admin-msg').replaceChildren());
    await row().locator('.save-roles').click();
    await page.waitForSelector('#admin-msg .flash');
    assert.equal(await row().locator('input[value="auditor"]').isChecked(), true, 'the saved roles come back');
    // The last operator cannot be disabled.
    await page.locator('#admin-users tr[data-user="admin1"] .disable-user').click();
    await page.waitForSelector('#admin-msg .error-box[data-code="last_admin"]');
    assert.match(await page.textContent('#admin-msg .error-box'), lang === 'ja' ? /運用担当者/ : /operator/);
    await checkScreen(page, lang, 'users');
    if (lang === 'ja') await shot(page, 'c-admin-users', 'admin-users');
    // The reset password works; the first one no longer does.
    const loginAs = async (pw) =>
      (await fetch(`${base()}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: name, password: pw }) })).status;
    assert.equal(await loginAs(reset), 200);
    assert.equal(await loginAs(temp), 401);

    await page.click('nav a[data-nav="admin/data"]');
    await page.waitForSelector('#admin-extracts tr[data-extract="A-DEMO-0001"]');
    assert.ok(Number((await page.locator('#admin-datasets tr[data-table="patient"] td.num').textContent()).replace(/,/g, '')) > 0);
    for (const k of ['pseudonym', 'extract', 'audit']) assert.match(await page.textContent(`#admin-keys tr[data-key="${k}"] code`), /[0-9a-f]{8,}/, `${k} key fingerprint`);
    const current = page.locator('#admin-extracts tr[data-extract="A-DEMO-0001"] td').nth(3);
    assert.equal((await current.textContent()).trim(), lang === 'ja' ? 'はい' : 'Yes');
    await page.locator('#admin-extracts tr[data-extract="A-DEMO-0001"] .rebuild-extract').click();
    await page.waitForSelector('#admin-msg .flash');
    await page.waitForSelector('#admin-extracts tr[data-extract="A-DEMO-0002"] .destroy-reason');
    if (lang === 'ja') {
      // Destroy the DP application's extract (a reason is required), then rebuild it.
      const dp = () => page.locator('#admin-extracts tr[data-extract="A-DEMO-0002"]');
      await dp().locator('.destroy-reason').fill('鍵の更新のため');
      await dp().locator('.destroy-extract').click();
      await page.waitForSelector('#admin-extracts tr[data-extract="A-DEMO-0002"][data-destroyed="true"]');
      assert.equal((await dp().locator('td').nth(3).textContent()).trim(), 'いいえ');
      await dp().locator('.rebuild-extract').click();
      await page.waitForSelector('#admin-extracts tr[data-extract="A-DEMO-0002"][data-destroyed="false"]');
      await shot(page, 'c-admin-data', 'admin-data');
    }
    await checkScreen(page, lang, 'data and keys');
    clean(problems);
    await context.close();
  }
});

// ---- keyboard only, one journey per role (Tab, Shift+Tab, Enter, Esc, typing; visible focus)

test('keyboard only: researcher runs a query and opens the shortcut sheet', async () => {
  const { context, page, problems } = await open('ja-JP');
  await keyboardLogin(page, 'researcher1');
  await tabTo(page, 'a[data-open="A-DEMO-0001"]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.nb-layout .cell .cm-focused');
  // Esc leaves the editor (Tab there indents); then back to the sidebar.
  await page.keyboard.press('Escape');
  await tabTo(page, '#new-notebook', { back: true });
  const before = await page.locator('#nb-notebooks li').count();
  await page.keyboard.press('Enter');
  await page.waitForFunction((n) => document.querySelectorAll('#nb-notebooks li').length === n + 1, before);
  await page.waitForSelector('.cell-sql .cm-focused');
  await page.keyboard.type('SELECT sex, COUNT(DISTINCT pid) AS n FROM patient GROUP BY sex');
  await page.keyboard.press('Shift+Enter');
  await page.locator('.cell').first().locator('.result').waitFor({ timeout: 120_000 });
  await page.keyboard.press('Escape');
  await page.keyboard.press('?');
  await page.waitForSelector('#shortcut-sheet[open]');
  await page.keyboard.press('Escape');
  await tabTo(page, '.cell .result th button.sort', { back: true });
  clean(problems);
  await context.close();
});

test('keyboard only: reviewer opens an application and reaches the decision', async () => {
  const { context, page, problems } = await open('ja-JP');
  await keyboardLogin(page, 'reviewer1');
  await page.waitForSelector('#inbox');
  await tabTo(page, `#inbox tr[data-app="${submitted}"] a`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#decision');
  await tabTo(page, '#decision-reason');
  await page.keyboard.type('確認中');
  await tabTo(page, '#request-correction');
  clean(problems);
  await context.close();
});

test('keyboard only: auditor searches by reference', async () => {
  const { context, page, problems } = await open('ja-JP');
  await keyboardLogin(page, 'auditor1');
  await page.waitForSelector('#audit-list tbody tr');
  const ref = await page.getAttribute('#audit-list tbody tr[data-ref^="q_"]', 'data-ref');
  await tabTo(page, '#au-ref');
  await page.keyboard.type(ref);
  await page.keyboard.press('Enter');
  await page.waitForSelector(`#audit-list[data-query*="reference=${ref}"] tbody tr`);
  await tabTo(page, '#audit-export');
  clean(problems);
  await context.close();
});

test('keyboard only: PMS team opens its notebook', async () => {
  const { context, page, problems } = await open('ja-JP');
  await keyboardLogin(page, 'pms1');
  await tabTo(page, '#pms-notebook');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.nb-layout');
  clean(problems);
  await context.close();
});

test('keyboard only: operator adds a user', async () => {
  const { context, page, problems } = await open('ja-JP');
  await keyboardLogin(page, 'admin1');
  await page.waitForSelector('#admin-users');
  await tabTo(page, '#nu-username');
  await page.keyboard.type('e2e-keys');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#admin-users tr[data-user="e2e-keys"]');
  assert.match(await page.textContent('#admin-msg'), /[0-9a-f]{24}/);
  clean(problems);
  await context.close();
});

// Browser journey of the output airlock (issue 13 §1, 成果物の持ち出し審査), run with node:test
// against the real `kura demo` on loopback through Debian's Chromium (start-up, browser and
// CSP checks from lib.mjs; the file runs alone too):
//   node --test --test-concurrency=1 e2e/airlock.mjs
// researcher1 answers a query in the notebook and asks to release it; reviewer1 checks the
// snapshot (table, chart, a suppressed cell's record) and approves — one of two; reviewer2
// approves as the second checker; researcher1 downloads the CSV (equal to the snapshot, byte for
// byte), the chart and the release record; reviewer1 finds it in the release register.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { base, checkScreen, clean, login, open, shot, typeInCell, useDemo, waitText } from './lib.mjs';

useDemo();

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
  await checkScreen(page, 'ja', 'release request form');
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
  await checkScreen(page, 'ja', 'release inbox');
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
  await checkScreen(page, 'ja', 'release snapshot');
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
  await page.goto(`${base()}/#/releases/${releaseId}`);
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
  await page.goto(`${base()}/#/releases/${releaseId}`);
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
  await checkScreen(page, 'en', 'release downloads');
  clean(problems);
  await context.close();

  const rev = await open('ja-JP');
  await login(rev.page, 'reviewer1');
  await rev.page.click('a[data-nav="release-register"]');
  const entry = rev.page.locator(`#release-register tr[data-release="${releaseId}"]`);
  await entry.waitFor();
  assert.equal((await entry.locator('.downloads').textContent()).trim(), '3');
  await shot(rev.page, 'airlock-07-register');
  await checkScreen(rev.page, 'ja', 'release register');
  clean(rev.problems);
  await rev.context.close();
});

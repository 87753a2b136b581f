// Browser journeys of the seeds' screens (issue 16), run with node:test against the real
// `kura demo` on loopback through Debian's Chromium, with the shared harness of e2e/lib.mjs
// (each journey file still runs alone):
//   node --test --test-concurrency=1 e2e/register.mjs
// The public register renders without a session and carries only what approvals published;
// the medical institution reads its feedback report; a co-investigator's application waits
// for the research lead's consent (form 3), is approved with a place of use and published
// fields, the applicant downloads the approval notice, withdraws the study, and the
// register shows it withdrawn.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base, clean, login, open, shot, useDemo } from './lib.mjs';

useDemo();

/** Texts of the demo's application forms that no approval published. */
const UNPUBLISHED = [
  'No other nationwide source',
  'Aggregate counts and means only',
  'demo-office@example.invalid',
  'Demo University research facility',
  'DEMO-2026-001',
  '127.0.0.0/8',
  'researcher1',
];

test('the public register renders without a session and shows only what approvals published', async () => {
  const { context, page, problems } = await open('ja-JP');
  const api = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/api/')) api.push(u.pathname);
  });
  await page.goto(`${base()}/#/register`);
  await page.waitForSelector('#register-studies article[data-study="A-DEMO-0001"]');
  const card = page.locator('article[data-study="A-DEMO-0001"]');
  assert.match(await card.textContent(), /ALS and neuromuscular disease course/);
  assert.match(await card.textContent(), /Demo University/);
  assert.ok(await page.locator('article[data-study="A-DEMO-0004"]').count(), 'the JaSMIn study is listed');
  assert.equal(await page.locator('#who').count(), 0, 'no session');
  const text = await page.textContent('main');
  for (const p of UNPUBLISHED) assert.ok(!text.includes(p), `${p} is not on the register`);
  // The page reads nothing but the public feed (and learns it has no session).
  for (const p of api) assert.ok(['/api/v1/public/studies', '/api/v1/me'].includes(p), `unexpected API call ${p}`);
  // Everything shown comes from the feed, whose content is the published fields only.
  const feed = await page.evaluate(async () => (await fetch('/api/v1/public/studies')).json());
  const s1 = feed.studies.find((s) => s.id === 'A-DEMO-0001');
  assert.deepEqual(Object.keys(s1).sort(), ['approved_on', 'datasets', 'diseases', 'fiscal_years', 'id', 'institution', 'publications', 'regions', 'releases', 'status', 'summary', 'term', 'title']);
  await shot(page, 'seeds-register-ja');
  await page.click('#lang-switch');
  await page.waitForFunction(() => document.querySelector('h1')?.textContent === 'Register of research use');
  await shot(page, 'seeds-register-en');
  clean(problems);
  await context.close();
});

test('the medical institution reads its own figures beside the national ones', async () => {
  const { context, page, problems } = await open('en-US');
  await login(page, 'facility1');
  await page.waitForSelector('#facility-intro');
  assert.match(await page.textContent('#facility-intro'), /F13001/);
  await page.waitForSelector('#feedback-cases_by_disease tbody tr');
  const rows = await page.locator('#feedback-cases_by_disease tbody tr').count();
  assert.ok(rows > 10, 'every designated disease has a row');
  await page.waitForSelector('#feedback-als_events tbody tr[data-key="death"]');
  await shot(page, 'seeds-facility-report');
  // The facility's standing scope answers queries like a PMS team's.
  const r = await page.evaluate(async () => {
    const res = await fetch('/api/v1/query', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': document.cookie.match(/kura_csrf=([^;]+)/)[1] },
      body: JSON.stringify({ application: 'FAC-F13001', sql: 'SELECT sex, COUNT(DISTINCT pid) AS n FROM patient GROUP BY sex' }),
    });
    return { status: res.status, body: await res.json() };
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  clean(problems);
  await context.close();
});

test('form 3, approval with a place of use, the notice, withdrawal and the register', async () => {
  // researcher2 applies as a co-investigator of researcher1.
  let { context, page, problems } = await open('ja-JP');
  await login(page, 'researcher2');
  await page.goto(`${base()}/#/apply/new`);
  await page.waitForSelector('#application-form');
  const today = new Date();
  const iso = (d) => d.toISOString().slice(0, 10);
  const fyEnd = `${today.getMonth() >= 3 ? today.getFullYear() + 1 : today.getFullYear()}-03-31`;
  const fill = async (key, v) => page.fill(`[data-key="${key}"]`, v);
  await fill('title', '分担研究: 先天代謝異常症の登録者の年齢分布');
  await fill('research_group', '先天代謝異常症研究班');
  await fill('applicant.affiliation', 'デモ大学');
  await fill('applicant.name', '研究 二郎');
  await fill('lead_investigator', 'researcher1');
  await fill('diseases', '240, 251');
  await fill('purpose', '登録者の年齢分布を明らかにする。');
  await fill('necessity', '全国の登録制度は JaSMIn のみのため。');
  await fill('expected_results', '診療体制の整備に資する。');
  await fill('plan_and_methods', '集計のみ。');
  await fill('ethics_review.committee', 'デモ大学倫理委員会');
  await fill('ethics_review.approval_number', 'R-2026-016');
  await fill('named_users', 'researcher2, デモ大学, 講師');
  await fill('scope.fiscal_years', '2020, 2021, 2022');
  await fill('term.start', iso(today));
  await fill('term.end', fyEnd);
  await fill('place_of_use', 'デモ大学 研究棟');
  await fill('networks', '127.0.0.0/8');
  await fill('publication_plan', '年次報告');
  await fill('contact', 'デモ大学 研究支援課');
  await page.check('#f-scope\\.datasets-jasmin');
  await page.uncheck('#f-scope\\.datasets-nanbyo');
  await page.click('#save-draft');
  await page.waitForSelector('.messages .flash');
  await page.click('#submit-application');
  await shot(page, 'seeds-form3-submit');
  await page
    .waitForSelector('.error-box[data-code="lead_consent_required"]')
    .catch(async (e) => assert.fail(`${e.message}\n${await page.textContent('main')}`));
  const app = decodeURIComponent(page.url().split('#/apply/')[1] ?? '');
  const id = app && app !== 'new' ? app : (await page.evaluate(async () => (await (await fetch('/api/v1/applications', { credentials: 'same-origin' })).json()).map((a) => a.id).pop()));
  await shot(page, 'seeds-form3-waiting');
  clean(problems);
  await context.close();

  // researcher1, the research lead, consents from their own account.
  ({ context, page, problems } = await open('ja-JP'));
  await login(page, 'researcher1');
  await page.click('a[data-nav="consent"]');
  await page.waitForSelector(`#consent-requests li[data-app="${id}"]`);
  await page.click(`#consent-requests li[data-app="${id}"] a`);
  await page.waitForSelector('#lead-consent #consent-agree');
  await page.check('#consent-agree');
  await shot(page, 'seeds-form3-consent');
  await page.click('#give-consent');
  await page.waitForSelector('#lead-consent .flash');
  clean(problems);
  await context.close();

  // researcher2 submits now.
  ({ context, page, problems } = await open('ja-JP'));
  await login(page, 'researcher2');
  await page.goto(`${base()}/#/apply/${encodeURIComponent(id)}`);
  await page.waitForSelector('#lead-consent .flash');
  await page.click('#submit-application');
  await page.waitForSelector('.badge[data-status="submitted"]');
  clean(problems);
  await context.close();

  // reviewer1 approves with the place of use and the published fields.
  ({ context, page, problems } = await open('en-US'));
  await login(page, 'reviewer1');
  await page.goto(`${base()}/#/review/${encodeURIComponent(id)}`);
  await page.waitForSelector('#decision #ap-networks');
  assert.equal(await page.inputValue('#ap-networks'), '127.0.0.0/8', 'suggested from the form');
  await page.fill('#ap-years', '2020, 2021, 2022');
  await page.fill('#ap-published-title', 'Age of registrants with inherited metabolic diseases');
  await page.fill('#ap-published-summary', 'How old are the people registered with JaSMIn?');
  await shot(page, 'seeds-review-place');
  await page.click('#approve');
  await page.waitForSelector('.badge[data-status="approved"]', { timeout: 300_000 });
  clean(problems);
  await context.close();

  // researcher2 downloads the approval notice and withdraws the study.
  ({ context, page, problems } = await open('ja-JP'));
  await login(page, 'researcher2');
  await page.goto(`${base()}/#/apply/${encodeURIComponent(id)}`);
  await page.waitForSelector('#notices a.notice-download');
  const href = await page.getAttribute('#notices a.notice-download', 'href');
  const notice = await page.evaluate(async (u) => (await fetch(u, { credentials: 'same-origin' })).text(), href);
  assert.match(notice, /臨床調査個人票の使用について（通知）/);
  assert.match(notice, /127\.0\.0\.0\/8/);
  await shot(page, 'seeds-notice');
  await page.fill('#withdraw-reason', '研究計画の終了');
  await page.click('#withdraw-study');
  await page.waitForSelector('.badge[data-status="withdrawn"]');
  clean(problems);
  await context.close();

  // Anyone sees it on the register, withdrawn, with the published title only.
  ({ context, page, problems } = await open('en-US'));
  await page.goto(`${base()}/#/register`);
  const card = page.locator(`article[data-study="${id}"]`);
  await card.waitFor();
  assert.match(await card.textContent(), /Age of registrants with inherited metabolic diseases/);
  assert.ok(await card.locator('.badge[data-status="withdrawn"]').count());
  assert.ok(!(await card.textContent()).includes('分担研究'), 'the form title was not published');
  await shot(page, 'seeds-register-withdrawn');
  clean(problems);
  await context.close();
});

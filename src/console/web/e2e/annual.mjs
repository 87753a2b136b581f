// Browser journeys of the annual reports (issue 13 §3), run with node:test against the real
// `kura demo` on loopback through Debian's Chromium, with the shared harness of e2e/lib.mjs
// (each journey file still runs alone):
//   node --test --test-concurrency=1 e2e/annual.mjs
// The data custodian generates the annual report, reads its tables and charts and downloads
// CSV, PDF and the HTML document (under its own strict CSP); the PMS team sees the report of
// its own products only and is refused another manufacturer's; the applicant downloads the
// usage report as PDF.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base, clean, login, open, shot, useDemo } from './lib.mjs';

useDemo();

/** Fetch a same-origin URL inside the page (with the session cookie): status, type, bytes. */
async function fetched(page, url) {
  return page.evaluate(async (u) => {
    const r = await fetch(u, { credentials: 'same-origin' });
    const b = new Uint8Array(await r.arrayBuffer());
    return { status: r.status, type: r.headers.get('content-type'), head: String.fromCharCode(...b.slice(0, 5)), text: new TextDecoder().decode(b), size: b.length };
  }, url);
}

test('the data custodian generates the annual report, reads its tables and charts, downloads CSV, PDF and HTML', async () => {
  const { context, page, problems } = await open('ja-JP');
  await login(page, 'admin1');
  // The operator lands on the users screen (issue 17); the annual reports are one click away.
  await page.click('a[data-nav="annual"]');
  await page.waitForSelector('#annual-fy');
  assert.equal(await page.getAttribute('a[data-nav="annual"]', 'aria-current'), 'page', 'the annual reports are the current page');
  await page.click('#annual-show');
  await page.waitForSelector('#annual-report', { timeout: 120_000 });
  for (const view of ['cases_by_sex', 'cases_by_age', 'ae_events_by_term', 'ae_patients_by_term', 'deaths']) {
    assert.equal(await page.locator(`section[data-section="regen"] table[data-view="${view}"]`).count(), 1, `regen table ${view}`);
    assert.equal(await page.locator(`section[data-section="regen"] svg.annual-chart[data-view="${view}"]`).count(), 1, `chart of ${view}`);
  }
  assert.ok(await page.locator('section[data-section="nanbyo"] table[data-view="cases_by_age"]').count());
  // Suppressed cells read 秘匿 and never a number; released ones are numbers.
  const cells = await page.$$eval('table.annual-table td', (tds) => tds.map((td) => [td.dataset.suppressed === 'true', td.textContent]));
  assert.ok(cells.some(([s]) => s), 'some cells are suppressed');
  for (const [suppressed, text] of cells) {
    if (suppressed) assert.equal(text, '秘匿');
    else assert.match(text, /^\d+$/);
  }
  await shot(page, 'annual-custodian');
  const csv = await fetched(page, await page.getAttribute('#annual-csv', 'href'));
  assert.equal(csv.status, 200);
  assert.match(csv.text, /^fiscal_year,section,table,item,unit,/);
  assert.match(csv.text, /,suppressed\n/);
  const pdf = await fetched(page, await page.getAttribute('#annual-pdf', 'href'));
  assert.equal(pdf.status, 200);
  assert.equal(pdf.type, 'application/pdf');
  assert.equal(pdf.head, '%PDF-');
  // The HTML document opens under its own policy: its stylesheet applies, nothing is refused.
  const htmlHref = await page.getAttribute('#annual-html', 'href');
  await page.goto(`${base()}${htmlHref}`);
  await page.waitForSelector('h1');
  assert.match(await page.textContent('h1'), /年次報告/);
  assert.ok(await page.locator('svg').count() > 3, 'a chart per table');
  const align = await page.$eval('p.right', (p) => getComputedStyle(p).textAlign);
  assert.equal(align, 'right', 'the inline stylesheet is allowed by its hash');
  await shot(page, 'annual-document');
  await page.goto(`${base()}/#/annual`);
  await page.waitForSelector('#annual-register tbody tr');
  assert.match(await page.textContent('#annual-register'), /admin1/);
  clean(problems);
  await context.close();
});

test('the PMS team sees the annual report of its own products only; another maker is refused', async () => {
  const { context, page, problems } = await open('en-US');
  await login(page, 'pms1');
  await page.click('a[data-nav="pms"]');
  await page.waitForSelector('#pms-annual-show');
  await page.click('#pms-annual-show');
  await page.waitForSelector('#pms-annual-out #annual-report', { timeout: 120_000 });
  const rows = await page.$$eval('#pms-annual-out tr[data-row]', (trs) => trs.map((tr) => tr.dataset.row));
  assert.ok(rows.length > 0);
  assert.ok(rows.every((r) => r === 'P01'), `only M01's product P01: ${rows}`);
  assert.equal(await page.locator('#pms-annual-out section[data-section="nanbyo"]').count(), 0, 'no registry section');
  assert.ok(await page.locator('#pms-annual-out table[data-view="ae_events_by_term"]').count(), 'the item-12 tables');
  await shot(page, 'annual-pms');
  const own = await fetched(page, await page.getAttribute('#pms-annual-pdf', 'href'));
  assert.equal(own.head, '%PDF-');
  const other = await fetched(page, `/api/v1/reports/annual?fy=2025&manufacturer=M02&format=json`);
  assert.equal(other.status, 403);
  assert.match(other.text, /"code":"forbidden"/);
  const otherProduct = await fetched(page, `/api/v1/reports/annual?fy=2025&product=P02&format=json`);
  assert.equal(otherProduct.status, 403);
  clean(problems);
  await context.close();
});

test('the applicant downloads the usage report as PDF', async () => {
  const { context, page, problems } = await open('ja-JP');
  await login(page, 'researcher1');
  await page.click('a[data-nav="reports"]');
  await page.waitForSelector('#usage-app');
  await page.selectOption('#usage-app', 'A-DEMO-0001');
  await page.click('#usage-show');
  await page.waitForSelector('#usage-pdf');
  const pdf = await fetched(page, await page.getAttribute('#usage-pdf', 'href'));
  assert.equal(pdf.status, 200);
  assert.equal(pdf.head, '%PDF-');
  clean(problems);
  await context.close();
});

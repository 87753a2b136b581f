// Browser journeys of the oversight screens (issue 13 §2 §4), run with node:test against the
// real `kura demo` on loopback through Debian's Chromium, with the harness of e2e/lib.mjs:
//   node --test --test-concurrency=1 e2e/oversight.mjs
// The auditor acknowledges an alert raised by failed logins; the applicant views, downloads
// and files the usage report and records a publication; the reviewer sees the filed report.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base, clean, login, open, shot, useDemo, waitText } from './lib.mjs';

useDemo();

test('auditor acknowledges the alert that failed logins raised', async () => {
  for (let i = 0; i < 3; i++) {
    await fetch(`${base()}/api/v1/session`, {
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

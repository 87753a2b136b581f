// Browser journeys of issue 15 §2 (notebooks as Jupyter files) against the real `kura demo`:
//   node --test --test-concurrency=1 e2e/ipynb.mjs
// researcher1 downloads a notebook with its results (a table, a chart PNG, the disclosure
// record; a hidden cell stays hidden in the file), imports a file whose forged output must not
// come back, and sees the ε a DP export would spend before anything runs. Every screen passes
// the raw-code scan and axe-core (lib.mjs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkScreen, clean, freshNotebook, login, open, shot, typeInCell, useDemo } from './lib.mjs';

useDemo();

const BY_PREF = 'SELECT prefecture_code, COUNT(DISTINCT pid) AS patients FROM patient GROUP BY prefecture_code';

/** Choose what the file holds in the open export dialog and download it: the parsed file. */
async function download(page, withResults) {
  await page.check(withResults ? '#ipynb-with-results' : '#ipynb-cells-only');
  const [file] = await Promise.all([page.waitForEvent('download'), page.click('#ipynb-download')]);
  assert.match(file.suggestedFilename(), /\.ipynb$/);
  return JSON.parse(readFileSync(await file.path(), 'utf8'));
}

const text = (source) => (Array.isArray(source) ? source.join('') : source);

test('researcher1 (ja): download a notebook with results and a chart, import it back without its outputs', async () => {
  const { context, page, problems } = await open('ja-JP');
  await login(page, 'researcher1');
  await freshNotebook(page, 'A-DEMO-0001');
  await typeInCell(page, 0, BY_PREF);
  await page.keyboard.press('Control+Enter');
  await page.locator('.cell').first().locator('.result').waitFor({ timeout: 120_000 });

  await page.click('#nb-export');
  await page.waitForSelector('#ipynb-export[open]');
  assert.match(await page.textContent('#ipynb-cost'), /クエリは実行しません/, 'cells only runs nothing');
  await page.check('#ipynb-with-results');
  assert.match(await page.textContent('#ipynb-cost'), /1 個の SQL セルを実行/, 'the dialog says what will run');
  await checkScreen(page, 'ja', 'ipynb export dialog');
  await shot(page, 'i-export-dialog', 'ipynb-export');

  const doc = await download(page, true);
  assert.equal(doc.nbformat, 4);
  const code = doc.cells.find((c) => c.cell_type === 'code');
  assert.equal(text(code.source), `%%kura\n${BY_PREF}`);
  const out = code.outputs[0];
  assert.equal(out.output_type, 'execute_result');
  const png = Buffer.from(out.data['image/png'], 'base64');
  assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG', 'the chart is a PNG');
  const hidden = code.metadata.kura.disclosure.suppressed;
  assert.ok(hidden.length > 0, 'the demo answer has hidden cells');
  for (const [r, c] of hidden) assert.equal(out.data['application/json'].rows[r][c], null, 'a hidden cell stays hidden in the file');
  assert.match(await page.textContent('#ipynb-export .ipynb-msg'), /ダウンロードしました/);

  const plain = await download(page, false);
  assert.ok(plain.cells.every((c) => (c.outputs ?? []).length === 0), 'cells only: no outputs');
  await page.keyboard.press('Escape');

  // Import: a forged output in the file must not come back.
  code.outputs = [{ output_type: 'stream', name: 'stdout', text: ['FORGED-412'] }];
  doc.cells.push({ cell_type: 'code', metadata: {}, execution_count: null, outputs: [], source: ['df.plot()'] });
  const path = join(tmpdir(), `kura-e2e-${process.pid}.ipynb`);
  writeFileSync(path, JSON.stringify(doc));
  const before = page.url();
  await page.setInputFiles('#ipynb-file', path);
  await page.waitForFunction((u) => location.href !== u, before);
  await page.waitForSelector('#ipynb-imported');
  assert.match(await page.textContent('#ipynb-imported'), /SQL セル 1 個/);
  await page.waitForSelector('.cell-sql .cm-content');
  const sources = await page.locator('.cell .cm-content').allTextContents();
  assert.ok(sources.some((s) => s.includes('COUNT(DISTINCT pid)')), `the SQL came back: ${sources.join(' | ')}`);
  assert.ok(sources.some((s) => s.includes('df.plot()')), 'the Python cell is kept as text');
  assert.doesNotMatch(await page.textContent('.cells'), /FORGED-412/, 'no imported output is shown');
  assert.equal(await page.locator('.cell .result').count(), 0, 'outputs are recomputed, never imported');
  await checkScreen(page, 'ja', 'imported notebook');

  // A file that is not JSON is refused with the fix, and nothing is created.
  const count = await page.locator('#nb-notebooks li').count();
  writeFileSync(path, 'not a notebook');
  await page.setInputFiles('#ipynb-file', path);
  await page.waitForSelector('#ipynb-import-msg .flash.error');
  assert.match(await page.textContent('#ipynb-import-msg'), /JupyterLab で保存し直して/);
  assert.equal(await page.locator('#nb-notebooks li').count(), count);
  clean(problems);
  await context.close();
});

test('researcher1 (en): a DP notebook shows the ε the export would spend before anything runs', async () => {
  const { context, page, problems } = await open('en-US');
  await login(page, 'researcher1');
  await freshNotebook(page, 'A-DEMO-0002');
  await typeInCell(page, 0, 'SELECT sex, COUNT(*) AS n FROM patient GROUP BY sex');
  await page.click('#nb-export');
  await page.waitForSelector('#ipynb-export[open]');
  await page.check('#ipynb-with-results');
  await page.fill('#ipynb-epsilon', '0.25');
  assert.match(await page.textContent('#ipynb-cost'), /SQL cells to run: 1\. Privacy budget spent in total: ε 0\.25/);
  await checkScreen(page, 'en', 'ipynb export dialog (DP)');
  const doc = await download(page, false);
  assert.equal(doc.cells[0].outputs.length, 0, 'cells only spends nothing');
  clean(problems);
  await context.close();
});

// Notebooks as Jupyter files in the console (issue 15 §2): the notebook's "Download .ipynb"
// dialog — cells only, or with results, where every SQL cell runs again as an audited query
// (under DP each one spends its ε, shown before anything runs) — and "Import .ipynb" beside
// the notebook list. Import sends only cells: outputs and attachments are stripped here
// (the server drops them too and recomputes nothing until the researcher runs a cell).
import { api, apiBlob } from '../api';
import { clear, field, h, saveBlob } from '../dom';
import { fmtNum, t } from '../i18n';
import { Ctx, errorBox, note } from '../ui';

interface NotebookRef {
  id: string;
  title: string;
}

/** The file name the server proposes is not readable from a fetch; build the same kind here. */
function fileName(title: string, id: string): string {
  const safe = title.replace(/[^A-Za-z0-9-]/g, '_').replace(/^_+|_+$/g, '');
  return `${safe || id}.ipynb`;
}

/** ε to spend when every SQL cell runs once at `eps`. */
function totalEpsilon(sqlCells: number, eps: number): number {
  return Math.round(sqlCells * eps * 1e6) / 1e6;
}

/**
 * The "Download .ipynb" button and its dialog. `flush` saves pending edits first, so the file
 * holds what is on screen; `sqlCells` counts the SQL cells that would run.
 */
export function exportControl(nb: NotebookRef, mode: string, flush: () => Promise<void>, sqlCells: () => number, title: () => string): HTMLElement[] {
  const withResults = h('input', { type: 'radio', name: 'ipynb-what', id: 'ipynb-with-results', value: 'run' });
  const cellsOnly = h('input', { type: 'radio', name: 'ipynb-what', id: 'ipynb-cells-only', value: 'cells', checked: true });
  const eps = h('input', { type: 'number', id: 'ipynb-epsilon', min: '0', step: '0.05', value: '0.1', 'aria-label': t('dp_epsilon') }) as HTMLInputElement;
  const cost = h('p', { class: 'hint', id: 'ipynb-cost', 'aria-live': 'polite' });
  const msg = h('div', { class: 'ipynb-msg' });
  const dp = mode === 'dp';
  const showCost = () => {
    const n = sqlCells();
    const run = (withResults as HTMLInputElement).checked;
    eps.disabled = !run;
    cost.textContent = !run ? t('ipynb_cells_only_hint') : dp ? t('ipynb_dp_cost', { n, eps: fmtNum(totalEpsilon(n, Number(eps.value)), 3) }) : t('ipynb_run_hint', { n });
  };
  for (const el of [withResults, cellsOnly, eps]) el.addEventListener('input', showCost);
  const download = async () => {
    clear(msg);
    try {
      await flush();
      const run = (withResults as HTMLInputElement).checked;
      const path = `/notebooks/${encodeURIComponent(nb.id)}/ipynb`;
      const body = dp ? { run: true, epsilon: Number(eps.value) } : { run: true };
      const blob = run ? await apiBlob(path, 'POST', body) : await apiBlob(path);
      saveBlob(blob, fileName(title(), nb.id));
      clear(msg, note(t('ipynb_downloaded')));
    } catch (x) {
      clear(msg, errorBox(x));
    }
  };
  const dialog = h(
    'dialog',
    { class: 'ipynb-export', id: 'ipynb-export', 'aria-labelledby': 'ipynb-export-title' },
    h('h2', { id: 'ipynb-export-title' }, t('ipynb_export_title')),
    h(
      'fieldset',
      {},
      h('legend', {}, t('ipynb_what')),
      h('label', { for: 'ipynb-cells-only' }, cellsOnly, ' ', t('ipynb_cells_only')),
      h('label', { for: 'ipynb-with-results' }, withResults, ' ', t('ipynb_with_results')),
    ),
    dp ? field(t('ipynb_epsilon_each'), eps) : null,
    cost,
    h('p', { class: 'hint enclave-note' }, t('ipynb_notice')),
    msg,
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'button', id: 'ipynb-download', class: 'primary', onclick: () => void download() }, t('ipynb_download')),
      h('button', { type: 'button', onclick: () => (dialog as HTMLDialogElement).close() }, t('close')),
    ),
  ) as HTMLDialogElement;
  const open = h(
    'button',
    {
      type: 'button',
      id: 'nb-export',
      'aria-haspopup': 'dialog',
      onclick: () => {
        clear(msg);
        showCost();
        dialog.showModal();
        cellsOnly.focus();
      },
    },
    t('ipynb_export'),
  );
  return [open, dialog];
}

interface Imported {
  notebook: { id: string };
  sql_cells: number;
  markdown_cells: number;
  kept_as_text: number[];
}

/** The cells of a parsed .ipynb without outputs or attachments (the server ignores them anyway). */
function cellsOnly(doc: unknown): unknown {
  if (!doc || typeof doc !== 'object' || !Array.isArray((doc as { cells?: unknown }).cells)) return doc;
  const d = doc as { cells: Record<string, unknown>[] };
  return { ...d, cells: d.cells.map((c) => (c && typeof c === 'object' ? { ...c, outputs: [], attachments: undefined } : c)) };
}

/** Parse and send one file; the new notebook's id, or an error shown in `msg`. */
async function importFile(app: string, file: File, msg: HTMLElement): Promise<Imported | null> {
  let doc: unknown;
  try {
    doc = JSON.parse(await file.text());
  } catch {
    clear(msg, note(t('ipynb_not_json'), 'error'));
    return null;
  }
  try {
    return await api<Imported>('POST', '/notebooks/import', { application: app, notebook: cellsOnly(doc) });
  } catch (x) {
    clear(msg, errorBox(x));
    return null;
  }
}

/** "Import .ipynb" for the notebook list of `app`: a file picker; opens the new notebook. */
export function importControl(ctx: Ctx, app: string): HTMLElement {
  const msg = h('div', { class: 'ipynb-msg', id: 'ipynb-import-msg' });
  const input = h('input', { type: 'file', id: 'ipynb-file', accept: '.ipynb,application/x-ipynb+json,application/json', class: 'visually-hidden', tabindex: '-1', 'aria-hidden': 'true' }) as HTMLInputElement;
  input.addEventListener('change', async () => {
    const file = input.files?.[0];
    input.value = '';
    if (!file) return;
    const done = await importFile(app, file, msg);
    if (!done) return;
    sessionStorage.setItem('kura.imported', t('ipynb_imported', { sql: done.sql_cells, md: done.markdown_cells, kept: done.kept_as_text.length }));
    ctx.go(`#/nb/${encodeURIComponent(app)}/${encodeURIComponent(done.notebook.id)}`);
  });
  const button = h('button', { type: 'button', id: 'import-notebook', onclick: () => input.click() }, t('ipynb_import'));
  return h('div', { class: 'ipynb-import' }, button, input, h('small', { class: 'hint' }, t('ipynb_import_hint')), msg);
}

/** The note an import left for the notebook it opened, shown once. */
export function importedNote(): HTMLElement | null {
  const text = sessionStorage.getItem('kura.imported');
  if (!text) return null;
  sessionStorage.removeItem('kura.imported');
  return h('div', { id: 'ipynb-imported' }, note(text));
}

// The notebook (issue 5, issue 17 §3): ordered SQL and Markdown cells, saved on the server per
// user and application (/api/v1/notebooks) together with their outputs, so a reopened notebook
// shows what it showed (marked stale when the application's extract changed since). Jupyter's
// habits: a command mode (the cell is selected; A/B insert, D D deletes, Z undoes it, M/Y
// change the type, J/K or arrows move, Enter edits, ? shows the shortcut sheet) and an edit
// mode (CodeMirror; Shift+Enter runs and moves on, Ctrl+Enter runs, Alt+Enter runs and inserts,
// Esc leaves). Completion opens only on Ctrl+Space or after a dot, ranked by the catalogue
// (columns of the tables in the query first). A side panel lists the catalogue and inserts names.
import { autocompletion, Completion, CompletionContext, CompletionResult, completionStatus, startCompletion } from '@codemirror/autocomplete';
import { defaultKeymap, history, historyKeymap, indentWithTab } from '@codemirror/commands';
import { sql, StandardSQL } from '@codemirror/lang-sql';
import { bracketMatching, defaultHighlightStyle, syntaxHighlighting } from '@codemirror/language';
import { EditorState, Prec } from '@codemirror/state';
import { EditorView, keymap, lineNumbers, placeholder } from '@codemirror/view';
import MarkdownIt from 'markdown-it';
import { api, ApiError, ApiErrorBody, AppGrant, catalog, CatalogTable, grantBudget, grantId, grantMode, listOf, qs, QueryCost, QueryResult } from '../api';
import { modeLabel } from './apps';
import { clear, field, h } from '../dom';
import { fmtDateTime, fmtDay, fmtNum, pick, t } from '../i18n';
import { domainsFor } from '../labels';
import { Ctx, errorBox } from '../ui';
import { exportControl, importControl, importedNote } from './ipynb';
import { renderResult } from './result';

// html:false escapes any raw HTML in notes, so a Markdown cell cannot inject markup or script.
const md = new MarkdownIt({ html: false, linkify: false, typographer: false });
// Column alignment becomes a class: markdown-it writes style="text-align:…", which the CSP refuses.
for (const rule of ['th_open', 'td_open'] as const) {
  md.renderer.rules[rule] = (tokens, idx, options, _env, self) => {
    const tok = tokens[idx];
    const style = tok.attrGet('style');
    if (style) {
      const m = /text-align:\s*(left|right|center)/.exec(style);
      tok.attrs = (tok.attrs ?? []).filter(([k]) => k !== 'style');
      if (m) tok.attrJoin('class', `align-${m[1]}`);
    }
    return self.renderToken(tokens, idx, options);
  };
}

/** A saved output: a released result, or the refusal the cell got. */
export type CellOutput =
  | { kind: 'result'; result: QueryResult; sql: string; at: string; extract_id?: string | null; execution_count?: number }
  | { kind: 'error'; status: number; error: ApiErrorBody; at: string; execution_count?: number };

export interface CellData {
  type: 'sql' | 'markdown';
  source: string;
  output?: CellOutput | null;
}

interface Notebook {
  id: string;
  title: string;
  application?: string;
  application_id?: string;
  cells: CellData[];
  updated_at?: string;
  /** The application's extract now: outputs from another extract are stale. */
  extract_id?: string | null;
}

interface LiveCell {
  data: CellData;
  el: HTMLElement;
  view: EditorView;
  run: () => Promise<void>;
  setType: (type: 'sql' | 'markdown') => void;
}

/** Outputs larger than this are not kept with the notebook (the server refuses them too). */
const MAX_OUTPUT_BYTES = 250 * 1024;
/** All outputs of a notebook together stay under the request body limit (1 MiB). */
const MAX_OUTPUTS_BYTES = 700 * 1024;

function byteSize(v: unknown): number {
  return new TextEncoder().encode(JSON.stringify(v)).length;
}

let execCounter = 0;

/** Saves the open notebook now; the router calls it before leaving the screen. */
export let flushNotebook: (() => Promise<void>) | null = null;

const editorTheme = EditorView.theme({
  '&': { border: '1px solid #d8cfc4', borderRadius: '3px', background: '#fff', fontSize: '14px', minHeight: '2.4em' },
  '&.cm-focused': { outline: '3px solid #1a5fd0', outlineOffset: '1px' },
  '.cm-content': { fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace', padding: '6px 0' },
  '.cm-gutters': { background: '#f6f2ec', color: '#6b6158', border: 'none' },
});

/** The default title of a new notebook, in the current language. */
export function defaultTitle(): string {
  const now = new Date();
  const day = fmtDay(new Date(now.getTime() + 9 * 3600 * 1000).toISOString().slice(0, 10));
  return t('default_title', { date: day });
}

export async function renderNotebook(ctx: Ctx, app: string, nbId?: string) {
  document.title = `${t('nav_notebooks')} ${app} — kura`;
  const tables = await catalog(app).catch(() => [] as CatalogTable[]);
  const list = listOf<Notebook>(await api('GET', `/notebooks${qs({ application: app })}`), 'notebooks');
  if (!nbId && list.length > 0) {
    ctx.go(`#/nb/${encodeURIComponent(app)}/${encodeURIComponent(list[0].id)}`);
    return;
  }
  const side = h('div', { class: 'nb-catalog' });
  const sidebar = h(
    'aside',
    { class: 'nb-list', 'aria-label': t('notebooks_of') },
    h('h2', {}, t('notebooks_of')),
    h(
      'ul',
      { id: 'nb-notebooks' },
      list.map((n) =>
        h(
          'li',
          {},
          h('a', { href: `#/nb/${encodeURIComponent(app)}/${encodeURIComponent(n.id)}`, 'aria-current': n.id === nbId ? 'page' : null, translate: 'no' }, n.title || defaultTitle()),
        ),
      ),
    ),
    h(
      'button',
      {
        type: 'button',
        id: 'new-notebook',
        onclick: async () => {
          try {
            const created = await api<Notebook>('POST', '/notebooks', { application: app, title: defaultTitle(), cells: [{ type: 'sql', source: '' }] });
            ctx.go(`#/nb/${encodeURIComponent(app)}/${encodeURIComponent(created.id)}`);
          } catch (x) {
            sidebar.append(errorBox(x));
          }
        },
      },
      t('new_notebook'),
    ),
    importControl(ctx, app),
    h('p', {}, h('a', { href: `#/catalog/${encodeURIComponent(app)}` }, t('nav_catalog'))),
    h('p', {}, h('a', { href: `#/history/${encodeURIComponent(app)}` }, t('nav_history'))),
    side,
  );
  const area = h('section', { class: 'nb-area', 'aria-label': t('nav_notebooks') });
  clear(ctx.main, h('div', { class: 'nb-layout' }, sidebar, area));
  if (!nbId) {
    clear(area, h('h1', { translate: 'no' }, app), h('p', {}, t('no_notebooks')));
    return;
  }
  const nb = await api<Notebook>('GET', `/notebooks/${encodeURIComponent(nbId)}`);
  const grant = (ctx.me.applications ?? []).find((g) => grantId(g) === app);
  const nbApi = mountNotebook(area, nb, app, tables, ctx, grant);
  clear(side, catalogPanel(tables, nbApi.insert));
}

/** The catalogue beside the notebook: every table and column, each a button that inserts its name. */
function catalogPanel(tables: CatalogTable[], insert: (text: string) => void): HTMLElement {
  return h(
    'nav',
    { class: 'side-catalog', 'aria-label': t('side_catalog') },
    h('h2', {}, t('side_catalog')),
    h('p', { class: 'hint' }, t('side_catalog_hint')),
    tables.map((tb) =>
      h(
        'details',
        { class: 'side-table', 'data-table': tb.name },
        h('summary', {}, h('code', { translate: 'no' }, tb.name), ' ', h('small', {}, pick(tb.description_ja, tb.description_en))),
        h('button', { type: 'button', class: 'insert-name insert-table', 'data-insert': tb.name, onclick: () => insert(tb.name) }, t('insert_table')),
        h(
          'ul',
          {},
          tb.columns.map((c) =>
            h(
              'li',
              {},
              h(
                'button',
                { type: 'button', class: 'insert-name', 'data-insert': c.name, title: pick(c.description_ja, c.description_en), onclick: () => insert(c.name) },
                h('code', { translate: 'no' }, c.name),
              ),
              ' ',
              h('small', {}, pick(c.description_ja, c.description_en)),
            ),
          ),
        ),
      ),
    ),
  );
}

/** The mode, k and remaining ε of the application, kept current after each DP answer. */
function budgetMeter(grant: AppGrant | undefined): { el: HTMLElement; update: (remaining: number | null | undefined) => void } {
  const el = h('div', { class: 'budget-meter', id: 'budget', role: 'status', 'aria-live': 'polite' });
  const budget = grant?.epsilon_budget ?? null;
  const update = (remaining: number | null | undefined) => {
    const mode = grant ? grantMode(grant) : 'suppression';
    const parts = [`${t('mode')}: ${modeLabel(mode)}`];
    if (mode !== 'dp' && (grant?.threshold ?? grant?.k)) parts.push(t('k_is', { k: grant?.threshold ?? grant?.k ?? 5 }));
    el.replaceChildren(parts.join(' · '));
    if (mode === 'dp' && typeof remaining === 'number') {
      const meter = h('meter', { min: '0', max: String(budget ?? remaining), value: String(remaining), 'aria-label': t('budget_meter') });
      el.append(
        ' · ',
        h('span', { class: 'eps-left', 'data-remaining': String(remaining) }, `${t('eps_left')}: ${fmtNum(remaining, 3)}${budget ? ` / ${fmtNum(budget, 3)}` : ''}`),
        ' ',
        meter,
      );
      if (grant?.renews_on) el.append(' · ', h('span', { class: 'renews', 'data-date': grant.renews_on }, `${t('renews_on')}: ${fmtDay(grant.renews_on)}`));
    }
  };
  update(grant ? grantBudget(grant) : null);
  return { el, update };
}

// ---- completion ranked by the catalogue

const KEYWORDS = [
  'SELECT', 'FROM', 'WHERE', 'GROUP BY', 'ORDER BY', 'HAVING', 'JOIN', 'LEFT JOIN', 'ON', 'AS', 'AND', 'OR', 'NOT', 'IN',
  'BETWEEN', 'LIKE', 'IS NULL', 'IS NOT NULL', 'CASE', 'WHEN', 'THEN', 'ELSE', 'END', 'DISTINCT', 'WITH', 'UNION ALL',
  'COUNT(DISTINCT pid)', 'COUNT', 'SUM', 'AVG', 'MEDIAN', 'STDDEV', 'MIN', 'MAX', 'FILTER (WHERE', 'CAST', 'COALESCE',
];

/** Tables named in the query and their aliases (FROM t a / JOIN t AS a). */
function tablesInQuery(text: string, names: Set<string>): Map<string, string> {
  const out = new Map<string, string>();
  const re = /\b(?:from|join)\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(?:as\s+)?([A-Za-z_][A-Za-z0-9_]*))?/gi;
  for (const m of text.matchAll(re)) {
    const tb = m[1].toLowerCase();
    if (!names.has(tb)) continue;
    out.set(tb, tb);
    const alias = m[2]?.toLowerCase();
    if (alias && !/^(where|group|order|join|left|right|inner|on|as|limit|having|union)$/.test(alias)) out.set(alias, tb);
  }
  return out;
}

export function catalogCompletion(tables: CatalogTable[]) {
  const byName = new Map(tables.map((tb) => [tb.name, tb]));
  const names = new Set(byName.keys());
  return (cx: CompletionContext): CompletionResult | null => {
    const dotted = cx.matchBefore(/[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_]*/);
    const text = cx.state.doc.toString();
    const inQuery = tablesInQuery(text, names);
    if (dotted) {
      const [qual, partial] = dotted.text.split('.');
      const tb = byName.get(inQuery.get(qual.toLowerCase()) ?? qual.toLowerCase());
      if (!tb) return null;
      return {
        from: dotted.from + qual.length + 1,
        options: tb.columns.map((c) => ({ label: c.name, type: 'property', detail: c.type ? undefined : '', info: pick(c.description_ja, c.description_en), boost: 10 })),
        validFor: /^[A-Za-z0-9_]*$/,
        filter: partial !== undefined,
      };
    }
    const word = cx.matchBefore(/[A-Za-z_][A-Za-z0-9_]*/);
    if (!word && !cx.explicit) return null;
    const used = new Set(inQuery.values());
    const options: Completion[] = [];
    const seen = new Set<string>();
    for (const tb of tables) {
      for (const c of tb.columns) {
        const key = `${c.name}`;
        const mine = used.has(tb.name);
        if (seen.has(key) && !mine) continue;
        seen.add(key);
        options.push({ label: c.name, type: 'property', detail: tb.name, info: pick(c.description_ja, c.description_en), boost: mine ? 20 : 0 });
      }
    }
    for (const tb of tables) options.push({ label: tb.name, type: 'class', info: pick(tb.description_ja, tb.description_en), boost: used.size ? 5 : 15 });
    for (const k of KEYWORDS) options.push({ label: k, type: 'keyword', boost: -10 });
    return { from: word ? word.from : cx.pos, options, validFor: /^[A-Za-z0-9_]*$/ };
  };
}

/** Opens completion after a dot; otherwise completion waits for Ctrl+Space. */
const completeAfterDot = EditorView.inputHandler.of((view, _from, _to, text) => {
  if (text === '.') window.setTimeout(() => startCompletion(view), 0);
  return false;
});

// ---- the notebook itself

export interface MountedNotebook {
  /** Insert a name at the cursor of the SQL cell last edited (or the selected one). */
  insert: (text: string) => void;
}

export function mountNotebook(area: HTMLElement, nb: Notebook, app: string, tables: CatalogTable[], ctx?: Ctx, grant?: AppGrant): MountedNotebook {
  const meter = budgetMeter(grant);
  const cells: LiveCell[] = [];
  const cellsEl = h('div', { class: 'cells' });
  const status = h('span', { class: 'save-status', role: 'status', 'aria-live': 'polite' });
  const title = h('input', { id: 'nb-title', value: nb.title || defaultTitle(), 'aria-label': t('notebook_title'), maxlength: '200', translate: 'no' });
  const domains = domainsFor(app);
  let selected = 0;
  let lastSql: LiveCell | null = null;
  let deleted: { data: CellData; at: number } | null = null;
  let pendingD = false;
  const currentExtract = nb.extract_id ?? null;

  let saveTimer: number | undefined;
  let dirty = false;
  const cellsToSave = (): CellData[] => {
    // Empty cells are not kept (Shift+Enter on the last cell adds one), but a notebook keeps one cell.
    let budget = MAX_OUTPUTS_BYTES;
    const all = cells.map((c) => {
      let output = c.data.output ?? null;
      const size = output ? byteSize(output) : 0;
      if (output && size > budget) output = null;
      else budget -= size;
      return { type: c.data.type, source: c.view.state.doc.toString(), output };
    });
    const kept = all.filter((c) => c.source.trim() !== '' || c.output);
    return kept.length ? kept : [{ type: 'sql', source: '', output: null }];
  };
  const save = async () => {
    window.clearTimeout(saveTimer);
    try {
      await api('PUT', `/notebooks/${encodeURIComponent(nb.id)}`, { title: title.value.trim() || defaultTitle(), cells: cellsToSave() });
      dirty = false;
      status.textContent = t('saved');
      status.dataset.saved = String(Date.now());
    } catch (x) {
      if (!(x instanceof ApiError && x.status === 401)) {
        status.textContent = t('save_failed');
        status.append(' ', errorBox(x));
      }
    }
  };
  const scheduleSave = () => {
    dirty = true;
    window.clearTimeout(saveTimer);
    saveTimer = window.setTimeout(() => void save(), 800);
  };
  flushNotebook = async () => {
    flushNotebook = null;
    if (dirty) await save();
  };
  title.addEventListener('input', scheduleSave);

  const redraw = () => {
    cells.forEach((c, i) => {
      c.el.dataset.index = String(i);
      c.el.setAttribute('aria-label', `${c.data.type === 'sql' ? t('sql_cell') : t('md_cell')} ${i + 1}`);
      c.el.classList.toggle('selected', i === selected);
      c.el.tabIndex = i === selected ? 0 : -1;
    });
    cellsEl.replaceChildren(...cells.map((c) => c.el));
  };

  /** Command mode on cell i: the cell element itself has the focus. */
  const select = (i: number, focus = true) => {
    if (cells.length === 0) return;
    selected = Math.max(0, Math.min(i, cells.length - 1));
    redraw();
    if (focus) cells[selected].el.focus();
  };
  /** Edit mode on cell i. */
  const edit = (i: number) => {
    select(i, false);
    const c = cells[selected];
    if (c.data.type === 'markdown') c.el.querySelector<HTMLElement>('.md-rendered')!.hidden = true;
    c.el.querySelector<HTMLElement>('.editor')!.hidden = false;
    c.view.focus();
  };

  const addCell = (data: CellData, at = cells.length, mode: 'edit' | 'command' | 'none' = 'none') => {
    const live = makeCell(data);
    cells.splice(at, 0, live);
    if (mode !== 'none') selected = at;
    redraw();
    if (mode === 'edit') edit(at);
    else if (mode === 'command') select(at);
    return live;
  };

  const removeCell = (i: number) => {
    const [gone] = cells.splice(i, 1);
    deleted = { data: { type: gone.data.type, source: gone.view.state.doc.toString(), output: gone.data.output }, at: i };
    gone.view.destroy();
    if (cells.length === 0) addCell({ type: 'sql', source: '' });
    select(Math.max(0, i - (i >= cells.length ? 1 : 0)));
    scheduleSave();
  };

  const move = (live: LiveCell, by: number) => {
    const i = cells.indexOf(live);
    const j = i + by;
    if (j < 0 || j >= cells.length) return;
    cells.splice(i, 1);
    cells.splice(j, 0, live);
    selected = j;
    redraw();
    scheduleSave();
  };

  /** Run cell i; then `after`: stay, move to the next (adding one at the end), or insert below. */
  const runAt = (i: number, after: 'stay' | 'next' | 'insert') => {
    const live = cells[i];
    if (!live) return;
    const ran = live.run();
    if (after === 'next') {
      const editing = live.view.hasFocus;
      if (i === cells.length - 1) {
        if (live.view.state.doc.toString().trim()) addCell({ type: 'sql', source: '' }, cells.length, 'edit');
        else select(i);
      } else if (editing) edit(i + 1);
      else select(i + 1);
    } else if (after === 'insert') addCell({ type: 'sql', source: '' }, i + 1, 'edit');
    scheduleSave();
    return ran;
  };

  function makeCell(data: CellData): LiveCell {
    const out = h('div', { class: 'cell-output', 'aria-live': 'polite' });
    const counter = h('span', { class: 'exec-count', title: t('exec_count') }, data.type === 'sql' ? '[ ]' : '');
    const timeEl = h('span', { class: 'exec-time' });
    const rendered = h('div', { class: 'md-rendered', hidden: true, translate: 'no' });
    const el = h('section', { class: `cell cell-${data.type}`, role: 'group', tabindex: '-1' });
    const live: LiveCell = { data, el, view: null as unknown as EditorView, run: async () => {}, setType: () => {} };

    // DP applications: ε and contribution bounds per cell, and a dry run of the cost.
    const isDp = grant ? grantMode(grant) === 'dp' : false;
    const epsIn = h('input', { type: 'number', class: 'dp-eps', min: '0', step: '0.05', value: '0.1', 'aria-label': t('dp_epsilon') });
    const lIn = h('input', { type: 'number', class: 'dp-groups', min: '1', max: '1000', step: '1', placeholder: String(grant?.dp_bounds?.max_groups_per_patient ?? 5), 'aria-label': t('dp_max_groups') });
    const mIn = h('input', { type: 'number', class: 'dp-rows', min: '1', max: '1000', step: '1', placeholder: String(grant?.dp_bounds?.max_rows_per_group ?? 3), 'aria-label': t('dp_max_rows') });
    const costOut = h('span', { class: 'dp-cost-out', role: 'status', 'aria-live': 'polite' });
    const queryBody = (text: string): Record<string, unknown> => {
      const body: Record<string, unknown> = { application: app, sql: text };
      if (isDp) {
        body['epsilon'] = Number(epsIn.value);
        if (lIn.value.trim()) body['max_groups_per_patient'] = Number(lIn.value);
        if (mIn.value.trim()) body['max_rows_per_group'] = Number(mIn.value);
      }
      return body;
    };
    const refusal = (x: unknown): HTMLElement[] => {
      if (x instanceof ApiError && x.body.code === 'budget_exhausted') {
        const b = x.body.budget;
        return [
          h('p', { class: 'refused-title budget-exhausted' }, t('budget_exhausted_title')),
          b ? h('p', {}, t('budget_exhausted_detail', { req: fmtNum(b.epsilon_requested, 3), left: fmtNum(b.epsilon_remaining, 3), date: fmtDay(b.renews_on) })) : null,
          errorBox(x),
        ].filter((e): e is HTMLElement => e !== null);
      }
      return [h('p', { class: 'refused-title' }, t('refused')), errorBox(x)];
    };
    const runCost = async () => {
      const text = live.view.state.doc.toString().trim();
      if (!text) return;
      clear(costOut, t('running'));
      try {
        const c = await api<QueryCost>('POST', '/query/cost', queryBody(text));
        clear(
          costOut,
          c.cached
            ? t('dp_cost_cached')
            : t('dp_cost_result', { cost: fmtNum(c.cost, 3), left: fmtNum(c.epsilon_remaining, 3), after: fmtNum(c.epsilon_remaining_after, 3) }),
        );
        meter.update(c.epsilon_remaining);
      } catch (x) {
        if (x instanceof ApiError && x.status === 401) return;
        clear(costOut, ...refusal(x));
      }
    };
    const dpControls =
      data.type === 'sql' && isDp
        ? h(
            'div',
            { class: 'dp-controls' },
            field(t('dp_epsilon'), epsIn),
            field(t('dp_max_groups'), lIn),
            field(t('dp_max_rows'), mIn),
            h('button', { type: 'button', class: 'dp-cost', onclick: () => void runCost() }, t('dp_cost')),
            costOut,
          )
        : null;

    /** Insert a Markdown cell below with the released values (copy within the enclave). */
    const copyBelow = (markdown: string) => {
      const i = cells.indexOf(live);
      const c = addCell({ type: 'markdown', source: markdown }, i + 1, 'none');
      void c.run();
      select(i + 1);
      scheduleSave();
    };

    const showOutput = async (o: CellOutput, fresh: boolean) => {
      if (typeof o.execution_count === 'number') counter.textContent = `[${o.execution_count}]`;
      const head: HTMLElement[] = [];
      if (!fresh) {
        const stale = o.kind === 'result' && currentExtract && o.extract_id && o.extract_id !== currentExtract;
        head.push(
          h(
            'p',
            { class: `saved-output${stale ? ' stale' : ''}`, 'data-stale': stale ? 'true' : 'false' },
            stale ? t('output_stale', { at: fmtDateTime(o.at) }) : t('output_saved', { at: fmtDateTime(o.at) }),
          ),
        );
      }
      if (o.kind === 'result') {
        const doms = await domains;
        clear(out, ...head, renderResult(o.result, app, { domains: doms, sql: o.sql, onCopy: copyBelow }));
      } else {
        clear(out, ...head, ...refusal(new ApiError(o.status, o.error)));
      }
    };

    const runSql = async () => {
      const text = live.view.state.doc.toString().trim();
      if (!text) return;
      counter.textContent = '[*]';
      clear(out, h('p', { class: 'running' }, t('running')));
      const started = performance.now();
      let output: CellOutput;
      try {
        const res = await api<QueryResult>('POST', '/query', queryBody(text));
        output = { kind: 'result', result: res, sql: text, at: new Date().toISOString(), extract_id: currentExtract };
        if (res.disclosure?.mode === 'dp') meter.update(res.disclosure.epsilon_remaining);
      } catch (x) {
        if (x instanceof ApiError && x.status === 401) return;
        const err = x instanceof ApiError ? x : new ApiError(0, { code: 'network', message: String(x) });
        output = { kind: 'error', status: err.status, error: err.body, at: new Date().toISOString() };
        if (err.body.budget) meter.update(err.body.budget.epsilon_remaining);
      }
      execCounter += 1;
      output.execution_count = execCounter;
      counter.textContent = `[${execCounter}]`;
      timeEl.textContent = `${t('exec_time')} ${((performance.now() - started) / 1000).toFixed(2)} s`;
      // Keep the output with the notebook unless it is too large to store.
      live.data.output = byteSize(output) <= MAX_OUTPUT_BYTES ? output : null;
      await showOutput(output, true);
      scheduleSave();
    };
    const renderMd = () => {
      rendered.innerHTML = md.render(live.view.state.doc.toString());
      rendered.hidden = false;
      editorBox.hidden = true;
    };
    live.run = async () => (live.data.type === 'sql' ? runSql() : renderMd());

    const extensions = [
      lineNumbers(),
      history(),
      bracketMatching(),
      syntaxHighlighting(defaultHighlightStyle),
      EditorView.lineWrapping,
      Prec.highest(
        keymap.of([
          { key: 'Shift-Enter', run: () => (void runAt(cells.indexOf(live), 'next'), true) },
          { key: 'Mod-Enter', run: () => (void runAt(cells.indexOf(live), 'stay'), true) },
          { key: 'Alt-Enter', run: () => (void runAt(cells.indexOf(live), 'insert'), true) },
          { key: 'Mod-s', run: () => (void save(), true) },
          {
            key: 'Escape',
            run: (view) => {
              // An open completion list closes first (its own Esc); the next Esc leaves the editor.
              if (completionStatus(view.state) === 'active') return false;
              if (live.data.type === 'markdown' && live.view.state.doc.toString().trim()) renderMd();
              select(cells.indexOf(live));
              return true;
            },
          },
        ]),
      ),
      keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
      EditorView.updateListener.of((u) => {
        if (u.docChanged) scheduleSave();
        if (u.focusChanged && u.view.hasFocus) {
          selected = cells.indexOf(live);
          cells.forEach((c, i) => c.el.classList.toggle('selected', i === selected));
          if (live.data.type === 'sql') lastSql = live;
        }
      }),
      EditorView.contentAttributes.of({ 'aria-label': data.type === 'sql' ? `${t('sql_cell')} — ${t('cell_help')}` : t('md_cell') }),
    ];
    if (data.type === 'sql') {
      extensions.push(
        sql({ dialect: StandardSQL, upperCaseKeywords: true }),
        autocompletion({ override: [catalogCompletion(tables)], activateOnTyping: false, icons: false }),
        completeAfterDot,
      );
    } else {
      extensions.push(placeholder(t('md_placeholder')));
    }
    // CodeMirror injects its styles at run time. On a Document it would add a <style> element,
    // which CSP `default-src 'self'` blocks; inside a shadow root it uses constructed
    // stylesheets (adoptedStyleSheets), which CSP permits. So each editor lives in a shadow root.
    const editorBox = h('div', { class: 'editor', translate: 'no' });
    const shadow = editorBox.attachShadow({ mode: 'open' });
    extensions.push(editorTheme);
    live.view = new EditorView({ state: EditorState.create({ doc: data.source, extensions }), root: shadow, parent: shadow });
    rendered.addEventListener('dblclick', () => edit(cells.indexOf(live)));

    live.setType = (type) => {
      if (type === live.data.type) return;
      const i = cells.indexOf(live);
      const replacement = makeCell({ type, source: live.view.state.doc.toString(), output: null });
      live.view.destroy();
      cells.splice(i, 1, replacement);
      select(i);
      scheduleSave();
    };

    const btn = (label: string, cls: string, fn: () => void) => h('button', { type: 'button', class: `icon ${cls}`, title: label, onclick: fn }, label);
    const toolbar = h(
      'div',
      { class: 'cell-toolbar' },
      counter,
      btn(data.type === 'sql' ? t('run') : t('render'), 'run-cell', () => void live.run()),
      data.type === 'markdown' ? btn(t('edit'), 'edit-cell', () => edit(cells.indexOf(live))) : null,
      btn(t('move_up'), 'move-up', () => {
        move(live, -1);
        (el.querySelector('.move-up') as HTMLElement).focus();
      }),
      btn(t('move_down'), 'move-down', () => {
        move(live, 1);
        (el.querySelector('.move-down') as HTMLElement).focus();
      }),
      btn(t('delete_cell'), 'delete-cell', () => removeCell(cells.indexOf(live))),
      timeEl,
    );
    el.append(toolbar, editorBox, dpControls ?? '', rendered, out);
    el.addEventListener('focusin', () => {
      const i = cells.indexOf(live);
      if (i >= 0 && i !== selected) {
        selected = i;
        cells.forEach((c, j) => {
          c.el.classList.toggle('selected', j === i);
          c.el.tabIndex = j === i ? 0 : -1;
        });
      }
    });
    if (data.type === 'markdown' && data.source.trim()) renderMd();
    if (data.output) void showOutput(data.output, false);
    return live;
  }

  for (const c of nb.cells ?? []) {
    addCell({ type: c.type === 'markdown' ? 'markdown' : 'sql', source: c.source ?? '', output: c.output ?? null });
    if (typeof c.output?.execution_count === 'number') execCounter = Math.max(execCounter, c.output.execution_count);
  }
  if (cells.length === 0) addCell({ type: 'sql', source: '' });

  // Command-mode keys, on the selected cell element (never while typing in an editor or a field).
  cellsEl.addEventListener('keydown', (e: KeyboardEvent) => {
    const target = e.target as HTMLElement;
    if (!target.classList.contains('cell')) return;
    const i = cells.findIndex((c) => c.el === target);
    if (i < 0) return;
    const key = e.key;
    const plain = !e.ctrlKey && !e.metaKey && !e.altKey;
    let handled = true;
    if (key === 'Enter' && e.shiftKey) void runAt(i, 'next');
    else if (key === 'Enter' && (e.ctrlKey || e.metaKey)) void runAt(i, 'stay');
    else if (key === 'Enter' && e.altKey) void runAt(i, 'insert');
    else if (key === 'Enter' && plain) edit(i);
    else if (plain && (key === 'ArrowDown' || key === 'j')) select(i + 1);
    else if (plain && (key === 'ArrowUp' || key === 'k')) select(i - 1);
    else if (plain && key === 'a') addCell({ type: 'sql', source: '' }, i, 'command');
    else if (plain && key === 'b') addCell({ type: 'sql', source: '' }, i + 1, 'command');
    else if (plain && key === 'm') cells[i].setType('markdown');
    else if (plain && key === 'y') cells[i].setType('sql');
    else if (plain && key === 'd') {
      if (pendingD) {
        pendingD = false;
        removeCell(i);
      } else {
        pendingD = true;
        window.setTimeout(() => (pendingD = false), 800);
      }
    } else if (plain && key === 'z' && deleted) {
      addCell(deleted.data, Math.min(deleted.at, cells.length), 'command');
      deleted = null;
      scheduleSave();
    } else if (key === '?' || (e.shiftKey && key === '/')) openShortcuts();
    else if ((e.ctrlKey || e.metaKey) && key === 's') void save();
    else handled = false;
    if (handled) {
      e.preventDefault();
      e.stopPropagation();
    }
  });

  const shortcuts = shortcutSheet();
  const openShortcuts = () => {
    shortcuts.showModal();
    shortcuts.querySelector<HTMLElement>('button')?.focus();
  };

  const toolbar = h(
    'div',
    { class: 'nb-toolbar', role: 'toolbar', 'aria-label': t('nb_toolbar') },
    h('button', { type: 'button', id: 'run-all', class: 'primary', onclick: async () => { for (const c of [...cells]) await c.run(); } }, t('run_all')),
    h('button', { type: 'button', id: 'add-sql', onclick: () => { addCell({ type: 'sql', source: '' }, cells.length, 'edit'); scheduleSave(); } }, t('add_sql')),
    h('button', { type: 'button', id: 'add-md', onclick: () => { addCell({ type: 'markdown', source: '' }, cells.length, 'edit'); scheduleSave(); } }, t('add_md')),
    h('button', { type: 'button', id: 'save', onclick: () => void save() }, t('save')),
    h('button', { type: 'button', id: 'shortcuts', 'aria-haspopup': 'dialog', onclick: openShortcuts }, t('shortcuts')),
    ...exportControl(
      nb,
      grant ? grantMode(grant) : 'suppression',
      save,
      () => cells.filter((c) => c.data.type === 'sql' && c.view.state.doc.toString().trim() !== '').length,
      () => title.value.trim() || defaultTitle(),
    ),
    ctx
      ? h(
          'button',
          {
            type: 'button',
            id: 'delete-notebook',
            class: 'danger',
            onclick: async () => {
              if (!window.confirm(t('confirm_delete_nb'))) return;
              try {
                await api('DELETE', `/notebooks/${encodeURIComponent(nb.id)}`);
                ctx.go(`#/nb/${encodeURIComponent(app)}`);
              } catch (x) {
                area.prepend(errorBox(x));
              }
            },
          },
          t('delete'),
        )
      : null,
    status,
  );
  clear(
    area,
    h('div', { class: 'nb-head' }, title, h('span', { class: 'app-tag', translate: 'no' }, app)),
    importedNote(),
    meter.el,
    toolbar,
    h('p', { class: 'hint' }, t('cell_help')),
    h('p', { class: 'hint enclave-note' }, t('enclave_note')),
    cellsEl,
    shortcuts,
  );
  edit(0);
  return {
    insert: (text: string) => {
      const target = lastSql && cells.includes(lastSql) ? lastSql : (cells.find((c) => c.data.type === 'sql') ?? null);
      if (!target) return;
      const v = target.view;
      const { from, to } = v.state.selection.main;
      v.dispatch({ changes: { from, to, insert: text }, selection: { anchor: from + text.length } });
      edit(cells.indexOf(target));
    },
  };
}

/** The shortcut sheet (`?`): Jupyter's keys as kura implements them. */
export function shortcutSheet(): HTMLDialogElement {
  const rows: [string, string][] = [
    ['Shift+Enter', t('key_run_next')],
    ['Ctrl+Enter', t('key_run_stay')],
    ['Alt+Enter', t('key_run_insert')],
    ['Esc', t('key_command')],
    ['Enter', t('key_edit')],
    ['A / B', t('key_insert')],
    ['D D', t('key_delete')],
    ['Z', t('key_undo_delete')],
    ['M / Y', t('key_type')],
    ['↑ ↓ / K J', t('key_move')],
    ['Ctrl+Space', t('key_complete')],
    ['Ctrl+S', t('key_save')],
    ['?', t('key_help')],
  ];
  const dialog = h(
    'dialog',
    { class: 'shortcuts', id: 'shortcut-sheet', 'aria-labelledby': 'shortcut-title' },
    h('h2', { id: 'shortcut-title' }, t('shortcuts')),
    h('p', {}, t('shortcut_modes')),
    h(
      'table',
      { class: 'grid' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('key')), h('th', { scope: 'col' }, t('what_it_does')))),
      h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, h('kbd', { translate: 'no' }, k)), h('td', {}, v)))),
    ),
    h('form', { method: 'dialog' }, h('button', { type: 'submit', class: 'primary' }, t('close'))),
  ) as HTMLDialogElement;
  return dialog;
}

// The notebook: ordered SQL and Markdown cells, saved on the server per user and application
// (/api/v1/notebooks). SQL cells use CodeMirror 6 with the catalogue's tables and columns for
// completion; Shift+Enter runs a cell and moves on, as in Jupyter. Everything is reachable by keyboard.
import { autocompletion } from '@codemirror/autocomplete';
import { defaultKeymap, history, historyKeymap, indentWithTab } from '@codemirror/commands';
import { sql, StandardSQL } from '@codemirror/lang-sql';
import { bracketMatching, defaultHighlightStyle, syntaxHighlighting } from '@codemirror/language';
import { EditorState, Prec } from '@codemirror/state';
import { EditorView, keymap, lineNumbers, placeholder } from '@codemirror/view';
import MarkdownIt from 'markdown-it';
import { api, ApiError, AppGrant, catalog, CatalogTable, grantBudget, grantId, grantMode, listOf, qs, QueryCost, QueryResult } from '../api';
import { modeLabel } from './apps';
import { clear, field, h } from '../dom';
import { t } from '../i18n';
import { Ctx, errorBox, note } from '../ui';
import { renderResult } from './result';

// html:false escapes any raw HTML in notes, so a Markdown cell cannot inject markup or script.
const md = new MarkdownIt({ html: false, linkify: false, typographer: false });

export interface CellData {
  type: 'sql' | 'markdown';
  source: string;
}

interface Notebook {
  id: string;
  title: string;
  application?: string;
  cells: CellData[];
  updated_at?: string;
}

interface LiveCell {
  data: CellData;
  el: HTMLElement;
  view: EditorView;
  run: () => Promise<void>;
  execCount: number | null;
}

let execCounter = 0;

/** Saves the open notebook now; the router calls it before leaving the screen. */
export let flushNotebook: (() => Promise<void>) | null = null;

const editorTheme = EditorView.theme({
  '&': { border: '1px solid #d8cfc4', borderRadius: '3px', background: '#fff', fontSize: '14px', minHeight: '2.4em' },
  '&.cm-focused': { outline: '3px solid #1a5fd0', outlineOffset: '1px' },
  '.cm-content': { fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace', padding: '6px 0' },
  '.cm-gutters': { background: '#f6f2ec', color: '#8a7f74', border: 'none' },
});

export async function renderNotebook(ctx: Ctx, app: string, nbId?: string) {
  document.title = `${t('nav_notebooks')} ${app} — kura`;
  const tables = await catalog(app).catch(() => [] as CatalogTable[]);
  const list = listOf<Notebook>(await api('GET', `/notebooks${qs({ application: app })}`), 'notebooks');
  if (!nbId && list.length > 0) {
    ctx.go(`#/nb/${encodeURIComponent(app)}/${encodeURIComponent(list[0].id)}`);
    return;
  }
  const sidebar = h(
    'aside',
    { class: 'nb-list', 'aria-label': t('notebooks_of') },
    h('h2', {}, t('notebooks_of')),
    h(
      'ul',
      {},
      list.map((n) =>
        h(
          'li',
          {},
          h(
            'a',
            { href: `#/nb/${encodeURIComponent(app)}/${encodeURIComponent(n.id)}`, 'aria-current': n.id === nbId ? 'page' : null },
            n.title || t('untitled'),
          ),
        ),
      ),
    ),
    h(
      'button',
      {
        type: 'button',
        id: 'new-notebook',
        onclick: async () => {
          const created = await api<Notebook>('POST', '/notebooks', {
            application: app,
            title: `${t('untitled')} ${list.length + 1}`,
            cells: [{ type: 'sql', source: '' }],
          });
          ctx.go(`#/nb/${encodeURIComponent(app)}/${encodeURIComponent(created.id)}`);
        },
      },
      t('new_notebook'),
    ),
    h('p', {}, h('a', { href: `#/catalog/${encodeURIComponent(app)}` }, t('nav_catalog'))),
    h('p', {}, h('a', { href: `#/history/${encodeURIComponent(app)}` }, t('nav_history'))),
  );
  const area = h('section', { class: 'nb-area' });
  clear(ctx.main, h('div', { class: 'nb-layout' }, sidebar, area));
  if (!nbId) {
    clear(area, h('h1', {}, app), h('p', {}, t('none')));
    return;
  }
  const nb = await api<Notebook>('GET', `/notebooks/${encodeURIComponent(nbId)}`);
  const grant = (ctx.me.applications ?? []).find((g) => grantId(g) === app);
  mountNotebook(area, nb, app, tables, ctx, grant);
}

/** The mode, k and remaining ε of the application, kept current after each DP answer. */
function budgetMeter(grant: AppGrant | undefined): { el: HTMLElement; update: (remaining: number | null | undefined) => void } {
  const el = h('div', { class: 'budget-meter', id: 'budget', role: 'status', 'aria-live': 'polite' });
  const budget = grant?.epsilon_budget ?? null;
  const update = (remaining: number | null | undefined) => {
    const mode = grant ? grantMode(grant) : 'suppression';
    const parts = [`${t('mode')}: ${modeLabel(mode)}`];
    if (mode !== 'dp' && (grant?.threshold ?? grant?.k)) parts.push(`k=${grant?.threshold ?? grant?.k}`);
    el.replaceChildren(parts.join(' · '));
    if (mode === 'dp' && typeof remaining === 'number') {
      const meter = h('meter', { min: '0', max: String(budget ?? remaining), value: String(remaining), 'aria-label': t('budget_meter') });
      el.append(' · ', h('span', { class: 'eps-left', 'data-remaining': String(remaining) }, `${t('eps_left')}: ${remaining.toFixed(3)}${budget ? ` / ${budget}` : ''}`), ' ', meter);
      if (grant?.renews_on) el.append(' · ', h('span', { class: 'renews' }, `${t('renews_on')}: ${grant.renews_on}`));
    }
  };
  update(grant ? grantBudget(grant) : null);
  return { el, update };
}

export function mountNotebook(area: HTMLElement, nb: Notebook, app: string, tables: CatalogTable[], ctx?: Ctx, grant?: AppGrant) {
  const meter = budgetMeter(grant);
  const schema: Record<string, string[]> = {};
  for (const tb of tables) schema[tb.name] = tb.columns.map((c) => c.name);
  const cells: LiveCell[] = [];
  const cellsEl = h('div', { class: 'cells' });
  const status = h('span', { class: 'save-status', role: 'status', 'aria-live': 'polite' });
  const title = h('input', { id: 'nb-title', value: nb.title, 'aria-label': t('notebook_title') });

  let saveTimer: number | undefined;
  const save = async () => {
    window.clearTimeout(saveTimer);
    try {
      await api('PUT', `/notebooks/${encodeURIComponent(nb.id)}`, {
        title: title.value || t('untitled'),
        cells: cells.map((c) => ({ type: c.data.type, source: c.view.state.doc.toString() })),
      });
      dirty = false;
      status.textContent = t('saved');
    } catch (x) {
      if (!(x instanceof ApiError && x.status === 401)) status.textContent = `${t('save_failed')}: ${x instanceof ApiError ? x.body.code : String(x)}`;
    }
  };
  let dirty = false;
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
    });
    cellsEl.replaceChildren(...cells.map((c) => c.el));
  };

  const focusCell = (i: number) => {
    const c = cells[Math.min(i, cells.length - 1)];
    if (c) c.view.focus();
  };

  const addCell = (data: CellData, at = cells.length, focus = false) => {
    const live = makeCell(data);
    cells.splice(at, 0, live);
    redraw();
    if (focus) live.view.focus();
    return live;
  };

  function makeCell(data: CellData): LiveCell {
    const out = h('div', { class: 'cell-output', 'aria-live': 'polite' });
    const counter = h('span', { class: 'exec-count', title: 'execution count' }, data.type === 'sql' ? '[ ]' : '');
    const timeEl = h('span', { class: 'exec-time' });
    const rendered = h('div', { class: 'md-rendered', tabindex: '0', hidden: true });
    const el = h('section', { class: `cell cell-${data.type}`, role: 'group' });
    const live: LiveCell = { data, el, view: null as unknown as EditorView, run: async () => {}, execCount: null };

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
          b ? h('p', {}, t('budget_exhausted_detail', { req: b.epsilon_requested, left: b.epsilon_remaining.toFixed(3), date: b.renews_on })) : null,
          errorBox(x),
        ].filter((e): e is HTMLParagraphElement | HTMLElement => e !== null);
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
            : t('dp_cost_result', { cost: c.cost, left: c.epsilon_remaining.toFixed(3), after: c.epsilon_remaining_after.toFixed(3) }),
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

    const runSql = async () => {
      const text = live.view.state.doc.toString().trim();
      if (!text) return;
      counter.textContent = '[*]';
      clear(out, h('p', { class: 'running' }, t('running')));
      const started = performance.now();
      try {
        const res = await api<QueryResult>('POST', '/query', queryBody(text));
        clear(out, renderResult(res, app, text));
        if (res.disclosure?.mode === 'dp') meter.update(res.disclosure.epsilon_remaining);
      } catch (x) {
        if (x instanceof ApiError && x.status === 401) return;
        clear(out, ...refusal(x));
        if (x instanceof ApiError && x.body.budget) meter.update(x.body.budget.epsilon_remaining);
      } finally {
        execCounter += 1;
        live.execCount = execCounter;
        counter.textContent = `[${execCounter}]`;
        timeEl.textContent = `${t('exec_time')} ${((performance.now() - started) / 1000).toFixed(2)} s`;
      }
    };
    const renderMd = () => {
      rendered.innerHTML = md.render(live.view.state.doc.toString());
      rendered.hidden = false;
      editorBox.hidden = true;
    };
    const editMd = () => {
      rendered.hidden = true;
      editorBox.hidden = false;
      live.view.focus();
    };
    live.run = data.type === 'sql' ? runSql : async () => renderMd();

    const runAndAdvance = () => {
      void live.run().then(() => {
        const i = cells.indexOf(live);
        if (i === cells.length - 1) addCell({ type: 'sql', source: '' }, cells.length, true);
        else focusCell(i + 1);
      });
      scheduleSave();
      return true;
    };

    const extensions = [
      lineNumbers(),
      history(),
      bracketMatching(),
      syntaxHighlighting(defaultHighlightStyle),
      EditorView.lineWrapping,
      Prec.highest(keymap.of([{ key: 'Shift-Enter', run: runAndAdvance }])),
      keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
      EditorView.updateListener.of((u) => {
        if (u.docChanged) scheduleSave();
      }),
      EditorView.contentAttributes.of({ 'aria-label': data.type === 'sql' ? `${t('sql_cell')} — ${t('cell_help')}` : t('md_cell') }),
    ];
    if (data.type === 'sql') {
      extensions.push(sql({ dialect: StandardSQL, schema, upperCaseKeywords: true }), autocompletion());
    } else {
      extensions.push(placeholder(t('md_placeholder')));
    }
    // CodeMirror injects its styles at run time. On a Document it would add a <style> element,
    // which CSP `default-src 'self'` blocks; inside a shadow root it uses constructed
    // stylesheets (adoptedStyleSheets), which CSP permits. So each editor lives in a shadow root.
    const editorBox = h('div', { class: 'editor' });
    const shadow = editorBox.attachShadow({ mode: 'open' });
    extensions.push(editorTheme);
    live.view = new EditorView({ state: EditorState.create({ doc: data.source, extensions }), root: shadow, parent: shadow });
    rendered.addEventListener('dblclick', editMd);
    rendered.addEventListener('keydown', (e: KeyboardEvent) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        editMd();
      }
    });

    const btn = (label: string, cls: string, fn: () => void) =>
      h('button', { type: 'button', class: `icon ${cls}`, 'aria-label': label, title: label, onclick: fn }, label);
    const toolbar = h(
      'div',
      { class: 'cell-toolbar' },
      counter,
      btn(data.type === 'sql' ? t('run') : t('render'), 'run-cell', () => void live.run()),
      data.type === 'markdown' ? btn(t('edit'), 'edit-cell', editMd) : null,
      btn(t('move_up'), 'move-up', () => {
        const i = cells.indexOf(live);
        if (i > 0) {
          cells.splice(i, 1);
          cells.splice(i - 1, 0, live);
          redraw();
          scheduleSave();
          (el.querySelector('.move-up') as HTMLElement).focus();
        }
      }),
      btn(t('move_down'), 'move-down', () => {
        const i = cells.indexOf(live);
        if (i < cells.length - 1) {
          cells.splice(i, 1);
          cells.splice(i + 1, 0, live);
          redraw();
          scheduleSave();
          (el.querySelector('.move-down') as HTMLElement).focus();
        }
      }),
      btn(t('delete_cell'), 'delete-cell', () => {
        const i = cells.indexOf(live);
        cells.splice(i, 1);
        live.view.destroy();
        redraw();
        scheduleSave();
        focusCell(Math.max(0, i - 1));
      }),
      timeEl,
    );
    el.append(toolbar, editorBox, dpControls ?? '', rendered, out);
    if (data.type === 'markdown' && data.source.trim()) renderMd();
    return live;
  }

  for (const c of nb.cells ?? []) addCell({ type: c.type === 'markdown' ? 'markdown' : 'sql', source: c.source ?? '' });
  if (cells.length === 0) addCell({ type: 'sql', source: '' });

  const toolbar = h(
    'div',
    { class: 'nb-toolbar', role: 'toolbar', 'aria-label': t('nav_notebooks') },
    h('button', { type: 'button', id: 'run-all', class: 'primary', onclick: async () => { for (const c of [...cells]) await c.run(); } }, t('run_all')),
    h('button', { type: 'button', id: 'add-sql', onclick: () => { addCell({ type: 'sql', source: '' }, cells.length, true); scheduleSave(); } }, t('add_sql')),
    h('button', { type: 'button', id: 'add-md', onclick: () => { addCell({ type: 'markdown', source: '' }, cells.length, true); scheduleSave(); } }, t('add_md')),
    h('button', { type: 'button', id: 'save', onclick: () => void save() }, t('save')),
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
  clear(area, h('div', { class: 'nb-head' }, title, h('span', { class: 'app-tag' }, app)), meter.el, toolbar, h('p', { class: 'hint' }, t('cell_help')), cellsEl);
  if (!nb.cells?.length) area.append(note(t('cell_help')));
  focusCell(0);
}

// Results people read (issue 17 §2), the component every screen uses for a released result:
// code columns with their public labels beside the code; rows in the keys' domain order with
// hidden cells in place (a query's own ORDER BY over key columns means their domain order;
// any other ORDER BY is kept); every hidden cell marked the
// same way in both disclosure modes (`<5` for a small cell, 秘匿 / hidden for differencing and
// the DP release threshold) with its reason on hover; sortable columns; numbers with
// thousands separators; a chart whose axis and legend follow the domain order; a hint when
// most cells are hidden; "copy within the enclave" and the release panel.
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LineController,
  LineElement,
  LinearScale,
  PointElement,
  Tooltip,
} from 'chart.js';
import { api, QueryResult } from '../api';
import { clear, field, h, uid } from '../dom';
import { bi, fmtNum, getLang, hasJapanese, hiddenReason, label, t } from '../i18n';
import { Domains } from '../labels';
import { errorBox, note } from '../ui';

Chart.register(BarController, BarElement, LineController, LineElement, PointElement, CategoryScale, LinearScale, Legend, Tooltip);

const PAGE = 20;

export interface ResultOptions {
  /** Domain order and labels of the application's key columns. */
  domains?: Domains;
  /** The SQL that produced the result: an ORDER BY of its own keeps the server's order. */
  sql?: string;
  /** Copy the released values into the notebook as a Markdown table (never to the clipboard). */
  onCopy?: (markdown: string) => void;
  /** Show the release panel (request a release for publication). Default: true. */
  release?: boolean;
}

type Hidden = 'small_cell' | 'differencing' | 'dp_threshold';

/** A released result prepared for display: rows in display order, hidden cells by reason. */
export class Released {
  /** Original row indices in display order. */
  order: number[];
  readonly hidden = new Map<string, Hidden>();
  readonly keyCols: number[];
  readonly k: number;
  readonly dpThreshold: number | null;

  constructor(
    readonly res: QueryResult,
    readonly domains: Domains | undefined,
    sql: string | undefined,
  ) {
    const d = res.disclosure ?? { mode: 'suppression' };
    this.k = d.threshold ?? 5;
    this.dpThreshold = d.mode === 'dp' && d.dp ? d.dp.release_threshold : null;
    const diff = new Set((d.differencing ?? []).map(([r, c]) => `${r}:${c}`));
    for (const [r, c] of d.suppressed ?? []) {
      const key = `${r}:${c}`;
      this.hidden.set(key, d.mode === 'dp' ? 'dp_threshold' : diff.has(key) ? 'differencing' : 'small_cell');
    }
    this.keyCols = res.columns
      .map((c, i) => ({ c, i }))
      .filter(({ c, i }) => domains?.hasDomain(c.name) || !this.isNumeric(i))
      .map(({ i }) => i);
    this.order = res.rows.map((_, i) => i);
    const own = ownOrder(sql);
    if (own === null) this.sortByDomain(this.keyCols);
    else if (own !== 'own') {
      const named = own.map((n) => res.columns.findIndex((c) => c.name === n)).filter((i) => i >= 0);
      this.sortByDomain([...named, ...this.keyCols.filter((i) => !named.includes(i))]);
    }
  }

  isNumeric(c: number): boolean {
    const col = this.res.columns[c];
    if (/^(U?Int|Float|Decimal)/i.test(col?.type ?? '')) return true;
    return this.res.rows.some((r) => typeof r[c] === 'number') && !this.domains?.hasDomain(col.name);
  }

  isHidden(r: number, c: number): Hidden | undefined {
    return this.hidden.get(`${r}:${c}`);
  }

  /** Compare two rows by one column: domain rank first, then numbers, then natural text order. */
  compare(a: number, b: number, c: number): number {
    const va = this.res.rows[a][c];
    const vb = this.res.rows[b][c];
    const ha = this.isHidden(a, c) || va === null || va === undefined;
    const hb = this.isHidden(b, c) || vb === null || vb === undefined;
    if (ha || hb) return ha === hb ? 0 : ha ? 1 : -1;
    const name = this.res.columns[c].name;
    const ra = this.domains?.rank(name, va);
    const rb = this.domains?.rank(name, vb);
    if (ra !== null && ra !== undefined && rb !== null && rb !== undefined && ra !== rb) return ra - rb;
    if (typeof va === 'number' && typeof vb === 'number') return va - vb;
    return String(va).localeCompare(String(vb), 'ja', { numeric: true });
  }

  /** Domain order of the key columns `keys`, in that order; hidden cells stay in their rows. */
  sortByDomain(keys: number[]) {
    this.order.sort((a, b) => {
      for (const c of keys) {
        const x = this.compare(a, b, c);
        if (x !== 0) return x;
      }
      return a - b;
    });
  }

  sortBy(c: number, dir: 1 | -1) {
    this.order.sort((a, b) => dir * this.compare(a, b, c) || a - b);
  }

  /** The marker of a hidden cell: `<k` for a small cell, 秘匿 / hidden otherwise. */
  marker(kind: Hidden): string {
    return kind === 'small_cell' ? `<${this.k}` : t('hidden_marker');
  }

  reason(kind: Hidden): string {
    return hiddenReason(kind, { k: this.k, t: fmtNum(this.dpThreshold ?? 0, 2) });
  }

  /** The text of a value cell (labels beside codes, numbers with separators, DP intervals). */
  text(r: number, c: number): string {
    const v = this.res.rows[r][c];
    const dp = dpCellText(this.res, r, c, v);
    if (dp) return dp;
    return valueText(this.res.columns[c].name, v, this.domains);
  }

  hiddenCount(): number {
    return this.hidden.size;
  }

  valueCells(): number {
    const valueCols = this.res.columns.length - this.keyCols.length;
    return this.res.rows.length * Math.max(1, valueCols);
  }
}

/**
 * The query's own top-level ORDER BY: `null` when there is none; the column names when it
 * orders by plain key columns ascending (then the keys' domain order is what it means: age
 * bands 0-4, 5-9, … rather than text order); `'own'` when it orders otherwise (DESC, an
 * expression, an aggregate), which is kept as the server returned it.
 */
export function ownOrder(sql: string | undefined): string[] | 'own' | null {
  if (!sql) return null;
  const s = sql.replace(/'(?:[^']|'')*'/g, "''").replace(/--.*$/gm, '');
  let depth = 0;
  let at = -1;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '(') depth++;
    else if (s[i] === ')') depth--;
    else if (depth === 0 && /^order\s+by\b/i.test(s.slice(i, i + 12))) at = i;
  }
  if (at < 0) return null;
  const clause = s.slice(at).replace(/^order\s+by\s+/i, '').replace(/\b(limit|offset)\b[\s\S]*$/i, '').replace(/;\s*$/, '');
  const items = clause.split(',').map((x) => x.trim());
  const cols: string[] = [];
  for (const it of items) {
    const m = /^(?:[A-Za-z_]\w*\.)?([A-Za-z_]\w*)(?:\s+asc)?$/i.exec(it);
    if (!m) return 'own';
    cols.push(m[1]);
  }
  return cols;
}

/** A value for people: `13 東京都`, `M 男性`, `はい`, 1,234, 3.14. */
export function valueText(column: string, v: unknown, domains?: Domains): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'boolean') {
    const named = domains?.label(column, String(v));
    return named ?? label('bool', String(v));
  }
  const named = domains?.label(column, v);
  if (typeof v === 'number') {
    const n = Number.isInteger(v) && /(^|_)(year|fiscal_year|fy|no|code)$/.test(column) ? String(v) : fmtNum(v, 2);
    return named ? `${n} ${named}` : n;
  }
  if (typeof v === 'object') return JSON.stringify(v);
  if (named && named !== String(v)) {
    // A code written in Japanese (an adverse-event term) shows only its English name on an English screen.
    return getLang() === 'en' && hasJapanese(String(v)) ? named : `${v} ${named}`;
  }
  return String(v);
}

function dpCellText(res: QueryResult, r: number, c: number, v: unknown): string | null {
  const dp = res.disclosure?.dp;
  if (!dp || typeof v !== 'number') return null;
  const iv = dp.intervals.find((i) => i.row === r && i.column === c);
  if (iv) return `${fmtNum(v)} [${fmtNum(iv.low)}, ${fmtNum(iv.high)}]`;
  const col = dp.columns.find((k) => k.index === c);
  if (col && typeof col.ci95_half_width === 'number') return `${fmtNum(v)} ± ${fmtNum(col.ci95_half_width)}`;
  return null;
}

/** One note per noised column: aggregate, ε, noise scale, interval and clamp bounds. */
function dpColumnNotes(res: QueryResult): HTMLElement[] {
  const dp = res.disclosure?.dp;
  if (!dp) return [];
  return dp.columns.map((c) => {
    const parts = [`${t('dp_aggregate')} ${c.aggregate}`, `ε=${fmtNum(c.epsilon, 3)}`, `${t('noise_scale')} ${fmtNum(c.noise_scale)}`];
    if (typeof c.ci95_half_width === 'number') parts.push(`${t('ci')} ±${fmtNum(c.ci95_half_width)}`);
    if (c.clamp) parts.push(`${t('dp_clamp')} [${fmtNum(c.clamp[0])}, ${fmtNum(c.clamp[1])}]`);
    return h('span', { class: 'noise', 'data-column': c.name }, h('code', { translate: 'no' }, c.name), `: ${parts.join('、')}`);
  });
}

/** Suggestions of coarser groups for the key columns of a result (age band → 10-year band, …). */
function coarserHint(rel: Released): HTMLElement | null {
  if (rel.hiddenCount() === 0 || rel.hiddenCount() * 2 < rel.valueCells()) return null;
  const names = rel.res.columns.map((c) => c.name);
  const tips: string[] = [];
  if (names.some((n) => /age_band/.test(n))) tips.push(t('coarser_age'));
  if (names.some((n) => /prefecture/.test(n))) tips.push(t('coarser_prefecture'));
  if (names.some((n) => /fiscal_year/.test(n))) tips.push(t('coarser_year'));
  if (names.some((n) => /disease_no/.test(n))) tips.push(t('coarser_disease'));
  if (tips.length === 0) tips.push(t('coarser_fewer_keys'));
  return h('div', { class: 'flash info coarser', role: 'note', id: uid('coarser') }, h('strong', {}, t('coarser_title')), ' ', tips.join(t('list_sep')));
}

/** The released values as a Markdown table (hidden cells as their markers). */
export function markdownTable(rel: Released): string {
  const esc = (s: string) => s.replaceAll('|', '\\|');
  const head = `| ${rel.res.columns.map((c) => esc(c.name)).join(' | ')} |`;
  const sep = `| ${rel.res.columns.map((_, c) => (rel.isNumeric(c) ? '---:' : '---')).join(' | ')} |`;
  const body = rel.order.map((r) => `| ${rel.res.columns.map((_, c) => {
    const hid = rel.isHidden(r, c);
    return esc(hid ? rel.marker(hid) : rel.text(r, c));
  }).join(' | ')} |`);
  return [head, sep, ...body].join('\n');
}

export function renderResult(res: QueryResult, app: string, opts: ResultOptions = {}): HTMLElement {
  const rel = new Released(res, opts.domains, opts.sql);
  const dp = res.disclosure?.mode === 'dp' ? res.disclosure.dp : null;
  const wrap = h('div', { class: 'result', 'data-query': res.query_id });
  const tableBox = h('div', { class: 'table-box' });
  const chartBox = h('div', { class: 'chart-box', hidden: true });
  let page = 0;
  let sorted: { c: number; dir: 1 | -1 } | null = null;
  const pages = Math.max(1, Math.ceil(res.rows.length / PAGE));

  const header = () =>
    h(
      'tr',
      {},
      res.columns.map((c, i) => {
        const dir = sorted?.c === i ? sorted.dir : 0;
        return h(
          'th',
          { scope: 'col', 'aria-sort': dir === 1 ? 'ascending' : dir === -1 ? 'descending' : 'none', class: rel.isNumeric(i) ? 'num' : '' },
          h(
            'button',
            {
              type: 'button',
              class: 'sort',
              title: `${label('type', c.type)} — ${t('sort_by')}`,
              onclick: () => {
                const next: 1 | -1 = sorted?.c === i && sorted.dir === 1 ? -1 : 1;
                sorted = { c: i, dir: next };
                rel.sortBy(i, next);
                page = 0;
                drawTable();
                (tableBox.querySelectorAll('th button.sort')[i] as HTMLElement | undefined)?.focus();
              },
            },
            h('span', { translate: 'no' }, c.name),
            h('span', { class: 'sort-mark', 'aria-hidden': 'true' }, dir === 1 ? ' ▲' : dir === -1 ? ' ▼' : ''),
          ),
        );
      }),
    );

  const cell = (r: number, c: number) => {
    const hid = rel.isHidden(r, c);
    if (hid) {
      const why = rel.reason(hid);
      return h('td', { class: 'suppressed', title: why, 'aria-label': why, 'data-suppressed': 'true', 'data-reason': hid }, rel.marker(hid));
    }
    const v = res.rows[r][c];
    const dpText = dpCellText(res, r, c, v);
    return h(
      'td',
      { class: rel.isNumeric(c) ? 'num' : '', 'data-noised': dpText ? 'true' : null, 'data-value': v === null || v === undefined ? null : String(v) },
      rel.text(r, c),
    );
  };

  const drawTable = () => {
    const start = page * PAGE;
    const body = rel.order.slice(start, start + PAGE).map((r) => h('tr', { 'data-row': String(r) }, res.columns.map((_, c) => cell(r, c))));
    const pager =
      pages > 1
        ? h(
            'div',
            { class: 'pager' },
            h('button', { type: 'button', class: 'prev', disabled: page === 0, onclick: () => { page -= 1; drawTable(); } }, t('prev')),
            h('span', { 'aria-live': 'polite' }, t('page_of', { n: page + 1, m: pages })),
            h('button', { type: 'button', class: 'next', disabled: page >= pages - 1, onclick: () => { page += 1; drawTable(); } }, t('next')),
          )
        : null;
    clear(tableBox, h('table', { class: 'grid result-table' }, h('thead', {}, header()), h('tbody', {}, body)), pager);
  };
  drawTable();

  // disclosure notes
  const d = res.disclosure ?? { mode: 'suppression' };
  const notes: HTMLElement[] = [];
  notes.push(h('span', { class: 'count' }, t('n_rows', { n: fmtNum(res.rows.length, 0) })));
  if (dp?.cached) notes.unshift(h('span', { class: 'badge dp-cached', id: 'dp-cached' }, t('dp_cached')));
  const kinds = new Set(rel.hidden.values());
  if (kinds.size > 0) {
    notes.push(
      h(
        'span',
        { class: 'legend', id: uid('legend') },
        [...kinds].map((kind) => h('span', { class: 'legend-item', 'data-reason': kind }, h('span', { class: 'suppressed-chip' }, rel.marker(kind)), ' ', rel.reason(kind))),
      ),
    );
  }
  if (d.rounding) {
    const base = typeof d.rounding === 'object' ? (d.rounding.base ?? '') : d.rounding;
    notes.push(h('span', {}, t('rounding', { base })));
  }
  if (d.mode === 'dp') {
    notes.push(h('span', {}, t('dp_note')));
    if (typeof d.epsilon_spent === 'number') notes.push(h('span', {}, `${t('eps_spent')}: ${fmtNum(d.epsilon_spent, 3)}`));
    if (typeof d.epsilon_remaining === 'number') notes.push(h('span', { class: 'budget' }, `${t('eps_left')}: ${fmtNum(d.epsilon_remaining, 3)}`));
    notes.push(...dpColumnNotes(res));
    if (dp) {
      notes.push(h('span', { class: 'dp-threshold' }, t('dp_threshold_note', { t: fmtNum(dp.release_threshold, 2) })));
      notes.push(h('span', {}, t('dp_bounds_note', { l: dp.bounds.max_groups_per_patient, m: dp.bounds.max_rows_per_group })));
    }
  }
  for (const n of d.notes ?? []) {
    const text = bi(n);
    if (text) notes.push(h('span', { class: 'server-note' }, text));
  }

  // view switch
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': t('view_switch') });
  const tableBtn = h('button', { type: 'button', 'aria-pressed': 'true', class: 'tab' }, t('table_view'));
  const chartBtn = h('button', { type: 'button', 'aria-pressed': 'false', class: 'tab chart-tab' }, t('chart_view'));
  tableBtn.addEventListener('click', () => {
    tableBox.hidden = false;
    chartBox.hidden = true;
    tableBtn.setAttribute('aria-pressed', 'true');
    chartBtn.setAttribute('aria-pressed', 'false');
  });
  chartBtn.addEventListener('click', () => {
    tableBox.hidden = true;
    chartBox.hidden = false;
    tableBtn.setAttribute('aria-pressed', 'false');
    chartBtn.setAttribute('aria-pressed', 'true');
    if (!chartBox.firstChild) buildChart(rel, chartBox);
  });
  tabs.append(tableBtn, chartBtn);
  if (opts.onCopy) {
    const copy = opts.onCopy;
    tabs.append(
      h('button', { type: 'button', class: 'tab copy-md', title: t('copy_md_hint'), onclick: () => copy(markdownTable(rel)) }, t('copy_md')),
    );
  }

  wrap.append(tabs, coarserHint(rel) ?? '', tableBox, chartBox, h('div', { class: 'notes' }, notes));
  if (opts.release !== false) wrap.append(releasePanel(res, app));
  return wrap;
}

/** How a result leaves the enclave: only as a release request, reviewed before anything goes out. */
function releasePanel(res: QueryResult, app: string): HTMLElement {
  const box = h('div', { class: 'release-body' });
  const just = h('textarea', { rows: 2, maxlength: '2000', class: 'release-justification' });
  const pub = h('input', { maxlength: '500', class: 'release-publication' });
  const send = h('button', { type: 'button', class: 'primary release-send' }, t('request_release'));
  send.addEventListener('click', async () => {
    if (!just.value.trim()) {
      just.focus();
      return;
    }
    try {
      const r = await api<{ id?: string; release_id?: string }>('POST', '/releases', {
        application: app,
        query_id: res.query_id,
        query_ids: [res.query_id],
        justification: just.value,
        publication: pub.value,
      });
      const id = r?.id ?? r?.release_id ?? '';
      clear(box, note(t('release_sent', { id })), h('p', { class: 'hint' }, t('release_next')), h('p', {}, h('a', { href: '#/releases' }, t('release_status_link'))));
    } catch (x) {
      box.append(errorBox(x));
    }
  });
  box.append(
    h('p', { class: 'release-explain' }, t('release_explain')),
    field(t('release_justification'), just),
    field(t('release_publication'), pub),
    send,
  );
  return h('details', { class: 'release' }, h('summary', { class: 'release-btn' }, t('release_how')), box);
}

function buildChart(rel: Released, box: HTMLElement) {
  const res = rel.res;
  const cols = res.columns.map((c) => c.name);
  const numeric = res.columns.map((c, i) => ({ c, i })).filter(({ i }) => rel.isNumeric(i));
  const sel = (options: string[], initial: string, withNone = false) => {
    const s = h('select', {});
    if (withNone) s.append(h('option', { value: '' }, t('no_series')));
    for (const o of options) s.append(h('option', { value: o, selected: o === initial, translate: 'no' }, o));
    return s;
  };
  const yDefault = numeric.length ? numeric[numeric.length - 1].c.name : cols[cols.length - 1];
  const keys = rel.keyCols.map((i) => cols[i]);
  const xDefault = keys[0] ?? cols.find((c) => c !== yDefault) ?? cols[0];
  const seriesDefault = keys.length > 1 ? keys[1] : '';
  const typeSel = h('select', {}, h('option', { value: 'bar' }, t('bar')), h('option', { value: 'line' }, t('line')), h('option', { value: 'stacked' }, t('stacked')));
  const xSel = sel(cols, xDefault);
  const ySel = sel(numeric.map((n) => n.c.name), yDefault);
  const sSel = sel(cols, seriesDefault, true);
  const canvas = h('canvas', { id: uid('chart'), role: 'img', 'aria-label': t('chart_view') });
  const holder = h('div', { class: 'chart-holder' }, canvas);
  let chart: Chart | null = null;
  const draw = () => {
    const xi = cols.indexOf(xSel.value);
    const yi = cols.indexOf(ySel.value);
    const si = sSel.value ? cols.indexOf(sSel.value) : -1;
    // Axis and legend in domain order: walk the rows sorted by (x, series) domain rank.
    const byX = [...rel.order].sort((a, b) => rel.compare(a, b, xi) || a - b);
    const labels: string[] = [];
    for (const r of byX) {
      const x = rel.isHidden(r, xi) ? rel.marker(rel.isHidden(r, xi)!) : rel.text(r, xi);
      if (!labels.includes(x)) labels.push(x);
    }
    const bySeries = si >= 0 ? [...rel.order].sort((a, b) => rel.compare(a, b, si) || a - b) : rel.order;
    const seriesNames: string[] = [];
    for (const r of bySeries) {
      const s = si >= 0 ? rel.text(r, si) : ySel.value;
      if (!seriesNames.includes(s)) seriesNames.push(s);
    }
    const series = new Map<string, Map<string, number | null>>(seriesNames.map((s) => [s, new Map()]));
    for (const r of rel.order) {
      const x = rel.isHidden(r, xi) ? rel.marker(rel.isHidden(r, xi)!) : rel.text(r, xi);
      const s = si >= 0 ? rel.text(r, si) : ySel.value;
      const raw = res.rows[r][yi];
      const v = rel.isHidden(r, yi) || typeof raw !== 'number' ? null : raw;
      const m = series.get(s)!;
      m.set(x, v === null ? (m.get(x) ?? null) : (m.get(x) ?? 0) + v);
    }
    const palette = ['#5b3a1e', '#c0632b', '#3a6ea5', '#6a994e', '#8e5ea2', '#d1a12b', '#4d908e', '#b23a48'];
    const kind = typeSel.value;
    const datasets = seriesNames.map((name, i) => ({
      label: name,
      data: labels.map((l) => series.get(name)!.get(l) ?? null),
      backgroundColor: palette[i % palette.length],
      borderColor: palette[i % palette.length],
      spanGaps: false,
    }));
    chart?.destroy();
    chart = new Chart(canvas, {
      type: kind === 'line' ? 'line' : 'bar',
      data: { labels, datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        locale: getLang() === 'ja' ? 'ja-JP' : 'en-GB',
        scales: {
          x: { stacked: kind === 'stacked', title: { display: true, text: xSel.value }, ticks: { autoSkip: false, maxRotation: 70, minRotation: 0 } },
          y: { stacked: kind === 'stacked', beginAtZero: true, title: { display: true, text: ySel.value } },
        },
        plugins: { legend: { display: datasets.length > 1 || si >= 0 } },
      },
    });
    box.dataset.drawn = 'true';
    box.dataset.labels = JSON.stringify(labels);
    box.dataset.series = JSON.stringify(seriesNames);
  };
  for (const s of [typeSel, xSel, ySel, sSel]) s.addEventListener('change', draw);
  clear(
    box,
    h('div', { class: 'chart-controls' }, field(t('chart_type'), typeSel), field(t('x_axis'), xSel), field(t('y_axis'), ySel), field(t('series'), sSel)),
    holder,
    h('small', {}, t('chart_suppressed_note')),
  );
  draw();
}

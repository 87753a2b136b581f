// Result rendering: a paginated table in which suppressed cells are marked `<k` (never shown as a
// number), the disclosure notes (dropped rows, rounding, DP noise and intervals), a chart and the
// "request release" button. Suppressed cells are left out of charts rather than drawn as zero.
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
import { QueryResult } from '../api';
import { clear, field, h, uid } from '../dom';
import { t } from '../i18n';
import { releaseRequestForm } from './releases';

Chart.register(BarController, BarElement, LineController, LineElement, PointElement, CategoryScale, LinearScale, Legend, Tooltip);

const PAGE = 20;

function isSuppressed(res: QueryResult, r: number, c: number): boolean {
  return (res.disclosure?.suppressed ?? []).some(([rr, cc]) => rr === r && cc === c);
}

function cellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(3);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function num(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) >= 100 ? 1 : 2);
}

/** The text of a noised cell with its 95% interval: `412 ± 15`, or `3.2 [2.9, 3.5]` for AVG. */
function dpCellText(res: QueryResult, r: number, c: number, v: unknown): string | null {
  const dp = res.disclosure?.dp;
  if (!dp || typeof v !== 'number') return null;
  const iv = dp.intervals.find((i) => i.row === r && i.column === c);
  if (iv) return `${num(v)} [${num(iv.low)}, ${num(iv.high)}]`;
  const col = dp.columns.find((k) => k.index === c);
  if (col && typeof col.ci95_half_width === 'number') return `${num(v)} ± ${num(col.ci95_half_width)}`;
  return null;
}

/** One note per noised column: aggregate, ε, noise scale, interval and clamp bounds. */
function dpColumnNotes(res: QueryResult): HTMLElement[] {
  const dp = res.disclosure?.dp;
  if (!dp) return [];
  return dp.columns.map((c) => {
    const parts = [`${c.aggregate}`, `ε=${c.epsilon}`, `${t('noise_scale')} ${num(c.noise_scale)}`];
    if (typeof c.ci95_half_width === 'number') parts.push(`${t('ci')} ±${num(c.ci95_half_width)}`);
    if (c.clamp) parts.push(`${t('dp_clamp')} [${c.clamp[0]}, ${c.clamp[1]}]`);
    return h('span', { class: 'noise', 'data-column': c.name }, `${c.name}: ${parts.join(', ')}`);
  });
}

export function renderResult(res: QueryResult, app: string, sql?: string): HTMLElement {
  const k = res.disclosure?.threshold ?? 5;
  const dp = res.disclosure?.mode === 'dp' ? res.disclosure.dp : null;
  const wrap = h('div', { class: 'result', 'data-query': res.query_id, 'data-application': app, 'data-sql': sql ?? null });
  const tableBox = h('div', { class: 'table-box' });
  const chartBox = h('div', { class: 'chart-box', hidden: true });
  let page = 0;
  const pages = Math.max(1, Math.ceil(res.rows.length / PAGE));

  const drawTable = () => {
    const start = page * PAGE;
    const body = res.rows.slice(start, start + PAGE).map((row, i) =>
      h(
        'tr',
        {},
        row.map((v, c) =>
          isSuppressed(res, start + i, c)
            ? dp
              ? h('td', { class: 'suppressed', title: t('dp_below_threshold'), 'data-suppressed': 'true' }, '—')
              : h('td', { class: 'suppressed', title: t('legend_suppressed', { k }), 'data-suppressed': 'true' }, `<${k}`)
            : h(
                'td',
                { class: typeof v === 'number' ? 'num' : '', 'data-noised': dpCellText(res, start + i, c, v) ? 'true' : null },
                dpCellText(res, start + i, c, v) ?? cellText(v),
              ),
        ),
      ),
    );
    const pager =
      pages > 1
        ? h(
            'div',
            { class: 'pager' },
            h('button', { type: 'button', disabled: page === 0, onclick: () => { page -= 1; drawTable(); } }, t('prev')),
            h('span', { 'aria-live': 'polite' }, `${t('page')} ${page + 1} / ${pages}`),
            h('button', { type: 'button', disabled: page >= pages - 1, onclick: () => { page += 1; drawTable(); } }, t('next')),
          )
        : null;
    clear(
      tableBox,
      h(
        'table',
        { class: 'grid result-table' },
        h('thead', {}, h('tr', {}, res.columns.map((c) => h('th', { scope: 'col', title: c.type }, c.name)))),
        h('tbody', {}, body),
      ),
      pager,
    );
  };
  drawTable();

  // disclosure notes
  const d = res.disclosure ?? { mode: 'suppression' };
  const notes: HTMLElement[] = [];
  notes.push(h('span', { class: 'count' }, `${res.rows.length} ${t('rows')}`));
  if (dp?.cached) notes.unshift(h('span', { class: 'badge dp-cached', id: 'dp-cached' }, t('dp_cached')));
  if (dp && (d.suppressed_cells ?? d.suppressed?.length ?? 0) > 0) {
    notes.push(h('span', { class: 'legend' }, t('dp_below_threshold_note', { t: num(dp.release_threshold) })));
  } else if ((d.suppressed_cells ?? d.suppressed?.length ?? 0) > 0) {
    notes.push(
      h('span', { class: 'legend', id: 'legend' }, h('span', { class: 'suppressed-chip' }, `<${k}`), ' ', t('legend_suppressed', { k })),
    );
  }
  if (d.dropped_rows) notes.push(h('span', {}, t('dropped_rows', { n: d.dropped_rows })));
  if (d.rounding) {
    const base = typeof d.rounding === 'object' ? (d.rounding.base ?? '') : d.rounding;
    notes.push(h('span', {}, t('rounding', { base })));
  }
  if (d.mode === 'dp') {
    notes.push(h('span', {}, t('dp_note')));
    if (d.epsilon_spent !== null && d.epsilon_spent !== undefined) notes.push(h('span', {}, `${t('eps_spent')}: ${d.epsilon_spent}`));
    if (d.epsilon_remaining !== null && d.epsilon_remaining !== undefined)
      notes.push(h('span', { class: 'budget' }, `${t('eps_left')}: ${d.epsilon_remaining}`));
    notes.push(...dpColumnNotes(res));
    if (dp) {
      notes.push(
        h('span', {}, t('dp_bounds_note', { l: dp.bounds.max_groups_per_patient, m: dp.bounds.max_rows_per_group })),
      );
    }
  }
  for (const n of d.notes ?? []) notes.push(h('span', { class: 'server-note' }, n));

  // view switch + chart controls
  const tabs = h('div', { class: 'tabs', role: 'group' });
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
    if (!chartBox.firstChild) buildChart(res, chartBox);
  });
  tabs.append(tableBtn, chartBtn);

  // The output airlock: ask for this result (and others of the notebook) to be released.
  const releaseBox = h('div', { class: 'release' });
  const releaseBtn = h(
    'button',
    {
      type: 'button',
      class: 'release-btn',
      onclick: () => {
        const form = releaseRequestForm(res.query_id);
        clear(releaseBox, form);
        form.querySelector<HTMLTextAreaElement>('textarea')?.focus();
      },
    },
    t('request_release'),
  );
  // PMS teams have no release requests (their standing scope is not a study).
  if (!app.startsWith('PMS-')) releaseBox.append(releaseBtn);

  wrap.append(tabs, tableBox, chartBox, h('div', { class: 'notes' }, notes), releaseBox);
  return wrap;
}

function buildChart(res: QueryResult, box: HTMLElement) {
  const cols = res.columns.map((c) => c.name);
  const numeric = res.columns
    .map((c, i) => ({ c, i }))
    .filter(({ c, i }) => /Int|Float|Decimal|UInt/i.test(c.type) || res.rows.some((r) => typeof r[i] === 'number'));
  const sel = (options: string[], initial: string, withNone = false) => {
    const s = h('select', {});
    if (withNone) s.append(h('option', { value: '' }, t('no_series')));
    for (const o of options) s.append(h('option', { value: o, selected: o === initial }, o));
    return s;
  };
  const yDefault = numeric.length ? numeric[numeric.length - 1].c.name : cols[cols.length - 1];
  const xDefault = cols.find((c) => c !== yDefault) ?? cols[0];
  const seriesDefault = cols.length >= 3 ? (cols.find((c) => c !== xDefault && c !== yDefault) ?? '') : '';
  const typeSel = h('select', {}, h('option', { value: 'bar' }, t('bar')), h('option', { value: 'line' }, t('line')), h('option', { value: 'stacked' }, t('stacked')));
  const xSel = sel(cols, xDefault);
  const ySel = sel(numeric.map((n) => n.c.name), yDefault);
  const sSel = sel(cols, seriesDefault, true);
  const canvasId = uid('chart');
  const canvas = h('canvas', { id: canvasId, role: 'img', 'aria-label': t('chart_view') });
  const holder = h('div', { class: 'chart-holder' }, canvas);
  let chart: Chart | null = null;
  const draw = () => {
    const xi = cols.indexOf(xSel.value);
    const yi = cols.indexOf(ySel.value);
    const si = sSel.value ? cols.indexOf(sSel.value) : -1;
    const labels: string[] = [];
    const series = new Map<string, Map<string, number | null>>();
    res.rows.forEach((row, r) => {
      const x = cellText(row[xi]);
      if (!labels.includes(x)) labels.push(x);
      const s = si >= 0 ? cellText(row[si]) : ySel.value;
      if (!series.has(s)) series.set(s, new Map());
      const v = isSuppressed(res, r, yi) || typeof row[yi] !== 'number' ? null : (row[yi] as number);
      const m = series.get(s)!;
      m.set(x, v === null ? (m.get(x) ?? null) : (m.get(x) ?? 0) + v);
    });
    const palette = ['#5b3a1e', '#c0632b', '#3a6ea5', '#6a994e', '#8e5ea2', '#d1a12b', '#4d908e', '#b23a48'];
    const kind = typeSel.value;
    const datasets = [...series.entries()].map(([name, m], i) => ({
      label: name,
      data: labels.map((l) => m.get(l) ?? null),
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
        scales: {
          x: { stacked: kind === 'stacked', title: { display: true, text: xSel.value } },
          y: { stacked: kind === 'stacked', beginAtZero: true, title: { display: true, text: ySel.value } },
        },
      },
    });
    box.dataset.drawn = 'true';
  };
  for (const s of [typeSel, xSel, ySel, sSel]) s.addEventListener('change', draw);
  clear(
    box,
    h(
      'div',
      { class: 'chart-controls' },
      field(t('chart_type'), typeSel),
      field(t('x_axis'), xSel),
      field(t('y_axis'), ySel),
      field(t('series'), sSel),
    ),
    holder,
    h('small', {}, t('chart_suppressed_note')),
  );
  draw();
}

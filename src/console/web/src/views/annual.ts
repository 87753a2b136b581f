// Annual reports (issue 13 §3): the data custodian (and reviewers) pick a fiscal year, see the
// report's tables with a chart each, and download CSV / PDF / HTML; the register lists what was
// generated. The same renderer shows a PMS team its own products' report (views/pms.ts).
// Suppressed cells arrive as null and are shown as 秘匿 / x, never as numbers.
import { api } from '../api';
import { clear, field, fmtDate, h } from '../dom';
import { getLang, Key, t } from '../i18n';
import { Ctx, errorBox } from '../ui';

interface Label {
  key: string;
  ja: string;
  en: string;
  total: boolean;
}

interface Row extends Label {
  manufacturer?: string | null;
  cells: (number | null)[];
}

interface View {
  id: string;
  item: string;
  unit: 'patients' | 'events';
  title_ja: string;
  title_en: string;
  row_label_ja: string;
  row_label_en: string;
  columns: Label[];
  rows: Row[];
}

interface Section {
  id: string;
  title_ja: string;
  title_en: string;
  basis_ja: string;
  basis_en: string;
  k: number;
  views: View[];
}

export interface AnnualReport {
  id: string;
  fiscal_year: number;
  data_version: string;
  audience: string;
  cells: number;
  suppressed: number;
  sections: Section[];
}

interface RegisterRow {
  id: string;
  fiscal_year: number;
  generated_at: string;
  generated_by: string;
  audience: string;
  cells: number;
  suppressed: number;
}

const SVG = 'http://www.w3.org/2000/svg';
const PALETTE = ['#1f4e8c', '#568fc9', '#2e7d52', '#80ba78', '#8c561f', '#d6a05a', '#606060', '#aaaaaa'];

function pick(ja: string, en: string): string {
  return getLang() === 'ja' ? ja : en;
}

/** The last fiscal year that has ended (April–March, Japan time). */
export function lastFy(): number {
  const jst = new Date(Date.now() + 9 * 3600 * 1000);
  const current = jst.getUTCMonth() >= 3 ? jst.getUTCFullYear() : jst.getUTCFullYear() - 1;
  return current - 1;
}

function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function cellText(v: number | null): string {
  return v === null ? t('annual_suppressed') : String(v);
}

function table(v: View): HTMLElement {
  return h(
    'div',
    { class: 'wide' },
    h(
      'table',
      { class: 'grid annual-table', 'data-view': v.id },
      h(
        'thead',
        {},
        h('tr', {}, h('th', { scope: 'col' }, pick(v.row_label_ja, v.row_label_en)), v.columns.map((c) => h('th', { scope: 'col', class: c.total ? 'total' : null }, pick(c.ja, c.en)))),
      ),
      h(
        'tbody',
        {},
        v.rows.map((r) =>
          h(
            'tr',
            { class: r.total ? 'total' : null, 'data-row': r.total ? 'total' : r.key },
            h('th', { scope: 'row' }, pick(r.ja, r.en)),
            r.cells.map((c) => h('td', { class: c === null ? 'num suppressed' : 'num', 'data-suppressed': c === null ? 'true' : null }, cellText(c))),
          ),
        ),
      ),
    ),
  );
}

/** A horizontal stacked bar chart of the view's cells (totals left out), as inline SVG. */
function chart(v: View): SVGElement {
  const cols = v.columns.map((c, j) => [c, j] as const).filter(([c]) => !c.total);
  const rows = v.rows.filter((r) => !r.total);
  const labelW = 190;
  const barW = 380;
  const rowH = 18;
  const top = 8;
  const legendRows = cols.length > 1 ? Math.ceil(cols.length / 4) : 0;
  const height = top + rowH * rows.length + legendRows * 16 + 6;
  const width = labelW + barW + 120;
  const max = Math.max(1, ...rows.map((r) => cols.reduce((s, [, j]) => s + (r.cells[j] ?? 0), 0)));
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'font-size': 11, class: 'annual-chart', 'data-view': v.id });
  root.append(svg('title', {}, pick(v.title_ja, v.title_en)));
  rows.forEach((r, i) => {
    const y = top + rowH * i;
    root.append(svg('text', { x: labelW - 6, y: y + 12, 'text-anchor': 'end' }, pick(r.ja, r.en)));
    let x = labelW;
    let known = 0;
    let hidden = false;
    cols.forEach(([, j], s) => {
      const c = r.cells[j];
      if (c === null) {
        hidden = true;
        return;
      }
      const w = (barW * c) / max;
      root.append(svg('rect', { x, y: y + 2, width: w, height: rowH - 5, fill: PALETTE[s % PALETTE.length] }));
      x += w;
      known += c;
    });
    const text = hidden ? (known ? `${known}+ (${t('annual_suppressed')})` : t('annual_suppressed')) : String(known);
    root.append(svg('text', { x: x + 4, y: y + 12 }, text));
  });
  if (cols.length > 1) {
    const y0 = top + rowH * rows.length + 4;
    cols.forEach(([c], s) => {
      const x = 150 * (s % 4);
      const y = y0 + 16 * Math.floor(s / 4);
      root.append(svg('rect', { x, y, width: 10, height: 10, fill: PALETTE[s % PALETTE.length] }));
      root.append(svg('text', { x: x + 14, y: y + 9 }, pick(c.ja, c.en)));
    });
  }
  return root;
}

function itemName(item: string): string {
  const key = (item === '10' ? 'annual_item_10' : item === '12' ? 'annual_item_12' : 'annual_item_other') as Key;
  return item === '10' || item === '12' ? t(key) : `${t(key)} ${item}`;
}

/** The report's sections, each view as a table and a chart. */
export function renderAnnualReport(r: AnnualReport): HTMLElement {
  return h(
    'div',
    { class: 'annual-report', id: 'annual-report', 'data-report': r.id },
    h(
      'p',
      { class: 'meta' },
      `${t('annual_report_id')}: ${r.id} · ${t('annual_data_version')}: ${r.data_version.slice(0, 16)} · ${t('annual_cells')}: ${r.cells} · ${t('annual_suppressed_note')}: ${r.suppressed}`,
    ),
    r.sections.map((s, n) =>
      h(
        'section',
        { class: 'card annual-section', 'data-section': s.id },
        h('h2', {}, `${n + 1} ${pick(s.title_ja, s.title_en)}`),
        h('p', { class: 'hint' }, `${pick(s.basis_ja, s.basis_en)} (${t('annual_k')} = ${s.k})`),
        s.views.map((v, i) =>
          h(
            'div',
            { class: 'annual-view' },
            h('h3', {}, `${t('annual_table')} ${n + 1}-${i + 1} ${pick(v.title_ja, v.title_en)} (${t(v.unit === 'events' ? 'annual_unit_events' : 'annual_unit_patients')}, ${itemName(v.item)})`),
            table(v),
            chart(v),
          ),
        ),
      ),
    ),
  );
}

/** Download links of a report query (`query` without `format`). */
export function downloads(query: string, id: string): HTMLElement {
  const link = (format: string, label: string) =>
    h('a', { href: `/api/v1/reports/annual?${query}&format=${format}`, id: `${id}-${format}`, class: 'button', target: format === 'csv' ? null : '_blank', rel: 'noopener' }, label);
  return h('p', { class: 'downloads' }, `${t('annual_download')}: `, link('csv', 'CSV'), ' ', link('pdf', 'PDF'), ' ', link('html', 'HTML'));
}

async function register(): Promise<HTMLElement> {
  const list = await api<RegisterRow[]>('GET', '/reports/annual/register');
  return h(
    'section',
    { class: 'card', id: 'annual-register' },
    h('h2', {}, t('annual_register')),
    list.length
      ? h(
          'table',
          { class: 'grid' },
          h('thead', {}, h('tr', {}, [t('annual_report_id'), t('annual_fy'), t('annual_generated_at'), t('annual_generated_by'), t('annual_audience'), t('annual_suppressed_note')].map((x) => h('th', { scope: 'col' }, x)))),
          h('tbody', {}, list.slice(0, 20).map((x) => h('tr', {}, [x.id, String(x.fiscal_year), fmtDate(x.generated_at), x.generated_by, x.audience, `${x.suppressed} / ${x.cells}`].map((c) => h('td', {}, c))))),
        )
      : h('p', {}, t('none')),
  );
}

export async function renderAnnual(ctx: Ctx) {
  document.title = `${t('nav_annual')} — kura`;
  const fy = h('input', { id: 'annual-fy', type: 'number', min: '2000', max: '2100', value: String(lastFy()) });
  const box = h('div', { id: 'annual-box' });
  const registerBox = h('div', {});
  const show = async () => {
    clear(box, h('p', {}, t('loading')));
    try {
      const q = `fy=${encodeURIComponent(fy.value)}`;
      const r = await api<AnnualReport>('GET', `/reports/annual?${q}&format=json`);
      clear(box, downloads(q, 'annual'), renderAnnualReport(r));
      clear(registerBox, await register());
    } catch (x) {
      clear(box, errorBox(x));
    }
  };
  clear(
    ctx.main,
    h('h1', {}, t('annual_title')),
    h('p', { id: 'annual-intro' }, t('annual_intro')),
    h('section', { class: 'card' }, field(t('annual_fy'), fy), h('button', { type: 'button', class: 'primary', id: 'annual-show', onclick: () => void show() }, t('annual_show'))),
    box,
    registerBox,
  );
  try {
    clear(registerBox, await register());
  } catch (x) {
    clear(registerBox, errorBox(x));
  }
}

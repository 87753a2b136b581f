// A medical institution's screen (issue 16 §2, seed 001 item 8): its standing scope (only the
// rows written at the facility), notebooks and catalogue on it, and the feedback report that
// puts the facility's own figures beside the national ones (GET /api/v1/facility/report).
import { api, grantId } from '../api';
import { clear, h } from '../dom';
import { pick, t } from '../i18n';
import { Ctx, errorBox } from '../ui';

interface Row {
  key: string;
  label_ja: string;
  label_en: string;
  own: number;
  national: number | null;
  national_suppressed: boolean;
}

interface Section {
  measure: string;
  title_ja: string;
  title_en: string;
  k: number;
  facility_k: number;
  rows: Row[];
}

interface Report {
  facility: string;
  generated_at: string;
  sections: Section[];
  notes: string[];
}

/** A code (disease number, product) is shown with its name; a term or kind by its name. */
function rowLabel(r: Row): string {
  const label = pick(r.label_ja, r.label_en);
  if (!label || label === r.key) return r.key;
  return /^[0-9A-Z]/.test(r.key) ? `${r.key} ${label}` : label;
}

function section(s: Section): HTMLElement {
  return h(
    'section',
    { class: 'card feedback', id: `feedback-${s.measure}` },
    h('h3', {}, pick(s.title_ja, s.title_en)),
    h(
      'table',
      { class: 'grid' },
      h('thead', {}, h('tr', {}, [t('facility_key'), t('facility_own'), t('facility_national')].map((x) => h('th', { scope: 'col' }, x)))),
      h(
        'tbody',
        {},
        s.rows.map((r) =>
          h(
            'tr',
            { 'data-key': r.key },
            h('th', { scope: 'row' }, rowLabel(r)),
            h('td', { class: 'num own' }, String(r.own)),
            r.national_suppressed
              ? h('td', { class: 'num suppressed', title: t('legend_suppressed', { k: s.k }) }, '—')
              : h('td', { class: 'num national' }, String(r.national)),
          ),
        ),
      ),
    ),
  );
}

export async function renderFacility(ctx: Ctx) {
  document.title = `${t('facility_title')} — kura`;
  const me = await ctx.refreshMe();
  const grant = (me.applications ?? []).find((g) => grantId(g).startsWith('FAC-'));
  if (!grant) {
    clear(ctx.main, h('h1', {}, t('facility_title')), h('p', { id: 'facility-none' }, t('facility_no_scope')));
    return;
  }
  const scope = grantId(grant);
  const code = scope.slice('FAC-'.length);
  const out = h('div', { id: 'facility-report' }, t('loading'));
  clear(
    ctx.main,
    h('h1', {}, `${t('facility_title')} — ${code}`),
    h('p', { id: 'facility-intro' }, t('facility_intro', { code, k: grant.threshold ?? grant.k ?? 5 })),
    h(
      'p',
      {},
      h('a', { class: 'button primary', href: `#/nb/${encodeURIComponent(scope)}`, id: 'facility-notebook' }, t('nav_notebooks')),
      ' ',
      h('a', { class: 'button', href: `#/catalog/${encodeURIComponent(scope)}` }, t('nav_catalog')),
      ' ',
      h('a', { class: 'button', href: '/api/v1/facility/report?format=html', target: '_blank', rel: 'noopener', id: 'facility-html' }, t('facility_html')),
    ),
    h('h2', {}, t('facility_report')),
    out,
  );
  try {
    const r = await api<Report>('GET', '/facility/report');
    clear(out, r.sections.map(section), r.notes.map((n) => h('p', { class: 'note' }, h('small', {}, n))));
  } catch (x) {
    clear(out, errorBox(x));
  }
}

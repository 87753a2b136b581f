// Usage reports (使用状況報告書, issue 13 §2): the applicant views the report of an application
// and fiscal year (counted from the signed audit log), downloads it as CSV or the bilingual
// HTML form, files it, and records publications; reviewers and auditors see filed reports and
// the reports that are due but missing.
import { api, listOf } from '../api';
import { clear, field, fmtDate, h } from '../dom';
import { fmtFy, hasLabel, label, t } from '../i18n';
import { Ctx, errorBox, note } from '../ui';

interface Report {
  application: string;
  fiscal_year: number;
  users: string[];
  sessions: number;
  queries_ok: number;
  queries_denied: number;
  queries_error: number;
  suppressed_cells: number;
  epsilon_spent: number;
  releases_requested: number;
  releases_approved: number;
  recommendations: unknown[];
  extract_built: number;
  extract_destroyed: number;
  refused_by_code: Record<string, number>;
  suppressed_by_reason: Record<string, number>;
}

interface AppRow {
  id: string;
  applicant: string;
  form?: { title?: string };
}

function currentFy(): number {
  const jst = new Date(Date.now() + 9 * 3600 * 1000);
  return jst.getUTCMonth() >= 3 ? jst.getUTCFullYear() : jst.getUTCFullYear() - 1;
}

function figures(r: Report): HTMLElement {
  const rows: [string, string][] = [
    [t('usage_users'), r.users.join(', ') || '—'],
    [t('usage_sessions'), String(r.sessions)],
    [t('usage_answered'), String(r.queries_ok)],
    [t('usage_refused'), `${r.queries_denied} ${Object.entries(r.refused_by_code).map(([c, n]) => `${hasLabel('error', c) ? label('error', c) : t('error_generic')}: ${n}`).join('、')}`],
    [t('usage_failed'), String(r.queries_error)],
    [t('usage_suppressed'), `${r.suppressed_cells} ${Object.entries(r.suppressed_by_reason).map(([c, n]) => `${c === 'differencing' ? t('usage_reason_differencing') : t('usage_reason_primary')}: ${n}`).join('、')}`],
    [t('usage_epsilon'), String(r.epsilon_spent)],
    [t('usage_releases'), `${r.releases_requested} / ${r.releases_approved}`],
    [t('usage_recs'), String(r.recommendations.length)],
    [t('usage_extract'), `${r.extract_built} / ${r.extract_destroyed}`],
  ];
  return h(
    'table',
    { class: 'grid', id: 'usage-figures' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('usage_figure')), h('th', { scope: 'col' }, t('usage_value')))),
    h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)))),
  );
}

async function publications(app: string, mine: boolean): Promise<HTMLElement> {
  const box = h('section', { class: 'card', id: 'publications' });
  const list = await api<{ citation: string; published_on: string; releases: string[] }[]>('GET', `/applications/${encodeURIComponent(app)}/publications`);
  const items = h('ul', { id: 'pub-list' }, list.map((p) => h('li', {}, `${p.published_on} — ${p.citation}${p.releases.length ? ` [${p.releases.join(', ')}]` : ''}`)));
  const citation = h('input', { id: 'pub-citation', maxlength: '1000' });
  const date = h('input', { id: 'pub-date', type: 'date' });
  const releases = h('input', { id: 'pub-releases' });
  const msg = h('div', {});
  const form = h(
    'form',
    {
      id: 'pub-form',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        try {
          const ids = releases.value.split(',').map((s) => s.trim()).filter(Boolean);
          await api('POST', `/applications/${encodeURIComponent(app)}/publications`, { citation: citation.value, date: date.value, releases: ids });
          const fresh = await publications(app, mine);
          box.replaceWith(fresh);
          fresh.prepend(note(t('pub_added')));
        } catch (x) {
          clear(msg, errorBox(x));
        }
      },
    },
    field(t('pub_citation'), citation),
    field(t('pub_date'), date),
    field(t('pub_releases'), releases),
    msg,
    h('button', { type: 'submit', id: 'pub-submit' }, t('pub_add')),
  );
  clear(box, h('h2', {}, t('pub_title')), items.children.length ? items : h('p', {}, t('none')), mine ? form : null);
  return box;
}

async function showReport(box: HTMLElement, app: AppRow, fy: number, mine: boolean) {
  const base = `/api/v1/applications/${encodeURIComponent(app.id)}/usage-report?fy=${fy}`;
  const r = await api<Report>('GET', `/applications/${encodeURIComponent(app.id)}/usage-report?fy=${fy}&format=json`);
  const msg = h('div', { id: 'usage-msg' });
  const file = h(
    'button',
    {
      type: 'button',
      id: 'usage-file',
      class: 'primary',
      onclick: async () => {
        try {
          await api('POST', `/applications/${encodeURIComponent(app.id)}/usage-report/file`, { fy });
          clear(msg, note(t('usage_filed')));
        } catch (x) {
          clear(msg, errorBox(x));
        }
      },
    },
    t('usage_file'),
  );
  clear(
    box,
    h('h2', {}, `${t('usage_title')} `, h('span', { translate: 'no' }, r.application), ` ${fmtFy(r.fiscal_year)}`),
    figures(r),
    h('p', {}, `${t('usage_download')}: `, h('a', { href: `${base}&format=csv`, id: 'usage-csv' }, 'CSV'), ' ', h('a', { href: `${base}&format=html`, id: 'usage-html', target: '_blank', rel: 'noopener' }, 'HTML'), ' ', h('a', { href: `${base}&format=pdf`, id: 'usage-pdf', target: '_blank', rel: 'noopener' }, t('usage_pdf'))),
    mine ? file : null,
    msg,
    await publications(app.id, mine),
  );
}

async function overview(): Promise<HTMLElement> {
  const r = await api<{ filed: { application: string; fiscal_year: number; filed_by: string; filed_at: string }[]; missing: { application: string; fiscal_year: number; applicant: string; term_end: string }[] }>('GET', '/reports/usage');
  const table = (id: string, head: string[], rows: string[][]) =>
    rows.length
      ? h('table', { class: 'grid', id }, h('thead', {}, h('tr', {}, head.map((x) => h('th', { scope: 'col' }, x)))), h('tbody', {}, rows.map((c) => h('tr', { 'data-application': c[0] }, c.map((x) => h('td', {}, x))))))
      : h('p', { id }, t('none'));
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('usage_filed_list')),
    table('usage-filed', [t('application'), t('usage_fy'), t('usage_applicant'), t('usage_filed_at')], r.filed.map((f) => [f.application, String(f.fiscal_year), f.filed_by, fmtDate(f.filed_at)])),
    h('h2', {}, t('usage_missing_list')),
    table('usage-missing', [t('application'), t('usage_fy'), t('usage_applicant'), t('usage_term_end')], r.missing.map((m) => [m.application, String(m.fiscal_year), m.applicant, m.term_end])),
  );
}

export async function renderReports(ctx: Ctx) {
  document.title = `${t('usage_title')} — kura`;
  const oversees = ctx.me.roles.includes('reviewer') || ctx.me.roles.includes('auditor');
  const apps = listOf<AppRow>(await api<unknown>('GET', '/applications'), 'applications').filter(
    (a) => oversees || a.applicant === ctx.me.username,
  );
  const pickApp = h('select', { id: 'usage-app', translate: 'no' }, apps.map((a) => h('option', { value: a.id }, `${a.id} ${a.form?.title ?? ''}`)));
  // A link from the review screen names the application (#/reports?app=ID).
  const wanted = new URLSearchParams(location.hash.split('?')[1] ?? '').get('app');
  if (wanted && apps.some((a) => a.id === wanted)) pickApp.value = wanted;
  const fy = h('input', { id: 'usage-fy', type: 'number', min: '2000', max: '2100', value: String(currentFy()) });
  const box = h('div', { id: 'usage-report' });
  const show = async () => {
    const app = apps.find((a) => a.id === pickApp.value);
    if (!app) return;
    try {
      await showReport(box, app, Number(fy.value), app.applicant === ctx.me.username);
    } catch (x) {
      clear(box, errorBox(x));
    }
  };
  clear(
    ctx.main,
    h('h1', {}, t('usage_title')),
    oversees ? await overview() : null,
    h('section', { class: 'card' }, h('p', {}, t('usage_pick')), field(t('application'), pickApp), field(t('usage_fy'), fy), h('button', { type: 'button', id: 'usage-show', onclick: () => void show() }, t('usage_show'))),
    box,
  );
}

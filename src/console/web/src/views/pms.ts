// PMS dashboard for a manufacturer's team: the standard post-marketing views over its standing
// scope (only patients treated with its own products), all through the same query API and the
// same disclosure rules as researchers. The SQL is the canned set in queries/pms/.
import casesSql from '../../../../../queries/pms/cases_by_sex_age.sql?raw';
import aeSql from '../../../../../queries/pms/adverse_events_by_term.sql?raw';
import deathsSql from '../../../../../queries/pms/deaths.sql?raw';
import { api, grantId, QueryResult } from '../api';
import { clear, field, h } from '../dom';
import { Key, t } from '../i18n';
import { Ctx, errorBox } from '../ui';
import { domainsFor } from '../labels';
import { renderResult } from './result';
// annual reports (issue 13 §3): the item-12 report of the team's own products
import { AnnualReport, downloads, lastFy, renderAnnualReport } from './annual';

const VIEWS: [Key, string, string][] = [
  ['pms_cases', 'cases', casesSql],
  ['pms_ae', 'adverse-events', aeSql],
  ['pms_deaths', 'deaths', deathsSql],
];

export async function renderPms(ctx: Ctx) {
  document.title = `${t('nav_pms')} — kura`;
  const me = await ctx.refreshMe();
  const grant = (me.applications ?? []).find((g) => grantId(g).startsWith('PMS-'));
  const scope = grant ? grantId(grant) : me.manufacturer ? `PMS-${me.manufacturer}` : '';
  const domains = await domainsFor(scope);
  const sections = VIEWS.map(([label, id, sql]) => {
    const out = h('div', { class: 'pms-out' }, t('loading'));
    void api<QueryResult>('POST', '/query', { application: scope, sql })
      .then((res) => clear(out, renderResult(res, scope, { domains, sql, release: false })))
      .catch((x) => clear(out, errorBox(x)));
    return h(
      'section',
      { class: 'card pms-view', id: `pms-${id}` },
      h('h2', {}, t(label)),
      h('details', {}, h('summary', {}, t('sql')), h('pre', { class: 'sql', translate: 'no' }, sql)),
      out,
    );
  });
  clear(
    ctx.main,
    h('h1', {}, `${t('nav_pms')} — `, h('span', { translate: 'no' }, scope)),
    h('p', { id: 'pms-intro' }, t('pms_intro', { scope })),
    h(
      'p',
      {},
      h('a', { class: 'button primary', href: `#/nb/${encodeURIComponent(scope)}`, id: 'pms-notebook' }, t('pms_notebook')),
      ' ',
      h('a', { class: 'button', href: `#/catalog/${encodeURIComponent(scope)}` }, t('nav_catalog')),
    ),
    sections,
    annualSection(me.manufacturer ?? scope.replace(/^PMS-/, '')),
  );
}

/** The annual report (seed 001 items 10 and 12) of the team's own products, by fiscal year. */
function annualSection(manufacturer: string): HTMLElement {
  const fy = h('input', { id: 'pms-annual-fy', type: 'number', min: '2000', max: '2100', value: String(lastFy()) });
  const out = h('div', { id: 'pms-annual-out' });
  const show = async () => {
    clear(out, t('loading'));
    try {
      const q = `fy=${encodeURIComponent(fy.value)}&manufacturer=${encodeURIComponent(manufacturer)}`;
      const r = await api<AnnualReport>('GET', `/reports/annual?${q}&format=json`);
      clear(out, downloads(q, 'pms-annual'), renderAnnualReport(r));
    } catch (x) {
      clear(out, errorBox(x));
    }
  };
  return h(
    'section',
    { class: 'card', id: 'pms-annual' },
    h('h2', {}, t('annual_pms_title')),
    h('p', {}, t('annual_pms_intro')),
    field(t('annual_fy'), fy),
    h('button', { type: 'button', class: 'primary', id: 'pms-annual-show', onclick: () => void show() }, t('annual_show')),
    out,
  );
}

// PMS dashboard for a manufacturer's team: the standard post-marketing views over its standing
// scope (only patients treated with its own products), all through the same query API and the
// same disclosure rules as researchers. The SQL is the canned set in queries/pms/.
import casesSql from '../../../../../queries/pms/cases_by_sex_age.sql?raw';
import aeSql from '../../../../../queries/pms/adverse_events_by_term.sql?raw';
import deathsSql from '../../../../../queries/pms/deaths.sql?raw';
import { api, grantId, QueryResult } from '../api';
import { clear, h } from '../dom';
import { Key, t } from '../i18n';
import { Ctx, errorBox } from '../ui';
import { domainsFor } from '../labels';
import { renderResult } from './result';

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
  );
}

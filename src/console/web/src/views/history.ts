// Query history of one application: each query's SQL, outcome and code.
import { api, listOf, qs } from '../api';
import { clear, fmtDate, h } from '../dom';
import { fmtNum, hasLabel, label, t } from '../i18n';
import { Ctx } from '../ui';

interface QueryRow {
  query_id?: string;
  id?: string;
  at?: string;
  sql: string;
  outcome?: string;
  status?: string;
  code?: string | null;
  duration_ms?: number | null;
  suppressed_cells?: number | null;
}

export async function renderHistory(ctx: Ctx, app: string) {
  document.title = `${t('nav_history')} ${app} — kura`;
  const rows = listOf<QueryRow>(await api('GET', `/queries${qs({ application: app })}`), 'queries');
  clear(
    ctx.main,
    h('h1', {}, `${t('nav_history')} — `, h('span', { translate: 'no' }, app)),
    rows.length === 0
      ? h('p', {}, t('none'))
      : h(
          'table',
          { class: 'grid', id: 'history' },
          h(
            'thead',
            {},
            h('tr', {}, [t('when'), t('status'), t('reason'), t('duration'), t('suppressed_cells'), t('sql')].map((x) => h('th', { scope: 'col' }, x))),
          ),
          h(
            'tbody',
            {},
            rows.map((r) =>
              h(
                'tr',
                { 'data-outcome': r.outcome ?? r.status ?? '' },
                h('td', {}, fmtDate(r.at)),
                h('td', {}, h('span', { class: `badge out-${r.outcome ?? r.status}` }, label('outcome', r.outcome ?? r.status ?? ''))),
                h('td', { 'data-code': r.code ?? '' }, r.code ? (hasLabel('error', r.code) ? label('error', r.code) : t('error_generic')) : ''),
                h('td', { class: 'num' }, typeof r.duration_ms === 'number' ? `${fmtNum(r.duration_ms, 0)} ms` : ''),
                h('td', { class: 'num' }, typeof r.suppressed_cells === 'number' ? fmtNum(r.suppressed_cells, 0) : ''),
                h('td', {}, h('pre', { class: 'sql', translate: 'no' }, r.sql)),
              ),
            ),
          ),
        ),
  );
}

// Query history of one application: each query's SQL, outcome and code.
import { api, listOf, qs } from '../api';
import { clear, fmtDate, h } from '../dom';
import { t } from '../i18n';
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
    h('h1', {}, `${t('nav_history')} — ${app}`),
    rows.length === 0
      ? h('p', {}, t('none'))
      : h(
          'table',
          { class: 'grid', id: 'history' },
          h(
            'thead',
            {},
            h('tr', {}, [t('when'), t('status'), t('code'), t('duration'), t('suppressed_cells'), 'SQL'].map((x) => h('th', { scope: 'col' }, x))),
          ),
          h(
            'tbody',
            {},
            rows.map((r) =>
              h(
                'tr',
                { 'data-outcome': r.outcome ?? r.status ?? '' },
                h('td', {}, fmtDate(r.at)),
                h('td', {}, h('span', { class: `badge out-${r.outcome ?? r.status}` }, r.outcome ?? r.status ?? '')),
                h('td', {}, r.code ?? ''),
                h('td', { class: 'num' }, r.duration_ms ?? ''),
                h('td', { class: 'num' }, r.suppressed_cells ?? ''),
                h('td', {}, h('pre', { class: 'sql' }, r.sql)),
              ),
            ),
          ),
        ),
  );
}

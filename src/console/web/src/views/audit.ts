// Auditor's log explorer: chain verification status on top, filters (time, user, application,
// action, outcome, reference id), pagination, a list that shows each event's SQL and the
// reference a researcher quotes, the CSV export of the filtered log (audited by the server as
// `audit.export`), and a detail view with SQL, plan fingerprint, suppression and the internal
// error detail that researchers never see. Actions, outcomes and codes are shown by label.
import { api, listOf, qs } from '../api';
import { clear, field, fmtDate, h } from '../dom';
import { hasLabel, label, t } from '../i18n';
import codes from '../i18n/codes.json';
import { Ctx, errorBox } from '../ui';

interface AuditEvent {
  seq?: number;
  at?: string;
  actor?: string;
  user?: string;
  action?: string;
  application?: string | null;
  outcome?: string;
  code?: string | null;
  reference?: string | null;
  event?: Record<string, unknown> | string;
  [k: string]: unknown;
}

export async function renderAudit(ctx: Ctx) {
  document.title = `${t('nav_audit')} — kura`;
  const chain = h('div', { class: 'chain', id: 'chain-status', role: 'status' }, t('loading'));
  try {
    const v = await api<{ ok: boolean; events?: number; head?: string; broken_at?: unknown; [k: string]: unknown }>('GET', '/audit/verify');
    chain.className = `chain ${v.ok ? 'ok' : 'broken'}`;
    chain.dataset.ok = String(v.ok);
    chain.textContent = v.ok
      ? t('chain_ok', { n: v.events ?? 0, head: String(v.head ?? '').slice(0, 16) })
      : t('chain_broken', { at: String((v as Record<string, unknown>)['broken_at'] ?? (v as Record<string, unknown>)['seq'] ?? '?') });
  } catch (x) {
    clear(chain, errorBox(x));
  }
  const from = h('input', { type: 'datetime-local', id: 'au-from' });
  const to = h('input', { type: 'datetime-local', id: 'au-to' });
  const user = h('input', { id: 'au-user' });
  const app = h('input', { id: 'au-app' });
  const action = h(
    'select',
    { id: 'au-action' },
    h('option', { value: '' }, t('all')),
    Object.keys(codes.action).map((a) => h('option', { value: a }, label('action', a))),
  );
  const outcome = h('select', { id: 'au-outcome' }, ['', 'ok', 'denied', 'error'].map((o) => h('option', { value: o }, o ? label('outcome', o) : t('all'))));
  const ref = h('input', { id: 'au-ref', maxlength: '64', autocomplete: 'off', spellcheck: 'false' });
  const exportLink = h('a', { class: 'button', id: 'audit-export', href: '/api/v1/audit/events.csv', download: 'audit-log.csv' }, t('export_csv'));
  const listBox = h('div', { id: 'audit-list' });
  const detail = h('section', { class: 'card detail', id: 'audit-detail', hidden: true, tabindex: '-1' });
  let page = 1;
  const iso = (v: string) => (v ? new Date(v).toISOString() : undefined);
  const load = async () => {
    const filters = { from: iso(from.value), to: iso(to.value), user: user.value.trim(), application: app.value.trim(), action: action.value, outcome: outcome.value, reference: ref.value.trim() };
    const query = qs({ ...filters, page: page - 1 }); // the API pages from 0
    const r = await api<unknown>('GET', `/audit/events${query}`);
    listBox.dataset.query = query;
    exportLink.setAttribute('href', `/api/v1/audit/events.csv${qs(filters)}`);
    // Records are {seq, at, event: {actor, action, application, outcome, code, reference, detail}, prev, mac}.
    const events = listOf<AuditEvent>(r, 'events').map((rec) => ({ ...(typeof rec.event === 'object' ? rec.event : {}), ...rec }) as AuditEvent);
    clear(
      listBox,
      h(
        'table',
        { class: 'grid' },
        h('thead', {}, h('tr', {}, ['#', t('when'), t('user'), t('action'), t('application'), t('outcome'), t('reason'), t('reference'), t('sql'), ''].map((x) => h('th', { scope: 'col' }, x)))),
        h(
          'tbody',
          {},
          events.map((e) =>
            h(
              'tr',
              { 'data-action': e.action ?? '', 'data-actor': e.actor ?? e.user ?? '', 'data-ref': e.reference ?? '', 'data-outcome': e.outcome ?? '' },
              h('td', { class: 'num' }, e.seq ?? ''),
              h('td', {}, fmtDate(e.at)),
              h('td', { translate: 'no' }, e.actor ?? e.user ?? ''),
              h('td', {}, label('action', e.action ?? '')),
              h('td', { translate: 'no' }, e.application ?? ''),
              h('td', {}, h('span', { class: `badge out-${e.outcome}` }, label('outcome', e.outcome ?? ''))),
              h('td', { 'data-code': e.code ?? '' }, e.code ? (hasLabel('error', e.code) ? label('error', e.code) : t('error_generic')) : ''),
              h('td', { class: 'ref' }, e.reference ? h('code', { translate: 'no' }, e.reference) : ''),
              h('td', { class: 'sql-cell' }, sqlOf(e) ? h('code', { class: 'sql-snippet', translate: 'no', title: sqlOf(e) }, clip(sqlOf(e)!, 120)) : ''),
              h('td', {}, h('button', { type: 'button', class: 'show-detail', onclick: () => showDetail(e) }, t('detail'))),
            ),
          ),
        ),
      ),
      h(
        'div',
        { class: 'pager' },
        h('button', { type: 'button', disabled: page <= 1, onclick: () => { page -= 1; void load(); } }, t('prev')),
        h('span', {}, t('page_n', { n: page })),
        h('button', { type: 'button', disabled: events.length === 0, onclick: () => { page += 1; void load(); } }, t('next')),
      ),
    );
  };
  const showDetail = (e: AuditEvent) => {
    const ev = (typeof e.event === 'string' ? safeParse(e.event) : (e.event ?? e)) as Record<string, unknown>;
    const detailObj = (ev['detail'] && typeof ev['detail'] === 'object' ? ev['detail'] : {}) as Record<string, unknown>;
    // SQL, plan fingerprint and suppression first; then every other recorded field, including the
    // internal error detail that the researcher only saw as a reference.
    const order = ['sql', 'plan_fingerprint', 'suppressed', 'suppressed_cells', 'dropped_rows', 'detail', 'rule'];
    const keys = [...order.filter((k) => k in detailObj), ...Object.keys(detailObj).filter((k) => !order.includes(k))];
    const code = ev['code'] ? String(ev['code']) : '';
    const rows: [string, unknown][] = [
      [t('user'), ev['actor']],
      [t('action'), label('action', String(ev['action'] ?? ''))],
      [t('outcome'), `${label('outcome', String(ev['outcome'] ?? ''))}${code ? ` — ${hasLabel('error', code) ? label('error', code) : t('error_generic')}` : ''}`],
      [t('reference'), ev['reference']],
      ...keys.map((k) => [k, detailObj[k]] as [string, unknown]),
      [t('prev_hash'), e['prev']],
      ['MAC', e['mac']],
    ];
    clear(
      detail,
      h('h2', {}, `${t('detail')} #${e.seq ?? ''}`),
      h(
        'dl',
        {},
        rows
          .filter(([, v]) => v !== undefined && v !== null && v !== '')
          .flatMap(([k, v]) => [h('dt', { translate: keys.includes(k) ? 'no' : null }, k), h('dd', { 'data-field': k }, h('pre', { translate: 'no' }, typeof v === 'string' ? v : JSON.stringify(v, null, 2)))]),
      ),
      h('button', { type: 'button', onclick: () => { detail.hidden = true; } }, t('close')),
    );
    detail.hidden = false;
    detail.focus();
  };
  clear(
    ctx.main,
    chain,
    h('h1', {}, t('nav_audit')),
    h(
      'form',
      { class: 'filters', id: 'audit-filters', onsubmit: (ev: Event) => { ev.preventDefault(); page = 1; void load(); } },
      field(t('from'), from),
      field(t('to'), to),
      field(t('user'), user),
      field(t('application'), app),
      field(t('action'), action),
      field(t('outcome'), outcome),
      field(t('search_ref'), ref),
      h('button', { type: 'submit', class: 'primary', id: 'audit-search' }, t('search')),
    ),
    h('p', { class: 'export' }, exportLink, ' ', h('small', {}, t('export_csv_note'))),
    listBox,
    detail,
  );
  await load();
}

function sqlOf(e: AuditEvent): string | null {
  const d = (typeof e.event === 'object' ? (e.event as Record<string, unknown>)['detail'] : e['detail']) as Record<string, unknown> | undefined;
  const v = d?.['sql'];
  return typeof v === 'string' ? v : null;
}

function clip(s: string, n: number): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}

function safeParse(s: string): Record<string, unknown> {
  try {
    return JSON.parse(s);
  } catch {
    return { raw: s };
  }
}

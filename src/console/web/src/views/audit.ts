// Auditor's log explorer: chain verification status on top, filters (time, user, application,
// action, outcome), pagination and a detail view with SQL, plan fingerprint, suppression and the
// internal error detail that researchers never see.
import { api, listOf, qs } from '../api';
import { clear, field, fmtDate, h } from '../dom';
import { t } from '../i18n';
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
      : `${t('chain_broken')}: ${JSON.stringify(v)}`;
  } catch (x) {
    clear(chain, errorBox(x));
  }
  const from = h('input', { type: 'datetime-local', id: 'au-from' });
  const to = h('input', { type: 'datetime-local', id: 'au-to' });
  const user = h('input', { id: 'au-user' });
  const app = h('input', { id: 'au-app' });
  const action = h('input', { id: 'au-action' });
  const outcome = h('select', { id: 'au-outcome' }, ['', 'ok', 'denied', 'error'].map((o) => h('option', { value: o }, o || t('all'))));
  const listBox = h('div', { id: 'audit-list' });
  const detail = h('section', { class: 'card detail', id: 'audit-detail', hidden: true, tabindex: '-1' });
  let page = 1;
  const iso = (v: string) => (v ? new Date(v).toISOString() : undefined);
  const load = async () => {
    const query = qs({ from: iso(from.value), to: iso(to.value), user: user.value, application: app.value, action: action.value, outcome: outcome.value, page: page - 1 }); // the API pages from 0
    const r = await api<unknown>('GET', `/audit/events${query}`);
    listBox.dataset.query = query;
    const want = outcome.value;
    // Records are {seq, at, event: {actor, action, application, outcome, code, reference, detail}, prev, mac}.
    const events = listOf<AuditEvent>(r, 'events')
      .map((rec) => ({ ...(typeof rec.event === 'object' ? rec.event : {}), ...rec }) as AuditEvent)
      .filter((e) => !want || e.outcome === want);
    clear(
      listBox,
      h(
        'table',
        { class: 'grid' },
        h('thead', {}, h('tr', {}, ['#', t('when'), t('user'), t('action'), t('application'), t('outcome'), t('code'), ''].map((x) => h('th', { scope: 'col' }, x)))),
        h(
          'tbody',
          {},
          events.map((e) =>
            h(
              'tr',
              { 'data-action': e.action ?? '', 'data-actor': e.actor ?? e.user ?? '' },
              h('td', { class: 'num' }, e.seq ?? ''),
              h('td', {}, fmtDate(e.at)),
              h('td', {}, e.actor ?? e.user ?? ''),
              h('td', {}, e.action ?? ''),
              h('td', {}, e.application ?? ''),
              h('td', {}, h('span', { class: `badge out-${e.outcome}` }, e.outcome ?? '')),
              h('td', {}, e.code ?? ''),
              h('td', {}, h('button', { type: 'button', class: 'show-detail', onclick: () => showDetail(e) }, t('detail'))),
            ),
          ),
        ),
      ),
      h(
        'div',
        { class: 'pager' },
        h('button', { type: 'button', disabled: page <= 1, onclick: () => { page -= 1; void load(); } }, t('prev')),
        h('span', {}, `${t('page')} ${page}`),
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
    const rows: [string, unknown][] = [
      [t('user'), ev['actor']],
      [t('action'), ev['action']],
      [t('outcome'), `${ev['outcome'] ?? ''} ${ev['code'] ?? ''}`],
      ['ref', ev['reference']],
      ...keys.map((k) => [k, detailObj[k]] as [string, unknown]),
      ['prev', e['prev']],
      ['mac', e['mac']],
    ];
    clear(
      detail,
      h('h2', {}, `${t('detail')} #${e.seq ?? ''}`),
      h(
        'dl',
        {},
        rows
          .filter(([, v]) => v !== undefined && v !== null && v !== '')
          .flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-field': k }, h('pre', {}, typeof v === 'string' ? v : JSON.stringify(v, null, 2)))]),
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
      h('button', { type: 'submit', class: 'primary', id: 'audit-search' }, t('search')),
    ),
    listBox,
    detail,
  );
  await load();
}

function safeParse(s: string): Record<string, unknown> {
  try {
    return JSON.parse(s);
  } catch {
    return { raw: s };
  }
}

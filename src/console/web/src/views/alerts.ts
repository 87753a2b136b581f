// The auditor's alert inbox (issue 13 §4): open and acknowledged alerts raised by the rules of
// audit/*.toml, each with its bilingual message and the audit events that raised it;
// acknowledging needs a comment.
import { api } from '../api';
import { clear, field, fmtDate, h } from '../dom';
import { label, pick, t } from '../i18n';
import { Ctx, errorBox, note } from '../ui';

interface Alert {
  id: string;
  rule: string;
  severity: string;
  at: string;
  user?: string | null;
  application?: string | null;
  events: number[];
  message: { ja: string; en: string };
  status: string;
  acknowledged?: { by: string; at: string; comment: string } | null;
}

function ackForm(a: Alert, done: () => void): HTMLElement {
  const comment = h('textarea', { class: 'ack-comment', maxlength: '1000', rows: '2', required: true });
  const err = h('div', {});
  return h(
    'form',
    {
      class: 'ack',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        try {
          await api('POST', `/alerts/${encodeURIComponent(a.id)}/ack`, { comment: comment.value });
          done();
        } catch (x) {
          clear(err, errorBox(x));
        }
      },
    },
    field(t('alert_comment'), comment),
    err,
    h('button', { type: 'submit', class: 'ack-submit' }, t('alert_ack')),
  );
}

function row(a: Alert, done: () => void): HTMLElement {
  const events = a.events.map((seq) => h('a', { href: `#/audit`, class: 'event-link', 'data-seq': String(seq) }, `#${seq}`));
  return h(
    'tr',
    { class: `alert sev-${a.severity}`, 'data-rule': a.rule, 'data-id': a.id },
    h('td', {}, fmtDate(a.at)),
    h('td', {}, label('rule', a.rule)),
    h('td', {}, h('span', { class: `badge sev-${a.severity}` }, label('severity', a.severity))),
    h('td', { translate: 'no' }, a.user ?? ''),
    h('td', { translate: 'no' }, a.application ?? ''),
    h('td', { class: 'alert-message' }, pick(a.message.ja, a.message.en)),
    h('td', {}, events.flatMap((x, i) => (i ? [' ', x] : [x]))),
    h(
      'td',
      {},
      a.acknowledged
        ? h('span', {}, `${t('alert_acked_by')}: `, h('span', { translate: 'no' }, `${a.acknowledged.by} — ${a.acknowledged.comment}`))
        : ackForm(a, done),
    ),
  );
}

export async function renderAlerts(ctx: Ctx) {
  document.title = `${t('alerts_title')} — kura`;
  const status = h(
    'select',
    { id: 'alert-status' },
    h('option', { value: 'open' }, t('alerts_open')),
    h('option', { value: 'acknowledged' }, t('alerts_acknowledged')),
  );
  const list = h('div', { id: 'alert-list' });
  const flash = h('div', {});
  const load = async () => {
    try {
      const alerts = await api<Alert[]>('GET', `/alerts?status=${status.value}`);
      const done = () => {
        clear(flash, note(t('alert_done')));
        void load();
      };
      clear(
        list,
        alerts.length
          ? h(
              'table',
              { class: 'grid' },
              h('thead', {}, h('tr', {}, [t('when'), t('alert_rule'), t('alert_severity'), t('user'), t('application'), t('alert_message'), t('alert_events'), ''].map((x) => h('th', { scope: 'col' }, x)))),
              h('tbody', {}, alerts.map((a) => row(a, done))),
            )
          : h('p', { id: 'alert-none' }, t('alert_none')),
      );
    } catch (x) {
      clear(list, errorBox(x));
    }
  };
  status.addEventListener('change', () => void load());
  clear(ctx.main, h('h1', {}, t('alerts_title')), flash, field(t('status'), status), list);
  await load();
}

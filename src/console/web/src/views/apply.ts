// Applicant screens: own applications with status, the form-1 editor (save draft, submit,
// answer a correction, change application), the reviewer's reasons and history, and the pledge
// (form 2) that every named user accepts before the first query.
import { api, listOf } from '../api';
import { clear, fmtDate, h } from '../dom';
import { label, t } from '../i18n';
import { plainDomains } from '../labels';
import { Ctx, errorBox, note, statusBadge } from '../ui';
import { approvalView, crossesFiscalYear, formEditor, formOf, formView, getPath, NamedUser } from './forms';
// seeds (issue 16 §5): form 3, notices, withdrawal
import { consentPanel, noticesPanel, withdrawPanel } from './consent';

export type AppRecord = Record<string, unknown> & { id: string; status: string };

/** Detail responses may wrap the application next to its history; flatten them. */
export function normalizeApp(r: unknown): AppRecord {
  const o = (r ?? {}) as Record<string, unknown>;
  const inner = o['application'];
  if (inner && typeof inner === 'object') {
    const rest = Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'application'));
    const app = { ...(inner as AppRecord), ...rest } as AppRecord;
    // An approved application whose term has ended reads as expired.
    if (typeof o['effective_status'] === 'string') app.status = o['effective_status'] as string;
    return app;
  }
  return o as AppRecord;
}

export function historyList(app: AppRecord): HTMLElement {
  const hist = listOf<Record<string, string | null>>(app['history'], 'history');
  const recs = listOf<Record<string, string>>(app['recommendations'], 'recommendations');
  return h(
    'section',
    { class: 'history', 'aria-label': t('history') },
    h('h2', {}, t('history')),
    hist.length === 0
      ? h('p', {}, t('none'))
      : h(
          'ol',
          { id: 'app-history' },
          hist.map((e) =>
            h(
              'li',
              {},
              h('time', {}, fmtDate(e['at'])),
              ' ',
              h('strong', { 'data-action': e['action'] ?? '' }, label('action', `application.${e['action'] ?? ''}`)),
              ' ',
              h('span', { translate: 'no' }, e['actor'] ?? ''),
              ' ',
              e['from_status'] ? `${label('status', e['from_status'])} → ` : '',
              e['to_status'] ? label('status', e['to_status']) : '',
              e['reason'] ? h('div', { class: 'reason' }, `${t('reason')}: `, h('span', { translate: 'no' }, e['reason'])) : null,
            ),
          ),
        ),
    recs.length
      ? h('div', {}, h('h3', {}, t('recommendation')), h('ul', {}, recs.map((r) => h('li', {}, `${fmtDate(r['at'])} `, h('span', { translate: 'no' }, r['text'])))))
      : null,
  );
}

export function namedUsers(app: AppRecord): string[] {
  const f = (app['form'] ?? app) as Record<string, unknown>;
  return listOf<NamedUser | string>(f['named_users'] ?? app['named_users']).map((u) => (typeof u === 'string' ? u : u.username));
}

export async function renderApply(ctx: Ctx, id?: string) {
  document.title = `${t('nav_apply')} — kura`;
  if (id === 'new') return renderEditor(ctx, null);
  if (id) return renderDetail(ctx, id);
  const apps = listOf<AppRecord>(await api('GET', '/applications'), 'applications');
  clear(
    ctx.main,
    h('h1', {}, t('my_apps')),
    h('p', {}, h('a', { class: 'button primary', href: '#/apply/new', id: 'new-application' }, t('new_app'))),
    apps.length === 0
      ? h('p', {}, t('none'))
      : h(
          'table',
          { class: 'grid', id: 'my-apps' },
          h('thead', {}, h('tr', {}, [t('app_id'), t('f_title'), t('status'), t('updated')].map((x) => h('th', { scope: 'col' }, x)))),
          h(
            'tbody',
            {},
            apps.map((a) =>
              h(
                'tr',
                { 'data-app': a.id },
                h('th', { scope: 'row' }, h('a', { href: `#/apply/${encodeURIComponent(a.id)}`, translate: 'no' }, a.id)),
                h('td', { translate: 'no' }, String(a['title'] ?? formOf(a)['title'] ?? '')),
                h('td', {}, statusBadge(a.status)),
                h('td', {}, fmtDate(a['updated_at'] as string)),
              ),
            ),
          ),
        ),
  );
}

async function renderEditor(ctx: Ctx, existing: AppRecord | null, change = false) {
  const initial = existing
    ? formOf(existing)
    : { applicant: { name: ctx.me.username }, named_users: [{ username: ctx.me.username }], scope: { datasets: ['nanbyo'] } };
  const editor = formEditor(initial);
  const msg = h('div', { class: 'messages', 'aria-live': 'polite' });
  let current = existing;
  const check = (): boolean => {
    const f = editor.read();
    if (crossesFiscalYear(String(getPath(f, 'term.start') ?? ''), String(getPath(f, 'term.end') ?? ''))) {
      clear(msg, note(t('fy_cross'), 'error'));
      return false;
    }
    return true;
  };
  const saveDraft = async (): Promise<AppRecord | null> => {
    if (!check()) return null;
    try {
      const f = editor.read();
      if (change && current) current = await api<AppRecord>('POST', `/applications/${encodeURIComponent(current.id)}/change`, f);
      else if (current) current = await api<AppRecord>('PUT', `/applications/${encodeURIComponent(current.id)}`, f);
      else current = await api<AppRecord>('POST', '/applications', f);
      clear(msg, note(t('draft_saved', { id: current.id })));
      return current;
    } catch (x) {
      clear(msg, errorBox(x));
      return null;
    }
  };
  const submit = async () => {
    const a = await saveDraft();
    if (!a) return;
    try {
      await api('POST', `/applications/${encodeURIComponent(a.id)}/submit`);
      ctx.go(`#/apply/${encodeURIComponent(a.id)}`);
    } catch (x) {
      clear(msg, errorBox(x));
    }
  };
  clear(
    ctx.main,
    h('h1', {}, change ? t('change_application') : existing ? `${t('nav_apply')} ${existing.id}` : t('new_app')),
    h(
      'form',
      { id: 'application-form', onsubmit: (e: Event) => { e.preventDefault(); void submit(); } },
      editor.el,
      msg,
      h(
        'div',
        { class: 'actions' },
        change ? null : h('button', { type: 'button', id: 'save-draft', onclick: () => void saveDraft() }, t('save_draft')),
        h('button', { type: 'submit', class: 'primary', id: 'submit-application' }, existing?.status === 'correction_requested' ? t('answer_correction') : t('submit')),
      ),
    ),
  );
}

async function renderDetail(ctx: Ctx, id: string) {
  const app = normalizeApp(await api('GET', `/applications/${encodeURIComponent(id)}`));
  const status = app.status;
  const me = ctx.me.username;
  const refresh = () => void renderDetail(ctx, id);
  if ((status === 'draft' || status === 'correction_requested') && app['applicant'] === me) {
    await renderEditor(ctx, app);
    ctx.main.prepend(h('p', {}, statusBadge(status)), consentPanel(app, me, refresh) ?? '', historyList(app));
    return;
  }
  const pledged = listOf<Record<string, string> | string>(app['pledges']).map((p) => (typeof p === 'string' ? p : p['username']));
  const pledgeBox = h('section', { class: 'card pledge', id: 'pledge' });
  if (status === 'approved' && namedUsers(app).includes(me)) {
    if (pledged.includes(me)) {
      pledgeBox.append(h('h2', {}, t('pledge')), note(t('pledge_accepted')));
    } else {
      const agree = h('input', { type: 'checkbox', id: 'pledge-agree' });
      const btn = h('button', { type: 'button', class: 'primary', id: 'accept-pledge', disabled: true }, t('accept_pledge'));
      agree.addEventListener('change', () => (btn.disabled = !agree.checked));
      btn.addEventListener('click', async () => {
        try {
          await api('POST', `/applications/${encodeURIComponent(id)}/pledge`, { accept: true });
          clear(pledgeBox, h('h2', {}, t('pledge')), note(t('pledge_accepted')), h('a', { class: 'button primary', href: `#/nb/${encodeURIComponent(id)}` }, t('nav_notebooks')));
        } catch (x) {
          pledgeBox.append(errorBox(x));
        }
      });
      pledgeBox.append(
        h('h2', {}, t('pledge')),
        h('p', {}, t('pledge_needed')),
        h('p', { class: 'pledge-text' }, t('pledge_text')),
        h('label', { for: 'pledge-agree', class: 'check' }, agree, ` ${t('accept_pledge')}`),
        btn,
      );
    }
  }
  const domains = await plainDomains();
  const view = formView(formOf(app), domains);
  const approval = app['approval'] as Record<string, unknown> | null | undefined;
  clear(
    ctx.main,
    h('h1', {}, `${t('nav_apply')} `, h('span', { translate: 'no' }, app.id), ' ', statusBadge(status)),
    // seeds (issue 16 §5)
    consentPanel(app, me, refresh),
    await noticesPanel(app),
    withdrawPanel(app, me, refresh),
    pledgeBox.childNodes.length ? pledgeBox : null,
    status === 'approved' && app['applicant'] === me
      ? h('p', {}, h('button', { type: 'button', id: 'change-application', onclick: () => void renderEditor(ctx, app, true) }, t('change_application')))
      : null,
    approval ? approvalView(approval, domains) : null,
    historyList(app),
    view,
  );
}

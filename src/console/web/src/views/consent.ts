// Form 3, notices, withdrawal and the reviewer's place of use (issue 16 §1 §3 §5): panels the
// application screens (apply.ts, review.ts) add, and the research lead's list of applications
// waiting for their consent (#/consent).
import { api, listOf } from '../api';
import { clear, field, h } from '../dom';
import { t } from '../i18n';
import { Ctx, errorBox, note } from '../ui';
import { AppRecord, normalizeApp } from './apply';
import { formOf, fromText, getPath } from './forms';

interface Consent {
  username: string;
  consented_on: string;
  lead: { name: string; affiliation: string; title: string };
}

function leadOf(app: AppRecord): string | null {
  const lead = getPath(formOf(app), 'lead_investigator');
  return typeof lead === 'string' && lead ? lead : null;
}

function consentOf(app: AppRecord): Consent | null {
  const c = getPath(formOf(app), 'lead_consent');
  return c && typeof c === 'object' ? (c as Consent) : null;
}

function openForConsent(app: AppRecord): boolean {
  return app.status === 'draft' || app.status === 'correction_requested' || (app.status === 'approved' && !!app['pending_change']);
}

/** Form 3 on an application: the lead gives consent; the applicant sees whether it is there. */
export function consentPanel(app: AppRecord, me: string, refresh: () => void): HTMLElement | null {
  const lead = leadOf(app);
  if (!lead || lead === app['applicant']) return null;
  const given = consentOf(app);
  const box = h('section', { class: 'card consent', id: 'lead-consent' }, h('h2', {}, t('consent_title')));
  if (given && given.username === lead) {
    box.append(
      note(t('consent_given', { name: given.lead.name, aff: given.lead.affiliation, date: given.consented_on })),
    );
    return box;
  }
  if (me !== lead || !openForConsent(app)) {
    box.append(h('p', { id: 'consent-waiting' }, t('consent_waiting', { lead })));
    return box;
  }
  const agree = h('input', { type: 'checkbox', id: 'consent-agree' });
  const btn = h('button', { type: 'button', class: 'primary', id: 'give-consent', disabled: true }, t('consent_give'));
  agree.addEventListener('change', () => (btn.disabled = !agree.checked));
  btn.addEventListener('click', async () => {
    try {
      await api('POST', `/applications/${encodeURIComponent(app.id)}/lead-consent`, { agree: true });
      refresh();
    } catch (x) {
      box.append(errorBox(x));
    }
  });
  box.append(
    h('p', { class: 'consent-text' }, t('consent_text')),
    h('label', { for: 'consent-agree', class: 'check' }, agree, ` ${t('consent_agree')}`),
    btn,
  );
  return box;
}

/** The notices issued on an application, each downloadable (the download is audited). */
export async function noticesPanel(app: AppRecord): Promise<HTMLElement | null> {
  let list: { id: string; kind: string; issued_on: string }[];
  try {
    list = await api('GET', `/applications/${encodeURIComponent(app.id)}/notices`);
  } catch {
    return null; // not the applicant: nothing to show
  }
  if (!list.length) return null;
  return h(
    'section',
    { class: 'card notices', id: 'notices' },
    h('h2', {}, t('notices_title')),
    h(
      'ul',
      {},
      list.map((n) =>
        h(
          'li',
          { 'data-notice': n.id },
          `${n.issued_on} ${n.id} ${n.kind === 'approval' ? t('notice_approval') : t('notice_refusal')} `,
          h(
            'a',
            {
              href: `/api/v1/applications/${encodeURIComponent(app.id)}/notices/${encodeURIComponent(n.id)}?format=html`,
              target: '_blank',
              rel: 'noopener',
              class: 'notice-download',
            },
            t('notice_download'),
          ),
        ),
      ),
    ),
  );
}

/** The applicant withdraws an approved study (it stays on the public register). */
export function withdrawPanel(app: AppRecord, me: string, refresh: () => void): HTMLElement | null {
  if (app.status !== 'approved' || app['applicant'] !== me) return null;
  const reason = h('textarea', { id: 'withdraw-reason', rows: 2, maxlength: '2000' });
  const box = h('section', { class: 'card withdraw', id: 'withdraw' }, h('h2', {}, t('withdraw_title')));
  const btn = h(
    'button',
    {
      type: 'button',
      class: 'danger',
      id: 'withdraw-study',
      onclick: async () => {
        if (!reason.value.trim()) {
          reason.focus();
          return;
        }
        try {
          await api('POST', `/applications/${encodeURIComponent(app.id)}/withdraw`, { reason: reason.value });
          refresh();
        } catch (x) {
          box.append(errorBox(x));
        }
      },
    },
    t('withdraw'),
  );
  box.append(field(t('withdraw_reason'), reason), btn);
  return box;
}

/** The reviewer's place of use and published fields of an approval, prefilled from form 1. */
export function approvalExtras(form: Record<string, unknown>): { el: HTMLElement; read: () => Record<string, unknown> } {
  const networks = h('input', { id: 'ap-networks' });
  networks.value = listOf<string>(form['networks']).join(', ');
  const title = h('input', { id: 'ap-published-title', maxlength: '300' });
  title.value = String(form['title'] ?? '');
  const inst = h('input', { id: 'ap-published-institution', maxlength: '300' });
  inst.value = String(getPath(form, 'applicant.affiliation') ?? '');
  const summary = h('textarea', { id: 'ap-published-summary', rows: 3, maxlength: '2000' });
  summary.value = String(form['purpose'] ?? '');
  const el = h(
    'fieldset',
    { class: 'place-published' },
    h('legend', {}, t('place_title')),
    field(t('ap_networks'), networks),
    field(t('ap_published_title'), title),
    field(t('ap_published_institution'), inst),
    field(t('ap_published_summary'), summary),
  );
  return {
    el,
    read: () => {
      const list = fromText('strings', networks.value) as string[];
      return {
        networks: list.length ? list : null,
        published: { title: title.value, institution: inst.value, summary: summary.value },
      };
    },
  };
}

/** #/consent: applications whose research lead is the current user and still need consent. */
export async function renderConsentRequests(ctx: Ctx) {
  document.title = `${t('nav_consent')} — kura`;
  const me = ctx.me.username;
  const apps = listOf<AppRecord>(await api('GET', '/applications'), 'applications');
  const details = await Promise.all(apps.map(async (a) => normalizeApp(await api('GET', `/applications/${encodeURIComponent(a.id)}`))));
  const waiting = details
    .filter((a) => leadOf(a) === me && a['applicant'] !== me && !consentOf(a) && openForConsent(a));
  const list = waiting.length
    ? h(
        'ul',
        { id: 'consent-requests' },
        waiting.map((a) =>
          h('li', { 'data-app': a.id }, h('a', { href: `#/apply/${encodeURIComponent(a.id)}` }, `${a.id} ${String(formOf(a)['title'] ?? '')}`), ` (${String(a['applicant'] ?? '')})`),
        ),
      )
    : h('p', { id: 'consent-requests' }, t('consent_none'));
  clear(ctx.main, h('h1', {}, t('nav_consent')), list);
}

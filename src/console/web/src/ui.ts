// Shared bits of UI: error boxes that show the stable code, the server's message (which names the
// fix) and the audit reference, and status badges.
import { ApiError } from './api';
import { h } from './dom';
import { Key, t } from './i18n';

export interface Ctx {
  me: import('./api').Me;
  main: HTMLElement;
  go: (hash: string) => void;
  refreshMe: () => Promise<import('./api').Me>;
}

export function errorBox(x: unknown): HTMLElement {
  if (x instanceof ApiError) {
    return h(
      'div',
      { class: 'error-box', role: 'alert', 'data-code': x.body.code },
      h('strong', { class: 'code' }, x.body.code),
      ' ',
      h('span', { class: 'msg' }, x.body.message),
      x.body.ref ? h('small', { class: 'ref' }, ` ${t('error_ref')}: ${x.body.ref}`) : null,
    );
  }
  return h('div', { class: 'error-box', role: 'alert' }, String(x));
}

export function statusBadge(status: string): HTMLElement {
  const key = `st_${status}` as Key;
  let label = status;
  try {
    label = t(key);
  } catch {
    label = status;
  }
  return h('span', { class: `badge st-${status}`, 'data-status': status }, label || status);
}

export function note(text: string, kind: 'info' | 'error' = 'info'): HTMLElement {
  return h('div', { class: `flash ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

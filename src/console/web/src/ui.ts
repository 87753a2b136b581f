// Shared bits of UI: error boxes (the code's label and the server's message in the current
// language, the audit reference; the raw code only as a tooltip and data attribute), status
// badges, notes.
import { ApiError } from './api';
import { h } from './dom';
import { bi, hasLabel, label, t } from './i18n';

export interface Ctx {
  me: import('./api').Me;
  main: HTMLElement;
  go: (hash: string) => void;
  refreshMe: () => Promise<import('./api').Me>;
}

/** The message of an API error in the current language: the server's own half, or the code's label. */
export function errorText(x: ApiError): string {
  const own = bi(x.body.message);
  if (own) return own;
  return hasLabel('error', x.body.code) ? label('error', x.body.code) : t('error_generic');
}

export function errorBox(x: unknown): HTMLElement {
  if (x instanceof ApiError) {
    const code = x.body.code;
    const title = hasLabel('error', code) ? label('error', code) : t('error_generic');
    const own = bi(x.body.message);
    const fields = (x.body as { fields?: { field: string; message: string }[] }).fields ?? [];
    return h(
      'div',
      { class: 'error-box', role: 'alert', 'data-code': code },
      h('strong', { class: 'code' }, title),
      ' ',
      h('span', { class: 'msg' }, own && own !== title ? own : ''),
      fields.length
        ? h(
            'ul',
            { class: 'field-errors' },
            fields.map((f) => h('li', { 'data-field': f.field }, bi(f.message) ?? t('error_generic'))),
          )
        : null,
      x.body.ref ? h('small', { class: 'ref' }, ` ${t('error_ref')}: `, h('code', { translate: 'no' }, x.body.ref)) : null,
    );
  }
  return h('div', { class: 'error-box', role: 'alert', title: String(x) }, t('error_generic'));
}

export function statusBadge(status: string): HTMLElement {
  return h('span', { class: `badge st-${status}`, 'data-status': status }, label('status', status));
}

export function note(text: string, kind: 'info' | 'error' = 'info'): HTMLElement {
  return h('div', { class: `flash ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

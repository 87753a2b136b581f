import { fmtDateTime, fmtDay } from './i18n';

// Tiny DOM helpers. Every piece of text goes in through textContent (never innerHTML),
// so values coming from the server can never become markup.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v as EventListener);
    } else if (k === 'class') {
      el.className = String(v);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el: HTMLElement, children: (Child | Child[])[]) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el: HTMLElement, ...children: (Child | Child[])[]) {
  el.replaceChildren();
  append(el, children);
}

let idSeq = 0;
export function uid(prefix = 'k'): string {
  idSeq += 1;
  return `${prefix}-${idSeq}`;
}

/** A labelled form control: the label is bound by id so screen readers announce it. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id || uid('f');
  control.id = id;
  const hintEl = hint ? h('small', { class: 'hint', id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl);
}

/** A server time or date for people: instants in JST with the zone named, dates as 2026年12月1日. */
export function fmtDate(s: string | null | undefined): string {
  if (!s) return '—';
  return s.length > 10 ? fmtDateTime(s) : fmtDay(s);
}

/** Hand a downloaded file to the browser under `name` (the object URL is freed afterwards). */
export function saveBlob(blob: Blob, name: string) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// The application form: the fields of form 1 (様式第1号) and its annex (別紙) of seed 002,
// labelled in Japanese with English, mapped to the JSON of /api/v1/applications.
import { clear, field, fmtDate, h } from '../dom';
import { fmtDay, fmtFy, fmtNum, Key, label, t } from '../i18n';
import type { Domains } from '../labels';
import { scopeView } from './apps';

export interface NamedUser {
  username: string;
  affiliation?: string;
  title?: string;
}

export type Form = Record<string, unknown>;

type Kind = 'text' | 'textarea' | 'numbers' | 'strings' | 'date' | 'users' | 'datasets';

// Keys are paths into control's `ApplicationForm` JSON (src/store/model.rs).
export const FIELDS: { key: string; label: Key; kind: Kind; required?: boolean }[] = [
  { key: 'title', label: 'f_title', kind: 'text', required: true },
  { key: 'research_group', label: 'f_research_group', kind: 'text', required: true },
  { key: 'applicant.affiliation', label: 'f_applicant_affiliation', kind: 'text', required: true },
  { key: 'applicant.title', label: 'f_applicant_title', kind: 'text' },
  { key: 'applicant.name', label: 'f_applicant_name', kind: 'text', required: true },
  // seeds (issue 16 §5): a co-investigator names the research lead, who consents (form 3)
  { key: 'lead_investigator', label: 'f_lead_investigator', kind: 'text' },
  { key: 'diseases', label: 'f_diseases', kind: 'numbers', required: true },
  { key: 'purpose', label: 'f_purpose', kind: 'textarea', required: true },
  { key: 'necessity', label: 'f_necessity', kind: 'textarea' },
  { key: 'expected_results', label: 'f_expected', kind: 'textarea' },
  { key: 'prior_work', label: 'f_prior_work', kind: 'textarea' },
  { key: 'plan_and_methods', label: 'f_plan', kind: 'textarea', required: true },
  { key: 'ethics_review.committee', label: 'f_ethics_committee', kind: 'text', required: true },
  { key: 'ethics_review.approval_number', label: 'f_ethics_number', kind: 'text', required: true },
  { key: 'other_matters', label: 'f_other', kind: 'textarea' },
  { key: 'named_users', label: 'f_named_users', kind: 'users', required: true },
  { key: 'scope.datasets', label: 'f_datasets', kind: 'datasets' },
  { key: 'scope.fiscal_years', label: 'f_fiscal_years', kind: 'numbers', required: true },
  { key: 'scope.prefectures', label: 'f_regions', kind: 'strings' },
  { key: 'term.start', label: 'f_term_start', kind: 'date', required: true },
  { key: 'term.end', label: 'f_term_end', kind: 'date', required: true },
  { key: 'place_of_use', label: 'f_place_of_use', kind: 'textarea' },
  // seeds (issue 16 §1): the place of use as networks, suggested to the reviewer
  { key: 'networks', label: 'f_networks', kind: 'strings' },
  { key: 'publication_plan', label: 'f_publication', kind: 'textarea' },
  { key: 'contact', label: 'f_contact', kind: 'textarea' },
];

export function getPath(obj: Form, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (!cur || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function setPath(obj: Form, path: string, value: unknown) {
  const parts = path.split('.');
  let cur = obj;
  for (const part of parts.slice(0, -1)) {
    if (!cur[part] || typeof cur[part] !== 'object') cur[part] = {};
    cur = cur[part] as Form;
  }
  cur[parts[parts.length - 1]] = value;
}

const DATASETS = ['nanbyo', 'als', 'regen', 'jasmin'];

function toText(kind: Kind, v: unknown): string {
  if (v === undefined || v === null) return '';
  if (kind === 'users' && Array.isArray(v))
    return (v as (NamedUser | string)[])
      .map((u) => (typeof u === 'string' ? u : [u.username, u.affiliation, u.title].filter((x) => x).join(', ')))
      .join('\n');
  if (Array.isArray(v)) return v.join(', ');
  return String(v);
}

export function fromText(kind: Kind, s: string): unknown {
  const list = s.split(/[,、\s]+/).map((x) => x.trim()).filter((x) => x);
  switch (kind) {
    case 'numbers':
      return list.map((x) => Number(x)).filter((n) => Number.isFinite(n));
    case 'strings':
      return list;
    case 'users':
      return s
        .split('\n')
        .map((line) => line.split(/[,、]/).map((x) => x.trim()))
        .filter((p) => p[0])
        .map(([username, affiliation, title]) => ({ username, affiliation: affiliation ?? '', title: title ?? '' }));
    default:
      return s;
  }
}

/** Build the editable form; `read()` returns the JSON document. */
export function formEditor(initial: Form, readonly = false): { el: HTMLElement; read: () => Form } {
  const readers: (() => [string, unknown])[] = [];
  const el = h('div', { class: 'app-form' });
  const body: HTMLElement[] = [h('h2', {}, t('form1_title'))];
  for (const f of FIELDS) {
    const id = `f-${f.key}`;
    if (f.kind === 'datasets') {
      const chosen = new Set((getPath(initial, f.key) as string[] | undefined) ?? ['nanbyo']);
      const boxes = DATASETS.map((d) => h('input', { type: 'checkbox', id: `${id}-${d}`, value: d, checked: chosen.has(d), disabled: readonly }));
      body.push(
        h(
          'fieldset',
          { class: 'field' },
          h('legend', {}, t(f.label)),
          DATASETS.map((d, i) => h('label', { class: 'check', for: `${id}-${d}` }, boxes[i], ` ${label('dataset', d)}`)),
        ),
      );
      readers.push(() => [f.key, boxes.filter((b) => b.checked).map((b) => b.value)]);
      continue;
    }
    const value = toText(f.kind, getPath(initial, f.key));
    const control =
      f.kind === 'textarea' || f.kind === 'users'
        ? h('textarea', { id, rows: f.kind === 'users' ? 3 : 3, readonly, required: f.required, 'data-key': f.key })
        : h('input', { id, type: f.kind === 'date' ? 'date' : 'text', readonly, required: f.required, 'data-key': f.key });
    (control as HTMLInputElement).value = value;
    body.push(field(t(f.label) + (f.required ? ' *' : ''), control));
    readers.push(() => [f.key, fromText(f.kind, (control as HTMLInputElement).value)]);
  }
  clear(el, body);
  return {
    el,
    read: () => {
      const out: Form = {};
      for (const r of readers) {
        const [k, v] = r();
        setPath(out, k, v);
      }
      const scope = out['scope'] as Form;
      // An empty region list means nationwide (全国), which the API spells as null.
      if (Array.isArray(scope['prefectures']) && scope['prefectures'].length === 0) scope['prefectures'] = null;
      const term = out['term'] as Form;
      if (!term['start'] && !term['end']) out['term'] = null;
      // No research lead named: the applicant is the lead (no form 3).
      if (!out['lead_investigator']) out['lead_investigator'] = null;
      return out;
    },
  };
}

/** The form document of an application record, whatever envelope the server uses. */
export function formOf(app: Record<string, unknown>): Form {
  const f = app['pending_change'] ?? app['form'];
  return (f && typeof f === 'object' ? f : app) as Form;
}

/** Whether a date range crosses a Japanese fiscal year (1 April – 31 March). */
export function crossesFiscalYear(start: string, end: string): boolean {
  if (!start || !end) return false;
  const fy = (d: string) => {
    const [y, m] = d.split('-').map(Number);
    return m >= 4 ? y : y - 1;
  };
  return fy(start) !== fy(end) || end < start;
}

/**
 * The application read-only, as text (issue 17 §4): every form-1 field with its label and
 * value, disease numbers and prefectures with their names, fiscal years as 年度. Used where
 * nothing may be edited (an approved application, the reviewer's reading), so nothing looks
 * editable.
 */
export function formView(form: Form, names?: { label: (column: string, v: unknown) => string | null }): HTMLElement {
  const named = (column: string, v: unknown) => {
    const n = names?.label(column, v);
    return n ? `${v} ${n}` : String(v);
  };
  const dl = h('dl', { class: 'form-view', id: 'application-text' });
  for (const f of FIELDS) {
    const v = getPath(form, f.key);
    let text: string | HTMLElement;
    if (v === undefined || v === null || v === '' || (Array.isArray(v) && v.length === 0)) {
      text = f.key === 'scope.prefectures' ? t('scope_nationwide') : '—';
    } else if (f.key === 'diseases' && Array.isArray(v)) text = v.map((d) => named('disease_no', d)).join(t('comma'));
    else if (f.key === 'scope.prefectures' && Array.isArray(v)) text = v.map((p) => named('prefecture_code', p)).join(t('comma'));
    else if (f.key === 'scope.fiscal_years' && Array.isArray(v)) text = v.map((y) => fmtFy(String(y))).join(t('comma'));
    else if (f.key === 'scope.datasets' && Array.isArray(v)) text = v.map((d) => label('dataset', String(d))).join(t('comma'));
    else if (f.kind === 'date') text = fmtDay(String(v));
    else if (f.kind === 'users' && Array.isArray(v))
      text = h(
        'ul',
        {},
        (v as (NamedUser | string)[]).map((u) =>
          h('li', { translate: 'no' }, typeof u === 'string' ? u : [u.username, u.affiliation, u.title].filter((x) => x).join(t('comma'))),
        ),
      );
    else text = h('span', { class: 'pre-line', translate: 'no' }, toText(f.kind, v));
    dl.append(h('dt', {}, t(f.label)), h('dd', { 'data-key': f.key }, text));
  }
  return h('section', { class: 'card app-form-view' }, h('h2', {}, t('form1_title')), dl);
}

/** The terms of an approval as a readable form (never a JSON dump). */
export function approvalView(a: Record<string, unknown>, domains?: Domains): HTMLElement {
  const term = (a['term'] ?? {}) as { start?: string; end?: string };
  const bounds = a['dp_bounds'] as { max_groups_per_patient?: number; max_rows_per_group?: number } | null | undefined;
  const rows: [string, string | HTMLElement][] = [
    [t('term'), t('term_range', { start: fmtDay(term.start), end: fmtDay(term.end) })],
    [t('scope'), scopeView(a['scope'] as Record<string, unknown> | undefined, domains)],
    [t('mode'), label('mode', String(a['mode'] ?? 'suppression'))],
    [t('k_threshold'), String(a['k'] ?? '—')],
  ];
  if (a['mode'] === 'dp') {
    rows.push([t('epsilon_budget'), typeof a['epsilon_budget'] === 'number' ? fmtNum(a['epsilon_budget'] as number, 3) : '—']);
    if (bounds) rows.push([t('dp_bounds_terms'), `${bounds.max_groups_per_patient ?? '—'} / ${bounds.max_rows_per_group ?? '—'}`]);
  }
  if (a['approved_by']) rows.push([t('approved_by'), h('span', { translate: 'no' }, String(a['approved_by']))]);
  if (a['approved_at']) rows.push([t('approved_at'), fmtDate(String(a['approved_at']))]);
  return h(
    'section',
    { class: 'card approval-terms', id: 'approval-terms' },
    h('h2', {}, t('approval_terms')),
    h('dl', {}, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
  );
}

// The public transparency register (issue 16 §3, seed 003): shown at #/register to anyone,
// without a session. It reads only GET /api/v1/public/studies, which carries nothing but what
// the reviewers published at approval, approved releases and reported publications.
import { api } from '../api';
import { clear, h } from '../dom';
import { getLang, t } from '../i18n';
import { statusBadge } from '../ui';

interface PublicStudy {
  id: string;
  title: string;
  institution: string;
  summary: string;
  datasets: string[];
  diseases: number[] | null;
  fiscal_years: number[] | null;
  regions: string[] | null;
  term: { start: string; end: string };
  status: string;
  approved_on: string;
  releases: { id: string; requested_on: string }[];
  publications: { citation: string; published_on: string }[];
}

interface Usage {
  fiscal_year: number;
  dataset: string;
  studies: number;
  queries: number;
  standing_queries: number;
}

interface Register {
  generated_at: string;
  studies: PublicStudy[];
  usage: Usage[];
}

function list(v: (string | number)[] | null, all: string): string {
  return v && v.length ? v.join(', ') : all;
}

function studyCard(s: PublicStudy): HTMLElement {
  const dl = (rows: [string, string][]) =>
    h('dl', { class: 'facts' }, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  return h(
    'article',
    { class: 'card study', 'data-study': s.id },
    h('h3', {}, `${s.id} `, statusBadge(s.status)),
    h('p', { class: 'study-title' }, s.title || '—'),
    dl([
      [t('register_institution'), s.institution || '—'],
      [t('register_summary'), s.summary || '—'],
      [t('register_datasets'), s.datasets.join(', ')],
      [t('register_diseases'), list(s.diseases, t('register_all'))],
      [t('register_years'), list(s.fiscal_years, t('register_all'))],
      [t('register_regions'), list(s.regions, t('register_nationwide'))],
      [t('term'), `${s.term.start} – ${s.term.end}`],
    ]),
    h('h4', {}, t('register_releases')),
    s.releases.length
      ? h('ul', { class: 'releases' }, s.releases.map((r) => h('li', {}, `${r.requested_on} ${r.id}`)))
      : h('p', {}, t('none')),
    h('h4', {}, t('register_publications')),
    s.publications.length
      ? h('ul', { class: 'publications' }, s.publications.map((p) => h('li', {}, `${p.published_on} — ${p.citation}`)))
      : h('p', {}, t('none')),
  );
}

function usageTable(rows: Usage[]): HTMLElement {
  if (!rows.length) return h('p', {}, t('none'));
  return h(
    'table',
    { class: 'grid', id: 'register-usage' },
    h(
      'thead',
      {},
      h('tr', {}, [t('usage_fy'), t('register_datasets'), t('register_studies_count'), t('register_queries'), t('register_standing')].map((x) => h('th', { scope: 'col' }, x))),
    ),
    h(
      'tbody',
      {},
      rows.map((u) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, String(u.fiscal_year)),
          h('td', {}, u.dataset),
          h('td', { class: 'num' }, String(u.studies)),
          h('td', { class: 'num' }, String(u.queries)),
          h('td', { class: 'num' }, String(u.standing_queries)),
        ),
      ),
    ),
  );
}

/** Render the register into `main` (no session needed). */
export async function renderRegister(main: HTMLElement) {
  document.title = `${t('register_title')} — kura`;
  const r = await api<Register>('GET', '/public/studies');
  clear(
    main,
    h('h1', {}, t('register_title')),
    h('p', { id: 'register-intro', lang: getLang() }, t('register_intro')),
    h('h2', {}, t('register_studies')),
    r.studies.length ? h('div', { id: 'register-studies' }, r.studies.map(studyCard)) : h('p', { id: 'register-studies' }, t('register_none')),
    h('h2', {}, t('register_usage')),
    usageTable(r.usage),
  );
}

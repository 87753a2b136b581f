// The output airlock (成果物の持ち出し審査, issue 13 §1): the release request from notebook
// results, the researcher's requests with their downloads, the reviewer's release inbox with the
// sealed snapshot (table, chart, each cell's rule outcomes), approve/reject with a comment and the
// second-checker state, and the release register. Values only ever enter the page as text.
import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip } from 'chart.js';
import { api, apiBlob, Column, Disclosure, listOf, qs } from '../api';
import { clear, field, fmtDate, h, saveBlob, uid } from '../dom';
import { bi, Key, label as codeLabel, t } from '../i18n';
import { Ctx, errorBox, note, statusBadge } from '../ui';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

interface Invalidation {
  code: string;
  message: string;
}

interface Release {
  id: string;
  application_id: string;
  requester: string;
  query_ids: string[];
  justification: string;
  publication: string;
  status: string;
  checkers_required: number;
  approvals: number;
  created_at: string;
  decided_at?: string | null;
  invalidation?: Invalidation | null;
}

interface RuleOutcome {
  rule: string;
  outcome: string;
}

interface CellRecord {
  status: string;
  contributors?: { low: number; high?: number | null };
  rules: RuleOutcome[];
  reason?: string;
  rounding?: number;
  dp?: { epsilon: number; noise_scale: number; ci95?: [number, number] | null };
}

interface ColumnRecord {
  name: string;
  kind: string;
  rules: string[];
  rounding?: number;
  dp?: Record<string, unknown>;
}

interface FileInfo {
  name: string;
  media_type: string;
  bytes: number;
  sha256: string;
}

interface Snapshot {
  position: number;
  name: string;
  query_id: string;
  sql: string;
  plan_fingerprint: string;
  extract_id: string;
  mode: string;
  answered_at: string;
  result_sha256: string;
  columns: Column[];
  rows: unknown[][];
  disclosure: Disclosure;
  csv: string;
  column_rules: ColumnRecord[];
  cells: CellRecord[][];
  files: FileInfo[];
}

interface Decision {
  reviewer: string;
  decision: string;
  comment: string;
  at: string;
}

interface Download {
  name: string;
  username: string;
  at: string;
  sha256: string;
}

interface ReleaseView extends Release {
  outputs: Snapshot[];
  decisions: Decision[];
  files: FileInfo[];
  downloads: Download[];
  can_decide: boolean;
}

interface RegisterEntry {
  release: string;
  application: string;
  requester: string;
  justification: string;
  publication: string;
  requested_at: string;
  approved_at?: string | null;
  checkers: Decision[];
  files: FileInfo[];
  downloads: Download[];
}

/** A translated label whose key is built from a server code, falling back to the code. */
function label(prefix: string, code: string): string {
  try {
    return t(`${prefix}${code}` as Key);
  } catch {
    return code;
  }
}

function checksText(r: Release): string {
  return t('rel_checkers_state', { n: r.approvals, of: r.checkers_required });
}

// ---------------------------------------------------------------- request (from a notebook)

/** The request form: the notebook's answered results (this one ticked), justification, publication. */
export function releaseRequestForm(current: string): HTMLElement {
  const box = h('form', { class: 'release-form card', 'aria-label': t('rel_request_title') });
  const results = [...document.querySelectorAll<HTMLElement>('.result[data-query]')];
  const seen = new Set<string>();
  const choices = results
    .filter((r) => {
      const q = r.dataset.query ?? '';
      if (!q || seen.has(q)) return false;
      seen.add(q);
      return true;
    })
    .map((r, i) => {
      const q = r.dataset.query ?? '';
      const sql = (r.dataset.sql ?? '').replace(/\s+/g, ' ').slice(0, 90);
      const id = uid('rel-pick');
      return h(
        'div',
        { class: 'rel-choice' },
        h('input', { type: 'checkbox', id, class: 'rel-pick', value: q, checked: q === current }),
        h('label', { for: id }, `[${i + 1}] `, h('code', { translate: 'no' }, sql || q)),
      );
    });
  const just = h('textarea', { id: uid('rel-just'), class: 'rel-justification', rows: 3, maxlength: '4000', required: true });
  const publ = h('input', { id: uid('rel-pub'), class: 'rel-publication', maxlength: '4000' });
  const msg = h('div', { class: 'rel-msg', 'aria-live': 'polite' });
  const send = h('button', { type: 'submit', class: 'primary rel-submit' }, t('rel_submit'));
  box.addEventListener('submit', async (e) => {
    e.preventDefault();
    const ids = [...box.querySelectorAll<HTMLInputElement>('.rel-pick:checked')].map((c) => c.value);
    try {
      const r = await api<Release>('POST', '/releases', { query_ids: ids, justification: just.value, publication: publ.value });
      clear(msg, note(t('rel_sent', { id: r.id })), h('a', { href: `#/releases/${encodeURIComponent(r.id)}`, class: 'rel-link' }, r.id));
      send.disabled = true;
    } catch (x) {
      clear(msg, errorBox(x));
    }
  });
  clear(
    box,
    h('h3', {}, t('rel_request_title')),
    h('fieldset', {}, h('legend', {}, t('rel_pick_results')), choices.length ? choices : h('p', {}, t('rel_pick_none'))),
    field(t('rel_justification'), just),
    field(t('rel_publication'), publ),
    send,
    msg,
  );
  return box;
}

// ---------------------------------------------------------------- lists

function listTable(list: Release[]): HTMLElement {
  if (!list.length) return h('p', { id: 'release-list' }, t('rel_none'));
  return h(
    'table',
    { class: 'grid', id: 'release-list' },
    h(
      'thead',
      {},
      h('tr', {}, [t('rel_id'), t('rel_application'), t('rel_requester'), t('rel_requested_at'), t('rel_status'), t('rel_checkers')].map((x) => h('th', { scope: 'col' }, x))),
    ),
    h(
      'tbody',
      {},
      list.map((r) =>
        h(
          'tr',
          { class: 'release', 'data-id': r.id, 'data-status': r.status, 'data-application': r.application_id },
          h('td', {}, h('a', { href: `#/releases/${encodeURIComponent(r.id)}`, class: 'release-open' }, r.id)),
          h('td', {}, r.application_id),
          h('td', {}, r.requester),
          h('td', {}, fmtDate(r.created_at)),
          h('td', {}, statusBadge(r.status)),
          h('td', { class: 'checks' }, checksText(r)),
        ),
      ),
    ),
  );
}

function byApplication(list: Release[]): HTMLElement {
  const counts = new Map<string, { pending: number; decided: number }>();
  for (const r of list) {
    const c = counts.get(r.application_id) ?? { pending: 0, decided: 0 };
    if (r.status === 'pending') c.pending += 1;
    else c.decided += 1;
    counts.set(r.application_id, c);
  }
  return h(
    'table',
    { class: 'grid', id: 'release-counts' },
    h('caption', {}, t('rel_by_app')),
    h('thead', {}, h('tr', {}, [t('rel_application'), t('rel_filter_pending'), t('rel_filter_decided')].map((x) => h('th', { scope: 'col' }, x)))),
    h(
      'tbody',
      {},
      [...counts.entries()].map(([app, c]) => h('tr', { 'data-application': app }, h('td', {}, app), h('td', { class: 'num pending-count' }, String(c.pending)), h('td', { class: 'num' }, String(c.decided)))),
    ),
  );
}

async function renderList(ctx: Ctx) {
  const roles = ctx.me.roles;
  const reviewer = roles.includes('reviewer');
  const title = reviewer ? t('rel_inbox_title') : roles.includes('auditor') ? t('rel_all_title') : t('rel_my_title');
  document.title = `${title} — kura`;
  const box = h('div', { id: 'release-box' });
  const filters: [string, Key][] = [
    ['pending', 'rel_filter_pending'],
    ['decided', 'rel_filter_decided'],
    ['', 'rel_filter_all'],
  ];
  let current = reviewer ? 'pending' : '';
  const tabs = h('div', { class: 'tabs', role: 'group', 'aria-label': t('rel_status') });
  const load = async () => {
    for (const b of tabs.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.status === current));
    try {
      const all = listOf<Release>(await api('GET', '/releases'), 'releases');
      const shown = all.filter((r) => current === '' || (current === 'pending' ? r.status === 'pending' : r.status !== 'pending'));
      clear(box, all.length ? byApplication(all) : null, listTable(shown));
    } catch (x) {
      clear(box, errorBox(x));
    }
  };
  for (const [status, key] of filters) {
    tabs.append(
      h('button', { type: 'button', class: 'tab', 'data-status': status, onclick: () => { current = status; void load(); } }, t(key)),
    );
  }
  clear(ctx.main, h('h1', {}, title), tabs, box);
  await load();
}

// ---------------------------------------------------------------- the snapshot

function marker(s: Snapshot): string {
  return s.disclosure.mode === 'dp' ? '—' : `<${s.disclosure.threshold ?? 5}`;
}

function cellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(3);
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** The record of one cell as a list: status, band, reason, each rule's outcome, noise. */
function cellRecord(s: Snapshot, r: number, c: number): HTMLElement {
  const rec = s.cells[r]?.[c];
  if (!rec) return h('p', {}, t('none'));
  const items: (HTMLElement | null)[] = [
    h('li', { class: 'cell-status' }, `${t('rel_status')}: `, statusBadge(rec.status)),
    rec.contributors
      ? h('li', { class: 'cell-band' }, `${t('rel_contributors')}: ${rec.contributors.low}${rec.contributors.high ? `–${rec.contributors.high}` : '+'}`)
      : null,
    rec.reason ? h('li', { class: 'cell-reason' }, `${t('rel_reason')}: ${label('reason_', rec.reason)}`) : null,
    rec.rounding ? h('li', {}, `${t('rel_rounding')}: ${rec.rounding}`) : null,
    rec.dp
      ? h('li', { class: 'cell-noise' }, `${t('rel_noise')}: ε=${rec.dp.epsilon}, scale ${rec.dp.noise_scale.toFixed(2)}${rec.dp.ci95 ? `, 95% [${rec.dp.ci95[0].toFixed(1)}, ${rec.dp.ci95[1].toFixed(1)}]` : ''}`)
      : null,
    ...rec.rules.map((o) =>
      h('li', { class: `rule rule-${o.outcome}`, 'data-rule': o.rule, 'data-outcome': o.outcome }, `${label('rule_', o.rule)}: ${label('rel_outcome_', o.outcome)}`),
    ),
  ];
  return h(
    'div',
    {},
    h('h4', {}, t('rel_cell_at', { row: r + 1, col: s.columns[c]?.name ?? c })),
    h('ul', { class: 'cell-rules' }, items.filter((x): x is HTMLElement => x !== null)),
  );
}

function snapshotTable(s: Snapshot, inspector: HTMLElement): HTMLElement {
  const hidden = new Set((s.disclosure.suppressed ?? []).map(([r, c]) => `${r}:${c}`));
  const mark = marker(s);
  const show = (r: number, c: number) => clear(inspector, cellRecord(s, r, c));
  return h(
    'table',
    { class: 'grid snapshot-table' },
    h(
      'thead',
      {},
      h('tr', {}, s.columns.map((c) => h('th', { scope: 'col', title: codeLabel('type', c.type) }, c.name))),
      h(
        'tr',
        { class: 'column-rules' },
        s.column_rules.map((c) => h('td', { class: `kind-${c.kind}` }, [c.kind, ...c.rules.map((r) => label('rule_', r))].join(' · '))),
      ),
    ),
    h(
      'tbody',
      {},
      s.rows.map((row, r) =>
        h(
          'tr',
          {},
          row.map((v, c) => {
            const suppressed = hidden.has(`${r}:${c}`);
            const shown = suppressed ? mark : cellText(v);
            return h(
              'td',
              {
                class: suppressed ? 'suppressed cell' : typeof v === 'number' ? 'num cell' : 'cell',
                tabindex: '0',
                role: 'button',
                'data-row': r,
                'data-col': c,
                'data-suppressed': suppressed ? 'true' : null,
                // The accessible name starts with what the cell shows (WCAG 2.5.3, label in name).
                'aria-label': `${shown} — ${t('rel_cell_at', { row: r + 1, col: s.columns[c]?.name ?? c })}`,
                onclick: () => show(r, c),
                onkeydown: (e: Event) => {
                  const k = (e as KeyboardEvent).key;
                  if (k === 'Enter' || k === ' ') {
                    e.preventDefault();
                    show(r, c);
                  }
                },
              },
              shown,
            );
          }),
        ),
      ),
    ),
  );
}

function snapshotChart(s: Snapshot, box: HTMLElement) {
  const kinds = s.column_rules.map((c) => c.kind);
  const keys = kinds.map((k, i) => (k === 'key' ? i : -1)).filter((i) => i >= 0);
  const y = kinds.map((k, i) => (k === 'protected' || k === 'noised' ? i : -1)).filter((i) => i >= 0).pop();
  if (y === undefined) {
    clear(box, h('p', {}, t('none')));
    return;
  }
  const x = keys[0] ?? -1;
  const si = keys[1] ?? -1;
  const hidden = new Set((s.disclosure.suppressed ?? []).map(([r, c]) => `${r}:${c}`));
  const labels: string[] = [];
  const series = new Map<string, Map<string, number | null>>();
  s.rows.forEach((row, r) => {
    const xl = x >= 0 ? cellText(row[x]) : '';
    if (!labels.includes(xl)) labels.push(xl);
    const name = si >= 0 ? cellText(row[si]) : s.columns[y].name;
    if (!series.has(name)) series.set(name, new Map());
    const v = hidden.has(`${r}:${y}`) || typeof row[y] !== 'number' ? null : (row[y] as number);
    series.get(name)!.set(xl, v);
  });
  const palette = ['#5b3a1e', '#c0632b', '#3a6ea5', '#6a994e', '#8e5ea2', '#d1a12b', '#4d908e', '#b23a48'];
  const canvas = h('canvas', { role: 'img', 'aria-label': `${t('rel_chart')} ${s.name}` });
  clear(box, h('div', { class: 'chart-holder' }, canvas), h('small', {}, t('chart_suppressed_note')));
  new Chart(canvas, {
    type: 'bar',
    data: {
      labels,
      datasets: [...series.entries()].map(([name, m], i) => ({
        label: name,
        data: labels.map((l) => m.get(l) ?? null),
        backgroundColor: palette[i % palette.length],
      })),
    },
    options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true, title: { display: true, text: s.columns[y].name } } } },
  });
  box.dataset.drawn = 'true';
}

function outputSection(s: Snapshot): HTMLElement {
  const inspector = h('aside', { class: 'cell-inspector card', 'aria-live': 'polite' }, h('p', {}, t('rel_cell_hint')));
  const tableBox = h('div', { class: 'table-box' }, snapshotTable(s, inspector));
  const chartBox = h('div', { class: 'chart-box', hidden: true });
  const tableBtn = h('button', { type: 'button', class: 'tab', 'aria-pressed': 'true' }, t('rel_table'));
  const chartBtn = h('button', { type: 'button', class: 'tab chart-tab', 'aria-pressed': 'false' }, t('rel_chart'));
  tableBtn.addEventListener('click', () => {
    tableBox.hidden = false;
    chartBox.hidden = true;
    tableBtn.setAttribute('aria-pressed', 'true');
    chartBtn.setAttribute('aria-pressed', 'false');
  });
  chartBtn.addEventListener('click', () => {
    tableBox.hidden = true;
    chartBox.hidden = false;
    tableBtn.setAttribute('aria-pressed', 'false');
    chartBtn.setAttribute('aria-pressed', 'true');
    if (!chartBox.dataset.drawn) snapshotChart(s, chartBox);
  });
  const facts: [string, string][] = [
    [t('rel_fingerprint'), s.plan_fingerprint],
    [t('rel_extract'), s.extract_id],
    [t('rel_mode'), codeLabel('mode', s.mode)],
    [t('rel_answered_at'), fmtDate(s.answered_at)],
  ];
  return h(
    'section',
    { class: 'card output', 'data-output': s.name },
    h('h2', {}, t('rel_output', { name: s.name })),
    h('pre', { class: 'sql', 'aria-label': t('rel_sql') }, s.sql),
    h('dl', { class: 'facts' }, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    h('div', { class: 'tabs', role: 'group' }, tableBtn, chartBtn),
    h('div', { class: 'snapshot-layout' }, tableBox, chartBox, inspector),
    (s.disclosure.notes ?? []).length ? h('ul', { class: 'notes' }, (s.disclosure.notes ?? []).map((n) => h('li', {}, bi(n) ?? n))) : null,
  );
}

// ---------------------------------------------------------------- detail

async function saveFile(id: string, f: FileInfo, msg: HTMLElement, after: () => Promise<void>) {
  try {
    const blob = await apiBlob(`/releases/${encodeURIComponent(id)}/files/${encodeURIComponent(f.name)}`);
    saveBlob(blob, `${id}-${f.name}`);
    await after();
  } catch (x) {
    clear(msg, errorBox(x));
  }
}

function filesSection(v: ReleaseView, mine: boolean, reload: () => Promise<void>): HTMLElement {
  const msg = h('div', { class: 'files-msg' });
  const canDownload = mine && v.status === 'approved';
  const rows = v.files.map((f) =>
    h(
      'tr',
      { 'data-file': f.name },
      h('td', {}, f.name),
      h('td', { class: 'num' }, String(f.bytes)),
      h('td', { class: 'hash' }, f.sha256.slice(0, 16)),
      h('td', {}, canDownload ? h('button', { type: 'button', class: 'download', 'data-file': f.name, onclick: () => void saveFile(v.id, f, msg, reload) }, t('rel_download')) : ''),
    ),
  );
  return h(
    'section',
    { class: 'card', id: 'release-files' },
    h('h2', {}, t('rel_files')),
    canDownload ? null : h('p', {}, t('rel_files_after_approval')),
    h('table', { class: 'grid' }, h('tbody', {}, rows)),
    msg,
    v.downloads.length
      ? h(
          'div',
          {},
          h('h3', {}, t('rel_downloads')),
          h('ul', { id: 'release-downloads' }, v.downloads.map((d) => h('li', {}, `${fmtDate(d.at)} ${d.username} ${d.name}`))),
        )
      : null,
  );
}

function decisionsSection(v: ReleaseView, reload: () => Promise<void>): HTMLElement {
  const list = v.decisions.length
    ? h('ul', { id: 'decisions' }, v.decisions.map((d) => h('li', { 'data-reviewer': d.reviewer, 'data-decision': d.decision }, `${fmtDate(d.at)} ${d.reviewer} — ${codeLabel('status', d.decision === 'approve' ? 'approved' : 'rejected')}: `, h('span', { translate: 'no' }, d.comment))))
    : h('p', { id: 'decisions' }, t('rel_no_decisions'));
  const msg = h('div', { id: 'decision-msg', 'aria-live': 'polite' });
  let form: HTMLElement | null = null;
  if (v.can_decide) {
    const comment = h('textarea', { id: 'decision-comment', rows: 3, maxlength: '4000', required: true });
    const send = (decision: 'approve' | 'reject') => async () => {
      try {
        await api('POST', `/releases/${encodeURIComponent(v.id)}/decision`, { decision, comment: comment.value });
        await reload();
        document.getElementById('decision-msg')?.replaceChildren(note(t('rel_decided')));
      } catch (x) {
        clear(msg, errorBox(x));
      }
    };
    form = h(
      'div',
      { id: 'decision-form' },
      field(t('rel_comment'), comment),
      h('button', { type: 'button', id: 'approve', class: 'primary', onclick: send('approve') }, t('rel_approve')),
      ' ',
      h('button', { type: 'button', id: 'reject', class: 'danger', onclick: send('reject') }, t('rel_reject')),
    );
  }
  return h('section', { class: 'card' }, h('h2', {}, t('rel_decisions')), list, form, msg);
}

async function renderDetail(ctx: Ctx, id: string) {
  const v = await api<ReleaseView>('GET', `/releases/${encodeURIComponent(id)}`);
  document.title = `${t('rel_detail_title', { id })} — kura`;
  const mine = v.requester === ctx.me.username;
  const reload = async () => renderDetail(ctx, id);
  const waiting = v.status === 'pending' && v.approvals > 0 && v.approvals < v.checkers_required;
  const facts: [string, HTMLElement | string][] = [
    [t('rel_application'), v.application_id],
    [t('rel_requester'), v.requester],
    [t('rel_requested_at'), fmtDate(v.created_at)],
    [t('rel_status'), statusBadge(v.status)],
    [t('rel_checkers'), h('span', { id: 'checkers-state' }, checksText(v))],
    [t('rel_justification_label'), h('span', { translate: 'no' }, v.justification)],
    [t('rel_publication_label'), h('span', { translate: 'no' }, v.publication)],
  ];
  clear(
    ctx.main,
    h('p', {}, h('a', { href: '#/releases' }, `← ${t('nav_releases')}`)),
    h('h1', { id: 'release-title', 'data-status': v.status }, t('rel_detail_title', { id })),
    h('dl', { class: 'facts card' }, facts.flatMap(([k, x]) => [h('dt', {}, k), h('dd', {}, x)])),
    v.invalidation
      ? h('div', { class: 'error-box', role: 'alert', id: 'invalidation', 'data-code': v.invalidation.code }, h('strong', {}, `${t('rel_invalidated')} (${v.invalidation.code})`), ' ', v.invalidation.message)
      : null,
    waiting ? note(t('rel_second_checker')) : null,
    v.outputs.map(outputSection),
    decisionsSection(v, reload),
    !v.can_decide && ctx.me.roles.includes('reviewer') && !mine && v.status === 'pending' ? h('p', { class: 'hint' }, t('rel_cannot_decide')) : null,
    filesSection(v, mine, reload),
  );
}

export async function renderReleases(ctx: Ctx, id?: string) {
  if (id) await renderDetail(ctx, id);
  else await renderList(ctx);
}

// ---------------------------------------------------------------- register

export async function renderReleaseRegister(ctx: Ctx) {
  document.title = `${t('rel_register_title')} — kura`;
  const list = listOf<RegisterEntry>(await api('GET', `/releases/register${qs({})}`), 'register');
  const rows = list.map((e) =>
    h(
      'tr',
      { 'data-release': e.release },
      h('td', {}, h('a', { href: `#/releases/${encodeURIComponent(e.release)}` }, e.release)),
      h('td', {}, e.application),
      h('td', {}, e.requester),
      h('td', {}, fmtDate(e.approved_at)),
      h('td', {}, e.checkers.map((c) => c.reviewer).join(', ')),
      h('td', { translate: 'no' }, e.justification),
      h('td', { translate: 'no' }, e.publication),
      h('td', {}, h('ul', { class: 'files' }, e.files.map((f) => h('li', {}, `${f.name} ${f.sha256.slice(0, 12)}…`)))),
      h('td', { class: 'num downloads' }, String(e.downloads.length)),
    ),
  );
  clear(
    ctx.main,
    h('h1', {}, t('rel_register_title')),
    rows.length
      ? h(
          'table',
          { class: 'grid', id: 'release-register' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              [t('rel_id'), t('rel_application'), t('rel_requester'), t('rel_approved_at'), t('rel_checked_by'), t('rel_justification_label'), t('rel_publication_label'), t('rel_files'), t('rel_downloads')].map((x) =>
                h('th', { scope: 'col' }, x),
              ),
            ),
          ),
          h('tbody', {}, rows),
        )
      : h('p', { id: 'release-register' }, t('rel_none')),
  );
}

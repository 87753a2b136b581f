// Reviewer screens (issue 17 §4): an inbox with counts per status that opens on what needs
// action (submitted applications and change applications), and an application whose text
// comes first (read-only), then its approval terms as a readable form, its history and links
// (usage report, release requests), and only then the decisions: approve (term within one
// fiscal year, scope, mode, k, ε), ask for a correction, reject; on an approved application a
// corrective recommendation (是正勧告) or revocation.
import { api, listOf } from '../api';
import { clear, field, fmtDate, h } from '../dom';
import { fmtNum, label, t } from '../i18n';
import { plainDomains } from '../labels';
import { Ctx, errorBox, note, statusBadge } from '../ui';
import { AppRecord, historyList, normalizeApp } from './apply';
import { approvalView, crossesFiscalYear, formOf, formView, fromText, getPath } from './forms';
// seeds (issue 16 §1 §3): the place of use and the published fields of an approval
import { approvalExtras } from './consent';

const STATUSES = ['submitted', 'correction_requested', 'approved', 'rejected', 'revoked', 'expired', 'withdrawn', 'draft'];
const NEEDS_ACTION = 'needs_action';

function needsAction(a: AppRecord): boolean {
  return a.status === 'submitted' || !!a['pending_change'];
}

export async function renderReview(ctx: Ctx, id?: string) {
  document.title = `${t('nav_review')} — kura`;
  if (id) return renderReviewDetail(ctx, id);
  const all = listOf<AppRecord>(await api('GET', '/applications'), 'applications');
  const counts = new Map<string, number>([[NEEDS_ACTION, all.filter(needsAction).length]]);
  for (const s of STATUSES) counts.set(s, all.filter((a) => a.status === s).length);
  const name = (s: string) => (s === NEEDS_ACTION ? t('needs_action') : s === '' ? t('all') : label('status', s));
  const statusSel = h(
    'select',
    { id: 'status-filter' },
    [NEEDS_ACTION, ...STATUSES, ''].map((s) => h('option', { value: s }, `${name(s)}（${counts.get(s) ?? all.length}）`)),
  );
  statusSel.value = sessionStatus ?? NEEDS_ACTION;
  const listBox = h('div', {});
  const countBar = h('ul', { class: 'status-counts', id: 'inbox-counts', 'aria-label': t('inbox_counts') });
  const load = () => {
    sessionStatus = statusSel.value;
    const want = statusSel.value;
    const apps = all.filter((a) => (want === NEEDS_ACTION ? needsAction(a) : want === '' ? true : a.status === want));
    clear(
      countBar,
      [NEEDS_ACTION, ...STATUSES].map((s) =>
        h(
          'li',
          {},
          h(
            'button',
            { type: 'button', class: 'count-chip', 'data-status': s, 'aria-pressed': String(s === want), onclick: () => { statusSel.value = s; load(); } },
            name(s),
            ' ',
            h('span', { class: 'count', 'data-count': String(counts.get(s) ?? 0) }, fmtNum(counts.get(s) ?? 0, 0)),
          ),
        ),
      ),
    );
    clear(
      listBox,
      apps.length === 0
        ? h('p', { class: 'empty' }, want === NEEDS_ACTION ? t('inbox_empty_action') : t('none'))
        : h(
            'table',
            { class: 'grid', id: 'inbox' },
            h('thead', {}, h('tr', {}, [t('app_id'), t('applicant'), t('f_title'), t('status'), t('updated')].map((x) => h('th', { scope: 'col' }, x)))),
            h(
              'tbody',
              {},
              apps.map((a) =>
                h(
                  'tr',
                  { 'data-app': a.id },
                  h('th', { scope: 'row' }, h('a', { href: `#/review/${encodeURIComponent(a.id)}`, translate: 'no' }, a.id)),
                  h('td', { translate: 'no' }, String(a['applicant'] ?? '')),
                  h('td', { translate: 'no' }, String(a['title'] ?? formOf(a)['title'] ?? '')),
                  h('td', {}, statusBadge(a.status), a['pending_change'] ? h('span', { class: 'badge st-pending_change' }, label('status', 'pending_change')) : null),
                  h('td', {}, fmtDate(a['updated_at'] as string)),
                ),
              ),
            ),
          ),
    );
  };
  statusSel.addEventListener('change', () => load());
  clear(ctx.main, h('h1', {}, t('inbox')), countBar, field(t('filter_status'), statusSel), listBox);
  load();
}

let sessionStatus: string | null = null;

/** An empty region list means nationwide (全国), which the API spells as null. Diseases and years are never widened this way. */
function orNull(v: unknown): unknown {
  return Array.isArray(v) && v.length === 0 ? null : v;
}

function fiscalYearEnd(start: string): string {
  const [y, m] = start.split('-').map(Number);
  return `${m >= 4 ? y + 1 : y}-03-31`;
}

async function renderReviewDetail(ctx: Ctx, id: string) {
  const app = normalizeApp(await api('GET', `/applications/${encodeURIComponent(id)}`));
  const form = formOf(app);
  const msg = h('div', { class: 'messages', 'aria-live': 'polite' });
  const done = async () => {
    ctx.go(`#/review/${encodeURIComponent(id)}`);
  };
  const post = async (path: string, body: unknown) => {
    try {
      await api('POST', `/applications/${encodeURIComponent(id)}/${path}`, body);
      await done();
    } catch (x) {
      clear(msg, errorBox(x));
    }
  };

  const panels: HTMLElement[] = [];
  // A change application (pending_change) is reviewed like a submission while the approval stays in force.
  if (app.status === 'submitted' || app['pending_change']) {
    const today = new Date().toISOString().slice(0, 10);
    const start = h('input', { type: 'date', id: 'ap-start' });
    start.value = String(getPath(form, 'term.start') || today);
    const end = h('input', { type: 'date', id: 'ap-end' });
    end.value = String(getPath(form, 'term.end') || fiscalYearEnd(start.value));
    const datasets = h('input', { id: 'ap-datasets' });
    datasets.value = listOf<string>(getPath(form, 'scope.datasets')).join(', ') || 'nanbyo';
    const diseases = h('input', { id: 'ap-diseases' });
    diseases.value = listOf<number>(form['diseases']).join(', ');
    const years = h('input', { id: 'ap-years' });
    years.value = listOf<number>(getPath(form, 'scope.fiscal_years')).join(', ');
    const prefs = h('input', { id: 'ap-prefs' });
    prefs.value = listOf<string>(getPath(form, 'scope.prefectures')).join(', ');
    const mode = h('select', { id: 'ap-mode' }, h('option', { value: 'suppression' }, t('mode_suppression')), h('option', { value: 'dp' }, t('mode_dp')));
    const k = h('input', { type: 'number', id: 'ap-k', min: '2', value: '5' });
    const eps = h('input', { type: 'number', id: 'ap-eps', min: '0', step: '0.1', value: '1.0' });
    // Default contribution bounds of DP queries (blank: kura's defaults L=5, m=3).
    const dpL = h('input', { type: 'number', id: 'ap-dp-groups', min: '1', max: '1000', step: '1', placeholder: '5' });
    const dpM = h('input', { type: 'number', id: 'ap-dp-rows', min: '1', max: '1000', step: '1', placeholder: '3' });
    const dpBox = h(
      'div',
      { class: 'cols dp-terms', hidden: true },
      field(t('epsilon_budget'), eps),
      field(t('dp_default_groups'), dpL),
      field(t('dp_default_rows'), dpM),
    );
    mode.addEventListener('change', () => {
      dpBox.hidden = mode.value !== 'dp';
    });
    const extras = approvalExtras(form);
    const reason = h('textarea', { id: 'decision-reason', rows: 2 });
    const decide = (decision: string) => async () => {
      if (decision === 'approve' && crossesFiscalYear(start.value, end.value)) {
        clear(msg, note(t('fy_cross'), 'error'));
        end.focus();
        return;
      }
      if (decision !== 'approve' && !reason.value.trim()) {
        reason.focus();
        clear(msg, note(`${t('reason')} *`, 'error'));
        return;
      }
      const body: Record<string, unknown> = { decision, reason: reason.value };
      if (decision === 'approve') {
        Object.assign(body, {
          term: { start: start.value, end: end.value },
          datasets: fromText('strings', datasets.value),
          diseases: fromText('numbers', diseases.value),
          fiscal_years: fromText('numbers', years.value),
          prefectures: orNull(fromText('strings', prefs.value)),
          mode: mode.value,
          k: Number(k.value),
          epsilon_budget: mode.value === 'dp' ? Number(eps.value) : null,
        });
        if (mode.value === 'dp') {
          if (dpL.value.trim()) body['max_groups_per_patient'] = Number(dpL.value);
          if (dpM.value.trim()) body['max_rows_per_group'] = Number(dpM.value);
        }
        Object.assign(body, extras.read());
      }
      await post('decision', body);
    };
    panels.push(
      h(
        'section',
        { class: 'card decision', id: 'decision' },
        h('h2', {}, t('decision')),
        h(
          'div',
          { class: 'cols' },
          field(t('f_term_start'), start),
          field(t('f_term_end'), end, t('fy_cross')),
          field(t('f_datasets'), datasets),
          field(t('f_diseases'), diseases),
          field(t('f_fiscal_years'), years),
          field(t('f_regions'), prefs),
          field(t('mode'), mode),
          field(t('k_threshold'), k),
        ),
        dpBox,
        extras.el,
        field(t('reason'), reason),
        h(
          'div',
          { class: 'actions' },
          h('button', { type: 'button', class: 'primary', id: 'approve', onclick: decide('approve') }, t('approve')),
          h('button', { type: 'button', id: 'request-correction', onclick: decide('request_correction') }, t('request_correction')),
          h('button', { type: 'button', class: 'danger', id: 'reject', onclick: decide('reject') }, t('reject')),
        ),
      ),
    );
  }
  if (app.status === 'approved') {
    const rec = h('textarea', { id: 'recommendation-text', rows: 2 });
    const rev = h('textarea', { id: 'revoke-reason', rows: 2 });
    panels.push(
      h(
        'section',
        { class: 'card' },
        h('h2', {}, t('recommendation')),
        field(t('recommendation'), rec),
        h('button', { type: 'button', id: 'issue-recommendation', onclick: () => rec.value.trim() && void post('recommendations', { text: rec.value }) }, t('issue_recommendation')),
        h('h2', {}, t('revoke')),
        field(t('reason'), rev),
        h('button', { type: 'button', class: 'danger', id: 'revoke', onclick: () => rev.value.trim() && void post('revoke', { reason: rev.value }) }, t('revoke')),
      ),
    );
  }
  const approval = app['approval'] as Record<string, unknown> | null | undefined;
  const domains = await plainDomains();
  clear(
    ctx.main,
    h('p', {}, h('a', { href: '#/review' }, `← ${t('inbox')}`)),
    h('h1', {}, h('span', { translate: 'no' }, app.id), ' ', statusBadge(app.status)),
    h('p', {}, `${t('applicant')}: `, h('span', { translate: 'no' }, String(app['applicant'] ?? ''))),
    h(
      'nav',
      { class: 'links', 'aria-label': t('links') },
      h('a', { class: 'button', href: `#/reports?app=${encodeURIComponent(app.id)}`, id: 'link-usage' }, t('usage_report_link')),
      ' ',
      h('a', { class: 'button', href: `#/releases?application=${encodeURIComponent(app.id)}`, id: 'link-releases' }, t('releases_link')),
    ),
    formView(form, domains),
    approval ? approvalView(approval, domains) : null,
    app.status === 'approved' ? h('p', { class: 'hint', id: 'read-only-note' }, t('read_only_note')) : null,
    historyList(app),
    panels.length ? h('h2', { class: 'decisions-head' }, t('after_decision')) : null,
    msg,
    panels,
  );
}

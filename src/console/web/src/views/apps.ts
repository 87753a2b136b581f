// Researcher's application picker: every approval the user may use now, with its term,
// days left, scope, disclosure mode and remaining ε budget.
import { api, AppGrant, grantBudget, grantDaysLeft, grantId, grantMode, grantTerm, listOf } from '../api';
import { clear, h } from '../dom';
import { fmtDay, fmtFy, fmtNum, Key, label, t } from '../i18n';
import { Domains, plainDomains } from '../labels';
import { Ctx } from '../ui';

/**
 * An approval's scope for people: dataset names, disease numbers with their names, fiscal
 * years as 年度, prefectures with their names; a null dimension is "all" (全国 for regions).
 */
export function scopeView(scope: Record<string, unknown> | undefined, domains?: Domains): HTMLElement {
  const dl = h('dl', { class: 'scope-view' });
  if (!scope) return dl;
  const list = (key: string, empty: string, fmt: (v: unknown) => string) => {
    const v = scope[key];
    if (v === undefined) return;
    const text = Array.isArray(v) ? (v.length ? v.map(fmt).join(t('comma')) : empty) : v === null ? empty : fmt(v);
    dl.append(h('dt', {}, t(`scope_${key}` as Key)), h('dd', { 'data-scope': key }, text));
  };
  list('datasets', t('scope_all'), (d) => label('dataset', String(d)));
  list('diseases', t('scope_all'), (d) => withName('disease_no', d, domains));
  list('fiscal_years', t('scope_all_years'), (y) => fmtFy(String(y)));
  list('prefectures', t('scope_nationwide'), (p) => withName('prefecture_code', p, domains));
  list('manufacturers', t('scope_all'), (m) => withName('manufacturer_code', m, domains));
  list('products', t('scope_all'), (p) => withName('product_code', p, domains));
  return dl;
}

function withName(column: string, v: unknown, domains?: Domains): string {
  const name = domains?.label(column, v);
  return name ? `${v} ${name}` : String(v);
}

/** The scope as one line of text (used where a list does not fit). */
export function scopeSummary(scope: Record<string, unknown> | undefined, domains?: Domains): string {
  const dl = scopeView(scope, domains);
  const parts: string[] = [];
  dl.querySelectorAll('dt').forEach((dt) => parts.push(`${dt.textContent}: ${dt.nextElementSibling?.textContent ?? ''}`));
  return parts.join(' / ') || '—';
}

export function modeLabel(mode: string): string {
  return label('mode', mode);
}

export async function renderApps(ctx: Ctx) {
  document.title = `${t('nav_apps')} — kura`;
  const me = await ctx.refreshMe();
  const apps: AppGrant[] = me.applications ?? [];
  const domains = await plainDomains();
  const rows = apps.map((g) => {
    const id = grantId(g);
    const term = grantTerm(g);
    const budget = grantBudget(g);
    const pledgeMissing = g.pledge_accepted === false;
    return h(
      'tr',
      { 'data-app': id },
      h('th', { scope: 'row' }, h('span', { translate: 'no' }, id), g.title ? h('div', { class: 'app-title', translate: 'no' }, g.title) : null),
      h('td', { 'data-term': `${term.start}/${term.end}` }, term.start || term.end ? t('term_range', { start: fmtDay(term.start), end: fmtDay(term.end) }) : '—'),
      h('td', { class: 'num' }, grantDaysLeft(g) ?? '—'),
      h('td', { class: 'scope' }, scopeView(g.scope, domains)),
      h('td', {}, modeLabel(grantMode(g)), g.k || g.threshold ? ` (k=${g.k ?? g.threshold})` : ''),
      h('td', { class: 'num' }, budget === null ? '—' : fmtNum(budget, 3)),
      h(
        'td',
        { class: 'actions' },
        pledgeMissing
          ? h('a', { class: 'button primary', href: `#/apply/${encodeURIComponent(id)}` }, t('pledge'))
          : h('a', { class: 'button primary', href: `#/nb/${encodeURIComponent(id)}`, 'data-open': id }, t('nav_notebooks')),
        h('a', { class: 'button', href: `#/catalog/${encodeURIComponent(id)}` }, t('nav_catalog')),
        h('a', { class: 'button', href: `#/history/${encodeURIComponent(id)}` }, t('nav_history')),
      ),
    );
  });
  // Approved applications that are not usable yet: most often the pledge is still missing.
  const usable = new Set(apps.map(grantId));
  const waiting = listOf<{ id: string; title?: string }>(await api('GET', '/applications?status=approved').catch(() => [])).filter(
    (a) => !usable.has(a.id),
  );
  clear(
    ctx.main,
    h('h1', {}, t('pick_app')),
    waiting.length
      ? h(
          'div',
          { class: 'flash info', id: 'pledge-waiting' },
          t('approved_waiting'),
          ' ',
          waiting.map((a) => h('a', { class: 'button', href: `#/apply/${encodeURIComponent(a.id)}`, 'data-pledge': a.id, translate: 'no' }, `${a.id} ${a.title ?? ''}`)),
        )
      : null,
    apps.length === 0
      ? h('p', { class: 'empty' }, t('no_apps'))
      : h(
          'table',
          { class: 'grid', id: 'app-picker' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('th', { scope: 'col' }, t('app_id')),
              h('th', { scope: 'col' }, t('term')),
              h('th', { scope: 'col' }, t('days_left')),
              h('th', { scope: 'col' }, t('scope')),
              h('th', { scope: 'col' }, t('mode')),
              h('th', { scope: 'col' }, t('budget_left')),
              h('th', { scope: 'col' }, ''),
            ),
          ),
          h('tbody', {}, rows),
        ),
  );
}

// Researcher's application picker: every approval the user may use now, with its term,
// days left, scope, disclosure mode and remaining ε budget.
import { api, AppGrant, grantBudget, grantDaysLeft, grantId, grantMode, grantTerm, listOf } from '../api';
import { clear, h } from '../dom';
import { t } from '../i18n';
import { Ctx } from '../ui';

export function scopeSummary(scope: Record<string, unknown> | undefined): string {
  if (!scope) return '—';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(scope)) {
    // null in an approval's scope means "not restricted" on that dimension.
    if (Array.isArray(v)) parts.push(`${k}: ${v.join(', ')}`);
    else if (v === null) parts.push(`${k}: ${t('all')}`);
    else if (v !== undefined) parts.push(`${k}: ${String(v)}`);
  }
  return parts.join(' / ') || '—';
}

export function modeLabel(mode: string): string {
  return mode === 'dp' ? t('mode_dp') : t('mode_suppression');
}

export async function renderApps(ctx: Ctx) {
  document.title = `${t('nav_apps')} — kura`;
  const me = await ctx.refreshMe();
  const apps: AppGrant[] = me.applications ?? [];
  const rows = apps.map((g) => {
    const id = grantId(g);
    const term = grantTerm(g);
    const budget = grantBudget(g);
    const pledgeMissing = g.pledge_accepted === false;
    return h(
      'tr',
      { 'data-app': id },
      h('th', { scope: 'row' }, id),
      h('td', {}, term.start || term.end ? `${term.start} – ${term.end}` : '—'),
      h('td', { class: 'num' }, grantDaysLeft(g) ?? '—'),
      h('td', { class: 'scope' }, scopeSummary(g.scope)),
      h('td', {}, modeLabel(grantMode(g)), g.k || g.threshold ? ` (k=${g.k ?? g.threshold})` : ''),
      h('td', { class: 'num' }, budget === null ? '—' : budget.toFixed(2)),
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
          waiting.map((a) => h('a', { class: 'button', href: `#/apply/${encodeURIComponent(a.id)}`, 'data-pledge': a.id }, `${a.id} ${a.title ?? ''}`)),
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

// Catalogue browser: the tables and columns visible in one application's scope, in ja or en.
import { catalog } from '../api';
import { clear, h } from '../dom';
import { label, pick, t } from '../i18n';
import { Ctx } from '../ui';

export async function renderCatalog(ctx: Ctx, app: string) {
  document.title = `${t('nav_catalog')} ${app} — kura`;
  const tables = await catalog(app);
  clear(
    ctx.main,
    h('h1', {}, `${t('nav_catalog')} — `, h('span', { translate: 'no' }, app)),
    h('p', {}, t('catalog_intro'), ' ', h('a', { href: `#/nb/${encodeURIComponent(app)}` }, t('nav_notebooks'))),
    h(
      'div',
      { class: 'catalog', id: 'catalog' },
      tables.map((tb) =>
        h(
          'details',
          { class: 'cat-table', 'data-table': tb.name },
          h('summary', {}, h('code', { translate: 'no' }, tb.name), ' — ', pick(tb.description_ja, tb.description_en)),
          h(
            'table',
            { class: 'grid' },
            h(
              'thead',
              {},
              h('tr', {}, h('th', { scope: 'col' }, t('column')), h('th', { scope: 'col' }, t('type')), h('th', { scope: 'col' }, t('description')), h('th', { scope: 'col' }, '')),
            ),
            h(
              'tbody',
              {},
              tb.columns.map((c) =>
                h(
                  'tr',
                  {},
                  h('th', { scope: 'row' }, h('code', { translate: 'no' }, c.name)),
                  h('td', { 'data-type': c.type ?? c.data_type ?? '' }, label('type', c.type ?? c.data_type ?? '')),
                  h('td', {}, pick(c.description_ja, c.description_en)),
                  h(
                    'td',
                    {},
                    c.privacy_unit ? h('span', { class: 'badge pu' }, t('privacy_unit')) : null,
                    c.public_domain ? h('span', { class: 'badge pd' }, t('public_domain')) : null,
                  ),
                ),
              ),
            ),
          ),
        ),
      ),
    ),
  );
}

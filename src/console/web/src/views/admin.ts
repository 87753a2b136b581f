// Operator screens (issue 17 §4), for the data custodian (role admin): user accounts (add,
// disable / enable, reset the password, change roles) and the data side (ingested tables,
// each application's extract with its status, rebuild and destroy, and the fingerprints of the
// keys — never the keys). Every action is an admin-only, audited endpoint of /api/v1/admin.
import { api, listOf } from '../api';
import { clear, field, fmtDate, h } from '../dom';
import { fmtNum, label, t } from '../i18n';
import { Ctx, errorBox, note } from '../ui';

interface AdminUser {
  username: string;
  display_name?: string | null;
  affiliation?: string | null;
  title?: string | null;
  roles: string[];
  manufacturer?: string | null;
  disabled: boolean;
}

interface ExtractRow {
  application: string;
  extract_id: string;
  built_at: string;
  destroyed_at?: string | null;
  current?: boolean | null;
}

interface DatasetsView {
  manifest_sha256?: string | null;
  ingested_at?: string | null;
  tables: { name: string; rows: number; dataset?: string | null }[];
}

interface KeyRow {
  name: string;
  fingerprint: string | null;
}

/** The roles an account can be given (the server says which; this is the fallback). */
let ROLES = ['researcher', 'reviewer', 'auditor', 'pms', 'admin'];

export async function renderAdmin(ctx: Ctx, section: string) {
  if (section === 'data') return renderData(ctx);
  return renderUsers(ctx);
}

function roleBoxes(prefix: string, chosen: string[]): { el: HTMLElement; read: () => string[] } {
  const boxes = ROLES.map((r) => h('input', { type: 'checkbox', id: `${prefix}-${r}`, value: r, checked: chosen.includes(r) }));
  return {
    el: h(
      'fieldset',
      { class: 'roles' },
      h('legend', {}, t('admin_roles')),
      ROLES.map((r, i) => h('label', { class: 'check', for: `${prefix}-${r}` }, boxes[i], ` ${label('role', r)}`)),
    ),
    read: () => boxes.filter((b) => b.checked).map((b) => b.value),
  };
}

async function renderUsers(ctx: Ctx) {
  document.title = `${t('admin_users_title')} — kura`;
  const msg = h('div', { class: 'messages', 'aria-live': 'polite', id: 'admin-msg' });
  const listBox = h('div', { id: 'admin-users' });
  const act = async (fn: () => Promise<unknown>, done: string | ((r: unknown) => HTMLElement | string)) => {
    try {
      const r = await fn();
      await load();
      const shown = typeof done === 'string' ? done : done(r);
      clear(msg, typeof shown === 'string' ? note(shown) : shown);
    } catch (x) {
      clear(msg, errorBox(x));
    }
  };
  const tempPassword = (r: unknown) =>
    h(
      'div',
      { class: 'flash info', role: 'status' },
      t('admin_temp_password'),
      h('code', { class: 'temp-password', translate: 'no' }, String((r as { temporary_password?: string })?.temporary_password ?? '')),
    );
  const load = async () => {
    const r = await api<{ users?: AdminUser[]; roles?: string[] }>('GET', '/admin/users');
    const users = listOf<AdminUser>(r, 'users');
    if (Array.isArray(r?.roles) && r.roles.length) ROLES = r.roles;
    clear(
      listBox,
      h(
        'table',
        { class: 'grid' },
        h('thead', {}, h('tr', {}, [t('username'), t('admin_display_name'), t('admin_roles'), t('admin_state'), ''].map((x) => h('th', { scope: 'col' }, x)))),
        h(
          'tbody',
          {},
          users.map((u) => {
            const roles = roleBoxes(`roles-${u.username}`, u.roles);
            const enc = encodeURIComponent(u.username);
            return h(
              'tr',
              { 'data-user': u.username, 'data-disabled': String(u.disabled) },
              h('th', { scope: 'row', translate: 'no' }, u.username),
              h('td', { translate: 'no' }, [u.display_name, u.affiliation, u.title, u.manufacturer].filter((x) => x).join('、')),
              h('td', {}, roles.el, h('button', { type: 'button', class: 'save-roles', onclick: () => void act(() => api('PUT', `/admin/users/${enc}/roles`, { roles: roles.read() }), t('admin_done')) }, t('admin_save_roles'))),
              h('td', {}, h('span', { class: `badge ${u.disabled ? 'st-revoked' : 'st-approved'}` }, u.disabled ? t('admin_disabled') : t('admin_enabled'))),
              h(
                'td',
                { class: 'actions' },
                u.disabled
                  ? h('button', { type: 'button', class: 'enable-user', onclick: () => void act(() => api('POST', `/admin/users/${enc}/enable`), t('admin_done')) }, t('admin_enable'))
                  : h(
                      'button',
                      {
                        type: 'button',
                        class: 'danger disable-user',
                        onclick: () => {
                          if (window.confirm(t('admin_confirm_disable'))) void act(() => api('POST', `/admin/users/${enc}/disable`), t('admin_done'));
                        },
                      },
                      t('admin_disable'),
                    ),
                ' ',
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'reset-password',
                    onclick: () => {
                      if (window.confirm(t('admin_confirm_reset'))) void act(() => api('POST', `/admin/users/${enc}/password`), tempPassword);
                    },
                  },
                  t('admin_reset'),
                ),
              ),
            );
          }),
        ),
      ),
    );
  };

  const username = h('input', { id: 'nu-username', required: true, maxlength: '64', autocomplete: 'off', pattern: '[a-z0-9][a-z0-9._-]{1,63}' });
  const name = h('input', { id: 'nu-name', maxlength: '200' });
  const affiliation = h('input', { id: 'nu-affiliation', maxlength: '200' });
  const title = h('input', { id: 'nu-title', maxlength: '200' });
  const manufacturer = h('input', { id: 'nu-manufacturer', maxlength: '16' });
  const roles = roleBoxes('nu-role', ['researcher']);
  const form = h(
    'form',
    {
      class: 'card',
      id: 'add-user',
      onsubmit: (e: Event) => {
        e.preventDefault();
        const body = {
          username: username.value.trim(),
          display_name: name.value.trim(),
          affiliation: affiliation.value.trim(),
          title: title.value.trim(),
          roles: roles.read(),
          manufacturer: manufacturer.value.trim() || null,
        };
        void act(() => api('POST', '/admin/users', body), (r) => {
          const el = tempPassword(r);
          el.prepend(t('admin_user_added', { u: body.username }), ' ');
          return el;
        });
      },
    },
    h('h2', {}, t('admin_add_user')),
    h('div', { class: 'cols' }, field(t('username'), username), field(t('admin_display_name'), name), field(t('admin_affiliation'), affiliation), field(t('admin_title'), title), field(t('admin_manufacturer'), manufacturer)),
    roles.el,
    h('button', { type: 'submit', class: 'primary', id: 'add-user-submit' }, t('admin_add_user')),
  );
  clear(ctx.main, h('h1', {}, t('admin_users_title')), msg, listBox, form);
  await load();
}

async function renderData(ctx: Ctx) {
  document.title = `${t('admin_data_title')} — kura`;
  const msg = h('div', { class: 'messages', 'aria-live': 'polite', id: 'admin-msg' });
  const [datasets, keys] = await Promise.all([api<DatasetsView>('GET', '/admin/datasets'), api<KeyRow[]>('GET', '/admin/keys')]);
  const extractsBox = h('div', { id: 'admin-extracts' });
  const loadExtracts = async () => {
    const rows = await api<ExtractRow[]>('GET', '/admin/extracts');
    clear(
      extractsBox,
      h(
        'table',
        { class: 'grid' },
        h('thead', {}, h('tr', {}, [t('application'), t('admin_extract_id'), t('admin_built_at'), t('admin_destroyed_at'), t('admin_current'), ''].map((x) => h('th', { scope: 'col' }, x)))),
        h(
          'tbody',
          {},
          rows.map((x) => {
            const enc = encodeURIComponent(x.application);
            const reason = h('input', { class: 'destroy-reason', maxlength: '500', 'aria-label': t('admin_destroy_reason'), placeholder: t('admin_destroy_reason') });
            return h(
              'tr',
              { 'data-extract': x.application, 'data-destroyed': String(!!x.destroyed_at) },
              h('th', { scope: 'row', translate: 'no' }, x.application),
              h('td', {}, h('code', { translate: 'no' }, x.extract_id.slice(0, 16))),
              h('td', {}, fmtDate(x.built_at)),
              h('td', {}, x.destroyed_at ? fmtDate(x.destroyed_at) : '—'),
              h('td', {}, x.current === null || x.current === undefined ? '—' : x.current ? t('yes') : t('no')),
              h(
                'td',
                { class: 'actions' },
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'rebuild-extract',
                    onclick: async () => {
                      try {
                        await api('POST', `/admin/extracts/${enc}/rebuild`);
                        await loadExtracts();
                        clear(msg, note(t('admin_done')));
                      } catch (e) {
                        clear(msg, errorBox(e));
                      }
                    },
                  },
                  t('admin_rebuild'),
                ),
                x.destroyed_at
                  ? null
                  : h(
                      'span',
                      { class: 'destroy' },
                      ' ',
                      reason,
                      h(
                        'button',
                        {
                          type: 'button',
                          class: 'danger destroy-extract',
                          onclick: async () => {
                            if (!reason.value.trim()) {
                              reason.focus();
                              return;
                            }
                            if (!window.confirm(t('admin_confirm_destroy'))) return;
                            try {
                              await api('POST', `/admin/extracts/${enc}/destroy`, { reason: reason.value.trim() });
                              await loadExtracts();
                              clear(msg, note(t('admin_done')));
                            } catch (e) {
                              clear(msg, errorBox(e));
                            }
                          },
                        },
                        t('admin_destroy'),
                      ),
                    ),
              ),
            );
          }),
        ),
      ),
    );
  };
  const keyName = (n: string) => (n === 'pseudonym' ? t('key_pseudonym') : n === 'extract' ? t('key_extract') : n === 'audit' ? t('key_audit') : n);
  clear(
    ctx.main,
    h('h1', {}, t('admin_data_title')),
    msg,
    h(
      'section',
      { class: 'card', id: 'admin-datasets' },
      h('h2', {}, t('admin_datasets')),
      datasets.ingested_at ? h('p', {}, `${t('admin_ingested_at')}: ${fmtDate(datasets.ingested_at)}`) : null,
      h(
        'table',
        { class: 'grid' },
        h('thead', {}, h('tr', {}, [t('admin_table'), t('f_datasets'), t('admin_rows')].map((x) => h('th', { scope: 'col' }, x)))),
        h(
          'tbody',
          {},
          datasets.tables.map((tb) =>
            h(
              'tr',
              { 'data-table': tb.name },
              h('th', { scope: 'row' }, h('code', { translate: 'no' }, tb.name)),
              h('td', {}, tb.dataset ? label('dataset', tb.dataset) : '—'),
              h('td', { class: 'num' }, fmtNum(tb.rows, 0)),
            ),
          ),
        ),
      ),
    ),
    h('section', { class: 'card' }, h('h2', {}, t('admin_extracts')), extractsBox),
    h(
      'section',
      { class: 'card', id: 'admin-keys' },
      h('h2', {}, t('admin_keys')),
      h(
        'table',
        { class: 'grid' },
        h('thead', {}, h('tr', {}, [t('admin_key_name'), t('admin_fingerprint')].map((x) => h('th', { scope: 'col' }, x)))),
        h(
          'tbody',
          {},
          keys.map((k) => h('tr', { 'data-key': k.name }, h('th', { scope: 'row' }, keyName(k.name)), h('td', {}, h('code', { translate: 'no' }, k.fingerprint ?? '—')))),
        ),
      ),
    ),
  );
  await loadExtracts();
}

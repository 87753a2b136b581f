// kura web console: application shell, hash router, login and language switch.
// Each screen lives in src/views; they render into <main> and talk only to /api/v1.
import './styles.css';
import { api, ApiError, forgetSession, Me, rememberSession, setExpiredHandler } from './api';
import { clear, field, h } from './dom';
import { getLang, Key, setLang, t } from './i18n';
import { Ctx, errorBox, errorText } from './ui';
import { renderApps } from './views/apps';
import { flushNotebook, renderNotebook } from './views/notebook';
import { renderCatalog } from './views/catalog';
import { renderHistory } from './views/history';
import { renderApply } from './views/apply';
import { renderReview } from './views/review';
import { renderAudit } from './views/audit';
import { renderPms } from './views/pms';
// oversight (issue 13 §2 §4)
import { renderAlerts } from './views/alerts';
import { renderReports } from './views/reports';
// seeds (issue 16): public register (no session), medical institution, form 3
import { renderRegister } from './views/register';
import { renderFacility } from './views/facility';
import { renderConsentRequests } from './views/consent';
// annual reports (issue 13 §3)
import { renderAnnual } from './views/annual';
// operator screens (issue 17 §4)
import { renderAdmin } from './views/admin';


const root = document.getElementById('app')!;
let me: Me | null = null;
let flash: { text: string; kind: 'info' | 'error' } | null = null;

setLang(getLang());

setExpiredHandler(() => {
  if (!me) return;
  me = null;
  forgetSession();
  flash = { text: t('session_expired'), kind: 'error' };
  location.hash = '#/login';
  void route();
});

function go(hash: string) {
  if (location.hash === hash) void route();
  else location.hash = hash;
}

async function refreshMe(): Promise<Me> {
  const m = await api<Me>('GET', '/me');
  if (m.csrf_token) rememberSession(m as unknown as Record<string, unknown>, true);
  me = m;
  return m;
}

function has(role: string): boolean {
  return !!me?.roles?.includes(role);
}

function langButton(): HTMLElement {
  return h(
    'button',
    {
      type: 'button',
      class: 'lang',
      id: 'lang-switch',
      title: t('lang_switch_label'),
      lang: getLang() === 'ja' ? 'en' : 'ja',
      onclick: () => {
        setLang(getLang() === 'ja' ? 'en' : 'ja');
        void route();
      },
    },
    t('lang_switch'),
  );
}

function navItems(): [string, Key][] {
  const items: [string, Key][] = [];
  if (has('researcher')) items.push(['#/apps', 'nav_apps']);
  if (has('researcher') || has('applicant')) items.push(['#/apply', 'nav_apply']);
  if (has('reviewer')) items.push(['#/review', 'nav_review']);
  if (has('auditor') || has('reviewer')) items.push(['#/audit', 'nav_audit']);
  if (has('pms')) items.push(['#/pms', 'nav_pms']);
  // oversight (issue 13 §2 §4)
  if (has('auditor')) items.push(['#/alerts', 'nav_alerts']);
  if (has('researcher') || has('reviewer') || has('auditor')) items.push(['#/reports', 'nav_reports']);
  // seeds (issue 16)
  if (has('facility')) items.push(['#/facility', 'nav_facility']);
  if (has('researcher')) items.push(['#/consent', 'nav_consent']);
  items.push(['#/register', 'nav_register']);
  // annual reports (issue 13 §3): the data custodian and reviewers
  if (has('admin') || has('reviewer')) items.push(['#/annual', 'nav_annual']);
  // operator screens (issue 17 §4)
  if (has('admin')) items.push(['#/admin/users', 'nav_admin_users'], ['#/admin/data', 'nav_admin_data']);
  return items;
}

function shell(): HTMLElement {
  const main = h('main', { id: 'main', tabindex: '-1' });
  const cur = location.hash.split('?')[0].split('/').slice(0, location.hash.startsWith('#/admin') ? 3 : 2).join('/');
  const header = h(
    'header',
    { class: 'top' },
    h('a', { class: 'skip', href: '#main', onclick: (e: Event) => { e.preventDefault(); main.focus(); } }, t('skip')),
    h('span', { class: 'brand', translate: 'no' }, 'kura 蔵'),
    me
      ? h(
          'nav',
          { 'aria-label': t('main_nav') },
          navItems().map(([href, key]) =>
            h('a', { href, 'aria-current': href === cur ? 'page' : null, 'data-nav': href.slice(2) }, t(key)),
          ),
        )
      : null,
    h('span', { class: 'spacer' }),
    me ? h('span', { class: 'who', id: 'who' }, `${t('signed_in_as')} ${me.username}`) : null,
    langButton(),
    me ? h('button', { type: 'button', id: 'logout', onclick: logout }, t('logout')) : null,
  );
  const flashEl = flash
    ? h('div', { class: `flash ${flash.kind}`, role: flash.kind === 'error' ? 'alert' : 'status', id: 'flash' }, flash.text)
    : null;
  // On the login screen the message stays across re-renders (a hashchange may render twice).
  if (me) flash = null;
  clear(root, header, flashEl, main);
  return main;
}

async function logout() {
  try {
    await api('DELETE', '/session');
  } catch {
    // Logging out must always leave the console in the logged-out state.
  }
  me = null;
  forgetSession();
  flash = { text: t('logged_out'), kind: 'info' };
  go('#/login');
}

function renderLogin(main: HTMLElement) {
  document.title = `${t('login')} — kura`;
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const err = h('div', { class: 'error-box', role: 'alert', id: 'login-error', hidden: true });
  const form = h(
    'form',
    {
      class: 'card login',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        err.hidden = true;
        try {
          const r = await api<Record<string, unknown>>('POST', '/session', {
            username: user.value.trim(),
            password: pass.value,
          });
          const cookieSet = await probeCookie();
          rememberSession(r, cookieSet);
          await refreshMe();
          flash = null;
          go(homeFor());
        } catch (x) {
          err.hidden = false;
          err.textContent = x instanceof ApiError ? errorText(x) : t('error_generic');
          if (x instanceof ApiError) err.dataset.code = x.body.code;
        }
      },
    },
    h('h1', {}, t('app_title')),
    field(t('username'), user),
    field(t('password'), pass),
    err,
    h('button', { type: 'submit', class: 'primary', id: 'login-submit' }, t('login')),
    // seeds (issue 16 §3): the register is public
    h('p', {}, h('a', { href: '#/register', id: 'register-link' }, t('nav_register'))),
  );
  clear(main, form);
  user.focus();
}

/** Whether the server gave us a cookie session: if not we fall back to the in-memory bearer token. */
async function probeCookie(): Promise<boolean> {
  try {
    const r = await fetch('/api/v1/me', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    return r.ok;
  } catch {
    return false;
  }
}

function homeFor(): string {
  if (has('researcher')) return '#/apps';
  if (has('facility')) return '#/facility';
  if (has('reviewer')) return '#/review';
  if (has('auditor')) return '#/audit';
  if (has('pms')) return '#/pms';
  if (has('admin')) return '#/admin/users';
  return '#/apply';
}

async function route() {
  // Leaving (or re-rendering) a notebook must not lose edits still waiting for the autosave.
  if (flushNotebook) await flushNotebook();
  const parts = location.hash.replace(/^#\/?/, '').split('?')[0].split('/').map(decodeURIComponent);
  if (!me && parts[0] !== 'login') {
    try {
      await refreshMe();
    } catch {
      me = null;
    }
  }
  // seeds (issue 16 §3): the public register needs no session
  if (!me && parts[0] === 'register') {
    const main = shell();
    try {
      await renderRegister(main);
      main.append(h('p', {}, h('a', { href: '#/login', id: 'login-link' }, t('register_login'))));
    } catch (x) {
      clear(main, errorBox(x));
    }
    return;
  }
  if (!me) {
    const main = shell();
    renderLogin(main);
    return;
  }
  if (parts[0] === 'login' || parts[0] === '') {
    location.hash = homeFor();
    return;
  }
  const main = shell();
  const ctx: Ctx = { me, main, go, refreshMe };
  try {
    switch (parts[0]) {
      case 'apps':
        await renderApps(ctx);
        break;
      case 'nb':
        await renderNotebook(ctx, parts[1] ?? '', parts[2]);
        break;
      case 'catalog':
        await renderCatalog(ctx, parts[1] ?? '');
        break;
      case 'history':
        await renderHistory(ctx, parts[1] ?? '');
        break;
      case 'apply':
        await renderApply(ctx, parts[1]);
        break;
      case 'review':
        await renderReview(ctx, parts[1]);
        break;
      case 'audit':
        await renderAudit(ctx);
        break;
      case 'pms':
        await renderPms(ctx);
        break;
      // oversight (issue 13 §2 §4)
      case 'alerts':
        await renderAlerts(ctx);
        break;
      case 'reports':
        await renderReports(ctx);
        break;
      // seeds (issue 16)
      case 'register':
        await renderRegister(ctx.main);
        break;
      case 'facility':
        await renderFacility(ctx);
        break;
      case 'consent':
        await renderConsentRequests(ctx);
        break;
      // annual reports (issue 13 §3)
      case 'annual':
        await renderAnnual(ctx);
        break;
      // operator screens (issue 17 §4)
      case 'admin':
        await renderAdmin(ctx, parts[1] ?? 'users');
        break;
      default:
        location.hash = homeFor();
    }
  } catch (x) {
    if (x instanceof ApiError && x.status === 401) return;
    clear(main, errorBox(x));
  }
}

window.addEventListener('hashchange', () => void route());
void route();

// HTTP client for the kura API (/api/v1). The session lives in the server's HttpOnly cookie;
// the CSRF token (double submit) and, only when the server sets no cookie, the bearer token are
// held in memory — never in localStorage — so a reload asks the server (GET /me) who we are.

export interface ApiErrorBody {
  code: string;
  message: string;
  ref?: string;
  /** Present on `budget_exhausted`: what was asked, what is left, when it renews. */
  budget?: BudgetRefusal;
}

export interface BudgetRefusal {
  epsilon_requested: number;
  epsilon_budget: number;
  epsilon_spent: number;
  epsilon_remaining: number;
  fiscal_year: number;
  renews_on: string;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public body: ApiErrorBody,
  ) {
    super(body.message);
  }
}

let csrfToken: string | null = null;
let bearer: string | null = null;
let onExpired: (() => void) | null = null;

export function setExpiredHandler(fn: () => void) {
  onExpired = fn;
}

function cookie(name: string): string | null {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return null;
}

function currentCsrf(): string | null {
  return csrfToken ?? cookie('kura_csrf') ?? cookie('csrf_token') ?? cookie('XSRF-TOKEN');
}

export function rememberSession(body: Record<string, unknown>, cookieSet: boolean) {
  const c = body['csrf_token'] ?? body['csrf'];
  if (typeof c === 'string') csrfToken = c;
  if (!cookieSet && typeof body['token'] === 'string') bearer = body['token'] as string;
}

export function forgetSession() {
  csrfToken = null;
  bearer = null;
}

export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') {
    const c = currentCsrf();
    if (c) headers['X-CSRF-Token'] = c;
  }
  if (bearer) headers['Authorization'] = `Bearer ${bearer}`;
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, {
      code: 'network',
      message: 'Cannot reach the server. / サーバーに接続できません。',
    });
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const err = (json as { error?: ApiErrorBody } | null)?.error ?? {
      code: 'http_error',
      message: `HTTP ${res.status}`,
    };
    if (res.status === 401 && path !== '/session' && onExpired) onExpired();
    throw new ApiError(res.status, err);
  }
  return json as T;
}

/**
 * A file from the API (a release download, a notebook export): the body as a Blob; errors as
 * ApiError, like `api`. A POST carries its JSON body and the CSRF token.
 */
export async function apiBlob(path: string, method: 'GET' | 'POST' = 'GET', body?: unknown): Promise<Blob> {
  const headers: Record<string, string> = {};
  if (bearer) headers['Authorization'] = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') {
    const c = currentCsrf();
    if (c) headers['X-CSRF-Token'] = c;
  }
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, { code: 'network', message: 'Cannot reach the server. / サーバーに接続できません。' });
  }
  if (!res.ok) {
    let err: ApiErrorBody = { code: `http_${res.status}`, message: `HTTP ${res.status}` };
    try {
      err = ((await res.json()) as { error: ApiErrorBody }).error ?? err;
    } catch {
      // not JSON: keep the status
    }
    if (res.status === 401 && onExpired) onExpired();
    throw new ApiError(res.status, err);
  }
  return res.blob();
}

export function qs(params: Record<string, string | number | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

// ---- shapes (API.md; extra fields are tolerated)

export interface AppGrant {
  id?: string;
  application?: string;
  application_id?: string;
  term?: { start?: string; end?: string } | string;
  term_start?: string;
  term_end?: string;
  days_left?: number;
  scope?: Record<string, unknown>;
  mode?: string;
  disclosure_mode?: string;
  k?: number;
  threshold?: number;
  epsilon_remaining?: number | null;
  epsilon_budget?: number | null;
  epsilon_spent?: number | null;
  budget_remaining?: number | null;
  fiscal_year?: number | null;
  renews_on?: string | null;
  dp_bounds?: DpBounds | null;
  pledge_accepted?: boolean;
  title?: string;
  kind?: string;
}

export interface Me {
  username: string;
  roles: string[];
  manufacturer?: string | null;
  applications?: AppGrant[];
  csrf_token?: string;
}

export function grantId(g: AppGrant): string {
  return g.id ?? g.application ?? g.application_id ?? '';
}

export function grantTerm(g: AppGrant): { start: string; end: string } {
  if (typeof g.term === 'string') {
    const [s, e] = g.term.split('/');
    return { start: s ?? '', end: e ?? '' };
  }
  return { start: g.term?.start ?? g.term_start ?? '', end: g.term?.end ?? g.term_end ?? '' };
}

export function grantDaysLeft(g: AppGrant): number | null {
  if (typeof g.days_left === 'number') return g.days_left;
  const end = grantTerm(g).end;
  if (!end) return null;
  const ms = new Date(`${end.slice(0, 10)}T23:59:59`).getTime() - Date.now();
  return Math.max(0, Math.ceil(ms / 86400000));
}

export function grantMode(g: AppGrant): string {
  return g.mode ?? g.disclosure_mode ?? 'suppression';
}

export function grantBudget(g: AppGrant): number | null {
  const v = g.epsilon_remaining ?? g.budget_remaining;
  return typeof v === 'number' ? v : null;
}

export interface Column {
  name: string;
  type: string;
}

export interface Disclosure {
  mode: string;
  threshold?: number | null;
  suppressed?: [number, number][];
  suppressed_cells?: number;
  /** The suppressed cells that were hidden against differencing (secondary suppression). */
  differencing?: [number, number][];
  dropped_rows?: number;
  rounding?: number | null | { base?: number };
  epsilon_spent?: number | null;
  epsilon_remaining?: number | null;
  notes?: string[];
  /** Differential privacy: how every noised column was computed (mode `dp` only). */
  dp?: DpDisclosure | null;
}

export interface DpBounds {
  max_groups_per_patient: number;
  max_rows_per_group: number;
}

export interface DpColumn {
  index: number;
  name: string;
  aggregate: string;
  epsilon: number;
  sensitivity: number;
  noise_scale: number;
  ci95_half_width?: number | null;
  clamp?: [number, number] | null;
}

export interface DpInterval {
  row: number;
  column: number;
  low: number;
  high: number;
}

export interface DpDisclosure {
  epsilon: number;
  cached: boolean;
  mechanism: string;
  bounds: DpBounds;
  release_threshold: number;
  columns: DpColumn[];
  intervals: DpInterval[];
}

/** POST /query/cost: the price of a DP query before it runs. */
export interface QueryCost {
  application: string;
  epsilon: number;
  cost: number;
  epsilon_remaining: number;
  epsilon_remaining_after: number;
  epsilon_budget: number;
  fiscal_year: number;
  renews_on: string;
  cached: boolean;
  bounds: DpBounds;
  columns: DpColumn[];
  release_threshold: number;
  mechanism: string;
}

export interface QueryResult {
  query_id: string;
  columns: Column[];
  rows: unknown[][];
  disclosure: Disclosure;
}

/** A public-domain column's domain (catalogue): a value list, a range, or a reference column. */
export interface ColumnDomainSpec {
  values?: (string | number | boolean)[];
  range?: [number, number];
  table?: string;
  column?: string;
}

export interface CatalogColumn {
  name: string;
  domain?: ColumnDomainSpec | null;
  type?: string;
  data_type?: string;
  description_ja?: string;
  description_en?: string;
  public_domain?: boolean;
  privacy_unit?: boolean;
}

export interface CatalogTable {
  name: string;
  kind?: string;
  description_ja?: string;
  description_en?: string;
  columns: CatalogColumn[];
}

export async function catalog(app: string): Promise<CatalogTable[]> {
  const r = await api<{ tables?: CatalogTable[] } | CatalogTable[]>('GET', `/catalog${qs({ application: app })}`);
  return Array.isArray(r) ? r : (r?.tables ?? []);
}

/** List endpoints may return a bare array or wrap it in an object; accept both. */
export function listOf<T>(r: unknown, ...keys: string[]): T[] {
  if (Array.isArray(r)) return r as T[];
  if (r && typeof r === 'object') {
    for (const k of [...keys, 'items', 'data']) {
      const v = (r as Record<string, unknown>)[k];
      if (Array.isArray(v)) return v as T[];
    }
  }
  return [];
}

// Public labels and domain order of key columns (issue 17 §2): a released code is shown with
// its public name beside it (prefecture 13 → 東京都, disease 2 → ALS), and rows, chart axes and
// legends follow the key's domain order (age bands 0-4, 5-9, …; fiscal years; JIS prefecture
// order). Sources: the catalogue's `domain` of each public-domain column (GET /catalog) and
// the public reference tables (GET /reference/labels); fixed value lists come from
// i18n/codes.json. Nothing here reads patient data.
import { api, catalog, CatalogTable } from './api';
import { getLang, valueLabel } from './i18n';

export interface RefLabel {
  code: string;
  ja: string;
  en: string;
  group_ja?: string | null;
  group_en?: string | null;
}

/** Reference labels per key column, in the reference table's (domain) order. */
export type RefLabels = Record<string, RefLabel[]>;

let refCache: Promise<RefLabels> | null = null;

/** The public reference labels (cached for the page's life; they change only with ingest). */
export function referenceLabels(): Promise<RefLabels> {
  if (!refCache) {
    refCache = api<{ columns?: RefLabels }>('GET', '/reference/labels')
      .then((r) => r?.columns ?? {})
      .catch(() => {
        refCache = null;
        return {};
      });
  }
  return refCache;
}

/** Domain order and labels of the key columns an application's results can carry. */
export class Domains {
  private order = new Map<string, Map<string, number>>();
  constructor(
    private refs: RefLabels,
    tables: CatalogTable[],
  ) {
    for (const tb of tables) {
      for (const c of tb.columns) {
        const d = c.domain;
        if (!d || this.order.has(c.name)) continue;
        let values: string[] | null = null;
        if (Array.isArray(d.values)) values = d.values.map(String);
        else if (Array.isArray(d.range) && d.range.length === 2 && d.range[1] - d.range[0] <= 10000) {
          values = [];
          for (let v = d.range[0]; v <= d.range[1]; v++) values.push(String(v));
        } else if (d.column && refs[d.column]) values = refs[d.column].map((l) => l.code);
        if (values) this.order.set(c.name, new Map(values.map((v, i) => [v, i])));
      }
    }
    for (const [col, list] of Object.entries(refs)) {
      if (!this.order.has(col)) this.order.set(col, new Map(list.map((l, i) => [l.code, i])));
    }
  }

  /** Position of `value` in the domain of `column`, or null when the column has none. */
  rank(column: string, value: unknown): number | null {
    const m = this.order.get(column);
    if (!m) return null;
    const r = m.get(String(value));
    return r === undefined ? m.size : r;
  }

  hasDomain(column: string): boolean {
    return this.order.has(column);
  }

  /** The public name of a code (東京都 for prefecture 13), in the current language. */
  label(column: string, value: unknown): string | null {
    if (value === null || value === undefined) return null;
    const list = this.refs[column];
    if (list) {
      const hit = list.find((l) => l.code === String(value));
      if (hit) return getLang() === 'ja' ? hit.ja || hit.en : hit.en || hit.ja;
    }
    return valueLabel(column, value);
  }
}

const cache = new Map<string, Promise<Domains>>();

/** The domains of an application's scope (catalogue + reference labels), cached per application. */
export function domainsFor(app: string): Promise<Domains> {
  let p = cache.get(app);
  if (!p) {
    p = Promise.all([referenceLabels(), catalog(app).catch(() => [] as CatalogTable[])]).then(([r, t]) => new Domains(r, t));
    cache.set(app, p);
  }
  return p;
}

/** Domains from the reference labels only (screens without an application, e.g. review). */
export async function plainDomains(): Promise<Domains> {
  return new Domains(await referenceLabels(), []);
}

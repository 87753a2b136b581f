// Japanese and English labels. The language is a preference, not a secret, so it is kept in
// localStorage; the first default follows navigator.languages (the browser's Accept-Language).

// oversight (issue 13 §2 §4)
import { oversight } from './i18n/oversight';
// seeds (issue 16)
import { seeds } from './i18n/seeds';
// annual reports (issue 13 §3)
import { annual } from './i18n/annual';
// console (issue 17): notebook habits, results, role screens, operator screens
import { consoleStrings } from './i18n/console';
import codes from './i18n/codes.json';

export type Lang = 'ja' | 'en';

const dict = {
  app_title: ['kura 蔵 研究データ利用環境', 'kura research data enclave'],
  skip: ['本文へ移動', 'Skip to content'],
  lang_switch: ['English', '日本語'],
  lang_switch_label: ['表示言語を切り替える', 'Switch display language'],
  login: ['ログイン', 'Log in'],
  logout: ['ログアウト', 'Log out'],
  username: ['ユーザー名', 'User name'],
  password: ['パスワード', 'Password'],
  session_expired: ['セッションの有効期限が切れました。もう一度ログインしてください。', 'Your session has expired. Please log in again.'],
  logged_out: ['ログアウトしました。', 'You have logged out.'],
  nav_apps: ['利用申請（承認済み）', 'Approved applications'],
  nav_notebooks: ['ノートブック', 'Notebooks'],
  nav_catalog: ['カタログ', 'Catalogue'],
  nav_history: ['クエリ履歴', 'Query history'],
  nav_apply: ['利用申請', 'Applications'],
  nav_review: ['審査', 'Review'],
  nav_audit: ['監査ログ', 'Audit log'],
  nav_pms: ['製造販売後調査', 'PMS dashboard'],
  main_nav: ['メインメニュー', 'Main menu'],
  signed_in_as: ['ログイン中:', 'Signed in as'],
  loading: ['読み込み中…', 'Loading…'],
  none: ['ありません。', 'None.'],
  // application picker
  pick_app: ['利用する承認済み申請を選んでください', 'Pick an approved application'],
  app_id: ['申請番号', 'Application'],
  term: ['使用期間', 'Term of use'],
  days_left: ['残り日数', 'Days left'],
  scope: ['範囲', 'Scope'],
  mode: ['開示方式', 'Disclosure mode'],
  budget_left: ['残りプライバシー予算 ε', 'Privacy budget left (ε)'],
  open: ['開く', 'Open'],
  no_apps: ['現在利用できる承認済み申請はありません。', 'You have no approved application to use now.'],
  mode_suppression: ['秘匿（少数セル抑制）', 'Suppression (small cells)'],
  mode_dp: ['差分プライバシー', 'Differential privacy'],
  days: ['日', 'days'],
  // notebooks
  notebooks_of: ['ノートブック一覧', 'Notebooks'],
  new_notebook: ['新しいノートブック', 'New notebook'],
  notebook_title: ['ノートブック名', 'Notebook title'],
  untitled: ['無題のノートブック', 'Untitled notebook'],
  save: ['保存', 'Save'],
  saved: ['保存しました', 'Saved'],
  save_failed: ['保存できませんでした', 'Could not save'],
  delete: ['削除', 'Delete'],
  confirm_delete_nb: ['このノートブックを削除しますか？', 'Delete this notebook?'],
  run_all: ['すべて実行', 'Run all'],
  add_sql: ['SQL セルを追加', 'Add SQL cell'],
  add_md: ['Markdown セルを追加', 'Add Markdown cell'],
  run: ['実行', 'Run'],
  move_up: ['上へ移動', 'Move up'],
  move_down: ['下へ移動', 'Move down'],
  delete_cell: ['セルを削除', 'Delete cell'],
  edit: ['編集', 'Edit'],
  render: ['表示', 'Render'],
  sql_cell: ['SQL セル', 'SQL cell'],
  md_cell: ['Markdown セル', 'Markdown cell'],
  cell_help: ['Shift+Enter で実行して次へ、Ctrl+Space で補完、Esc でコマンドモード（その後 Tab で外へ）、? でショートカット一覧', 'Shift+Enter runs and moves on, Ctrl+Space completes, Esc enters command mode (then Tab leaves), ? lists the shortcuts'],
  exec_time: ['実行時間', 'time'],
  running: ['実行中…', 'Running…'],
  md_placeholder: ['Markdown でメモを書きます（Shift+Enter で表示）', 'Write notes in Markdown (Shift+Enter renders)'],
  // results
  rows: ['行', 'rows'],
  page: ['ページ', 'Page'],
  prev: ['前へ', 'Previous'],
  next: ['次へ', 'Next'],
  legend_suppressed: ['は寄与患者数が {k} 人未満のため秘匿したセルです（値は公開されません）。', 'marks a cell hidden because fewer than {k} patients contribute (the value is not released).'],
  dropped_rows: ['公開できない行 {n} 行を除外しました。', '{n} rows that could not be released were dropped.'],
  rounding: ['値は {base} 単位に丸められています。', 'Values are rounded to base {base}.'],
  suppressed_cells: ['秘匿セル数', 'Suppressed cells'],
  dp_note: ['差分プライバシー: 値にはノイズが加えられています。', 'Differential privacy: values carry noise.'],
  eps_spent: ['今回消費した ε', 'ε spent'],
  eps_left: ['残り ε', 'ε left'],
  noise_scale: ['ノイズ尺度', 'noise scale'],
  ci: ['95% 信頼区間', '95% CI'],
  dp_cached: ['保存済みの回答（予算の消費なし）', 'cached — no budget spent'],
  dp_below_threshold: ['公表閾値未満', 'below release threshold'],
  dp_below_threshold_note: ['ノイズ付き患者数が公表閾値 {t} 未満のセルは秘匿します。', 'Cells whose noisy patient count is below the release threshold {t} are hidden.'],
  dp_clamp: ['値の範囲', 'clamped to'],
  dp_bounds_note: ['寄与の上限: 1 患者あたり {l} グループ、グループあたり {m} 行', 'Contribution bounds: {l} groups per patient, {m} rows per group'],
  dp_epsilon: ['ε（このクエリ）', 'ε (this query)'],
  dp_max_groups: ['L: 患者あたりの最大グループ数', 'L: max groups per patient'],
  dp_max_rows: ['m: グループあたりの最大行数', 'm: max rows per group'],
  dp_cost: ['消費量を確認', 'Cost'],
  dp_cost_result: ['このクエリの消費 ε={cost}（残り ε={left} → 実行後 ε={after}）', 'This query costs ε={cost} (ε={left} left → ε={after} after running)'],
  dp_cost_cached: ['同一の回答が保存されています。再実行しても予算は消費しません。', 'An identical answer is stored: running it again spends no budget.'],
  renews_on: ['予算の更新日', 'renews on'],
  budget_exhausted_title: ['プライバシー予算が不足しているため実行できません', 'Refused: not enough privacy budget left'],
  budget_exhausted_detail: ['要求 ε={req}、残り ε={left}。予算は {date} に更新されます。', 'Asked ε={req}, ε={left} left. The budget renews on {date}.'],
  table_view: ['表', 'Table'],
  chart_view: ['グラフ', 'Chart'],
  chart_type: ['グラフの種類', 'Chart type'],
  bar: ['棒グラフ', 'Bar'],
  line: ['折れ線グラフ', 'Line'],
  stacked: ['積み上げ棒グラフ', 'Stacked bar'],
  x_axis: ['X 軸（列）', 'X axis (column)'],
  y_axis: ['Y 軸（値の列）', 'Y axis (value column)'],
  series: ['系列（列）', 'Series (column)'],
  no_series: ['（なし）', '(none)'],
  draw_chart: ['グラフを描く', 'Draw chart'],
  chart_suppressed_note: ['秘匿セルはグラフに描かれません。', 'Suppressed cells are not drawn.'],
  request_release: ['公開を申請する', 'Send the release request'],
  release_justification: ['公開を必要とする理由', 'Why this result needs to be released'],
  release_sent: ['公開申請を受け付けました（番号 {id}）。', 'Release request received (id {id}).'],
  refused: ['実行されませんでした', 'Not run'],
  error_ref: ['問い合わせ番号', 'Reference'],
  // catalogue
  catalog_intro: ['この申請の範囲で参照できる表と列です。', 'Tables and columns visible in this application\'s scope.'],
  column: ['列', 'Column'],
  type: ['型', 'Type'],
  description: ['説明', 'Description'],
  public_domain: ['公開ドメイン', 'Public domain'],
  privacy_unit: ['プライバシー単位', 'Privacy unit'],
  insert: ['エディタに挿入', 'Insert in editor'],
  // history
  when: ['日時', 'When'],
  status: ['状態', 'Status'],
  code: ['コード', 'Code'],
  duration: ['所要時間', 'Duration'],
  // applications
  my_apps: ['自分の申請', 'My applications'],
  new_app: ['新規申請', 'New application'],
  form1_title: ['臨床調査個人票使用申請書（様式第1号・別紙）', 'Application to use clinical survey records (Form 1 and annex)'],
  f_title: ['研究課題名', 'Research title'],
  f_necessity: ['2(1) 研究の必要性', '2(1) Necessity of the research'],
  f_expected: ['2(1) 期待される成果', '2(1) Expected results'],
  f_ethics_committee: ['2(3) 倫理審査委員会', '2(3) Ethics review committee'],
  f_ethics_number: ['2(3) 倫理審査 承認番号', '2(3) Ethics approval number'],
  f_research_group: ['研究班名', 'Research group'],
  f_applicant_affiliation: ['申請者 所属', 'Applicant: affiliation'],
  f_applicant_title: ['申請者 職名', 'Applicant: title'],
  f_applicant_name: ['申請者 氏名', 'Applicant: name'],
  f_diseases: ['1 対象疾患の疾病番号（カンマ区切り）', '1 Target diseases: designated disease numbers (comma-separated)'],
  f_datasets: ['対象データベース', 'Datasets'],
  f_purpose: ['2(1) 研究の目的', '2(1) Purpose of the research'],
  f_prior_work: ['2(2) これまでの研究状況', '2(2) Research done so far'],
  f_plan: ['2(3) 研究計画・方法及び倫理面への配慮', '2(3) Research plan, methods and ethical considerations'],
  f_other: ['2(4) その他の関連事項', '2(4) Other related matters'],
  f_named_users: ['3 個人票を使用する者（1行に1人: ユーザー名, 所属機関, 職名）', '3 Named users (one per line: user name, affiliation, title)'],
  f_fiscal_years: ['4(1) 年次（年度、カンマ区切り）', '4(1) Fiscal years (comma-separated)'],
  f_regions: ['4(2) 地域（都道府県コード、空欄は全国）', '4(2) Regions (prefecture codes; empty = nationwide)'],
  f_term_start: ['5 使用期間（開始日）', '5 Period of use (start)'],
  f_term_end: ['5 使用期間（終了日・年度を越えないこと）', '5 Period of use (end; must not cross the fiscal year)'],
  f_place_of_use: ['6 電子媒体の使用場所及び保管場所（使用者ごと）', '6 Place of use and storage of the electronic media (per user)'],
  f_publication: ['7 結果の公表及び公表時期', '7 Publication of results and timing'],
  f_contact: ['8 その他（事務担当者の所属・職名・氏名・連絡先）', '8 Other: contact person (affiliation, title, name, address, phone, e-mail)'],
  save_draft: ['下書き保存', 'Save draft'],
  submit: ['提出', 'Submit'],
  submitted: ['提出しました。', 'Submitted.'],
  draft_saved: ['下書きを保存しました（{id}）。', 'Draft saved ({id}).'],
  answer_correction: ['補正して再提出', 'Answer the correction and resubmit'],
  change_application: ['変更申請', 'Change application'],
  pledge: ['誓約書（様式第2号）', 'Pledge (Form 2)'],
  pledge_text: [
    '1. 申請した使用予定者以外は使用しません。 2. 承認された目的以外に利用しません。 3. 発表は疾病対策課に報告します。 4. 作業終了後、記録は復元不可能な方法で処理します。 5. 第三者に提供しません。',
    '1. Only the named users use the records. 2. No use outside the approved purpose. 3. Publications are reported to the division. 4. Records are destroyed irreversibly when the work ends. 5. No provision to third parties.',
  ],
  accept_pledge: ['誓約に同意する', 'Accept the pledge'],
  pledge_accepted: ['誓約に同意しました。', 'Pledge accepted.'],
  approved_waiting: ['承認済みでまだ利用できない申請があります。誓約が必要な場合は開いて同意してください:', 'Approved applications you cannot use yet; open one to accept its pledge if needed:'],
  budget_meter: ['プライバシー予算', 'Privacy budget'],
  pledge_needed: ['この申請を利用するには誓約が必要です。', 'You must accept the pledge to use this application.'],
  history: ['履歴', 'History'],
  reasons: ['理由・補正依頼', 'Reasons and correction requests'],
  st_draft: ['下書き', 'Draft'],
  st_submitted: ['審査中', 'Submitted'],
  st_correction_requested: ['補正依頼', 'Correction requested'],
  st_approved: ['承認', 'Approved'],
  st_rejected: ['不承認', 'Rejected'],
  st_revoked: ['承認取消', 'Revoked'],
  st_expired: ['期間終了', 'Expired'],
  // review
  inbox: ['審査受付箱', 'Review inbox'],
  filter_status: ['状態で絞り込む', 'Filter by status'],
  all: ['すべて', 'All'],
  applicant: ['申請者', 'Applicant'],
  updated: ['更新', 'Updated'],
  decision: ['決定', 'Decision'],
  approve: ['承認', 'Approve'],
  reject: ['不承認', 'Reject'],
  request_correction: ['補正を依頼', 'Request correction'],
  reason: ['理由', 'Reason'],
  recommendation: ['是正勧告', 'Corrective recommendation'],
  issue_recommendation: ['是正勧告を発出', 'Issue recommendation'],
  revoke: ['承認を取り消す', 'Revoke approval'],
  k_threshold: ['秘匿の閾値 k', 'Suppression threshold k'],
  epsilon_budget: ['ε 予算（差分プライバシー）', 'ε budget (differential privacy)'],
  dp_default_groups: ['既定の L（患者あたりの最大グループ数、1〜1000）', 'Default L (max groups per patient, 1–1000)'],
  dp_default_rows: ['既定の m（グループあたりの最大行数、1〜1000）', 'Default m (max rows per group, 1–1000)'],
  done: ['完了しました。', 'Done.'],
  fy_cross: ['終了日は開始日と同じ年度（3月31日まで）にしてください。', 'The end date must be in the same fiscal year as the start (by 31 March).'],
  // audit
  chain_ok: ['監査ログの連鎖は正常です（{n} 件、先頭ハッシュ {head}）', 'Audit chain verified ({n} events, head {head})'],
  chain_broken: ['監査ログの改ざんを検出しました（{at} 番目の記録）', 'Audit chain BROKEN (at entry {at})'],
  from: ['開始', 'From'],
  to: ['終了', 'To'],
  user: ['ユーザー', 'User'],
  application: ['申請', 'Application'],
  action: ['操作', 'Action'],
  outcome: ['結果', 'Outcome'],
  search: ['検索', 'Search'],
  detail: ['詳細', 'Detail'],
  close: ['閉じる', 'Close'],
  // pms
  pms_intro: ['自社製品（{scope}）を使用した患者のみが対象です。少数セルの秘匿など開示ルールは研究者と同じです。', 'Only patients treated with your own products ({scope}). The same disclosure rules as for researchers apply.'],
  pms_cases: ['性別・5歳階級別の登録症例数', 'Registered cases by sex and 5-year age band'],
  pms_ae: ['事象名・重篤度別の有害事象', 'Adverse events by term and seriousness'],
  pms_deaths: ['死亡例', 'Deaths'],
  pms_notebook: ['このスコープのノートブック', 'Notebooks on this scope'],
  products: ['製品', 'Products'],
  back: ['戻る', 'Back'],
  // oversight (issue 13 §2 §4)
  ...oversight,
  // seeds (issue 16)
  ...seeds,
  // annual reports (issue 13 §3)
  ...annual,
  // console (issue 17)
  ...consoleStrings,
} as const;

export type Key = keyof typeof dict;

function initialLang(): Lang {
  const stored = localStorage.getItem('kura.lang');
  if (stored === 'ja' || stored === 'en') return stored;
  for (const l of navigator.languages ?? [navigator.language]) {
    if (l.toLowerCase().startsWith('ja')) return 'ja';
    if (l.toLowerCase().startsWith('en')) return 'en';
  }
  return 'ja';
}

let lang: Lang = initialLang();

export function getLang(): Lang {
  return lang;
}

export function setLang(l: Lang) {
  lang = l;
  localStorage.setItem('kura.lang', l);
  document.documentElement.lang = l;
}

export function t(key: Key, vars: Record<string, string | number> = {}): string {
  let s: string = dict[key][lang === 'ja' ? 0 : 1];
  for (const [k, v] of Object.entries(vars)) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}

/** Pick the ja or en variant of a bilingual server field (two fields). */
export function pick(ja: string | undefined | null, en: string | undefined | null): string {
  return (lang === 'ja' ? ja || en : en || ja) ?? '';
}

// ---- codes, bilingual server text, times and numbers (issue 17 §1)

type Pair = readonly [string, string];
type CodeTable = 'status' | 'outcome' | 'action' | 'error' | 'type' | 'bool' | 'dataset' | 'mode' | 'role' | 'severity' | 'rule';
const tables = codes as unknown as Record<CodeTable, Record<string, Pair>> & {
  value: Record<string, Record<string, Pair>>;
  hidden: Record<string, Pair>;
};

function side(p: Pair): string {
  return p[lang === 'ja' ? 0 : 1];
}

/** Whether a stable code has a label in `table`. */
export function hasLabel(table: CodeTable, code: string): boolean {
  return Object.prototype.hasOwnProperty.call(tables[table], code);
}

/**
 * The label of a stable API code (status, outcome, audit action, error, type, …) in the
 * current language. Types match by their head (`Decimal128(38, 10)` → Decimal128,
 * `Timestamp(…)` → Timestamp). An unknown code is returned as is, which the journeys'
 * raw-code scan then reports, so a new code cannot slip onto a Japanese screen unnoticed.
 */
export function label(table: CodeTable, code: string | null | undefined): string {
  if (code === null || code === undefined || code === '') return '';
  const key = table === 'type' ? code.replace(/\(.*$/, '') : code;
  const p = tables[table][key];
  return p ? side(p) : code;
}

/** The public label of a domain value of column `column` (sex M → 男性), or null. */
export function valueLabel(column: string, value: unknown): string | null {
  const m = tables.value[column];
  if (!m || value === null || value === undefined) return null;
  const p = m[String(value)];
  return p ? side(p) : null;
}

/** Why a cell is hidden, in words (small cell, differencing, DP threshold). */
export function hiddenReason(kind: 'small_cell' | 'differencing' | 'dp_threshold', vars: Record<string, string | number>): string {
  let s = side(tables.hidden[kind]);
  for (const [k, v] of Object.entries(vars)) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}

const CJK = /[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef]/;

/** Whether a text contains Japanese script. */
export function hasJapanese(s: string): boolean {
  return CJK.test(s);
}

/**
 * One language of a bilingual server text. The server writes messages and notes as
 * `English. / 日本語。`; this returns the half of the current language, or null when the
 * text has no half in it (an English-only engine message on a Japanese screen), so the
 * caller falls back to the label of the code.
 */
export function bi(text: string | null | undefined): string | null {
  if (!text) return null;
  const parts = text.split(' / ');
  for (let i = 1; i < parts.length; i++) {
    const en = parts.slice(0, i).join(' / ');
    const ja = parts.slice(i).join(' / ');
    if (!hasJapanese(en) && hasJapanese(ja)) return (lang === 'ja' ? ja : en).trim();
  }
  if (lang === 'ja') return hasJapanese(text) ? text : null;
  return hasJapanese(text) ? null : text;
}

const JST = 'Asia/Tokyo';

/** An instant in Japan Standard Time with the zone named: 2026年12月1日 23:11 JST / 1 Dec 2026, 23:11 JST. */
export function fmtDateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const f = new Intl.DateTimeFormat(lang === 'ja' ? 'ja-JP' : 'en-GB', {
    timeZone: JST,
    year: 'numeric',
    month: lang === 'ja' ? 'long' : 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  });
  return `${f.format(d)} JST`;
}

/** A calendar date (no time, no zone shift): 2026年12月1日 / 1 Dec 2026. */
export function fmtDay(date: string | null | undefined): string {
  if (!date) return '—';
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(date);
  if (!m) return date;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  return new Intl.DateTimeFormat(lang === 'ja' ? 'ja-JP' : 'en-GB', {
    timeZone: 'UTC',
    year: 'numeric',
    month: lang === 'ja' ? 'long' : 'short',
    day: 'numeric',
  }).format(d);
}

/** A fiscal year: 2024年度 / FY2024. */
export function fmtFy(year: number | string): string {
  return lang === 'ja' ? `${year}年度` : `FY${year}`;
}

/** A number with thousands separators and at most `digits` decimals. */
export function fmtNum(v: number, digits = 2): string {
  return v.toLocaleString(lang === 'ja' ? 'ja-JP' : 'en-GB', { maximumFractionDigits: digits });
}

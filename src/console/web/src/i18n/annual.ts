// Strings of the annual report screens (issue 13 §3): the data custodian's annual reports
// (seed 001 items 10 and 12), the PMS team's report for its own products, and the usage
// report's PDF. Same [ja, en] shape as the main dictionary, spread into it.
export const annual = {
  nav_annual: ['年次報告', 'Annual reports'],
  annual_title: ['年次報告（登録症例数・運営状況）', 'Annual report (registered cases and operations)'],
  annual_intro: [
    '運用方針 10（登録症例数の公表）と 12（有害事象・死亡症例の報告）の年次集計です。すべてのセルは研究者への回答と同じ開示制御を経ており、「秘匿」のセルは 5 症例未満か、差し引きで 5 症例未満が分かるのを防ぐために伏せています。',
    'The yearly counts of seed 001 items 10 (registered cases) and 12 (adverse events, deaths). Every cell passed the same disclosure control as a researcher’s answer; an “x” cell has fewer than k cases or is withheld so that no small count follows by subtraction.',
  ],
  annual_fy: ['年度', 'Fiscal year'],
  annual_show: ['作成して表示', 'Generate and show'],
  annual_download: ['ダウンロード', 'Download'],
  annual_suppressed: ['秘匿', 'x'],
  annual_suppressed_note: ['秘匿セル', 'Suppressed cells'],
  annual_cells: ['セル数', 'Cells'],
  annual_data_version: ['データ版', 'Data version'],
  annual_report_id: ['報告番号', 'Report'],
  annual_k: ['最小症例数 k', 'Minimum cases k'],
  annual_table: ['表', 'Table'],
  annual_item_10: ['運用方針 10 データの公表', 'Seed 001 item 10, publication'],
  annual_item_12: ['運用方針 12 運営状況の把握', 'Seed 001 item 12, operations report'],
  annual_item_other: ['レジストリ', 'Registry'],
  annual_unit_patients: ['人', 'patients'],
  annual_unit_events: ['件', 'events'],
  annual_register: ['これまでに作成した年次報告', 'Annual reports generated so far'],
  annual_generated_at: ['作成日時', 'Generated'],
  annual_generated_by: ['作成者', 'By'],
  annual_audience: ['対象', 'For'],
  annual_pms_title: ['年次報告（自社製品：運用方針 12）', 'Annual report for our products (seed 001 item 12)'],
  annual_pms_intro: [
    '自社製品の登録症例数、有害事象・不具合の件数、事象別の件数と症例数、死亡症例数です。他社製品の数値は含みません。',
    'Registered cases, adverse events, events and patients by event term, and deaths of your own products only; no other manufacturer’s figures are included.',
  ],
  usage_pdf: ['PDF（提出用）', 'PDF (for filing)'],
} as const;

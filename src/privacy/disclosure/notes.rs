//! Disclosure check, the account of a release: the human-readable notes (en / ja) that
//! say what the passes did to the result, in a fixed order (suppression, padding,
//! dropped rows, sealed inner cells, rounding). They carry counts and rule values only,
//! never a data value, and a researcher can act on each one.

use super::padding::{Padding, Placed};
use crate::privacy::rules::RuleSet;
use crate::sql::rewrite::Release;

/// The notes of a release whose rows were placed as `placed`, with `suppressed` cells.
pub(super) fn notes(
    release: &Release,
    rules: &RuleSet,
    padding: &Padding,
    placed: &Placed,
    suppressed: usize,
) -> Vec<String> {
    let padded = matches!(padding, Padding::Domains(_));
    let mut notes = Vec::new();
    if suppressed > 0 {
        notes.push(suppressed_note(suppressed, rules));
    }
    if padded {
        notes.push(padding_note(placed.padded_rows));
    }
    if padded && key_only(release) {
        // Without an aggregate column a padded row looks like a data row; say which rows
        // are released (the same information the non-null cells carry in other results).
        notes.push(key_only_note(placed.fully_released));
    }
    if placed.dropped_outside > 0 {
        notes.push(outside_note(placed.dropped_outside));
    }
    if placed.dropped_rows > 0 {
        notes.push(dropped_note(placed.dropped_rows, padding));
    }
    if release.inner_sealed {
        notes.push("Cells of an inner aggregation that failed the rules were removed before the outer computation. / 内側の集計で規則を満たさないセルは、外側の計算の前に除外しました。".to_string());
    }
    if let Some(base) = rules.rounding {
        notes.push(format!(
            "Counts are rounded to a multiple of {base}. / 件数は {base} の倍数に丸めています。"
        ));
    }
    notes
}

/// Every released column is a group key (e.g. `SELECT DISTINCT sex …`).
fn key_only(release: &Release) -> bool {
    release.columns.iter().all(|c| c.key)
}

fn suppressed_note(cells: usize, rules: &RuleSet) -> String {
    format!(
        "{} cell(s) were suppressed: fewer than {} contributing patients (an empty cell counts as suppressed), fewer than {} facilities, or one or two patients dominating a sum. / {} 個のセルを秘匿しました（寄与患者数 {} 未満（0 人のセルを含む）、施設数 {} 未満、または少数の患者が合計の大半を占めるため）。",
        cells, rules.k, rules.facility_k, cells, rules.k, rules.facility_k
    )
}

fn padding_note(padded_rows: usize) -> String {
    format!(
        "The result lists every combination of the group keys' public domains ({padded_rows} row(s) without data were added); rows with a suppressed cell follow the fully released rows, in domain order, so neither their presence nor their position reveals data. / 集計キーの公開ドメインのすべての組み合わせを表示しています（データのない {padded_rows} 行を追加）。秘匿セルを含む行は、すべて公開できる行の後にドメイン順で並べているため、行の有無や位置からデータは分かりません。"
    )
}

fn key_only_note(fully_released: usize) -> String {
    format!(
        "This result has no aggregate column: only the first {fully_released} row(s) are groups with enough patients; the rows after them are the rest of the key domain and say nothing about whether data exists. Add count(DISTINCT pid) to see the counts. / 集計列がないため、先頭の {fully_released} 行のみが十分な患者数のあるグループです。以降の行はキーの残りのドメインで、データの有無を示しません。件数は count(DISTINCT pid) を追加して確認してください。"
    )
}

fn outside_note(dropped_outside: usize) -> String {
    format!(
        "{dropped_outside} row(s) with a suppressed cell were removed because their key values are outside the public domain (e.g. NULL). / 秘匿セルを含み、キーの値が公開ドメイン外（NULL など）の {dropped_outside} 行を除外しました。"
    )
}

fn dropped_note(dropped_rows: usize, padding: &Padding) -> String {
    if matches!(padding, Padding::Impossible) {
        format!(
            "{dropped_rows} row(s) with a suppressed cell were removed: the group keys could not be padded to their domain (a computed or non-public key, or too many combinations), and showing such a row would reveal that its group is non-empty. Use public-domain keys such as sex, prefecture_code, fiscal_year, disease_no, age_band to keep suppressed rows visible. / 秘匿セルを含む {dropped_rows} 行を除外しました。集計キーを公開ドメインの全組み合わせに補完できない（計算されたキー・非公開のキー・組み合わせが多すぎる）ため、行を表示すると該当者の存在が分かってしまいます。秘匿行を表示するには sex、prefecture_code、fiscal_year、disease_no、age_band など公開ドメインの列をキーにしてください。"
        )
    } else {
        format!(
            "{dropped_rows} row(s) were removed because a cell failed the rules and their keys are not public-domain values. / 規則を満たさないセルを含み、かつキーが公開ドメインの値でない {dropped_rows} 行を除外しました。"
        )
    }
}

//! Disclosure check, the account of a release: the human-readable notes (en / ja) that
//! say what the passes did to the result, in a fixed order (suppression, differencing,
//! padding, removed rows, sealed inner cells, rounding). They carry counts of *visible*
//! cells and rule values only, never a data value and never a count of removed rows
//! (which would count small groups); a researcher can act on each one.

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
    differencing: usize,
) -> Vec<String> {
    let padded = matches!(padding, Padding::Domains(_));
    let mut notes = Vec::new();
    if suppressed > 0 {
        notes.push(suppressed_note(suppressed, rules));
    }
    if differencing > 0 {
        notes.push(differencing_note(differencing, rules));
    }
    if padded {
        notes.push(padding_note());
    }
    if padded && key_only(release) {
        // Without an aggregate column a padded row looks like a data row; say which rows
        // are released (the same information the non-null cells carry in other results).
        notes.push(key_only_note(placed.fully_released));
    }
    // Said whenever rows *can* be removed, never counted: whether and how many rows were
    // removed depends on groups of fewer than k patients.
    if padded {
        notes.push(outside_note());
    }
    if placed.drops_failing {
        notes.push(dropped_note(padding));
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

/// Not counted: how many rows were added (no patient) rather than suppressed (1 to k − 1
/// patients) would tell empty groups from small ones.
fn padding_note() -> String {
    String::from(
        "The result lists every combination of the group keys' public domains (rows without data are added); rows with a suppressed cell follow the fully released rows, in domain order, so neither their presence nor their position reveals data. / 集計キーの公開ドメインのすべての組み合わせを表示しています（データのない行も追加）。秘匿セルを含む行は、すべて公開できる行の後にドメイン順で並べているため、行の有無や位置からデータは分かりません。",
    )
}

fn key_only_note(fully_released: usize) -> String {
    format!(
        "This result has no aggregate column: only the first {fully_released} row(s) are groups with enough patients; the rows after them are the rest of the key domain and say nothing about whether data exists. Add count(DISTINCT pid) to see the counts. / 集計列がないため、先頭の {fully_released} 行のみが十分な患者数のあるグループです。以降の行はキーの残りのドメインで、データの有無を示しません。件数は count(DISTINCT pid) を追加して確認してください。"
    )
}

fn differencing_note(cells: usize, rules: &RuleSet) -> String {
    let k = rules.k;
    format!(
        "{cells} of them were suppressed for differencing: their patients differ from those of another released cell (in this answer, or released earlier to this application) by fewer than {k}, so subtracting the two would reveal a small group. Ask the question in the same form as before, or with groups that differ by at least {k} patients. / そのうち {cells} 個のセルは差分による特定を防ぐために秘匿しました（この回答または本申請で以前に公開したセルと、寄与患者の差が {k} 人未満のため）。以前と同じ形で集計するか、{k} 人以上異なる集団で集計してください。"
    )
}

fn outside_note() -> String {
    "Rows with a suppressed cell whose key values lie outside the public domain (e.g. NULL) are not shown, and not counted. / 秘匿セルを含み、キーの値が公開ドメイン外（NULL など）の行は表示せず、件数も示しません。".to_string()
}

fn dropped_note(padding: &Padding) -> String {
    if matches!(padding, Padding::Impossible) {
        "Rows with a suppressed cell are removed, and not counted: the group keys cannot be padded to their domain (a computed or non-public key, or too many combinations), and showing or counting such rows would reveal that a small group is non-empty. Use public-domain keys such as sex, prefecture_code, fiscal_year, disease_no, age_band to keep suppressed rows visible. / 秘匿セルを含む行は除外し、件数も示しません。集計キーを公開ドメインの全組み合わせに補完できない（計算されたキー・非公開のキー・組み合わせが多すぎる）ため、行を表示したり数えたりすると少人数のグループの存在が分かってしまいます。秘匿行を表示するには sex、prefecture_code、fiscal_year、disease_no、age_band など公開ドメインの列をキーにしてください。".to_string()
    } else {
        "Rows with a cell that fails the rules and keys that are not public-domain values are removed, and not counted. / 規則を満たさないセルを含み、かつキーが公開ドメインの値でない行は除外し、件数も示しません。".to_string()
    }
}

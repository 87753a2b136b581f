//! Reports, the annual report rendered: as a [`Document`] in the form style of a published
//! statistical report (date, issuer, title, lead, one numbered section per registry, a
//! table and a chart per view, the suppression note), Japanese first and then English —
//! from which the HTML and the PDF are drawn — and as CSV (one line per cell).
//!
//! Guarantees: every format carries the same cells of one [`AnnualReport`]; a suppressed
//! cell is `秘匿` / `x` in the documents and an empty value with status `suppressed` in the
//! CSV, never a number.

use super::{AnnualReport, Section, Unit, View};
use crate::report::document::{Block, Chart, Document, SUPPRESSED_EN, SUPPRESSED_JA, Table};

/// Japanese era year of a fiscal year (令和 from 2019).
fn era(fy: i32) -> String {
    if fy >= 2019 {
        format!("令和{}年度（{fy}年度）", fy - 2018)
    } else {
        format!("{fy}年度")
    }
}

struct Lang {
    ja: bool,
}

impl Lang {
    fn pick<'a>(&self, ja: &'a str, en: &'a str) -> &'a str {
        if self.ja { ja } else { en }
    }
    fn suppressed(&self) -> &'static str {
        if self.ja {
            SUPPRESSED_JA
        } else {
            SUPPRESSED_EN
        }
    }
}

fn cell_text(v: Option<i64>, l: &Lang) -> String {
    v.map_or_else(|| l.suppressed().to_string(), |n| n.to_string())
}

fn unit(u: Unit, l: &Lang) -> &'static str {
    match (u, l.ja) {
        (Unit::Patients, true) => "人",
        (Unit::Events, true) => "件",
        (Unit::Patients, false) => "patients",
        (Unit::Events, false) => "events",
    }
}

fn table(v: &View, l: &Lang) -> Table {
    let mut head = vec![l.pick(&v.row_label_ja, &v.row_label_en).to_string()];
    head.extend(v.columns.iter().map(|c| l.pick(&c.ja, &c.en).to_string()));
    let rows = v
        .rows
        .iter()
        .map(|r| {
            let mut cells = vec![l.pick(&r.ja, &r.en).to_string()];
            cells.extend(r.cells.iter().map(|c| cell_text(*c, l)));
            cells
        })
        .collect();
    let mut numeric = vec![false];
    numeric.extend(v.columns.iter().map(|_| true));
    Table {
        head,
        rows,
        numeric,
        total_rows: v.rows.iter().map(|r| r.total).collect(),
    }
}

fn chart(v: &View, l: &Lang) -> Chart {
    let data_cols: Vec<usize> = (0..v.columns.len())
        .filter(|&j| !v.columns[j].total)
        .collect();
    Chart {
        title: format!("{} ({})", l.pick(&v.title_ja, &v.title_en), unit(v.unit, l)),
        series: if data_cols.len() > 1 {
            data_cols
                .iter()
                .map(|&j| l.pick(&v.columns[j].ja, &v.columns[j].en).to_string())
                .collect()
        } else {
            Vec::new()
        },
        bars: v
            .rows
            .iter()
            .filter(|r| !r.total)
            .map(|r| {
                let label = l.pick(&r.ja, &r.en).to_string();
                (label, data_cols.iter().map(|&j| r.cells[j]).collect())
            })
            .collect(),
        suppressed: l.suppressed().to_string(),
    }
}

fn item_name(item: &str, l: &Lang) -> String {
    match item {
        "10" => l
            .pick("運用方針 10 データの公表", "seed 001 item 10, publication")
            .into(),
        "12" => l
            .pick(
                "運用方針 12 運営状況の把握",
                "seed 001 item 12, operations report",
            )
            .into(),
        "jasmin" => l
            .pick(
                "JaSMIn 登録者の集計（疾患群・性別・年齢）",
                "seed 000, JaSMIn registrants by disease group, sex and age",
            )
            .into(),
        other => l.pick("レジストリ", "registry").to_string() + " " + other,
    }
}

fn section(out: &mut Vec<Block>, n: usize, s: &Section, l: &Lang) {
    out.push(Block::Heading(format!(
        "{n} {}",
        l.pick(&s.title_ja, &s.title_en)
    )));
    out.push(Block::Small(l.pick(&s.basis_ja, &s.basis_en).to_string()));
    for (i, v) in s.views.iter().enumerate() {
        out.push(Block::Subheading(format!(
            "{} {n}-{} {}（{}、{}）",
            l.pick("表", "Table"),
            i + 1,
            l.pick(&v.title_ja, &v.title_en),
            unit(v.unit, l),
            item_name(&v.item, l)
        )));
        out.push(Block::Table(table(v, l)));
        out.push(Block::Chart(chart(v, l)));
    }
    out.push(Block::Small(if l.ja {
        format!(
            "秘匿: {k} 症例未満のセル、および他のセル・合計・過去の公表値との差し引きで {k} 症例未満が判明しうるため公表しないセル（k = {k}）。",
            k = s.k
        )
    } else {
        format!(
            "x: suppressed — fewer than {k} cases, or withheld so that no count below {k} follows by subtraction from other cells, totals or earlier published reports (k = {k}).",
            k = s.k
        )
    }));
}

fn part(out: &mut Vec<Block>, r: &AnnualReport, l: &Lang) {
    out.push(Block::Right(r.generated_at.format("%Y-%m-%d").to_string()));
    out.push(Block::Right(
        l.pick(
            "データ管理者（kura 患者登録データ利用環境）",
            "Data custodian (kura registry enclave)",
        )
        .to_string(),
    ));
    let own = r.audience.strip_prefix("manufacturer:");
    let title = match (own, l.ja) {
        (Some(m), true) => format!(
            "{} 再生医療等製品 年次報告（運営状況・登録症例数）— 製造販売業者 {m} の製品",
            era(r.fiscal_year)
        ),
        (Some(m), false) => format!(
            "Annual report FY{}: registrations and adverse events of the products of manufacturer {m}",
            r.fiscal_year
        ),
        (None, true) => format!(
            "{} 患者登録データ 年次報告（登録症例数・運営状況）",
            era(r.fiscal_year)
        ),
        (None, false) => format!(
            "Annual report of the patient registries, fiscal year {} (registered cases and operations)",
            r.fiscal_year
        ),
    };
    out.push(Block::Title(title));
    out.push(Block::Para(if l.ja {
        format!(
            "再生医療等製品患者登録システムに関する運用方針 10（データの公表）および 12（データベースの運営状況の把握）に基づき、{}（{} 〜 {}）の集計結果を報告します。すべての数値は研究者への回答と同じ開示制御（セルごとの最小症例数、差し引きによる特定を防ぐ二次秘匿）を経ています。",
            era(r.fiscal_year),
            r.period.start,
            r.period.end
        )
    } else {
        format!(
            "Under items 10 (publication) and 12 (operations report) of the operating policy for the regenerative-medicine product registries, we report the counts of fiscal year {} ({} to {}). Every figure passed the same disclosure control as a researcher's answer: a minimum number of cases per cell and secondary suppression against subtraction.",
            r.fiscal_year, r.period.start, r.period.end
        )
    }));
    for (i, s) in r.sections.iter().enumerate() {
        section(out, i + 1, s, l);
    }
    out.push(Block::Small(format!(
        "{}: {} / {}: {} / {}: {}",
        l.pick("報告番号", "Report"),
        r.id,
        l.pick("データ版", "Data version"),
        &r.data_version.get(..16).unwrap_or(&r.data_version),
        l.pick("秘匿セル", "Suppressed cells"),
        r.suppressed
    )));
}

/// The report as a document: Japanese, then English on a new page.
pub fn document(r: &AnnualReport) -> Document {
    let mut blocks = Vec::new();
    part(&mut blocks, r, &Lang { ja: true });
    blocks.push(Block::NewPart { lang: "en" });
    part(&mut blocks, r, &Lang { ja: false });
    Document {
        title: format!("年次報告 FY{} / Annual report", r.fiscal_year),
        blocks,
    }
}

/// The report as CSV: one line per cell of every view.
pub fn csv(r: &AnnualReport) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "fiscal_year",
        "section",
        "table",
        "item",
        "unit",
        "row_key",
        "row_ja",
        "row_en",
        "column_key",
        "column_ja",
        "column_en",
        "value",
        "status",
    ])?;
    let fy = r.fiscal_year.to_string();
    for s in &r.sections {
        for v in &s.views {
            let unit = match v.unit {
                Unit::Patients => "patients",
                Unit::Events => "events",
            };
            for row in &v.rows {
                for (c, cell) in v.columns.iter().zip(&row.cells) {
                    let (value, status) = match cell {
                        Some(n) => (n.to_string(), "released"),
                        None => (String::new(), "suppressed"),
                    };
                    let row_key = if row.total { "total" } else { row.key.as_str() };
                    let col_key = if c.total { "total" } else { c.key.as_str() };
                    w.write_record([
                        fy.as_str(),
                        s.id.as_str(),
                        v.id.as_str(),
                        v.item.as_str(),
                        unit,
                        row_key,
                        row.ja.as_str(),
                        row.en.as_str(),
                        col_key,
                        c.ja.as_str(),
                        c.en.as_str(),
                        value.as_str(),
                        status,
                    ])?;
                }
            }
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

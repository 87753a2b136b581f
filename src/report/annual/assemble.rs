//! Reports, the annual report assembled: the tables the query path released, laid over
//! their full key domains (every group × every value of the dimension, so a row's presence
//! says nothing), with each cell's contributor set; the relations the definitions' margins
//! declare; the publication's secondary suppression (`privacy::disclosure::margins`); and
//! the views a reader sees (a table with its row and column totals).
//!
//! Guarantees: a cell is shown only if the query path released it *and* the margins rule
//! kept it; a domain cell no executed row produced is an empty, suppressed cell; the views
//! carry every computed cell (a table used as another's totals is shown there); a PMS
//! team's view keeps only the rows of its own manufacturer's products, without totals
//! over other manufacturers.

use std::collections::{BTreeMap, HashMap};

use roaring::RoaringBitmap;
use serde_json::Value;

use super::definition::{Definitions, Member, SectionDef, TableDef, for_year};
use super::{Label, Section, View, ViewRow};
use crate::privacy::disclosure::Earlier;
use crate::privacy::disclosure::margins::{self, Cell, Relation};
use crate::query::plane::ReportRun;
use crate::query::suppression::ReportTable;

/// The SQL of every query of the report for `fy`, in order: per section, the group names
/// (if any), then each table.
pub fn queries(defs: &Definitions, fy: i32) -> Vec<String> {
    let mut out = Vec::new();
    for s in &defs.sections {
        if let Some(g) = &s.group {
            out.push(for_year(&g.sql, fy));
        }
        out.extend(s.tables.iter().map(|t| for_year(&t.sql, fy)));
    }
    out
}

/// A JSON key value as text (strings as they are, numbers as written).
fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A group of a section (a product, a disease).
#[derive(Debug, Clone)]
struct GroupRow {
    member: Member,
    manufacturer: Option<String>,
}

/// The groups from the names query's released rows: `key, name_ja, name_en [, maker]`.
fn groups(t: &ReportTable) -> Vec<GroupRow> {
    t.outcome
        .result
        .rows
        .iter()
        .filter_map(|r| {
            let text = |i: usize| r.get(i).filter(|v| !v.is_null()).map(key_text);
            Some(GroupRow {
                member: Member {
                    key: text(0)?,
                    ja: text(1).unwrap_or_default(),
                    en: text(2).unwrap_or_default(),
                },
                manufacturer: text(3),
            })
        })
        .collect()
}

/// One table's cells by key tuple: released value (None = suppressed) and set.
struct TableCells {
    keys: Vec<String>,
    k: u32,
    /// Key tuples in domain order.
    order: Vec<Vec<String>>,
    /// Index into the report's cell list.
    index: HashMap<Vec<String>, usize>,
}

/// What assembling produced.
pub struct Built {
    pub sections: Vec<Section>,
    /// The sets a reader can compute from the report (for the ledger).
    pub published: Vec<RoaringBitmap>,
    pub cells: usize,
    pub suppressed: usize,
}

/// All cells of the report and their values, section by section.
struct Cells {
    cells: Vec<Cell>,
    values: Vec<Option<i64>>,
}

/// Lay one executed table over its domain, appending its cells to `all`.
fn table_cells(
    t: &TableDef,
    s: &SectionDef,
    groups: &[GroupRow],
    run: &ReportTable,
    all: &mut Cells,
) -> TableCells {
    let keys = t.keys(s.group.as_ref());
    let mut order: Vec<Vec<String>> = vec![Vec::new()];
    for key in &keys {
        let members: Vec<String> = match s.dimensions.get(key) {
            Some(d) if t.by.as_deref() == Some(key) => {
                d.members.iter().map(|m| m.key.clone()).collect()
            }
            _ => groups.iter().map(|g| g.member.key.clone()).collect(),
        };
        order = order
            .iter()
            .flat_map(|prefix| {
                members.iter().map(move |m| {
                    let mut k = prefix.clone();
                    k.push(m.clone());
                    k
                })
            })
            .collect();
    }
    let nkeys = keys.len();
    let released: HashMap<Vec<String>, Option<i64>> = run
        .outcome
        .result
        .rows
        .iter()
        .filter(|r| r.len() > nkeys)
        .map(|r| {
            let key: Vec<String> = r[..nkeys].iter().map(key_text).collect();
            (key, r.last().and_then(Value::as_i64))
        })
        .collect();
    let sets: HashMap<Vec<String>, RoaringBitmap> = run
        .rows
        .iter()
        .filter(|r| r.keys.len() == nkeys)
        .map(|r| {
            let key: Vec<String> = r.keys.iter().map(key_text).collect();
            let set = r.sets.last().cloned().flatten().unwrap_or_default();
            (key, set)
        })
        .collect();
    // Keys the data holds outside the declared domain (a product missing from the
    // reference table) are kept, after the domain.
    let mut extra: Vec<Vec<String>> = sets
        .keys()
        .chain(released.keys())
        .filter(|k| !order.contains(*k))
        .cloned()
        .collect();
    extra.sort();
    extra.dedup();
    order.extend(extra);
    let k = run.outcome.result.disclosure.threshold;
    let mut index = HashMap::new();
    for key in &order {
        let value = released.get(key).copied().flatten();
        index.insert(key.clone(), all.cells.len());
        all.cells.push(Cell {
            set: sets.get(key).cloned().unwrap_or_default(),
            released: value.is_some(),
            k,
        });
        all.values.push(value);
    }
    TableCells {
        keys,
        k,
        order,
        index,
    }
}

/// The relations `margin = Σ parts` of table `t` over each of its margins.
fn relations(t: &TableCells, margin: &TableCells) -> Vec<Relation> {
    let pos: Vec<usize> = margin
        .keys
        .iter()
        .filter_map(|k| t.keys.iter().position(|x| x == k))
        .collect();
    let mut parts: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for key in &t.order {
        let projected: Vec<String> = pos.iter().map(|&p| key[p].clone()).collect();
        if let Some(&m) = margin.index.get(&projected) {
            parts.entry(m).or_default().push(t.index[key]);
        }
    }
    parts
        .into_iter()
        .map(|(margin, parts)| Relation { margin, parts })
        .collect()
}

/// Assemble the report from the run (queries in the order of [`queries`]).
pub fn build(defs: &Definitions, run: &ReportRun, check_margins: bool) -> Built {
    let mut all = Cells {
        cells: Vec::new(),
        values: Vec::new(),
    };
    let mut next = run.tables.iter();
    let mut laid: Vec<(Vec<GroupRow>, Vec<TableCells>)> = Vec::new();
    let mut rels = Vec::new();
    for s in &defs.sections {
        let groups = match &s.group {
            Some(_) => next.next().map(groups).unwrap_or_default(),
            None => Vec::new(),
        };
        let mut tables: Vec<TableCells> = Vec::new();
        for t in &s.tables {
            let Some(run) = next.next() else { break };
            let cells = table_cells(t, s, &groups, run, &mut all);
            for m in &t.margins {
                if let Some(mi) = s.tables.iter().position(|x| &x.id == m) {
                    rels.extend(relations(&cells, &tables[mi]));
                }
            }
            tables.push(cells);
        }
        laid.push((groups, tables));
    }
    let published = if check_margins {
        margins::secure(&mut all.cells, &rels, &Earlier::new(run.earlier.clone()))
    } else {
        all.cells
            .iter()
            .filter(|c| c.released)
            .map(|c| c.set.clone())
            .collect()
    };
    for (c, v) in all.cells.iter().zip(all.values.iter_mut()) {
        if !c.released {
            *v = None;
        }
    }
    let sections = defs
        .sections
        .iter()
        .zip(&laid)
        .map(|(s, (groups, tables))| section(s, groups, tables, &all.values))
        .collect();
    Built {
        sections,
        published,
        cells: all.cells.len(),
        suppressed: all.values.iter().filter(|v| v.is_none()).count(),
    }
}

fn section(
    s: &SectionDef,
    groups: &[GroupRow],
    tables: &[TableCells],
    values: &[Option<i64>],
) -> Section {
    let consumed = consumed(s);
    let views = s
        .tables
        .iter()
        .zip(tables)
        .filter(|(t, _)| !consumed.contains(&t.id))
        .map(|(t, cells)| view(s, t, cells, groups, tables, values))
        .collect();
    Section {
        id: s.id.clone(),
        dataset: s.dataset.clone(),
        title_ja: s.title_ja.clone(),
        title_en: s.title_en.clone(),
        basis_ja: s.basis_ja.clone(),
        basis_en: s.basis_en.clone(),
        k: tables.iter().map(|t| t.k).max().unwrap_or(0),
        views,
    }
}

/// The totals of table `t`: the margin with the row keys (row totals), the margin with
/// only the dimension (column totals), and their common margin (the corner).
struct Totals<'a> {
    rows: Option<&'a TableDef>,
    columns: Option<&'a TableDef>,
    corner: Option<&'a TableDef>,
}

fn totals<'a>(s: &'a SectionDef, t: &TableDef) -> Totals<'a> {
    let keys = t.keys(s.group.as_ref());
    let margin_with = |want: &[String]| {
        t.margins
            .iter()
            .filter_map(|m| s.table(m))
            .find(|m| m.keys(s.group.as_ref()) == want)
    };
    let row_keys: Vec<String> = keys
        .iter()
        .filter(|k| Some(*k) != t.by.as_ref())
        .cloned()
        .collect();
    let rows = (t.by.is_some() || !row_keys.is_empty())
        .then(|| {
            if t.by.is_some() {
                margin_with(&row_keys)
            } else {
                margin_with(&[])
            }
        })
        .flatten();
    let columns = match (&t.by, t.per_group) {
        (Some(by), true) => margin_with(std::slice::from_ref(by)),
        _ => None,
    };
    let corner = match (t.by.is_some(), rows) {
        (true, Some(r)) if t.per_group => r
            .margins
            .iter()
            .filter_map(|m| s.table(m))
            .find(|m| m.keys(s.group.as_ref()).is_empty()),
        _ => None,
    };
    Totals {
        rows,
        columns,
        corner,
    }
}

/// Tables shown inside another table's view (as its totals).
fn consumed(s: &SectionDef) -> Vec<String> {
    let mut out = Vec::new();
    for t in &s.tables {
        let tt = totals(s, t);
        out.extend(
            [tt.rows, tt.columns, tt.corner]
                .into_iter()
                .flatten()
                .map(|x| x.id.clone()),
        );
    }
    out
}

fn value_of(
    tables: &[TableCells],
    s: &SectionDef,
    id: &str,
    key: &[String],
    values: &[Option<i64>],
) -> Option<i64> {
    let i = s.tables.iter().position(|t| t.id == id)?;
    tables[i].index.get(key).and_then(|&c| values[c])
}

const TOTAL_JA: &str = "計";
const TOTAL_EN: &str = "Total";

fn view(
    s: &SectionDef,
    t: &TableDef,
    cells: &TableCells,
    groups: &[GroupRow],
    tables: &[TableCells],
    values: &[Option<i64>],
) -> View {
    let tot = totals(s, t);
    let dim = t.by.as_ref().and_then(|b| s.dimensions.get(b));
    let members: Vec<Member> = match dim {
        Some(d) => d.members.clone(),
        None => vec![Member {
            key: String::new(),
            ja: t.title_ja.clone(),
            en: t.title_en.clone(),
        }],
    };
    let mut columns: Vec<Label> = members
        .iter()
        .map(|m| Label {
            key: m.key.clone(),
            ja: m.ja.clone(),
            en: m.en.clone(),
            total: false,
        })
        .collect();
    if dim.is_some() && tot.rows.is_some() {
        columns.push(Label {
            key: String::new(),
            ja: TOTAL_JA.into(),
            en: TOTAL_EN.into(),
            total: true,
        });
    }
    // Row keys: the groups, or one row for a table without groups.
    let row_groups: Vec<GroupRow> = if t.per_group {
        let mut g = groups.to_vec();
        for key in &cells.order {
            if !g.iter().any(|x| x.member.key == key[0]) {
                g.push(GroupRow {
                    member: Member {
                        key: key[0].clone(),
                        ja: key[0].clone(),
                        en: key[0].clone(),
                    },
                    manufacturer: None,
                });
            }
        }
        g
    } else {
        vec![GroupRow {
            member: Member {
                key: String::new(),
                ja: "全体".into(),
                en: "All".into(),
            },
            manufacturer: None,
        }]
    };
    let prefix = |g: &GroupRow| -> Vec<String> {
        if t.per_group {
            vec![g.member.key.clone()]
        } else {
            Vec::new()
        }
    };
    let mut rows: Vec<ViewRow> = row_groups
        .iter()
        .map(|g| {
            let mut cells_out: Vec<Option<i64>> = members
                .iter()
                .map(|m| {
                    let mut key = prefix(g);
                    if dim.is_some() {
                        key.push(m.key.clone());
                    }
                    value_of(tables, s, &t.id, &key, values)
                })
                .collect();
            if dim.is_some()
                && let Some(r) = tot.rows
            {
                cells_out.push(value_of(tables, s, &r.id, &prefix(g), values));
            }
            ViewRow {
                key: g.member.key.clone(),
                ja: g.member.ja.clone(),
                en: g.member.en.clone(),
                total: false,
                manufacturer: g.manufacturer.clone(),
                cells: cells_out,
            }
        })
        .collect();
    let total_row = match (dim, tot.columns, tot.rows) {
        (Some(_), Some(c), _) => Some(
            members
                .iter()
                .map(|m| value_of(tables, s, &c.id, std::slice::from_ref(&m.key), values))
                .chain(tot.rows.map(|_| {
                    tot.corner
                        .and_then(|x| value_of(tables, s, &x.id, &[], values))
                }))
                .collect::<Vec<_>>(),
        ),
        (None, _, Some(r)) if t.per_group => Some(vec![value_of(tables, s, &r.id, &[], values)]),
        _ => None,
    };
    if let Some(cells_out) = total_row {
        rows.push(ViewRow {
            key: String::new(),
            ja: TOTAL_JA.into(),
            en: TOTAL_EN.into(),
            total: true,
            manufacturer: None,
            cells: cells_out,
        });
    }
    let (row_label_ja, row_label_en) = match &s.group {
        Some(g) if t.per_group => (g.label_ja.clone(), g.label_en.clone()),
        _ => (String::new(), String::new()),
    };
    View {
        id: t.id.clone(),
        item: t.item.clone(),
        unit: t.unit,
        title_ja: t.title_ja.clone(),
        title_en: t.title_en.clone(),
        row_label_ja,
        row_label_en,
        columns,
        rows,
    }
}

/// A manufacturer's part of the report (a PMS team's): only sections whose groups belong
/// to manufacturers, only the rows of `manufacturer`'s products (or of `product` alone),
/// no totals over all products.
pub fn own_products(
    sections: Vec<Section>,
    defs: &Definitions,
    manufacturer: &str,
    product: Option<&str>,
) -> Vec<Section> {
    let keep = |r: &ViewRow| {
        !r.total
            && r.manufacturer.as_deref() == Some(manufacturer)
            && product.is_none_or(|p| r.key == p)
    };
    sections
        .into_iter()
        .filter(|s| {
            defs.section(&s.id)
                .and_then(|d| d.group.as_ref())
                .is_some_and(|g| g.manufacturer)
        })
        .map(|mut s| {
            s.views = s
                .views
                .into_iter()
                .filter(|v| v.rows.iter().any(|r| r.manufacturer.is_some()))
                .map(|mut v| {
                    v.rows.retain(|r| keep(r));
                    v
                })
                .filter(|v| !v.rows.is_empty())
                .collect();
            s
        })
        .filter(|s| !s.views.is_empty())
        .collect()
}

//! Reports, annual report definitions: one TOML file per registry section in
//! `queries/annual/` (`regen.toml`, `nanbyo.toml`, `als.toml`, …), each naming the SQL
//! files of its tables, their keys and the margins they add up to. A new registry (a
//! fourth dataset) needs only a new definition file and its SQL — no code.
//!
//! Guarantees: a definition is validated completely at load — unknown keys refused, every
//! SQL file present and holding `{fy}` where it reads a fiscal year, every `by` naming a
//! declared dimension whose values come from the catalogue's public domain, every margin
//! naming an earlier table whose keys are a subset of the table's keys — and every error
//! names the file and the field. The definitions compiled into kura are the files of
//! `queries/annual/` (rust-embed); `annual_reports_dir` reads another folder instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rust_embed::RustEmbed;
use serde::Deserialize;

use crate::catalog::{Catalog, Domain};

/// The definition files shipped with kura.
#[derive(RustEmbed)]
#[folder = "queries/annual/"]
struct Embedded;

/// The definition format this build reads.
pub const DEFINITION_VERSION: u32 = 1;

/// A definition that cannot be used; names the file and what to fix.
#[derive(Debug, thiserror::Error)]
#[error("annual report definition {file}: {message} / 年次報告の定義ファイル {file} が不正です")]
pub struct DefinitionError {
    pub file: String,
    pub message: String,
}

fn bad(file: &str, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        file: file.to_string(),
        message: message.into(),
    }
}

/// What a table counts: distinct patients or events (rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Patients,
    Events,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    column: String,
    label_ja: String,
    label_en: String,
    sql: String,
    #[serde(default)]
    manufacturer: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DimensionFile {
    label_ja: String,
    label_en: String,
    /// `table.column` whose public domain lists the values, in order.
    catalog: String,
    #[serde(default)]
    labels_ja: BTreeMap<String, String>,
    #[serde(default)]
    labels_en: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    id: String,
    item: String,
    sql: String,
    title_ja: String,
    title_en: String,
    unit: Unit,
    per_group: Option<bool>,
    by: Option<String>,
    #[serde(default)]
    margins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionFile {
    schema_version: u32,
    id: String,
    order: i32,
    dataset: String,
    title_ja: String,
    title_en: String,
    basis_ja: String,
    basis_en: String,
    group: Option<GroupFile>,
    #[serde(default)]
    dimension: BTreeMap<String, DimensionFile>,
    #[serde(rename = "table")]
    tables: Vec<TableFile>,
}

/// The groups of a section (products, diseases): a key column and where names come from.
#[derive(Debug, Clone)]
pub struct Group {
    pub column: String,
    pub label_ja: String,
    pub label_en: String,
    /// SQL over public reference tables: `key, name_ja, name_en [, manufacturer]`.
    pub sql: String,
    /// Groups belong to manufacturers (PMS teams see only their own).
    pub manufacturer: bool,
}

/// One value of a dimension with its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    pub ja: String,
    pub en: String,
}

/// A breakdown dimension (sex, age band, event term): its values in display order.
#[derive(Debug, Clone)]
pub struct Dimension {
    pub name: String,
    pub label_ja: String,
    pub label_en: String,
    pub members: Vec<Member>,
}

/// One table: an SQL file whose cells the report publishes.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub id: String,
    /// The seed item it fulfils (`10`, `12` of seed 001, …).
    pub item: String,
    /// The SQL with `{fy}` still in it.
    pub sql: String,
    pub title_ja: String,
    pub title_en: String,
    pub unit: Unit,
    /// One row per group of the section (else one row in all).
    pub per_group: bool,
    /// The breakdown dimension, if any.
    pub by: Option<String>,
    /// Tables (ids) whose cells this table's cells add up to.
    pub margins: Vec<String>,
}

impl TableDef {
    /// The key names of the table's cells, in result order.
    pub fn keys(&self, group: Option<&Group>) -> Vec<String> {
        let mut k = Vec::new();
        if self.per_group
            && let Some(g) = group
        {
            k.push(g.column.clone());
        }
        k.extend(self.by.iter().cloned());
        k
    }
}

/// One registry section of the annual report.
#[derive(Debug, Clone)]
pub struct SectionDef {
    pub file: String,
    pub id: String,
    pub order: i32,
    pub dataset: String,
    pub title_ja: String,
    pub title_en: String,
    pub basis_ja: String,
    pub basis_en: String,
    pub group: Option<Group>,
    pub dimensions: BTreeMap<String, Dimension>,
    pub tables: Vec<TableDef>,
}

impl SectionDef {
    pub fn table(&self, id: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.id == id)
    }
}

/// Where definition files are read from.
trait Source {
    fn names(&self) -> Vec<String>;
    fn read(&self, name: &str) -> Option<String>;
}

struct EmbeddedSource;

impl Source for EmbeddedSource {
    fn names(&self) -> Vec<String> {
        Embedded::iter().map(|n| n.to_string()).collect()
    }
    fn read(&self, name: &str) -> Option<String> {
        Embedded::get(name).and_then(|f| String::from_utf8(f.data.into_owned()).ok())
    }
}

struct DirSource(PathBuf);

impl Source for DirSource {
    fn names(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
    fn read(&self, name: &str) -> Option<String> {
        // Only plain relative names under the folder (no `..`, no absolute paths).
        let rel = Path::new(name);
        let plain = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        plain
            .then(|| std::fs::read_to_string(self.0.join(rel)).ok())
            .flatten()
    }
}

/// The annual report's sections, in order.
#[derive(Debug, Clone)]
pub struct Definitions {
    pub sections: Vec<SectionDef>,
}

impl Definitions {
    /// The definitions compiled into kura (`queries/annual/`).
    pub fn embedded(catalog: &Catalog) -> Result<Self, DefinitionError> {
        load(&EmbeddedSource, catalog)
    }

    /// The definitions of a folder (`annual_reports_dir`).
    pub fn load_dir(dir: &Path, catalog: &Catalog) -> Result<Self, DefinitionError> {
        if !dir.is_dir() {
            return Err(bad(
                &dir.display().to_string(),
                "is not a folder of *.toml definitions",
            ));
        }
        load(&DirSource(dir.to_path_buf()), catalog)
    }

    pub fn section(&self, id: &str) -> Option<&SectionDef> {
        self.sections.iter().find(|s| s.id == id)
    }
}

fn load(src: &dyn Source, catalog: &Catalog) -> Result<Definitions, DefinitionError> {
    let mut names: Vec<String> = src
        .names()
        .into_iter()
        .filter(|n| n.ends_with(".toml") && !n.contains('/'))
        .collect();
    names.sort();
    let mut sections = Vec::new();
    for name in names {
        let text = src
            .read(&name)
            .ok_or_else(|| bad(&name, "cannot be read"))?;
        sections.push(section(src, &name, &text, catalog)?);
    }
    if sections.is_empty() {
        return Err(bad("queries/annual", "no *.toml definition found"));
    }
    let mut ids: Vec<&str> = sections.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(w[0], "two definition files use this section id"));
    }
    sections.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.id.cmp(&b.id)));
    Ok(Definitions { sections })
}

/// An identifier: lowercase ASCII letters, digits and `_`, 1–40 characters.
fn ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn section(
    src: &dyn Source,
    file: &str,
    text: &str,
    catalog: &Catalog,
) -> Result<SectionDef, DefinitionError> {
    let f: SectionFile = toml::from_str(text).map_err(|e| bad(file, e.to_string()))?;
    if f.schema_version != DEFINITION_VERSION {
        return Err(bad(
            file,
            format!(
                "schema_version {} (this build reads {DEFINITION_VERSION})",
                f.schema_version
            ),
        ));
    }
    if !ident(&f.id) {
        return Err(bad(file, "`id`: lowercase letters, digits and _"));
    }
    if !catalog.datasets.iter().any(|d| d.name == f.dataset) {
        return Err(bad(
            file,
            format!("`dataset` {} is not in the catalogue", f.dataset),
        ));
    }
    let sql = |path: &str, field: &str| -> Result<String, DefinitionError> {
        src.read(path)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                bad(
                    file,
                    format!("`{field}`: SQL file {path} is missing or empty"),
                )
            })
    };
    let group = match f.group {
        Some(g) => Some(Group {
            sql: sql(&g.sql, "group.sql")?,
            column: g.column,
            label_ja: g.label_ja,
            label_en: g.label_en,
            manufacturer: g.manufacturer,
        }),
        None => None,
    };
    let mut dimensions = BTreeMap::new();
    for (name, d) in f.dimension {
        dimensions.insert(name.clone(), dimension(file, &name, d, catalog)?);
    }
    let mut tables: Vec<TableDef> = Vec::new();
    for t in f.tables {
        let table = table(file, t, group.as_ref(), &dimensions, &tables, &sql)?;
        tables.push(table);
    }
    if tables.is_empty() {
        return Err(bad(file, "no [[table]]"));
    }
    Ok(SectionDef {
        file: file.to_string(),
        id: f.id,
        order: f.order,
        dataset: f.dataset,
        title_ja: f.title_ja,
        title_en: f.title_en,
        basis_ja: f.basis_ja,
        basis_en: f.basis_en,
        group,
        dimensions,
        tables,
    })
}

fn dimension(
    file: &str,
    name: &str,
    d: DimensionFile,
    catalog: &Catalog,
) -> Result<Dimension, DefinitionError> {
    let field = format!("dimension.{name}.catalog");
    let (table, column) = d
        .catalog
        .split_once('.')
        .ok_or_else(|| bad(file, format!("`{field}`: write table.column")))?;
    let col = catalog
        .table(table)
        .and_then(|t| t.column(column))
        .ok_or_else(|| {
            bad(
                file,
                format!("`{field}`: {} is not in the catalogue", d.catalog),
            )
        })?;
    let values = match (&col.domain, col.public_domain) {
        (Some(Domain::Values { values }), true) => values.clone(),
        _ => {
            return Err(bad(
                file,
                format!(
                    "`{field}`: {} has no public list of values in the catalogue",
                    d.catalog
                ),
            ));
        }
    };
    let label = |map: &BTreeMap<String, String>, v: &str| map.get(v).cloned().unwrap_or(v.into());
    Ok(Dimension {
        name: name.to_string(),
        label_ja: d.label_ja,
        label_en: d.label_en,
        members: values
            .iter()
            .map(|v| Member {
                key: v.clone(),
                ja: label(&d.labels_ja, v),
                en: label(&d.labels_en, v),
            })
            .collect(),
    })
}

fn table(
    file: &str,
    t: TableFile,
    group: Option<&Group>,
    dimensions: &BTreeMap<String, Dimension>,
    earlier: &[TableDef],
    sql: &dyn Fn(&str, &str) -> Result<String, DefinitionError>,
) -> Result<TableDef, DefinitionError> {
    let id = t.id.clone();
    let at = |m: &str| bad(file, format!("table {id}: {m}"));
    if !ident(&t.id) || earlier.iter().any(|e| e.id == t.id) {
        return Err(at(
            "`id` must be a new identifier (lowercase letters, digits, _)",
        ));
    }
    let per_group = t.per_group.unwrap_or(group.is_some());
    if per_group && group.is_none() {
        return Err(at("`per_group` needs a [group]"));
    }
    if let Some(by) = &t.by
        && !dimensions.contains_key(by)
    {
        return Err(at(&format!("`by` = {by} is not a [dimension]")));
    }
    let text = sql(&t.sql, &format!("table {}: sql", t.id))?;
    let def = TableDef {
        id: t.id.clone(),
        item: t.item,
        sql: text,
        title_ja: t.title_ja,
        title_en: t.title_en,
        unit: t.unit,
        per_group,
        by: t.by,
        margins: t.margins,
    };
    let keys = def.keys(group);
    for m in &def.margins {
        let Some(margin) = earlier.iter().find(|e| &e.id == m) else {
            return Err(at(&format!(
                "margin {m} must be a table defined above this one"
            )));
        };
        let mk = margin.keys(group);
        if mk.len() >= keys.len() || !mk.iter().all(|k| keys.contains(k)) {
            return Err(at(&format!(
                "margin {m} must have fewer keys, all of them keys of this table"
            )));
        }
        if margin.unit != def.unit {
            return Err(at(&format!("margin {m} counts another unit")));
        }
    }
    Ok(def)
}

/// The SQL of a table for fiscal year `fy` (an integer checked by the caller).
pub fn for_year(sql: &str, fy: i32) -> String {
    sql.replace("{fy}", &fy.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::embedded().unwrap()
    }

    #[test]
    fn the_shipped_definitions_load_with_margins_and_dimensions() {
        let d = Definitions::embedded(&catalog()).unwrap();
        let ids: Vec<&str> = d.sections.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["regen", "nanbyo", "als", "jasmin"]);
        let regen = d.section("regen").unwrap();
        let by_sex = regen.table("cases_by_sex").unwrap();
        assert_eq!(by_sex.keys(regen.group.as_ref()), ["product_code", "sex"]);
        assert_eq!(by_sex.margins, ["cases", "cases_by_sex_all"]);
        assert!(by_sex.sql.contains("{fy}"));
        let sex = &regen.dimensions["sex"];
        assert_eq!(sex.members[0].ja, "男性");
        assert_eq!(regen.dimensions["age_band"].members.len(), 19);
        assert_eq!(
            regen.dimensions["event_term"].members[0].en, "Fever",
            "terms get English labels"
        );
        let als = d.section("als").unwrap();
        assert!(als.group.is_none() && !als.tables[0].per_group);
    }

    fn one(text: &str) -> Result<SectionDef, DefinitionError> {
        struct Mem;
        impl Source for Mem {
            fn names(&self) -> Vec<String> {
                vec![]
            }
            fn read(&self, name: &str) -> Option<String> {
                (name == "x.sql").then(|| "SELECT 1 AS n".to_string())
            }
        }
        section(&Mem, "t.toml", text, &catalog())
    }

    const HEAD: &str = "schema_version = 1\nid = \"t\"\norder = 1\ndataset = \"regen\"\ntitle_ja = \"t\"\ntitle_en = \"t\"\nbasis_ja = \"b\"\nbasis_en = \"b\"\n";

    #[test]
    fn bad_definitions_name_the_file_and_field() {
        let unknown = one(&format!(
            "{HEAD}colour = 1\n[[table]]\nid=\"a\"\nitem=\"10\"\nsql=\"x.sql\"\ntitle_ja=\"a\"\ntitle_en=\"a\"\nunit=\"patients\"\n"
        ));
        assert!(unknown.unwrap_err().to_string().contains("colour"));
        let missing_sql = one(&format!(
            "{HEAD}[[table]]\nid=\"a\"\nitem=\"10\"\nsql=\"nope.sql\"\ntitle_ja=\"a\"\ntitle_en=\"a\"\nunit=\"patients\"\n"
        ));
        assert!(missing_sql.unwrap_err().to_string().contains("nope.sql"));
        let margin_later = one(&format!(
            "{HEAD}[[table]]\nid=\"a\"\nitem=\"10\"\nsql=\"x.sql\"\ntitle_ja=\"a\"\ntitle_en=\"a\"\nunit=\"patients\"\nmargins=[\"b\"]\n"
        ));
        assert!(margin_later.unwrap_err().to_string().contains("margin b"));
        let no_dim = one(&format!(
            "{HEAD}[[table]]\nid=\"a\"\nitem=\"10\"\nsql=\"x.sql\"\ntitle_ja=\"a\"\ntitle_en=\"a\"\nunit=\"patients\"\nby=\"colour\"\n"
        ));
        assert!(no_dim.unwrap_err().to_string().contains("colour"));
        let bad_dataset = one(&format!(
            "{}[[table]]\nid=\"a\"\nitem=\"10\"\nsql=\"x.sql\"\ntitle_ja=\"a\"\ntitle_en=\"a\"\nunit=\"patients\"\n",
            HEAD.replace("regen", "jasmin_unknown")
        ));
        assert!(
            bad_dataset
                .unwrap_err()
                .to_string()
                .contains("jasmin_unknown")
        );
    }
}

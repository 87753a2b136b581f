//! Catalogue: the single description of every table and column kura serves.
//!
//! `policies/catalog.toml` says, per column, its type, whether it is the privacy unit
//! (`pid`), whether its values form a *public domain* (keys that may be shown even when
//! a cell is suppressed), DP value bounds, whether it identifies a facility, and which
//! approval dimension (fiscal year, disease, region, manufacturer, product) it carries.
//! Ingest output is checked against it and every later stage reads it; it is loaded and
//! validated once at start-up, and an invalid catalogue stops the process with a message
//! naming the table, column and fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// The catalogue shipped with kura, compiled into the binary so that `kura demo` needs
/// no files beside it. Operators may point at another file with `--catalog`.
pub const EMBEDDED_CATALOG: &str = include_str!("../../policies/catalog.toml");

/// The catalogue schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Errors found while loading or validating the catalogue. Each names the object and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalogue {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalogue is not valid TOML: {0}")]
    Parse(#[from] toml::de::Error),
    #[error(
        "catalogue schema_version {found} is not supported (this build reads {SCHEMA_VERSION}); convert the catalogue or upgrade kura"
    )]
    Version { found: u32 },
    #[error("catalogue: {0}")]
    Invalid(String),
}

/// Whether a table's rows belong to patients or are public reference data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    Patient,
    Reference,
}

/// The approval dimension a column carries; scope rewriting filters on these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeDim {
    FiscalYear,
    Disease,
    Region,
    Manufacturer,
    Product,
}

/// The enumerable values of a public-domain column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Domain {
    /// An explicit list of values (rendered as strings).
    Values { values: Vec<String> },
    /// An inclusive integer range.
    Range { range: [i64; 2] },
    /// The values of a column of a reference table.
    Ref { table: String, column: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub privacy_unit: bool,
    #[serde(default)]
    pub public_domain: bool,
    #[serde(default)]
    pub domain: Option<Domain>,
    #[serde(default)]
    pub bounds: Option<[f64; 2]>,
    #[serde(default)]
    pub facility: bool,
    #[serde(default)]
    pub scope: Option<ScopeDim>,
    pub description_ja: String,
    pub description_en: String,
}

impl Column {
    /// The Arrow type of the column (validated at load, so this cannot fail afterwards).
    pub fn data_type(&self) -> DataType {
        arrow_type(&self.type_name).expect("validated at load")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub name: String,
    pub kind: TableKind,
    pub datasets: Vec<String>,
    pub description_ja: String,
    pub description_en: String,
    /// Every patient has at most one row (a patient master table). Ingest and extract
    /// build refuse data that breaks it; DP mode then knows a patient feeds one row, and a
    /// key read from the table one group, without having to bound it.
    #[serde(default)]
    pub one_row_per_patient: bool,
    pub columns: Vec<Column>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The privacy-unit column (`pid`) of a patient table; `None` for reference tables.
    pub fn privacy_unit(&self) -> Option<&Column> {
        self.columns.iter().find(|c| c.privacy_unit)
    }

    /// The column carrying a given approval dimension, if any.
    pub fn scope_column(&self, dim: ScopeDim) -> Option<&Column> {
        self.columns.iter().find(|c| c.scope == Some(dim))
    }

    /// The Arrow schema ingest writes and queries read for this table.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            // Only the privacy unit is guaranteed present; clinical values may be missing.
            .map(|c| Field::new(&c.name, c.data_type(), !c.privacy_unit))
            .collect();
        Arc::new(Schema::new(fields))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub name: String,
    pub description_ja: String,
    pub description_en: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub schema_version: u32,
    #[serde(rename = "dataset")]
    pub datasets: Vec<Dataset>,
    #[serde(rename = "table")]
    pub tables: Vec<Table>,
}

/// Map a catalogue type name to its Arrow type.
pub fn arrow_type(name: &str) -> Option<DataType> {
    Some(match name {
        "Utf8" => DataType::Utf8,
        "Int32" => DataType::Int32,
        "Int64" => DataType::Int64,
        "Float64" => DataType::Float64,
        "Boolean" => DataType::Boolean,
        "Date32" => DataType::Date32,
        _ => return None,
    })
}

impl Catalog {
    /// The catalogue compiled into the binary.
    pub fn embedded() -> Result<Self, CatalogError> {
        Self::from_toml(EMBEDDED_CATALOG)
    }

    /// Load and validate a catalogue file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parse and validate catalogue text.
    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let catalog: Catalog = toml::from_str(text)?;
        catalog.validate()?;
        Ok(catalog)
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.name == name)
    }

    pub fn patient_tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().filter(|t| t.kind == TableKind::Patient)
    }

    pub fn reference_tables(&self) -> impl Iterator<Item = &Table> {
        self.tables
            .iter()
            .filter(|t| t.kind == TableKind::Reference)
    }

    /// Tables belonging to any of the given datasets.
    pub fn tables_in<'a>(&'a self, datasets: &'a [String]) -> impl Iterator<Item = &'a Table> {
        self.tables
            .iter()
            .filter(move |t| t.datasets.iter().any(|d| datasets.contains(d)))
    }

    fn validate(&self) -> Result<(), CatalogError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(CatalogError::Version {
                found: self.schema_version,
            });
        }
        let dataset_names: BTreeSet<&str> = self.datasets.iter().map(|d| d.name.as_str()).collect();
        if dataset_names.len() != self.datasets.len() {
            return invalid("dataset names must be unique".into());
        }
        let mut table_names = BTreeSet::new();
        for t in &self.tables {
            if !table_names.insert(t.name.as_str()) && is_identifier(&t.name) {
                return invalid(format!("table `{}` is declared twice", t.name));
            }
            validate_table(t, &dataset_names)?;
        }
        self.validate_domain_refs()
    }

    /// Domain references must point at a public column of a reference table.
    fn validate_domain_refs(&self) -> Result<(), CatalogError> {
        for t in &self.tables {
            for c in &t.columns {
                if let Some(Domain::Ref { table, column }) = &c.domain {
                    let ok = self
                        .table(table)
                        .filter(|rt| rt.kind == TableKind::Reference)
                        .and_then(|rt| rt.column(column))
                        .is_some();
                    if !ok {
                        return invalid(format!(
                            "column `{}.{}`: domain refers to `{table}.{column}`, which is not a reference-table column",
                            t.name, c.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Columns by table, as `table -> [column]`, for quick lookups in rewrites.
    pub fn column_index(&self) -> BTreeMap<&str, BTreeMap<&str, &Column>> {
        self.tables
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.columns.iter().map(|c| (c.name.as_str(), c)).collect(),
                )
            })
            .collect()
    }
}

fn invalid(msg: String) -> Result<(), CatalogError> {
    Err(CatalogError::Invalid(msg))
}

/// One table: its name, datasets, columns and privacy unit.
fn validate_table(t: &Table, dataset_names: &BTreeSet<&str>) -> Result<(), CatalogError> {
    if !is_identifier(&t.name) {
        return invalid(format!(
            "table name `{}` must be lower-case ASCII letters, digits and `_`",
            t.name
        ));
    }
    if t.datasets.is_empty() {
        return invalid(format!(
            "table `{}` belongs to no dataset; list at least one in `datasets`",
            t.name
        ));
    }
    for d in &t.datasets {
        if !dataset_names.contains(d.as_str()) {
            return invalid(format!(
                "table `{}` names unknown dataset `{d}`; declare it in [[dataset]]",
                t.name
            ));
        }
    }
    let mut cols = BTreeSet::new();
    for c in &t.columns {
        let at = format!("column `{}.{}`", t.name, c.name);
        if !is_identifier(&c.name) {
            return invalid(format!(
                "{at}: name must be lower-case ASCII letters, digits and `_`"
            ));
        }
        if !cols.insert(c.name.as_str()) {
            return invalid(format!("{at} is declared twice"));
        }
        validate_column(c, &at)?;
    }
    validate_privacy_unit(t)
}

/// One column: a known type, and privacy roles that do not contradict each other.
fn validate_column(c: &Column, at: &str) -> Result<(), CatalogError> {
    let Some(dt) = arrow_type(&c.type_name) else {
        return invalid(format!(
            "{at}: unknown type `{}`; use Utf8, Int32, Int64, Float64, Boolean or Date32",
            c.type_name
        ));
    };
    if c.privacy_unit && (c.public_domain || c.facility || c.bounds.is_some()) {
        return invalid(format!(
            "{at}: the privacy unit cannot be public-domain, a facility or bounded"
        ));
    }
    if c.public_domain && c.facility {
        return invalid(format!(
            "{at}: a facility-identifying column cannot be public-domain"
        ));
    }
    if c.domain.is_some() && !c.public_domain {
        return invalid(format!(
            "{at}: `domain` is only meaningful with public_domain = true"
        ));
    }
    if let Some([lo, hi]) = c.bounds {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return invalid(format!("{at}: bounds must be finite with lo < hi"));
        }
        if !dt.is_numeric() {
            return invalid(format!(
                "{at}: bounds need a numeric type, not {}",
                c.type_name
            ));
        }
    }
    if let Some(Domain::Range { range: [lo, hi] }) = &c.domain
        && lo > hi
    {
        return invalid(format!("{at}: domain range must have lo <= hi"));
    }
    Ok(())
}

/// Patient tables have exactly one Utf8 privacy unit; reference tables none, and only
/// public-domain columns.
fn validate_privacy_unit(t: &Table) -> Result<(), CatalogError> {
    let units = t.columns.iter().filter(|c| c.privacy_unit).count();
    match (t.kind, units) {
        (TableKind::Patient, 1) => {
            if t.privacy_unit().map(|c| c.type_name.as_str()) != Some("Utf8") {
                return invalid(format!("table `{}`: the privacy unit must be Utf8", t.name));
            }
        }
        (TableKind::Patient, _) => {
            return invalid(format!(
                "patient table `{}` needs exactly one privacy_unit column",
                t.name
            ));
        }
        (TableKind::Reference, 0) if t.one_row_per_patient => {
            return invalid(format!(
                "reference table `{}` cannot be one_row_per_patient (it has no patients)",
                t.name
            ));
        }
        (TableKind::Reference, 0) => {
            if t.columns.iter().any(|c| !c.public_domain) {
                return invalid(format!(
                    "reference table `{}`: every column must be public_domain",
                    t.name
                ));
            }
        }
        (TableKind::Reference, _) => {
            return invalid(format!(
                "reference table `{}` cannot carry a privacy unit",
                t.name
            ));
        }
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_is_valid() {
        let cat = Catalog::embedded().unwrap();
        assert!(cat.table("patient").unwrap().privacy_unit().is_some());
        assert!(cat.table("disease").unwrap().privacy_unit().is_none());
        for t in cat.patient_tables() {
            assert_eq!(t.privacy_unit().unwrap().name, "pid", "{}", t.name);
        }
    }

    fn with(replace: &str, by: &str) -> Result<Catalog, CatalogError> {
        assert!(
            EMBEDDED_CATALOG.contains(replace),
            "fixture text missing: {replace}"
        );
        Catalog::from_toml(&EMBEDDED_CATALOG.replacen(replace, by, 1))
    }

    #[test]
    fn rejects_unknown_type_naming_the_column() {
        let err = with(
            r#"name = "birth_year", type = "Int32""#,
            r#"name = "birth_year", type = "Int33""#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("patient.birth_year") && err.contains("Int33"),
            "{err}"
        );
    }

    #[test]
    fn rejects_public_facility_column() {
        let err = with(
            r#"{ name = "facility_id", type = "Utf8", facility = true,"#,
            r#"{ name = "facility_id", type = "Utf8", facility = true, public_domain = true,"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("facility"), "{err}");
    }

    #[test]
    fn rejects_patient_table_without_privacy_unit() {
        let err = with(
            r#"{ name = "pid", type = "Utf8", privacy_unit = true, description_ja = "患者仮名 ID", description_en = "Patient pseudonym" },
  { name = "sex""#,
            r#"{ name = "pid", type = "Utf8", description_ja = "患者仮名 ID", description_en = "Patient pseudonym" },
  { name = "sex""#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exactly one privacy_unit"), "{err}");
    }

    #[test]
    fn rejects_unknown_keys() {
        assert!(with("kind = \"patient\"", "kind = \"patient\"\nsecret = 1").is_err());
    }

    #[test]
    fn rejects_dangling_domain_reference() {
        let err = with(
            r#"domain = { table = "disease", column = "disease_no" }"#,
            r#"domain = { table = "disease", column = "nope" }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("disease.nope"), "{err}");
    }
}

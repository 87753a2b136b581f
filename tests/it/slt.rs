//! sqllogictest golden files (`tests/slt/*.slt`) run through the whole query core
//! (guard → hardening → privacy rewrite → execution → disclosure check) over the
//! fixture registry. Refusals are written as `statement error <code>` / `query error <code>`.
//! Suppressed cells print as NULL. Regenerate expected output with `KURA_SLT_COMPLETE=1`.

use std::path::PathBuf;

use kura::catalog::Catalog;
use kura::engine::Limits;
use kura::privacy::DisclosureRules;
use kura::query::run_query;
use serde_json::Value;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::qc_fixture::registry;

#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// The query core over the fixture registry, answering as the suppression path (rows,
/// suppressed cells as NULL) or, with `dp`, as the DP preparation.
struct Kura {
    ctx: datafusion::prelude::SessionContext,
    catalog: Catalog,
    rules: DisclosureRules,
    dp: bool,
}

impl Kura {
    fn new(dp: bool) -> Kura {
        let (ctx, catalog) = registry();
        Kura {
            ctx,
            catalog,
            rules: DisclosureRules::embedded().unwrap(),
            dp,
        }
    }

    async fn suppressed(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Refusal> {
        let out = run_query(
            &self.ctx,
            sql,
            &self.catalog,
            &self.rules,
            &Limits::default(),
        )
        .await
        .map_err(|e| Refusal(format!("{}: {}", e.code(), e.public_message())))?;
        let r = out.result;
        let types = r.columns.iter().map(|_| DefaultColumnType::Any).collect();
        let rows = r
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| match v {
                        Value::Null => "NULL".to_string(),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    /// The DP rewrite as golden files (`tests/slt/dp/*.slt`): noisy values are not
    /// reproducible, so each accepted query prints what is deterministic — the bounded plan
    /// (contribution bounding, clamping), the cost of every noised column and the release
    /// threshold; refusals print their code and message.
    async fn dp_prepared(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Refusal> {
        let params = kura::privacy::result::DpParams {
            epsilon: 1.0,
            bounds: Default::default(),
        };
        let p = kura::query::dp::prepare(
            &self.ctx,
            sql,
            &self.catalog,
            &self.rules,
            &Limits::default(),
            params,
        )
        .await
        .map_err(|e| Refusal(format!("{}: {}", e.code(), e.public_message())))?;
        let mut rows: Vec<Vec<String>> = Vec::new();
        let d = &p.disclosure;
        rows.push(vec![format!(
            "epsilon={} L={} m={} threshold={:.3} groups={}",
            d.epsilon,
            d.bounds.max_groups_per_patient,
            d.bounds.max_rows_per_group,
            d.release_threshold,
            p.domain_rows()
        )]);
        for c in &d.columns {
            rows.push(vec![format!(
                "column {} {}: {} epsilon={:.4} sensitivity={} scale={:.4} clamp={:?}",
                c.index, c.name, c.aggregate, c.epsilon, c.sensitivity, c.noise_scale, c.clamp
            )]);
        }
        for line in format!("{}", p.bounded_plan().display_indent()).lines() {
            rows.push(vec![line.trim_end().to_string()]);
        }
        let types = vec![DefaultColumnType::Any];
        Ok(DBOutput::Rows { types, rows })
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Kura {
    type Error = Refusal;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Refusal> {
        if self.dp {
            self.dp_prepared(sql).await
        } else {
            self.suppressed(sql).await
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        if self.dp { "kura-dp" } else { "kura" }
    }
}

/// Run (or, with `KURA_SLT_COMPLETE=1`, regenerate) every `.slt` file of `tests/<dir>`
/// against a fresh database made by `make`.
async fn run_slt_dir<D>(dir: &str, make: fn() -> D)
where
    D: sqllogictest::AsyncDB<Error = Refusal, ColumnType = DefaultColumnType> + 'static,
{
    let complete = std::env::var("KURA_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        let mut runner = sqllogictest::Runner::new(move || async move { Ok(make()) });
        if complete {
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {}", file.display(), e.display(true));
        }
    }
}

#[tokio::test]
async fn slt_golden_files() {
    run_slt_dir("slt", || Kura::new(false)).await;
    // Cases of the privacy-rewrite rules, one file per rule (src/sql/rewrite/).
    run_slt_dir("slt/rewrite", || Kura::new(false)).await;
}

#[tokio::test]
async fn slt_dp_golden_files() {
    run_slt_dir("slt/dp", || Kura::new(true)).await;
}

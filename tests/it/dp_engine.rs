//! Differential privacy, data-plane half: the accounting of ε, the contribution bounds
//! (sensitivity), the noise distribution, zero-fill over public domains, the release
//! threshold, and the attacks DP must stop. Noise is random (OpenDP's cryptographic
//! RNG), so numeric claims use either a huge ε (noise far below 1) or many draws with a
//! tolerance of several standard errors.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use kura::catalog::Catalog;
use kura::engine::Limits;
use kura::privacy::DisclosureRules;
use kura::privacy::dp::{Noise, noisy_counts, noisy_sums};
use kura::privacy::result::{DpBounds, DpParams};
use kura::query::dp::{exact_quantities, prepare, quantity_sensitivities, run_dp_query};
use kura::query::{QueryError, QueryOutcome};
use serde_json::{Value, json};

use crate::qc_fixture::registry;
use crate::support::outcome::has_note;

fn params(epsilon: f64) -> DpParams {
    DpParams {
        epsilon,
        bounds: DpBounds::default(),
    }
}

fn rules() -> DisclosureRules {
    DisclosureRules::embedded().unwrap()
}

async fn dp_on(
    ctx: &SessionContext,
    catalog: &Catalog,
    sql: &str,
    p: DpParams,
) -> Result<QueryOutcome, QueryError> {
    run_dp_query(ctx, sql, catalog, &rules(), &Limits::default(), p).await
}

async fn ok(sql: &str, p: DpParams) -> QueryOutcome {
    let (ctx, catalog) = registry();
    match dp_on(&ctx, &catalog, sql, p).await {
        Ok(o) => o,
        Err(e) => panic!("{sql}: refused with {}: {}", e.code(), e.internal_detail()),
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

// ---------------------------------------------------------------------------------------
// Exact accounting: the ε of every noised column follows the documented formula
// (docs/privacy.md): ε is split equally over the noised quantities — one per COUNT,
// COUNT(DISTINCT pid) and SUM, two per AVG, plus one for the release-threshold count
// unless an unfiltered COUNT(DISTINCT pid) doubles as it — and the shares add up to ε.
// ---------------------------------------------------------------------------------------

struct Expect {
    column: &'static str,
    shares: f64,
    sensitivity: f64,
}

async fn accounting(sql: &str, epsilon: f64, total_shares: f64, expect: &[Expect]) {
    let (ctx, catalog) = registry();
    let p = prepare(
        &ctx,
        sql,
        &catalog,
        &rules(),
        &Limits::default(),
        params(epsilon),
    )
    .await
    .unwrap_or_else(|e| panic!("{sql}: {}", e.internal_detail()));
    let d = &p.disclosure;
    assert_eq!(d.epsilon, epsilon, "{sql}");
    let eps_i = epsilon / total_shares;
    let mut charged = 0.0;
    for e in expect {
        let c = d
            .columns
            .iter()
            .find(|c| c.name == e.column)
            .unwrap_or_else(|| panic!("{sql}: no column {}", e.column));
        assert!(
            (c.epsilon - e.shares * eps_i).abs() < 1e-12,
            "{sql}: {} charged {} expected {}",
            e.column,
            c.epsilon,
            e.shares * eps_i
        );
        assert_eq!(c.sensitivity, e.sensitivity, "{sql}: {}", e.column);
        charged += c.epsilon;
    }
    // What is left over is the release-threshold count's share (zero if shared).
    let gate = epsilon - charged;
    assert!(
        gate.abs() < 1e-12 || (gate - eps_i).abs() < 1e-12,
        "{sql}: {gate} left for the threshold count"
    );
    // The noise scale of every column is its sensitivity over its (per-quantity) share.
    for c in &d.columns {
        if c.aggregate != "avg" {
            assert!((c.noise_scale - c.sensitivity / c.epsilon).abs() < 1e-9);
        }
    }
    // Running it charges exactly ε (the engine refuses if OpenDP's maps add up to more).
    let o = dp_on(&ctx, &catalog, sql, params(epsilon)).await.unwrap();
    assert_eq!(o.result.disclosure.epsilon_spent, Some(epsilon));
}

#[tokio::test]
async fn exact_accounting_per_query_shape() {
    let (l, m) = (5.0, 3.0);
    // One quantity: the distinct count, which is also the threshold count. `patient` has
    // one row per patient (catalogue, checked at ingest), so its key puts a patient in one
    // group: L = 1 whatever the approval's L.
    accounting(
        "SELECT sex, count(DISTINCT pid) AS n FROM patient GROUP BY sex",
        0.8,
        1.0,
        &[Expect {
            column: "n",
            shares: 1.0,
            sensitivity: 1.0,
        }],
    )
    .await;
    // COUNT(*) over the one-row table: one row per patient, so m = 1 too.
    accounting(
        "SELECT sex, count(*) AS n FROM patient GROUP BY sex",
        1.0,
        2.0,
        &[Expect {
            column: "n",
            shares: 1.0,
            sensitivity: 1.0,
        }],
    )
    .await;
    // Through an outer join the patient's key can be NULL on some rows and not on
    // others (an extra ON condition), so the approval's L applies.
    accounting(
        "SELECT p.sex, count(DISTINCT s.pid) AS n FROM nanbyo_survey s LEFT JOIN patient p ON p.pid = s.pid AND s.fiscal_year > 2020 GROUP BY p.sex",
        1.0,
        1.0,
        &[Expect {
            column: "n",
            shares: 1.0,
            sensitivity: l,
        }],
    )
    .await;
    // COUNT(*) plus a separate threshold count.
    accounting(
        "SELECT disease_no, count(*) AS surveys FROM nanbyo_survey GROUP BY disease_no",
        1.0,
        2.0,
        &[Expect {
            column: "surveys",
            shares: 1.0,
            sensitivity: l * m,
        }],
    )
    .await;
    // AVG (2 quantities) + SUM + COUNT(DISTINCT pid) = 4 shares; severity bounds [1, 5],
    // creatinine bounds [0.1, 15]. `sex` comes from `patient` through an inner join on pid:
    // one group per patient (L = 1), but up to m surveys per patient count.
    accounting(
        "SELECT sex, avg(severity) AS a, sum(creatinine) AS s, count(DISTINCT pid) AS n FROM patient JOIN nanbyo_survey USING (pid) GROUP BY sex",
        2.0,
        4.0,
        &[
            Expect {
                column: "a",
                shares: 2.0,
                sensitivity: m * (5.0 - 1.0) / 2.0,
            },
            Expect {
                column: "s",
                shares: 1.0,
                sensitivity: m * 15.0,
            },
            Expect {
                column: "n",
                shares: 1.0,
                sensitivity: 1.0,
            },
        ],
    )
    .await;
    // No GROUP BY: one group, so L = 1; a filtered distinct count needs its own threshold count.
    accounting(
        "SELECT count(DISTINCT pid) FILTER (WHERE sex = 'F') AS women FROM patient",
        0.5,
        2.0,
        &[Expect {
            column: "women",
            shares: 1.0,
            sensitivity: 1.0,
        }],
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Sensitivity: one patient with 1,000 rows changes each noised quantity, summed over all
// groups, by at most the sensitivity the noise is calibrated to.
// ---------------------------------------------------------------------------------------

/// The fixture registry plus patient `heavy` with 1,000 surveys spread over 11 fiscal
/// years and 3 diseases, each with the largest possible values.
async fn with_heavy_patient() -> (SessionContext, Catalog) {
    let (ctx, catalog) = registry();
    let patients = ctx.table("patient").await.unwrap().collect().await.unwrap();
    let surveys = ctx
        .table("nanbyo_survey")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let p = concat_batches(&patients[0].schema(), &patients).unwrap();
    let s = concat_batches(&surveys[0].schema(), &surveys).unwrap();

    let one = UInt32Array::from(vec![0u32]);
    let mut heavy_patient: Vec<ArrayRef> = p
        .columns()
        .iter()
        .map(|c| take(c, &one, None).unwrap())
        .collect();
    let pid_i = p.schema().index_of("pid").unwrap();
    heavy_patient[pid_i] = Arc::new(StringArray::from(vec!["heavy"]));
    let heavy_patient = RecordBatch::try_new(p.schema(), heavy_patient).unwrap();

    let n = 1000usize;
    let idx = UInt32Array::from(vec![0u32; n]);
    let mut cols: Vec<ArrayRef> = s
        .columns()
        .iter()
        .map(|c| take(c, &idx, None).unwrap())
        .collect();
    let schema = s.schema();
    cols[schema.index_of("pid").unwrap()] = Arc::new(StringArray::from(vec!["heavy"; n]));
    cols[schema.index_of("fiscal_year").unwrap()] = Arc::new(Int32Array::from_iter_values(
        (0..n).map(|i| 2015 + (i % 11) as i32),
    ));
    cols[schema.index_of("disease_no").unwrap()] = Arc::new(Int32Array::from_iter_values(
        (0..n).map(|i| [2, 6, 97][i % 3]),
    ));
    cols[schema.index_of("severity").unwrap()] =
        Arc::new(Int32Array::from_iter_values((0..n).map(|_| 5)));
    cols[schema.index_of("pao2").unwrap()] =
        Arc::new(Float64Array::from_iter_values((0..n).map(|_| 1.0e6)));
    let heavy_surveys = RecordBatch::try_new(schema.clone(), cols).unwrap();

    let with = |base: RecordBatch, extra: RecordBatch| {
        let schema = base.schema();
        Arc::new(MemTable::try_new(schema, vec![vec![base, extra]]).unwrap())
    };
    ctx.deregister_table("patient").unwrap();
    ctx.deregister_table("nanbyo_survey").unwrap();
    ctx.register_table("patient", with(p, heavy_patient))
        .unwrap();
    ctx.register_table("nanbyo_survey", with(s, heavy_surveys))
        .unwrap();
    (ctx, catalog)
}

#[tokio::test]
async fn sensitivity_a_patient_with_1000_rows_moves_each_quantity_by_at_most_its_bound() {
    let queries = [
        "SELECT fiscal_year, count(*) AS n FROM nanbyo_survey GROUP BY fiscal_year",
        "SELECT fiscal_year, count(DISTINCT pid) AS n FROM nanbyo_survey GROUP BY fiscal_year",
        "SELECT fiscal_year, disease_no, count(DISTINCT pid) AS n, count(pao2) AS c FROM nanbyo_survey GROUP BY fiscal_year, disease_no",
        "SELECT disease_no, sum(pao2) AS s, avg(severity) AS a FROM nanbyo_survey GROUP BY disease_no",
        "SELECT sex, sum(pao2) AS s FROM patient JOIN nanbyo_survey USING (pid) GROUP BY sex",
        "SELECT count(*) AS n, avg(pao2) AS a FROM nanbyo_survey",
        // Sensitivity 1 from the one-row-per-patient table (no bounding in the plan).
        "SELECT sex, count(*) AS n, count(DISTINCT pid) AS d FROM patient GROUP BY sex",
    ];
    let (base_ctx, catalog) = registry();
    let (heavy_ctx, _) = with_heavy_patient().await;
    let limits = Limits::default();
    for sql in queries {
        // Row and group selection is random, so try several times.
        for _ in 0..5 {
            let pb = prepare(&base_ctx, sql, &catalog, &rules(), &limits, params(1.0))
                .await
                .unwrap();
            let ph = prepare(&heavy_ctx, sql, &catalog, &rules(), &limits, params(1.0))
                .await
                .unwrap();
            let sens = quantity_sensitivities(&pb);
            let b = exact_quantities(&base_ctx, &pb, &limits).await.unwrap();
            let h = exact_quantities(&heavy_ctx, &ph, &limits).await.unwrap();
            assert_eq!(b.len(), sens.len());
            let mut moved_any = false;
            for (((name, vb), (_, vh)), s) in b.iter().zip(&h).zip(&sens) {
                assert_eq!(vb.len(), vh.len(), "{sql}: same key domain");
                let l1: f64 = vb.iter().zip(vh).map(|(x, y)| (x - y).abs()).sum();
                assert!(
                    l1 <= s + 1e-6,
                    "{sql}: {name} moved by {l1}, above its sensitivity {s}"
                );
                moved_any |= l1 > 0.0;
            }
            // Positive control: the heavy patient does reach the quantities.
            assert!(moved_any, "{sql}: the heavy patient changed nothing");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Distribution: the noise has the stated scale.
// ---------------------------------------------------------------------------------------

fn variance(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
}

#[test]
fn noise_variance_matches_the_stated_scale() {
    // Laplace(b) has variance 2b². With 20,000 draws the relative standard error of the
    // sample variance is about sqrt(5 / n) ≈ 1.6%; allow 8%.
    let n = 20_000;
    let counts = Noise::new(5.0, 0.5).unwrap(); // b = 10
    let (draws, _) = noisy_counts(&vec![100; n], &counts).unwrap();
    let xs: Vec<f64> = draws.iter().map(|&x| x as f64 - 100.0).collect();
    let v = variance(&xs);
    let want = 2.0 * counts.scale * counts.scale;
    assert!(
        (v / want - 1.0).abs() < 0.08,
        "count noise variance {v}, expected {want}"
    );
    let mean = xs.iter().sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.5, "count noise is biased: {mean}");

    let sums = Noise::new(48.0, 2.0).unwrap(); // b = 24
    let (draws, _) = noisy_sums(&vec![1000.0; n], &sums).unwrap();
    let xs: Vec<f64> = draws.iter().map(|x| x - 1000.0).collect();
    let v = variance(&xs);
    let want = 2.0 * sums.scale * sums.scale;
    assert!(
        (v / want - 1.0).abs() < 0.08,
        "sum noise variance {v}, expected {want}"
    );
    // The stated 95% interval holds about 95% of the draws.
    let inside = xs
        .iter()
        .filter(|x| x.abs() <= sums.ci95_half_width())
        .count() as f64
        / n as f64;
    assert!(
        (inside - 0.95).abs() < 0.01,
        "{inside} inside the 95% interval"
    );
}

#[tokio::test]
async fn released_values_vary_with_the_stated_scale_over_repeated_runs() {
    // The whole path, 400 times, on fixed data: 60 patients, ε = 1 on an ungrouped distinct
    // count (sensitivity 1), so b = 1 and the variance is 2.
    let (ctx, catalog) = registry();
    let sql = "SELECT count(DISTINCT pid) AS n FROM patient";
    let mut xs = Vec::new();
    let mut scale = 0.0;
    for _ in 0..400 {
        let o = dp_on(&ctx, &catalog, sql, params(1.0)).await.unwrap();
        xs.push(int(&o.result.rows[0][0]) as f64 - 60.0);
        scale = o.result.disclosure.dp.as_ref().unwrap().columns[0].noise_scale;
    }
    assert_eq!(scale, 1.0);
    let v = variance(&xs);
    // Relative standard error ≈ sqrt(5 / 400) ≈ 11%; allow 40%.
    assert!((v / 2.0 - 1.0).abs() < 0.4, "variance {v}, expected 2");
    assert!(xs.iter().any(|&x| x != 0.0), "no noise was added");
}

// ---------------------------------------------------------------------------------------
// Release shape: zero-fill over the public domain, threshold, intervals.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn answers_are_close_to_the_truth_with_a_large_epsilon_and_carry_intervals() {
    let o = ok(
        "SELECT sex, count(DISTINCT pid) AS n, avg(severity) AS a FROM patient JOIN nanbyo_survey USING (pid) GROUP BY sex ORDER BY sex",
        DpParams {
            epsilon: 1.0e5,
            bounds: DpBounds {
                max_groups_per_patient: 1,
                max_rows_per_group: 5,
            },
        },
    )
    .await;
    let r = &o.result;
    assert_eq!(r.rows.len(), 2);
    assert_eq!(r.rows[0][0], json!("F"));
    assert_eq!(r.rows[1][0], json!("M"));
    assert_eq!(int(&r.rows[0][1]), 30);
    assert_eq!(int(&r.rows[1][1]), 30);
    // Mean severity over all survey rows of women: severity = 1 + i mod 5 for odd i
    // (one or two surveys per patient, all kept with m = 5).
    let mut sum = 0.0;
    let mut cnt = 0.0;
    for i in (1..=60usize).step_by(2) {
        let k = if i % 3 == 0 { 2.0 } else { 1.0 };
        sum += k * (1 + i % 5) as f64;
        cnt += k;
    }
    let a = r.rows[0][2].as_f64().unwrap();
    assert!((a - sum / cnt).abs() < 0.01, "{a} vs {}", sum / cnt);
    let d = r.disclosure.dp.as_ref().unwrap();
    assert_eq!(r.disclosure.mode, kura::privacy::DisclosureMode::Dp);
    assert!(!d.cached);
    assert_eq!(d.mechanism, "laplace");
    let iv = d
        .intervals
        .iter()
        .find(|i| i.row == 0 && i.column == 2)
        .expect("AVG cells carry intervals");
    assert!(
        iv.low <= a && a <= iv.high && iv.high - iv.low < 0.1,
        "{iv:?}"
    );
    let n_col = d.columns.iter().find(|c| c.name == "n").unwrap();
    assert!(n_col.ci95_half_width.unwrap() > 0.0);
    assert!(r.disclosure.suppressed.is_empty());
}

#[tokio::test]
async fn attack_single_patient_filter_releases_the_full_domain_and_nothing_about_them() {
    // WHERE pid = 'p07' GROUP BY sex: without zero-fill, the one row present would name
    // p07's sex. Both keys are released, in domain order, whatever the data, and the
    // one-patient cell is far below the release threshold.
    for _ in 0..20 {
        let o = ok(
            "SELECT sex, count(*) AS n FROM patient WHERE pid = 'p07' GROUP BY sex",
            params(1.0),
        )
        .await;
        let keys: Vec<&Value> = o.result.rows.iter().map(|r| &r[0]).collect();
        // Catalogue domain order of `sex`: M, F.
        assert_eq!(keys, vec![&json!("M"), &json!("F")]);
        let threshold = o.result.disclosure.dp.as_ref().unwrap().release_threshold;
        assert!(threshold > 5.0);
    }
    // Over many runs both rows are suppressed nearly always; neither row is favoured.
    let mut shown = [0usize; 2];
    for _ in 0..100 {
        let o = ok(
            "SELECT sex, count(*) AS n FROM patient WHERE pid = 'p07' GROUP BY sex",
            params(1.0),
        )
        .await;
        for (i, row) in o.result.rows.iter().enumerate() {
            if !row[1].is_null() {
                shown[i] += 1;
            }
        }
    }
    assert!(shown[0] <= 5 && shown[1] <= 5, "released {shown:?} of 100");
}

#[tokio::test]
async fn small_groups_are_suppressed_by_the_noisy_threshold() {
    // Disease 97 has 2 patients: with ε = 1e5 the noisy count is 2, below k = 5.
    let o = ok(
        "SELECT disease_no, count(DISTINCT pid) AS n FROM nanbyo_survey GROUP BY disease_no ORDER BY disease_no",
        params(1.0e5),
    )
    .await;
    let r = &o.result;
    let row97 = r.rows.iter().position(|row| row[0] == json!(97)).unwrap();
    assert!(r.rows[row97][1].is_null());
    assert!(r.disclosure.suppressed.contains(&[row97, 1]));
    let row2 = r.rows.iter().position(|row| row[0] == json!(2)).unwrap();
    assert_eq!(int(&r.rows[row2][1]), 30);
    assert!(r.disclosure.notes.iter().any(|n| n.contains("ε")));
}

#[tokio::test]
async fn post_processing_runs_on_noisy_values_only() {
    // HAVING, ORDER BY DESC and LIMIT run after the noise.
    let o = ok(
        "SELECT prefecture_code, count(DISTINCT pid) AS n FROM patient GROUP BY prefecture_code HAVING count(DISTINCT pid) > 10 ORDER BY n DESC LIMIT 1",
        params(1.0e5),
    )
    .await;
    assert_eq!(o.result.rows, vec![vec![json!("13"), json!(40)]]);
    // Arithmetic on a noisy count is released without an interval and says so.
    let o = ok(
        "SELECT pr.prefecture_code, count(DISTINCT s.pid) * 100.0 / 60 AS per_100k FROM nanbyo_survey s JOIN prefecture pr ON pr.prefecture_code = s.prefecture_code GROUP BY pr.prefecture_code ORDER BY 1",
        params(1.0e5),
    )
    .await;
    assert!(has_note(&o, "per_100k"));
}

#[tokio::test]
async fn refusals_say_what_would_work() {
    let (ctx, catalog) = registry();
    for (sql, code, hint) in [
        (
            "SELECT birth_year, count(*) FROM patient GROUP BY birth_year",
            "unsupported_query",
            "CASE",
        ),
        (
            "SELECT sex, avg(severity * 2) FROM patient JOIN nanbyo_survey USING (pid) GROUP BY sex",
            "unsupported_query",
            "bounds",
        ),
        (
            "SELECT sex, max(severity) FROM patient JOIN nanbyo_survey USING (pid) GROUP BY sex",
            "unsupported_aggregate",
            "COUNT(DISTINCT pid)",
        ),
        ("SELECT pid FROM patient", "row_level_output", "GROUP BY"),
    ] {
        let e = dp_on(&ctx, &catalog, sql, params(1.0)).await.unwrap_err();
        assert_eq!(e.code(), code, "{sql}: {e}");
        assert!(e.public_message().contains(hint), "{sql}: {e}");
    }
}

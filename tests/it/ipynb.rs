//! Notebooks as Jupyter files (issue 15 §2) over the real router: export (with and
//! without running the cells), import, round trip, and the files validated by the
//! `nbformat` package itself (Python, `tests/clients/validate_ipynb.py`). Attacks with
//! their controls: another user's notebook, an application the importer is not named on,
//! forged outputs in an imported file, hostile names in a result, oversized files, and an
//! audit log that cannot be written.

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::support::http::{H, Reply, call_router};
use crate::support::python;

const SQL: &str = "SELECT prefecture_code, count(DISTINCT pid) AS n FROM nanbyo_survey GROUP BY 1";

/// A notebook of researcher1 on `app`: Markdown, an answered SQL cell, a failing one, an
/// empty one.
async fn notebook(h: &H, token: &str, app: &str) -> String {
    let cells = json!([
        {"type": "markdown", "source": "# ALS by prefecture\nSecond line"},
        {"type": "sql", "source": SQL},
        {"type": "sql", "source": "SELECT FAIL_EXEC"},
        {"type": "sql", "source": ""},
    ]);
    let v = h
        .post(
            "/api/v1/notebooks",
            token,
            json!({"application": app, "title": "ALS 県別 / by prefecture", "cells": cells}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    v["id"].as_str().unwrap().to_string()
}

/// `GET` or `POST` the .ipynb of `id`: status, content type and document.
async fn ipynb(h: &H, token: &str, id: &str, run: Option<Value>) -> (StatusCode, String, Value) {
    let method = if run.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let path = format!("/api/v1/notebooks/{id}/ipynb");
    let (status, headers, v) = call_router(&h.router, method, &path, Some(token), run, &[]).await;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, v)
}

/// Validate documents with the `nbformat` package (one Python run for all of them).
fn validate(docs: &[&Value]) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = dir.path().join(format!("nb{i}.ipynb"));
            std::fs::write(&p, serde_json::to_vec(d).unwrap()).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let printed = python::run("validate_ipynb.py", &args);
    assert_eq!(printed.matches("ok ").count(), docs.len(), "{printed}");
}

/// The width and height of a base64 PNG, decoding it whole (a broken image fails).
fn png_size(b64: &str) -> (u32, u32) {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    (info.width, info.height)
}

fn text(v: &Value) -> String {
    match v {
        Value::Array(parts) => parts.iter().map(|p| p.as_str().unwrap()).collect(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_export_carries_released_answers_and_validates_with_nbformat() {
    let (h, token) = H::with_login("researcher1").await;
    let id = notebook(&h, &token, "A-1").await;
    let (status, ct, doc) = ipynb(&h, &token, &id, Some(json!({"run": true}))).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(ct, "application/x-ipynb+json");
    assert_eq!(
        (doc["nbformat"].as_u64(), doc["nbformat_minor"].as_u64()),
        (Some(4), Some(5))
    );
    let cells = doc["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    assert_eq!(cells[0]["cell_type"], "markdown");
    assert_eq!(
        text(&cells[0]["source"]),
        "# ALS by prefecture\nSecond line"
    );
    // The answered SQL cell: %%kura, the answer as HTML and text, the record in metadata.
    let sql = &cells[1];
    assert_eq!(text(&sql["source"]), format!("%%kura\n{SQL}"));
    let out = &sql["outputs"][0];
    assert_eq!(out["output_type"], "execute_result");
    let html = text(&out["data"]["text/html"]);
    assert!(html.contains("<td>412</td>"), "{html}");
    assert!(
        html.contains("kura-suppressed") && html.contains("&lt;5"),
        "{html}"
    );
    assert!(text(&out["data"]["text/plain"]).contains("<5"));
    // Its chart as PNG (base64, one string, as nbformat wants it), a real image.
    let (w, h_px) = png_size(out["data"]["image/png"].as_str().expect("a chart"));
    assert!(w >= 600 && h_px >= 300, "{w}x{h_px}");
    assert_eq!(out["data"]["application/json"]["rows"][1][1], Value::Null);
    let meta = &sql["metadata"]["kura"];
    assert_eq!(meta["disclosure"]["suppressed"], json!([[1, 1]]));
    let query_id = meta["query_id"].as_str().unwrap();
    // Each run cell is a query in the audit log under its id.
    let run = h.audit_rows("query.run").await;
    assert!(
        run.iter()
            .any(|e| e["reference"] == query_id && e["outcome"] == "ok"),
        "{run:?}"
    );
    // The failing cell carries its refusal (code and reference, no engine text); the empty
    // one was not run.
    let err = &cells[2]["outputs"][0];
    assert_eq!(
        (err["output_type"].as_str(), err["ename"].as_str()),
        (Some("error"), Some("execution_error"))
    );
    assert!(
        !err.to_string().contains("1987-03-02"),
        "no engine detail: {err}"
    );
    assert!(err.get("data").is_none(), "a refusal has no chart: {err}");
    assert_eq!(cells[3]["outputs"], json!([]));
    assert_eq!(cells[3]["execution_count"], Value::Null);
    // Without running: the same cells, no outputs.
    let (status, _, plain) = ipynb(&h, &token, &id, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        plain["cells"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["outputs"].as_array().is_none_or(Vec::is_empty))
    );
    validate(&[&doc, &plain]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notebook_round_trips_and_imported_outputs_are_never_trusted() {
    let (h, token) = H::with_login("researcher1").await;
    let id = notebook(&h, &token, "A-1").await;
    let (_, _, mut doc) = ipynb(&h, &token, &id, Some(json!({"run": true}))).await;
    // A forged answer in the file: a number where kura suppressed the cell.
    doc["cells"][1]["outputs"][0]["data"]["text/plain"] = json!("prefecture_code  n\n31  3");
    doc["cells"][1]["metadata"]["kura"]["query_id"] = json!("q_forged");
    // And a Python cell from the researcher's own Jupyter work.
    doc["cells"].as_array_mut().unwrap().push(json!({
        "cell_type": "code", "id": "py-1", "metadata": {}, "execution_count": 7,
        "outputs": [], "source": "df.plot()"
    }));
    let v = h
        .post(
            "/api/v1/notebooks/import",
            &token,
            json!({"application": "A-1", "notebook": doc}),
        )
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(
        (v["sql_cells"].as_u64(), v["markdown_cells"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(v["kept_as_text"], json!([5]));
    let nb = &v["notebook"];
    assert_eq!(
        nb["title"], "ALS 県別 / by prefecture",
        "the exported title comes back"
    );
    let stored = nb["cells"].to_string();
    assert!(
        !stored.contains("q_forged") && !stored.contains("31  3"),
        "{stored}"
    );
    // The SQL and Markdown are exactly the original cells.
    let original = h.get(&format!("/api/v1/notebooks/{id}"), &token).await.1;
    assert_eq!(
        nb["cells"].as_array().unwrap()[..4],
        original["cells"].as_array().unwrap()[..]
    );
    assert!(
        nb["cells"][4]["source"]
            .as_str()
            .unwrap()
            .contains("```python\ndf.plot()\n```")
    );
    // Outputs of the imported notebook are recomputed: a fresh query id, the cell suppressed.
    let new_id = nb["id"].as_str().unwrap();
    let (_, _, again) = ipynb(&h, &token, new_id, Some(json!({"run": true}))).await;
    let meta = &again["cells"][1]["metadata"]["kura"];
    assert!(meta["query_id"].as_str().unwrap().starts_with("q_"));
    assert_ne!(meta["query_id"], "q_forged");
    assert!(text(&again["cells"][1]["outputs"][0]["data"]["text/plain"]).contains("<5"));
    validate(&[&again]);
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_other_users_notebooks_and_unapproved_applications() {
    let h = H::new().await;
    let (r1, r2) = (h.login("researcher1").await, h.login("researcher2").await);
    let id = notebook(&h, &r1, "A-1").await;
    // researcher2 cannot export researcher1's notebook, with or without running it.
    assert_eq!(ipynb(&h, &r2, &id, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        ipynb(&h, &r2, &id, Some(json!({"run": true}))).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(
        h.plane.seen.lock().unwrap().is_empty(),
        "nothing ran for researcher2"
    );
    // Nor import into an application researcher2 is not named on (audited).
    let doc = ipynb(&h, &r1, &id, None).await.2;
    h.post(
        "/api/v1/notebooks/import",
        &r2,
        json!({"application": "A-1", "notebook": doc}),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "not_named_user");
    assert!(!h.denied_rows("authorize.notebook").await.is_empty());
    // Control: the owner does both.
    assert_eq!(ipynb(&h, &r1, &id, None).await.0, StatusCode::OK);
    h.post(
        "/api/v1/notebooks/import",
        &r1,
        json!({"application": "A-1", "notebook": doc}),
    )
    .await
    .expect_status(StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_are_refused_with_the_fix_and_nothing_is_saved() {
    let (h, token) = H::with_login("researcher1").await;
    let import = async |notebook: Value| {
        h.post(
            "/api/v1/notebooks/import",
            &token,
            json!({"application": "A-1", "notebook": notebook}),
        )
        .await
    };
    let v = import(json!({"nbformat": 3, "worksheets": []}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_notebook");
    assert_eq!(v["error"]["fields"][0]["field"], "nbformat");
    let cells = vec![json!({"cell_type": "markdown", "source": "x"}); 501];
    let v = import(json!({"nbformat": 4, "cells": cells}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_notebook");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("500"),
        "{v}"
    );
    let v = import(json!({"nbformat": 4, "cells": [{"cell_type": "code", "source": 42}]}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_notebook");
    assert_eq!(v["error"]["fields"][0]["field"], "cells[1]");
    // Larger than the request body limit: refused before parsing, saying so.
    let big = "x".repeat(2 << 20);
    let v =
        import(json!({"nbformat": 4, "cells": [{"cell_type": "markdown", "source": big}]})).await;
    assert_eq!(v.0, StatusCode::PAYLOAD_TOO_LARGE, "{}", v.1);
    // Nothing was saved by any of them; a valid file is (control).
    let list = h.get("/api/v1/notebooks", &token).await.1;
    assert_eq!(list.as_array().unwrap().len(), 0);
    import(json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}))
        .await
        .expect_status(StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_audit_no_export_of_answers() {
    let (h, token) = H::with_login("researcher1").await;
    let id = notebook(&h, &token, "A-1").await;
    let raw = h.break_audit_writes().await;
    let (status, _, v) = ipynb(&h, &token, &id, Some(json!({"run": true}))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let said = crate::support::http::without_ids(&v.to_string());
    assert!(!said.contains("412"), "no answer leaks: {v}");
    let mut raw = raw;
    kura::store::testing::heal_audit_writes(&mut raw).await;
    // Control: with the audit log healed, the export carries the answer.
    let (status, _, v) = ipynb(&h, &token, &id, Some(json!({"run": true}))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text(&v["cells"][1]["outputs"][0]["data"]["text/html"]).contains("412"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dp_notebook_runs_with_its_epsilon_and_is_refused_without() {
    let (h, token) = H::with_login("researcher1").await;
    let id = notebook(&h, &token, "A-DP").await;
    let (_, _, without) = ipynb(&h, &token, &id, Some(json!({"run": true}))).await;
    assert_eq!(
        without["cells"][1]["outputs"][0]["ename"],
        "invalid_request"
    );
    let (_, _, with) = ipynb(&h, &token, &id, Some(json!({"run": true, "epsilon": 0.1}))).await;
    let meta = &with["cells"][1]["metadata"]["kura"]["disclosure"];
    assert_eq!(meta["mode"], "dp");
    assert_eq!(meta["epsilon_spent"], json!(0.1));
}

//! The public transparency register (issue 16 §3), the notices (§5) and form 3 (§5) over
//! the API. Each test names the guarantee it stands for.

use axum::http::{Method, StatusCode};
use chrono::Utc;
use serde_json::{Value, json};

use kura::audit::AuditEvent;
use kura::store::model::ReleaseRequest;

use crate::support::fixtures::full_form;
use crate::support::http::{H, Reply, code};

/// Distinctive texts that must never reach the register.
const PRIVATE: [&str; 6] = [
    "NECESSITY-PRIVATE",
    "PLAN-PRIVATE",
    "contact-private@example.invalid",
    "ROOM-PRIVATE",
    "NOTEBOOK-PRIVATE",
    "192.0.2.0/24",
];

fn form(title: &str) -> Value {
    let mut f = serde_json::to_value(full_form(&["researcher1"])).unwrap();
    f["title"] = json!(title);
    f["purpose"] = json!("PURPOSE-FORM-TEXT");
    f["necessity"] = json!(PRIVATE[0]);
    f["plan_and_methods"] = json!(PRIVATE[1]);
    f["contact"] = json!(PRIVATE[2]);
    f["place_of_use"] = json!(PRIVATE[3]);
    f["networks"] = json!([PRIVATE[5]]);
    f
}

/// researcher1 files and submits an application; its id.
async fn submitted(h: &H, r1: &str, title: &str) -> String {
    let app = h
        .post("/api/v1/applications", r1, form(title))
        .await
        .expect_status(StatusCode::CREATED);
    let id = app["id"].as_str().unwrap().to_string();
    h.post_empty(&format!("/api/v1/applications/{id}/submit"), r1)
        .await
        .expect_status(StatusCode::OK);
    id
}

async fn decide(h: &H, rev: &str, id: &str, body: Value) -> Value {
    h.post(&format!("/api/v1/applications/{id}/decision"), rev, body)
        .await
        .expect_status(StatusCode::OK)
}

async fn register(h: &H) -> Value {
    h.call(Method::GET, "/api/v1/public/studies", None, None)
        .await
        .expect_status(StatusCode::OK)
}

fn study<'a>(reg: &'a Value, id: &str) -> Option<&'a Value> {
    reg["studies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
}

/// The register needs no login, lists every study ever approved with only what the
/// reviewer published (never the form's other fields, named users, networks or a
/// notebook), keeps revoked and withdrawn studies with their status, leaves out
/// drafts, pending and refused applications, and shows a release only once approved.
#[tokio::test]
async fn the_register_publishes_only_what_the_approval_published() {
    let (h, r1) = H::with_login("researcher1").await;
    let rev = h.login("reviewer1").await;
    let id = submitted(&h, &r1, "FORM-TITLE").await;
    let published = json!({"title": "Public title / 公開題名", "institution": "Demo University", "summary": "What the study asks, in plain words."});
    decide(
        &h,
        &rev,
        &id,
        json!({"decision": "approve", "published": published}),
    )
    .await;
    h.post_empty(&format!("/api/v1/applications/{id}/pledge"), &r1)
        .await
        .expect_status(StatusCode::NO_CONTENT);
    // A notebook of the study (written to the store: the approval's place of use keeps
    // in-process requests, which have no address, out).
    let nb = kura::store::model::Notebook {
        id: "nb_private".into(),
        owner: "researcher1".into(),
        application_id: id.clone(),
        title: PRIVATE[4].into(),
        cells: json!([{"type": "markdown", "source": PRIVATE[4]}]),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    h.state.store.save_notebook(&nb).await.unwrap();
    let refused = submitted(&h, &r1, "REFUSED-TITLE").await;
    decide(
        &h,
        &rev,
        &refused,
        json!({"decision": "reject", "reason": "not necessary"}),
    )
    .await;
    let pending = submitted(&h, &r1, "PENDING-TITLE").await;

    let reg = register(&h).await;
    let text = reg.to_string();
    for p in PRIVATE
        .iter()
        .chain(["researcher1", "FORM-TITLE", "PURPOSE-FORM-TEXT"].iter())
    {
        assert!(!text.contains(p), "{p} leaked into the register");
    }
    let s = study(&reg, &id).expect("the approved study is listed");
    assert_eq!(s["title"], "Public title / 公開題名");
    assert_eq!(s["institution"], "Demo University");
    assert_eq!(s["status"], "approved");
    assert_eq!(s["datasets"], json!(["als", "nanbyo"]));
    assert!(study(&reg, &refused).is_none() && study(&reg, &pending).is_none());
    assert!(!text.contains("REFUSED-TITLE") && !text.contains("PENDING-TITLE"));

    // Revoked and withdrawn studies stay listed with their status.
    h.post(
        "/api/v1/applications/A-1/revoke",
        &rev,
        json!({"reason": "breach"}),
    )
    .await
    .expect_status(StatusCode::OK);
    h.post(
        &format!("/api/v1/applications/{id}/withdraw"),
        &r1,
        json!({"reason": "study ended early"}),
    )
    .await
    .expect_status(StatusCode::OK);
    let reg = register(&h).await;
    assert_eq!(study(&reg, "A-1").unwrap()["status"], "revoked");
    assert_eq!(study(&reg, &id).unwrap()["status"], "withdrawn");
    assert!(!reg.to_string().contains("breach") && !reg.to_string().contains("ended early"));

    // A release appears once approved, as its id and date only.
    let release = ReleaseRequest {
        id: "rel-public-1".into(),
        application_id: "A-DP".into(),
        requester: "researcher1".into(),
        query_id: "q_1".into(),
        justification: "JUSTIFICATION-PRIVATE".into(),
        status: "pending".into(),
        created_at: Utc::now(),
    };
    h.state.store.create_release(&release).await.unwrap();
    assert!(!register(&h).await.to_string().contains("rel-public-1"));
    let ev = AuditEvent::ok("reviewer2", "release.decide", Some("A-DP"), json!({}));
    h.state
        .store
        .decide_release("rel-public-1", "approved", &ev)
        .await
        .unwrap();
    let reg = register(&h).await;
    let dp = study(&reg, "A-DP").unwrap();
    assert_eq!(dp["releases"][0]["id"], "rel-public-1");
    assert!(!reg.to_string().contains("JUSTIFICATION-PRIVATE"));
}

/// Per fiscal year, how many studies and answered queries used each dataset, and the
/// standing access of PMS teams apart.
#[tokio::test]
async fn the_register_counts_studies_and_queries_per_dataset_and_year() {
    let (h, r1) = H::with_login("researcher1").await;
    let sql = "SELECT sex, count(DISTINCT pid) AS n FROM patient GROUP BY sex";
    for _ in 0..3 {
        h.query(&r1, "A-1", sql).await.expect_status(StatusCode::OK);
    }
    // A refused query is not a use.
    let r2 = h.login("researcher2").await;
    h.query(&r2, "A-1", sql)
        .await
        .expect_error(StatusCode::FORBIDDEN, "not_named_user");
    let pms = h.login("pms1").await;
    h.query(&pms, "PMS-M01", sql)
        .await
        .expect_status(StatusCode::OK);
    let reg = register(&h).await;
    let fy = kura::policy::fiscal_year(crate::support::fixtures::today());
    let row = |d: &str| {
        reg["usage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["fiscal_year"] == fy && u["dataset"] == d)
            .cloned()
            .unwrap_or_else(|| panic!("no usage row for {d}: {reg}"))
    };
    // A-1, A-DP, A-NOPLEDGE run this fiscal year over als + nanbyo (A-OLD ended earlier).
    assert_eq!(row("nanbyo")["studies"], 3);
    assert_eq!(row("nanbyo")["queries"], 3);
    assert_eq!(row("als")["queries"], 3);
    assert_eq!(row("regen")["standing_queries"], 1);
}

/// The approval and refusal notices are issued with the decision (one transaction,
/// audited), downloadable by the applicant as a bilingual document, every download
/// audited; others cannot read them; a correction request issues none.
#[tokio::test]
async fn notices_are_issued_with_the_decision_and_downloaded_by_the_applicant() {
    let (h, r1) = H::with_login("researcher1").await;
    let rev = h.login("reviewer1").await;
    let approved = submitted(&h, &r1, "Notice study").await;
    decide(&h, &rev, &approved, json!({"decision": "approve"})).await;
    let list = h
        .get(&format!("/api/v1/applications/{approved}/notices"), &r1)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["kind"], "approval");
    let nid = list[0]["id"].as_str().unwrap().to_string();
    assert!(nid.starts_with("N-"));
    let (s, doc) = h
        .get(
            &format!("/api/v1/applications/{approved}/notices/{nid}?format=html"),
            &r1,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let html = doc.as_str().unwrap();
    for want in [
        "臨床調査個人票の使用について（通知）",
        "下記のとおり承認します",
        "Notice study",
        &nid,
        "is approved",
    ] {
        assert!(html.contains(want), "{want}");
    }
    assert_eq!(h.audit_rows("notice.issue").await.len(), 1);
    assert_eq!(h.audit_rows("notice.download").await.len(), 1);

    let refused = submitted(&h, &r1, "Refused study").await;
    decide(
        &h,
        &rev,
        &refused,
        json!({"decision": "request_correction", "reason": "fix item 2"}),
    )
    .await;
    let none = h
        .get(&format!("/api/v1/applications/{refused}/notices"), &r1)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(none, json!([]), "a correction request issues no notice");
    h.post_empty(&format!("/api/v1/applications/{refused}/submit"), &r1)
        .await
        .expect_status(StatusCode::OK);
    decide(
        &h,
        &rev,
        &refused,
        json!({"decision": "reject", "reason": "REASON: not necessary"}),
    )
    .await;
    let list = h
        .get(&format!("/api/v1/applications/{refused}/notices"), &r1)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(list[0]["kind"], "refusal");
    assert_eq!(list[0]["reason"], "REASON: not necessary");
    let nid = list[0]["id"].as_str().unwrap();
    let (_, doc) = h
        .get(
            &format!("/api/v1/applications/{refused}/notices/{nid}"),
            &r1,
        )
        .await;
    assert!(doc.as_str().unwrap().contains("REASON: not necessary"));
    // A reviewer reads it too; another researcher cannot.
    h.get(&format!("/api/v1/applications/{refused}/notices"), &rev)
        .await
        .expect_status(StatusCode::OK);
    let r2 = h.login("researcher2").await;
    let (s, v) = h
        .get(&format!("/api/v1/applications/{refused}/notices"), &r2)
        .await;
    assert!(
        s == StatusCode::NOT_FOUND || s == StatusCode::FORBIDDEN,
        "{s} {v}"
    );
    assert_eq!(h.audit_rows("notice.issue").await.len(), 2);
}

/// No decision without its notice: when the audit write fails, neither the decision nor
/// the notice is saved.
#[tokio::test]
async fn a_decision_whose_audit_fails_issues_no_notice() {
    let (h, r1) = H::with_login("researcher1").await;
    let rev = h.login("reviewer1").await;
    let id = submitted(&h, &r1, "Audit study").await;
    let mut raw = h.break_audit_writes().await;
    let (s, _) = h
        .post(
            &format!("/api/v1/applications/{id}/decision"),
            &rev,
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    kura::store::testing::heal_audit_writes(&mut raw).await;
    let app = h.state.store.application(&id).await.unwrap().unwrap();
    assert_eq!(app.status.as_str(), "submitted");
    assert!(h.state.store.notices(&id).await.unwrap().is_empty());
}

/// Form 3: a co-investigator's application waits for the research lead's consent, given
/// from the lead's own account (name, institution, date recorded). The applicant cannot
/// forge it in the form, consent for the lead, or keep it across an edit.
#[tokio::test]
async fn a_co_investigators_application_needs_the_leads_own_consent() {
    let (h, r1) = H::with_login("researcher1").await;
    let r2 = h.login("researcher2").await;
    let r3 = h.login("researcher3").await;
    let mut f = serde_json::to_value(full_form(&["researcher2"])).unwrap();
    f["lead_investigator"] = json!("researcher1");
    // Attack: the applicant writes the consent into the form.
    f["lead_consent"] = json!({"lead": {"name": "R One", "affiliation": "Univ", "title": "Prof"}, "consented_on": "2026-04-01", "username": "researcher1"});
    let app = h
        .post("/api/v1/applications", &r2, f.clone())
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(
        app["form"]["lead_consent"],
        Value::Null,
        "a forged consent is dropped"
    );
    let id = app["id"].as_str().unwrap().to_string();
    let submit = format!("/api/v1/applications/{id}/submit");
    h.post_empty(&submit, &r2)
        .await
        .expect_error(StatusCode::CONFLICT, "lead_consent_required");
    let consent = format!("/api/v1/applications/{id}/lead-consent");
    // Neither the applicant nor a stranger consents for the lead.
    let (s, v) = h.post(&consent, &r2, json!({"agree": true})).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"), "{v}");
    let (s, _) = h.post(&consent, &r3, json!({"agree": true})).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "the application is not visible to a stranger"
    );
    // The lead sees the application and consents from their own account.
    h.get(&format!("/api/v1/applications/{id}"), &r1)
        .await
        .expect_status(StatusCode::OK);
    h.post(&consent, &r1, json!({"agree": false}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_application");
    let v = h
        .post(&consent, &r1, json!({"agree": true}))
        .await
        .expect_status(StatusCode::OK);
    let c = &v["form"]["lead_consent"];
    assert_eq!(c["username"], "researcher1");
    assert_eq!(c["lead"]["name"], "researcher1");
    assert_eq!(c["lead"]["affiliation"], "Org");
    assert_eq!(
        c["consented_on"],
        crate::support::fixtures::today().to_string()
    );
    let audit = h.audit_rows("application.lead_consent").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor"], "researcher1");
    // An edit of anything clears the consent: the lead consents to what is submitted.
    let mut edited = f.clone();
    edited["title"] = json!("Another title");
    h.put(&format!("/api/v1/applications/{id}"), &r2, edited)
        .await
        .expect_status(StatusCode::OK);
    h.post_empty(&submit, &r2)
        .await
        .expect_error(StatusCode::CONFLICT, "lead_consent_required");
    h.post(&consent, &r1, json!({"agree": true}))
        .await
        .expect_status(StatusCode::OK);
    // Re-sending the same form keeps it (the console saves before submitting).
    let same = h
        .get(&format!("/api/v1/applications/{id}"), &r2)
        .await
        .expect_status(StatusCode::OK)["form"]
        .clone();
    h.put(&format!("/api/v1/applications/{id}"), &r2, same)
        .await
        .expect_status(StatusCode::OK);
    h.post_empty(&submit, &r2)
        .await
        .expect_status(StatusCode::OK);
}

/// The research lead who consented to an application does not review it: another
/// reviewer must decide (conflict of interest, like a named user or the applicant).
#[tokio::test]
async fn the_research_lead_does_not_review_the_application() {
    let (h, r2) = H::with_login("researcher2").await;
    let mut f = serde_json::to_value(full_form(&["researcher2"])).unwrap();
    f["lead_investigator"] = json!("reviewer1");
    let app = h
        .post("/api/v1/applications", &r2, f)
        .await
        .expect_status(StatusCode::CREATED);
    let id = app["id"].as_str().unwrap().to_string();
    // Submitted as it would be once the lead consented.
    let stored = h.state.store.application(&id).await.unwrap().unwrap();
    let mut next = stored.clone();
    next.status = kura::store::model::Status::Submitted;
    let ev = AuditEvent::ok("researcher2", "application.submit", Some(&id), json!({}));
    h.state
        .store
        .transition(&next, stored.updated_at, stored.status, "submit", None, &ev)
        .await
        .unwrap();
    let lead = h.login("reviewer1").await;
    let other = h.login("reviewer2").await;
    let decision = format!("/api/v1/applications/{id}/decision");
    let body = json!({"decision": "request_correction", "reason": "fix"});
    h.post(&decision, &lead, body.clone())
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    h.post(&decision, &other, body)
        .await
        .expect_status(StatusCode::OK);
}

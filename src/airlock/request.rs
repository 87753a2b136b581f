//! The output airlock, the request: a researcher asks to release answers of their own
//! queries of one application for a publication (`POST /api/v1/releases`).
//!
//! Guarantees: only the requester's own *answered* queries of one application qualify
//! (an unknown query id and another user's look the same: `query_not_found`; refused or
//! failed ones are `query_not_answered`); the requester must pass the enforcement point
//! for `request_release` on that application now; only answers stored with their query
//! and vouched for by the signed log are snapshotted (an edited stored answer fails);
//! a suppression answer whose extract was rebuilt since is refused at once (its cells can
//! no longer be re-checked); the request, its sealed snapshots and rendered files, and
//! its audit event (carrying every seal and file hash) commit together.

use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::snapshot::{self, OutputSnapshot};
use super::{AirlockError, MAX_OUTPUTS, Result, files, text_field};
use crate::audit::AuditEvent;
use crate::policy::place::Origin;
use crate::policy::{Action, Policy};
use crate::store::Store;
use crate::store::model::{QueryRecord, ReleaseRequest, User};
use crate::store::releases::{NewFile, NewOutput, NewRelease};
use crate::store::results::StoredAnswer;

/// A release request: the queries whose answers are to leave, why, and where they are
/// published. The single-result form of earlier clients (`application`, `query_id`,
/// `justification` or `reason`) is accepted too.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ReleaseInput {
    /// Your answered queries of one application, in output order (`result-1`, …).
    #[serde(default)]
    pub query_ids: Vec<String>,
    /// One query (earlier clients); added after `query_ids`.
    #[serde(default)]
    pub query_id: Option<String>,
    /// The application (optional: the queries name it; if given it must match).
    #[serde(default)]
    pub application: Option<String>,
    /// Why these results may leave: what they show and why they are needed.
    #[serde(default, alias = "reason")]
    pub justification: String,
    /// Where they will be published (default: the application's publication plan).
    #[serde(default)]
    pub publication: String,
}

/// The query ids of a request, de-duplicated in order, checked for number and length.
fn query_ids(input: &ReleaseInput) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for id in input.query_ids.iter().chain(input.query_id.iter()) {
        let id = id.trim();
        if id.is_empty() || id.len() > 64 {
            return Err(AirlockError::invalid(
                "every query id must be 1 to 64 characters (GET /api/v1/queries lists yours) / クエリ ID が不正です",
            ));
        }
        if !ids.iter().any(|x| x == id) {
            ids.push(id.to_string());
        }
    }
    if ids.is_empty() || ids.len() > MAX_OUTPUTS {
        return Err(AirlockError::invalid(format!(
            "`query_ids` must name 1 to {MAX_OUTPUTS} of your answered queries / query_ids には回答済みのクエリを 1〜{MAX_OUTPUTS} 件指定してください"
        )));
    }
    Ok(ids)
}

fn not_found(id: &str) -> AirlockError {
    AirlockError::refused(
        404,
        "query_not_found",
        format!(
            "No query of yours has the id `{id}`; pick one from your query history (GET /api/v1/queries). / 指定の ID の自分のクエリはありません。"
        ),
    )
}

/// The caller's own answered history row of `id`.
async fn own_answered(store: &Store, user: &User, id: &str) -> Result<QueryRecord> {
    let q = match store.query_record(id).await? {
        Some(q) if q.username == user.username => q,
        _ => return Err(not_found(id)),
    };
    if q.outcome != "ok" {
        let code = q.code.as_deref().unwrap_or(&q.outcome);
        return Err(AirlockError::refused(
            400,
            "query_not_answered",
            format!(
                "Query `{id}` was not answered (it ended with `{code}`), so it has no result to release; release only answered queries. / このクエリは回答されていない（{code}）ため、持ち出せる結果がありません。"
            ),
        ));
    }
    Ok(q)
}

/// The one application all `records` belong to (and `given`, if the caller named one).
fn one_application(records: &[QueryRecord], given: Option<&str>) -> Result<String> {
    let app = records[0].application_id.clone();
    if records.iter().any(|q| q.application_id != app) {
        return Err(AirlockError::refused(
            400,
            "queries_span_applications",
            "All results of one release request must come from one application; request each application's results separately. / 1 件の持ち出し申請には同じ利用申請の結果だけを含めてください。",
        ));
    }
    if given.is_some_and(|g| g != app) {
        return Err(AirlockError::refused(
            400,
            "query_other_application",
            "These queries belong to another application than the one named in `application`; omit `application` or name theirs. / 指定したクエリは別の利用申請のものです。",
        ));
    }
    Ok(app)
}

/// The stored answer of `q`, vouched for by the signed log.
async fn stored(store: &Store, q: &QueryRecord) -> Result<StoredAnswer> {
    match store.stored_answer(&q.query_id).await? {
        Some(a) if a.username == q.username && a.application_id == q.application_id => Ok(a),
        _ => Err(AirlockError::refused(
            400,
            "answer_not_stored",
            format!(
                "The answer of query `{}` was not kept (it was answered before results were stored for release); run the query again and request the new answer. / このクエリの回答は保存されていません。クエリを再実行し、新しい回答で申請してください。",
                q.query_id
            ),
        )),
    }
}

/// Refuse a suppression answer whose extract is no longer the application's live one.
async fn same_extract(store: &Store, app: &str, a: &StoredAnswer) -> Result<()> {
    if a.mode != "suppression" {
        return Ok(());
    }
    let live = store
        .extract(app)
        .await?
        .filter(|x| x.destroyed_at.is_none());
    if live.is_some_and(|x| x.extract_id == a.extract_id) {
        return Ok(());
    }
    Err(AirlockError::refused(
        409,
        "release_extract_changed",
        format!(
            "The data of application {app} was rebuilt or destroyed after query `{}` was answered, so its cells can no longer be checked against the release ledger; run the query again and request the new answer. / 回答後に抽出データが再作成または消去されたため、この結果は審査できません。クエリを再実行して申請してください。",
            a.query_id
        ),
    ))
}

/// Snapshot every answer and render its files.
fn outputs(
    answers: &[(QueryRecord, StoredAnswer)],
) -> Result<(Vec<OutputSnapshot>, Vec<NewOutput>, Vec<NewFile>)> {
    let mut snaps = Vec::new();
    let mut outs = Vec::new();
    let mut all_files = Vec::new();
    for (i, (q, a)) in answers.iter().enumerate() {
        let position = (i + 1) as u32;
        let (mut snap, internal) = snapshot::build(a, &q.sql, position)?;
        let rendered = files::render_output(&snap, &a.body.result)?;
        snap.files = rendered.iter().map(files::info).collect();
        let text = snapshot::canonical(&snap)?;
        let inner = snapshot::canonical(&internal)?;
        outs.push(NewOutput {
            position,
            query_id: q.query_id.clone(),
            seal: snapshot::seal(&text, &inner),
            snapshot: text,
            internal: inner,
        });
        all_files.extend(rendered);
        snaps.push(snap);
    }
    Ok((snaps, outs, all_files))
}

/// Ask for the answers of `input` to be released. Returns the pending request.
pub async fn request(
    store: &Store,
    policy: &Policy,
    user: &User,
    input: &ReleaseInput,
    today: NaiveDate,
    origin: Origin,
) -> Result<ReleaseRequest> {
    let ids = query_ids(input)?;
    let justification = text_field("justification", &input.justification, false)?;
    let publication = text_field("publication", &input.publication, true)?;
    let mut records = Vec::with_capacity(ids.len());
    for id in &ids {
        records.push(own_answered(store, user, id).await?);
    }
    let app_id = one_application(&records, input.application.as_deref())?;
    let grant = policy
        .resolve(store, user, &app_id, Action::RequestRelease, today, origin)
        .await?;
    if let Err(denial) = grant {
        return Err(AirlockError::Denied {
            action: "authorize.request_release",
            application: Some(app_id),
            denial,
            detail: json!({"query_ids": ids}),
        });
    }
    let app = store.application(&app_id).await?;
    let mut answers = Vec::with_capacity(records.len());
    for q in records {
        let a = stored(store, &q).await?;
        same_extract(store, &app_id, &a).await?;
        answers.push((q, a));
    }
    let (snaps, outs, rendered) = outputs(&answers)?;
    let publication = match (publication.is_empty(), &app) {
        (true, Some(a)) => a.form.publication_plan.clone(),
        _ => publication,
    };
    let checkers = app
        .as_ref()
        .and_then(|a| a.approval.as_ref())
        .map_or(1, |a| a.release_checkers());
    let id = format!("rel_{}", crate::auth::random_hex(12)?);
    let seals: Vec<String> = outs.iter().map(|o| o.seal.clone()).collect();
    let seal = snapshot::request_seal(
        &id,
        &user.username,
        &justification,
        &publication,
        checkers,
        &seals,
    );
    let request = ReleaseRequest {
        id: id.clone(),
        application_id: app_id.clone(),
        requester: user.username.clone(),
        query_id: ids[0].clone(),
        query_ids: ids.clone(),
        justification: justification.clone(),
        publication: publication.clone(),
        status: "pending".into(),
        checkers_required: checkers,
        approvals: 0,
        created_at: Utc::now(),
        decided_at: None,
        invalidation: None,
    };
    let event = AuditEvent::ok(
        &user.username,
        "release.request",
        Some(&app_id),
        json!({
            "release": id,
            "query_ids": ids,
            "justification": justification,
            "publication": publication,
            "checkers_required": checkers,
            "seal": seal,
            "outputs": snaps.iter().zip(&outs).map(|(s, o)| json!({
                "position": s.position,
                "query_id": s.query_id,
                "result_sha256": s.result_sha256,
                "seal": o.seal,
                "files": s.files.iter().map(|f| json!({"name": f.name, "sha256": f.sha256})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
    )
    .with_reference(&id);
    let new = NewRelease {
        request: request.clone(),
        outputs: outs,
        files: rendered,
        seal,
    };
    store.create_release(&new, &event).await?;
    Ok(request)
}

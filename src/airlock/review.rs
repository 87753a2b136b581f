//! The output airlock, the review: a reviewer approves or rejects a release request with
//! a comment (`POST /api/v1/releases/{id}/decision`).
//!
//! Guarantees: only reviewers decide, never on a request they made or of an application
//! they are the applicant or a named user of (refused and audited); a reviewer decides a
//! request once; a rejection by any checker ends it; an approval first passes the
//! re-check (`recheck.rs`: seal, authorisation, rules, extract, release ledger), and a
//! failed re-check invalidates the request instead (audited, with its code); the approval
//! that completes the number of distinct checkers the approval asks for adds the release
//! record and makes the files downloadable, in one transaction with its audit event.
//! Decisions on one request are taken one at a time (its lock), and the re-check and the
//! approval's commit happen under the extract's lock, so no answer enters the ledger in
//! between.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::checkers::{self, Step};
use super::recheck::{self, Output};
use super::{AirlockError, Result, files, text_field};
use crate::audit::AuditEvent;
use crate::policy::{Action, Policy, Target};
use crate::query::admission::Admission;
use crate::store::Store;
use crate::store::model::{Application, ReleaseDecisionRecord, ReleaseRequest, User};
use crate::store::releases::DecisionWrite;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseDecisionKind {
    Approve,
    Reject,
}

impl ReleaseDecisionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }
}

/// A reviewer's decision with the comment that goes into the release record.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReleaseDecisionRequest {
    pub decision: ReleaseDecisionKind,
    /// What was checked and why it may (not) be published (`reason` is accepted too).
    #[serde(default, alias = "reason")]
    pub comment: String,
}

/// What a decision did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseDecision {
    pub release: ReleaseRequest,
    pub decision: ReleaseDecisionKind,
    pub comment: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    /// Approvals recorded, of `checkers_required`; the request is approved when they meet.
    pub approvals: u8,
    pub checkers_required: u8,
}

fn conflict(code: &'static str, message: &str) -> AirlockError {
    AirlockError::refused(409, code, message)
}

/// The request `id` for a reviewer: authorised to review, and without a conflict of
/// interest (refused and audited).
async fn reviewable(
    store: &Store,
    policy: &Policy,
    user: &User,
    id: &str,
    today: NaiveDate,
) -> Result<(ReleaseRequest, Option<Application>)> {
    let release = store.release(id).await?;
    let app_id = release.as_ref().map(|r| r.application_id.clone());
    if let Err(denial) = policy
        .authorize(user, Action::Review, &Target::None, today)
        .await
    {
        return Err(AirlockError::Denied {
            action: "authorize.review",
            application: app_id,
            denial,
            detail: json!({"release": id}),
        });
    }
    let Some(release) = release else {
        return Err(AirlockError::refused(
            404,
            "not_found",
            "No release request with this id; check the id in your inbox. / 指定の持ち出し申請は見つかりません。",
        ));
    };
    let app = store.application(&release.application_id).await?;
    if checkers::conflicted(&user.username, &release, app.as_ref()) {
        return Err(AirlockError::Denied {
            action: "release.decide",
            application: Some(release.application_id.clone()),
            denial: crate::policy::Denial {
                code: "forbidden",
                message: "You requested this release or are the applicant or a named user of its application; another reviewer must check it. / 利益相反のため、この持ち出し申請は他の審査担当者が審査してください。".into(),
            },
            detail: json!({"release": release.id, "reason": "conflict_of_interest"}),
        });
    }
    Ok((release, app))
}

/// Decide a release request.
pub async fn decide(
    store: &Store,
    policy: &Policy,
    locks: &Admission,
    user: &User,
    id: &str,
    input: &ReleaseDecisionRequest,
    today: NaiveDate,
) -> Result<ReleaseDecision> {
    let (_, _) = reviewable(store, policy, user, id, today).await?;
    let comment = text_field("comment", &input.comment, false)?;
    // One decision on this request at a time; read it again once it is our turn.
    let _turn = locks.hold_extract(&format!("release:{id}")).await;
    let (release, app) = reviewable(store, policy, user, id, today).await?;
    if release.status != "pending" {
        return Err(conflict(
            "conflict",
            "This release request has already been decided. / この持ち出し申請は既に判断済みです。",
        ));
    }
    let decisions = store.release_decisions(id).await?;
    if decisions.iter().any(|d| d.reviewer == user.username) {
        return Err(AirlockError::Denied {
            action: "release.decide",
            application: Some(release.application_id.clone()),
            denial: crate::policy::Denial {
                code: "already_checked",
                message: "You have already decided this release request; a second, different reviewer must check it. / この持ち出し申請は既に審査済みです。別の審査担当者が審査してください。".into(),
            },
            detail: json!({"release": id, "reason": "already_checked"}),
        });
    }
    let decision = ReleaseDecisionRecord {
        reviewer: user.username.clone(),
        decision: input.decision.as_str().into(),
        comment,
        at: Utc::now(),
    };
    let seen: Vec<String> = decisions.iter().map(|d| d.reviewer.clone()).collect();
    let required = checkers::required(&release, app.as_ref());
    let saved = match input.decision {
        ReleaseDecisionKind::Reject => reject(store, &release, &decision, seen).await?,
        ReleaseDecisionKind::Approve => {
            let ctx = Approving {
                store,
                policy,
                locks,
                release: &release,
                app: app.as_ref(),
                today,
                required,
            };
            ctx.approve(&decision, &decisions, seen).await?
        }
    };
    Ok(ReleaseDecision {
        approvals: saved.approvals,
        checkers_required: required,
        decision: input.decision,
        comment: decision.comment,
        decided_by: decision.reviewer,
        decided_at: decision.at,
        release: saved,
    })
}

async fn reject(
    store: &Store,
    release: &ReleaseRequest,
    d: &ReleaseDecisionRecord,
    seen: Vec<String>,
) -> Result<ReleaseRequest> {
    let event = AuditEvent::ok(
        &d.reviewer,
        "release.reject",
        Some(&release.application_id),
        json!({
            "release": release.id,
            "query_ids": release.query_ids,
            "requester": release.requester,
            "comment": d.comment,
            "approvals_before": seen.len(),
        }),
    )
    .with_reference(&release.id);
    let write = DecisionWrite {
        release_id: release.id.clone(),
        decision: d.clone(),
        seen,
        record: None,
    };
    Ok(store.record_release_decision(&write, &event).await?)
}

/// One approval in progress.
struct Approving<'a> {
    store: &'a Store,
    policy: &'a Policy,
    locks: &'a Admission,
    release: &'a ReleaseRequest,
    app: Option<&'a Application>,
    today: NaiveDate,
    required: u8,
}

impl Approving<'_> {
    async fn approve(
        &self,
        d: &ReleaseDecisionRecord,
        before: &[ReleaseDecisionRecord],
        seen: Vec<String>,
    ) -> Result<ReleaseRequest> {
        let (store, release) = (self.store, self.release);
        let outputs = recheck::sealed_outputs(store, release).await?;
        recheck::sealed_files(store, release, &outputs).await?;
        // Hold the extract's lock from the ledger re-check to the commit.
        let extract = outputs
            .iter()
            .find(|o| o.snapshot.mode == "suppression")
            .map(|o| o.internal.extract_id.clone());
        let _ledger = match &extract {
            Some(x) => Some(self.locks.hold_extract(x).await),
            None => None,
        };
        let why =
            recheck::recheck(store, self.policy, release, self.app, &outputs, self.today).await?;
        if let Some(why) = why {
            return Err(self.invalidate(d, why).await);
        }
        let approvals = before.iter().filter(|x| x.decision == "approve").count() as u8;
        let step = checkers::step(approvals, self.required);
        let (action, record) = match step {
            Step::Recorded { .. } => ("release.check", None),
            Step::Completes => {
                let mut all = before.to_vec();
                all.push(d.clone());
                ("release.approve", Some(self.record(&outputs, &all, d)))
            }
        };
        let mut file_hashes: Vec<serde_json::Value> = outputs
            .iter()
            .flat_map(|o| &o.snapshot.files)
            .map(|f| json!({"name": f.name, "sha256": f.sha256}))
            .collect();
        if let Some(r) = &record {
            file_hashes.push(json!({"name": r.name, "sha256": r.sha256}));
        }
        let event = AuditEvent::ok(
            &d.reviewer,
            action,
            Some(&release.application_id),
            json!({
                "release": release.id,
                "query_ids": release.query_ids,
                "requester": release.requester,
                "comment": d.comment,
                "approvals": approvals + 1,
                "checkers_required": self.required,
                "files": if record.is_some() { file_hashes } else { Vec::new() },
            }),
        )
        .with_reference(&release.id);
        let write = DecisionWrite {
            release_id: release.id.clone(),
            decision: d.clone(),
            seen,
            record,
        };
        Ok(store.record_release_decision(&write, &event).await?)
    }

    /// The release record of the request as approved by `all`.
    fn record(
        &self,
        outputs: &[Output],
        all: &[ReleaseDecisionRecord],
        last: &ReleaseDecisionRecord,
    ) -> crate::store::releases::NewFile {
        let mut approved = self.release.clone();
        approved.status = "approved".into();
        approved.decided_at = Some(last.at);
        approved.checkers_required = self.required;
        approved.approvals = all.iter().filter(|x| x.decision == "approve").count() as u8;
        let snaps: Vec<_> = outputs.iter().map(|o| o.snapshot.clone()).collect();
        let bytes = files::record::build(&approved, &snaps, all);
        files::file(files::RECORD.into(), files::JSON, bytes)
    }

    /// Mark the request invalidated (audited) and return the refusal to report.
    async fn invalidate(
        &self,
        d: &ReleaseDecisionRecord,
        why: crate::store::model::Invalidation,
    ) -> AirlockError {
        let release = self.release;
        let code: &'static str = match why.code.as_str() {
            "release_unsafe" => "release_unsafe",
            "release_extract_changed" => "release_extract_changed",
            "release_rules_changed" => "release_rules_changed",
            _ => "release_not_authorised",
        };
        let event = AuditEvent::denied(
            &d.reviewer,
            "release.invalidate",
            Some(&release.application_id),
            code,
            json!({"release": release.id, "requester": release.requester, "reason": why.message}),
        )
        .with_reference(&release.id);
        match self
            .store
            .invalidate_release(&release.id, &why, &event)
            .await
        {
            Ok(()) => AirlockError::refused(409, code, why.message),
            Err(e) => AirlockError::Store(e),
        }
    }
}

//! The output airlock, who sees which request: the requester their own, reviewers every
//! request they may check (not those they made or of applications they are named on or
//! applied for), auditors all; and what a request looks like in full — its sealed
//! snapshots, decisions, files and downloads.
//!
//! Guarantees: a request the caller may not see is reported exactly like an unknown one;
//! a snapshot is shown only after its seal verified (an edited one is an integrity error,
//! never displayed as if it were what was requested).

use serde::Serialize;
use utoipa::ToSchema;

use super::Result;
use super::checkers;
use super::recheck::sealed_outputs;
use super::snapshot::OutputSnapshot;
use crate::store::Store;
use crate::store::model::{
    Application, ReleaseDecisionRecord, ReleaseDownload, ReleaseFileInfo, ReleaseRequest, Role,
    User,
};

/// Whether `user` may see `release`.
pub fn may_see(user: &User, release: &ReleaseRequest, app: Option<&Application>) -> bool {
    release.requester == user.username
        || user.has(Role::Auditor)
        || checkers::may_check(user, release, app)
}

/// Filters of the list.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    /// `pending`, `approved`, `rejected`, `invalidated`, or `decided` (all but pending).
    pub status: Option<String>,
    pub application: Option<String>,
}

fn status_matches(wanted: Option<&str>, status: &str) -> bool {
    match wanted {
        None => true,
        Some("decided") => status != "pending",
        Some(s) => s == status,
    }
}

/// The requests `user` may see, newest first.
pub async fn list(store: &Store, user: &User, f: &ListFilter) -> Result<Vec<ReleaseRequest>> {
    let mut out = Vec::new();
    for r in store.releases().await? {
        if !status_matches(f.status.as_deref(), &r.status)
            || f.application
                .as_deref()
                .is_some_and(|a| a != r.application_id)
        {
            continue;
        }
        let app = store.application(&r.application_id).await?;
        if may_see(user, &r, app.as_ref()) {
            out.push(r);
        }
    }
    Ok(out)
}

/// A request in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseView {
    #[serde(flatten)]
    pub release: ReleaseRequest,
    /// The sealed snapshots, in order.
    pub outputs: Vec<OutputSnapshot>,
    pub decisions: Vec<ReleaseDecisionRecord>,
    /// The files (downloadable by the requester once approved).
    pub files: Vec<ReleaseFileInfo>,
    /// Downloads so far (reviewers and auditors; the requester sees their own).
    pub downloads: Vec<ReleaseDownload>,
    /// Whether the caller may decide it now.
    pub can_decide: bool,
}

/// The request `id` as `user` may see it, or `None`.
pub async fn detail(store: &Store, user: &User, id: &str) -> Result<Option<ReleaseView>> {
    let Some(release) = store.release(id).await? else {
        return Ok(None);
    };
    let app = store.application(&release.application_id).await?;
    if !may_see(user, &release, app.as_ref()) {
        return Ok(None);
    }
    let outputs = sealed_outputs(store, &release)
        .await?
        .into_iter()
        .map(|o| o.snapshot)
        .collect();
    let decisions = store.release_decisions(id).await?;
    let decided = decisions.iter().any(|d| d.reviewer == user.username);
    let can_decide = release.status == "pending"
        && !decided
        && checkers::may_check(user, &release, app.as_ref());
    Ok(Some(ReleaseView {
        outputs,
        files: store.release_files(id).await?,
        downloads: store.release_downloads(id).await?,
        decisions,
        can_decide,
        release,
    }))
}

//! The output airlock, what leaves: downloads of an approved release's files
//! (`GET /api/v1/releases/{id}/files/{name}`) and the release register
//! (`GET /api/v1/releases/register`).
//!
//! Guarantees: a file leaves only to the requester, only once the request is approved,
//! only while its application is not revoked, and only under one of the fixed file names;
//! everything else is the same `export_not_permitted` (no oracle: the reason is in the
//! audit log only). A file leaves only if its bytes hash to what the approval's
//! MAC-verified audit event lists (an edited file fails closed). Every download, and
//! every refused attempt, commits its audit event; a download also its register row,
//! in the same transaction, before any byte is sent.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::files::is_release_file;
use super::{AirlockError, Result};
use crate::audit::AuditEvent;
use crate::policy::Denial;
use crate::store::model::{
    ReleaseDecisionRecord, ReleaseDownload, ReleaseFileInfo, ReleaseRequest, Status, User,
};
use crate::store::results::sha256_hex;
use crate::store::{Store, StoreError};

fn not_permitted(id: &str, name: &str, app: Option<String>, reason: &str) -> AirlockError {
    AirlockError::Denied {
        action: "release.download",
        application: app,
        denial: Denial {
            code: "export_not_permitted",
            message: "Only the requester may download the files of an approved release, under the names the release lists (result-N.csv, result-N.xlsx, result-N.png, release.json); nothing else leaves the enclave (要綱 第3章 3・6). / 承認された持ち出し申請のファイルを、申請者のみがダウンロードできます。それ以外の持ち出しはできません。".into(),
        },
        detail: json!({"release": id, "file": name, "reason": reason}),
    }
}

/// The file `name` of release `id`, for `user`; the download is recorded first.
pub async fn download(
    store: &Store,
    user: &User,
    id: &str,
    name: &str,
) -> Result<(ReleaseFileInfo, Vec<u8>)> {
    let name_ok = is_release_file(name);
    // The name goes into the audit log only when it is a valid one (bounded, harmless).
    let logged = if name_ok { name } else { "(invalid name)" };
    let release = match store.release(id).await? {
        Some(r) if name_ok => r,
        Some(r) => {
            return Err(not_permitted(
                id,
                logged,
                Some(r.application_id),
                "invalid_name",
            ));
        }
        None => return Err(not_permitted(id, logged, None, "unknown_release")),
    };
    let app = Some(release.application_id.clone());
    if release.requester != user.username {
        return Err(not_permitted(id, logged, app, "not_requester"));
    }
    if release.status != "approved" {
        return Err(not_permitted(id, logged, app, "not_approved"));
    }
    let revoked = store
        .application(&release.application_id)
        .await?
        .is_some_and(|a| a.status == Status::Revoked);
    if revoked {
        return Err(not_permitted(id, logged, app, "application_revoked"));
    }
    let Some((info, content)) = store.release_file(id, name).await? else {
        return Err(not_permitted(id, logged, app, "no_such_file"));
    };
    verify(store, id, &info, &content).await?;
    let d = ReleaseDownload {
        name: info.name.clone(),
        username: user.username.clone(),
        at: Utc::now(),
        sha256: info.sha256.clone(),
    };
    let event = AuditEvent::ok(
        &user.username,
        "release.download",
        Some(&release.application_id),
        json!({"release": id, "file": info.name, "sha256": info.sha256, "bytes": info.bytes}),
    )
    .with_reference(id);
    store.record_download(id, &d, &event).await?;
    Ok((info, content))
}

/// The bytes hash to the stored hash, and to the hash the approval's signed event lists.
async fn verify(store: &Store, id: &str, info: &ReleaseFileInfo, content: &[u8]) -> Result<()> {
    let signed = store.signed_detail("release.approve", id).await?;
    let listed = signed
        .as_ref()
        .and_then(|d| d["files"].as_array())
        .and_then(|files| {
            files
                .iter()
                .find(|f| f["name"] == info.name.as_str())
                .and_then(|f| f["sha256"].as_str().map(str::to_string))
        });
    let actual = sha256_hex(content);
    if actual != info.sha256 || listed.as_deref() != Some(actual.as_str()) {
        return Err(AirlockError::Store(StoreError::Tampered(format!(
            "file {} of release {id} does not match its approval",
            info.name
        ))));
    }
    Ok(())
}

/// One entry of the release register: what left, when, for whom and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterEntry {
    pub release: String,
    pub application: String,
    pub requester: String,
    pub justification: String,
    pub publication: String,
    pub requested_at: DateTime<Utc>,
    pub approved_at: Option<DateTime<Utc>>,
    pub query_ids: Vec<String>,
    /// The reviewers who approved it, with their comments.
    pub checkers: Vec<ReleaseDecisionRecord>,
    pub files: Vec<ReleaseFileInfo>,
    /// Every download: file, who, when, hash.
    pub downloads: Vec<ReleaseDownload>,
}

/// The register: every approved release, newest first.
pub async fn register(store: &Store) -> Result<Vec<RegisterEntry>> {
    let mut out = Vec::new();
    for r in store.releases().await? {
        if r.status == "approved" {
            out.push(entry(store, r).await?);
        }
    }
    Ok(out)
}

async fn entry(store: &Store, r: ReleaseRequest) -> Result<RegisterEntry> {
    let checkers = store
        .release_decisions(&r.id)
        .await?
        .into_iter()
        .filter(|d| d.decision == "approve")
        .collect();
    Ok(RegisterEntry {
        files: store.release_files(&r.id).await?,
        downloads: store.release_downloads(&r.id).await?,
        checkers,
        release: r.id,
        application: r.application_id,
        requester: r.requester,
        justification: r.justification,
        publication: r.publication,
        requested_at: r.created_at,
        approved_at: r.decided_at,
        query_ids: r.query_ids,
    })
}

//! The output airlock, the re-check before every approval: is what the reviewer approves
//! still what was requested, and is it still safe and allowed to leave?
//!
//! In order, failing closed at each step:
//! 1. integrity: every output's snapshot hashes to its seal, the seals to the request's
//!    seal, and that seal is the one in the request's MAC-verified `release.request`
//!    event; every rendered file hashes to what its snapshot lists. A mismatch is an
//!    error (`integrity_failed`), not a decision: someone edited the store.
//! 2. authorisation: the requester may still `request_release` on the application today
//!    (not revoked, term not ended, still named, pledge in force, account enabled).
//! 3. rules: the approval's k was not raised above the k the answer was checked at.
//! 4. extract and ledger (suppression): the answer's extract is still the live one and
//!    its ledger still holds every set of the released cells; each of those sets is safe
//!    against every set in the ledger now (docs/privacy.md §4a: equal, or differing by k
//!    patients or more either way) — another release since the request can make a cell
//!    computable by subtraction. The caller holds the extract's lock, so no answer enters
//!    the ledger between this check and the approval's commit.
//!
//! Guarantees: an approval is recorded only if all four hold; otherwise the request is
//! invalidated with a stable code and a bilingual message naming the cells by position
//! only (never a value or a count).

use std::collections::BTreeSet;

use chrono::NaiveDate;
use roaring::RoaringBitmap;

use super::snapshot::{OutputInternal, OutputSnapshot, request_seal, seal};
use crate::engine::contributors::deserialise;
use crate::policy::place::Origin;
use crate::policy::{Action, Policy};
use crate::privacy::disclosure::differencing::Earlier;
use crate::privacy::ledger::ranges;
use crate::store::model::{Application, Invalidation, ReleaseRequest};
use crate::store::releases::StoredOutput;
use crate::store::results::sha256_hex;
use crate::store::{Store, StoreError};

/// One output as the re-check reads it.
pub struct Output {
    pub snapshot: OutputSnapshot,
    pub internal: OutputInternal,
}

fn tampered(what: String) -> StoreError {
    StoreError::Tampered(what)
}

fn invalid(code: &str, message: String) -> Invalidation {
    Invalidation {
        code: code.into(),
        message,
    }
}

/// Step 1: the stored outputs, checked against their seals and the signed request event.
pub async fn sealed_outputs(
    store: &Store,
    release: &ReleaseRequest,
) -> Result<Vec<Output>, StoreError> {
    let stored: Vec<StoredOutput> = store.release_outputs(&release.id).await?;
    if stored.is_empty() {
        return Err(tampered(format!(
            "release {} has no sealed output",
            release.id
        )));
    }
    let mut seals = Vec::with_capacity(stored.len());
    let mut out = Vec::with_capacity(stored.len());
    for o in &stored {
        if seal(&o.snapshot, &o.internal) != o.seal {
            return Err(tampered(format!(
                "output {} of {} does not match its seal",
                o.position, release.id
            )));
        }
        seals.push(o.seal.clone());
        out.push(Output {
            snapshot: serde_json::from_str(&o.snapshot)?,
            internal: serde_json::from_str(&o.internal)?,
        });
    }
    let expected = request_seal(
        &release.id,
        &release.requester,
        &release.justification,
        &release.publication,
        release.checkers_required,
        &seals,
    );
    let signed = store.signed_detail("release.request", &release.id).await?;
    let signed_seal = signed.as_ref().and_then(|d| d["seal"].as_str());
    let stored_seal = store.release_seal(&release.id).await?;
    if signed_seal != Some(expected.as_str()) || stored_seal.as_deref() != Some(expected.as_str()) {
        return Err(tampered(format!(
            "release {} does not match its signed request",
            release.id
        )));
    }
    Ok(out)
}

/// Step 1, files: every rendered file of the outputs hashes to what its snapshot lists.
pub async fn sealed_files(
    store: &Store,
    release: &ReleaseRequest,
    outputs: &[Output],
) -> Result<(), StoreError> {
    for f in outputs.iter().flat_map(|o| &o.snapshot.files) {
        let Some((info, content)) = store.release_file(&release.id, &f.name).await? else {
            return Err(tampered(format!(
                "file {} of {} is missing",
                f.name, release.id
            )));
        };
        if sha256_hex(&content) != f.sha256 || info.sha256 != f.sha256 {
            return Err(tampered(format!(
                "file {} of {} does not match its seal",
                f.name, release.id
            )));
        }
    }
    Ok(())
}

/// Steps 2–4 over sealed outputs: `None` when the release may be approved.
pub async fn recheck(
    store: &Store,
    policy: &Policy,
    release: &ReleaseRequest,
    app: Option<&Application>,
    outputs: &[Output],
    today: NaiveDate,
) -> Result<Option<Invalidation>, StoreError> {
    if let Some(why) = authorised(store, policy, release, today).await? {
        return Ok(Some(why));
    }
    let k_now = app.and_then(|a| a.approval.as_ref()).map(|a| a.k);
    for o in outputs {
        if o.snapshot.mode != "suppression" {
            continue;
        }
        if k_now.is_some_and(|k| k > o.internal.k) {
            return Ok(Some(invalid(
                "release_rules_changed",
                format!(
                    "The approval of {} now asks for at least {} patients per cell, more than the {} this answer was checked at; run the query again under the new rule and request the new answer. / 承認条件の最小人数が変更されたため、この結果は審査できません。クエリを再実行して申請してください。",
                    release.application_id,
                    k_now.unwrap_or_default(),
                    o.internal.k
                ),
            )));
        }
        if let Some(why) = extract_and_ledger(store, release, o).await? {
            return Ok(Some(why));
        }
    }
    Ok(None)
}

/// The place of use was checked with the requester's address when the request was made
/// (`request.rs`); at the re-check the requester is not the caller (a reviewer is), so
/// the re-check stands at the approved place: an address inside its first network, or
/// unknown where the approval restricts none. The rest of the requester's standing
/// (named, approved, term, pledge, revocation) is checked as at the request.
async fn approved_place(store: &Store, app: &str) -> Result<Origin, StoreError> {
    let networks = store
        .application(app)
        .await?
        .and_then(|a| a.approval)
        .and_then(|a| a.networks);
    let first = networks
        .iter()
        .flatten()
        .find_map(|n| crate::policy::place::parse_network(n));
    Ok(Origin(first.map(|n| n.addr())))
}

/// Step 2: the requester may still request this release today.
async fn authorised(
    store: &Store,
    policy: &Policy,
    release: &ReleaseRequest,
    today: NaiveDate,
) -> Result<Option<Invalidation>, StoreError> {
    let cause = match store.user(&release.requester).await? {
        None => "the requester's account no longer exists".to_string(),
        Some(user) => {
            let app = &release.application_id;
            let origin = approved_place(store, app).await?;
            match policy
                .resolve(store, &user, app, Action::RequestRelease, today, origin)
                .await?
            {
                Ok(_) => return Ok(None),
                Err(d) => format!("{} ({})", d.message, d.code),
            }
        }
    };
    Ok(Some(invalid(
        "release_not_authorised",
        format!(
            "The requester may no longer release results of application {}: {cause}. Nothing can leave under this request. / 申請者はこの利用申請の結果を持ち出せなくなりました（取消・期間終了・使用者からの除外など）。この申請では何も持ち出せません。",
            release.application_id
        ),
    )))
}

/// Step 4 for one suppression output.
async fn extract_and_ledger(
    store: &Store,
    release: &ReleaseRequest,
    o: &Output,
) -> Result<Option<Invalidation>, StoreError> {
    let x = &o.internal;
    let changed = || {
        invalid(
            "release_extract_changed",
            format!(
                "The data of application {} was rebuilt or destroyed after {} was requested, so its cells can no longer be checked against the release ledger; run the query again and request the new answer. / 申請後に抽出データが再作成または消去されたため、{} は審査できません。クエリを再実行して申請してください。",
                release.application_id, o.snapshot.name, o.snapshot.name
            ),
        )
    };
    let live = store.extract(&release.application_id).await?;
    if !live.is_some_and(|l| l.destroyed_at.is_none() && l.extract_id == x.extract_id) {
        return Ok(Some(changed()));
    }
    let used: BTreeSet<u32> = x
        .cell_sets
        .iter()
        .flat_map(|(_, _, s)| s.iter().copied())
        .collect();
    let mut sets: Vec<(u32, RoaringBitmap)> = Vec::with_capacity(used.len());
    for i in used {
        let Some(sha) = x.set_hashes.get(i as usize) else {
            return Err(tampered(format!(
                "{} names a set it does not hold",
                o.snapshot.name
            )));
        };
        let Some(bytes) = store.ledger_set(&x.extract_id, sha).await? else {
            return Ok(Some(changed()));
        };
        let set = deserialise(&bytes).map_err(tampered)?;
        sets.push((i, set));
    }
    let sizes: Vec<u64> = sets.iter().map(|(_, s)| s.len()).collect();
    let mut near = Vec::new();
    for (lo, hi) in ranges(&sizes, x.k) {
        for bytes in store.ledger_sets(&x.extract_id, lo, hi).await? {
            near.push(deserialise(&bytes).map_err(tampered)?);
        }
    }
    let earlier = Earlier::new(near);
    let unsafe_sets: BTreeSet<u32> = sets
        .iter()
        .filter(|(_, s)| earlier.conflicts(s, x.k))
        .map(|(i, _)| *i)
        .collect();
    if unsafe_sets.is_empty() {
        return Ok(None);
    }
    let cells: Vec<String> = x
        .cell_sets
        .iter()
        .filter(|(_, _, s)| s.iter().any(|i| unsafe_sets.contains(i)))
        .map(|(r, c, _)| {
            let name = o
                .snapshot
                .columns
                .get(*c)
                .map_or("?", |col| col.name.as_str());
            format!("row {} column {name}", r + 1)
        })
        .collect();
    Ok(Some(invalid(
        "release_unsafe",
        format!(
            "Since this request, another result of application {} was released whose patients differ from those of {} ({}) by fewer than {} — publishing both would reveal a small group by subtraction (differencing). This request can no longer be approved; ask with groups that differ by at least k patients. / 申請後に公開された別の結果と患者が {} 人未満しか違わないセルがあり（{}：{}）、両方を公表すると差分で少人数の集団が判明するため、承認できません。",
            release.application_id,
            o.snapshot.name,
            cells.join("; "),
            x.k,
            x.k,
            o.snapshot.name,
            cells.join("; "),
        ),
    )))
}

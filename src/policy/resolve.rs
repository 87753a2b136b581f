//! Authorization stage, second half: from an application id (or a PMS standing scope id)
//! to the terms a query runs under — scope, disclosure mode, k, ε budget and DP bounds.
//!
//! Guarantees: every resolution passes the one enforcement point
//! ([`Policy::authorize`]) first; unknown application ids are refused exactly as an
//! application the caller is not named on (`not_named_user`), so ids of other studies
//! cannot be probed; PMS terms come from the disclosure rules (`policies/disclosure.toml`),
//! never from a literal; a mode other than the approved one is refused.

use chrono::{NaiveDate, Utc};

use super::facility::{FACILITY_PREFIX, facility_scope_id, facility_terms};
use super::place::Origin;
use super::{Action, Denial, Policy, Target};
use crate::privacy::result::{DisclosureMode, DpBounds};
use crate::sql::scope::Scope;
use crate::store::model::{Application, Approval, Role, Status, Term, User};
use crate::store::{Store, StoreError};

/// Prefix of PMS standing scope ids.
pub const PMS_PREFIX: &str = "PMS-";

/// What a query runs against once the caller is authorised.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Application id or PMS standing scope id.
    pub id: String,
    pub scope: Scope,
    pub mode: DisclosureMode,
    /// k for suppression (under DP: the release threshold).
    pub threshold: u32,
    pub epsilon_budget: Option<f64>,
    pub dp_bounds: Option<DpBounds>,
}

impl Grant {
    /// The terms an approval grants on application `id`.
    fn approved(id: &str, a: &Approval) -> Self {
        Grant {
            id: id.to_string(),
            scope: a.scope.clone(),
            mode: a.mode,
            threshold: a.k,
            epsilon_budget: a.epsilon_budget,
            dp_bounds: a.dp_bounds,
        }
    }
}

/// An application (or PMS standing scope) a user may query now.
#[derive(Debug, Clone)]
pub struct Usable {
    pub grant: Grant,
    pub title: String,
    pub term: Option<Term>,
}

/// The scope of a manufacturer's PMS standing access (seed 001): the regen dataset,
/// only patients treated with its own products.
pub fn pms_scope(manufacturer: &str) -> Scope {
    Scope {
        datasets: vec!["regen".into()],
        manufacturers: Some(vec![manufacturer.to_string()]),
        ..Default::default()
    }
}

/// The standing terms of a PMS scope: its scope, suppression, at `k` (the disclosure
/// rules' k for the regen dataset, see [`Policy::pms_terms`]).
pub fn pms_terms(manufacturer: &str, k: u32) -> (Scope, DisclosureMode, u32) {
    (pms_scope(manufacturer), DisclosureMode::Suppression, k)
}

impl Policy {
    /// The standing terms of a manufacturer's PMS scope, with this policy's k.
    pub fn pms_terms(&self, manufacturer: &str) -> (Scope, DisclosureMode, u32) {
        pms_terms(manufacturer, self.pms_threshold)
    }

    /// A standing scope (a PMS team's or a medical institution's) named by `id`: the
    /// target the enforcement point checks and the terms it grants.
    fn standing<'a>(&self, id: &'a str) -> Option<(Target<'a>, (Scope, DisclosureMode, u32))> {
        if let Some(m) = id.strip_prefix(PMS_PREFIX) {
            return Some((Target::Pms { scope_id: id }, self.pms_terms(m)));
        }
        // seeds (issue 16 §2)
        let f = id.strip_prefix(FACILITY_PREFIX)?;
        let terms = facility_terms(f, self.facility_threshold);
        Some((Target::Facility { scope_id: id }, terms))
    }

    /// Resolve and authorize `id` for `action` from `origin` (the caller's address, for
    /// the place of use): the grant, or the denial to report.
    pub async fn resolve(
        &self,
        store: &Store,
        user: &User,
        id: &str,
        action: Action,
        today: NaiveDate,
        origin: Origin,
    ) -> Result<Result<Grant, Denial>, StoreError> {
        if let Some((target, (scope, mode, threshold))) = self.standing(id) {
            if let Err(d) = self.authorize(user, action, &target, today).await {
                return Ok(Err(d));
            }
            return Ok(Ok(Grant {
                id: id.to_string(),
                scope,
                mode,
                threshold,
                epsilon_budget: None,
                dp_bounds: None,
            }));
        }
        let Some(app) = store.application(id).await? else {
            return Ok(Err(self.unknown_application(user, id, action, today).await));
        };
        let pledged = store.has_pledged(&app.id, &user.username).await?;
        let target = Target::Application {
            app: &app,
            pledged,
            origin,
        };
        if let Err(d) = self.authorize(user, action, &target, today).await {
            return Ok(Err(d));
        }
        let Some(a) = &app.approval else {
            return Ok(Err(no_approval()));
        };
        Ok(Ok(Grant::approved(&app.id, a)))
    }

    /// Everything `user` may query today from `origin`: their PMS or facility standing
    /// scope (if any) first, then each approved application they are named on and pass
    /// the enforcement point for.
    pub async fn usable(
        &self,
        store: &Store,
        user: &User,
        today: NaiveDate,
        origin: Origin,
    ) -> Result<Vec<Usable>, StoreError> {
        let mut out = Vec::new();
        if let (true, Some(m)) = (user.has(Role::Pms), &user.manufacturer) {
            let id = super::pms_scope_id(m);
            if let Ok(Ok(grant)) = self
                .resolve(store, user, &id, Action::Query, today, origin)
                .await
            {
                out.push(Usable {
                    title: format!("PMS standing scope of {m} / {m} の製造販売後調査"),
                    term: None,
                    grant,
                });
            }
        }
        // seeds (issue 16 §2): a medical institution's own patients
        if let (true, Some(f)) = (user.has(Role::Facility), &user.facility) {
            let id = facility_scope_id(f);
            if let Ok(Ok(grant)) = self
                .resolve(store, user, &id, Action::Query, today, origin)
                .await
            {
                out.push(Usable {
                    title: format!("Own patients of facility {f} / 自施設 {f} の患者"),
                    term: None,
                    grant,
                });
            }
        }
        for app in store.applications().await? {
            // Named on the approved form itself (not only on a pending change).
            let named = app
                .form
                .named_users
                .iter()
                .any(|n| n.username == user.username);
            if app.status != Status::Approved || !named {
                continue;
            }
            let pledged = store.has_pledged(&app.id, &user.username).await?;
            let target = Target::Application {
                app: &app,
                pledged,
                origin,
            };
            if self
                .authorize(user, Action::Query, &target, today)
                .await
                .is_err()
            {
                continue;
            }
            let Some(a) = &app.approval else { continue };
            out.push(Usable {
                title: app.form.title.clone(),
                term: Some(a.term),
                grant: Grant::approved(&app.id, a),
            });
        }
        Ok(out)
    }

    /// Run the enforcement point on a phantom draft, so role refusals (reviewer,
    /// auditor) still read `forbidden` and only a researcher sees `not_named_user`.
    async fn unknown_application(
        &self,
        user: &User,
        id: &str,
        action: Action,
        today: NaiveDate,
    ) -> Denial {
        let phantom = phantom_application(id);
        let target = Target::Application {
            app: &phantom,
            pledged: false,
            origin: Origin::UNKNOWN,
        };
        match self.authorize(user, action, &target, today).await {
            Err(d) => d,
            Ok(()) => no_approval(),
        }
    }
}

/// Refuse a mode other than the approved one; `None` asks for the approved mode.
pub fn check_mode(
    grant: &Grant,
    requested: Option<DisclosureMode>,
) -> Result<DisclosureMode, DisclosureMode> {
    let mode = requested.unwrap_or(grant.mode);
    if mode == grant.mode {
        Ok(mode)
    } else {
        Err(mode)
    }
}

fn no_approval() -> Denial {
    Denial {
        code: "not_approved",
        message: "This application has no approval on record. / 承認記録がありません。".into(),
    }
}

fn phantom_application(id: &str) -> Application {
    Application {
        id: id.to_string(),
        status: Status::Draft,
        applicant: String::new(),
        form: Default::default(),
        approval: None,
        pending_change: None,
        revoked_reason: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

//! Operator endpoints (issue 17 §4), for the data custodian (role `admin`): user accounts
//! (list, add, disable / enable, reset the password, change roles), the ingested registry,
//! each application's extract (status, rebuild, destroy) and the keys' fingerprints.
//!
//! Guarantees: every endpoint passes the one enforcement point ([`Policy::authorize`],
//! `manage_users` for accounts, `operate` for data) and a refusal is audited; every change
//! is written with its audit event in one transaction by the store (`user.*`,
//! `extract.build`, `extract.destroy`), every read as `admin.read`; every text field has a
//! length limit and bad input gets a bilingual `invalid_request` naming the field; the last
//! enabled operator cannot be disabled or demoted (`last_admin`); an extract is rebuilt only
//! for an approval in force or a PMS standing scope, never for an ended one (fail closed);
//! keys are shown only as fingerprints; a temporary password is returned once and never stored
//! in clear.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::session::AuthUser;
use crate::audit::AuditEvent;
use crate::policy::workflow::FieldError;
use crate::policy::{Action, PMS_PREFIX, Target, pms_scope};
use crate::query::plane::RegistryStatus;
use crate::sql::scope::Scope;
use crate::store::StoreError;
use crate::store::model::{ExtractInfo, NewUser, Role, Status, User};

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Longest user name, and the longest free-text field (name, affiliation, title, reason).
pub const MAX_USERNAME: usize = 64;
pub const MAX_TEXT: usize = 200;
pub const MAX_REASON: usize = 500;
pub const MAX_MANUFACTURER: usize = 16;

async fn authorize(
    st: &AppState,
    who: &AuthUser,
    action: Action,
    name: &str,
) -> Result<(), ApiError> {
    match st
        .policy
        .authorize(&who.user, action, &Target::None, st.today())
        .await
    {
        Ok(()) => Ok(()),
        Err(d) => {
            let e = super::denied::denied(st, &who.user, name, None, &d, json!({}));
            Err(e.await)
        }
    }
}

async fn read_event(st: &AppState, who: &AuthUser, view: &str) -> Result<(), ApiError> {
    let ev = AuditEvent::ok(
        &who.user.username,
        "admin.read",
        None,
        json!({"view": view}),
    );
    st.store.record(&ev).await?;
    Ok(())
}

fn invalid(fields: Vec<FieldError>) -> ApiError {
    let mut e = ApiError::bad_request(
        "invalid_request",
        "Some fields are not valid; see `fields` for each and its fix. / 入力内容に誤りがあります（fields を参照）。",
    );
    e.fields = fields;
    e
}

fn fe(field: &str, en: &str, ja: &str) -> FieldError {
    FieldError {
        field: field.into(),
        message: format!("{en} / {ja}"),
    }
}

/// The roles this build knows, by their API names (new roles appear without a change here).
fn known_roles() -> Vec<&'static str> {
    [
        "researcher",
        "reviewer",
        "auditor",
        "pms",
        "admin",
        "facility",
    ]
    .into_iter()
    .filter(|r| Role::parse(r).is_some())
    .collect()
}

/// An account as the operator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub username: String,
    pub display_name: String,
    pub affiliation: String,
    pub title: String,
    pub roles: Vec<String>,
    pub manufacturer: Option<String>,
    pub disabled: bool,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            roles: u.roles.iter().map(|r| r.as_str().to_string()).collect(),
            username: u.username,
            display_name: u.display_name,
            affiliation: u.affiliation,
            title: u.title,
            manufacturer: u.manufacturer,
            disabled: u.disabled,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
    /// The role names an account can be given.
    pub roles: Vec<String>,
}

/// Every account, with the roles that can be given.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin",
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)))]
pub async fn users(State(st): State<AppState>, who: AuthUser) -> Result<Json<UserList>, ApiError> {
    authorize(&st, &who, Action::ManageUsers, "admin.users").await?;
    let users = st
        .store
        .users()
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    read_event(&st, &who, "users").await?;
    Ok(Json(UserList {
        users,
        roles: known_roles().into_iter().map(String::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUserRequest {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub affiliation: String,
    #[serde(default)]
    pub title: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub manufacturer: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewUserResponse {
    pub user: UserView,
    /// Shown once: hand it to the person over a safe channel; they should change it.
    pub temporary_password: String,
}

fn check_username(u: &str, out: &mut Vec<FieldError>) {
    let ok = (2..=MAX_USERNAME).contains(&u.len())
        && u.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok {
        out.push(fe(
            "username",
            &format!("use 2 to {MAX_USERNAME} lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"),
            &format!("ユーザー名は英小文字・数字・「.」「_」「-」で 2〜{MAX_USERNAME} 文字（先頭は英小文字か数字）にしてください"),
        ));
    }
}

fn check_text(field: &str, v: &str, max: usize, out: &mut Vec<FieldError>) {
    if v.chars().count() > max || v.chars().any(char::is_control) {
        out.push(fe(
            field,
            &format!("at most {max} characters, without control characters"),
            &format!("{max} 文字以内で、制御文字を含めないでください"),
        ));
    }
}

/// Roles and manufacturer: known roles, at least one, no duplicates; a manufacturer code
/// exactly when the account is a PMS team.
fn check_roles(
    roles: &[String],
    manufacturer: Option<&str>,
    out: &mut Vec<FieldError>,
) -> (Vec<Role>, Option<String>) {
    let mut parsed = Vec::new();
    for r in roles {
        match Role::parse(r) {
            Some(role) if !parsed.contains(&role) => parsed.push(role),
            Some(_) => {}
            None => out.push(fe(
                "roles",
                &format!("unknown role; use one of {}", known_roles().join(", ")),
                "不明な役割です",
            )),
        }
    }
    if parsed.is_empty() {
        out.push(fe(
            "roles",
            "give at least one role",
            "役割を 1 つ以上選んでください",
        ));
    }
    let m = manufacturer.map(str::trim).filter(|m| !m.is_empty());
    let pms = parsed.contains(&Role::Pms);
    match m {
        Some(code)
            if !pms
                || code.len() > MAX_MANUFACTURER
                || !code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) =>
        {
            out.push(fe(
                "manufacturer",
                &format!("only PMS team accounts have a manufacturer code: upper-case letters and digits, at most {MAX_MANUFACTURER}"),
                &format!("製造販売業者コードは製造販売後調査担当のみ（英大文字・数字 {MAX_MANUFACTURER} 文字以内）です"),
            ))
        }
        None if pms => out.push(fe(
            "manufacturer",
            "a PMS team account needs its manufacturer code (e.g. M01)",
            "製造販売後調査担当には製造販売業者コード（例: M01）が必要です",
        )),
        _ => {}
    }
    (parsed, m.map(String::from))
}

fn temporary_password() -> Result<String, ApiError> {
    Ok(crate::auth::random_hex(12)?)
}

/// Add an account with a temporary password.
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", request_body = NewUserRequest,
    responses((status = 201, body = NewUserResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_user(
    State(st): State<AppState>,
    who: AuthUser,
    body: JsonBody<NewUserRequest>,
) -> Result<(StatusCode, Json<NewUserResponse>), ApiError> {
    authorize(&st, &who, Action::ManageUsers, "admin.user_create").await?;
    let Json(req) = body?;
    let mut problems = Vec::new();
    check_username(&req.username, &mut problems);
    check_text("display_name", &req.display_name, MAX_TEXT, &mut problems);
    check_text("affiliation", &req.affiliation, MAX_TEXT, &mut problems);
    check_text("title", &req.title, MAX_TEXT, &mut problems);
    let (roles, manufacturer) = check_roles(&req.roles, req.manufacturer.as_deref(), &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let password = temporary_password()?;
    let new = NewUser {
        username: req.username.clone(),
        password_hash: crate::auth::hash_password(&password)?,
        roles,
        manufacturer,
        display_name: req.display_name.trim().into(),
        affiliation: req.affiliation.trim().into(),
        title: req.title.trim().into(),
    };
    let user = match st.store.create_user(&new, &who.user.username).await {
        Ok(u) => u,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::conflict(
                "user_exists",
                "An account with this user name exists; pick another name. / このユーザー名はすでに使われています。",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    st.policy.reload(&st.store).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewUserResponse {
            user: user.into(),
            temporary_password: password,
        }),
    ))
}

async fn existing(st: &AppState, username: &str) -> Result<User, ApiError> {
    if username.len() > MAX_USERNAME {
        return Err(ApiError::not_found("user"));
    }
    st.store
        .user(username)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// Refuse a change that would leave no enabled operator: disabling `username` or taking its
/// admin role (`keeps_admin` false) when it is the last enabled admin.
async fn keep_an_admin(st: &AppState, target: &User, keeps_admin: bool) -> Result<(), ApiError> {
    if keeps_admin || target.disabled || !target.has(Role::Admin) {
        return Ok(());
    }
    let others = st
        .store
        .users()
        .await?
        .into_iter()
        .filter(|u| u.username != target.username && !u.disabled && u.has(Role::Admin))
        .count();
    if others == 0 {
        return Err(ApiError::conflict(
            "last_admin",
            "This is the last enabled operator account: add or enable another operator first. / 最後の運用担当者は停止・降格できません。先に別の運用担当者を登録してください。",
        ));
    }
    Ok(())
}

async fn set_disabled(
    st: &AppState,
    who: &AuthUser,
    username: &str,
    disabled: bool,
) -> Result<Json<UserView>, ApiError> {
    let name = if disabled {
        "admin.user_disable"
    } else {
        "admin.user_enable"
    };
    authorize(st, who, Action::ManageUsers, name).await?;
    let target = existing(st, username).await?;
    if disabled {
        keep_an_admin(st, &target, false).await?;
    }
    st.store
        .set_disabled(username, disabled, &who.user.username)
        .await?;
    st.policy.reload(&st.store).await?;
    Ok(Json(existing(st, username).await?.into()))
}

/// Disable an account; its sessions end at once.
#[utoipa::path(post, path = "/api/v1/admin/users/{username}/disable", tag = "admin", params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn disable_user(
    State(st): State<AppState>,
    who: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    set_disabled(&st, &who, &username, true).await
}

/// Enable a disabled account.
#[utoipa::path(post, path = "/api/v1/admin/users/{username}/enable", tag = "admin", params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn enable_user(
    State(st): State<AppState>,
    who: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    set_disabled(&st, &who, &username, false).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordReset {
    pub username: String,
    /// Shown once; the account's sessions and lockout were cleared.
    pub temporary_password: String,
}

/// Reset a password to a new temporary one; sessions end and the lockout is cleared.
#[utoipa::path(post, path = "/api/v1/admin/users/{username}/password", tag = "admin", params(("username" = String, Path)),
    responses((status = 200, body = PasswordReset), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reset_password(
    State(st): State<AppState>,
    who: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<PasswordReset>, ApiError> {
    authorize(&st, &who, Action::ManageUsers, "admin.user_reset_password").await?;
    existing(&st, &username).await?;
    let password = temporary_password()?;
    let hash = crate::auth::hash_password(&password)?;
    st.store
        .set_password(&username, &hash, &who.user.username)
        .await?;
    Ok(Json(PasswordReset {
        username,
        temporary_password: password,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RolesRequest {
    pub roles: Vec<String>,
    /// Required with the `pms` role; otherwise omitted.
    #[serde(default)]
    pub manufacturer: Option<String>,
}

/// Replace an account's roles; its sessions end so no session keeps the old roles.
#[utoipa::path(put, path = "/api/v1/admin/users/{username}/roles", tag = "admin", params(("username" = String, Path)), request_body = RolesRequest,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_roles(
    State(st): State<AppState>,
    who: AuthUser,
    Path(username): Path<String>,
    body: JsonBody<RolesRequest>,
) -> Result<Json<UserView>, ApiError> {
    authorize(&st, &who, Action::ManageUsers, "admin.user_roles").await?;
    let Json(req) = body?;
    let target = existing(&st, &username).await?;
    let mut problems = Vec::new();
    // A PMS team keeps its manufacturer code unless a new one is given.
    let manufacturer = if req.roles.iter().any(|r| r == "pms") {
        req.manufacturer.clone().or(target.manufacturer.clone())
    } else {
        req.manufacturer.clone()
    };
    let (roles, manufacturer) = check_roles(&req.roles, manufacturer.as_deref(), &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    keep_an_admin(&st, &target, roles.contains(&Role::Admin)).await?;
    let user = st
        .store
        .set_roles(
            &username,
            &roles,
            manufacturer.as_deref(),
            &who.user.username,
        )
        .await?;
    st.policy.reload(&st.store).await?;
    Ok(Json(user.into()))
}

// ---- data: registry, extracts, keys

/// The ingested registry: tables and row counts, manifest hash, pseudonymisation key fingerprint.
#[utoipa::path(get, path = "/api/v1/admin/datasets", tag = "admin",
    responses((status = 200, body = RegistryStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn datasets(
    State(st): State<AppState>,
    who: AuthUser,
) -> Result<Json<RegistryStatus>, ApiError> {
    authorize(&st, &who, Action::Operate, "admin.datasets").await?;
    let status = st.data.registry_status().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No ingested registry is readable on this server; run `kura ingest`. / 取込済みのデータがありません。",
        )
    })?;
    read_event(&st, &who, "datasets").await?;
    Ok(Json(status))
}

/// An application's extract as the operator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExtractView {
    pub application: String,
    pub extract_id: String,
    pub built_at: chrono::DateTime<chrono::Utc>,
    pub destroyed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Built from the current registry with the current scope and key (`null`: unknown).
    pub current: Option<bool>,
}

async fn view_of(st: &AppState, x: ExtractInfo) -> ExtractView {
    let current = if x.destroyed_at.is_some() {
        Some(false)
    } else {
        match scope_of(st, &x.application_id).await {
            Ok(scope) => {
                st.data
                    .extract_is_current(&x.application_id, std::path::Path::new(&x.path), &scope)
            }
            Err(_) => None,
        }
    };
    ExtractView {
        application: x.application_id,
        extract_id: x.extract_id,
        built_at: x.built_at,
        destroyed_at: x.destroyed_at,
        current,
    }
}

/// Every application's extract with its status.
#[utoipa::path(get, path = "/api/v1/admin/extracts", tag = "admin",
    responses((status = 200, body = Vec<ExtractView>), (status = 403, body = ErrorBody)))]
pub async fn extracts(
    State(st): State<AppState>,
    who: AuthUser,
) -> Result<Json<Vec<ExtractView>>, ApiError> {
    authorize(&st, &who, Action::Operate, "admin.extracts").await?;
    let mut out = Vec::new();
    for x in st.store.extracts().await? {
        out.push(view_of(&st, x).await);
    }
    read_event(&st, &who, "extracts").await?;
    Ok(Json(out))
}

/// The scope an extract may be (re)built for: an approval in force, or a PMS standing scope.
/// Anything else (ended, revoked, unknown) is refused: its derived records are to be destroyed.
async fn scope_of(st: &AppState, id: &str) -> Result<Scope, ApiError> {
    if let Some(m) = id.strip_prefix(PMS_PREFIX) {
        let known = st
            .store
            .users()
            .await?
            .iter()
            .any(|u| u.manufacturer.as_deref() == Some(m));
        if known {
            return Ok(pms_scope(m));
        }
        return Err(ApiError::not_found("extract"));
    }
    let app = st
        .store
        .application(id)
        .await?
        .ok_or_else(|| ApiError::not_found("extract"))?;
    match (&app.approval, app.effective_status(st.today())) {
        (Some(a), Status::Approved) => Ok(a.scope.clone()),
        _ => Err(ApiError::conflict(
            "invalid_transition",
            "Only the extract of an approval in force can be rebuilt; an ended or revoked approval's records are destroyed, not rebuilt. / 承認期間中の申請の抽出データだけを再作成できます。",
        )),
    }
}

fn extract_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Rebuild an extract from the current registry (for an approval in force or a PMS scope).
#[utoipa::path(post, path = "/api/v1/admin/extracts/{id}/rebuild", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = ExtractView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn rebuild_extract(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ExtractView>, ApiError> {
    authorize(&st, &who, Action::Operate, "admin.extract_rebuild").await?;
    if !extract_id_ok(&id) {
        return Err(ApiError::not_found("extract"));
    }
    let scope = scope_of(&st, &id).await?;
    super::applications::build_extract(&st, &id, &scope, &who.user.username).await?;
    let x = st
        .store
        .extract(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("extract"))?;
    Ok(Json(view_of(&st, x).await))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DestroyRequest {
    /// Why (recorded in the audit log), 1 to 500 characters.
    pub reason: String,
}

/// Destroy an extract's files and record it; queries on it fail until it is rebuilt.
#[utoipa::path(post, path = "/api/v1/admin/extracts/{id}/destroy", tag = "admin", params(("id" = String, Path)), request_body = DestroyRequest,
    responses((status = 200, body = ExtractView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn destroy_extract(
    State(st): State<AppState>,
    who: AuthUser,
    Path(id): Path<String>,
    body: JsonBody<DestroyRequest>,
) -> Result<Json<ExtractView>, ApiError> {
    authorize(&st, &who, Action::Operate, "admin.extract_destroy").await?;
    let Json(req) = body?;
    let reason = req.reason.trim();
    let mut problems = Vec::new();
    if reason.is_empty() {
        problems.push(fe(
            "reason",
            "say why the extract is destroyed",
            "消去の理由を記入してください",
        ));
    }
    check_text("reason", reason, MAX_REASON, &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    if !extract_id_ok(&id) {
        return Err(ApiError::not_found("extract"));
    }
    let x = st
        .store
        .extract(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("extract"))?;
    if x.destroyed_at.is_none() {
        // Files first, then the record: the log never claims a destruction that did not happen.
        match std::fs::remove_dir_all(&x.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ApiError::internal(&format!(
                    "removing the extract failed: {e}"
                )));
            }
        }
        st.store
            .extract_destroyed(&id, &who.user.username, reason)
            .await?;
    }
    let x = st
        .store
        .extract(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("extract"))?;
    Ok(Json(view_of(&st, x).await))
}

/// One key's fingerprint (never the key).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyFingerprint {
    /// `pseudonym` (ingest), `extract` (per-application pseudonyms) or `audit` (HMAC chain).
    pub name: String,
    pub fingerprint: Option<String>,
}

/// Fingerprints of the pseudonymisation, extract and audit keys.
#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "admin",
    responses((status = 200, body = Vec<KeyFingerprint>), (status = 403, body = ErrorBody)))]
pub async fn keys(
    State(st): State<AppState>,
    who: AuthUser,
) -> Result<Json<Vec<KeyFingerprint>>, ApiError> {
    authorize(&st, &who, Action::Operate, "admin.keys").await?;
    let out = vec![
        KeyFingerprint {
            name: "pseudonym".into(),
            fingerprint: st.data.registry_status().map(|r| r.key_fingerprint),
        },
        KeyFingerprint {
            name: "extract".into(),
            fingerprint: st.data.extract_key_fingerprint(),
        },
        KeyFingerprint {
            name: "audit".into(),
            fingerprint: Some(st.store.audit_key_fingerprint()),
        },
    ];
    read_event(&st, &who, "keys").await?;
    Ok(Json(out))
}

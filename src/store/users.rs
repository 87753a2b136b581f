//! Store, accounts: creation, lookup, enabling and password resets.
//!
//! Guarantees: usernames are unique (a second creation is a conflict and writes no
//! audit event); disabling an account or replacing its password revokes its live
//! sessions in the same audited transaction, so no old session outlives the change.

use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::model::{NewUser, Role, User};
use super::sessions::{clear_login_attempts, revoke_user_sessions};
use super::{Result, Store, StoreError, exec, now, ts};
use crate::audit::AuditEvent;

impl Store {
    pub(super) fn user_from_row(r: &AnyRow) -> Result<User> {
        let roles: Vec<String> = serde_json::from_str(&r.try_get::<String, _>("roles")?)?;
        Ok(User {
            username: r.try_get("username")?,
            roles: roles.iter().filter_map(|s| Role::parse(s)).collect(),
            manufacturer: r.try_get("manufacturer")?,
            facility: r.try_get("facility")?,
            display_name: r.try_get("display_name")?,
            affiliation: r.try_get("affiliation")?,
            title: r.try_get("title")?,
            disabled: r.try_get::<i64, _>("disabled")? != 0,
            execution_errors: r.try_get("execution_errors")?,
        })
    }

    /// Create an account.
    pub async fn create_user(&self, u: &NewUser, actor: &str) -> Result<User> {
        let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
        let event = AuditEvent::ok(
            actor,
            "user.create",
            None,
            json!({"username": u.username, "roles": roles, "manufacturer": u.manufacturer}),
        );
        self.audited(&event, async |tx| {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE username = $1")
                .bind(&u.username)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!(
                    "user `{}` already exists",
                    u.username
                )));
            }
            let insert = sqlx::query(
                "INSERT INTO users (username, password_hash, roles, manufacturer, display_name, affiliation, title, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&u.username)
            .bind(&u.password_hash)
            .bind(serde_json::to_string(&roles)?)
            .bind(&u.manufacturer)
            .bind(&u.display_name)
            .bind(&u.affiliation)
            .bind(&u.title)
            .bind(ts(now()));
            exec(tx, insert).await
        })
        .await?;
        self.user(&u.username)
            .await?
            .ok_or_else(|| StoreError::NotFound("user".into()))
    }

    pub async fn user(&self, username: &str) -> Result<Option<User>> {
        Ok(self.user_with_hash(username).await?.map(|(user, _)| user))
    }

    /// The account and its password hash, for login.
    pub async fn user_with_hash(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        match row {
            Some(r) => Ok(Some((
                Self::user_from_row(&r)?,
                r.try_get("password_hash")?,
            ))),
            None => Ok(None),
        }
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(Self::user_from_row).collect()
    }

    /// Enable or disable an account; disabling also revokes its sessions.
    pub async fn set_disabled(&self, username: &str, disabled: bool, actor: &str) -> Result<()> {
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        let event = AuditEvent::ok(actor, action, None, json!({"username": username}));
        self.audited(&event, async |tx| {
            let set = sqlx::query("UPDATE users SET disabled = $1 WHERE username = $2")
                .bind(disabled as i64)
                .bind(username);
            if exec(tx, set).await? == 0 {
                return Err(StoreError::NotFound(format!("user `{username}`")));
            }
            if disabled {
                revoke_user_sessions(tx, username).await?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Replace a password hash, clear the lockout and revoke existing sessions.
    pub async fn set_password(&self, username: &str, hash: &str, actor: &str) -> Result<()> {
        let event = AuditEvent::ok(
            actor,
            "user.reset_password",
            None,
            json!({"username": username}),
        );
        self.audited(&event, async |tx| {
            let set = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
                .bind(hash)
                .bind(username);
            if exec(tx, set).await? == 0 {
                return Err(StoreError::NotFound(format!("user `{username}`")));
            }
            clear_login_attempts(tx, username).await?;
            revoke_user_sessions(tx, username).await
        })
        .await?;
        Ok(())
    }

    /// Replace an account's roles (and manufacturer, for PMS teams); its live sessions are
    /// revoked in the same audited transaction, so no session keeps the old roles.
    pub async fn set_roles(
        &self,
        username: &str,
        roles: &[Role],
        manufacturer: Option<&str>,
        actor: &str,
    ) -> Result<User> {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let event = AuditEvent::ok(
            actor,
            "user.roles",
            None,
            json!({"username": username, "roles": names, "manufacturer": manufacturer}),
        );
        self.audited(&event, async |tx| {
            let set =
                sqlx::query("UPDATE users SET roles = $1, manufacturer = $2 WHERE username = $3")
                    .bind(serde_json::to_string(&names)?)
                    .bind(manufacturer)
                    .bind(username);
            if exec(tx, set).await? == 0 {
                return Err(StoreError::NotFound(format!("user `{username}`")));
            }
            revoke_user_sessions(tx, username).await
        })
        .await?;
        self.user(username)
            .await?
            .ok_or_else(|| StoreError::NotFound("user".into()))
    }
}

//! Store, accounts: creation, lookup, enabling and password resets.
//!
//! Guarantees: usernames are unique (a second creation is a conflict and writes no
//! audit event); disabling an account or replacing its password revokes its live
//! sessions in the same audited transaction, so no old session outlives the change.

use serde_json::json;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::model::{NewUser, Role, User};
use super::{Result, Store, StoreError, now, ts};
use crate::audit::AuditEvent;

impl Store {
    pub(super) fn user_from_row(r: &SqliteRow) -> Result<User> {
        let roles: Vec<String> = serde_json::from_str(&r.try_get::<String, _>("roles")?)?;
        Ok(User {
            username: r.try_get("username")?,
            roles: roles.iter().filter_map(|s| Role::parse(s)).collect(),
            manufacturer: r.try_get("manufacturer")?,
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
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE username = ?")
                .bind(&u.username)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!(
                    "user `{}` already exists",
                    u.username
                )));
            }
            sqlx::query(
                "INSERT INTO users (username, password_hash, roles, manufacturer, display_name, affiliation, title, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&u.username)
            .bind(&u.password_hash)
            .bind(serde_json::to_string(&roles)?)
            .bind(&u.manufacturer)
            .bind(&u.display_name)
            .bind(&u.affiliation)
            .bind(&u.title)
            .bind(ts(now()))
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await?;
        self.user(&u.username)
            .await?
            .ok_or_else(|| StoreError::NotFound("user".into()))
    }

    pub async fn user(&self, username: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::user_from_row).transpose()
    }

    /// The account and its password hash, for login.
    pub async fn user_with_hash(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
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
            .fetch_all(&self.pool)
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
            let n = sqlx::query("UPDATE users SET disabled = ? WHERE username = ?")
                .bind(disabled as i64)
                .bind(username)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound(format!("user `{username}`")));
            }
            if disabled {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL",
                )
                .bind(ts(now()))
                .bind(username)
                .execute(&mut *tx)
                .await?;
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
            let n = sqlx::query("UPDATE users SET password_hash = ? WHERE username = ?")
                .bind(hash)
                .bind(username)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound(format!("user `{username}`")));
            }
            sqlx::query("DELETE FROM login_attempts WHERE username = ?")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE sessions SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL",
            )
            .bind(ts(now()))
            .bind(username)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::StoreError;
    use crate::store::tests::{new_user, store};

    #[tokio::test]
    async fn duplicate_user_is_a_conflict_and_writes_no_audit() {
        let (_d, s) = store().await;
        s.create_user(&new_user("alice"), "admin").await.unwrap();
        assert!(matches!(
            s.create_user(&new_user("alice"), "admin").await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.verify_audit().await.unwrap().events, 1);
    }
}

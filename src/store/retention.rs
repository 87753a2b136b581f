//! Extract retention: once an approval has ended (expired, revoked or withdrawn), its extract is
//! already unusable (every query checks status and term); after the retention period the
//! files are destroyed and the destruction is logged (要綱 第3章 5: derived records are
//! destroyed at the end of use).
//!
//! Guarantees: the files are removed before the destruction is logged (through
//! `Store::extract_destroyed`, audited), so the log never claims a destruction that did
//! not happen; a removal that fails is left for the next sweep.

use chrono::NaiveDate;

use super::model::Status;
use super::{Store, StoreError};

/// Destroy the extracts whose approval ended more than `retention_days` before `today`.
/// Returns the application ids whose extracts were destroyed.
pub async fn sweep(
    store: &Store,
    retention_days: i64,
    today: NaiveDate,
) -> Result<Vec<String>, StoreError> {
    let mut done = Vec::new();
    for app in store.applications().await? {
        let ended = match app.effective_status(today) {
            Status::Expired => app.approval.as_ref().map(|a| a.term.end),
            Status::Revoked | Status::Withdrawn => Some(app.updated_at.date_naive()),
            _ => None,
        };
        let Some(ended) = ended else { continue };
        if (today - ended).num_days() <= retention_days {
            continue;
        }
        let Some(x) = store.extract(&app.id).await? else {
            continue;
        };
        if x.destroyed_at.is_some() {
            continue;
        }
        match std::fs::remove_dir_all(&x.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(application = %app.id, error = %e, "cannot remove extract; will retry");
                continue;
            }
        }
        let reason = format!("retention of {retention_days} days after {ended} elapsed");
        store
            .extract_destroyed(&app.id, "system:retention", &reason)
            .await?;
        done.push(app.id);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;
    use crate::privacy::result::DisclosureMode;
    use crate::sql::scope::Scope;
    use crate::store::model::*;
    use crate::store::tests::{events, new_user, store};
    use chrono::Utc;

    #[tokio::test]
    async fn expired_extracts_are_destroyed_after_retention_and_logged() {
        let (dir, store) = store().await;
        store.create_user(&new_user("r"), "t").await.unwrap();
        let app = store
            .create_application(Some("A-1"), "r", &ApplicationForm::default())
            .await
            .unwrap();
        let mut next = app.clone();
        next.status = Status::Approved;
        let end = NaiveDate::from_ymd_opt(2025, 3, 31).unwrap();
        next.approval = Some(Approval {
            term: Term {
                start: NaiveDate::from_ymd_opt(2024, 4, 1).unwrap(),
                end,
            },
            scope: Scope::default(),
            mode: DisclosureMode::Suppression,
            k: 5,
            epsilon_budget: None,
            dp_bounds: None,
            approved_by: "rev".into(),
            approved_at: Utc::now(),
            networks: None,
            published: None,
        });
        let ev = AuditEvent::ok(
            "rev",
            "application.approve",
            Some("A-1"),
            serde_json::json!({}),
        );
        store
            .transition(
                &next,
                app.updated_at,
                Status::Submitted,
                "approve",
                None,
                &ev,
            )
            .await
            .unwrap();
        let path = dir.path().join("x1");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("patient.parquet"), b"data").unwrap();
        store
            .set_extract("A-1", "x1", &path.to_string_lossy(), "t")
            .await
            .unwrap();

        // Inside the retention period nothing happens.
        let within = end + chrono::Duration::days(30);
        assert!(sweep(&store, 30, within).await.unwrap().is_empty());
        assert!(path.exists());
        let after = end + chrono::Duration::days(31);
        assert_eq!(
            sweep(&store, 30, after).await.unwrap(),
            vec!["A-1".to_string()]
        );
        assert!(!path.exists());
        assert!(
            store
                .extract("A-1")
                .await
                .unwrap()
                .unwrap()
                .destroyed_at
                .is_some()
        );
        assert_eq!(events(&store, "extract.destroy").await.len(), 1);
        // Idempotent.
        assert!(sweep(&store, 30, after).await.unwrap().is_empty());
    }
}

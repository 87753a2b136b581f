//! The output airlock, the checkers: who may check a release request and how many
//! distinct reviewers must approve it (OpenSAFELY's two independent output checkers).
//!
//! Guarantees: a reviewer never checks a request they made, nor one of an application on
//! which they are the applicant or a named user (in force or in a pending change), and
//! this is decided from the application as it is now; the number of approvals a request
//! needs is the larger of what its approval said when it was requested and what it says
//! now (a reviewer who raises it to two binds the requests already waiting); an approval
//! completes the request only when that many distinct reviewers approved.

use crate::store::model::{Application, ReleaseRequest, Role, User};

/// Whether `reviewer` may not check `release` for a conflict of interest.
pub fn conflicted(reviewer: &str, release: &ReleaseRequest, app: Option<&Application>) -> bool {
    release.requester == reviewer
        || app.is_some_and(|a| a.applicant == reviewer || a.is_named(reviewer))
}

/// Whether `user` is a reviewer who may check `release`.
pub fn may_check(user: &User, release: &ReleaseRequest, app: Option<&Application>) -> bool {
    user.has(Role::Reviewer) && !conflicted(&user.username, release, app)
}

/// The approvals `release` needs, given its application as it is now.
pub fn required(release: &ReleaseRequest, app: Option<&Application>) -> u8 {
    let now = app
        .and_then(|a| a.approval.as_ref())
        .map_or(1, |a| a.release_checkers());
    release.checkers_required.max(now).clamp(1, 2)
}

/// What one more approval does to a request that has `approvals` of `required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Recorded; the request waits for another, distinct reviewer.
    Recorded { approvals: u8, required: u8 },
    /// The last approval needed: the request is approved and its files can leave.
    Completes,
}

pub fn step(approvals: u8, required: u8) -> Step {
    if approvals.saturating_add(1) >= required {
        Step::Completes
    } else {
        Step::Recorded {
            approvals: approvals + 1,
            required,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_approval_of_two_is_recorded_and_the_second_completes() {
        assert_eq!(
            step(0, 2),
            Step::Recorded {
                approvals: 1,
                required: 2
            }
        );
        assert_eq!(step(1, 2), Step::Completes);
        assert_eq!(step(0, 1), Step::Completes);
    }
}

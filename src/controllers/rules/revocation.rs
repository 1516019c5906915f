//! Revocation: when what a grant produced goes once the grant goes, and how a workspace assignment above a grant
//! is brought back within it. Pure functions of what a pass read.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{DatabricksAccountSpec, WorkspacePermission, parse_duration};

/// The account's grace before a revoked federation policy or app integration is deleted.
pub fn grace(spec: &DatabricksAccountSpec) -> Duration {
    parse_duration(&spec.revocation.grace_period).unwrap_or(Duration::from_secs(60))
}

/// When the removal of something revoked at `since` (first seen now when unset) is due: `None` when it is due now.
pub fn due(since: Option<Timestamp>, now: Timestamp, grace: Duration) -> Option<Timestamp> {
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    let at = since.unwrap_or(now).checked_add(grace).unwrap_or(Timestamp::MAX);
    (at > now).then_some(at)
}

/// How long from `now` until `at`, at least a second (a wake-up).
pub fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or_default().max(Duration::from_secs(1))
}

/// What becomes of an assignment of `held` once the grant is `granted` in that workspace: kept (`None`), lowered
/// to USER (`Some(Some(User))`), or removed (`Some(None)`).
pub fn assignment_change(
    held: WorkspacePermission,
    granted: Option<WorkspacePermission>,
) -> Option<Option<WorkspacePermission>> {
    match granted {
        Some(granted) if held <= granted => None,
        Some(granted) => Some(Some(granted)),
        None => Some(None),
    }
}

/// What one pass's revocation did and has yet to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub notes: Vec<String>,
    /// The next removal that is not due yet.
    pub next: Option<Timestamp>,
}

impl Outcome {
    /// Something removed now.
    pub fn done(&mut self, note: String) {
        if !note.is_empty() {
            self.notes.push(note);
        }
    }

    /// Something removed at `at`.
    pub fn later(&mut self, at: Timestamp, note: String) {
        self.notes.push(note);
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// The sentences for a condition.
    pub fn message(&self) -> String {
        self.notes.join("; ")
    }

    /// How long until the next removal is due.
    pub fn wake(&self, now: Timestamp) -> Option<Duration> {
        self.next.map(|at| until(at, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkspacePermission::{Admin, User};

    #[test]
    fn a_revoked_object_goes_after_the_grace_measured_from_when_it_was_first_seen() {
        let now: Timestamp = "2026-11-30T12:00:00Z".parse().expect("time");
        let minute = Duration::from_secs(60);
        assert_eq!(
            due(None, now, minute),
            Some("2026-11-30T12:01:00Z".parse().expect("time")),
            "first seen now"
        );
        let since = "2026-11-30T11:59:30Z".parse().expect("time");
        assert_eq!(due(Some(since), now, minute), Some("2026-11-30T12:00:30Z".parse().expect("time")));
        assert_eq!(due(Some("2026-11-30T11:59:00Z".parse().expect("time")), now, minute), None, "due now");
        assert_eq!(due(None, now, Duration::ZERO), None, "no grace");
        assert_eq!(until(now, now), Duration::from_secs(1));
    }

    #[test]
    fn an_assignment_above_the_grant_is_lowered_or_removed() {
        assert_eq!(assignment_change(Admin, Some(Admin)), None);
        assert_eq!(assignment_change(User, Some(Admin)), None);
        assert_eq!(assignment_change(Admin, Some(User)), Some(Some(User)));
        assert_eq!(assignment_change(User, None), Some(None));
        assert_eq!(assignment_change(Admin, None), Some(None));
    }
}

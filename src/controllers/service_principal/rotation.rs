//! The secret lifecycle's decisions, apart from the calls that carry them out: which remote secrets are leftovers
//! of an interrupted mint, whether to mint and why, which retiring secret makes room under the limit of five, and
//! which retiring secrets the grace period has passed. Pure functions of what a pass read.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::{
    controllers::rules::intent::{self, parse_time},
    crd::RetiringSecret,
    databricks::types::SecretInfo,
};

/// Secrets a mint created but never published: unknown ones (not published, not retiring). On a created
/// principal every unknown secret is one (only the operator makes secrets there); on an adopted one only those
/// created within the [`intent::WINDOW`] of the recorded intent, never a secret someone else added.
pub fn leftovers<'a>(
    remote: &'a [SecretInfo],
    known: &[&str],
    adopted: bool,
    minting_since: Option<Timestamp>,
) -> Vec<&'a SecretInfo> {
    let from_interrupted_mint = |secret: &SecretInfo| {
        minting_since.is_some_and(|since| intent::within(parse_time(secret.create_time.as_deref()), since))
    };
    remote
        .iter()
        .filter(|s| !known.contains(&s.id.as_str()))
        .filter(|s| !adopted || from_interrupted_mint(s))
        .collect()
}

/// Why a pass mints a new secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mint {
    /// Nothing usable is published.
    Created,
    /// The rotate annotation has a new value.
    RotationRequested,
    /// `renewTime` has come.
    RotationDue,
    /// `credentials.scopes` no longer match the published secret's.
    ScopesChanged,
}

impl Mint {
    /// The event reason.
    pub fn reason(self) -> &'static str {
        match self {
            Mint::Created => "Created",
            Mint::RotationRequested => "RotationRequested",
            Mint::RotationDue => "RotationDue",
            Mint::ScopesChanged => "ScopesChanged",
        }
    }
}

/// Whether to mint: nothing published, a rotation asked for, other scopes wanted, or the published secret's
/// renewal time reached.
pub fn mint(
    published: bool,
    rotate_requested: bool,
    scopes_changed: bool,
    renew_at: Option<Timestamp>,
    now: Timestamp,
) -> Option<Mint> {
    if !published {
        Some(Mint::Created)
    } else if rotate_requested {
        Some(Mint::RotationRequested)
    } else if scopes_changed {
        Some(Mint::ScopesChanged)
    } else if renew_at.is_some_and(|r| r <= now) {
        Some(Mint::RotationDue)
    } else {
        None
    }
}

/// Whether the published secret's scopes differ from `wanted` (order and repeats aside): as Databricks lists them,
/// or, when its listing does not say, as they were recorded at the mint.
pub fn scopes_changed(wanted: &[String], listed: Option<&[String]>, recorded: &[String]) -> bool {
    fn set(scopes: &[String]) -> std::collections::BTreeSet<&str> {
        scopes.iter().map(String::as_str).collect()
    }
    set(wanted) != set(listed.unwrap_or(recorded))
}

/// Room for one more secret under the limit: nothing to do, retire this one early (the soonest due), or no room
/// without touching secrets the operator does not know (`Err`).
pub fn make_room(
    remote: usize,
    limit: usize,
    retiring: &mut Vec<RetiringSecret>,
) -> Result<Option<RetiringSecret>, ()> {
    if remote < limit {
        return Ok(None);
    }
    retiring.sort_by_key(|r| r.delete_after.0);
    if retiring.is_empty() { Err(()) } else { Ok(Some(retiring.remove(0))) }
}

/// When the newest of the operator's secrets on the principal was minted, by Databricks' own record (no status
/// edit moves it): the rotate and repair guards count from it.
pub fn last_minted(remote: &[SecretInfo], owned: impl Fn(&str) -> bool) -> Option<Timestamp> {
    remote.iter().filter(|s| owned(&s.id)).filter_map(|s| parse_time(s.create_time.as_deref())).max()
}

/// Until when a mint must wait that is asked for sooner than `interval` after the last one (`None`: go ahead).
pub fn paced(last: Option<Timestamp>, interval: std::time::Duration, now: Timestamp) -> Option<Timestamp> {
    let interval = SignedDuration::try_from(interval).unwrap_or(SignedDuration::MAX);
    last.and_then(|last| last.checked_add(interval).ok()).filter(|after| *after > now)
}

/// When the published secret is renewed: `renew_before` ahead of its expiry, or of the delegation's lifetime cap
/// when that ends sooner (a cap lowered after the mint shortens what was minted before it).
pub fn renew_at(
    created: Option<Timestamp>,
    expire: Option<Timestamp>,
    cap: Option<std::time::Duration>,
    renew_before: std::time::Duration,
) -> Option<Timestamp> {
    let to_signed = |d: std::time::Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    let capped = created.zip(cap).and_then(|(c, cap)| c.checked_add(to_signed(cap)).ok());
    let end = match (expire, capped) {
        (Some(e), Some(c)) => Some(e.min(c)),
        (e, c) => e.or(c),
    };
    end.map(|end| end.checked_sub(to_signed(renew_before)).unwrap_or(Timestamp::MIN))
}

/// When the next pass of a principal's credentials is due: the renewal, the end of a grace period, a waiting rotate
/// request; and while a replaced secret is past its grace period but held back by a rollout, a recheck that backs
/// off (never at once: the rollout's progress does not depend on this object being looked at).
pub fn next_wake(
    renew: Option<Timestamp>,
    retiring: &[Timestamp],
    rotation_waits: Option<Timestamp>,
    consumers_rolled: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    let upcoming = retiring.iter().copied().filter(|due| *due > now).min();
    // Due already (its grace ended during the pass): retire it now, or recheck the rollout holding it back.
    let overdue = retiring.iter().copied().filter(|due| *due <= now).min();
    let overdue = overdue.map(|due| if consumers_rolled { now } else { rollout_recheck(due, now) });
    [renew, upcoming, rotation_waits, overdue].into_iter().flatten().min()
}

/// When to look again at a rollout that holds back a secret due since `due`: 5 s at first, then half the time
/// waited so far, at most 5 minutes.
pub fn rollout_recheck(due: Timestamp, now: Timestamp) -> Timestamp {
    let waited = now.duration_since(due).abs();
    let wait = (waited / 2).clamp(SignedDuration::from_secs(5), SignedDuration::from_mins(5));
    now + wait
}

/// Splits retiring secrets into those to delete and those to keep: a replaced secret goes once its grace period
/// has passed and every named consumer runs the current secret (`consumers_rolled`), whichever is later.
pub fn past_grace(
    retiring: Vec<RetiringSecret>,
    now: Timestamp,
    consumers_rolled: bool,
) -> (Vec<RetiringSecret>, Vec<RetiringSecret>) {
    retiring.into_iter().partition(|r| consumers_rolled && r.delete_after.0 <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    fn secret(id: &str, created: &str) -> SecretInfo {
        serde_json::from_value(serde_json::json!({"id": id, "create_time": created})).expect("secret")
    }

    fn retiring(id: &str, after: &str) -> RetiringSecret {
        RetiringSecret { secret_id: id.into(), delete_after: Time(at(after)) }
    }

    #[test]
    fn leftovers_of_an_adopted_principal_are_only_what_an_interrupted_mint_made() {
        let remote = [
            secret("published", "2026-11-30T11:00:00Z"),
            secret("someone-elses", "2026-11-30T11:30:00Z"),
            secret("interrupted", "2026-11-30T12:00:02Z"),
            secret("added-later", "2026-11-30T12:30:00Z"),
        ];
        let ids = |found: Vec<&SecretInfo>| found.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        let since = Some(at("2026-11-30T12:00:00Z"));
        assert_eq!(ids(leftovers(&remote, &["published"], true, since)), ["interrupted"]);
        assert!(leftovers(&remote, &["published"], true, None).is_empty(), "no intent, nothing to delete");
        assert_eq!(
            ids(leftovers(&remote, &["published"], false, None)),
            ["someone-elses", "interrupted", "added-later"],
            "a created principal's unknown secrets are all the operator's"
        );
    }

    #[test]
    fn minting_follows_publication_request_and_schedule() {
        let now = at("2026-11-30T12:00:00Z");
        assert_eq!(mint(false, false, false, None, now), Some(Mint::Created));
        assert_eq!(mint(true, true, true, None, now), Some(Mint::RotationRequested));
        assert_eq!(mint(true, false, true, None, now), Some(Mint::ScopesChanged));
        assert_eq!(mint(true, false, false, Some(at("2026-11-30T11:59:59Z")), now), Some(Mint::RotationDue));
        assert_eq!(mint(true, false, false, Some(at("2026-11-30T12:00:01Z")), now), None);
        assert_eq!(mint(true, false, false, None, now), None);
    }

    #[test]
    fn scopes_compare_as_sets_by_the_listing_else_the_record() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!scopes_changed(&v(&["sql", "iam"]), Some(&v(&["iam", "sql", "sql"])), &[]));
        assert!(
            scopes_changed(&v(&["sql"]), Some(&v(&[])), &v(&["sql"])),
            "the listing wins over the record"
        );
        assert!(!scopes_changed(&v(&["sql"]), None, &v(&["sql"])), "a silent listing: the record");
        assert!(scopes_changed(&v(&[]), None, &v(&["sql"])), "unrestricted again");
        assert!(!scopes_changed(&[], None, &[]), "never scoped");
    }

    #[test]
    fn guards_count_from_the_newest_secret_the_operator_minted() {
        let remote = [secret("old", "2026-11-30T11:00:00Z"), secret("new", "2026-11-30T12:00:00Z")];
        assert_eq!(last_minted(&remote, |_| true), Some(at("2026-11-30T12:00:00Z")));
        assert_eq!(last_minted(&remote, |id| id == "old"), Some(at("2026-11-30T11:00:00Z")));
        assert_eq!(last_minted(&remote, |_| false), None, "a first mint is never paced");
        let interval = std::time::Duration::from_secs(30);
        let last = Some(at("2026-11-30T12:00:00Z"));
        assert_eq!(paced(last, interval, at("2026-11-30T12:00:10Z")), Some(at("2026-11-30T12:00:30Z")));
        assert_eq!(paced(last, interval, at("2026-11-30T12:00:30Z")), None);
        assert_eq!(paced(None, interval, at("2026-11-30T12:00:10Z")), None);
    }

    #[test]
    fn a_lifetime_cap_brings_the_renewal_forward() {
        let day = std::time::Duration::from_secs(86_400);
        let created = Some(at("2026-11-01T00:00:00Z"));
        let expire = Some(at("2027-01-30T00:00:00Z"));
        assert_eq!(renew_at(created, expire, None, day), Some(at("2027-01-29T00:00:00Z")));
        assert_eq!(renew_at(created, expire, Some(7 * day), day), Some(at("2026-11-07T00:00:00Z")));
        assert_eq!(renew_at(created, expire, Some(365 * day), day), Some(at("2027-01-29T00:00:00Z")));
        assert_eq!(renew_at(None, None, Some(day), day), None, "a secret that never expires and has no date");
    }

    #[test]
    fn room_is_made_by_retiring_early_never_by_touching_unknown_secrets() {
        let mut none = Vec::new();
        assert_eq!(make_room(4, 5, &mut none), Ok(None));
        assert_eq!(make_room(5, 5, &mut none), Err(()));
        let mut some =
            vec![retiring("later", "2026-11-30T13:00:00Z"), retiring("sooner", "2026-11-30T12:10:00Z")];
        assert_eq!(make_room(5, 5, &mut some).map(|r| r.map(|r| r.secret_id)), Ok(Some("sooner".into())));
        assert_eq!(some.len(), 1);
    }

    #[test]
    fn a_secret_held_back_by_a_rollout_never_wakes_the_object_at_once() {
        let now = at("2026-11-30T12:10:00Z");
        let due = at("2026-11-30T12:00:00Z");
        let renew = Some(at("2027-01-01T00:00:00Z"));
        // Held back for 10 minutes: look again in 5 minutes (the cap), not immediately.
        assert_eq!(next_wake(renew, &[due], None, false, now), Some(at("2026-11-30T12:15:00Z")));
        // A grace period still running wakes at its end.
        let later = at("2026-11-30T12:11:00Z");
        assert_eq!(next_wake(renew, &[due, later], None, false, now), Some(later));
        // Due and nothing holds it back (its grace ended during the pass): at once.
        assert_eq!(next_wake(renew, &[due], None, true, now), Some(now));
        // Nothing retiring: the renewal.
        assert_eq!(next_wake(renew, &[], None, true, now), renew);
    }

    #[test]
    fn a_slow_rollout_is_looked_at_less_and_less_often() {
        let due = at("2026-11-30T12:00:00Z");
        assert_eq!(rollout_recheck(due, at("2026-11-30T12:00:01Z")), at("2026-11-30T12:00:06Z"));
        assert_eq!(rollout_recheck(due, at("2026-11-30T12:02:00Z")), at("2026-11-30T12:03:00Z"));
        assert_eq!(rollout_recheck(due, at("2026-11-30T14:00:00Z")), at("2026-11-30T14:05:00Z"));
    }

    #[test]
    fn the_grace_period_and_the_consumers_rollouts_decide_what_is_deleted() {
        let now = at("2026-11-30T12:00:00Z");
        let both = || vec![retiring("due", "2026-11-30T12:00:00Z"), retiring("kept", "2026-11-30T12:00:01Z")];
        let (due, kept) = past_grace(both(), now, true);
        assert_eq!((due[0].secret_id.as_str(), kept[0].secret_id.as_str()), ("due", "kept"));
        // A rollout still going holds back even a secret whose grace period has passed.
        let (due, kept) = past_grace(both(), now, false);
        assert!(due.is_empty() && kept.len() == 2);
    }
}

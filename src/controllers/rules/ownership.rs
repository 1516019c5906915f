//! Whether a remote principal is an object's own, and what an object may do to a principal it adopted: pure
//! functions of what a pass read, so every rule is a unit test.

use super::{
    error::Refusal,
    reason::Reason,
    tenancy::{Grants, rank},
};
use k8s_openapi::jiff::Timestamp;

use crate::{crd::PrincipalDeletionPolicy, databricks::types::ServicePrincipal as RemotePrincipal};

/// The account role that makes a principal an account administrator.
pub const ACCOUNT_ADMIN_ROLE: &str = "account_admin";

/// The deletion an adopted principal gets: what the object asks for, lowered to what its grant allows.
pub fn adopted_deletion(
    requested: PrincipalDeletionPolicy,
    allowed: Option<PrincipalDeletionPolicy>,
) -> PrincipalDeletionPolicy {
    let allowed = allowed.unwrap_or(PrincipalDeletionPolicy::Orphan);
    if rank(requested) <= rank(allowed) { requested } else { allowed }
}

/// The display name and active flag to write on a principal (`None`: leave as is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityChanges {
    pub display_name: Option<String>,
    pub active: Option<bool>,
}

/// What a ServicePrincipal may change of its principal's name and active flag. A created principal follows the
/// spec (the name defaults to the object's). An adopted one (`adoption` = its grant's deletion allowance) keeps
/// its name unless the spec sets one, and its name and active flag change only under a grant that allows at least
/// `Deactivate`: re-enabling a principal the platform disabled is as much a power as disabling it.
pub fn identity_changes(
    remote: &RemotePrincipal,
    spec_name: Option<&str>,
    default_name: &str,
    active: bool,
    adoption: Option<Option<PrincipalDeletionPolicy>>,
) -> Result<IdentityChanges, Refusal> {
    let name = match adoption {
        None => Some(spec_name.unwrap_or(default_name)),
        Some(_) => spec_name,
    };
    let changes = IdentityChanges {
        display_name: name.filter(|n| *n != remote.display_name).map(str::to_owned),
        active: (remote.active != active).then_some(active),
    };
    let limited = adoption.is_some_and(|allowed| {
        rank(allowed.unwrap_or(PrincipalDeletionPolicy::Orphan)) < rank(PrincipalDeletionPolicy::Deactivate)
    });
    if limited && changes != IdentityChanges::default() {
        let what = match &changes.display_name {
            Some(name) => format!("Renaming adopted service principal {} to {name:?}", remote.application_id),
            None => format!("Setting active={active} on adopted service principal {}", remote.application_id),
        };
        return Err(Refusal {
            reason: Reason::AdoptRefused,
            message: format!(
                "{what} is refused: its adoption grant allows no changes to it (deletionPolicy Deactivate or \
                 Delete in spec.delegations[].adopt). Match spec.active ({}) and spec.displayName ({:?}) to the \
                 principal, or ask for the grant. Nothing was changed in Databricks",
                remote.active, remote.display_name
            ),
        });
    }
    Ok(changes)
}

/// Another object of this cluster that stands for a principal (it created it, or adopted it first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherOwner {
    /// `namespace/name` of the other object.
    pub object: String,
    /// It created the principal (tagged with its UID) rather than adopting it.
    pub created: bool,
}

/// What is known about a principal a ServicePrincipal asks to adopt.
#[derive(Debug, Clone, Copy)]
pub struct AdoptionFacts<'a> {
    /// The principal in Databricks.
    pub principal: &'a RemotePrincipal,
    /// The application id the operator itself authenticates as, when known.
    pub operator_application_id: Option<&'a str>,
    /// Another object that owns the principal, if any.
    pub other_owner: Option<&'a OtherOwner>,
    /// What the principal holds beyond the namespace's grant (workspace assignments, account roles), not made
    /// under this object's own claim.
    pub excess: &'a [String],
}

/// Why adopting a principal is refused, if it is: an id not granted to the namespace, the operator's own
/// identity, an account admin, or a principal another object owns. Checked on every pass, before any write.
pub fn adoption_refusal(grants: &Grants, facts: AdoptionFacts<'_>) -> Option<Refusal> {
    let principal = facts.principal;
    let app_id = &principal.application_id;
    // First, so an ungranted id tells a tenant nothing about the principal behind it.
    if let Some(refusal) = ungranted_adoption(grants, app_id) {
        return Some(refusal);
    }
    let refuse = |why: &str| Some(adoption_refused(app_id, why));
    if facts.operator_application_id.is_some_and(|own| own.eq_ignore_ascii_case(app_id)) {
        return refuse("it is the identity the operator itself authenticates as");
    }
    if principal.roles.iter().any(|r| r.value.as_deref() == Some(ACCOUNT_ADMIN_ROLE)) {
        return refuse("it is an account admin");
    }
    if !facts.excess.is_empty() {
        return refuse(&format!(
            "it holds more than namespace {} is granted: {}. A platform admin can grant it, or remove it in \
             Databricks",
            grants.namespace(),
            facts.excess.join(", ")
        ));
    }
    if let Some(other) = facts.other_owner {
        let how = if other.created { "was created for" } else { "is already adopted by" };
        return refuse(&format!("it {how} {}", other.object));
    }
    None
}

/// The refusal of adopting `application_id` when the namespace has no grant for it, if it has none.
pub fn ungranted_adoption(grants: &Grants, application_id: &str) -> Option<Refusal> {
    grants.adoption(application_id).is_none().then(|| {
        let why = format!(
            "DatabricksAccount {} does not grant it to namespace {} (spec.delegations[].adopt)",
            grants.account(),
            grants.namespace()
        );
        adoption_refused(application_id, &why)
    })
}

/// Adopting `application_id` is refused, and why.
pub fn adoption_refused(application_id: &str, why: &str) -> Refusal {
    Refusal {
        reason: Reason::AdoptRefused,
        message: format!(
            "Adopting service principal {application_id} is refused: {why}. Nothing was changed in Databricks"
        ),
    }
}

/// Whether `principal` is the one a ServicePrincipal stands for: tagged with its UID (created), or the adoption
/// target (adopted; whether the adoption itself is allowed is [`adoption_refusal`]'s question).
pub fn stands_for(principal: &RemotePrincipal, uid: &str, adopt: Option<&str>) -> bool {
    match adopt {
        Some(app_id) => principal.application_id.eq_ignore_ascii_case(app_id),
        None => !uid.is_empty() && principal.external_id.as_deref() == Some(uid),
    }
}

/// Of the principals tagged with one object's UID, the one to keep and those to delete. More than one comes from two
/// creates that raced: a pass interrupted after its create, or two replicas running at once while a lapsed lease
/// overlaps them. Every replica must pick the same one without talking to the others: the lowest id (ids are
/// numeric; one that is not sorts last).
pub fn keep_one(mut tagged: Vec<RemotePrincipal>) -> Option<(RemotePrincipal, Vec<RemotePrincipal>)> {
    tagged.sort_by_key(|p| (p.id.parse::<i64>().map_or((1, 0), |n| (0, n)), p.id.clone()));
    tagged.dedup_by(|a, b| a.id == b.id);
    let mut tagged = tagged.into_iter();
    let keep = tagged.next()?;
    Some((keep, tagged.collect()))
}

/// How many lags after its claim a created principal is still searched for duplicates at each full pass: the
/// pass meant to come back after one lag may run late.
const DUPLICATE_SEARCH_LAGS: u32 = 10;

/// When a pass looks for duplicates of the principal an object created. A search by tag lags a create by up to
/// `lag`, so a racing create (another replica's, or this object's own from a pass whose status write was lost)
/// shows only later: search while the claim is young (`search`), and come back once one lag has passed (`wake`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateCheck {
    pub search: bool,
    pub wake: Option<std::time::Duration>,
}

pub fn duplicate_check(claimed: Timestamp, now: Timestamp, lag: std::time::Duration) -> DuplicateCheck {
    let age = now.duration_since(claimed).try_into().unwrap_or(std::time::Duration::ZERO);
    let wake = lag.checked_sub(age).filter(|left| !left.is_zero());
    DuplicateCheck { search: age < lag.saturating_mul(DUPLICATE_SEARCH_LAGS), wake }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controllers::rules::tenancy::tests::{APP, labels, spec},
        databricks::types::ComplexValue,
    };
    use serde_json::json;

    const OPERATOR: &str = "6a1f2c3d-0000-4000-8000-0000000000aa";

    fn principal(app_id: &str, external_id: Option<&str>, roles: &[&str]) -> RemotePrincipal {
        RemotePrincipal {
            id: "42".into(),
            application_id: app_id.into(),
            display_name: "p".into(),
            external_id: external_id.map(str::to_owned),
            active: true,
            roles: roles.iter().map(|r| ComplexValue { value: Some((*r).into()), display: None }).collect(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn adoption_is_refused_for_the_operator_admins_other_owners_and_ungranted_ids() {
        let granted = Grants::for_namespace(
            "acct",
            &spec(json!({"delegations": [{"namespaces": {"names": ["a"]},
                    "adopt": [{"applicationId": APP}, {"applicationId": OPERATOR}]}]})),
            "a",
            &labels(&[]),
        );
        let plain = principal(APP, None, &[]);
        let facts = |p| AdoptionFacts {
            principal: p,
            operator_application_id: Some(OPERATOR),
            other_owner: None,
            excess: &[],
        };
        assert_eq!(adoption_refusal(&granted, facts(&plain)), None);

        // Granted by mistake: still refused.
        let operator = principal(&OPERATOR.to_uppercase(), None, &[]);
        let refused = adoption_refusal(&granted, facts(&operator)).expect("refused");
        assert_eq!(refused.reason, Reason::AdoptRefused);
        assert!(refused.message.contains("operator itself"), "{refused:?}");

        let admin = principal(APP, None, &["account_admin"]);
        assert!(
            adoption_refusal(&granted, facts(&admin)).expect("refused").message.contains("account admin")
        );

        let owner = OtherOwner { object: "team-b/reporting".into(), created: true };
        let owned = AdoptionFacts { other_owner: Some(&owner), ..facts(&plain) };
        let refused = adoption_refusal(&granted, owned).expect("refused");
        assert!(refused.message.contains("was created for team-b/reporting"), "{refused:?}");

        // More than the grant already: ADMIN somewhere, or an account role.
        let excess = ["ADMIN in workspace 7 (granted: nothing)".to_owned()];
        let powerful = AdoptionFacts { excess: &excess, ..facts(&plain) };
        let refused = adoption_refusal(&granted, powerful).expect("refused");
        assert!(
            refused.message.contains("holds more than namespace a is granted: ADMIN in workspace 7"),
            "{refused:?}"
        );

        let ungranted = Grants::for_namespace("acct", &spec(json!({})), "a", &labels(&[]));
        assert!(
            adoption_refusal(&ungranted, facts(&plain)).expect("refused").message.contains("does not grant")
        );
        let probe = adoption_refusal(&ungranted, owned).expect("refused");
        assert!(!probe.message.contains("team-b"), "an ungranted id reveals no owner: {probe:?}");
        // Single tenant still never hands out the operator's identity or an admin.
        let single = Grants::for_namespace("acct", &spec(json!({"singleTenant": true})), "a", &labels(&[]));
        assert!(adoption_refusal(&single, facts(&operator)).is_some());
        assert!(adoption_refusal(&single, facts(&admin)).is_some());
        assert_eq!(adoption_refusal(&single, facts(&plain)), None);
    }

    #[test]
    fn a_principal_is_an_objects_own_by_tag_or_adoption_target_only() {
        let tagged = principal(APP, Some("uid-1"), &[]);
        assert!(stands_for(&tagged, "uid-1", None));
        assert!(!stands_for(&tagged, "uid-2", None));
        assert!(!stands_for(&principal(APP, None, &[]), "", None));
        assert!(stands_for(&tagged, "uid-2", Some(&APP.to_uppercase())));
        assert!(!stands_for(&tagged, "uid-1", Some("6a1f2c3d-0000-4000-8000-000000000002")));
    }

    #[test]
    fn an_adopted_principal_keeps_its_name_and_flag_unless_granted() {
        use PrincipalDeletionPolicy::*;
        let remote = principal(APP, None, &[]);
        let created = identity_changes(&remote, None, "obj", false, None).expect("created");
        assert_eq!(created, IdentityChanges { display_name: Some("obj".into()), active: Some(false) });
        assert_eq!(
            identity_changes(&remote, None, "obj", true, Some(Some(Orphan))),
            Ok(IdentityChanges::default())
        );
        let renamed =
            identity_changes(&remote, Some("etl"), "obj", true, Some(Some(Deactivate))).expect("rename");
        assert_eq!(renamed.display_name.as_deref(), Some("etl"));
        assert!(
            identity_changes(&remote, Some("etl"), "obj", true, Some(None)).is_err(),
            "no renaming either"
        );
        assert_eq!(
            identity_changes(&remote, Some("p"), "obj", true, Some(None)),
            Ok(IdentityChanges::default())
        );
        let refused = identity_changes(&remote, None, "obj", false, Some(Some(Orphan))).expect_err("refused");
        assert_eq!(refused.reason, Reason::AdoptRefused);
        assert!(refused.message.contains("allows no changes"), "{refused:?}");
        let mut disabled = remote.clone();
        disabled.active = false;
        assert!(identity_changes(&disabled, None, "obj", true, Some(None)).is_err(), "no re-enabling either");
        assert_eq!(
            identity_changes(&remote, None, "obj", false, Some(Some(Deactivate))).expect("granted").active,
            Some(false)
        );
    }

    #[test]
    fn adopted_deletion_never_exceeds_the_grant() {
        use PrincipalDeletionPolicy::*;
        assert_eq!(adopted_deletion(Delete, None), Orphan);
        assert_eq!(adopted_deletion(Delete, Some(Deactivate)), Deactivate);
        assert_eq!(adopted_deletion(Deactivate, Some(Delete)), Deactivate);
        assert_eq!(adopted_deletion(Orphan, Some(Delete)), Orphan);
    }

    #[test]
    fn a_created_principal_is_searched_for_duplicates_until_the_search_lag_has_long_passed() {
        let lag = std::time::Duration::from_secs(30);
        let claimed: Timestamp = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        let at = |s: i64| claimed + k8s_openapi::jiff::SignedDuration::from_secs(s);
        let check = duplicate_check(claimed, at(0), lag);
        assert_eq!(check, DuplicateCheck { search: true, wake: Some(lag) });
        let check = duplicate_check(claimed, at(20), lag);
        assert_eq!(check, DuplicateCheck { search: true, wake: Some(std::time::Duration::from_secs(10)) });
        // The pass that comes back after the lag looks once more and asks for nothing further.
        assert_eq!(duplicate_check(claimed, at(30), lag), DuplicateCheck { search: true, wake: None });
        assert_eq!(duplicate_check(claimed, at(299), lag), DuplicateCheck { search: true, wake: None });
        assert_eq!(duplicate_check(claimed, at(300), lag), DuplicateCheck { search: false, wake: None });
        // A clock behind the claim's counts as age zero.
        assert_eq!(duplicate_check(claimed, at(-5), lag).wake, Some(lag));
    }

    #[test]
    fn every_replica_keeps_the_same_one_of_racing_duplicates() {
        let with_id = |id: &str| RemotePrincipal { id: id.into(), ..principal(APP, Some("uid"), &[]) };
        assert!(keep_one(Vec::new()).is_none());
        let (keep, drop) = keep_one(vec![with_id("7")]).expect("one");
        assert_eq!((keep.id.as_str(), drop.len()), ("7", 0));
        // Seen in any order, or twice (the caller adds what it just created to what it found): the same answer.
        for seen in [vec!["900", "12", "x"], vec!["x", "900", "12", "12"], vec!["12", "x", "900"]] {
            let (keep, drop) = keep_one(seen.into_iter().map(with_id).collect()).expect("some");
            assert_eq!(keep.id, "12", "numerically lowest, not lexically");
            let mut dropped: Vec<String> = drop.into_iter().map(|p| p.id).collect();
            dropped.sort();
            assert_eq!(dropped, ["900", "x"]);
        }
    }
}

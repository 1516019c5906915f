//! What a DatabricksClaim is called and labelled, and the decisions about claims: whose claim stands, and which
//! remote objects an interrupted create may have left. Pure functions of what a pass read.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::intent;
use crate::crd::{ClaimOwner, ClaimedKind, ClaimedObject, DatabricksClaim, DatabricksClaimSpec};

pub const LABEL_ACCOUNT: &str = "oauth.databricks-operator.io/account-id";
pub const LABEL_KIND: &str = "oauth.databricks-operator.io/claimed-kind";
pub const LABEL_OWNER_NAMESPACE: &str = "oauth.databricks-operator.io/owner-namespace";
pub const LABEL_OWNER_UID: &str = "oauth.databricks-operator.io/owner-uid";
pub const LABEL_DISPLAY_NAME: &str = "oauth.databricks-operator.io/display-name";
pub const LABEL_REMOTE_ID: &str = "oauth.databricks-operator.io/remote-id";
pub const LABEL_PRINCIPAL: &str = "oauth.databricks-operator.io/principal-id";

fn kind_key(kind: ClaimedKind) -> &'static str {
    match kind {
        ClaimedKind::ServicePrincipal => "sp",
        ClaimedKind::AppIntegration => "app",
        ClaimedKind::FederationPolicy => "fp",
    }
}

/// `value` when it is a valid label value, else a digest of it (16 hex characters).
pub fn label_value(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let edges = value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if value.len() <= 63 && edges && value.chars().all(plain) { value.to_owned() } else { digest(value) }
}

fn digest(value: &str) -> String {
    Sha256::digest(value.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A DNS-subdomain name from `parts` (lowercase; anything else than `[a-z0-9-]` becomes `-`), or a digest of
/// them when too long.
fn object_name(parts: &[&str]) -> String {
    let clean = |p: &str| -> String {
        p.to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
            .collect()
    };
    let name = parts.iter().map(|p| clean(p)).collect::<Vec<_>>().join(".");
    if name.len() <= 253 { name } else { format!("{}.{}", clean(parts[0]), digest(&parts.join("/"))) }
}

/// The claim of a service principal: one per principal in the account, whether created or adopted.
pub fn principal_claim_name(account_id: &str, application_id: &str) -> String {
    object_name(&["sp", account_id, application_id])
}

/// The claim of an app connection's integration: one per object (the integration id comes after the create).
pub fn app_claim_name(account_id: &str, owner_uid: &str) -> String {
    object_name(&["app", account_id, owner_uid])
}

/// The claim of a federation policy: one per policy id on a principal.
pub fn policy_claim_name(account_id: &str, principal_id: &str, policy_id: &str) -> String {
    object_name(&["fp", account_id, principal_id, policy_id])
}

/// The labels a claim is found by.
pub fn labels(
    kind: ClaimedKind,
    account_id: &str,
    owner: &ClaimOwner,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_ACCOUNT.to_owned(), label_value(&account_id.to_lowercase())),
        (LABEL_KIND.to_owned(), kind_key(kind).to_owned()),
        (LABEL_OWNER_NAMESPACE.to_owned(), label_value(&owner.namespace)),
        (LABEL_OWNER_UID.to_owned(), label_value(&owner.uid)),
    ]);
    for (key, value) in extra {
        labels.insert((*key).to_owned(), label_value(value));
    }
    labels
}

/// A label selector for claims of `kind` in `account_id` with `extra` labels.
pub fn selector(kind: ClaimedKind, account_id: &str, extra: &[(&str, &str)]) -> String {
    let mut terms = vec![
        format!("{LABEL_ACCOUNT}={}", label_value(&account_id.to_lowercase())),
        format!("{LABEL_KIND}={}", kind_key(kind)),
    ];
    terms.extend(extra.iter().map(|(k, v)| format!("{k}={}", label_value(v))));
    terms.join(",")
}

/// The owner record of `obj`.
pub fn owner_of<K: Resource<DynamicType = ()>>(obj: &K) -> ClaimOwner {
    ClaimOwner {
        kind: K::kind(&()).into_owned(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
    }
}

/// A new claim named `name` by `owner` on `remote`, found by its labels (and `extra` ones).
pub fn new_claim(
    name: &str,
    account_id: &str,
    owner: ClaimOwner,
    remote: ClaimedObject,
    extra: &[(&str, &str)],
) -> DatabricksClaim {
    let labels = labels(remote.kind, account_id, &owner, extra);
    let spec = DatabricksClaimSpec {
        account_id: account_id.to_lowercase(),
        remote,
        owner,
        adopted: false,
        creating_since: None,
        secrets: Vec::new(),
        workspaces: Vec::new(),
        groups: Vec::new(),
        used_by: Vec::new(),
        revoked_since: None,
        releasing: false,
    };
    let mut claim = DatabricksClaim::new(name, spec);
    claim.metadata.labels = Some(labels);
    claim
}

/// Whether `claim` belongs to the object with UID `uid`.
pub fn held_by(claim: &DatabricksClaim, uid: &str) -> bool {
    !uid.is_empty() && claim.spec.owner.uid == uid
}

/// Another object's intent to create an integration of the same display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Racing {
    pub owner: String,
    pub since: Timestamp,
}

/// What recovery may do with the integrations an interrupted create of this object may have left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery<'a> {
    /// These integrations (ids) came from this object's create: keep the oldest (public) or delete them all.
    Candidates(Vec<&'a str>),
    /// An older create of the same name by another object may have made one of them: wait for it.
    Wait(Racing),
}

/// One integration as recovery sees it.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    pub id: &'a str,
    pub created: Option<Timestamp>,
    /// A claim of another object records it.
    pub owned: bool,
}

/// The integrations of this object's display name that its interrupted create (intent at `since`) may have left:
/// unowned, created within the create window. Another object's intent of the same name (`racing`) blocks only
/// when it is older than this one (ties: the smaller owner UID first), so two lost creates never wait on each
/// other; an older racer's candidates stop at the younger racer's intent.
pub fn recovery<'a>(
    mine: (&str, Timestamp),
    listed: &[Listed<'a>],
    racing: &[(String, Timestamp)],
) -> Recovery<'a> {
    let (uid, since) = mine;
    let older = racing.iter().filter(|(other, at)| *at < since || (*at == since && other.as_str() < uid));
    if let Some((owner, at)) = older.min_by_key(|(_, at)| *at) {
        // Only if it could have made one of the integrations this object would take.
        let contested = listed
            .iter()
            .any(|l| !l.owned && intent::within(l.created, since) && intent::after(l.created, *at));
        if contested {
            return Recovery::Wait(Racing { owner: owner.clone(), since: *at });
        }
    }
    let younger = racing.iter().filter(|(_, at)| *at > since).map(|(_, at)| *at).min();
    let before_younger =
        |l: &Listed<'_>| younger.is_none_or(|y| l.created.is_some_and(|c| c < y - intent::SLACK));
    Recovery::Candidates(
        listed
            .iter()
            .filter(|l| !l.owned && intent::within(l.created, since) && before_younger(l))
            .map(|l| l.id)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    #[test]
    fn claim_names_are_dns_names_and_follow_the_account_not_the_object() {
        let name = principal_claim_name(
            "0D3C8A0E-6F1B-4C2A-9A57-3F2B1E4D5C6A",
            "6a1f2c3d-0000-4000-8000-000000000001",
        );
        assert_eq!(name, "sp.0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a.6a1f2c3d-0000-4000-8000-000000000001");
        assert_eq!(policy_claim_name("a", "123", "k8s-team-x"), "fp.a.123.k8s-team-x");
        let long = policy_claim_name(&"a".repeat(100), &"1".repeat(100), &"p".repeat(63));
        assert!(long.len() <= 253 && long.starts_with("fp."), "{long}");
        assert_eq!(label_value("team-a"), "team-a");
        assert_eq!(label_value("Portal of team A").len(), 16, "not a label value: a digest");
    }

    #[test]
    fn recovery_takes_only_this_objects_leftovers_and_never_deadlocks() {
        let listed = [
            Listed { id: "mine", created: Some(at("2026-11-30T12:00:01Z")), owned: false },
            Listed { id: "owned", created: Some(at("2026-11-30T12:00:02Z")), owned: true },
            Listed { id: "old", created: Some(at("2026-11-30T11:00:00Z")), owned: false },
            Listed { id: "late", created: Some(at("2026-11-30T12:10:00Z")), owned: false },
        ];
        let since = at("2026-11-30T12:00:00Z");
        assert_eq!(recovery(("me", since), &listed, &[]), Recovery::Candidates(vec!["mine"]));
        // An older racer that could have made "mine": wait for it.
        let older = vec![("them".to_owned(), at("2026-11-30T11:59:59Z"))];
        assert!(matches!(recovery(("me", since), &listed, &older), Recovery::Wait(r) if r.owner == "them"));
        // A younger racer never blocks; candidates stop at its intent.
        let younger = vec![("them".to_owned(), at("2026-11-30T12:00:30Z"))];
        let theirs = Listed { id: "theirs", created: Some(at("2026-11-30T12:00:31Z")), owned: false };
        let both = [listed[0], theirs];
        assert_eq!(recovery(("me", since), &both, &younger), Recovery::Candidates(vec!["mine"]));
        // And the younger one waits for me, not the other way round.
        let me_racing = vec![("me".to_owned(), since)];
        let theirs_since = at("2026-11-30T12:00:30Z");
        assert!(matches!(recovery(("them", theirs_since), &both, &me_racing), Recovery::Wait(_)));
    }
}

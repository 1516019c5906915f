//! Delegation and ownership decisions, kept apart from the code that calls Databricks: what a namespace may do
//! with an account (its `delegations` or `singleTenant`), and whether a remote principal is an object's own.
//! Everything here is a pure function of what it is given, so every rule is a unit test.

use std::collections::BTreeMap;

use crate::{
    crd::{
        AllowedNamespaces, DatabricksAccountSpec, ObjectRecord, PrincipalDeletionPolicy, WorkspaceAssignment,
        WorkspacePermission,
    },
    databricks::types::ServicePrincipal as RemotePrincipal,
};

use super::accounts::selector_matches;

/// The account role that makes a principal an account administrator.
pub const ACCOUNT_ADMIN_ROLE: &str = "account_admin";

/// Why something a tenant asked for is not done. Becomes a `NeedsAttention` condition; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl From<Refusal> for super::Error {
    fn from(refusal: Refusal) -> Self {
        super::Error::NeedsAttention { reason: refusal.reason, message: refusal.message }
    }
}

/// A kind whose use must be delegated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegatedKind {
    AppConnection,
    TrustPolicy,
}

/// Whether a namespace set includes `namespace` (`labels` are the namespace's labels).
pub fn namespace_in(set: &AllowedNamespaces, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
    set.names.iter().any(|n| n == namespace)
        || set.selector.as_ref().is_some_and(|s| selector_matches(s, labels))
}

/// Whether deciding for a namespace needs its labels (some rule selects namespaces by label).
pub fn needs_labels(spec: &DatabricksAccountSpec) -> bool {
    spec.allowed_namespaces.as_ref().is_some_and(|a| a.selector.is_some())
        || spec.delegations.iter().any(|d| d.namespaces.selector.is_some())
}

/// What one namespace may do with one account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    account: String,
    namespace: String,
    single_tenant: bool,
    workspaces: BTreeMap<i64, WorkspacePermission>,
    app_connections: bool,
    trust_policies: bool,
    /// Application id (lowercase) → the most the adopting object's deletion may do.
    adopt: BTreeMap<String, PrincipalDeletionPolicy>,
}

impl Grants {
    /// The union of every delegation rule of `spec` that selects `namespace`.
    pub fn for_namespace(
        account: &str,
        spec: &DatabricksAccountSpec,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let mut grants = Grants {
            account: account.to_owned(),
            namespace: namespace.to_owned(),
            single_tenant: spec.single_tenant,
            ..Grants::default()
        };
        for rule in spec.delegations.iter().filter(|d| namespace_in(&d.namespaces, namespace, labels)) {
            for workspace in &rule.workspaces {
                let entry = grants.workspaces.entry(workspace.workspace_id).or_insert(workspace.permission);
                *entry = (*entry).max(workspace.permission);
            }
            grants.app_connections |= rule.app_connections;
            grants.trust_policies |= rule.trust_policies;
            for adopt in &rule.adopt {
                let entry =
                    grants.adopt.entry(adopt.application_id.to_lowercase()).or_insert(adopt.deletion_policy);
                *entry = strongest(*entry, adopt.deletion_policy);
            }
        }
        grants
    }

    fn denied(&self, reason: &'static str, what: String) -> Refusal {
        Refusal {
            reason,
            message: format!(
                "DatabricksAccount {} does not delegate {what} to namespace {}; a platform admin can grant it in \
                 spec.delegations. Nothing was changed in Databricks",
                self.account, self.namespace
            ),
        }
    }

    /// Every assignment must name a delegated workspace, with at most the delegated permission.
    pub fn check_assignments(&self, assignments: &[WorkspaceAssignment]) -> Result<(), Refusal> {
        if self.single_tenant {
            return Ok(());
        }
        for assignment in assignments {
            let wanted = assignment.permissions.iter().copied().max().unwrap_or(WorkspacePermission::User);
            match self.workspaces.get(&assignment.workspace_id) {
                None => {
                    return Err(
                        self.denied("AssignmentNotAllowed", format!("workspace {}", assignment.workspace_id))
                    );
                }
                Some(granted) if wanted > *granted => {
                    return Err(self.denied(
                        "AssignmentNotAllowed",
                        format!("ADMIN in workspace {}", assignment.workspace_id),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// App connections and trust policies need a grant.
    pub fn check_kind(&self, kind: DelegatedKind) -> Result<(), Refusal> {
        let (granted, what) = match kind {
            DelegatedKind::AppConnection => (self.app_connections, "app connections (appConnections)"),
            DelegatedKind::TrustPolicy => (self.trust_policies, "trust policies (trustPolicies)"),
        };
        if self.single_tenant || granted { Ok(()) } else { Err(self.denied("NotDelegated", what.to_owned())) }
    }

    /// The most an adopting object's deletion may do to `application_id`, when its adoption is granted.
    pub fn adoption(&self, application_id: &str) -> Option<PrincipalDeletionPolicy> {
        if self.single_tenant {
            return Some(PrincipalDeletionPolicy::Delete);
        }
        self.adopt.get(&application_id.to_lowercase()).copied()
    }
}

fn rank(policy: PrincipalDeletionPolicy) -> u8 {
    match policy {
        PrincipalDeletionPolicy::Orphan => 0,
        PrincipalDeletionPolicy::Deactivate => 1,
        PrincipalDeletionPolicy::Delete => 2,
    }
}

fn strongest(a: PrincipalDeletionPolicy, b: PrincipalDeletionPolicy) -> PrincipalDeletionPolicy {
    if rank(a) >= rank(b) { a } else { b }
}

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
            reason: "AdoptRefused",
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
}

/// Why adopting a principal is refused, if it is: an id not granted to the namespace, the operator's own
/// identity, an account admin, or a principal another object owns. Checked on every pass, before any write.
pub fn adoption_refusal(grants: &Grants, facts: AdoptionFacts<'_>) -> Option<Refusal> {
    let principal = facts.principal;
    let app_id = &principal.application_id;
    let refuse = |why: String| {
        Some(Refusal {
            reason: "AdoptRefused",
            message: format!(
                "Adopting service principal {app_id} is refused: {why}. Nothing was changed in Databricks"
            ),
        })
    };
    // First, so an ungranted id tells a tenant nothing about the principal behind it.
    if grants.adoption(app_id).is_none() {
        return refuse(format!(
            "DatabricksAccount {} does not grant it to namespace {} (spec.delegations[].adopt)",
            grants.account, grants.namespace
        ));
    }
    if facts.operator_application_id.is_some_and(|own| own.eq_ignore_ascii_case(app_id)) {
        return refuse("it is the identity the operator itself authenticates as".to_owned());
    }
    if principal.roles.iter().any(|r| r.value.as_deref() == Some(ACCOUNT_ADMIN_ROLE)) {
        return refuse("it is an account admin".to_owned());
    }
    if let Some(other) = facts.other_owner {
        let how = if other.created { "was created for" } else { "is already adopted by" };
        return refuse(format!("it {how} {}", other.object));
    }
    None
}

/// Whether `principal` is the one a ServicePrincipal stands for: tagged with its UID (created), or the adoption
/// target (adopted; whether the adoption itself is allowed is [`adoption_refusal`]'s question).
pub fn stands_for(principal: &RemotePrincipal, uid: &str, adopt: Option<&str>) -> bool {
    match adopt {
        Some(app_id) => principal.application_id.eq_ignore_ascii_case(app_id),
        None => !uid.is_empty() && principal.external_id.as_deref() == Some(uid),
    }
}

/// Which claim on an adopted principal stands: the recorded one while its object still exists, else `mine`.
pub fn adoption_claim<'a>(
    recorded: Option<&'a ObjectRecord>,
    recorded_alive: bool,
    mine: &'a ObjectRecord,
) -> &'a ObjectRecord {
    match recorded {
        Some(claim) if claim.uid != mine.uid && recorded_alive => claim,
        _ => mine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::databricks::types::ComplexValue;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> DatabricksAccountSpec {
        let mut base =
            json!({"accountId": "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a", "auth": {"workloadIdentity": {}}});
        base.as_object_mut().expect("object").extend(value.as_object().expect("object").clone());
        serde_json::from_value(base).expect("spec")
    }

    fn assignment(workspace: i64, permission: WorkspacePermission) -> WorkspaceAssignment {
        WorkspaceAssignment { workspace_id: workspace, permissions: vec![permission] }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const APP: &str = "6a1f2c3d-0000-4000-8000-000000000001";
    const OPERATOR: &str = "6a1f2c3d-0000-4000-8000-0000000000aa";

    fn principal(app_id: &str, external_id: Option<&str>, roles: &[&str]) -> RemotePrincipal {
        RemotePrincipal {
            id: "42".into(),
            application_id: app_id.into(),
            display_name: "p".into(),
            external_id: external_id.map(str::to_owned),
            active: true,
            roles: roles.iter().map(|r| ComplexValue { value: Some((*r).into()), display: None }).collect(),
        }
    }

    #[test]
    fn no_rules_grant_principals_only() {
        let grants = Grants::for_namespace("acct", &spec(json!({})), "team-a", &labels(&[]));
        assert_eq!(grants.check_assignments(&[]), Ok(()));
        let refused =
            grants.check_assignments(&[assignment(1, WorkspacePermission::User)]).expect_err("refused");
        assert_eq!(refused.reason, "AssignmentNotAllowed");
        assert!(refused.message.contains("workspace 1") && refused.message.contains("team-a"), "{refused:?}");
        assert_eq!(
            grants.check_kind(DelegatedKind::AppConnection).expect_err("refused").reason,
            "NotDelegated"
        );
        assert_eq!(
            grants.check_kind(DelegatedKind::TrustPolicy).expect_err("refused").reason,
            "NotDelegated"
        );
        assert_eq!(grants.adoption(APP), None);
    }

    #[test]
    fn single_tenant_grants_everything_it_says() {
        let grants = Grants::for_namespace("acct", &spec(json!({"singleTenant": true})), "any", &labels(&[]));
        assert_eq!(grants.check_assignments(&[assignment(9, WorkspacePermission::Admin)]), Ok(()));
        assert_eq!(grants.check_kind(DelegatedKind::AppConnection), Ok(()));
        assert_eq!(grants.adoption(APP), Some(PrincipalDeletionPolicy::Delete));
    }

    #[test]
    fn rules_apply_to_their_namespaces_and_add_up() {
        let spec = spec(json!({"delegations": [
            {"namespaces": {"names": ["team-a"]}, "workspaces": [{"workspaceId": 1}], "trustPolicies": true},
            {"namespaces": {"selector": {"matchLabels": {"tier": "platform"}}},
             "workspaces": [{"workspaceId": 1, "permission": "ADMIN"}, {"workspaceId": 2}],
             "appConnections": true, "adopt": [{"applicationId": APP.to_uppercase(), "deletionPolicy": "Deactivate"}]},
        ]}));
        let a = Grants::for_namespace("acct", &spec, "team-a", &labels(&[]));
        assert_eq!(a.check_assignments(&[assignment(1, WorkspacePermission::User)]), Ok(()));
        let admin = a.check_assignments(&[assignment(1, WorkspacePermission::Admin)]).expect_err("refused");
        assert!(admin.message.contains("ADMIN in workspace 1"), "{admin:?}");
        assert!(a.check_assignments(&[assignment(2, WorkspacePermission::User)]).is_err());
        assert_eq!(a.check_kind(DelegatedKind::TrustPolicy), Ok(()));
        assert!(a.check_kind(DelegatedKind::AppConnection).is_err());
        assert_eq!(a.adoption(APP), None);

        let both = Grants::for_namespace("acct", &spec, "team-a", &labels(&[("tier", "platform")]));
        assert_eq!(both.check_assignments(&[assignment(1, WorkspacePermission::Admin)]), Ok(()));
        assert_eq!(
            both.check_assignments(&[
                assignment(2, WorkspacePermission::User),
                assignment(1, WorkspacePermission::User)
            ]),
            Ok(())
        );
        assert_eq!(both.check_kind(DelegatedKind::AppConnection), Ok(()));
        assert_eq!(both.adoption(APP), Some(PrincipalDeletionPolicy::Deactivate));

        let other = Grants::for_namespace("acct", &spec, "team-b", &labels(&[("tier", "apps")]));
        assert!(other.check_assignments(&[assignment(1, WorkspacePermission::User)]).is_err());
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
        let facts =
            |p| AdoptionFacts { principal: p, operator_application_id: Some(OPERATOR), other_owner: None };
        assert_eq!(adoption_refusal(&granted, facts(&plain)), None);

        // Granted by mistake: still refused.
        let operator = principal(&OPERATOR.to_uppercase(), None, &[]);
        let refused = adoption_refusal(&granted, facts(&operator)).expect("refused");
        assert_eq!(refused.reason, "AdoptRefused");
        assert!(refused.message.contains("operator itself"), "{refused:?}");

        let admin = principal(APP, None, &["account_admin"]);
        assert!(
            adoption_refusal(&granted, facts(&admin)).expect("refused").message.contains("account admin")
        );

        let owner = OtherOwner { object: "team-b/reporting".into(), created: true };
        let owned = AdoptionFacts { other_owner: Some(&owner), ..facts(&plain) };
        let refused = adoption_refusal(&granted, owned).expect("refused");
        assert!(refused.message.contains("was created for team-b/reporting"), "{refused:?}");

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
        assert_eq!(refused.reason, "AdoptRefused");
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
    fn the_first_live_claim_on_a_principal_stands() {
        let mine = ObjectRecord { namespace: "ns-b".into(), name: "x".into(), uid: "b".into() };
        let theirs = ObjectRecord { namespace: "ns-a".into(), name: "x".into(), uid: "a".into() };
        assert_eq!(adoption_claim(None, false, &mine), &mine);
        assert_eq!(adoption_claim(Some(&theirs), true, &mine), &theirs);
        assert_eq!(adoption_claim(Some(&theirs), false, &mine), &mine, "a deleted object's claim lapses");
        assert_eq!(adoption_claim(Some(&mine), true, &mine), &mine);
    }
}

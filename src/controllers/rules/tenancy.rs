//! What a namespace may do with an account: its `delegations` or `singleTenant`, and which namespaces a set
//! (names or a label selector) includes. Pure functions of what they are given, so every rule is a unit test.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    error::Refusal,
    limits::{Caps, Counted},
    reason::Reason,
};
use crate::crd::{
    AllowedNamespaces, DatabricksAccountSpec, PrincipalDeletionPolicy, UsedBy, WorkspaceAssignment,
    WorkspacePermission,
};

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
    /// Group name patterns the namespace's principals may join.
    groups: Vec<String>,
    /// `usedBy` principal patterns the namespace may name.
    used_by: Vec<String>,
    /// The caps of the rules that select the namespace.
    caps: Caps,
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
        let rules: Vec<_> =
            spec.delegations.iter().filter(|d| namespace_in(&d.namespaces, namespace, labels)).collect();
        // Without delegations the account is not shared: nothing is capped.
        let shared = !spec.single_tenant && !spec.delegations.is_empty();
        grants.caps = if shared { Caps::of(&rules) } else { Caps::unlimited() };
        for rule in rules {
            for workspace in &rule.workspaces {
                let entry = grants.workspaces.entry(workspace.workspace_id).or_insert(workspace.permission);
                *entry = (*entry).max(workspace.permission);
            }
            grants.app_connections |= rule.app_connections;
            grants.trust_policies |= rule.trust_policies;
            grants.groups.extend(rule.groups.iter().cloned());
            grants.used_by.extend(rule.used_by.iter().cloned());
            for adopt in &rule.adopt {
                let entry =
                    grants.adopt.entry(adopt.application_id.to_lowercase()).or_insert(adopt.deletion_policy);
                *entry = strongest(*entry, adopt.deletion_policy);
            }
        }
        grants
    }

    /// What the namespace is capped at.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// Whether the namespace may have one more of `counted` when it has `have` already.
    pub fn check_count(&self, counted: Counted, have: usize) -> Result<(), Refusal> {
        let Some(cap) = self.caps.cap(counted) else { return Ok(()) };
        if have < cap as usize {
            return Ok(());
        }
        let (reason, what) = match counted {
            Counted::ServicePrincipals => (Reason::ServicePrincipalLimitReached, "service principals"),
            Counted::AppConnections => (Reason::AppConnectionLimitReached, "app connections"),
            Counted::TrustPolicies => (Reason::TrustPolicyLimitReached, "trust policies"),
        };
        Err(Refusal {
            reason,
            message: format!(
                "Namespace {} already has {have} {what} on DatabricksAccount {}, the most its delegation allows \
                 (spec.delegations[].limits); delete one or ask for more. Nothing was changed in Databricks",
                self.namespace, self.account
            ),
        })
    }

    /// An app connection's redirect URLs and scopes must be within the delegation's caps.
    pub fn check_app(&self, redirect_urls: &[String], scopes: &[String]) -> Result<(), Refusal> {
        match self.caps.app_refusal(redirect_urls, scopes) {
            None => Ok(()),
            Some(why) => Err(Refusal {
                reason: Reason::AppConnectionNotAllowed,
                message: format!(
                    "DatabricksAccount {} does not let namespace {} register this app connection: {why} \
                     (spec.delegations[].limits). Nothing was changed in Databricks",
                    self.account, self.namespace
                ),
            }),
        }
    }

    /// Whether the account trusts its namespaces with everything.
    pub fn is_single_tenant(&self) -> bool {
        self.single_tenant
    }

    /// The workspaces the namespace may assign.
    pub fn workspaces(&self) -> Vec<i64> {
        self.workspaces.keys().copied().collect()
    }

    /// No grant at all (a namespace the account no longer allows).
    pub fn none(account: &str, namespace: &str) -> Self {
        Grants { account: account.to_owned(), namespace: namespace.to_owned(), ..Grants::default() }
    }

    /// The account these grants are of.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The namespace these grants are for.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn denied(&self, reason: Reason, what: String) -> Refusal {
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
                    return Err(self.denied(
                        Reason::AssignmentNotAllowed,
                        format!("workspace {}", assignment.workspace_id),
                    ));
                }
                Some(granted) if wanted > *granted => {
                    return Err(self.denied(
                        Reason::AssignmentNotAllowed,
                        format!("ADMIN in workspace {}", assignment.workspace_id),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Whether the namespace's principals may join the group named `name`.
    pub fn group_allowed(&self, name: &str) -> bool {
        self.single_tenant || self.groups.iter().any(|pattern| glob_matches(pattern, name))
    }

    /// Every group must be delegated.
    pub fn check_groups(&self, groups: &[String]) -> Result<(), Refusal> {
        match groups.iter().find(|g| !self.group_allowed(g)) {
            Some(group) => Err(self.denied(Reason::GroupNotAllowed, format!("group {group:?}"))),
            None => Ok(()),
        }
    }

    /// Whether the namespace may name `principal` in `usedBy`; `own`: the application ids of its own principals.
    pub fn used_by_allowed(&self, principal: &str, own: &[String]) -> bool {
        let own_principal = principal
            .strip_prefix("servicePrincipals/")
            .is_some_and(|app| own.iter().any(|o| o.eq_ignore_ascii_case(app)));
        self.single_tenant
            || own_principal
            || self.used_by.iter().any(|pattern| glob_matches(pattern, principal))
    }

    /// Every `usedBy` entry must be the namespace's own principal or delegated.
    pub fn check_used_by(&self, used_by: &[UsedBy], own: &[String]) -> Result<(), Refusal> {
        match used_by.iter().find(|u| !self.used_by_allowed(&u.principal, own)) {
            Some(entry) => Err(self.denied(Reason::UsedByNotAllowed, format!("usedBy {}", entry.principal))),
            None => Ok(()),
        }
    }

    /// The highest permission the namespace may assign in `workspace`, if any.
    pub fn permission(&self, workspace: i64) -> Option<WorkspacePermission> {
        if self.single_tenant {
            Some(WorkspacePermission::Admin)
        } else {
            self.workspaces.get(&workspace).copied()
        }
    }

    /// App connections and trust policies need a grant.
    pub fn check_kind(&self, kind: DelegatedKind) -> Result<(), Refusal> {
        let (granted, what) = match kind {
            DelegatedKind::AppConnection => (self.app_connections, "app connections (appConnections)"),
            DelegatedKind::TrustPolicy => (self.trust_policies, "trust policies (trustPolicies)"),
        };
        if self.single_tenant || granted {
            Ok(())
        } else {
            Err(self.denied(Reason::NotDelegated, what.to_owned()))
        }
    }

    /// The most an adopting object's deletion may do to `application_id`, when its adoption is granted.
    pub fn adoption(&self, application_id: &str) -> Option<PrincipalDeletionPolicy> {
        if self.single_tenant {
            return Some(PrincipalDeletionPolicy::Delete);
        }
        self.adopt.get(&application_id.to_lowercase()).copied()
    }
}

/// Whether `name` matches `pattern` without regard to case, `*` matching any run of characters (also none).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_lowercase(), name.to_lowercase());
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

pub fn rank(policy: PrincipalDeletionPolicy) -> u8 {
    match policy {
        PrincipalDeletionPolicy::Orphan => 0,
        PrincipalDeletionPolicy::Deactivate => 1,
        PrincipalDeletionPolicy::Delete => 2,
    }
}

fn strongest(a: PrincipalDeletionPolicy, b: PrincipalDeletionPolicy) -> PrincipalDeletionPolicy {
    if rank(a) >= rank(b) { a } else { b }
}

/// Label selector semantics (matchLabels and matchExpressions: In, NotIn, Exists, DoesNotExist).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn spec(value: serde_json::Value) -> DatabricksAccountSpec {
        let mut base =
            json!({"accountId": "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a", "auth": {"workloadIdentity": {}}});
        base.as_object_mut().expect("object").extend(value.as_object().expect("object").clone());
        serde_json::from_value(base).expect("spec")
    }

    fn assignment(workspace: i64, permission: WorkspacePermission) -> WorkspaceAssignment {
        WorkspaceAssignment { workspace_id: workspace, permissions: vec![permission] }
    }

    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    pub(crate) const APP: &str = "6a1f2c3d-0000-4000-8000-000000000001";

    #[test]
    fn no_rules_grant_principals_only() {
        let grants = Grants::for_namespace("acct", &spec(json!({})), "team-a", &labels(&[]));
        assert_eq!(grants.check_assignments(&[]), Ok(()));
        let refused =
            grants.check_assignments(&[assignment(1, WorkspacePermission::User)]).expect_err("refused");
        assert_eq!(refused.reason, Reason::AssignmentNotAllowed);
        assert!(refused.message.contains("workspace 1") && refused.message.contains("team-a"), "{refused:?}");
        assert_eq!(
            grants.check_kind(DelegatedKind::AppConnection).expect_err("refused").reason,
            Reason::NotDelegated
        );
        assert_eq!(
            grants.check_kind(DelegatedKind::TrustPolicy).expect_err("refused").reason,
            Reason::NotDelegated
        );
        assert_eq!(grants.adoption(APP), None);
    }

    #[test]
    fn groups_are_granted_by_name_or_pattern_without_case() {
        assert!(glob_matches("team-a", "Team-A"));
        assert!(!glob_matches("team-a", "team-ab"));
        assert!(glob_matches("team-a-*", "team-a-readers"));
        assert!(glob_matches("team-a-*", "team-a-"));
        assert!(!glob_matches("team-a-*", "team-b-readers"));
        assert!(glob_matches("*-readers", "x-readers"));
        assert!(!glob_matches("*-readers", "x-writers"));
        assert!(glob_matches("a*b*c", "aXbYc"));
        assert!(!glob_matches("a*b*c", "acb"));
        assert!(!glob_matches("ab*ba", "aba"), "the parts may not overlap");
        assert!(glob_matches("*", "admins"));
        let granted = Grants::for_namespace(
            "acct",
            &spec(json!({"delegations": [{"namespaces": {"names": ["a"]}, "groups": ["team-a-*"]}]})),
            "a",
            &labels(&[]),
        );
        assert!(granted.check_groups(&["team-a-readers".into()]).is_ok());
        let refused = granted.check_groups(&["team-a-readers".into(), "admins".into()]).expect_err("admins");
        assert_eq!(refused.reason, Reason::GroupNotAllowed);
        assert!(refused.message.contains("\"admins\""), "{}", refused.message);
        let other = Grants::for_namespace("acct", &spec(json!({"delegations": []})), "b", &labels(&[]));
        assert!(other.check_groups(&["team-a-readers".into()]).is_err(), "none by default");
    }

    #[test]
    fn used_by_names_own_principals_or_delegated_patterns_only() {
        let granted = Grants::for_namespace(
            "acct",
            &spec(json!({"delegations": [{"namespaces": {"names": ["a"]},
                    "usedBy": ["users/*@a.example.com", "groups/team-a-*"]}]})),
            "a",
            &labels(&[]),
        );
        let own = [APP.to_owned()];
        let entry = |p: &str| UsedBy { principal: p.into(), role: crate::crd::UsedByRole::User };
        assert!(
            granted
                .check_used_by(&[entry("users/Jo@A.example.com"), entry("groups/team-a-ops")], &own)
                .is_ok()
        );
        assert!(
            granted
                .check_used_by(&[entry(&format!("servicePrincipals/{}", APP.to_uppercase()))], &own)
                .is_ok()
        );
        for refused in [
            "users/jo@b.example.com",
            "groups/admins",
            "servicePrincipals/7f4e2c1a-0000-4000-8000-00000000000b",
        ] {
            let err = granted.check_used_by(&[entry(refused)], &own).expect_err(refused);
            assert_eq!(err.reason, Reason::UsedByNotAllowed);
            assert!(err.message.contains(refused), "{}", err.message);
        }
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
}

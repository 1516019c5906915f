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
    AllowedNamespaces, DatabricksAccountSpec, PrincipalDeletionPolicy, WorkspaceAssignment,
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

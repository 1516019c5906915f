//! Who may use or manage a principal: the rule set to write so that the spec's entries are granted and the entries
//! the operator wrote before and the spec no longer lists are not, every other entry (others', the operator's own
//! manager grant) kept as it is. Principals compare without case.

use crate::{crd::UsedBy, databricks::types::GrantRule};

/// What one write of the rule set does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UseChange {
    /// The whole rule set to write.
    pub rules: Vec<GrantRule>,
    /// Entries granted by this write.
    pub added: Vec<UsedBy>,
    /// Entries the operator wrote before, removed by this write.
    pub removed: Vec<UsedBy>,
}

fn holds(rules: &[GrantRule], entry: &UsedBy) -> bool {
    let role = entry.role.rule_set_role();
    rules
        .iter()
        .any(|r| r.role == role && r.principals.iter().any(|p| p.eq_ignore_ascii_case(&entry.principal)))
}

/// The entries of `wanted` the rule set holds.
pub fn present(current: &[GrantRule], wanted: &[UsedBy]) -> Vec<UsedBy> {
    wanted.iter().filter(|w| holds(current, w)).cloned().collect()
}

fn same(a: &UsedBy, b: &UsedBy) -> bool {
    a.role == b.role && a.principal.eq_ignore_ascii_case(&b.principal)
}

/// The write that brings `current` to `wanted` (given what the operator `recorded` as its own). `None`: nothing to
/// write.
pub fn merge(current: &[GrantRule], wanted: &[UsedBy], recorded: &[UsedBy]) -> Option<UseChange> {
    let mut added: Vec<UsedBy> = Vec::new();
    for entry in wanted.iter().filter(|e| !holds(current, e)) {
        if !added.iter().any(|a| same(a, entry)) {
            added.push(entry.clone());
        }
    }
    let removed: Vec<UsedBy> = recorded
        .iter()
        .filter(|r| !wanted.iter().any(|w| same(w, r)) && holds(current, r))
        .cloned()
        .collect();
    if added.is_empty() && removed.is_empty() {
        return None;
    }
    let mut rules: Vec<GrantRule> = current
        .iter()
        .map(|rule| GrantRule {
            role: rule.role.clone(),
            principals: rule
                .principals
                .iter()
                .filter(|p| {
                    !removed
                        .iter()
                        .any(|r| r.role.rule_set_role() == rule.role && r.principal.eq_ignore_ascii_case(p))
                })
                .cloned()
                .collect(),
        })
        .collect();
    for entry in &added {
        let role = entry.role.rule_set_role();
        match rules.iter_mut().find(|r| r.role == role) {
            Some(rule) => rule.principals.push(entry.principal.clone()),
            None => {
                rules.push(GrantRule { role: role.to_owned(), principals: vec![entry.principal.clone()] })
            }
        }
    }
    rules.retain(|r| !r.principals.is_empty());
    Some(UseChange { rules, added, removed })
}

/// What the operator holds as its own once `change` is written (`None`: nothing written): what it recorded and is
/// still wanted, and what it added. An entry that was there before it was wanted is never the operator's.
pub fn recorded_after(
    recorded: &[UsedBy],
    wanted: &[UsedBy],
    current: &[GrantRule],
    change: Option<&UseChange>,
) -> Vec<UsedBy> {
    let mut kept: Vec<UsedBy> = recorded
        .iter()
        .filter(|r| wanted.iter().any(|w| same(w, r)))
        .filter(|r| change.is_some() || holds(current, r))
        .cloned()
        .collect();
    for added in change.map(|c| &c.added[..]).unwrap_or_default() {
        if !kept.iter().any(|k| same(k, added)) {
            kept.push(added.clone());
        }
    }
    normalized(kept)
}

/// Entries sorted (role, then principal without case), each once: how a claim records them.
pub fn normalized(mut entries: Vec<UsedBy>) -> Vec<UsedBy> {
    entries.sort_by_key(|e| (e.role, e.principal.to_lowercase()));
    entries.dedup_by(|a, b| same(a, b));
    entries
}

/// "groups/team (User), users/a@x.io (Manager)".
pub fn describe(entries: &[UsedBy]) -> String {
    entries.iter().map(|e| format!("{} ({:?})", e.principal, e.role)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::UsedByRole;

    const USER: &str = "roles/servicePrincipal.user";
    const MANAGER: &str = "roles/servicePrincipal.manager";
    const OPERATOR: &str = "servicePrincipals/6a1f2c3d-0000-4000-8000-0000000000aa";

    fn rule(role: &str, principals: &[&str]) -> GrantRule {
        GrantRule { role: role.into(), principals: principals.iter().map(|p| (*p).to_owned()).collect() }
    }

    fn uses(principal: &str, role: UsedByRole) -> UsedBy {
        UsedBy { principal: principal.into(), role }
    }

    #[test]
    fn wanted_entries_are_added_beside_everything_else() {
        let current = [rule(MANAGER, &[OPERATOR]), rule(USER, &["users/other@example.com"])];
        let wanted = [uses("groups/team", UsedByRole::User), uses("groups/team", UsedByRole::Manager)];
        let change = merge(&current, &wanted, &[]).expect("a write");
        assert_eq!(
            change.rules,
            [
                rule(MANAGER, &[OPERATOR, "groups/team"]),
                rule(USER, &["users/other@example.com", "groups/team"])
            ]
        );
        assert_eq!(change.added.len(), 2);
        assert!(change.removed.is_empty());
        assert_eq!(recorded_after(&[], &wanted, &current, Some(&change)).len(), 2);
        assert_eq!(merge(&change.rules, &wanted, &wanted), None, "in sync: no write");
    }

    #[test]
    fn only_recorded_entries_are_ever_removed() {
        let current =
            [rule(MANAGER, &[OPERATOR, "groups/team"]), rule(USER, &["groups/Team", "users/a@x.io"])];
        // The spec drops everything; the operator recorded only the user grant of the team.
        let recorded = [uses("groups/team", UsedByRole::User)];
        let change = merge(&current, &[], &recorded).expect("a write");
        assert_eq!(change.rules, [rule(MANAGER, &[OPERATOR, "groups/team"]), rule(USER, &["users/a@x.io"])]);
        assert_eq!(change.removed, recorded);
        assert!(recorded_after(&recorded, &[], &current, Some(&change)).is_empty());
        // The operator's own grant is never recorded, so never removed, even when the spec named it.
        let wanted = [uses(OPERATOR, UsedByRole::Manager)];
        assert_eq!(merge(&current, &wanted, &[]), None);
        assert!(recorded_after(&[], &wanted, &current, None).is_empty(), "it was there before");
    }

    #[test]
    fn a_recorded_entry_removed_in_the_console_is_added_back_and_an_empty_role_goes() {
        let recorded = [uses("users/a@x.io", UsedByRole::User)];
        let current = [rule(MANAGER, &[OPERATOR])];
        let change = merge(&current, &recorded, &recorded).expect("a write");
        assert_eq!(change.added, recorded);
        let after = [rule(MANAGER, &[OPERATOR]), rule(USER, &["users/a@x.io"])];
        assert_eq!(change.rules, after);
        let dropped = merge(&after, &[], &recorded).expect("a write");
        assert_eq!(dropped.rules, [rule(MANAGER, &[OPERATOR])], "no empty user rule is left");
    }
}

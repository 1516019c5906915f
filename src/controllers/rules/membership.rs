//! Which account groups a principal joins and leaves: the spec's groups against the groups the principal is a
//! direct member of and the memberships its claim records (the operator's own). Group names compare without case,
//! as SCIM compares them.

use crate::{crd::ClaimedGroup, databricks::types::ComplexValue};

/// What a pass does to the principal's memberships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPlan {
    /// Groups to join, by name, with their id when the claim knows it (`None`: looked up by name). `true`: the
    /// claim records the membership, so it was removed outside the operator.
    pub join: Vec<(String, Option<String>, bool)>,
    /// Memberships the claim records and the spec no longer lists: left.
    pub leave: Vec<ClaimedGroup>,
    /// What the claim records once the pass is done (the joined groups are added as their ids are known).
    pub keep: Vec<ClaimedGroup>,
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

/// The plan for `wanted` (the spec's group names) given `current` (the principal's `groups`: id in `value`, name in
/// `display`) and `recorded` (the claim's). A membership a created principal already has is recorded, so the spec
/// owns it from now on; one an adopted principal had before is the platform's and is never recorded.
pub fn plan_groups(
    wanted: &[String],
    current: &[ComplexValue],
    recorded: &[ClaimedGroup],
    adopted: bool,
) -> GroupPlan {
    let mut plan = GroupPlan::default();
    let member_of = |name: &str| {
        current
            .iter()
            .find(|g| g.display.as_deref().is_some_and(|d| same(d, name)))
            .and_then(|g| g.value.clone())
    };
    let holds = |id: &str| current.iter().any(|g| g.value.as_deref() == Some(id));
    for name in dedup(wanted) {
        let record = recorded.iter().find(|r| same(&r.display_name, name));
        // A recorded membership counts by its id (the group may have been renamed since).
        let member = member_of(name).or_else(|| record.filter(|r| holds(&r.id)).map(|r| r.id.clone()));
        match (member, record) {
            (Some(_), Some(record)) => plan.keep.push(record.clone()),
            (Some(id), None) if !adopted => {
                plan.keep.push(ClaimedGroup { id, display_name: name.to_owned() });
            }
            (Some(_), None) => {}
            (None, record) => {
                plan.join.push((name.to_owned(), record.map(|r| r.id.clone()), record.is_some()));
                plan.keep.extend(record.cloned());
            }
        }
    }
    plan.leave =
        recorded.iter().filter(|r| !wanted.iter().any(|name| same(name, &r.display_name))).cloned().collect();
    plan
}

fn dedup(names: &[String]) -> Vec<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if !seen.iter().any(|s| same(s, name)) {
            seen.push(name);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, name: &str) -> ComplexValue {
        ComplexValue { value: Some(id.into()), display: Some(name.into()) }
    }

    fn claimed(id: &str, name: &str) -> ClaimedGroup {
        ClaimedGroup { id: id.into(), display_name: name.into() }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_new_group_is_joined_by_name_and_a_dropped_one_left() {
        let plan = plan_groups(
            &names(&["team", "readers"]),
            &[group("1", "readers")],
            &[claimed("1", "readers")],
            false,
        );
        assert_eq!(plan.join, vec![("team".to_owned(), None, false)]);
        assert_eq!(plan.keep, vec![claimed("1", "readers")]);
        assert!(plan.leave.is_empty());
        let plan = plan_groups(&names(&[]), &[group("1", "readers")], &[claimed("1", "readers")], false);
        assert_eq!(plan.leave, vec![claimed("1", "readers")]);
        assert!(plan.keep.is_empty() && plan.join.is_empty());
    }

    #[test]
    fn a_membership_removed_outside_the_operator_is_rejoined_by_its_recorded_id() {
        let plan = plan_groups(&names(&["Team"]), &[], &[claimed("7", "team")], false);
        assert_eq!(plan.join, vec![("Team".to_owned(), Some("7".to_owned()), true)]);
        assert_eq!(plan.keep, vec![claimed("7", "team")]);
    }

    #[test]
    fn an_adopted_principals_own_memberships_are_never_recorded_nor_left() {
        let current = [group("1", "platform"), group("2", "team")];
        let plan = plan_groups(&names(&["team"]), &current, &[], true);
        assert_eq!(plan, GroupPlan::default(), "already a member: nothing to do, nothing recorded");
        // A created principal's membership the spec lists becomes the operator's.
        let plan = plan_groups(&names(&["team"]), &current, &[], false);
        assert_eq!(plan.keep, vec![claimed("2", "team")]);
        assert!(plan.leave.is_empty(), "a group the spec never listed and the claim never recorded stays");
    }

    #[test]
    fn a_recorded_membership_of_a_renamed_group_still_counts() {
        let plan = plan_groups(&names(&["team"]), &[group("7", "team-old")], &[claimed("7", "team")], false);
        assert!(plan.join.is_empty(), "no write at every pass");
        assert_eq!(plan.keep, vec![claimed("7", "team")]);
    }

    #[test]
    fn names_listed_twice_in_any_case_are_one_group() {
        let plan = plan_groups(&names(&["team", "TEAM"]), &[], &[], false);
        assert_eq!(plan.join.len(), 1);
    }
}

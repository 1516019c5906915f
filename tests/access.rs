//! A ServicePrincipal's access against the real control plane and the emulator. Groups: joined, kept (a
//! membership removed in the console comes back), left one membership at a time, a missing group said so. Who may
//! use it (`usedBy`): written beside everyone else's entries, under a concurrent writer, kept and removed.

mod support;

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};
use serde_json::json;
use support::{
    TestEnv,
    operator::{Operator, OperatorOptions},
    wait_for,
};

const READY: Duration = Duration::from_secs(60);

async fn members(operator: &Operator, group: &str) -> Vec<String> {
    let group = operator.admin.get_group(group).await.expect("group");
    group.members.into_iter().filter_map(|m| m.value).collect()
}

async fn notes(env: &TestEnv, name: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.namespace);
    let list = api.list(&ListParams::default()).await.expect("events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_joined_kept_and_left_one_membership_at_a_time() {
    let env = TestEnv::new().await;
    // A short resync: drift is found at full passes.
    let operator =
        env.operator(OperatorOptions { resync: Duration::from_secs(2), ..Default::default() }).await;
    let team = operator.admin.create_group("team-analytics").await.expect("group");
    let readers = operator.admin.create_group("readers").await.expect("group");
    // The group's other member, which no change of this object may touch.
    let other = operator
        .admin
        .create_service_principal(&databricks_oauth_operator::databricks::types::NewServicePrincipal::new(
            "someone-else",
            true,
            None,
        ))
        .await
        .expect("other");
    operator.admin.add_group_member(&team.id, &other.id).await.expect("member");

    env.create_principal(&operator, "team-sp", json!({"groups": ["team-analytics", "Readers"]})).await;
    let sp = env.wait_condition("team-sp", "Ready", "True", READY).await;
    let id = sp.status.as_ref().and_then(|s| s.id.clone()).expect("id");
    let mut in_team = members(&operator, &team.id).await;
    in_team.sort();
    let mut expected = vec![id.clone(), other.id.clone()];
    expected.sort();
    assert_eq!(in_team, expected, "joined, beside the group's other member");
    assert_eq!(members(&operator, &readers.id).await, vec![id.clone()], "names compare without case");
    assert_eq!(notes(&env, "team-sp", "GroupJoined").await.len(), 2);

    // Removed in the console: added back at the next pass, and said so.
    operator.admin.remove_group_member(&team.id, &id).await.expect("drift");
    wait_for(READY, || async { members(&operator, &team.id).await.contains(&id).then_some(()) })
        .await
        .expect("drift reverted");
    wait_for(READY, || async {
        let notes = notes(&env, "team-sp", "GroupJoined").await;
        notes.iter().any(|n| n.contains("removed outside the operator")).then_some(())
    })
    .await
    .expect("the revert is an event");

    // Dropped from the spec: only this principal leaves.
    env.patch_principal("team-sp", json!({"spec": {"groups": ["readers"]}})).await;
    wait_for(READY, || async {
        (members(&operator, &team.id).await == vec![other.id.clone()]).then_some(())
    })
    .await
    .expect("left, the other member stays");
    assert_eq!(members(&operator, &readers.id).await, vec![id.clone()]);
    assert_eq!(notes(&env, "team-sp", "GroupLeft").await, ["Left group team-analytics"]);

    // A group that does not exist: said so, nothing else changes.
    env.patch_principal("team-sp", json!({"spec": {"groups": ["readers", "no-such-group"]}})).await;
    let sp = env.wait_condition("team-sp", "Ready", "False", READY).await;
    let ready =
        sp.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("ready");
    assert_eq!(ready.reason, "GroupNotFound");
    assert!(ready.message.contains("\"no-such-group\""), "{}", ready.message);
    assert_eq!(members(&operator, &readers.id).await, vec![id.clone()]);

    // Deleted: the principal goes, and with it its memberships; the groups and their other members stay.
    env.delete_principal("team-sp").await;
    env.wait_gone("team-sp", READY).await;
    assert!(members(&operator, &readers.id).await.is_empty());
    assert_eq!(members(&operator, &team.id).await, vec![other.id.clone()]);
}

const USER: &str = "roles/servicePrincipal.user";
const MANAGER: &str = "roles/servicePrincipal.manager";

/// The principal's rule set as (role, principal) pairs, sorted.
async fn grants(operator: &Operator, application_id: &str) -> Vec<(String, String)> {
    let name = operator.admin.principal_rule_set_name(application_id);
    let rule_set = operator.admin.get_rule_set(&name).await.expect("rule set");
    let mut pairs: Vec<(String, String)> = rule_set
        .grant_rules
        .into_iter()
        .flat_map(|r| r.principals.into_iter().map(move |p| (r.role.clone(), p)))
        .collect();
    pairs.sort();
    pairs
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> =
        list.iter().map(|(r, p)| ((*r).to_owned(), (*p).to_owned())).collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_by_is_written_beside_everyone_elses_entries_even_under_a_concurrent_writer() {
    let env = TestEnv::new().await;
    // The default resync: every read of the rule set is a pass this test asked for.
    let operator = env.operator(OperatorOptions::default()).await;
    operator.admin.create_group("team-analytics").await.expect("group");
    let creator = format!("servicePrincipals/{}", support::operator::ADMIN_ID);
    env.create_principal(&operator, "runner", json!({"usedBy": [{"principal": "groups/team-analytics"}]}))
        .await;
    let sp = env.wait_condition("runner", "Ready", "True", READY).await;
    let app = sp.status.as_ref().and_then(|s| s.application_id.clone()).expect("application id");
    assert_eq!(
        grants(&operator, &app).await,
        pairs(&[(MANAGER, &creator), (USER, "groups/team-analytics")]),
        "the team may run as it; its creator (the operator) still manages it"
    );

    // Another writer lands between the operator's read and its write: the write is refused for its stale etag,
    // read again and merged, and the other writer's entry stays.
    operator.emulator.write_rule_set_before_next_write(&app, USER, "users/other@example.com").await;
    env.patch_principal(
        "runner",
        json!({"spec": {"usedBy": [{"principal": "groups/team-analytics"},
                                   {"principal": "users/ana@example.com", "role": "Manager"}]}}),
    )
    .await;
    let want = pairs(&[
        (MANAGER, &creator),
        (MANAGER, "users/ana@example.com"),
        (USER, "groups/team-analytics"),
        (USER, "users/other@example.com"),
    ]);
    wait_for(READY, || async { (grants(&operator, &app).await == want).then_some(()) })
        .await
        .unwrap_or_else(|_| panic!("merged under the concurrent writer: {:?}", want));
    let granted = notes(&env, "runner", "UsedByGranted").await;
    assert!(granted.iter().any(|n| n.contains("read again 1 time(s)")), "{granted:?}");
    let conflicts = operator
        .emulator
        .stats()
        .await
        .operations
        .get("rule_sets.put")
        .map(|o| o.statuses.get(&409).copied());
    assert_eq!(conflicts, Some(Some(1)), "exactly one write lost to the other writer");

    // Removed in the console: written again at the next pass.
    let name = operator.admin.principal_rule_set_name(&app);
    let read = operator.admin.get_rule_set(&name).await.expect("read");
    let without: Vec<_> = read
        .grant_rules
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.principals.retain(|p| p != "groups/team-analytics");
            r
        })
        .collect();
    operator.admin.put_rule_set(&name, &read.etag, &without).await.expect("drift");
    let poke = json!({"metadata": {"annotations": {"oauth.databricks-operator.io/reconcile": "drift"}}});
    env.patch_principal("runner", poke).await;
    wait_for(READY, || async { (grants(&operator, &app).await == want).then_some(()) })
        .await
        .expect("drift reverted");

    // Dropped from the spec: only the operator's entries go.
    env.patch_principal("runner", json!({"spec": {"usedBy": null}})).await;
    let left = pairs(&[(MANAGER, &creator), (USER, "users/other@example.com")]);
    wait_for(READY, || async { (grants(&operator, &app).await == left).then_some(()) })
        .await
        .expect("only the operator's own entries removed");
    assert!(!notes(&env, "runner", "UsedByRemoved").await.is_empty());
}

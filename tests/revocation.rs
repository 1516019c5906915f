//! Revocation and the platform's caps: each finding of the security review that needs a grant taken back, a
//! release, a cap or a status edit (H1, H2, M1, M2, M3, M4, M7, M8, L2, L8), run as a tenant through the shipped
//! `edit` role (and, where a finding needs it, with `/status` too), each asserting the remote state in the
//! emulator, not only the condition: after a revocation the principal is no longer ADMIN, the policy and the
//! integration are gone, a released adoption leaves nothing of the tenant's, and a cap holds.
//!
//! Every test runs its own control plane (see `support::tenants`), with a short `spec.revocation.gracePeriod`.

mod support;

use std::time::Duration;

use databricks_emulator::FaultRule;
use databricks_oauth_operator::{
    crd::{DatabricksAccount, DatabricksAppConnection, DatabricksClaim, ServicePrincipal, TrustPolicy},
    databricks::types::FederationPolicy,
};
use k8s_openapi::api::core::v1::{ResourceQuota, Secret};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    operator::{ACCOUNT_ID, OperatorOptions, WORKSPACES, admin_client, emulator},
    tenants::*,
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The grace every world here gives a revoked object (the default is a minute).
const GRACE: &str = "2s";

/// The principal's permissions in a workspace, as Databricks has them.
async fn permissions(world: &World, workspace: i64, principal_id: &str) -> Option<Vec<String>> {
    let id: i64 = principal_id.parse().expect("numeric");
    let listed = world.operator.admin.list_workspace_assignments(workspace).await.expect("assignments");
    listed.into_iter().find(|x| x.principal.principal_id == Some(id)).map(|x| x.permissions)
}

/// Waits until `name`'s Ready condition has `reason` and a message containing `text`.
async fn wait_message<K>(tenant: &Tenant, name: &str, reason: &str, text: &str) -> String
where
    K: Kind,
{
    let what = format!("no Ready={reason} saying {text:?}");
    wait_matching::<K>(tenant, name, &what, |c| {
        c["type"] == "Ready"
            && c["reason"] == reason
            && c["message"].as_str().is_some_and(|m| m.contains(text))
    })
    .await
}

/// Waits until `check` holds for the emulator's state.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(TIMEOUT, || async { check().await.then_some(()) })
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {TIMEOUT:?}"));
}

/// The federation policy id a TrustPolicy's status records.
async fn policy_of(tenant: &Tenant, name: &str) -> String {
    let policy = api::<TrustPolicy>(tenant).get(name).await.expect("trust policy");
    policy.status.and_then(|s| s.policy_id).expect("a policy id")
}

fn oidc(subject: &str) -> Value {
    json!({"issuer": "https://ci.example.com", "subject": subject})
}

/// Team-a adopts `legacy` (with a secret) and puts TrustPolicy `name` on it; the secret and the policy's id.
async fn adopted_with_policy(world: &World, a: &Tenant, adopt: Value, name: &str) -> (String, String) {
    let (_, secret) = ready_principal(world, a, "legacy", adopt).await;
    create::<TrustPolicy>(
        world,
        a,
        name,
        json!({"servicePrincipalRef": {"name": "legacy"}, "oidc": oidc("a")}),
    )
    .await;
    wait_condition::<TrustPolicy>(a, name, "Ready", "True", None).await;
    (secret, policy_of(a, name).await)
}

async fn policy_gone(world: &World, principal_id: &str, policy_id: &str) -> bool {
    world.operator.admin.get_federation_policy(principal_id, policy_id).await.is_err_and(|e| e.is_not_found())
}

async fn app_gone(world: &World, integration_id: &str) -> bool {
    world.operator.admin.get_custom_app(integration_id).await.is_err_and(|e| e.is_not_found())
}

/// How many times the emulator answered `operation`.
async fn count(world: &World, operation: &str) -> u64 {
    world.operator.emulator.stats().await.count(operation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_grant_takes_back_assignments_policies_and_integrations() {
    let world = World::new(|a, _| {
        json!({"revocation": {"gracePeriod": GRACE}, "delegations": [{"namespaces": {"names": [a]},
            "appConnections": true, "trustPolicies": true, "workspaces": [
            {"workspaceId": WORKSPACES[0]}, {"workspaceId": WORKSPACES[1], "permission": "ADMIN"}]}]})
    })
    .await;
    let a = &world.a;
    let both = json!([{"workspaceId": WORKSPACES[0], "permissions": ["USER"]},
        {"workspaceId": WORKSPACES[1], "permissions": ["ADMIN"]}]);
    let (principal, secret) =
        ready_principal(&world, a, "etl", json!({"credentials": {}, "workspaceAssignments": both})).await;
    let portal = ready_app(&world, a, "portal", json!({"redirectUrls": ["https://a.example.com/cb"]})).await;
    create::<TrustPolicy>(
        &world,
        a,
        "ci",
        json!({"servicePrincipalRef": {"name": "etl"}, "oidc": oidc("ci")}),
    )
    .await;
    wait_condition::<TrustPolicy>(a, "ci", "Ready", "True", None).await;
    let policy = policy_of(a, "ci").await;
    // The tenant pauses all three first: a pause stops what the object asks for, not the revocation.
    let paused = annotate("oauth.databricks-operator.io/paused", json!("true"));
    merge::<ServicePrincipal>(a, "etl", paused.clone(), false).await;
    merge::<DatabricksAppConnection>(a, "portal", paused.clone(), false).await;
    merge::<TrustPolicy>(a, "ci", paused.clone(), false).await;
    wait_condition::<TrustPolicy>(a, "ci", "Ready", "False", Some("Paused")).await;

    // The platform team narrows the grant: USER only in the second workspace, no app connections, no trust
    // policies.
    patch_account(
        &world,
        json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]},
        "workspaces": [{"workspaceId": WORKSPACES[0]}, {"workspaceId": WORKSPACES[1]}]}]}}),
    )
    .await;
    let lowered = format!("lowered to USER in workspace {}", WORKSPACES[1]);
    wait_message::<ServicePrincipal>(a, "etl", "AssignmentNotAllowed", &lowered).await;
    assert_eq!(permissions(&world, WORKSPACES[1], &principal.id).await, Some(vec!["USER".to_owned()]));
    assert_eq!(
        permissions(&world, WORKSPACES[0], &principal.id).await,
        Some(vec!["USER".to_owned()]),
        "what the grant still allows stays"
    );
    assert!(world.operator.works(&principal.application_id, &secret).await, "the principal itself stays");
    // The integration and the policy say when they go, then go.
    let message =
        wait_message::<DatabricksAppConnection>(a, "portal", "NotDelegated", "appConnections").await;
    assert!(message.contains("gracePeriod") || message.contains("was deleted"), "{message}");
    eventually("the integration's deletion", || app_gone(&world, &portal)).await;
    wait_message::<DatabricksAppConnection>(a, "portal", "NotDelegated", "was deleted").await;
    eventually("the policy's deletion", || policy_gone(&world, &principal.id, &policy)).await;
    wait_message::<TrustPolicy>(a, "ci", "NotDelegated", "was deleted").await;
    assert_eq!(events(&world, a, "etl", "AssignmentRevoked").await.len(), 1);
    assert_eq!(events(&world, a, "portal", "Revoked").await.len(), 1);
    assert_eq!(events(&world, a, "ci", "Revoked").await.len(), 1);

    // The workspace itself is taken back: the assignment goes.
    patch_account(
        &world,
        json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]},
        "workspaces": [{"workspaceId": WORKSPACES[0]}]}]}}),
    )
    .await;
    let removed = format!("removed from workspace {}", WORKSPACES[1]);
    wait_message::<ServicePrincipal>(a, "etl", "AssignmentNotAllowed", &removed).await;
    assert_eq!(permissions(&world, WORKSPACES[1], &principal.id).await, None);
    // The tenant follows: the object is in sync with what remains.
    merge::<ServicePrincipal>(a, "etl", annotate("oauth.databricks-operator.io/paused", Value::Null), false)
        .await;
    let remaining = json!({"spec": {"workspaceAssignments": [
        {"workspaceId": WORKSPACES[0], "permissions": ["USER"]}]}});
    merge::<ServicePrincipal>(a, "etl", remaining, false).await;
    wait_condition::<ServicePrincipal>(a, "etl", "Ready", "True", None).await;

    // Granted again (and unpaused), the kinds come back as new remote objects.
    let unpaused = annotate("oauth.databricks-operator.io/paused", Value::Null);
    merge::<DatabricksAppConnection>(a, "portal", unpaused.clone(), false).await;
    merge::<TrustPolicy>(a, "ci", unpaused, false).await;
    patch_account(
        &world,
        json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]},
        "appConnections": true, "trustPolicies": true, "workspaces": [{"workspaceId": WORKSPACES[0]}]}]}}),
    )
    .await;
    poke::<DatabricksAppConnection>(a, "portal", "1").await;
    wait_condition::<DatabricksAppConnection>(a, "portal", "Ready", "True", None).await;
    assert_ne!(integration_of(a, "portal").await, portal, "a new integration");
    poke::<TrustPolicy>(a, "ci", "1").await;
    wait_condition::<TrustPolicy>(a, "ci", "Ready", "True", None).await;
    world.nothing_written_elsewhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_no_longer_allowed_loses_what_it_created_until_allowed_again() {
    let world = World::new(|a, b| {
        json!({"allowedNamespaces": {"names": [a, b]},
            "revocation": {"gracePeriod": GRACE, "principals": "Deactivate"},
            "delegations": [{"namespaces": {"names": [a]}, "appConnections": true, "trustPolicies": true}]})
    })
    .await;
    let (a, b) = (&world.a, &world.b);
    let (worker, secret) = ready_principal(&world, a, "worker", json!({"credentials": {}})).await;
    let (other, other_secret) = ready_principal(&world, b, "other", json!({"credentials": {}})).await;
    let portal = ready_app(&world, a, "portal", json!({"redirectUrls": ["https://a.example.com/cb"]})).await;
    create::<TrustPolicy>(
        &world,
        a,
        "ci",
        json!({"servicePrincipalRef": {"name": "worker"}, "oidc": oidc("ci")}),
    )
    .await;
    wait_condition::<TrustPolicy>(a, "ci", "Ready", "True", None).await;
    let policy = policy_of(a, "ci").await;

    // team-a may no longer use the account: after the grace its principal is deactivated (its secrets deleted),
    // its integration and policy deleted. Nothing is abandoned.
    patch_account(&world, json!({"spec": {"allowedNamespaces": {"names": [b.namespace]}}})).await;
    wait_condition::<ServicePrincipal>(a, "worker", "Ready", "False", Some("NamespaceNotAllowed")).await;
    eventually("the deactivation", || async {
        !world.operator.admin.get_service_principal(&worker.id).await.expect("kept").active
    })
    .await;
    assert!(!world.operator.works(&worker.application_id, &secret).await, "its secret no longer works");
    assert!(world.operator.admin.list_secrets(&worker.id).await.expect("secrets").is_empty());
    eventually("the integration's deletion", || app_gone(&world, &portal)).await;
    eventually("the policy's deletion", || policy_gone(&world, &worker.id, &policy)).await;
    let notes = events(&world, a, "worker", "Revoked").await;
    assert!(notes.iter().any(|n| n.contains("deactivated service principal")), "{notes:?}");
    // team-b is untouched.
    assert!(world.operator.admin.get_service_principal(&other.id).await.expect("b's").active);
    assert!(world.operator.works(&other.application_id, &other_secret).await);

    // Allowed again: the same principal is active again, with a new secret.
    patch_account(&world, json!({"spec": {"allowedNamespaces": {"names": [a.namespace, b.namespace]}}}))
        .await;
    poke::<ServicePrincipal>(a, "worker", "1").await;
    let (again, new_secret) = {
        wait_condition::<ServicePrincipal>(a, "worker", "Ready", "True", None).await;
        let sp = api::<ServicePrincipal>(a).get("worker").await.expect("sp");
        let id = sp.status.and_then(|s| s.id).expect("id");
        let data = secret_data(&world, a, "worker-databricks").await.expect("secret");
        (id, data["DATABRICKS_CLIENT_SECRET"].clone())
    };
    assert_eq!(again, worker.id, "the same principal");
    assert!(world.operator.admin.get_service_principal(&worker.id).await.expect("sp").active);
    assert!(world.operator.works(&worker.application_id, &new_secret).await);

    // Deleted while its namespace is not allowed: revoked at once, per the account's policy (Delete now), even
    // when paused (a pause stops what the object asks for, not the revocation).
    let vault = ready_app(&world, a, "vault", json!({"redirectUrls": ["https://a.example.com/vault"]})).await;
    let paused = annotate("oauth.databricks-operator.io/paused", json!("true"));
    merge::<DatabricksAppConnection>(a, "vault", paused, false).await;
    patch_account(
        &world,
        json!({"spec": {"allowedNamespaces": {"names": [b.namespace]},
        "revocation": {"gracePeriod": "1h", "principals": "Delete"}}}),
    )
    .await;
    delete_and_wait::<DatabricksAppConnection>(a, "vault").await;
    assert!(app_gone(&world, &vault).await, "the paused app's integration went with it");
    let message =
        wait_message::<ServicePrincipal>(a, "worker", "NamespaceNotAllowed", "spec.revocation").await;
    assert!(message.contains("is revoked at"), "the grace is said: {message}");
    delete_and_wait::<ServicePrincipal>(a, "worker").await;
    let gone = world.operator.admin.get_service_principal(&worker.id).await;
    assert!(gone.is_err_and(|e| e.is_not_found()), "deleted, not left");
    world.nothing_written_elsewhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_adoption_leaves_nothing_of_the_tenants_behind() {
    let world_emulator = emulator().await;
    let setup = admin_client(&world_emulator);
    let legacy = legacy_principal(&setup, "legacy etl", false).await;
    // The platform's own secret on it: never the operator's to delete.
    let platform = setup.create_secret(&legacy.id, Duration::from_secs(3600)).await.expect("secret");
    let app_id = legacy.application_id.clone();
    let world = World::with_emulator(
        |a, b| {
            json!({"revocation": {"gracePeriod": GRACE}, "delegations": [
                {"namespaces": {"names": [a, b]}, "trustPolicies": true,
                 "adopt": [{"applicationId": app_id}]}]})
        },
        world_emulator,
    )
    .await;
    let (a, b) = (&world.a, &world.b);
    let adopt = json!({"adopt": {"applicationId": legacy.application_id}, "credentials": {}});
    let (a_secret, a_policy) = adopted_with_policy(&world, a, adopt.clone(), "keep").await;

    // A trust policy on an adopted principal is never left behind: the orphan annotation deletes it anyway.
    create::<TrustPolicy>(
        &world,
        a,
        "left",
        json!({"servicePrincipalRef": {"name": "legacy"}, "oidc": oidc("left")}),
    )
    .await;
    wait_condition::<TrustPolicy>(a, "left", "Ready", "True", None).await;
    let left = policy_of(a, "left").await;
    merge::<TrustPolicy>(
        a,
        "left",
        annotate("oauth.databricks-operator.io/deletion-policy", json!("orphan")),
        false,
    )
    .await;
    delete_and_wait::<TrustPolicy>(a, "left").await;
    assert!(policy_gone(&world, &legacy.id, &left).await, "an orphaned policy on an adopted principal");

    // The escape hatch (orphan annotation, then delete) leaves the principal but not what team-a added to it.
    merge::<ServicePrincipal>(
        a,
        "legacy",
        annotate("oauth.databricks-operator.io/deletion-policy", json!("orphan")),
        false,
    )
    .await;
    delete_and_wait::<ServicePrincipal>(a, "legacy").await;
    assert!(!world.operator.works(&legacy.application_id, &a_secret).await, "team-a's secret is gone");
    assert!(policy_gone(&world, &legacy.id, &a_policy).await, "team-a's policy is gone");
    assert!(
        world.operator.works(&legacy.application_id, platform.expose_secret()).await,
        "the platform's stays"
    );
    assert!(world.operator.admin.get_service_principal(&legacy.id).await.expect("kept").active);

    // team-b adopts it next: it gets a principal with nothing of team-a's on it.
    let (_, b_secret) = ready_principal(&world, b, "legacy", adopt).await;
    let remaining = world.operator.admin.list_secrets(&legacy.id).await.expect("secrets");
    assert_eq!(remaining.len(), 2, "the platform's secret and team-b's: {remaining:?}");
    create::<TrustPolicy>(
        &world,
        b,
        "keep",
        json!({"servicePrincipalRef": {"name": "legacy"}, "oidc": oidc("b")}),
    )
    .await;
    wait_condition::<TrustPolicy>(b, "keep", "Ready", "True", None).await;
    let b_policy = policy_of(b, "keep").await;

    // team-b's object is stuck deleting (Databricks refuses the secret's deletion), and team-b strips the
    // finalizer: the object goes without its cleanup, and the claim lapses. The account's next full pass (here
    // asked for by the platform) revokes it: team-b's secret and policy go, then the claim.
    world.operator.emulator.add_fault(FaultRule::status("secrets.delete", 503)).await;
    let deletes = count(&world, "secrets.delete").await;
    api::<ServicePrincipal>(b).delete("legacy", &Default::default()).await.expect("delete");
    eventually("a failed cleanup", || async { count(&world, "secrets.delete").await > deletes }).await;
    merge::<ServicePrincipal>(b, "legacy", json!({"metadata": {"finalizers": null}}), false).await;
    wait_for(TIMEOUT, || async {
        api::<ServicePrincipal>(b).get_opt("legacy").await.ok()?.is_none().then_some(())
    })
    .await
    .expect("gone");
    world.operator.emulator.clear_faults().await;
    assert!(world.operator.works(&legacy.application_id, &b_secret).await, "no cleanup ran");
    let accounts: Api<DatabricksAccount> = Api::all(world.env.client.clone());
    accounts
        .patch(
            &world.operator.account,
            &PatchParams::default(),
            &Patch::Merge(&annotate("oauth.databricks-operator.io/reconcile", json!("sweep"))),
        )
        .await
        .expect("poke");
    eventually("the lapsed claim's revocation", || async {
        !world.operator.works(&legacy.application_id, &b_secret).await
    })
    .await;
    assert!(policy_gone(&world, &legacy.id, &b_policy).await, "team-b's policy is gone");
    assert!(world.operator.works(&legacy.application_id, platform.expose_secret()).await);
    let claims: Api<DatabricksClaim> = Api::all(world.env.client.clone());
    let name = format!("sp.{ACCOUNT_ID}.{}", legacy.application_id.to_lowercase());
    eventually("the claim's removal", || async { claims.get_opt(&name).await.ok().flatten().is_none() })
        .await;
    let notes = account_events(&world, "Revoked").await;
    assert!(
        notes.iter().any(|n| n.contains(&format!("{}/legacy is gone without its cleanup", b.namespace))),
        "{notes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_takes_no_more_than_the_grant_and_gives_back_what_it_added() {
    let world_emulator = emulator().await;
    let setup = admin_client(&world_emulator);
    let powerful = legacy_principal(&setup, "powerful", false).await;
    setup.put_workspace_assignment(WORKSPACES[1], &powerful.id, &["ADMIN"]).await.expect("admin");
    let modest = legacy_principal(&setup, "modest", false).await;
    setup.put_workspace_assignment(WORKSPACES[0], &modest.id, &["USER"]).await.expect("user");
    let (powerful_app, modest_app) = (powerful.application_id.clone(), modest.application_id.clone());
    let world = World::with_emulator(
        |a, _| {
            json!({"delegations": [{"namespaces": {"names": [a]},
                "workspaces": [{"workspaceId": WORKSPACES[0], "permission": "ADMIN"}, {"workspaceId": WORKSPACES[1]}],
                "adopt": [{"applicationId": powerful_app}, {"applicationId": modest_app}]}]})
        },
        world_emulator,
    )
    .await;
    let a = &world.a;
    // ADMIN in a workspace where team-a may grant only USER: refused, untouched.
    let writes = world.writes_to(&powerful.id).await.len();
    create::<ServicePrincipal>(
        &world,
        a,
        "powerful",
        json!({"adopt": {"applicationId": powerful.application_id},
        "credentials": {}}),
    )
    .await;
    let message = wait_message::<ServicePrincipal>(a, "powerful", "AdoptRefused", "ADMIN").await;
    assert!(message.contains(&WORKSPACES[1].to_string()), "{message}");
    assert_eq!(world.writes_to(&powerful.id).await.len(), writes, "nothing written to it");
    assert!(world.operator.admin.list_secrets(&powerful.id).await.expect("secrets").is_empty());

    // Within the grant: adopted, raised to ADMIN where granted; the release puts back what was there before.
    create::<ServicePrincipal>(
        &world,
        a,
        "modest",
        json!({"adopt": {"applicationId": modest.application_id},
        "workspaceAssignments": [{"workspaceId": WORKSPACES[0], "permissions": ["ADMIN"]},
            {"workspaceId": WORKSPACES[1], "permissions": ["USER"]}]}),
    )
    .await;
    wait_condition::<ServicePrincipal>(a, "modest", "Ready", "True", None).await;
    assert_eq!(permissions(&world, WORKSPACES[0], &modest.id).await, Some(vec!["ADMIN".to_owned()]));
    assert_eq!(permissions(&world, WORKSPACES[1], &modest.id).await, Some(vec!["USER".to_owned()]));
    delete_and_wait::<ServicePrincipal>(a, "modest").await;
    assert_eq!(
        permissions(&world, WORKSPACES[0], &modest.id).await,
        Some(vec!["USER".to_owned()]),
        "the platform's USER is back"
    );
    assert_eq!(permissions(&world, WORKSPACES[1], &modest.id).await, None, "what team-a added is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_apiserver_refuses_is_never_minted() {
    let world_emulator = emulator().await;
    let legacy = legacy_principal(&admin_client(&world_emulator), "legacy", false).await;
    let app_id = legacy.application_id.clone();
    let world = World::with_emulator(
        |a, _| {
            json!({"delegations": [{"namespaces": {"names": [a]}, "appConnections": true,
                "adopt": [{"applicationId": app_id}]}]})
        },
        world_emulator,
    )
    .await;
    let a = &world.a;
    // The platform's quota: no more Secrets in team-a.
    let quotas: Api<ResourceQuota> = Api::namespaced(world.env.client.clone(), &a.namespace);
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-secrets"}, "spec": {"hard": {"count/secrets": "0"}}}),
    )
    .expect("quota");
    quotas.create(&PostParams::default(), &quota).await.expect("quota");
    let usage = json!({"status": {"hard": {"count/secrets": "0"}, "used": {"count/secrets": "0"}}});
    quotas.patch_status("no-secrets", &PatchParams::default(), &Patch::Merge(&usage)).await.expect("usage");
    let cases = [
        ("created", json!({"credentials": {}})),
        ("adopted", json!({"adopt": {"applicationId": legacy.application_id}, "credentials": {}})),
    ];
    for (name, spec) in &cases {
        create::<ServicePrincipal>(&world, a, name, spec.clone()).await;
        let message = wait_message::<ServicePrincipal>(a, name, "SecretRejected", "nothing is minted").await;
        assert!(message.contains("exceeded quota"), "{message}");
    }
    create::<DatabricksAppConnection>(
        &world,
        a,
        "vault",
        json!({"redirectUrls": ["https://a.example.com/cb"],
        "confidential": true}),
    )
    .await;
    wait_message::<DatabricksAppConnection>(a, "vault", "SecretRejected", "nothing is minted").await;
    // More passes (each asked for) still mint nothing.
    for round in ["1", "2"] {
        for (name, _) in &cases {
            poke::<ServicePrincipal>(a, name, round).await;
        }
        poke::<DatabricksAppConnection>(a, "vault", round).await;
        for (name, _) in &cases {
            wait_for(TIMEOUT, || async {
                let sp = api::<ServicePrincipal>(a).get(name).await.ok()?;
                let seen = sp.status?.conditions.iter().any(|c| c.reason == "SecretRejected");
                let annotations = sp.metadata.annotations.unwrap_or_default();
                (seen
                    && annotations.get("oauth.databricks-operator.io/reconcile").map(String::as_str)
                        == Some(round))
                .then_some(())
            })
            .await
            .expect("looked at again");
        }
    }
    assert_eq!(count(&world, "secrets.create").await, 0, "no OAuth secret was minted");
    assert_eq!(count(&world, "apps.create").await, 0, "no integration was created");
    // The quota lifted, each mints exactly once.
    quotas.delete("no-secrets", &Default::default()).await.expect("lift");
    for (name, _) in &cases {
        poke::<ServicePrincipal>(a, name, "3").await;
        wait_condition::<ServicePrincipal>(a, name, "Ready", "True", None).await;
    }
    poke::<DatabricksAppConnection>(a, "vault", "3").await;
    wait_condition::<DatabricksAppConnection>(a, "vault", "Ready", "True", None).await;
    assert_eq!(count(&world, "secrets.create").await, 2);
    assert_eq!(count(&world, "apps.create").await, 1);
}

/// The checksum annotation the operator writes (an attacker reads the source): SHA-256 over `key\0value\0`.
fn checksum(data: &std::collections::BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_edits_and_forged_secrets_never_steer_a_deletion() {
    let world_emulator = emulator().await;
    let setup = admin_client(&world_emulator);
    let legacy = legacy_principal(&setup, "legacy", false).await;
    let platform = setup.create_secret(&legacy.id, Duration::from_secs(3600)).await.expect("secret");
    let platform_policy: FederationPolicy = serde_json::from_value(json!({"oidc_policy": {
        "issuer": "https://platform.example.com", "subject": "deploy", "audiences": [ACCOUNT_ID]}}))
    .expect("policy");
    let before = setup
        .create_federation_policy(&legacy.id, Some("platform-ci"), &platform_policy)
        .await
        .expect("policy");
    let app_id = legacy.application_id.clone();
    let world = World::with_emulator(
        |a, _| {
            json!({"delegations": [{"namespaces": {"names": [a]}, "trustPolicies": true,
                "adopt": [{"applicationId": app_id}]}]})
        },
        world_emulator,
    )
    .await;
    let a = &world.a;
    grant_status(&world.env, a).await;
    let adopt = json!({"adopt": {"applicationId": legacy.application_id}, "credentials": {}});
    ready_principal(&world, a, "legacy", adopt).await;
    let platform_id = platform.info.id.clone();
    let platform_works = || world.operator.works(&legacy.application_id, platform.expose_secret());

    // Status names the platform's secret as published, retiring and past due, and a mint intent now.
    let forged = json!({"status": {"credentials": {"secretId": platform_id, "mintingSince": "2026-01-01T00:00:00Z",
        "retiring": [{"secretId": platform_id, "deleteAfter": "2000-01-01T00:00:00Z"}]}}});
    merge::<ServicePrincipal>(a, "legacy", forged, true).await;
    poke::<ServicePrincipal>(a, "legacy", "1").await;
    wait_for(TIMEOUT, || async {
        let status = api::<ServicePrincipal>(a).get("legacy").await.ok()?.status?;
        let creds = status.credentials?;
        (creds.secret_id.as_deref() != Some(platform_id.as_str()) && creds.retiring.is_empty()).then_some(())
    })
    .await
    .expect("the operator's own record wins");
    assert!(platform_works().await, "a status edit deleted the platform's secret");

    // The Secret rewritten (by whoever may write Secrets in the namespace) to name the platform's secret, with the
    // valid value and a matching checksum: never taken as the operator's.
    let secrets: Api<Secret> = Api::namespaced(world.env.client.clone(), &a.namespace);
    let data = secret_data(&world, a, "legacy-databricks").await.expect("published");
    let forged_secret = json!({"metadata": {"annotations": {
        "oauth.databricks-operator.io/secret-id": platform_id,
        "oauth.databricks-operator.io/checksum": checksum(&data)}}});
    secrets
        .patch("legacy-databricks", &PatchParams::default(), &Patch::Merge(&forged_secret))
        .await
        .expect("forge");
    poke::<ServicePrincipal>(a, "legacy", "2").await;
    wait_for(TIMEOUT, || async {
        let secret = secrets.get("legacy-databricks").await.ok()?;
        let annotations = secret.metadata.annotations?;
        (annotations.get("oauth.databricks-operator.io/secret-id") != Some(&platform_id)).then_some(())
    })
    .await
    .expect("republished under the operator's own secret");
    assert!(platform_works().await, "a forged Secret deleted the platform's secret");

    // A trust policy pinning the platform's policy id, with status claiming it: a conflict, nothing touched.
    create::<TrustPolicy>(
        &world,
        a,
        "take",
        json!({"servicePrincipalRef": {"name": "legacy"}, "policyId": "platform-ci",
        "oidc": oidc("attacker")}),
    )
    .await;
    wait_condition::<TrustPolicy>(a, "take", "Ready", "False", Some("PolicyConflict")).await;
    merge::<TrustPolicy>(a, "take", json!({"status": {"policyId": "platform-ci"}}), true).await;
    poke::<TrustPolicy>(a, "take", "1").await;
    wait_condition::<TrustPolicy>(a, "take", "Ready", "False", Some("PolicyConflict")).await;
    delete_and_wait::<TrustPolicy>(a, "take").await;
    let after = world.operator.admin.get_federation_policy(&legacy.id, "platform-ci").await.expect("kept");
    assert_eq!((after.uid, after.oidc_policy), (before.uid.clone(), before.oidc_policy.clone()));

    // The platform assigns it in a workspace team-a is not granted; status then names that assignment as this
    // object's, and the spec asks for it: the refusal takes back only what the claim records, never the platform's.
    world
        .operator
        .admin
        .put_workspace_assignment(WORKSPACES[2], &legacy.id, &["USER"])
        .await
        .expect("assignment");
    let claimed = json!({"status": {"workspaceAssignments": [{"workspaceId": WORKSPACES[2], "permissions": ["USER"]}]}});
    merge::<ServicePrincipal>(a, "legacy", claimed, true).await;
    let asked =
        json!({"spec": {"workspaceAssignments": [{"workspaceId": WORKSPACES[2], "permissions": ["USER"]}]}});
    merge::<ServicePrincipal>(a, "legacy", asked, false).await;
    wait_condition::<ServicePrincipal>(a, "legacy", "Ready", "False", Some("AssignmentNotAllowed")).await;
    assert_eq!(permissions(&world, WORKSPACES[2], &legacy.id).await, Some(vec!["USER".to_owned()]));
    merge::<ServicePrincipal>(a, "legacy", json!({"spec": {"workspaceAssignments": null}}), false).await;

    // Status cleared of its id, then deleted: the claim, not status, says what to remove.
    merge::<ServicePrincipal>(a, "legacy", json!({"status": {"id": null}}), true).await;
    delete_and_wait::<ServicePrincipal>(a, "legacy").await;
    assert_eq!(permissions(&world, WORKSPACES[2], &legacy.id).await, Some(vec!["USER".to_owned()]));
    let left: Vec<String> = world
        .operator
        .admin
        .list_secrets(&legacy.id)
        .await
        .expect("secrets")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [platform_id], "only the platform's secret is left");
    world
        .operator
        .admin
        .get_federation_policy(&legacy.id, "platform-ci")
        .await
        .expect("the platform's policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delegation_caps_what_a_namespace_may_ask_for() {
    let limits = json!({"maxSecretLifetime": "24h", "allowOrphan": false, "maxServicePrincipals": 2,
        "maxAppConnections": 2, "maxTrustPolicies": 1, "appRedirectHosts": ["*.a.example.com", "localhost"],
        "appScopes": ["sql", "offline_access"]});
    let options = OperatorOptions {
        rotate_min_interval: Duration::from_secs(3600),
        repair_min_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let world = World::with(
        |a, _| {
            json!({"revocation": {"gracePeriod": GRACE}, "delegations": [{"namespaces": {"names": [a]},
                "appConnections": true, "trustPolicies": true, "limits": limits}]})
        },
        emulator().await,
        options,
    )
    .await;
    let a = &world.a;
    grant_status(&world.env, a).await;
    // App connections: only the allowed hosts and scopes, at most two.
    let app = |url: &str, scopes: Value| json!({"redirectUrls": [url], "scopes": scopes});
    let refused = [
        ("phish", app("https://attacker.example/cb", json!(["sql"])), "attacker.example"),
        (
            "wide",
            app("https://portal.a.example.com/cb", json!(["all-apis", "offline_access"])),
            "scope all-apis",
        ),
        ("apex", app("https://a.example.com/cb", json!(["sql"])), "a.example.com"),
    ];
    for (name, spec, why) in &refused {
        create::<DatabricksAppConnection>(&world, a, name, spec.clone()).await;
        wait_message::<DatabricksAppConnection>(a, name, "AppConnectionNotAllowed", why).await;
    }
    assert_eq!(count(&world, "apps.create").await, 0);
    let portal = ready_app(&world, a, "portal", app("https://portal.a.example.com/cb", json!(["sql"]))).await;
    ready_app(&world, a, "cli", app("http://localhost:8020/cb", json!(["sql", "offline_access"]))).await;
    create::<DatabricksAppConnection>(&world, a, "third", app("http://localhost:8021/cb", json!(["sql"])))
        .await;
    wait_message::<DatabricksAppConnection>(a, "third", "AppConnectionLimitReached", "2").await;
    assert_eq!(count(&world, "apps.create").await, 2);

    // Principals: at most two; secret lifetimes capped at a day.
    let (one, _) = ready_principal(&world, a, "one", json!({"credentials": {"lifetime": "720h"}})).await;
    let secrets = world.operator.admin.list_secrets(&one.id).await.expect("secrets");
    let times = |s: &databricks_oauth_operator::databricks::types::SecretInfo| {
        let parse =
            |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        (parse(&s.create_time).expect("created"), parse(&s.expire_time).expect("expires"))
    };
    let (created, expires) = times(&secrets[0]);
    let lifetime = expires.duration_since(created).as_secs();
    assert!((86_340..=86_460).contains(&lifetime), "a day, not 30: {lifetime}s");
    let sp = api::<ServicePrincipal>(a).get("one").await.expect("sp");
    let message = sp
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "CredentialsReady")
        .expect("condition")
        .message;
    assert!(message.contains("capped at 86400s"), "{message}");
    let (two, _) = ready_principal(&world, a, "two", json!({"deletionPolicy": "Orphan"})).await;
    let three: ServicePrincipal = create(&world, a, "three", json!({})).await;
    wait_message::<ServicePrincipal>(a, "three", "ServicePrincipalLimitReached", "2").await;
    assert_eq!(world.operator.tagged(&three).await, 0, "no third principal");

    // Trust policies: at most one.
    create::<TrustPolicy>(
        &world,
        a,
        "tp1",
        json!({"servicePrincipalRef": {"name": "one"}, "oidc": oidc("1")}),
    )
    .await;
    wait_condition::<TrustPolicy>(a, "tp1", "Ready", "True", None).await;
    create::<TrustPolicy>(
        &world,
        a,
        "tp2",
        json!({"servicePrincipalRef": {"name": "one"}, "oidc": oidc("2")}),
    )
    .await;
    wait_message::<TrustPolicy>(a, "tp2", "TrustPolicyLimitReached", "1").await;
    assert_eq!(count(&world, "sp_policies.create").await, 1);

    // Churn guards that status cannot reset: a rotation waits for the interval from the last mint (by Databricks'
    // record), and so does the repair of a Secret deleted again and again.
    let mints = count(&world, "secrets.create").await;
    merge::<ServicePrincipal>(a, "one", annotate("oauth.databricks-operator.io/rotate", json!("now")), false)
        .await;
    let cleared = json!({"status": {"credentials": {"rotateAllowedAfter": "2000-01-01T00:00:00Z"}}});
    merge::<ServicePrincipal>(a, "one", cleared, true).await;
    poke::<ServicePrincipal>(a, "one", "1").await;
    wait_for(TIMEOUT, || async {
        let sp = api::<ServicePrincipal>(a).get("one").await.ok()?;
        let waits = sp
            .status?
            .conditions
            .iter()
            .any(|c| c.type_ == "CredentialsReady" && c.message.contains("waits until"));
        waits.then_some(())
    })
    .await
    .expect("the rotation waits");
    Api::<Secret>::namespaced(world.env.client.clone(), &a.namespace)
        .delete("one-databricks", &Default::default())
        .await
        .expect("delete");
    wait_message::<ServicePrincipal>(a, "one", "RepairPaced", "at most once per 3600s").await;
    assert_eq!(count(&world, "secrets.create").await, mints, "no mint inside the intervals");

    // Orphaning is not allowed: deleted instead.
    delete_and_wait::<ServicePrincipal>(a, "two").await;
    let gone = world.operator.admin.get_service_principal(&two.id).await;
    assert!(gone.is_err_and(|e| e.is_not_found()), "deleted despite deletionPolicy: Orphan");
    assert_eq!(events(&world, a, "two", "DeletionLimited").await.len(), 1);

    // Narrowing the hosts revokes what no longer fits, after the grace.
    let narrowed = json!({"maxAppConnections": 2, "appRedirectHosts": ["localhost"]});
    patch_account(
        &world,
        json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]},
        "appConnections": true, "trustPolicies": true, "limits": narrowed}]}}),
    )
    .await;
    wait_message::<DatabricksAppConnection>(a, "portal", "AppConnectionNotAllowed", "portal.a.example.com")
        .await;
    eventually("the integration's deletion", || app_gone(&world, &portal)).await;
    wait_condition::<DatabricksAppConnection>(a, "cli", "Ready", "True", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_for_one_databricks_account_share_claims_and_budget() {
    let world_emulator = emulator().await;
    let legacy = legacy_principal(&admin_client(&world_emulator), "legacy", false).await;
    let app_id = legacy.application_id.clone();
    let world = World::with_emulator(
        |a, _| json!({"delegations": [{"namespaces": {"names": [a]}, "adopt": [{"applicationId": app_id}]}]}),
        world_emulator,
    )
    .await;
    let (a, b) = (&world.a, &world.b);
    // A second DatabricksAccount for the same Databricks account, granting team-b the same principal.
    let accounts: Api<DatabricksAccount> = Api::all(world.env.client.clone());
    let first = accounts.get(&world.operator.account).await.expect("account");
    let mut spec = serde_json::to_value(&first.spec).expect("spec");
    spec["delegations"] = json!([{"namespaces": {"names": [b.namespace]}, "adopt": [{"applicationId": legacy.application_id}]}]);
    let second_name = format!("{}-second", world.operator.account);
    let second: DatabricksAccount =
        serde_json::from_value(json!({"metadata": {"name": second_name}, "spec": spec})).expect("second");
    accounts.create(&PostParams::default(), &second).await.expect("second account");

    let adopt = json!({"adopt": {"applicationId": legacy.application_id}, "credentials": {}});
    ready_principal(&world, a, "legacy", adopt.clone()).await;
    let mut via_second = adopt.clone();
    via_second["accountRef"] = json!({"name": second_name});
    let object: ServicePrincipal =
        serde_json::from_value(json!({"metadata": {"name": "legacy"}, "spec": via_second})).expect("sp");
    api::<ServicePrincipal>(b).create(&PostParams::default(), &object).await.expect("create");
    let message = wait_message::<ServicePrincipal>(b, "legacy", "AdoptRefused", "already adopted").await;
    assert!(message.contains(&format!("{}/legacy", a.namespace)), "{message}");
    // One record for the principal, whichever object was used.
    let claims: Api<DatabricksClaim> = Api::all(world.env.client.clone());
    let listed = claims.list(&ListParams::default()).await.expect("claims");
    let on_it: Vec<_> = listed
        .items
        .iter()
        .filter(|c| {
            c.spec.remote.application_id.as_deref() == Some(legacy.application_id.to_lowercase().as_str())
        })
        .map(|c| c.name_any())
        .collect();
    assert_eq!(on_it.len(), 1, "{on_it:?}");
    // One budget: both objects' clients draw from the same bucket.
    let ctx = &world.operator.ctx;
    let one = ctx.accounts.client_for(&world.operator.account, &a.namespace).await.expect("first");
    let two = ctx.accounts.client_for(&second_name, &b.namespace).await.expect("second");
    assert!(one.client.budget().same(two.client.budget()), "two budgets for one Databricks account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_adoption_grant_releases_the_principal() {
    let world_emulator = emulator().await;
    let legacy = legacy_principal(&admin_client(&world_emulator), "legacy", false).await;
    let app_id = legacy.application_id.clone();
    let grant = move |a: &str, b: &str| {
        json!({"revocation": {"gracePeriod": GRACE}, "delegations": [
            {"namespaces": {"names": [a]}, "trustPolicies": true, "adopt": [{"applicationId": app_id}]},
            {"namespaces": {"names": [b]}, "adopt": [{"applicationId": app_id}]}]})
    };
    let world = World::with_emulator(grant, world_emulator).await;
    let (a, b) = (&world.a, &world.b);
    let adopt = json!({"adopt": {"applicationId": legacy.application_id}, "credentials": {}});
    let (a_secret, a_policy) = adopted_with_policy(&world, a, adopt.clone(), "ci").await;
    create::<ServicePrincipal>(&world, b, "legacy", adopt).await;
    wait_message::<ServicePrincipal>(b, "legacy", "AdoptRefused", "already adopted").await;

    // The platform takes team-a's adoption grant back; team-a keeps its object. After the grace, what team-a
    // added goes and the claim with it: team-b's adoption goes through.
    patch_account(
        &world,
        json!({"spec": {"delegations": [
        {"namespaces": {"names": [a.namespace]}, "trustPolicies": true},
        {"namespaces": {"names": [b.namespace]}, "adopt": [{"applicationId": legacy.application_id}]}]}}),
    )
    .await;
    wait_message::<ServicePrincipal>(a, "legacy", "AdoptRefused", "Released adopted principal").await;
    assert!(!world.operator.works(&legacy.application_id, &a_secret).await, "team-a's secret is gone");
    assert!(policy_gone(&world, &legacy.id, &a_policy).await, "team-a's policy is gone");
    poke::<ServicePrincipal>(b, "legacy", "1").await;
    wait_condition::<ServicePrincipal>(b, "legacy", "Ready", "True", None).await;
    let secrets = world.operator.admin.list_secrets(&legacy.id).await.expect("secrets");
    assert_eq!(secrets.len(), 1, "only team-b's: {secrets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_and_an_edited_spec_do_not_hide_what_a_revocation_takes_back() {
    let world_emulator = emulator().await;
    let legacy = legacy_principal(&admin_client(&world_emulator), "legacy", false).await;
    let app_id = legacy.application_id.clone();
    let grant = move |a: &str, _: &str| {
        json!({"revocation": {"gracePeriod": GRACE}, "delegations": [{"namespaces": {"names": [a]},
            "appConnections": true, "adopt": [{"applicationId": app_id}],
            "limits": {"appRedirectHosts": ["a.example.com", "b.example.com"]},
            "workspaces": [{"workspaceId": WORKSPACES[0]}, {"workspaceId": WORKSPACES[1], "permission": "ADMIN"}]}]})
    };
    let world = World::with_emulator(grant, world_emulator).await;
    let a = &world.a;
    let admin = json!([{"workspaceId": WORKSPACES[1], "permissions": ["ADMIN"]}]);
    let (principal, _) =
        ready_principal(&world, a, "etl", json!({"credentials": {}, "workspaceAssignments": admin})).await;
    let portal = ready_app(&world, a, "portal", json!({"redirectUrls": ["https://a.example.com/cb"]})).await;
    let adopt = json!({"adopt": {"applicationId": legacy.application_id}, "credentials": {}});
    let (_, legacy_secret) = ready_principal(&world, a, "legacy", adopt).await;

    // The tenant pauses, then edits the specs to what the narrowed grant will allow: a paused object applies
    // nothing, so Databricks still holds what the old specs asked for. And it deletes the adopted principal's
    // object while paused, so the deletion waits.
    let paused = annotate("oauth.databricks-operator.io/paused", json!("true"));
    for name in ["etl", "legacy"] {
        merge::<ServicePrincipal>(a, name, paused.clone(), false).await;
        wait_condition::<ServicePrincipal>(a, name, "Ready", "False", Some("Paused")).await;
    }
    merge::<DatabricksAppConnection>(a, "portal", paused, false).await;
    wait_condition::<DatabricksAppConnection>(a, "portal", "Ready", "False", Some("Paused")).await;
    merge::<ServicePrincipal>(a, "etl", json!({"spec": {"workspaceAssignments": []}}), false).await;
    let allowed = json!({"spec": {"redirectUrls": ["https://b.example.com/cb"]}});
    merge::<DatabricksAppConnection>(a, "portal", allowed, false).await;
    api::<ServicePrincipal>(a).delete("legacy", &Default::default()).await.expect("delete");
    let held = api::<ServicePrincipal>(a).get("legacy").await.expect("held by its finalizer while paused");
    assert!(held.metadata.deletion_timestamp.is_some());

    // The platform takes back the ADMIN workspace, the old redirect host and the adoption.
    patch_account(
        &world,
        json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]}, "appConnections": true,
        "limits": {"appRedirectHosts": ["b.example.com"]}, "workspaces": [{"workspaceId": WORKSPACES[0]}]}]}}),
    )
    .await;
    // What Databricks holds is what counts: the assignment and the integration go, and so does every secret
    // minted on the adopted principal (its object then goes, the principal itself is left).
    eventually("the ADMIN assignment's removal", || async {
        permissions(&world, WORKSPACES[1], &principal.id).await.is_none()
    })
    .await;
    eventually("the integration's deletion", || app_gone(&world, &portal)).await;
    eventually("the adopted principal's release", || async {
        api::<ServicePrincipal>(a).get_opt("legacy").await.expect("read").is_none()
    })
    .await;
    assert!(!world.operator.works(&legacy.application_id, &legacy_secret).await, "its secret is gone");
    let left = world.operator.admin.list_secrets(&legacy.id).await.expect("secrets");
    assert!(left.is_empty(), "nothing of the tenant's stays on the adopted principal: {left:?}");
    assert!(world.operator.admin.get_service_principal(&legacy.id).await.is_ok(), "the principal is left");
    world.nothing_written_elsewhere().await;
}

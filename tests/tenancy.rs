//! Multi-tenancy: each attack a tenant with only its own namespace could try, run as that tenant would run it
//! (a ServiceAccount bound to the shipped `databricks-oauth-operator-edit` role, never cluster admin), each
//! asserting what the victim needs: the reason on the attacker's object, no Databricks write against the victim
//! (emulator write log), the victim's credentials still working, and nothing written outside the tenant's
//! namespace. Plus the allowed paths: granted adoption, granted ADMIN, and a revoked grant.
//!
//! Every test runs its own control plane: the operator here watches every namespace, as deployed.

mod support;

use std::time::Duration;

use databricks_emulator::FaultRule;
use databricks_oauth_operator::crd::{
    DatabricksAccount, DatabricksAppConnection, DatabricksClaim, ServicePrincipal, TrustPolicy,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    operator::{ADMIN_ID, WORKSPACES, emulator},
    tenants::*,
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_takes_only_what_was_granted_and_only_once() {
    let world_emulator = emulator().await;
    // Principals that exist before the account, so the platform team can grant them.
    let setup = support::operator::admin_client(&world_emulator);
    let legacy = legacy_principal(&setup, "legacy etl", false).await;
    let admin_sp = legacy_principal(&setup, "break-glass", true).await;
    let (legacy_app, admin_app) = (legacy.application_id.clone(), admin_sp.application_id.clone());
    let world = World::with_emulator(
        |a, b| {
            // The platform team grants team-a the legacy principal, and (mistakes) the operator's own identity and
            // an account admin; team-b is granted the legacy principal too.
            json!({"delegations": [
                {"namespaces": {"names": [a]}, "adopt": [
                    {"applicationId": legacy_app}, {"applicationId": ADMIN_ID}, {"applicationId": admin_app}]},
                {"namespaces": {"names": [b]}, "adopt": [{"applicationId": legacy_app, "deletionPolicy": "Delete"}]},
            ]})
        },
        world_emulator,
    )
    .await;
    let (a, b) = (&world.a, &world.b);

    // The victim: team-b's own principal, with a working secret.
    let (victim, victim_secret) = ready_principal(&world, b, "victim", json!({"credentials": {}})).await;
    assert!(world.operator.works(&victim.application_id, &victim_secret).await);
    // The platform team also grants team-a the victim's id by mistake.
    let accounts: Api<DatabricksAccount> = Api::all(world.env.client.clone());
    let mistake = json!({"spec": {"delegations": [
        {"namespaces": {"names": [a.namespace]}, "trustPolicies": true, "adopt": [{"applicationId": legacy_app}, {"applicationId": ADMIN_ID},
            {"applicationId": admin_app}, {"applicationId": victim.application_id}]},
        {"namespaces": {"names": [b.namespace]}, "adopt": [{"applicationId": legacy_app, "deletionPolicy": "Delete"}]},
    ]}});
    accounts
        .patch(&world.operator.account, &PatchParams::default(), &Patch::Merge(&mistake))
        .await
        .expect("grant");
    let victim_writes = world.writes_to(&victim.id).await.len();
    // (the setup itself wrote the admin's role)
    let admin_writes = world.writes_to(&admin_sp.id).await.len();
    let operator_principal = world
        .operator
        .admin
        .find_service_principal_by_application_id(ADMIN_ID)
        .await
        .expect("find")
        .expect("the admin principal");
    let attacks = [
        ("steal-victim", victim.application_id.clone(), "was created for"),
        ("steal-operator", ADMIN_ID.to_owned(), "operator itself"),
        ("steal-admin", admin_app.clone(), "account admin"),
    ];
    for (name, app_id, why) in &attacks {
        create::<ServicePrincipal>(
            &world,
            a,
            name,
            json!({"adopt": {"applicationId": app_id}, "credentials": {},
            "active": false, "deletionPolicy": "Delete"}),
        )
        .await;
        let message =
            wait_condition::<ServicePrincipal>(a, name, "Ready", "False", Some("AdoptRefused")).await;
        assert!(message.contains(why), "{name}: {message}");
        assert!(secret_data(&world, a, &format!("{name}-databricks")).await.is_none(), "{name}: no Secret");
    }
    // An id the account never granted to team-a at all: team-b's adopted-to-be principal is granted to a, so use
    // a fresh one.
    let stranger = legacy_principal(&world.operator.admin, "stranger", false).await;
    create::<ServicePrincipal>(
        &world,
        a,
        "steal-stranger",
        json!({"adopt": {"applicationId": stranger.application_id}, "credentials": {}}),
    )
    .await;
    let message =
        wait_condition::<ServicePrincipal>(a, "steal-stranger", "Ready", "False", Some("AdoptRefused")).await;
    assert!(message.contains("does not grant"), "{message}");

    // Zero writes against any of them; the victim's secret still works and nothing about it changed.
    assert_eq!(world.writes_to(&victim.id).await.len(), victim_writes, "a write touched the victim");
    assert_eq!(world.writes_to(&admin_sp.id).await.len(), admin_writes, "the account admin was written");
    assert!(
        world.writes_to(&operator_principal.id).await.is_empty(),
        "the operator's own principal was written"
    );
    assert!(world.writes_to(&stranger.id).await.is_empty());
    assert!(
        world.operator.works(&victim.application_id, &victim_secret).await,
        "the victim's secret still works"
    );
    let after = world.operator.admin.get_service_principal(&victim.id).await.expect("victim");
    assert_eq!((after.active, &after.display_name), (victim.active, &victim.display_name));
    let secrets = world.operator.admin.list_secrets(&victim.id).await.expect("secrets");
    assert_eq!(secrets.len(), 1, "no secret minted on the victim");

    // Allowed: team-a adopts the granted legacy principal; its secret works. Its grant allows no deactivation, so
    // it may not set the principal inactive either.
    create::<ServicePrincipal>(
        &world,
        a,
        "legacy",
        json!({"adopt": {"applicationId": legacy_app}, "credentials": {}, "active": false,
        "deletionPolicy": "Delete"}),
    )
    .await;
    let message =
        wait_condition::<ServicePrincipal>(a, "legacy", "Ready", "False", Some("AdoptRefused")).await;
    assert!(message.contains("allows no changes"), "{message}");
    assert!(world.operator.admin.get_service_principal(&legacy.id).await.expect("legacy").active);
    api::<ServicePrincipal>(a)
        .patch("legacy", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"active": true}})))
        .await
        .expect("patch");
    wait_condition::<ServicePrincipal>(a, "legacy", "Ready", "True", None).await;
    let data = secret_data(&world, a, "legacy-databricks").await.expect("published");
    let minted = data["DATABRICKS_CLIENT_SECRET"].clone();
    assert!(world.operator.works(&legacy_app, &minted).await);
    let display = world.operator.admin.get_service_principal(&legacy.id).await.expect("legacy").display_name;
    assert_eq!(display, "legacy etl", "an adopted principal keeps its name unless the spec sets one");
    // A federation policy of team-a's on it.
    create::<TrustPolicy>(
        &world,
        a,
        "legacy-trust",
        json!({"servicePrincipalRef": {"name": "legacy"},
        "oidc": {"issuer": "https://ci.example.com", "subject": "repo:team-a"}}),
    )
    .await;
    wait_condition::<TrustPolicy>(a, "legacy-trust", "Ready", "True", None).await;
    let trust_id = api::<TrustPolicy>(a)
        .get("legacy-trust")
        .await
        .expect("tp")
        .status
        .and_then(|s| s.policy_id)
        .expect("id");
    // team-b is granted it too, but one principal has one adopter: the first.
    create::<ServicePrincipal>(
        &world,
        b,
        "legacy-too",
        json!({"adopt": {"applicationId": legacy_app}, "credentials": {}}),
    )
    .await;
    let message =
        wait_condition::<ServicePrincipal>(b, "legacy-too", "Ready", "False", Some("AdoptRefused")).await;
    assert!(message.contains(&format!("already adopted by {}/legacy", a.namespace)), "{message}");
    let poke = |n: &str| json!({"metadata": {"annotations": {"oauth.databricks-operator.io/reconcile": n}}});
    // team-a's grant allows no deletion: deleting its object leaves the principal, active.
    api::<ServicePrincipal>(a).delete("legacy", &DeleteParams::default()).await.expect("delete");
    wait_for(TIMEOUT, || async {
        api::<ServicePrincipal>(a).get_opt("legacy").await.ok()?.is_none().then_some(())
    })
    .await
    .expect("deleted");
    let kept =
        world.operator.admin.get_service_principal(&legacy.id).await.expect("the adopted principal is kept");
    assert!(kept.active, "and not deactivated");
    assert_eq!(events(&world, a, "legacy", "DeletionLimited").await.len(), 1);
    // What team-a added to it went with the object: its secret and its federation policy.
    assert!(!world.operator.works(&legacy_app, &minted).await, "the secret team-a was given no longer works");
    let policy = world.operator.admin.get_federation_policy(&legacy.id, &trust_id).await;
    assert!(policy.is_err_and(|e| e.is_not_found()), "team-a's federation policy is gone");
    // The claim lapsed with the object: team-b's adoption goes through at its next pass (a refusal is retried
    // within minutes; any change to the object retries at once).
    api::<ServicePrincipal>(b)
        .patch("legacy-too", &PatchParams::default(), &Patch::Merge(&poke("1")))
        .await
        .expect("poke");
    wait_condition::<ServicePrincipal>(b, "legacy-too", "Ready", "True", None).await;
    world.nothing_written_elsewhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_assignments_and_kinds_stay_within_the_grant() {
    let world = World::new(|a, _b| {
        json!({"delegations": [{"namespaces": {"names": [a]}, "workspaces": [
            {"workspaceId": WORKSPACES[0]}, {"workspaceId": WORKSPACES[1], "permission": "ADMIN"}]}]})
    })
    .await;
    let (a, b) = (&world.a, &world.b);
    let before = world.operator.emulator.stats().await.writes;
    let cases = [
        (
            "admin-where-user",
            json!([{"workspaceId": WORKSPACES[0], "permissions": ["ADMIN"]}]),
            "ADMIN in workspace",
        ),
        (
            "ungranted-workspace",
            json!([{"workspaceId": WORKSPACES[2], "permissions": ["USER"]}]),
            "workspace",
        ),
    ];
    for (name, assignments, why) in &cases {
        let sp: ServicePrincipal =
            create(&world, a, name, json!({"workspaceAssignments": assignments, "credentials": {}})).await;
        let message =
            wait_condition::<ServicePrincipal>(a, name, "Ready", "False", Some("AssignmentNotAllowed")).await;
        assert!(message.contains(why) && message.contains("spec.delegations"), "{name}: {message}");
        assert_eq!(world.operator.tagged(&sp).await, 0, "{name}: no principal was even created");
    }
    // team-b has no rule at all: no workspace, no app connection, no trust policy.
    create::<ServicePrincipal>(
        &world,
        b,
        "b-user",
        json!({"workspaceAssignments": [{"workspaceId": WORKSPACES[0], "permissions": ["USER"]}]}),
    )
    .await;
    wait_condition::<ServicePrincipal>(b, "b-user", "Ready", "False", Some("AssignmentNotAllowed")).await;
    create::<DatabricksAppConnection>(
        &world,
        b,
        "b-app",
        json!({"redirectUrls": ["https://b.example.com/cb"]}),
    )
    .await;
    let message =
        wait_condition::<DatabricksAppConnection>(b, "b-app", "Ready", "False", Some("NotDelegated")).await;
    assert!(message.contains("appConnections"), "{message}");
    assert_eq!(world.operator.emulator.stats().await.writes, before, "refusals write nothing to Databricks");

    // Allowed: ADMIN where ADMIN is granted.
    let (principal, _) = ready_principal(
        &world,
        a,
        "granted",
        json!({"workspaceAssignments": [
        {"workspaceId": WORKSPACES[1], "permissions": ["ADMIN"]}], "credentials": {}}),
    )
    .await;
    let assigned = world.operator.admin.list_workspace_assignments(WORKSPACES[1]).await.expect("list");
    let id: i64 = principal.id.parse().expect("numeric");
    assert!(assigned.iter().any(|x| x.principal.principal_id == Some(id) && x.permissions == ["ADMIN"]));

    // The platform team lowers the grant to USER: the object says why and nothing more is written for it.
    let accounts: Api<DatabricksAccount> = Api::all(world.env.client.clone());
    let lowered = json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]}, "workspaces": [
        {"workspaceId": WORKSPACES[0]}, {"workspaceId": WORKSPACES[1]}]}]}});
    accounts
        .patch(&world.operator.account, &PatchParams::default(), &Patch::Merge(&lowered))
        .await
        .expect("revoke");
    let message =
        wait_condition::<ServicePrincipal>(a, "granted", "Ready", "False", Some("AssignmentNotAllowed"))
            .await;
    assert!(message.contains(&format!("ADMIN in workspace {}", WORKSPACES[1])), "{message}");
    // What the grant no longer allows is taken back: the principal is USER there now, and the object says so.
    assert!(message.contains(&format!("lowered to USER in workspace {}", WORKSPACES[1])), "{message}");
    let assigned = world.operator.admin.list_workspace_assignments(WORKSPACES[1]).await.expect("list");
    let now: Vec<_> = assigned.iter().filter(|x| x.principal.principal_id == Some(id)).collect();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].permissions, ["USER"], "no longer ADMIN");
    assert_eq!(events(&world, a, "granted", "AssignmentRevoked").await.len(), 1);
    let writes = world.writes_to(&principal.id).await.len();
    api::<ServicePrincipal>(a)
        .patch(
            "granted",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"displayName": "renamed", "active": false}})),
        )
        .await
        .expect("patch");
    wait_for(TIMEOUT, || async {
        let sp = api::<ServicePrincipal>(a).get("granted").await.ok()?;
        let status = sp.status?;
        (status.observed_generation == sp.metadata.generation).then_some(())
    })
    .await
    .expect("the change was looked at");
    assert_eq!(world.writes_to(&principal.id).await.len(), writes, "a revoked grant stops further writes");
    let remote = world.operator.admin.get_service_principal(&principal.id).await.expect("remote");
    assert!(remote.active && remote.display_name != "renamed");
    world.nothing_written_elsewhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_connections_of_the_same_name_never_interfere() {
    let world = World::new(
        |a, b| json!({"delegations": [{"namespaces": {"names": [a, b]}, "appConnections": true}]}),
    )
    .await;
    let (a, b) = (&world.a, &world.b);
    // team-a's apps, one public and one confidential, both named like team-b's will be.
    let app = |host: &str, confidential: bool| json!({"redirectUrls": [format!("https://{host}.example.com/cb")], "confidential": confidential});
    let portal_a = ready_app(&world, a, "portal", app("a", false)).await;
    let vault_a = ready_app(&world, a, "vault", app("a", true)).await;
    let vault_secret =
        secret_data(&world, a, "vault-oauth-client").await.expect("secret")["DATABRICKS_CLIENT_SECRET"]
            .clone();

    // team-b creates the same names, and each create's answer is lost once: recovery runs.
    for (name, confidential) in [("portal", false), ("vault", true)] {
        world.operator.emulator.add_fault(FaultRule::drop_response("apps.create").times(1)).await;
        ready_app(&world, b, name, app("b", confidential)).await;
    }
    assert!(
        world.writes_to(&portal_a).await.is_empty() && world.writes_to(&vault_a).await.is_empty(),
        "team-a's integrations were written: {:?}",
        world.operator.emulator.stats().await.write_paths
    );
    let remote = world.operator.admin.get_custom_app(&portal_a).await.expect("team-a's portal exists");
    assert_eq!(remote.redirect_urls, ["https://a.example.com/cb"]);
    world.operator.admin.get_custom_app(&vault_a).await.expect("team-a's vault exists");
    let secret_after =
        secret_data(&world, a, "vault-oauth-client").await.expect("secret")["DATABRICKS_CLIENT_SECRET"]
            .clone();
    assert_eq!(secret_after, vault_secret, "team-a's client secret is untouched");
    // Exactly one integration per object: no duplicate left by the lost answers.
    let listed = world.operator.admin.list_custom_apps().await.expect("apps");
    for name in ["portal", "vault"] {
        assert_eq!(listed.iter().filter(|x| x.name == name).count(), 2, "{name}: one each, no leftover");
    }
    // A create Databricks refuses leaves no standing intent behind: a later integration of that name is never
    // taken for this object's leftover. Databricks refuses every attempt until the fault is cleared; each attempt
    // records its intent before the create and withdraws it after the refusal, so the claim settles at "nothing
    // created, nothing pending" between attempts.
    world.operator.emulator.add_fault(FaultRule::status("apps.create", 400)).await;
    let refused: DatabricksAppConnection =
        create(&world, a, "refused", json!({"redirectUrls": ["https://a.example.com/cb"]})).await;
    wait_condition::<DatabricksAppConnection>(
        a,
        "refused",
        "Ready",
        "False",
        Some("DatabricksRequestRejected"),
    )
    .await;
    let uid = refused.uid().expect("uid");
    let claims: Api<DatabricksClaim> = Api::all(world.env.client.clone());
    let claim_name = format!("app.{}.{uid}", support::operator::ACCOUNT_ID);
    let settled = wait_for(TIMEOUT, || async {
        let claim = claims.get(&claim_name).await.ok()?;
        (claim.spec.remote.id.is_none() && claim.spec.creating_since.is_none()).then_some(claim)
    })
    .await;
    assert!(settled.is_ok(), "a refused create left an intent: {:?}", claims.get_opt(&claim_name).await);
    world.operator.emulator.clear_faults().await;
    merge::<DatabricksAppConnection>(
        a,
        "refused",
        annotate("oauth.databricks-operator.io/reconcile", json!("1")),
        false,
    )
    .await;
    wait_condition::<DatabricksAppConnection>(a, "refused", "Ready", "True", None).await;
    world.nothing_written_elsewhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_never_trusted_as_identity() {
    let world = World::new(|a, b| {
        json!({"delegations": [{"namespaces": {"names": [a, b]}, "appConnections": true, "trustPolicies": true}]})
    })
    .await;
    let (a, b) = (&world.a, &world.b);
    grant_status(&world.env, b).await;
    let (victim, victim_secret) = ready_principal(&world, a, "victim", json!({"credentials": {}})).await;
    let (thief, _) = ready_principal(&world, b, "thief", json!({"credentials": {}})).await;
    let victim_app =
        ready_app(&world, a, "victim-app", json!({"redirectUrls": ["https://a.example.com/cb"]})).await;
    ready_app(&world, b, "thief-app", json!({"redirectUrls": ["https://evil.example.com/cb"]})).await;

    // team-b points its objects' status at team-a's principal and integration.
    let sps = api::<ServicePrincipal>(b);
    merge::<ServicePrincipal>(
        b,
        "thief",
        json!({"status": {"id": victim.id, "applicationId": victim.application_id}}),
        true,
    )
    .await;
    merge::<DatabricksAppConnection>(b, "thief-app", json!({"status": {"integrationId": victim_app}}), true)
        .await;
    // Changes make the next passes full ones.
    merge::<ServicePrincipal>(b, "thief", annotate("oauth.databricks-operator.io/rotate", json!("1")), false)
        .await;
    api::<DatabricksAppConnection>(b)
        .patch(
            "thief-app",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"redirectUrls": ["https://evil.example.com/cb2"]}})),
        )
        .await
        .expect("patch");

    let noted = wait_for(TIMEOUT, || async {
        let sp = events(&world, b, "thief", "IdentityMismatch").await;
        let app = events(&world, b, "thief-app", "IdentityMismatch").await;
        (!sp.is_empty() && !app.is_empty()).then_some(())
    })
    .await;
    assert!(noted.is_ok(), "both mismatches are reported as events");
    // Each object goes back to its own remote object.
    wait_for(TIMEOUT, || async {
        let sp = sps.get("thief").await.ok()?;
        (sp.status?.id.as_deref() == Some(thief.id.as_str())).then_some(())
    })
    .await
    .expect("the thief's status names its own principal again");
    wait_condition::<ServicePrincipal>(b, "thief", "Ready", "True", None).await;
    wait_condition::<DatabricksAppConnection>(b, "thief-app", "Ready", "True", None).await;
    assert_ne!(integration_of(b, "thief-app").await, victim_app);

    // An id that is not an id goes nowhere.
    merge::<ServicePrincipal>(b, "thief", json!({"status": {"id": "../../accounts/x"}}), true).await;
    merge::<ServicePrincipal>(b, "thief", annotate("oauth.databricks-operator.io/rotate", json!("2")), false)
        .await;
    wait_for(TIMEOUT, || async {
        (events(&world, b, "thief", "IdentityMismatch").await.len() >= 2).then_some(())
    })
    .await
    .expect("the invalid id is reported");

    // A trust policy on a principal whose object's status was pointed elsewhere refuses to act. Pausing the
    // thief keeps the forged id in place (a paused object makes no Databricks writes and no repairs).
    merge::<ServicePrincipal>(
        b,
        "thief",
        annotate("oauth.databricks-operator.io/paused", json!("true")),
        false,
    )
    .await;
    wait_condition::<ServicePrincipal>(b, "thief", "Ready", "False", Some("Paused")).await;
    merge::<ServicePrincipal>(
        b,
        "thief",
        json!({"status": {"id": victim.id, "applicationId": victim.application_id}}),
        true,
    )
    .await;
    create::<TrustPolicy>(
        &world,
        b,
        "thief-trust",
        json!({"servicePrincipalRef": {"name": "thief"}, "policyId": "pinned",
        "oidc": {"issuer": "https://evil.example.com", "subject": "me"}}),
    )
    .await;
    wait_condition::<TrustPolicy>(b, "thief-trust", "Ready", "False", Some("ServicePrincipalMismatch")).await;

    // Deleting the thief with its status pointing at the victim deletes the thief's own principal only.
    merge::<ServicePrincipal>(
        b,
        "thief",
        annotate("oauth.databricks-operator.io/paused", json!(null)),
        false,
    )
    .await;
    api::<TrustPolicy>(b).delete("thief-trust", &DeleteParams::default()).await.expect("delete");
    sps.delete("thief", &DeleteParams::default()).await.expect("delete");
    wait_for(TIMEOUT, || async { sps.get_opt("thief").await.ok()?.is_none().then_some(()) })
        .await
        .expect("gone");
    assert!(
        world.operator.admin.get_service_principal(&thief.id).await.is_err(),
        "the thief's own principal was deleted"
    );

    // The victim: no write ever named it, and its credentials work.
    assert!(world.writes_to(&victim.id).await.iter().all(|w| !w.contains("federationPolicies")));
    let victim_writes = world.writes_to(&victim.id).await;
    assert!(
        victim_writes.iter().all(|w| w.starts_with("POST") && w.ends_with("/credentials/secrets"))
            && victim_writes.len() == 1,
        "only team-a's own pass minted on its principal: {victim_writes:?}"
    );
    assert!(world.writes_to(&victim_app).await.is_empty(), "team-a's integration was written");
    world.operator.admin.get_service_principal(&victim.id).await.expect("the victim exists");
    assert!(
        world.operator.works(&victim.application_id, &victim_secret).await,
        "the victim's secret still works"
    );
    let app =
        world.operator.admin.get_custom_app(&victim_app).await.expect("the victim's integration exists");
    assert_eq!(app.redirect_urls, ["https://a.example.com/cb"]);
    world.nothing_written_elsewhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_policies_never_take_over_a_policy_they_did_not_create() {
    let world =
        World::new(|a, _b| json!({"delegations": [{"namespaces": {"names": [a]}, "trustPolicies": true}]}))
            .await;
    let (a, b) = (&world.a, &world.b);
    let (principal, _) = ready_principal(&world, a, "shared", json!({"credentials": {}})).await;
    let oidc = |subject: &str| json!({"issuer": "https://issuer.example.com", "subject": subject});
    create::<TrustPolicy>(
        &world,
        a,
        "first",
        json!({"servicePrincipalRef": {"name": "shared"}, "policyId": "pinned", "oidc": oidc("ci")}),
    )
    .await;
    wait_condition::<TrustPolicy>(a, "first", "Ready", "True", None).await;
    let before = world.operator.admin.get_federation_policy(&principal.id, "pinned").await.expect("policy");

    create::<TrustPolicy>(
        &world,
        a,
        "second",
        json!({"servicePrincipalRef": {"name": "shared"}, "policyId": "pinned", "oidc": oidc("attacker")}),
    )
    .await;
    let message = wait_condition::<TrustPolicy>(a, "second", "Ready", "False", Some("PolicyConflict")).await;
    assert!(message.contains("did not create"), "{message}");
    let after = world.operator.admin.get_federation_policy(&principal.id, "pinned").await.expect("policy");
    assert_eq!(after.oidc_policy, before.oidc_policy, "the first policy is untouched");
    assert_eq!(after.uid, before.uid);
    // Deleting the loser leaves the winner's policy in place.
    api::<TrustPolicy>(a).delete("second", &DeleteParams::default()).await.expect("delete");
    wait_for(TIMEOUT, || async {
        api::<TrustPolicy>(a).get_opt("second").await.ok()?.is_none().then_some(())
    })
    .await
    .expect("gone");
    world.operator.admin.get_federation_policy(&principal.id, "pinned").await.expect("still there");

    // Trust policies need a grant: team-b has none.
    ready_principal(&world, b, "b-principal", json!({})).await;
    create::<TrustPolicy>(
        &world,
        b,
        "b-trust",
        json!({"servicePrincipalRef": {"name": "b-principal"}, "oidc": oidc("x")}),
    )
    .await;
    let message = wait_condition::<TrustPolicy>(b, "b-trust", "Ready", "False", Some("NotDelegated")).await;
    assert!(message.contains("trustPolicies"), "{message}");
    // Revoking the grant reaches existing policies at once: they say why, and when their policy goes (after the
    // account's grace: tests/revocation.rs follows it to the end).
    let accounts: Api<DatabricksAccount> = Api::all(world.env.client.clone());
    let revoked = json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]}}]}});
    accounts
        .patch(&world.operator.account, &PatchParams::default(), &Patch::Merge(&revoked))
        .await
        .expect("revoke");
    let message = wait_condition::<TrustPolicy>(a, "first", "Ready", "False", Some("NotDelegated")).await;
    assert!(message.contains("trustPolicies"), "{message}");
    assert!(message.contains("federation policy pinned is deleted at"), "{message}");
    world.nothing_written_elsewhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_credentials_and_token_files_come_only_from_where_the_operator_allows() {
    let world = World::new(|_, _| json!({})).await;
    // The account of this world already reads its Secret from the operator's namespace. A second account points at
    // a tenant's Secret, a third at a token file outside the token directory.
    let accounts: Api<DatabricksAccount> = Api::all(world.env.client.clone());
    let tenant_secret: Secret = serde_json::from_value(json!({"metadata": {"name": "planted"},
        "stringData": {"DATABRICKS_CLIENT_ID": ADMIN_ID, "DATABRICKS_CLIENT_SECRET": "x"}}))
    .expect("secret");
    Api::<Secret>::namespaced(world.env.client.clone(), &world.a.namespace)
        .create(&PostParams::default(), &tenant_secret)
        .await
        .expect("secret");
    let host = world.operator.emulator.url();
    let cases = [
        (
            "elsewhere",
            json!({"oauthM2M": {"secretRef": {"namespace": world.a.namespace, "name": "planted"}}}),
            "CredentialsNamespaceNotAllowed",
        ),
        ("any-file", json!({"workloadIdentity": {"tokenPath": "/etc/hostname"}}), "TokenPathNotAllowed"),
    ];
    for (name, auth, reason) in &cases {
        let account: DatabricksAccount =
            serde_json::from_value(json!({"metadata": {"name": format!("{}-{name}", world.env.namespace)},
            "spec": {"accountId": support::operator::ACCOUNT_ID, "host": host, "auth": auth}}))
            .expect("account");
        accounts.create(&PostParams::default(), &account).await.expect("account");
        let name = account.name_any();
        let found = wait_for(TIMEOUT, || async {
            let status = accounts.get(&name).await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == *reason)
        })
        .await
        .unwrap_or_else(|_| panic!("{name} did not say {reason}"));
        assert!(
            found.message.contains("--credentials-namespace") || found.message.contains("--token-dir"),
            "{}",
            found.message
        );
    }
    // The default account says what its namespaces may do.
    let ready = world.operator.wait_account(&world.env, "True").await;
    assert!(ready.message.contains("no delegations"), "{}", ready.message);
}

async fn group_members(world: &World, group: &str) -> Vec<String> {
    let group = world.operator.admin.get_group(group).await.expect("group");
    group.members.into_iter().filter_map(|m| m.value).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_joined_only_as_granted_and_taken_back_with_the_grant() {
    let world_emulator = emulator().await;
    let setup = support::operator::admin_client(&world_emulator);
    // A principal of the platform's, already in a group of its own before team-a adopts it.
    let legacy = legacy_principal(&setup, "legacy reporting", false).await;
    let base = setup.create_group("team-a-base").await.expect("group");
    setup.add_group_member(&base.id, &legacy.id).await.expect("member");
    let admins = setup.create_group("admins").await.expect("group");
    let readers = setup.create_group("team-a-readers").await.expect("group");
    let legacy_app = legacy.application_id.clone();
    let world = World::with_emulator(
        |a, _b| {
            json!({"delegations": [{"namespaces": {"names": [a]}, "groups": ["team-a-*"],
                    "adopt": [{"applicationId": legacy_app}]}]})
        },
        world_emulator,
    )
    .await;
    let (a, b) = (&world.a, &world.b);
    let before = world.operator.emulator.stats().await.writes;

    // Joining a group is gaining its grants: an ungranted one is refused before anything is written.
    let sp: ServicePrincipal =
        create(&world, a, "escalate", json!({"groups": ["team-a-readers", "admins"], "credentials": {}}))
            .await;
    let message =
        wait_condition::<ServicePrincipal>(a, "escalate", "Ready", "False", Some("GroupNotAllowed")).await;
    assert!(message.contains("group \"admins\"") && message.contains("spec.delegations"), "{message}");
    assert_eq!(world.operator.tagged(&sp).await, 0, "no principal was even created");
    create::<ServicePrincipal>(&world, b, "b-escalate", json!({"groups": ["team-a-readers"]})).await;
    wait_condition::<ServicePrincipal>(b, "b-escalate", "Ready", "False", Some("GroupNotAllowed")).await;
    assert_eq!(world.operator.emulator.stats().await.writes, before, "refusals write nothing to Databricks");
    assert!(group_members(&world, &admins.id).await.is_empty());

    // Granted: joined. An adopted principal's own membership is the platform's: left as it is on release.
    let (member, _) = ready_principal(&world, a, "member", json!({"groups": ["team-a-readers"]})).await;
    let adopt = json!({"adopt": {"applicationId": legacy.application_id},
                       "groups": ["team-a-readers", "team-a-base"]});
    ready_principal(&world, a, "adopter", adopt).await;
    let mut joined = group_members(&world, &readers.id).await;
    joined.sort();
    let mut expected = vec![member.id.clone(), legacy.id.clone()];
    expected.sort();
    assert_eq!(joined, expected);
    delete_and_wait::<ServicePrincipal>(a, "adopter").await;
    assert_eq!(
        group_members(&world, &readers.id).await,
        vec![member.id.clone()],
        "what the adoption added goes"
    );
    assert_eq!(
        group_members(&world, &base.id).await,
        vec![legacy.id.clone()],
        "what the principal had stays"
    );

    // The platform team takes the groups back: the membership goes at once, and the object says why.
    patch_account(&world, json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]}}]}})).await;
    let message =
        wait_condition::<ServicePrincipal>(a, "member", "Ready", "False", Some("GroupNotAllowed")).await;
    assert!(message.contains("left group team-a-readers"), "{message}");
    assert!(group_members(&world, &readers.id).await.is_empty());
    assert_eq!(events(&world, a, "member", "AssignmentRevoked").await.len(), 1);
    world.nothing_written_elsewhere().await;
}

/// The principal's rule set entries (role, principal).
async fn rule_set_entries(world: &World, application_id: &str) -> Vec<(String, String)> {
    let admin = &world.operator.admin;
    let rule_set =
        admin.get_rule_set(&admin.principal_rule_set_name(application_id)).await.expect("rule set");
    rule_set
        .grant_rules
        .into_iter()
        .flat_map(|r| r.principals.into_iter().map(move |p| (r.role.clone(), p)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_by_names_only_the_namespaces_own_principals_and_what_was_delegated() {
    let world = World::new(
        |a, _b| json!({"delegations": [{"namespaces": {"names": [a]}, "usedBy": ["users/*@a.example.com"]}]}),
    )
    .await;
    let (a, b) = (&world.a, &world.b);
    let (victim, _) = ready_principal(&world, b, "victim", json!({})).await;
    let (runner, _) = ready_principal(&world, a, "runner", json!({})).await;
    let before = world.operator.emulator.stats().await.writes;

    // Letting someone else's principal, or an ungranted user, act as this one: refused before any write.
    for (name, principal) in [
        ("other-namespace", format!("servicePrincipals/{}", victim.application_id)),
        ("other-user", "users/mallory@b.example.com".to_owned()),
        ("any-group", "groups/users".to_owned()),
    ] {
        let spec = json!({"usedBy": [{"principal": principal}], "credentials": {}});
        let sp: ServicePrincipal = create(&world, a, name, spec).await;
        let message =
            wait_condition::<ServicePrincipal>(a, name, "Ready", "False", Some("UsedByNotAllowed")).await;
        assert!(message.contains(&principal) && message.contains("spec.delegations"), "{name}: {message}");
        assert_eq!(world.operator.tagged(&sp).await, 0, "{name}: no principal was even created");
    }
    assert_eq!(world.operator.emulator.stats().await.writes, before, "refusals write nothing to Databricks");

    // Allowed: the namespace's own principal, and the delegated users.
    let runner_entry = format!("servicePrincipals/{}", runner.application_id);
    let spec = json!({"usedBy": [{"principal": runner_entry}, {"principal": "users/jo@a.example.com", "role": "Manager"}]});
    let (job, _) = ready_principal(&world, a, "job", spec).await;
    let entries = rule_set_entries(&world, &job.application_id).await;
    assert!(
        entries.contains(&("roles/servicePrincipal.user".to_owned(), runner_entry.clone())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("roles/servicePrincipal.manager".to_owned(), "users/jo@a.example.com".to_owned()))
    );

    // The platform team takes the users back: that entry goes at once; the namespace's own principal stays.
    patch_account(&world, json!({"spec": {"delegations": [{"namespaces": {"names": [a.namespace]}}]}})).await;
    let message =
        wait_condition::<ServicePrincipal>(a, "job", "Ready", "False", Some("UsedByNotAllowed")).await;
    assert!(message.contains("removed usedBy users/jo@a.example.com (Manager)"), "{message}");
    let entries = rule_set_entries(&world, &job.application_id).await;
    assert!(!entries.iter().any(|(_, p)| p == "users/jo@a.example.com"), "{entries:?}");
    assert!(entries.contains(&("roles/servicePrincipal.user".to_owned(), runner_entry)), "{entries:?}");
    world.nothing_written_elsewhere().await;
}

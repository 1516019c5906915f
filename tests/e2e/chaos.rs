//! Chaos on the real node.

use std::time::Duration;

use databricks_oauth_operator::crd::{ServicePrincipal, TrustPolicy};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Pod, Secret, ServiceAccount},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};

use super::{support::wait_for, world::*};

/// Chaos on the real node: 200 objects of every kind converge while Databricks fails (5xx, 429, lost answers)
/// and the leader Pod is killed (grace 0) again and again. Then: no duplicate principal or integration, no
/// orphaned secret, every published secret signs in, at most 5 secrets per principal, no secret value in any
/// operator log (each leader's log is read just before it is killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_two_hundred_objects_converge_while_the_leader_is_killed_again_and_again() {
    use databricks_emulator::FaultRule;
    use databricks_oauth_operator::crd::DatabricksAppConnection;
    const PRINCIPALS: usize = 150;
    const APPS_COUNT: usize = 25;
    const POLICIES: usize = 25;
    let world = World::new().await;
    world.trust_the_operator().await;
    world.helm_install(&["--annotation-debounce=1s"]);
    world.operator_pods_ready().await;
    world.create_account().await;
    world.account_ready().await;
    let started = std::time::Instant::now();
    for rule in [
        FaultRule { skip: 10, ..FaultRule::status("scim.sp.create", 503).times(20) },
        FaultRule { skip: 25, ..FaultRule::drop_response("scim.sp.create").times(10) },
        FaultRule { skip: 15, ..FaultRule::drop_response("secrets.create").times(10) },
        FaultRule { skip: 30, ..FaultRule::status("secrets.create", 500).times(10) },
        FaultRule { skip: 40, empty_body: true, ..FaultRule::status("scim.sp.list", 429).times(20) },
        FaultRule { skip: 5, ..FaultRule::drop_response("apps.create").times(4) },
        FaultRule { skip: 50, ..FaultRule::status("oidc.token", 503).times(10) },
    ] {
        world.emulator.add_fault(rule).await;
    }
    let mut principals = Vec::new();
    for i in 0..PRINCIPALS {
        let sp: ServicePrincipal = create(
            &world.client,
            json!({"metadata": {"name": format!("sp-{i}"), "namespace": APPS},
                   "spec": {"accountRef": {"name": "e2e"}, "credentials": {}}}),
        )
        .await;
        principals.push(sp);
    }
    for i in 0..APPS_COUNT {
        create::<DatabricksAppConnection>(
            &world.client,
            json!({"metadata": {"name": format!("app-{i}"), "namespace": APPS}, "spec": {"accountRef": {"name": "e2e"},
                   "redirectUrls": [format!("https://app-{i}.example.com/cb")], "confidential": true}}),
        )
        .await;
    }
    for i in 0..POLICIES {
        let sa: ServiceAccount =
            from_json(json!({"metadata": {"name": format!("wl-{i}"), "namespace": APPS}}));
        Api::<ServiceAccount>::namespaced(world.client.clone(), APPS)
            .create(&PostParams::default(), &sa)
            .await
            .expect("sa");
        create::<TrustPolicy>(
            &world.client,
            json!({"metadata": {"name": format!("trust-{i}"), "namespace": APPS}, "spec": {
                "servicePrincipalRef": {"name": format!("sp-{i}")}, "kubernetes": {"serviceAccountName": format!("wl-{i}")}}}),
        )
        .await;
    }

    // Kill the leader a few seconds into each term until everything is Ready (or 10 kills: then let it finish).
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), OPERATOR_NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(world.client.clone(), OPERATOR_NAMESPACE);
    let mut leader_logs = String::new();
    let mut kills = 0;
    let all_ready = || async {
        let ready = |items: Vec<Value>| {
            items
                .iter()
                .filter(|o| {
                    o["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                })
                .count()
        };
        let sps = Api::<ServicePrincipal>::namespaced(world.client.clone(), APPS);
        let apps = Api::<DatabricksAppConnection>::namespaced(world.client.clone(), APPS);
        let policies = Api::<TrustPolicy>::namespaced(world.client.clone(), APPS);
        let params = ListParams::default();
        (
            ready(sps.list(&params).await.map(|l| to_values(l.items)).unwrap_or_default()),
            ready(apps.list(&params).await.map(|l| to_values(l.items)).unwrap_or_default()),
            ready(policies.list(&params).await.map(|l| to_values(l.items)).unwrap_or_default()),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    loop {
        let (sps, apps, policies) = all_ready().await;
        if (sps, apps, policies) == (PRINCIPALS, APPS_COUNT, POLICIES) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not converged after 15 min: {sps}/{PRINCIPALS} principals, {apps}/{APPS_COUNT} apps, {policies}/{POLICIES} policies\n{}",
            world.operator_logs().await
        );
        if kills < 10 {
            let holder = leases.get(RELEASE).await.ok().and_then(|l| l.spec).and_then(|s| s.holder_identity);
            let live = match &holder {
                Some(name) => pods
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .filter(|p| p.metadata.deletion_timestamp.is_none()),
                None => None,
            };
            if let Some(pod) = live {
                // Let it work a few seconds into its term, then kill it.
                tokio::time::sleep(Duration::from_secs(5)).await;
                let params = kube::api::LogParams::default();
                leader_logs.push_str(&pods.logs(&pod.name_any(), &params).await.unwrap_or_default());
                let kill = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                if pods.delete(&pod.name_any(), &kill).await.is_ok() {
                    kills += 1;
                }
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged = started.elapsed();

    // No duplicate principal, no orphaned secret, at most 5 secrets, every published secret signs in.
    let sps: Api<ServicePrincipal> = Api::namespaced(world.client.clone(), APPS);
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), APPS);
    let mut values = Vec::new();
    let mut most_secrets = 0;
    for sp in &principals {
        let name = sp.name_any();
        assert_eq!(world.principals_tagged(&sp.uid().expect("uid")).await, 1, "{name}: one remote principal");
        let status = sps.get(&name).await.expect("sp").status.expect("status");
        let id = status.id.expect("id");
        let published = status.credentials.and_then(|c| c.secret_id).expect("published");
        // Right at convergence (replaced secrets may still be in their grace period), then after it.
        most_secrets = most_secrets.max(world.admin.list_secrets(&id).await.map_or(0, |l| l.len()));
        let live = wait_for(TIMEOUT, || async {
            let live: Vec<String> =
                world.admin.list_secrets(&id).await.ok()?.into_iter().map(|s| s.id).collect();
            (live == vec![published.clone()]).then_some(live)
        })
        .await;
        assert!(live.is_ok(), "{name}: only the published secret is left ({live:?})");
        let data = secrets.get(&format!("{name}-databricks")).await.expect("secret").data.unwrap_or_default();
        let text = |key: &str| {
            String::from_utf8(data.get(key).map(|v| v.0.clone()).unwrap_or_default()).unwrap_or_default()
        };
        let (client_id, secret) = (text("DATABRICKS_CLIENT_ID"), text("DATABRICKS_CLIENT_SECRET"));
        assert!(
            world.admin.verify_client_credentials(&client_id, &secret).await.is_ok(),
            "{name}: the secret signs in"
        );
        values.push(secret);
    }
    assert!(most_secrets <= 5, "{most_secrets} secrets on one principal");
    let summary = world.emulator.summary().await;
    let remote_principals = summary["principals"].as_array().map_or(0, Vec::len);
    assert_eq!(remote_principals, PRINCIPALS + 1, "the admin and one per object: no duplicate");
    let integrations = world.admin.list_custom_apps().await.expect("apps");
    for i in 0..APPS_COUNT {
        let name = format!("app-{i}");
        assert_eq!(integrations.iter().filter(|a| a.name == name).count(), 1, "{name}: one integration");
        let data =
            secrets.get(&format!("{name}-oauth-client")).await.expect("secret").data.unwrap_or_default();
        let secret =
            String::from_utf8(data.get("DATABRICKS_CLIENT_SECRET").map(|v| v.0.clone()).unwrap_or_default());
        values.push(secret.expect("utf-8"));
    }
    leader_logs.push_str(&world.logs(OPERATOR_NAMESPACE, "").await);
    for value in &values {
        assert!(
            !value.is_empty() && !leader_logs.contains(value.as_str()),
            "a secret value in an operator log"
        );
    }
    let stats = world.emulator.stats().await;
    eprintln!(
        "chaos: {} objects converged in {:.0} s with {kills} leader kills; {} Databricks requests ({} answered 5xx, \
         {} answered 429); {remote_principals} remote principals for {PRINCIPALS} objects (+ admin), most secrets on \
         one principal {most_secrets}; {} bytes of operator logs checked for {} secret values",
        PRINCIPALS + APPS_COUNT + POLICIES,
        converged.as_secs_f64(),
        stats.requests,
        stats.with_status(500) + stats.with_status(503),
        stats.with_status(429),
        leader_logs.len(),
        values.len(),
    );
    assert!(kills >= 3, "the leader was killed during the run ({kills} kills)");
    drop(world);
}

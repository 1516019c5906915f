//! End to end on a real cluster on this machine (`make e2e`, root): two nodes (containerd + runc + kubelet), the
//! operator's image built by `make image` and installed by its Helm chart or its kustomize base, the operator
//! authenticating to the (emulated) account with workload identity from its projected token, and workloads that
//! consume what it makes the way users' workloads do: the official Databricks SDK for Go, configured by `envFrom`
//! of a generated Secret, or by a TrustPolicy's ConfigMap and a projected token (no secret).
//!
//! Not part of `make test` (`test = false` in Cargo.toml): it needs root, the node binaries and the images, which
//! `hack/e2e.sh` provides. Every Pod runs with `hostNetwork: true` and reaches the apiserver and the emulator on
//! loopback (see `control_plane::Cluster`).

#[path = "e2e/chaos.rs"]
mod chaos;
mod support;
#[path = "e2e/world.rs"]
mod world;

use std::path::Path;

use databricks_oauth_operator::crd::{ServicePrincipal, TrustPolicy};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Secret, ServiceAccount},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use support::{manifests, operator::ACCOUNT_ID, wait_for};
use world::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_image_on_workload_identity_and_workloads_consume_what_it_makes() {
    let world = World::new().await;
    world.trust_the_operator().await;
    world.helm_install(&["--annotation-debounce=1s", "--rotate-min-interval=0s"]);

    // Two replicas Ready through their probes; exactly one holds the Lease.
    let pods = world.operator_pods_ready().await;
    let leader = world.lease_holder(None).await;
    assert!(pods.contains(&leader), "the Lease holder {leader} is one of the replicas {pods:?}");

    // The operator in its Pod signs in with its projected ServiceAccount token: no secret anywhere.
    world.create_account().await;
    let message = world.account_ready().await;
    assert!(message.contains("workload identity"), "{message}");
    let secrets: Api<Secret> = Api::namespaced(world.client.clone(), OPERATOR_NAMESPACE);
    // (Helm keeps its release record in a Secret: that is not a credential.)
    let own_secrets: Vec<Secret> = secrets
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items
        .into_iter()
        .filter(|s| s.type_.as_deref() != Some("helm.sh/release.v1"))
        .collect();
    assert!(
        own_secrets.is_empty(),
        "no secret in the operator's namespace: {:?}",
        own_secrets.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    );

    // A principal with a secret, consumed by a Deployment through envFrom.
    let reader: ServicePrincipal = create(
        &world.client,
        json!({"metadata": {"name": "reader", "namespace": APPS}, "spec": {"accountRef": {"name": "e2e"}, "credentials": {
            "rolloutRestartTargets": [{"kind": "Deployment", "name": "secret-consumer"}]}}}),
    )
    .await;
    world.wait_ready::<ServicePrincipal>(None, "reader").await;
    world
        .consumer(
            "secret-consumer",
            "default",
            json!([{"secretRef": {"name": "reader-databricks"}}]),
            json!([]),
            json!([]),
        )
        .await;

    // A principal with no secret, trusted for a ServiceAccount's tokens: the workload reads the TrustPolicy's
    // ConfigMap and a projected token (file-oidc).
    create::<ServicePrincipal>(
        &world.client,
        json!({"metadata": {"name": "federated", "namespace": APPS}, "spec": {"accountRef": {"name": "e2e"}}}),
    )
    .await;
    let sa: ServiceAccount = from_json(json!({"metadata": {"name": "fed-app", "namespace": APPS}}));
    Api::<ServiceAccount>::namespaced(world.client.clone(), APPS)
        .create(&PostParams::default(), &sa)
        .await
        .expect("sa");
    create::<TrustPolicy>(
        &world.client,
        json!({"metadata": {"name": "fed", "namespace": APPS}, "spec": {
            "servicePrincipalRef": {"name": "federated"}, "kubernetes": {"serviceAccountName": "fed-app"}, "verify": true}}),
    )
    .await;
    world.wait_ready::<TrustPolicy>(None, "fed").await;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(world.client.clone(), APPS);
    let config = config_maps
        .get("fed-databricks-federation")
        .await
        .expect("the TrustPolicy's ConfigMap")
        .data
        .unwrap_or_default();
    let audience = config.get("DATABRICKS_TOKEN_AUDIENCE").cloned().unwrap_or_else(|| ACCOUNT_ID.to_owned());
    let token_path = config.get("DATABRICKS_OIDC_TOKEN_FILEPATH").cloned().expect("token path");
    let token_dir = Path::new(&token_path).parent().expect("dir").display().to_string();
    let token_file = Path::new(&token_path).file_name().expect("file").to_string_lossy().into_owned();
    world
        .consumer(
            "federated-consumer",
            "fed-app",
            json!([{"configMapRef": {"name": "fed-databricks-federation"}}]),
            json!([{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": token_file, "audience": audience, "expirationSeconds": 3600}}]}}]),
            json!([{"name": "token", "mountPath": token_dir, "readOnly": true}]),
        )
        .await;
    let secret_calls = world.consumer_calls("secret-consumer", 0, 5).await;
    let federated_calls = world.consumer_calls("federated-consumer", 0, 5).await;
    assert_eq!(world.failures_of("secret-consumer"), Vec::<String>::new());
    assert_eq!(world.failures_of("federated-consumer"), Vec::<String>::new());

    // The leader Pod dies at once (grace 0): the other replica takes the Lease and the work goes on.
    let pods_api: Api<Pod> = Api::namespaced(world.client.clone(), OPERATOR_NAMESPACE);
    pods_api
        .delete(&leader, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await
        .expect("delete leader");
    // The surviving replica or the Deployment's replacement Pod, whichever acquires the expired Lease first.
    let next = world.lease_holder(Some(&leader)).await;
    let holder = pods_api.get(&next).await.expect("the new holder is a Pod");
    assert!(holder.metadata.deletion_timestamp.is_none(), "{next} took over and is not going away");
    let after: ServicePrincipal = create(
        &world.client,
        json!({"metadata": {"name": "after-handover", "namespace": APPS}, "spec": {"accountRef": {"name": "e2e"}, "credentials": {}}}),
    )
    .await;
    world.wait_ready::<ServicePrincipal>(None, "after-handover").await;
    world.operator_pods_ready().await;
    // No duplicate principal and no extra secret across the handover.
    for sp in [&reader, &after] {
        let uid = sp.uid().expect("uid");
        let tagged = world.principals_tagged(&uid).await;
        if tagged != 1 {
            // Which replica created what, and when: the object's events name the reporting Pod.
            panic!(
                "{tagged} remote principals for {}; its events:\n{}",
                sp.name_any(),
                events_of(&world, sp).await
            );
        }
        let status = Api::<ServicePrincipal>::namespaced(world.client.clone(), APPS)
            .get(&sp.name_any())
            .await
            .expect("sp")
            .status
            .expect("status");
        let id = status.id.expect("id");
        let secrets = world.admin.list_secrets(&id).await.expect("secrets");
        assert_eq!(secrets.len(), 1, "one OAuth secret for {}", sp.name_any());
    }
    // The consumers never noticed.
    world.consumer_calls("secret-consumer", secret_calls, 3).await;
    world.consumer_calls("federated-consumer", federated_calls, 3).await;
    assert_eq!(world.failures_of("secret-consumer"), Vec::<String>::new());
    assert_eq!(world.failures_of("federated-consumer"), Vec::<String>::new());
    // Rotation under load: three rotations while both consumers run. The Secret's consumer is rolled onto each
    // new secret, and the replaced one is deleted only after that (and the 20 s grace period): no call fails.
    let sps: Api<ServicePrincipal> = Api::namespaced(world.client.clone(), APPS);
    let deployments: Api<Deployment> = Api::namespaced(world.client.clone(), APPS);
    let mut consumer_pods = std::collections::BTreeSet::new();
    let rollout_key = databricks_oauth_operator::controllers::rollout::annotation_key(
        "sp",
        "reader",
        &reader.uid().expect("uid"),
    );
    for rotation in 1..=3 {
        let old = sps
            .get("reader")
            .await
            .expect("sp")
            .status
            .and_then(|s| s.credentials)
            .and_then(|c| c.secret_id)
            .expect("secret id");
        let patch = json!({"metadata": {"annotations": {"oauth.databricks-operator.io/rotate": rotation.to_string()}}});
        sps.patch("reader", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
            .expect("rotate");
        let new = wait_for(TIMEOUT, || async {
            let id = sps.get("reader").await.ok()?.status?.credentials?.secret_id?;
            (id != old).then_some(id)
        })
        .await
        .expect("a new secret is published");
        let principal_id = sps.get("reader").await.expect("sp").status.and_then(|s| s.id).expect("id");
        // The old secret goes only once the consumer runs the new one.
        let retired = wait_for(TIMEOUT, || async {
            let remote = world.admin.list_secrets(&principal_id).await.ok()?;
            (!remote.iter().any(|s| s.id == old)).then_some(())
        })
        .await;
        if let Err(e) = retired {
            panic!(
                "rotation {rotation}: the replaced secret {old} is deleted: {e}\n{}",
                world.operator_logs().await
            );
        }
        let template = deployments.get("secret-consumer").await.expect("deployment").spec.template;
        let rolled_for =
            template.metadata.and_then(|m| m.annotations).and_then(|a| a.get(&rollout_key).cloned());
        assert_eq!(
            rolled_for.as_deref(),
            Some(new.as_str()),
            "rotation {rotation}: the consumer was rolled onto {new}"
        );
        let pods: Api<Pod> = Api::namespaced(world.client.clone(), APPS);
        for pod in pods.list(&ListParams::default().labels("app=secret-consumer")).await.expect("pods").items
        {
            if pod.metadata.deletion_timestamp.is_none() {
                let annotation = pod.annotations().get(&rollout_key).cloned();
                assert_eq!(
                    annotation.as_deref(),
                    Some(new.as_str()),
                    "rotation {rotation}: running consumer {} was started for the new secret",
                    pod.name_any()
                );
                consumer_pods.insert(pod.name_any());
            }
        }
        let before = world.calls_of("secret-consumer").values().map(|(ok, _)| ok).sum();
        world.consumer_calls("secret-consumer", before, 3).await;
    }
    assert_eq!(consumer_pods.len(), 3, "a new consumer pod per rotation: {consumer_pods:?}");
    assert_eq!(
        world.failures_of("secret-consumer"),
        Vec::<String>::new(),
        "no call failed across three rotations"
    );
    assert_eq!(world.failures_of("federated-consumer"), Vec::<String>::new());

    // No secret value in any Pod log.
    let secret =
        Api::<Secret>::namespaced(world.client.clone(), APPS).get("reader-databricks").await.expect("secret");
    let value = secret.data.and_then(|d| d.get("DATABRICKS_CLIENT_SECRET").cloned()).expect("client secret");
    let value = String::from_utf8(value.0).expect("utf-8");
    for namespace in [OPERATOR_NAMESPACE, APPS] {
        let logs = world.logs(namespace, "").await;
        assert!(!logs.contains(&value), "a secret value in the logs of {namespace}");
    }
    drop(world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kustomize_base_runs_the_image_with_two_replicas_and_one_leader() {
    let world = World::new().await;
    world.trust_the_operator().await;
    // The CRDs from crds/, then the base with the local image and host networking on loopback.
    let crds: Vec<kube::api::DynamicObject> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .expect("crds")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .flat_map(|e| manifests::parse(&std::fs::read(e.path()).expect("crd")))
        .collect();
    manifests::apply_all(&world.client, &crds).await;
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e/kustomize");
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base");
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [pathdiff(&base, &overlay)],
        "images": [{"name": "databricks-oauth-operator", "newName": IMAGE, "newTag": env!("CARGO_PKG_VERSION")}],
        "patches": [{"target": {"kind": "Deployment", "name": "databricks-oauth-operator"}, "patch": json!([
            {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true},
            {"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": "ClusterFirstWithHostNet"},
            {"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value":
                ["run", "--log-format=json", "--leader-elect", "--metrics-addr=[$(POD_IP)]:8080", "--health-addr=[$(POD_IP)]:8081"]},
            {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}},
            {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "KUBERNETES_SERVICE_PORT", "value": world.apiserver_port()}},
            {"op": "replace", "path": "/spec/template/spec/volumes/0/projected/sources/0/serviceAccountToken/audience", "value": ACCOUNT_ID},
        ]).to_string()}],
    });
    std::fs::write(overlay.join("kustomization.yaml"), serde_yaml::to_string(&kustomization).expect("yaml"))
        .expect("write");
    let objects = manifests::kustomize("target/e2e/kustomize");
    manifests::apply_all(&world.client, &objects).await;

    let pods = world.operator_pods_ready().await;
    let leader = world.lease_holder(None).await;
    assert!(pods.contains(&leader), "the Lease holder {leader} is one of {pods:?}");
    world.create_account().await;
    world.account_ready().await;
    let sp: ServicePrincipal = create(
        &world.client,
        json!({"metadata": {"name": "kustomized", "namespace": APPS}, "spec": {"accountRef": {"name": "e2e"}, "credentials": {}}}),
    )
    .await;
    world.wait_ready::<ServicePrincipal>(None, "kustomized").await;
    assert_eq!(world.principals_tagged(&sp.uid().expect("uid")).await, 1);
    drop(world);
}

/// The emulator's image (`make emulator-image`) as a Pod, configured only by its environment, the way a CI
/// service container runs it: the official Go SDK program runs every account operation against it, and the
/// `databricks` CLI finds the account host through it, on a non-loopback address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_image_serves_the_official_clients_from_a_pod() {
    let world = World::new().await;
    let (account, admin, workspace) =
        ("5b0c1f0e-2a3d-4e5f-8a9b-0c1d2e3f4a5b", "ci-admin", 7_000_000_000_000_001_i64);
    let _: Secret = create(
        &world.client,
        json!({"metadata": {"name": "emulator-admin", "namespace": APPS}, "stringData": {"secret": "ci-admin-secret"}}),
    )
    .await;
    // The namespace's default ServiceAccount comes from the controller manager, a moment after the namespace.
    let accounts: Api<ServiceAccount> = Api::namespaced(world.client.clone(), APPS);
    wait_for(TIMEOUT, || async { accounts.get_opt("default").await.ok().flatten() })
        .await
        .expect("the default ServiceAccount");
    let port = 18089;
    let env = json!([
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "DATABRICKS_EMULATOR_LISTEN", "value": format!("$(POD_IP):{port}")},
        {"name": "DATABRICKS_EMULATOR_ACCOUNT_ID", "value": account},
        {"name": "DATABRICKS_EMULATOR_ADMIN_CLIENT_ID", "value": admin},
        {"name": "DATABRICKS_EMULATOR_ADMIN_SECRET",
         "valueFrom": {"secretKeyRef": {"name": "emulator-admin", "key": "secret"}}},
        {"name": "DATABRICKS_EMULATOR_WORKSPACES", "value": workspace.to_string()},
    ]);
    let _: Pod = create(
        &world.client,
        json!({
            "metadata": {"name": "databricks-emulator", "namespace": APPS, "labels": {"app": "databricks-emulator"}},
            "spec": {
                "hostNetwork": true,
                "automountServiceAccountToken": false,
                // Longer than the test waits: only a process that stops on SIGTERM is gone in time.
                "terminationGracePeriodSeconds": 600,
                "containers": [{
                    "name": "emulator",
                    "image": format!("{EMULATOR_IMAGE}:{}", env!("CARGO_PKG_VERSION")),
                    "imagePullPolicy": "Never",
                    "env": env,
                    "readinessProbe": {"httpGet": {"path": "/.well-known/databricks-config", "port": port},
                                       "periodSeconds": 1},
                }],
            },
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), APPS);
    let ready = wait_for(TIMEOUT, || async {
        let pod = pods.get("databricks-emulator").await.ok()?;
        pod_ready(&pod).then(|| pod.status.and_then(|s| s.pod_ip)).flatten()
    })
    .await;
    let ip = match ready {
        Ok(ip) => ip,
        Err(err) => panic!("the emulator Pod is not Ready: {err}\n{}", world.describe(APPS).await),
    };
    let host = format!("http://{ip}:{port}");

    let conformance = tokio::process::Command::new(support::clients::built("sdk").join("conformance"))
        .env("EMU_HOST", &host)
        .env("EMU_ACCOUNT_ID", account)
        .env("EMU_CLIENT_ID", admin)
        .env("EMU_CLIENT_SECRET", "ci-admin-secret")
        .env("EMU_WORKSPACE_ID", workspace.to_string())
        .env("HOME", world.cluster.state_dir())
        .output()
        .await
        .expect("running the Go SDK program");
    let printed = support::clients::printed(&conformance);
    assert!(conformance.status.success(), "the Go SDK against the emulator's Pod:\n{printed}");
    assert!(printed.lines().any(|l| l.starts_with("OK ")), "{printed}");

    let cli = support::clients::Cli::new();
    let signed_in = support::clients::Account {
        host: host.clone(),
        account_id: account.to_owned(),
        client_id: admin.to_owned(),
        client_secret: "ci-admin-secret".to_owned(),
    };
    let made = cli.ok(&signed_in, &["service-principals", "create", "--display-name", "from-the-cli"]).await;
    assert_eq!(made["displayName"], "from-the-cli", "{made}");
    assert!(
        cli.cached_host_metadata().is_some_and(|m| m.contains("ACCOUNT_HOST")),
        "the CLI found an account host"
    );

    // The container stops on SIGTERM, as a CI service container must: its grace period is longer than the wait.
    pods.delete("databricks-emulator", &DeleteParams::default()).await.expect("delete");
    wait_for(TIMEOUT, || async {
        pods.get_opt("databricks-emulator").await.ok().flatten().is_none().then_some(())
    })
    .await
    .expect("the emulator stopped on SIGTERM");
    drop(world);
}

/// `path` relative to `from` (both absolute, `from` a directory below the project).
fn pathdiff(path: &Path, from: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let up = from.strip_prefix(root).expect("below the project").components().count();
    let down = path.strip_prefix(root).expect("below the project");
    format!("{}{}", "../".repeat(up), down.display())
}

/// The events of `sp`, one per line: time, reporting Pod, reason, note (notes never hold secret values).
async fn events_of(world: &World, sp: &ServicePrincipal) -> String {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(world.client.clone(), APPS);
    let selector = format!("regarding.name={}", sp.name_any());
    let listed =
        events.list(&ListParams::default().fields(&selector)).await.map(|l| l.items).unwrap_or_default();
    listed
        .iter()
        .map(|e| {
            let at = e.event_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            let pod = e.reporting_instance.clone().unwrap_or_default();
            let (reason, note) = (e.reason.clone().unwrap_or_default(), e.note.clone().unwrap_or_default());
            format!("{at} {pod} {reason}: {note}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

//! End to end on a real cluster on this machine (`make e2e`, root): two nodes (containerd + runc + kubelet), the
//! operator's image built by `make image` and installed by its Helm chart or its kustomize base, the operator
//! authenticating to the (emulated) account with workload identity from its projected token, and workloads that
//! consume what it makes the way users' workloads do: the official Databricks SDK for Go, configured by `envFrom`
//! of a generated Secret, or by a TrustPolicy's ConfigMap and a projected token (no secret).
//!
//! Not part of `make test` (`test = false` in Cargo.toml): it needs root, the node binaries and the images, which
//! `hack/e2e.sh` provides. Every Pod runs with `hostNetwork: true` and reaches the apiserver and the emulator on
//! loopback (see `control_plane::Cluster`).

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use databricks_oauth_operator::{
    control_plane::{Cluster, ClusterOptions},
    controllers::trust_policy::cluster_issuer,
    crd::{DatabricksAccount, ServicePrincipal, TrustPolicy},
    databricks::{
        AccountClient,
        types::{FederationPolicy, OidcPolicy},
    },
    emulator::Emulator,
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Namespace, Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{
    manifests,
    operator::{ACCOUNT_ID, ADMIN_ID, admin_client, emulator},
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(180);
const OPERATOR_NAMESPACE: &str = "databricks-oauth-operator";
const RELEASE: &str = "databricks-oauth-operator";
const APPS: &str = "apps";
const IMAGE: &str = "localhost/databricks-oauth-operator";
const CONSUMER_IMAGE: &str = "localhost/doo-consumer:e2e";

/// The images `hack/e2e.sh` built, as (base name, archive), for `ClusterOptions::images`.
fn images() -> Vec<(String, PathBuf)> {
    let dir = std::env::var_os("DOO_E2E_IMAGES")
        .map(PathBuf::from)
        .expect("DOO_E2E_IMAGES is not set: run the end-to-end tests with `make e2e`");
    let version = env!("CARGO_PKG_VERSION");
    let wanted = [
        ("localhost/pause", "pause.oci.tar".to_owned()),
        (IMAGE, format!("databricks-oauth-operator-{version}.oci.tar")),
        ("localhost/doo-consumer", "consumer.oci.tar".to_owned()),
    ];
    wanted
        .into_iter()
        .map(|(base, file)| {
            let path = dir.join(&file);
            assert!(path.is_file(), "{} is missing: run `make e2e`", path.display());
            (base.to_owned(), path)
        })
        .collect()
}

fn helm() -> String {
    let output = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/build-helm.sh"))
        .output()
        .expect("bash");
    assert!(output.status.success(), "building helm: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_owned()
}

/// A cluster, the emulator, and an administrator's view of both.
struct World {
    cluster: Cluster,
    client: Client,
    kubeconfig: PathBuf,
    emulator: Emulator,
    admin: AccountClient,
    /// Where the consumers append one line per call (a hostPath, so it outlives their Pods).
    calls: PathBuf,
}

impl World {
    async fn new() -> Self {
        let cluster = Cluster::start(ClusterOptions {
            nodes: 2,
            images: images(),
            state_parent: std::env::var_os("DOO_E2E_STATE").map(PathBuf::from),
        })
        .await
        .unwrap_or_else(|err| panic!("the e2e cluster could not be started: {err}"));
        let client = cluster.plane().admin_client().await.expect("admin client");
        let kubeconfig = cluster.state_dir().join("admin.kubeconfig");
        let calls = cluster.state_dir().join("calls");
        std::fs::create_dir_all(&calls).expect("calls dir");
        // The consumers run as 65532.
        Command::new("chmod").arg("0777").arg(&calls).status().expect("chmod");
        let emulator = emulator().await;
        let admin = admin_client(&emulator);
        for namespace in [OPERATOR_NAMESPACE, APPS] {
            let ns: Namespace = from_json(json!({"metadata": {"name": namespace}}));
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &ns)
                .await
                .expect("namespace");
        }
        Self { cluster, client, kubeconfig, emulator, admin, calls }
    }

    fn apiserver_port(&self) -> String {
        self.cluster.plane().server_url().rsplit(':').next().unwrap_or_default().to_owned()
    }

    /// Lets the operator's ServiceAccount sign in to the account as its admin principal: a federation policy
    /// trusting the cluster's tokens for that ServiceAccount, with the cluster's keys inline. No secret.
    async fn trust_the_operator(&self) {
        let admin_sp = self
            .admin
            .find_service_principal_by_application_id(ADMIN_ID)
            .await
            .expect("find")
            .expect("the admin principal");
        let (issuer, jwks) = cluster_issuer(&self.client).await.expect("issuer");
        let policy = FederationPolicy {
            oidc_policy: Some(OidcPolicy {
                issuer: Some(issuer),
                audiences: vec![ACCOUNT_ID.into()],
                subject: Some(format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}")),
                jwks_json: Some(jwks),
                ..OidcPolicy::default()
            }),
            ..FederationPolicy::default()
        };
        self.admin.create_federation_policy(&admin_sp.id, Some("operator"), &policy).await.expect("policy");
    }

    /// The DatabricksAccount the operator in its Pod uses: workload identity from its projected token.
    async fn create_account(&self) {
        let account: DatabricksAccount = from_json(json!({
            "metadata": {"name": "e2e"},
            "spec": {
                "accountId": ACCOUNT_ID,
                "host": self.emulator.url(),
                "auth": {"workloadIdentity": {"clientId": ADMIN_ID, "tokenPath": "/var/run/secrets/databricks/token"}},
                "delegations": [{"namespaces": {"names": [APPS]}, "appConnections": true, "trustPolicies": true}],
            },
        }));
        Api::<DatabricksAccount>::all(self.client.clone())
            .create(&PostParams::default(), &account)
            .await
            .expect("account");
    }

    /// Installs the chart (with its CRDs) from the local image.
    fn helm_install(&self, extra_args: &[&str]) {
        let values = json!({
            "image": {"repository": IMAGE, "pullPolicy": "Never"},
            "crds": {"install": true},
            "hostNetwork": true,
            "workloadIdentity": {"audience": ACCOUNT_ID},
            "logFormat": "json",
            "logLevel": "info,kube=warn,databricks_oauth_operator=debug",
            "extraEnv": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": self.apiserver_port()},
            ],
            "extraArgs": extra_args,
            "podDisruptionBudget": {"enabled": true},
            // Short, so the rotations below retire secrets while the consumers run.
            "rotationGracePeriod": "20s",
        });
        let file = self.cluster.state_dir().join("values.json");
        std::fs::write(&file, values.to_string()).expect("values");
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/databricks-oauth-operator");
        let output = Command::new(helm())
            .args(["install", RELEASE, chart, "--namespace", OPERATOR_NAMESPACE, "--values"])
            .arg(&file)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output()
            .expect("helm");
        assert!(
            output.status.success(),
            "helm install: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Both operator replicas Ready through their probes; returns their names.
    async fn operator_pods_ready(&self) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), OPERATOR_NAMESPACE);
        let found = wait_for(TIMEOUT, || async {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=databricks-oauth-operator"))
                .await
                .ok()?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
                .map(ResourceExt::name_any)
                .collect();
            (ready.len() == 2).then_some(ready)
        })
        .await;
        match found {
            Ok(names) => names,
            Err(err) => panic!("two Ready operator pods: {err}\n{}", self.describe(OPERATOR_NAMESPACE).await),
        }
    }

    /// The holder of the operator's Lease, once there is one.
    async fn lease_holder(&self, not: Option<&str>) -> String {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NAMESPACE);
        wait_for(TIMEOUT, || async {
            let holder = leases.get(RELEASE).await.ok()?.spec?.holder_identity?;
            (Some(holder.as_str()) != not && !holder.is_empty()).then_some(holder)
        })
        .await
        .expect("a Lease holder")
    }

    async fn wait_ready<K>(&self, namespace: Option<&str>, name: &str)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + kube::Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace.unwrap_or(APPS));
        let found = wait_for(TIMEOUT, || async {
            let object = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            let conditions = object["status"]["conditions"].as_array()?.clone();
            conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True").then_some(())
        })
        .await;
        if let Err(err) = found {
            let object = api.get(name).await.map(|o| serde_json::to_string_pretty(&o).unwrap_or_default());
            panic!("{name} Ready: {err}\n{object:?}\n{}", self.operator_logs().await);
        }
    }

    async fn account_ready(&self) -> String {
        let accounts: Api<DatabricksAccount> = Api::all(self.client.clone());
        let found = wait_for(TIMEOUT, || async {
            let status = accounts.get("e2e").await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")
                .map(|c| c.message)
        })
        .await;
        match found {
            Ok(message) => message,
            Err(err) => {
                let account = accounts.get("e2e").await.ok().and_then(|a| a.status);
                panic!("account Ready: {err}: {account:?}\n{}", self.operator_logs().await)
            }
        }
    }

    /// A Deployment of the consumer program: host network, the given extra pod spec (env sources, volumes).
    async fn consumer(
        &self,
        name: &str,
        service_account: &str,
        env_from: Value,
        volumes: Value,
        mounts: Value,
    ) {
        let deployment: Deployment = from_json(json!({
            "metadata": {"name": name, "namespace": APPS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "hostNetwork": true,
                        "serviceAccountName": service_account,
                        "terminationGracePeriodSeconds": 2,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                        "containers": [{
                            "name": "consumer",
                            "image": CONSUMER_IMAGE,
                            "imagePullPolicy": "Never",
                            "envFrom": env_from,
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "CONSUMER_LOG_DIR", "value": "/calls"},
                            ],
                            "volumeMounts": concat(json!([{"name": "calls", "mountPath": "/calls"}]), mounts),
                        }],
                        "volumes": concat(json!([{"name": "calls", "hostPath": {"path": self.calls, "type": "Directory"}}]), volumes),
                    },
                },
            },
        }));
        Api::<Deployment>::namespaced(self.client.clone(), APPS)
            .create(&PostParams::default(), &deployment)
            .await
            .expect("consumer deployment");
    }

    /// Every call the consumers of `app` made so far, per Pod: (ok, failures).
    fn calls_of(&self, app: &str) -> BTreeMap<String, (usize, Vec<String>)> {
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&self.calls).expect("calls").flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if !file.starts_with(&format!("{app}-")) {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let ok = text.lines().filter(|l| *l == "ok").count();
            let failures = text.lines().filter(|l| *l != "ok").map(str::to_owned).collect();
            found.insert(file, (ok, failures));
        }
        found
    }

    /// Waits until the consumers of `app` made `at_least` more successful calls than `since`; returns the total.
    async fn consumer_calls(&self, app: &str, since: usize, at_least: usize) -> usize {
        let result = wait_for(TIMEOUT, || async {
            let ok: usize = self.calls_of(app).values().map(|(ok, _)| ok).sum();
            (ok >= since + at_least).then_some(ok)
        })
        .await;
        match result {
            Ok(ok) => ok,
            Err(err) => panic!("{app}: {err}: {:?}\n{}", self.calls_of(app), self.describe(APPS).await),
        }
    }

    fn failures_of(&self, app: &str) -> Vec<String> {
        self.calls_of(app).into_values().flat_map(|(_, failures)| failures).collect()
    }

    async fn operator_logs(&self) -> String {
        self.logs(OPERATOR_NAMESPACE, "app.kubernetes.io/name=databricks-oauth-operator").await
    }

    async fn logs(&self, namespace: &str, selector: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut out = String::new();
        for pod in
            pods.list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default()
        {
            let name = pod.name_any();
            let params = kube::api::LogParams { tail_lines: Some(40), ..Default::default() };
            let log = pods.logs(&name, &params).await.unwrap_or_else(|e| format!("(no log: {e})"));
            out.push_str(&format!("--- {namespace}/{name}\n{log}\n"));
        }
        out
    }

    /// Pods of a namespace, their phase and conditions, and the node's recent events: for failure messages.
    async fn describe(&self, namespace: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut out = String::new();
        for pod in pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            let status = pod.status.clone().unwrap_or_default();
            out.push_str(&format!(
                "pod {}: {:?} {:?} {:?}\n",
                pod.name_any(),
                status.phase,
                status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .map(|c| (&c.type_, &c.status, &c.message))
                    .collect::<Vec<_>>(),
                status
                    .container_statuses
                    .unwrap_or_default()
                    .iter()
                    .map(|c| (&c.name, &c.state))
                    .collect::<Vec<_>>(),
            ));
        }
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), namespace);
        for event in events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            out.push_str(&format!(
                "event {:?} {:?}: {:?}\n",
                event.involved_object.name, event.reason, event.message
            ));
        }
        out.push_str(&self.logs(namespace, "").await);
        out
    }

    /// Remote principals whose externalId is `uid` (the operator tags what it creates with the object's uid).
    async fn principals_tagged(&self, uid: &str) -> usize {
        self.admin.find_service_principals_by_external_id(uid).await.expect("find").len()
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn concat(a: Value, b: Value) -> Value {
    let mut items = a.as_array().cloned().unwrap_or_default();
    items.extend(b.as_array().cloned().unwrap_or_default());
    Value::Array(items)
}

fn to_values<T: serde::Serialize>(items: Vec<T>) -> Vec<Value> {
    items.iter().filter_map(|item| serde_json::to_value(item).ok()).collect()
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object")
}

async fn create<K>(client: &Client, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = from_json(object);
    let namespace = object.namespace().unwrap_or_else(|| APPS.to_owned());
    Api::<K>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &object)
        .await
        .expect("create")
}

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
        assert_eq!(world.principals_tagged(&uid).await, 1, "one remote principal for {}", sp.name_any());
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

/// `path` relative to `from` (both absolute, `from` a directory below the project).
fn pathdiff(path: &Path, from: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let up = from.strip_prefix(root).expect("below the project").components().count();
    let down = path.strip_prefix(root).expect("below the project");
    format!("{}{}", "../".repeat(up), down.display())
}

/// Chaos on the real node: 200 objects of every kind converge while Databricks fails (5xx, 429, lost answers)
/// and the leader Pod is killed (grace 0) again and again. Then: no duplicate principal or integration, no
/// orphaned secret, every published secret signs in, at most 5 secrets per principal, no secret value in any
/// operator log (each leader's log is read just before it is killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_two_hundred_objects_converge_while_the_leader_is_killed_again_and_again() {
    use databricks_oauth_operator::{crd::DatabricksAppConnection, emulator::FaultRule};
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

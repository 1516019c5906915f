//! The e2e harness: a cluster with the emulator, installing the operator, consumers, and what the scenarios check.

use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

use super::support::{
    manifests::helm,
    operator::{ACCOUNT_ID, ADMIN_ID, admin_client, emulator},
    wait_for,
};
use databricks_emulator::Emulator;
use databricks_oauth_operator::{
    controllers::trust_policy::{cluster_issuer, service_account_oidc},
    crd::DatabricksAccount,
    databricks::{AccountClient, types::FederationPolicy},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use test_control_plane::{Cluster, ClusterOptions};

pub const TIMEOUT: Duration = Duration::from_secs(180);
pub const OPERATOR_NAMESPACE: &str = "databricks-oauth-operator";
pub const RELEASE: &str = "databricks-oauth-operator";
pub const APPS: &str = "apps";
pub const IMAGE: &str = "localhost/databricks-oauth-operator";
pub const CONSUMER_IMAGE: &str = "localhost/doo-consumer:e2e";
pub const EMULATOR_IMAGE: &str = "localhost/databricks-emulator";

/// The images `hack/e2e.sh` built, as (base name, archive), for `ClusterOptions::images`.
pub fn images() -> Vec<(String, PathBuf)> {
    let dir = std::env::var_os("DOO_E2E_IMAGES")
        .map(PathBuf::from)
        .expect("DOO_E2E_IMAGES is not set: run the end-to-end tests with `make e2e`");
    let version = env!("CARGO_PKG_VERSION");
    let wanted = [
        ("localhost/pause", "pause.oci.tar".to_owned()),
        (IMAGE, format!("databricks-oauth-operator-{version}.oci.tar")),
        ("localhost/doo-consumer", "consumer.oci.tar".to_owned()),
        (EMULATOR_IMAGE, format!("databricks-emulator-{version}.oci.tar")),
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

/// A cluster, the emulator, and an administrator's view of both.
pub struct World {
    pub cluster: Cluster,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub emulator: Emulator,
    pub admin: AccountClient,
    /// Where the consumers append one line per call (a hostPath, so it outlives their Pods).
    pub calls: PathBuf,
}

impl World {
    pub async fn new() -> Self {
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

    pub fn apiserver_port(&self) -> String {
        self.cluster.plane().server_url().rsplit(':').next().unwrap_or_default().to_owned()
    }

    /// Lets the operator's ServiceAccount sign in to the account as its admin principal: a federation policy
    /// trusting the cluster's tokens for that ServiceAccount, with the cluster's keys inline. No secret.
    pub async fn trust_the_operator(&self) {
        let admin_sp = self
            .admin
            .find_service_principal_by_application_id(ADMIN_ID)
            .await
            .expect("find")
            .expect("the admin principal");
        let (issuer, jwks) = cluster_issuer(&self.client).await.expect("issuer");
        let oidc = service_account_oidc(issuer, Some(jwks), OPERATOR_NAMESPACE, RELEASE, ACCOUNT_ID);
        let policy = FederationPolicy { oidc_policy: Some(oidc), ..FederationPolicy::default() };
        self.admin.create_federation_policy(&admin_sp.id, Some("operator"), &policy).await.expect("policy");
    }

    /// The DatabricksAccount the operator in its Pod uses: workload identity from its projected token.
    pub async fn create_account(&self) {
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
    pub fn helm_install(&self, extra_args: &[&str]) {
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
    pub async fn operator_pods_ready(&self) -> Vec<String> {
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
    pub async fn lease_holder(&self, not: Option<&str>) -> String {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NAMESPACE);
        wait_for(TIMEOUT, || async {
            let holder = leases.get(RELEASE).await.ok()?.spec?.holder_identity?;
            (Some(holder.as_str()) != not && !holder.is_empty()).then_some(holder)
        })
        .await
        .expect("a Lease holder")
    }

    pub async fn wait_ready<K>(&self, namespace: Option<&str>, name: &str)
    where
        K: Namespaced,
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

    pub async fn account_ready(&self) -> String {
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
    pub async fn consumer(
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
    pub fn calls_of(&self, app: &str) -> BTreeMap<String, (usize, Vec<String>)> {
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
    pub async fn consumer_calls(&self, app: &str, since: usize, at_least: usize) -> usize {
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

    pub fn failures_of(&self, app: &str) -> Vec<String> {
        self.calls_of(app).into_values().flat_map(|(_, failures)| failures).collect()
    }

    pub async fn operator_logs(&self) -> String {
        self.logs(OPERATOR_NAMESPACE, "app.kubernetes.io/name=databricks-oauth-operator").await
    }

    pub async fn logs(&self, namespace: &str, selector: &str) -> String {
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
    pub async fn describe(&self, namespace: &str) -> String {
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
    pub async fn principals_tagged(&self, uid: &str) -> usize {
        self.admin.find_service_principals_by_external_id(uid).await.expect("find").len()
    }
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn concat(a: Value, b: Value) -> Value {
    let mut items = a.as_array().cloned().unwrap_or_default();
    items.extend(b.as_array().cloned().unwrap_or_default());
    Value::Array(items)
}

pub fn to_values<T: serde::Serialize>(items: Vec<T>) -> Vec<Value> {
    items.iter().filter_map(|item| serde_json::to_value(item).ok()).collect()
}

/// A namespaced kind the tests create and read as JSON.
pub trait Namespaced:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

pub fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object")
}

pub async fn create<K>(client: &Client, object: Value) -> K
where
    K: Namespaced,
{
    let object: K = from_json(object);
    let namespace = object.namespace().unwrap_or_else(|| APPS.to_owned());
    Api::<K>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &object)
        .await
        .expect("create")
}

//! `make run`: a local sandbox with no cloud account. It starts a real, throw-away control plane (etcd +
//! kube-apiserver on loopback), the Databricks emulator and the operator, applies the examples, waits until they
//! are Ready, shows what was created (secret values masked) and keeps running until Ctrl-C.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use databricks_emulator::{Emulator, EmulatorConfig};
use databricks_oauth_operator::{
    controllers::{self, Context, FailPoints},
    crd,
    metrics::Metrics,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams},
    discovery::{ApiCapabilities, Discovery, Scope},
};
use serde_json::json;
use test_control_plane::ControlPlane;

const MANAGER: &str = "doo-sandbox";
const ACCOUNT_ID: &str = "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a";
const ADMIN_ID: &str = "sandbox-account-admin";
/// The account group the team example joins and lets use its principal.
const TEAM_GROUP: &str = "analytics-team";
/// Workspaces the examples assign principals to.
const WORKSPACES: [i64; 2] = [1_234_567_890_123_456, 6_543_210_987_654_321];
/// The namespace holding the operator's own account credentials, as in the examples.
const OPERATOR_NAMESPACE: &str = "databricks-oauth-operator";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn step(started: Instant, what: &str) {
    eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    step(started, "starting etcd and kube-apiserver on loopback");
    let plane = ControlPlane::start().await?;
    let kubeconfig = plane.root().join("kubeconfig");
    plane.write_admin_kubeconfig(&kubeconfig)?;
    let client = plane.admin_client().await?;
    step(started, "installing the CRDs");
    plane.install_crds(&databricks_oauth_operator::crd::all()).await?;

    step(started, "starting the Databricks emulator");
    let admin_secret = format!("sandbox-{}", rand::random::<u64>());
    let mut config = EmulatorConfig::new(ACCOUNT_ID, ADMIN_ID, &admin_secret);
    config.workspaces = WORKSPACES.to_vec();
    let emulator = Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;

    step(started, "starting the operator");
    // Workload identity files are read only from here (in a Pod: /var/run/secrets/databricks).
    let token_dir = plane.root().join("databricks");
    std::fs::create_dir_all(&token_dir)?;
    let config = controllers::Config { token_dir: token_dir.clone(), ..controllers::Config::default() };
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(client.clone(), config, metrics, FailPoints::default()));
    let operator = tokio::spawn(controllers::run(ctx));

    step(started, "applying deploy/examples (the DatabricksAccounts point at the emulator)");
    ensure_namespace(&client, OPERATOR_NAMESPACE).await?;
    let credentials: Secret = serde_json::from_value(json!({
        "metadata": {"name": "databricks-account-admin", "namespace": OPERATOR_NAMESPACE},
        "stringData": {"DATABRICKS_CLIENT_ID": ADMIN_ID, "DATABRICKS_CLIENT_SECRET": admin_secret},
    }))?;
    apply(&Api::namespaced(client.clone(), OPERATOR_NAMESPACE), &credentials).await?;
    let token_path = token_dir.join("token");
    trust_operator_token(&client, &emulator, &admin_secret, &token_path).await?;
    // The account group the team example joins exists already, as a platform team's groups do (the operator never
    // creates groups).
    admin_client(&emulator, &admin_secret)?.create_group(TEAM_GROUP).await?;
    let applied = apply_examples(
        &client,
        &emulator,
        &token_path,
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples").as_path(),
    )
    .await?;
    ensure_service_account(&client, "analytics", "reporting").await?;

    step(started, "waiting for every example to be Ready");
    let discovery = Discovery::new(client.clone()).filter(&[crd::GROUP]).run().await?;
    for (kind, namespace, name) in &applied {
        let (resource, caps) = find(&discovery, kind)?;
        let api: Api<DynamicObject> = match (caps.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        let ready = wait_ready(&api, name, Duration::from_secs(90)).await;
        step(started, &format!("  {kind}/{name}: {ready}"));
    }

    println!();
    println!("What the operator created (secret values masked):");
    for secret in ["etl-nightly-databricks", "dashboards-oauth-client", "desktop-sql-oauth-client"] {
        print_data(&secret_data(&client, "analytics", secret).await, &format!("Secret analytics/{secret}"));
    }
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), "analytics")
        .get_opt("reporting-k8s-databricks-federation")
        .await?;
    print_data(&config_map.and_then(|c| c.data), "ConfigMap analytics/reporting-k8s-databricks-federation");

    println!();
    println!(
        "The sandbox is up: Kubernetes at {}, the Databricks emulator at {}.",
        plane.server_url(),
        emulator.url()
    );
    println!("Poke at it from another shell:");
    println!();
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get databricks -A");
    println!("  kubectl describe serviceprincipal -n analytics etl-nightly");
    println!(
        "  kubectl annotate serviceprincipal -n analytics etl-nightly oauth.databricks-operator.io/rotate=$(date +%s) --overwrite"
    );
    println!("  curl -s {}/_emulator/state", emulator.url());
    println!();
    println!("Press Ctrl-C to stop and clean up.");
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping...");
    operator.abort();
    emulator.shutdown().await;
    plane.stop();
    Ok(())
}

fn find(discovery: &Discovery, kind: &str) -> Result<(ApiResource, ApiCapabilities), String> {
    discovery
        .groups()
        .flat_map(|group| group.recommended_resources())
        .find(|(resource, _)| resource.kind == kind)
        .ok_or_else(|| format!("{kind} is not served"))
}

/// Applies every example; DatabricksAccounts are pointed at the emulator. Returns (kind, namespace, name).
async fn apply_examples(
    client: &Client,
    emulator: &Emulator,
    token_path: &Path,
    dir: &Path,
) -> Result<Vec<(String, Option<String>, String)>, Box<dyn std::error::Error>> {
    let discovery = Discovery::new(client.clone()).filter(&[crd::GROUP]).run().await?;
    let mut files: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    files.sort_by_key(|entry| entry.path());
    let mut applied = Vec::new();
    for entry in files {
        let mut object: DynamicObject = serde_yaml::from_str(&std::fs::read_to_string(entry.path())?)?;
        let types = object.types.clone().ok_or("example without apiVersion/kind")?;
        if types.kind == "DatabricksAccount" {
            object.data["spec"]["host"] = json!(emulator.url());
            object.data["spec"].as_object_mut().map(|spec| spec.remove("allowedNamespaces"));
            // The workload-identity example signs in as the emulator's admin with the token file the sandbox
            // wrote, where a Pod has its projected token.
            let identity = &mut object.data["spec"]["auth"]["workloadIdentity"];
            if identity.is_object() {
                identity["clientId"] = json!(ADMIN_ID);
                identity["tokenPath"] = json!(token_path.display().to_string());
            }
        }
        let (resource, caps) = find(&discovery, &types.kind)?;
        let api: Api<DynamicObject> = match (caps.scope, object.namespace()) {
            (Scope::Namespaced, Some(namespace)) => {
                ensure_namespace(client, &namespace).await?;
                Api::namespaced_with(client.clone(), &namespace, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(&object.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object)).await?;
        applied.push((types.kind.clone(), object.namespace(), object.name_any()));
    }
    Ok(applied)
}

async fn wait_ready(api: &Api<DynamicObject>, name: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = api.get(name).await.ok().and_then(|o| {
            o.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready").cloned()
        });
        if let Some(ready) = &ready
            && (ready["status"] == "True" || Instant::now() > deadline)
        {
            return format!(
                "Ready={} ({})",
                ready["status"].as_str().unwrap_or("?"),
                ready["message"].as_str().unwrap_or("")
            );
        }
        if Instant::now() > deadline {
            return "no Ready condition yet".to_owned();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn secret_data(client: &Client, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await.ok()??;
    Some(secret.data?.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect())
}

fn print_data(data: &Option<BTreeMap<String, String>>, title: &str) {
    println!("  {title}");
    match data {
        None => println!("    (not created)"),
        Some(data) => {
            for (key, value) in data {
                let shown = if key.contains("SECRET") {
                    format!("{}… ({} characters, masked)", &value[..4.min(value.len())], value.len())
                } else {
                    value.clone()
                };
                println!("    {key}={shown}");
            }
        }
    }
}

async fn apply<K>(api: &Api<K>, object: &K) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(&object.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(object)).await.map(drop)
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<(), kube::Error> {
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    apply(&Api::all(client.clone()), &namespace).await
}

/// The `federated` example: the operator's ServiceAccount token written to a file (as the kubelet projects it into
/// the operator's Pod) and a federation policy on the emulator's account admin that trusts it. No secret.
async fn trust_operator_token(
    client: &Client,
    emulator: &Emulator,
    admin_secret: &str,
    token_path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use databricks_oauth_operator::{
        controllers::trust_policy::{cluster_issuer, service_account_oidc},
        databricks::types::FederationPolicy,
    };
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let name = "databricks-oauth-operator";
    ensure_service_account(client, OPERATOR_NAMESPACE, name).await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![ACCOUNT_ID.to_owned()]),
            expiration_seconds: Some(86_400),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .create_token_request(name, &Default::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or("no token in the TokenRequest answer")?;
    std::fs::write(token_path, token)?;
    let admin = admin_client(emulator, admin_secret)?;
    let principal =
        admin.find_service_principal_by_application_id(ADMIN_ID).await?.ok_or("no admin principal")?;
    let (issuer, jwks) = cluster_issuer(client).await?;
    let oidc = service_account_oidc(issuer, Some(jwks), OPERATOR_NAMESPACE, name, ACCOUNT_ID);
    let policy = FederationPolicy { oidc_policy: Some(oidc), ..FederationPolicy::default() };
    admin.create_federation_policy(&principal.id, Some("operator"), &policy).await?;
    Ok(())
}

/// The emulator's account admin, as the platform team's own tooling would sign in.
fn admin_client(
    emulator: &Emulator,
    admin_secret: &str,
) -> Result<databricks_oauth_operator::databricks::AccountClient, Box<dyn std::error::Error>> {
    use databricks_oauth_operator::databricks::{AccountClient, Budget, ClientOptions, Credentials, Limits};
    let credentials =
        Credentials::ClientCredentials { client_id: ADMIN_ID.into(), client_secret: admin_secret.into() };
    let options =
        ClientOptions { budget: Budget::new(Limits::uniform(100.0, 100, 4)), ..ClientOptions::default() };
    Ok(AccountClient::new(&emulator.url(), ACCOUNT_ID, credentials, options)?)
}

async fn ensure_service_account(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    apply(&Api::namespaced(client.clone(), namespace), &account).await
}

//! Shared harness for cluster tests: one real control plane per test binary (started on first use, torn down
//! when the binary exits), the CRDs installed, and a fresh namespace per test.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod clients;
pub mod manifests;
pub mod operator;
pub mod python;
pub mod tenants;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use test_control_plane::{self as control_plane, ControlPlane};
use tokio::sync::OnceCell;

static PLANE: OnceCell<ControlPlane> = OnceCell::const_new();
static NAMESPACE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The control plane shared by every test of this binary, started (and the CRDs installed) on first use.
/// A missing control plane is a test failure with instructions, never a skip.
pub async fn control_plane() -> &'static ControlPlane {
    PLANE
        .get_or_try_init(|| async {
            let plane = ControlPlane::start().await?;
            plane.install_crds(&databricks_oauth_operator::crd::all()).await?;
            Ok::<_, control_plane::Error>(plane)
        })
        .await
        .unwrap_or_else(|err| panic!("the test control plane could not be started: {err}"))
}

/// One test's view of the cluster: an administrator client and a namespace of its own.
pub struct TestEnv {
    pub client: Client,
    pub namespace: String,
    kubeconfig: kube::config::Kubeconfig,
}

impl TestEnv {
    /// A fresh namespace on the shared control plane.
    pub async fn new() -> Self {
        Self::on(control_plane().await).await
    }

    /// A fresh namespace on `plane` (for tests that need a control plane of their own).
    pub async fn on(plane: &ControlPlane) -> Self {
        let client = plane.admin_client().await.expect("admin client");
        let namespace =
            format!("t{}-{}", std::process::id(), NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed));
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(namespace.clone()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        Self { client, namespace, kubeconfig: plane.admin_kubeconfig() }
    }

    /// The namespace `name` on `plane` (created when missing), for manifests that name a fixed namespace.
    pub async fn named(plane: &ControlPlane, name: &str) -> Self {
        let client = plane.admin_client().await.expect("admin client");
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await;
        Self { client, namespace: name.to_owned(), kubeconfig: plane.admin_kubeconfig() }
    }

    /// Writes the administrator kubeconfig to a file (for `kubectl`) and returns its path.
    pub fn kubeconfig_file(&self) -> PathBuf {
        let path = std::env::temp_dir().join(format!("doo-kubeconfig-{}", self.namespace));
        std::fs::write(&path, serde_yaml::to_string(&self.kubeconfig).expect("yaml"))
            .expect("writing kubeconfig");
        path
    }
}

/// A client acting as the ServiceAccount `namespace/name` of `plane` (a TokenRequest token): RBAC decides what it
/// may do, as for a pod running as that ServiceAccount.
pub async fn service_account_client(
    admin: &Client,
    plane: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Client {
    use k8s_openapi::api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::ServiceAccount,
    };
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .and_then(|s| s.token)
        .expect("token");
    control_plane::client_from(plane.token_kubeconfig(&token)).await.expect("client")
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("condition not met within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

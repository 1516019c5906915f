//! A real, throw-away Kubernetes control plane (etcd + kube-apiserver) on loopback, envtest style.
//!
//! Used by the cluster tests and by the `make run` sandbox. The binaries are built from Go modules by
//! `make control-plane` (`hack/build-control-plane.sh`) and cached outside the clone. Each instance gets its own
//! certificates, ports and data directory, RBAC authorization, a ServiceAccount issuer with signing keys (so
//! TokenRequest works), and is torn down when dropped, or when the process that started it exits.

mod cluster;
mod pki;

use std::{
    fs,
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use k8s_openapi::{
    api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    config::{
        AuthInfo, Cluster as ClusterEntry, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo,
        NamedCluster, NamedContext,
    },
    runtime::wait::{await_condition, conditions},
};

pub use cluster::{Cluster, ClusterOptions, NodeInfo};
pub use pki::{CertPair, Pki};

/// The service-account issuer of every test control plane. It is an https URL, as Databricks requires of a
/// federation policy's issuer.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The Service CIDR, from 198.18.0.0/15 (reserved for benchmarks, never routed, so never a network this machine
/// uses). Nothing serves it (there is no kube-proxy); a real cluster makes it unreachable.
pub const SERVICE_CIDR: &str = "198.19.0.0/24";

const VERSIONS: &str = include_str!("../../../hack/control-plane.versions");

/// Why the control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries are not where the harness looks for them.
    #[error(
        "{binary} not found at {path}: run `make control-plane` to build the test control plane \
         (or point DOO_CONTROL_PLANE_DIR at a directory holding kube-apiserver and etcd)"
    )]
    BinaryMissing { binary: &'static str, path: PathBuf },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Pki(String),
    /// A process exited or never became ready.
    #[error(
        "{component} did not become ready: {reason}\n--- last lines of {component}'s log ---\n{log_tail}"
    )]
    NotReady { component: &'static str, reason: String, log_tail: String },
    /// Talking to the apiserver failed.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// Building a client configuration failed.
    #[error("building a client for the control plane: {0}")]
    Config(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Where the control-plane binaries are: `DOO_CONTROL_PLANE_DIR`, else the cache directory that
/// `make control-plane` fills for the pinned versions.
pub fn binary_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOO_CONTROL_PLANE_DIR") {
        return PathBuf::from(dir);
    }
    let version = |key: &str| {
        VERSIONS
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("unknown")
            .trim()
            .to_owned()
    };
    let cache = std::env::var_os("DOO_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".cache").join("databricks-oauth-operator")
    });
    cache.join("control-plane").join(format!(
        "k8s-{}-etcd-{}",
        version("K8S_VERSION"),
        version("ETCD_VERSION")
    ))
}

/// A running etcd + kube-apiserver pair.
pub struct ControlPlane {
    root: PathBuf,
    bin: PathBuf,
    pki: Pki,
    admin: CertPair,
    apiserver_port: u16,
    etcd_url: String,
    apiserver: Option<Supervised>,
    etcd: Option<Supervised>,
    /// Every ServiceAccount signing key the apiserver trusts (path without `.key`/`.pub`), newest last (the
    /// newest signs).
    sa_keys: Vec<PathBuf>,
    /// Serves a real cluster (`Cluster`): Node authorization, the ServiceAccount admission plugin, kubelet
    /// client credentials.
    with_nodes: bool,
}

/// Audit the operator's identity only (tests run it as `system:serviceaccount:databricks-oauth-operator:*`).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    userGroups: [\"system:serviceaccounts:databricks-oauth-operator\"]
  - level: None
";

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("server", &self.server_url()).field("root", &self.root).finish()
    }
}

impl ControlPlane {
    /// Starts etcd and the apiserver, waits until the apiserver is ready, and lets unauthenticated clients
    /// read the ServiceAccount issuer's discovery document and keys (as public clusters do).
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(false).await
    }

    async fn start_with(with_nodes: bool) -> Result<Self, Error> {
        let bin = binary_dir();
        for binary in ["kube-apiserver", "etcd"] {
            let path = bin.join(binary);
            if !path.is_file() {
                return Err(Error::BinaryMissing { binary, path });
            }
        }
        let root = tempfile::Builder::new()
            .prefix("doo-control-plane-")
            .tempdir()
            .map_err(io_err("creating the control plane directory"))?
            .keep();
        let pki = Pki::new()?;
        let serving = pki.serving_cert()?;
        let admin = pki.client_cert("doo-admin", &["system:masters"])?;
        write(&root.join("ca.crt"), &pki.ca_pem())?;
        write(&root.join("apiserver.crt"), &serving.cert_pem)?;
        write(&root.join("apiserver.key"), &serving.key_pem)?;
        let sa_key = write_service_account_key(&root, 1)?;

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_dir = root.join("etcd");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd = Supervised::spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                "--name=default".to_owned(),
                format!("--data-dir={}", etcd_dir.display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            &root.join("etcd.log"),
            // The last process to go removes the whole directory.
            Some(&root),
        )?;

        let mut plane = Self {
            root,
            bin,
            pki,
            admin,
            apiserver_port: free_port()?,
            etcd_url,
            apiserver: None,
            etcd: Some(etcd),
            sa_keys: vec![sa_key],
            with_nodes,
        };
        plane.start_apiserver().await?;
        plane.allow_issuer_discovery().await?;
        Ok(plane)
    }

    /// The audit log (JSON lines): every request made by a ServiceAccount of the namespace
    /// `databricks-oauth-operator`, at the Metadata level.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.log")
    }

    /// The apiserver's URL.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// The CA that signed the apiserver's certificate and the client certificates it accepts (PEM).
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// The directory holding this control plane's files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A kubeconfig for the cluster administrator (`system:masters`).
    pub fn admin_kubeconfig(&self) -> Kubeconfig {
        self.kubeconfig_for(&self.admin)
    }

    /// A kubeconfig authenticating with a client certificate for `user` in `groups`. RBAC decides what it may do.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<Kubeconfig, Error> {
        Ok(self.kubeconfig_for(&self.pki.client_cert(user, groups)?))
    }

    /// A kubeconfig authenticating with a bearer token (for example a ServiceAccount token).
    pub fn token_kubeconfig(&self, token: &str) -> Kubeconfig {
        let mut config = self.kubeconfig_for(&self.admin);
        for auth in &mut config.auth_infos {
            auth.auth_info = Some(AuthInfo { token: Some(token.to_owned().into()), ..AuthInfo::default() });
        }
        config
    }

    /// Writes the administrator's kubeconfig to `path` (for `kubectl --kubeconfig`).
    pub fn write_admin_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        let yaml =
            serde_yaml::to_string(&self.admin_kubeconfig()).map_err(|e| Error::Config(e.to_string()))?;
        write(path, &yaml)
    }

    /// A client acting as the cluster administrator.
    pub async fn admin_client(&self) -> Result<Client, Error> {
        client_from(self.admin_kubeconfig()).await
    }

    /// Applies `crds` (server-side) and waits until the apiserver serves each of them.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
        let api: Api<CustomResourceDefinition> = Api::all(self.admin_client().await?);
        let params = PatchParams::apply("doo-control-plane").force();
        for crd in crds {
            api.patch(&crd.name_any(), &params, &Patch::Apply(crd)).await.map_err(|source| Error::Kube {
                context: format!("applying CRD {}", crd.name_any()),
                source,
            })?;
        }
        for crd in crds {
            let name = crd.name_any();
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            match tokio::time::timeout(Duration::from_secs(30), established).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    return Err(Error::Config(format!("waiting for CRD {}: {err}", crd.name_any())));
                }
                Err(_) => {
                    return Err(Error::Config(format!("CRD {} not established within 30s", crd.name_any())));
                }
            }
        }
        Ok(())
    }

    /// Restarts the apiserver with a new ServiceAccount signing key, as a cluster rotating its keys does. Tokens
    /// signed by the old key stay valid (the old public key is still trusted); new tokens use the new key.
    pub async fn rotate_service_account_key(&mut self) -> Result<(), Error> {
        let key = write_service_account_key(&self.root, self.sa_keys.len() + 1)?;
        self.sa_keys.push(key);
        if let Some(apiserver) = self.apiserver.take() {
            apiserver.stop();
        }
        self.start_apiserver().await
    }

    /// Stops the apiserver, then etcd (the other order hangs the apiserver's shutdown), and removes the files.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(apiserver) = self.apiserver.take() {
            apiserver.stop();
        }
        if let Some(etcd) = self.etcd.take() {
            etcd.stop();
        }
        // etcd's watchdog removes the files, unless etcd died on its own (its log was read into the error).
        let _ = fs::remove_dir_all(&self.root);
    }

    fn kubeconfig_for(&self, cert: &CertPair) -> Kubeconfig {
        let name = "doo-test".to_owned();
        Kubeconfig {
            clusters: vec![NamedCluster {
                name: name.clone(),
                cluster: Some(ClusterEntry {
                    server: Some(self.server_url()),
                    certificate_authority_data: Some(BASE64.encode(self.pki.ca_pem())),
                    ..ClusterEntry::default()
                }),
                other: Default::default(),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: name.clone(),
                auth_info: Some(AuthInfo {
                    client_certificate_data: Some(BASE64.encode(&cert.cert_pem)),
                    client_key_data: Some(BASE64.encode(&cert.key_pem).into()),
                    ..AuthInfo::default()
                }),
                other: Default::default(),
            }],
            contexts: vec![NamedContext {
                name: name.clone(),
                context: Some(Context {
                    cluster: name.clone(),
                    user: Some(name.clone()),
                    ..Context::default()
                }),
                other: Default::default(),
            }],
            current_context: Some(name),
            ..Kubeconfig::default()
        }
    }

    async fn start_apiserver(&mut self) -> Result<(), Error> {
        let root = &self.root;
        let signing_key = self.sa_keys.last().cloned().unwrap_or_else(|| root.join("sa-1"));
        let mut args = vec![
            format!("--etcd-servers={}", self.etcd_url),
            format!("--cert-dir={}", root.join("certs").display()),
            format!("--tls-cert-file={}", root.join("apiserver.crt").display()),
            format!("--tls-private-key-file={}", root.join("apiserver.key").display()),
            format!("--client-ca-file={}", root.join("ca.crt").display()),
            format!("--secure-port={}", self.apiserver_port),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            // The loopback address cannot be published as the kubernetes Service endpoint; nothing needs it.
            "--endpoint-reconciler-type=none".to_owned(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".to_owned(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-jwks-uri={}/openid/v1/jwks", self.server_url()),
            format!("--service-account-signing-key-file={}.key", signing_key.display()),
            "--enable-priority-and-fairness=false".to_owned(),
            // DOO_APISERVER_PROFILING=1 serves /debug/pprof (to see where the apiserver's CPU goes in a bench).
            format!("--profiling={}", std::env::var("DOO_APISERVER_PROFILING").is_ok_and(|v| v == "1")),
            "--v=1".to_owned(),
        ];
        for key in &self.sa_keys {
            args.push(format!("--service-account-key-file={}.pub", key.display()));
        }
        if self.with_nodes {
            // Kubelets register and are authorized as nodes; the apiserver reaches them (logs, exec) by the
            // address they report, with the administrator's client certificate.
            write(&root.join("admin.crt"), &self.admin.cert_pem)?;
            write(&root.join("admin.key"), &self.admin.key_pem)?;
            args.extend([
                "--authorization-mode=Node,RBAC".to_owned(),
                "--enable-admission-plugins=NodeRestriction".to_owned(),
                "--kubelet-preferred-address-types=InternalIP,Hostname".to_owned(),
                format!("--kubelet-client-certificate={}", root.join("admin.crt").display()),
                format!("--kubelet-client-key={}", root.join("admin.key").display()),
            ]);
        } else {
            // No controller-manager runs, so nothing creates default ServiceAccounts: tests create their own.
            args.extend([
                "--authorization-mode=RBAC".to_owned(),
                "--disable-admission-plugins=ServiceAccount".to_owned(),
            ]);
        }
        // Every request of the deployed operator's identity is audited (tests/rbac.rs checks each granted verb
        // against what the operator really asks for).
        write(&root.join("audit-policy.yaml"), AUDIT_POLICY)?;
        args.push(format!("--audit-policy-file={}", root.join("audit-policy.yaml").display()));
        args.push(format!("--audit-log-path={}", self.audit_log().display()));
        args.push("--audit-log-format=json".to_owned());
        args.push("--audit-log-mode=blocking".to_owned());
        let log = root.join(format!("kube-apiserver-{}.log", self.sa_keys.len()));
        let apiserver =
            Supervised::spawn("kube-apiserver", &self.bin.join("kube-apiserver"), &args, &log, None)?;
        self.apiserver = Some(apiserver);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = self.admin_client().await?;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_error;
        loop {
            for process in [&mut self.etcd, &mut self.apiserver].into_iter().flatten() {
                if let Some(reason) = process.exited() {
                    return Err(process.not_ready(reason));
                }
            }
            let request =
                http::Request::get("/readyz").body(Vec::new()).map_err(|e| Error::Config(e.to_string()))?;
            match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last_error = body,
                Err(err) => last_error = err.to_string(),
            }
            if Instant::now() > deadline {
                let reason = format!("/readyz not ok after 90s: {last_error}");
                return Err(match &self.apiserver {
                    Some(apiserver) => apiserver.not_ready(reason),
                    None => Error::Config(reason),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn allow_issuer_discovery(&self) -> Result<(), Error> {
        let client = self.admin_client().await?;
        let binding = ClusterRoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some("doo-service-account-issuer-discovery".to_owned()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "ClusterRole".to_owned(),
                name: "system:service-account-issuer-discovery".to_owned(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "Group".to_owned(),
                name: "system:unauthenticated".to_owned(),
                namespace: None,
            }]),
        };
        // The apiserver creates its bootstrap roles shortly after /readyz; retry briefly until the role exists.
        let api: Api<ClusterRoleBinding> = Api::all(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match api.create(&PostParams::default(), &binding).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.is_already_exists() => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    return Err(Error::Kube {
                        context: "binding issuer discovery to unauthenticated".into(),
                        source: err,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Builds a client from a kubeconfig.
pub async fn client_from(kubeconfig: Kubeconfig) -> Result<Client, Error> {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    Client::try_from(config).map_err(|e| Error::Config(e.to_string()))
}

/// A child process whose lifetime is tied to ours: it runs under a tiny shell watchdog that holds the read end
/// of a pipe from this process. When we stop it, or when this process exits for any reason (a panicking test,
/// a killed `cargo test`), the pipe closes and the watchdog terminates the child and removes its files.
struct Supervised {
    name: &'static str,
    watchdog: Child,
    lifeline: Option<ChildStdin>,
    log: PathBuf,
}

const WATCHDOG: &str = r#"
cleanup=$1; shift
"$@" </dev/null &
child=$!
exec 3<&0
# The lifeline reader: when our stdin closes, terminate the child (escalating to KILL after 10s).
( while read -r _ <&3; do :; done
  kill -TERM "$child" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$child" 2>/dev/null || exit 0; sleep 0.1; done
  kill -KILL "$child" 2>/dev/null ) &
reader=$!
exec 3<&-
wait "$child"
status=$?
kill "$reader" 2>/dev/null
# An open lifeline (no EOF to read) means the child died on its own: keep its files, the log says why.
read -r -t 0 <&0 || exit "$status"
[ -n "$cleanup" ] && rm -rf "$cleanup"
exit "$status"
"#;

impl Supervised {
    fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[String],
        log: &Path,
        remove_on_exit: Option<&Path>,
    ) -> Result<Self, Error> {
        let log_file = fs::File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
        let log_err = log_file.try_clone().map_err(io_err("cloning a log handle"))?;
        let cleanup = remove_on_exit.map(|p| p.display().to_string()).unwrap_or_default();
        let watchdog = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(cleanup)
            .arg(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(io_err(format!("starting {name}")))?;
        let mut supervised = Self { name, watchdog, lifeline: None, log: log.to_owned() };
        supervised.lifeline = supervised.watchdog.stdin.take();
        Ok(supervised)
    }

    /// Why the process is gone, if it is.
    fn exited(&mut self) -> Option<String> {
        match self.watchdog.try_wait() {
            Ok(Some(status)) => Some(format!("exited with {status}")),
            Ok(None) => None,
            Err(err) => Some(format!("could not be waited for: {err}")),
        }
    }

    fn not_ready(&self, reason: String) -> Error {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(25)..].join("\n");
        Error::NotReady { component: self.name, reason, log_tail }
    }

    fn stop(mut self) {
        if let Some(mut lifeline) = self.lifeline.take() {
            // Any line (or EOF) ends the watchdog's wait; EOF follows when the handle drops.
            let _ = lifeline.flush();
        }
        let _ = self.watchdog.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.lifeline.take();
    }
}

/// Writes ServiceAccount signing key number `n` as `sa-<n>.key` (private) and `sa-<n>.pub` (public) and returns
/// the common path stem.
fn write_service_account_key(root: &Path, n: usize) -> Result<PathBuf, Error> {
    let stem = root.join(format!("sa-{n}"));
    let (private, public) = pki::service_account_key()?;
    write(&stem.with_extension("key"), &private)?;
    write(&stem.with_extension("pub"), &public)?;
    Ok(stem)
}

/// The ports handed out, from below the kernel's ephemeral range: a port from `bind(0)` is free only until the
/// listener closes, and any outgoing connection (an apiserver's to etcd, a test's to the apiserver) may take it
/// before the process it was meant for binds it. Below the range only `free_port` hands ports out, and a
/// process-wide counter never hands one out twice. (30000 and up is the NodePort range.)
const PORTS: std::ops::Range<u32> = 20_000..30_000;

/// A loopback port nothing listens on now and no other caller in this process was given.
pub fn free_port() -> Result<u16, Error> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries of one run take turns, but a bench and a test may overlap: start each process elsewhere.
    let offset = std::process::id() * 7_919;
    let span = PORTS.end - PORTS.start;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.start + (offset.wrapping_add(step)) % span;
        let port = u16::try_from(port).map_err(|_| Error::Config(format!("port {port} out of range")))?;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Config(format!("no free loopback port in {PORTS:?}")))
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    fs::write(path, contents).map_err(io_err(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_exit(process: &mut Supervised) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(reason) = process.exited() {
                return reason;
            }
            assert!(Instant::now() < deadline, "the process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_process_that_dies_on_its_own_keeps_its_log_for_the_error() {
        let dir = tempfile::tempdir().expect("dir").keep();
        let args = ["-c".to_owned(), "echo address already in use; exit 1".to_owned()];
        let mut process =
            Supervised::spawn("etcd", Path::new("/bin/sh"), &args, &dir.join("etcd.log"), Some(&dir))
                .expect("spawn");
        let reason = wait_exit(&mut process);
        let Error::NotReady { log_tail, .. } = process.not_ready(reason) else { panic!("not NotReady") };
        assert_eq!(log_tail, "address already in use");
        fs::remove_dir_all(&dir).expect("the files were kept");
    }

    #[test]
    fn a_stopped_process_removes_its_files() {
        let dir = tempfile::tempdir().expect("dir").keep();
        let args = ["-c".to_owned(), "sleep 30".to_owned()];
        let process =
            Supervised::spawn("etcd", Path::new("/bin/sh"), &args, &dir.join("etcd.log"), Some(&dir))
                .expect("spawn");
        process.stop();
        assert!(!dir.exists(), "the watchdog removed {}", dir.display());
    }

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().expect("port")).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| PORTS.contains(&u32::from(*p))), "{ports:?}");
    }
}

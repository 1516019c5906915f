//! A real cluster on this machine for the end-to-end tests (`make e2e`): the control plane, a
//! kube-controller-manager, a kube-scheduler and one or more nodes, each a containerd (Debian's, with runc) and a
//! kubelet built from Go modules like the apiserver. Needs root. `../shared/real-node.md` in the project's
//! research notes records why each unusual setting is there.
//!
//! Network rule: all traffic stays on this machine. Each node gets its own address on `lo` (kubelets refuse
//! 127/8), so host-network Pods on different nodes may listen on the same port; the Service and Pod CIDRs get
//! `unreachable` routes while the cluster runs, so a Pod that dials a ClusterIP fails at once instead of leaving
//! through the default route (there is no kube-proxy). Test Pods run with `hostNetwork: true`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, api::ListParams};

use super::{ControlPlane, Error, SERVICE_CIDR, Supervised, binary_dir, free_port, io_err, write};

/// The Pod CIDR of the nodes' bridge networks (198.18.0.0/15 like the Service CIDR and the node addresses). The
/// kubelet needs a CNI configuration to be Ready; no test Pod uses it.
pub const POD_CIDR: &str = "198.19.128.0/17";
/// Held while a cluster exists: the routes and loopback addresses are machine-wide, so one cluster at a time.
const MACHINE_LOCK: &str = "/run/lock/doo-e2e-cluster.lock";
/// The sandbox image every node's containerd runs; `ClusterOptions::images` must provide it.
pub const PAUSE_IMAGE: &str = "localhost/pause:3.10";
/// Where Debian installs the CNI plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Removes everything a cluster set up; also run by `make e2e` after a test process died before its teardown.
const SWEEP: &str = include_str!("sweep.sh");

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// How many nodes (at least one).
    pub nodes: usize,
    /// OCI image archives imported into every node, as (base name, archive): `("localhost/pause", path)` gives
    /// `localhost/pause:<the tag inside the archive>`.
    pub images: Vec<(String, PathBuf)>,
    /// The parent of the cluster's state directory (default: the system temp dir). `make e2e` sweeps every
    /// `doo-e2e-*` directory in it after the tests.
    pub state_parent: Option<PathBuf>,
}

/// One node of a running cluster.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The Node's name.
    pub name: String,
    /// Its InternalIP (an address on `lo`): the IP of its host-network Pods.
    pub address: String,
    /// Its containerd socket.
    pub containerd_socket: PathBuf,
}

/// A running cluster; torn down (processes, containers, mounts, cgroups, addresses, routes) when dropped.
pub struct Cluster {
    plane: Option<ControlPlane>,
    controllers: Vec<Supervised>,
    kubelets: Vec<Supervised>,
    containerds: Vec<Supervised>,
    nodes: Vec<NodeInfo>,
    state: PathBuf,
    /// The machine-wide lock, released (closed) after the teardown.
    _lock: fs::File,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts the control plane, the controller manager, the scheduler and the nodes, and waits until every
    /// node is Ready.
    pub async fn start(options: ClusterOptions) -> Result<Self, Error> {
        preflight()?;
        let lock = machine_lock()?;
        let parent = options.state_parent.clone().unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&parent).map_err(io_err(format!("creating {}", parent.display())))?;
        let state = tempfile::Builder::new()
            .prefix("doo-e2e-")
            .tempdir_in(&parent)
            .map_err(io_err("creating the cluster's state directory"))?
            .keep();
        let id = state.file_name().and_then(|n| n.to_str()).unwrap_or("doo-e2e").to_owned();
        let count = options.nodes.max(1);
        let nodes: Vec<NodeInfo> = (0..count)
            .map(|i| NodeInfo {
                name: format!("node-{}", i + 1),
                // 198.18.0.0/15 is reserved for benchmarking: never routed, so never someone else's address.
                address: format!("198.18.0.{}", i + 1),
                containerd_socket: state.join(format!("node-{}", i + 1)).join("containerd.sock"),
            })
            .collect();
        // Record what to undo before doing it, so a teardown after any failure finds it.
        let sweep_env = format!(
            "CGROUP_ROOTS=\"{}\"\nADDRESSES=\"{}\"\nROUTES=\"{SERVICE_CIDR} {POD_CIDR}\"\nBRIDGES=\"{}\"\n",
            nodes.iter().map(|n| format!("{id}-{}", n.name)).collect::<Vec<_>>().join(" "),
            nodes.iter().map(|n| format!("{}/32", n.address)).collect::<Vec<_>>().join(" "),
            (1..=count).map(|i| format!("doo-cni{i}")).collect::<Vec<_>>().join(" "),
        );
        write(&state.join("sweep.env"), &sweep_env)?;
        write(&state.join("sweep.sh"), SWEEP)?;
        let mut cluster = Self {
            plane: None,
            controllers: Vec::new(),
            kubelets: Vec::new(),
            containerds: Vec::new(),
            nodes: nodes.clone(),
            state: state.clone(),
            _lock: lock,
        };
        // `add`, never `replace`: an existing route is someone else's and is left alone (the start fails).
        for cidr in [SERVICE_CIDR, POD_CIDR] {
            run("ip", &["route", "add", "unreachable", cidr])?;
        }
        for node in &nodes {
            run("ip", &["addr", "add", &format!("{}/32", node.address), "dev", "lo"])?;
        }

        let plane = ControlPlane::start_with(true).await?;
        let bin = binary_dir();
        let admin_kubeconfig = state.join("admin.kubeconfig");
        plane.write_admin_kubeconfig(&admin_kubeconfig)?;
        let ca = plane.root().join("ca.crt");
        let sa_key = plane.sa_keys.first().map(|k| k.with_extension("key")).unwrap_or_default();
        let kubeconfig = admin_kubeconfig.display().to_string();
        // Both as the administrator, one instance each (no leader election), serving only on loopback.
        let common = |extra: &[String]| -> Result<Vec<String>, Error> {
            let mut args = vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", free_port()?),
                "--v=1".to_owned(),
            ];
            args.extend_from_slice(extra);
            Ok(args)
        };
        let controller_manager_args = common(&[
            format!("--root-ca-file={}", ca.display()),
            format!("--service-account-private-key-file={}", sa_key.display()),
            "--use-service-account-credentials=true".to_owned(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        ])?;
        for (name, args) in
            [("kube-controller-manager", controller_manager_args), ("kube-scheduler", common(&[])?)]
        {
            let log = state.join(format!("{name}.log"));
            cluster.controllers.push(Supervised::spawn(name, &bin.join(name), &args, &log, None)?);
        }

        for (i, node) in nodes.iter().enumerate() {
            let dir = state.join(&node.name);
            fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            let mut containerd = start_containerd(&dir, i + 1)?;
            let started = wait_for_socket(&node.containerd_socket, &mut containerd).await;
            cluster.containerds.push(containerd);
            started?;
            for (base, archive) in &options.images {
                import_image(&node.containerd_socket, base, archive)?;
            }
            let cgroup_root = format!("{id}-{}", node.name);
            for hierarchy in cgroup_hierarchies() {
                let path = hierarchy.join(&cgroup_root);
                fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
            }
            let cert = plane.pki.client_cert(&format!("system:node:{}", node.name), &["system:nodes"])?;
            let node_kubeconfig = dir.join("kubelet.kubeconfig");
            let yaml = serde_yaml::to_string(&plane.kubeconfig_for(&cert))
                .map_err(|e| Error::Config(e.to_string()))?;
            write(&node_kubeconfig, &yaml)?;
            let config = kubelet_config(&dir, node, &cgroup_root, &ca, free_port()?);
            write(&dir.join("kubelet.yaml"), &config)?;
            let kubelet = Supervised::spawn(
                "kubelet",
                &bin.join("kubelet"),
                &[
                    format!("--config={}", dir.join("kubelet.yaml").display()),
                    format!("--kubeconfig={}", node_kubeconfig.display()),
                    format!("--root-dir={}", dir.join("kubelet").display()),
                    format!("--hostname-override={}", node.name),
                    format!("--node-ip={}", node.address),
                    "--v=1".to_owned(),
                ],
                &dir.join("kubelet.log"),
                None,
            )?;
            cluster.kubelets.push(kubelet);
        }
        let client = plane.admin_client().await?;
        cluster.plane = Some(plane);
        cluster.wait_nodes_ready(&client).await?;
        Ok(cluster)
    }

    /// The control plane.
    pub fn plane(&self) -> &ControlPlane {
        self.plane.as_ref().expect("a started cluster has a control plane")
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The cluster's state directory (logs of the node processes, containerd and kubelet state).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    async fn wait_nodes_ready(&mut self, client: &kube::Client) -> Result<(), Error> {
        let api: Api<Node> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for process in self.kubelets.iter_mut().chain(&mut self.containerds).chain(&mut self.controllers)
            {
                if let Some(reason) = process.exited() {
                    return Err(process.not_ready(reason));
                }
            }
            let ready = match api.list(&ListParams::default()).await {
                Ok(list) => list
                    .items
                    .iter()
                    .filter(|node| {
                        node.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
                            conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                    })
                    .count(),
                Err(_) => 0,
            };
            if ready == self.nodes.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let reason = format!("{ready} of {} nodes Ready after 120s", self.nodes.len());
                return Err(match self.kubelets.first() {
                    Some(kubelet) => kubelet.not_ready(reason),
                    None => Error::Config(reason),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn sweep(&self, phase: &str) {
        let _ = Command::new("bash").arg(self.state.join("sweep.sh")).arg(&self.state).arg(phase).status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kubelets first (they would restart what is killed next), then every container and shim, then the
        // runtimes, the controllers and the control plane, and last what is left on the machine.
        for kubelet in self.kubelets.drain(..) {
            kubelet.stop();
        }
        self.sweep("kill");
        for process in self.containerds.drain(..).chain(self.controllers.drain(..)) {
            process.stop();
        }
        if let Some(plane) = self.plane.take() {
            plane.stop();
        }
        self.sweep("all");
    }
}

/// Waits for any other cluster on this machine to be torn down.
fn machine_lock() -> Result<fs::File, Error> {
    let path = Path::new(MACHINE_LOCK);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {MACHINE_LOCK}")))?;
    file.lock().map_err(io_err(format!("locking {MACHINE_LOCK}")))?;
    Ok(file)
}

/// Root, and what the node needs on this machine.
fn preflight() -> Result<(), Error> {
    let status = fs::read_to_string("/proc/self/status").map_err(io_err("reading /proc/self/status"))?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
    if uid != Some("0") {
        return Err(Error::Config(
            "a real node needs root (mounts, cgroups, routes): run make e2e as root".to_owned(),
        ));
    }
    let bin = binary_dir();
    for binary in ["kubelet", "kube-controller-manager", "kube-scheduler"] {
        let path = bin.join(binary);
        if !path.is_file() {
            return Err(Error::BinaryMissing { binary, path });
        }
    }
    for tool in ["containerd", "runc", "ctr", "ip"] {
        if !std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file())
        {
            return Err(Error::Config(format!(
                "{tool} is not installed: make e2e installs containerd, runc and the CNI plugins with apt-get"
            )));
        }
    }
    if !Path::new(CNI_BIN_DIR).join("bridge").is_file() {
        return Err(Error::Config(format!(
            "no CNI plugins in {CNI_BIN_DIR} (Debian: containernetworking-plugins)"
        )));
    }
    Ok(())
}

/// The cgroup v1 hierarchies a kubelet with the cgroupfs driver uses (not the cgroup2 `unified` mount).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.ends_with("unified") && !p.is_symlink())
        .collect();
    found.sort();
    found
}

fn start_containerd(dir: &Path, index: usize) -> Result<Supervised, Error> {
    let cni_conf = dir.join("cni");
    fs::create_dir_all(&cni_conf).map_err(io_err("creating the CNI configuration directory"))?;
    // The kubelet is NotReady without a network configuration; host-network Pods never use it.
    let network = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": format!("doo-e2e-{index}"),
        "plugins": [
            {"type": "bridge", "bridge": format!("doo-cni{index}"), "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("198.19.{}.0/24", 128 + index)}]],
                      "dataDir": dir.join("cni-ipam").display().to_string()}},
            {"type": "loopback"}
        ]
    });
    write(&cni_conf.join("10-doo-e2e.conflist"), &network.to_string())?;
    let d = dir.display();
    let config = format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The sandbox has no CAP_SYS_RESOURCE: lowering oom_score_adj fails every sandbox without this.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    # crun fails on this machine's hybrid cgroups; runc works.
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
"#,
        cni_conf.display()
    );
    write(&dir.join("containerd.toml"), &config)?;
    Supervised::spawn(
        "containerd",
        Path::new("containerd"),
        &[format!("--config={}", dir.join("containerd.toml").display())],
        &dir.join("containerd.log"),
        None,
    )
}

async fn wait_for_socket(socket: &Path, process: &mut Supervised) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if let Some(reason) = process.exited() {
            return Err(process.not_ready(reason));
        }
        if Instant::now() > deadline {
            return Err(Error::Config(format!("{} did not appear within 30s", socket.display())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn import_image(socket: &Path, base: &str, archive: &Path) -> Result<(), Error> {
    let address = socket.display().to_string();
    let archive = archive.display().to_string();
    run("ctr", &["-a", &address, "-n", "k8s.io", "images", "import", "--base-name", base, &archive])
}

fn kubelet_config(dir: &Path, node: &NodeInfo, cgroup_root: &str, client_ca: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1, which kubelet 1.35+ refuses unless told otherwise.
failCgroupV1: false
# containerd 1.6 cannot report its cgroup driver.
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
containerRuntimeEndpoint: unix://{socket}
address: {address}
port: {port}
healthzPort: 0
readOnlyPort: 0
podLogsDir: {d}/pod-logs
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
# Only the apiserver holds a client certificate the kubelet accepts.
authorization: {{mode: AlwaysAllow}}
oomScoreAdj: 0
failSwapOn: false
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
# The images were imported, not pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
"#,
        socket = node.containerd_socket.display(),
        address = node.address,
        ca = client_ca.display(),
    )
}

/// Runs a command, failing with its output.
fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let output = Command::new(program).args(args).output().map_err(io_err(format!("running {program}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

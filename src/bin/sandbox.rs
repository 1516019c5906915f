//! `make run`: a local sandbox on a real, throw-away control plane. Today it starts the control plane, installs
//! the CRDs and applies the examples; the Databricks emulator and the operator join it as they are built.

use std::{path::Path, process::ExitCode};

use databricks_oauth_operator::{control_plane::ControlPlane, crd};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams},
    discovery::{ApiCapabilities, Discovery, Scope},
};

const MANAGER: &str = "doo-sandbox";

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

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    eprintln!("starting etcd and kube-apiserver on loopback...");
    let plane = ControlPlane::start().await?;
    let kubeconfig = plane.root().join("kubeconfig");
    plane.write_admin_kubeconfig(&kubeconfig)?;
    let client = plane.admin_client().await?;

    eprintln!("installing the CRDs...");
    plane.install_crds().await?;

    eprintln!("applying deploy/examples...");
    apply_examples(&client, Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples").as_path()).await?;

    println!();
    println!("The sandbox control plane is up at {}.", plane.server_url());
    println!("Poke at it in another shell:");
    println!();
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get databricks -A");
    println!("  kubectl explain serviceprincipals.spec");
    println!();
    println!(
        "Not yet part of the sandbox: the Databricks emulator and the operator (so nothing becomes Ready)."
    );
    println!("Press Ctrl-C to stop and clean up.");
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping...");
    plane.stop();
    Ok(())
}

async fn apply_examples(client: &Client, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let discovery = Discovery::new(client.clone()).filter(&[crd::GROUP]).run().await?;
    let mut files: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    files.sort_by_key(|entry| entry.path());
    for entry in files {
        let text = std::fs::read_to_string(entry.path())?;
        let object: DynamicObject = serde_yaml::from_str(&text)?;
        let types = object.types.clone().ok_or("example without apiVersion/kind")?;
        let (resource, caps): (ApiResource, ApiCapabilities) = discovery
            .groups()
            .flat_map(|group| group.recommended_resources())
            .find(|(resource, _)| resource.kind == types.kind)
            .ok_or_else(|| format!("{} is not served", types.kind))?;
        let api: Api<DynamicObject> = match (caps.scope, object.namespace()) {
            (Scope::Namespaced, Some(namespace)) => {
                ensure_namespace(client, &namespace).await?;
                Api::namespaced_with(client.clone(), &namespace, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(&object.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object)).await?;
        eprintln!("  {}/{}", types.kind, object.name_any());
    }
    Ok(())
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<(), kube::Error> {
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&namespace))
        .await
        .map(drop)
}

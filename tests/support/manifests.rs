//! Rendering deployment manifests (kustomize, helm) and applying them to the test control plane.

use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    discovery::{Discovery, Scope},
};

/// The pinned helm (built from Go modules into the cache by hack/build-helm.sh on first use).
pub fn helm() -> String {
    let output = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/build-helm.sh"))
        .output()
        .expect("bash");
    assert!(output.status.success(), "building helm: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_owned()
}

/// Parses a multi-document YAML stream into objects.
pub fn parse(yaml: &[u8]) -> Vec<DynamicObject> {
    serde_yaml::Deserializer::from_slice(yaml)
        .filter_map(|doc| {
            serde::Deserialize::deserialize(doc)
                .ok()
                .and_then(|v: serde_yaml::Value| (!v.is_null()).then_some(v))
        })
        .map(|v| serde_yaml::from_value(v).expect("object"))
        .collect()
}

pub fn kustomize(dir: &str) -> Vec<DynamicObject> {
    let output = std::process::Command::new("kubectl")
        .args(["kustomize", &format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"))])
        .output()
        .expect("kubectl must be installed (see .ci/run)");
    assert!(output.status.success(), "kubectl kustomize {dir}: {}", String::from_utf8_lossy(&output.stderr));
    parse(&output.stdout)
}

pub async fn apply_all(client: &Client, objects: &[DynamicObject]) {
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    for object in objects {
        let types = object.types.clone().expect("types");
        let (group, version) = types.api_version.split_once('/').unwrap_or(("", &types.api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, caps) =
            discovery.resolve_gvk(&gvk).unwrap_or_else(|| panic!("{} is not served", types.kind));
        let api: Api<DynamicObject> = match (caps.scope, object.namespace()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(&object.name_any(), &PatchParams::apply("doo-tests").force(), &Patch::Apply(object))
            .await
            .unwrap_or_else(|e| panic!("{} {} was refused: {e}", types.kind, object.name_any()));
    }
}

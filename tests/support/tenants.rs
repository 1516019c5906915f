//! Tenants as the multi-tenancy and revocation tests run them: a control plane of their own, namespaces whose
//! ServiceAccount is bound only to the shipped `databricks-oauth-operator-edit` role, and helpers that act as a
//! tenant (create, patch, wait for a condition) or assert as the platform (Secrets, events, emulator writes).

use std::{collections::BTreeSet, time::Duration};

use databricks_oauth_operator::{
    crd::{DatabricksAppConnection, ServicePrincipal},
    databricks::{
        AccountClient,
        types::{NewServicePrincipal, PatchOperation, ServicePrincipal as RemotePrincipal},
    },
};
use k8s_openapi::api::{
    core::v1::{Namespace, Secret, ServiceAccount},
    events::v1::Event,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use test_control_plane::ControlPlane;

use super::{
    TestEnv,
    operator::{Operator, OperatorOptions, emulator},
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// One tenant: a namespace and a client acting as its ServiceAccount.
pub struct Tenant {
    pub namespace: String,
    pub client: Client,
}

/// A control plane of its own, the platform namespace (the operator's), two tenants and the operator.
pub struct World {
    pub env: TestEnv,
    pub operator: Operator,
    pub a: Tenant,
    pub b: Tenant,
    _plane: Box<ControlPlane>,
}

impl World {
    /// `delegations(a, b)` returns the account's delegation fields for the tenants' namespaces; `prepare` sets up
    /// the emulator before the account exists (for principals to be granted).
    pub async fn new(delegations: impl FnOnce(&str, &str) -> Value) -> Self {
        Self::with_emulator(delegations, emulator().await).await
    }

    pub async fn with_emulator(
        delegations: impl FnOnce(&str, &str) -> Value,
        emulator: databricks_emulator::Emulator,
    ) -> Self {
        Self::with(delegations, emulator, OperatorOptions::default()).await
    }

    /// As [`World::with_emulator`], with the operator's other options from `base`.
    pub async fn with(
        delegations: impl FnOnce(&str, &str) -> Value,
        emulator: databricks_emulator::Emulator,
        base: OperatorOptions,
    ) -> Self {
        let plane = Box::new(ControlPlane::start().await.expect("a control plane of its own"));
        plane.install_crds(&databricks_oauth_operator::crd::all()).await.expect("crds");
        let env = TestEnv::on(&plane).await;
        let tenant_roles = super::manifests::kustomize("deploy/base")
            .into_iter()
            .filter(|o| o.name_any().ends_with("-edit") || o.name_any().ends_with("-view"))
            .collect::<Vec<_>>();
        assert_eq!(tenant_roles.len(), 2, "deploy/base ships the edit and view roles");
        super::manifests::apply_all(&env.client, &tenant_roles).await;
        let a_ns = format!("{}-team-a", env.namespace);
        let b_ns = format!("{}-team-b", env.namespace);
        let a = tenant(&env, &plane, &a_ns).await;
        let b = tenant(&env, &plane, &b_ns).await;
        let options = OperatorOptions {
            tenancy: delegations(&a_ns, &b_ns),
            own_namespace_only: false,
            emulator: Some(emulator),
            ..base
        };
        let operator = env.operator(options).await;
        operator.wait_account(&env, "True").await;
        Self { env, operator, a, b, _plane: plane }
    }

    /// Writes of the emulator that name `id` in their path.
    pub async fn writes_to(&self, id: &str) -> Vec<String> {
        self.operator.emulator.stats().await.writes_to(id).into_iter().map(str::to_owned).collect()
    }

    /// Every Secret and ConfigMap the operator manages lies in a tenant's namespace.
    pub async fn nothing_written_elsewhere(&self) {
        let selector = ListParams::default().labels("app.kubernetes.io/managed-by=databricks-oauth-operator");
        let secrets = Api::<Secret>::all(self.env.client.clone()).list(&selector).await.expect("secrets");
        let namespaces: BTreeSet<String> = secrets.items.iter().filter_map(|s| s.namespace()).collect();
        let tenants = BTreeSet::from([self.a.namespace.clone(), self.b.namespace.clone()]);
        assert!(namespaces.is_subset(&tenants), "operator Secrets outside the tenants: {namespaces:?}");
    }
}

/// A namespace and a ServiceAccount `tenant` bound only to the shipped edit role; its client.
pub async fn tenant(env: &TestEnv, plane: &ControlPlane, namespace: &str) -> Tenant {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns");
    Api::<Namespace>::all(env.client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "tenant"}})).expect("sa");
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), namespace);
    accounts.create(&PostParams::default(), &sa).await.expect("sa");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "tenant-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "databricks-oauth-operator-edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(env.client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let client = super::service_account_client(&env.client, plane, namespace, "tenant").await;
    Tenant { namespace: namespace.to_owned(), client }
}

/// Lets the tenant write `/status` of the operator's kinds too (a Role granting `resources: ["*"]`, common in
/// namespaces whose owners administer them): the attack of item 5.
pub async fn grant_status(env: &TestEnv, tenant: &Tenant) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "everything"},
        "rules": [{"apiGroups": ["oauth.databricks-operator.io"], "resources": ["*"], "verbs": ["*"]}],
    }))
    .expect("role");
    Api::<Role>::namespaced(env.client.clone(), &tenant.namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "everything"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "everything"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": tenant.namespace}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(env.client.clone(), &tenant.namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
}

/// The operator's namespaced kinds, as the helpers below need them.
pub trait Kind:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Kind for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

pub fn api<K>(tenant: &Tenant) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(tenant.client.clone(), &tenant.namespace)
}

/// Creates a namespaced object as the tenant; `spec` gets the world's account.
pub async fn create<K>(world: &World, tenant: &Tenant, name: &str, mut spec: Value) -> K
where
    K: Kind,
{
    if K::kind(&()) != "TrustPolicy" {
        spec["accountRef"] = json!({"name": world.operator.account});
    }
    let object: K =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("object");
    api::<K>(tenant).create(&PostParams::default(), &object).await.expect("the tenant may create it")
}

/// Waits until `name`'s condition `type_` has `status` and (if given) `reason`; returns the condition message.
pub async fn wait_condition<K>(
    tenant: &Tenant,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> String
where
    K: Kind,
{
    let what = format!("{type_} did not become {status:?}/{reason:?}");
    wait_matching::<K>(tenant, name, &what, |c| {
        c["type"] == type_ && c["status"] == status && reason.is_none_or(|r| c["reason"] == r)
    })
    .await
}

/// Waits until a condition of `name` satisfies `matches`; returns its message, or panics with `what` and the
/// object's status.
pub async fn wait_matching<K>(
    tenant: &Tenant,
    name: &str,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> String
where
    K: Kind,
{
    let api = api::<K>(tenant);
    let found = wait_for(TIMEOUT, || async {
        let object = serde_json::to_value(api.get(name).await.ok()?).ok()?;
        let conditions = object["status"]["conditions"].as_array()?.clone();
        conditions
            .into_iter()
            .find_map(|c| matches(&c).then(|| c["message"].as_str().unwrap_or_default().to_owned()))
    })
    .await;
    match found {
        Ok(message) => message,
        Err(_) => {
            let status = api
                .get(name)
                .await
                .ok()
                .map(|o| serde_json::to_value(o).unwrap_or_default()["status"].clone());
            panic!("{name}: {what}; status: {status:#?}")
        }
    }
}

/// Warning events with `reason` about `name` in the tenant's namespace.
pub async fn events(world: &World, tenant: &Tenant, name: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(world.env.client.clone(), &tenant.namespace);
    let list = api.list(&ListParams::default()).await.expect("events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.note)
        .collect()
}

/// The data of a Secret in a tenant's namespace, read as an administrator.
pub async fn secret_data(
    world: &World,
    tenant: &Tenant,
    name: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let secret =
        Api::<Secret>::namespaced(world.env.client.clone(), &tenant.namespace).get_opt(name).await.ok()??;
    Some(secret.data?.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect())
}

/// A JSON merge patch of `name`, as the tenant (`status`: of its status subresource).
pub async fn merge<K>(tenant: &Tenant, name: &str, value: Value, status: bool)
where
    K: Kind,
{
    let api = api::<K>(tenant);
    let patch = Patch::Merge(&value);
    let result = match status {
        true => api.patch_status(name, &PatchParams::default(), &patch).await,
        false => api.patch(name, &PatchParams::default(), &patch).await,
    };
    result.unwrap_or_else(|e| panic!("the tenant may patch {name}: {e}"));
}

/// The annotation patch that makes the next pass of an object a full one.
pub fn annotate(key: &str, value: Value) -> Value {
    json!({"metadata": {"annotations": {key: value}}})
}

/// The integration id an app connection's status records.
pub async fn integration_of(tenant: &Tenant, name: &str) -> String {
    let app = api::<DatabricksAppConnection>(tenant).get(name).await.expect("app");
    app.status.and_then(|s| s.integration_id).expect("an integration id")
}

/// A DatabricksAppConnection, Ready; returns its integration id.
pub async fn ready_app(world: &World, tenant: &Tenant, name: &str, spec: Value) -> String {
    create::<DatabricksAppConnection>(world, tenant, name, spec).await;
    wait_condition::<DatabricksAppConnection>(tenant, name, "Ready", "True", None).await;
    integration_of(tenant, name).await
}

/// A ServicePrincipal with a secret, Ready; returns its remote principal and its published secret.
pub async fn ready_principal(
    world: &World,
    tenant: &Tenant,
    name: &str,
    spec: Value,
) -> (RemotePrincipal, String) {
    let sp: ServicePrincipal = create(world, tenant, name, spec).await;
    wait_condition::<ServicePrincipal>(tenant, name, "Ready", "True", None).await;
    let sp = api::<ServicePrincipal>(tenant).get(&sp.name_any()).await.expect("sp");
    let id = sp.status.and_then(|s| s.id).expect("id");
    let remote = world.operator.admin.get_service_principal(&id).await.expect("remote");
    let data = secret_data(world, tenant, &format!("{name}-databricks")).await.unwrap_or_default();
    (remote, data.get("DATABRICKS_CLIENT_SECRET").cloned().unwrap_or_default())
}

/// A principal made outside the operator (by hand or Terraform), optionally an account admin.
pub async fn legacy_principal(admin: &AccountClient, name: &str, account_admin: bool) -> RemotePrincipal {
    let principal =
        admin.create_service_principal(&NewServicePrincipal::new(name, true, None)).await.expect("sp");
    if account_admin {
        let roles = json!([{"value": "account_admin"}]);
        admin
            .patch_service_principal(&principal.id, &[PatchOperation::replace("roles", roles)])
            .await
            .expect("roles");
    }
    admin.get_service_principal(&principal.id).await.expect("sp")
}

/// A JSON merge patch of the world's DatabricksAccount, as the platform team.
pub async fn patch_account(world: &World, value: Value) {
    let accounts: Api<databricks_oauth_operator::crd::DatabricksAccount> = Api::all(world.env.client.clone());
    accounts
        .patch(&world.operator.account, &PatchParams::default(), &Patch::Merge(&value))
        .await
        .expect("the platform may patch its account");
}

/// Makes the next pass of `name` a full one (the reconcile annotation), as the tenant.
pub async fn poke<K>(tenant: &Tenant, name: &str, value: &str)
where
    K: Kind,
{
    merge::<K>(tenant, name, annotate("oauth.databricks-operator.io/reconcile", json!(value)), false).await;
}

/// Deletes `name` as the tenant and waits until it is gone (its cleanup ran).
pub async fn delete_and_wait<K>(tenant: &Tenant, name: &str)
where
    K: Kind,
{
    let api = api::<K>(tenant);
    api.delete(name, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("the tenant may delete {name}: {e}"));
    wait_for(TIMEOUT, || async { api.get_opt(name).await.ok()?.is_none().then_some(()) })
        .await
        .unwrap_or_else(|_| panic!("{name} was not deleted"));
}

/// Warning events with `reason` about the world's DatabricksAccount.
pub async fn account_events(world: &World, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::all(world.env.client.clone());
    let list = api.list(&ListParams::default()).await.expect("events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(world.operator.account.as_str())
        })
        .filter_map(|e| e.note)
        .collect()
}

//! Ownership at scale: thousands of app connections over many namespaces on one account (the case that made the
//! ledger of earlier versions one hot object), on a control plane of its own. Reports time to Ready against the
//! floors, the largest object of each kind the operator writes, and the apiserver's conflicts per object.

use std::time::{Duration, Instant};

use databricks_oauth_operator::crd::{DatabricksAccount, DatabricksAppConnection, DatabricksClaim};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Bench, BoxError,
    objects::{Scenario, create_all, objects_of},
    process::Operator,
    report::{Largest, OwnershipReport},
    runs::{CREATION_RESYNC, fast_rate},
    watch::{Readiness, apiserver_writes, wait_account_ready},
};

impl Bench {
    /// `apps` app connections, spread evenly over `namespaces` tenants of one account.
    pub async fn ownership(&self, apps: usize, namespaces: usize) -> Result<OwnershipReport, BoxError> {
        let per = apps / namespaces.max(1);
        let total = per * namespaces;
        self.log(&format!("== ownership at scale: {total} app connections over {namespaces} namespaces"));
        let floor_databricks = self.floor_databricks(Scenario::apps(total)).await?;
        self.log(&format!("floor: Databricks calls alone {floor_databricks:.2}s"));
        let (plane, bench) = Bench::on_new_plane(self.started).await?;
        let (client, kubeconfig) = (bench.client.clone(), bench.kubeconfig.clone());
        let platform = "platform";
        let tenants: Vec<String> = (0..namespaces).map(|i| format!("team-{i:02}")).collect();
        for ns in std::iter::once(platform).chain(tenants.iter().map(String::as_str)) {
            bench.namespace(ns).await?;
        }
        let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
        let emulator = bench.shared_account(platform, &names, Some(fast_rate())).await?;
        let operator = Operator::start_watching(&kubeconfig, None, platform, CREATION_RESYNC).await?;
        wait_account_ready(&client, platform).await?;
        emulator.reset_stats().await;
        let objects: Vec<_> =
            tenants.iter().flat_map(|ns| objects_of(ns, platform, Scenario::apps(per))).collect();
        let before = apiserver_writes(&client).await?;
        let ready = Readiness::watch_all(&client);
        let start = Instant::now();
        create_all(&client, objects).await?;
        ready.wait_for(total, start, Duration::from_secs(3600)).await?;
        let seconds = start.elapsed().as_secs_f64();
        let writes = apiserver_writes(&client).await?.since(&before);
        let stats = emulator.stats().await;
        let largest = largest_objects(&client).await?;
        operator.stop().await;
        emulator.shutdown().await;
        let per_object = writes.total.saturating_sub(total as u64) as f64 / total as f64;
        let floors: Vec<String> = (0..namespaces).map(|i| format!("floor-{i:02}")).collect();
        let floor_objects =
            floors.iter().flat_map(|ns| objects_of(ns, platform, Scenario::apps(per))).collect();
        let floor_kubernetes = bench.floor_kubernetes(&floors, floor_objects, per_object).await?;
        plane.stop();
        let floor = floor_databricks.max(floor_kubernetes);
        self.log(&format!(
            "{total} Ready in {seconds:.1}s (floor {floor:.1}s), {} conflicts, largest {:?}",
            writes.conflicts,
            largest.iter().map(|l| (&l.kind, l.bytes)).collect::<Vec<_>>()
        ));
        Ok(OwnershipReport {
            namespaces,
            app_connections: total,
            seconds_to_ready: seconds,
            floor_databricks_seconds: floor_databricks,
            floor_kubernetes_seconds: floor_kubernetes,
            ratio_to_floor: seconds / floor,
            largest,
            conflicts: writes.conflicts,
            conflicts_per_object: writes.conflicts as f64 / total as f64,
            kubernetes_writes_per_object: per_object,
            kubernetes_writes_by_resource: writes.by_resource,
            databricks_requests: stats.requests,
        })
    }
}

/// The largest object of each kind the operator writes (as the apiserver serves it).
async fn largest_objects(client: &Client) -> Result<Vec<Largest>, BoxError> {
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=databricks-oauth-operator");
    Ok(vec![
        largest(Api::<DatabricksAccount>::all(client.clone()), &ListParams::default()).await?,
        largest(Api::<DatabricksClaim>::all(client.clone()), &ListParams::default()).await?,
        largest(Api::<DatabricksAppConnection>::all(client.clone()), &ListParams::default()).await?,
        largest(Api::<Secret>::all(client.clone()), &managed).await?,
    ])
}

async fn largest<K>(api: Api<K>, params: &ListParams) -> Result<Largest, BoxError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let list = api.list(params).await?;
    let mut found =
        Largest { kind: K::kind(&()).into_owned(), name: String::new(), bytes: 0, count: list.items.len() };
    for item in &list.items {
        let bytes = serde_json::to_vec(item)?.len();
        if bytes > found.bytes {
            found.bytes = bytes;
            found.name = item.name_any();
        }
    }
    Ok(found)
}

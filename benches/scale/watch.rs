//! Watching the run: when each object first reports Ready, and the apiserver's write counters.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use databricks_oauth_operator::crd::{
    DatabricksAccount, DatabricksAppConnection, ServicePrincipal, TrustPolicy,
};
use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::BoxError;

/// When each object first reported Ready=True.
#[derive(Clone)]
pub struct Readiness(Arc<Mutex<HashMap<String, Instant>>>);

impl Readiness {
    /// Objects of one namespace.
    pub fn watch(client: &Client, namespace: &str) -> Self {
        Self::watch_in(client, Some(namespace))
    }

    /// Objects of every namespace.
    pub fn watch_all(client: &Client) -> Self {
        Self::watch_in(client, None)
    }

    fn watch_in(client: &Client, namespace: Option<&str>) -> Self {
        let ready = Self(Arc::default());
        ready.spawn::<ServicePrincipal>(client, namespace);
        ready.spawn::<DatabricksAppConnection>(client, namespace);
        ready.spawn::<TrustPolicy>(client, namespace);
        ready
    }

    fn spawn<K>(&self, client: &Client, namespace: Option<&str>)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let api = match namespace {
            Some(namespace) => Api::<K>::namespaced(client.clone(), namespace),
            None => Api::<K>::all(client.clone()),
        };
        let seen = self.0.clone();
        tokio::spawn(async move {
            let mut stream =
                watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
            while let Some(Ok(obj)) = stream.next().await {
                let value = serde_json::to_value(&obj).unwrap_or_default();
                let ready = value["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                if ready && let Ok(mut seen) = seen.lock() {
                    seen.entry(format!(
                        "{}/{}/{}",
                        K::kind(&()),
                        obj.namespace().unwrap_or_default(),
                        obj.name_any()
                    ))
                    .or_insert_with(Instant::now);
                }
            }
        });
    }

    pub fn count(&self) -> usize {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub async fn wait_for(&self, n: usize, start: Instant, timeout: Duration) -> Result<(), BoxError> {
        let mut last_report = Instant::now();
        loop {
            let count = self.count();
            if count >= n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!("only {count} of {n} objects Ready after {timeout:?}").into());
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("           {count}/{n} Ready after {:.0}s", start.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn timeline(&self, start: Instant) -> Vec<f64> {
        let mut times: Vec<f64> = self
            .0
            .lock()
            .map(|s| s.values().map(|t| t.saturating_duration_since(start).as_secs_f64()).collect())
            .unwrap_or_default();
        times.sort_by(f64::total_cmp);
        times
    }
}

pub async fn wait_account_ready(client: &Client, name: &str) -> Result<(), BoxError> {
    let api = Api::<DatabricksAccount>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let account = api.get(name).await?;
        let ready = account
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("DatabricksAccount {name} not Ready: {:?}", account.status).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resources the operator writes, for counting apiserver writes (the ownership records among them).
pub const RESOURCES: [&str; 8] = [
    "serviceprincipals",
    "databricksappconnections",
    "trustpolicies",
    "databricksaccounts",
    "databricksclaims",
    "secrets",
    "configmaps",
    "events",
];

/// Writes the apiserver has served to the resources the operator writes: in all, answered 409 (a write on a
/// stale object: a conflict), and by resource; and its reads of them, by verb and resource (`get secrets`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Writes {
    pub total: u64,
    pub conflicts: u64,
    pub by_resource: BTreeMap<String, u64>,
    pub reads: BTreeMap<String, u64>,
}

impl Writes {
    /// What was written since `before`.
    pub fn since(&self, before: &Writes) -> Writes {
        let since = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(r, n)| (r.clone(), n.saturating_sub(then.get(r).copied().unwrap_or(0))))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        Writes {
            total: self.total.saturating_sub(before.total),
            conflicts: self.conflicts.saturating_sub(before.conflicts),
            by_resource: since(&self.by_resource, &before.by_resource),
            reads: since(&self.reads, &before.reads),
        }
    }
}

/// The apiserver's write counters (its `apiserver_request_total`).
pub async fn apiserver_writes(client: &Client) -> Result<Writes, BoxError> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut writes = Writes::default();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            labels.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("")
        };
        let verb = label("verb");
        let write = matches!(verb, "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION");
        let resource = label("resource");
        let n = value.parse::<f64>().unwrap_or(0.0) as u64;
        if !write && RESOURCES.contains(&resource) {
            *writes.reads.entry(format!("{} {resource}", verb.to_lowercase())).or_default() += n;
        }
        if write && RESOURCES.contains(&resource) {
            writes.total += n;
            *writes.by_resource.entry(resource.to_owned()).or_default() += n;
            if label("code") == "409" {
                writes.conflicts += n;
            }
        }
    }
    Ok(writes)
}

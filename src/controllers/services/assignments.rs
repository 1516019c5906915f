//! Workspace assignments can only be listed per workspace, all principals at once and without paging. Listing it
//! for every principal would cost one large read per principal per resync; instead one listing serves every
//! principal of the workspace for a while, and the operator's own writes are applied to it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::databricks::{AccountClient, Error};

type Key = (String, i64);

/// Listings by account and workspace: principal id → permissions; and each account's workspaces.
#[derive(Debug)]
pub struct Cache {
    max_age: Duration,
    entries: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Listing>>>>>,
    workspaces: Mutex<HashMap<String, (Instant, Vec<i64>)>>,
}

#[derive(Debug)]
struct Listing {
    fetched: Instant,
    permissions: HashMap<i64, Vec<String>>,
}

impl Cache {
    /// A listing is trusted for half a resync interval (at most 30 s), so drift is still seen at every resync.
    pub fn new(resync_interval: Duration) -> Self {
        let max_age = (resync_interval / 2).min(Duration::from_secs(30));
        Self { max_age, entries: Mutex::default(), workspaces: Mutex::default() }
    }

    /// The account's workspaces (listed at most once per `max_age`).
    pub async fn workspaces(&self, client: &AccountClient) -> Result<Vec<i64>, Error> {
        let key = client.account_id().to_owned();
        let cached = self.workspaces.lock().ok().and_then(|w| w.get(&key).cloned());
        if let Some((fetched, list)) = cached.filter(|(fetched, _)| fetched.elapsed() <= self.max_age) {
            let _ = fetched;
            return Ok(list);
        }
        let list = client.list_workspaces().await?;
        if let Ok(mut workspaces) = self.workspaces.lock() {
            workspaces.insert(key, (Instant::now(), list.clone()));
        }
        Ok(list)
    }

    fn entry(&self, client: &AccountClient, workspace: i64) -> Arc<tokio::sync::Mutex<Option<Listing>>> {
        let key = (client.account_id().to_owned(), workspace);
        match self.entries.lock() {
            Ok(mut entries) => entries.entry(key).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The permissions `principal` has in `workspace` (empty when unassigned). Concurrent callers share one
    /// listing.
    pub async fn permissions(
        &self,
        client: &AccountClient,
        workspace: i64,
        principal: i64,
    ) -> Result<Vec<String>, Error> {
        let entry = self.entry(client, workspace);
        let mut listing = entry.lock().await;
        if listing.as_ref().is_none_or(|l| l.fetched.elapsed() > self.max_age) {
            let permissions = client
                .list_workspace_assignments(workspace)
                .await?
                .into_iter()
                .filter_map(|a| a.principal.principal_id.map(|id| (id, a.permissions)))
                .collect();
            *listing = Some(Listing { fetched: Instant::now(), permissions });
        }
        Ok(listing.as_ref().and_then(|l| l.permissions.get(&principal).cloned()).unwrap_or_default())
    }

    /// Applies the operator's own write (`None`: unassigned) to the listing, if one is held.
    pub async fn record(
        &self,
        client: &AccountClient,
        workspace: i64,
        principal: i64,
        permissions: Option<Vec<String>>,
    ) {
        let entry = self.entry(client, workspace);
        let mut listing = entry.lock().await;
        if let Some(listing) = listing.as_mut() {
            match permissions {
                Some(permissions) => listing.permissions.insert(principal, permissions),
                None => listing.permissions.remove(&principal),
            };
        }
    }
}

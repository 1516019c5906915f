//! Kubernetes Events about the operator's objects: what it did in Databricks, and what a person must fix.

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use crate::controllers::rules::meta::MANAGER;

/// Publishes events as the operator (and, in a pod, as that pod).
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
}

impl Events {
    pub fn new(client: Client) -> Self {
        let reporter = Reporter { controller: MANAGER.to_owned(), instance: std::env::var("POD_NAME").ok() };
        Self { client, reporter }
    }

    /// Publishes an event; failing to publish one never fails a reconcile. Notes never hold secret values.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_owned(),
            secondary: None,
        };
        // A Recorder per event: a shared one keeps every event for six minutes (to count repeats into a series)
        // and scans all of them on each publish, which costs tens of MiB and CPU at thousands of objects. Our
        // events rarely repeat within minutes (failures back off), so a series is not worth that.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(%err, "could not publish event");
        }
    }
}

//! Rollout restarts of the workloads that consume a generated Secret (`rolloutRestartTargets`): they read it only
//! at start, so after new credentials are published each is rolled, and a replaced secret waits until every
//! rollout finished. In the spirit of Vault Secrets Operator's rollout-restart targets and `kubectl rollout restart`.
//!
//! A target is rolled by setting a pod template annotation, one key per owning object (so two objects naming the
//! same workload never undo each other), to what identifies the published credentials (a ServicePrincipal's
//! secret id, an app connection's client id; never a secret value). Idempotent: a pass that failed after
//! publishing rolls the workloads on the next pass, and a workload already running the current credentials is never
//! rolled again. Only workloads whose pod template uses the Secret are rolled: naming a target gives no power to
//! restart what does not consume it.

use kube::{
    Api, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::{Value, json};

use super::events::Events;
use crate::crd::{RolloutKind, RolloutTarget};

/// The prefix of the pod template annotations the operator rolls workloads with.
pub const ANNOTATION_PREFIX: &str = "restarted-for.oauth.databricks-operator.io/";

/// The annotation key of one owning object: `<prefix><kind>.<name>`, or `<prefix><kind>.<uid>` when the name does
/// not fit the 63 characters an annotation name may have.
pub fn annotation_key(owner_kind: &str, owner_name: &str, owner_uid: &str) -> String {
    let name = format!("{owner_kind}.{owner_name}");
    match name.len() <= 63 {
        true => format!("{ANNOTATION_PREFIX}{name}"),
        false => format!("{ANNOTATION_PREFIX}{owner_kind}.{owner_uid}"),
    }
}

/// Where the targets stand after a pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rollouts {
    /// Targets rolled for the current credentials whose rollout has not finished yet (`Kind/name`, with why it
    /// is stalled when it cannot finish by itself).
    pub pending: Vec<String>,
    /// Targets that could not be read or rolled (`Kind/name: error`): they count as not rolled.
    pub failed: Vec<String>,
    /// Targets that do not exist (`Kind/name`): nothing to restart, so they never hold a retirement back.
    pub missing: Vec<String>,
    /// Targets whose pod template does not use the Secret (`Kind/name`): never rolled.
    pub not_consumers: Vec<String>,
    /// Targets this pass rolled (`Kind/name`).
    pub restarted: Vec<String>,
}

impl Rollouts {
    /// Whether every named consumer runs the current credentials.
    pub fn done(&self) -> bool {
        self.pending.is_empty() && self.failed.is_empty()
    }

    /// Sentences for the CredentialsReady message, or nothing.
    pub fn note(&self, secret_name: &str) -> String {
        let mut note = String::new();
        let mut add = |what: &str, list: &[String]| {
            if !list.is_empty() {
                note.push_str(&format!("; {what}: {}", list.join(", ")));
            }
        };
        add("waiting for the rollout of", &self.pending);
        add("could not roll", &self.failed);
        add("rollout targets not found", &self.missing);
        add(&format!("not rolled, their pods do not use Secret {secret_name}"), &self.not_consumers);
        note
    }
}

/// What to do with one target, from the workload as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Its pod template does not use the Secret: leave it alone.
    NotConsumer,
    /// Its pods were started for other credentials (or none): roll it.
    Restart,
    /// Rolled for these credentials; the rollout is still going (or stalled, and why).
    Waiting(Option<&'static str>),
    /// Runs the current credentials everywhere.
    Done,
}

/// Decides the step for a workload (`object` as JSON): `key` is the owner's annotation, `value` identifies the
/// published credentials, `secret` is the Secret they are published in.
pub fn step(kind: RolloutKind, object: &Value, key: &str, value: &str, secret: &str) -> Step {
    let template = &object["spec"]["template"];
    if !uses_secret(&template["spec"], secret) {
        return Step::NotConsumer;
    }
    if template["metadata"]["annotations"][key].as_str() != Some(value) {
        return Step::Restart;
    }
    match rollout_complete(kind, object) {
        true => Step::Done,
        false => Step::Waiting(stalled(kind, object)),
    }
}

/// Whether a pod spec reads the Secret `name`: `envFrom`, `env.valueFrom.secretKeyRef`, a `secret` volume or a
/// projected `secret` source, in any container or init container.
pub fn uses_secret(pod_spec: &Value, name: &str) -> bool {
    let is = |v: &Value| v.as_str() == Some(name);
    let in_containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|key| pod_spec[*key].as_array().into_iter().flatten())
        .any(|c| {
            let env_from =
                c["envFrom"].as_array().is_some_and(|l| l.iter().any(|e| is(&e["secretRef"]["name"])));
            let env = c["env"]
                .as_array()
                .is_some_and(|l| l.iter().any(|e| is(&e["valueFrom"]["secretKeyRef"]["name"])));
            env_from || env
        });
    let in_volumes = pod_spec["volumes"].as_array().is_some_and(|volumes| {
        volumes.iter().any(|v| {
            is(&v["secret"]["secretName"])
                || v["projected"]["sources"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| is(&s["secret"]["name"])))
        })
    });
    in_containers || in_volumes
}

/// Whether a workload's rollout has finished, as `kubectl rollout status` decides it: the controller saw the
/// latest template, and every replica runs it and is available.
pub fn rollout_complete(kind: RolloutKind, object: &Value) -> bool {
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let generation = int(&object["metadata"]["generation"]);
    let status = &object["status"];
    if int(&status["observedGeneration"]) < generation {
        return false;
    }
    match kind {
        RolloutKind::Deployment => {
            let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1);
            int(&status["updatedReplicas"]) >= wanted
                && int(&status["replicas"]) == int(&status["updatedReplicas"])
                && int(&status["availableReplicas"]) >= wanted
        }
        RolloutKind::StatefulSet => {
            let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1);
            int(&status["updatedReplicas"]) >= wanted
                && int(&status["readyReplicas"]) >= wanted
                && status["updateRevision"] == status["currentRevision"]
        }
        RolloutKind::DaemonSet => {
            let desired = int(&status["desiredNumberScheduled"]);
            int(&status["updatedNumberScheduled"]) >= desired && int(&status["numberAvailable"]) >= desired
        }
    }
}

/// Why a rollout cannot finish by itself, if it cannot: someone must act on the workload.
pub fn stalled(kind: RolloutKind, object: &Value) -> Option<&'static str> {
    let spec = &object["spec"];
    match kind {
        RolloutKind::Deployment if spec["paused"] == true => Some("paused"),
        RolloutKind::Deployment => object["status"]["conditions"]
            .as_array()
            .is_some_and(|c| {
                c.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
            })
            .then_some("progress deadline exceeded"),
        _ if spec["updateStrategy"]["type"] == "OnDelete" => Some("updateStrategy OnDelete: delete its pods"),
        RolloutKind::StatefulSet
            if spec["updateStrategy"]["rollingUpdate"]["partition"].as_i64().unwrap_or(0) > 0 =>
        {
            Some("partitioned rolling update")
        }
        _ => None,
    }
}

fn resource(kind: RolloutKind) -> ApiResource {
    let kind = match kind {
        RolloutKind::Deployment => "Deployment",
        RolloutKind::StatefulSet => "StatefulSet",
        RolloutKind::DaemonSet => "DaemonSet",
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind))
}

fn label(target: &RolloutTarget) -> String {
    format!("{:?}/{}", target.kind, target.name)
}

/// Rolls every target that uses `secret` and is not yet running the credentials `value` identifies, and reports
/// where each stands. Errors are per target (never the pass's): the caller must still record what it published.
pub async fn roll(
    client: &kube::Client,
    namespace: &str,
    targets: &[RolloutTarget],
    key: &str,
    value: &str,
    secret: &str,
) -> Rollouts {
    let mut rollouts = Rollouts::default();
    for target in targets {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource(target.kind));
        let object = match api.get_opt(&target.name).await {
            Ok(Some(object)) => serde_json::to_value(&object).unwrap_or_default(),
            Ok(None) => {
                rollouts.missing.push(label(target));
                continue;
            }
            Err(err) => {
                rollouts.failed.push(format!("{} ({err})", label(target)));
                continue;
            }
        };
        match step(target.kind, &object, key, value, secret) {
            Step::Done => {}
            Step::NotConsumer => rollouts.not_consumers.push(label(target)),
            Step::Waiting(None) => rollouts.pending.push(label(target)),
            Step::Waiting(Some(why)) => rollouts.pending.push(format!("{} (stalled: {why})", label(target))),
            Step::Restart => {
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {key: value}}}}});
                match api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        rollouts.pending.push(label(target));
                        rollouts.restarted.push(label(target));
                    }
                    Err(err) => rollouts.failed.push(format!("{} ({err})", label(target))),
                }
            }
        }
    }
    rollouts
}

/// Events on `object` for what a pass rolled (onto `credentials`, e.g. "secret <id>") and could not roll.
pub async fn announce<K: Resource<DynamicType = ()>>(
    events: &Events,
    object: &K,
    rollouts: &Rollouts,
    credentials: &str,
) {
    for target in &rollouts.restarted {
        let note = format!("Rolling {target} onto {credentials}");
        events.publish(object, EventType::Normal, "RolloutRestarted", "Restart", &note).await;
    }
    for failed in &rollouts.failed {
        let note = format!("Could not roll {failed}");
        events.publish(object, EventType::Warning, "RolloutRestartFailed", "Restart", &note).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "restarted-for.oauth.databricks-operator.io/sp.api-client";

    fn deployment(annotation: Option<&str>, generation: i64, status: Value) -> Value {
        json!({
            "metadata": {"generation": generation},
            "spec": {"replicas": 2, "template": {
                "metadata": {"annotations": {KEY: annotation}},
                "spec": {"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "creds"}}]}]}}},
            "status": status,
        })
    }

    #[test]
    fn a_workload_is_rolled_once_per_secret_and_done_when_every_replica_runs_it() {
        let finished =
            json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        let kind = RolloutKind::Deployment;
        let step = |object: &Value| step(kind, object, KEY, "s2", "creds");
        assert_eq!(step(&deployment(None, 3, finished.clone())), Step::Restart);
        assert_eq!(step(&deployment(Some("s1"), 3, finished.clone())), Step::Restart);
        assert_eq!(step(&deployment(Some("s2"), 3, finished.clone())), Step::Done);
        // The controller has not seen the new template yet.
        assert_eq!(step(&deployment(Some("s2"), 4, finished)), Step::Waiting(None));
        // Old pods still running beside new ones.
        let surging =
            json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2});
        assert_eq!(step(&deployment(Some("s2"), 4, surging)), Step::Waiting(None));
        // New pods not available yet.
        let starting =
            json!({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1});
        assert_eq!(step(&deployment(Some("s2"), 4, starting)), Step::Waiting(None));
    }

    #[test]
    fn only_workloads_that_use_the_secret_are_rolled() {
        let pod = |spec: Value| json!({"spec": {"template": {"spec": spec}}});
        let kind = RolloutKind::Deployment;
        let uses = |spec: Value| step(kind, &pod(spec), KEY, "s1", "creds") != Step::NotConsumer;
        assert!(uses(json!({"containers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": "creds"}}}]}]})));
        assert!(uses(json!({"initContainers": [{"envFrom": [{"secretRef": {"name": "creds"}}]}]})));
        assert!(uses(json!({"containers": [{}], "volumes": [{"secret": {"secretName": "creds"}}]})));
        assert!(uses(json!({"volumes": [{"projected": {"sources": [{"secret": {"name": "creds"}}]}}]})));
        assert!(!uses(json!({"containers": [{"envFrom": [{"secretRef": {"name": "other"}}]}]})));
        assert!(!uses(json!({"containers": [{"envFrom": [{"configMapRef": {"name": "creds"}}]}]})));
    }

    #[test]
    fn each_owner_has_its_own_annotation() {
        let short = annotation_key("sp", "api-client", "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a");
        assert_eq!(short, KEY);
        assert_ne!(short, annotation_key("app", "api-client", "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a"));
        let long = annotation_key("sp", &"n".repeat(70), "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a");
        assert_eq!(long, format!("{ANNOTATION_PREFIX}sp.0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a"));
    }

    #[test]
    fn stateful_sets_and_daemon_sets_finish_by_their_own_status_and_stalls_are_named() {
        let sts = |current: &str| {
            json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
                   "status": {"observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": 1,
                              "currentRevision": current, "updateRevision": "r2"}})
        };
        assert!(!rollout_complete(RolloutKind::StatefulSet, &sts("r1")));
        assert!(rollout_complete(RolloutKind::StatefulSet, &sts("r2")));
        let ds = |available: i64| {
            json!({"metadata": {"generation": 2},
                   "status": {"observedGeneration": 2, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
                              "numberAvailable": available}})
        };
        assert!(!rollout_complete(RolloutKind::DaemonSet, &ds(1)));
        assert!(rollout_complete(RolloutKind::DaemonSet, &ds(2)));
        assert_eq!(stalled(RolloutKind::Deployment, &json!({"spec": {"paused": true}})), Some("paused"));
        let deadline = json!({"status": {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]}});
        assert_eq!(stalled(RolloutKind::Deployment, &deadline), Some("progress deadline exceeded"));
        let on_delete = json!({"spec": {"updateStrategy": {"type": "OnDelete"}}});
        assert!(stalled(RolloutKind::DaemonSet, &on_delete).is_some());
        assert!(stalled(RolloutKind::StatefulSet, &sts("r1")).is_none());
    }

    #[test]
    fn the_note_names_what_holds_a_retirement_back() {
        let rollouts = Rollouts {
            pending: vec!["Deployment/api".into()],
            missing: vec!["DaemonSet/gone".into()],
            not_consumers: vec!["StatefulSet/db".into()],
            ..Rollouts::default()
        };
        assert!(!rollouts.done());
        let note = rollouts.note("creds");
        assert!(
            note.contains("rollout of: Deployment/api") && note.contains("not found: DaemonSet/gone"),
            "{note}"
        );
        assert!(note.contains("do not use Secret creds: StatefulSet/db"), "{note}");
        assert!(!Rollouts { failed: vec!["Deployment/x (403)".into()], ..Rollouts::default() }.done());
        assert!(Rollouts::default().done() && Rollouts::default().note("creds").is_empty());
    }
}

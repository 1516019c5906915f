//! A fair share of Databricks: one namespace's churn never starves another's, a throttled class of request does
//! not hold up the others, and a rotate annotation stamped on every deploy mints at most once per interval. Every
//! share is counted from the emulator's request log, never from the clock.

mod support;

use std::{collections::BTreeSet, time::Duration};

use databricks_emulator::{Bucket, LoggedRequest, RateLimit};
use databricks_oauth_operator::{
    crd::{DatabricksAccount, ServicePrincipal},
    metrics::ControllerLabels,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    TestEnv,
    operator::{OperatorOptions, uniform_rate_limit},
    wait_for,
};
use test_control_plane::ControlPlane;

const ROTATE: &str = "oauth.databricks-operator.io/rotate";
const DELETION_POLICY: &str = "oauth.databricks-operator.io/deletion-policy";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn create_namespace(env: &TestEnv, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(env.client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
}

fn principal(name: &str, account: &str, credentials: bool) -> ServicePrincipal {
    let mut spec = json!({"accountRef": {"name": account}});
    if credentials {
        spec["credentials"] = json!({"type": "OAuthSecret"});
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("sp")
}

fn is_ready(sp: &ServicePrincipal) -> bool {
    sp.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            && s.observed_generation == sp.metadata.generation
    })
}

/// Waits until every ServicePrincipal of the namespace is Ready; returns them.
async fn all_ready(api: &Api<ServicePrincipal>, n: usize, timeout: Duration) -> Vec<ServicePrincipal> {
    wait_for(timeout, || async {
        let list = api.list(&Default::default()).await.ok()?.items;
        (list.len() == n && list.iter().all(is_ready)).then_some(list)
    })
    .await
    .unwrap_or_else(|e| panic!("{n} principals Ready: {e}"))
}

/// Every string that marks a request as concerning one of these objects: UIDs (the search by tag), principal
/// ids (paths) and application ids (the token endpoint's client id).
fn marks(principals: &[ServicePrincipal]) -> BTreeSet<String> {
    principals
        .iter()
        .flat_map(|sp| {
            let status = sp.status.clone().unwrap_or_default();
            [sp.uid(), status.id, status.application_id]
        })
        .flatten()
        .collect()
}

/// Namespace A rewrites an annotation of its 200 principals over and over (as a GitOps tool or a script would);
/// namespace B then creates 5 principals. B's become Ready while A still churns, and while B had requests to
/// make it got about every other read: its fair share with two busy namespaces.
#[tokio::test]
async fn a_churning_namespace_leaves_another_its_fair_share() {
    let plane = Box::new(ControlPlane::start().await.expect("a control plane of its own"));
    plane.install_crds(&databricks_oauth_operator::crd::all()).await.expect("crds");
    let env = TestEnv::on(&plane).await;
    let (a_ns, b_ns) = (format!("{}-a", env.namespace), format!("{}-b", env.namespace));
    create_namespace(&env, &a_ns).await;
    create_namespace(&env, &b_ns).await;
    let options = OperatorOptions { own_namespace_only: false, ..Default::default() };
    let operator = env.operator(options).await;
    operator.wait_account(&env, "True").await;
    let a: Api<ServicePrincipal> = Api::namespaced(env.client.clone(), &a_ns);
    let b: Api<ServicePrincipal> = Api::namespaced(env.client.clone(), &b_ns);

    // A's 200 principals, created at full speed.
    futures::stream::iter(0..200)
        .map(|i| {
            let (a, object) = (a.clone(), principal(&format!("a-{i}"), &operator.account, false));
            async move { a.create(&PostParams::default(), &object).await.map(drop) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("A's principals");
    let a_principals = all_ready(&a, 200, Duration::from_secs(180)).await;

    // Labels and other tools' annotations cost no pass and no Databricks call: 200 of each.
    let reconciles = || {
        let labels = ControllerLabels { controller: "serviceprincipal".into() };
        operator.ctx.metrics.reconciles.get_or_create(&labels).get()
    };
    let (before, requests_before) = (reconciles(), operator.emulator.stats().await.requests);
    for sp in &a_principals {
        let patch = json!({"metadata": {"labels": {"team": "a"}, "annotations": {"example.com/build": "1"}}});
        a.patch(&sp.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("label");
    }
    // A principal created after them, in the same watch: once it is Ready, every change before it was seen.
    let sentinel: Api<ServicePrincipal> = Api::namespaced(env.client.clone(), &env.namespace);
    sentinel
        .create(&PostParams::default(), &principal("sentinel", &operator.account, false))
        .await
        .expect("sentinel");
    wait_for(Duration::from_secs(60), || async { sentinel.get("sentinel").await.ok().filter(is_ready) })
        .await
        .expect("the sentinel is Ready");
    let stats = operator.emulator.stats().await;
    let a_marks = marks(&a_principals);
    let touched = stats.log[requests_before as usize..].iter().filter(|r| r.names_any(&a_marks)).count();
    assert_eq!(touched, 0, "labels and foreign annotations cost Databricks calls");
    let woken = reconciles() - before;
    assert!(woken <= 4, "labels and foreign annotations woke {woken} passes (the sentinel's own are a few)");

    // Now a read budget A alone can exhaust: 10 reads per second, and A's churn asks for far more.
    let read_bound = json!({"reads": {"requestsPerSecond": 10, "burst": 2}});
    let mut limit = uniform_rate_limit(200, 200, 16);
    limit["reads"] = read_bound["reads"].clone();
    Api::<DatabricksAccount>::all(env.client.clone())
        .patch(
            &operator.account,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"rateLimit": limit}})),
        )
        .await
        .expect("read budget");
    // Databricks' own read limit, a little above the operator's: any 429 would mean the budget let too much out.
    let reads = Bucket { requests_per_second: 12.0, burst: 12.0 };
    operator.emulator.set_rate_limit(Some(RateLimit { reads: Some(reads), ..RateLimit::default() })).await;
    let churn = {
        let (a, names) = (a.clone(), a_principals.iter().map(|sp| sp.name_any()).collect::<Vec<_>>());
        tokio::spawn(async move {
            for round in 0.. {
                // Both values leave the object to be orphaned on deletion; each change asks for a full pass.
                let value = if round % 2 == 0 { "orphan" } else { "Orphan" };
                let patch = json!({"metadata": {"annotations": {DELETION_POLICY: value}}});
                for name in &names {
                    let _ = a.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
            }
        })
    };
    // A's churn fills the read budget before B arrives.
    let churn_started = now_ms();
    wait_for(Duration::from_secs(60), || async {
        let log = operator.emulator.stats().await.log;
        (log.iter().filter(|r| r.at_ms >= churn_started && r.class == "reads").count() >= 50).then_some(())
    })
    .await
    .expect("A's churn reads");

    let b_arrived = now_ms();
    for i in 0..5 {
        b.create(&PostParams::default(), &principal(&format!("b-{i}"), &operator.account, true))
            .await
            .expect("B's principal");
    }
    let b_principals = all_ready(&b, 5, Duration::from_secs(120)).await;
    let b_ready = now_ms();
    assert!(!churn.is_finished(), "A stopped churning before B was Ready");
    // A still had work when B was done: its requests go on after B's last.
    wait_for(Duration::from_secs(30), || async {
        let log = operator.emulator.stats().await.log;
        log.iter().any(|r| r.at_ms > b_ready && r.names_any(&a_marks)).then_some(())
    })
    .await
    .expect("A's churn still reached Databricks after B was Ready");
    churn.abort();

    // While B had reads to make (from its first to its last), it got about every other one.
    let b_marks = marks(&b_principals);
    let log = operator.emulator.stats().await.log;
    let reads: Vec<&LoggedRequest> =
        log.iter().filter(|r| r.class == "reads" && r.at_ms >= b_arrived && r.at_ms <= b_ready).collect();
    let first = reads.iter().position(|r| r.names_any(&b_marks)).expect("B's first read");
    let last = reads.iter().rposition(|r| r.names_any(&b_marks)).expect("B's last read");
    let window = &reads[first..=last];
    let b_reads = window.iter().filter(|r| r.names_any(&b_marks)).count();
    let a_reads = window.iter().filter(|r| r.names_any(&a_marks)).count();
    let share = b_reads as f64 / (a_reads + b_reads) as f64;
    println!("B's reads {b_reads}, A's reads {a_reads} while B had reads to make: B's share {share:.2}");
    // Two busy namespaces: a fair share is one half; B leaves a few turns to A while it writes between its
    // reads. First come, first served would have given B less (A keeps 8 requests queued: about 5 in 13).
    assert!(b_reads >= 10, "B's reads: a search and a verification per principal ({b_reads})");
    assert!(share >= 0.4, "B got {b_reads} of {} reads while it was waiting", a_reads + b_reads);
    let throttled = log.iter().filter(|r| r.status == 429).count();
    assert_eq!(throttled, 0, "the client's budget kept under Databricks' limits");
    // Deferred passes of A were retried, not dropped: every A principal is still Ready.
    all_ready(&a, 200, Duration::from_secs(120)).await;
}

/// Databricks throttles writes (429 with a long `Retry-After`): new principals wait, and meanwhile a principal
/// whose change needs only reads converges. No write reaches Databricks before the pause ends, no read is
/// throttled.
#[tokio::test]
async fn reads_go_on_while_writes_are_throttled() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    operator.wait_account(&env, "True").await;
    env.create_principal(&operator, "reader", json!({"credentials": {"type": "OAuthSecret"}})).await;
    let reader = env.wait_condition("reader", "Ready", "True", Duration::from_secs(60)).await;
    let reader_marks = marks(std::slice::from_ref(&reader));

    let pause = 20;
    let limit = RateLimit {
        writes: Some(Bucket { requests_per_second: 0.01, burst: 0.0 }),
        retry_after_seconds: Some(pause),
        ..RateLimit::default()
    };
    operator.emulator.set_rate_limit(Some(limit)).await;
    env.create_principal(&operator, "writer", json!({"credentials": {"type": "OAuthSecret"}})).await;
    let throttled_at = wait_for(Duration::from_secs(30), || async {
        let log = operator.emulator.stats().await.log;
        log.iter().find(|r| r.class == "writes" && r.status == 429).map(|r| r.at_ms)
    })
    .await
    .expect("a write throttled");

    // A change that needs only reads (and a Secret write in the cluster).
    let generation = reader.metadata.generation.unwrap_or_default();
    let template = json!({"spec": {"credentials": {"template": {"metadata": {"labels": {"tier": "gold"}}}}}});
    env.patch_principal("reader", template).await;
    wait_for(Duration::from_secs(30), || async {
        let sp = env.principals().get("reader").await.ok()?;
        (sp.metadata.generation > Some(generation) && is_ready(&sp)).then_some(())
    })
    .await
    .expect("the reader converged while writes were paused");
    let log = operator.emulator.stats().await.log;
    let reader_reads: Vec<u64> = log
        .iter()
        .filter(|r| r.at_ms > throttled_at && r.names_any(&reader_marks))
        .map(|r| r.at_ms)
        .collect();
    assert!(!reader_reads.is_empty(), "the reader's pass read Databricks");
    let last_read = reader_reads.iter().max().copied().unwrap_or_default();
    let writes_between =
        log.iter().filter(|r| r.class == "writes" && r.at_ms > throttled_at && r.at_ms <= last_read).count();
    assert_eq!(writes_between, 0, "the write class kept its pause while the reads went on");
    assert!(
        last_read - throttled_at < u64::from(pause) * 1000 / 2,
        "the reader's reads came {} ms after the throttled write: they waited for the write class's pause",
        last_read - throttled_at
    );
    assert_eq!(log.iter().filter(|r| r.class == "reads" && r.status == 429).count(), 0);
    let writer = env.principals().get("writer").await.expect("writer");
    assert!(!is_ready(&writer), "the writer waits for the write class");

    operator.emulator.set_rate_limit(None).await;
    env.wait_condition("writer", "Ready", "True", Duration::from_secs(90)).await;
}

/// A pipeline stamps the rotate annotation on every deploy: 10 new values in under a minute mint a secret at
/// most once per `--rotate-min-interval`, the object says when the next rotation is allowed, and the last value
/// is honoured.
#[tokio::test]
async fn a_rotate_annotation_bumped_ten_times_mints_at_most_once_per_interval() {
    let env = TestEnv::new().await;
    let interval = Duration::from_secs(15);
    let options = OperatorOptions { rotate_min_interval: interval, ..Default::default() };
    let operator = env.operator(options).await;
    operator.wait_account(&env, "True").await;
    env.create_principal(&operator, "deployed", json!({"credentials": {"type": "OAuthSecret"}})).await;
    let sp = env.wait_condition("deployed", "Ready", "True", Duration::from_secs(60)).await;
    let id = sp.status.as_ref().and_then(|s| s.id.clone()).expect("principal id");
    let allowed = sp.status.as_ref().and_then(|s| s.credentials.as_ref()?.rotate_allowed_after.clone());
    assert!(allowed.is_some(), "the object says when the next rotation is allowed");

    let mut waited = false;
    for deploy in 1..=10 {
        let patch = json!({"metadata": {"annotations": {ROTATE: format!("deploy-{deploy}")}}});
        env.patch_principal("deployed", patch).await;
        tokio::time::sleep(Duration::from_secs(3)).await; // the pipeline's pace, not a wait for the operator
        let sp = env.principals().get("deployed").await.expect("sp");
        let published =
            sp.status.iter().flat_map(|s| s.conditions.iter()).find(|c| c.type_ == "CredentialsReady");
        waited |= published.is_some_and(|c| c.message.contains("waits until"));
    }
    assert!(waited, "a deferred rotation is explained in the CredentialsReady condition");
    let sp = wait_for(Duration::from_secs(60), || async {
        let sp = env.principals().get("deployed").await.ok()?;
        let handled = sp.status.as_ref()?.credentials.as_ref()?.rotate_request.clone();
        (handled.as_deref() == Some("deploy-10")).then_some(sp)
    })
    .await
    .expect("the last value is honoured");

    let mints: Vec<u64> = operator
        .emulator
        .stats()
        .await
        .log
        .iter()
        .filter(|r| {
            r.method == "POST" && r.target.contains(&format!("servicePrincipals/{id}/credentials/secrets"))
        })
        .map(|r| r.at_ms)
        .collect();
    println!("secrets minted at (ms): {mints:?}");
    assert!(mints.len() >= 2, "rotations happened: {mints:?}");
    assert!(
        mints.len() <= 4,
        "10 values in ~30 s at one per 15 s: the first mint and at most 3 more: {mints:?}"
    );
    for pair in mints.windows(2) {
        // The interval runs from the operator's mint; the emulator sees the request a moment later.
        assert!(pair[1] - pair[0] >= interval.as_millis() as u64 - 1_000, "minted too soon: {mints:?}");
    }
    let secrets = operator.admin.list_secrets(&id).await.expect("secrets");
    assert!(secrets.len() <= 5, "{} secrets", secrets.len());
    let published = sp.status.as_ref().and_then(|s| s.credentials.as_ref()?.secret_id.clone());
    assert!(published.is_some_and(|p| secrets.iter().any(|s| s.id == p)), "the published secret exists");
}

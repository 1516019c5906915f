//! The TrustPolicy controller: ServiceAccount tokens minted by the real kube-apiserver exchanged for Databricks
//! tokens using only the ConfigMap, refusals for the wrong identity, key rotation, and the operator itself running
//! on workload identity federation with no secret.

mod support;

use std::{collections::BTreeMap, time::Duration};

use databricks_oauth_operator::{
    controllers::conditions,
    controllers::trust_policy::{cluster_issuer, service_account_oidc},
    crd::TrustPolicy,
    databricks::types::{FederationPolicy, OidcPolicy},
};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{ConfigMap, ServiceAccount},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    TestEnv,
    operator::{ACCOUNT_ID, ADMIN_ID, Operator, OperatorOptions},
    wait_for,
};
use test_control_plane::ControlPlane;

const TIMEOUT: Duration = Duration::from_secs(60);

fn policies(env: &TestEnv) -> Api<TrustPolicy> {
    Api::namespaced(env.client.clone(), &env.namespace)
}

async fn service_account(env: &TestEnv, name: &str) {
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).expect("sa");
    Api::<ServiceAccount>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &sa)
        .await
        .expect("sa");
}

async fn token_for(env: &TestEnv, service_account: &str, audience: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.namespace);
    let response = api
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .expect("token request");
    response.status.and_then(|s| s.token).expect("token")
}

async fn create_policy(env: &TestEnv, name: &str, spec: Value) {
    let object: TrustPolicy =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("policy");
    policies(env).create(&PostParams::default(), &object).await.expect("create policy");
}

async fn wait_policy(env: &TestEnv, name: &str, type_: &str, status: &str) -> TrustPolicy {
    let api = policies(env);
    match wait_for(TIMEOUT, || {
        let api = api.clone();
        async move {
            let p = api.get(name).await.ok()?;
            p.status.as_ref()?.conditions.iter().any(|c| c.type_ == type_ && c.status == status).then_some(p)
        }
    })
    .await
    {
        Ok(p) => p,
        Err(_) => {
            panic!("{name}: {type_} != {status}: {:?}", api.get(name).await.ok().and_then(|p| p.status))
        }
    }
}

async fn config_map(env: &TestEnv, name: &str) -> BTreeMap<String, String> {
    Api::<ConfigMap>::namespaced(env.client.clone(), &env.namespace)
        .get(name)
        .await
        .expect("config map")
        .data
        .expect("data")
}

/// A principal for the policy, Ready (no secret: federation only).
async fn principal(env: &TestEnv, operator: &Operator, name: &str) -> (String, String) {
    env.create_principal(operator, name, json!({})).await;
    let sp = env.wait_condition(name, "Ready", "True", TIMEOUT).await;
    let status = sp.status.expect("status");
    (status.id.expect("id"), status.application_id.expect("app id"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_exchanged_using_only_the_config_map() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    let (sp_id, app_id) = principal(&env, &operator, "reporting").await;
    service_account(&env, "reporting").await;
    service_account(&env, "intruder").await;
    create_policy(
        &env,
        "reporting-k8s",
        json!({"servicePrincipalRef": {"name": "reporting"}, "description": "reporting pods",
        "kubernetes": {"serviceAccountName": "reporting"}, "verify": true}),
    )
    .await;
    let policy = wait_policy(&env, "reporting-k8s", "Verified", "True").await;
    let status = policy.status.expect("status");
    assert_eq!(status.service_principal_id.as_deref(), Some(sp_id.as_str()));
    let policy_id = status.policy_id.clone().expect("policy id");
    let remote =
        operator.admin.get_federation_policy(&sp_id, &policy_id).await.expect("policy in Databricks");
    let oidc = remote.oidc_policy.clone().expect("oidc");
    assert_eq!(
        oidc.subject.as_deref(),
        Some(format!("system:serviceaccount:{}:reporting", env.namespace).as_str())
    );
    assert_eq!(oidc.issuer.as_deref(), Some(test_control_plane::SERVICE_ACCOUNT_ISSUER));
    assert!(oidc.jwks_json.is_some(), "Inline copies the cluster's keys");

    // Everything a pod needs, from the ConfigMap only.
    let cm = config_map(&env, "reporting-k8s-databricks-federation").await;
    assert_eq!(cm["DATABRICKS_CLIENT_ID"], app_id);
    assert_eq!(cm["DATABRICKS_AUTH_TYPE"], "file-oidc");
    assert_eq!(cm["DATABRICKS_TOKEN_AUDIENCE"], ACCOUNT_ID);
    let jwt = token_for(&env, "reporting", &cm["DATABRICKS_TOKEN_AUDIENCE"]).await;
    let token_file = std::env::temp_dir().join(format!("{}-token", env.namespace));
    std::fs::write(&token_file, &jwt).expect("token file");
    let venv = support::python::venv().await;
    let mut command = tokio::process::Command::new(venv.join("bin/python"));
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/federation_auth.py"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", std::env::temp_dir());
    for (key, value) in &cm {
        command.env(key, value);
    }
    command.env("DATABRICKS_OIDC_TOKEN_FILEPATH", &token_file);
    let output = command.output().await.expect("python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("authenticated"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exchanged = operator.admin.exchange_token(&jwt, Some(&app_id)).await.expect("exchange");
    let seen = operator.emulator.introspect(exchanged.expose_access_token()).await;
    assert_eq!(seen["subject"]["application_id"], json!(app_id), "acts as the service principal");

    // Refused: another ServiceAccount, another audience, an expired token.
    let other = operator
        .admin
        .exchange_token(&token_for(&env, "intruder", ACCOUNT_ID).await, Some(&app_id))
        .await
        .expect_err("other SA");
    assert!(other.to_string().contains("subject"), "{other}");
    let audience = operator
        .admin
        .exchange_token(&token_for(&env, "reporting", "something-else").await, Some(&app_id))
        .await
        .expect_err("aud");
    assert!(audience.to_string().contains("audience"), "{audience}");
    operator.emulator.advance_clock(Duration::from_secs(7200)).await;
    let expired = operator.admin.exchange_token(&jwt, Some(&app_id)).await.expect_err("expired");
    assert!(expired.to_string().contains("expired"), "{expired}");

    // Drift is reverted; deletion removes the policy.
    let mut drifted = remote.clone();
    drifted.oidc_policy =
        Some(OidcPolicy { subject: Some("system:serviceaccount:x:y".into()), ..oidc.clone() });
    operator
        .admin
        .update_federation_policy(&sp_id, &policy_id, "oidc_policy", &drifted)
        .await
        .expect("drift");
    policies(&env)
        .patch(
            "reporting-k8s",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"oauth.databricks-operator.io/reconcile": "1"}}}),
            ),
        )
        .await
        .expect("touch");
    wait_for(TIMEOUT, || async {
        let p = operator.admin.get_federation_policy(&sp_id, &policy_id).await.ok()?;
        (p.oidc_policy?.subject == oidc.subject).then_some(())
    })
    .await
    .expect("drift reverted");
    policies(&env).delete("reporting-k8s", &DeleteParams::default()).await.expect("delete");
    wait_for(TIMEOUT, || async {
        policies(&env).get_opt("reporting-k8s").await.ok()?.is_none().then_some(())
    })
    .await
    .expect("gone");
    assert!(
        operator.admin.get_federation_policy(&sp_id, &policy_id).await.expect_err("deleted").is_not_found()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_policy_is_reported_by_verify_and_the_limit_is_a_condition() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    let (sp_id, _) = principal(&env, &operator, "limited").await;
    service_account(&env, "app").await;
    // Discovery needs an issuer Databricks can reach; this cluster's is private, so verification says why it fails.
    create_policy(
        &env,
        "discovery",
        json!({"servicePrincipalRef": {"name": "limited"},
        "kubernetes": {"serviceAccountName": "app", "jwks": "Discovery"}, "verify": true}),
    )
    .await;
    let policy = wait_policy(&env, "discovery", "Verified", "False").await;
    let status = policy.status.expect("status");
    let verified = conditions::get(&status.conditions, "Verified").expect("verified");
    assert_eq!(verified.reason, "KeysUnreachable");
    assert!(verified.message.contains("openid-configuration"), "{}", verified.message);
    create_policy(
        &env,
        "missing-sa",
        json!({"servicePrincipalRef": {"name": "limited"},
        "kubernetes": {"serviceAccountName": "nobody"}, "verify": true}),
    )
    .await;
    let policy = wait_policy(&env, "missing-sa", "Verified", "False").await;
    let status = policy.status.expect("status");
    let verified = conditions::get(&status.conditions, "Verified").expect("verified");
    assert_eq!(verified.reason, "ServiceAccountNotFound");

    // 20 policies is the Databricks maximum: the 21st is a condition, not a retry loop.
    let body = FederationPolicy {
        oidc_policy: Some(OidcPolicy {
            issuer: Some("https://issuer.example.com".into()),
            subject: Some("s".into()),
            ..OidcPolicy::default()
        }),
        ..FederationPolicy::default()
    };
    for i in 0..18 {
        operator
            .admin
            .create_federation_policy(&sp_id, Some(&format!("filler-{i}")), &body)
            .await
            .expect("filler");
    }
    create_policy(&env, "one-too-many", json!({"servicePrincipalRef": {"name": "limited"},
        "oidc": {"issuer": "https://token.actions.githubusercontent.com", "subject": "repo:o/r:ref:refs/heads/main"}}))
    .await;
    let policy = wait_policy(&env, "one-too-many", "Ready", "False").await;
    let ready =
        policy.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("ready");
    assert_eq!(ready.reason, "PolicyLimitReached");
    assert!(ready.message.contains("maximum of 20"), "{}", ready.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_cluster_signing_key_is_followed_by_the_inlined_jwks() {
    let mut plane = ControlPlane::start().await.expect("a control plane of its own");
    plane.install_crds(&databricks_oauth_operator::crd::all()).await.expect("crds");
    let env = TestEnv::on(&plane).await;
    let operator =
        env.operator(OperatorOptions { resync: Duration::from_secs(2), ..Default::default() }).await;
    let (_, app_id) = principal(&env, &operator, "rotating").await;
    service_account(&env, "worker").await;
    create_policy(&env, "worker", json!({"servicePrincipalRef": {"name": "rotating"}, "kubernetes": {"serviceAccountName": "worker"}, "verify": true})).await;
    wait_policy(&env, "worker", "Verified", "True").await;
    let (_, keys_before) = cluster_issuer(&env.client).await.expect("issuer");

    plane.rotate_service_account_key().await.expect("restart with a new key");
    let (_, keys_after) = cluster_issuer(&env.client).await.expect("issuer");
    assert_ne!(keys_before, keys_after, "the apiserver publishes the new key");
    let fresh = token_for(&env, "worker", ACCOUNT_ID).await;
    wait_for(TIMEOUT, || async { operator.admin.exchange_token(&fresh, Some(&app_id)).await.ok().map(drop) })
        .await
        .expect("a token signed by the new key is accepted once the operator copied the new JWKS");
    let policy = wait_policy(&env, "worker", "Verified", "True").await;
    assert!(policy.status.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_itself_runs_on_workload_identity_with_no_secret() {
    let env = TestEnv::new().await;
    service_account(&env, "doo-operator").await;
    let jwt = token_for(&env, "doo-operator", ACCOUNT_ID).await;
    let token_path = std::env::temp_dir().join(format!("{}-operator-token", env.namespace));
    std::fs::write(&token_path, &jwt).expect("token file");
    // Databricks side: a federation policy on the account-admin principal trusting this ServiceAccount.
    let emulator = support::operator::emulator().await;
    let admin = {
        use databricks_oauth_operator::databricks::{
            AccountClient, Budget, ClientOptions, Credentials, Limits,
        };
        let credentials = Credentials::ClientCredentials {
            client_id: ADMIN_ID.into(),
            client_secret: support::operator::ADMIN_SECRET.into(),
        };
        AccountClient::new(
            &emulator.url(),
            ACCOUNT_ID,
            credentials,
            ClientOptions { budget: Budget::new(Limits::uniform(100.0, 100, 4)), ..Default::default() },
        )
        .expect("client")
    };
    let admin_sp = admin
        .find_service_principal_by_application_id(ADMIN_ID)
        .await
        .expect("find")
        .expect("admin principal");
    let (issuer, jwks) = cluster_issuer(&env.client).await.expect("issuer");
    let oidc = service_account_oidc(issuer, Some(jwks), &env.namespace, "doo-operator", ACCOUNT_ID);
    let trust = FederationPolicy { oidc_policy: Some(oidc), ..FederationPolicy::default() };
    admin.create_federation_policy(&admin_sp.id, Some("operator"), &trust).await.expect("policy");
    emulator.reset_stats().await;

    let auth = json!({"workloadIdentity": {"clientId": ADMIN_ID, "tokenPath": token_path}});
    let operator = env
        .operator(OperatorOptions { auth: Some(auth), emulator: Some(emulator), ..Default::default() })
        .await;
    // The whole scenario: a principal with a secret, and a trust policy for a ServiceAccount.
    env.create_principal(&operator, "wi-principal", json!({"credentials": {}})).await;
    env.wait_condition("wi-principal", "Ready", "True", TIMEOUT).await;
    service_account(&env, "wi-app").await;
    create_policy(&env, "wi-trust", json!({"servicePrincipalRef": {"name": "wi-principal"}, "kubernetes": {"serviceAccountName": "wi-app"}, "verify": true})).await;
    wait_policy(&env, "wi-trust", "Verified", "True").await;
    let accounts: Api<databricks_oauth_operator::crd::DatabricksAccount> = Api::all(env.client.clone());
    let account = wait_for(TIMEOUT, || async {
        accounts
            .get(&operator.account)
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")
    })
    .await
    .expect("account ready");
    assert!(account.message.contains("workload identity"), "{}", account.message);
    // The admin secret never left the emulator's configuration: every operator token came from the exchange.
    let spec = accounts.get(&operator.account).await.expect("account").spec;
    assert!(spec.auth.oauth_m2m.is_none());
}

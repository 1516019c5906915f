//! The DatabricksAppConnection controller: a full U2M sign-in with only the Secret's keys, updates the emulator
//! enforces, deletion invalidating tokens, public apps, lost secrets, drift and crash safety.

mod support;

use std::{collections::BTreeMap, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use databricks_emulator::FaultRule;
use databricks_oauth_operator::{crd::DatabricksAppConnection, databricks::types::CustomAppUpdate};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{
    TestEnv,
    operator::{Operator, OperatorOptions},
    wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn apps(env: &TestEnv) -> Api<DatabricksAppConnection> {
    Api::namespaced(env.client.clone(), &env.namespace)
}

async fn create(env: &TestEnv, operator: &Operator, name: &str, mut spec: Value) {
    spec["accountRef"] = json!({"name": operator.account});
    let object: DatabricksAppConnection =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("app");
    apps(env).create(&PostParams::default(), &object).await.expect("create app");
}

async fn patch(env: &TestEnv, name: &str, value: Value) {
    apps(env).patch(name, &PatchParams::default(), &Patch::Merge(&value)).await.expect("patch");
}

async fn wait_condition(
    env: &TestEnv,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> DatabricksAppConnection {
    let api = apps(env);
    wait_for(TIMEOUT, || {
        let api = api.clone();
        async move {
            let app = api.get(name).await.ok()?;
            let ok = app
                .status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == status && reason.is_none_or(|r| c.reason == r));
            ok.then_some(app)
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name}: {type_} did not become {status} ({reason:?})"))
}

/// A U2M client using only what the Secret says.
struct SignIn {
    http: reqwest::Client,
    keys: BTreeMap<String, String>,
}

impl SignIn {
    fn new(keys: BTreeMap<String, String>) -> Self {
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
        Self { http, keys }
    }

    /// Authorization request with PKCE; the code, or the HTTP status when refused.
    async fn authorize(&self, redirect: &str, scope: &str, challenge: &str) -> Result<String, u16> {
        let response = self
            .http
            .get(&self.keys["DATABRICKS_AUTHORIZATION_ENDPOINT"])
            .query(&[
                ("response_type", "code"),
                ("client_id", self.keys["DATABRICKS_CLIENT_ID"].as_str()),
                ("redirect_uri", redirect),
                ("scope", scope),
                ("state", "s"),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .expect("authorize");
        if !response.status().is_redirection() {
            return Err(response.status().as_u16());
        }
        let location =
            url::Url::parse(response.headers()["location"].to_str().expect("location")).expect("url");
        assert!(location.as_str().starts_with(redirect), "sent back to the registered URL: {location}");
        location.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).ok_or(400)
    }

    async fn token(&self, mut form: Vec<(&str, String)>) -> (u16, Value) {
        form.push(("client_id", self.keys["DATABRICKS_CLIENT_ID"].clone()));
        if let Some(secret) = self.keys.get("DATABRICKS_CLIENT_SECRET") {
            form.push(("client_secret", secret.clone()));
        }
        let response =
            self.http.post(&self.keys["DATABRICKS_TOKEN_ENDPOINT"]).form(&form).send().await.expect("token");
        (response.status().as_u16(), response.json().await.unwrap_or_default())
    }

    /// The whole sign-in: authorize with PKCE, exchange the code.
    async fn sign_in(&self, redirect: &str, scope: &str) -> Value {
        let verifier = "a-verifier-that-is-long-enough-for-pkce-0123456789";
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let code = self.authorize(redirect, scope, &challenge).await.expect("code");
        let (status, tokens) = self
            .token(vec![
                ("grant_type", "authorization_code".into()),
                ("code", code),
                ("code_verifier", verifier.into()),
                ("redirect_uri", redirect.into()),
            ])
            .await;
        assert_eq!(status, 200, "{tokens}");
        tokens
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_app_signs_users_in_end_to_end_with_only_its_secret() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    create(
        &env,
        &operator,
        "web",
        json!({
            "redirectUrls": ["https://web.example.com/callback"],
            "scopes": ["all-apis", "offline_access"],
            "confidential": true,
            "tokenAccessPolicy": {"accessTokenTtlMinutes": 15, "refreshTokenTtlMinutes": 120},
        }),
    )
    .await;
    let app = wait_condition(&env, "web", "Ready", "True", None).await;
    let app_status = app.status.expect("status");
    let keys = env.secret_data("web-oauth-client").await.expect("secret");
    assert_eq!(keys.get("DATABRICKS_CLIENT_ID"), app_status.client_id.as_ref());
    assert!(keys.contains_key("DATABRICKS_CLIENT_SECRET"));
    for key in [
        "DATABRICKS_HOST",
        "DATABRICKS_ACCOUNT_ID",
        "DATABRICKS_AUTHORIZATION_ENDPOINT",
        "DATABRICKS_TOKEN_ENDPOINT",
    ] {
        assert!(keys.contains_key(key), "{key}");
    }

    let client = SignIn::new(keys.clone());
    let tokens = client.sign_in("https://web.example.com/callback", "all-apis offline_access").await;
    assert_eq!(tokens["expires_in"], 15 * 60, "the access TTL of the token access policy");
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("offline_access gives a refresh token").to_owned();
    let (status, refreshed) =
        client.token(vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh.clone())]).await;
    assert_eq!(status, 200, "{refreshed}");
    assert!(refreshed["access_token"].as_str().is_some_and(|t| t != access));
    let (status, online) = {
        let verifier = "another-verifier-that-is-long-enough-0123456789";
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let code =
            client.authorize("https://web.example.com/callback", "all-apis", &challenge).await.expect("code");
        client
            .token(vec![
                ("grant_type", "authorization_code".into()),
                ("code", code),
                ("code_verifier", verifier.into()),
                ("redirect_uri", "https://web.example.com/callback".into()),
            ])
            .await
    };
    assert_eq!(status, 200);
    assert!(online.get("refresh_token").is_none(), "no refresh token without offline_access");
    assert_eq!(
        client.authorize("https://evil.example.com/callback", "all-apis", "x").await,
        Err(400),
        "unregistered redirect refused"
    );

    // Updating the CR changes what the emulator enforces.
    patch(&env, "web", json!({"spec": {"redirectUrls": ["https://web.example.com/v2"], "tokenAccessPolicy": {"accessTokenTtlMinutes": 30, "refreshTokenTtlMinutes": 120}}})).await;
    wait_for(TIMEOUT, || async {
        let integration = operator.admin.get_custom_app(app_status.integration_id.as_deref()?).await.ok()?;
        (integration.redirect_urls == vec!["https://web.example.com/v2"]).then_some(())
    })
    .await
    .expect("updated in Databricks");
    assert_eq!(
        client.authorize("https://web.example.com/callback", "all-apis", "x").await,
        Err(400),
        "old URL refused now"
    );
    let tokens = client.sign_in("https://web.example.com/v2", "all-apis").await;
    assert_eq!(tokens["expires_in"], 30 * 60);
    assert_eq!(
        env.secret_data("web-oauth-client").await.expect("secret"),
        keys,
        "the client keeps its id and secret"
    );

    // Drift in Databricks is reverted at the next resync, or at once when the reconcile annotation asks.
    operator
        .admin
        .update_custom_app(
            app_status.integration_id.as_deref().expect("id"),
            &CustomAppUpdate {
                redirect_urls: Some(vec!["https://drifted.example.com".into()]),
                ..CustomAppUpdate::default()
            },
        )
        .await
        .expect("drift");
    patch(&env, "web", json!({"metadata": {"annotations": {"oauth.databricks-operator.io/reconcile": "1"}}}))
        .await;
    wait_for(TIMEOUT, || async {
        let integration = operator.admin.get_custom_app(app_status.integration_id.as_deref()?).await.ok()?;
        (integration.redirect_urls == vec!["https://web.example.com/v2"]).then_some(())
    })
    .await
    .expect("drift reverted");

    // Deleting the CR removes the integration, and the tokens it issued stop working.
    let live = tokens["access_token"].as_str().expect("token").to_owned();
    assert_eq!(operator.emulator.introspect(&live).await["active"], true);
    apps(&env).delete("web", &DeleteParams::default()).await.expect("delete");
    wait_for(TIMEOUT, || async { apps(&env).get_opt("web").await.ok()?.is_none().then_some(()) })
        .await
        .expect("gone");
    assert_eq!(operator.emulator.introspect(&live).await["active"], false);
    let (status_code, _) =
        client.token(vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh)]).await;
    assert!((400..500).contains(&status_code));
    assert!(operator.admin.list_custom_apps().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_app_has_no_secret_and_signs_in_with_pkce_alone() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    create(
        &env,
        &operator,
        "desktop",
        json!({"redirectUrls": ["http://localhost:8020"], "scopes": ["sql", "offline_access"]}),
    )
    .await;
    wait_condition(&env, "desktop", "Ready", "True", None).await;
    let keys = env.secret_data("desktop-oauth-client").await.expect("secret");
    assert!(!keys.contains_key("DATABRICKS_CLIENT_SECRET"), "a public client has no secret");
    let tokens = SignIn::new(keys).sign_in("http://localhost:8020", "sql offline_access").await;
    assert!(tokens["refresh_token"].is_string());
    // Its Secret is rebuilt when deleted by hand.
    env.secrets().delete("desktop-oauth-client", &DeleteParams::default()).await.expect("delete");
    wait_for(TIMEOUT, || async { env.secret_data("desktop-oauth-client").await.map(drop) })
        .await
        .expect("rebuilt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_confidential_secret_is_reported_and_replaced_only_on_request() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    // A consumer of the Secret, named for rollout restarts (no nodes: only its pod template matters here).
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let web = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
        "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web", "env": [
            {"name": "CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "lost-oauth-client", "key": "DATABRICKS_CLIENT_SECRET"}}}]}]}}}});
    deployments
        .create(&Default::default(), &serde_json::from_value(web).expect("deployment"))
        .await
        .expect("web");
    let rolled_for = |client_id: String| {
        let deployments = deployments.clone();
        async move {
            wait_for(Duration::from_secs(60), || async {
                let template = deployments.get("web").await.ok()?.spec.template;
                let annotations = template.metadata?.annotations?;
                let prefix = databricks_oauth_operator::controllers::rollout::ANNOTATION_PREFIX;
                annotations.iter().any(|(k, v)| k.starts_with(prefix) && *v == client_id).then_some(())
            })
            .await
        }
    };
    create(
        &env,
        &operator,
        "lost",
        json!({"redirectUrls": ["https://lost.example.com/cb"], "confidential": true,
               "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}]}),
    )
    .await;
    let app = wait_condition(&env, "lost", "Ready", "True", None).await;
    let first = app.status.and_then(|s| s.client_id).expect("client id");
    assert!(rolled_for(first.clone()).await.is_ok(), "the consumer is rolled onto {first}");
    env.secrets().delete("lost-oauth-client", &DeleteParams::default()).await.expect("delete");
    let app = wait_condition(&env, "lost", "CredentialsReady", "False", Some("SecretLost")).await;
    let condition = app
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "CredentialsReady")
        .expect("c");
    assert!(condition.message.contains("oauth.databricks-operator.io/rotate"), "{}", condition.message);
    assert_eq!(
        operator.admin.list_custom_apps().await.expect("list").len(),
        1,
        "nothing recreated on its own"
    );

    patch(&env, "lost", json!({"metadata": {"annotations": {"oauth.databricks-operator.io/rotate": "1"}}}))
        .await;
    let app = wait_condition(&env, "lost", "CredentialsReady", "True", None).await;
    let second = app.status.and_then(|s| s.client_id).expect("client id");
    assert_ne!(first, second, "a new integration, a new client id");
    assert!(rolled_for(second.clone()).await.is_ok(), "the consumer is rolled onto the new client {second}");
    let keys = env.secret_data("lost-oauth-client").await.expect("secret");
    assert_eq!(keys["DATABRICKS_CLIENT_ID"], second);
    assert!(keys.contains_key("DATABRICKS_CLIENT_SECRET"));
    let integrations = operator.admin.list_custom_apps().await.expect("list");
    assert_eq!(integrations.len(), 1, "the old integration is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_create_leaves_exactly_one_integration() {
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    let cases: Vec<(&str, bool, Option<&'static str>, Option<FaultRule>)> = vec![
        ("lost-answer-public", false, None, Some(FaultRule::drop_response("apps.create").times(1))),
        ("lost-answer-confidential", true, None, Some(FaultRule::drop_response("apps.create").times(1))),
        ("crash-after-create", true, Some("after-create-app"), None),
        ("crash-after-publish", false, Some("after-publish-app"), None),
    ];
    for (name, confidential, fail_point, fault) in cases {
        if let Some(point) = fail_point {
            operator.ctx.fail_points.arm(point);
        }
        if let Some(fault) = fault {
            operator.emulator.add_fault(fault).await;
        }
        create(
            &env,
            &operator,
            name,
            json!({"redirectUrls": ["https://x.example.com/cb"], "confidential": confidential}),
        )
        .await;
        let app = wait_condition(&env, name, "Ready", "True", None).await;
        if let Some(point) = fail_point {
            assert!(!operator.ctx.fail_points.armed(point), "{name}: the fail point fired");
        }
        let stats = operator.emulator.stats().await;
        operator.emulator.clear_faults().await;
        let named: Vec<_> = operator
            .admin
            .list_custom_apps()
            .await
            .expect("list")
            .into_iter()
            .filter(|a| a.name == name)
            .collect();
        assert_eq!(
            named.len(),
            1,
            "{name}: exactly one integration ({} creates)",
            stats.count("apps.create")
        );
        assert_eq!(
            Some(&named[0].integration_id),
            app.status.as_ref().and_then(|s| s.integration_id.as_ref()),
            "{name}"
        );
        let keys = env.secret_data(&format!("{name}-oauth-client")).await.expect("secret");
        assert_eq!(
            Some(&keys["DATABRICKS_CLIENT_ID"]),
            app.status.as_ref().and_then(|s| s.client_id.as_ref()),
            "{name}"
        );
        if confidential {
            // The published secret is the live one.
            let client = SignIn::new(keys);
            let tokens = client.sign_in("https://x.example.com/cb", "all-apis").await;
            assert!(tokens["access_token"].is_string(), "{name}");
        }
    }
}

/// The rotate annotation recreates a confidential app's integration at most once per `--rotate-min-interval`:
/// two new values right after creation make one recreation, when the interval has passed, for the last value.
#[tokio::test]
async fn the_rotate_annotation_recreates_an_app_at_most_once_per_interval() {
    let env = TestEnv::new().await;
    let interval = Duration::from_secs(10);
    let operator =
        env.operator(OperatorOptions { rotate_min_interval: interval, ..Default::default() }).await;
    create(
        &env,
        &operator,
        "guarded",
        json!({"redirectUrls": ["https://g.example.com/cb"], "confidential": true}),
    )
    .await;
    let app = wait_condition(&env, "guarded", "Ready", "True", None).await;
    let first = app.status.as_ref().and_then(|s| s.client_id.clone()).expect("client id");
    assert!(app.status.as_ref().and_then(|s| s.rotate_allowed_after.clone()).is_some());

    for value in ["1", "2"] {
        let rotate = json!({"metadata": {"annotations": {"oauth.databricks-operator.io/rotate": value}}});
        patch(&env, "guarded", rotate).await;
    }
    // Before the interval: the integration stays, and the condition says until when.
    wait_for(TIMEOUT, || async {
        let app = apps(&env).get("guarded").await.ok()?;
        let c = app.status?.conditions.into_iter().find(|c| c.type_ == "CredentialsReady")?;
        c.message.contains("waits until").then_some(())
    })
    .await
    .expect("the recreation waits, visibly");
    let app = wait_for(TIMEOUT, || async {
        let app = apps(&env).get("guarded").await.ok()?;
        (app.status.as_ref()?.rotate_request.as_deref() == Some("2")).then_some(app)
    })
    .await
    .expect("the last value is honoured");
    let second = app.status.and_then(|s| s.client_id).expect("client id");
    assert_ne!(first, second, "recreated");
    let creates = operator.emulator.stats().await.count("apps.create");
    assert_eq!(creates, 2, "created once, recreated once for both values");
    assert_eq!(operator.admin.list_custom_apps().await.expect("list").len(), 1);
}

/// An upgrade from the ledger kept in the account's status: the records move into DatabricksClaims and the status
/// forgets them; the app connection keeps its integration (no second one is created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_of_an_earlier_version_moves_into_claims() {
    use databricks_oauth_operator::crd::{DatabricksAccount, DatabricksClaim, ServicePrincipal};
    use databricks_oauth_operator::databricks::types::{NewCustomApp, NewServicePrincipal};
    let env = TestEnv::new().await;
    let operator = env.operator(OperatorOptions::default()).await;
    // An integration the earlier version created, and its object, paused so nothing is written before the move.
    let want = NewCustomApp {
        name: "legacy-portal".into(),
        redirect_urls: vec!["https://legacy.example.com/cb".into()],
        ..NewCustomApp::default()
    };
    let created = operator.admin.create_custom_app(&want).await.expect("integration");
    let object: DatabricksAppConnection = serde_json::from_value(json!({
        "metadata": {"name": "legacy-portal", "annotations": {"oauth.databricks-operator.io/paused": "true"}},
        "spec": {"accountRef": {"name": operator.account}, "redirectUrls": ["https://legacy.example.com/cb"]}}))
    .expect("app");
    let uid =
        apps(&env).create(&PostParams::default(), &object).await.expect("create").metadata.uid.expect("uid");
    wait_condition(&env, "legacy-portal", "Ready", "False", Some("Paused")).await;
    // An adoption of the earlier version too: its object (paused) and the secret its status names.
    let adopted = operator
        .admin
        .create_service_principal(&NewServicePrincipal::new("legacy adopted", true, None))
        .await
        .expect("principal");
    let minted = operator.admin.create_secret(&adopted.id, Duration::from_secs(3600)).await.expect("secret");
    let sp: ServicePrincipal = serde_json::from_value(json!({
        "metadata": {"name": "legacy-sp", "annotations": {"oauth.databricks-operator.io/paused": "true"}},
        "spec": {"accountRef": {"name": operator.account}, "adopt": {"applicationId": adopted.application_id},
            "credentials": {}}}))
    .expect("sp");
    let principals: Api<ServicePrincipal> = Api::namespaced(env.client.clone(), &env.namespace);
    let sp_uid = principals.create(&PostParams::default(), &sp).await.expect("sp").metadata.uid.expect("uid");
    let recorded = json!({"status": {"credentials": {"secretId": minted.info.id}}});
    principals
        .patch_status("legacy-sp", &PatchParams::default(), &Patch::Merge(&recorded))
        .await
        .expect("status");
    // The earlier version's record, written as it wrote it.
    let accounts: Api<DatabricksAccount> = Api::all(env.client.clone());
    let ledger = json!({"status": {"appConnections": {uid.clone(): {"namespace": env.namespace, "name": "legacy-portal",
        "displayName": "legacy-portal", "integrationId": created.integration_id}},
        "adoptions": {adopted.application_id.clone(): {"namespace": env.namespace, "name": "legacy-sp", "uid": sp_uid}}}});
    accounts
        .patch_status(&operator.account, &PatchParams::default(), &Patch::Merge(&ledger))
        .await
        .expect("ledger");
    let claims: Api<DatabricksClaim> = Api::all(env.client.clone());
    let name = format!("app.{}.{uid}", support::operator::ACCOUNT_ID);
    let claim = wait_for(TIMEOUT, || async { claims.get_opt(&name).await.ok()? })
        .await
        .expect("the record became a claim");
    assert_eq!(claim.spec.remote.id.as_deref(), Some(created.integration_id.as_str()));
    assert_eq!(
        (claim.spec.owner.namespace.as_str(), claim.spec.owner.name.as_str()),
        (env.namespace.as_str(), "legacy-portal")
    );
    // The adoption's claim names the secrets its object's status named (read once, at the move).
    let name = format!("sp.{}.{}", support::operator::ACCOUNT_ID, adopted.application_id.to_lowercase());
    let claim =
        wait_for(TIMEOUT, || async { claims.get_opt(&name).await.ok()? }).await.expect("adoption claim");
    assert!(claim.spec.adopted);
    assert_eq!(claim.spec.secrets, std::slice::from_ref(&minted.info.id));
    assert_eq!(claim.spec.owner.uid, sp_uid);
    wait_for(TIMEOUT, || async {
        let status = accounts.get(&operator.account).await.ok()?.status?;
        (status.app_connections.is_empty() && status.adoptions.is_empty()).then_some(())
    })
    .await
    .expect("the account's status forgets the record");
    // Unpaused, the object uses the recorded integration.
    patch(
        &env,
        "legacy-portal",
        json!({"metadata": {"annotations": {"oauth.databricks-operator.io/paused": null}}}),
    )
    .await;
    let ready = wait_condition(&env, "legacy-portal", "Ready", "True", None).await;
    let status = ready.status.expect("status");
    assert_eq!(status.integration_id.as_deref(), Some(created.integration_id.as_str()));
    let listed = operator.admin.list_custom_apps().await.expect("apps");
    assert_eq!(listed.iter().filter(|a| a.name == "legacy-portal").count(), 1, "no second integration");
}

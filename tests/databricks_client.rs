//! The Databricks client against the emulator over loopback: every operation and auth flow, the documented
//! limits and error shapes, and each fault kind (what the client recovers from, and how it reports the rest).

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use databricks_emulator::{Emulator, EmulatorConfig, FaultRule, MAX_POLICIES, MAX_SECRETS, RateLimit};
use databricks_oauth_operator::databricks::{
    AccountClient, Budget, ClientOptions, Credentials, Error, Limits,
    types::{
        CustomAppUpdate, FederationPolicy, NewCustomApp, NewServicePrincipal, OidcPolicy, PatchOperation,
        TokenAccessPolicy,
    },
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ACCOUNT_ID: &str = "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a";
const ADMIN_ID: &str = "emulator-admin";
const ADMIN_SECRET: &str = "admin-secret-value";
const WORKSPACE: i64 = 1_234_567_890_123_456;

async fn emulator() -> Emulator {
    let mut config = EmulatorConfig::new(ACCOUNT_ID, ADMIN_ID, ADMIN_SECRET);
    config.workspaces = vec![WORKSPACE, 42];
    Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("emulator")
}

fn options() -> ClientOptions {
    ClientOptions { budget: Budget::new(Limits::uniform(1000.0, 1000, 8)), ..ClientOptions::default() }
}

fn admin(emulator: &Emulator) -> AccountClient {
    let credentials =
        Credentials::ClientCredentials { client_id: ADMIN_ID.into(), client_secret: ADMIN_SECRET.into() };
    AccountClient::new(&emulator.url(), ACCOUNT_ID, credentials, options()).expect("client")
}

fn sp(name: &str, external_id: Option<&str>) -> NewServicePrincipal {
    NewServicePrincipal::new(name, true, external_id)
}

#[tokio::test]
async fn service_principals_crud_filter_and_paging() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    let created = client.create_service_principal(&sp("etl", Some("uid-1"))).await.expect("create");
    assert!(!created.id.is_empty() && !created.application_id.is_empty());
    let got = client.get_service_principal(&created.id).await.expect("get");
    assert_eq!(
        (got.display_name.as_str(), got.external_id.as_deref(), got.active),
        ("etl", Some("uid-1"), true)
    );

    // Display names are not unique; identity is the id, tagging is externalId.
    let twin = client.create_service_principal(&sp("etl", None)).await.expect("twin");
    let by_ext = client.find_service_principals_by_external_id("uid-1").await.expect("find");
    assert_eq!(by_ext.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![created.id.clone()]);
    let by_app = client.find_service_principal_by_application_id(&twin.application_id).await.expect("find");
    assert_eq!(by_app.map(|s| s.id), Some(twin.id.clone()));

    client
        .patch_service_principal(&created.id, &[PatchOperation::replace("active", false)])
        .await
        .expect("patch");
    client
        .patch_service_principal(&created.id, &[PatchOperation::replace("displayName", "etl-2")])
        .await
        .expect("patch");
    let got = client.get_service_principal(&created.id).await.expect("get");
    assert!(!got.active && got.display_name == "etl-2");

    // Paging: more than one SCIM page (count is capped at 100).
    for i in 0..120 {
        client.create_service_principal(&sp(&format!("bulk-{i}"), None)).await.expect("bulk");
    }
    let all = client.list_service_principals(None).await.expect("list");
    assert_eq!(all.len(), 123, "admin + 2 + 120, each once");
    let bulk = client.list_service_principals(Some("displayName sw \"bulk-\"")).await.expect("filter");
    assert_eq!(bulk.len(), 120);

    assert!(client.delete_service_principal(&twin.id).await.expect("delete"));
    assert!(!client.delete_service_principal(&twin.id).await.expect("already gone is Ok(false)"));
    let missing = client.get_service_principal(&twin.id).await.expect_err("gone");
    assert!(missing.is_not_found(), "{missing}");
    assert!(matches!(&missing, Error::Api { code, .. } if code == "SCIM_404"), "SCIM error shape: {missing}");

    let bad = client.list_service_principals(Some("displayName gt \"a\"")).await.expect_err("bad filter");
    assert!(bad.to_string().contains("invalidFilter"), "{bad}");
    assert!(!bad.is_retryable());
}

#[tokio::test]
async fn secrets_are_shown_once_limited_and_expire() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    let principal = client.create_service_principal(&sp("with-secrets", None)).await.expect("sp");
    let secret = client.create_secret(&principal.id, Duration::from_secs(3600)).await.expect("secret");
    let value = secret.expose_secret().to_owned();
    assert!(value.len() > 20);
    assert!(!format!("{secret:?}").contains(&value), "Debug redacts the value");
    let listed = client.list_secrets(&principal.id).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, secret.info.id);
    assert!(listed[0].expire_time.is_some());

    // The new secret authenticates (client credentials) and its token acts as the principal.
    let token = client.verify_client_credentials(&principal.application_id, &value).await.expect("works");
    assert!(!format!("{token:?}").contains(token.expose_access_token()), "Debug redacts tokens");
    let seen = emulator.introspect(token.expose_access_token()).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["subject"]["application_id"], json!(principal.application_id));

    for _ in 1..MAX_SECRETS {
        client.create_secret(&principal.id, Duration::from_secs(600)).await.expect("under the limit");
    }
    let sixth = client.create_secret(&principal.id, Duration::from_secs(600)).await.expect_err("limit");
    assert_eq!(sixth.status(), Some(400));
    assert!(sixth.to_string().contains("maximum of 5 OAuth secrets"), "{sixth}");
    assert!(!sixth.is_retryable(), "a limit needs action, not retries");

    let too_long =
        client.create_secret(&principal.id, Duration::from_secs(63_072_001)).await.expect_err("max lifetime");
    assert!(too_long.to_string().contains("730 days"), "{too_long}");

    // Deleting the secret invalidates what it issued.
    assert!(client.delete_secret(&principal.id, &secret.info.id).await.expect("delete"));
    assert!(!client.delete_secret(&principal.id, &secret.info.id).await.expect("gone is Ok(false)"));
    assert_eq!(emulator.introspect(token.expose_access_token()).await["active"], false);
    let refused =
        client.verify_client_credentials(&principal.application_id, &value).await.expect_err("deleted");
    assert!(refused.is_unauthenticated(), "{refused}");
    assert!(refused.to_string().contains("invalid_client"), "{refused}");

    // Expiry: the emulator's clock moves past the 600 s secrets; they stop being listed and counted.
    emulator.advance_clock(Duration::from_secs(601)).await;
    assert!(client.list_secrets(&principal.id).await.expect("list").is_empty());
    client.create_secret(&principal.id, Duration::from_secs(600)).await.expect("room again");
}

fn oidc(issuer: &str, subject: &str) -> FederationPolicy {
    FederationPolicy {
        description: Some("test".into()),
        oidc_policy: Some(OidcPolicy {
            issuer: Some(issuer.into()),
            audiences: vec!["my-audience".into()],
            subject: Some(subject.into()),
            ..OidcPolicy::default()
        }),
        ..FederationPolicy::default()
    }
}

#[tokio::test]
async fn federation_policies_crud_and_limits() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    let principal = client.create_service_principal(&sp("federated", None)).await.expect("sp");
    let created = client
        .create_federation_policy(
            &principal.id,
            Some("k8s-1"),
            &oidc("https://issuer.example.com", "system:serviceaccount:a:b"),
        )
        .await
        .expect("create");
    assert_eq!(created.policy_id.as_deref(), Some("k8s-1"));
    assert_eq!(created.service_principal_id.map(|id| id.to_string()), Some(principal.id.clone()));
    assert!(created.uid.is_some());
    let got = client.get_federation_policy(&principal.id, "k8s-1").await.expect("get");
    assert_eq!(got.oidc_policy.and_then(|o| o.subject).as_deref(), Some("system:serviceaccount:a:b"));

    let changed = FederationPolicy { description: Some("changed".into()), ..FederationPolicy::default() };
    client.update_federation_policy(&principal.id, "k8s-1", "description", &changed).await.expect("update");
    let got = client.get_federation_policy(&principal.id, "k8s-1").await.expect("get");
    assert_eq!(got.description.as_deref(), Some("changed"));
    assert!(got.oidc_policy.is_some(), "update_mask left oidc_policy alone");

    let dup = client
        .create_federation_policy(&principal.id, Some("k8s-1"), &oidc("https://i", "s"))
        .await
        .expect_err("dup");
    assert!(dup.is_conflict(), "{dup}");
    let bad_id = client
        .create_federation_policy(&principal.id, Some("Bad_Id"), &oidc("https://i", "s"))
        .await
        .expect_err("id");
    assert!(bad_id.to_string().contains("Must contain only 0-9, a-z, and hyphen"), "{bad_id}");
    let http_issuer = client
        .create_federation_policy(&principal.id, None, &oidc("http://issuer.example.com", "s"))
        .await
        .expect_err("https");
    assert!(http_issuer.to_string().contains("HTTPS"), "{http_issuer}");
    for i in 1..MAX_POLICIES {
        client
            .create_federation_policy(&principal.id, Some(&format!("p-{i}")), &oidc("https://i", "s"))
            .await
            .expect("under limit");
    }
    let over = client
        .create_federation_policy(&principal.id, Some("p-over"), &oidc("https://i", "s"))
        .await
        .expect_err("limit");
    assert!(over.to_string().contains("maximum of 20 federation policies"), "{over}");
    assert_eq!(client.list_federation_policies(&principal.id).await.expect("list").len(), MAX_POLICIES);
    assert!(client.delete_federation_policy(&principal.id, "k8s-1").await.expect("delete"));
    assert!(!client.delete_federation_policy(&principal.id, "k8s-1").await.expect("gone"));
}

#[tokio::test]
async fn workspace_assignments_converge() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    let principal = client.create_service_principal(&sp("assigned", None)).await.expect("sp");
    let put = client.put_workspace_assignment(WORKSPACE, &principal.id, &["USER"]).await.expect("put");
    assert_eq!(put.permissions, vec!["USER"]);
    assert_eq!(put.principal.principal_id.map(|id| id.to_string()), Some(principal.id.clone()));
    client
        .put_workspace_assignment(WORKSPACE, &principal.id, &["USER", "ADMIN"])
        .await
        .expect("both: ADMIN wins");
    let listed = client.list_workspace_assignments(WORKSPACE).await.expect("list");
    let mine: Vec<_> = listed
        .iter()
        .filter(|a| a.principal.principal_id.map(|i| i.to_string()) == Some(principal.id.clone()))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].permissions, vec!["ADMIN"]);
    assert!(client.delete_workspace_assignment(WORKSPACE, &principal.id).await.expect("delete"));
    assert!(!client.delete_workspace_assignment(WORKSPACE, &principal.id).await.expect("gone"));
    let unknown =
        client.put_workspace_assignment(7, &principal.id, &["USER"]).await.expect_err("unknown workspace");
    assert!(unknown.is_not_found(), "{unknown}");
    // Deleting the principal removes its assignments.
    client.put_workspace_assignment(42, &principal.id, &["USER"]).await.expect("put");
    client.delete_service_principal(&principal.id).await.expect("delete");
    assert!(client.list_workspace_assignments(42).await.expect("list").is_empty());
}

fn app(confidential: bool, scopes: &[&str]) -> NewCustomApp {
    NewCustomApp {
        name: "web".into(),
        redirect_urls: vec!["https://app.example.com/cb".into(), "http://localhost:8020".into()],
        confidential,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        user_authorized_scopes: vec![],
        token_access_policy: Some(TokenAccessPolicy {
            access_token_ttl_in_minutes: Some(15),
            refresh_token_ttl_in_minutes: Some(120),
            ..TokenAccessPolicy::default()
        }),
    }
}

#[tokio::test]
async fn custom_apps_crud_and_validation() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    let created =
        client.create_custom_app(&app(true, &["all-apis", "offline_access"])).await.expect("create");
    let secret = created.expose_client_secret().expect("confidential apps get a secret").to_owned();
    assert!(!format!("{created:?}").contains(&secret), "Debug redacts the client secret");
    let public = client.create_custom_app(&app(false, &["sql"])).await.expect("public");
    assert!(public.expose_client_secret().is_none());
    let got = client.get_custom_app(&created.integration_id).await.expect("get");
    assert!(got.confidential && got.client_id == created.client_id);
    assert_eq!(got.token_access_policy.and_then(|p| p.access_token_ttl_in_minutes), Some(15));
    let update = CustomAppUpdate {
        redirect_urls: Some(vec!["https://new.example.com/cb".into()]),
        ..CustomAppUpdate::default()
    };
    client.update_custom_app(&created.integration_id, &update).await.expect("update");
    assert_eq!(
        client.get_custom_app(&created.integration_id).await.expect("get").redirect_urls,
        vec!["https://new.example.com/cb"]
    );
    assert_eq!(client.list_custom_apps().await.expect("list").len(), 2);

    let mut bad = app(false, &["sql"]);
    bad.user_authorized_scopes = vec!["all-apis".into()];
    let err = client.create_custom_app(&bad).await.expect_err("subset");
    assert!(err.to_string().contains("user_authorized_scopes must be a subset of scopes"), "{err}");
    let mut bad = app(false, &["sql"]);
    bad.token_access_policy =
        Some(TokenAccessPolicy { access_token_ttl_in_minutes: Some(2), ..TokenAccessPolicy::default() });
    let err = client.create_custom_app(&bad).await.expect_err("ttl");
    assert!(err.to_string().contains("between 5 and 1440"), "{err}");

    assert!(client.delete_custom_app(&created.integration_id).await.expect("delete"));
    assert!(!client.delete_custom_app(&created.integration_id).await.expect("gone"));

    // Token pagination: more than one page of 100.
    for _ in 0..105 {
        client.create_custom_app(&app(false, &["sql"])).await.expect("bulk");
    }
    assert_eq!(client.list_custom_apps().await.expect("list").len(), 106);
    assert!(emulator.stats().await.count("apps.list") >= 3, "two pages this time, one before");
}

/// A JWT signing key for token exchange tests: ES256 with its JWKS.
struct Issuer {
    key: jsonwebtoken::EncodingKey,
    jwks: String,
    kid: String,
}

impl Issuer {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().expect("key");
        let raw = pair.public_key_raw();
        let (x, y) = (&raw[1..33], &raw[33..65]);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]})
        .to_string();
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("encoding key");
        Self { key, jwks, kid: kid.to_owned() }
    }

    fn token(&self, iss: &str, aud: &str, sub: &str, ttl: i64) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let now = jiff::Timestamp::now().as_second();
        let claims = json!({"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + ttl});
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

#[tokio::test]
async fn token_exchange_verifies_the_jwt() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    let issuer = Issuer::new("key-1");
    let iss = "https://kubernetes.default.svc.cluster.local";
    let subject = "system:serviceaccount:apps:reporting";
    let principal = client.create_service_principal(&sp("federated", None)).await.expect("sp");
    let mut policy = oidc(iss, subject);
    if let Some(o) = policy.oidc_policy.as_mut() {
        o.jwks_json = Some(issuer.jwks.clone());
    }
    client.create_federation_policy(&principal.id, Some("k8s"), &policy).await.expect("policy");

    let good = issuer.token(iss, "my-audience", subject, 600);
    let token = client.exchange_token(&good, Some(&principal.application_id)).await.expect("exchange");
    let seen = emulator.introspect(token.expose_access_token()).await;
    assert_eq!(seen["subject"]["application_id"], json!(principal.application_id));
    assert!(token.expires_in.unwrap_or_default() <= 600, "lifetime follows the federated token");

    let cases = [
        (
            "another ServiceAccount",
            issuer.token(iss, "my-audience", "system:serviceaccount:apps:other", 600),
            "subject",
        ),
        ("another audience", issuer.token(iss, "other-audience", subject, 600), "audience"),
        ("another issuer", issuer.token("https://evil.example.com", "my-audience", subject, 600), "issuer"),
        ("an expired token", issuer.token(iss, "my-audience", subject, -120), "expired"),
        ("another key", Issuer::new("key-1").token(iss, "my-audience", subject, 600), "signature"),
    ];
    for (what, jwt, reason) in cases {
        let err = client.exchange_token(&jwt, Some(&principal.application_id)).await.expect_err(what);
        assert!(matches!(&err, Error::OAuth { error, .. } if error == "invalid_grant"), "{what}: {err}");
        assert!(err.to_string().contains(reason), "{what}: {err}");
    }

    // The operator's own workload identity: the JWT comes from a file that is re-read on every refresh.
    let dir = tempfile::tempdir().expect("dir");
    let path: PathBuf = dir.path().join("token");
    std::fs::write(&path, issuer.token(iss, "my-audience", subject, 600)).expect("write");
    let federated = AccountClient::new(
        &emulator.url(),
        ACCOUNT_ID,
        Credentials::TokenExchange {
            token_path: path.clone(),
            client_id: Some(principal.application_id.clone()),
        },
        options(),
    )
    .expect("client");
    federated.authenticate().await.expect("exchange from the file");
    std::fs::write(&path, "not-a-jwt").expect("rewrite");
    federated.authenticate().await.expect("a cached token needs no new exchange");
    // Once the token is refused (expired on the emulator's clock), the file is read again.
    client
        .patch_service_principal(
            &principal.id,
            &[PatchOperation::replace("roles", json!([{"value": "account_admin"}]))],
        )
        .await
        .expect("make it an admin");
    federated.list_custom_apps().await.expect("the federated identity uses the account API");
    emulator.advance_clock(Duration::from_secs(700)).await;
    let reread = federated.list_custom_apps().await.expect_err("the file now holds garbage");
    assert!(reread.to_string().contains("not a JWT"), "{reread}");
    std::fs::write(&path, issuer.token(iss, "my-audience", subject, 1200)).expect("rotate");
    federated.list_custom_apps().await.expect("a rotated token file is picked up");
    let missing = AccountClient::new(
        &emulator.url(),
        ACCOUNT_ID,
        Credentials::TokenExchange { token_path: dir.path().join("absent"), client_id: None },
        options(),
    )
    .expect("client");
    let err = missing.authenticate().await.expect_err("no file");
    assert!(matches!(err, Error::TokenFile { .. }), "{err}");
}

fn pkce() -> (String, String) {
    let verifier = format!("v{}", "x".repeat(50));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[tokio::test]
async fn authorization_code_with_pkce_and_refresh() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    let created = client.create_custom_app(&app(true, &["all-apis", "offline_access"])).await.expect("app");
    let secret = created.expose_client_secret().expect("secret").to_owned();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let (verifier, challenge) = pkce();
    let authorize = |redirect: &str, scope: &str| {
        http.get(client.authorization_endpoint()).query(&[
            ("response_type", "code"),
            ("client_id", created.client_id.as_str()),
            ("redirect_uri", redirect),
            ("scope", scope),
            ("state", "xyz"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
    };
    let response =
        authorize("https://app.example.com/cb", "all-apis offline_access").send().await.expect("authorize");
    assert!(response.status().is_redirection());
    let location = url::Url::parse(response.headers()["location"].to_str().expect("location")).expect("url");
    assert!(location.as_str().starts_with("https://app.example.com/cb?"));
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "xyz");
    let code = query["code"].clone();

    let refused = authorize("https://evil.example.com/cb", "all-apis").send().await.expect("authorize");
    assert_eq!(refused.status(), 400, "an unregistered redirect URL is refused, not redirected to");

    let exchange = |form: Vec<(&str, String)>| http.post(client.token_endpoint()).form(&form).send();
    let wrong_verifier = exchange(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("code_verifier", "wrong".into()),
        ("redirect_uri", "https://app.example.com/cb".into()),
        ("client_id", created.client_id.clone()),
        ("client_secret", secret.clone()),
    ])
    .await
    .expect("token");
    assert_eq!(wrong_verifier.status(), 400);

    // A fresh code (the failed attempt consumed the first).
    let response =
        authorize("https://app.example.com/cb", "all-apis offline_access").send().await.expect("authorize");
    let location = url::Url::parse(response.headers()["location"].to_str().expect("location")).expect("url");
    let code = location.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).expect("code");
    let tokens: Value = exchange(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code),
        ("code_verifier", verifier.clone()),
        ("redirect_uri", "https://app.example.com/cb".into()),
        ("client_id", created.client_id.clone()),
        ("client_secret", secret.clone()),
    ])
    .await
    .expect("token")
    .json()
    .await
    .expect("json");
    assert_eq!(tokens["expires_in"], 15 * 60, "access TTL from the token access policy");
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("offline_access grants a refresh token").to_owned();
    let refreshed: Value = exchange(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
        ("client_id", created.client_id.clone()),
        ("client_secret", secret.clone()),
    ])
    .await
    .expect("refresh")
    .json()
    .await
    .expect("json");
    assert!(refreshed["access_token"].as_str().is_some_and(|t| t != access));

    // Without offline_access there is no refresh token.
    let (verifier2, challenge2) = pkce();
    let response = http
        .get(client.authorization_endpoint())
        .query(&[
            ("response_type", "code"),
            ("client_id", &created.client_id),
            ("redirect_uri", "http://localhost:8020"),
            ("scope", "all-apis"),
            ("code_challenge", &challenge2),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("authorize");
    let location = url::Url::parse(response.headers()["location"].to_str().expect("location")).expect("url");
    let code = location.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).expect("code");
    let online: Value = exchange(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code),
        ("code_verifier", verifier2),
        ("redirect_uri", "http://localhost:8020".into()),
        ("client_id", created.client_id.clone()),
        ("client_secret", secret.clone()),
    ])
    .await
    .expect("token")
    .json()
    .await
    .expect("json");
    assert!(online.get("refresh_token").is_none());

    // Deleting the app connection invalidates what it issued.
    assert_eq!(emulator.introspect(&access).await["active"], true);
    client.delete_custom_app(&created.integration_id).await.expect("delete");
    assert_eq!(emulator.introspect(&access).await["active"], false);
    let dead = exchange(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh),
        ("client_id", created.client_id.clone()),
        ("client_secret", secret),
    ])
    .await
    .expect("refresh");
    assert!(dead.status().is_client_error());
}

#[tokio::test]
async fn tokens_are_cached_and_a_revoked_one_is_replaced() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    for _ in 0..10 {
        client.list_custom_apps().await.expect("list");
    }
    assert_eq!(emulator.stats().await.count("oidc.token"), 1, "one token serves many calls");
    // The token expires on the emulator's clock: the client is refused once, fetches a new one and succeeds.
    emulator.advance_clock(Duration::from_secs(3700)).await;
    client.list_custom_apps().await.expect("after refresh");
    let stats = emulator.stats().await;
    assert_eq!(stats.count("oidc.token"), 2);
    assert_eq!(stats.operations["apps.list"].statuses.get(&401), Some(&1));
}

#[tokio::test]
async fn throttling_and_unavailability_are_retried_honouring_retry_after() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    client.authenticate().await.expect("token");
    emulator.add_fault(FaultRule::status("apps.list", 429).retry_after("1").times(1)).await;
    let started = Instant::now();
    client.list_custom_apps().await.expect("recovers");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited for Retry-After: {:?}",
        started.elapsed()
    );
    emulator.clear_faults().await;

    let http_date = {
        let when = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
        jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&when).expect("date")
    };
    emulator.add_fault(FaultRule::status("scim.sp.list", 503).retry_after(&http_date).times(1)).await;
    client.list_service_principals(None).await.expect("recovers from 503 with an HTTP-date Retry-After");
    emulator.clear_faults().await;

    // An empty-bodied 429 is still understood.
    emulator.add_fault(FaultRule { empty_body: true, ..FaultRule::status("apps.list", 429).times(2) }).await;
    client.list_custom_apps().await.expect("recovers");
    emulator.clear_faults().await;

    // A create is retried on 429 (not processed) ...
    emulator.add_fault(FaultRule::status("scim.sp.create", 429).retry_after("0").times(1)).await;
    client.create_service_principal(&sp("after-429", None)).await.expect("retried");
    emulator.clear_faults().await;
    // ... but not on 500, which may have been applied: that is reported with the server's words.
    emulator.add_fault(FaultRule::status("scim.sp.create", 500).times(1)).await;
    let err = client.create_service_principal(&sp("after-500", None)).await.expect_err("not retried");
    assert_eq!(emulator.stats().await.operations["scim.sp.create"].statuses.get(&500), Some(&1));
    assert!(err.is_retryable() && err.to_string().contains("Injected fault"), "{err}");
    emulator.clear_faults().await;

    // Reads are retried on 500/502/504.
    emulator.add_fault(FaultRule::status("apps.list", 502).times(2)).await;
    client.list_custom_apps().await.expect("recovers");
    emulator.clear_faults().await;
}

#[tokio::test]
async fn retries_are_bounded_and_report_the_last_server_error() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    client.authenticate().await.expect("token");
    emulator.reset_stats().await;
    emulator.add_fault(FaultRule::status("apps.list", 503).retry_after("0")).await;
    let err = client.list_custom_apps().await.expect_err("gives up");
    assert_eq!(emulator.stats().await.count("apps.list"), 5, "max_attempts, then stop");
    assert_eq!(err.status(), Some(503));
    assert!(err.to_string().contains("TEMPORARILY_UNAVAILABLE"), "{err}");
    // Errors a person must fix are not retried at all.
    emulator.clear_faults().await;
    emulator.reset_stats().await;
    let err = client.get_custom_app("no-such-app").await.expect_err("404");
    assert!(err.is_not_found() && !err.is_retryable());
    assert_eq!(emulator.stats().await.count("apps.get"), 1);
}

#[tokio::test]
async fn a_dropped_response_is_a_clear_transport_error_and_the_write_is_findable() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    emulator.add_fault(FaultRule::drop_response("scim.sp.create").times(1)).await;
    let err = client.create_service_principal(&sp("lost", Some("uid-lost"))).await.expect_err("dropped");
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(
        err.to_string().contains("scim.sp.create") && err.to_string().contains("connection broke"),
        "{err}"
    );
    // The write happened: the tag finds it, so a careful caller adopts instead of creating a duplicate.
    let found = client.find_service_principals_by_external_id("uid-lost").await.expect("find");
    assert_eq!(found.len(), 1);

    // Idempotent writes are retried after a dropped response.
    let principal = &found[0];
    emulator.add_fault(FaultRule::drop_response("assignments.put").times(1)).await;
    client.put_workspace_assignment(WORKSPACE, &principal.id, &["USER"]).await.expect("retried");
    assert_eq!(emulator.stats().await.count("assignments.put"), 2);
}

#[tokio::test]
async fn timeouts_are_reported_as_such() {
    let emulator = emulator().await;
    let options = ClientOptions { request_timeout: Duration::from_millis(300), max_attempts: 2, ..options() };
    let credentials =
        Credentials::ClientCredentials { client_id: ADMIN_ID.into(), client_secret: ADMIN_SECRET.into() };
    let client = AccountClient::new(&emulator.url(), ACCOUNT_ID, credentials, options).expect("client");
    client.authenticate().await.expect("token");
    emulator
        .add_fault(FaultRule { latency_ms: 2_000, status: None, ..FaultRule::status("apps.list", 0) })
        .await;
    let err = client.list_custom_apps().await.expect_err("timeout");
    assert!(matches!(err, Error::Transport { timeout: true, .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn the_budget_keeps_under_a_server_rate_limit() {
    let emulator = emulator().await;
    let credentials =
        Credentials::ClientCredentials { client_id: ADMIN_ID.into(), client_secret: ADMIN_SECRET.into() };
    let options =
        ClientOptions { budget: Budget::new(Limits::uniform(20.0, 5, 4)), ..ClientOptions::default() };
    let client = AccountClient::new(&emulator.url(), ACCOUNT_ID, credentials, options).expect("client");
    client.authenticate().await.expect("token");
    emulator.set_rate_limit(Some(RateLimit::all(25.0, 5.0))).await;
    emulator.reset_stats().await;
    let calls = (0..40).map(|_| client.list_custom_apps());
    for result in futures::future::join_all(calls).await {
        result.expect("every call succeeds");
    }
    let stats = emulator.stats().await;
    assert_eq!(stats.throttled, 0, "the client's own budget kept it under the server's limit: {stats:?}");

    // A client with a larger budget than the server allows is throttled, backs off, and still completes.
    let credentials =
        Credentials::ClientCredentials { client_id: ADMIN_ID.into(), client_secret: ADMIN_SECRET.into() };
    let greedy = AccountClient::new(
        &emulator.url(),
        ACCOUNT_ID,
        credentials,
        ClientOptions { budget: Budget::new(Limits::uniform(500.0, 50, 8)), ..ClientOptions::default() },
    )
    .expect("client");
    greedy.authenticate().await.expect("token");
    emulator.reset_stats().await;
    for result in futures::future::join_all((0..30).map(|_| greedy.list_custom_apps())).await {
        result.expect("completes despite 429s");
    }
    let stats = emulator.stats().await;
    assert!(
        stats.throttled > 0 && stats.count("apps.list") < 90,
        "backed off without a retry storm: {stats:?}"
    );
}

#[tokio::test]
async fn eventual_consistency_and_admin_only_access() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    emulator.set_consistency_delay(Duration::from_millis(500)).await;
    let created = client.create_service_principal(&sp("slow", None)).await.expect("create");
    let early = client.get_service_principal(&created.id).await.expect_err("not visible yet");
    assert!(early.is_not_found());
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.get_service_principal(&created.id).await.expect("visible later");
    emulator.set_consistency_delay(Duration::ZERO).await;

    // A principal that is not an account admin authenticates but may not use the account APIs.
    let secret = client.create_secret(&created.id, Duration::from_secs(600)).await.expect("secret");
    let credentials = Credentials::ClientCredentials {
        client_id: created.application_id.clone(),
        client_secret: secret.expose_secret().to_owned(),
    };
    let not_admin = AccountClient::new(&emulator.url(), ACCOUNT_ID, credentials, options()).expect("client");
    let err = not_admin.list_custom_apps().await.expect_err("forbidden");
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("without account admin status"), "{err}");

    // Another account id is not served; bad admin credentials are refused at the token endpoint.
    let credentials =
        Credentials::ClientCredentials { client_id: ADMIN_ID.into(), client_secret: ADMIN_SECRET.into() };
    let other =
        AccountClient::new(&emulator.url(), "11111111-2222-4333-8444-555555555555", credentials, options())
            .expect("client");
    assert!(other.authenticate().await.expect_err("unknown account").is_not_found());
    let credentials =
        Credentials::ClientCredentials { client_id: ADMIN_ID.into(), client_secret: "wrong".into() };
    let wrong = AccountClient::new(&emulator.url(), ACCOUNT_ID, credentials, options()).expect("client");
    let err = wrong.list_custom_apps().await.expect_err("refused");
    assert!(err.is_unauthenticated() && !err.to_string().contains("wrong"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_answers_concurrent_load_without_errors() {
    let emulator = emulator().await;
    let client = admin(&emulator);
    for i in 0..20 {
        client.create_service_principal(&sp(&format!("load-{i}"), None)).await.expect("seed");
    }
    let token = client.verify_client_credentials(ADMIN_ID, ADMIN_SECRET).await.expect("token");
    let token = token.expose_access_token().to_owned();
    let http = reqwest::Client::new();
    let base = format!("{}/api/2.0/accounts/{ACCOUNT_ID}", emulator.url());
    emulator.reset_stats().await;
    let workers = (0..32).map(|worker| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tokio::spawn(async move {
            let mut failures = 0;
            for i in 0..50 {
                let path = match (worker + i) % 3 {
                    0 => "scim/v2/ServicePrincipals?startIndex=1&count=100",
                    1 => "oauth2/custom-app-integrations",
                    _ => "workspaces/42/permissionassignments",
                };
                let ok = http
                    .get(format!("{base}/{path}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                failures += usize::from(!ok);
            }
            failures
        })
    });
    let failures: usize =
        futures::future::join_all(workers).await.into_iter().map(|r| r.expect("worker")).sum();
    assert_eq!(failures, 0);
    let stats = emulator.stats().await;
    assert_eq!(stats.requests, 32 * 50);
    assert_eq!(stats.with_status(200), 32 * 50);
}

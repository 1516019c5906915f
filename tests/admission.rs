//! Cluster tests: the real kube-apiserver accepts every example and rejects bad input with the message a user
//! sees, including immutable fields on real updates.

mod support;

use std::path::Path;

use databricks_oauth_operator::crd::{
    DatabricksAccount, DatabricksAppConnection, ServicePrincipal, TrustPolicy,
};
use kube::{
    Api, Resource,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::TestEnv;

const ACCOUNT_ID: &str = "0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a";
const APP_ID: &str = "7f4e2c1a-3b5d-4e6f-8a9b-0c1d2e3f4a5b";

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "DatabricksAccount" => ApiResource::erase::<DatabricksAccount>(&()),
        "ServicePrincipal" => ApiResource::erase::<ServicePrincipal>(&()),
        "DatabricksAppConnection" => ApiResource::erase::<DatabricksAppConnection>(&()),
        "TrustPolicy" => ApiResource::erase::<TrustPolicy>(&()),
        other => panic!("unknown kind {other}"),
    }
}

impl TestEnv {
    fn dynamic_api(&self, kind: &str) -> Api<DynamicObject> {
        let resource = api_resource(kind);
        if kind == "DatabricksAccount" {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
        }
    }

    /// Creates an object from JSON (namespaced kinds land in the test namespace).
    async fn create(&self, manifest: Value) -> Result<DynamicObject, kube::Error> {
        let mut object: DynamicObject = serde_json::from_value(manifest).expect("manifest");
        let kind = object.types.as_ref().expect("types").kind.clone();
        if kind != "DatabricksAccount" {
            object.metadata.namespace = Some(self.namespace.clone());
        }
        self.dynamic_api(&kind).create(&PostParams::default(), &object).await
    }

    async fn merge_patch(&self, kind: &str, name: &str, patch: Value) -> Result<DynamicObject, kube::Error> {
        self.dynamic_api(kind).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await
    }

    /// A cluster-scoped name unique to this test.
    fn cluster_name(&self, name: &str) -> String {
        format!("{}-{name}", self.namespace)
    }
}

fn account(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "oauth.databricks-operator.io/v1alpha1", "kind": "DatabricksAccount",
           "metadata": {"name": name}, "spec": spec})
}

fn namespaced(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "oauth.databricks-operator.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn m2m() -> Value {
    json!({"oauthM2M": {"secretRef": {"namespace": "ops", "name": "admin"}}})
}

/// Asserts that the apiserver refused the request as invalid with a message containing every `expected` part.
fn rejection_problem(result: Result<DynamicObject, kube::Error>, expected: &[&str]) -> Option<String> {
    match result {
        Ok(_) => Some("was accepted".to_owned()),
        Err(kube::Error::Api(status)) => {
            if status.code != 422 {
                return Some(format!("answered {} {}: {}", status.code, status.reason, status.message));
            }
            let missing: Vec<&&str> =
                expected.iter().filter(|part| !status.message.contains(**part)).collect();
            (!missing.is_empty()).then(|| format!("message {:?} lacks {missing:?}", status.message))
        }
        Err(other) => Some(format!("failed without an API answer: {other}")),
    }
}

#[tokio::test]
async fn every_example_is_accepted() {
    let env = TestEnv::new().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("examples").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 4, "examples exist");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let mut manifest: Value = serde_yaml::from_str(&text).expect("yaml");
        if manifest["kind"] == "DatabricksAccount" {
            let name = manifest["metadata"]["name"].as_str().expect("name").to_owned();
            manifest["metadata"]["name"] = env.cluster_name(&name).into();
        }
        let created =
            env.create(manifest.clone()).await.unwrap_or_else(|e| panic!("{} rejected: {e}", path.display()));
        // What was stored is what was written, plus defaults: nothing the user wrote was dropped.
        let stored = serde_json::to_value(&created.data["spec"]).expect("spec");
        assert_json_superset(&stored, &manifest["spec"], &path.display().to_string());
    }
}

fn assert_json_superset(stored: &Value, written: &Value, context: &str) {
    match (stored, written) {
        (Value::Object(stored), Value::Object(written)) => {
            for (key, value) in written {
                let found = stored.get(key).unwrap_or_else(|| panic!("{context}: field {key} was pruned"));
                assert_json_superset(found, value, &format!("{context}.{key}"));
            }
        }
        // List items get defaults too (a delegation's workspace permission): compare item by item.
        (Value::Array(stored), Value::Array(written)) => {
            assert_eq!(stored.len(), written.len(), "{context}: items were dropped or added");
            for (i, (found, value)) in stored.iter().zip(written).enumerate() {
                assert_json_superset(found, value, &format!("{context}[{i}]"));
            }
        }
        _ => assert_eq!(stored, written, "{context}"),
    }
}

#[tokio::test]
async fn defaults_are_applied() {
    let env = TestEnv::new().await;
    let sp =
        env.create(namespaced("ServicePrincipal", "minimal", json!({"credentials": {}}))).await.expect("sp");
    assert_eq!(sp.data["spec"]["accountRef"], json!({"name": "default"}));
    assert_eq!(sp.data["spec"]["active"], json!(true));
    assert_eq!(sp.data["spec"]["credentials"]["type"], json!("OAuthSecret"));
    assert_eq!(sp.data["spec"]["credentials"]["lifetime"], json!("2160h"));
    assert!(
        sp.data["spec"].get("deletionPolicy").is_none(),
        "deletionPolicy depends on adopt, so it is not defaulted"
    );

    let app = env
        .create(namespaced(
            "DatabricksAppConnection",
            "minimal",
            json!({"redirectUrls": ["https://app.example.com/cb"]}),
        ))
        .await
        .expect("app");
    assert_eq!(app.data["spec"]["scopes"], json!(["all-apis"]));
    assert_eq!(app.data["spec"]["confidential"], json!(false));
    assert_eq!(app.data["spec"]["deletionPolicy"], json!("Delete"));

    let trust = env
        .create(namespaced(
            "TrustPolicy",
            "minimal",
            json!({"servicePrincipalRef": {"name": "minimal"}, "kubernetes": {"serviceAccountName": "app"}}),
        ))
        .await
        .expect("trust");
    assert_eq!(trust.data["spec"]["kubernetes"]["jwks"], json!("Inline"));
    assert_eq!(trust.data["spec"]["verify"], json!(false));

    let name = env.cluster_name("minimal");
    let acct =
        env.create(account(&name, json!({"accountId": ACCOUNT_ID, "auth": m2m()}))).await.expect("account");
    assert_eq!(acct.data["spec"]["cloud"], json!("AWS"));
    assert_eq!(acct.data["spec"]["auth"]["oauthM2M"]["clientIdKey"], json!("DATABRICKS_CLIENT_ID"));
    assert_eq!(acct.data["spec"]["auth"]["oauthM2M"]["clientSecretKey"], json!("DATABRICKS_CLIENT_SECRET"));
    assert_eq!(
        acct.data["spec"]["rateLimit"],
        json!({"reads": {"requestsPerSecond": 20, "burst": 10}, "writes": {"requestsPerSecond": 5, "burst": 2},
               "patches": {"requestsPerSecond": 2, "burst": 1}, "maxConcurrency": 4, "maxQueuedPerNamespace": 8})
    );
}

/// One invalid manifest per rule, each with the words the user must see.
#[tokio::test]
async fn invalid_manifests_are_rejected_with_clear_messages() {
    let env = TestEnv::new().await;
    let sp = |spec: Value| namespaced("ServicePrincipal", "bad-sp", spec);
    let app = |spec: Value| namespaced("DatabricksAppConnection", "bad-app", spec);
    let trust = |spec: Value| namespaced("TrustPolicy", "bad-trust", spec);
    let acct = |spec: Value| account(&env.cluster_name("bad"), spec);
    let k8s_source = json!({"serviceAccountName": "app"});
    let oidc_source = json!({"issuer": "https://issuer.example.com", "subject": "ci"});
    let sp_ref = json!({"name": "owner"});

    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        // DatabricksAccount
        (
            "account id is not a UUID",
            acct(json!({"accountId": "not-a-uuid", "auth": m2m()})),
            vec!["spec.accountId", "should match"],
        ),
        ("account id missing", acct(json!({"auth": m2m()})), vec!["spec.accountId: Required value"]),
        (
            "two auth methods",
            acct(
                json!({"accountId": ACCOUNT_ID, "auth": {"oauthM2M": m2m()["oauthM2M"], "workloadIdentity": {}}}),
            ),
            vec!["set exactly one of auth.oauthM2M and auth.workloadIdentity"],
        ),
        (
            "no auth method",
            acct(json!({"accountId": ACCOUNT_ID, "auth": {}})),
            vec!["set exactly one of auth.oauthM2M and auth.workloadIdentity"],
        ),
        (
            "plain http to a remote host",
            acct(json!({"accountId": ACCOUNT_ID, "host": "http://accounts.example.com", "auth": m2m()})),
            vec!["host must be an https:// URL"],
        ),
        (
            "m2m secret without namespace",
            acct(json!({"accountId": ACCOUNT_ID, "auth": {"oauthM2M": {"secretRef": {"name": "admin"}}}})),
            vec!["spec.auth.oauthM2M.secretRef.namespace: Required value"],
        ),
        (
            "burst below rate",
            acct(
                json!({"accountId": ACCOUNT_ID, "auth": m2m(), "rateLimit": {"requestsPerSecond": 50, "burst": 5}}),
            ),
            vec!["rateLimit.burst must be at least rateLimit.requestsPerSecond"],
        ),
        (
            "total burst without a total rate",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(), "rateLimit": {"burst": 5}})),
            vec!["rateLimit.burst caps the total and needs rateLimit.requestsPerSecond"],
        ),
        (
            "a class without its rate",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(), "rateLimit": {"writes": {"burst": 5}}})),
            vec!["spec.rateLimit.writes.requestsPerSecond: Required value"],
        ),
        (
            "zero concurrency",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(), "rateLimit": {"maxConcurrency": 0}})),
            vec!["spec.rateLimit.maxConcurrency", "greater than or equal to 1"],
        ),
        (
            "empty allowedNamespaces",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(), "allowedNamespaces": {}})),
            vec!["needs names, a selector, or both"],
        ),
        (
            "singleTenant with delegations",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(), "singleTenant": true,
                "delegations": [{"namespaces": {"names": ["a"]}, "appConnections": true}]})),
            vec!["singleTenant trusts every allowed namespace with everything"],
        ),
        (
            "delegation without namespaces",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(), "delegations": [{"namespaces": {}}]})),
            vec!["needs names, a selector, or both"],
        ),
        (
            "adoption grant that is not an application id",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(),
                "delegations": [{"namespaces": {"names": ["a"]}, "adopt": [{"applicationId": "admin"}]}]})),
            vec!["spec.delegations[0].adopt[0].applicationId"],
        ),
        (
            "workspace grant with an unknown permission",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(),
                "delegations": [{"namespaces": {"names": ["a"]}, "workspaces": [{"workspaceId": 1, "permission": "OWNER"}]}]})),
            vec!["spec.delegations[0].workspaces[0].permission", "Unsupported value: \"OWNER\""],
        ),
        (
            "token path escaping its directory",
            acct(
                json!({"accountId": ACCOUNT_ID, "auth": {"workloadIdentity": {"tokenPath": "/var/run/secrets/databricks/../kubernetes.io/serviceaccount/token"}}}),
            ),
            vec!["tokenPath must be an absolute path without '..'"],
        ),
        (
            "unknown cloud",
            acct(json!({"accountId": ACCOUNT_ID, "cloud": "Oracle", "auth": m2m()})),
            vec!["spec.cloud", "Unsupported value: \"Oracle\""],
        ),
        // ServicePrincipal
        (
            "lifetime below 5m",
            sp(json!({"credentials": {"lifetime": "1m"}})),
            vec!["credentials.lifetime must be between 5m and 17520h"],
        ),
        (
            "lifetime above 730 days",
            sp(json!({"credentials": {"lifetime": "17521h"}})),
            vec!["credentials.lifetime must be between 5m and 17520h"],
        ),
        (
            "lifetime in days",
            sp(json!({"credentials": {"lifetime": "90d"}})),
            vec!["spec.credentials.lifetime", "should match"],
        ),
        (
            "renewBefore not shorter than lifetime",
            sp(json!({"credentials": {"lifetime": "24h", "renewBefore": "24h"}})),
            vec!["credentials.renewBefore must be shorter than credentials.lifetime"],
        ),
        (
            "renewBefore too short",
            sp(json!({"credentials": {"lifetime": "24h", "renewBefore": "30s"}})),
            vec!["credentials.renewBefore must be at least 1m"],
        ),
        (
            "duplicate workspace",
            sp(json!({"workspaceAssignments": [
                {"workspaceId": 1, "permissions": ["USER"]}, {"workspaceId": 1, "permissions": ["ADMIN"]}]})),
            vec!["spec.workspaceAssignments[1]", "Duplicate value"],
        ),
        (
            "unknown permission",
            sp(json!({"workspaceAssignments": [{"workspaceId": 1, "permissions": ["OWNER"]}]})),
            vec!["Unsupported value: \"OWNER\""],
        ),
        (
            "no permissions",
            sp(json!({"workspaceAssignments": [{"workspaceId": 1, "permissions": []}]})),
            vec!["spec.workspaceAssignments[0].permissions", "at least 1 items"],
        ),
        (
            "workspace id zero",
            sp(json!({"workspaceAssignments": [{"workspaceId": 0, "permissions": ["USER"]}]})),
            vec!["spec.workspaceAssignments[0].workspaceId", "greater than or equal to 1"],
        ),
        (
            "unknown deletion policy",
            sp(json!({"deletionPolicy": "Destroy"})),
            vec!["spec.deletionPolicy", "Unsupported value: \"Destroy\""],
        ),
        (
            "adopt without a UUID",
            sp(json!({"adopt": {"applicationId": "sp-123"}})),
            vec!["spec.adopt.applicationId", "should match"],
        ),
        (
            "secret name not a DNS name",
            sp(json!({"credentials": {"secretName": "Bad_Name"}})),
            vec!["spec.credentials.secretName", "should match"],
        ),
        (
            "secret host over plain http",
            sp(json!({"credentials": {"host": "http://workspace.example.com"}})),
            vec!["credentials.host must be an https:// URL"],
        ),
        // DatabricksAppConnection
        ("no redirect URLs", app(json!({})), vec!["spec.redirectUrls: Required value"]),
        (
            "empty redirect URLs",
            app(json!({"redirectUrls": []})),
            vec!["spec.redirectUrls", "at least 1 items"],
        ),
        (
            "plain http redirect",
            app(json!({"redirectUrls": ["http://app.example.com/cb"]})),
            vec![
                "redirectUrls must be https:// URLs, or http://localhost / http://127.0.0.1 for desktop apps",
            ],
        ),
        (
            "user-authorized scope not in scopes",
            app(json!({"redirectUrls": ["https://a.example.com"], "scopes": ["sql"],
                "userAuthorizedScopes": ["all-apis"]})),
            vec!["userAuthorizedScopes must be a subset of scopes"],
        ),
        (
            "access TTL below 5",
            app(
                json!({"redirectUrls": ["https://a.example.com"], "tokenAccessPolicy": {"accessTokenTtlMinutes": 2}}),
            ),
            vec!["spec.tokenAccessPolicy.accessTokenTtlMinutes", "greater than or equal to 5"],
        ),
        (
            "access TTL above a day",
            app(
                json!({"redirectUrls": ["https://a.example.com"], "tokenAccessPolicy": {"accessTokenTtlMinutes": 1441}}),
            ),
            vec!["spec.tokenAccessPolicy.accessTokenTtlMinutes", "less than or equal to 1440"],
        ),
        (
            "refresh TTL above 90 days",
            app(
                json!({"redirectUrls": ["https://a.example.com"], "tokenAccessPolicy": {"refreshTokenTtlMinutes": 129601}}),
            ),
            vec!["spec.tokenAccessPolicy.refreshTokenTtlMinutes", "less than or equal to 129600"],
        ),
        (
            "refresh shorter than access",
            app(json!({"redirectUrls": ["https://a.example.com"],
                "tokenAccessPolicy": {"accessTokenTtlMinutes": 60, "refreshTokenTtlMinutes": 30}})),
            vec!["refreshTokenTtlMinutes must not be shorter than accessTokenTtlMinutes"],
        ),
        (
            "session cap without single-use tokens",
            app(json!({"redirectUrls": ["https://a.example.com"],
                "tokenAccessPolicy": {"absoluteSessionLifetimeMinutes": 600}})),
            vec!["absoluteSessionLifetimeMinutes requires enableSingleUseRefreshTokens: true"],
        ),
        // TrustPolicy
        (
            "two sources",
            trust(json!({"servicePrincipalRef": sp_ref, "oidc": oidc_source, "kubernetes": k8s_source})),
            vec!["set exactly one source: oidc or kubernetes"],
        ),
        (
            "no source",
            trust(json!({"servicePrincipalRef": sp_ref})),
            vec!["set exactly one source: oidc or kubernetes"],
        ),
        (
            "no principal",
            trust(json!({"kubernetes": k8s_source})),
            vec!["spec.servicePrincipalRef: Required value"],
        ),
        (
            "policy id with capitals",
            trust(json!({"servicePrincipalRef": sp_ref, "kubernetes": k8s_source, "policyId": "Bad_Policy"})),
            vec!["spec.policyId", "should match"],
        ),
        (
            "policy id of one character",
            trust(json!({"servicePrincipalRef": sp_ref, "kubernetes": k8s_source, "policyId": "a"})),
            vec!["spec.policyId", "should match"],
        ),
        (
            "policy id over 63 characters",
            trust(
                json!({"servicePrincipalRef": sp_ref, "kubernetes": k8s_source, "policyId": "a".repeat(64)}),
            ),
            vec!["spec.policyId", "should match"],
        ),
        (
            "issuer over plain http",
            trust(
                json!({"servicePrincipalRef": sp_ref, "oidc": {"issuer": "http://issuer.example.com", "subject": "ci"}}),
            ),
            vec!["oidc.issuer must be an https:// URL"],
        ),
        (
            "oidc without subject",
            trust(json!({"servicePrincipalRef": sp_ref, "oidc": {"issuer": "https://issuer.example.com"}})),
            vec!["spec.oidc.subject: Required value"],
        ),
        (
            "both jwks forms",
            trust(
                json!({"servicePrincipalRef": sp_ref, "oidc": {"issuer": "https://i.example.com", "subject": "ci",
                "jwksUri": "https://i.example.com/keys", "jwksJson": "{\"keys\":[]}"}}),
            ),
            vec!["set at most one of jwksUri and jwksJson"],
        ),
        (
            "unknown jwks mode",
            trust(
                json!({"servicePrincipalRef": sp_ref, "kubernetes": {"serviceAccountName": "app", "jwks": "Magic"}}),
            ),
            vec!["spec.kubernetes.jwks", "Unsupported value: \"Magic\""],
        ),
        // Templates the apiserver would refuse on the Secret are refused on the object, before any mint.
        (
            "a template label key that is no qualified name",
            sp(json!({"credentials": {"template": {"labels": {"not a valid key!": "x"}}}})),
            vec!["template label keys must be qualified names"],
        ),
        (
            "a template label key with too long a name",
            sp(
                json!({"credentials": {"template": {"labels": {"example.com/".to_owned() + &"k".repeat(64): "x"}}}}),
            ),
            vec!["template label keys must be qualified names"],
        ),
        (
            "a template label value with spaces",
            sp(json!({"credentials": {"template": {"labels": {"team": "data team"}}}})),
            vec!["template label values must be empty or at most 63 characters"],
        ),
        (
            "a template annotation key that is no qualified name",
            app(
                json!({"redirectUrls": ["https://a.example.com/cb"], "template": {"annotations": {"/x": "y"}}}),
            ),
            vec!["template annotation keys must be qualified names"],
        ),
        (
            "a template annotation too large",
            sp(json!({"credentials": {"template": {"annotations": {"example.com/big": "x".repeat(5000)}}}})),
            vec!["spec.credentials.template.annotations.example.com/big", "4096"],
        ),
        (
            "a revocation grace that is no duration",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(), "revocation": {"gracePeriod": "soon"}})),
            vec!["spec.revocation.gracePeriod", "should match"],
        ),
        (
            "a negative principal cap",
            acct(json!({"accountId": ACCOUNT_ID, "auth": m2m(), "delegations": [
                {"namespaces": {"names": ["a"]}, "limits": {"maxServicePrincipals": -1}}]})),
            vec!["maxServicePrincipals", "greater than or equal to 0"],
        ),
    ];
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (name, manifest, expected) in cases {
        if let Some(problem) = rejection_problem(env.create(manifest).await, &expected) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) not rejected as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn immutable_fields_are_refused_on_update() {
    let env = TestEnv::new().await;
    let acct_name = env.cluster_name("immutable");
    env.create(account(&acct_name, json!({"accountId": ACCOUNT_ID, "auth": m2m()}))).await.expect("account");
    env.create(namespaced("ServicePrincipal", "created", json!({"displayName": "one"}))).await.expect("sp");
    env.create(namespaced("ServicePrincipal", "adopted", json!({"adopt": {"applicationId": APP_ID}})))
        .await
        .expect("sp");
    env.create(namespaced(
        "DatabricksAppConnection",
        "named",
        json!({"displayName": "n", "redirectUrls": ["https://a.example.com"]}),
    ))
    .await
    .expect("app");
    env.create(namespaced(
        "DatabricksAppConnection",
        "unnamed",
        json!({"redirectUrls": ["https://a.example.com"]}),
    ))
    .await
    .expect("app");
    env.create(namespaced(
        "TrustPolicy",
        "trust",
        json!({"servicePrincipalRef": {"name": "created"}, "policyId": "p-1",
        "kubernetes": {"serviceAccountName": "app"}}),
    ))
    .await
    .expect("trust");

    let other_uuid = "11111111-2222-4333-8444-555555555555";
    let cases: Vec<(&str, &str, String, Value, &str)> = vec![
        (
            "account id",
            "DatabricksAccount",
            acct_name.clone(),
            json!({"spec": {"accountId": other_uuid}}),
            "accountId is immutable",
        ),
        (
            "principal account",
            "ServicePrincipal",
            "created".into(),
            json!({"spec": {"accountRef": {"name": "other"}}}),
            "accountRef is immutable",
        ),
        (
            "adopt added",
            "ServicePrincipal",
            "created".into(),
            json!({"spec": {"adopt": {"applicationId": APP_ID}}}),
            "adopt cannot be added or removed after creation",
        ),
        (
            "adopt removed",
            "ServicePrincipal",
            "adopted".into(),
            json!({"spec": {"adopt": null}}),
            "adopt cannot be added or removed after creation",
        ),
        (
            "adopt changed",
            "ServicePrincipal",
            "adopted".into(),
            json!({"spec": {"adopt": {"applicationId": other_uuid}}}),
            "adopt is immutable",
        ),
        (
            "app name changed",
            "DatabricksAppConnection",
            "named".into(),
            json!({"spec": {"displayName": "m"}}),
            "displayName is immutable",
        ),
        (
            "app name added",
            "DatabricksAppConnection",
            "unnamed".into(),
            json!({"spec": {"displayName": "m"}}),
            "displayName is immutable",
        ),
        (
            "confidential flipped",
            "DatabricksAppConnection",
            "named".into(),
            json!({"spec": {"confidential": true}}),
            "confidential is immutable",
        ),
        (
            "app account",
            "DatabricksAppConnection",
            "named".into(),
            json!({"spec": {"accountRef": {"name": "other"}}}),
            "accountRef is immutable",
        ),
        (
            "trust principal",
            "TrustPolicy",
            "trust".into(),
            json!({"spec": {"servicePrincipalRef": {"name": "other"}}}),
            "servicePrincipalRef is immutable",
        ),
        (
            "policy id changed",
            "TrustPolicy",
            "trust".into(),
            json!({"spec": {"policyId": "p-2"}}),
            "policyId is immutable",
        ),
        (
            "policy id removed",
            "TrustPolicy",
            "trust".into(),
            json!({"spec": {"policyId": null}}),
            "policyId is immutable",
        ),
    ];
    let mut failures = Vec::new();
    for (name, kind, object, patch, expected) in cases {
        if let Some(problem) = rejection_problem(env.merge_patch(kind, &object, patch).await, &[expected]) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} update(s) not refused as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Mutable fields still change, and the immutable ones are as created.
    let updates: Vec<(&str, &str, Value)> = vec![
        (
            "ServicePrincipal",
            "created",
            json!({"spec": {"displayName": "two", "active": false,
            "workspaceAssignments": [{"workspaceId": 42, "permissions": ["ADMIN"]}], "credentials": {"lifetime": "48h"}}}),
        ),
        (
            "DatabricksAppConnection",
            "named",
            json!({"spec": {"redirectUrls": ["https://b.example.com"], "scopes": ["sql"]}}),
        ),
        (
            "TrustPolicy",
            "trust",
            json!({"spec": {"kubernetes": null,
            "oidc": {"issuer": "https://issuer.example.com", "subject": "ci"}}}),
        ),
        (
            "DatabricksAccount",
            acct_name.as_str(),
            json!({"spec": {"rateLimit": {"requestsPerSecond": 5, "burst": 5, "writes": {"requestsPerSecond": 3, "burst": 1}}}}),
        ),
    ];
    for (kind, name, patch) in updates {
        let updated =
            env.merge_patch(kind, name, patch.clone()).await.unwrap_or_else(|e| panic!("{kind}/{name}: {e}"));
        assert_json_superset(
            &updated.data["spec"],
            &patch["spec"]
                .as_object()
                .map(|spec| {
                    Value::Object(
                        spec.iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    )
                })
                .unwrap_or_default(),
            &format!("{kind}/{name}"),
        );
    }
    let sp: Api<ServicePrincipal> = Api::namespaced(env.client.clone(), &env.namespace);
    let adopted = sp.get("adopted").await.expect("get");
    assert_eq!(adopted.spec.adopt.map(|a| a.application_id).as_deref(), Some(APP_ID));
    assert_eq!(ServicePrincipal::kind(&()), "ServicePrincipal");
}

/// `kubectl explain` shows the field documentation, and short names, the category and printer columns work.
#[tokio::test]
async fn kubectl_explains_and_lists_the_kinds() {
    let env = TestEnv::new().await;
    let kubeconfig = env.kubeconfig_file();
    let kubectl = |args: &[&str]| {
        let output = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("kubectl must be installed (see .ci/run)");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let explained = kubectl(&["explain", "serviceprincipals.spec"]);
    for expected in
        ["workspaceAssignments", "The exact set of workspaces", "credentials", "deletionPolicy", "adopt"]
    {
        assert!(
            explained.contains(expected),
            "`kubectl explain serviceprincipals.spec` lacks {expected:?}:\n{explained}"
        );
    }
    let lifetime = kubectl(&["explain", "serviceprincipals.spec.credentials.lifetime"]);
    assert!(lifetime.contains("17520h"), "{lifetime}");
    let auth = kubectl(&["explain", "databricksaccounts.spec.auth"]);
    assert!(auth.contains("oauthM2M") && auth.contains("workloadIdentity"), "{auth}");
    let delegations = kubectl(&["explain", "databricksaccounts.spec.delegations"]);
    for field in ["namespaces", "workspaces", "appConnections", "trustPolicies", "adopt"] {
        assert!(
            delegations.contains(field),
            "`kubectl explain databricksaccounts.spec.delegations` lacks {field}"
        );
    }
    let grant = kubectl(&["explain", "databricksaccounts.spec.delegations.workspaces.permission"]);
    assert!(grant.contains("USER") && grant.contains("ADMIN"), "{grant}");

    env.create(namespaced("ServicePrincipal", "listed", json!({}))).await.expect("sp");
    let listed = kubectl(&["get", "dbxsp", "-n", &env.namespace]);
    let header = listed.lines().next().unwrap_or_default();
    for column in ["NAME", "READY", "REASON", "APPLICATION ID", "AGE"] {
        assert!(header.contains(column), "column {column} in {header:?}");
    }
    assert!(listed.contains("listed"), "{listed}");
    // The expiry column shows a future time as it is (a `date` column would print `<invalid>`).
    let principals: kube::Api<databricks_oauth_operator::crd::ServicePrincipal> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);
    let expiry = json!({"status": {"credentials": {"expireTime": "2030-01-01T00:00:00Z"}}});
    principals
        .patch_status("listed", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&expiry))
        .await
        .expect("status");
    let wide = kubectl(&["get", "dbxsp", "listed", "-o", "wide", "-n", &env.namespace]);
    assert!(wide.contains("2030-01-01T00:00:00Z") && !wide.contains("<invalid>"), "{wide}");
    let everything = kubectl(&["get", "databricks", "-n", &env.namespace]);
    assert!(everything.contains("serviceprincipal.oauth.databricks-operator.io/listed"), "{everything}");
}

//! The floors a run is measured against: the Databricks calls an ideal operator makes, straight at a fresh
//! emulator, and the apiserver absorbing the same Kubernetes writes with no operator.

use std::{net::SocketAddr, time::Instant};

use databricks_emulator::{Emulator, EmulatorConfig};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::{
    ACCOUNT_ID, ADMIN_ID, Bench, BoxError, CONCURRENCY, IN_FLIGHT, WORKSPACE,
    objects::{Scenario, replay_writes},
};

impl Bench {
    /// The same Databricks calls an ideal operator makes per object, straight at a fresh emulator with the same
    /// number of calls in flight: seconds.
    pub async fn floor_databricks(&self, scenario: Scenario) -> Result<f64, BoxError> {
        let secret = format!("floor-{}", rand::random::<u64>());
        let mut config = EmulatorConfig::new(ACCOUNT_ID, ADMIN_ID, &secret);
        config.workspaces = vec![WORKSPACE];
        let emulator = Emulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let client = MinimalClient::new(&emulator.url(), ADMIN_ID, &secret).await?;
        let start = Instant::now();
        minimal_calls(&client, scenario, IN_FLIGHT).await?;
        let seconds = start.elapsed().as_secs_f64();
        emulator.shutdown().await;
        Ok(seconds)
    }

    /// The apiserver absorbing the same Kubernetes writes the operator made (create, finalizer, status, Secret
    /// or ConfigMap, events) for `objects` (in namespaces made first), with the same concurrency and no
    /// operator: seconds.
    pub async fn floor_kubernetes(
        &self,
        namespaces: &[String],
        objects: Vec<Value>,
        writes_per_object: f64,
    ) -> Result<f64, BoxError> {
        for namespace in namespaces {
            self.namespace(namespace).await?;
        }
        let client = self.client.clone();
        // Beyond create, finalizer, status and the published object, the rest are events.
        let events = (writes_per_object.round() as usize).saturating_sub(3);
        let start = Instant::now();
        futures::stream::iter(objects)
            .map(|object| {
                let client = client.clone();
                async move { replay_writes(client, object, events).await }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(start.elapsed().as_secs_f64())
    }
}

struct MinimalClient {
    http: reqwest::Client,
    base: String,
    token_url: String,
    token: String,
}

impl MinimalClient {
    async fn new(host: &str, client_id: &str, secret: &str) -> Result<Self, BoxError> {
        let http = reqwest::Client::new();
        let token_url = format!("{host}/oidc/accounts/{ACCOUNT_ID}/v1/token");
        let token = Self::token(&http, &token_url, client_id, secret).await?;
        Ok(Self { http, base: format!("{host}/api/2.0/accounts/{ACCOUNT_ID}"), token_url, token })
    }

    async fn token(http: &reqwest::Client, url: &str, id: &str, secret: &str) -> Result<String, BoxError> {
        let response: Value = http
            .post(url)
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(response["access_token"].as_str().unwrap_or_default().to_owned())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BoxError> {
        let mut request = self.http.request(method, format!("{}/{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Ok(request.send().await?.error_for_status()?.json().await?)
    }
}

/// Per principal: search by tag, create, assign, mint, verify; per app: create; per policy: create.
async fn minimal_calls(client: &MinimalClient, scenario: Scenario, in_flight: usize) -> Result<(), BoxError> {
    use reqwest::Method;
    let principals: Vec<(String, String)> = futures::stream::iter(0..scenario.principals)
        .map(|i| async move {
            let tag = format!("floor-{i}");
            client
                .call(
                    Method::GET,
                    &format!("scim/v2/ServicePrincipals?filter=externalId%20eq%20%22{tag}%22"),
                    None,
                )
                .await?;
            let sp = client
                .call(
                    Method::POST,
                    "scim/v2/ServicePrincipals",
                    Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"],
                                "displayName": format!("sp-{i}"), "active": true, "externalId": tag})),
                )
                .await?;
            let id = sp["id"].as_str().unwrap_or_default().to_owned();
            let app = sp["applicationId"].as_str().unwrap_or_default().to_owned();
            client
                .call(
                    Method::PUT,
                    &format!("workspaces/{WORKSPACE}/permissionassignments/principals/{id}"),
                    Some(json!({"permissions": ["USER"]})),
                )
                .await?;
            let secret = client
                .call(
                    Method::POST,
                    &format!("servicePrincipals/{id}/credentials/secrets"),
                    Some(json!({"lifetime": "7776000s"})),
                )
                .await?;
            let value = secret["secret"].as_str().unwrap_or_default();
            MinimalClient::token(&client.http, &client.token_url, &app, value).await?;
            Ok::<_, BoxError>((id, app))
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await?;
    futures::stream::iter(0..scenario.apps)
        .map(|i| async move {
            client
                .call(
                    Method::POST,
                    "oauth2/custom-app-integrations",
                    Some(json!({"name": format!("app-{i}"), "redirect_urls": [format!("https://app-{i}.example.com/callback")],
                                "scopes": ["all-apis", "offline_access"], "confidential": i % 2 == 0})),
                )
                .await
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    futures::stream::iter(0..scenario.policies)
        .map(|i| {
            let id = principals.get(i % principals.len().max(1)).map(|p| p.0.clone()).unwrap_or_default();
            async move {
                client
                    .call(
                        Method::POST,
                        &format!("servicePrincipals/{id}/federationPolicies?policy_id=floor-{i}"),
                        Some(json!({"oidc_policy": {"issuer": "https://token.actions.githubusercontent.com",
                                    "audiences": [ACCOUNT_ID], "subject": format!("repo:example/app-{i}:ref:refs/heads/main")}})),
                    )
                    .await
            }
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

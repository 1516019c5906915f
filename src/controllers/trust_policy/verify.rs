//! The proof that a trust policy works (`verify: true`): a token for its ServiceAccount (TokenRequest), exchanged
//! at the Databricks token endpoint.

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, ResourceExt, api::PostParams};

use crate::{
    controllers::{
        rules::{error::Error, reason::Reason},
        runtime::context::Context,
    },
    crd::TrustPolicy,
    databricks::{AccountClient, ExchangeRefusal},
};

/// What the `Verified` condition says.
pub struct Verdict {
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

/// A token of `service_account` with `audience`, exchanged for a Databricks token acting as `app_id`.
pub async fn verify(
    ctx: &Context,
    policy: &TrustPolicy,
    client: &AccountClient,
    service_account: &str,
    audience: &str,
    app_id: &str,
) -> Result<Verdict, Error> {
    let api: Api<ServiceAccount> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = match api.create_token_request(service_account, &PostParams::default(), &request).await {
        Ok(response) => response.status.and_then(|s| s.token).unwrap_or_default(),
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            let message = format!("ServiceAccount {service_account} does not exist in this namespace");
            return Ok(Verdict { ok: false, reason: Reason::ServiceAccountNotFound, message });
        }
        Err(err) => {
            return Err(Error::kube(format!("requesting a token for ServiceAccount {service_account}"), err));
        }
    };
    match client.exchange_token(&token, Some(app_id)).await {
        Ok(_) => Ok(Verdict {
            ok: true,
            reason: Reason::TokenExchanged,
            message: format!(
                "A token of ServiceAccount {service_account} (audience {audience}) was exchanged for a Databricks token"
            ),
        }),
        Err(err) if err.is_retryable() => Err(err.into()),
        Err(err) => Ok(Verdict {
            ok: false,
            reason: refusal_reason(err.exchange_refusal()),
            message: format!("Databricks refused a token of ServiceAccount {service_account}: {err}"),
        }),
    }
}

fn refusal_reason(refusal: Option<ExchangeRefusal>) -> Reason {
    match refusal {
        Some(ExchangeRefusal::KeysUnreachable) => Reason::KeysUnreachable,
        Some(ExchangeRefusal::WrongAudience) => Reason::WrongAudience,
        Some(ExchangeRefusal::WrongSubject) => Reason::WrongSubject,
        Some(ExchangeRefusal::WrongIssuer) => Reason::WrongIssuer,
        Some(ExchangeRefusal::WrongKey) => Reason::WrongKey,
        Some(ExchangeRefusal::TokenExpired) => Reason::TokenExpired,
        Some(ExchangeRefusal::Other) | None => Reason::ExchangeFailed,
    }
}

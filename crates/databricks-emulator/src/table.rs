//! The one route table of the Databricks API the emulator serves: each route's method, path, operation name (the
//! name stats and fault rules use) and handler. The router and [`classify`] are both built from it.

use std::sync::LazyLock;

use axum::{
    Router,
    handler::Handler,
    http::{Method, StatusCode},
    routing::{MethodFilter, MethodRouter, on},
};

use super::{Shared, errors::ApiError, oidc, routes::*};

/// One route of the API.
struct Route {
    method: Method,
    /// The path, with `{name}` for a segment that varies.
    path: String,
    operation: &'static str,
    handler: MethodRouter<Shared>,
}

fn route<H, T>(method: Method, path: &str, operation: &'static str, handler: H) -> Route
where
    H: Handler<T, Shared>,
    T: 'static,
{
    let filter = match method {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        _ => MethodFilter::DELETE,
    };
    Route { method, path: path.to_owned(), operation, handler: on(filter, handler) }
}

/// Every route. Account API paths are under `/api/2.0/accounts/{account_id}`.
fn routes() -> Vec<Route> {
    use Method as M;
    let acct = |path: &str| format!("/api/2.0/accounts/{{account_id}}{path}");
    let oidc_acct = |path: &str| format!("/oidc/accounts/{{account_id}}{path}");
    let sp = acct("/scim/v2/ServicePrincipals");
    let sp_id = acct("/scim/v2/ServicePrincipals/{id}");
    let groups = acct("/scim/v2/Groups");
    let group = acct("/scim/v2/Groups/{id}");
    let secrets = acct("/servicePrincipals/{sp}/credentials/secrets");
    let secret = acct("/servicePrincipals/{sp}/credentials/secrets/{secret}");
    let sp_policies = acct("/servicePrincipals/{sp}/federationPolicies");
    let sp_policy = acct("/servicePrincipals/{sp}/federationPolicies/{id}");
    let policies = acct("/federationPolicies");
    let policy = acct("/federationPolicies/{id}");
    let apps = acct("/oauth2/custom-app-integrations");
    let app = acct("/oauth2/custom-app-integrations/{id}");
    let assignments = acct("/workspaces/{ws}/permissionassignments");
    let rule_sets = "/api/2.0/preview/accounts/{account_id}/access-control/rule-sets";
    vec![
        route(M::GET, "/.well-known/databricks-config", "oidc.host_metadata", oidc::host_metadata),
        route(
            M::GET,
            &oidc_acct("/.well-known/oauth-authorization-server"),
            "oidc.discovery",
            oidc::discovery,
        ),
        route(M::GET, &oidc_acct("/.well-known/openid-configuration"), "oidc.discovery", oidc::discovery),
        route(M::POST, &oidc_acct("/v1/token"), "oidc.token", oidc::token),
        route(M::GET, &oidc_acct("/v1/authorize"), "oidc.authorize", oidc::authorize),
        route(M::POST, &sp, "scim.sp.create", sp_create),
        route(M::GET, &sp, "scim.sp.list", sp_list),
        route(M::GET, &sp_id, "scim.sp.get", sp_get),
        route(M::PATCH, &sp_id, "scim.sp.patch", sp_patch),
        route(M::PUT, &sp_id, "scim.sp.replace", sp_replace),
        route(M::DELETE, &sp_id, "scim.sp.delete", sp_delete),
        route(M::POST, &groups, "scim.groups.create", group_create),
        route(M::GET, &groups, "scim.groups.list", group_list),
        route(M::GET, &group, "scim.groups.get", group_get),
        route(M::PATCH, &group, "scim.groups.patch", group_patch),
        route(M::DELETE, &group, "scim.groups.delete", group_delete),
        route(M::GET, rule_sets, "rule_sets.get", rule_set_get),
        route(M::PUT, rule_sets, "rule_sets.put", rule_set_put),
        route(M::POST, &secrets, "secrets.create", secret_create),
        route(M::GET, &secrets, "secrets.list", secret_list),
        route(M::DELETE, &secret, "secrets.delete", secret_delete),
        route(M::POST, &sp_policies, "sp_policies.create", sp_policy_create),
        route(M::GET, &sp_policies, "sp_policies.list", sp_policy_list),
        route(M::GET, &sp_policy, "sp_policies.get", sp_policy_get),
        route(M::PATCH, &sp_policy, "sp_policies.update", sp_policy_update),
        route(M::DELETE, &sp_policy, "sp_policies.delete", sp_policy_delete),
        route(M::POST, &policies, "account_policies.create", account_policy_create),
        route(M::GET, &policies, "account_policies.list", account_policy_list),
        route(M::GET, &policy, "account_policies.get", account_policy_get),
        route(M::PATCH, &policy, "account_policies.update", account_policy_update),
        route(M::DELETE, &policy, "account_policies.delete", account_policy_delete),
        route(M::POST, &apps, "apps.create", app_create),
        route(M::GET, &apps, "apps.list", app_list),
        route(M::GET, &app, "apps.get", app_get),
        route(M::PATCH, &app, "apps.update", app_update),
        route(M::DELETE, &app, "apps.delete", app_delete),
        route(M::GET, &acct("/workspaces"), "workspaces.list", workspace_list),
        route(M::GET, &assignments, "assignments.list", assignment_list),
        route(M::GET, &format!("{assignments}/permissions"), "assignments.permissions", assignment_levels),
        route(M::PUT, &format!("{assignments}/principals/{{principal}}"), "assignments.put", assignment_put),
        route(
            M::DELETE,
            &format!("{assignments}/principals/{{principal}}"),
            "assignments.delete",
            assignment_delete,
        ),
    ]
}

/// The router of every route (the gate in front of it is added by the caller), answering 404
/// `ENDPOINT_NOT_FOUND` elsewhere.
pub fn router() -> Router<Shared> {
    let router = routes().into_iter().fold(Router::new(), |router, r| router.route(&r.path, r.handler));
    router.fallback(|| async {
        ApiError::Rest {
            status: StatusCode::NOT_FOUND,
            code: "ENDPOINT_NOT_FOUND",
            message: "No API found for this path.".into(),
        }
    })
}

/// (method, path segments, operation) of every route, for [`classify`].
static TABLE: LazyLock<Vec<(Method, Vec<String>, &'static str)>> = LazyLock::new(|| {
    let segments = |path: &str| path.trim_matches('/').split('/').map(str::to_owned).collect();
    routes().into_iter().map(|r| (r.method, segments(&r.path), r.operation)).collect()
});

/// The operation a request is, and whether it writes: the names used by stats and fault rules. `None` for what
/// is not the Databricks API (the admin API); `api.unknown` for an account API path no route serves.
pub fn classify(method: &Method, path: &str) -> Option<(&'static str, bool)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let matches = |template: &[String]| {
        template.len() == segments.len()
            && template.iter().zip(&segments).all(|(t, s)| t.starts_with('{') || t == s)
    };
    let operation = TABLE
        .iter()
        .find(|(m, template, _)| m == method && matches(template))
        .map(|(_, _, operation)| *operation)
        .or_else(|| {
            let account_api = ["/api/2.0/accounts/", "/api/2.0/preview/accounts/"];
            account_api.iter().any(|prefix| path.starts_with(prefix)).then_some("api.unknown")
        })?;
    // The token endpoint is a POST but mints no stored object; count it as a read for "writes per object".
    let write = !matches!(*method, Method::GET | Method::HEAD) && !operation.starts_with("oidc.");
    Some((operation, write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_the_route_that_serves_them() {
        let acct = "/api/2.0/accounts/0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a";
        assert_eq!(
            classify(&Method::GET, &format!("{acct}/scim/v2/ServicePrincipals/7")),
            Some(("scim.sp.get", false))
        );
        assert_eq!(
            classify(&Method::PATCH, &format!("{acct}/scim/v2/ServicePrincipals/7")),
            Some(("scim.sp.patch", true))
        );
        let secret = format!("{acct}/servicePrincipals/7/credentials/secrets/s1");
        assert_eq!(classify(&Method::DELETE, &secret), Some(("secrets.delete", true)));
        let put = format!("{acct}/workspaces/1001/permissionassignments/principals/7");
        assert_eq!(classify(&Method::PUT, &put), Some(("assignments.put", true)));
        let token = "/oidc/accounts/x/v1/token";
        assert_eq!(classify(&Method::POST, token), Some(("oidc.token", false)), "a token is no stored write");
        assert_eq!(
            classify(&Method::GET, "/oidc/accounts/x/.well-known/openid-configuration"),
            Some(("oidc.discovery", false))
        );
        assert_eq!(classify(&Method::GET, &format!("{acct}/nothing/here")), Some(("api.unknown", false)));
        assert_eq!(
            classify(&Method::POST, &format!("{acct}/scim/v2/ServicePrincipals/7")),
            Some(("api.unknown", true))
        );
        assert_eq!(classify(&Method::GET, "/_emulator/stats"), None, "the admin API is not counted");
    }
}

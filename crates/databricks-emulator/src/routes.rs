//! REST and SCIM handlers of the account API.

use std::collections::HashMap;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State as AxumState},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{Shared, errors::ApiError, gate::Caller};

type Params = Query<HashMap<String, String>>;

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::Rest {
        status: StatusCode::BAD_REQUEST,
        code: "MALFORMED_REQUEST",
        message: format!("Request body is not valid JSON: {e}"),
    })
}

fn scim_json(body: &Bytes) -> Result<Value, ApiError> {
    parse_json(body).map_err(|_| {
        ApiError::scim(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "Request is unparsable, syntactically incorrect, or violates schema.",
        )
    })
}

/// Token pagination: `page_size` (default 100; 0, the proto default a client may send, means the default too) and
/// an opaque `page_token`.
fn page(items: Vec<Value>, key: &str, params: &HashMap<String, String>) -> Result<Json<Value>, ApiError> {
    let size = match params.get("page_size") {
        Some(s) => s.parse::<usize>().map_err(|_| ApiError::invalid("page_size must be an integer"))?,
        None => 0,
    };
    let size = if size == 0 { 100 } else { size.min(1000) };
    let start = match params.get("page_token").filter(|t| !t.is_empty()) {
        Some(token) => token
            .strip_prefix("offset-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::invalid("page_token is invalid"))?,
        None => 0,
    };
    let total = items.len();
    let slice: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let mut body = json!({});
    if !slice.is_empty() {
        body[key] = Value::Array(slice);
    }
    if start + size < total {
        body["next_page_token"] = json!(format!("offset-{}", start + size));
    }
    Ok(Json(body))
}

// ---- SCIM service principals ----

pub async fn sp_create(
    AxumState(s): AxumState<Shared>,
    caller: Option<Extension<Caller>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = scim_json(&body)?;
    let mut state = s.state.lock().await;
    let principal = state.create_principal(&body)?;
    // Its creator manages it, as in Databricks.
    state.default_rule_set(&principal.application_id, caller.as_ref().map(|Extension(c)| c.0.as_str()));
    Ok((StatusCode::CREATED, Json(state.principal_json(&principal))).into_response())
}

/// The whole principal, whatever `attributes` asks for (the list honours it). Evidence: the Terraform provider
/// (v1.126.0) reads a principal with `attributes=userName,displayName,active,externalId,entitlements` and takes
/// `applicationId` from the answer into its state; its test fixtures show the real API sending it.
pub async fn sp_get(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let state = s.state.lock().await;
    Ok(Json(state.principal_json(state.principal(&id)?)))
}

pub async fn sp_list(AxumState(s): AxumState<Shared>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    let state = s.state.lock().await;
    let mut matching = state.list_principals(q.get("filter").map(String::as_str))?;
    if let Some(sort_by) = q.get("sortBy") {
        let key = |p: &&crate::state::Principal| match sort_by.as_str() {
            "displayName" => p.display_name.clone(),
            "applicationId" => p.application_id.clone(),
            _ => format!("{:0>20}", p.id),
        };
        matching.sort_by_key(key);
        if q.get("sortOrder").is_some_and(|o| o.eq_ignore_ascii_case("descending")) {
            matching.reverse();
        }
    }
    scim_page(matching.into_iter().map(|p| state.principal_json(p)).collect(), &q)
}

/// A SCIM ListResponse page of `matching`: `startIndex` (1-based), `count` and the `attributes` /
/// `excludedAttributes` projections.
fn scim_page(matching: Vec<Value>, q: &HashMap<String, String>) -> Result<Json<Value>, ApiError> {
    let bad = |detail: &str| ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidValue"), detail);
    let start_index = match q.get("startIndex") {
        Some(v) => v.parse::<usize>().map_err(|_| bad("startIndex must be an integer"))?.max(1),
        None => 1,
    };
    // Databricks documents count <= 100; the Python SDK always asks for 10000, so clamp instead of refusing.
    let count = match q.get("count") {
        Some(v) => v.parse::<usize>().map_err(|_| bad("count must be an integer"))?.min(100),
        None => 100,
    };
    let total = matching.len();
    let attributes: Option<Vec<&str>> = q.get("attributes").map(|a| a.split(',').map(str::trim).collect());
    let excluded: Vec<&str> =
        q.get("excludedAttributes").map(|a| a.split(',').map(str::trim).collect()).unwrap_or_default();
    let resources: Vec<Value> = matching
        .into_iter()
        .skip(start_index - 1)
        .take(count)
        .map(|mut resource| {
            if let Some(object) = resource.as_object_mut() {
                if let Some(keep) = &attributes {
                    object.retain(|k, _| k == "id" || keep.iter().any(|a| a.eq_ignore_ascii_case(k)));
                }
                object.retain(|k, _| !excluded.iter().any(|a| a.eq_ignore_ascii_case(k)));
            }
            resource
        })
        .collect();
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
    });
    if !resources.is_empty() {
        body["Resources"] = Value::Array(resources);
    }
    Ok(Json(body))
}

pub async fn sp_patch(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = scim_json(&body)?;
    let mut state = s.state.lock().await;
    let principal = state.patch_principal(&id, &body)?;
    Ok(Json(state.principal_json(&principal)))
}

pub async fn sp_replace(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = scim_json(&body)?;
    let mut state = s.state.lock().await;
    let principal = state.replace_principal(&id, &body)?;
    Ok(Json(state.principal_json(&principal)))
}

pub async fn sp_delete(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.state.lock().await.delete_principal(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- SCIM groups ----

pub async fn group_create(AxumState(s): AxumState<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let body = scim_json(&body)?;
    let mut state = s.state.lock().await;
    let group = state.create_group(&body)?;
    Ok((StatusCode::CREATED, Json(state.group_json(&group, true))).into_response())
}

pub async fn group_get(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let state = s.state.lock().await;
    Ok(Json(state.group_json(state.group(&id)?, true)))
}

/// Lists leave members out unless `attributes` asks for them (then the whole group, projected).
pub async fn group_list(AxumState(s): AxumState<Shared>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    let state = s.state.lock().await;
    let members =
        q.get("attributes").is_some_and(|a| a.split(',').any(|a| a.trim().eq_ignore_ascii_case("members")));
    let matching = state.list_groups(q.get("filter").map(String::as_str))?;
    scim_page(matching.into_iter().map(|g| state.group_json(g, members)).collect(), &q)
}

pub async fn group_patch(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let body = scim_json(&body)?;
    s.state.lock().await.patch_group(&id, &body)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn group_delete(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.state.lock().await.delete_group(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- access-control rule sets ----

pub async fn rule_set_get(
    AxumState(s): AxumState<Shared>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let name = q.get("name").ok_or_else(|| ApiError::invalid("name is required"))?;
    Ok(Json(s.state.lock().await.rule_set_json(name)?))
}

pub async fn rule_set_put(AxumState(s): AxumState<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = parse_json(&body)?;
    Ok(Json(s.state.lock().await.put_rule_set(&body)?))
}

// ---- service principal secrets ----

pub async fn secret_create(
    AxumState(s): AxumState<Shared>,
    Path((_, sp)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_json(&body)?;
    Ok(Json(s.state.lock().await.create_secret(&sp, &body)?))
}

pub async fn secret_list(
    AxumState(s): AxumState<Shared>,
    Path((_, sp)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let secrets = s.state.lock().await.list_secrets(&sp)?;
    page(secrets, "secrets", &q)
}

pub async fn secret_delete(
    AxumState(s): AxumState<Shared>,
    Path((_, sp, secret)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    s.state.lock().await.delete_secret(&sp, &secret)?;
    Ok(Json(json!({})))
}

// ---- federation policies (service principal and account) ----

pub async fn sp_policy_create(
    AxumState(s): AxumState<Shared>,
    Path((_, sp)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    policy_create(s, Some(sp), q, body).await
}

pub async fn account_policy_create(
    AxumState(s): AxumState<Shared>,
    Path(_): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    policy_create(s, None, q, body).await
}

async fn policy_create(
    s: Shared,
    sp: Option<String>,
    q: HashMap<String, String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_json(&body)?;
    // Both SDKs send the bare policy; the reference renders it wrapped in `policy`. Accept both.
    let body = body.get("policy").cloned().unwrap_or(body);
    let mut state = s.state.lock().await;
    let policy = state.create_policy(sp.as_deref(), q.get("policy_id").map(String::as_str), &body)?;
    Ok(Json(state.policy_json(&policy)))
}

pub async fn sp_policy_get(
    AxumState(s): AxumState<Shared>,
    Path((_, sp, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let state = s.state.lock().await;
    Ok(Json(state.policy_json(state.policy(Some(&sp), &id)?)))
}

pub async fn account_policy_get(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let state = s.state.lock().await;
    Ok(Json(state.policy_json(state.policy(None, &id)?)))
}

pub async fn sp_policy_list(
    AxumState(s): AxumState<Shared>,
    Path((_, sp)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let policies = s.state.lock().await.list_policies(Some(&sp))?;
    page(policies, "policies", &q)
}

pub async fn account_policy_list(
    AxumState(s): AxumState<Shared>,
    Path(_): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let policies = s.state.lock().await.list_policies(None)?;
    page(policies, "policies", &q)
}

pub async fn sp_policy_update(
    AxumState(s): AxumState<Shared>,
    Path((_, sp, id)): Path<(String, String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    policy_update(s, Some(sp), id, q, body).await
}

pub async fn account_policy_update(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    policy_update(s, None, id, q, body).await
}

async fn policy_update(
    s: Shared,
    sp: Option<String>,
    id: String,
    q: HashMap<String, String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_json(&body)?;
    let body = body.get("policy").cloned().unwrap_or(body);
    let mut state = s.state.lock().await;
    let policy = state.update_policy(sp.as_deref(), &id, q.get("update_mask").map(String::as_str), &body)?;
    Ok(Json(state.policy_json(&policy)))
}

pub async fn sp_policy_delete(
    AxumState(s): AxumState<Shared>,
    Path((_, sp, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    s.state.lock().await.delete_policy(Some(&sp), &id)?;
    Ok(Json(json!({})))
}

pub async fn account_policy_delete(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    s.state.lock().await.delete_policy(None, &id)?;
    Ok(Json(json!({})))
}

// ---- custom app integrations ----

pub async fn app_create(AxumState(s): AxumState<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = parse_json(&body)?;
    Ok(Json(s.state.lock().await.create_app(&body)?))
}

pub async fn app_get(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let state = s.state.lock().await;
    Ok(Json(state.app_json(state.app(&id)?)))
}

pub async fn app_list(AxumState(s): AxumState<Shared>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    let state = s.state.lock().await;
    let with_creator = q.get("include_creator_username").is_some_and(|v| v == "true");
    let apps = state
        .apps
        .values()
        .map(|a| {
            let mut body = state.app_json(a);
            if with_creator {
                body["creator_username"] = json!("emulator-admin@example.com");
            }
            body
        })
        .collect();
    page(apps, "apps", &q)
}

pub async fn app_update(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_json(&body)?;
    s.state.lock().await.update_app(&id, &body)?;
    Ok(Json(json!({})))
}

pub async fn app_delete(
    AxumState(s): AxumState<Shared>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    s.state.lock().await.delete_app(&id)?;
    Ok(Json(json!({})))
}

// ---- workspace permission assignments ----

fn workspace_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid(format!("workspace_id '{raw}' is not an integer")))
}

pub async fn assignment_put(
    AxumState(s): AxumState<Shared>,
    Path((_, ws, principal)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_json(&body)?;
    Ok(Json(s.state.lock().await.put_assignment(workspace_id(&ws)?, &principal, &body)?))
}

pub async fn assignment_delete(
    AxumState(s): AxumState<Shared>,
    Path((_, ws, principal)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    s.state.lock().await.delete_assignment(workspace_id(&ws)?, &principal)?;
    Ok(Json(json!({})))
}

/// The Workspaces API's list: a bare array of workspaces (not wrapped in an object).
pub async fn workspace_list(AxumState(s): AxumState<Shared>) -> Json<Value> {
    Json(Value::Array(s.state.lock().await.list_workspaces()))
}

pub async fn assignment_list(
    AxumState(s): AxumState<Shared>,
    Path((_, ws)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let assignments = s.state.lock().await.list_assignments(workspace_id(&ws)?)?;
    Ok(Json(json!({"permission_assignments": assignments})))
}

pub async fn assignment_levels(
    AxumState(s): AxumState<Shared>,
    Path((_, ws)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    s.state.lock().await.list_assignments(workspace_id(&ws)?)?;
    Ok(Json(json!({"permissions": [
        {"permission_level": "USER", "description": "Can use the workspace."},
        {"permission_level": "ADMIN", "description": "Can administer the workspace."},
    ]})))
}

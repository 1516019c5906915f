//! TrustPolicy: a service principal federation policy from an explicit OIDC source, or from a ServiceAccount of
//! this cluster (issuer and keys read from the apiserver, kept current: `oidc`), the ConfigMap a pod needs to use
//! it, and an optional proof that it works (`verify`).
//!
//! Policy ids are deterministic, so a create whose answer was lost is found by id: no search is needed.

mod claim;
mod oidc;
mod target;
mod verify;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};

pub use oidc::{cluster_issuer, service_account_oidc};
use target::{Target, referenced_object, referenced_principal, writable_principal};

use crate::{
    controllers::{
        rules::{
            claims, conditions,
            error::{Error, Refusal},
            limits::Counted,
            meta::{INSTANCE, MANAGED_BY, MANAGER, keys, orphaned_by_annotation},
            reason::Reason,
            revocation,
            tenancy::DelegatedKind,
        },
        runtime::{
            context::Context,
            deletion,
            lifecycle::{self, managed},
        },
        services::{
            accounts::Access,
            federation::{self, Removed, policy_id},
            release, secrets,
        },
    },
    crd::{ClaimedKind, DatabricksClaim, ServicePrincipal, TrustPolicy, TrustPolicyStatus},
    databricks::{
        AccountClient,
        types::{FederationPolicy, OidcPolicy},
    },
};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "trustpolicy";
/// Where the deploy snippet mounts the projected ServiceAccount token.
pub const TOKEN_PATH: &str = "/var/run/secrets/databricks/token";

managed!(TrustPolicy, TrustPolicyStatus, "trustpolicies.oauth.databricks-operator.io/cleanup");

pub async fn reconcile(policy: Arc<TrustPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let apply = async |policy: &TrustPolicy, ctx: &Context, status: &mut TrustPolicyStatus| {
        apply(policy, ctx, status).await?;
        let message = format!(
            "Federation policy {} on service principal {} is in sync; ConfigMap {} says how to use it",
            status.policy_id.as_deref().unwrap_or("?"),
            status.service_principal_id.as_deref().unwrap_or("?"),
            config_map_name(policy),
        );
        Ok((message, ctx.config.jittered_resync()))
    };
    let gate = async |policy: &TrustPolicy, ctx: &Context, _: &mut TrustPolicyStatus| {
        gate(policy, ctx).await.map(drop)
    };
    let hooks = lifecycle::Hooks { apply, intact: published_intact, gate };
    lifecycle::reconcile(policy, ctx, hooks, cleanup).await
}

/// Whether the ConfigMap is still there and still ours (its content is rewritten at every full pass).
async fn published_intact(
    policy: &TrustPolicy,
    ctx: &Context,
    _status: &TrustPolicyStatus,
) -> Result<bool, Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let name = config_map_name(policy);
    let existing =
        api.get_opt(&name).await.map_err(|e| Error::kube(format!("reading ConfigMap {name}"), e))?;
    let uid = policy.uid().unwrap_or_default();
    Ok(existing.is_some_and(|c| c.owner_references().iter().any(|r| r.uid == uid)))
}

fn config_map_name(policy: &TrustPolicy) -> String {
    format!("{}-databricks-federation", policy.name_any())
}

/// The grant, before any Databricks read (and while paused): a namespace without it spends nothing, and loses
/// what it had. Returns the referenced ServicePrincipal and the account.
async fn gate(policy: &TrustPolicy, ctx: &Context) -> Result<(ServicePrincipal, Access), Error> {
    let sp = referenced_object(ctx, policy).await?;
    let namespace = policy.namespace().unwrap_or_default();
    // The grant before any Databricks read: a namespace without it spends nothing, and loses what it had.
    let access = match ctx.accounts.client_for(&sp.spec.account_ref.name, &namespace).await {
        Ok(access) => access,
        Err(Error::Account { reason: Reason::NamespaceNotAllowed, message }) => {
            let access = ctx.accounts.revoking(&sp.spec.account_ref.name, &namespace).await?;
            let refusal = Refusal { reason: Reason::NamespaceNotAllowed, message };
            return Err(revoke(ctx, policy, &access, refusal, false).await?);
        }
        Err(err) => return Err(err),
    };
    if let Err(refusal) = access.grants.check_kind(DelegatedKind::TrustPolicy) {
        return Err(revoke(ctx, policy, &access, refusal, false).await?);
    }
    Ok((sp, access))
}

/// A full pass: the federation policy brought in line (or created), its ConfigMap written, and the proof.
async fn apply(policy: &TrustPolicy, ctx: &Context, status: &mut TrustPolicyStatus) -> Result<(), Error> {
    let generation = policy.metadata.generation;
    let (sp, access) = gate(policy, ctx).await?;
    let target = writable_principal(ctx, sp, access).await?;
    let account = &target.access.account;
    let (oidc, audience) = oidc::desired(&ctx.client, policy, &account.spec.account_id).await?;
    let want = FederationPolicy {
        description: policy.spec.description.clone(),
        oidc_policy: Some(oidc.clone()),
        ..FederationPolicy::default()
    };
    let stored = converge_policy(ctx, &target, policy, status, &want, &oidc).await?;
    status.policy_id = Some(policy_id(policy));
    status.uid = stored.uid.clone();
    status.service_principal_id = Some(target.principal_id.clone());
    conditions::synced(&mut status.conditions, generation);
    let name = config_map_name(policy);
    write_config_map(ctx, policy, &name, &target, audience.as_deref()).await?;
    status.config_map_name = Some(name);
    match (&policy.spec.kubernetes, policy.spec.verify) {
        (Some(k8s), true) => {
            let audience = audience.unwrap_or_else(|| account.spec.account_id.clone());
            let (client, sa, app_id) =
                (&target.access.client, &k8s.service_account_name, &target.application_id);
            let verdict = verify::verify(ctx, policy, client, sa, &audience, app_id).await?;
            let (ok, reason, message) = (verdict.ok, verdict.reason, verdict.message);
            conditions::set(&mut status.conditions, conditions::VERIFIED, ok, reason, &message, generation);
        }
        _ => status.conditions.retain(|c| c.type_ != conditions::VERIFIED),
    }
    Ok(())
}

/// A refused pass: the federation policies the object's claims hold go after the account's grace (at once when
/// `now`), and the error says when.
async fn revoke(
    ctx: &Context,
    policy: &TrustPolicy,
    access: &Access,
    refusal: Refusal,
    now: bool,
) -> Result<Error, Error> {
    let grace = if now { std::time::Duration::ZERO } else { revocation::grace(&access.account.spec) };
    let at = k8s_openapi::jiff::Timestamp::now();
    let mut outcome = revocation::Outcome::default();
    for held in own_claims(ctx, policy).await? {
        let (Some(id), Some(principal_id)) =
            (held.spec.remote.id.clone(), held.spec.remote.principal_id.clone())
        else {
            continue;
        };
        let held = ctx.claims.mark_revoked(&held).await?;
        if let Some(due) = revocation::due(held.spec.revoked_since.as_ref().map(|t| t.0), at, grace) {
            outcome.later(due, format!("its federation policy {id} is deleted at {due} (spec.revocation.gracePeriod) unless it is granted again"));
            continue;
        }
        release::remove_policy(&access.client, &held, &principal_id).await?;
        ctx.claims.delete(&held).await?;
        let note = format!("its federation policy {id} was deleted");
        ctx.event(policy, EventType::Warning, "Revoked", "Revoke", &format!("{}: {note}", refusal.reason))
            .await;
        outcome.done(note);
    }
    Ok(Error::revoked(refusal, &outcome.message(), outcome.wake(at)))
}

/// The federation-policy claims this object holds.
async fn own_claims(ctx: &Context, policy: &TrustPolicy) -> Result<Vec<DatabricksClaim>, Error> {
    let held = ctx.claims.held_by(&policy.uid().unwrap_or_default()).await?;
    Ok(held.into_iter().filter(|c| c.spec.remote.kind == ClaimedKind::FederationPolicy).collect())
}

/// The federation policy as the spec says: updated when it drifted, created (with the claim as the intent) when
/// absent, and its uid recorded in the claim.
async fn converge_policy(
    ctx: &Context,
    target: &Target,
    policy: &TrustPolicy,
    status: &TrustPolicyStatus,
    want: &FederationPolicy,
    oidc: &OidcPolicy,
) -> Result<FederationPolicy, Error> {
    let id = policy_id(policy);
    let held = claim::read(ctx, target, &id).await?;
    let (stored, held) = match find_ours(target, policy, held.as_ref(), status).await? {
        Some(found) => (update_if_drifted(ctx, target, policy, found, want, oidc).await?, held),
        None => {
            if held.is_none() {
                check_count(ctx, target, policy).await?;
            }
            let intent = claim::record_intent(ctx, target, policy, &id, held).await?;
            (create_with_intent(ctx, target, policy, &intent, want).await?, Some(intent))
        }
    };
    if claim::record(ctx, target, policy, held, &stored).await?.is_none() {
        // The claim went (the principal was released meanwhile): the policy must not outlive it.
        target.access.client.delete_federation_policy(&target.principal_id, &id).await?;
        return Err(Error::Waiting {
            reason: Reason::ServicePrincipalMismatch,
            message: format!(
                "The claim on federation policy {id} was released while it was written; it was removed"
            ),
        });
    }
    Ok(stored)
}

/// At most the delegation's cap of trust policies per namespace, before a new one is created.
async fn check_count(ctx: &Context, target: &Target, policy: &TrustPolicy) -> Result<(), Error> {
    let grants = &target.access.grants;
    if grants.caps().cap(Counted::TrustPolicies).is_none() {
        return Ok(());
    }
    let namespace = policy.namespace().unwrap_or_default();
    let account_id = &target.access.account.spec.account_id;
    let selector = claims::selector(
        ClaimedKind::FederationPolicy,
        account_id,
        &[(claims::LABEL_OWNER_NAMESPACE, &namespace)],
    );
    let uid = policy.uid().unwrap_or_default();
    let have = ctx.claims.list(&selector).await?.iter().filter(|c| c.spec.owner.uid != uid).count();
    grants.check_count(Counted::TrustPolicies, have).map_err(Error::from)
}

/// The policy under this object's id, when it is ours (see [`claim::is_ours`]); anything else under the id is
/// someone else's.
async fn find_ours(
    target: &Target,
    policy: &TrustPolicy,
    held: Option<&DatabricksClaim>,
    status: &TrustPolicyStatus,
) -> Result<Option<FederationPolicy>, Error> {
    let (id, principal_id) = (policy_id(policy), &target.principal_id);
    let found = match target.access.client.get_federation_policy(principal_id, &id).await {
        Ok(found) => found,
        Err(err) if err.is_not_found() => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    if !claim::is_ours(held, &policy.uid().unwrap_or_default(), &found, status) {
        return Err(claim::policy_conflict(&id, principal_id));
    }
    Ok(Some(found))
}

/// Reverts changes made in Databricks (and applies spec changes).
async fn update_if_drifted(
    ctx: &Context,
    target: &Target,
    policy: &TrustPolicy,
    found: FederationPolicy,
    want: &FederationPolicy,
    oidc: &OidcPolicy,
) -> Result<FederationPolicy, Error> {
    let drifted = found.description != want.description
        || oidc::normalized(found.oidc_policy.as_ref()) != oidc::normalized(Some(oidc));
    if !drifted {
        return Ok(found);
    }
    let id = policy_id(policy);
    let client = &target.access.client;
    let updated =
        client.update_federation_policy(&target.principal_id, &id, "description,oidc_policy", want).await?;
    let note = format!("Updated federation policy {id}");
    ctx.event(policy, EventType::Normal, "Updated", "Update", &note).await;
    Ok(updated)
}

/// Creates the policy, its intent (`intent`, this object's claim) recorded before: a create whose answer is lost
/// is recognised by it. An adopted principal's claim is looked at once more after the intent, so a release that
/// began meanwhile (and listed the policies to remove before this intent existed) is never outlived.
async fn create_with_intent(
    ctx: &Context,
    target: &Target,
    policy: &TrustPolicy,
    intent: &DatabricksClaim,
    want: &FederationPolicy,
) -> Result<FederationPolicy, Error> {
    let (id, principal_id) = (policy_id(policy), &target.principal_id);
    if let Err(err) = target::still_writable(ctx, &target.sp).await {
        ctx.claims.delete(intent).await?;
        return Err(err);
    }
    if target.sp.spec.adopt.is_some() && !ctx.principals.holds_claim(&target.access, &target.sp).await? {
        ctx.claims.delete(intent).await?;
        return Err(Error::Waiting {
            reason: Reason::ServicePrincipalDeleting,
            message: format!(
                "ServicePrincipal {} is releasing its principal; nothing is written for it",
                target.sp.name_any()
            ),
        });
    }
    let created = match target.access.client.create_federation_policy(principal_id, Some(&id), want).await {
        Ok(created) => created,
        Err(err) => {
            // Databricks said no (4xx): nothing was created under the id, so the intent must not stand (on a
            // conflict the policy there is someone else's). A lost answer or a 5xx keeps it.
            if err.status().is_some_and(|s| (400..500).contains(&s)) {
                ctx.claims.delete(intent).await?;
            }
            return Err(if err.is_conflict() {
                claim::policy_conflict(&id, principal_id)
            } else if err.is_limit_reached() {
                Error::NeedsAttention {
                    reason: Reason::PolicyLimitReached,
                    message: format!(
                        "Service principal {principal_id} already has the Databricks maximum of 20 federation \
                         policies; delete one: {err}"
                    ),
                }
            } else {
                err.into()
            });
        }
    };
    let note = format!("Created federation policy {id} on service principal {principal_id}");
    ctx.event(policy, EventType::Normal, "Created", "Create", &note).await;
    Ok(created)
}

/// The ConfigMap a pod mounts to use the federation (`DATABRICKS_AUTH_TYPE=file-oidc`).
fn config_map_data(target: &Target, audience: Option<&str>) -> BTreeMap<String, String> {
    let account = &target.access.account;
    let host = account.spec.effective_host();
    let mut data = secrets::connection_data(&host, Some(&account.spec.account_id), &target.application_id);
    data.insert(keys::AUTH_TYPE.to_owned(), "file-oidc".to_owned());
    data.insert(keys::OIDC_TOKEN_FILEPATH.to_owned(), TOKEN_PATH.to_owned());
    if let Some(audience) = audience {
        data.insert(keys::TOKEN_AUDIENCE.to_owned(), audience.to_owned());
    }
    data
}

/// Writes the ConfigMap when it differs, never over one this object does not own.
async fn write_config_map(
    ctx: &Context,
    policy: &TrustPolicy,
    name: &str,
    target: &Target,
    audience: Option<&str>,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let data = config_map_data(target, audience);
    let existing =
        api.get_opt(name).await.map_err(|e| Error::kube(format!("reading ConfigMap {name}"), e))?;
    let uid = policy.uid().unwrap_or_default();
    if let Some(existing) = &existing {
        if !existing.owner_references().iter().any(|r| r.uid == uid) {
            return Err(Error::NeedsAttention {
                reason: Reason::ConfigMapConflict,
                message: format!(
                    "ConfigMap {name} exists and is not owned by this TrustPolicy; the operator will not overwrite it"
                ),
            });
        }
        if existing.data.as_ref() == Some(&data) {
            return Ok(());
        }
    }
    let labels = BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (INSTANCE.to_owned(), policy.name_any()),
    ]);
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            owner_references: policy.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&config_map))
        .await
        .map(drop)
        .map_err(|e| Error::kube(format!("writing ConfigMap {name}"), e))
}

/// Deletion: the policies this object's claims name are deleted (the claims, not the status, say which), with the
/// account the claims are in, whether or not the account still allows the namespace (revocation, not
/// abandonment); an earlier version's record in status stands in for claims.
async fn cleanup(policy: Arc<TrustPolicy>, ctx: &Context) -> Result<Action, Error> {
    let held = own_claims(ctx, &policy).await?;
    let Some(first) = held.first() else { return legacy_cleanup(policy, ctx).await };
    let remote = format!("federation policy {}", policy_id(&policy));
    let namespace = policy.namespace().unwrap_or_default();
    // The referenced principal's account, or (its object is gone) the account the claim is in.
    let account = match referenced_object(ctx, &policy).await {
        Ok(sp) => Some(sp.spec.account_ref.name),
        Err(_) => ctx.accounts.name_of(&first.spec.account_id),
    };
    let access = match &account {
        Some(account) => ctx.accounts.client_for(account, &namespace).await,
        None => Err(Error::Account {
            reason: Reason::AccountNotFound,
            message: format!("no DatabricksAccount is for account {}", first.spec.account_id),
        }),
    };
    // Revoked (the namespace may no longer use the account, the kind is no longer delegated, or a revocation is
    // under way): no orphaning, no waiting for a pause.
    let not_allowed = access.as_ref().is_err_and(|e| e.reason() == Reason::NamespaceNotAllowed);
    let refused = access.as_ref().is_ok_and(|a| a.grants.check_kind(DelegatedKind::TrustPolicy).is_err());
    let revoked = not_allowed || refused || held.iter().any(|c| c.spec.revoked_since.is_some());
    let forbidden = access.as_ref().is_ok_and(|a| !a.grants.caps().allow_orphan);
    // A policy left on an adopted principal (or one whose object is gone) would outlive the claim on it: never.
    let on_own_principal = referenced_object(ctx, &policy).await.is_ok_and(|sp| sp.spec.adopt.is_none());
    let orphan = orphaned_by_annotation(policy.as_ref()) && !forbidden && on_own_principal;
    let access = match (not_allowed, &account) {
        (true, Some(account)) => ctx.accounts.revoking(account, &namespace).await,
        _ => access,
    };
    let proceed = deletion::may_delete_remote(policy.as_ref(), ctx, orphan, revoked, &remote).await?;
    let access = if proceed {
        deletion::or_abandon(policy.as_ref(), ctx, &remote, access, false).await?
    } else {
        None
    };
    for claim in &held {
        if let (Some(access), Some(principal_id)) = (&access, &claim.spec.remote.principal_id)
            && release::remove_policy(&access.client, claim, principal_id).await?
        {
            let note =
                format!("Deleted federation policy {}", claim.spec.remote.id.as_deref().unwrap_or("?"));
            ctx.event(policy.as_ref(), EventType::Normal, "Deleted", "Delete", &note).await;
        }
        ctx.claims.delete(claim).await?;
    }
    Ok(Action::await_change())
}

/// Deletion of a policy an earlier version recorded only in status: the one whose uid it recorded, under the
/// principal's confirmed id.
async fn legacy_cleanup(policy: Arc<TrustPolicy>, ctx: &Context) -> Result<Action, Error> {
    let id = policy_id(&policy);
    let remote = format!("federation policy {id}");
    let orphan = orphaned_by_annotation(policy.as_ref());
    if !deletion::may_delete_remote(policy.as_ref(), ctx, orphan, false, &remote).await? {
        return Ok(Action::await_change());
    }
    // Without its principal (object or remote) there is nothing to delete: the policy went with the principal (a
    // claim left behind is swept with its object gone).
    let target = match referenced_principal(ctx, &policy).await {
        Err(Error::Waiting { .. }) => return Ok(Action::await_change()),
        other => other,
    };
    let Some(target) = deletion::or_abandon(policy.as_ref(), ctx, &remote, target, false).await? else {
        return Ok(Action::await_change());
    };
    let client: &AccountClient = &target.access.client;
    let removed = federation::delete_recorded(&ctx.events, client, &policy, &target.principal_id, "").await?;
    if removed == Removed::NotOurs {
        let note = format!("Federation policy {id} is not the one this object created; left untouched");
        ctx.event(policy.as_ref(), EventType::Warning, "IdentityMismatch", "Delete", &note).await;
    }
    Ok(Action::await_change())
}

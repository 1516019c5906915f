//! DatabricksAppConnection: a custom OAuth app integration for user-to-machine sign-in, its client id (and, for
//! confidential apps, the secret shown once) published with the OAuth endpoints in an owned Secret. The
//! integration's ownership and crash-safe creation are `integration`'s; the object's own status is only a copy of
//! the claim's record and never trusted.

mod integration;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use integration::display_name;

use crate::{
    controllers::{
        rules::{
            claims::{self, LABEL_OWNER_UID},
            conditions,
            error::{Error, Refusal},
            intent,
            meta::{self, ANNOTATION_ROTATE, keys, orphaned_by_annotation},
            reason::Reason,
            revocation,
            rotate_request::{self, RotateRequest},
            tenancy::{DelegatedKind, Grants},
        },
        runtime::{
            context::Context,
            deletion,
            lifecycle::{self, managed},
        },
        services::{
            accounts::Access,
            rollout::{self, Rollouts},
            secrets::{self, Published},
        },
    },
    crd::{
        AppDeletionPolicy, ClaimedKind, DatabricksAppConnection, DatabricksAppConnectionStatus,
        DatabricksClaim,
    },
    databricks::{AccountClient, types::CustomApp},
};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "databricksappconnection";

managed!(
    DatabricksAppConnection,
    DatabricksAppConnectionStatus,
    "databricksappconnections.oauth.databricks-operator.io/cleanup"
);

pub async fn reconcile(app: Arc<DatabricksAppConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let apply =
        async |app: &DatabricksAppConnection, ctx: &Context, status: &mut DatabricksAppConnectionStatus| {
            let rotation_due = apply(app, ctx, status).await?;
            let message = format!(
                "App connection {} (client id {}) is in sync; Secret {} is current",
                display_name(app),
                status.client_id.as_deref().unwrap_or("?"),
                secret_name(app)
            );
            let resync = ctx.config.jittered_resync();
            Ok((message, rotation_due.map_or(resync, |d| d.min(resync).max(Duration::from_secs(1)))))
        };
    let gate =
        async |app: &DatabricksAppConnection, ctx: &Context, status: &mut DatabricksAppConnectionStatus| {
            gate(app, ctx, status).await.map(drop)
        };
    let hooks = lifecycle::Hooks { apply, intact: published_intact, gate };
    lifecycle::reconcile(app, ctx, hooks, cleanup).await
}

/// Whether the Secret is still as the last pass wrote it.
async fn published_intact(
    app: &DatabricksAppConnection,
    ctx: &Context,
    _status: &DatabricksAppConnectionStatus,
) -> Result<bool, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let published = secrets::read_owned(&api, &secret_name(app), &app.uid().unwrap_or_default()).await?;
    Ok(published.is_some_and(|p| p.checksum_ok))
}

fn secret_name(app: &DatabricksAppConnection) -> String {
    app.spec.secret_name.clone().unwrap_or_else(|| format!("{}-oauth-client", app.name_any()))
}

/// What one pass works with.
struct Pass<'a> {
    app: &'a DatabricksAppConnection,
    ctx: &'a Context,
    access: Access,
    /// The Secret as read (`None`: absent).
    published: Option<Published>,
    /// The rotate annotation (a confidential app is recreated for it).
    request: RotateRequest,
    now: Timestamp,
}

impl Pass<'_> {
    async fn event(&self, type_: EventType, reason: &str, action: &str, note: &str) {
        self.ctx.event(self.app, type_, reason, action, note).await;
    }
}

/// The grant, before anything is written (and while paused): an integration the namespace may no longer have (the
/// namespace no longer allowed, the kind no longer delegated, redirect URLs or scopes outside the delegation's
/// limits) is revoked.
async fn gate(
    app: &DatabricksAppConnection,
    ctx: &Context,
    status: &mut DatabricksAppConnectionStatus,
) -> Result<Access, Error> {
    let namespace = app.namespace().unwrap_or_default();
    let access = match ctx.accounts.client_for(&app.spec.account_ref.name, &namespace).await {
        Ok(access) => access,
        // The account no longer allows the namespace: the integration is revoked.
        Err(Error::Account { reason: Reason::NamespaceNotAllowed, message }) => {
            let access = ctx.accounts.revoking(&app.spec.account_ref.name, &namespace).await?;
            let refusal = Refusal { reason: Reason::NamespaceNotAllowed, message };
            return Err(revoke(app, ctx, &access, refusal, status, false).await?);
        }
        Err(err) => return Err(err),
    };
    if let Err(refusal) = delegated(&access.grants, app) {
        return Err(revoke(app, ctx, &access, refusal, status, false).await?);
    }
    if meta::is_paused(app)
        && let Some(refusal) = paused_remote_refusal(app, ctx, &access).await?
    {
        return Err(revoke(app, ctx, &access, refusal, status, false).await?);
    }
    Ok(access)
}

/// Whether the namespace may have this app connection as its spec asks: the kind delegated, and its redirect URLs
/// and scopes within the delegation's limits.
fn delegated(grants: &Grants, app: &DatabricksAppConnection) -> Result<(), Refusal> {
    grants.check_kind(DelegatedKind::AppConnection)?;
    grants.check_app(&app.spec.redirect_urls, &app.spec.scopes)
}

/// A paused object's spec may have changed since it was applied: the integration as Databricks holds it is
/// checked against the delegation's limits (redirect hosts, scopes).
async fn paused_remote_refusal(
    app: &DatabricksAppConnection,
    ctx: &Context,
    access: &Access,
) -> Result<Option<Refusal>, Error> {
    let claim = integration::own_claim(app, ctx, &access.account.spec.account_id).await?;
    let Some(id) = claim.and_then(|c| c.spec.remote.id) else { return Ok(None) };
    match access.client.get_custom_app(&id).await {
        Ok(remote) => Ok(access.grants.check_app(&remote.redirect_urls, &remote.scopes).err()),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// A full pass: the grant checked, the integration found (or recovered, or created), recreated when a
/// confidential app's secret is lost and a recreation is asked for, and published. Returns when a waiting
/// recreation is due.
async fn apply(
    app: &DatabricksAppConnection,
    ctx: &Context,
    status: &mut DatabricksAppConnectionStatus,
) -> Result<Option<Duration>, Error> {
    let access = gate(app, ctx, status).await?;
    let claim = match integration::own_claim(app, ctx, &access.account.spec.account_id).await? {
        // Granted again before the grace ended: the integration stays.
        Some(claim) if claim.spec.revoked_since.is_some() => Some(ctx.claims.clear_revoked(&claim).await?),
        other => other,
    };
    check_recorded(app, ctx, claim.as_ref(), status).await?;
    let (uid, generation) = (app.uid().unwrap_or_default(), app.metadata.generation);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let noted = &mut status.conditions;
    let published = secrets::read_owned_noting(&api, &secret_name(app), &uid, noted, generation).await?;
    let existing = find_integration(app, ctx, &access.client, claim.as_ref(), status).await?;
    let now = Timestamp::now();
    let value = app.annotations().get(ANNOTATION_ROTATE).cloned();
    // The guard counts from the integration's creation, by Databricks' record (a status edit cannot shorten it).
    let created = existing.as_ref().and_then(|e| intent::parse_time(e.create_time.as_deref()));
    let guard =
        created.and_then(|t| rotate_request::next_rotation_allowed(t, ctx.config.rotate_min_interval));
    let allowed_after = status.rotate_allowed_after.as_ref().map(|t| t.0).max(guard);
    let request = RotateRequest::new(value, status.rotate_request.as_ref(), allowed_after, now);
    let pass = Pass { app, ctx, access, published, request, now };
    let existing = recreate_if_asked_or_lost(&pass, existing, status).await?;
    publish_integration(&pass, existing, status).await?;
    let rollouts = roll_consumers(&pass, status).await;
    Ok(describe(&pass, status, &rollouts))
}

/// A refused pass: the integration the object holds goes after the account's grace (at once when `now`), and the
/// error says when.
async fn revoke(
    app: &DatabricksAppConnection,
    ctx: &Context,
    access: &Access,
    refusal: Refusal,
    status: &mut DatabricksAppConnectionStatus,
    now: bool,
) -> Result<Error, Error> {
    let claim = integration::own_claim(app, ctx, &access.account.spec.account_id).await?;
    let Some((claim, id)) = claim.and_then(|c| c.spec.remote.id.clone().map(|id| (c, id))) else {
        return Ok(refusal.into());
    };
    let grace = if now { Duration::ZERO } else { revocation::grace(&access.account.spec) };
    let claim = ctx.claims.mark_revoked(&claim).await?;
    let at = Timestamp::now();
    if let Some(due) = revocation::due(claim.spec.revoked_since.as_ref().map(|t| t.0), at, grace) {
        let note = format!(
            "Its app integration {id} is deleted at {due} (spec.revocation.gracePeriod) unless it is granted again"
        );
        return Ok(Error::revoked(refusal, &note, Some(revocation::until(due, at))));
    }
    access.client.delete_custom_app(&id).await?;
    ctx.claims.delete(&claim).await?;
    status.integration_id = None;
    status.client_id = None;
    let note = format!("Its app integration {id} was deleted; its tokens stop working");
    ctx.event(app, EventType::Warning, "Revoked", "Revoke", &format!("{}: {note}", refusal.reason)).await;
    Ok(Error::revoked(refusal, &note, None))
}

/// Status names the integration the claim records, or none: status was edited otherwise (only the operator
/// writes it from the claim), and nothing it names is touched.
async fn check_recorded(
    app: &DatabricksAppConnection,
    ctx: &Context,
    claim: Option<&DatabricksClaim>,
    status: &mut DatabricksAppConnectionStatus,
) -> Result<(), Error> {
    if status.integration_id.is_none() || status.integration_id == integration::claimed_id(claim) {
        return Ok(());
    }
    let message = format!(
        "status.integrationId {:?} is not the integration this object owns; it was not touched. The operator \
         restores the status from its own record",
        status.integration_id.as_deref().unwrap_or_default()
    );
    ctx.event(app, EventType::Warning, "IdentityMismatch", "Verify", &message).await;
    status.integration_id = None;
    status.client_id = None;
    Err(Error::Waiting { reason: Reason::IdentityMismatch, message })
}

/// The integration the claim records (`None` when it was deleted outside the operator), or one left by an
/// interrupted create of this object.
async fn find_integration(
    app: &DatabricksAppConnection,
    ctx: &Context,
    client: &AccountClient,
    claim: Option<&DatabricksClaim>,
    status: &mut DatabricksAppConnectionStatus,
) -> Result<Option<CustomApp>, Error> {
    let existing = match integration::claimed_id(claim) {
        Some(id) => match client.get_custom_app(&id).await {
            Ok(found) => Some(found),
            Err(err) if err.is_not_found() => {
                let note = format!("App integration {id} was deleted outside the operator; recreating it");
                ctx.event(app, EventType::Warning, "RemoteDeleted", "Recreate", &note).await;
                status.integration_id = None;
                status.client_id = None;
                None
            }
            Err(err) => return Err(err.into()),
        },
        None => match claim {
            Some(claim) => integration::recover_interrupted_create(app, ctx, client, claim).await?,
            None => None,
        },
    };
    if let Some(found) = &existing {
        status.integration_id = Some(found.integration_id.clone());
        status.client_id = Some(found.client_id.clone());
    }
    Ok(existing)
}

/// The client secret the Secret holds for the status's client, when intact.
fn intact_secret(pass: &Pass<'_>, status: &DatabricksAppConnectionStatus) -> Option<String> {
    pass.published
        .as_ref()
        .filter(|p| p.checksum_ok && p.data.get(keys::CLIENT_ID) == status.client_id.as_ref())
        .and_then(|p| p.data.get(keys::CLIENT_SECRET).cloned())
}

/// A confidential app's secret exists only in the Secret: if it is gone, say so; delete the integration (to
/// create it anew) only when the rotate annotation asks for it, at most once per interval.
async fn recreate_if_asked_or_lost(
    pass: &Pass<'_>,
    existing: Option<CustomApp>,
    status: &mut DatabricksAppConnectionStatus,
) -> Result<Option<CustomApp>, Error> {
    let lost = intact_secret(pass, status).is_none();
    let recreate = pass.app.spec.confidential && (pass.request.now() || lost);
    let Some(current) = existing.as_ref().filter(|_| recreate) else { return Ok(existing) };
    if let Some(after) = pass.request.waits.filter(|_| lost) {
        return Err(Error::Waiting {
            reason: Reason::RotationWaits,
            message: format!(
                "The integration is recreated for the {ANNOTATION_ROTATE} annotation at {after}: at most once per {}s",
                pass.ctx.config.rotate_min_interval.as_secs()
            ),
        });
    }
    if !pass.request.now() {
        let message = format!(
            "The client secret of confidential app {} is no longer in Secret {} and Databricks cannot show it \
             again. Set the annotation {ANNOTATION_ROTATE} to a new value to recreate the integration (this issues \
             a new client id).",
            current.client_id,
            secret_name(pass.app)
        );
        let generation = pass.app.metadata.generation;
        let lost = Reason::SecretLost;
        conditions::set(
            &mut status.conditions,
            conditions::CREDENTIALS_READY,
            false,
            lost,
            &message,
            generation,
        );
        return Err(Error::NeedsAttention { reason: Reason::SecretLost, message });
    }
    pass.access.client.delete_custom_app(&current.integration_id).await?;
    let note = format!("Deleted app integration {} to issue a new client secret", current.integration_id);
    pass.event(EventType::Normal, "Recreating", "Rotate", &note).await;
    status.integration_id = None;
    status.client_id = None;
    Ok(None)
}

/// Brings the integration in line (or creates it) and writes the Secret when it differs.
async fn publish_integration(
    pass: &Pass<'_>,
    existing: Option<CustomApp>,
    status: &mut DatabricksAppConnectionStatus,
) -> Result<(), Error> {
    let (app, ctx) = (pass.app, pass.ctx);
    let want = integration::desired(app);
    let integration = match existing {
        Some(found) => {
            integration::update_if_drifted(app, ctx, &pass.access.client, &found, &want).await?;
            // Keep the Secret current (a deleted or edited public app's Secret is rebuilt, labels follow the
            // template); a confidential secret can only be republished from the Secret itself.
            let client_id = status.client_id.clone().unwrap_or_default();
            publish(pass, &client_id, intact_secret(pass, status).as_deref()).await?;
            found.integration_id
        }
        None => {
            // Read again: recovery may have written it during this pass.
            let claim = integration::own_claim(app, ctx, &pass.access.account.spec.account_id).await?;
            check_admissible(pass).await?;
            let created = integration::create(app, ctx, &pass.access, claim, status, &want).await?;
            publish(pass, &created.client_id, created.expose_client_secret()).await?;
            ctx.fail_point("after-publish-app")?;
            let interval = ctx.config.rotate_min_interval;
            status.rotate_allowed_after = rotate_request::next_rotation_allowed(pass.now, interval).map(Time);
            // A new integration has a new secret: a rotation asked for meanwhile is served by it.
            if pass.request.requested {
                status.rotate_request = pass.request.value.clone();
            }
            created.integration_id.clone()
        }
    };
    if pass.request.now() {
        status.rotate_request = pass.request.value.clone();
    }
    status.integration_id = Some(integration);
    status.secret_name = Some(secret_name(app));
    Ok(())
}

/// Named consumers are rolled onto the Secret's current client (nothing waits for their rollouts: a recreated
/// integration's old client is already gone).
async fn roll_consumers(pass: &Pass<'_>, status: &DatabricksAppConnectionStatus) -> Rollouts {
    let app = pass.app;
    let client_id = status.client_id.clone().unwrap_or_default();
    let rollouts = match app.spec.rollout_restart_targets.is_empty() || client_id.is_empty() {
        true => Rollouts::default(),
        false => {
            let key = rollout::annotation_key("app", &app.name_any(), &app.uid().unwrap_or_default());
            let (targets, namespace) =
                (&app.spec.rollout_restart_targets, app.namespace().unwrap_or_default());
            rollout::roll(&pass.ctx.client, &namespace, targets, &key, &client_id, &secret_name(app)).await
        }
    };
    rollout::announce(&pass.ctx.events, app, &rollouts, &format!("client {client_id}")).await;
    rollouts
}

/// The conditions of an integration in sync, and when a waiting recreation is due.
fn describe(
    pass: &Pass<'_>,
    status: &mut DatabricksAppConnectionStatus,
    rollouts: &Rollouts,
) -> Option<Duration> {
    let (app, generation, name) = (pass.app, pass.app.metadata.generation, secret_name(pass.app));
    let client_id = status.client_id.clone().unwrap_or_default();
    let mut message = match app.spec.confidential {
        true => format!("Secret {name} holds the client id and secret of {client_id}"),
        false => format!("Secret {name} holds the client id {client_id} (public client: no secret)"),
    };
    let rotation_waits = pass.request.waits.filter(|_| app.spec.confidential);
    if let Some(after) = rotation_waits {
        let interval = pass.ctx.config.rotate_min_interval;
        message.push_str(&rotate_request::waiting_note("recreation", after, interval));
    }
    message.push_str(&rollouts.note(&name));
    conditions::published(&mut status.conditions, &message, generation);
    conditions::synced(&mut status.conditions, generation);
    rotation_waits.map(|after| Duration::try_from(after.duration_since(pass.now)).unwrap_or_default())
}

/// The Secret publishing `client_id` (and its secret, for a confidential app).
fn desired_secret(
    pass: &Pass<'_>,
    client_id: &str,
    client_secret: Option<&str>,
) -> (BTreeMap<String, String>, Secret) {
    let (app, account, client) = (pass.app, &pass.access.account, &pass.access.client);
    let mut data =
        secrets::connection_data(&account.spec.effective_host(), Some(&account.spec.account_id), client_id);
    if let Some(secret) = client_secret {
        data.insert(keys::CLIENT_SECRET.to_owned(), secret.to_owned());
    }
    data.insert(keys::AUTHORIZATION_ENDPOINT.to_owned(), client.authorization_endpoint());
    data.insert(keys::TOKEN_ENDPOINT.to_owned(), client.token_endpoint());
    let desired =
        secrets::build(app, &secret_name(app), data.clone(), BTreeMap::new(), app.spec.template.as_ref());
    (data, desired)
}

fn secrets_api(pass: &Pass<'_>) -> Api<Secret> {
    Api::namespaced(pass.ctx.client.clone(), &pass.app.namespace().unwrap_or_default())
}

/// A confidential app's secret is shown once: nothing is created for a Secret the apiserver would refuse.
async fn check_admissible(pass: &Pass<'_>) -> Result<(), Error> {
    let placeholder = pass.app.spec.confidential.then_some("placeholder");
    let (_, desired) = desired_secret(pass, "placeholder", placeholder);
    secrets::check_admissible(&secrets_api(pass), &desired).await
}

/// Writes the Secret if it differs from what it should hold.
async fn publish(pass: &Pass<'_>, client_id: &str, client_secret: Option<&str>) -> Result<(), Error> {
    let (data, desired) = desired_secret(pass, client_id, client_secret);
    if pass.published.as_ref().is_some_and(|p| p.data == data && secrets::metadata_current(p, &desired)) {
        return Ok(());
    }
    secrets::apply(&secrets_api(pass), &desired).await
}

/// Deletion: the claim, never the status, says which integration is this object's.
async fn cleanup(app: Arc<DatabricksAppConnection>, ctx: &Context) -> Result<Action, Error> {
    let orphan =
        orphaned_by_annotation(app.as_ref()) || app.spec.deletion_policy == AppDeletionPolicy::Orphan;
    let uid = app.uid().unwrap_or_default();
    let account = &app.spec.account_ref.name;
    let owned = ctx.claims.list(&format!("{LABEL_OWNER_UID}={}", claims::label_value(&uid))).await?;
    let kind = ClaimedKind::AppIntegration;
    let Some(claim) = owned.into_iter().find(|c| c.spec.remote.kind == kind && claims::held_by(c, &uid))
    else {
        return Ok(Action::await_change());
    };
    let Some(id) = claim.spec.remote.id.clone() else {
        ctx.claims.delete(&claim).await?;
        return Ok(Action::await_change());
    };
    let remote = format!("app integration {id}");
    let access = ctx.accounts.client_for(account, &app.namespace().unwrap_or_default()).await;
    // Revoked (the namespace may no longer use the account, the kind is no longer delegated or the app no longer
    // fits the delegation's limits, or a revocation is under way) or forbidden by the delegation: no orphaning.
    let not_allowed = access.as_ref().is_err_and(|e| e.reason() == Reason::NamespaceNotAllowed);
    let refused = access.as_ref().is_ok_and(|a| delegated(&a.grants, &app).is_err());
    let revoked = not_allowed || refused || claim.spec.revoked_since.is_some();
    let forbidden = access.as_ref().is_ok_and(|a| !a.grants.caps().allow_orphan);
    let access = match not_allowed {
        true => ctx.accounts.revoking(account, &app.namespace().unwrap_or_default()).await,
        false => access,
    };
    if !deletion::may_delete_remote(app.as_ref(), ctx, orphan && !forbidden, revoked, &remote).await? {
        ctx.claims.delete(&claim).await?;
        return Ok(Action::await_change());
    }
    let Some(access) = deletion::or_abandon(app.as_ref(), ctx, &remote, access, false).await? else {
        ctx.claims.delete(&claim).await?;
        return Ok(Action::await_change());
    };
    access.client.delete_custom_app(&id).await?;
    let note = format!("Deleted app integration {id}; its tokens stop working");
    ctx.event(app.as_ref(), EventType::Normal, "Deleted", "Delete", &note).await;
    ctx.claims.delete(&claim).await?;
    Ok(Action::await_change())
}

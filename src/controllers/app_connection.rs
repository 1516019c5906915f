//! DatabricksAppConnection: a custom OAuth app integration for user-to-machine sign-in, its client id (and, for
//! confidential apps, the secret shown once) published with the OAuth endpoints in an owned Secret.
//!
//! Crash safety: integrations carry no tag, so the intent to create is recorded (`creatingSince`) first; an
//! integration with the same name created after it but never recorded is a leftover of an interrupted create: a
//! public one is adopted, a confidential one (whose secret was lost with the answer) is deleted and created again.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::lifecycle;
use super::{
    ANNOTATION_DELETION_POLICY, ANNOTATION_ROTATE, Context, Error, conditions, patch_status, secrets,
};
use crate::{
    crd::{AppDeletionPolicy, DatabricksAppConnection, DatabricksAppConnectionStatus},
    databricks::{
        AccountClient,
        types::{CreatedCustomApp, CustomApp, CustomAppUpdate, NewCustomApp, TokenAccessPolicy},
    },
};

const CLIENT_SECRET: &str = "DATABRICKS_CLIENT_SECRET";

pub async fn reconcile(app: Arc<DatabricksAppConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let apply =
        async |app: &DatabricksAppConnection, ctx: &Context, status: &mut DatabricksAppConnectionStatus| {
            converge(app, ctx, status).await?;
            let message = format!(
                "App connection {} (client id {}) is in sync; Secret {} is current",
                display_name(app),
                status.client_id.as_deref().unwrap_or("?"),
                secret_name(app)
            );
            Ok((message, ctx.config.jittered_resync()))
        };
    lifecycle::reconcile(app, ctx, apply, published_intact, cleanup).await
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

fn display_name(app: &DatabricksAppConnection) -> String {
    app.spec.display_name.clone().unwrap_or_else(|| app.name_any())
}

fn secret_name(app: &DatabricksAppConnection) -> String {
    app.spec.secret_name.clone().unwrap_or_else(|| format!("{}-oauth-client", app.name_any()))
}

fn desired(app: &DatabricksAppConnection) -> NewCustomApp {
    NewCustomApp {
        name: display_name(app),
        redirect_urls: app.spec.redirect_urls.clone(),
        confidential: app.spec.confidential,
        scopes: app.spec.scopes.clone(),
        user_authorized_scopes: app.spec.user_authorized_scopes.clone(),
        token_access_policy: app.spec.token_access_policy.as_ref().map(|p| TokenAccessPolicy {
            access_token_ttl_in_minutes: p.access_token_ttl_minutes.map(i64::from),
            refresh_token_ttl_in_minutes: p.refresh_token_ttl_minutes.map(i64::from),
            enable_single_use_refresh_tokens: p.enable_single_use_refresh_tokens,
            absolute_session_lifetime_in_minutes: p.absolute_session_lifetime_minutes.map(i64::from),
        }),
    }
}

async fn converge(
    app: &DatabricksAppConnection,
    ctx: &Context,
    status: &mut DatabricksAppConnectionStatus,
) -> Result<(), Error> {
    let generation = app.metadata.generation;
    let (account, client) =
        ctx.accounts.client_for(ctx, &app.spec.account_ref.name, app.namespace().as_deref()).await?;
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let name = secret_name(app);
    let published = match secrets::read_owned(&secrets_api, &name, &app.uid().unwrap_or_default()).await {
        Ok(published) => published,
        Err(err) => {
            conditions::set(
                &mut status.conditions,
                conditions::CREDENTIALS_READY,
                false,
                err.reason(),
                &err.to_string(),
                generation,
            );
            return Err(err);
        }
    };
    let want = desired(app);

    // The integration: recorded, left by an interrupted create, or new.
    let mut existing = match status.integration_id.clone() {
        Some(id) => match client.get_custom_app(&id).await {
            Ok(found) => Some(found),
            Err(err) if err.is_not_found() => {
                ctx.event(
                    app,
                    EventType::Warning,
                    "RemoteDeleted",
                    "Recreate",
                    &format!("App integration {id} was deleted outside the operator; recreating it"),
                )
                .await;
                status.integration_id = None;
                status.client_id = None;
                None
            }
            Err(err) => return Err(err.into()),
        },
        None => recover_interrupted_create(app, ctx, &client, status).await?,
    };

    // A confidential app's secret exists only in the Secret: if it is gone, say so; recreate only on request.
    let rotate_request = app.annotations().get(ANNOTATION_ROTATE).cloned();
    let rotate_requested = rotate_request.is_some() && rotate_request != status.rotate_request;
    let intact_secret = published
        .as_ref()
        .filter(|p| p.checksum_ok && p.data.get("DATABRICKS_CLIENT_ID") == status.client_id.as_ref())
        .and_then(|p| p.data.get(CLIENT_SECRET).cloned());
    if let Some(current) = existing.as_ref()
        && app.spec.confidential
        && (rotate_requested || intact_secret.is_none())
    {
        if !rotate_requested {
            let message = format!(
                "The client secret of confidential app {} is no longer in Secret {name} and Databricks cannot show it again. \
                 Set the annotation {ANNOTATION_ROTATE} to a new value to recreate the integration (this issues a new client id).",
                current.client_id
            );
            conditions::set(
                &mut status.conditions,
                conditions::CREDENTIALS_READY,
                false,
                "SecretLost",
                &message,
                generation,
            );
            return Err(Error::NeedsAttention { reason: "SecretLost", message });
        }
        client.delete_custom_app(&current.integration_id).await?;
        ctx.event(
            app,
            EventType::Normal,
            "Recreating",
            "Rotate",
            &format!("Deleted app integration {} to issue a new client secret", current.integration_id),
        )
        .await;
        status.integration_id = None;
        status.client_id = None;
        existing = None;
    }

    let integration = match existing {
        Some(found) => {
            update_if_drifted(app, ctx, &client, &found, &want).await?;
            // Keep the Secret current (a deleted or edited public app's Secret is rebuilt, labels follow the
            // template); a confidential secret can only be republished from the Secret itself.
            let client_id = status.client_id.clone().unwrap_or_default();
            publish(
                app,
                &secrets_api,
                &account,
                &client,
                &client_id,
                intact_secret.as_deref(),
                published.as_ref(),
            )
            .await?;
            found.integration_id
        }
        None => {
            let created = create(app, ctx, &client, status, &want).await?;
            let secret = created.expose_client_secret().map(str::to_owned);
            publish(
                app,
                &secrets_api,
                &account,
                &client,
                &created.client_id,
                secret.as_deref(),
                published.as_ref(),
            )
            .await?;
            ctx.fail_point("after-publish-app")?;
            created.integration_id.clone()
        }
    };
    if rotate_requested {
        status.rotate_request = rotate_request;
    }
    status.integration_id = Some(integration);
    status.secret_name = Some(name.clone());
    let client_id = status.client_id.clone().unwrap_or_default();
    let message = match app.spec.confidential {
        true => format!("Secret {name} holds the client id and secret of {client_id}"),
        false => format!("Secret {name} holds the client id {client_id} (public client: no secret)"),
    };
    conditions::set(
        &mut status.conditions,
        conditions::CREDENTIALS_READY,
        true,
        "Published",
        &message,
        generation,
    );
    conditions::synced(&mut status.conditions, generation);
    Ok(())
}

/// An integration created by a pass that never recorded it: adopt it (public) or delete it (confidential: its
/// secret was lost); duplicates are deleted.
async fn recover_interrupted_create(
    app: &DatabricksAppConnection,
    ctx: &Context,
    client: &AccountClient,
    status: &mut DatabricksAppConnectionStatus,
) -> Result<Option<CustomApp>, Error> {
    let Some(since) = status.creating_since.as_ref().map(|t| t.0 - SignedDuration::from_secs(5)) else {
        return Ok(None);
    };
    let name = display_name(app);
    let mut leftovers: Vec<CustomApp> = client
        .list_custom_apps()
        .await?
        .into_iter()
        .filter(|a| {
            a.name == name
                && a.create_time
                    .as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .is_some_and(|t| t >= since)
        })
        .collect();
    leftovers.sort_by(|a, b| a.create_time.cmp(&b.create_time));
    let keep = if app.spec.confidential || leftovers.is_empty() { None } else { Some(leftovers.remove(0)) };
    for leftover in leftovers {
        client.delete_custom_app(&leftover.integration_id).await?;
        let message =
            format!("Deleted app integration {} left by an interrupted create", leftover.integration_id);
        ctx.event(app, EventType::Warning, "DuplicateDeleted", "Delete", &message).await;
    }
    if let Some(kept) = &keep {
        status.integration_id = Some(kept.integration_id.clone());
        status.client_id = Some(kept.client_id.clone());
    }
    status.creating_since = None;
    Ok(keep)
}

async fn create(
    app: &DatabricksAppConnection,
    ctx: &Context,
    client: &AccountClient,
    status: &mut DatabricksAppConnectionStatus,
    want: &NewCustomApp,
) -> Result<CreatedCustomApp, Error> {
    status.creating_since = Some(Time(Timestamp::now()));
    patch_status(&lifecycle::api(ctx, app), app, status).await?;
    let created = client.create_custom_app(want).await?;
    ctx.fail_point("after-create-app")?;
    status.integration_id = Some(created.integration_id.clone());
    status.client_id = Some(created.client_id.clone());
    let message =
        format!("Created app integration {} (client id {})", created.integration_id, created.client_id);
    ctx.event(app, EventType::Normal, "Created", "Create", &message).await;
    Ok(created)
}

/// Writes the Secret if it differs from what it should hold.
async fn publish(
    app: &DatabricksAppConnection,
    api: &Api<Secret>,
    account: &crate::crd::DatabricksAccount,
    client: &AccountClient,
    client_id: &str,
    client_secret: Option<&str>,
    current: Option<&secrets::Published>,
) -> Result<(), Error> {
    let mut data = BTreeMap::new();
    data.insert("DATABRICKS_HOST".to_owned(), account.spec.effective_host());
    data.insert("DATABRICKS_ACCOUNT_ID".to_owned(), account.spec.account_id.clone());
    data.insert("DATABRICKS_CLIENT_ID".to_owned(), client_id.to_owned());
    if let Some(secret) = client_secret {
        data.insert(CLIENT_SECRET.to_owned(), secret.to_owned());
    }
    data.insert("DATABRICKS_AUTHORIZATION_ENDPOINT".to_owned(), client.authorization_endpoint());
    data.insert("DATABRICKS_TOKEN_ENDPOINT".to_owned(), client.token_endpoint());
    let desired =
        secrets::build(app, &secret_name(app), data.clone(), BTreeMap::new(), app.spec.template.as_ref());
    if current.is_some_and(|p| p.data == data && secrets::metadata_current(p, &desired)) {
        return Ok(());
    }
    secrets::apply(api, &desired).await
}

/// Reverts changes made in Databricks (and applies spec changes) to what may change in place.
async fn update_if_drifted(
    app: &DatabricksAppConnection,
    ctx: &Context,
    client: &AccountClient,
    current: &CustomApp,
    want: &NewCustomApp,
) -> Result<(), Error> {
    let mut update = CustomAppUpdate::default();
    if current.redirect_urls != want.redirect_urls {
        update.redirect_urls = Some(want.redirect_urls.clone());
    }
    if current.scopes != want.scopes {
        update.scopes = Some(want.scopes.clone());
    }
    if current.user_authorized_scopes != want.user_authorized_scopes {
        update.user_authorized_scopes = Some(want.user_authorized_scopes.clone());
    }
    if current.token_access_policy.clone().unwrap_or_default()
        != want.token_access_policy.clone().unwrap_or_default()
    {
        update.token_access_policy = Some(want.token_access_policy.clone().unwrap_or_default());
    }
    if update == CustomAppUpdate::default() {
        return Ok(());
    }
    client.update_custom_app(&current.integration_id, &update).await?;
    ctx.event(
        app,
        EventType::Normal,
        "Updated",
        "Update",
        &format!("Updated app integration {}", current.integration_id),
    )
    .await;
    Ok(())
}

async fn cleanup(app: Arc<DatabricksAppConnection>, ctx: &Context) -> Result<Action, Error> {
    let orphan =
        app.annotations().get(ANNOTATION_DELETION_POLICY).is_some_and(|v| v.eq_ignore_ascii_case("orphan"))
            || app.spec.deletion_policy == AppDeletionPolicy::Orphan;
    let Some(id) = app.status.as_ref().and_then(|s| s.integration_id.clone()) else {
        return Ok(Action::await_change());
    };
    if !lifecycle::may_delete_remote(app.as_ref(), ctx, orphan, &format!("app integration {id}")).await? {
        return Ok(Action::await_change());
    }
    let (_, client) = ctx.accounts.client_for(ctx, &app.spec.account_ref.name, None).await?;
    client.delete_custom_app(&id).await?;
    ctx.event(
        app.as_ref(),
        EventType::Normal,
        "Deleted",
        "Delete",
        &format!("Deleted app integration {id}; its tokens stop working"),
    )
    .await;
    Ok(Action::await_change())
}

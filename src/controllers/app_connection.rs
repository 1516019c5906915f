//! DatabricksAppConnection: a custom OAuth app integration for user-to-machine sign-in, its client id (and, for
//! confidential apps, the secret shown once) published with the OAuth endpoints in an owned Secret.
//!
//! Ownership: integrations carry no tag in Databricks, so which object owns which integration is recorded in the
//! account's ledger (`status.appConnections` of the DatabricksAccount, which tenants cannot write); the object's
//! own status is only a copy and never trusted. Crash safety: the intent to create is recorded there first; an
//! integration with the same name created after it, owned by no one, is a leftover of this object's interrupted
//! create: a public one is kept, a confidential one (whose secret was lost with the answer) is deleted and
//! created again. While another object of the same name is creating too, the leftover is not touched.

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

use super::{
    ANNOTATION_ROTATE, Context, Error, accounts::Access, conditions, ledger, lifecycle, rollout, secrets,
    service_principal::rotation, tenancy::DelegatedKind,
};
use crate::{
    crd::{
        AppConnectionRecord, AppDeletionPolicy, DatabricksAccountStatus, DatabricksAppConnection,
        DatabricksAppConnectionStatus,
    },
    databricks::{
        AccountClient,
        types::{CreatedCustomApp, CustomApp, CustomAppUpdate, NewCustomApp, TokenAccessPolicy},
    },
};

const CLIENT_SECRET: &str = "DATABRICKS_CLIENT_SECRET";
/// How long after the recorded intent an interrupted create can have taken effect (the client's request timeout
/// and retries are well within it).
const CREATE_WINDOW: SignedDuration = SignedDuration::from_secs(180);
/// App connections one namespace may record on an account (the records live in the account's status).
const MAX_APPS_PER_NAMESPACE: usize = 100;

pub async fn reconcile(app: Arc<DatabricksAppConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let apply = async |app: &DatabricksAppConnection,
                       ctx: &Context,
                       status: &mut DatabricksAppConnectionStatus| {
        let rotation_due = converge(app, ctx, status).await?;
        let message = format!(
            "App connection {} (client id {}) is in sync; Secret {} is current",
            display_name(app),
            status.client_id.as_deref().unwrap_or("?"),
            secret_name(app)
        );
        let resync = ctx.config.jittered_resync();
        Ok((message, rotation_due.map_or(resync, |d| d.min(resync).max(std::time::Duration::from_secs(1)))))
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
) -> Result<Option<std::time::Duration>, Error> {
    let generation = app.metadata.generation;
    let namespace = app.namespace().unwrap_or_default();
    let access = ctx.accounts.client_for(ctx, &app.spec.account_ref.name, &namespace).await?;
    access.grants.check_kind(DelegatedKind::AppConnection)?;
    let Access { account, client, .. } = &access;
    let uid = app.uid().unwrap_or_default();
    let account_name = account.name_any();
    let records = ledger::read(ctx, &account_name).await?;
    let recorded = records.app_connections.get(&uid).and_then(|r| r.integration_id.clone());
    if status.integration_id.is_some() && status.integration_id != recorded {
        // Status was edited (only the operator writes it from the ledger): touch nothing it names.
        let message = format!(
            "status.integrationId {:?} is not the integration this object owns; it was not touched. The operator \
             restores the status from its own record",
            status.integration_id.as_deref().unwrap_or_default()
        );
        ctx.event(app, EventType::Warning, "IdentityMismatch", "Verify", &message).await;
        status.integration_id = None;
        status.client_id = None;
        return Err(Error::Waiting { reason: "IdentityMismatch", message });
    }
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = secret_name(app);
    let published =
        secrets::read_owned_noting(&secrets_api, &name, &uid, &mut status.conditions, generation).await?;
    let want = desired(app);

    // The integration: recorded, left by an interrupted create, or new.
    let mut existing = match recorded {
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
        None => recover_interrupted_create(app, ctx, client, &records).await?,
    };
    if let Some(found) = &existing {
        status.integration_id = Some(found.integration_id.clone());
        status.client_id = Some(found.client_id.clone());
    }

    // A confidential app's secret exists only in the Secret: if it is gone, say so; recreate only on request.
    let rotate_request = app.annotations().get(ANNOTATION_ROTATE).cloned();
    let now = k8s_openapi::jiff::Timestamp::now();
    // A recreation by annotation waits for the least interval since the integration was created.
    let asked = rotate_request.is_some() && rotate_request != status.rotate_request;
    let rotation_waits =
        rotation::rotation_waits(asked, status.rotate_allowed_after.as_ref().map(|t| t.0), now);
    let rotate_requested = asked && rotation_waits.is_none();
    let intact_secret = published
        .as_ref()
        .filter(|p| p.checksum_ok && p.data.get("DATABRICKS_CLIENT_ID") == status.client_id.as_ref())
        .and_then(|p| p.data.get(CLIENT_SECRET).cloned());
    if let Some(current) = existing.as_ref()
        && app.spec.confidential
        && (rotate_requested || intact_secret.is_none())
    {
        if let Some(after) = rotation_waits.filter(|_| intact_secret.is_none()) {
            return Err(Error::Waiting {
                reason: "RotationWaits",
                message: format!(
                    "The integration is recreated for the {ANNOTATION_ROTATE} annotation at {after}: at most once per {}s",
                    ctx.config.rotate_min_interval.as_secs()
                ),
            });
        }
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
            update_if_drifted(app, ctx, client, &found, &want).await?;
            // Keep the Secret current (a deleted or edited public app's Secret is rebuilt, labels follow the
            // template); a confidential secret can only be republished from the Secret itself.
            let client_id = status.client_id.clone().unwrap_or_default();
            publish(
                app,
                &secrets_api,
                account,
                client,
                &client_id,
                intact_secret.as_deref(),
                published.as_ref(),
            )
            .await?;
            found.integration_id
        }
        None => {
            let created = create(app, ctx, client, &records, &account_name, status, &want).await?;
            let secret = created.expose_client_secret().map(str::to_owned);
            publish(
                app,
                &secrets_api,
                account,
                client,
                &created.client_id,
                secret.as_deref(),
                published.as_ref(),
            )
            .await?;
            ctx.fail_point("after-publish-app")?;
            status.rotate_allowed_after =
                rotation::next_rotation_allowed(now, ctx.config.rotate_min_interval).map(Time);
            // A new integration has a new secret: a rotation asked for meanwhile is served by it.
            if asked {
                status.rotate_request = rotate_request.clone();
            }
            created.integration_id.clone()
        }
    };
    if rotate_requested {
        status.rotate_request = rotate_request;
    }
    status.integration_id = Some(integration);
    status.secret_name = Some(name.clone());
    let client_id = status.client_id.clone().unwrap_or_default();
    let mut message = match app.spec.confidential {
        true => format!("Secret {name} holds the client id and secret of {client_id}"),
        false => format!("Secret {name} holds the client id {client_id} (public client: no secret)"),
    };
    let rotation_waits = rotation_waits.filter(|_| app.spec.confidential);
    if let Some(after) = rotation_waits {
        message.push_str(&rotation::waiting_note("recreation", after, ctx.config.rotate_min_interval));
    }
    // Named consumers are rolled onto the Secret's current client (nothing waits for their rollouts: a recreated
    // integration's old client is already gone).
    let rollouts = match app.spec.rollout_restart_targets.is_empty() || client_id.is_empty() {
        true => rollout::Rollouts::default(),
        false => {
            let key = rollout::annotation_key("app", &app.name_any(), &app.uid().unwrap_or_default());
            let targets = &app.spec.rollout_restart_targets;
            rollout::converge(&ctx.client, &namespace, targets, &key, &client_id, &name).await
        }
    };
    rollout::announce(ctx, app, &rollouts, &format!("client {client_id}")).await;
    message.push_str(&rollouts.note(&name));
    conditions::published(&mut status.conditions, &message, generation);
    conditions::synced(&mut status.conditions, generation);
    Ok(rotation_waits
        .map(|after| std::time::Duration::try_from(after.duration_since(now)).unwrap_or_default()))
}

/// An integration created by a pass of this object that never recorded it: kept (public) or deleted
/// (confidential: its secret was lost); duplicates are deleted. Only integrations of this display name, created
/// after this object's recorded intent and owned by no object, are candidates; while another object of the same
/// name has a create in flight that could have made one of them, nothing is touched.
async fn recover_interrupted_create(
    app: &DatabricksAppConnection,
    ctx: &Context,
    client: &AccountClient,
    records: &DatabricksAccountStatus,
) -> Result<Option<CustomApp>, Error> {
    let uid = app.uid().unwrap_or_default();
    let Some(record) = records.app_connections.get(&uid) else { return Ok(None) };
    let Some(since) = record.creating_since.as_ref().map(|t| t.0) else { return Ok(None) };
    let name = display_name(app);
    let listed = client.list_custom_apps().await?;
    let candidates = leftovers(&uid, &name, since, &listed, records)?;
    let mut leftovers: Vec<CustomApp> = candidates.into_iter().cloned().collect();
    leftovers.sort_by(|a, b| a.create_time.cmp(&b.create_time));
    let keep = if app.spec.confidential || leftovers.is_empty() { None } else { Some(leftovers.remove(0)) };
    for leftover in leftovers {
        client.delete_custom_app(&leftover.integration_id).await?;
        let message =
            format!("Deleted app integration {} left by an interrupted create", leftover.integration_id);
        ctx.event(app, EventType::Warning, "DuplicateDeleted", "Delete", &message).await;
    }
    let kept = keep.as_ref().map(|k| k.integration_id.clone());
    ledger::update(ctx, &app.spec.account_ref.name, |ledger| match ledger.app_connections.get_mut(&uid) {
        Some(record) => {
            record.integration_id.clone_from(&kept);
            record.creating_since = None;
            true
        }
        None => false,
    })
    .await?;
    Ok(keep)
}

/// The integrations an interrupted create of object `uid` may have left (pure: see the tests).
fn leftovers<'a>(
    uid: &str,
    name: &str,
    since: Timestamp,
    listed: &'a [CustomApp],
    records: &DatabricksAccountStatus,
) -> Result<Vec<&'a CustomApp>, Error> {
    let slack = SignedDuration::from_secs(5);
    let created = |app: &CustomApp| app.create_time.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let created_after = |app: &CustomApp, since: Timestamp| created(app).is_some_and(|t| t >= since - slack);
    // A create whose answer was lost took effect within the request's time, not at any later point.
    let created_within =
        |app: &CustomApp| created(app).is_some_and(|t| t >= since - slack && t <= since + CREATE_WINDOW);
    let owned = |app: &CustomApp| {
        records
            .app_connections
            .values()
            .any(|r| r.integration_id.as_deref() == Some(app.integration_id.as_str()))
    };
    let candidates: Vec<&CustomApp> =
        listed.iter().filter(|a| a.name == name && created_within(a) && !owned(a)).collect();
    let racing = records.app_connections.iter().filter(|(other, r)| {
        other.as_str() != uid
            && r.display_name == name
            && r.integration_id.is_none()
            && r.creating_since.is_some()
    });
    for (_, other) in racing {
        let other_since = other.creating_since.as_ref().map(|t| t.0).unwrap_or(since);
        if candidates.iter().any(|a| created_after(a, other_since)) {
            return Err(Error::Waiting {
                reason: "CreateInProgress",
                message: format!(
                    "{}/{} is creating an app integration with the same name; waiting for it to record its own",
                    other.namespace, other.name
                ),
            });
        }
    }
    Ok(candidates)
}

async fn create(
    app: &DatabricksAppConnection,
    ctx: &Context,
    client: &AccountClient,
    records: &DatabricksAccountStatus,
    account: &str,
    status: &mut DatabricksAppConnectionStatus,
    want: &NewCustomApp,
) -> Result<CreatedCustomApp, Error> {
    let uid = app.uid().unwrap_or_default();
    let namespace = app.namespace().unwrap_or_default();
    let mine = records.app_connections.iter().filter(|(k, r)| r.namespace == namespace && **k != uid).count();
    if mine >= MAX_APPS_PER_NAMESPACE {
        return Err(Error::NeedsAttention {
            reason: "AppConnectionLimitReached",
            message: format!(
                "Namespace {namespace} already has {mine} app connections on DatabricksAccount {account}, the most \
                 one namespace may have; delete one"
            ),
        });
    }
    let mut record = AppConnectionRecord {
        namespace,
        name: app.name_any(),
        display_name: want.name.clone(),
        integration_id: None,
        creating_since: Some(Time(Timestamp::now())),
    };
    ledger::update(ctx, account, |ledger| {
        ledger.app_connections.insert(uid.clone(), record.clone());
        true
    })
    .await?;
    let created = match client.create_custom_app(want).await {
        Ok(created) => created,
        // Databricks answered "no": nothing was created, so no later integration of this name may be taken for a
        // leftover of this attempt.
        Err(err) if !matches!(err, crate::databricks::Error::Transport { .. }) => {
            ledger::update(ctx, account, |ledger| match ledger.app_connections.get_mut(&uid) {
                Some(record) if record.integration_id.is_none() => {
                    record.creating_since = None;
                    true
                }
                _ => false,
            })
            .await?;
            return Err(err.into());
        }
        Err(err) => return Err(err.into()),
    };
    ctx.fail_point("after-create-app")?;
    record.integration_id = Some(created.integration_id.clone());
    record.creating_since = None;
    ledger::update(ctx, account, |ledger| {
        ledger.app_connections.insert(uid.clone(), record.clone());
        true
    })
    .await?;
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
    let orphan = lifecycle::orphaned_by_annotation(app.as_ref())
        || app.spec.deletion_policy == AppDeletionPolicy::Orphan;
    let uid = app.uid().unwrap_or_default();
    let account = &app.spec.account_ref.name;
    // The ledger, never the status, says which integration is this object's.
    let records = match ledger::read(ctx, account).await {
        Ok(records) => records,
        Err(Error::Account { reason: "AccountNotFound", .. }) => return Ok(Action::await_change()),
        Err(err) => return Err(err),
    };
    let forget = async || {
        ledger::update(ctx, account, |ledger| ledger.app_connections.remove(&uid).is_some()).await.map(drop)
    };
    let Some(id) = records.app_connections.get(&uid).and_then(|r| r.integration_id.clone()) else {
        forget().await?;
        return Ok(Action::await_change());
    };
    let remote = format!("app integration {id}");
    if !lifecycle::may_delete_remote(app.as_ref(), ctx, orphan, &remote).await? {
        forget().await?;
        return Ok(Action::await_change());
    }
    let access = match ctx.accounts.client_for(ctx, account, &app.namespace().unwrap_or_default()).await {
        Ok(access) => access,
        Err(err) if lifecycle::cleanup_abandons(&err) => {
            lifecycle::abandon(app.as_ref(), ctx, &remote, &err).await;
            forget().await?;
            return Ok(Action::await_change());
        }
        Err(err) => return Err(err),
    };
    access.client.delete_custom_app(&id).await?;
    ctx.event(
        app.as_ref(),
        EventType::Normal,
        "Deleted",
        "Delete",
        &format!("Deleted app integration {id}; its tokens stop working"),
    )
    .await;
    forget().await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AppConnectionRecord;

    fn app(id: &str, name: &str, created: &str) -> CustomApp {
        serde_json::from_value(serde_json::json!({
            "integration_id": id, "client_id": format!("client-{id}"), "name": name, "create_time": created,
        }))
        .expect("app")
    }

    fn record(name: &str, integration: Option<&str>, since: Option<&str>) -> AppConnectionRecord {
        AppConnectionRecord {
            namespace: "ns".into(),
            name: name.into(),
            display_name: "portal".into(),
            integration_id: integration.map(str::to_owned),
            creating_since: since.map(|s| Time(s.parse().expect("time"))),
        }
    }

    #[test]
    fn recovery_never_touches_another_objects_integration() {
        let since: Timestamp = "2026-11-30T12:00:00Z".parse().expect("time");
        let listed = [
            app("theirs", "portal", "2026-11-30T12:00:01Z"),
            app("old", "portal", "2026-11-30T11:00:00Z"),
            app("other-name", "intranet", "2026-11-30T12:00:02Z"),
            app("mine", "portal", "2026-11-30T12:00:03Z"),
            app("made-later-by-someone", "portal", "2026-11-30T13:00:00Z"),
        ];
        let mut records = DatabricksAccountStatus::default();
        records.app_connections.insert("me".into(), record("a", None, Some("2026-11-30T12:00:00Z")));
        records.app_connections.insert("them".into(), record("b", Some("theirs"), None));
        let found: Vec<&str> = leftovers("me", "portal", since, &listed, &records)
            .expect("no race")
            .iter()
            .map(|a| a.integration_id.as_str())
            .collect();
        assert_eq!(
            found,
            ["mine"],
            "owned, older, much later and other-named integrations are never candidates"
        );

        // Another object of the same name is creating too: its fresh integration could be any candidate.
        records.app_connections.insert("racer".into(), record("c", None, Some("2026-11-30T12:00:02Z")));
        let err = leftovers("me", "portal", since, &listed, &records).expect_err("ambiguous");
        assert_eq!(err.reason(), "CreateInProgress");
    }
}

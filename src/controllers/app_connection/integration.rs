//! The app integration itself: what the spec asks for, creating it with a recorded intent, recovering a create
//! whose answer was lost, and reverting drift. Integrations carry no tag in Databricks, so which object owns which
//! integration is recorded in the account's ledger (`status.appConnections` of the DatabricksAccount, which tenants
//! cannot write): the intent to create is recorded there first, and an integration with the same name created
//! within the window after it, owned by no one, is a leftover of this object's interrupted create.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use crate::{
    controllers::{
        rules::{
            error::Error,
            intent::{self, parse_time},
            reason::Reason,
        },
        runtime::context::Context,
        services::ledger,
    },
    crd::{
        AppConnectionRecord, DatabricksAccountStatus, DatabricksAppConnection, DatabricksAppConnectionStatus,
    },
    databricks::{
        self, AccountClient,
        types::{CreatedCustomApp, CustomApp, CustomAppUpdate, NewCustomApp, TokenAccessPolicy},
    },
};

/// App connections one namespace may record on an account (the records live in the account's status).
const MAX_APPS_PER_NAMESPACE: usize = 100;

pub fn display_name(app: &DatabricksAppConnection) -> String {
    app.spec.display_name.clone().unwrap_or_else(|| app.name_any())
}

/// The integration the spec asks for.
pub fn desired(app: &DatabricksAppConnection) -> NewCustomApp {
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

/// An integration created by a pass of this object that never recorded it: kept (public) or deleted
/// (confidential: its secret was lost); duplicates are deleted. Only integrations of this display name, created
/// after this object's recorded intent and owned by no object, are candidates; while another object of the same
/// name has a create in flight that could have made one of them, nothing is touched.
pub async fn recover_interrupted_create(
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
    ledger::update(&ctx.client, &app.spec.account_ref.name, |ledger| {
        match ledger.app_connections.get_mut(&uid) {
            Some(record) => {
                record.integration_id.clone_from(&kept);
                record.creating_since = None;
                true
            }
            None => false,
        }
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
    let created = |app: &CustomApp| parse_time(app.create_time.as_deref());
    // A create whose answer was lost took effect within the request's time, not at any later point.
    let created_within = |app: &CustomApp| intent::within(created(app), since);
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
        if candidates.iter().any(|a| intent::after(created(a), other_since)) {
            return Err(Error::Waiting {
                reason: Reason::CreateInProgress,
                message: format!(
                    "{}/{} is creating an app integration with the same name; waiting for it to record its own",
                    other.namespace, other.name
                ),
            });
        }
    }
    Ok(candidates)
}

pub async fn create(
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
            reason: Reason::AppConnectionLimitReached,
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
    ledger::update(&ctx.client, account, |ledger| {
        ledger.app_connections.insert(uid.clone(), record.clone());
        true
    })
    .await?;
    let created = match client.create_custom_app(want).await {
        Ok(created) => created,
        // Databricks answered "no": nothing was created, so no later integration of this name may be taken for a
        // leftover of this attempt.
        Err(err) if !matches!(err, databricks::Error::Transport { .. }) => {
            ledger::update(&ctx.client, account, |ledger| match ledger.app_connections.get_mut(&uid) {
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
    ledger::update(&ctx.client, account, |ledger| {
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

/// Reverts changes made in Databricks (and applies spec changes) to what may change in place.
pub async fn update_if_drifted(
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(err.reason(), Reason::CreateInProgress);
    }
}

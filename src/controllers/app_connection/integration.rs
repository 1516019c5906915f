//! The app integration itself: what the spec asks for, creating it with a recorded intent, recovering a create
//! whose answer was lost, and reverting drift. Integrations carry no tag in Databricks, so which object owns which
//! integration is recorded in the object's DatabricksClaim (cluster-scoped, which tenants cannot write): the
//! intent to create is recorded there first, and an integration with the same name created within the window
//! after it, owned by no claim, is a leftover of this object's interrupted create.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use crate::{
    controllers::{
        rules::{
            claims::{self, LABEL_DISPLAY_NAME, LABEL_OWNER_NAMESPACE, LABEL_REMOTE_ID, Listed, Recovery},
            error::Error,
            intent::parse_time,
            limits::Counted,
            reason::Reason,
        },
        runtime::context::Context,
        services::accounts::Access,
    },
    crd::{
        ClaimedKind, ClaimedObject, DatabricksAppConnection, DatabricksAppConnectionStatus, DatabricksClaim,
    },
    databricks::{
        self, AccountClient, Class,
        types::{CreatedCustomApp, CustomApp, CustomAppUpdate, NewCustomApp, TokenAccessPolicy},
    },
};

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

/// This object's claim on its integration (the intent to create it, then its id), if it has one.
pub async fn own_claim(
    app: &DatabricksAppConnection,
    ctx: &Context,
    account_id: &str,
) -> Result<Option<DatabricksClaim>, Error> {
    let uid = app.uid().unwrap_or_default();
    let claim = ctx.claims.get(&claims::app_claim_name(account_id, &uid)).await?;
    Ok(claim.filter(|c| claims::held_by(c, &uid)))
}

/// The integration a claim records.
pub fn claimed_id(claim: Option<&DatabricksClaim>) -> Option<String> {
    claim.and_then(|c| c.spec.remote.id.clone())
}

/// An integration created by a pass of this object that never recorded it: kept (public) or deleted
/// (confidential: its secret was lost); duplicates are deleted. Only integrations of this display name, created
/// after this object's recorded intent and owned by no claim, are candidates; while an older create of another
/// object of the same name could have made one of them, nothing is touched.
pub async fn recover_interrupted_create(
    app: &DatabricksAppConnection,
    ctx: &Context,
    client: &AccountClient,
    claim: &DatabricksClaim,
) -> Result<Option<CustomApp>, Error> {
    let Some(since) = claim.spec.creating_since.as_ref().map(|t| t.0) else { return Ok(None) };
    let name = display_name(app);
    // Databricks first, then the claims: an integration listed here was created after its creator's intent,
    // which the fresh claims read below therefore sees.
    let listed: Vec<CustomApp> =
        client.list_custom_apps().await?.into_iter().filter(|a| a.name == name).collect();
    let account_id = &claim.spec.account_id;
    let same_name = ctx
        .claims
        .list(&claims::selector(ClaimedKind::AppIntegration, account_id, &[(LABEL_DISPLAY_NAME, &name)]))
        .await?;
    let uid = claim.spec.owner.uid.as_str();
    let owned = |id: &str| same_name.iter().any(|c| c.spec.remote.id.as_deref() == Some(id));
    let view: Vec<Listed<'_>> = listed
        .iter()
        .map(|a| Listed {
            id: &a.integration_id,
            created: parse_time(a.create_time.as_deref()),
            owned: owned(&a.integration_id),
        })
        .collect();
    let racing: Vec<(String, Timestamp)> = same_name
        .iter()
        .filter(|c| c.spec.owner.uid != uid && c.spec.remote.id.is_none())
        .filter_map(|c| Some((c.spec.owner.uid.clone(), c.spec.creating_since.as_ref()?.0)))
        .collect();
    let candidates = match claims::recovery((uid, since), &view, &racing) {
        Recovery::Candidates(ids) => ids.into_iter().map(str::to_owned).collect::<Vec<_>>(),
        Recovery::Wait(racing) => {
            let other = same_name.iter().find(|c| c.spec.owner.uid == racing.owner).map(|c| &c.spec.owner);
            let who =
                other.map_or_else(|| "another object".to_owned(), |o| format!("{}/{}", o.namespace, o.name));
            return Err(Error::Waiting {
                reason: Reason::CreateInProgress,
                message: format!(
                    "{who} is creating an app integration with the same name; waiting for it to record its own"
                ),
            });
        }
    };
    let mut leftovers: Vec<&CustomApp> =
        listed.iter().filter(|a| candidates.contains(&a.integration_id)).collect();
    leftovers.sort_by(|a, b| a.create_time.cmp(&b.create_time));
    let keep =
        if app.spec.confidential || leftovers.is_empty() { None } else { Some(leftovers.remove(0).clone()) };
    for leftover in leftovers {
        client.delete_custom_app(&leftover.integration_id).await?;
        let message =
            format!("Deleted app integration {} left by an interrupted create", leftover.integration_id);
        ctx.event(app, EventType::Warning, "DuplicateDeleted", "Delete", &message).await;
    }
    record(ctx, claim.clone(), keep.as_ref().map(|k| k.integration_id.as_str())).await?;
    Ok(keep)
}

/// Writes `integration` (or none) into the claim and ends its intent.
async fn record(
    ctx: &Context,
    mut claim: DatabricksClaim,
    integration: Option<&str>,
) -> Result<DatabricksClaim, Error> {
    claim.spec.remote.id = integration.map(str::to_owned);
    claim.spec.creating_since = None;
    let labels = claim.metadata.labels.get_or_insert_default();
    match integration {
        Some(id) => labels.insert(LABEL_REMOTE_ID.to_owned(), claims::label_value(id)),
        None => labels.remove(LABEL_REMOTE_ID),
    };
    ctx.claims.replace(&claim).await?.ok_or_else(|| Error::Waiting {
        reason: Reason::CreateInProgress,
        message: format!("the claim {} changed while it was written; looking again", claim.name_any()),
    })
}

/// The intent to create, recorded in this object's claim (created when it has none).
async fn record_intent(
    app: &DatabricksAppConnection,
    ctx: &Context,
    account_id: &str,
    claim: Option<DatabricksClaim>,
) -> Result<DatabricksClaim, Error> {
    let since = Some(Time(Timestamp::now()));
    let mut claim = match claim {
        Some(claim) => claim,
        None => {
            let name = display_name(app);
            let remote = ClaimedObject {
                kind: ClaimedKind::AppIntegration,
                display_name: Some(name.clone()),
                ..ClaimedObject::default()
            };
            let uid = app.uid().unwrap_or_default();
            let mut new = claims::new_claim(
                &claims::app_claim_name(account_id, &uid),
                account_id,
                claims::owner_of(app),
                remote,
                &[(LABEL_DISPLAY_NAME, &name)],
            );
            new.spec.creating_since = since;
            return match ctx.claims.create(&new).await? {
                Ok(created) => Ok(created),
                Err(existing) => Err(lost_claim(&existing)),
            };
        }
    };
    claim.spec.creating_since = since;
    ctx.claims.replace(&claim).await?.ok_or_else(|| lost_claim(&claim))
}

fn lost_claim(claim: &DatabricksClaim) -> Error {
    Error::Waiting {
        reason: Reason::CreateInProgress,
        message: format!("the claim {} changed while it was written; looking again", claim.name_any()),
    }
}

/// Creates the integration: the intent recorded first, the id right after.
pub async fn create(
    app: &DatabricksAppConnection,
    ctx: &Context,
    access: &Access,
    claim: Option<DatabricksClaim>,
    status: &mut DatabricksAppConnectionStatus,
    want: &NewCustomApp,
) -> Result<CreatedCustomApp, Error> {
    let account_id = &access.account.spec.account_id;
    // Admitted by the budget before the intent is written: a deferred create must not cost two claim writes.
    access.client.admit("apps.create", Class::Write)?;
    check_limit(app, ctx, access).await?;
    let claim = record_intent(app, ctx, account_id, claim).await?;
    let created = match access.client.create_custom_app(want).await {
        Ok(created) => created,
        // Databricks answered "no": nothing was created, so no later integration of this name may be taken for a
        // leftover of this attempt.
        Err(err) if !matches!(err, databricks::Error::Transport { .. }) => {
            record(ctx, claim, None).await?;
            return Err(err.into());
        }
        Err(err) => return Err(err.into()),
    };
    ctx.fail_point("after-create-app")?;
    record(ctx, claim, Some(&created.integration_id)).await?;
    status.integration_id = Some(created.integration_id.clone());
    status.client_id = Some(created.client_id.clone());
    let message =
        format!("Created app integration {} (client id {})", created.integration_id, created.client_id);
    ctx.event(app, EventType::Normal, "Created", "Create", &message).await;
    Ok(created)
}

/// At most the delegation's cap of app connections per namespace and account.
async fn check_limit(app: &DatabricksAppConnection, ctx: &Context, access: &Access) -> Result<(), Error> {
    if access.grants.caps().cap(Counted::AppConnections).is_none() {
        return Ok(());
    }
    let namespace = app.namespace().unwrap_or_default();
    let uid = app.uid().unwrap_or_default();
    let account_id = &access.account.spec.account_id;
    let selector =
        claims::selector(ClaimedKind::AppIntegration, account_id, &[(LABEL_OWNER_NAMESPACE, &namespace)]);
    let have = ctx.claims.list(&selector).await?.iter().filter(|c| c.spec.owner.uid != uid).count();
    access.grants.check_count(Counted::AppConnections, have).map_err(Error::from)
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

//! The principal's OAuth secret: minted, published in an owned Secret, verified, rotated before expiry and
//! retired after a grace period, with every step safe to interrupt: the intent to mint is recorded before a secret
//! is created on an adopted principal, the Secret is written right after the mint, and on every pass the remote
//! secret list is reconciled against what is published and retiring. The decisions are `rotation`'s.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, ResourceExt, runtime::events::EventType};

use super::{
    identity::Principal,
    rotation::{self, Mint},
};
use crate::{
    controllers::{
        rules::{
            conditions,
            error::Error,
            intent::parse_time,
            meta::{ANNOTATION_EXPIRE_TIME, ANNOTATION_ROTATE, ANNOTATION_SECRET_ID, keys},
            reason::Reason,
            rotate_request::{self, RotateRequest},
        },
        runtime::context::Context,
        services::{
            accounts::Access,
            rollout::{self, Rollouts},
            secrets::{self, Published},
        },
    },
    crd::{
        Credentials, CredentialsStatus, DatabricksAccount, DatabricksClaim, RetiringSecret, ServicePrincipal,
        ServicePrincipalStatus, parse_duration,
    },
    databricks::{
        AccountClient, MAX_SECRETS_PER_PRINCIPAL,
        types::{CreatedSecret, SecretInfo},
    },
};

/// The keys a workload reads (`envFrom`), the Databricks SDK's own names.
fn secret_data(
    account_host: &str,
    account_id: &str,
    host_override: Option<&str>,
    client_id: &str,
    secret: &str,
) -> BTreeMap<String, String> {
    let host = host_override.unwrap_or(account_host);
    let account_host = host_override.is_none_or(|h| h.trim_end_matches('/') == account_host);
    let mut data = secrets::connection_data(host, account_host.then_some(account_id), client_id);
    data.insert(keys::CLIENT_SECRET.to_owned(), secret.to_owned());
    data
}

/// What one pass of the credentials works with.
struct Pass<'a> {
    sp: &'a ServicePrincipal,
    ctx: &'a Context,
    client: &'a AccountClient,
    account: &'a DatabricksAccount,
    principal: &'a Principal,
    spec: &'a Credentials,
    secret_name: String,
    secrets: Api<Secret>,
    lifetime: Duration,
    /// The delegation's cap, when it shortened the requested lifetime.
    capped: Option<Duration>,
    renew_before: Duration,
}

/// What the pass read, and what it has done so far.
struct Observed {
    /// The Secret as read (`None`: absent).
    published: Option<Published>,
    /// Its content is intact: the checksum holds, and it holds this principal's client id and a secret value.
    intact: bool,
    /// The OAuth secret the Secret publishes, when it is intact and that secret still exists in Databricks.
    published_id: Option<String>,
    /// The principal's OAuth secrets in Databricks.
    remote: Vec<SecretInfo>,
    /// A copy of the record: if the pass fails midway, status keeps what was last recorded (every step is safe to
    /// redo from it), not a half-updated record or none.
    creds: CredentialsStatus,
    /// When the reads were done: the pass's "now".
    now: Timestamp,
    /// The principal's claim: on an adopted principal, the only record of which OAuth secrets are the operator's
    /// (the object's status, which whoever may write `/status` can edit, never decides a deletion there).
    claim: DatabricksClaim,
}

impl Observed {
    /// Whether the OAuth secret `id` is the operator's to publish and delete: every secret of a created principal,
    /// only those its claim records on an adopted one.
    fn owned(&self, id: &str) -> bool {
        !self.claim.spec.adopted || self.claim.spec.secrets.iter().any(|s| s == id)
    }

    /// The secret value the Secret publishes, when intact.
    fn published_value(&self) -> Option<&String> {
        self.published.as_ref().filter(|_| self.intact).and_then(|p| p.data.get(keys::CLIENT_SECRET))
    }

    fn remote(&self, id: Option<&String>) -> Option<&SecretInfo> {
        id.and_then(|id| self.remote.iter().find(|s| &s.id == id))
    }
}

/// Keeps a verified OAuth secret published; returns when the credentials need looking at again.
pub async fn sync_credentials(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &Principal,
    spec: &Credentials,
    status: &mut ServicePrincipalStatus,
) -> Result<Option<Duration>, Error> {
    let pass = Pass::new(sp, ctx, access, principal, spec);
    let mut seen = observe(&pass, status, principal.claim.clone()).await?;
    settle_published(&pass, &mut seen).await?;
    prune(&pass, &mut seen).await?;
    let request = rotate_request(&pass, &seen);
    let current = seen.remote(seen.published_id.as_ref());
    let renew_at = rotation::renew_at(
        parse_time(current.and_then(|s| s.create_time.as_deref())),
        parse_time(current.and_then(|s| s.expire_time.as_deref())),
        pass.capped,
        pass.renew_before,
    );
    let listed = current.and_then(|s| s.scopes.as_deref());
    let scopes_changed = rotation::scopes_changed(&spec.scopes, listed, &seen.creds.scopes);
    let published = seen.published_id.is_some();
    match rotation::mint(published, request.now(), scopes_changed, renew_at, seen.now) {
        Some(Mint::Created) => {
            repair_pace(&pass, &seen)?;
            mint(&pass, &mut seen, Mint::Created, &request).await?
        }
        Some(Mint::ScopesChanged) => {
            // Paced as the rotate annotation is: a spec edited in a loop, or a listing that never agrees with
            // what was minted, mints at most once per interval.
            let interval = pass.ctx.config.rotate_min_interval;
            pace(&seen, interval, Reason::RotationWaits, "credentials.scopes changed; the new secret")?;
            mint(&pass, &mut seen, Mint::ScopesChanged, &request).await?
        }
        Some(why) => mint(&pass, &mut seen, why, &request).await?,
        None => refresh(&pass, &seen).await?,
    }
    let rollouts = roll_and_retire(&pass, &mut seen).await?;
    Ok(describe(&pass, seen, status, request.waits, &rollouts))
}

/// The rotate annotation's request. Its guard counts from the newest secret the operator minted, by Databricks'
/// record, so a status edit cannot shorten it (the recorded `rotateAllowedAfter` can only lengthen it).
fn rotate_request(pass: &Pass<'_>, seen: &Observed) -> RotateRequest {
    let value = pass.sp.annotations().get(ANNOTATION_ROTATE).cloned();
    let last = rotation::last_minted(&seen.remote, |id| seen.owned(id));
    let guard =
        last.and_then(|t| rotate_request::next_rotation_allowed(t, pass.ctx.config.rotate_min_interval));
    let recorded = seen.creds.rotate_allowed_after.as_ref().map(|t| t.0);
    let allowed_after = guard.max(recorded);
    RotateRequest::new(value, seen.creds.rotate_request.as_ref(), allowed_after, seen.now)
}

/// A Secret lost soon after the last mint (deleted or edited in a loop) is repaired at most once per
/// `--repair-min-interval`; a first mint is never paced.
fn repair_pace(pass: &Pass<'_>, seen: &Observed) -> Result<(), Error> {
    let interval = pass.ctx.config.repair_min_interval;
    let what = format!("Secret {} was lost soon after the last mint; it", pass.secret_name);
    pace(seen, interval, Reason::RepairPaced, &what)
}

/// A mint asked for sooner than `interval` after the last one waits (`what` is what waits, as a sentence start).
fn pace(seen: &Observed, interval: Duration, reason: Reason, what: &str) -> Result<(), Error> {
    let last = rotation::last_minted(&seen.remote, |id| seen.owned(id));
    let Some(after) = rotation::paced(last, interval, seen.now) else { return Ok(()) };
    let wake = Duration::try_from(after.duration_since(seen.now)).unwrap_or(Duration::ZERO);
    let message = format!("{what} is minted at {after} (at most once per {}s)", interval.as_secs());
    Err(Error::Paced { reason, message, wake })
}

impl<'a> Pass<'a> {
    fn new(
        sp: &'a ServicePrincipal,
        ctx: &'a Context,
        access: &'a Access,
        principal: &'a Principal,
        spec: &'a Credentials,
    ) -> Self {
        let requested = parse_duration(&spec.lifetime).unwrap_or(Duration::from_secs(90 * 86_400));
        let (lifetime, capped) = access.grants.caps().lifetime(requested);
        // A cap can make the requested renewal window longer than the lifetime: renew a third before expiry then.
        let renew_before = spec
            .renew_before
            .as_deref()
            .and_then(parse_duration)
            .filter(|r| *r < lifetime)
            .unwrap_or(lifetime / 3);
        Self {
            sp,
            ctx,
            client: &access.client,
            account: &access.account,
            principal,
            spec,
            secret_name: spec.secret_name.clone().unwrap_or_else(|| format!("{}-databricks", sp.name_any())),
            secrets: Api::namespaced(ctx.client.clone(), &sp.namespace().unwrap_or_default()),
            lifetime,
            capped,
            renew_before,
        }
    }

    /// A secret replaced at `now`, deleted once the grace period has passed.
    fn retire(&self, secret_id: String, now: Timestamp) -> RetiringSecret {
        RetiringSecret { secret_id, delete_after: Time(now + to_signed(self.ctx.config.rotation_grace)) }
    }

    /// The Secret publishing `value` (OAuth secret `id`, expiring at `expire`).
    fn desired_secret(
        &self,
        value: &str,
        id: &str,
        expire: Option<String>,
    ) -> (BTreeMap<String, String>, Secret) {
        let mut data = secret_data(
            &self.account.spec.effective_host(),
            &self.account.spec.account_id,
            self.spec.host.as_deref(),
            &self.principal.application_id,
            value,
        );
        if !self.spec.scopes.is_empty() {
            data.insert(keys::SCOPES.to_owned(), self.spec.scopes.join(" "));
        }
        let mut annotations = BTreeMap::new();
        annotations.insert(ANNOTATION_SECRET_ID.to_owned(), id.to_owned());
        if let Some(expire) = expire {
            annotations.insert(ANNOTATION_EXPIRE_TIME.to_owned(), expire);
        }
        let secret = secrets::build(
            self.sp,
            &self.secret_name,
            data.clone(),
            annotations,
            self.spec.template.as_ref(),
        );
        (data, secret)
    }

    async fn event(&self, type_: EventType, reason: &str, action: &str, note: &str) {
        self.ctx.event(self.sp, type_, reason, action, note).await;
    }
}

/// Reads the Secret and the principal's OAuth secrets (none when this pass created the principal).
async fn observe(
    pass: &Pass<'_>,
    status: &mut ServicePrincipalStatus,
    claim: DatabricksClaim,
) -> Result<Observed, Error> {
    let (sp, principal) = (pass.sp, pass.principal);
    let generation = sp.metadata.generation;
    let uid = sp.uid().unwrap_or_default();
    let noted = &mut status.conditions;
    let published =
        secrets::read_owned_noting(&pass.secrets, &pass.secret_name, &uid, noted, generation).await?;
    let remote = match principal.created {
        true => Vec::new(),
        false => pass.client.list_secrets(&principal.id).await?,
    };
    let mut creds = status.credentials.clone().unwrap_or_default();
    creds.secret_name = Some(pass.secret_name.clone());
    let intact = published.as_ref().is_some_and(|p| {
        p.checksum_ok
            && p.data.get(keys::CLIENT_ID) == Some(&principal.application_id)
            && p.data.get(keys::CLIENT_SECRET).is_some_and(|v| !v.is_empty())
    });
    let mut seen =
        Observed { published, intact, published_id: None, remote, creds, now: Timestamp::now(), claim };
    seen.published_id = seen
        .published
        .as_ref()
        .filter(|_| intact)
        .and_then(|p| p.secret_id.clone())
        .filter(|id| seen.remote.iter().any(|s| &s.id == id) && seen.owned(id));
    Ok(seen)
}

/// Says when the Secret was edited by hand; and takes up a Secret written by a pass that did not get to record
/// it (or not yet verified): verify it, then retire the previously recorded secret.
async fn settle_published(pass: &Pass<'_>, seen: &mut Observed) -> Result<(), Error> {
    if seen.published.is_some() && !seen.intact {
        let note = format!("Secret {} was edited by hand; publishing a new secret", pass.secret_name);
        pass.event(EventType::Warning, "SecretTampered", "Repair", &note).await;
    }
    let Some(new) = seen.published_id.clone().filter(|new| seen.creds.secret_id.as_ref() != Some(new)) else {
        return Ok(());
    };
    let value = seen.published_value().cloned().unwrap_or_default();
    // Minted by that pass with the scopes it wrote into the Secret (the listing's word first).
    let listed = seen.remote(Some(&new)).and_then(|s| s.scopes.clone());
    let written = seen.published.as_ref().and_then(|p| p.data.get(keys::SCOPES)).map(|s| split_scopes(s));
    let scopes = listed.or(written).unwrap_or_default();
    verify(pass.client, &pass.principal.application_id, &value, &scopes).await?;
    let (creds, now) = (&mut seen.creds, seen.now);
    creds.scopes = scopes;
    if let Some(old) = creds.secret_id.take() {
        creds.retiring.push(pass.retire(old, now));
    }
    creds.secret_id = Some(new);
    // That pass minted: the rotate guard counts from it (and the request it served is served).
    let interval = pass.ctx.config.rotate_min_interval;
    creds.rotate_allowed_after = rotate_request::next_rotation_allowed(now, interval).map(Time);
    creds.rotate_request =
        pass.sp.annotations().get(ANNOTATION_ROTATE).cloned().or(creds.rotate_request.take());
    Ok(())
}

/// Retires a secret the Secret no longer publishes, forgets retiring secrets that are gone, and deletes the
/// leftovers of an interrupted mint (created but never published).
async fn prune(pass: &Pass<'_>, seen: &mut Observed) -> Result<(), Error> {
    let owned: Vec<String> = seen.remote.iter().map(|s| s.id.clone()).filter(|id| seen.owned(id)).collect();
    let creds = &mut seen.creds;
    if seen.published_id.is_none()
        && let Some(old) = creds.secret_id.take()
        && owned.contains(&old)
    {
        // The Secret lost it: the old value is gone from the cluster, nothing can still use it after a grace.
        creds.retiring.push(pass.retire(old, seen.now));
    }
    creds.retiring.retain(|r| owned.contains(&r.secret_id));
    let known: Vec<&str> = seen
        .published_id
        .iter()
        .map(String::as_str)
        .chain(creds.retiring.iter().map(|r| r.secret_id.as_str()))
        .collect();
    // An adopted principal's mint intent is in its claim (never in status).
    let adopted = seen.claim.spec.adopted;
    let minting_since = seen.claim.spec.creating_since.as_ref().map(|t| t.0).filter(|_| adopted);
    let leftovers: Vec<SecretInfo> =
        rotation::leftovers(&seen.remote, &known, adopted, minting_since).into_iter().cloned().collect();
    for leftover in &leftovers {
        pass.client.delete_secret(&pass.principal.id, &leftover.id).await?;
        let note =
            format!("Deleted secret {} that an interrupted pass created but never published", leftover.id);
        pass.event(EventType::Warning, "UnpublishedSecretDeleted", "Delete", &note).await;
    }
    seen.remote.retain(|s| !leftovers.iter().any(|l| l.id == s.id));
    creds.minting_since = None;
    if adopted {
        let remote = &seen.remote;
        let mut claim = seen.claim.clone();
        claim.spec.secrets.retain(|id| remote.iter().any(|s| &s.id == id));
        claim.spec.creating_since = None;
        if claim.spec != seen.claim.spec {
            seen.claim = pass.ctx.claims.written(&claim).await?;
        }
    }
    Ok(())
}

/// Mints a new OAuth secret and publishes it: room made first (never by touching secrets the operator does not
/// know), the intent recorded first on an adopted principal, the Secret written right after the create and the
/// secret verified before the previous one is retired.
async fn mint(pass: &Pass<'_>, seen: &mut Observed, why: Mint, request: &RotateRequest) -> Result<(), Error> {
    let (ctx, client, principal_id) = (pass.ctx, pass.client, &pass.principal.id);
    let (_, placeholder) = pass.desired_secret("placeholder", "placeholder", None);
    secrets::check_admissible(&pass.secrets, &placeholder).await?;
    make_room(pass, seen).await?;
    // Only an adopted principal can hold secrets the operator did not make, so only there must the intent be on
    // record before minting (every unknown secret of a created principal is a leftover), in its claim.
    if seen.claim.spec.adopted {
        let mut intent = seen.claim.clone();
        intent.spec.creating_since = Some(Time(seen.now));
        seen.claim = ctx.claims.written(&intent).await?;
    }
    let created = client.create_scoped_secret(principal_id, pass.lifetime, &pass.spec.scopes).await?;
    ctx.fail_point("after-create-secret")?;
    let proven = prove_bound(pass, &created).await?;
    let id = &created.info.id;
    let (_, secret) = pass.desired_secret(created.expose_secret(), id, created.info.expire_time.clone());
    if let Err(err) = secrets::apply(&pass.secrets, &secret).await {
        if err.reason() == Reason::SecretRejected {
            // Refused since the dry run (a quota filled meanwhile): never published, so nothing can use it.
            client.delete_secret(principal_id, id).await?;
        }
        return Err(err);
    }
    ctx.fail_point("after-write-secret")?;
    if !proven {
        verify(client, &pass.principal.application_id, created.expose_secret(), &pass.spec.scopes).await?;
    }
    record_minted(pass, seen, id).await?;
    let creds = &mut seen.creds;
    creds.scopes = pass.spec.scopes.clone();
    if let Some(old) = seen.published_id.clone() {
        creds.retiring.push(pass.retire(old, seen.now));
    }
    creds.secret_id = Some(id.clone());
    creds.minting_since = None;
    // From the mint itself, not the start of the pass: the interval is between secrets created.
    let interval = ctx.config.rotate_min_interval;
    creds.rotate_allowed_after = rotate_request::next_rotation_allowed(Timestamp::now(), interval).map(Time);
    if request.requested {
        creds.rotate_request = request.value.clone();
    }
    seen.remote.push(created.info.clone());
    let note = format!("Published secret {id} in Secret {}", pass.secret_name);
    pass.event(EventType::Normal, why.reason(), "Publish", &note).await;
    Ok(())
}

fn split_scopes(scopes: &str) -> Vec<String> {
    scopes.split_whitespace().map(str::to_owned).collect()
}

/// A secret minted with scopes is bound to them, before it is published: Databricks said so, it authenticates
/// for them, and it is refused a token for `all-apis` (a Beta field an account ignored would otherwise publish an
/// unrestricted secret as a restricted one). One that is not is deleted at once. Returns whether it was proven
/// (it then needs no second verification once published); an unscoped secret has nothing to prove.
async fn prove_bound(pass: &Pass<'_>, created: &CreatedSecret) -> Result<bool, Error> {
    let wanted = &pass.spec.scopes;
    if wanted.is_empty() || wanted.iter().any(|s| s == "all-apis") {
        return Ok(false);
    }
    let said = created.info.scopes.as_deref().is_none_or(|s| !rotation::scopes_changed(wanted, Some(s), &[]));
    let (client, app_id) = (pass.client, &pass.principal.application_id);
    // Authenticating first (with its scopes) rules out a refusal that only says the secret is not live yet.
    verify(client, app_id, created.expose_secret(), wanted).await?;
    let unbound = !said || client.verify_client_credentials(app_id, created.expose_secret()).await.is_ok();
    if !unbound {
        return Ok(true);
    }
    pass.client.delete_secret(&pass.principal.id, &created.info.id).await?;
    Err(Error::NeedsAttention {
        reason: Reason::VerificationFailed,
        message: format!(
            "Databricks did not bind the new secret to credentials.scopes {wanted:?} (it could get an all-apis \
             token, or listed other scopes); it was deleted. Does this account support scoped secrets (Beta)?"
        ),
    })
}

/// Records a secret minted on an adopted principal in its claim. A claim released meanwhile gets no new secret:
/// it is deleted at once.
async fn record_minted(pass: &Pass<'_>, seen: &mut Observed, id: &str) -> Result<(), Error> {
    if !seen.claim.spec.adopted {
        return Ok(());
    }
    let mut claim = seen.claim.clone();
    claim.spec.secrets.push(id.to_owned());
    claim.spec.creating_since = None;
    match pass.ctx.claims.replace(&claim).await? {
        Some(written) if !written.spec.releasing => {
            seen.claim = written;
            Ok(())
        }
        _ => {
            pass.client.delete_secret(&pass.principal.id, id).await?;
            Err(Error::Waiting {
                reason: Reason::AdoptionNotRecorded,
                message: format!(
                    "The claim on {} changed while a secret was minted; it was deleted",
                    pass.principal.application_id
                ),
            })
        }
    }
}

/// Forgets secrets deleted from an adopted principal in its claim.
async fn forget_secrets(pass: &Pass<'_>, seen: &mut Observed, deleted: &[String]) -> Result<(), Error> {
    if !seen.claim.spec.adopted || deleted.is_empty() {
        return Ok(());
    }
    let mut claim = seen.claim.clone();
    claim.spec.secrets.retain(|id| !deleted.contains(id));
    seen.claim = pass.ctx.claims.written(&claim).await?;
    Ok(())
}

/// At most 5 secrets: room by retiring the soonest-due retiring secret early, or a condition a person must act on.
async fn make_room(pass: &Pass<'_>, seen: &mut Observed) -> Result<(), Error> {
    let principal_id = &pass.principal.id;
    match rotation::make_room(seen.remote.len(), MAX_SECRETS_PER_PRINCIPAL, &mut seen.creds.retiring) {
        Ok(None) => Ok(()),
        Ok(Some(oldest)) => {
            pass.client.delete_secret(principal_id, &oldest.secret_id).await?;
            seen.remote.retain(|s| s.id != oldest.secret_id);
            forget_secrets(pass, seen, &[oldest.secret_id]).await
        }
        Err(()) => Err(Error::NeedsAttention {
            reason: Reason::SecretLimitReached,
            message: format!(
                "Service principal {principal_id} already has {} OAuth secrets not managed by this object; delete \
                 one in Databricks",
                seen.remote.len()
            ),
        }),
    }
}

/// Keeps the Secret's non-secret keys, labels and annotations current without minting.
async fn refresh(pass: &Pass<'_>, seen: &Observed) -> Result<(), Error> {
    let (Some(value), Some(id)) = (seen.published_value(), seen.published_id.as_ref()) else { return Ok(()) };
    let expire = seen.remote(Some(id)).and_then(|s| s.expire_time.clone());
    let (data, desired) = pass.desired_secret(value, id, expire);
    if seen.published.as_ref().is_none_or(|p| p.data != data || !secrets::metadata_current(p, &desired)) {
        secrets::apply(&pass.secrets, &desired).await?;
    }
    Ok(())
}

/// Rolls the named consumers onto the current secret, then deletes the replaced secrets that the grace period
/// and those rollouts have passed.
async fn roll_and_retire(pass: &Pass<'_>, seen: &mut Observed) -> Result<Rollouts, Error> {
    let (sp, ctx) = (pass.sp, pass.ctx);
    let creds = &mut seen.creds;
    let rollouts = match creds.secret_id.as_deref() {
        Some(id) if !pass.spec.rollout_restart_targets.is_empty() => {
            let key = rollout::annotation_key("sp", &sp.name_any(), &sp.uid().unwrap_or_default());
            let targets = &pass.spec.rollout_restart_targets;
            let namespace = sp.namespace().unwrap_or_default();
            rollout::roll(&ctx.client, &namespace, targets, &key, id, &pass.secret_name).await
        }
        _ => Rollouts::default(),
    };
    let onto = format!("secret {}", creds.secret_id.as_deref().unwrap_or("?"));
    rollout::announce(&ctx.events, sp, &rollouts, &onto).await;
    let (due, kept) = rotation::past_grace(std::mem::take(&mut creds.retiring), seen.now, rollouts.done());
    creds.retiring = kept;
    for retiring in &due {
        pass.client.delete_secret(&pass.principal.id, &retiring.secret_id).await?;
        let note = format!("Deleted replaced secret {} after the rotation grace period", retiring.secret_id);
        pass.event(EventType::Normal, "SecretRetired", "Delete", &note).await;
    }
    let deleted: Vec<String> = due.into_iter().map(|r| r.secret_id).collect();
    forget_secrets(pass, seen, &deleted).await?;
    Ok(rollouts)
}

/// Records the published secret's times and the condition, and returns when to look again.
fn describe(
    pass: &Pass<'_>,
    seen: Observed,
    status: &mut ServicePrincipalStatus,
    rotation_waits: Option<Timestamp>,
    rollouts: &Rollouts,
) -> Option<Duration> {
    let (sp, ctx) = (pass.sp, pass.ctx);
    let current = seen.remote(seen.creds.secret_id.as_ref()).cloned();
    let mut creds = seen.creds;
    creds.create_time = current.as_ref().and_then(|s| parse_time(s.create_time.as_deref())).map(Time);
    creds.expire_time = current.as_ref().and_then(|s| parse_time(s.expire_time.as_deref())).map(Time);
    creds.renew_time = creds.expire_time.as_ref().map(|e| Time(e.0 - to_signed(pass.renew_before)));
    if let Some(expire) = &creds.expire_time {
        let labels = crate::metrics::ObjectLabels {
            namespace: sp.namespace().unwrap_or_default(),
            name: sp.name_any(),
        };
        ctx.metrics.credential_expiry.get_or_create(&labels).set(expire.0.as_second());
    }
    // Only when no mint happened does the request still wait.
    let rotation_waits =
        rotation_waits.filter(|_| creds.rotate_request != sp.annotations().get(ANNOTATION_ROTATE).cloned());
    let mut message = format!(
        "Secret {} holds verified secret {} (expires {}, rotates {})",
        pass.secret_name,
        creds.secret_id.as_deref().unwrap_or("?"),
        creds.expire_time.as_ref().map_or("never".to_owned(), |t| t.0.to_string()),
        creds.renew_time.as_ref().map_or("never".to_owned(), |t| t.0.to_string()),
    );
    if let Some(after) = rotation_waits {
        message.push_str(&rotate_request::waiting_note("rotation", after, ctx.config.rotate_min_interval));
    }
    if let Some(cap) = pass.capped {
        message.push_str(&format!("; lifetime capped at {}s by the delegation", cap.as_secs()));
    }
    message.push_str(&rollouts.note(&pass.secret_name));
    conditions::published(&mut status.conditions, &message, sp.metadata.generation);
    let retiring: Vec<Timestamp> = creds.retiring.iter().map(|r| r.delete_after.0).collect();
    let renew = creds.renew_time.as_ref().map(|t| t.0);
    let wake = rotation::next_wake(renew, &retiring, rotation_waits, rollouts.done(), Timestamp::now())
        .map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO));
    status.credentials = Some(creds);
    wake
}

fn to_signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Proves new credentials work before anything relies on them. A brand-new secret may take a moment to be
/// accepted, so `invalid_client` is retried briefly.
/// Whether `secret` authenticates, asking for the `scopes` it was minted with (a scoped secret refuses more).
async fn verify(
    client: &AccountClient,
    application_id: &str,
    secret: &str,
    scopes: &[String],
) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.verify_scoped_credentials(application_id, secret, scopes).await {
            Ok(_) => return Ok(()),
            Err(err) if err.is_unauthenticated() && attempt < 4 => {
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await
            }
            Err(err) => {
                return Err(Error::NeedsAttention {
                    reason: Reason::VerificationFailed,
                    message: format!("The new OAuth secret does not authenticate: {err}"),
                });
            }
        }
    }
}

/// Deletes every OAuth secret a record names (published and retiring) from principal `id`.
pub async fn delete_recorded_secrets(
    client: &AccountClient,
    id: &str,
    recorded: Option<&CredentialsStatus>,
) -> Result<(), Error> {
    let Some(creds) = recorded else { return Ok(()) };
    for secret in creds.secret_id.iter().chain(creds.retiring.iter().map(|r| &r.secret_id)) {
        client.delete_secret(id, secret).await?;
    }
    Ok(())
}

/// `credentials` omitted or `type: None`: no secret is kept; remove what the operator published.
pub async fn drop_credentials(
    sp: &ServicePrincipal,
    ctx: &Context,
    client: &AccountClient,
    principal: &mut Principal,
    status: &mut ServicePrincipalStatus,
) -> Result<(), Error> {
    let Some(creds) = status.credentials.take() else { return Ok(()) };
    // An adopted principal's secrets are the claim's to name, never the status's.
    if principal.claim.spec.adopted {
        let mut claim = principal.claim.clone();
        for id in std::mem::take(&mut claim.spec.secrets) {
            client.delete_secret(&principal.id, &id).await?;
        }
        principal.claim = ctx.claims.written(&claim).await?;
    } else {
        delete_recorded_secrets(client, &principal.id, Some(&creds)).await?;
    }
    if let Some(name) = &creds.secret_name {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &sp.namespace().unwrap_or_default());
        if secrets::read_owned(&api, name, &sp.uid().unwrap_or_default()).await.ok().flatten().is_some() {
            api.delete(name, &Default::default())
                .await
                .map_err(|e| Error::kube(format!("deleting Secret {name}"), e))?;
        }
    }
    status.conditions.retain(|c| c.type_ != conditions::CREDENTIALS_READY);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_the_sdk_names() {
        let data = secret_data("https://accounts.example.com", "acct", None, "app", "value");
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["DATABRICKS_ACCOUNT_ID", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_HOST"]
        );
        let workspace =
            secret_data("https://accounts.example.com", "acct", Some("https://ws.example.com"), "app", "v");
        assert!(!workspace.contains_key("DATABRICKS_ACCOUNT_ID"), "a workspace host needs no account id");
        assert_eq!(workspace["DATABRICKS_HOST"], "https://ws.example.com");
    }
}

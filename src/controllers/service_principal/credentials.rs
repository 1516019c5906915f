//! The principal's OAuth secret: minted, published in an owned Secret, verified, rotated before expiry and
//! retired after a grace period, with every step safe to interrupt (see the module above).

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, ResourceExt, runtime::events::EventType};

use super::super::{
    ANNOTATION_ROTATE, Context, Error, conditions, lifecycle, patch_status, rollout, secrets,
};
use super::{
    Principal,
    rotation::{self, parse_time},
};
use crate::{
    crd::{Credentials, RetiringSecret, ServicePrincipal, ServicePrincipalStatus},
    databricks::{
        AccountClient,
        types::{SecretInfo, ServicePrincipal as RemotePrincipal},
    },
};

/// Go-style duration (`2160h`, `90m`, `1h30m`) as validated by the CRD.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if matches!(c, 'm' | 'u' | 'µ' | 'n') && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        total += value
            * match unit.as_str() {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                "us" | "µs" => 1e-6,
                "ns" => 1e-9,
                _ => return None,
            };
        any = true;
    }
    (any && number.is_empty()).then(|| Duration::from_secs_f64(total))
}

/// The keys a workload reads (`envFrom`), the Databricks SDK's own names.
fn secret_data(
    ctx_host: &str,
    account_id: &str,
    host_override: Option<&str>,
    client_id: &str,
    secret: &str,
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let host = host_override.unwrap_or(ctx_host);
    data.insert("DATABRICKS_HOST".to_owned(), host.to_owned());
    if host_override.is_none_or(|h| h.trim_end_matches('/') == ctx_host) {
        data.insert("DATABRICKS_ACCOUNT_ID".to_owned(), account_id.to_owned());
    }
    data.insert("DATABRICKS_CLIENT_ID".to_owned(), client_id.to_owned());
    data.insert("DATABRICKS_CLIENT_SECRET".to_owned(), secret.to_owned());
    data
}

pub(super) async fn converge_credentials(
    sp: &ServicePrincipal,
    ctx: &Context,
    client: &AccountClient,
    account: &crate::crd::DatabricksAccount,
    principal: &Principal,
    spec: &Credentials,
    status: &mut ServicePrincipalStatus,
) -> Result<Option<Duration>, Error> {
    let generation = sp.metadata.generation;
    let namespace = sp.namespace().unwrap_or_default();
    let uid = sp.uid().unwrap_or_default();
    let secret_name = spec.secret_name.clone().unwrap_or_else(|| format!("{}-databricks", sp.name_any()));
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let lifetime = parse_duration(&spec.lifetime).unwrap_or(Duration::from_secs(90 * 86_400));
    let renew_before = spec.renew_before.as_deref().and_then(parse_duration).unwrap_or(lifetime / 3);
    let grace = ctx.config.rotation_grace;
    let adopted = sp.spec.adopt.is_some();

    let published =
        secrets::read_owned_noting(&secrets_api, &secret_name, &uid, &mut status.conditions, generation)
            .await?;
    let mut remote = match principal.created {
        true => Vec::new(),
        false => client.list_secrets(&principal.id).await?,
    };
    let now = Timestamp::now();
    // A copy: if the pass fails midway, status keeps what was last recorded (every step is safe to redo from
    // it), not a half-updated record or none.
    let mut creds = status.credentials.clone().unwrap_or_default();
    creds.secret_name = Some(secret_name.clone());

    // What the Secret publishes, if its content is intact and the secret still exists in Databricks.
    let intact = published.as_ref().filter(|p| {
        p.checksum_ok
            && p.data.get("DATABRICKS_CLIENT_ID") == Some(&principal.application_id)
            && p.data.get("DATABRICKS_CLIENT_SECRET").is_some_and(|v| !v.is_empty())
    });
    let published_id =
        intact.and_then(|p| p.secret_id.clone()).filter(|id| remote.iter().any(|s| &s.id == id));
    if published.is_some() && intact.is_none() {
        ctx.event(
            sp,
            EventType::Warning,
            "SecretTampered",
            "Repair",
            &format!("Secret {secret_name} was edited by hand; publishing a new secret"),
        )
        .await;
    }

    // A Secret written by a pass that did not get to record it (or not yet verified): verify, then retire the
    // previously recorded secret.
    if let (Some(new), Some(data)) = (published_id.as_ref(), intact.map(|p| &p.data))
        && creds.secret_id.as_ref() != Some(new)
    {
        let secret_value = data.get("DATABRICKS_CLIENT_SECRET").cloned().unwrap_or_default();
        verify(client, &principal.application_id, &secret_value).await?;
        if let Some(old) = creds.secret_id.take() {
            creds
                .retiring
                .push(RetiringSecret { secret_id: old, delete_after: Time(now + to_signed(grace)) });
        }
        creds.secret_id = Some(new.clone());
        // That pass minted: the rotate guard counts from it (and the request it served is served).
        creds.rotate_allowed_after =
            rotation::next_rotation_allowed(now, ctx.config.rotate_min_interval).map(Time);
        creds.rotate_request =
            sp.annotations().get(ANNOTATION_ROTATE).cloned().or(creds.rotate_request.take());
    }
    if published_id.is_none()
        && let Some(old) = creds.secret_id.take()
        && remote.iter().any(|s| s.id == old)
    {
        // The Secret lost it: the old value is gone from the cluster, nothing can still use it after a grace.
        creds.retiring.push(RetiringSecret { secret_id: old, delete_after: Time(now + to_signed(grace)) });
    }
    creds.retiring.retain(|r| remote.iter().any(|s| s.id == r.secret_id));

    // Leftovers of an interrupted mint (created but never published): delete them.
    let known: Vec<&str> = published_id
        .iter()
        .map(String::as_str)
        .chain(creds.retiring.iter().map(|r| r.secret_id.as_str()))
        .collect();
    let minting_since = creds.minting_since.as_ref().map(|t| t.0);
    let leftovers: Vec<SecretInfo> =
        rotation::leftovers(&remote, &known, adopted, minting_since).into_iter().cloned().collect();
    for leftover in &leftovers {
        client.delete_secret(&principal.id, &leftover.id).await?;
        let message =
            format!("Deleted secret {} that an interrupted pass created but never published", leftover.id);
        ctx.event(sp, EventType::Warning, "UnpublishedSecretDeleted", "Delete", &message).await;
    }
    remote.retain(|s| !leftovers.iter().any(|l| l.id == s.id));
    creds.minting_since = None;

    let rotate_request = sp.annotations().get(ANNOTATION_ROTATE).cloned();
    let rotate_requested = rotate_request.is_some() && rotate_request != creds.rotate_request;
    let current = published_id.as_ref().and_then(|id| remote.iter().find(|s| &s.id == id));
    let expire = current.and_then(|s| parse_time(s.expire_time.as_deref()));
    let renew_at = expire.map(|e| e - to_signed(renew_before));
    let data_value = intact.and_then(|p| p.data.get("DATABRICKS_CLIENT_SECRET").cloned());

    // A rotation by annotation waits for the least interval since the last mint.
    let rotation_waits =
        rotation::rotation_waits(rotate_requested, creds.rotate_allowed_after.as_ref().map(|t| t.0), now);
    let rotate_now = rotate_requested && rotation_waits.is_none();
    if let Some(why) = rotation::mint(published_id.is_some(), rotate_now, renew_at, now) {
        // At most 5 secrets: make room by retiring early, never by touching secrets the operator does not know.
        let limit = crate::databricks::MAX_SECRETS_PER_PRINCIPAL;
        match rotation::make_room(remote.len(), limit, &mut creds.retiring) {
            Ok(None) => {}
            Ok(Some(oldest)) => {
                client.delete_secret(&principal.id, &oldest.secret_id).await?;
                remote.retain(|s| s.id != oldest.secret_id);
            }
            Err(()) => {
                return Err(Error::NeedsAttention {
                    reason: "SecretLimitReached",
                    message: format!(
                        "Service principal {} already has {} OAuth secrets not managed by this object; delete one in Databricks",
                        principal.id,
                        remote.len()
                    ),
                });
            }
        }
        // Only an adopted principal can hold secrets the operator did not make, so only there must the intent be
        // on record before minting (every unknown secret of a created principal is a leftover).
        if adopted {
            creds.minting_since = Some(Time(now));
            status.credentials = Some(creds.clone());
            patch_status(&lifecycle::api(ctx, sp), sp, status).await?;
        }
        let created = client.create_secret(&principal.id, lifetime).await?;
        ctx.fail_point("after-create-secret")?;
        let data = secret_data(
            &account.spec.effective_host(),
            &account.spec.account_id,
            spec.host.as_deref(),
            &principal.application_id,
            created.expose_secret(),
        );
        let mut annotations = BTreeMap::new();
        annotations.insert(secrets::ANNOTATION_SECRET_ID.to_owned(), created.info.id.clone());
        if let Some(expire) = &created.info.expire_time {
            annotations.insert(secrets::ANNOTATION_EXPIRE_TIME.to_owned(), expire.clone());
        }
        let secret = secrets::build(sp, &secret_name, data, annotations, spec.template.as_ref());
        secrets::apply(&secrets_api, &secret).await?;
        ctx.fail_point("after-write-secret")?;
        verify(client, &principal.application_id, created.expose_secret()).await?;
        if let Some(old) = published_id.clone() {
            creds
                .retiring
                .push(RetiringSecret { secret_id: old, delete_after: Time(now + to_signed(grace)) });
        }
        creds.secret_id = Some(created.info.id.clone());
        creds.minting_since = None;
        // From the mint itself, not the start of the pass: the interval is between secrets created.
        creds.rotate_allowed_after =
            rotation::next_rotation_allowed(Timestamp::now(), ctx.config.rotate_min_interval).map(Time);
        if rotate_requested {
            creds.rotate_request = rotate_request;
        }
        remote.push(created.info.clone());
        let message = format!("Published secret {} in Secret {secret_name}", created.info.id);
        ctx.event(sp, EventType::Normal, why.reason(), "Publish", &message).await;
    } else if let (Some(value), Some(id)) = (data_value.as_ref(), published_id.as_ref()) {
        // Keep the non-secret keys, labels and annotations current without minting.
        let data = secret_data(
            &account.spec.effective_host(),
            &account.spec.account_id,
            spec.host.as_deref(),
            &principal.application_id,
            value,
        );
        let mut annotations = BTreeMap::new();
        annotations.insert(secrets::ANNOTATION_SECRET_ID.to_owned(), id.clone());
        if let Some(expire) = current.and_then(|s| s.expire_time.clone()) {
            annotations.insert(secrets::ANNOTATION_EXPIRE_TIME.to_owned(), expire);
        }
        let desired = secrets::build(sp, &secret_name, data.clone(), annotations, spec.template.as_ref());
        if published.as_ref().is_none_or(|p| p.data != data || !secrets::metadata_current(p, &desired)) {
            secrets::apply(&secrets_api, &desired).await?;
        }
    }

    // Named consumers are rolled onto the current secret; a replaced one waits for their rollouts.
    let rollouts = match creds.secret_id.as_deref() {
        Some(id) if !spec.rollout_restart_targets.is_empty() => {
            let key = rollout::annotation_key("sp", &sp.name_any(), &uid);
            let targets = &spec.rollout_restart_targets;
            rollout::converge(&ctx.client, &namespace, targets, &key, id, &secret_name).await
        }
        _ => rollout::Rollouts::default(),
    };
    let onto = format!("secret {}", creds.secret_id.as_deref().unwrap_or("?"));
    rollout::announce(ctx, sp, &rollouts, &onto).await;
    // Retire what the grace period (and the consumers' rollouts) have passed.
    let (due, kept) = rotation::past_grace(std::mem::take(&mut creds.retiring), now, rollouts.done());
    creds.retiring = kept;
    for retiring in &due {
        client.delete_secret(&principal.id, &retiring.secret_id).await?;
        let message =
            format!("Deleted replaced secret {} after the rotation grace period", retiring.secret_id);
        ctx.event(sp, EventType::Normal, "SecretRetired", "Delete", &message).await;
    }

    let current = creds.secret_id.as_ref().and_then(|id| remote.iter().find(|s| &s.id == id));
    creds.create_time = current.and_then(|s| parse_time(s.create_time.as_deref())).map(Time);
    creds.expire_time = current.and_then(|s| parse_time(s.expire_time.as_deref())).map(Time);
    creds.renew_time = creds.expire_time.as_ref().map(|e| Time(e.0 - to_signed(renew_before)));
    if let Some(expire) = &creds.expire_time {
        ctx.metrics
            .credential_expiry
            .get_or_create(&crate::metrics::ObjectLabels {
                namespace: namespace.clone(),
                name: sp.name_any(),
            })
            .set(expire.0.as_second());
    }
    // Only when no mint happened does the request still wait.
    let rotation_waits =
        rotation_waits.filter(|_| creds.rotate_request != sp.annotations().get(ANNOTATION_ROTATE).cloned());
    let mut message = format!(
        "Secret {secret_name} holds verified secret {} (expires {}, rotates {})",
        creds.secret_id.as_deref().unwrap_or("?"),
        creds.expire_time.as_ref().map_or("never".to_owned(), |t| t.0.to_string()),
        creds.renew_time.as_ref().map_or("never".to_owned(), |t| t.0.to_string()),
    );
    if let Some(after) = rotation_waits {
        message.push_str(&rotation::waiting_note("rotation", after, ctx.config.rotate_min_interval));
    }
    message.push_str(&rollouts.note(&secret_name));
    conditions::published(&mut status.conditions, &message, generation);
    let retiring: Vec<Timestamp> = creds.retiring.iter().map(|r| r.delete_after.0).collect();
    let renew = creds.renew_time.as_ref().map(|t| t.0);
    let wake = rotation::next_wake(renew, &retiring, rotation_waits, rollouts.done(), Timestamp::now())
        .map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO));
    status.credentials = Some(creds);
    Ok(wake)
}

fn to_signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Proves new credentials work before anything relies on them. A brand-new secret may take a moment to be
/// accepted, so `invalid_client` is retried briefly.
async fn verify(client: &AccountClient, application_id: &str, secret: &str) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.verify_client_credentials(application_id, secret).await {
            Ok(_) => return Ok(()),
            Err(err) if err.is_unauthenticated() && attempt < 4 => {
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await
            }
            Err(err) => {
                return Err(Error::NeedsAttention {
                    reason: "VerificationFailed",
                    message: format!("The new OAuth secret does not authenticate: {err}"),
                });
            }
        }
    }
}

/// `credentials` omitted or `type: None`: no secret is kept; remove what the operator published.
pub(super) async fn drop_credentials(
    sp: &ServicePrincipal,
    ctx: &Context,
    client: &AccountClient,
    principal: &RemotePrincipal,
    status: &mut ServicePrincipalStatus,
) -> Result<(), Error> {
    let Some(creds) = status.credentials.take() else { return Ok(()) };
    for id in creds.secret_id.iter().chain(creds.retiring.iter().map(|r| &r.secret_id)) {
        client.delete_secret(&principal.id, id).await?;
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
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2160h"), Some(Duration::from_secs(2160 * 3600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("90d"), None);
        assert_eq!(parse_duration("90"), None);
        assert_eq!(parse_duration(""), None);
    }

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

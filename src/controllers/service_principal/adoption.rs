//! Adoption claims: the account's ledger records which object adopted which existing principal, so no other
//! object adopts it too while the claim's object exists.

use kube::{Api, ResourceExt};

use crate::{
    controllers::{
        rules::{error::Error, ownership, reason::Reason},
        runtime::context::Context,
        services::{accounts::Access, ledger},
    },
    crd::{ObjectRecord, ServicePrincipal},
};

fn object_name(record: &ObjectRecord) -> String {
    format!("{}/{}", record.namespace, record.name)
}

/// Records this object as the adopter of `application_id`, unless another object that still exists holds it.
pub async fn claim(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    application_id: &str,
) -> Result<(), Error> {
    let key = application_id.to_lowercase();
    let account = access.account.name_any();
    let mine = ObjectRecord {
        namespace: sp.namespace().unwrap_or_default(),
        name: sp.name_any(),
        uid: sp.uid().unwrap_or_default(),
    };
    let recorded = ledger::read(&ctx.client, &account).await?.adoptions.get(&key).cloned();
    let alive = match &recorded {
        // Already this object's: nothing to write (the common case, every full pass).
        Some(record) if record.uid == mine.uid => return Ok(()),
        Some(record) => adopter_exists(ctx, record, application_id).await?,
        None => false,
    };
    let standing = ownership::adoption_claim(recorded.as_ref(), alive, &mine);
    if standing.uid != mine.uid {
        return Err(adopted_elsewhere(application_id, &object_name(standing)));
    }
    let stale = recorded.as_ref().map(|r| r.uid.clone());
    let written = ledger::update(&ctx.client, &account, |ledger| match ledger.adoptions.get(&key) {
        Some(record) if record.uid == mine.uid => false,
        // Someone else claimed it since the read: theirs stands.
        Some(record) if Some(&record.uid) != stale.as_ref() => false,
        _ => {
            ledger.adoptions.insert(key.clone(), mine.clone());
            true
        }
    })
    .await?;
    match written.adoptions.get(&key) {
        Some(record) if record.uid == mine.uid => Ok(()),
        Some(record) => Err(adopted_elsewhere(application_id, &object_name(record))),
        None => Err(Error::Waiting {
            reason: Reason::AdoptionNotRecorded,
            message: format!("The adoption of {application_id} could not be recorded yet; retrying"),
        }),
    }
}

fn adopted_elsewhere(application_id: &str, object: &str) -> Error {
    ownership::adoption_refused(application_id, &format!("it is already adopted by {object}")).into()
}

/// Whether the object a claim names still exists as that object and still asks to adopt the principal.
async fn adopter_exists(ctx: &Context, record: &ObjectRecord, application_id: &str) -> Result<bool, Error> {
    let api: Api<ServicePrincipal> = Api::namespaced(ctx.client.clone(), &record.namespace);
    let found = api.get_opt(&record.name).await.map_err(|e| {
        Error::kube(format!("reading ServicePrincipal {}/{}", record.namespace, record.name), e)
    })?;
    Ok(found.is_some_and(|sp| {
        sp.uid().as_deref() == Some(record.uid.as_str())
            && sp.spec.adopt.is_some_and(|a| a.application_id.eq_ignore_ascii_case(application_id))
    }))
}

/// Drops this object's adoption claim (its object is going away).
pub async fn release_claim(sp: &ServicePrincipal, ctx: &Context) -> Result<(), Error> {
    let Some(adopt) = &sp.spec.adopt else { return Ok(()) };
    let key = adopt.application_id.to_lowercase();
    let uid = sp.uid().unwrap_or_default();
    let released = ledger::update(&ctx.client, &sp.spec.account_ref.name, |ledger| {
        if ledger.adoptions.get(&key).is_some_and(|r| r.uid == uid) {
            ledger.adoptions.remove(&key);
            true
        } else {
            false
        }
    });
    match released.await {
        // Without its account there is no claim to drop.
        Err(Error::Account { reason: Reason::AccountNotFound, .. }) => Ok(()),
        other => other.map(drop),
    }
}

//! Who may use or manage the principal (`spec.usedBy`), kept in its account rule set beside everyone else's
//! entries (see [`rule_sets::apply_uses`]); an entry removed in the console is written again at the next pass.

use kube::runtime::events::EventType;

use super::identity::Principal;
use crate::{
    controllers::{
        rules::{error::Error, used_by},
        runtime::context::Context,
        services::{accounts::Access, rule_sets},
    },
    crd::ServicePrincipal,
};

pub async fn sync_used_by(
    sp: &ServicePrincipal,
    ctx: &Context,
    access: &Access,
    principal: &mut Principal,
) -> Result<(), Error> {
    if sp.spec.used_by.is_empty() && principal.claim.spec.used_by.is_empty() {
        return Ok(());
    }
    let applied =
        rule_sets::apply_uses(&ctx.claims, &access.client, &mut principal.claim, &sp.spec.used_by, true)
            .await?;
    if !applied.added.is_empty() {
        let message = format!("Granted {}{}", used_by::describe(&applied.added), retried(applied.conflicts));
        ctx.event(sp, EventType::Normal, "UsedByGranted", "Grant", &message).await;
    }
    if !applied.removed.is_empty() {
        let message =
            format!("Removed {}{}", used_by::describe(&applied.removed), retried(applied.conflicts));
        ctx.event(sp, EventType::Normal, "UsedByRemoved", "Revoke", &message).await;
    }
    Ok(())
}

fn retried(conflicts: usize) -> String {
    match conflicts {
        0 => String::new(),
        n => format!(
            " (read again {n} time(s): another writer changed the rule set meanwhile, and kept its entries)"
        ),
    }
}

//! kstatus-style conditions: one per type, `lastTransitionTime` moves only when the status flips.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use super::reason::Reason;

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const CREDENTIALS_READY: &str = "CredentialsReady";
/// A trust policy's proof that its federation works (`verify: true`).
pub const VERIFIED: &str = "Verified";

/// Sets the condition of `type_`, keeping its `lastTransitionTime` unless the status changes.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.as_str().to_owned(),
        message: message.chars().take(32_000).collect(),
        observed_generation: generation,
        last_transition_time,
    };
    conditions.retain(|c| c.type_ != type_);
    conditions.push(condition);
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// `Synced=True`: Databricks matches the spec.
pub fn synced(conditions: &mut Vec<Condition>, generation: Option<i64>) {
    set(conditions, SYNCED, true, Reason::Synced, "Databricks matches the spec", generation);
}

/// `CredentialsReady=True, reason=Published` with `message` (what is published where).
pub fn published(conditions: &mut Vec<Condition>, message: &str, generation: Option<i64>) {
    set(conditions, CREDENTIALS_READY, true, Reason::Published, message, generation);
}

/// The condition of `type_`, if set.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flips() {
        let mut conditions = Vec::new();
        set(&mut conditions, READY, false, Reason::Deferred, "creating", Some(1));
        let first = get(&conditions, READY).map(|c| c.last_transition_time.clone()).expect("set");
        std::thread::sleep(std::time::Duration::from_millis(5));
        set(&mut conditions, READY, false, Reason::CreateInProgress, "still", Some(2));
        let same = get(&conditions, READY).expect("set");
        assert_eq!(same.last_transition_time, first, "same status keeps the time");
        assert_eq!((same.reason.as_str(), same.observed_generation), ("CreateInProgress", Some(2)));
        set(&mut conditions, READY, true, Reason::Ready, "ok", Some(2));
        assert_ne!(
            get(&conditions, READY).map(|c| c.last_transition_time.clone()),
            Some(first),
            "a flip moves it"
        );
        set(&mut conditions, SYNCED, true, Reason::Synced, "ok", Some(2));
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].type_, READY, "sorted, so status patches are stable");
    }
}

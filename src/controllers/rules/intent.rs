//! The window of an interrupted create: an intent is recorded before a create whose answer may be lost, and a
//! remote object made within the window after it can only have come from that create.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// How long after a recorded intent the interrupted create can have taken effect (the client's request timeout and
/// retries are well within it).
pub const WINDOW: SignedDuration = SignedDuration::from_secs(180);
/// Clock slack between the operator and Databricks.
pub const SLACK: SignedDuration = SignedDuration::from_secs(5);

/// An RFC 3339 time as Databricks writes it.
pub fn parse_time(value: Option<&str>) -> Option<Timestamp> {
    value.and_then(|v| v.parse::<Timestamp>().ok())
}

/// Whether a remote object created at `created` can come from a create whose intent was recorded at `since`.
pub fn within(created: Option<Timestamp>, since: Timestamp) -> bool {
    created.is_some_and(|c| c >= since - SLACK && c <= since + WINDOW)
}

/// Whether a remote object created at `created` is newer than an intent recorded at `since`.
pub fn after(created: Option<Timestamp>, since: Timestamp) -> bool {
    created.is_some_and(|c| c >= since - SLACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_opens_just_before_the_intent_and_closes_after_it() {
        let since: Timestamp = "2026-11-30T12:00:00Z".parse().expect("time");
        let at = |text: &str| parse_time(Some(text));
        assert!(within(at("2026-11-30T11:59:56Z"), since), "clock slack");
        assert!(!within(at("2026-11-30T11:59:54Z"), since));
        assert!(within(at("2026-11-30T12:03:00Z"), since));
        assert!(!within(at("2026-11-30T12:03:01Z"), since), "later than any retry of the create");
        assert!(after(at("2026-11-30T13:00:00Z"), since));
        assert!(!within(None, since) && !after(None, since), "no create time, no proof");
    }
}

//! The rotate annotation: a new value asks for new credentials (a new OAuth secret, a recreated app integration),
//! at most once per `--rotate-min-interval`.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::meta::ANNOTATION_ROTATE;

/// A rotation the rotate annotation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateRequest {
    /// The annotation's value.
    pub value: Option<String>,
    /// It has a value the object has not served yet.
    pub requested: bool,
    /// Until when it must wait (see [`rotation_waits`]).
    pub waits: Option<Timestamp>,
}

impl RotateRequest {
    /// The annotation's `value`, against the value last served and when the next rotation is allowed.
    pub fn new(
        value: Option<String>,
        served: Option<&String>,
        allowed_after: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        let requested = value.is_some() && value.as_ref() != served;
        Self { waits: rotation_waits(requested, allowed_after, now), value, requested }
    }

    /// Whether the rotation goes ahead in this pass.
    pub fn now(&self) -> bool {
        self.requested && self.waits.is_none()
    }
}

/// When a rotation the rotate annotation asks for must wait: until `allowed_after` (the last mint plus the
/// operator's `--rotate-min-interval`), so a pipeline that stamps the annotation on every deploy mints at most once
/// per interval. `None`: it may go ahead now (or none was asked for).
pub fn rotation_waits(
    requested: bool,
    allowed_after: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    allowed_after.filter(|after| requested && *after > now)
}

/// What a status message adds while a rotation by annotation waits (`what`: "rotation", "recreation").
pub fn waiting_note(what: &str, after: Timestamp, interval: std::time::Duration) -> String {
    format!(
        "; the {what} the {ANNOTATION_ROTATE} annotation asks for waits until {after} (at most one per {}s)",
        interval.as_secs()
    )
}

/// When the next rotation by annotation is allowed after minting at `now` (`None` when the interval is zero).
pub fn next_rotation_allowed(now: Timestamp, interval: std::time::Duration) -> Option<Timestamp> {
    let interval = SignedDuration::try_from(interval).unwrap_or(SignedDuration::MAX);
    (!interval.is_zero()).then(|| now.checked_add(interval).unwrap_or(Timestamp::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    #[test]
    fn the_rotate_annotation_mints_at_most_once_per_interval() {
        let now = at("2026-11-30T12:00:00Z");
        let after = Some(at("2026-11-30T12:05:00Z"));
        assert_eq!(rotation_waits(true, after, now), after);
        assert_eq!(rotation_waits(false, after, now), None, "nothing asked for, nothing waits");
        assert_eq!(rotation_waits(true, after, at("2026-11-30T12:05:00Z")), None, "due at the instant");
        assert_eq!(rotation_waits(true, None, now), None, "never minted (or no interval)");
        let interval = std::time::Duration::from_secs(300);
        assert_eq!(next_rotation_allowed(now, interval), after);
        assert_eq!(next_rotation_allowed(now, std::time::Duration::ZERO), None);
    }

    #[test]
    fn a_request_is_a_value_not_yet_served() {
        let now = at("2026-11-30T12:00:00Z");
        let served = Some("1".to_owned());
        let same = RotateRequest::new(served.clone(), served.as_ref(), None, now);
        assert!(!same.requested && !same.now());
        let new =
            RotateRequest::new(Some("2".into()), served.as_ref(), Some(at("2026-11-30T12:05:00Z")), now);
        assert!(new.requested && !new.now(), "asked for, but waits for the interval");
        assert!(RotateRequest::new(Some("2".into()), served.as_ref(), None, now).now());
        assert!(
            !RotateRequest::new(None, served.as_ref(), None, now).requested,
            "no annotation asks nothing"
        );
    }
}

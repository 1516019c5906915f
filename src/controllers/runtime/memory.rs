//! What the operator remembers of each object between passes: what its last full pass saw (so unchanged objects
//! get a quick pass) and how often its passes failed in a row (backoff).

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::Resource;

use crate::controllers::rules::meta::OWN_ANNOTATIONS;

/// What the last successful full pass of each object saw, by UID: a fingerprint of what the owner controls
/// (generation and the operator's annotations) and when the next full pass is due. Most watch events are the
/// operator's own status and Secret writes, or labels and other tools' annotations; an event that changes none of
/// it gets a quick pass that only checks what the object publishes in the cluster, so Databricks is read again at
/// the resync, not at every event.
#[derive(Debug, Default)]
pub struct Marks(Mutex<HashMap<String, Mark>>);

#[derive(Debug)]
struct Mark {
    seen: Fingerprint,
    due: Instant,
    /// When a change of the operator's annotations alone was first seen since the last full pass.
    annotations_changed: Option<Instant>,
}

/// What a full pass depends on that the object's owner controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    generation: Option<i64>,
    annotations: u64,
}

impl Fingerprint {
    /// The generation and the operator's own annotations; labels and other annotations change nothing.
    pub fn of<K: Resource>(obj: &K) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        let annotations = obj.meta().annotations.as_ref();
        for key in OWN_ANNOTATIONS {
            annotations.and_then(|a| a.get(key)).hash(&mut hasher);
        }
        Self { generation: obj.meta().generation, annotations: hasher.finish() }
    }

    /// A generation and anything else a pass depends on, hashed.
    pub fn with(generation: Option<i64>, other: impl Hash) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        other.hash(&mut hasher);
        Self { generation, annotations: hasher.finish() }
    }
}

impl Marks {
    /// Time left until the next full pass, when the object is unchanged since the last one.
    pub fn fresh(&self, uid: &str, seen: Fingerprint) -> Option<Duration> {
        let mut marks = self.0.lock().ok()?;
        let mark = marks.get_mut(uid)?;
        if mark.seen != seen {
            return None;
        }
        // Changed and changed back: a later change waits its own debounce.
        mark.annotations_changed = None;
        mark.due.checked_duration_since(Instant::now())
    }

    /// When only the operator's annotations changed since the last full pass: how long the pass they ask for
    /// still waits (at most one such pass per `debounce`, however often they change).
    pub fn debounce(&self, uid: &str, seen: Fingerprint, debounce: Duration) -> Option<Duration> {
        let mut marks = self.0.lock().ok()?;
        let mark = marks.get_mut(uid)?;
        if mark.seen.generation != seen.generation || mark.seen.annotations == seen.annotations {
            return None;
        }
        let since = *mark.annotations_changed.get_or_insert_with(Instant::now);
        (since + debounce).checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    pub fn record(&self, uid: &str, seen: Fingerprint, next: Duration) {
        if let Ok(mut marks) = self.0.lock() {
            let mark = Mark { seen, due: Instant::now() + next, annotations_changed: None };
            marks.insert(uid.to_owned(), mark);
        }
    }

    /// Makes the next pass of `uid` a full one (something it depends on changed).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut marks) = self.0.lock() {
            marks.remove(uid);
        }
    }
}

/// Per-object exponential backoff (kube has none), reset on success.
#[derive(Debug, Default)]
pub struct Backoff(Mutex<HashMap<String, (u32, Instant)>>);

impl Backoff {
    pub fn next(&self, key: &str) -> Duration {
        let Ok(mut map) = self.0.lock() else { return Duration::from_secs(30) };
        let entry = map.entry(key.to_owned()).or_insert((0, Instant::now()));
        entry.0 = (entry.0 + 1).min(10);
        let base = Duration::from_millis(500 << entry.0.min(9)).min(Duration::from_secs(300));
        base.mul_f64(rand::random_range(0.8..1.2))
    }

    pub fn reset(&self, key: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }
}

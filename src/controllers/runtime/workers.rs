//! How many of a controller's workers one namespace may hold at once.
//!
//! kube-runtime runs at most `concurrency` passes of a controller; when every worker is busy, the passes that come
//! due wait in a set and the next is picked in hash order, not in turn. A namespace whose passes all wait in the
//! account's budget could then hold every worker, and another namespace's passes would never start (the budget,
//! which is fair between namespaces, never even sees them). So while another namespace has passes to run, one
//! namespace holds at most a share of the workers, and the rest stay free for the others. A namespace alone uses
//! every worker: a refused pass is requeued, and refusing with nobody to make room for would only spin.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long a namespace counts as having passes to run after its last attempt (a refused one included).
const CONTENDED_FOR: Duration = Duration::from_secs(10);

/// The most workers of `concurrency` one namespace may hold while another has passes to run: all but a quarter (at
/// least one kept free), and never fewer than one.
pub fn namespace_share(concurrency: u16) -> u32 {
    let concurrency = u32::from(concurrency);
    let kept_free = (concurrency / 4).max(1);
    concurrency.saturating_sub(kept_free).max(1)
}

/// Whether a pass may take a worker: always while its namespace is alone, else within the share.
pub fn may_take(held: u32, share: u32, contended: bool) -> bool {
    !contended || held < share
}

type Key = (&'static str, String);

#[derive(Debug, Default)]
struct State {
    held: HashMap<Key, u32>,
    /// The last attempt of each (controller, namespace), kept for [`CONTENDED_FOR`].
    seen: HashMap<Key, Instant>,
}

impl State {
    /// Records an attempt of `key`; whether another namespace of the same controller attempted one lately.
    fn attempt(&mut self, key: &Key, now: Instant) -> bool {
        self.seen.retain(|_, at| now.duration_since(*at) < CONTENDED_FOR);
        self.seen.insert(key.clone(), now);
        self.seen.keys().any(|(controller, namespace)| *controller == key.0 && *namespace != key.1)
    }
}

/// The passes in flight per (controller, namespace).
#[derive(Debug, Clone)]
pub struct Workers {
    share: u32,
    state: Arc<Mutex<State>>,
}

/// A worker held by one pass; given back when dropped.
#[derive(Debug)]
pub struct Held {
    key: Key,
    state: Arc<Mutex<State>>,
}

impl Workers {
    pub fn new(concurrency: u16) -> Self {
        Self { share: namespace_share(concurrency), state: Arc::default() }
    }

    /// A worker for a pass of `controller` in `namespace`, or None while another namespace has passes to run and
    /// this one holds its share.
    pub fn take(&self, controller: &'static str, namespace: &str) -> Option<Held> {
        self.take_at(controller, namespace, Instant::now())
    }

    fn take_at(&self, controller: &'static str, namespace: &str, now: Instant) -> Option<Held> {
        let key = (controller, namespace.to_owned());
        let mut state = self.state.lock().ok()?;
        let contended = state.attempt(&key, now);
        let count = state.held.entry(key.clone()).or_default();
        if !may_take(*count, self.share, contended) {
            return None;
        }
        *count += 1;
        Some(Held { key, state: self.state.clone() })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock()
            && let Some(count) = state.held.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_leaves_a_quarter_of_the_workers_free_while_another_waits() {
        assert_eq!(namespace_share(16), 12);
        assert_eq!(namespace_share(4), 3);
        assert_eq!(namespace_share(2), 1);
        assert_eq!(namespace_share(1), 1);
        assert_eq!(namespace_share(0), 1);
        assert!(may_take(15, 12, false), "alone: every worker");
        assert!(may_take(11, 12, true));
        assert!(!may_take(12, 12, true));
    }

    #[test]
    fn a_namespace_at_its_share_waits_while_others_start() {
        let workers = Workers::new(4);
        let now = Instant::now();
        let alone: Vec<_> = (0..4).map(|_| workers.take_at("sp", "a", now).expect("alone")).collect();
        // Another namespace arrives: it gets a worker, and the first one gets no more until it is back in its share.
        assert!(workers.take_at("sp", "b", now).is_some(), "another namespace");
        assert!(workers.take_at("sp", "a", now).is_none(), "beyond the share while b has passes");
        assert!(workers.take_at("app", "a", now).is_some(), "another controller is counted apart");
        drop(alone);
        assert!(workers.state.lock().expect("lock").held.is_empty(), "every worker given back");
        let shared: Vec<_> = (0..3).map(|_| workers.take_at("sp", "a", now).expect("within")).collect();
        assert!(workers.take_at("sp", "a", now).is_none());
        // Once b has had no pass for a while, a is alone again.
        assert!(workers.take_at("sp", "a", now + CONTENDED_FOR * 2).is_some());
        drop(shared);
    }
}

//! How many of a controller's workers one namespace may hold at once.
//!
//! kube-runtime runs at most `concurrency` passes of a controller; when every worker is busy, the passes that come
//! due wait in a set and the next is picked in hash order, not in turn. A namespace whose passes all wait in the
//! account's budget could then hold every worker, and another namespace's passes would never start (the budget,
//! which is fair between namespaces, never even sees them). So one namespace holds at most a share of the workers,
//! and the rest stay free for the others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The most workers of `concurrency` one namespace may hold: all but a quarter (at least one kept free), and never
/// fewer than one.
pub fn namespace_share(concurrency: u16) -> u32 {
    let concurrency = u32::from(concurrency);
    let kept_free = (concurrency / 4).max(1);
    concurrency.saturating_sub(kept_free).max(1)
}

/// The passes in flight per (controller, namespace).
#[derive(Debug, Clone)]
pub struct Workers {
    share: u32,
    held: Arc<Mutex<HashMap<(&'static str, String), u32>>>,
}

/// A worker held by one pass; given back when dropped.
#[derive(Debug)]
pub struct Held {
    key: (&'static str, String),
    held: Arc<Mutex<HashMap<(&'static str, String), u32>>>,
}

impl Workers {
    pub fn new(concurrency: u16) -> Self {
        Self { share: namespace_share(concurrency), held: Arc::default() }
    }

    /// A worker for a pass of `controller` in `namespace`, or None while the namespace holds its share.
    pub fn take(&self, controller: &'static str, namespace: &str) -> Option<Held> {
        let key = (controller, namespace.to_owned());
        let mut held = self.held.lock().ok()?;
        let count = held.entry(key.clone()).or_default();
        if *count >= self.share {
            return None;
        }
        *count += 1;
        Some(Held { key, held: self.held.clone() })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock()
            && let Some(count) = held.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_leaves_a_quarter_of_the_workers_free() {
        assert_eq!(namespace_share(16), 12);
        assert_eq!(namespace_share(4), 3);
        assert_eq!(namespace_share(2), 1);
        assert_eq!(namespace_share(1), 1);
        assert_eq!(namespace_share(0), 1);
    }

    #[test]
    fn a_namespace_at_its_share_waits_while_others_start() {
        let workers = Workers::new(4);
        let held: Vec<_> = (0..3).map(|_| workers.take("sp", "a").expect("within the share")).collect();
        assert!(workers.take("sp", "a").is_none(), "a fourth pass of one namespace");
        assert!(workers.take("sp", "b").is_some(), "another namespace");
        assert!(workers.take("app", "a").is_some(), "another controller");
        drop(held);
        assert!(workers.held.lock().expect("lock").is_empty(), "every worker given back");
        assert!(workers.take("sp", "a").is_some());
    }
}

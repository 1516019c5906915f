//! The API budget of one Databricks account, shared by every object that uses it.
//!
//! Databricks limits each class of request separately (reads far above writes, PATCH lower still) and a 429
//! concerns the class that drew it, so there is a token bucket per [`Class`]; an optional bucket over all
//! classes caps the total. Within a class, waiting requests are served round-robin by namespace, in the spirit of
//! Kubernetes API Priority and Fairness: when several namespaces are busy each gets an equal share, an idle
//! namespace's share goes to the busy ones, and one namespace may queue only so many requests (the rest are
//! [`Deferred`], so a churning namespace cannot occupy every reconcile worker either). A limit on requests in
//! flight applies to all classes together.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::Method;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, oneshot},
    time::Instant,
};

/// A class of request with a limit of its own at Databricks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// GET (and the token endpoint, which stores nothing).
    Read,
    /// POST, PUT and DELETE.
    Write,
    /// PATCH, the most tightly limited.
    Patch,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Read, Class::Write, Class::Patch];

    /// The class of a request by its method.
    pub fn of(method: &Method) -> Class {
        match *method {
            Method::GET | Method::HEAD => Class::Read,
            Method::PATCH => Class::Patch,
            _ => Class::Write,
        }
    }

    /// The metric label and the name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Patch => "patch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A sustained rate and the burst allowed after idling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// The limits of one account's budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub reads: Rate,
    pub writes: Rate,
    pub patches: Rate,
    /// A cap over all classes together.
    pub total: Option<Rate>,
    /// Requests in flight at once, all classes together.
    pub max_concurrency: u32,
    /// Requests one namespace may have waiting, all classes together; more are [`Deferred`].
    pub max_queued_per_namespace: u32,
}

impl Limits {
    /// Databricks' documented account API limits (GET about 20/s, POST/PUT/DELETE about 5/s, PATCH about 2/s),
    /// with small bursts so that requests released together still arrive within the server's bucket.
    pub const DOCUMENTED: Limits = Limits {
        reads: Rate::new(20.0, 10),
        writes: Rate::new(5.0, 2),
        patches: Rate::new(2.0, 1),
        total: None,
        max_concurrency: 4,
        max_queued_per_namespace: 8,
    };

    /// The same rate for every class and no cap (tests and tools that want one simple number).
    pub fn uniform(per_second: f64, burst: u32, max_concurrency: u32) -> Limits {
        let rate = Rate::new(per_second, burst);
        Limits {
            reads: rate,
            writes: rate,
            patches: rate,
            total: None,
            max_concurrency,
            max_queued_per_namespace: u32::MAX,
        }
    }

    /// The tighter of `self` and `other`, limit by limit (two configurations of one account).
    pub fn tightest(&self, other: &Limits) -> Limits {
        let rate = |a: Rate, b: Rate| Rate::new(a.per_second.min(b.per_second), a.burst.min(b.burst));
        Limits {
            reads: rate(self.reads, other.reads),
            writes: rate(self.writes, other.writes),
            patches: rate(self.patches, other.patches),
            total: match (self.total, other.total) {
                (Some(a), Some(b)) => Some(rate(a, b)),
                (a, b) => a.or(b),
            },
            max_concurrency: self.max_concurrency.min(other.max_concurrency),
            max_queued_per_namespace: self.max_queued_per_namespace.min(other.max_queued_per_namespace),
        }
    }

    fn rate(&self, class: Class) -> Rate {
        match class {
            Class::Read => self.reads,
            Class::Write => self.writes,
            Class::Patch => self.patches,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DOCUMENTED
    }
}

/// A namespace already had the most requests it may queue; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferred {
    pub class: Class,
    pub queued: u32,
}

/// Told what the budget does, for metrics. `namespace` is empty for the account's own calls.
pub trait BudgetObserver: Send + Sync {
    /// The namespace's queue of `class` now holds `depth` requests.
    fn queue_depth(&self, class: Class, namespace: &str, depth: usize);
    /// A request of the namespace was let through after waiting this long.
    fn granted(&self, class: Class, namespace: &str, waited: Duration);
    /// A request was deferred because the namespace's queue was full.
    fn deferred(&self, class: Class, namespace: &str);
    /// Databricks throttled a request of `class` (429).
    fn throttled(&self, class: Class);
}

/// How far beyond its bound a namespace alone may queue: work is conserved (an idle account's budget goes to the
/// only busy namespace), yet a namespace never holds every reconcile worker.
const LONE_NAMESPACE_FACTOR: u32 = 4;

/// Token buckets per class, fair queues per namespace, and the in-flight limit.
#[derive(Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("limits", &self.shared.limits).finish()
    }
}

struct Shared {
    limits: Limits,
    queues: [Mutex<Queue>; 3],
    total: Option<Mutex<Bucket>>,
    in_flight: Arc<Semaphore>,
    /// Requests waiting per namespace, all classes together.
    queued: Mutex<HashMap<Arc<str>, u32>>,
    observer: Option<Arc<dyn BudgetObserver>>,
}

struct Queue {
    bucket: Bucket,
    /// Waiting requests per namespace, oldest first.
    waiting: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// Namespaces with waiting requests, in the order they are served.
    turns: VecDeque<Arc<str>>,
    /// Whether a dispatcher task is serving this queue.
    dispatching: bool,
}

struct Waiter {
    since: Instant,
    grant: oneshot::Sender<Option<OwnedSemaphorePermit>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: Rate) -> Self {
        let burst = f64::from(rate.burst.max(1));
        Self { rate: rate.per_second.max(0.001), burst, tokens: burst, last: Instant::now() }
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
    }

    /// How long until a token is there (zero when one is).
    fn until_token(&mut self, now: Instant) -> Duration {
        self.refill(now);
        // A hair of float error must not turn into a sub-millisecond sleep loop.
        if self.tokens >= 1.0 - 1e-9 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate).max(Duration::from_millis(1))
        }
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }

    fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Spends into debt: nothing starts until the bucket refills past zero.
    fn pause(&mut self, wait: Duration) {
        self.refill(Instant::now());
        // Several answers asking for the same pause must not add up.
        self.tokens = self.tokens.min(-wait.as_secs_f64() * self.rate);
    }
}

/// Held while a request is in flight.
#[derive(Debug)]
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
}

/// Counts a request as queued for its namespace until dropped (granted or abandoned).
struct Queued<'a> {
    shared: &'a Shared,
    namespace: Arc<str>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut queued = lock(&self.shared.queued);
        if let Some(count) = queued.get_mut(&self.namespace) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                queued.remove(&self.namespace);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every update is a single step).
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Self::with_observer(limits, None)
    }

    pub fn with_observer(limits: Limits, observer: Option<Arc<dyn BudgetObserver>>) -> Self {
        let queue = |class: Class| {
            Mutex::new(Queue {
                bucket: Bucket::new(limits.rate(class)),
                waiting: HashMap::new(),
                turns: VecDeque::new(),
                dispatching: false,
            })
        };
        Self {
            shared: Arc::new(Shared {
                queues: Class::ALL.map(queue),
                total: limits.total.map(|t| Mutex::new(Bucket::new(t))),
                in_flight: Arc::new(Semaphore::new(limits.max_concurrency.max(1) as usize)),
                queued: Mutex::new(HashMap::new()),
                observer,
                limits,
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Whether `other` is this budget (a clone of it), not merely one with the same limits.
    pub fn same(&self, other: &Budget) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Waits for the namespace's turn in `class`, a token, and a free slot; or, when the namespace already has
    /// the most requests it may queue, returns at once.
    pub async fn acquire(&self, class: Class, namespace: &str) -> Result<Permit, Deferred> {
        self.enter(class, namespace, true).await
    }

    /// Like [`Budget::acquire`] but never deferred: for a later request of a pass that was admitted (deferring it
    /// would waste the work the pass already did; it still counts against the namespace's bound, so the
    /// namespace's next pass is deferred instead).
    pub async fn acquire_admitted(&self, class: Class, namespace: &str) -> Permit {
        match self.enter(class, namespace, false).await {
            Ok(permit) => permit,
            Err(_) => Permit { _slot: None }, // never: `enter` defers only when asked to
        }
    }

    /// Whether a pass of `namespace` whose first request is of `class` may start now, without sending anything:
    /// `Err` when [`Budget::acquire`] would defer it. A pass that writes before its first request asks this first,
    /// so that a deferral never follows a write.
    pub fn admit(&self, class: Class, namespace: &str) -> Result<(), Deferred> {
        let queued = lock(&self.shared.queued).get(namespace).copied().unwrap_or(0);
        match self.defers(class, namespace, queued) {
            true => Err(self.deferred(class, namespace, queued)),
            false => Ok(()),
        }
    }

    /// Whether a namespace with `queued` waiting requests is deferred: at its bound while another namespace waits
    /// for the class (its share is the other's to take), or far beyond it (then it holds every worker).
    fn defers(&self, class: Class, namespace: &str, queued: u32) -> bool {
        let bound = self.shared.limits.max_queued_per_namespace;
        if queued < bound {
            return false;
        }
        let others = lock(&self.shared.queues[class.index()]).turns.iter().any(|n| n.as_ref() != namespace);
        others || queued >= bound.saturating_mul(LONE_NAMESPACE_FACTOR)
    }

    fn deferred(&self, class: Class, namespace: &str, queued: u32) -> Deferred {
        if let Some(observer) = &self.shared.observer {
            observer.deferred(class, namespace);
        }
        Deferred { class, queued }
    }

    async fn enter(&self, class: Class, namespace: &str, may_defer: bool) -> Result<Permit, Deferred> {
        let shared = &self.shared;
        let namespace: Arc<str> = Arc::from(namespace);
        let _queued = {
            let mut queued = lock(&shared.queued);
            let count = queued.entry(namespace.clone()).or_insert(0);
            if may_defer && self.defers(class, &namespace, *count) {
                let waiting = *count;
                drop(queued);
                return Err(self.deferred(class, &namespace, waiting));
            }
            *count += 1;
            Queued { shared, namespace: namespace.clone() }
        };
        let (grant, granted) = oneshot::channel();
        let start_dispatcher = {
            let mut queue = lock(&shared.queues[class.index()]);
            let waiting = queue.waiting.entry(namespace.clone()).or_default();
            waiting.push_back(Waiter { since: Instant::now(), grant });
            let depth = waiting.len();
            if depth == 1 {
                queue.turns.push_back(namespace.clone());
            }
            if let Some(observer) = &shared.observer {
                observer.queue_depth(class, &namespace, depth);
            }
            !std::mem::replace(&mut queue.dispatching, true)
        };
        if start_dispatcher {
            tokio::spawn(dispatch(shared.clone(), class));
        }
        // The dispatcher answers every waiter it takes off the queue; a lost answer means no slot to hold.
        Ok(Permit { _slot: granted.await.ok().flatten() })
    }

    /// Pauses one class, as a 429 with `Retry-After` asks: the other classes go on.
    pub fn back_off(&self, class: Class, wait: Duration) {
        lock(&self.shared.queues[class.index()]).bucket.pause(wait);
        if let Some(observer) = &self.shared.observer {
            observer.throttled(class);
        }
    }
}

/// Serves one class's queue until it is empty: waits for a token (of the class and of the total cap) and a free
/// slot, then lets through the next namespace's oldest request.
async fn dispatch(shared: Arc<Shared>, class: Class) {
    let queue = &shared.queues[class.index()];
    loop {
        let wait = {
            let mut q = lock(queue);
            if q.turns.is_empty() {
                q.dispatching = false;
                return;
            }
            let now = Instant::now();
            let total = shared.total.as_ref().map_or(Duration::ZERO, |t| lock(t).until_token(now));
            q.bucket.until_token(now).max(total)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            continue;
        }
        // The semaphore is never closed, so this only fails if it were (and then there is no limit to hold).
        let mut slot = shared.in_flight.clone().acquire_owned().await.ok();
        let mut q = lock(queue);
        let now = Instant::now();
        // A back-off may have spent the token while the slot was awaited: look again.
        let mut total = shared.total.as_ref().map(lock);
        if !q.bucket.until_token(now).is_zero()
            || total.as_mut().is_some_and(|t| !t.until_token(now).is_zero())
        {
            continue;
        }
        q.bucket.take();
        if let Some(t) = total.as_mut() {
            t.take();
        }
        loop {
            let Some(namespace) = q.turns.pop_front() else {
                // Everyone left while we waited: the token stays unspent.
                q.bucket.give_back();
                if let Some(t) = total.as_mut() {
                    t.give_back();
                }
                break;
            };
            let Some(waiting) = q.waiting.get_mut(&namespace) else { continue };
            let Some(waiter) = waiting.pop_front() else { continue };
            let depth = waiting.len();
            if depth == 0 {
                q.waiting.remove(&namespace);
            } else {
                q.turns.push_back(namespace.clone());
            }
            if let Some(observer) = &shared.observer {
                observer.queue_depth(class, &namespace, depth);
            }
            match waiter.grant.send(slot) {
                Ok(()) => {
                    if let Some(observer) = &shared.observer {
                        observer.granted(class, &namespace, waiter.since.elapsed());
                    }
                    break;
                }
                // The caller went away (its reconcile was cancelled): the next one gets the slot.
                Err(returned) => slot = returned,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: Rate) -> Limits {
        Limits {
            reads: rate,
            writes: rate,
            patches: rate,
            total: None,
            max_concurrency: 4,
            max_queued_per_namespace: 1000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_limits_the_sustained_rate() {
        let budget = Budget::new(limits(Rate::new(10.0, 5)));
        let start = Instant::now();
        for _ in 0..25 {
            drop(budget.acquire(Class::Read, "a").await);
        }
        // 5 from the burst, then 20 at 10 per second.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1_990) && elapsed < Duration::from_millis(2_100),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_class_pauses_only_itself() {
        let budget = Budget::new(limits(Rate::new(100.0, 100)));
        budget.back_off(Class::Write, Duration::from_secs(2));
        let start = Instant::now();
        drop(budget.acquire(Class::Read, "a").await);
        drop(budget.acquire(Class::Patch, "a").await);
        assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
        drop(budget.acquire(Class::Write, "a").await);
        assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_caps_all_classes_together() {
        let budget = Budget::new(Limits { total: Some(Rate::new(10.0, 1)), ..limits(Rate::new(100.0, 100)) });
        let start = Instant::now();
        for class in [Class::Read, Class::Write, Class::Patch, Class::Read, Class::Write] {
            drop(budget.acquire(class, "a").await);
        }
        // 1 at once, then 4 at 10 per second.
        assert!(start.elapsed() >= Duration::from_millis(390), "{:?}", start.elapsed());
    }

    /// Namespace `busy` queues 40 requests, then `quiet` 5: they are served alternately, so `quiet` is done after
    /// about 10 grants, not 45.
    #[tokio::test(start_paused = true)]
    async fn namespaces_are_served_in_turn() {
        let budget = Budget::new(limits(Rate::new(10.0, 1)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let request = |namespace: &'static str| {
            let (budget, order) = (budget.clone(), order.clone());
            async move {
                let _permit = budget.acquire(Class::Read, namespace).await.expect("queued");
                lock(&order).push(namespace);
            }
        };
        let busy: Vec<_> = (0..40).map(|_| tokio::spawn(request("busy"))).collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let quiet: Vec<_> = (0..5).map(|_| tokio::spawn(request("quiet"))).collect();
        for task in busy.into_iter().chain(quiet) {
            task.await.expect("task");
        }
        let order = lock(&order).clone();
        let last_quiet = order.iter().rposition(|n| *n == "quiet").expect("quiet served");
        // Before `quiet` arrived, `busy` had about 3 grants; then one each in turn.
        assert!(last_quiet <= 14, "quiet waited behind busy: {order:?}");
        assert_eq!(order.iter().filter(|n| **n == "busy").count(), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_namespace_queue_defers_only_while_another_namespace_waits() {
        let budget = Budget::new(Limits { max_queued_per_namespace: 2, ..limits(Rate::new(1.0, 1)) });
        drop(budget.acquire(Class::Read, "busy").await.expect("the burst"));
        let spawn = |namespace: &'static str| {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire(Class::Read, namespace).await.map(drop) })
        };
        let mut waiting: Vec<_> = (0..2).map(|_| spawn("busy")).collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // At its bound, but alone: the idle budget is its to use (work is conserved).
        assert_eq!(budget.admit(Class::Read, "busy"), Ok(()));
        waiting.push(spawn("busy"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Another namespace queues (and is served in turn); now the busy one is deferred.
        let other = spawn("other");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let deferred = budget.acquire(Class::Read, "busy").await;
        assert_eq!(deferred.err(), Some(Deferred { class: Class::Read, queued: 3 }));
        assert!(budget.admit(Class::Read, "busy").is_err(), "admission says the same");
        for task in waiting {
            task.await.expect("task").expect("granted");
        }
        other.await.expect("task").expect("granted");
        // Once served, the namespace may queue again.
        budget.acquire(Class::Read, "busy").await.expect("room again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_namespace_never_holds_every_worker() {
        let budget = Budget::new(Limits { max_queued_per_namespace: 1, ..limits(Rate::new(1.0, 1)) });
        drop(budget.acquire(Class::Read, "a").await.expect("the burst"));
        let waiting: Vec<_> = (0..LONE_NAMESPACE_FACTOR)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move { budget.acquire(Class::Read, "a").await.map(drop) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(budget.acquire(Class::Read, "a").await.is_err(), "far beyond its bound");
        for task in waiting {
            task.await.expect("task").expect("granted");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_admitted_pass_is_never_deferred_but_counts() {
        let budget = Budget::new(Limits { max_queued_per_namespace: 1, ..limits(Rate::new(1.0, 1)) });
        drop(budget.acquire(Class::Read, "a").await.expect("the burst"));
        let waiting = budget.clone();
        let waiting = tokio::spawn(async move { waiting.acquire_admitted(Class::Write, "a").await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The admitted request waits beyond the bound; it counts, so while another namespace waits a new pass of
        // the namespace is deferred.
        let admitted = budget.clone();
        let admitted = tokio::spawn(async move { admitted.acquire_admitted(Class::Read, "a").await });
        let other = budget.clone();
        let other = tokio::spawn(async move { other.acquire(Class::Read, "b").await.map(drop) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(budget.acquire(Class::Read, "a").await.is_err());
        drop(waiting.await.expect("task"));
        drop(admitted.await.expect("task"));
        other.await.expect("task").expect("granted");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_request_gives_its_turn_away() {
        let budget = Budget::new(Limits { max_queued_per_namespace: 1, ..limits(Rate::new(1.0, 1)) });
        drop(budget.acquire(Class::Read, "a").await.expect("the burst"));
        // Waits for the next token, then is cancelled.
        let abandoned =
            tokio::time::timeout(Duration::from_millis(100), budget.acquire(Class::Read, "a")).await;
        assert!(abandoned.is_err());
        // The abandoned request no longer counts against the namespace, and the token goes to the next caller.
        let start = Instant::now();
        budget.acquire(Class::Read, "a").await.expect("queued");
        assert!(start.elapsed() <= Duration::from_millis(1_000), "{:?}", start.elapsed());
    }
}

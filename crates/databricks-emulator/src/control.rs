//! The test knobs in front of the emulated account: fault rules, server-side rate limits, and the request
//! statistics. Both the `Emulator` methods and the `/_emulator/*` admin API call these.

use std::{collections::BTreeMap, time::Instant};

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// A rule of the fault injector. A request matches when its operation matches `operation` (exact, a prefix
/// ending in `*`, or `*`). The first `skip` matches pass untouched; the next `times` (forever when unset) get
/// the fault.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    /// Operation name (see `GET /_emulator/stats`), `prefix.*`, or `*`.
    #[serde(default = "any_operation")]
    pub operation: String,
    /// Answer with this status instead of handling the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` header value (seconds or an HTTP date) sent with `status`.
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Send `status` with an empty body (as throttled requests sometimes get).
    #[serde(default)]
    pub empty_body: bool,
    /// Delay before handling, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Apply the request, then break the connection before the response body arrives.
    #[serde(default)]
    pub drop_response: bool,
    /// How many matching requests pass before the fault applies.
    #[serde(default)]
    pub skip: u32,
    /// How many times the fault applies; forever when unset.
    #[serde(default)]
    pub times: Option<u32>,
}

fn any_operation() -> String {
    "*".to_owned()
}

impl FaultRule {
    /// A rule answering `status` to `operation`.
    pub fn status(operation: &str, status: u16) -> Self {
        Self {
            operation: operation.to_owned(),
            status: Some(status),
            retry_after: None,
            empty_body: false,
            latency_ms: 0,
            drop_response: false,
            skip: 0,
            times: None,
        }
    }

    /// A rule that applies `operation` and then drops the response.
    pub fn drop_response(operation: &str) -> Self {
        Self { status: None, drop_response: true, ..Self::status(operation, 0) }
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }

    fn matches(&self, operation: &str) -> bool {
        self.operation == "*"
            || self.operation == operation
            || self.operation.strip_suffix('*').is_some_and(|prefix| operation.starts_with(prefix))
    }
}

/// Server-side token buckets, as Databricks throttles with 429. Databricks limits classes of request separately
/// (GET about 20/s, POST/PUT/DELETE about 5/s, PATCH about 2/s; reference "Account SCIM rate limits"), so each
/// class has an optional bucket, and `all` optionally limits every request. The token endpoint counts as a read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Bucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<Bucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Bucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Bucket>,
    /// The `Retry-After` of a throttled answer, in seconds (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// One token bucket: a sustained rate and how many requests it takes at once after idling.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    pub requests_per_second: f64,
    pub burst: f64,
}

impl RateLimit {
    /// One bucket for every request.
    pub fn all(requests_per_second: f64, burst: f64) -> Self {
        Self { all: Some(Bucket { requests_per_second, burst }), ..Self::default() }
    }

    /// Databricks' documented per-class limits, each with a one-second burst.
    pub fn documented() -> Self {
        let bucket = |rate: f64| Some(Bucket { requests_per_second: rate, burst: rate });
        Self { reads: bucket(20.0), writes: bucket(5.0), patches: bucket(2.0), ..Self::default() }
    }
}

impl LoggedRequest {
    /// Whether the request names one of `ids` (principal ids and UIDs in its path or query, including the
    /// percent-encoded search by tag `filter=externalId eq "<uid>"`, or the token endpoint's client id): which
    /// caller's objects it concerns.
    pub fn names_any(&self, ids: &std::collections::BTreeSet<String>) -> bool {
        self.target.split(['/', '?', '&', '=', '%', '"']).any(|s| ids.contains(s))
            || self.client_id.as_ref().is_some_and(|c| ids.contains(c))
            || ids.iter().any(|id| id.len() == 36 && self.target.contains(id.as_str()))
    }
}

/// The class of a request for rate limits: `reads`, `writes` or `patches`.
pub fn rate_class(method: &Method, operation: &str) -> &'static str {
    match *method {
        _ if operation.starts_with("oidc.") => "reads",
        Method::GET | Method::HEAD => "reads",
        Method::PATCH => "patches",
        _ => "writes",
    }
}

/// The buckets' fill, beside their settings.
pub(crate) struct Throttle {
    limit: RateLimit,
    /// Tokens of `all`, `reads`, `writes`, `patches`.
    tokens: [f64; 4],
    last: Instant,
}

impl Throttle {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let burst = |b: Option<Bucket>| b.map_or(0.0, |b| b.burst);
        let tokens = [burst(limit.all), burst(limit.reads), burst(limit.writes), burst(limit.patches)];
        Self { limit, tokens, last: Instant::now() }
    }

    /// Whether a request of `class` is refused; an accepted one takes a token from each bucket it passes.
    fn refuses(&mut self, class: &str) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let buckets = [self.limit.all, self.limit.reads, self.limit.writes, self.limit.patches];
        for (tokens, bucket) in self.tokens.iter_mut().zip(buckets) {
            if let Some(b) = bucket {
                *tokens = (*tokens + elapsed * b.requests_per_second).min(b.burst);
            }
        }
        let applies = [true, class == "reads", class == "writes", class == "patches"];
        let passing: Vec<usize> = (0..4).filter(|i| applies[*i] && buckets[*i].is_some()).collect();
        if passing.iter().any(|i| self.tokens[*i] < 1.0) {
            return true;
        }
        for i in passing {
            self.tokens[i] -= 1.0;
        }
        false
    }
}

/// One request as the emulator saw it (for tests that attribute requests to their callers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// Milliseconds since the Unix epoch when the request arrived.
    pub at_ms: u64,
    pub method: String,
    /// Path and query.
    pub target: String,
    /// `reads`, `writes` or `patches`.
    pub class: String,
    pub status: u16,
    /// For the token endpoint: the client id of a Basic-authenticated request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Request counts per operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    pub throttled: u64,
    pub operations: BTreeMap<String, OperationStats>,
    /// `METHOD path` of every write, oldest first (the first 100,000): which remote objects were written.
    #[serde(default)]
    pub write_paths: Vec<String>,
    /// Every request, oldest first (the first 200,000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LoggedRequest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OperationStats {
    pub count: u64,
    pub write: bool,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
}

impl Stats {
    /// Requests of one operation (0 when none).
    pub fn count(&self, operation: &str) -> u64 {
        self.operations.get(operation).map_or(0, |o| o.count)
    }

    /// Writes whose path names `id` as one of its segments (a principal, secret, policy or integration id).
    pub fn writes_to(&self, id: &str) -> Vec<&str> {
        self.write_paths.iter().filter(|p| p.split(['/', ' ']).any(|s| s == id)).map(String::as_str).collect()
    }

    /// Answers with `status` across all operations.
    pub fn with_status(&self, status: u16) -> u64 {
        self.operations.values().map(|o| o.statuses.get(&status).copied().unwrap_or(0)).sum()
    }
}

/// Every knob and the statistics, behind one lock.
#[derive(Default)]
pub(crate) struct Control {
    pub(crate) faults: Vec<(FaultRule, u32)>,
    pub(crate) rate_limit: Option<Throttle>,
    pub(crate) stats: Stats,
}

impl Control {
    pub(crate) fn add_fault(&mut self, rule: FaultRule) {
        self.faults.push((rule, 0));
    }

    pub(crate) fn set_rate_limit(&mut self, limit: Option<RateLimit>) {
        self.rate_limit = limit.map(Throttle::new);
    }

    /// The fault to apply to this request, if any (consumes one use of the rule).
    pub(crate) fn take_fault(&mut self, operation: &str) -> Option<FaultRule> {
        for (rule, seen) in &mut self.faults {
            if !rule.matches(operation) {
                continue;
            }
            *seen += 1;
            let applied = seen.saturating_sub(rule.skip);
            if *seen > rule.skip && rule.times.is_none_or(|t| applied <= t) {
                return Some(rule.clone());
            }
        }
        None
    }

    /// When a request of `class` is throttled: the `Retry-After` to answer with.
    pub(crate) fn throttle(&mut self, class: &str) -> Option<u32> {
        let throttle = self.rate_limit.as_mut()?;
        throttle.refuses(class).then(|| throttle.limit.retry_after_seconds.unwrap_or(1))
    }
}

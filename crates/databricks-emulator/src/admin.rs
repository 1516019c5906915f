//! The admin API under `/_emulator/` (faults, rate limits, consistency, the clock, stats, reset, state, token
//! introspection): each handler is a one-liner over what the `Emulator` methods call too.

use axum::{
    Json, Router,
    extract::State as AxumState,
    http::StatusCode,
    routing::{get, post, put},
};
use jiff::SignedDuration;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Shared,
    control::{Control, FaultRule, RateLimit, Stats},
    state::TokenSubject,
};

/// What both the admin API and the `Emulator` methods do.
impl Shared {
    pub(crate) async fn add_fault(&self, rule: FaultRule) {
        self.control.lock().await.add_fault(rule);
    }

    pub(crate) async fn clear_faults(&self) {
        self.control.lock().await.faults.clear();
    }

    pub(crate) async fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.control.lock().await.set_rate_limit(limit);
    }

    pub(crate) async fn set_consistency_delay(&self, delay: SignedDuration) {
        self.state.lock().await.consistency_delay = delay;
    }

    pub(crate) async fn advance_clock(&self, by: SignedDuration) {
        let mut state = self.state.lock().await;
        state.clock_offset = state.clock_offset.saturating_add(by);
    }

    pub(crate) async fn stats(&self) -> Stats {
        self.control.lock().await.stats.clone()
    }

    pub(crate) async fn reset_stats(&self) {
        self.control.lock().await.stats = Stats::default();
    }

    pub(crate) async fn summary(&self) -> Value {
        self.state.lock().await.summary()
    }

    /// Whether an access token is currently valid, and whom it acts as.
    pub(crate) async fn introspect(&self, token: &str) -> Value {
        let state = self.state.lock().await;
        let Some(issued) = state.valid_token(token) else { return json!({"active": false}) };
        let subject = match &issued.subject {
            TokenSubject::Principal { principal_id, .. } => {
                json!({"service_principal_id": principal_id,
                       "application_id": state.principals.get(principal_id).map(|p| p.application_id.clone())})
            }
            TokenSubject::AppUser { integration_id } => {
                json!({"user": "emulator-user@example.com", "integration_id": integration_id})
            }
        };
        json!({"active": true, "subject": subject, "scopes": issued.scopes,
               "expires_in": (issued.expires_at - state.now()).get_seconds()})
    }
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/_emulator/faults", get(faults).post(add_fault).delete(clear_faults))
        .route("/_emulator/rate-limit", put(set_rate_limit).delete(clear_rate_limit))
        .route("/_emulator/consistency", put(set_consistency))
        .route("/_emulator/rule-sets/concurrent-write", post(concurrent_rule_set_write))
        .route("/_emulator/clock", post(advance_clock))
        .route("/_emulator/stats", get(stats).delete(reset_stats))
        .route("/_emulator/reset", post(reset))
        .route("/_emulator/state", get(state))
        .route("/_emulator/tokens/introspect", post(introspect))
}

async fn faults(AxumState(s): AxumState<Shared>) -> Json<Value> {
    let control = s.control.lock().await;
    Json(json!({"rules": control.faults.iter().map(|(r, _)| r).collect::<Vec<_>>()}))
}

async fn add_fault(AxumState(s): AxumState<Shared>, Json(rule): Json<FaultRule>) -> StatusCode {
    s.add_fault(rule).await;
    StatusCode::NO_CONTENT
}

async fn clear_faults(AxumState(s): AxumState<Shared>) -> StatusCode {
    s.clear_faults().await;
    StatusCode::NO_CONTENT
}

async fn set_rate_limit(AxumState(s): AxumState<Shared>, Json(limit): Json<RateLimit>) -> StatusCode {
    s.set_rate_limit(Some(limit)).await;
    StatusCode::NO_CONTENT
}

async fn clear_rate_limit(AxumState(s): AxumState<Shared>) -> StatusCode {
    s.set_rate_limit(None).await;
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Consistency {
    delay_ms: u64,
}

async fn set_consistency(AxumState(s): AxumState<Shared>, Json(c): Json<Consistency>) -> StatusCode {
    s.set_consistency_delay(SignedDuration::from_millis(c.delay_ms as i64)).await;
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ConcurrentWrite {
    application_id: String,
    role: String,
    principal: String,
}

/// Another writer's change to a principal's rule set, landing just before the next write of it.
async fn concurrent_rule_set_write(
    AxumState(s): AxumState<Shared>,
    Json(w): Json<ConcurrentWrite>,
) -> StatusCode {
    let mut state = s.state.lock().await;
    state.rule_set_writes_before_write.push((w.application_id, w.role, w.principal));
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Clock {
    advance_seconds: i64,
}

async fn advance_clock(AxumState(s): AxumState<Shared>, Json(c): Json<Clock>) -> StatusCode {
    s.advance_clock(SignedDuration::from_secs(c.advance_seconds)).await;
    StatusCode::NO_CONTENT
}

async fn stats(AxumState(s): AxumState<Shared>) -> Json<Stats> {
    Json(s.stats().await)
}

async fn reset_stats(AxumState(s): AxumState<Shared>) -> StatusCode {
    s.reset_stats().await;
    StatusCode::NO_CONTENT
}

async fn reset(AxumState(s): AxumState<Shared>) -> StatusCode {
    s.state.lock().await.reset();
    *s.control.lock().await = Control::default();
    StatusCode::NO_CONTENT
}

async fn state(AxumState(s): AxumState<Shared>) -> Json<Value> {
    Json(s.summary().await)
}

#[derive(Deserialize)]
struct Introspect {
    token: String,
}

async fn introspect(AxumState(s): AxumState<Shared>, Json(i): Json<Introspect>) -> Json<Value> {
    Json(s.introspect(&i.token).await)
}

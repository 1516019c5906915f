//! The emulated account: principals, secrets, federation policies, app integrations, workspace assignments and
//! the tokens issued for them, one module each, answering in Databricks' wire shapes (JSON bodies and
//! [`ApiError`]s); the HTTP routes live in `routes` and `oidc`.

mod apps;
mod assignments;
mod groups;
mod policies;
mod principals;
mod rule_sets;
mod scim;
mod secrets;
mod tokens;

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::errors::ApiError;

pub use apps::App;
pub use groups::Group;
pub use policies::Policy;
pub use principals::Principal;
pub use rule_sets::RuleSet;
pub use secrets::{Secret, beyond_secret_scopes};
pub use tokens::{AuthCode, IssuedToken, RefreshGrant, TokenSubject};

/// At most this many OAuth secrets per principal (Databricks docs).
pub const MAX_SECRETS: usize = 5;
/// At most this many federation policies per principal (Databricks docs).
pub const MAX_POLICIES: usize = 20;
/// Default and maximum secret lifetime: 730 days.
pub const MAX_SECRET_LIFETIME_SECS: i64 = 63_072_000;

/// How the emulator is set up.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// The only account id served; other ids get 404.
    pub account_id: String,
    /// Application id of the bootstrap account-admin service principal.
    pub admin_client_id: String,
    /// Its OAuth secret (never expires).
    pub admin_client_secret: String,
    /// Workspaces that accept permission assignments.
    pub workspaces: Vec<i64>,
    /// Emit int64 ids as JSON strings (proto3-JSON style) to exercise lenient clients: the Python SDK and the Go
    /// SDK from v0.175 accept them; older Go SDKs (so the CLI v1.12.1 and the Terraform provider v1.126.0) fail.
    pub int64_as_strings: bool,
    /// HTTP status of the answer to a 6th secret (Databricks' exact answer is undocumented).
    pub secret_limit_status: StatusCode,
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("account_id", &self.account_id)
            .field("admin_client_id", &self.admin_client_id)
            .field("admin_client_secret", &"<redacted>")
            .field("workspaces", &self.workspaces)
            .finish_non_exhaustive()
    }
}

impl EmulatorConfig {
    /// A config with the given account and admin credentials, one workspace, and documented defaults.
    pub fn new(account_id: &str, admin_client_id: &str, admin_client_secret: &str) -> Self {
        Self {
            account_id: account_id.to_owned(),
            admin_client_id: admin_client_id.to_owned(),
            admin_client_secret: admin_client_secret.to_owned(),
            workspaces: Vec::new(),
            int64_as_strings: false,
            secret_limit_status: StatusCode::BAD_REQUEST,
        }
    }
}

/// The whole emulated account.
pub struct State {
    pub config: EmulatorConfig,
    next_principal: u64,
    pub principals: BTreeMap<String, Principal>,
    pub groups: BTreeMap<String, Group>,
    /// Access-control rule sets of principals, by application id (lowercase).
    pub rule_sets: BTreeMap<String, RuleSet>,
    /// Writes another writer makes just before the next write of a principal's rule set lands (application id,
    /// role, principal): a test's concurrent writer, between the writer's read and its write.
    pub rule_set_writes_before_write: Vec<(String, String, String)>,
    pub secrets: BTreeMap<String, Vec<Secret>>,
    pub admin_secret_hash: String,
    /// Keyed by (service principal id or "" for account policies, policy id).
    pub policies: BTreeMap<(String, String), Policy>,
    pub apps: BTreeMap<String, App>,
    pub assignments: BTreeMap<i64, BTreeMap<String, Vec<String>>>,
    pub tokens: HashMap<String, IssuedToken>,
    pub refresh_tokens: HashMap<String, RefreshGrant>,
    pub codes: HashMap<String, AuthCode>,
    /// Shifts the emulator's clock forward, so tests can expire secrets and tokens without waiting.
    pub clock_offset: SignedDuration,
    /// Objects younger than this are invisible to reads (eventual consistency).
    pub consistency_delay: SignedDuration,
}

pub fn hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3339 with millisecond precision in UTC, as Databricks writes timestamps.
pub fn rfc3339(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl State {
    pub fn new(config: EmulatorConfig) -> Self {
        let mut state = Self {
            admin_secret_hash: hash(&config.admin_client_secret),
            config,
            next_principal: 0,
            principals: BTreeMap::new(),
            groups: BTreeMap::new(),
            rule_sets: BTreeMap::new(),
            rule_set_writes_before_write: Vec::new(),
            secrets: BTreeMap::new(),
            policies: BTreeMap::new(),
            apps: BTreeMap::new(),
            assignments: BTreeMap::new(),
            tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            codes: HashMap::new(),
            clock_offset: SignedDuration::ZERO,
            consistency_delay: SignedDuration::ZERO,
        };
        state.reset();
        state
    }

    /// Back to a fresh account holding only the bootstrap admin principal.
    pub fn reset(&mut self) {
        self.next_principal = 0;
        self.principals.clear();
        self.groups.clear();
        self.rule_sets.clear();
        self.rule_set_writes_before_write.clear();
        self.secrets.clear();
        self.policies.clear();
        self.apps.clear();
        self.assignments = self.config.workspaces.iter().map(|ws| (*ws, BTreeMap::new())).collect();
        self.tokens.clear();
        self.refresh_tokens.clear();
        self.codes.clear();
        self.clock_offset = SignedDuration::ZERO;
        self.consistency_delay = SignedDuration::ZERO;
        let id = self.new_principal_id();
        let admin = Principal {
            id: id.clone(),
            application_id: self.config.admin_client_id.clone(),
            display_name: "emulator account admin".to_owned(),
            external_id: None,
            active: true,
            roles: vec!["account_admin".to_owned()],
            created: Timestamp::UNIX_EPOCH,
        };
        self.principals.insert(id, admin);
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::now().saturating_add(self.clock_offset).unwrap_or(Timestamp::MAX)
    }

    pub(super) fn new_principal_id(&mut self) -> String {
        self.next_principal += 1;
        // Large int64s, as Databricks' ids are.
        (7_340_000_000_000_000 + self.next_principal * 1_009).to_string()
    }

    pub(super) fn visible(&self, created: Timestamp) -> bool {
        created.saturating_add(self.consistency_delay).unwrap_or(Timestamp::MAX) <= self.now()
    }

    /// An int64 as a JSON number, or as a string when configured to (proto3-JSON style).
    pub fn int64(&self, value: &str) -> Value {
        match (self.config.int64_as_strings, value.parse::<i64>()) {
            (false, Ok(n)) => json!(n),
            _ => json!(value),
        }
    }
}

pub(super) fn optional_string(body: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(format!("{key} must be a string."))),
    }
}

pub fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The state tests start from: an account holding only its bootstrap admin.
#[cfg(test)]
pub(crate) fn test_state() -> State {
    State::new(EmulatorConfig::new("acct", "admin", "secret"))
}

impl State {
    /// What exists, without secret values: for tests that assert nothing was duplicated or left behind.
    pub fn summary(&self) -> Value {
        let principals: Vec<Value> = self
            .principals
            .values()
            .map(|p| {
                json!({
                    "id": p.id, "applicationId": p.application_id, "displayName": p.display_name,
                    "externalId": p.external_id, "active": p.active,
                    "secrets": self.secrets.get(&p.id).map_or(0, Vec::len),
                    "policies": self.policies.keys().filter(|(sp, _)| sp == &p.id).count(),
                    "groups": self.groups_of_json(&p.id).iter().map(|g| g["display"].clone()).collect::<Vec<_>>(),
                    "usedBy": self.rule_sets.get(&p.application_id.to_lowercase()).map(|r| {
                        r.grant_rules.iter().flat_map(|(role, who)| who.iter().map(move |w| format!("{role} {w}")))
                            .collect::<Vec<_>>()
                    }).unwrap_or_default(),
                })
            })
            .collect();
        let assignments: BTreeMap<String, usize> =
            self.assignments.iter().map(|(ws, a)| (ws.to_string(), a.len())).collect();
        json!({
            "principals": principals,
            "apps": self.apps.len(),
            "groups": self.groups.len(),
            "account_policies": self.policies.keys().filter(|(sp, _)| sp.is_empty()).count(),
            "assignments": assignments,
        })
    }
}

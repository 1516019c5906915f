//! Access-control rule sets (preview API): who may use or manage a service principal. A rule set is replaced whole,
//! with the etag it was read at: a stale etag is refused (409 `RESOURCE_CONFLICT`), so a writer reads, merges and
//! writes again instead of overwriting what another writer added.

use reqwest::Method;
use serde_json::json;

use super::{
    Error,
    client::AccountClient,
    types::{GrantRule, RuleSet},
};

const PATH: &str = "preview/access-control/rule-sets";

impl AccountClient {
    /// The name of a service principal's rule set.
    pub fn principal_rule_set_name(&self, application_id: &str) -> String {
        format!("accounts/{}/servicePrincipals/{application_id}/ruleSets/default", self.account_id())
    }

    pub async fn get_rule_set(&self, name: &str) -> Result<RuleSet, Error> {
        let query = [("name", name.to_owned()), ("etag", String::new())];
        self.call::<_, ()>("rule_sets.get", Method::GET, PATH, &query, None, true).await
    }

    /// Replaces the rule set read at `etag`. `Err` with [`Error::is_conflict`] when it changed since: read again.
    pub async fn put_rule_set(
        &self,
        name: &str,
        etag: &str,
        grant_rules: &[GrantRule],
    ) -> Result<RuleSet, Error> {
        let body =
            json!({"name": name, "rule_set": {"name": name, "etag": etag, "grant_rules": grant_rules}});
        // Safe to retry: a replay of a write that landed carries a stale etag and is refused.
        self.call("rule_sets.put", Method::PUT, PATH, &[], Some(&body), true).await
    }
}

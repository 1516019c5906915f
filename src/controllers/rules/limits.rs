//! The caps a namespace's delegations put on what it asks for (`delegations[].limits`): secret lifetimes,
//! orphaning, how many objects of each kind, and where app connections may redirect and what they may ask for.
//! A namespace gets the most any of its rules allows; a rule without a cap allows without limit, except orphaning,
//! which only a rule that says `allowOrphan: true` allows.

use std::time::Duration;

use crate::crd::{Delegation, DelegationLimits, parse_duration};

/// What is counted against a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    ServicePrincipals,
    AppConnections,
    TrustPolicies,
}

/// One namespace's caps (`None`: no cap).
#[derive(Debug, Clone, PartialEq)]
pub struct Caps {
    pub secret_lifetime: Option<Duration>,
    pub allow_orphan: bool,
    pub service_principals: Option<u32>,
    pub app_connections: Option<u32>,
    pub trust_policies: Option<u32>,
    pub redirect_hosts: Option<Vec<String>>,
    pub app_scopes: Option<Vec<String>>,
}

impl Default for Caps {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// The most of `values` (one per rule): no cap when there is no rule or a rule sets none.
fn most<T: Ord + Copy>(values: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let mut most = None;
    for value in values {
        let value = value?;
        most = Some(most.map_or(value, |m: T| m.max(value)));
    }
    most
}

/// The union of `lists` (one per rule): any value when there is no rule or a rule lists none.
fn union(lists: impl IntoIterator<Item = Vec<String>>) -> Option<Vec<String>> {
    let mut all: Option<Vec<String>> = None;
    for list in lists {
        if list.is_empty() {
            return None;
        }
        all.get_or_insert_default().extend(list);
    }
    all.map(|mut all| {
        all.sort();
        all.dedup();
        all
    })
}

impl Caps {
    pub fn unlimited() -> Self {
        Self {
            secret_lifetime: None,
            allow_orphan: true,
            service_principals: None,
            app_connections: None,
            trust_policies: None,
            redirect_hosts: None,
            app_scopes: None,
        }
    }

    /// The caps of the delegation rules that select a namespace.
    pub fn of(rules: &[&Delegation]) -> Self {
        let limits = |r: &Delegation| r.limits.clone().unwrap_or_default();
        let all: Vec<DelegationLimits> = rules.iter().map(|r| limits(r)).collect();
        let apps: Vec<DelegationLimits> =
            rules.iter().filter(|r| r.app_connections).map(|r| limits(r)).collect();
        let trust: Vec<DelegationLimits> =
            rules.iter().filter(|r| r.trust_policies).map(|r| limits(r)).collect();
        let count = |v: Option<i32>| v.map(|n| n.max(0) as u32);
        Self {
            secret_lifetime: most(
                all.iter()
                    .map(|l| l.max_secret_lifetime.as_deref().and_then(parse_duration).map(|d| d.as_secs())),
            )
            .map(Duration::from_secs),
            allow_orphan: all.iter().any(|l| l.allow_orphan == Some(true)),
            service_principals: most(all.iter().map(|l| count(l.max_service_principals))),
            app_connections: most(apps.iter().map(|l| count(l.max_app_connections))),
            trust_policies: most(trust.iter().map(|l| count(l.max_trust_policies))),
            redirect_hosts: union(apps.iter().map(|l| l.app_redirect_hosts.clone())),
            app_scopes: union(apps.iter().map(|l| l.app_scopes.clone())),
        }
    }

    /// The lifetime an OAuth secret gets, and the cap when it lowered the requested one.
    pub fn lifetime(&self, requested: Duration) -> (Duration, Option<Duration>) {
        match self.secret_lifetime {
            Some(cap) if requested > cap => (cap, Some(cap)),
            _ => (requested, None),
        }
    }

    /// How many of `counted` the namespace may have, when capped.
    pub fn cap(&self, counted: Counted) -> Option<u32> {
        match counted {
            Counted::ServicePrincipals => self.service_principals,
            Counted::AppConnections => self.app_connections,
            Counted::TrustPolicies => self.trust_policies,
        }
    }

    /// Why an app connection asking for `redirect_urls` and `scopes` is not allowed, if it is not.
    pub fn app_refusal(&self, redirect_urls: &[String], scopes: &[String]) -> Option<String> {
        if let Some(hosts) = &self.redirect_hosts
            && let Some(url) = redirect_urls.iter().find(|u| !hosts.iter().any(|h| host_allowed(h, u)))
        {
            return Some(format!("redirect URL {url} is not on an allowed host ({})", hosts.join(", ")));
        }
        if let Some(allowed) = &self.app_scopes
            && let Some(scope) = scopes.iter().find(|s| !allowed.contains(s))
        {
            return Some(format!("scope {scope} is not allowed ({})", allowed.join(", ")));
        }
        None
    }
}

/// Whether `url`'s host matches `pattern`: the host itself, `*.domain` (any subdomain, not the domain itself), or
/// `localhost` (also 127.0.0.0/8 and [::1]).
pub fn host_allowed(pattern: &str, url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback() => "localhost".to_owned(),
        Some(url::Host::Ipv6(ip)) if ip.is_loopback() => "localhost".to_owned(),
        Some(other) => other.to_string(),
        None => return false,
    };
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => host == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(value: serde_json::Value) -> Delegation {
        let mut base = json!({"namespaces": {"names": ["a"]}});
        base.as_object_mut().expect("object").extend(value.as_object().expect("object").clone());
        serde_json::from_value(base).expect("rule")
    }

    #[test]
    fn a_namespace_gets_the_most_any_of_its_rules_allows() {
        let strict = rule(
            json!({"appConnections": true, "limits": {"maxSecretLifetime": "720h", "allowOrphan": false,
            "maxServicePrincipals": 5, "maxAppConnections": 2, "appRedirectHosts": ["app.example.com"], "appScopes": ["sql"]}}),
        );
        let looser = rule(
            json!({"appConnections": true, "limits": {"maxSecretLifetime": "2160h", "maxServicePrincipals": 10,
            "allowOrphan": true,
            "maxAppConnections": 3, "appRedirectHosts": ["*.corp.example.com"], "appScopes": ["sql", "offline_access"]}}),
        );
        let caps = Caps::of(&[&strict, &looser]);
        assert_eq!(caps.secret_lifetime, Some(Duration::from_secs(2160 * 3600)));
        assert!(caps.allow_orphan, "one rule leaves orphaning allowed");
        assert_eq!((caps.service_principals, caps.app_connections), (Some(10), Some(3)));
        assert_eq!(caps.app_scopes.as_deref(), Some(&["offline_access".to_owned(), "sql".to_owned()][..]));
        // A rule without a cap: no cap.
        let open = rule(json!({"appConnections": true}));
        assert_eq!(Caps::of(&[&strict, &open]).service_principals, None);
        assert_eq!(Caps::of(&[&strict, &open]).redirect_hosts, None);
        assert_eq!(Caps::of(&[&strict]).service_principals, Some(5));
        assert!(!Caps::of(&[&strict]).allow_orphan);
        // App caps come only from rules that grant app connections.
        let no_apps = rule(json!({"trustPolicies": true}));
        assert_eq!(Caps::of(&[&strict, &no_apps]).app_connections, Some(2));
        assert_eq!(Caps::of(&[&no_apps]).trust_policies, None);
        // Orphaning only where a rule says so; no rule caps nothing else.
        assert!(!Caps::of(&[&open]).allow_orphan, "orphaning is opt-in");
        assert_eq!(Caps::of(&[]), Caps { allow_orphan: false, ..Caps::unlimited() });
    }

    #[test]
    fn lifetimes_are_lowered_to_the_cap() {
        let caps = Caps { secret_lifetime: Some(Duration::from_secs(3600)), ..Caps::unlimited() };
        assert_eq!(
            caps.lifetime(Duration::from_secs(7200)),
            (Duration::from_secs(3600), Some(Duration::from_secs(3600)))
        );
        assert_eq!(caps.lifetime(Duration::from_secs(60)), (Duration::from_secs(60), None));
    }

    #[test]
    fn app_connections_redirect_only_to_allowed_hosts_and_ask_only_allowed_scopes() {
        assert!(host_allowed("app.example.com", "https://app.example.com/cb"));
        assert!(!host_allowed("app.example.com", "https://evil.example.com/cb"));
        assert!(host_allowed("*.example.com", "https://a.b.example.com/cb"));
        assert!(!host_allowed("*.example.com", "https://example.com/cb"), "a wildcard is subdomains only");
        assert!(!host_allowed("*.example.com", "https://example.com.evil.io/cb"));
        assert!(
            host_allowed("localhost", "http://127.0.0.1:8080/cb")
                && host_allowed("localhost", "http://[::1]/cb")
        );
        let caps = Caps {
            redirect_hosts: Some(vec!["app.example.com".into()]),
            app_scopes: Some(vec!["sql".into()]),
            ..Caps::unlimited()
        };
        let urls = |u: &str| vec![u.to_owned()];
        assert_eq!(caps.app_refusal(&urls("https://app.example.com/cb"), &["sql".into()]), None);
        assert!(
            caps.app_refusal(&urls("https://attacker.example/cb"), &["sql".into()])
                .is_some_and(|m| m.contains("attacker"))
        );
        assert!(
            caps.app_refusal(&urls("https://app.example.com/cb"), &["all-apis".into()])
                .is_some_and(|m| m.contains("all-apis"))
        );
    }
}

//! SCIM value parsing shared by the principal routes: filters, booleans, strings and filtered patch paths.

use axum::http::StatusCode;
use serde_json::Value;

use super::optional_string;
use crate::errors::ApiError;

/// A SCIM string attribute of a create or replace: absent, null or a string; anything else is a SCIM 400.
pub(super) fn scim_optional_string(body: &Value, key: &str) -> Result<Option<String>, ApiError> {
    optional_string(body, key).map_err(|_| {
        ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidValue"), format!("{key} must be a string."))
    })
}

/// A SCIM boolean: `true`/`false`, or the strings "true"/"false" (any case), as SCIM PATCH values arrive (Terraform
/// sends `[{"value": "false"}]`); accepted on create and replace too. Anything else is refused.
pub(super) fn scim_boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `active` of a create or replace: true when absent; a value that is no boolean is refused, never read as true.
pub(super) fn active_of(body: &Value) -> Result<bool, ApiError> {
    match body.get("active") {
        None | Some(Value::Null) => Ok(true),
        Some(value) => scim_boolean(value).ok_or_else(|| {
            ApiError::scim(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                format!("active must be a boolean, got {value}"),
            )
        }),
    }
}

/// The value a SCIM filter path names, `roles[value eq "account_admin"]` → `account_admin`.
pub(super) fn filtered_value(path: &str) -> Option<String> {
    let filter = path.split_once('[')?.1.strip_suffix(']')?;
    let mut words = filter.split_whitespace();
    let (attribute, operator) = (words.next()?, words.next()?);
    let value = words.collect::<Vec<_>>().join(" ");
    (attribute.eq_ignore_ascii_case("value") && operator.eq_ignore_ascii_case("eq"))
        .then(|| value.trim_matches('"').to_owned())
}

/// A SCIM patch value may be bare (`false`) or a ComplexValue array (`[{"value": "false"}]`, as Terraform sends).
pub(super) fn scalar(value: &Value) -> Value {
    match value {
        Value::Array(items) if items.len() == 1 => items[0].get("value").cloned().unwrap_or(Value::Null),
        other => other.clone(),
    }
}

/// A SCIM filter: `attr op "value"` terms joined by `and` / `or` (no parentheses), as Databricks supports.
pub(super) struct Filter {
    /// Disjunction of conjunctions.
    any: Vec<Vec<(String, String, String)>>,
}

const MAX_FILTER_NODES: usize = 200;

impl Filter {
    pub(super) fn parse(text: &str) -> Result<Self, ApiError> {
        let invalid = |detail: String| ApiError::scim(StatusCode::BAD_REQUEST, Some("invalidFilter"), detail);
        let tokens = tokenize(text).ok_or_else(|| invalid(format!("Invalid filter '{text}'")))?;
        let mut any = vec![Vec::new()];
        let mut i = 0;
        let mut nodes = 0;
        while i < tokens.len() {
            let (attr, op, value) = match (tokens.get(i), tokens.get(i + 1), tokens.get(i + 2)) {
                (Some(a), Some(o), Some(v)) => (a.clone(), o.to_ascii_lowercase(), v.clone()),
                _ => return Err(invalid(format!("Invalid filter '{text}'"))),
            };
            if !matches!(op.as_str(), "eq" | "ne" | "co" | "sw") {
                return Err(invalid(format!("Unsupported filter operator '{op}'")));
            }
            if op == "co" && value.is_empty() {
                return Err(ApiError::scim(StatusCode::INTERNAL_SERVER_ERROR, None, "null"));
            }
            nodes += 1;
            if let Some(last) = any.last_mut() {
                last.push((attr, op, value));
            }
            i += 3;
            match tokens.get(i).map(|t| t.to_ascii_lowercase()) {
                None => {}
                Some(joiner) if joiner == "and" => i += 1,
                Some(joiner) if joiner == "or" => {
                    any.push(Vec::new());
                    i += 1;
                }
                Some(other) => return Err(invalid(format!("Unexpected '{other}' in filter"))),
            }
            nodes += 1;
        }
        if nodes > MAX_FILTER_NODES {
            return Err(invalid(format!("Filter has more than {MAX_FILTER_NODES} nodes")));
        }
        Ok(Self { any })
    }

    pub(super) fn matches(&self, resource: &Value) -> bool {
        self.any.iter().any(|all| {
            all.iter().all(|(attr, op, expected)| {
                let found = resource
                    .as_object()
                    .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)))
                    .map(|(_, v)| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                match (op.as_str(), found) {
                    ("eq", Some(v)) => v.eq_ignore_ascii_case(expected),
                    ("ne", Some(v)) => !v.eq_ignore_ascii_case(expected),
                    ("ne", None) => true,
                    ("co", Some(v)) => v.to_lowercase().contains(&expected.to_lowercase()),
                    ("sw", Some(v)) => v.to_lowercase().starts_with(&expected.to_lowercase()),
                    _ => false,
                }
            })
        })
    }
}

fn tokenize(text: &str) -> Option<Vec<String>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '"' => break,
                    other => value.push(other),
                }
            }
            tokens.push(value);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(word);
        }
    }
    Some(tokens)
}

#[cfg(test)]
mod tests {
    use crate::state::test_state as state;
    use serde_json::json;

    #[test]
    fn filter_matches_like_databricks() {
        let mut s = state();
        let a = s.create_principal(&json!({"displayName": "etl", "externalId": "uid-1"})).expect("create");
        s.create_principal(&json!({"displayName": "etl"})).expect("same display name is allowed");
        assert_eq!(s.list_principals(Some("displayName eq \"etl\"")).expect("list").len(), 2);
        let by_app =
            s.list_principals(Some(&format!("applicationId eq \"{}\"", a.application_id))).expect("list");
        assert_eq!(by_app.len(), 1);
        assert_eq!(
            s.list_principals(Some("externalId eq \"uid-1\" and displayName sw \"e\"")).expect("l").len(),
            1
        );
        assert_eq!(
            s.list_principals(Some("externalId eq \"nope\" or displayName co \"TL\"")).expect("l").len(),
            2
        );
        assert!(s.list_principals(Some("displayName gt \"a\"")).is_err());
        assert!(s.list_principals(Some("displayName eq")).is_err());
    }
}

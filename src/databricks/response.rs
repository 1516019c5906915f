//! What an answer of Databricks means: a body decoded, or an error read from any of the shapes Databricks
//! answers with (REST, SCIM, OAuth, legacy, HTML, text, empty), with the server's own words and `Retry-After`.
//! Shared by the token requests (`auth`) and the account API client (`client`).

use std::time::Duration;

use reqwest::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Error;

pub fn decode<T: DeserializeOwned>(operation: &'static str, bytes: &[u8]) -> Result<T, Error> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
    // The body may hold a secret value: report only where decoding failed, never the body.
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        operation,
        message: format!(
            "the answer does not have the expected shape (line {}, column {})",
            e.line(),
            e.column()
        ),
    })
}

pub fn transport_error(operation: &'static str, err: &reqwest::Error) -> Error {
    let message = if err.is_timeout() {
        "timed out waiting for Databricks".to_owned()
    } else if err.is_connect() {
        format!("could not connect to Databricks: {}", root_cause(err))
    } else {
        // Whether the write was applied is unknown: callers of non-idempotent calls must look before retrying.
        format!("the connection broke before the whole answer arrived: {}", root_cause(err))
    };
    Error::Transport { operation, message, timeout: err.is_timeout() }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let when = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Reads an error answer in any of the shapes Databricks uses: REST, SCIM, legacy `{"error"}`, HTML, text, empty.
pub fn api_error(
    operation: &'static str,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Error {
    let text = String::from_utf8_lossy(body).trim().to_owned();
    let reason = status.canonical_reason().unwrap_or("error").to_owned();
    let default_code = reason.to_uppercase().replace(' ', "_");
    let (code, message) = match serde_json::from_str::<Value>(&text) {
        Ok(json) if json.get("error_code").is_some() => (
            match &json["error_code"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            json.get("message").and_then(Value::as_str).unwrap_or(&reason).to_owned(),
        ),
        Ok(json) if json.get("detail").is_some() || json.get("scimType").is_some() => {
            let scim_status = json
                .get("status")
                .and_then(Value::as_str)
                .map_or_else(|| status.as_u16().to_string(), str::to_owned);
            let detail = json.get("detail").and_then(Value::as_str).unwrap_or_default();
            let detail = if detail == "null" { "SCIM API Internal Error" } else { detail };
            let message = match json.get("scimType").and_then(Value::as_str) {
                Some(scim_type) => format!("{scim_type} {detail}"),
                None => detail.to_owned(),
            };
            (format!("SCIM_{scim_status}"), message)
        }
        Ok(json) if json.get("error").and_then(Value::as_str).is_some() => {
            (default_code, json["error"].as_str().unwrap_or_default().to_owned())
        }
        _ if text.is_empty() => (default_code, reason),
        _ if text.contains('<') => (default_code, html_message(&text).unwrap_or(reason)),
        _ => match text.split_once(": ") {
            Some((code, message)) if code.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                (code.to_owned(), message.to_owned())
            }
            _ => (default_code, text.chars().take(500).collect()),
        },
    };
    Error::Api { operation, status: status.as_u16(), code, message, retry_after }
}

fn html_message(html: &str) -> Option<String> {
    for (open, close) in [("<pre>", "</pre>"), ("<title>", "</title>")] {
        if let Some(start) = html.find(open) {
            let rest = &html[start + open.len()..];
            if let Some(end) = rest.find(close) {
                return Some(rest[..end].trim().to_owned());
            }
        }
    }
    None
}

/// The OAuth error body (`error`, `error_description`), or a generic one when the body is not JSON.
pub fn oauth_error(operation: &'static str, status: u16, body: &[u8]) -> Error {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |names: &[&str]| {
        names.iter().find_map(|n| parsed.get(*n).and_then(|v| v.as_str()).map(str::to_owned))
    };
    Error::OAuth {
        operation,
        status,
        error: field(&["error", "errorCode"]).unwrap_or_else(|| format!("http_{status}")),
        description: field(&["error_description", "errorSummary"])
            .unwrap_or_else(|| "no description".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16, body: &str) -> Error {
        api_error("test", StatusCode::from_u16(status).expect("status"), body.as_bytes(), None)
    }

    #[test]
    fn error_bodies_of_every_shape_keep_the_server_message() {
        let rest =
            error(404, r#"{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"Secret x does not exist."}"#);
        assert!(rest.is_not_found());
        assert_eq!(
            rest.to_string(),
            "test: Databricks answered 404 RESOURCE_DOES_NOT_EXIST: Secret x does not exist."
        );
        let scim = error(
            400,
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"detail":"bad","status":"400","scimType":"invalidValue"}"#,
        );
        assert!(
            matches!(&scim, Error::Api { code, message, .. } if code == "SCIM_400" && message == "invalidValue bad")
        );
        let scim_null = error(500, r#"{"schemas":[],"detail":"null","status":"500"}"#);
        assert!(matches!(&scim_null, Error::Api { message, .. } if message == "SCIM API Internal Error"));
        let legacy = error(400, r#"{"error":"something broke"}"#);
        assert!(matches!(&legacy, Error::Api { message, .. } if message == "something broke"));
        let html = error(403, "<html><title>Error 403 Invalid access token.</title></html>");
        assert!(matches!(&html, Error::Api { message, .. } if message == "Error 403 Invalid access token."));
        let plain = error(400, "INVALID_STATE: workspace is not ready");
        assert!(
            matches!(&plain, Error::Api { code, message, .. } if code == "INVALID_STATE" && message == "workspace is not ready")
        );
        let empty = error(429, "");
        assert!(empty.is_throttled() && empty.is_retryable());
        assert!(matches!(&empty, Error::Api { message, .. } if message == "Too Many Requests"));
        let numeric = error(409, r#"{"error_code":409,"message":"exists"}"#);
        assert!(numeric.is_conflict() && !numeric.is_retryable());
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5);
        let date =
            jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&soon).expect("format");
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_str(&date).expect("header"));
        let wait = retry_after(&headers).expect("parsed");
        assert!(wait > Duration::from_secs(3) && wait <= Duration::from_secs(5), "{wait:?}");
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}

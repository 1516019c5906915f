//! The error bodies Databricks answers with, in its three shapes: REST, SCIM and OAuth.

use axum::{
    Json,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// An error answer of the emulator.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// `{"error_code": ..., "message": ...}`, the shape of most REST endpoints.
    Rest { status: StatusCode, code: &'static str, message: String },
    /// The SCIM error document (RFC 7644 §3.12) of the account SCIM endpoints.
    Scim { status: StatusCode, scim_type: Option<&'static str>, detail: String },
    /// `{"error": ..., "error_description": ...}` of the OIDC token endpoint.
    OAuth { status: StatusCode, error: &'static str, description: String },
    /// An empty body, as a throttled request sometimes gets.
    Empty { status: StatusCode, retry_after: Option<String> },
}

impl ApiError {
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::Rest {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: format!("{what} does not exist."),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Rest {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::Rest { status: StatusCode::CONFLICT, code: "RESOURCE_ALREADY_EXISTS", message: message.into() }
    }

    pub fn scim(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self::Scim { status, scim_type, detail: detail.into() }
    }

    pub fn scim_not_found(id: &str) -> Self {
        Self::scim(StatusCode::NOT_FOUND, None, format!("Service Principal with id {id} not found."))
    }

    pub fn oauth(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self::OAuth { status, error, description: description.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Rest { status, .. }
            | Self::Scim { status, .. }
            | Self::OAuth { status, .. }
            | Self::Empty { status, .. } => *status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Rest { status, code, message } => {
                (status, Json(json!({"error_code": code, "message": message}))).into_response()
            }
            Self::Scim { status, scim_type, detail } => {
                let mut body = json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "detail": detail,
                    "status": status.as_u16().to_string(),
                });
                if let Some(scim_type) = scim_type {
                    body["scimType"] = scim_type.into();
                }
                (status, Json(body)).into_response()
            }
            Self::OAuth { status, error, description } => {
                let body = json!({"error": error, "error_id": uuid(), "error_description": description});
                (status, Json(body)).into_response()
            }
            Self::Empty { status, retry_after } => {
                let mut response = status.into_response();
                if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    response.headers_mut().insert("retry-after", value);
                }
                response
            }
        }
    }
}

/// A random UUID v4 string.
pub fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    (0..n).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

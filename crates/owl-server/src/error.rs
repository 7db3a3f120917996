//! Errors as the clients expect them: OpenAI's error object
//! (`{"error":{"message","type","param","code"}}`) with the matching HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use owl_engine::EngineError;
use serde_json::json;

/// An error answer of any route.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// OpenAI's machine-readable code (`invalid_api_key`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 naming the field at fault.
    pub fn field(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{param}: {}", message.into()),
            param: Some(param.to_string()),
            code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), param: None, code: None }
    }

    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "invalid or missing API key: send it as 'Authorization: Bearer KEY' (or 'x-api-key: KEY')".into(),
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into(), param: None, code: None }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), param: None, code: None }
    }

    /// OpenAI's `type`, from the status.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "invalid_request_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::InvalidParameter { name, .. } => ApiError::field(name, message_after(&message)),
            EngineError::PromptTooLong { .. } => ApiError {
                status: StatusCode::BAD_REQUEST,
                message,
                param: Some("messages".into()),
                code: Some("context_length_exceeded"),
            },
            EngineError::EmptyPrompt => ApiError::bad_request(message),
            EngineError::TokenOutOfRange { what, .. } => {
                ApiError { status: StatusCode::BAD_REQUEST, message, param: Some(what.into()), code: None }
            }
            EngineError::ShuttingDown => {
                ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message, param: None, code: Some("shutting_down") }
            }
            EngineError::QueueFull { .. } => {
                ApiError { status: StatusCode::TOO_MANY_REQUESTS, message, param: None, code: Some("server_busy") }
            }
            _ => ApiError::internal(message),
        }
    }
}

/// The engine's message without the "invalid NAME = VALUE" head it shares with `field`.
fn message_after(message: &str) -> String {
    message.strip_prefix("invalid ").unwrap_or(message).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        });
        (self.status, Json(body)).into_response()
    }
}

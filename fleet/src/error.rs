//! The API's errors: each names the problem and, where it can, the field
//! and the fix, as a JSON body with a 4xx status (5xx only for the hub).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::error;

use crate::hub::HubError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {why} (fix: {fix})")]
    Field {
        field: String,
        why: String,
        fix: String,
    },
    #[error("{0}")]
    BadRequest(String),
    /// Every problem of a document, each naming its field and the fix.
    #[error("invalid; nothing was changed:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    #[error(transparent)]
    Hub(#[from] HubError),
}

impl ApiError {
    pub fn field(field: &str, why: impl Into<String>, fix: impl Into<String>) -> ApiError {
        ApiError::Field {
            field: field.to_string(),
            why: why.into(),
            fix: fix.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Field { .. } | ApiError::BadRequest(_) | ApiError::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Hub(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, with the fix.
    pub error: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem, when a document was refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Hub(e) = &self {
            error!("{e}");
        }
        let field = match &self {
            ApiError::Field { field, .. } => Some(field.clone()),
            _ => None,
        };
        let problems = match &self {
            ApiError::Invalid(p) => p.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: self.to_string(),
            field,
            problems,
        };
        (self.status(), Json(body)).into_response()
    }
}

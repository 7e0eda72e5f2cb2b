//! API errors: JSON with a stable code, a human message and, for bad input, the fields at fault:
//! `{"error": {"code", "message", "fields": [{"field", "problem"}]}}`. Internal failures are
//! logged with their cause and answered with an opaque message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// One field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// Path of the field in the request, e.g. `targets[1].zones[0]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldProblem>,
    /// Seconds after which a retry may succeed (503).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// 422: the request parsed but some fields are invalid.
    pub fn invalid(fields: Vec<FieldProblem>) -> Self {
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        Self {
            fields: fields.clone(),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("invalid field(s): {}", names.join(", ")),
            )
        }
    }

    /// 400 about one field.
    pub fn bad_field(
        code: &'static str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        let (field, problem) = (field.into(), problem.into());
        Self {
            fields: vec![FieldProblem {
                field: field.clone(),
                problem: problem.clone(),
            }],
            ..Self::new(StatusCode::BAD_REQUEST, code, format!("{field}: {problem}"))
        }
    }

    /// 500, with the cause logged and not shown.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, context, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }

    /// 503 with `Retry-After: 1` for a read or write Cassandra did not complete (a timeout, a
    /// node away, a table not there yet): the database is unavailable, not mot broken; the cause
    /// is logged, never shown.
    pub fn cassandra(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%cause, context, "cassandra did not answer");
        Self::unavailable("the database did not answer; retry", 1)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    fields: &'a [FieldProblem],
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after_secs {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        response.json(Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                fields: &self.fields,
            },
        })
    }
}

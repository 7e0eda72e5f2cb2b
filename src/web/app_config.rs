//! `PUT /apps/{app}/config` and `GET /apps/{app}/config`: an app's configuration, a flow of the
//! service layer alone (Cassandra, no Kafka). The body is a JSON object; each PUT answers the new
//! revision. `If-Match: <revision>` makes a PUT conditional on the revision it read (412 when it
//! changed meanwhile).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::access::Caller;
use super::error::ApiError;
use super::AppState;
use crate::models::envelope::now_us;
use crate::topics::names::AppName;

/// Largest configuration accepted, in bytes.
const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// The `{app}` of a path, or a 400 naming `app`.
pub(super) fn app_name(raw: &str) -> Result<AppName, ApiError> {
    AppName::parse(raw).map_err(|e| ApiError::bad_field("invalid_app", "app", e.to_string()))
}

fn read_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::cassandra("reading an app's config", &e)
}

pub async fn get_config(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = app_name(&path)?;
    state.may_read(&caller, app.as_str()).await?;
    match state
        .projections
        .app_config(app.as_str())
        .await
        .map_err(read_failed)?
    {
        Some(row) => Ok(HttpResponse::Ok()
            .insert_header(("ETag", format!("\"{}\"", row.revision)))
            .json(json!({
                "app": app.as_str(),
                "revision": row.revision,
                "updated_at_ms": row.updated_ms,
                "config": serde_json::from_str::<Value>(&row.config).unwrap_or(Value::Null),
            }))),
        None => Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("app {app} has no configuration"),
        )),
    }
}

pub async fn put_config(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = app_name(&path)?;
    state
        .may_change(&caller, app.as_str(), false, &[], |_| String::new())
        .await?;
    if body.len() > MAX_CONFIG_BYTES {
        return Err(ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a configuration is at most {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let config: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_field("invalid_json", "body", format!("not JSON: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::bad_field(
            "invalid_config",
            "body",
            "must be a JSON object",
        ));
    }
    let current = state
        .projections
        .app_config(app.as_str())
        .await
        .map_err(read_failed)?;
    let revision = current.as_ref().map_or(0, |c| c.revision);
    if let Some(expected) = req.headers().get("If-Match") {
        let expected = expected.to_str().unwrap_or("").trim_matches('"');
        if expected != revision.to_string() {
            return Err(ApiError::new(
                actix_web::http::StatusCode::PRECONDITION_FAILED,
                "revision_changed",
                format!("the configuration is at revision {revision}, not {expected}"),
            ));
        }
    }
    let next = revision + 1;
    let now = now_us();
    state
        .projections
        .put_app_config(app.as_str(), &config.to_string(), next, now)
        .await
        .map_err(|e| ApiError::cassandra("writing an app's config", &e))?;
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", format!("\"{next}\"")))
        .json(json!({
            "app": app.as_str(),
            "revision": next,
            "updated_at_ms": now / 1000,
            "config": config,
        })))
}

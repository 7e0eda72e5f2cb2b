//! `GET /deployments/{id}`: a deployment as the projections know it.

use actix_web::{web, HttpResponse};
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;

pub async fn get_deployment(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path)
        .map_err(|_| ApiError::bad_field("invalid_id", "id", "must be a UUID"))?;
    type Row = (
        Uuid,
        String,
        String,
        String,
        String,
        Option<Vec<String>>,
        CqlTimestamp,
        CqlTimestamp,
    );
    let row = state
        .session
        .execute_unpaged(&state.statements.select_deployment, (id,))
        .await
        .map_err(|e| ApiError::internal("reading a deployment", &e))?
        .into_rows_result()
        .map_err(|e| ApiError::internal("reading a deployment", &e))?
        .maybe_first_row::<Row>()
        .map_err(|e| ApiError::internal("reading a deployment", &e))?;
    let Some((id, app, version, request, status, targets, created, updated)) = row else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no deployment {id}"),
        ));
    };
    let request: serde_json::Value =
        serde_json::from_str(&request).unwrap_or(serde_json::Value::Null);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id,
        "app": app,
        "version": version,
        "status": status,
        "targets": targets.unwrap_or_default(),
        "request": request,
        "created_at_ms": created.0,
        "updated_at_ms": updated.0,
    })))
}

//! `GET /apps/{app}/owners` and `PUT /apps/{app}/owners` `{"teams": [...]}` (admin): the teams
//! whose deployers may change an app. The first deployment of an app nobody owns gives it to the
//! deployer's first team; an admin changes that here.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::access::{self, Caller};
use super::app_config::app_name;
use super::error::{ApiError, FieldProblem};
use super::post_deployment::{check_content_type, parse, read_limited};
use super::AppState;
use crate::auth::Refusal;

/// Teams one app may have.
const MAX_TEAMS: usize = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    teams: Vec<String>,
}

pub async fn get_owners(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = app_name(&path)?;
    state.may_read(&caller, app.as_str()).await?;
    let owners = state.owners(app.as_str()).await?;
    Ok(HttpResponse::Ok().json(json!({ "app": app.as_str(), "teams": owners })))
}

pub async fn put_owners(
    caller: Caller,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = app_name(&path)?;
    access::note(&request, |s| s.app = Some(app.to_string()));
    if !caller.is_admin() {
        return Err(access::forbidden(Refusal {
            reason: format!(
                "only an admin changes who owns an app; {} is not one",
                caller.name
            ),
            field: None,
        }));
    }
    check_content_type(&request)?;
    let body: Body = parse(&read_limited(payload, 16 * 1024).await?)?;
    let mut problems = Vec::new();
    if body.teams.is_empty() || body.teams.len() > MAX_TEAMS {
        problems.push(FieldProblem {
            field: "teams".into(),
            problem: format!("must name 1 to {MAX_TEAMS} teams"),
        });
    }
    for (i, team) in body.teams.iter().enumerate() {
        let ok = (1..=64).contains(&team.len())
            && team != crate::auth::ALL
            && team.chars().all(|c| c.is_ascii_graphic());
        if !ok {
            problems.push(FieldProblem {
                field: format!("teams[{i}]"),
                problem: "must be 1 to 64 visible ASCII characters, and not `*`".into(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let teams: BTreeSet<String> = body.teams.into_iter().collect();
    state
        .access
        .set_owners(app.as_str(), &teams, &caller.name)
        .await
        .map_err(|e| ApiError::cassandra("writing an app's owners", &e))?;
    tracing::info!(app = app.as_str(), ?teams, principal = %caller.name, "app owners changed");
    Ok(HttpResponse::build(StatusCode::OK).json(json!({ "app": app.as_str(), "teams": teams })))
}

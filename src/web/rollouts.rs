//! A rollout's controls and the one-call rollback:
//!
//! - `POST /deployments/{id}/resume`: retry a paused rollout's failed wave (409 unless paused);
//! - `POST /deployments/{id}/cancel`: end a rollout under way or paused; later waves never run;
//! - `POST /apps/{app}/rollback` (optional `{"to": "<deployment id>", "regions": [...]}`): put the
//!   app's previous healthy deployment (or the one named) back in every region of its newest
//!   deployment (or those named), as a new deployment with `rollback_of` naming the newest.
//!
//! Commands are logged on `mot-deployment-requests` with the app's requests (key: the app), so
//! the RolloutAgent takes them in order with the app's deployments.

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use scylla::response::PagingState;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::access::{self, Caller};
use super::app_config::app_name;
use super::error::{ApiError, FieldProblem};
use super::post_deployment::{check_content_type, idempotency_key, parse, read_limited};
use super::AppState;
use crate::models::deployment::DeploymentRequested;
use crate::models::envelope::{now_us, Envelope, Kind};
use crate::models::rollout::{RolloutAction, RolloutCommand, RolloutStatus};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

fn read_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::cassandra("reading a rollout", &e)
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

pub async fn resume(
    caller: Caller,
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let span = super::server_span(&request, "/deployments/{id}/resume");
    control(
        caller,
        request,
        path.into_inner(),
        RolloutAction::Resume,
        state,
    )
    .instrument(span)
    .await
}

pub async fn cancel(
    caller: Caller,
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let span = super::server_span(&request, "/deployments/{id}/cancel");
    control(
        caller,
        request,
        path.into_inner(),
        RolloutAction::Cancel,
        state,
    )
    .instrument(span)
    .await
}

async fn control(
    caller: Caller,
    request: HttpRequest,
    raw_id: String,
    action: RolloutAction,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&raw_id)
        .map_err(|_| ApiError::bad_field("invalid_id", "id", "must be a UUID"))?;
    let p = &state.projections;
    let Some(row) = p.deployment(id).await.map_err(read_failed)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no deployment {id}"),
        ));
    };
    let regions = target_regions(&row.targets);
    access::note(&request, |s| {
        s.app = Some(row.app.clone());
        s.regions = row.targets.clone();
    });
    state
        .may_change(&caller, &row.app, false, &regions, |i| {
            format!("targets[{i}].region")
        })
        .await?;
    let Some(rollout) = p.rollout(id).await.map_err(read_failed)? else {
        return Err(conflict(format!(
            "deployment {id} has no rollout under way (it has no strategy, or its rollout has not started yet)"
        )));
    };
    let allowed = match action {
        RolloutAction::Resume => rollout.status == RolloutStatus::Paused,
        RolloutAction::Cancel => matches!(
            rollout.status,
            RolloutStatus::RollingOut | RolloutStatus::Paused
        ),
    };
    if !allowed {
        let wanted = match action {
            RolloutAction::Resume => "paused",
            RolloutAction::Cancel => "rolling-out or paused",
        };
        return Err(conflict(format!(
            "the rollout is {}, not {wanted}",
            rollout.status.as_str()
        )));
    }
    let envelope = Envelope::new(
        Kind::Requested,
        row.app.clone(),
        state.topology().config().topology.central.clone(),
        now_us(),
        RolloutCommand {
            deployment_id: id,
            app: rollout.request.spec.app.clone(),
            action,
        },
    );
    state
        .produce(
            TopicName::local(&catalog::DEPLOYMENT_REQUESTS.base()),
            &envelope,
            "RolloutCommand",
        )
        .await?;
    let verb = match action {
        RolloutAction::Resume => "resume",
        RolloutAction::Cancel => "cancel",
    };
    tracing::info!(deployment = %id, action = verb, "rollout command accepted");
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/deployments/{id}")))
        .json(json!({
            "id": id,
            "action": verb,
            "status": "accepted",
            "trace_id": AppState::trace_id(),
        })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    regions: Option<Vec<String>>,
}

/// A deployment row's target regions (names that do not parse, which mot never writes, are
/// skipped).
fn target_regions(targets: &[String]) -> Vec<RegionName> {
    targets
        .iter()
        .filter_map(|r| RegionName::parse(r).ok())
        .collect()
}

pub async fn rollback(
    caller: Caller,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let span = super::server_span(&request, "/apps/{app}/rollback");
    roll_back(caller, request, path.into_inner(), payload, state)
        .instrument(span)
        .await
}

async fn roll_back(
    caller: Caller,
    request: HttpRequest,
    raw_app: String,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = app_name(&raw_app)?;
    let bytes = read_limited(payload, 16 * 1024).await?;
    let body: RollbackBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        check_content_type(&request)?;
        parse(&bytes)?
    };
    let key = idempotency_key(&request, &caller)?;
    let p = &state.projections;
    let (newest, _) = p
        .deployment_ids(Some(app.as_str()), "", 1, PagingState::start())
        .await
        .map_err(read_failed)?;
    let newest = match newest.first() {
        Some(id) => p.deployment(*id).await.map_err(read_failed)?,
        None => None,
    };
    let Some(newest) = newest else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("app {app} was never deployed"),
        ));
    };
    let newest: DeploymentRequested = serde_json::from_str(&newest.request)
        .map_err(|e| ApiError::cassandra("reading the newest deployment", &e))?;

    // The regions: those named (each a region of the topology), or the newest deployment's.
    let topology = state.topology();
    let config = topology.config();
    let mut problems = Vec::new();
    let regions: Vec<RegionName> = match &body.regions {
        None => newest.targets.iter().map(|t| t.region.clone()).collect(),
        Some(names) if names.is_empty() => {
            problems.push(FieldProblem {
                field: "regions".into(),
                problem: "must name at least one region, or be left out for all".into(),
            });
            Vec::new()
        }
        Some(names) => {
            let mut out = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match RegionName::parse(name)
                    .ok()
                    .filter(|r| config.region(r).is_some())
                {
                    Some(r) if out.contains(&r) => problems.push(FieldProblem {
                        field: format!("regions[{i}]"),
                        problem: format!("region `{name}` is listed twice"),
                    }),
                    Some(r) => out.push(r),
                    None => problems.push(FieldProblem {
                        field: format!("regions[{i}]"),
                        problem: format!("unknown region `{name}`"),
                    }),
                }
            }
            out
        }
    };
    let to = match &body.to {
        None => None,
        Some(raw) => match Uuid::parse_str(raw) {
            Ok(id) => Some(id),
            Err(_) => {
                problems.push(FieldProblem {
                    field: "to".into(),
                    problem: "must be a deployment id (a UUID)".into(),
                });
                None
            }
        },
    };
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    access::note(&request, |s| {
        s.regions = regions.iter().map(ToString::to_string).collect();
    });
    let named = body.regions.is_some();
    state
        .may_change(&caller, app.as_str(), false, &regions, |i| {
            if named {
                format!("regions[{i}]")
            } else {
                format!("targets[{i}].region")
            }
        })
        .await?;

    // What goes back where: the named deployment everywhere, or each region's previous healthy
    // one.
    let mut earlier: BTreeMap<RegionName, DeploymentRequested> = BTreeMap::new();
    match to {
        Some(to) => {
            let row = p.deployment(to).await.map_err(read_failed)?;
            let request: Option<DeploymentRequested> =
                row.and_then(|row| serde_json::from_str(&row.request).ok());
            let Some(request) = request.filter(|r| r.spec.app == app) else {
                return Err(ApiError::invalid(vec![FieldProblem {
                    field: "to".into(),
                    problem: format!("no deployment {to} of app {app}"),
                }]));
            };
            for (i, region) in regions.iter().enumerate() {
                if !request.targets.iter().any(|t| &t.region == region) {
                    let field = if body.regions.is_some() {
                        format!("regions[{i}]")
                    } else {
                        "to".into()
                    };
                    return Err(ApiError::invalid(vec![FieldProblem {
                        field,
                        problem: format!("deployment {to} did not run in {region}"),
                    }]));
                }
                earlier.insert(region.clone(), request.clone());
            }
        }
        None => {
            earlier = p
                .earlier_healthy(app.as_str(), newest.generation, &regions)
                .await
                .map_err(read_failed)?;
            if let Some(missing) = regions.iter().find(|r| !earlier.contains_key(*r)) {
                return Err(conflict(format!(
                    "no deployment of {app} before generation {} was healthy in {missing}: nothing to roll back to there",
                    newest.generation
                )));
            }
        }
    }
    let mut groups: BTreeMap<Uuid, (DeploymentRequested, Vec<RegionName>)> = BTreeMap::new();
    for (region, request) in earlier {
        groups
            .entry(request.id)
            .or_insert_with(|| (request, Vec::new()))
            .1
            .push(region);
    }

    let central = config.topology.central.clone();
    let mut made = Vec::new();
    for (to, (earlier, regions)) in groups {
        let targets: Vec<_> = earlier
            .targets
            .iter()
            .filter(|t| regions.contains(&t.region))
            .cloned()
            .collect();
        let (id, logged, generation) = match &key {
            None => (
                Uuid::new_v4(),
                false,
                state.next_generation(app.as_str()).await?,
            ),
            Some(key) => {
                let hash = format!("rollback:{}:{to}:{regions:?}", newest.id);
                let claim = state
                    .claim_idempotency_key(&format!("{key}:{to}"), &hash, app.as_str())
                    .await?;
                (claim.id, claim.logged, claim.generation)
            }
        };
        let envelope = Envelope::new(
            Kind::Requested,
            app.to_string(),
            central.clone(),
            now_us(),
            DeploymentRequested {
                id,
                generation,
                spec: earlier.spec.clone(),
                targets,
                strategy: None,
                rollback_of: Some(newest.id),
                requested_by: Some(caller.name.clone()),
            },
        );
        if !logged {
            state.log_request(&envelope).await?;
            if let Some(key) = &key {
                state
                    .mark_idempotency_key_logged(&format!("{key}:{to}"))
                    .await?;
            }
            if let Err(e) = state.write_shell(&envelope).await {
                tracing::warn!(deployment = %id, error = %e, "rollback accepted but its shell was not written");
            }
        }
        tracing::info!(%app, deployment = %id, rollback_of = %newest.id, %to, generation, "rollback accepted");
        made.push(json!({
            "id": id,
            "status": "requested",
            "generation": generation,
            "rollback_of": newest.id,
            "to": to,
            "version": earlier.spec.version,
            "targets": envelope.payload.targets,
        }));
    }
    let location = made
        .first()
        .and_then(|d| d["id"].as_str())
        .map(|id| format!("/deployments/{id}"))
        .unwrap_or_default();
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, location))
        .json(json!({
            "app": app.as_str(),
            "deployments": made,
            "trace_id": AppState::trace_id(),
        })))
}

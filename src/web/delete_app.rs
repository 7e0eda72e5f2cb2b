//! `DELETE /apps/{app}` (optional `?regions=a,b`): removes the app from every zone of those
//! regions (every region with zones when left out), through the same path as a launch: the
//! removal is logged on `mot-deployment-requests` with the app's next generation, the fan-out
//! turns it into each region's event on the app's launch topic, and each region's operation agent
//! deletes the app from its schedulers, reports the deployments it removed, and keeps the zones
//! at "removed" (the mending agent removes the app again if it is put back by hand). A later
//! deployment of the app, with a higher generation, puts it back.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use scylla::response::PagingState;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::access::{self, Caller};
use super::error::{ApiError, FieldProblem};
use super::AppState;
use crate::models::deployment::{RemovalRequested, Target};
use crate::models::envelope::{now_us, Envelope, Kind};
use crate::topics::catalog;
use crate::topics::names::{AppName, RegionName, TopicName};

/// The query: `regions`, comma-separated.
struct Query {
    regions: Option<String>,
}

pub async fn delete_app(
    caller: Caller,
    request: HttpRequest,
    path: web::Path<String>,
    raw: web::Query<BTreeMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let span = super::server_span(&request, "/apps/{app}");
    if let Some(unknown) = raw.keys().find(|k| k.as_str() != "regions") {
        return Err(ApiError::invalid(vec![FieldProblem {
            field: unknown.clone(),
            problem: "unknown parameter; known: regions".into(),
        }]));
    }
    let query = Query {
        regions: raw.get("regions").cloned(),
    };
    remove(caller, request, path.into_inner(), query, state)
        .instrument(span)
        .await
}

async fn remove(
    caller: Caller,
    request: HttpRequest,
    raw_app: String,
    query: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = AppName::parse(&raw_app)
        .map_err(|e| ApiError::bad_field("invalid_app", "app", e.to_string()))?;
    let topology = state.topology();
    let config = topology.config();
    let targets: Vec<Target> = match &query.regions {
        None => config
            .regions
            .iter()
            .filter(|r| !r.zones.is_empty())
            .map(|r| Target {
                region: r.name.clone(),
                zones: r.zones.iter().map(|z| z.name.clone()).collect(),
            })
            .collect(),
        Some(list) => {
            let mut problems = Vec::new();
            let mut targets: Vec<Target> = Vec::new();
            for (i, name) in list.split(',').map(str::trim).enumerate() {
                let region = RegionName::parse(name)
                    .ok()
                    .and_then(|r| config.region(&r))
                    .filter(|r| !r.zones.is_empty());
                match region {
                    Some(r) if !targets.iter().any(|t| t.region == r.name) => {
                        targets.push(Target {
                            region: r.name.clone(),
                            zones: r.zones.iter().map(|z| z.name.clone()).collect(),
                        })
                    }
                    Some(_) => {}
                    None => problems.push(FieldProblem {
                        field: format!("regions[{i}]"),
                        problem: format!("`{name}` is not a region with zones"),
                    }),
                }
            }
            if !problems.is_empty() {
                return Err(ApiError::invalid(problems));
            }
            targets
        }
    };
    let regions: Vec<RegionName> = targets.iter().map(|t| t.region.clone()).collect();
    access::note(&request, |s| {
        s.app = Some(app.to_string());
        s.regions = regions.iter().map(ToString::to_string).collect();
    });
    let named = query.regions.is_some();
    state
        .may_change(&caller, app.as_str(), false, &regions, |i| {
            if named {
                format!("regions[{i}]")
            } else {
                "regions".into()
            }
        })
        .await?;
    let (deployed, _) = state
        .projections
        .deployment_ids(Some(app.as_str()), "", 1, PagingState::start())
        .await
        .map_err(|e| ApiError::cassandra("reading the app's deployments", &e))?;
    if deployed.is_empty() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("app {app} was never deployed"),
        ));
    }
    let generation = state.next_generation(app.as_str()).await?;
    let id = Uuid::new_v4();
    let envelope = Envelope::new(
        Kind::Requested,
        app.to_string(),
        config.topology.central.clone(),
        now_us(),
        RemovalRequested {
            id,
            generation,
            app: app.clone(),
            targets,
        },
    );
    state
        .produce(
            TopicName::local(&catalog::DEPLOYMENT_REQUESTS.base()),
            &envelope,
            "RemovalRequested",
        )
        .await?;
    let regions: Vec<&str> = envelope
        .payload
        .targets
        .iter()
        .map(|t| t.region.as_str())
        .collect();
    tracing::info!(%app, removal = %id, generation, ?regions, "removal accepted");
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/deployments?app={app}")))
        .json(json!({
            "app": app.as_str(),
            "removal_id": id,
            "generation": generation,
            "regions": regions,
            "trace_id": AppState::trace_id(),
        })))
}

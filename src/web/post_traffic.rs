//! `POST /deployments/{id}/traffic` `{"enabled": true, "regions": [...]}`: turn traffic on (or
//! off) for a deployment's instances, in the regions named (all its target regions when none
//! are). One record per region on `mot-traffic-events-<env>-<region>` in the central cluster;
//! each region's TrafficAgent sets its instances' Consul maintenance state, the pollers see it,
//! and `GET /deployments/{id}/instances` shows it. `202` once Kafka acknowledged every region's
//! record; a retry after a `503` is harmless (setting a state twice is setting it once).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::access::{self, Caller};
use super::error::{ApiError, FieldProblem};
use super::post_deployment::{check_content_type, parse, read_limited};
use super::AppState;
use crate::models::deployment::{DeploymentRequested, TrafficRequested};
use crate::models::envelope::{now_us, Envelope, Kind};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    enabled: bool,
    #[serde(default)]
    regions: Option<Vec<String>>,
}

pub async fn post_traffic(
    caller: Caller,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let span = super::server_span(&request, "/deployments/{id}/traffic");
    switch(caller, request, path, payload, state)
        .instrument(span)
        .await
}

async fn switch(
    caller: Caller,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path)
        .map_err(|_| ApiError::bad_field("invalid_id", "id", "must be a UUID"))?;
    check_content_type(&request)?;
    let body: Body = parse(&read_limited(payload, 16 * 1024).await?)?;
    let row = state
        .projections
        .deployment(id)
        .await
        .map_err(|e| ApiError::cassandra("reading a deployment", &e))?
        .ok_or_else(|| {
            ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no deployment {id}"),
            )
        })?;
    let requested: DeploymentRequested = serde_json::from_str(&row.request)
        .map_err(|e| ApiError::cassandra("reading a deployment's request", &e))?;
    let targets: Vec<RegionName> = requested.targets.iter().map(|t| t.region.clone()).collect();
    let regions = match &body.regions {
        None => targets.clone(),
        Some(names) => {
            let mut problems = Vec::new();
            let mut regions = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match RegionName::parse(name) {
                    Ok(r) if targets.contains(&r) => regions.push(r),
                    Ok(r) => problems.push(FieldProblem {
                        field: format!("regions[{i}]"),
                        problem: format!("deployment {id} does not target {r}"),
                    }),
                    Err(e) => problems.push(FieldProblem {
                        field: format!("regions[{i}]"),
                        problem: e.problem,
                    }),
                }
            }
            if names.is_empty() {
                problems.push(FieldProblem {
                    field: "regions".into(),
                    problem: "must not be empty (leave it out for every target region)".into(),
                });
            }
            if !problems.is_empty() {
                return Err(ApiError::invalid(problems));
            }
            regions.sort();
            regions.dedup();
            regions
        }
    };
    access::note(&request, |s| {
        s.app = Some(row.app.clone());
        s.regions = regions.iter().map(ToString::to_string).collect();
    });
    // The field of a refused region: where the body names it, or the deployment's target.
    let names = body.regions.clone();
    state
        .may_change(&caller, &row.app, false, &regions, |i| {
            match names
                .as_ref()
                .and_then(|n| n.iter().position(|name| name == regions[i].as_str()))
            {
                Some(j) => format!("regions[{j}]"),
                None => format!("targets[{i}].region"),
            }
        })
        .await?;
    let now = now_us();
    for region in &regions {
        // Keyed by the app, like its launches: one partition holds an app's launches and traffic
        // switches for a region, in the order they were accepted.
        let envelope = Envelope::new(
            Kind::Requested,
            requested.spec.app.as_str(),
            state.topology().config().topology.central.clone(),
            now,
            TrafficRequested {
                deployment_id: id,
                region: region.clone(),
                app: requested.spec.app.clone(),
                enabled: body.enabled,
            },
        );
        let topic = TopicName::to_region(&catalog::TRAFFIC_EVENTS.base(), region);
        state.produce(topic, &envelope, "TrafficRequested").await?;
        let detail = json!({ "enabled": body.enabled }).to_string();
        if let Err(e) = state
            .projections
            .insert_event(
                id,
                now,
                region.as_str(),
                "",
                "traffic",
                "traffic-requested",
                &detail,
            )
            .await
        {
            tracing::warn!(deployment = %id, error = %e, "traffic request logged but not put on the timeline");
        }
    }
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/deployments/{id}/instances")))
        .json(json!({
            "deployment_id": id,
            "enabled": body.enabled,
            "regions": regions,
            "trace_id": AppState::trace_id(),
        })))
}

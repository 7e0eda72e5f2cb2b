//! `GET /deployments/{id}` (the request, an aggregate status, and per region and zone: desired,
//! running, healthy, status, the time of the last event and how fresh the region's data is),
//! `GET /deployments/{id}/instances` and `GET /deployments/{id}/events`, all from the
//! projections the persistence layer writes.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;

use super::access::Caller;
use super::error::ApiError;
use super::AppState;
use crate::actors::region_heartbeat::HEARTBEAT_INTERVAL;
use crate::models::deployment::DeploymentRequested;
use crate::models::envelope::now_us;
use crate::models::rollout::RolloutStatus;
use crate::store::projections::ZoneRow;

/// A region whose last heartbeat is older than this is shown stale.
pub const STALE_AFTER: Duration = Duration::from_secs(HEARTBEAT_INTERVAL.as_secs() * 3);

/// The status of a group (a region, a deployment) from its parts' statuses: failed if any part
/// failed, else degraded if any is, else deploying while any part is pending or deploying,
/// healthy when every live part is healthy, superseded when every part is, removed when every
/// part is superseded or removed and some removed.
pub fn aggregate<'a>(statuses: impl IntoIterator<Item = &'a str>) -> &'static str {
    let all: Vec<&str> = statuses.into_iter().collect();
    let any = |s: &str| all.contains(&s);
    if all.is_empty() {
        "requested"
    } else if any("failed") {
        "failed"
    } else if any("degraded") {
        "degraded"
    } else if any("deploying") || any("pending") || any("requested") {
        "deploying"
    } else if all.iter().all(|s| *s == "superseded" || *s == "removed") {
        if any("removed") {
            "removed"
        } else {
            "superseded"
        }
    } else {
        "healthy"
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_field("invalid_id", "id", "must be a UUID"))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no deployment {id}"),
    )
}

fn read_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::cassandra("reading the projections", &e)
}

/// The deployment as the API shows it, or `None` when there is no such deployment.
pub async fn view(state: &AppState, id: Uuid) -> Result<Option<Value>, ApiError> {
    let p = &state.projections;
    let Some(row) = p.deployment(id).await.map_err(read_failed)? else {
        return Ok(None);
    };
    let request: Option<DeploymentRequested> = serde_json::from_str(&row.request).ok();
    let has_rollout = request.as_ref().is_some_and(|r| r.strategy.is_some());
    let (zones, freshness, rollout) =
        futures::try_join!(p.zones(id), p.freshness(&row.targets), async {
            if has_rollout {
                p.rollout(id).await
            } else {
                Ok(None)
            }
        })
        .map_err(read_failed)?;
    // Every target zone is shown, reported or not yet ("pending").
    let mut by_region: BTreeMap<String, BTreeMap<String, Option<&ZoneRow>>> = BTreeMap::new();
    for target in request.iter().flat_map(|r| &r.targets) {
        let zones = by_region.entry(target.region.to_string()).or_default();
        for zone in &target.zones {
            zones.insert(zone.to_string(), None);
        }
    }
    for region in &row.targets {
        by_region.entry(region.clone()).or_default();
    }
    for zone in &zones {
        by_region
            .entry(zone.region.clone())
            .or_default()
            .insert(zone.zone.clone(), Some(zone));
    }
    let now_ms = now_us() / 1000;
    let mut regions = Vec::new();
    let mut region_statuses = Vec::new();
    for (region, zones) in &by_region {
        let zone_views: Vec<Value> = zones
            .iter()
            .map(|(name, zone)| match zone {
                Some(z) => json!({
                    "zone": name, "status": z.status, "desired": z.desired, "running": z.running,
                    "healthy": z.healthy, "reason": z.reason, "last_event_ms": z.event_time_ms,
                    "drift": z.drift.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
                }),
                None => json!({
                    "zone": name, "status": "pending", "desired": null, "running": null,
                    "healthy": null, "reason": null, "last_event_ms": null, "drift": null,
                }),
            })
            .collect();
        let status = aggregate(zone_views.iter().filter_map(|z| z["status"].as_str()));
        region_statuses.push(status);
        let heartbeat = freshness.get(region).copied();
        let age = heartbeat.map(|h| (now_ms - h).max(0));
        let last_event = zones
            .values()
            .flatten()
            .filter_map(|z| z.event_time_ms)
            .max();
        let rollout_state = rollout.as_ref().and_then(|r| {
            crate::topics::names::RegionName::parse(region)
                .ok()
                .and_then(|name| r.regions.get(&name).copied())
        });
        regions.push(json!({
            "region": region,
            "status": status,
            "state": rollout_state,
            "last_event_ms": last_event,
            "freshness": {
                "last_heartbeat_ms": heartbeat,
                "age_ms": age,
                "stale": age.is_none_or(|a| a > STALE_AFTER.as_millis() as i64),
            },
            "zones": zone_views,
        }));
    }
    let request_json: Value = serde_json::from_str(&row.request).unwrap_or(Value::Null);
    let last_event = zones.iter().filter_map(|z| z.event_time_ms).max();
    let observed = if zones.is_empty() {
        "requested"
    } else {
        aggregate(region_statuses)
    };
    // A rollout's own status, but once it completed: what the zones show since.
    let status = match &rollout {
        Some(r) if r.status != RolloutStatus::Healthy => r.status.as_str(),
        _ => observed,
    };
    let ms = |us: Option<i64>| us.map(|us| us / 1000);
    let waves: Option<Vec<Value>> = rollout.as_ref().map(|r| {
        r.waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                json!({
                    "wave": i, "regions": w.regions, "state": w.state,
                    "started_ms": ms(w.started_us), "healthy_since_ms": ms(w.healthy_since_us),
                    "ended_ms": ms(w.ended_us), "reason": w.reason,
                })
            })
            .collect()
    });
    Ok(Some(json!({
        "id": row.id,
        "app": row.app,
        "version": row.version,
        "generation": row.generation,
        "status": status,
        "strategy": request.as_ref().and_then(|r| r.strategy.as_ref()),
        "waves": waves,
        "rollout_reason": rollout.as_ref().and_then(|r| r.reason.as_deref()),
        "rollbacks": rollout.as_ref().map(|r| &r.rollbacks),
        "rollback_of": request.as_ref().and_then(|r| r.rollback_of),
        "requested_by": request.as_ref().and_then(|r| r.requested_by.as_deref()),
        "targets": row.targets,
        "created_at_ms": row.created_ms,
        "last_event_ms": last_event,
        "trace_id": row.trace_id,
        "regions": regions,
        "request": request_json,
    })))
}

pub async fn get_deployment(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    match view(&state, id).await? {
        Some(mut view) => {
            let app = view["app"].as_str().unwrap_or_default().to_owned();
            let sees_env = state.may_read_env(&caller, &app).await?;
            redact(&mut view, !sees_env);
            Ok(HttpResponse::Ok().json(view))
        }
        None => Err(not_found(id)),
    }
}

/// Hides a deployment view's secret values, and with `hide_env` its plain env values.
pub(crate) fn redact(view: &mut Value, hide_env: bool) {
    if let Some(request) = view.get_mut("request") {
        crate::secrets::redact_request(request, hide_env);
    }
}

/// Answers 404 unless deployment `id` exists, 403 unless `caller` may read its app; who asked
/// for it.
async fn readable(state: &AppState, caller: &Caller, id: Uuid) -> Result<Option<String>, ApiError> {
    let row = state
        .projections
        .deployment(id)
        .await
        .map_err(read_failed)?
        .ok_or_else(|| not_found(id))?;
    state.may_read(caller, &row.app).await?;
    Ok(serde_json::from_str::<DeploymentRequested>(&row.request)
        .ok()
        .and_then(|r| r.requested_by))
}

pub async fn get_instances(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    readable(&state, &caller, id).await?;
    let instances = state.projections.instances(id).await.map_err(read_failed)?;
    Ok(HttpResponse::Ok().json(json!({ "deployment_id": id, "instances": instances })))
}

pub async fn get_events(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let requested_by = readable(&state, &caller, id).await?;
    let events = state.projections.events(id).await.map_err(read_failed)?;
    Ok(HttpResponse::Ok().json(json!({
        "deployment_id": id,
        "requested_by": requested_by,
        "events": events,
    })))
}

#[cfg(test)]
mod tests {
    use super::aggregate;

    #[test]
    fn aggregate_status() {
        assert_eq!(aggregate([]), "requested");
        assert_eq!(aggregate(["healthy", "healthy"]), "healthy");
        assert_eq!(aggregate(["healthy", "pending"]), "deploying");
        assert_eq!(aggregate(["healthy", "degraded", "deploying"]), "degraded");
        assert_eq!(aggregate(["failed", "degraded"]), "failed");
        assert_eq!(aggregate(["superseded", "healthy"]), "healthy");
        assert_eq!(aggregate(["superseded", "superseded"]), "superseded");
        assert_eq!(aggregate(["superseded", "removed"]), "removed");
        assert_eq!(aggregate(["removed", "healthy"]), "healthy");
    }
}

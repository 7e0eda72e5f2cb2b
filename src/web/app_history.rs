//! An app's history, answered from the projections:
//!
//! - `GET /apps/{app}/deployments?region=&status=&limit=&page=`: every deployment of the app,
//!   newest first, paged, failed and superseded ones included: `GET /deployments?app={app}`.
//! - `GET /apps/{app}/history?at=<RFC 3339 time>`: which deployment (and version) ran in each
//!   region and zone at that moment. A deployment runs in a zone from the moment its scheduler
//!   accepted it there (`scheduler-accepted` on its timeline; for a zone whose launch failed,
//!   from the moment the mending agent put it there, `mended`) until it was replaced or removed
//!   there (`superseded`, `removed`). A zone whose app was removed by `at` is named with no
//!   deployment.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;

use super::access::Caller;
use super::app_config::app_name;
use super::error::ApiError;
use super::list_deployments::list_deployments;
use super::AppState;
use crate::store::projections::EventRow;

/// Deployments read, newest first, to answer one history question at most.
const MAX_SCANNED: usize = 500;
/// Ids asked of Cassandra per page.
const PAGE: i32 = 100;
/// Deployments read at once.
const READ_AHEAD: usize = 16;

fn read_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::cassandra("reading an app's history", &e)
}

/// `GET /apps/{app}/deployments`: the listing of `GET /deployments`, for one app.
pub async fn app_deployments(
    caller: Caller,
    path: web::Path<String>,
    raw: web::Query<BTreeMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = app_name(&path)?;
    let mut query = raw.into_inner();
    if query.contains_key("app") {
        return Err(ApiError::bad_field(
            "invalid_query",
            "app",
            "the app is the path's; not a parameter here",
        ));
    }
    query.insert("app".into(), app.as_str().into());
    list_deployments(caller, web::Query(query), state).await
}

/// When a deployment ran in one zone: from `since_us`, until `until_us` if it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stint {
    pub since_us: i64,
    pub until_us: Option<i64>,
}

/// Each zone's stint of one deployment, from its timeline (region, zone).
pub fn stints(events: &[EventRow]) -> BTreeMap<(String, String), Stint> {
    let mut out: BTreeMap<(String, String), Stint> = BTreeMap::new();
    let mut ends: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in events {
        let zone = (e.region.clone(), e.zone.clone());
        let started = (e.subject == "scheduler" && e.kind == "scheduler-accepted")
            || (e.subject == "drift" && e.kind == "mended");
        let ended = e.subject == "scheduler" && (e.kind == "superseded" || e.kind == "removed");
        if started {
            let stint = out.entry(zone).or_insert(Stint {
                since_us: e.time_us,
                until_us: None,
            });
            stint.since_us = stint.since_us.min(e.time_us);
        } else if ended {
            let end = ends.entry(zone).or_insert(e.time_us);
            *end = (*end).min(e.time_us);
        }
    }
    for (zone, end) in ends {
        if let Some(stint) = out.get_mut(&zone) {
            stint.until_us = Some(end);
        }
    }
    out
}

/// Parses an RFC 3339 time (query parameter `field`) into microseconds since the epoch.
pub(super) fn parse_time(field: &str, raw: Option<&String>) -> Result<i64, ApiError> {
    let bad = |why: &str| ApiError::bad_field("invalid_query", field.to_owned(), why);
    let raw = raw.ok_or_else(|| bad("required: an RFC 3339 time, e.g. 2026-12-01T12:00:00Z"))?;
    let at = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|e| bad(&format!("not an RFC 3339 time ({e})")))?;
    i64::try_from(at.unix_timestamp_nanos() / 1000).map_err(|_| bad("out of range"))
}

/// `GET /apps/{app}/history?at=`.
pub async fn app_history(
    caller: Caller,
    path: web::Path<String>,
    raw: web::Query<BTreeMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = app_name(&path)?;
    state.may_read(&caller, app.as_str()).await?;
    if let Some(unknown) = raw.keys().find(|k| k.as_str() != "at") {
        return Err(ApiError::bad_field(
            "invalid_query",
            unknown.as_str(),
            "unknown parameter; known: at",
        ));
    }
    let at_raw = raw.get("at");
    let at_us = parse_time("at", at_raw)?;
    let projections = &state.projections;
    let mut ids: Vec<Uuid> = Vec::new();
    let mut paging = scylla::response::PagingState::start();
    loop {
        let (page, next) = projections
            .deployment_ids(Some(app.as_str()), "", PAGE, paging)
            .await
            .map_err(read_failed)?;
        ids.extend(page);
        match next {
            Some(state) if ids.len() < MAX_SCANNED => {
                paging = scylla::response::PagingState::new_from_raw_bytes(state)
            }
            _ => break,
        }
    }
    if ids.is_empty() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("app {} was never deployed", app.as_str()),
        ));
    }
    // Newest first: the first deployment that had started in a zone by `at` is what ran there
    // (or, ended by then, the zone was left empty by a removal).
    let mut zones: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    ids.retain(|id| seen.insert(*id));
    // Read a few deployments at a time, taken in order (newest first).
    use futures::{StreamExt, TryStreamExt};
    let mut read = futures::stream::iter(ids)
        .map(|id| async move {
            let Some(row) = projections.deployment(id).await? else {
                return Ok(None);
            };
            if row.created_ms.saturating_mul(1000) > at_us {
                return Ok(None);
            }
            let events = projections.events(id).await?;
            Ok::<_, crate::store::projections::ReadError>(Some((id, row, events)))
        })
        .buffered(READ_AHEAD);
    while let Some(found) = read.try_next().await.map_err(read_failed)? {
        let Some((id, row, events)) = found else {
            continue;
        };
        for ((region, zone), stint) in stints(&events) {
            if stint.since_us > at_us || zones.contains_key(&(region.clone(), zone.clone())) {
                continue;
            }
            let entry = match stint.until_us {
                Some(until) if until <= at_us => json!({
                    "region": region, "zone": zone, "deployment_id": null, "version": null,
                    "generation": null, "since_ms": until / 1000,
                }),
                _ => json!({
                    "region": region, "zone": zone, "deployment_id": id, "version": row.version,
                    "generation": row.generation, "since_ms": stint.since_us / 1000,
                }),
            };
            zones.insert((region, zone), entry);
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "app": app.as_str(),
        "at": at_raw,
        "zones": zones.into_values().collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(zone: &str, subject: &str, kind: &str, time_us: i64) -> EventRow {
        EventRow {
            time_us,
            region: "test-us-east-1".into(),
            zone: zone.into(),
            subject: subject.into(),
            kind: kind.into(),
            detail: Value::Null,
        }
    }

    #[test]
    fn a_stint_runs_from_acceptance_or_mend_until_replacement_or_removal() {
        let s = stints(&[
            event("a", "scheduler", "scheduler-accepted", 10),
            event("a", "zone", "healthy", 12),
            event("a", "scheduler", "superseded", 30),
            event("b", "scheduler", "scheduler-failed", 10),
            event("b", "drift", "mended", 20),
            event("c", "scheduler", "superseded", 5),
        ]);
        let key = |z: &str| ("test-us-east-1".to_owned(), z.to_owned());
        assert_eq!(
            s[&key("a")],
            Stint {
                since_us: 10,
                until_us: Some(30)
            }
        );
        assert_eq!(
            s[&key("b")],
            Stint {
                since_us: 20,
                until_us: None
            }
        );
        assert!(!s.contains_key(&key("c")), "never ran there");
    }

    #[test]
    fn at_is_an_rfc_3339_time() {
        assert_eq!(
            parse_time("at", Some(&"1970-01-01T00:00:01.5Z".to_owned())).unwrap(),
            1_500_000
        );
        assert_eq!(
            parse_time("at", Some(&"1970-01-01T01:00:00+01:00".to_owned())).unwrap(),
            0
        );
        let bad = parse_time("at", Some(&"yesterday".to_owned())).unwrap_err();
        assert_eq!(bad.fields[0].field, "at");
        assert!(parse_time("at", None).is_err());
    }
}

//! `GET /deployments?app=&region=&status=&limit=&page=`: deployments, newest first, each as
//! `GET /deployments/{id}` shows it. With `app`, from that app's partition; without, month by
//! month. `page` is the opaque `next_page` of the previous answer. A page holds at most `limit`
//! deployments; filters (`region`, `status`) may leave a page short, and `next_page` says where to
//! go on.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use scylla::response::PagingState;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::access::Caller;
use super::error::{ApiError, FieldProblem};
use super::get_deployment::view;
use super::AppState;
use crate::models::envelope::now_us;
use crate::models::state::ZoneStatus;
use crate::store::projections::{month_of, previous_month};
use crate::topics::names::{AppName, RegionName};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Deployments read per request at most, however selective the filters.
const MAX_SCANNED: usize = 1000;
/// Months without a deployment after which an unfiltered listing ends.
const EMPTY_MONTHS: u32 = 12;

/// Where the next page starts: a month (when listing by month) and the driver's paging state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    m: String,
    p: Option<String>,
}

impl Cursor {
    fn encode(&self) -> String {
        hex(&serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str) -> Option<Self> {
        serde_json::from_slice(&unhex(token)?).ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The query, checked: every bad parameter named at once.
struct Query {
    app: Option<AppName>,
    region: Option<RegionName>,
    status: Option<String>,
    limit: usize,
    cursor: Option<Cursor>,
}

fn parse(raw: &BTreeMap<String, String>) -> Result<Query, ApiError> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, why: String| {
        problems.push(FieldProblem {
            field: field.into(),
            problem: why,
        })
    };
    for name in raw.keys() {
        if !["app", "region", "status", "limit", "page"].contains(&name.as_str()) {
            problem(
                name,
                "unknown parameter; known: app, region, status, limit, page".into(),
            );
        }
    }
    let app = raw.get("app").and_then(|a| {
        AppName::parse(a)
            .map_err(|e| problem("app", e.to_string()))
            .ok()
    });
    let region = raw.get("region").and_then(|r| {
        RegionName::parse(r)
            .map_err(|e| problem("region", e.to_string()))
            .ok()
    });
    let status = raw.get("status").cloned();
    if let Some(s) = &status {
        if s != "requested" && ZoneStatus::parse(s).is_none() {
            problem(
                "status",
                "must be one of requested, deploying, healthy, degraded, failed, superseded, removed"
                    .into(),
            );
        }
    }
    let limit = match raw.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                problem("limit", format!("must be an integer from 1 to {MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
        },
    };
    let cursor = raw.get("page").and_then(|p| {
        let cursor = Cursor::decode(p);
        if cursor.is_none() {
            problem("page", "not a page token this API gave".into());
        }
        cursor
    });
    if !problems.is_empty() {
        let mut error = ApiError::invalid(problems);
        error.status = actix_web::http::StatusCode::BAD_REQUEST;
        return Err(error);
    }
    Ok(Query {
        app,
        region,
        status,
        limit,
        cursor,
    })
}

pub async fn list_deployments(
    caller: Caller,
    raw: web::Query<BTreeMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = parse(&raw)?;
    // Whether the caller sees each app met, and its env values: asked of Cassandra once per app.
    let mut visible: std::collections::HashMap<String, (bool, bool)> =
        std::collections::HashMap::new();
    if let Some(app) = &q.app {
        let sees_env = state.may_read_env(&caller, app.as_str()).await?;
        visible.insert(app.to_string(), (true, sees_env));
    }
    let read_failed = |e| ApiError::cassandra("listing deployments", &e);
    let (mut month, mut paging) = match &q.cursor {
        Some(c) => (c.m.clone(), c.p.as_deref().and_then(unhex)),
        None => (month_of(now_us() / 1000), None),
    };
    let mut items: Vec<Value> = Vec::new();
    // A request retried with its Idempotency-Key may have listed its deployment twice.
    let mut seen = std::collections::BTreeSet::new();
    let mut scanned = 0;
    let mut empty_months = 0;
    let next: Option<Cursor> = loop {
        let want = (q.limit - items.len()) as i32;
        let page = paging
            .take()
            .map(PagingState::new_from_raw_bytes)
            .unwrap_or_else(PagingState::start);
        let (ids, more) = state
            .projections
            .deployment_ids(q.app.as_ref().map(AppName::as_str), &month, want, page)
            .await
            .map_err(read_failed)?;
        scanned += ids.len();
        let found = !ids.is_empty();
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            let Some(mut v) = view(&state, id).await? else {
                continue;
            };
            let app = v["app"].as_str().unwrap_or_default().to_owned();
            let (seen_by_caller, sees_env) = match visible.get(&app) {
                Some(seen) => *seen,
                None => {
                    let seen = state.read_access(&caller, &app).await?;
                    visible.insert(app, seen);
                    seen
                }
            };
            if !seen_by_caller {
                continue;
            }
            super::get_deployment::redact(&mut v, !sees_env);
            let region_ok = q.region.as_ref().is_none_or(|r| {
                v["targets"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x.as_str() == Some(r.as_str())))
            });
            let status_ok = q
                .status
                .as_ref()
                .is_none_or(|s| v["status"].as_str() == Some(s.as_str()));
            if region_ok && status_ok {
                items.push(v);
            }
        }
        let (full, capped) = (items.len() >= q.limit, scanned >= MAX_SCANNED);
        match more {
            Some(state) => {
                paging = Some(state);
                if full || capped {
                    break Some(Cursor {
                        m: month,
                        p: paging.as_deref().map(hex),
                    });
                }
            }
            None if q.app.is_some() => break None,
            None => {
                empty_months = if found { 0 } else { empty_months + 1 };
                let Some(previous) = previous_month(&month) else {
                    break None;
                };
                if empty_months >= EMPTY_MONTHS {
                    break None;
                }
                month = previous;
                if full || capped {
                    break Some(Cursor { m: month, p: None });
                }
            }
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "deployments": items,
        "next_page": next.map(|c| c.encode()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_junk_is_refused() {
        let c = Cursor {
            m: "2026-11".into(),
            p: Some(hex(&[0, 1, 254])),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("zz"), None);
        assert_eq!(Cursor::decode("abc"), None);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let raw: BTreeMap<String, String> = [
            ("limit", "0"),
            ("status", "sleepy"),
            ("region", "Nope"),
            ("colour", "red"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let Err(e) = parse(&raw) else {
            panic!("accepted")
        };
        assert_eq!(e.status.as_u16(), 400);
        let mut fields: Vec<&str> = e.fields.iter().map(|f| f.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, ["colour", "limit", "region", "status"]);
    }
}

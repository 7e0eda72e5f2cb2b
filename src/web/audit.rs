//! `GET /audit?app=&principal=&since=&limit=` (admin): every mutating call, accepted or refused,
//! newest first: who, what, on which app, deployment and regions, from where, and the answer.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::access::{self, Caller};
use super::app_history::parse_time;
use super::error::ApiError;
use super::AppState;
use crate::auth::Refusal;
use crate::store::access::AUDIT_LIMIT_MAX;

/// How far back one query may reach.
const MAX_DAYS: i64 = 90;
const DEFAULT_LIMIT: usize = 100;
const DAY_MS: i64 = 86_400_000;

pub async fn get_audit(
    caller: Caller,
    raw: web::Query<BTreeMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !caller.is_admin() {
        return Err(access::forbidden(Refusal {
            reason: format!(
                "only an admin reads the audit log; {} is not one",
                caller.name
            ),
            field: None,
        }));
    }
    const KNOWN: [&str; 4] = ["app", "principal", "since", "limit"];
    if let Some(unknown) = raw.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_field(
            "invalid_query",
            unknown.as_str(),
            "unknown parameter; known: app, principal, since, limit",
        ));
    }
    let now_ms = crate::models::envelope::now_us() / 1000;
    let since_ms = match raw.get("since") {
        None => now_ms - DAY_MS,
        since => parse_time("since", since)? / 1000,
    };
    if since_ms < now_ms - MAX_DAYS * DAY_MS {
        return Err(ApiError::bad_field(
            "invalid_query",
            "since",
            format!("at most {MAX_DAYS} days back"),
        ));
    }
    let limit = match raw.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=AUDIT_LIMIT_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::bad_field(
                    "invalid_query",
                    "limit",
                    format!("must be an integer from 1 to {AUDIT_LIMIT_MAX}"),
                )
            })?,
    };
    let (app, principal) = (raw.get("app"), raw.get("principal"));
    let rows = state
        .access
        .audit_since(since_ms, now_ms, limit, |row| {
            app.is_none_or(|a| row.app.as_ref() == Some(a))
                && principal.is_none_or(|p| &row.principal == p)
        })
        .await
        .map_err(|e| ApiError::cassandra("reading the audit log", &e))?;
    Ok(HttpResponse::Ok().json(json!({ "calls": rows })))
}

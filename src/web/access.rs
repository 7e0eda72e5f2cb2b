//! Who may call what: the middleware that authenticates every call but the public ones, limits
//! each principal's mutating calls and writes every mutating call to the audit log; the
//! [`Caller`] extractor; and the checks the handlers make against an app's owners.
//!
//! - Missing or refused credentials: `401` with `WWW-Authenticate: Bearer` and the JSON error.
//! - Too many mutating calls: `429` with `Retry-After`. Calls without valid credentials draw
//!   on one bucket per source address (reads too), and beyond it are answered `429` without
//!   an audit row each.
//! - A call the principal's role, teams or environments do not allow: `403` naming the reason
//!   and the field (nothing is produced to Kafka).
//!
//! Handlers name what a call is about ([`note`]: app, deployment, regions) so the audit row
//! holds it, refusals included.

use std::collections::BTreeSet;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use uuid::Uuid;

use super::error::{ApiError, FieldProblem};
use super::AppState;
use crate::auth::{AuthError, Principal, Refusal};
use crate::store::access::AuditRow;
use crate::topics::names::RegionName;

/// The principal of an authenticated call (the middleware put it there).
pub struct Caller(pub Principal);

impl std::ops::Deref for Caller {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .map(Caller)
                .ok_or_else(|| unauthenticated(&AuthError::Missing)),
        )
    }
}

/// What a mutating call is about, for its audit row.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub app: Option<String>,
    pub deployment: Option<Uuid>,
    pub regions: Vec<String>,
}

/// Adds what the call is about to its audit row.
pub fn note(request: &HttpRequest, change: impl FnOnce(&mut Subject)) {
    let mut extensions = request.extensions_mut();
    if extensions.get::<Subject>().is_none() {
        extensions.insert(Subject::default());
    }
    if let Some(subject) = extensions.get_mut::<Subject>() {
        change(subject);
    }
}

/// The `401` answer.
fn unauthenticated(e: &AuthError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
}

/// The `403` answer.
pub fn forbidden(refusal: Refusal) -> ApiError {
    let mut error = ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal.reason.clone());
    if let Some(field) = refusal.field {
        error.fields.push(FieldProblem {
            field,
            problem: refusal.reason,
        });
    }
    error
}

fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `path` is served to anyone (health, readiness, metrics, the API's description).
fn public(path: &str) -> bool {
    super::ROUTES_ALWAYS.iter().any(|(_, p)| *p == path)
}

/// The `429` answer to a caller whose bucket is empty for `wait` more.
fn rate_limited(wait: std::time::Duration, who: &str) -> ApiError {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{who}; retry in {secs} s"),
    );
    error.retry_after_secs = Some(secs);
    error
}

/// The middleware: authenticates, rate-limits and audits every call to the service routes.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some(state) = state.filter(|_| !public(req.path())) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let writes = mutating(req.method());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let principal = match state.auth.authenticate(authorization).await {
        Ok(principal) => principal,
        Err(e) => {
            // Callers without valid credentials share one bucket per source address: a flood
            // of them costs a 429 each, not a token check and an audit row each.
            let source = req.peer_addr().map(|a| a.ip().to_string());
            let bucket = format!("\u{0}unauthenticated/{}", source.as_deref().unwrap_or("-"));
            if let Err(wait) = state.auth.limits.take(&bucket) {
                let error = rate_limited(wait, "too many calls without valid credentials");
                return Ok(req.into_response(error.error_response()));
            }
            tracing::info!(path = req.path(), reason = %e, "call refused: not authenticated");
            let error = unauthenticated(&e);
            let mut response = error.error_response();
            let challenge = match e {
                AuthError::Missing => "Bearer realm=\"mot\"".to_owned(),
                e => format!(
                    "Bearer realm=\"mot\", error=\"invalid_token\", error_description=\"{}\"",
                    e.to_string().replace('"', "'")
                ),
            };
            if let Ok(value) = header::HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            let res = req.into_response(response);
            if writes {
                audit(&state, &res, None, "unauthenticated").await;
            }
            return Ok(res);
        }
    };
    if writes {
        if let Err(wait) = state.auth.limits.take(&principal.name) {
            let error = rate_limited(wait, &format!("{} made too many changes", principal.name));
            let res = req.into_response(error.error_response());
            audit(&state, &res, Some(&principal), "rate_limited").await;
            return Ok(res);
        }
    }
    req.extensions_mut().insert(principal.clone());
    let res = next.call(req).await?.map_into_boxed_body();
    if writes {
        let reason = res
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>())
            .map(|e| e.code)
            .unwrap_or("");
        audit(&state, &res, Some(&principal), reason).await;
    }
    Ok(res)
}

/// Writes the audit row of an answered mutating call. A row that cannot be written is logged
/// (with everything it held) and does not change the answer: the call has had its effect.
async fn audit<B>(
    state: &AppState,
    res: &ServiceResponse<B>,
    principal: Option<&Principal>,
    reason: &str,
) {
    let request = res.request();
    let subject = request
        .extensions()
        .get::<Subject>()
        .cloned()
        .unwrap_or_default();
    let info = request.match_info();
    let status = res.status().as_u16();
    let route = request.match_pattern();
    let row = AuditRow {
        at_ms: crate::models::envelope::now_us() / 1000,
        id: Uuid::new_v4(),
        principal: principal.map_or_else(|| "anonymous".to_owned(), |p| p.name.clone()),
        action: format!(
            "{} {}",
            request.method(),
            route
                .as_deref()
                .unwrap_or_else(|| truncated(request.path()))
        ),
        app: subject
            .app
            .or_else(|| info.get("app").map(|a| truncated(a).to_owned())),
        deployment: subject
            .deployment
            .or_else(|| info.get("id").and_then(|id| Uuid::parse_str(id).ok())),
        regions: subject.regions,
        source: request.peer_addr().map(|a| a.ip().to_string()),
        status: i32::from(status),
        outcome: match status {
            200..=399 => "accepted",
            400..=499 => "refused",
            _ => "failed",
        }
        .to_owned(),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    };
    if let Err(e) = state.access.audit(&row).await {
        tracing::error!(error = %e, row = ?row, "audit row not written");
    }
}

fn truncated(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

impl AppState {
    /// The teams owning `app` (`None`: nobody yet).
    pub(crate) async fn owners(&self, app: &str) -> Result<Option<BTreeSet<String>>, ApiError> {
        self.access
            .owners(app)
            .await
            .map_err(|e| ApiError::cassandra("reading an app's owners", &e))
    }

    /// Whether `caller` may read `app`, and whether it sees the app's plain `env` values: the
    /// app's owners read once (not at all for an admin).
    pub(crate) async fn read_access(
        &self,
        caller: &Principal,
        app: &str,
    ) -> Result<(bool, bool), ApiError> {
        if caller.is_admin() {
            return Ok((true, true));
        }
        let owners = self.owners(app).await?;
        Ok((
            caller.may_read(owners.as_ref()),
            caller.sees_env(owners.as_ref()),
        ))
    }

    /// `403` unless `caller` may read `app`; whether it sees the app's plain `env` values.
    pub(crate) async fn may_read_env(
        &self,
        caller: &Principal,
        app: &str,
    ) -> Result<bool, ApiError> {
        match self.read_access(caller, app).await? {
            (true, sees_env) => Ok(sees_env),
            (false, _) => Err(forbidden(Refusal {
                reason: format!("app {app} belongs to no team of {}", caller.name),
                field: Some("app".into()),
            })),
        }
    }

    /// `403` unless `caller` may read `app`.
    pub(crate) async fn may_read(&self, caller: &Principal, app: &str) -> Result<(), ApiError> {
        if caller.sees_all() {
            return Ok(());
        }
        self.may_read_env(caller, app).await.map(|_| ())
    }

    /// `403` unless `caller` may change `app` in `regions` (`field(i)` names region `i` in the
    /// request). With `claims` (a deployment), an app nobody owns is given to the caller's
    /// team first.
    pub(crate) async fn may_change(
        &self,
        caller: &Principal,
        app: &str,
        claims: bool,
        regions: &[RegionName],
        field: impl Fn(usize) -> String,
    ) -> Result<(), ApiError> {
        let mut owners = self.owners(app).await?;
        caller
            .may_change(app, owners.as_ref(), claims, regions, &field)
            .map_err(forbidden)?;
        if claims && owners.is_none() {
            if let Some(team) = caller.home_team() {
                // Another team may have claimed it meanwhile: check again against the winner.
                owners = Some(
                    self.access
                        .claim(app, team, &caller.name)
                        .await
                        .map_err(|e| ApiError::cassandra("claiming an app", &e))?,
                );
                caller
                    .may_change(app, owners.as_ref(), claims, regions, &field)
                    .map_err(forbidden)?;
                tracing::info!(app, team, principal = %caller.name, "app given to its first deployer's team");
            }
        }
        Ok(())
    }
}

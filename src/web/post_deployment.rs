//! `POST /deployments`: validate a deployment request, log it on the central cluster, answer
//! `202 Accepted` once Kafka acknowledged it.
//!
//! The request is one record on `mot-deployment-requests`, so it is accepted whole or not at all;
//! the DeploymentFanOutAgent turns it into each region's launch event. With an `Idempotency-Key`
//! header a retried POST answers with the deployment the key first created and re-drives the same
//! deployment id, which every later step handles idempotently: nothing launches twice.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument;
use uuid::Uuid;

use super::access::{self, Caller};
use super::error::{ApiError, FieldProblem};
use super::AppState;
use crate::auth::Principal;
use crate::models::deployment::{
    DeploymentRequested, DeploymentSpec, DriftPolicy, HealthCheck, Resources, Target,
};
use crate::models::envelope::{now_us, Envelope, Kind};
use crate::models::rollout::{
    OnFailure, Strategy, DEFAULT_DEADLINE_SECS, DEFAULT_MIN_HEALTHY_SECS,
};
use crate::topics::names::{AppName, RegionName, ZoneName};

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Limits that keep one request's cost bounded.
const MAX_TARGETS: usize = 50;
const MAX_PORTS: usize = 16;
const MAX_ENV: usize = 100;
const MAX_INSTANCES_PER_ZONE: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    app: String,
    version: String,
    artifact: String,
    instances_per_zone: u32,
    resources: ResourcesBody,
    #[serde(default)]
    ports: Vec<u32>,
    #[serde(default)]
    health_check: Option<HealthCheckBody>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Values sealed before they leave the API, never shown by a GET.
    #[serde(default)]
    secret_env: BTreeMap<String, String>,
    targets: Vec<TargetBody>,
    /// `mend` (the default) or `report`.
    #[serde(default)]
    drift: Option<String>,
    #[serde(default)]
    strategy: Option<StrategyBody>,
}

/// Numbers are read wide so that a negative or huge one is named by the checks, not by serde.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyBody {
    #[serde(default)]
    waves: Option<Vec<Vec<String>>>,
    #[serde(default)]
    max_parallel: Option<i64>,
    #[serde(default)]
    min_healthy_secs: Option<i64>,
    #[serde(default)]
    deadline_secs: Option<i64>,
    #[serde(default)]
    on_failure: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesBody {
    cpus: f64,
    mem_mb: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckBody {
    path: String,
    interval_secs: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    region: String,
    #[serde(default)]
    zones: Option<Vec<String>>,
}

/// The 202 answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub id: Uuid,
    pub status: String,
    /// The deployment's place in its app's history: greater than every earlier deployment's.
    pub generation: u64,
    pub targets: Vec<Target>,
    /// The trace of this request (32 hex digits): find it in the trace backend.
    pub trace_id: String,
}

pub async fn post_deployment(
    caller: Caller,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let span = super::server_span(&request, "/deployments");
    accept(caller, request, payload, state)
        .instrument(span)
        .await
}

async fn accept(
    caller: Caller,
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_content_type(&request)?;
    let bytes = read_limited(payload, MAX_BODY_BYTES).await?;
    let body = parse(&bytes)?;
    let (spec, targets, strategy, secret_digests) = validate(body, &state)?;
    let regions: Vec<RegionName> = targets.iter().map(|t| t.region.clone()).collect();
    access::note(&request, |s| {
        s.app = Some(spec.app.to_string());
        s.regions = regions.iter().map(ToString::to_string).collect();
    });
    state
        .may_change(&caller, spec.app.as_str(), true, &regions, |i| {
            format!("targets[{i}].region")
        })
        .await?;
    let idempotency_key = idempotency_key(&request, &caller)?;

    let (id, already_logged, generation) = match &idempotency_key {
        None => (
            Uuid::new_v4(),
            false,
            state.next_generation(spec.app.as_str()).await?,
        ),
        Some(key) => {
            let claim = state
                .claim_idempotency_key(
                    key,
                    &request_hash(&spec, &targets, strategy.as_ref(), &secret_digests),
                    spec.app.as_str(),
                )
                .await?;
            (claim.id, claim.logged, claim.generation)
        }
    };
    access::note(&request, |s| s.deployment = Some(id));
    let requested = DeploymentRequested {
        id,
        generation,
        spec,
        targets,
        strategy,
        rollback_of: None,
        requested_by: Some(caller.name.clone()),
    };
    // Keyed by the app: the fan-out reads an app's requests in the order they were logged.
    let envelope = Envelope::new(
        Kind::Requested,
        requested.spec.app.to_string(),
        state.topology().config().topology.central.clone(),
        now_us(),
        requested,
    );
    if !already_logged {
        state.log_request(&envelope).await?;
        if let Some(key) = &idempotency_key {
            state.mark_idempotency_key_logged(key).await?;
        }
        if let Err(e) = state.write_shell(&envelope).await {
            // The request is durable in Kafka; the shell only makes GET answer sooner.
            tracing::warn!(deployment = %id, error = %e, "request accepted but its shell was not written");
        }
    }
    tracing::info!(deployment = %id, app = %envelope.payload.spec.app.as_str(), generation, regions = envelope.payload.targets.len(),
        replayed = already_logged, "deployment accepted");
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/deployments/{id}")))
        .json(Accepted {
            id,
            status: "requested".into(),
            generation,
            targets: envelope.payload.targets,
            trace_id: AppState::trace_id(),
        }))
}

pub(crate) fn check_content_type(request: &HttpRequest) -> Result<(), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be application/json, not `{content_type}`"),
        ))
    }
}

pub(crate) async fn read_limited(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_field("unreadable_body", "body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body must be at most {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `bytes` as a `T`, or a 400 naming the field at fault.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // serde names a missing field in its message, at the path of the object that lacks it.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_owned(),
            (_, Some(name)) => format!("{path}.{name}"),
            (".", None) => "body".to_owned(),
            (_, None) => path,
        };
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_field("malformed_json", "body", format!("not valid JSON: {inner}"))
        } else {
            ApiError::bad_field("invalid_json", field, inner.to_string())
        }
    })
}

/// What a request asks, checked: the spec (its secrets sealed), targets, strategy, and a keyed
/// digest of each secret (for the idempotency check).
type Checked = (
    DeploymentSpec,
    Vec<Target>,
    Option<Strategy>,
    BTreeMap<String, String>,
);

fn validate(body: Body, state: &AppState) -> Result<Checked, ApiError> {
    let mut problems = Vec::new();
    let mut bad = |field: String, problem: String| problems.push(FieldProblem { field, problem });

    let app = AppName::parse(&body.app);
    if let Err(e) = &app {
        bad("app".into(), e.problem.clone());
    }
    check_text(&mut bad, "version", &body.version, 128, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')
    });
    check_text(&mut bad, "artifact", &body.artifact, 512, |c| {
        c.is_ascii_graphic()
    });
    if body.instances_per_zone == 0 || body.instances_per_zone > MAX_INSTANCES_PER_ZONE {
        bad(
            "instances_per_zone".into(),
            format!("must be between 1 and {MAX_INSTANCES_PER_ZONE}"),
        );
    }
    if !(body.resources.cpus > 0.0 && body.resources.cpus <= 64.0) {
        bad(
            "resources.cpus".into(),
            "must be more than 0 and at most 64".into(),
        );
    }
    if !(16..=1_048_576).contains(&body.resources.mem_mb) {
        bad(
            "resources.mem_mb".into(),
            "must be between 16 and 1048576".into(),
        );
    }
    if body.ports.len() > MAX_PORTS {
        bad("ports".into(), format!("at most {MAX_PORTS} ports"));
    }
    let mut seen_ports = BTreeSet::new();
    for (i, port) in body.ports.iter().enumerate() {
        if !(1..=65535).contains(port) {
            bad(format!("ports[{i}]"), "must be between 1 and 65535".into());
        } else if !seen_ports.insert(port) {
            bad(
                format!("ports[{i}]"),
                format!("port {port} is listed twice"),
            );
        }
    }
    if let Some(check) = &body.health_check {
        if !check.path.starts_with('/')
            || check.path.len() > 256
            || check.path.contains(char::is_whitespace)
        {
            bad(
                "health_check.path".into(),
                "must start with `/`, have no spaces, at most 256 characters".into(),
            );
        }
        if !(1..=3600).contains(&check.interval_secs) {
            bad(
                "health_check.interval_secs".into(),
                "must be between 1 and 3600".into(),
            );
        }
    }
    for (field, vars) in [("env", &body.env), ("secret_env", &body.secret_env)] {
        if vars.len() > MAX_ENV {
            bad(field.into(), format!("at most {MAX_ENV} variables"));
        }
        for (name, value) in vars {
            let valid_name = name.len() <= 128
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                bad(
                    format!("{field}.{name}"),
                    "names are `[A-Z_][A-Z0-9_]*`, at most 128 characters".into(),
                );
            }
            if value.len() > 4096 {
                bad(
                    format!("{field}.{name}"),
                    "values are at most 4096 bytes".into(),
                );
            }
        }
    }
    for name in body.secret_env.keys() {
        if body.env.contains_key(name) {
            bad(
                format!("secret_env.{name}"),
                "is also in env; a variable is plain or secret, not both".into(),
            );
        }
    }
    // Sealed here: nothing after the API sees the values.
    let mut secret_env = BTreeMap::new();
    let mut secret_digests = BTreeMap::new();
    for (name, value) in &body.secret_env {
        match state
            .secrets
            .seal(name, value)
            .and_then(|sealed| Ok((sealed, state.secrets.digest(name, value)?)))
        {
            Ok((sealed, digest)) => {
                secret_env.insert(name.clone(), sealed);
                secret_digests.insert(name.clone(), digest);
            }
            Err(e) => {
                bad(format!("secret_env.{name}"), e.to_string());
                break;
            }
        }
    }

    let drift = match body.drift.as_deref() {
        None | Some("mend") => DriftPolicy::Mend,
        Some("report") => DriftPolicy::Report,
        Some(other) => {
            bad(
                "drift".into(),
                format!("must be `mend` or `report`, not `{other}`"),
            );
            DriftPolicy::Mend
        }
    };
    let targets = validate_targets(&body.targets, state, &mut bad);
    let strategy = body
        .strategy
        .as_ref()
        .and_then(|s| validate_strategy(s, &targets, &mut bad));
    match (problems.is_empty(), app) {
        (true, Ok(app)) => Ok((
            DeploymentSpec {
                app,
                version: body.version,
                artifact: body.artifact,
                instances_per_zone: body.instances_per_zone,
                resources: Resources {
                    cpus: body.resources.cpus,
                    mem_mb: body.resources.mem_mb,
                },
                ports: body.ports.iter().map(|p| *p as u16).collect(),
                health_check: body.health_check.map(|h| HealthCheck {
                    path: h.path,
                    interval_secs: h.interval_secs,
                }),
                env: body.env,
                secret_env,
                drift,
            },
            targets,
            strategy,
            secret_digests,
        )),
        _ => Err(ApiError::invalid(problems)),
    }
}

fn check_text(
    bad: &mut impl FnMut(String, String),
    field: &str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) {
    if value.is_empty() || value.len() > max {
        bad(field.into(), format!("must be 1 to {max} characters"));
    } else if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        bad(field.into(), format!("must not contain `{c}`"));
    }
}

fn validate_targets(
    targets: &[TargetBody],
    state: &AppState,
    bad: &mut impl FnMut(String, String),
) -> Vec<Target> {
    let topology = state.topology();
    let config = topology.config();
    if targets.is_empty() {
        bad("targets".into(), "must name at least one region".into());
    }
    if targets.len() > MAX_TARGETS {
        bad("targets".into(), format!("at most {MAX_TARGETS} regions"));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let field = format!("targets[{i}].region");
        let Some(region) = RegionName::parse(&target.region)
            .ok()
            .and_then(|r| config.region(&r))
        else {
            let known: Vec<&str> = config
                .regions
                .iter()
                .filter(|r| !r.zones.is_empty())
                .map(|r| r.name.as_str())
                .collect();
            bad(
                field,
                format!(
                    "unknown region `{}` (regions: {})",
                    target.region,
                    known.join(", ")
                ),
            );
            continue;
        };
        if region.zones.is_empty() {
            bad(
                field,
                format!("region `{}` has no zones to deploy to", region.name),
            );
            continue;
        }
        if !seen.insert(region.name.clone()) {
            bad(field, format!("region `{}` is targeted twice", region.name));
            continue;
        }
        let zones = match &target.zones {
            None => region.zones.iter().map(|z| z.name.clone()).collect(),
            Some(zones) if zones.is_empty() => {
                bad(
                    format!("targets[{i}].zones"),
                    "must name at least one zone, or be left out for all".into(),
                );
                continue;
            }
            Some(zones) => {
                let mut chosen = Vec::new();
                for (j, zone) in zones.iter().enumerate() {
                    let known = ZoneName::parse(zone)
                        .ok()
                        .filter(|z| region.zone(z).is_some());
                    match known {
                        Some(z) if chosen.contains(&z) => bad(
                            format!("targets[{i}].zones[{j}]"),
                            format!("zone `{zone}` is listed twice"),
                        ),
                        Some(z) => chosen.push(z),
                        None => {
                            let names: Vec<&str> =
                                region.zones.iter().map(|z| z.name.as_str()).collect();
                            bad(
                                format!("targets[{i}].zones[{j}]"),
                                format!(
                                    "unknown zone `{zone}` in {} (zones: {})",
                                    region.name,
                                    names.join(", ")
                                ),
                            )
                        }
                    }
                }
                chosen
            }
        };
        out.push(Target {
            region: region.name.clone(),
            zones,
        });
    }
    out
}

/// The strategy with its waves explicit, or `None` after naming what is wrong with it.
fn validate_strategy(
    body: &StrategyBody,
    targets: &[Target],
    bad: &mut impl FnMut(String, String),
) -> Option<Strategy> {
    let before = std::cell::Cell::new(0usize);
    let mut problem = |field: &str, text: String| {
        before.set(before.get() + 1);
        bad(format!("strategy.{field}"), text)
    };
    let regions: Vec<&RegionName> = targets.iter().map(|t| &t.region).collect();
    let waves = match (&body.waves, body.max_parallel) {
        (Some(_), Some(_)) => {
            problem(
                "max_parallel",
                "give `waves` or `max_parallel`, not both".into(),
            );
            Vec::new()
        }
        (None, None) => {
            problem("waves", "give `waves` or `max_parallel`".into());
            Vec::new()
        }
        (None, Some(n)) if n < 1 || n > MAX_TARGETS as i64 => {
            problem(
                "max_parallel",
                format!("must be between 1 and {MAX_TARGETS}"),
            );
            Vec::new()
        }
        (None, Some(n)) => regions
            .chunks(n as usize)
            .map(|chunk| chunk.iter().map(|r| (*r).clone()).collect())
            .collect(),
        (Some(waves), None) => {
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            let mut out = Vec::new();
            if waves.is_empty() {
                problem("waves", "must list at least one wave".into());
            }
            for (i, wave) in waves.iter().enumerate() {
                if wave.is_empty() {
                    problem(
                        &format!("waves[{i}]"),
                        "must name at least one region".into(),
                    );
                }
                let mut regions_of_wave = Vec::new();
                for (j, region) in wave.iter().enumerate() {
                    let field = format!("waves[{i}][{j}]");
                    match regions.iter().find(|r| r.as_str() == region) {
                        None => problem(
                            &field,
                            format!("region `{region}` is not one of the targets"),
                        ),
                        Some(_) if !seen.insert(region.as_str()) => {
                            problem(&field, format!("region `{region}` is in two waves"))
                        }
                        Some(r) => regions_of_wave.push((*r).clone()),
                    }
                }
                out.push(regions_of_wave);
            }
            for region in &regions {
                if !seen.contains(region.as_str()) {
                    problem("waves", format!("target region `{region}` is in no wave"));
                }
            }
            out
        }
    };
    let mut seconds =
        |field: &str, value: Option<i64>, default: u32, min: i64, max: i64| match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v as u32,
            Some(_) => {
                problem(field, format!("must be between {min} and {max} seconds"));
                default
            }
        };
    let min_healthy_secs = seconds(
        "min_healthy_secs",
        body.min_healthy_secs,
        DEFAULT_MIN_HEALTHY_SECS,
        0,
        86_400,
    );
    let deadline_secs = seconds(
        "deadline_secs",
        body.deadline_secs,
        DEFAULT_DEADLINE_SECS,
        1,
        7 * 86_400,
    );
    if deadline_secs <= min_healthy_secs {
        problem(
            "deadline_secs",
            format!("must be more than min_healthy_secs ({min_healthy_secs})"),
        );
    }
    let on_failure = match body.on_failure.as_deref() {
        None | Some("pause") => OnFailure::Pause,
        Some("rollback") => OnFailure::Rollback,
        Some(other) => {
            problem(
                "on_failure",
                format!("must be `pause` or `rollback`, not `{other}`"),
            );
            OnFailure::Pause
        }
    };
    (before.get() == 0).then(|| Strategy {
        waves,
        max_parallel: body.max_parallel.map(|n| n as u32),
        min_healthy_secs,
        deadline_secs,
        on_failure,
    })
}

/// The request's `Idempotency-Key`, scoped to the caller: one principal's key never stands for
/// another principal's request.
pub(crate) fn idempotency_key(
    request: &HttpRequest,
    caller: &Principal,
) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("");
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::bad_field(
            "invalid_header",
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(format!("{}/{key}", caller.name)))
}

/// A digest of what was asked, to tell a retry from a different request reusing a key. Sealed
/// secrets differ at each sealing: their keyed digests stand for them.
fn request_hash(
    spec: &DeploymentSpec,
    targets: &[Target],
    strategy: Option<&Strategy>,
    secret_digests: &BTreeMap<String, String>,
) -> String {
    let mut spec = spec.clone();
    spec.secret_env.clear();
    let json = match (strategy, secret_digests.is_empty()) {
        (None, true) => serde_json::to_vec(&(&spec, targets)),
        (Some(strategy), true) => serde_json::to_vec(&(&spec, targets, strategy)),
        (strategy, false) => serde_json::to_vec(&(&spec, targets, strategy, secret_digests)),
    }
    .unwrap_or_default();
    Sha256::digest(json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

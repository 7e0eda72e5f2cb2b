//! The service layer's HTTP API (actix-web): one file per route, errors in [`error`], shared
//! state (the central cluster's producer, the Cassandra session and statements) in [`AppState`].

mod app_config;
mod app_history;
mod delete_app;
pub mod error;
mod get_deployment;
mod health;
mod list_deployments;
pub mod metrics;
mod openapi;
pub mod post_deployment;
mod post_traffic;
pub mod readyz;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use tracing::Instrument;
use uuid::Uuid;

use crate::actors::counters::Registry;
use crate::actors::pipeline::{acknowledged, enqueue, Outgoing};
use crate::models::deployment::DeploymentRequested;
use crate::models::envelope::{Envelope, HEADER_EVENT_TYPE};
use crate::store;
use crate::topics::catalog;
use crate::topics::clients::HomeProducer;
use crate::topics::names::TopicName;
use crate::topics::topology::Topology;
use error::ApiError;

/// What every request handler shares.
pub struct AppState {
    /// The topology: regions and zones a request may target; replaced on reload (SIGHUP).
    topology: std::sync::RwLock<Topology>,
    /// Producer to the central cluster, with the API's delivery timeout.
    producer: HomeProducer,
    session: Arc<Session>,
    statements: Statements,
    /// The projections the reads are served from.
    projections: store::projections::Projections,
}

struct Statements {
    insert_deployment: PreparedStatement,
    insert_by_app: PreparedStatement,
    claim_key: PreparedStatement,
    select_key: PreparedStatement,
    mark_key_logged: PreparedStatement,
    select_generation: PreparedStatement,
    first_generation: PreparedStatement,
    next_generation: PreparedStatement,
}

/// What an Idempotency-Key stands for.
pub(crate) struct Claim {
    /// The deployment id.
    pub id: Uuid,
    /// Whether its request is already on the request log.
    pub logged: bool,
    /// The generation it was given.
    pub generation: u64,
}

/// Attempts at taking the next generation of an app while other requests take them too.
const GENERATION_ATTEMPTS: u32 = 32;

/// How long the API waits for Kafka to acknowledge a request before answering 503.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);

impl AppState {
    /// Connects to Cassandra and prepares the API's statements; builds the central producer.
    pub async fn connect(topology: Topology) -> anyhow::Result<Self> {
        let session = store::connect(&topology.config().cassandra).await?;
        Self::with_session(topology, session).await
    }

    /// Prepares the API's statements on `session`; builds the central producer.
    pub async fn with_session(topology: Topology, session: Arc<Session>) -> anyhow::Result<Self> {
        let config = topology.config();
        let ks = &config.cassandra.keyspace;
        let prepare = |cql: String| {
            let session = session.clone();
            async move { session.prepare(cql).await }
        };
        let statements = Statements {
            insert_deployment: prepare(format!(
                "INSERT INTO {ks}.deployments (id, app, version, request, status, targets, created_at, updated_at, trace_id, generation) \
                 VALUES (?, ?, ?, ?, 'requested', ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            insert_by_app: prepare(format!(
                "INSERT INTO {ks}.deployments_by_app (app, created_at, id, version, status) \
                 VALUES (?, ?, ?, ?, 'requested') USING TIMESTAMP ?"
            ))
            .await?,
            claim_key: prepare(format!(
                "INSERT INTO {ks}.idempotency_keys (key, deployment_id, request_hash, generation, created_at) \
                 VALUES (?, ?, ?, ?, toTimestamp(now())) IF NOT EXISTS"
            ))
            .await?,
            select_key: prepare(format!(
                "SELECT deployment_id, request_hash, logged, generation FROM {ks}.idempotency_keys WHERE key = ?"
            ))
            .await?,
            select_generation: prepare(format!(
                "SELECT generation FROM {ks}.app_generations WHERE app = ?"
            ))
            .await?,
            first_generation: prepare(format!(
                "INSERT INTO {ks}.app_generations (app, generation) VALUES (?, 1) IF NOT EXISTS"
            ))
            .await?,
            next_generation: prepare(format!(
                "UPDATE {ks}.app_generations SET generation = ? WHERE app = ? IF generation = ?"
            ))
            .await?,
            mark_key_logged: prepare(format!(
                "UPDATE {ks}.idempotency_keys SET logged = true WHERE key = ?"
            ))
            .await?,
        };
        let projections = store::projections::Projections::prepare(session.clone(), ks)
            .await
            .map_err(|e| anyhow::anyhow!("preparing the api's reads: {e}"))?;
        let producer = topology
            .central_home()
            .producer_with_timeout(PRODUCE_TIMEOUT)?;
        Ok(Self {
            topology: std::sync::RwLock::new(topology),
            producer,
            session,
            statements,
            projections,
        })
    }

    /// The topology requests are checked against now.
    pub fn topology(&self) -> Topology {
        self.topology
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks requests against `topology` from now on.
    pub fn set_topology(&self, topology: Topology) {
        *self.topology.write().unwrap_or_else(|p| p.into_inner()) = topology;
    }

    /// The next generation of `app`: one more than any given out before, by any instance of the
    /// API (a compare-and-set on `app_generations`, retried while others win the race).
    async fn next_generation(&self, app: &str) -> Result<u64, ApiError> {
        let failed = |e: &dyn std::fmt::Display| ApiError::internal("taking a generation", e);
        let mut current: Option<i64> = self
            .session
            .execute_unpaged(&self.statements.select_generation, (app,))
            .await
            .map_err(|e| failed(&e))?
            .into_rows_result()
            .map_err(|e| failed(&e))?
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(|e| failed(&e))?
            .and_then(|(g,)| g);
        for _ in 0..GENERATION_ATTEMPTS {
            let (result, next) = match current {
                None => (
                    self.session
                        .execute_unpaged(&self.statements.first_generation, (app,))
                        .await,
                    1,
                ),
                Some(g) => (
                    self.session
                        .execute_unpaged(&self.statements.next_generation, (g + 1, app, g))
                        .await,
                    g + 1,
                ),
            };
            let row = result
                .map_err(|e| failed(&e))?
                .into_rows_result()
                .map_err(|e| failed(&e))?
                .maybe_first_row::<scylla::value::Row>()
                .map_err(|e| failed(&e))?;
            let columns = row.map(|r| r.columns).unwrap_or_default();
            let applied = columns
                .first()
                .cloned()
                .flatten()
                .and_then(|v| v.as_boolean())
                .unwrap_or(false);
            if applied {
                return Ok(next as u64);
            }
            // Not applied: the row shows the generation someone else took.
            current = columns.iter().skip(1).flatten().find_map(|v| v.as_bigint());
        }
        Err(ApiError::unavailable(
            "too many deployments of this app at once; retry",
            1,
        ))
    }

    /// The deployment id and generation `key` stands for: new ones when the key is new, the
    /// first ones when the same request is retried; 422 when the key was used for another
    /// request.
    async fn claim_idempotency_key(
        &self,
        key: &str,
        hash: &str,
        app: &str,
    ) -> Result<Claim, ApiError> {
        if let Some(claim) = self.existing_claim(key, hash).await? {
            return Ok(claim);
        }
        let fresh = Uuid::new_v4();
        let generation = self.next_generation(app).await?;
        let claimed = self
            .session
            .execute_unpaged(
                &self.statements.claim_key,
                (key, fresh, hash, generation as i64),
            )
            .await
            .map_err(|e| ApiError::internal("claiming an idempotency key", &e))?;
        let applied = claimed
            .into_rows_result()
            .ok()
            .and_then(|rows| rows.first_row::<scylla::value::Row>().ok())
            .and_then(|row| row.columns.first().cloned().flatten())
            .and_then(|v| v.as_boolean())
            .unwrap_or(false);
        if applied {
            return Ok(Claim {
                id: fresh,
                logged: false,
                generation,
            });
        }
        // Another retry of the same key claimed it first.
        match self.existing_claim(key, hash).await? {
            Some(claim) => Ok(claim),
            None => Err(ApiError::internal(
                "idempotency key vanished",
                &"no row after a failed claim",
            )),
        }
    }

    /// What `key` already stands for, if it was claimed.
    async fn existing_claim(&self, key: &str, hash: &str) -> Result<Option<Claim>, ApiError> {
        let existing = self
            .session
            .execute_unpaged(&self.statements.select_key, (key,))
            .await
            .map_err(|e| ApiError::internal("reading an idempotency key", &e))?
            .into_rows_result()
            .map_err(|e| ApiError::internal("reading an idempotency key", &e))?
            .maybe_first_row::<(Uuid, String, Option<bool>, Option<i64>)>()
            .map_err(|e| ApiError::internal("reading an idempotency key", &e))?;
        match existing {
            None => Ok(None),
            Some((id, stored, logged, generation)) if stored == hash => Ok(Some(Claim {
                id,
                logged: logged.unwrap_or(false),
                generation: generation.unwrap_or(0) as u64,
            })),
            Some(_) => Err(ApiError::new(
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )),
        }
    }

    /// Produces the request to `mot-deployment-requests`; 503 when Kafka does not acknowledge it.
    async fn log_request(&self, envelope: &Envelope<DeploymentRequested>) -> Result<(), ApiError> {
        let topic = TopicName::local(&catalog::DEPLOYMENT_REQUESTS.base());
        self.produce(topic, envelope, "DeploymentRequested").await
    }

    /// The trace id of the request being served, for the answer and the deployment's row.
    pub(crate) fn trace_id() -> String {
        crate::telemetry::trace_id(&tracing::Span::current())
    }

    /// Produces `envelope` to `topic` on the central cluster and waits for the acknowledgement;
    /// 503 (retry in 5 s) when Kafka does not give it in time.
    async fn produce<T: serde::Serialize>(
        &self,
        topic: TopicName,
        envelope: &Envelope<T>,
        payload_type: &str,
    ) -> Result<(), ApiError> {
        let value = serde_json::to_vec(envelope)
            .map_err(|e| ApiError::internal("encoding a request", &e))?;
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("send {topic}"),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = %topic,
        );
        let mut headers = vec![(
            HEADER_EVENT_TYPE.to_owned(),
            format!("{payload_type}.{}", envelope.kind.as_str()).into_bytes(),
        )];
        crate::telemetry::inject(&span, &mut headers);
        let out = Outgoing {
            topic,
            key: Some(envelope.key.clone().into_bytes()),
            value: Some(value),
            headers,
            timestamp_ms: None,
        };
        acknowledged(enqueue(&self.producer, &out))
            .instrument(span)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "request not acknowledged by the central cluster");
                ApiError::unavailable(
                    "the central Kafka cluster did not acknowledge the request; retry",
                    5,
                )
            })
    }

    /// Records that the request `key` stands for is on the request log.
    async fn mark_idempotency_key_logged(&self, key: &str) -> Result<(), ApiError> {
        self.session
            .execute_unpaged(&self.statements.mark_key_logged, (key,))
            .await
            .map(|_| ())
            .map_err(|e| ApiError::internal("marking an idempotency key", &e))
    }

    /// Writes the deployment's metadata shell, timestamped with the request time.
    async fn write_shell(&self, envelope: &Envelope<DeploymentRequested>) -> anyhow::Result<()> {
        let request = &envelope.payload;
        let created = CqlTimestamp(envelope.time_us / 1000);
        let targets: Vec<String> = request
            .targets
            .iter()
            .map(|t| t.region.to_string())
            .collect();
        let json = serde_json::to_string(request)?;
        self.session
            .execute_unpaged(
                &self.statements.insert_deployment,
                (
                    request.id,
                    request.spec.app.as_str(),
                    &request.spec.version,
                    json,
                    targets,
                    created,
                    created,
                    Self::trace_id(),
                    request.generation as i64,
                    envelope.time_us,
                ),
            )
            .await?;
        self.session
            .execute_unpaged(
                &self.statements.insert_by_app,
                (
                    request.spec.app.as_str(),
                    created,
                    request.id,
                    &request.spec.version,
                    envelope.time_us,
                ),
            )
            .await?;
        self.projections
            .list_by_month(request.id, request.spec.app.as_str(), envelope.time_us)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}

/// The server span of a request that starts a flow (OpenTelemetry HTTP conventions), continuing
/// the caller's trace when it sent a `traceparent`.
pub(crate) fn server_span(request: &actix_web::HttpRequest, route: &str) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let headers: Vec<(String, Vec<u8>)> = request
        .headers()
        .iter()
        .filter(|(name, _)| *name == "traceparent" || *name == "tracestate")
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = %request.path(),
    );
    if !headers.is_empty() {
        let _ = span.set_parent(crate::telemetry::extract(&headers));
    }
    span
}

/// Builds the API server on an already bound listener (port 0 in tests). `state` is present when
/// this process runs the service role; `/healthz`, `/readyz` and `/metrics` are served whatever
/// the roles. Signals are handled by the daemon, which stops the server gracefully through its
/// handle.
pub fn server(
    listener: TcpListener,
    state: Option<web::Data<AppState>>,
    registry: Registry,
    readiness: Arc<readyz::Readiness>,
) -> std::io::Result<Server> {
    let registry = web::Data::new(registry);
    let readiness = web::Data::from(readiness);
    let http_metrics = web::Data::new(metrics::HttpMetrics::default());
    let server = HttpServer::new(move || {
        let recorder = http_metrics.clone();
        let app = App::new()
            .app_data(registry.clone())
            .app_data(readiness.clone())
            .app_data(http_metrics.clone())
            .wrap_fn(move |req, srv| {
                let started = std::time::Instant::now();
                let method = req.method().to_string();
                let recorder = recorder.clone();
                let call = actix_web::dev::Service::call(srv, req);
                async move {
                    let res = call.await?;
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    recorder.record(&route, &method, res.status().as_u16(), started.elapsed());
                    Ok(res)
                }
            })
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(readyz::readyz))
            .route("/metrics", web::get().to(metrics::metrics))
            .route("/openapi.json", web::get().to(openapi::openapi));
        match &state {
            Some(state) => app
                .app_data(state.clone())
                .route(
                    "/deployments",
                    web::post().to(post_deployment::post_deployment),
                )
                .route(
                    "/deployments",
                    web::get().to(list_deployments::list_deployments),
                )
                .route(
                    "/deployments/{id}",
                    web::get().to(get_deployment::get_deployment),
                )
                .route(
                    "/deployments/{id}/instances",
                    web::get().to(get_deployment::get_instances),
                )
                .route(
                    "/deployments/{id}/events",
                    web::get().to(get_deployment::get_events),
                )
                .route(
                    "/deployments/{id}/traffic",
                    web::post().to(post_traffic::post_traffic),
                )
                .route("/apps/{app}", web::delete().to(delete_app::delete_app))
                .route(
                    "/apps/{app}/deployments",
                    web::get().to(app_history::app_deployments),
                )
                .route(
                    "/apps/{app}/history",
                    web::get().to(app_history::app_history),
                )
                .route("/apps/{app}/config", web::get().to(app_config::get_config))
                .route("/apps/{app}/config", web::put().to(app_config::put_config)),
            None => app,
        }
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}

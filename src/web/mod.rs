//! The service layer's HTTP API (actix-web): one file per route, errors in [`error`], shared
//! state (the central cluster's producer, the Cassandra session and statements) in [`AppState`].

mod access;
mod app_config;
mod app_history;
mod app_owners;
mod audit;
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
mod rollouts;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use scylla::client::session::Session;
use tracing::Instrument;
use uuid::Uuid;

use crate::actors::counters::Registry;
use crate::actors::pipeline::Outgoing;
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
    /// The service layer's own rows: generations, idempotency keys, deployment shells.
    requests: store::requests::Requests,
    /// The projections the reads are served from.
    projections: store::projections::Projections,
    /// Who is calling: static tokens, JWTs, the rate limit.
    auth: crate::auth::Authenticator,
    /// Who owns each app, and the audit log.
    access: store::access::Access,
    /// The keys that seal `secret_env` values.
    secrets: crate::secrets::Keyring,
}

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
        let requests = store::requests::Requests::prepare(session.clone(), ks)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let projections = store::projections::Projections::prepare(session.clone(), ks)
            .await
            .map_err(|e| anyhow::anyhow!("preparing the api's reads: {e}"))?;
        let access = store::access::Access::prepare(session.clone(), ks)
            .await
            .map_err(|e| anyhow::anyhow!("preparing the api's owner and audit statements: {e}"))?;
        let auth = crate::auth::Authenticator::from_config(&config.auth, &config.tls)?;
        let secrets = crate::secrets::Keyring::from_config(&config.secrets)?;
        let producer = topology
            .central_home()
            .producer_with_timeout(PRODUCE_TIMEOUT)?;
        Ok(Self {
            topology: std::sync::RwLock::new(topology),
            producer,
            requests,
            projections,
            auth,
            access,
            secrets,
        })
    }

    /// The topology requests are checked against now.
    pub fn topology(&self) -> Topology {
        self.topology
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks requests against `topology` from now on, and re-reads its `[auth]` files (the
    /// tokens file, a JWKS file); when they cannot be read, the tokens and keys it had stay.
    pub fn set_topology(&self, topology: Topology) {
        if let Err(e) = self.auth.reload(&topology.config().auth) {
            tracing::error!(error = %format!("{e:#}"), "auth files not reloaded; keeping the tokens and keys in use");
        }
        *self.topology.write().unwrap_or_else(|p| p.into_inner()) = topology;
    }

    /// The next generation of `app`: one more than any given out before, by any instance of the
    /// API.
    async fn next_generation(&self, app: &str) -> Result<u64, ApiError> {
        self.requests
            .next_generation(app)
            .await
            .map_err(requests_error)
    }

    /// The deployment id and generation `key` stands for: new ones when the key is new, the
    /// first ones when the same request is retried; 422 when the key was used for another
    /// request.
    async fn claim_idempotency_key(
        &self,
        key: &str,
        hash: &str,
        app: &str,
    ) -> Result<store::requests::Claim, ApiError> {
        self.requests
            .claim(key, hash, app, Uuid::new_v4())
            .await
            .map_err(requests_error)
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
        self.producer
            .send(&out)
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
        self.requests.mark_logged(key).await.map_err(requests_error)
    }

    /// Writes the deployment's metadata shell, timestamped with the request time.
    async fn write_shell(&self, envelope: &Envelope<DeploymentRequested>) -> anyhow::Result<()> {
        Ok(self
            .requests
            .write_shell(envelope, &Self::trace_id())
            .await?)
    }
}

/// The answer for a request row that could not be read or written.
fn requests_error(e: store::requests::RequestsError) -> ApiError {
    use store::requests::RequestsError;
    match e {
        RequestsError::Contended => {
            ApiError::unavailable("too many deployments of this app at once; retry", 1)
        }
        RequestsError::KeyReused => ApiError::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        ),
        e @ RequestsError::Cassandra { .. } => ApiError::cassandra("request rows", &e),
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

/// The routes served whatever the roles: method and path (the OpenAPI document describes each;
/// a test checks it), in the order of [`always_routes`].
pub const ROUTES_ALWAYS: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// Their handlers, in order; the method is the table's.
fn always_routes() -> [actix_web::Route; 4] {
    [
        web::route().to(health::healthz),
        web::route().to(readyz::readyz),
        web::route().to(metrics::metrics),
        web::route().to(openapi::openapi),
    ]
}

/// The routes the service role serves, in the order of [`service_routes`].
pub const SERVICE_ROUTES: &[(&str, &str)] = &[
    ("POST", "/deployments"),
    ("GET", "/deployments"),
    ("GET", "/deployments/{id}"),
    ("GET", "/deployments/{id}/instances"),
    ("GET", "/deployments/{id}/events"),
    ("POST", "/deployments/{id}/traffic"),
    ("POST", "/deployments/{id}/resume"),
    ("POST", "/deployments/{id}/cancel"),
    ("DELETE", "/apps/{app}"),
    ("POST", "/apps/{app}/rollback"),
    ("GET", "/apps/{app}/deployments"),
    ("GET", "/apps/{app}/history"),
    ("GET", "/apps/{app}/config"),
    ("PUT", "/apps/{app}/config"),
    ("GET", "/apps/{app}/owners"),
    ("PUT", "/apps/{app}/owners"),
    ("GET", "/audit"),
];

/// Their handlers, in order; the method is the table's.
fn service_routes() -> [actix_web::Route; 17] {
    [
        web::route().to(post_deployment::post_deployment),
        web::route().to(list_deployments::list_deployments),
        web::route().to(get_deployment::get_deployment),
        web::route().to(get_deployment::get_instances),
        web::route().to(get_deployment::get_events),
        web::route().to(post_traffic::post_traffic),
        web::route().to(rollouts::resume),
        web::route().to(rollouts::cancel),
        web::route().to(delete_app::delete_app),
        web::route().to(rollouts::rollback),
        web::route().to(app_history::app_deployments),
        web::route().to(app_history::app_history),
        web::route().to(app_config::get_config),
        web::route().to(app_config::put_config),
        web::route().to(app_owners::get_owners),
        web::route().to(app_owners::put_owners),
        web::route().to(audit::get_audit),
    ]
}

fn http_method(name: &str) -> actix_web::http::Method {
    actix_web::http::Method::from_bytes(name.as_bytes())
        .unwrap_or_else(|e| unreachable!("a route table's method: {e}"))
}

/// The TLS settings of the API's listener: the certificate chain and key of `config` (PEM),
/// TLS 1.2 and 1.3.
pub fn tls_server_config(
    config: &crate::config::WebTlsConfig,
) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("web.tls.cert_file {}", config.cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "web.tls.cert_file {}: holds no certificate",
        config.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .with_context(|| format!("web.tls.key_file {}", config.key_file.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("web.tls: the certificate and key do not make a TLS identity")
}

/// Builds the API server on an already bound listener (port 0 in tests), serving HTTPS with
/// `tls` (see [`tls_server_config`]), plain HTTP without. `state` is present when
/// this process runs the service role; `/healthz`, `/readyz` and `/metrics` are served whatever
/// the roles. Signals are handled by the daemon, which stops the server gracefully through its
/// handle.
pub fn server(
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
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
            .wrap(actix_web::middleware::from_fn(access::guard))
            .wrap_fn(move |req, srv| {
                let started = std::time::Instant::now();
                let method = metrics::method_label(req.method());
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
            });
        let app = ROUTES_ALWAYS
            .iter()
            .zip(always_routes())
            .fold(app, |app, ((method, path), route)| {
                app.route(path, route.method(http_method(method)))
            });
        match &state {
            Some(state) => SERVICE_ROUTES.iter().zip(service_routes()).fold(
                app.app_data(state.clone()),
                |app, ((method, path), route)| app.route(path, route.method(http_method(method))),
            ),
            None => app,
        }
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(10);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

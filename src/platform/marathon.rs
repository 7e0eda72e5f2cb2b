//! A client of the subset of Marathon's v2 API mot uses: create or update an app
//! (`PUT /v2/apps/{id}`), read it (`GET /v2/apps/{id}`), list every app with its tasks
//! (`GET /v2/apps?embed=apps.tasks`). Field names are Marathon's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::calls;

/// Label holding the deployment that last set an app, so a re-delivered launch is recognised.
pub const LABEL_DEPLOYMENT_ID: &str = "mot-deployment-id";

/// Label with the generation of the deployment that launched the app.
pub const LABEL_GENERATION: &str = "mot-generation";

/// Label with the app version a deployment asked for.
pub const LABEL_APP_VERSION: &str = "mot-app-version";

/// An app definition, as Marathon takes and returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default)]
    pub port_definitions: Vec<PortDefinition>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub health_checks: Vec<MarathonHealthCheck>,
    /// Set by Marathon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_running: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_healthy: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    #[serde(rename = "type")]
    pub kind: String,
    pub docker: Docker,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Docker {
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortDefinition {
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarathonHealthCheck {
    pub protocol: String,
    pub path: String,
    pub interval_seconds: u32,
}

/// A running instance of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub app_id: String,
    pub host: String,
    pub ports: Vec<u16>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The app version the task was started for: during a replacement, the older version's
    /// tasks run beside the new one's until these pass their checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub health_check_results: Vec<HealthCheckResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    pub alive: bool,
    pub task_id: String,
}

/// Marathon's answer to a create or update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentAccepted {
    pub version: String,
    pub deployment_id: String,
}

#[derive(Deserialize)]
struct AppList {
    apps: Vec<App>,
}

#[derive(Deserialize)]
struct AppEnvelope {
    app: App,
}

/// Why a Marathon call failed; `transient` ones are worth retrying.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct MarathonError {
    pub message: String,
    pub transient: bool,
}

/// A client of one zone's Marathon.
#[derive(Debug, Clone)]
pub struct MarathonClient {
    base: String,
    http: reqwest::Client,
}

impl MarathonClient {
    /// A client of the Marathon at `base` (e.g. `http://10.0.0.1:8080`).
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// One call on `/v2/apps/{id}`: traced, timed and counted as `<method> /v2/apps/{id}` (a
    /// 404 counts as an answer, not a failure: the app is not there).
    async fn on_app(
        &self,
        method: reqwest::Method,
        id: &str,
        body: Option<&App>,
    ) -> Result<reqwest::Response, MarathonError> {
        let url = format!("{}/v2/apps/{}", self.base, id.trim_start_matches('/'));
        let (name, operation) = match method.as_str() {
            "GET" => ("GET", "GET /v2/apps/{id}"),
            "PUT" => ("PUT", "PUT /v2/apps/{id}"),
            _ => ("DELETE", "DELETE /v2/apps/{id}"),
        };
        let span = client_span(name, "/v2/apps/{id}", &url);
        let started = std::time::Instant::now();
        let mut request =
            traced(self.http.request(method, &url), &span).timeout(Duration::from_secs(10));
        if let Some(app) = body {
            request = request.json(app);
        }
        let resp = request.send().instrument(span.clone()).await;
        let ok = resp
            .as_ref()
            .is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 404);
        calls::record("marathon", operation, ok, started.elapsed());
        let resp = resp.map_err(unreachable)?;
        span.record(
            "http.response.status_code",
            i64::from(resp.status().as_u16()),
        );
        Ok(resp)
    }

    /// `GET /v2/apps/{id}`; `None` when Marathon does not know the app.
    pub async fn app(&self, id: &str) -> Result<Option<App>, MarathonError> {
        let resp = self.on_app(reqwest::Method::GET, id, None).await?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => resp
                .json::<AppEnvelope>()
                .await
                .map(|e| Some(e.app))
                .map_err(|e| MarathonError {
                    message: format!("unreadable app: {e}"),
                    transient: false,
                }),
            _ => Err(refused(resp).await),
        }
    }

    /// `GET /v2/apps?embed=apps.tasks`: every app with its tasks and their health.
    pub async fn apps(&self) -> Result<Vec<App>, MarathonError> {
        let started = std::time::Instant::now();
        let resp = self
            .http
            .get(format!("{}/v2/apps?embed=apps.tasks", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let ok = resp.as_ref().is_ok_and(|r| r.status().is_success());
        calls::record("marathon", "GET /v2/apps", ok, started.elapsed());
        let resp = resp.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(refused(resp).await);
        }
        resp.json::<AppList>()
            .await
            .map(|l| l.apps)
            .map_err(|e| MarathonError {
                message: format!("unreadable app list: {e}"),
                transient: false,
            })
    }

    /// `PUT /v2/apps/{id}`: creates the app or updates it to `app`.
    pub async fn put_app(&self, app: &App) -> Result<DeploymentAccepted, MarathonError> {
        let resp = self
            .on_app(reqwest::Method::PUT, &app.id, Some(app))
            .await?;
        if resp.status().is_success() {
            resp.json().await.map_err(|e| MarathonError {
                message: format!("unreadable answer: {e}"),
                transient: false,
            })
        } else {
            Err(refused(resp).await)
        }
    }

    /// `DELETE /v2/apps/{id}`: removes the app and its tasks; `false` when Marathon did not know
    /// it (already gone).
    pub async fn delete_app(&self, id: &str) -> Result<bool, MarathonError> {
        let resp = self.on_app(reqwest::Method::DELETE, id, None).await?;
        match resp.status().as_u16() {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            _ => Err(refused(resp).await),
        }
    }
}

/// A client span of a scheduler call (OpenTelemetry HTTP conventions); it is only recorded when
/// the call is part of a traced flow (a deployment), not for every poll.
fn client_span(method: &'static str, route: &'static str, url: &str) -> tracing::Span {
    if tracing::Span::current().is_disabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        otel.kind = "client",
        http.request.method = method,
        url.full = %url,
        http.response.status_code = tracing::field::Empty,
    )
}

/// `request` carrying `span`'s trace context, so the scheduler's own traces join the deployment's.
fn traced(mut request: reqwest::RequestBuilder, span: &tracing::Span) -> reqwest::RequestBuilder {
    let mut headers = Vec::new();
    crate::telemetry::inject(span, &mut headers);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

fn unreachable(e: reqwest::Error) -> MarathonError {
    MarathonError {
        message: format!("scheduler unreachable: {}", super::http::with_causes(&e)),
        transient: true,
    }
}

async fn refused(resp: reqwest::Response) -> MarathonError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    MarathonError {
        message: format!("scheduler answered {}: {body}", status.as_u16()),
        transient: status.is_server_error() || status.as_u16() == 409 || status.as_u16() == 429,
    }
}

//! DeploymentOperationAgent (regional): takes its region's launch events (from the pseudo-central
//! cluster for a non-production region, from the central cluster for a production one, as the
//! topology plans), puts the app to each target zone's scheduler, and publishes what each zone
//! did to `mot-deployment-complete-events` on its home cluster.
//!
//! A re-delivered launch changes nothing twice: the app carries its deployment id as a label,
//! and a zone whose app already has it is reported accepted without a second PUT. A transient
//! scheduler error is retried with capped backoff; a zone that stays down is reported failed
//! while the other zones proceed.

use std::time::Duration;

use futures::future::join_all;

use crate::config::ZoneConfig;
use crate::models::deployment::{DeploymentCompleted, LaunchRequested, ZoneOutcome};
use crate::models::envelope::{now_us, Envelope, Kind};
use crate::platform::marathon::{
    self, App, Container, Docker, MarathonClient, MarathonHealthCheck, PortDefinition,
};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::pipeline::{Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source};

/// Attempts per zone before it is reported failed.
const ATTEMPTS: u32 = 4;
/// First pause between attempts; doubles each time.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Label with the W3C `traceparent` of the deployment that launched the app.
pub const LABEL_TRACEPARENT: &str = "mot-traceparent";

/// Label with the app version a deployment asked for.
pub const LABEL_APP_VERSION: &str = "mot-app-version";

/// The agent.
pub struct DeploymentOperationAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    http: reqwest::Client,
    output: TopicName,
}

/// The Marathon app definition of a launch.
pub fn marathon_app(launch: &LaunchRequested) -> App {
    let spec = &launch.spec;
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(
        marathon::LABEL_DEPLOYMENT_ID.to_owned(),
        launch.deployment_id.to_string(),
    );
    labels.insert(LABEL_APP_VERSION.to_owned(), spec.version.clone());
    App {
        id: format!("/{}", spec.app),
        instances: spec.instances_per_zone,
        cpus: spec.resources.cpus,
        mem: f64::from(spec.resources.mem_mb),
        container: Some(Container {
            kind: "DOCKER".into(),
            docker: Docker {
                image: spec.artifact.clone(),
            },
        }),
        port_definitions: spec
            .ports
            .iter()
            .map(|p| PortDefinition { port: *p })
            .collect(),
        env: spec.env.clone(),
        labels,
        health_checks: spec
            .health_check
            .iter()
            .map(|h| MarathonHealthCheck {
                protocol: "HTTP".into(),
                path: h.path.clone(),
                interval_seconds: h.interval_secs,
            })
            .collect(),
        version: None,
        tasks_running: None,
        tasks_healthy: None,
        tasks: Vec::new(),
    }
}

impl DeploymentOperationAgent {
    async fn launch_in_zone(&self, zone: &ZoneConfig, app: &App, deployment: &str) -> ZoneOutcome {
        let client = MarathonClient::new(&zone.marathon, self.http.clone());
        let mut pause = FIRST_RETRY;
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            let result = async {
                if let Some(existing) = client.app(&app.id).await? {
                    if existing
                        .labels
                        .get(marathon::LABEL_DEPLOYMENT_ID)
                        .map(String::as_str)
                        == Some(deployment)
                    {
                        return Ok(existing.version.unwrap_or_default());
                    }
                }
                client.put_app(app).await.map(|accepted| accepted.version)
            }
            .await;
            match result {
                Ok(version) => {
                    tracing::info!(region = %self.region, zone = %zone.name, %deployment, app = %app.id, "scheduler accepted the app");
                    return ZoneOutcome::Accepted {
                        zone: zone.name.clone(),
                        version,
                    };
                }
                Err(e) => {
                    last_error = e.message.clone();
                    if !e.transient || attempt == ATTEMPTS {
                        break;
                    }
                    tracing::warn!(region = %self.region, zone = %zone.name, attempt, error = %e.message, "scheduler call failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        ZoneOutcome::Failed {
            zone: zone.name.clone(),
            reason: last_error,
        }
    }

    /// Launches in every target zone at once; returns the complete event.
    async fn launch(
        &self,
        launch: &Envelope<LaunchRequested>,
        cause: &Incoming,
    ) -> Result<Outgoing, String> {
        let request = &launch.payload;
        let mut app = marathon_app(request);
        // The app remembers the trace that launched it: state changes it causes later link to it.
        let mut trace = Vec::new();
        crate::telemetry::inject(&tracing::Span::current(), &mut trace);
        if let Some((_, traceparent)) = trace.into_iter().find(|(k, _)| k == "traceparent") {
            app.labels.insert(
                LABEL_TRACEPARENT.to_owned(),
                String::from_utf8_lossy(&traceparent).into_owned(),
            );
        }
        let deployment = request.deployment_id.to_string();
        let (app, deployment) = (&app, &deployment);
        let zones = request.zones.iter().map(|name| async move {
            match self.zones.iter().find(|z| &z.name == name) {
                Some(zone) => self.launch_in_zone(zone, app, deployment).await,
                None => ZoneOutcome::Failed {
                    zone: name.clone(),
                    reason: format!("{} has no zone {name}", self.region),
                },
            }
        });
        let outcomes = join_all(zones).await;
        let completed = DeploymentCompleted {
            deployment_id: request.deployment_id,
            region: self.region.clone(),
            app: request.spec.app.clone(),
            version: request.spec.version.clone(),
            zones: outcomes,
        };
        let json = serde_json::to_vec(&completed).map_err(|e| e.to_string())?;
        let head = Envelope::new(
            Kind::Completed,
            deployment.clone(),
            self.region.clone(),
            now_us(),
            (),
        );
        Outgoing::envelope(
            self.output.clone(),
            "DeploymentCompleted",
            head,
            &json,
            cause,
        )
        .map_err(|e| e.to_string())
    }
}

impl Agent for DeploymentOperationAgent {
    const NAME: &'static str = "DeploymentOperationAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::central(ctx, &catalog::DEPLOYMENT_LAUNCH_EVENTS))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| PipelineError::Other(format!("http client: {e}")))?;
        Ok(Self {
            region: ctx.region.name.clone(),
            zones: ctx.region.zones.clone(),
            http,
            output: TopicName::local(&catalog::DEPLOYMENT_COMPLETE_EVENTS.base()),
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let launch = match incoming.decode::<LaunchRequested>() {
            Ok(launch) => launch,
            Err(rejected) => return rejected,
        };
        if launch.payload.region != self.region {
            return Outcome::Reject(format!(
                "launch for {} on {}'s topic",
                launch.payload.region, self.region
            ));
        }
        match self.launch(&launch, incoming).await {
            Ok(complete) => Outcome::Publish(vec![complete]),
            Err(reason) => Outcome::Reject(reason),
        }
    }
}

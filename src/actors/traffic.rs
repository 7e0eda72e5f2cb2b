//! TrafficAgent (regional): takes its region's traffic events (`mot-traffic-events-<region>`,
//! read where the topology plans, like launch events) and sets the maintenance state of the
//! deployment's instances in every zone's Consul, each through the Consul agent the instance is
//! registered on ([`Consul::set_maintenance`]): maintenance off is traffic on. The pollers then
//! see the change and it flows back to the projections like any other instance change; what each
//! zone did is also reported (`TrafficApplied` on `mot-deployment-complete-events`), so the
//! deployment's timeline shows it.
//!
//! Nothing is dropped: a zone whose Consul does not answer (unreachable, 5xx, 429) is retried;
//! if it still does not, the agent stops without acknowledging the event and its supervisor
//! restarts it with capped backoff, so the event is applied once Consul is back. A zone whose
//! Consul refuses the change for good (another 4xx) is reported refused, with Consul's answer,
//! and the event is done. Setting a state is idempotent, so a re-delivered event changes nothing
//! twice, and its report is derived from the request (same time, same id).

use std::time::Duration;

use futures::future::join_all;

use crate::config::ZoneConfig;
use crate::models::deployment::{TrafficApplied, TrafficRequested, TrafficZoneOutcome};
use crate::models::envelope::{Envelope, Kind};
use crate::platform::consul::{Consul, MaintenanceError};
use crate::platform::http::PollError;
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::instance_consul_state::META_DEPLOYMENT_ID;
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source};

/// Attempts per zone before the agent gives up for now (and is restarted).
const ATTEMPTS: u32 = 3;

/// The agent.
pub struct TrafficAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    http: reqwest::Client,
    output: TopicName,
}

/// Why a zone was not switched.
#[derive(Debug)]
struct SwitchError {
    /// Worth retrying: Consul did not answer, or answered that it cannot now.
    transient: bool,
    message: String,
}

/// Whether Consul answering `status` may answer otherwise later.
fn transient(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

impl From<PollError> for SwitchError {
    fn from(e: PollError) -> Self {
        let transient = match &e {
            PollError::Status { status, .. } => reqwest::StatusCode::from_u16(*status)
                .map(transient)
                .unwrap_or(true),
            PollError::Unreachable(_) | PollError::BadAnswer(_) => true,
            PollError::Withheld(_) => false,
        };
        Self {
            transient,
            message: e.to_string(),
        }
    }
}

impl From<MaintenanceError> for SwitchError {
    fn from(e: MaintenanceError) -> Self {
        Self {
            transient: match &e {
                MaintenanceError::Address(_) => false,
                MaintenanceError::Http(e) => e.status().is_none_or(transient),
            },
            message: e.to_string(),
        }
    }
}

impl SwitchError {
    /// Consul's answer to a request it did not take: its status and its own words.
    async fn answered(answer: reqwest::Response) -> Self {
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        Self {
            transient: transient(status),
            message: format!("consul answered {status}: {}", body.trim()),
        }
    }
}

impl TrafficAgent {
    /// Switches the deployment's instances in one zone, each through the Consul agent it is
    /// registered on; answers how many were switched.
    async fn switch_zone(
        &self,
        zone: &ZoneConfig,
        request: &TrafficRequested,
    ) -> Result<u64, SwitchError> {
        let consul = Consul::of(zone);
        let entries = consul.health(&self.http, request.app.as_str()).await?;
        let id = request.deployment_id.to_string();
        let reason = format!("mot: traffic off for deployment {id}");
        let mut switched = 0;
        for entry in entries
            .iter()
            .filter(|e| e.service.meta.get(META_DEPLOYMENT_ID) == Some(&id))
        {
            let answer = consul
                .set_maintenance(&self.http, entry, !request.enabled, &reason)
                .await?;
            // An instance gone between the listing and the switch has no traffic to switch.
            if answer.status() == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            if !answer.status().is_success() {
                return Err(SwitchError::answered(answer).await);
            }
            switched += 1;
        }
        Ok(switched)
    }

    /// One zone's outcome (none where the deployment has no instance), or `Err` when its
    /// Consul stayed unavailable through every attempt.
    async fn switch_zone_with_retries(
        &self,
        zone: &ZoneConfig,
        request: &TrafficRequested,
    ) -> Result<Option<TrafficZoneOutcome>, String> {
        let mut pause = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.switch_zone(zone, request).await {
                Ok(0) => return Ok(None),
                Ok(instances) => {
                    return Ok(Some(TrafficZoneOutcome::Switched {
                        zone: zone.name.clone(),
                        instances,
                    }))
                }
                Err(e) if !e.transient => {
                    tracing::warn!(region = %self.region, zone = %zone.name, error = %e.message, "consul refused the traffic change");
                    return Ok(Some(TrafficZoneOutcome::Refused {
                        zone: zone.name.clone(),
                        reason: e.message,
                    }));
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(region = %self.region, zone = %zone.name, attempt, error = %e.message, "consul did not take the traffic change; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(format!("zone {}: {}", zone.name, e.message)),
            }
        }
    }
}

impl Agent for TrafficAgent {
    const NAME: &'static str = "TrafficAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::central(ctx, &catalog::TRAFFIC_EVENTS))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let http = ctx.http_client(|b| {
            b.connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(10))
        })?;
        Ok(Self {
            region: ctx.region.name.clone(),
            zones: ctx.region.zones.clone(),
            http,
            output: TopicName::local(&catalog::DEPLOYMENT_COMPLETE_EVENTS.base()),
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let envelope = match incoming.decode::<TrafficRequested>() {
            Ok(envelope) => envelope,
            Err(rejected) => return rejected,
        };
        let request = &envelope.payload;
        if request.region != self.region {
            return Outcome::Reject(format!(
                "traffic for {} on {}'s topic",
                request.region, self.region
            ));
        }
        let results = join_all(
            self.zones
                .iter()
                .map(|zone| self.switch_zone_with_retries(zone, request)),
        )
        .await;
        let mut zones = Vec::new();
        let mut unavailable = Vec::new();
        for result in results {
            match result {
                Ok(outcome) => zones.extend(outcome),
                Err(e) => unavailable.push(e),
            }
        }
        if !unavailable.is_empty() {
            // Not done: replayed after a restart, when Consul may answer again. The zones that
            // were switched are switched again, which changes nothing.
            return Outcome::Fail(format!("consul unavailable in {}", unavailable.join("; ")));
        }
        tracing::info!(region = %self.region, deployment = %request.deployment_id, enabled = request.enabled, ?zones, "traffic switched");
        let applied = TrafficApplied {
            deployment_id: request.deployment_id,
            region: self.region.clone(),
            app: request.app.clone(),
            enabled: request.enabled,
            zones,
        };
        let record = serde_json::to_vec(&applied).and_then(|json| {
            let head = Envelope::derived(
                Kind::Completed,
                request.deployment_id.to_string(),
                self.region.clone(),
                envelope.time_us,
                &envelope.id.to_string(),
                (),
            );
            Outgoing::envelope(self.output.clone(), "TrafficApplied", head, &json, incoming)
        });
        match record {
            Ok(record) => Outcome::Publish(vec![record]),
            Err(e) => Outcome::Reject(e.to_string()),
        }
    }
}

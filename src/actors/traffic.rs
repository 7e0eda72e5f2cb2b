//! TrafficAgent (regional): takes its region's traffic events (`mot-traffic-events-<region>`,
//! read where the topology plans, like launch events) and sets the maintenance state of the
//! deployment's instances in every zone's Consul: maintenance off is traffic on. The pollers then
//! see the change and it flows back to the projections like any other instance change.
//!
//! Setting a state is idempotent, so a re-delivered event changes nothing twice. A zone whose
//! Consul does not answer is retried; if it still does not, the event is dead-lettered with the
//! zones that failed (the others are switched), so nothing is dropped silently.

use std::time::Duration;

use futures::future::join_all;

use crate::config::ZoneConfig;
use crate::models::consul::ConsulServiceEntry;
use crate::models::deployment::TrafficRequested;
use crate::topics::catalog;
use crate::topics::names::RegionName;

use super::instance_consul_state::META_DEPLOYMENT_ID;
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, PipelineError, Source};

/// Attempts per zone.
const ATTEMPTS: u32 = 3;

/// The agent.
pub struct TrafficAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    http: reqwest::Client,
}

impl TrafficAgent {
    /// Switches the deployment's instances in one zone; answers how many were switched.
    async fn switch_zone(
        &self,
        zone: &ZoneConfig,
        request: &TrafficRequested,
    ) -> Result<u64, String> {
        let base = zone.consul.trim_end_matches('/');
        let entries: Vec<ConsulServiceEntry> = self
            .http
            .get(format!("{base}/v1/health/service/{}", request.app))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let id = request.deployment_id.to_string();
        let mut switched = 0;
        for entry in entries
            .iter()
            .filter(|e| e.service.meta.get(META_DEPLOYMENT_ID) == Some(&id))
        {
            self.http
                .put(format!(
                    "{base}/v1/agent/service/maintenance/{}",
                    entry.service.id
                ))
                .query(&[
                    ("enable", (!request.enabled).to_string()),
                    ("reason", format!("mot: traffic off for deployment {id}")),
                ])
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?;
            switched += 1;
        }
        Ok(switched)
    }

    async fn switch_zone_with_retries(
        &self,
        zone: &ZoneConfig,
        request: &TrafficRequested,
    ) -> Result<u64, String> {
        let mut pause = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.switch_zone(zone, request).await {
                Ok(n) => return Ok(n),
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(region = %self.region, zone = %zone.name, attempt, error = %e, "consul did not take the traffic change; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(format!("zone {}: {e}", zone.name)),
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PipelineError::Other(format!("http client: {e}")))?;
        Ok(Self {
            region: ctx.region.name.clone(),
            zones: ctx.region.zones.clone(),
            http,
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let request = match incoming.decode::<TrafficRequested>() {
            Ok(request) => request.payload,
            Err(rejected) => return rejected,
        };
        if request.region != self.region {
            return Outcome::Reject(format!(
                "traffic for {} on {}'s topic",
                request.region, self.region
            ));
        }
        let results = join_all(
            self.zones
                .iter()
                .map(|zone| self.switch_zone_with_retries(zone, &request)),
        )
        .await;
        let mut switched = 0;
        let mut failed = Vec::new();
        for result in results {
            match result {
                Ok(n) => switched += n,
                Err(e) => failed.push(e),
            }
        }
        tracing::info!(region = %self.region, deployment = %request.deployment_id, enabled = request.enabled, switched, "traffic switched");
        if failed.is_empty() {
            Outcome::Stored(switched)
        } else {
            Outcome::Reject(format!("traffic not switched in {}", failed.join("; ")))
        }
    }
}

//! ConsulStateAgent (regional poller): polls each zone's Consul (`/v1/catalog/services`, then
//! `/v1/health/service/<name>` for each service) and publishes a ConsulAppState per service and
//! zone to `mot-consul-app-state` when it changed; a service that disappeared from a zone is
//! published as deleted with its last state. A zone whose Consul does not answer is left as it
//! was (no false deletions) and polled again next time.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::ZoneConfig;
use crate::models::consul::{ConsulAppState, ConsulServiceEntry};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::cache::LastRecordCache;
use super::pipeline::{AgentContext, Outgoing, PipelineError};
use super::poller::{poll_zones, PollError, Poller, ZoneOutput};

/// Pause between polls.
const INTERVAL: Duration = Duration::from_millis(1000);

/// The agent.
pub struct ConsulStateAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    cache: LastRecordCache,
    output: TopicName,
}

/// The group a zone's services form in the cache: `<region>/<zone>`.
fn zone_group(region: &RegionName, state: &ConsulAppState) -> String {
    format!("{region}/{}", state.zone)
}

impl ConsulStateAgent {
    /// Every service of one zone, as Consul reports it now.
    async fn zone_state(
        &self,
        http: &reqwest::Client,
        zone: &ZoneConfig,
    ) -> Result<Vec<ConsulAppState>, PollError> {
        let base = zone.consul.trim_end_matches('/');
        let services: BTreeMap<String, Vec<String>> = checked(
            http.get(format!("{base}/v1/catalog/services"))
                .send()
                .await?,
        )
        .await?
        .json()
        .await?;
        let mut states = Vec::new();
        for service in services.keys().filter(|s| s.as_str() != "consul") {
            let entries: Vec<ConsulServiceEntry> = checked(
                http.get(format!("{base}/v1/health/service/{service}"))
                    .send()
                    .await?,
            )
            .await?
            .json()
            .await?;
            states.push(ConsulAppState {
                service: service.clone(),
                zone: zone.name.clone(),
                entries,
            });
        }
        Ok(states)
    }
}

async fn checked(resp: reqwest::Response) -> Result<reqwest::Response, PollError> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        let status = resp.status().as_u16();
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        Err(PollError::Status { status, body })
    }
}

impl Poller for ConsulStateAgent {
    const NAME: &'static str = "ConsulStateAgent";

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let output = TopicName::local(&catalog::CONSUL_APP_STATE.base());
        let region = ctx.region.name.clone();
        let group_region = region.clone();
        let cache =
            LastRecordCache::rebuild(Self::NAME, ctx, &output, move |s: &ConsulAppState| {
                zone_group(&group_region, s)
            })
            .await?;
        Ok(Self {
            region,
            zones: ctx.region.zones.clone(),
            cache,
            output,
        })
    }

    fn interval(&self) -> Duration {
        INTERVAL
    }

    async fn poll(&mut self, http: &reqwest::Client) -> Result<Vec<Outgoing>, PollError> {
        let out = ZoneOutput {
            agent: Self::NAME,
            region: &self.region,
            cache: &self.cache,
            topic: &self.output,
            payload_type: "ConsulAppState",
        };
        let this = &*self;
        poll_zones(out, &self.zones, |zone| async move {
            let states = this.zone_state(http, &zone).await?;
            states
                .iter()
                .map(|state| {
                    serde_json::to_vec(state)
                        .map(|json| (state.key(), json))
                        .map_err(|e| PollError::BadAnswer(e.to_string()))
                })
                .collect()
        })
        .await
    }
}

//! ConsulStateAgent (regional poller): watches each zone's Consul with a blocking query
//! (`/v1/health/state/any?index=N&wait=5s`, held by Consul until a check or registration changes
//! or the wait ends), and only when the index moved reads the zone (`/v1/catalog/services`, then
//! `/v1/health/service/<name>` for each service). It publishes a ConsulAppState per service and
//! zone to `mot-consul-app-state` when it changed; a service that disappeared from a zone is
//! published as deleted with its last state. A zone whose Consul does not answer is left as it
//! was (no false deletions) and polled again next time. Zones are watched concurrently, so a
//! change anywhere is seen at once rather than on the next tick, and a quiet region costs one
//! held request per zone per wait instead of a full read per second.

use std::collections::BTreeMap;
use std::time::Duration;

use dashmap::DashMap;

use crate::config::ZoneConfig;
use crate::models::consul::{ConsulAppState, ConsulServiceEntry};
use crate::platform::calls;
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName, ZoneName};

use super::cache::LastRecordCache;
use super::pipeline::{AgentContext, Outgoing, PipelineError};
use super::poller::{checked, get_json, poll_zones, PollError, Poller, ZoneOutput};

/// Pause between polls: short, since Consul holds each watch until something changes.
const INTERVAL: Duration = Duration::from_millis(100);
/// How long Consul may hold a watch.
const WAIT: &str = "5s";

/// The agent.
pub struct ConsulStateAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    cache: LastRecordCache,
    output: TopicName,
    /// Each zone's Consul index as of its last full read.
    indexes: DashMap<ZoneName, u64>,
}

/// The group a zone's services form in the cache: `<region>/<zone>`.
fn zone_group(region: &RegionName, state: &ConsulAppState) -> String {
    format!("{region}/{}", state.zone)
}

impl ConsulStateAgent {
    /// Every service of one zone, as Consul reports it now; `None` when the zone's index did not
    /// move since the last read (nothing changed).
    async fn zone_state(
        &self,
        http: &reqwest::Client,
        zone: &ZoneConfig,
    ) -> Result<Option<Vec<ConsulAppState>>, PollError> {
        let base = zone.consul.trim_end_matches('/');
        let last = self.indexes.get(&zone.name).map(|i| *i);
        let watch = match last {
            Some(index) => format!("{base}/v1/health/state/any?index={index}&wait={WAIT}"),
            None => format!("{base}/v1/health/state/any"),
        };
        let watched = calls::timed("consul", "watch /v1/health/state/any", async {
            checked(http.get(watch).send().await?).await
        })
        .await?;
        // An index that went backwards means Consul's state was reset: read everything again.
        let index = watched
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if index.is_some() && index == last {
            return Ok(None);
        }
        let services: BTreeMap<String, Vec<String>> = get_json(
            http,
            "consul",
            "GET /v1/catalog/services",
            format!("{base}/v1/catalog/services"),
        )
        .await?;
        let mut states = Vec::new();
        for service in services.keys().filter(|s| s.as_str() != "consul") {
            let entries: Vec<ConsulServiceEntry> = get_json(
                http,
                "consul",
                "GET /v1/health/service/{service}",
                format!("{base}/v1/health/service/{service}"),
            )
            .await?;
            states.push(ConsulAppState {
                service: service.clone(),
                zone: zone.name.clone(),
                entries,
            });
        }
        match index {
            Some(index) => {
                self.indexes.insert(zone.name.clone(), index);
            }
            None => {
                self.indexes.remove(&zone.name);
            }
        }
        Ok(Some(states))
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
            indexes: DashMap::new(),
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
            first_change: true,
        };
        let this = &*self;
        poll_zones(out, &self.zones, |zone| async move {
            let Some(states) = this.zone_state(http, &zone).await? else {
                return Ok(None);
            };
            states
                .iter()
                .map(|state| {
                    serde_json::to_vec(state)
                        .map(|json| (state.key(), json))
                        .map_err(|e| PollError::BadAnswer(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .await
    }
}

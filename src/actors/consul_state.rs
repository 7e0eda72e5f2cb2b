//! ConsulStateAgent (regional poller): watches each zone's Consul with a blocking query
//! (`/v1/health/state/any?index=N&wait=5s`, held by Consul until a check or registration changes
//! or the wait ends), and only when the zone's checks changed reads the zone
//! (`/v1/catalog/services`, then `/v1/health/service/<name>` for each service; each counted in
//! [`zone_reads`](super::counters::Counters::zone_reads)). It publishes a ConsulAppState per
//! service and zone to `mot-consul-app-state` when it changed; a service that disappeared from a zone is
//! published as deleted with its last state. A zone whose Consul does not answer is left as it
//! was (no false deletions) and polled again next time. Zones are watched concurrently, so a
//! change anywhere is seen at once rather than on the next tick, and a quiet region costs one
//! held request per zone per wait instead of a full read per second.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::config::ZoneConfig;
use crate::models::consul::ConsulAppState;
use crate::platform::consul::{Consul, Watched};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName, ZoneName};

use super::cache::LastRecordCache;
use super::counters::Counters;
use super::pipeline::{AgentContext, Outgoing, PipelineError};
use super::poller::{poll_zones, PollError, Poller, ZoneOutput};

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
    /// Each zone's last watch: Consul's index and the zone's checks.
    watched: DashMap<ZoneName, Watched>,
    counters: Arc<Counters>,
}

/// The group a zone's services form in the cache: `<region>/<zone>`.
fn zone_group(region: &RegionName, state: &ConsulAppState) -> String {
    format!("{region}/{}", state.zone)
}

impl ConsulStateAgent {
    /// Every service of one zone, as Consul reports it now; `None` when the zone's checks did
    /// not change since the last read (nothing to publish).
    async fn zone_state(
        &self,
        http: &reqwest::Client,
        zone: &ZoneConfig,
    ) -> Result<Option<Vec<ConsulAppState>>, PollError> {
        let consul = Consul::of(zone);
        let last = self.watched.get(&zone.name).map(|w| w.clone());
        let watched = consul
            .watch_checks(http, last.as_ref().and_then(|w| w.index), WAIT)
            .await?;
        if let Some(last) = &last {
            // Consul's index is the datacenter's: it moves with any change anywhere, and
            // a blocking query may return when it did not move at all. The zone changed only if
            // its checks did. An index that went backwards means Consul's state was reset (a
            // restored snapshot, a new cluster): read everything again.
            let reset =
                matches!((watched.index, last.index), (Some(now), Some(then)) if now < then);
            if !reset && watched.checks == last.checks {
                self.watched.insert(zone.name.clone(), watched);
                return Ok(None);
            }
        }
        Counters::add(&self.counters.zone_reads, 1);
        let services = consul.services(http).await?;
        let mut states = Vec::new();
        for service in services.keys().filter(|s| s.as_str() != "consul") {
            states.push(ConsulAppState {
                service: service.clone(),
                zone: zone.name.clone(),
                entries: consul.health(http, service).await?,
            });
        }
        self.watched.insert(zone.name.clone(), watched);
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
            watched: DashMap::new(),
            counters: ctx.counters.clone(),
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
            counters: &self.counters,
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

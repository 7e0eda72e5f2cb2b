//! MarathonStateAgent (regional poller): polls each zone's Marathon (`GET /v2/apps?embed=apps.tasks`)
//! and publishes a MarathonAppState per app and zone to `mot-marathon-app-state` when it changed
//! (desired instances, tasks with host, ports and health results); an app gone from a zone is
//! published deleted with its last state.

use std::time::Duration;

use crate::config::ZoneConfig;
use crate::models::state::MarathonAppState;
use crate::platform::marathon::MarathonClient;
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::cache::LastRecordCache;
use super::pipeline::{AgentContext, Outgoing, PipelineError};
use super::poller::{poll_zones, PollError, Poller, ZoneOutput};

/// Pause between polls.
const INTERVAL: Duration = Duration::from_millis(1000);

/// The agent.
pub struct MarathonStateAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    cache: LastRecordCache,
    output: TopicName,
}

impl MarathonStateAgent {
    async fn zone_state(
        &self,
        http: &reqwest::Client,
        zone: &ZoneConfig,
    ) -> Result<Vec<(String, Vec<u8>)>, PollError> {
        let apps = MarathonClient::new(&zone.marathon, http.clone())
            .apps()
            .await
            .map_err(|e| {
                if e.transient {
                    PollError::Unreachable(e.message)
                } else {
                    PollError::BadAnswer(e.message)
                }
            })?;
        apps.into_iter()
            .map(|mut app| {
                app.tasks.sort_by(|a, b| a.id.cmp(&b.id));
                let state = MarathonAppState {
                    region: self.region.clone(),
                    zone: zone.name.clone(),
                    app,
                };
                serde_json::to_vec(&state)
                    .map(|json| (state.key(), json))
                    .map_err(|e| PollError::BadAnswer(e.to_string()))
            })
            .collect()
    }
}

impl Poller for MarathonStateAgent {
    const NAME: &'static str = "MarathonStateAgent";

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let output = TopicName::local(&catalog::MARATHON_APP_STATE.base());
        let cache = LastRecordCache::rebuild(Self::NAME, ctx, &output, |s: &MarathonAppState| {
            format!("{}/{}", s.region, s.zone)
        })
        .await?;
        Ok(Self {
            region: ctx.region.name.clone(),
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
            payload_type: "MarathonAppState",
        };
        let this = &*self;
        poll_zones(out, &self.zones, |zone| async move {
            this.zone_state(http, &zone).await.map(Some)
        })
        .await
    }
}

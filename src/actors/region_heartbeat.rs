//! RegionHeartbeatAgent (regional poller): every few seconds, one record on
//! `mot-deployment-state-change` saying the region's regional layer is alive. It travels the same
//! path as the region's deployment state, so the persistence layer, seeing heartbeats stop, knows
//! that region's data is stale (its cluster, its link or its agents are down) rather than quiet.

use std::time::Duration;

use crate::models::envelope::{now_us, Envelope, Kind};
use crate::models::state::RegionHeartbeat;
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::pipeline::{AgentContext, Incoming, Outgoing, PipelineError};
use super::poller::{PollError, Poller};

/// Between heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The agent.
pub struct RegionHeartbeatAgent {
    region: RegionName,
    output: TopicName,
}

impl Poller for RegionHeartbeatAgent {
    const NAME: &'static str = "RegionHeartbeatAgent";

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        Ok(Self {
            region: ctx.region.name.clone(),
            output: TopicName::local(&catalog::DEPLOYMENT_STATE_CHANGE.base()),
        })
    }

    fn interval(&self) -> Duration {
        HEARTBEAT_INTERVAL
    }

    async fn poll(&mut self, _: &reqwest::Client) -> Result<Vec<Outgoing>, PollError> {
        let beat = RegionHeartbeat {
            region: self.region.clone(),
        };
        let json = serde_json::to_vec(&beat).map_err(|e| PollError::BadAnswer(e.to_string()))?;
        let head = Envelope::new(
            Kind::Snapshot,
            beat.key(),
            self.region.clone(),
            now_us(),
            (),
        );
        let record = Outgoing::envelope(
            self.output.clone(),
            "RegionHeartbeat",
            head,
            &json,
            &Incoming::unprompted(),
        )
        .map_err(|e| PollError::BadAnswer(e.to_string()))?;
        Ok(vec![record])
    }
}

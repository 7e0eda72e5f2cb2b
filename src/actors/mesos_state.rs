//! MesosStateAgent (regional poller): polls each zone's Mesos master (`GET /master/state`) and
//! publishes a MesosTaskState per task to `mot-mesos-task-state` when it changed: the agent and
//! host a task runs on, its state, resources and labels. A task gone from a zone is published
//! deleted with its last state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ZoneConfig;
use crate::models::state::MesosTaskState;
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::cache::LastRecordCache;
use super::pipeline::{AgentContext, Outgoing, PipelineError};
use super::poller::{checked, poll_zones, PollError, Poller, ZoneOutput};
use crate::platform::calls;

/// Pause between polls (the master's state is a large document: not too often).
const INTERVAL: Duration = Duration::from_secs(2);

/// The part of `/master/state` read here.
#[derive(Deserialize)]
struct MasterState {
    #[serde(default)]
    frameworks: Vec<Framework>,
    #[serde(default)]
    slaves: Vec<Agent>,
}

#[derive(Deserialize)]
struct Framework {
    #[serde(default)]
    tasks: Vec<Task>,
}

#[derive(Deserialize)]
struct Agent {
    id: String,
    hostname: String,
}

#[derive(Deserialize)]
struct Task {
    id: String,
    name: String,
    framework_id: String,
    slave_id: String,
    state: String,
    #[serde(default)]
    resources: Resources,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize, Default)]
struct Resources {
    cpus: Option<f64>,
    mem: Option<f64>,
    ports: Option<String>,
}

#[derive(Deserialize)]
struct Label {
    key: String,
    value: String,
}

/// The agent.
pub struct MesosStateAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    cache: LastRecordCache,
    output: TopicName,
}

impl MesosStateAgent {
    async fn zone_state(
        &self,
        http: &reqwest::Client,
        zone: &ZoneConfig,
    ) -> Result<Vec<(String, Vec<u8>)>, PollError> {
        let url = format!("{}/master/state", zone.mesos.trim_end_matches('/'));
        let state: MasterState = calls::timed("mesos", "GET /master/state", async {
            checked(http.get(url).send().await?)
                .await?
                .json()
                .await
                .map_err(PollError::from)
        })
        .await?;
        let hosts: BTreeMap<&str, &str> = state
            .slaves
            .iter()
            .map(|a| (a.id.as_str(), a.hostname.as_str()))
            .collect();
        state
            .frameworks
            .iter()
            .flat_map(|f| &f.tasks)
            .map(|t| {
                let task = MesosTaskState {
                    region: self.region.clone(),
                    zone: zone.name.clone(),
                    task_id: t.id.clone(),
                    name: t.name.clone(),
                    framework_id: t.framework_id.clone(),
                    agent_id: t.slave_id.clone(),
                    hostname: hosts.get(t.slave_id.as_str()).map(|h| (*h).to_owned()),
                    state: t.state.clone(),
                    cpus: t.resources.cpus,
                    mem_mb: t.resources.mem,
                    ports: t.resources.ports.clone(),
                    labels: t
                        .labels
                        .iter()
                        .map(|l| (l.key.clone(), l.value.clone()))
                        .collect(),
                };
                serde_json::to_vec(&task)
                    .map(|json| (task.key(), json))
                    .map_err(|e| PollError::BadAnswer(e.to_string()))
            })
            .collect()
    }
}

impl Poller for MesosStateAgent {
    const NAME: &'static str = "MesosStateAgent";

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let output = TopicName::local(&catalog::MESOS_TASK_STATE.base());
        let cache = LastRecordCache::rebuild(Self::NAME, ctx, &output, |s: &MesosTaskState| {
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
            payload_type: "MesosTaskState",
        };
        let this = &*self;
        poll_zones(out, &self.zones, |zone| async move {
            this.zone_state(http, &zone).await.map(Some)
        })
        .await
    }
}

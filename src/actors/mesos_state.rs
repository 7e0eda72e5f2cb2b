//! MesosStateAgent (regional poller): polls each zone's Mesos master (`GET /master/state`) and
//! publishes a MesosTaskState per task to `mot-mesos-task-state` when it changed: the agent and
//! host a task runs on, its state with the reason and message of its latest status update,
//! resources and labels. Active, unreachable and completed tasks are read (a failed or killed
//! task moves to the master's completed tasks, and its reason is what tells why a deployment is
//! not healthy). A task gone from a zone is published deleted with its last state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ZoneConfig;
use crate::models::state::MesosTaskState;
use crate::topics::catalog::{self, TopicSpec};
use crate::topics::names::RegionName;

use super::poller::{get_json, PollError, ZoneReader, ZoneSnapshots};

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
    #[serde(default)]
    unreachable_tasks: Vec<Task>,
    #[serde(default)]
    completed_tasks: Vec<Task>,
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
    #[serde(default)]
    statuses: Vec<Status>,
}

/// A status update of a task, as the master keeps them (oldest first).
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    timestamp: f64,
    reason: Option<String>,
    message: Option<String>,
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
pub type MesosStateAgent = ZoneSnapshots<MesosTasks>;

/// Reads one zone's Mesos tasks.
pub struct MesosTasks;

impl ZoneReader for MesosTasks {
    const NAME: &'static str = "MesosStateAgent";
    const PAYLOAD: &'static str = "MesosTaskState";
    const TOPIC: TopicSpec = catalog::MESOS_TASK_STATE;
    /// The master's state is a large document: not too often.
    const INTERVAL: Duration = Duration::from_secs(2);
    type State = MesosTaskState;

    fn key(state: &MesosTaskState) -> String {
        state.key()
    }

    fn zone_group(state: &MesosTaskState) -> String {
        format!("{}/{}", state.region, state.zone)
    }

    async fn read(
        http: &reqwest::Client,
        region: &RegionName,
        zone: &ZoneConfig,
    ) -> Result<Vec<MesosTaskState>, PollError> {
        let url = format!("{}/master/state", zone.mesos.trim_end_matches('/'));
        let state: MasterState = get_json(http, "mesos", "GET /master/state", url).await?;
        let hosts: BTreeMap<&str, &str> = state
            .slaves
            .iter()
            .map(|a| (a.id.as_str(), a.hostname.as_str()))
            .collect();
        Ok(state
            .frameworks
            .iter()
            .flat_map(|f| {
                f.tasks
                    .iter()
                    .chain(&f.unreachable_tasks)
                    .chain(&f.completed_tasks)
            })
            .map(|t| {
                let latest = t
                    .statuses
                    .iter()
                    .max_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
                MesosTaskState {
                    region: region.clone(),
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
                    reason: latest.and_then(|s| s.reason.clone()),
                    message: latest
                        .and_then(|s| s.message.clone())
                        .filter(|m| !m.is_empty()),
                }
            })
            .collect())
    }
}

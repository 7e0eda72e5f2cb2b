//! Scheduler state and the deployment state derived from it: what the regional layer tells the
//! persistence layer about a deployment in each zone.

use serde::{Deserialize, Serialize};

use super::envelope::Validate;
use crate::platform::marathon::App;
use crate::topics::names::{RegionName, ZoneName};

/// One app as one zone's Marathon reports it (`GET /v2/apps?embed=apps.tasks`): its definition,
/// counts and tasks. The MarathonStateAgent publishes one per app per change; key
/// `<region>/<zone>/<app id without slash>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarathonAppState {
    pub region: RegionName,
    pub zone: ZoneName,
    pub app: App,
}

impl MarathonAppState {
    /// `<region>/<zone>/<app>`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.region,
            self.zone,
            self.app.id.trim_start_matches('/')
        )
    }
}

impl Validate for MarathonAppState {
    fn validate(&self) -> Result<(), String> {
        if self.app.id.trim_start_matches('/').is_empty() {
            return Err("app.id must not be empty".into());
        }
        Ok(())
    }
}

/// Where a deployment stands in one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneStatus {
    /// Fewer instances running or healthy than desired, and never all healthy yet.
    Deploying,
    /// Every desired instance runs and passes its checks.
    Healthy,
    /// Was healthy; now fewer instances are healthy than desired.
    Degraded,
    /// The scheduler refused the deployment or could not be reached.
    Failed,
    /// A later deployment of the same app replaced it in this zone.
    Superseded,
    /// The app was removed from this zone while this deployment ran there.
    Removed,
}

impl ZoneStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneStatus::Deploying => "deploying",
            ZoneStatus::Healthy => "healthy",
            ZoneStatus::Degraded => "degraded",
            ZoneStatus::Failed => "failed",
            ZoneStatus::Superseded => "superseded",
            ZoneStatus::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ZoneStatus::Deploying,
            ZoneStatus::Healthy,
            ZoneStatus::Degraded,
            ZoneStatus::Failed,
            ZoneStatus::Superseded,
            ZoneStatus::Removed,
        ]
        .into_iter()
        .find(|z| z.as_str() == s)
    }
}

/// A deployment's state in one zone, published by the DeploymentStateAgent on
/// `mot-deployment-state-change` when it changes. Key: `<deployment id>/<region>/<zone>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentZoneState {
    pub deployment_id: uuid::Uuid,
    pub region: RegionName,
    pub zone: ZoneName,
    pub app: String,
    pub version: String,
    pub desired: u32,
    pub running: u32,
    pub healthy: u32,
    pub status: ZoneStatus,
    /// Why the zone is not healthy, naming the source that disagrees (`marathon: ...`,
    /// `mesos: ...`, `consul: ...`); none when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DeploymentZoneState {
    /// `<deployment id>/<region>/<zone>`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.deployment_id, self.region, self.zone)
    }
}

impl Validate for DeploymentZoneState {}

/// "This region's regional layer is alive and its records are flowing", published every few
/// seconds on `mot-deployment-state-change` (key [`RegionHeartbeat::key`]), so the persistence layer can
/// tell a quiet region from one cut off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionHeartbeat {
    pub region: RegionName,
}

impl RegionHeartbeat {
    /// `heartbeat/<region>`.
    pub fn key(&self) -> String {
        format!("{HEARTBEAT_PREFIX}{}", self.region)
    }
}

/// What every heartbeat's key starts with.
pub const HEARTBEAT_PREFIX: &str = "heartbeat/";

impl Validate for RegionHeartbeat {}

/// One task as one zone's Mesos master reports it (`GET /master/state`): where it runs and what
/// it holds. The MesosStateAgent publishes one per task per change; key
/// `<region>/<zone>/<task id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MesosTaskState {
    pub region: RegionName,
    pub zone: ZoneName,
    pub task_id: String,
    /// The task's name: the app.
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    /// The agent's hostname, when the master lists the agent.
    pub hostname: Option<String>,
    pub state: String,
    pub cpus: Option<f64>,
    pub mem_mb: Option<f64>,
    /// Port ranges, as Mesos writes them (`[31000-31000]`).
    pub ports: Option<String>,
    /// Task labels (the deployment id among them).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The reason of the task's latest status update (`REASON_AGENT_DISCONNECTED`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its message, in the executor's or the master's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl MesosTaskState {
    /// `<region>/<zone>/<task id>`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.region, self.zone, self.task_id)
    }

    /// Whether the task runs (or is on its way to running) on its agent.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "TASK_RUNNING" | "TASK_STAGING" | "TASK_STARTING" | "TASK_KILLING"
        )
    }
}

impl Validate for MesosTaskState {}

//! Rollouts: a deployment's strategy (waves of regions, each gated on this deployment's own
//! health), the commands a user gives a rollout, and the rollout's state as the RolloutAgent
//! keeps it on `mot-rollouts` (compacted, key: the deployment id).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::deployment::DeploymentRequested;
use super::envelope::Validate;
use crate::topics::names::{AppName, RegionName, ZoneName};

/// How long every zone of a wave must stay healthy before the next wave starts, by default.
pub const DEFAULT_MIN_HEALTHY_SECS: u32 = 30;
/// How long a wave may take to become healthy, by default.
pub const DEFAULT_DEADLINE_SECS: u32 = 600;

/// What a rollout does when a wave fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop where it is: `POST /deployments/{id}/resume` retries the wave, `/cancel` ends it.
    #[default]
    Pause,
    /// Put every region reached back on the app's previous healthy deployment there.
    Rollback,
}

/// A deployment's rollout strategy, as accepted (the waves always explicit: `max_parallel` is
/// turned into waves when the request is checked, and kept to show what was asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// The target regions in order, each exactly once.
    pub waves: Vec<Vec<RegionName>>,
    /// When the waves came from `max_parallel`, its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    pub min_healthy_secs: u32,
    pub deadline_secs: u32,
    pub on_failure: OnFailure,
}

/// What a user asks of a rollout (on `mot-deployment-requests` with the app's requests, key: the
/// app, event type `RolloutCommand.requested`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutCommand {
    pub deployment_id: Uuid,
    pub app: AppName,
    pub action: RolloutAction,
}

impl Validate for RolloutCommand {}

/// A command's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutAction {
    /// Retry the paused wave.
    Resume,
    /// End the rollout where it is; later waves never run.
    Cancel,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStatus {
    RollingOut,
    Healthy,
    Paused,
    Failed,
    RolledBack,
    Cancelled,
    Superseded,
    Removed,
}

impl RolloutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::RollingOut => "rolling-out",
            RolloutStatus::Healthy => "healthy",
            RolloutStatus::Paused => "paused",
            RolloutStatus::Failed => "failed",
            RolloutStatus::RolledBack => "rolled-back",
            RolloutStatus::Cancelled => "cancelled",
            RolloutStatus::Superseded => "superseded",
            RolloutStatus::Removed => "removed",
        }
    }

    /// Whether nothing more happens to the rollout (a healthy one may still be superseded).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RolloutStatus::RollingOut | RolloutStatus::Paused | RolloutStatus::Healthy
        )
    }
}

/// Where a wave stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaveState {
    Waiting,
    Deploying,
    Healthy,
    Failed,
    /// Never launched: the rollout ended before it.
    Cancelled,
}

/// Where a region of the rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionState {
    /// Its wave has not started.
    Waiting,
    Deploying,
    Healthy,
    Failed,
    /// Put back on an earlier deployment by the rollout's rollback.
    RolledBack,
    /// A later deployment of the app replaced this one there.
    Superseded,
    /// Never launched: the rollout ended before its wave.
    Cancelled,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    pub regions: Vec<RegionName>,
    pub state: WaveState,
    /// When it was launched (its latest attempt, after a resume), µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_us: Option<i64>,
    /// When its last zone became healthy (the gate then opens `min_healthy_secs` later), µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since_us: Option<i64>,
    /// When it ended: its gate opened, it failed, or the rollout ended before it, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_us: Option<i64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the rollout last saw of this deployment in one zone (never another deployment's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSeen {
    /// `deploying`, `healthy`, `degraded`, `failed`, ... as the region reports it; `gone` when
    /// the deployment's app left the zone.
    pub status: String,
    /// Since when, µs (the region's observation).
    pub since_us: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One step of a rollout, for its timeline (written by the RolloutArchivalAgent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub time_us: i64,
    /// `wave-started`, `wave-healthy`, `wave-failed`, `paused`, `resumed`, `cancelled`,
    /// `rolled-back`, `failed`, `healthy`, `superseded`, `removed`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    pub detail: serde_json::Value,
}

/// A rollout's whole state (every deployment has one: without a strategy, all its regions are
/// one wave), published by the RolloutAgent on `mot-rollouts` whenever it changes
/// (key: the deployment id) and rebuilt by it from there at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The accepted request (its strategy among it).
    pub request: DeploymentRequested,
    /// The request record's envelope id and time: each wave's launch events are derived from
    /// them, as the fan-out derives a deployment's without a strategy.
    pub request_event: Uuid,
    pub requested_us: i64,
    /// The request's trace context (`traceparent`), which each wave's launches continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The commands applied (their record ids), so a replayed command is not applied twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<Uuid>,
    pub status: RolloutStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub waves: Vec<Wave>,
    /// The wave under way (or the last one reached).
    pub current: usize,
    pub regions: BTreeMap<RegionName, RegionState>,
    /// This deployment's state per zone of the waves launched, keyed `<region>/<zone>`.
    pub zones: BTreeMap<String, ZoneSeen>,
    /// The deployments that put regions back, with the regions each took.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollbacks: Vec<RollbackMade>,
    /// When it last changed, µs: never earlier than before (the projection's write timestamp).
    pub updated_us: i64,
    /// The regions whose CDEvent (`service.deployed`, `upgraded`, `rolledback`) was published:
    /// once each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announced: Vec<RegionName>,
    /// Each zone (`<region>/<zone>`) seen healthy with this deployment, since when (µs). Kept
    /// when the deployment later leaves the zone (replaced, removed), dropped when the zone stops
    /// being healthy while running it: a region all of whose zones are here was healthy, however
    /// late its reports were read (see the RolloutAgent's announcements).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub healthy_zones: BTreeMap<String, i64>,
    /// The regions that removed the app while this deployment ran there, and those whose
    /// `service.removed` was published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RegionName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removal_announced: Vec<RegionName>,
    /// The time of its latest step, µs: each step is placed after the one before, so the
    /// timeline keeps their order even when two happen at once.
    #[serde(default)]
    pub last_step_us: i64,
    /// What this change did, for the timeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
}

/// A deployment a rollback made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackMade {
    pub deployment_id: Uuid,
    /// The earlier deployment it puts back.
    pub to: Uuid,
    pub regions: Vec<RegionName>,
}

impl Validate for Rollout {}

impl Rollout {
    /// The deployment's id.
    pub fn id(&self) -> Uuid {
        self.request.id
    }

    /// The strategy; `None` for a deployment without one, followed as one wave that the
    /// fan-out launched, with no minimum time and no deadline.
    pub fn strategy(&self) -> Option<&Strategy> {
        self.request.strategy.as_ref()
    }

    /// The zones of wave `i`, as `(region, zone)`.
    pub fn wave_zones(&self, i: usize) -> Vec<(RegionName, ZoneName)> {
        let Some(wave) = self.waves.get(i) else {
            return Vec::new();
        };
        self.request
            .targets
            .iter()
            .filter(|t| wave.regions.contains(&t.region))
            .flat_map(|t| t.zones.iter().map(|z| (t.region.clone(), z.clone())))
            .collect()
    }
}

/// `<region>/<zone>`: a zone's key in [`Rollout::zones`].
pub fn zone_key(region: &RegionName, zone: &ZoneName) -> String {
    format!("{region}/{zone}")
}

/// A deterministic id derived from `cause`: the same cause, replayed, names the same thing.
pub fn derived_id(cause: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(cause.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

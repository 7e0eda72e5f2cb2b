//! Deployments: the request a user makes, and the launch event each target region receives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::envelope::Validate;
use crate::topics::names::{AppName, RegionName, ZoneName};

/// What to run: everything of a request but where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub app: AppName,
    pub version: String,
    /// The image or package to run.
    pub artifact: String,
    pub instances_per_zone: u32,
    pub resources: Resources,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment values sealed by the API (see [`crate::secrets`]): opened only by the
    /// regional agents, for the scheduler.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, crate::secrets::Sealed>,
    /// What the region does when a zone drifts from this deployment.
    #[serde(default)]
    pub drift: DriftPolicy,
}

/// What a region does when a zone's scheduler no longer runs what was asked (the app deleted,
/// scaled or replaced by hand, or never launched because the scheduler was down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Put the deployment back, and say so on the timeline.
    #[default]
    Mend,
    /// Only say so on the timeline and in GET.
    Report,
}

impl DriftPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftPolicy::Mend => "mend",
            DriftPolicy::Report => "report",
        }
    }
}

/// Resources per instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpus: f64,
    pub mem_mb: u32,
}

/// How the platform checks an instance's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    pub interval_secs: u32,
}

/// One region of a request, with the zones to deploy to (all of the region's when the user
/// named none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub region: RegionName,
    pub zones: Vec<ZoneName>,
}

/// An accepted request, as the service layer logs it on `mot-deployment-requests` (key: id):
/// one record, so a request is accepted whole or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequested {
    pub id: Uuid,
    /// Where this deployment stands in its app's history: given out by the service layer when it
    /// accepts the request, greater than every earlier deployment of the app. Newer wins.
    #[serde(default)]
    pub generation: u64,
    pub spec: DeploymentSpec,
    pub targets: Vec<Target>,
    /// How to roll it out: waves of regions gated on its own health. Without one, every target
    /// region is launched at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::models::rollout::Strategy>,
    /// The deployment this one rolls back (it puts an earlier deployment's spec back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<Uuid>,
    /// The principal that asked for it (absent for one mot made itself, such as a rollout's
    /// automatic rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// What one region is asked to do (on `mot-deployment-launch-events-<env>-<region>`, key: the
/// app, so that all of an app's launches are in one partition, in the order they were accepted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequested {
    pub deployment_id: Uuid,
    /// The deployment's generation (see [`DeploymentRequested::generation`]).
    #[serde(default)]
    pub generation: u64,
    pub region: RegionName,
    pub zones: Vec<ZoneName>,
    pub spec: DeploymentSpec,
}

impl Validate for DeploymentRequested {
    fn validate(&self) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("targets must not be empty".into());
        }
        Ok(())
    }
}

impl Validate for LaunchRequested {
    fn validate(&self) -> Result<(), String> {
        if self.zones.is_empty() {
            return Err("zones must not be empty".into());
        }
        Ok(())
    }
}

/// How one zone's scheduler took a launch. Each outcome carries the time it happened, taken from
/// its cause (the scheduler's first acceptance, the launch request, the deployment that replaced
/// it), never from the clock of whoever reports it again: a replayed launch reports the same
/// outcome at the same time, so it lands on the same rows downstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase", deny_unknown_fields)]
pub enum ZoneOutcome {
    /// The scheduler accepted the app definition (or already had it from this deployment).
    Accepted {
        zone: ZoneName,
        /// The app's version on the scheduler.
        version: String,
        /// When the scheduler first accepted it, microseconds since the epoch.
        #[serde(default)]
        time_us: i64,
    },
    /// The scheduler refused it or could not be reached.
    Failed {
        zone: ZoneName,
        reason: String,
        /// The launch request's time.
        #[serde(default)]
        time_us: i64,
    },
    /// The app was removed from the zone (`DELETE /apps/{app}`) while this deployment ran there.
    Removed {
        zone: ZoneName,
        /// The removal.
        by: Uuid,
        /// Its generation.
        by_generation: u64,
        /// When the scheduler removed the app.
        time_us: i64,
    },
    /// A newer deployment of the app replaced this one in the zone (or was there first, for a
    /// late or replayed launch): the scheduler was not called.
    Superseded {
        zone: ZoneName,
        /// The deployment that replaced it.
        by: Uuid,
        /// Its generation.
        by_generation: u64,
        /// When the scheduler accepted the replacing deployment.
        time_us: i64,
    },
}

impl ZoneOutcome {
    /// The zone it happened in.
    pub fn zone(&self) -> &ZoneName {
        match self {
            ZoneOutcome::Accepted { zone, .. }
            | ZoneOutcome::Failed { zone, .. }
            | ZoneOutcome::Removed { zone, .. }
            | ZoneOutcome::Superseded { zone, .. } => zone,
        }
    }

    /// When it happened (0 in records written before outcomes carried their time).
    pub fn time_us(&self) -> i64 {
        match self {
            ZoneOutcome::Accepted { time_us, .. }
            | ZoneOutcome::Failed { time_us, .. }
            | ZoneOutcome::Removed { time_us, .. }
            | ZoneOutcome::Superseded { time_us, .. } => *time_us,
        }
    }
}

/// What a region's DeploymentOperationAgent did with a launch, or what became of an earlier
/// deployment when a later one replaced it (on `mot-deployment-complete-events`, key: deployment
/// id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentCompleted {
    pub deployment_id: Uuid,
    #[serde(default)]
    pub generation: u64,
    pub region: RegionName,
    pub app: AppName,
    pub version: String,
    pub zones: Vec<ZoneOutcome>,
}

impl Validate for DeploymentCompleted {}

/// A request to turn traffic on or off for a deployment's instances in one region (on
/// `mot-traffic-events-<env>-<region>`, key: the app, like its launches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficRequested {
    pub deployment_id: Uuid,
    pub region: RegionName,
    pub app: AppName,
    pub enabled: bool,
}

impl Validate for TrafficRequested {}

/// How one zone's service catalog took a traffic request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase", deny_unknown_fields)]
pub enum TrafficZoneOutcome {
    /// The deployment's instances there were switched.
    Switched { zone: ZoneName, instances: u64 },
    /// The catalog refused the change for good (not merely unavailable), with its answer.
    Refused { zone: ZoneName, reason: String },
}

/// What a region's TrafficAgent did with a traffic request (on `mot-deployment-complete-events`,
/// key: deployment id, event type `TrafficApplied.completed`), at the request's time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficApplied {
    pub deployment_id: Uuid,
    pub region: RegionName,
    pub app: AppName,
    pub enabled: bool,
    pub zones: Vec<TrafficZoneOutcome>,
}

impl Validate for TrafficApplied {}

/// An app to remove from regions (`DELETE /apps/{app}`), as the service layer logs it on
/// `mot-deployment-requests` (key: the app; event type `RemovalRequested.requested`). A removal
/// takes its place in the app's history like a deployment: it has a generation, and a later
/// deployment of the app, with a higher one, puts the app back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovalRequested {
    pub id: Uuid,
    pub generation: u64,
    pub app: AppName,
    pub targets: Vec<Target>,
}

impl Validate for RemovalRequested {}

/// What one region is asked to remove (on `mot-deployment-launch-events-<env>-<region>` with the
/// app's launches, key: the app, event type `RemovalLaunch.requested`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovalLaunch {
    pub removal_id: Uuid,
    pub generation: u64,
    pub app: AppName,
    pub region: RegionName,
    pub zones: Vec<ZoneName>,
}

impl Validate for RemovalLaunch {
    fn validate(&self) -> Result<(), String> {
        if self.zones.is_empty() {
            return Err("zones must not be empty".into());
        }
        Ok(())
    }
}

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
    pub spec: DeploymentSpec,
    pub targets: Vec<Target>,
}

/// What one region is asked to do (on `mot-deployment-launch-events-<env>-<region>`, key: id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequested {
    pub deployment_id: Uuid,
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

/// How one zone's scheduler took a launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase", deny_unknown_fields)]
pub enum ZoneOutcome {
    /// The scheduler accepted the app definition (or already had it from this deployment).
    Accepted {
        zone: ZoneName,
        /// The app's version on the scheduler.
        version: String,
    },
    /// The scheduler refused it or could not be reached.
    Failed { zone: ZoneName, reason: String },
}

/// What a region's DeploymentOperationAgent did with a launch (on
/// `mot-deployment-complete-events`, key: deployment id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentCompleted {
    pub deployment_id: Uuid,
    pub region: RegionName,
    pub app: AppName,
    pub version: String,
    pub zones: Vec<ZoneOutcome>,
}

impl Validate for DeploymentCompleted {}

/// A request to turn traffic on or off for a deployment's instances in one region (on
/// `mot-traffic-events-<env>-<region>`, key: deployment id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficRequested {
    pub deployment_id: Uuid,
    pub region: RegionName,
    pub app: AppName,
    pub enabled: bool,
}

impl Validate for TrafficRequested {}

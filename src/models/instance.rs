//! InstanceInfo: one running instance of an app, as mot persists and serves it.

use serde::{Deserialize, Serialize};

use super::envelope::Validate;
use crate::topics::names::{RegionName, ZoneName};

/// Health, worst check first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing,
    Warning,
    Critical,
}

/// One health check's latest result.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    pub name: String,
    pub status: Health,
    pub output: String,
}

/// One instance of an app in a zone. Key: `<region>/<zone>/<service>/<instance id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    pub region: RegionName,
    pub zone: ZoneName,
    /// The app's service name.
    pub service: String,
    /// The instance's id in the service catalog.
    pub instance_id: String,
    /// The deployment that launched it, when the scheduler labelled it.
    pub deployment_id: Option<String>,
    /// The node it runs on.
    pub node: String,
    /// Where it answers.
    pub host: String,
    pub port: u16,
    /// Service catalog tags, sorted.
    pub tags: Vec<String>,
    /// The worst of its checks (passing when it has none).
    pub health: Health,
    /// Each check's latest result, sorted by name.
    pub checks: Vec<CheckResult>,
    /// Whether traffic is routed to it (not in maintenance).
    pub traffic: bool,
}

impl InstanceInfo {
    /// `<region>/<zone>/<service>/<instance id>`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.region, self.zone, self.service, self.instance_id
        )
    }

    /// The group a snapshot of this service in this zone replaces: `<region>/<zone>/<service>`.
    pub fn group(&self) -> String {
        format!("{}/{}/{}", self.region, self.zone, self.service)
    }
}

impl Validate for InstanceInfo {}

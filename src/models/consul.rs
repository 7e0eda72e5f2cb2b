//! ConsulAppState: one service's instances in one zone, as Consul's health API reports them
//! (`GET /v1/health/service/<service>`), field names as Consul spells them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::envelope::Validate;
use crate::topics::names::ZoneName;

/// The full current state of one Consul service in one zone: every instance, with its node and
/// checks. A poller publishes one per service per change; its key is `<zone>/<service>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulAppState {
    /// The Consul service name (the app).
    pub service: String,
    /// The availability zone whose Consul reported it.
    pub zone: ZoneName,
    /// Entries of `/v1/health/service/<service>`.
    pub entries: Vec<ConsulServiceEntry>,
}

impl ConsulAppState {
    /// The record key: `<zone>/<service>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.zone, self.service)
    }
}

/// One instance: `{"Node": ..., "Service": ..., "Checks": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulServiceEntry {
    pub node: ConsulNode,
    pub service: ConsulService,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub checks: Vec<ConsulCheck>,
}

/// Consul writes `null` for an empty list or map (`"Meta": null`).
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The node an instance runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulNode {
    pub node: String,
    pub address: String,
    #[serde(default)]
    pub datacenter: Option<String>,
}

/// The service instance as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    /// Empty when the instance uses its node's address.
    #[serde(default)]
    pub address: String,
    pub port: u16,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub meta: BTreeMap<String, String>,
}

/// A health check result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    /// `passing`, `warning`, `critical` or `maintenance`.
    pub status: String,
    #[serde(default)]
    pub output: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

impl Validate for ConsulAppState {
    fn validate(&self) -> Result<(), String> {
        if self.service.is_empty() {
            return Err("service must not be empty".into());
        }
        let mut ids = BTreeSet::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.service.service != self.service {
                return Err(format!(
                    "entries[{i}].Service.Service is `{}`, expected `{}`",
                    entry.service.service, self.service
                ));
            }
            if entry.service.id.is_empty() {
                return Err(format!("entries[{i}].Service.ID must not be empty"));
            }
            if !ids.insert(&entry.service.id) {
                return Err(format!(
                    "entries[{i}].Service.ID `{}` appears twice",
                    entry.service.id
                ));
            }
            for (j, check) in entry.checks.iter().enumerate() {
                if !matches!(
                    check.status.as_str(),
                    "passing" | "warning" | "critical" | "maintenance"
                ) {
                    return Err(format!(
                        "entries[{i}].Checks[{j}].Status `{}` is not a Consul status",
                        check.status
                    ));
                }
            }
        }
        Ok(())
    }
}

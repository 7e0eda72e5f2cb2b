//! mot's client of a zone's Consul (the real HTTP API, v1.16): the watch the ConsulStateAgent
//! blocks on, the catalog and health reads, and maintenance mode, which the TrafficAgent sets.
//!
//! Zone scope: zones often share one Consul datacenter (a region's), telling their instances apart
//! by a service tag. A zone configured with `consul_tag` reads only the services carrying that
//! tag, on every endpoint (`filter` expressions, evaluated by Consul).
//!
//! Maintenance is an agent's business, not the catalog's: `PUT /v1/agent/service/maintenance/<id>`
//! is accepted only by the agent the service is registered on. The agent of an instance is found
//! from its node's address, at the scheme, port and path of the zone's Consul URL (every agent of a
//! datacenter serves its HTTP API alike).
//!
//! Every call carries the zone's ACL token (`consul_token`) when one is configured, and is counted
//! on `/metrics` (platform `consul`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::calls;
use super::http::{checked, PollError};
use crate::config::ZoneConfig;
use crate::models::consul::{ConsulNode, ConsulServiceEntry};

/// One zone's Consul, as the zone's configuration names it.
#[derive(Debug, Clone)]
pub struct Consul {
    base: String,
    token: Option<crate::config::Secret>,
    tag: Option<String>,
}

/// A check as a watch reports it, without its raft indexes: what the watch compares to tell
/// whether anything in the zone changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WatchedCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub status: String,
    #[serde(default)]
    pub output: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub service_tags: Option<Vec<String>>,
}

/// What a watch returned: Consul's index for it (`X-Consul-Index`) and the zone's checks, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub index: Option<u64>,
    pub checks: Vec<WatchedCheck>,
}

/// A string as a literal of Consul's filter language.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Consul {
    /// The Consul of `zone`.
    pub fn of(zone: &ZoneConfig) -> Self {
        Self {
            base: zone.consul.trim_end_matches('/').to_owned(),
            token: zone.consul_token.clone(),
            tag: zone.consul_tag.clone(),
        }
    }

    fn with_token(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.header("X-Consul-Token", token.expose()),
            None => request,
        }
    }

    /// `GET path` scoped to the zone (`selector` is where the endpoint keeps a service's tags).
    async fn get(
        &self,
        http: &reqwest::Client,
        operation: &'static str,
        path: &str,
        selector: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, PollError> {
        let mut request = http.get(format!("{}{path}", self.base)).query(query);
        if let Some(tag) = &self.tag {
            request = request.query(&[("filter", format!("{} in {selector}", quoted(tag)))]);
        }
        let request = self.with_token(request);
        calls::timed("consul", operation, async {
            let answer = checked(request.send().await?).await?;
            // A partial answer taken for the whole would delete every instance it hid.
            if answer
                .headers()
                .get("X-Consul-Results-Filtered-By-ACLs")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
            {
                return Err(PollError::Withheld(format!(
                    "consul's ACLs hid results of {path} from mot's token; it needs service:read \
                     and node:read on everything in the zone"
                )));
            }
            Ok(answer)
        })
        .await
    }

    /// Every check of the zone (`/v1/health/state/any`). With `index`, a blocking query: Consul
    /// holds it until its index passes `index` or `wait` (e.g. `5s`) ends. The index moves with
    /// any change in the datacenter, not only the zone's, so callers compare the checks too.
    pub async fn watch_checks(
        &self,
        http: &reqwest::Client,
        index: Option<u64>,
        wait: &str,
    ) -> Result<Watched, PollError> {
        let query: Vec<(&str, String)> = match index {
            Some(index) => vec![("index", index.to_string()), ("wait", wait.to_owned())],
            None => Vec::new(),
        };
        let answer = self
            .get(
                http,
                "watch /v1/health/state/any",
                "/v1/health/state/any",
                "ServiceTags",
                &query,
            )
            .await?;
        // Consul's rule: an index of 0 is never blocked on; a client resets it to 1.
        let index = answer
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|i| i.max(1));
        let mut checks: Vec<WatchedCheck> = answer.json().await.map_err(PollError::from)?;
        checks.sort();
        Ok(Watched { index, checks })
    }

    /// The zone's services and their tags (`/v1/catalog/services`).
    pub async fn services(
        &self,
        http: &reqwest::Client,
    ) -> Result<BTreeMap<String, Vec<String>>, PollError> {
        self.get(
            http,
            "GET /v1/catalog/services",
            "/v1/catalog/services",
            "ServiceTags",
            &[],
        )
        .await?
        .json()
        .await
        .map_err(PollError::from)
    }

    /// The zone's instances of `service`, with their nodes and checks (`/v1/health/service/<s>`).
    pub async fn health(
        &self,
        http: &reqwest::Client,
        service: &str,
    ) -> Result<Vec<ConsulServiceEntry>, PollError> {
        self.get(
            http,
            "GET /v1/health/service/{service}",
            &format!("/v1/health/service/{service}"),
            "Service.Tags",
            &[],
        )
        .await?
        .json()
        .await
        .map_err(PollError::from)
    }

    /// The HTTP API of the agent on `node`: the zone's Consul URL with the node's address.
    pub fn agent(&self, node: &ConsulNode) -> Result<String, String> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| format!("consul URL `{}`: {e}", self.base))?;
        url.set_host(Some(&node.address))
            .map_err(|e| format!("node {} address `{}`: {e}", node.node, node.address))?;
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    /// Turns maintenance mode on (traffic off, with `reason`) or off for one instance, through the
    /// agent it is registered on. Consul's answer is the caller's to judge.
    pub async fn set_maintenance(
        &self,
        http: &reqwest::Client,
        entry: &ConsulServiceEntry,
        enable: bool,
        reason: &str,
    ) -> Result<reqwest::Response, MaintenanceError> {
        let agent = self.agent(&entry.node).map_err(MaintenanceError::Address)?;
        let request = self.with_token(
            http.put(format!(
                "{agent}/v1/agent/service/maintenance/{}",
                entry.service.id
            ))
            .query(&[
                ("enable", enable.to_string()),
                ("reason", reason.to_owned()),
            ]),
        );
        calls::timed(
            "consul",
            "PUT /v1/agent/service/maintenance/{id}",
            request.send(),
        )
        .await
        .map_err(MaintenanceError::Http)
    }
}

/// Why a maintenance call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The instance's agent could not be addressed (a node address that is no host).
    #[error("{0}")]
    Address(String),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

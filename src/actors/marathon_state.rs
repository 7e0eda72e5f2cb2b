//! MarathonStateAgent (regional poller): polls each zone's Marathon (`GET /v2/apps?embed=apps.tasks`)
//! and publishes a MarathonAppState per app and zone to `mot-marathon-app-state` when it changed
//! (desired instances, tasks with host, ports and health results); an app gone from a zone is
//! published deleted with its last state.

use std::time::Duration;

use crate::config::ZoneConfig;
use crate::models::state::MarathonAppState;
use crate::platform::marathon::MarathonClient;
use crate::topics::catalog::{self, TopicSpec};
use crate::topics::names::RegionName;

use super::poller::{PollError, ZoneReader, ZoneSnapshots};

/// The agent.
pub type MarathonStateAgent = ZoneSnapshots<MarathonApps>;

/// Reads one zone's Marathon apps.
pub struct MarathonApps;

impl ZoneReader for MarathonApps {
    const NAME: &'static str = "MarathonStateAgent";
    const PAYLOAD: &'static str = "MarathonAppState";
    const TOPIC: TopicSpec = catalog::MARATHON_APP_STATE;
    const INTERVAL: Duration = Duration::from_millis(1000);
    type State = MarathonAppState;

    fn key(state: &MarathonAppState) -> String {
        state.key()
    }

    fn zone_group(state: &MarathonAppState) -> String {
        format!("{}/{}", state.region, state.zone)
    }

    async fn read(
        http: &reqwest::Client,
        region: &RegionName,
        zone: &ZoneConfig,
    ) -> Result<Vec<MarathonAppState>, PollError> {
        let apps = MarathonClient::new(&zone.marathon, http.clone())
            .apps()
            .await
            .map_err(|e| {
                if e.transient {
                    PollError::Unreachable(e.message)
                } else {
                    PollError::BadAnswer(e.message)
                }
            })?;
        Ok(apps
            .into_iter()
            .map(|mut app| {
                app.tasks.sort_by(|a, b| a.id.cmp(&b.id));
                // What runs is published without its env values: a secret a deployment gave the
                // scheduler stays there (which variables are set is kept).
                for value in app.env.values_mut() {
                    *value = crate::secrets::REDACTED.to_owned();
                }
                MarathonAppState {
                    region: region.clone(),
                    zone: zone.name.clone(),
                    app,
                }
            })
            .collect())
    }
}

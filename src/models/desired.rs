//! What a region has asked of each zone's scheduler, app by app: the newest deployment applied
//! there and the recent history before it. The DeploymentOperationAgent keeps it on the compacted
//! topic `mot-desired-state` of the region's own cluster (key `<region>/<zone>/<app>`) and
//! rebuilds it from there at start, so what it decides never rests on memory alone.
//!
//! The rules of the truth live here, as plain functions ([`decide`], [`ZoneDesired::applied`]):
//!
//! - **newer wins**: a launch older than one already applied in the zone is superseded, and the
//!   scheduler is not called;
//! - **replays change nothing**: a launch already applied reports what it reported the first
//!   time, at the same time; a launch superseded since reports the supersession the successor's
//!   launch reported, at its time.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::deployment::{LaunchRequested, ZoneOutcome};
use super::envelope::Validate;
use crate::topics::names::{AppName, RegionName, ZoneName};

/// Deployments remembered per app and zone. Beyond this a very old launch replayed is decided by
/// generation alone (still never applied over a newer one), not by what it reported.
pub const HISTORY: usize = 32;

/// One deployment the scheduler accepted in a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    pub deployment_id: Uuid,
    pub generation: u64,
    /// When the scheduler first accepted it, microseconds since the epoch.
    pub accepted_at_us: i64,
    /// The app's version on the scheduler then.
    pub scheduler_version: String,
    /// The version of the app the deployment asked for.
    pub app_version: String,
}

/// One app in one zone: what the region keeps it at, and how it got there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneDesired {
    pub region: RegionName,
    pub zone: ZoneName,
    pub app: AppName,
    /// The launch of the newest deployment applied: what the zone should run.
    pub launch: LaunchRequested,
    /// The deployments applied, oldest first (by generation), at most [`HISTORY`].
    pub history: Vec<Applied>,
}

impl ZoneDesired {
    /// `<region>/<zone>/<app>`.
    pub fn key(&self) -> String {
        key(&self.region, &self.zone, &self.app)
    }

    /// The newest deployment applied.
    pub fn newest(&self) -> Option<&Applied> {
        self.history.last()
    }

    /// The deployment applied just before `deployment` in this zone: the one it replaced.
    pub fn predecessor(&self, deployment: Uuid) -> Option<&Applied> {
        let at = self
            .history
            .iter()
            .position(|a| a.deployment_id == deployment)?;
        at.checked_sub(1).map(|i| &self.history[i])
    }

    /// The state after the scheduler accepted `launch` in this zone, `before` being what was
    /// there, if anything.
    pub fn applied(
        before: Option<&ZoneDesired>,
        region: &RegionName,
        zone: &ZoneName,
        launch: &LaunchRequested,
        accepted: Applied,
    ) -> ZoneDesired {
        let mut history = before.map(|d| d.history.clone()).unwrap_or_default();
        history.retain(|a| a.deployment_id != accepted.deployment_id);
        history.push(accepted);
        history.sort_by_key(|a| a.generation);
        if history.len() > HISTORY {
            history.drain(..history.len() - HISTORY);
        }
        ZoneDesired {
            region: region.clone(),
            zone: zone.clone(),
            app: launch.spec.app.clone(),
            launch: launch.clone(),
            history,
        }
    }
}

impl Validate for ZoneDesired {
    fn validate(&self) -> Result<(), String> {
        if self.history.is_empty() {
            return Err("history must not be empty".into());
        }
        Ok(())
    }
}

/// `<region>/<zone>/<app>`.
pub fn key(region: &RegionName, zone: &ZoneName, app: &AppName) -> String {
    format!("{region}/{zone}/{app}")
}

/// What to do with a launch in one zone, given what was applied there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Report this and call nothing: the launch was decided before (a replay), or a newer
    /// deployment is already applied.
    Report(ZoneOutcome),
    /// Put the app on the scheduler.
    Apply,
}

/// The rule of [`Decision`]: a launch with a successor in the zone's history (a deployment of a
/// higher generation applied there) is superseded by that successor, at the time the successor
/// was accepted, which is what the successor's own launch reported for it; a launch already
/// applied and still the newest reports its acceptance again; anything else is applied.
pub fn decide(
    desired: Option<&ZoneDesired>,
    zone: &ZoneName,
    launch: &LaunchRequested,
) -> Decision {
    let Some(desired) = desired else {
        return Decision::Apply;
    };
    if let Some(successor) = desired
        .history
        .iter()
        .find(|a| a.generation > launch.generation && a.deployment_id != launch.deployment_id)
    {
        return Decision::Report(ZoneOutcome::Superseded {
            zone: zone.clone(),
            by: successor.deployment_id,
            by_generation: successor.generation,
            time_us: successor.accepted_at_us,
        });
    }
    match desired.newest() {
        Some(newest) if newest.deployment_id == launch.deployment_id => {
            Decision::Report(ZoneOutcome::Accepted {
                zone: zone.clone(),
                version: newest.scheduler_version.clone(),
                time_us: newest.accepted_at_us,
            })
        }
        _ => Decision::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::deployment::{DeploymentSpec, Resources};

    fn region() -> RegionName {
        RegionName::parse("test-us-east-1").unwrap()
    }

    fn zone() -> ZoneName {
        ZoneName::parse("a").unwrap()
    }

    fn launch(n: u64) -> LaunchRequested {
        LaunchRequested {
            deployment_id: Uuid::from_u128(n as u128),
            generation: n,
            region: region(),
            zones: vec![zone()],
            spec: DeploymentSpec {
                app: AppName::parse("checkout-web").unwrap(),
                version: format!("1.0.{n}"),
                artifact: "registry.example.com/checkout-web".into(),
                instances_per_zone: 1,
                resources: Resources {
                    cpus: 0.1,
                    mem_mb: 64,
                },
                ports: vec![],
                health_check: None,
                env: Default::default(),
            },
        }
    }

    fn accepted(n: u64) -> Applied {
        Applied {
            deployment_id: Uuid::from_u128(n as u128),
            generation: n,
            accepted_at_us: 1000 * n as i64,
            scheduler_version: format!("v{n}"),
            app_version: format!("1.0.{n}"),
        }
    }

    /// Applies launches 1..=n in order, as the agent would.
    fn after(ns: &[u64]) -> Option<ZoneDesired> {
        let mut desired = None;
        for n in ns {
            desired = Some(ZoneDesired::applied(
                desired.as_ref(),
                &region(),
                &zone(),
                &launch(*n),
                accepted(*n),
            ));
        }
        desired
    }

    #[test]
    fn a_first_launch_and_a_newer_one_are_applied() {
        assert_eq!(decide(None, &zone(), &launch(1)), Decision::Apply);
        assert_eq!(
            decide(after(&[1]).as_ref(), &zone(), &launch(2)),
            Decision::Apply
        );
    }

    #[test]
    fn an_older_launch_never_replaces_a_newer_one() {
        let desired = after(&[1, 5]);
        assert_eq!(
            decide(desired.as_ref(), &zone(), &launch(3)),
            Decision::Report(ZoneOutcome::Superseded {
                zone: zone(),
                by: Uuid::from_u128(5),
                by_generation: 5,
                time_us: 5000,
            })
        );
    }

    #[test]
    fn a_replayed_launch_reports_what_it_reported_the_first_time() {
        let desired = after(&[1, 2, 3]);
        assert_eq!(
            decide(desired.as_ref(), &zone(), &launch(3)),
            Decision::Report(ZoneOutcome::Accepted {
                zone: zone(),
                version: "v3".into(),
                time_us: 3000,
            })
        );
        // Superseded since: the successor's acceptance, which is what launch 2 reported for 1.
        assert_eq!(
            decide(desired.as_ref(), &zone(), &launch(1)),
            Decision::Report(ZoneOutcome::Superseded {
                zone: zone(),
                by: Uuid::from_u128(2),
                by_generation: 2,
                time_us: 2000,
            })
        );
    }

    #[test]
    fn applying_keeps_the_deployment_replaced_and_a_bounded_history() {
        let desired = after(&[1, 2]).unwrap();
        assert_eq!(desired.predecessor(Uuid::from_u128(2)), Some(&accepted(1)));
        assert_eq!(desired.predecessor(Uuid::from_u128(1)), None);
        assert_eq!(desired.launch.generation, 2);
        assert_eq!(desired.key(), "test-us-east-1/a/checkout-web");
        let many: Vec<u64> = (1..=HISTORY as u64 + 5).collect();
        let long = after(&many).unwrap();
        assert_eq!(long.history.len(), HISTORY);
        assert_eq!(long.newest().unwrap().generation, HISTORY as u64 + 5);
    }
}

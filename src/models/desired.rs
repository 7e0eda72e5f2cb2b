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
use crate::platform::marathon::{App, LABEL_APP_VERSION, LABEL_DEPLOYMENT_ID, LABEL_GENERATION};
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
    /// The launch of the newest deployment asked for in this zone: what the zone should run.
    /// Usually the newest applied; a newer one whose scheduler refused it or could not be
    /// reached, until mended.
    pub launch: LaunchRequested,
    /// When the operation agent took `launch` (accepted, or failed), microseconds.
    #[serde(default)]
    pub asked_at_us: i64,
    /// The deployments applied, oldest first (by generation), at most [`HISTORY`].
    pub history: Vec<Applied>,
    /// The app's last removal from the zone; in force while newer than `launch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<RemovalMark>,
}

/// A removal of the app from a zone (`DELETE /apps/{app}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovalMark {
    pub removal_id: Uuid,
    pub generation: u64,
    /// When the scheduler removed the app, microseconds.
    pub removed_at_us: i64,
    /// The deployments it removed from the zone (what a replay reports again).
    pub removed: Vec<(Uuid, u64)>,
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

    /// The removal in force: the app was removed after the newest launch asked for.
    pub fn removed(&self) -> Option<&RemovalMark> {
        self.removal
            .as_ref()
            .filter(|r| r.generation > self.launch.generation)
    }

    /// The generation of the newest thing asked of the zone, launch or removal.
    pub fn asked_generation(&self) -> u64 {
        self.removed()
            .map_or(self.launch.generation, |r| r.generation)
    }

    /// The deployments a removal would remove from the zone now: the one asked for last, and the
    /// one applied last if that differs (a newer launch that failed there).
    pub fn to_remove(&self) -> Vec<(Uuid, u64)> {
        let mut ids = vec![(self.launch.deployment_id, self.launch.generation)];
        if let Some(newest) = self
            .newest()
            .filter(|n| n.deployment_id != self.launch.deployment_id)
        {
            ids.push((newest.deployment_id, newest.generation));
        }
        ids
    }

    /// This state with `removal` in force.
    pub fn with_removal(&self, removal: RemovalMark) -> ZoneDesired {
        ZoneDesired {
            removal: Some(removal),
            ..self.clone()
        }
    }

    /// The deployment applied just before `deployment` in this zone: the one it replaced.
    pub fn predecessor(&self, deployment: Uuid) -> Option<&Applied> {
        let at = self
            .history
            .iter()
            .position(|a| a.deployment_id == deployment)?;
        at.checked_sub(1).map(|i| &self.history[i])
    }

    /// The state after `launch` was asked for in this zone at `time_us` but not accepted (its
    /// scheduler refused it or was down): what to mend to. `None` when something at least as
    /// new was asked for already.
    pub fn asked(
        before: Option<&ZoneDesired>,
        region: &RegionName,
        zone: &ZoneName,
        launch: &LaunchRequested,
        time_us: i64,
    ) -> Option<ZoneDesired> {
        if before.is_some_and(|b| b.asked_generation() >= launch.generation) {
            return None;
        }
        Some(ZoneDesired {
            region: region.clone(),
            zone: zone.clone(),
            app: launch.spec.app.clone(),
            launch: launch.clone(),
            asked_at_us: time_us,
            history: before.map(|b| b.history.clone()).unwrap_or_default(),
            removal: before.and_then(|b| b.removal.clone()),
        })
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
        let asked_at_us = accepted.accepted_at_us;
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
            asked_at_us,
            history,
            removal: before.and_then(|b| b.removal.clone()),
        }
    }
}

impl Validate for ZoneDesired {}

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

/// The rule of [`Decision`]: a launch older than a removal of the app from the zone is reported
/// removed, as the removal reported it; a launch with a successor in the zone's history (a deployment of a
/// higher generation applied there) is superseded by that successor, at the time the successor
/// was accepted, which is what the successor's own launch reported for it; so is one older than
/// the launch last asked for there (accepted or not); a launch already applied and still the
/// newest reports its acceptance again; anything else is applied.
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
    if let Some(removal) = desired
        .removal
        .as_ref()
        .filter(|r| r.generation > launch.generation)
    {
        // What the removal reported for it, if it ran here: removed, at the removal's time.
        return Decision::Report(ZoneOutcome::Removed {
            zone: zone.clone(),
            by: removal.removal_id,
            by_generation: removal.generation,
            time_us: removal.removed_at_us,
        });
    }
    let asked = &desired.launch;
    if asked.generation > launch.generation && asked.deployment_id != launch.deployment_id {
        return Decision::Report(ZoneOutcome::Superseded {
            zone: zone.clone(),
            by: asked.deployment_id,
            by_generation: asked.generation,
            time_us: desired.asked_at_us,
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

/// What differs between what a zone's scheduler runs (`observed`: the app, or `None` when the
/// scheduler has no such app) and what `desired` asks of it, in words; `None` when nothing does,
/// or when the scheduler runs a *newer* deployment of the app than `desired` (the desired state
/// has not caught up with it yet: never mend a newer deployment back to an older one).
pub fn difference(desired: &LaunchRequested, observed: Option<&App>) -> Option<String> {
    let Some(app) = observed else {
        return Some("the app is missing from the scheduler".into());
    };
    let label = |name: &str| app.labels.get(name).map(String::as_str);
    if label(LABEL_GENERATION)
        .and_then(|g| g.parse::<u64>().ok())
        .is_some_and(|g| g > desired.generation)
    {
        return None;
    }
    let mut what = Vec::new();
    let id = desired.deployment_id.to_string();
    match label(LABEL_DEPLOYMENT_ID) {
        Some(other) if other != id => what.push(format!("it runs deployment {other}")),
        None => what.push("it runs an app mot did not put there".into()),
        Some(_) => {}
    }
    let spec = &desired.spec;
    if app.instances != spec.instances_per_zone {
        what.push(format!(
            "instances {} instead of {}",
            app.instances, spec.instances_per_zone
        ));
    }
    let image = app.container.as_ref().map(|c| c.docker.image.as_str());
    if image != Some(spec.artifact.as_str()) {
        what.push(format!(
            "image {} instead of {}",
            image.unwrap_or("none"),
            spec.artifact
        ));
    }
    if label(LABEL_APP_VERSION) != Some(spec.version.as_str()) {
        what.push(format!(
            "version {} instead of {}",
            label(LABEL_APP_VERSION).unwrap_or("none"),
            spec.version
        ));
    }
    (!what.is_empty()).then(|| what.join("; "))
}

/// [`difference`] for a zone's whole desired state: with a removal in force, the zone should not
/// run the app at all (unless a newer deployment of it runs there).
pub fn drift_of(desired: &ZoneDesired, observed: Option<&App>) -> Option<String> {
    let Some(removal) = desired.removed() else {
        return difference(&desired.launch, observed);
    };
    let app = observed?;
    let generation = app
        .labels
        .get(LABEL_GENERATION)
        .and_then(|g| g.parse::<u64>().ok());
    match generation {
        Some(g) if g > removal.generation => None,
        _ => Some("the app runs though it was removed".into()),
    }
}

/// A zone found drifted from its deployment, and what became of it (on
/// `mot-deployment-complete-events`, key: deployment id, event type `DeploymentDrift.completed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftReport {
    pub deployment_id: Uuid,
    pub generation: u64,
    pub region: RegionName,
    pub zone: ZoneName,
    pub app: AppName,
    pub event: DriftEvent,
}

impl Validate for DriftReport {}

/// One step of a drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DriftEvent {
    /// The zone no longer runs what was asked; `what` says how.
    Detected { what: String, time_us: i64 },
    /// mot put the deployment back and the scheduler runs it again.
    Mended { what: String, time_us: i64 },
    /// The drift went away without mot (`"drift": "report"`, set right by hand).
    Resolved { what: String, time_us: i64 },
}

impl DriftEvent {
    /// When it happened.
    pub fn time_us(&self) -> i64 {
        match self {
            DriftEvent::Detected { time_us, .. }
            | DriftEvent::Mended { time_us, .. }
            | DriftEvent::Resolved { time_us, .. } => *time_us,
        }
    }

    /// Its kind on the timeline.
    pub fn kind(&self) -> &'static str {
        match self {
            DriftEvent::Detected { .. } => "drift-detected",
            DriftEvent::Mended { .. } => "mended",
            DriftEvent::Resolved { .. } => "drift-resolved",
        }
    }

    /// What differed.
    pub fn what(&self) -> &str {
        match self {
            DriftEvent::Detected { what, .. }
            | DriftEvent::Mended { what, .. }
            | DriftEvent::Resolved { what, .. } => what,
        }
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
                secret_env: Default::default(),
                drift: Default::default(),
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

    fn app_of(launch: &LaunchRequested) -> App {
        crate::actors::deployment_operation::marathon_app(launch, &Default::default()).unwrap()
    }

    #[test]
    fn a_launch_gives_the_scheduler_its_secrets_opened_and_fails_without_the_key() {
        use crate::secrets::{Keyring, SecretError};
        let keyring = Keyring::parse(&Keyring::new_entry("k").unwrap()).unwrap();
        let mut asked = launch(3);
        asked.spec.secret_env.insert(
            "DB_PASSWORD".into(),
            keyring.seal("DB_PASSWORD", "hunter2").unwrap(),
        );
        let app = crate::actors::deployment_operation::marathon_app(&asked, &keyring).unwrap();
        assert_eq!(app.env["DB_PASSWORD"], "hunter2");
        assert_eq!(
            crate::actors::deployment_operation::marathon_app(&asked, &Keyring::default()).err(),
            Some(SecretError::NoKey)
        );
        // A secret does not make drift: what runs is compared without env.
        assert_eq!(difference(&asked, Some(&app)), None);
    }

    #[test]
    fn a_zone_running_what_was_asked_has_no_drift() {
        let asked = launch(3);
        assert_eq!(difference(&asked, Some(&app_of(&asked))), None);
    }

    #[test]
    fn each_drift_is_named() {
        let asked = launch(3);
        assert_eq!(
            difference(&asked, None).as_deref(),
            Some("the app is missing from the scheduler")
        );
        let mut scaled = app_of(&asked);
        scaled.instances = 5;
        assert_eq!(
            difference(&asked, Some(&scaled)).as_deref(),
            Some("instances 5 instead of 1")
        );
        let older = app_of(&launch(2));
        let what = difference(&asked, Some(&older)).unwrap();
        assert!(
            what.starts_with("it runs deployment 00000000-0000-0000-0000-000000000002"),
            "{what}"
        );
        assert!(what.contains("version 1.0.2 instead of 1.0.3"), "{what}");
        let mut by_hand = app_of(&asked);
        by_hand.labels.clear();
        by_hand.container = None;
        let what = difference(&asked, Some(&by_hand)).unwrap();
        assert!(
            what.contains("mot did not put there") && what.contains("image none"),
            "{what}"
        );
    }

    #[test]
    fn a_newer_deployment_on_the_scheduler_is_never_drift() {
        assert_eq!(difference(&launch(3), Some(&app_of(&launch(4)))), None);
    }

    #[test]
    fn a_failed_launch_is_what_the_zone_should_run_until_something_newer() {
        let before = after(&[1]);
        let asked =
            ZoneDesired::asked(before.as_ref(), &region(), &zone(), &launch(2), 77).unwrap();
        assert_eq!(asked.launch.generation, 2);
        assert_eq!(
            asked.history,
            before.as_ref().unwrap().history,
            "not applied"
        );
        assert_eq!(
            ZoneDesired::asked(Some(&asked), &region(), &zone(), &launch(2), 99),
            None
        );
        // A late launch older than what was asked is superseded by it, at the time it was asked.
        assert_eq!(
            decide(Some(&asked), &zone(), &launch(1)),
            Decision::Report(ZoneOutcome::Superseded {
                zone: zone(),
                by: Uuid::from_u128(2),
                by_generation: 2,
                time_us: 77,
            })
        );
        // Replayed, the failed launch is tried again.
        assert_eq!(decide(Some(&asked), &zone(), &launch(2)), Decision::Apply);
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

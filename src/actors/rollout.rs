//! RolloutAgent (service layer, central): runs each deployment that has a strategy, wave by wave.
//!
//! ```text
//!   mot-deployment-requests ─┐   (requests with a strategy, later requests and removals of
//!                            │    the app, resume / cancel commands)
//!   mot-deployment-state-change.<region> (every region, on central) ─┤ -> RolloutAgent
//!   mot-deployment-complete-events.<region> (every region, on central)┘      │
//!        launch events of a wave  <───────────────────────────────────────────┤
//!        a rollback deployment on mot-deployment-requests  <──────────────────┤
//!        the rollout's state on mot-rollouts (compacted)  <───────────────────┘
//! ```
//!
//! A wave is launched once every zone of every region of the wave before it reported *this*
//! deployment healthy (zone states are keyed by deployment id: an older deployment's tasks never
//! count), continuously for `min_healthy_secs`. A wave not healthy by `deadline_secs`, or with a
//! zone that failed, fails: the rollout pauses (resume retries the wave, cancel ends it) or rolls
//! every region it reached back to the app's previous healthy deployment there.
//!
//! The rollout's state is published whole on `mot-rollouts` with the launches it decides, and
//! rebuilt from there at start; records replayed after a crash meet the state they already
//! changed, so a decision is made once. The time of each step is taken from its cause (the
//! healthy observation plus `min_healthy_secs`, the wave's start plus its deadline), not from the
//! clock of whoever makes it.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use crate::models::deployment::{
    DeploymentCompleted, DeploymentRequested, DriftPolicy, RemovalRequested, ZoneOutcome,
};
use crate::models::desired::{DriftEvent, DriftReport};
use crate::models::envelope::{now_us, Envelope, Kind, HEADER_EVENT_TYPE, HEADER_TRACEPARENT};
use crate::models::rollout::{
    derived_id, zone_key, OnFailure, RegionState, RollbackMade, Rollout, RolloutAction,
    RolloutCommand, RolloutStatus, Transition, WaveState, ZoneSeen,
};
use crate::models::state::{DeploymentZoneState, HEARTBEAT_PREFIX};
use crate::store::projections::Projections;
use crate::store::requests::Requests;
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::deployment_fan_out::launch_events;
use super::pipeline::{
    self, Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source,
};

/// How often gates and deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// The agent.
pub struct RolloutAgent {
    central: RegionName,
    rollouts: HashMap<Uuid, Rollout>,
    output: TopicName,
    requests_topic: TopicName,
    projections: Projections,
    requests: Requests,
    cdevents: TopicName,
    /// Rollouts whose current wave's launches are sent again on the first tick after a start
    /// (see `build`).
    resend: Vec<Uuid>,
    /// What the regions said of deployments whose request this agent has not read yet.
    early: Early,
}

/// One thing a region said of a deployment in one zone.
#[derive(Debug, Clone)]
struct Seen {
    region: RegionName,
    key: String,
    status: String,
    at: i64,
    reason: Option<String>,
}

impl Seen {
    fn apply(self, r: &mut Rollout) {
        if self.status == "removed" && !r.removed.contains(&self.region) {
            r.removed.push(self.region.clone());
        }
        let (key, status, at) = (self.key.clone(), self.status.clone(), self.at);
        if !observe(r, self.key, &self.status, self.at, self.reason) {
            return;
        }
        match status.as_str() {
            "healthy" => {
                r.healthy_zones.entry(key).or_insert(at);
            }
            // The deployment left the zone: what it reached there stands.
            "gone" | "removed" | "superseded" => {}
            _ => {
                r.healthy_zones.remove(&key);
            }
        }
    }
}

/// The launched regions all of whose zones were seen healthy with `r`'s deployment, and since
/// when (µs).
fn reached_healthy(r: &Rollout) -> Vec<(RegionName, i64)> {
    let mut reached = Vec::new();
    for (i, wave) in r.waves.iter().enumerate() {
        if wave.started_us.is_none() {
            continue;
        }
        for region in &wave.regions {
            let since: Option<Vec<i64>> = r
                .wave_zones(i)
                .iter()
                .filter(|(reg, _)| reg == region)
                .map(|(reg, zone)| r.healthy_zones.get(&zone_key(reg, zone)).copied())
                .collect();
            if let Some(at) = since.and_then(|s| s.into_iter().max()) {
                reached.push((region.clone(), at));
            }
        }
    }
    reached
}

/// Observations of deployments no rollout is known for yet. The request and the zones' reports
/// come on different topics, and a consumer reading them from behind (a first start, a restart
/// after a crash, a lag) may take a zone's report before the request that launched it: dropped,
/// the zone would never count as healthy (a healthy zone says so once). They are held here, the
/// newest [`EARLY_DEPLOYMENTS`] deployments' worth, and applied when the request comes.
#[derive(Debug, Default)]
struct Early {
    seen: HashMap<Uuid, Vec<Seen>>,
    order: std::collections::VecDeque<Uuid>,
}

/// How many deployments' early observations are held.
const EARLY_DEPLOYMENTS: usize = 4096;

impl Early {
    fn hold(&mut self, deployment: Uuid, seen: Seen) {
        let list = self.seen.entry(deployment).or_insert_with(|| {
            self.order.push_back(deployment);
            Vec::new()
        });
        list.push(seen);
        while self.order.len() > EARLY_DEPLOYMENTS {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
    }

    fn take(&mut self, deployment: Uuid) -> Vec<Seen> {
        let seen = self.seen.remove(&deployment).unwrap_or_default();
        if !seen.is_empty() {
            self.order.retain(|d| *d != deployment);
        }
        seen
    }
}

/// What a step of the state machine asks the agent to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    /// Send wave `i`'s launch events.
    Launch(usize),
    /// Put every region reached back (at this time).
    Rollback(i64),
}

fn transition(
    r: &mut Rollout,
    time_us: i64,
    kind: &str,
    wave: Option<usize>,
    detail: serde_json::Value,
) {
    let time_us = time_us.max(r.last_step_us + 1);
    r.last_step_us = time_us;
    r.transitions.push(Transition {
        time_us,
        kind: kind.into(),
        wave,
        detail,
    });
}

/// Starts wave `i` at `at`.
fn start_wave(r: &mut Rollout, i: usize, at: i64) -> Effect {
    let wave = &mut r.waves[i];
    wave.state = WaveState::Deploying;
    wave.started_us = Some(at);
    wave.healthy_since_us = None;
    wave.ended_us = None;
    wave.reason = None;
    let regions = wave.regions.clone();
    r.current = i;
    transition(
        r,
        at,
        "wave-started",
        Some(i),
        serde_json::json!({ "wave": i, "regions": regions }),
    );
    Effect::Launch(i)
}

/// Ends the rollout before its later waves: those never run.
fn cancel_later_waves(r: &mut Rollout, at: i64) {
    for wave in r.waves.iter_mut().skip(r.current) {
        if wave.state == WaveState::Waiting {
            wave.state = WaveState::Cancelled;
            wave.ended_us = Some(at);
        }
    }
}

/// Fails the current wave at `at` for `reason`.
fn fail_wave(r: &mut Rollout, at: i64, reason: String) -> Vec<Effect> {
    let i = r.current;
    let wave = &mut r.waves[i];
    wave.state = WaveState::Failed;
    wave.ended_us = Some(at);
    wave.reason = Some(reason.clone());
    transition(
        r,
        at,
        "wave-failed",
        Some(i),
        serde_json::json!({ "wave": i, "reason": reason }),
    );
    r.reason = Some(reason.clone());
    match r.strategy().map(|s| s.on_failure).unwrap_or_default() {
        OnFailure::Pause => {
            r.status = RolloutStatus::Paused;
            transition(
                r,
                at,
                "paused",
                Some(i),
                serde_json::json!({ "reason": reason }),
            );
            Vec::new()
        }
        OnFailure::Rollback => vec![Effect::Rollback(at)],
    }
}

/// Checks the current wave's gate and deadline at `now`.
fn evaluate(r: &mut Rollout, now: i64) -> Vec<Effect> {
    let mut effects = Vec::new();
    // A wave opening its gate may open the next at once (min_healthy_secs 0, zones already
    // healthy): loop while something moves.
    loop {
        if r.status != RolloutStatus::RollingOut {
            return effects;
        }
        let i = r.current;
        let strategy = r.strategy().cloned();
        if r.waves[i].state != WaveState::Deploying {
            return effects;
        }
        let started = r.waves[i].started_us.unwrap_or(r.requested_us);
        let zones = r.wave_zones(i);
        let seen: Vec<Option<&ZoneSeen>> = zones
            .iter()
            .map(|(region, zone)| r.zones.get(&zone_key(region, zone)))
            .collect();
        let failed = zones
            .iter()
            .zip(&seen)
            .find(|(_, z)| z.is_some_and(|z| z.status == "failed" && z.since_us >= started));
        // Without a strategy nothing waits on the zones: a failed one is only reported.
        if let Some(((region, zone), z)) = failed.filter(|_| strategy.is_some()) {
            let z = z.expect("found above");
            let reason = format!(
                "{region}/{zone} failed{}",
                z.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            let at = z.since_us.max(started);
            effects.extend(fail_wave(r, at, reason));
            return effects;
        }
        let all_healthy = seen
            .iter()
            .all(|z| z.is_some_and(|z| z.status == "healthy"));
        let since = all_healthy.then(|| {
            seen.iter()
                .flatten()
                .map(|z| z.since_us)
                .max()
                .unwrap_or(started)
                .max(started)
        });
        r.waves[i].healthy_since_us = since;
        let (min_healthy, deadline_secs) =
            strategy.as_ref().map_or((0, i64::MAX / 2_000_000), |s| {
                (i64::from(s.min_healthy_secs), i64::from(s.deadline_secs))
            });
        let deadline = started + deadline_secs * 1_000_000;
        let gate = since.map(|s| s + min_healthy * 1_000_000);
        match gate {
            Some(gate) if gate <= now && gate <= deadline => {
                let wave = &mut r.waves[i];
                wave.state = WaveState::Healthy;
                wave.ended_us = Some(gate);
                let since = since.unwrap_or(gate);
                transition(
                    r,
                    gate,
                    "wave-healthy",
                    Some(i),
                    serde_json::json!({ "wave": i, "healthy_since_us": since }),
                );
                if i + 1 < r.waves.len() {
                    effects.push(start_wave(r, i + 1, gate));
                } else {
                    r.status = RolloutStatus::Healthy;
                    r.reason = None;
                    transition(r, gate, "healthy", None, serde_json::json!({}));
                    return effects;
                }
            }
            _ if deadline <= now => {
                let reason =
                    format!("wave {i} was not healthy within deadline_secs ({deadline_secs})");
                effects.extend(fail_wave(r, deadline, reason));
                return effects;
            }
            _ => return effects,
        }
    }
}

/// Each region's state, from the waves, the zones seen and how the rollout ended.
fn region_states(r: &mut Rollout) {
    let mut states = std::collections::BTreeMap::new();
    let rolled_back: Vec<&RegionName> = r.rollbacks.iter().flat_map(|b| &b.regions).collect();
    for (i, wave) in r.waves.iter().enumerate() {
        for region in &wave.regions {
            // Launched once started, whatever became of the wave since (a cancelled wave's
            // regions run what it launched).
            let launched = wave.started_us.is_some();
            let state = if !launched {
                if r.status.is_final() {
                    RegionState::Cancelled
                } else {
                    RegionState::Waiting
                }
            } else if matches!(r.status, RolloutStatus::Superseded | RolloutStatus::Removed) {
                RegionState::Superseded
            } else if rolled_back.contains(&region) {
                RegionState::RolledBack
            } else {
                let zones: Vec<Option<&ZoneSeen>> = r
                    .wave_zones(i)
                    .iter()
                    .filter(|(reg, _)| reg == region)
                    .map(|(reg, zone)| r.zones.get(&zone_key(reg, zone)))
                    .collect();
                if zones
                    .iter()
                    .any(|z| z.is_some_and(|z| z.status == "failed"))
                {
                    RegionState::Failed
                } else if zones
                    .iter()
                    .all(|z| z.is_some_and(|z| z.status == "healthy"))
                {
                    RegionState::Healthy
                } else if wave.state == WaveState::Failed {
                    RegionState::Failed
                } else {
                    RegionState::Deploying
                }
            };
            states.insert(region.clone(), state);
        }
    }
    r.regions = states;
}

/// A new rollout for `request`, its first wave started at the request's time.
fn begin(
    request: &Envelope<DeploymentRequested>,
    traceparent: Option<String>,
) -> Option<(Rollout, Option<Effect>)> {
    let all = vec![request
        .payload
        .targets
        .iter()
        .map(|t| t.region.clone())
        .collect::<Vec<_>>()];
    let waves = request
        .payload
        .strategy
        .as_ref()
        .map_or(&all, |s| &s.waves)
        .iter()
        .map(|regions| crate::models::rollout::Wave {
            regions: regions.clone(),
            state: WaveState::Waiting,
            started_us: None,
            healthy_since_us: None,
            ended_us: None,
            reason: None,
        })
        .collect::<Vec<_>>();
    if waves.is_empty() {
        return None;
    }
    let mut r = Rollout {
        request: request.payload.clone(),
        request_event: request.id,
        requested_us: request.time_us,
        traceparent,
        applied: Vec::new(),
        status: RolloutStatus::RollingOut,
        reason: None,
        waves,
        current: 0,
        regions: Default::default(),
        zones: Default::default(),
        rollbacks: Vec::new(),
        updated_us: request.time_us,
        announced: Vec::new(),
        healthy_zones: Default::default(),
        removed: Vec::new(),
        removal_announced: Vec::new(),
        last_step_us: 0,
        transitions: Vec::new(),
    };
    let effect = start_wave(&mut r, 0, request.time_us);
    // Without a strategy the fan-out launched every region already.
    let effect = request.payload.strategy.is_some().then_some(effect);
    Some((r, effect))
}

/// Ends `r` because a later request of its app (a deployment or a removal) came.
fn end_by(r: &mut Rollout, status: RolloutStatus, by: Uuid, at: i64) {
    r.status = status;
    cancel_later_waves(r, at);
    transition(
        r,
        at,
        status.as_str(),
        None,
        serde_json::json!({ "by": by }),
    );
}

/// Applies a user's command at `at`.
fn command(r: &mut Rollout, action: RolloutAction, at: i64) -> Vec<Effect> {
    match (action, r.status) {
        (RolloutAction::Resume, RolloutStatus::Paused) => {
            let i = r.current;
            // A zone that failed must report again after the retry.
            let stale: Vec<String> = r
                .wave_zones(i)
                .iter()
                .map(|(region, zone)| zone_key(region, zone))
                .filter(|k| r.zones.get(k).is_some_and(|z| z.status == "failed"))
                .collect();
            for key in stale {
                r.zones.remove(&key);
            }
            r.status = RolloutStatus::RollingOut;
            r.reason = None;
            transition(r, at, "resumed", Some(i), serde_json::json!({ "wave": i }));
            vec![start_wave(r, i, at)]
        }
        (RolloutAction::Cancel, RolloutStatus::RollingOut | RolloutStatus::Paused) => {
            r.status = RolloutStatus::Cancelled;
            let i = r.current;
            if r.waves[i].state == WaveState::Deploying {
                r.waves[i].state = WaveState::Cancelled;
                r.waves[i].ended_us = Some(at);
            }
            cancel_later_waves(r, at);
            transition(r, at, "cancelled", Some(i), serde_json::json!({}));
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// Records what a region reported of this deployment in one zone, unless it is older than what
/// is already known. Whether anything changed.
fn observe(r: &mut Rollout, key: String, status: &str, at: i64, reason: Option<String>) -> bool {
    match r.zones.get(&key) {
        Some(seen) if seen.since_us > at => false,
        Some(seen) if seen.status == status => false,
        _ => {
            r.zones.insert(
                key,
                ZoneSeen {
                    status: status.to_owned(),
                    since_us: at,
                    reason,
                },
            );
            true
        }
    }
}

impl RolloutAgent {
    fn is(incoming: &Incoming, spec: &catalog::TopicSpec) -> bool {
        incoming
            .topic
            .strip_prefix(spec.base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    }

    fn event_type(incoming: &Incoming) -> &[u8] {
        incoming.header(HEADER_EVENT_TYPE).unwrap_or_default()
    }

    /// A synthetic cause carrying the rollout's trace, for what it publishes on a tick.
    fn cause(r: &Rollout) -> Incoming {
        let mut cause = Incoming::unprompted();
        if let Some(tp) = &r.traceparent {
            cause
                .headers
                .push((HEADER_TRACEPARENT.to_owned(), tp.as_bytes().to_vec()));
        }
        cause
    }

    /// Carries out `effects` for `r`, then the rollout's own record: what to publish. On an
    /// error (Cassandra unavailable for a rollback) nothing is published and `r` is not kept:
    /// the same step is taken again on the next record or tick.
    async fn settle(
        &mut self,
        before: Option<&Rollout>,
        mut r: Rollout,
        effects: Vec<Effect>,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, String> {
        let mut out = Vec::new();
        for effect in effects {
            match effect {
                Effect::Launch(i) => out.extend(self.launches(&r, i, cause)?),
                Effect::Rollback(at) => out.extend(self.rollback(&mut r, at, cause).await?),
            }
        }
        region_states(&mut r);
        out.extend(self.announce(&mut r, cause).await?);
        // Changed: a step was taken, or anything but the update time differs (`before` was
        // kept with no transitions).
        let changed = before.is_none_or(|b| {
            !r.transitions.is_empty() || {
                let updated = std::mem::replace(&mut r.updated_us, b.updated_us);
                let differs = *b != r;
                r.updated_us = updated;
                differs
            }
        });
        if changed {
            let latest = r.transitions.iter().map(|t| t.time_us).max().unwrap_or(0);
            r.updated_us = before
                .map(|b| b.updated_us + 1)
                .unwrap_or(r.requested_us)
                .max(latest);
            out.push(self.record(&r, before.is_none(), cause)?);
        }
        r.transitions.clear();
        self.rollouts.insert(r.id(), r);
        Ok(out)
    }

    /// The CDEvents of what `r`'s regions became since it was last announced: healthy
    /// (deployed, upgraded or rolled back there) or removed. Each once, whenever the reports
    /// were read: a region all of whose zones were seen healthy is told so even if the
    /// deployment was superseded or rolled back before this agent read them.
    async fn announce(
        &mut self,
        r: &mut Rollout,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, String> {
        use crate::models::cdevents::{cloud_event, Occurrence, ServiceEvent, CONTENT_TYPE};
        let app = r.request.spec.app.to_string();
        let latest_in = |r: &Rollout, region: &RegionName, status: Option<&str>| {
            let prefix = format!("{region}/");
            r.zones
                .iter()
                .filter(|(k, z)| k.starts_with(&prefix) && status.is_none_or(|s| z.status == s))
                .map(|(_, z)| z.since_us)
                .max()
                .unwrap_or(r.updated_us)
        };
        let mut due: Vec<(ServiceEvent, RegionName, i64)> = Vec::new();
        let reached = reached_healthy(r);
        for (region, at) in reached
            .into_iter()
            .filter(|(region, _)| !r.announced.contains(region))
        {
            let event = if r.request.rollback_of.is_some() {
                ServiceEvent::RolledBack
            } else if self.earlier_healthy(r, &region).await? {
                ServiceEvent::Upgraded
            } else {
                ServiceEvent::Deployed
            };
            due.push((event, region, at));
        }
        for region in &r.removed {
            if !r.removal_announced.contains(region) {
                let at = latest_in(r, region, Some("removed"));
                due.push((ServiceEvent::Removed, region.clone(), at));
            }
        }
        let mut out = Vec::new();
        for (event, region, at) in due {
            let occurrence = Occurrence {
                event,
                central: self.central.as_str(),
                app: &app,
                region: region.as_str(),
                artifact: &r.request.spec.artifact,
                time_us: at,
                custom: serde_json::json!({
                    "deployment_id": r.id(), "generation": r.request.generation,
                    "version": r.request.spec.version, "rollback_of": r.request.rollback_of,
                }),
                id: derived_id(&format!(
                    "cdevent/{}/{region}/{}",
                    r.id(),
                    event.event_type()
                )),
            };
            let value = serde_json::to_vec(&cloud_event(&occurrence)).map_err(|e| e.to_string())?;
            let mut headers = vec![("content-type".to_owned(), CONTENT_TYPE.as_bytes().to_vec())];
            headers.extend(cause.trace_headers());
            out.push(Outgoing {
                topic: self.cdevents.clone(),
                key: Some(app.clone().into_bytes()),
                value: Some(value),
                headers,
                timestamp_ms: None,
            });
            if event == ServiceEvent::Removed {
                r.removal_announced.push(region);
            } else {
                r.announced.push(region);
            }
        }
        Ok(out)
    }

    /// Whether an earlier deployment of `r`'s app was healthy in `region` (then `r` upgrades
    /// it): one this agent saw healthy there, else one the projections know of.
    async fn earlier_healthy(&self, r: &Rollout, region: &RegionName) -> Result<bool, String> {
        let app = r.request.spec.app.as_str();
        let seen = self.rollouts.values().any(|e| {
            e.request.spec.app.as_str() == app
                && e.request.generation < r.request.generation
                && e.announced.contains(region)
        });
        if seen {
            return Ok(true);
        }
        let archived = self
            .projections
            .earlier_healthy(app, r.request.generation, std::slice::from_ref(region))
            .await
            .map_err(|e| format!("finding an earlier healthy deployment: {e}"))?;
        Ok(!archived.is_empty())
    }

    fn launches(&self, r: &Rollout, i: usize, cause: &Incoming) -> Result<Vec<Outgoing>, String> {
        let request = Envelope {
            v: crate::models::envelope::VERSION,
            id: r.request_event,
            kind: Kind::Requested,
            key: r.request.spec.app.to_string(),
            origin: self.central.clone(),
            time_us: r.requested_us,
            payload: r.request.clone(),
        };
        launch_events(&request, cause, Some(&r.waves[i].regions))
    }

    fn record(&self, r: &Rollout, first: bool, cause: &Incoming) -> Result<Outgoing, String> {
        let kind = if first { Kind::Created } else { Kind::Updated };
        let head = Envelope::derived(
            kind,
            r.id().to_string(),
            self.central.clone(),
            r.updated_us,
            &format!("{}/{}", r.id(), r.updated_us),
            (),
        );
        let json = serde_json::to_vec(r).map_err(|e| e.to_string())?;
        Outgoing::envelope(self.output.clone(), "Rollout", head, &json, cause)
            .map_err(|e| e.to_string())
    }

    /// Puts every region `r` reached back on the app's previous healthy deployment there: one
    /// new deployment per earlier deployment put back (`rollback_of` names this one), its
    /// id and generation claimed under a key derived from this rollout, so doing it again names
    /// the same deployment. A region with no earlier healthy deployment keeps this one (its
    /// state says whether it is healthy or failed); with none anywhere, the rollout `failed`.
    async fn rollback(
        &self,
        r: &mut Rollout,
        at: i64,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, String> {
        let reached: Vec<RegionName> = r
            .waves
            .iter()
            .filter(|w| w.started_us.is_some())
            .flat_map(|w| w.regions.clone())
            .collect();
        let app = r.request.spec.app.clone();
        let earlier = self
            .projections
            .earlier_healthy(app.as_str(), r.request.generation, &reached)
            .await
            .map_err(|e| format!("finding what to roll back to: {e}"))?;
        let mut by_target: std::collections::BTreeMap<
            Uuid,
            (DeploymentRequested, Vec<RegionName>),
        > = Default::default();
        for (region, request) in earlier {
            by_target
                .entry(request.id)
                .or_insert_with(|| (request, Vec::new()))
                .1
                .push(region);
        }
        let mut out = Vec::new();
        r.rollbacks.clear();
        for (to, (earlier, regions)) in by_target {
            let key = format!("rollback:{}:{to}", r.id());
            let claim = self
                .requests
                .claim(&key, &key, app.as_str(), derived_id(&key))
                .await
                .map_err(|e| e.to_string())?;
            let request = DeploymentRequested {
                id: claim.id,
                generation: claim.generation,
                spec: earlier.spec.clone(),
                targets: earlier
                    .targets
                    .iter()
                    .filter(|t| regions.contains(&t.region))
                    .cloned()
                    .collect(),
                strategy: None,
                rollback_of: Some(r.id()),
                requested_by: None,
            };
            let envelope = Envelope::derived(
                Kind::Requested,
                app.to_string(),
                self.central.clone(),
                at,
                &key,
                request,
            );
            // The rollback belongs to the failed deployment's trace (untraced: none, as the
            // API says it).
            let trace_id = r
                .traceparent
                .as_deref()
                .and_then(|tp| tp.split('-').nth(1))
                .map(str::to_owned)
                .unwrap_or_else(|| crate::telemetry::trace_id(&tracing::Span::none()));
            self.requests
                .write_shell(&envelope, &trace_id)
                .await
                .map_err(|e| e.to_string())?;
            let json = serde_json::to_vec(&envelope.payload).map_err(|e| e.to_string())?;
            // The same derivation as the request's own envelope: the same id.
            let head = Envelope::derived(
                Kind::Requested,
                app.to_string(),
                self.central.clone(),
                at,
                &key,
                (),
            );
            out.push(
                Outgoing::envelope(
                    self.requests_topic.clone(),
                    "DeploymentRequested",
                    head,
                    &json,
                    cause,
                )
                .map_err(|e| e.to_string())?,
            );
            r.rollbacks.push(RollbackMade {
                deployment_id: claim.id,
                to,
                regions,
            });
        }
        cancel_later_waves(r, at);
        let missing: Vec<&RegionName> = reached
            .iter()
            .filter(|region| !r.rollbacks.iter().any(|b| b.regions.contains(region)))
            .collect();
        let detail =
            serde_json::json!({ "rollbacks": r.rollbacks, "nothing_to_go_back_to": missing });
        if r.rollbacks.is_empty() {
            // Nothing was put back anywhere: the rollout failed, and says why.
            r.status = RolloutStatus::Failed;
            let reason = r.reason.take().unwrap_or_default();
            r.reason = Some(format!(
                "{reason}; no earlier deployment of {app} was healthy in any region reached: nothing to roll back to"
            ));
            transition(r, at, "failed", Some(r.current), detail);
        } else {
            r.status = RolloutStatus::RolledBack;
            transition(r, at, "rolled-back", Some(r.current), detail);
        }
        Ok(out)
    }

    /// Runs one step for rollout `id`: `f` changes a copy, then its effects are carried out.
    async fn step(
        &mut self,
        id: Uuid,
        cause: &Incoming,
        f: impl FnOnce(&mut Rollout) -> Vec<Effect>,
    ) -> Result<Vec<Outgoing>, String> {
        let Some(before) = self.rollouts.get(&id).cloned() else {
            return Ok(Vec::new());
        };
        let mut r = before.clone();
        let mut effects = f(&mut r);
        effects.extend(evaluate(&mut r, now_us()));
        self.settle(Some(&before), r, effects, cause).await
    }

    /// What is already known of a rollout's zones when its request is read: the zones' states
    /// archived in the projections (what a restart committed past before the request came:
    /// see [`Early`]), then the reports read here ahead of the request.
    async fn seed(&mut self, r: &mut Rollout) -> Result<(), String> {
        let archived = self
            .projections
            .zones(r.id())
            .await
            .map_err(|e| format!("reading the zones already reported: {e}"))?;
        for zone in archived {
            let (Ok(region), Some(ms)) = (RegionName::parse(&zone.region), zone.event_time_ms)
            else {
                continue;
            };
            if zone.status == "pending" {
                continue;
            }
            let key = format!("{region}/{}", zone.zone);
            let seen = |status: &str| Seen {
                region: region.clone(),
                key: key.clone(),
                status: status.to_owned(),
                at: ms * 1000,
                reason: zone.reason.clone(),
            };
            // A zone the deployment left shows its last counts: all healthy, it was healthy.
            let ended = matches!(zone.status.as_str(), "superseded" | "removed");
            if ended && zone.desired.is_some_and(|d| d > 0) && zone.healthy >= zone.desired {
                seen("healthy").apply(r);
            }
            seen(&zone.status).apply(r);
        }
        for seen in self.early.take(r.id()) {
            seen.apply(r);
        }
        Ok(())
    }

    async fn on_request(&mut self, incoming: &Incoming) -> Result<Vec<Outgoing>, String> {
        let t = Self::event_type(incoming);
        if t.starts_with(b"RolloutCommand.") {
            let Ok(c) = incoming.decode::<RolloutCommand>() else {
                return Ok(Vec::new());
            };
            if c.origin != self.central {
                return Ok(Vec::new());
            }
            let (event, at) = (c.id, c.time_us);
            return self
                .step(c.payload.deployment_id, incoming, |r| {
                    if r.applied.contains(&event) {
                        return Vec::new();
                    }
                    r.applied.push(event);
                    command(r, c.payload.action, at)
                })
                .await;
        }
        // A later request of an app ends its earlier rollouts still under way.
        let (app, generation, by, at, status) = if t.starts_with(b"RemovalRequested.") {
            let Ok(removal) = incoming.decode::<RemovalRequested>() else {
                return Ok(Vec::new());
            };
            if removal.origin != self.central {
                return Ok(Vec::new());
            }
            let p = &removal.payload;
            (
                p.app.clone(),
                p.generation,
                p.id,
                removal.time_us,
                RolloutStatus::Removed,
            )
        } else {
            let Ok(request) = incoming.decode::<DeploymentRequested>() else {
                // Bad requests are the fan-out's to dead-letter.
                return Ok(Vec::new());
            };
            if request.origin != self.central {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            if !self.rollouts.contains_key(&request.payload.id) {
                let traceparent = incoming
                    .header(HEADER_TRACEPARENT)
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                if let Some((mut r, effect)) = begin(&request, traceparent) {
                    self.seed(&mut r).await?;
                    let mut effects: Vec<Effect> = effect.into_iter().collect();
                    effects.extend(evaluate(&mut r, now_us()));
                    out.extend(self.settle(None, r, effects, incoming).await?);
                }
            }
            let p = &request.payload;
            let ended = self
                .ending(
                    p.spec.app.as_str(),
                    p.generation,
                    p.id,
                    request.time_us,
                    RolloutStatus::Superseded,
                    incoming,
                )
                .await?;
            out.extend(ended);
            return Ok(out);
        };
        self.ending(app.as_str(), generation, by, at, status, incoming)
            .await
    }

    /// Ends every rollout of `app` older than `generation` that is still under way (or healthy).
    async fn ending(
        &mut self,
        app: &str,
        generation: u64,
        by: Uuid,
        at: i64,
        status: RolloutStatus,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, String> {
        let older: Vec<Uuid> = self
            .rollouts
            .values()
            .filter(|r| {
                r.request.spec.app.as_str() == app
                    && r.request.generation < generation
                    && !r.status.is_final()
            })
            .map(Rollout::id)
            .collect();
        let mut out = Vec::new();
        for id in older {
            out.extend(
                self.step(id, cause, |r| {
                    end_by(r, status, by, at);
                    Vec::new()
                })
                .await?,
            );
        }
        Ok(out)
    }

    async fn on_zone_state(&mut self, incoming: &Incoming) -> Result<Vec<Outgoing>, String> {
        if incoming
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with(HEARTBEAT_PREFIX.as_bytes()))
        {
            return Ok(Vec::new());
        }
        let Ok(change) = incoming.decode::<DeploymentZoneState>() else {
            // Bad records are the archival agent's to dead-letter.
            return Ok(Vec::new());
        };
        let s = &change.payload;
        let status = if change.kind == Kind::Deleted {
            "gone"
        } else {
            s.status.as_str()
        };
        let seen = Seen {
            region: s.region.clone(),
            key: zone_key(&s.region, &s.zone),
            status: status.to_owned(),
            at: change.time_us,
            reason: s.reason.clone(),
        };
        if !self.rollouts.contains_key(&s.deployment_id) {
            self.early.hold(s.deployment_id, seen);
            return Ok(Vec::new());
        }
        self.step(s.deployment_id, incoming, |r| {
            seen.apply(r);
            Vec::new()
        })
        .await
    }

    async fn on_complete(&mut self, incoming: &Incoming) -> Result<Vec<Outgoing>, String> {
        if Self::event_type(incoming).starts_with(b"DeploymentDrift.") {
            return self.on_drift(incoming).await;
        }
        if !Self::event_type(incoming).starts_with(b"DeploymentCompleted.") {
            return Ok(Vec::new());
        }
        let Ok(done) = incoming.decode::<DeploymentCompleted>() else {
            return Ok(Vec::new());
        };
        let d = &done.payload;
        let region = d.region.clone();
        // Failures fail a wave; removals are announced.
        let seen: Vec<Seen> = d
            .zones
            .iter()
            .filter_map(|z| match z {
                ZoneOutcome::Failed {
                    zone,
                    reason,
                    time_us,
                } => Some(Seen {
                    region: region.clone(),
                    key: zone_key(&region, zone),
                    status: "failed".into(),
                    at: (*time_us).max(done.time_us),
                    reason: Some(reason.clone()),
                }),
                ZoneOutcome::Removed { zone, time_us, .. } => Some(Seen {
                    region: region.clone(),
                    key: zone_key(&region, zone),
                    status: "removed".into(),
                    at: *time_us,
                    reason: None,
                }),
                _ => None,
            })
            .collect();
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        if !self.rollouts.contains_key(&d.deployment_id) {
            for seen in seen {
                self.early.hold(d.deployment_id, seen);
            }
            return Ok(Vec::new());
        }
        self.step(d.deployment_id, incoming, |r| {
            for seen in seen {
                seen.apply(r);
            }
            Vec::new()
        })
        .await
    }
}

impl RolloutAgent {
    /// A drift the region will not mend (`"drift": "report"`) fails the zone for the rollout.
    async fn on_drift(&mut self, incoming: &Incoming) -> Result<Vec<Outgoing>, String> {
        let Ok(drift) = incoming.decode::<DriftReport>() else {
            return Ok(Vec::new());
        };
        let d = drift.payload;
        let Some(failure) = self
            .rollouts
            .get(&d.deployment_id)
            .and_then(|r| unmended(r, &d))
        else {
            return Ok(Vec::new());
        };
        self.step(d.deployment_id, incoming, |r| {
            let (key, at, reason) = failure;
            observe(r, key, "failed", at, Some(reason));
            Vec::new()
        })
        .await
    }
}

/// The failure a drift is to `r`: one detected in a deployment that asked to have its drifts
/// only reported, which nothing will put right. (A drift the region mends shows in the zone's
/// state until it is mended; the wave's deadline bounds the wait.)
fn unmended(r: &Rollout, d: &DriftReport) -> Option<(String, i64, String)> {
    match &d.event {
        DriftEvent::Detected { what, time_us } if r.request.spec.drift == DriftPolicy::Report => {
            Some((
                zone_key(&d.region, &d.zone),
                *time_us,
                format!("drift not mended (\"drift\": \"report\"): {what}"),
            ))
        }
        _ => None,
    }
}

impl Agent for RolloutAgent {
    const NAME: &'static str = "RolloutAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        let mut topics = vec![TopicName::local(&catalog::DEPLOYMENT_REQUESTS.base())];
        for region in &ctx.topology.config().regions {
            topics.push(
                ctx.topology
                    .archived_topic(region, &catalog::DEPLOYMENT_STATE_CHANGE),
            );
            topics.push(
                ctx.topology
                    .archived_topic(region, &catalog::DEPLOYMENT_COMPLETE_EVENTS),
            );
        }
        Ok(Source::Home(topics))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let config = &ctx.topology.config().cassandra;
        let session = ctx.session().await?;
        let projections = Projections::prepare(session.clone(), &config.keyspace)
            .await
            .map_err(|e| PipelineError::Other(format!("preparing reads: {e}")))?;
        let requests = Requests::prepare(session, &config.keyspace)
            .await
            .map_err(|e| PipelineError::Other(e.to_string()))?;
        let output = TopicName::local(&catalog::ROLLOUTS.base());
        let mut rollouts = HashMap::new();
        let central = ctx.region.name.clone();
        let reader = format!("{}-rebuild", pipeline::consumer_group(Self::NAME, ctx));
        pipeline::read_to_end(&ctx.home, &output, &reader, |m| {
            use rdkafka::Message;
            let decoded = crate::models::envelope::decode::<Rollout>(m.key(), m.payload());
            if let Some(e) = decoded.ok().filter(|e| e.origin == central) {
                let mut r = e.payload;
                r.transitions.clear();
                rollouts.insert(r.id(), r);
            }
        })
        .await?;
        // A wave none of whose zones has reported anything may have lost its launches to the
        // crash (its record published, its launches not acknowledged): they are sent again
        // (a region takes a launch it already has as done). A wave with a report was launched.
        let resend = rollouts
            .values()
            .filter(|r| r.status == RolloutStatus::RollingOut && r.strategy().is_some())
            .filter(|r| {
                r.wave_zones(r.current)
                    .iter()
                    .all(|(region, zone)| !r.zones.contains_key(&zone_key(region, zone)))
            })
            .map(Rollout::id)
            .collect();
        tracing::info!(rollouts = rollouts.len(), "rollouts rebuilt");
        Ok(Self {
            central: ctx.region.name.clone(),
            rollouts,
            output,
            requests_topic: TopicName::local(&catalog::DEPLOYMENT_REQUESTS.base()),
            projections,
            requests,
            cdevents: TopicName::local(&catalog::CDEVENTS.base()),
            resend,
            early: Early::default(),
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let result = if Self::is(incoming, &catalog::DEPLOYMENT_REQUESTS) {
            self.on_request(incoming).await
        } else if Self::is(incoming, &catalog::DEPLOYMENT_STATE_CHANGE) {
            self.on_zone_state(incoming).await
        } else if Self::is(incoming, &catalog::DEPLOYMENT_COMPLETE_EVENTS) {
            self.on_complete(incoming).await
        } else {
            return Outcome::Skip;
        };
        match result {
            Ok(records) => Outcome::Publish(records),
            // Cassandra unavailable for a rollback: the record is replayed after a restart.
            Err(problem) => Outcome::Fail(problem),
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    async fn tick(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.resend) {
            if let Some(r) = self.rollouts.get(&id) {
                if r.status == RolloutStatus::RollingOut {
                    match self.launches(r, r.current, &Self::cause(r)) {
                        Ok(records) => out.extend(records),
                        Err(e) => {
                            tracing::warn!(deployment = %id, error = %e, "cannot send a wave again")
                        }
                    }
                }
            }
        }
        // Only a strategy has gates and deadlines for time to open or pass.
        let running: Vec<Uuid> = self
            .rollouts
            .values()
            .filter(|r| r.status == RolloutStatus::RollingOut && r.strategy().is_some())
            .map(Rollout::id)
            .collect();
        for id in running {
            let Some(r) = self.rollouts.get(&id) else {
                continue;
            };
            let cause = Self::cause(r);
            match self.step(id, &cause, |_| Vec::new()).await {
                Ok(records) => out.extend(records),
                Err(e) => {
                    tracing::warn!(deployment = %id, error = %e, "rollout step failed; retrying on the next tick")
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::deployment::{DeploymentSpec, Resources, Target};
    use crate::models::rollout::Strategy;
    use crate::topics::names::{AppName, ZoneName};

    fn region(name: &str) -> RegionName {
        RegionName::parse(name).unwrap()
    }

    fn request(on_failure: OnFailure) -> Envelope<DeploymentRequested> {
        let target = |r: &str| Target {
            region: region(r),
            zones: vec![ZoneName::parse("a").unwrap()],
        };
        Envelope::new(
            Kind::Requested,
            "web",
            region("production-us-east-1"),
            1_000_000,
            DeploymentRequested {
                id: Uuid::new_v4(),
                generation: 2,
                spec: DeploymentSpec {
                    app: AppName::parse("web").unwrap(),
                    version: "2".into(),
                    artifact: "img".into(),
                    instances_per_zone: 1,
                    resources: Resources {
                        cpus: 0.1,
                        mem_mb: 32,
                    },
                    ports: vec![],
                    health_check: None,
                    env: Default::default(),
                    secret_env: Default::default(),
                    drift: DriftPolicy::Mend,
                },
                targets: vec![target("test-us-east-1"), target("production-us-west-2")],
                strategy: Some(Strategy {
                    waves: vec![
                        vec![region("test-us-east-1")],
                        vec![region("production-us-west-2")],
                    ],
                    max_parallel: None,
                    min_healthy_secs: 10,
                    deadline_secs: 60,
                    on_failure,
                }),
                rollback_of: None,
                requested_by: None,
            },
        )
    }

    const S: i64 = 1_000_000;

    #[test]
    fn the_next_wave_starts_once_the_first_was_healthy_for_min_healthy_secs() {
        let (mut r, effect) = begin(&request(OnFailure::Pause), None).unwrap();
        assert_eq!(effect, Some(Effect::Launch(0)));
        observe(&mut r, "test-us-east-1/a".into(), "healthy", 3 * S, None);
        assert!(evaluate(&mut r, 12 * S).is_empty(), "healthy for 9 s only");
        assert_eq!(r.waves[0].healthy_since_us, Some(3 * S));
        assert_eq!(evaluate(&mut r, 13 * S), vec![Effect::Launch(1)]);
        assert_eq!(
            r.waves[1].started_us,
            Some(13 * S),
            "from the cause, not the clock"
        );
        observe(
            &mut r,
            "production-us-west-2/a".into(),
            "healthy",
            14 * S,
            None,
        );
        assert!(evaluate(&mut r, 30 * S).is_empty());
        assert_eq!(r.status, RolloutStatus::Healthy);
    }

    #[test]
    fn a_dip_in_health_restarts_the_clock() {
        let (mut r, _) = begin(&request(OnFailure::Pause), None).unwrap();
        observe(&mut r, "test-us-east-1/a".into(), "healthy", 2 * S, None);
        observe(&mut r, "test-us-east-1/a".into(), "degraded", 5 * S, None);
        observe(&mut r, "test-us-east-1/a".into(), "healthy", 6 * S, None);
        assert!(evaluate(&mut r, 15 * S).is_empty());
        assert_eq!(evaluate(&mut r, 16 * S), vec![Effect::Launch(1)]);
    }

    #[test]
    fn a_wave_not_healthy_by_its_deadline_pauses_or_rolls_back() {
        let (mut r, _) = begin(&request(OnFailure::Pause), None).unwrap();
        assert!(evaluate(&mut r, 60 * S).is_empty());
        assert_eq!(
            r.status,
            RolloutStatus::RollingOut,
            "started at 1 s: 60 s left"
        );
        assert!(evaluate(&mut r, 61 * S).is_empty());
        assert_eq!(r.status, RolloutStatus::Paused);
        assert_eq!(r.waves[0].ended_us, Some(61 * S));
        region_states(&mut r);
        assert_eq!(r.regions[&region("test-us-east-1")], RegionState::Failed);
        assert_eq!(
            r.regions[&region("production-us-west-2")],
            RegionState::Waiting
        );
        let (mut r, _) = begin(&request(OnFailure::Rollback), None).unwrap();
        assert_eq!(evaluate(&mut r, 61 * S), vec![Effect::Rollback(61 * S)]);
    }

    #[test]
    fn resume_retries_the_wave_and_cancel_ends_the_rollout() {
        let (mut r, _) = begin(&request(OnFailure::Pause), None).unwrap();
        observe(
            &mut r,
            "test-us-east-1/a".into(),
            "failed",
            2 * S,
            Some("no".into()),
        );
        assert!(evaluate(&mut r, 3 * S).is_empty());
        assert_eq!(r.status, RolloutStatus::Paused);
        assert_eq!(
            command(&mut r, RolloutAction::Resume, 4 * S),
            vec![Effect::Launch(0)]
        );
        assert!(
            !r.zones.contains_key("test-us-east-1/a"),
            "must report again"
        );
        assert!(
            command(&mut r, RolloutAction::Resume, 5 * S).is_empty(),
            "not paused"
        );
        observe(&mut r, "test-us-east-1/a".into(), "healthy", 5 * S, None);
        assert!(command(&mut r, RolloutAction::Cancel, 6 * S).is_empty());
        assert_eq!(r.status, RolloutStatus::Cancelled);
        assert_eq!(r.waves[0].state, WaveState::Cancelled);
        assert_eq!(r.waves[1].state, WaveState::Cancelled);
        region_states(&mut r);
        assert_eq!(
            r.regions[&region("test-us-east-1")],
            RegionState::Healthy,
            "launched before the cancel: it runs this deployment"
        );
        assert_eq!(
            r.regions[&region("production-us-west-2")],
            RegionState::Cancelled
        );
    }

    #[test]
    fn a_drift_only_reported_fails_the_zone_and_one_mended_does_not() {
        let (mut r, _) = begin(&request(OnFailure::Pause), None).unwrap();
        let drift = DriftReport {
            deployment_id: r.id(),
            generation: 2,
            region: region("test-us-east-1"),
            zone: ZoneName::parse("a").unwrap(),
            app: AppName::parse("web").unwrap(),
            event: DriftEvent::Detected {
                what: "the app is missing".into(),
                time_us: 5 * S,
            },
        };
        assert_eq!(unmended(&r, &drift), None, "the region mends it");
        r.request.spec.drift = DriftPolicy::Report;
        let (key, at, reason) = unmended(&r, &drift).unwrap();
        observe(&mut r, key, "failed", at, Some(reason));
        assert!(evaluate(&mut r, 6 * S).is_empty());
        assert_eq!(r.status, RolloutStatus::Paused);
        assert!(r.reason.as_deref().unwrap().contains("the app is missing"));
    }

    #[test]
    fn an_older_observation_never_replaces_a_newer_one() {
        let (mut r, _) = begin(&request(OnFailure::Pause), None).unwrap();
        assert!(observe(
            &mut r,
            "test-us-east-1/a".into(),
            "healthy",
            5 * S,
            None
        ));
        assert!(!observe(
            &mut r,
            "test-us-east-1/a".into(),
            "deploying",
            4 * S,
            None
        ));
        assert_eq!(r.zones["test-us-east-1/a"].status, "healthy");
    }

    fn seen(zone: &str, status: &str, at: i64) -> Seen {
        let (region, _) = zone.split_once('/').unwrap();
        Seen {
            region: RegionName::parse(region).unwrap(),
            key: zone.into(),
            status: status.into(),
            at,
            reason: None,
        }
    }

    /// Two zones of one region, each healthy and then replaced by a later deployment, read in
    /// an order where they are never healthy together: the region was healthy all the same.
    #[test]
    fn a_region_seen_healthy_stays_reached_whatever_came_after() {
        let mut request = request(OnFailure::Pause);
        request.payload.strategy = None;
        request.payload.targets.truncate(1);
        request.payload.targets[0]
            .zones
            .push(ZoneName::parse("b").unwrap());
        let (mut r, _) = begin(&request, None).unwrap();
        seen("test-us-east-1/a", "healthy", 3 * S).apply(&mut r);
        seen("test-us-east-1/a", "gone", 9 * S).apply(&mut r);
        assert!(reached_healthy(&r).is_empty(), "zone b not yet");
        seen("test-us-east-1/b", "healthy", 4 * S).apply(&mut r);
        seen("test-us-east-1/b", "gone", 9 * S).apply(&mut r);
        assert_eq!(reached_healthy(&r), vec![(region("test-us-east-1"), 4 * S)]);

        // A zone that stops being healthy while running the deployment no longer counts.
        let (mut r, _) = begin(&request, None).unwrap();
        seen("test-us-east-1/a", "healthy", 3 * S).apply(&mut r);
        seen("test-us-east-1/a", "degraded", 5 * S).apply(&mut r);
        seen("test-us-east-1/b", "healthy", 6 * S).apply(&mut r);
        assert!(reached_healthy(&r).is_empty());
        seen("test-us-east-1/a", "healthy", 7 * S).apply(&mut r);
        assert_eq!(reached_healthy(&r), vec![(region("test-us-east-1"), 7 * S)]);
    }

    /// Reports read before their deployment's request are held, newest deployments first.
    #[test]
    fn early_reports_are_held_until_the_request_and_bounded() {
        let mut early = Early::default();
        let first = Uuid::new_v4();
        early.hold(first, seen("test-us-east-1/a", "healthy", S));
        for _ in 0..EARLY_DEPLOYMENTS {
            early.hold(Uuid::new_v4(), seen("test-us-east-1/a", "deploying", S));
        }
        assert!(
            early.take(first).is_empty(),
            "the oldest deployment was let go"
        );
        let kept = *early.order.back().unwrap();
        assert_eq!(early.take(kept).len(), 1);
        assert_eq!(early.seen.len(), EARLY_DEPLOYMENTS - 1);
        assert_eq!(early.order.len(), EARLY_DEPLOYMENTS - 1);
    }
}

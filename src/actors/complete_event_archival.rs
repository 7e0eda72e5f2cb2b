//! CompleteEventArchivalAgent (persistence layer, one per region): consumes the region's
//! `mot-deployment-complete-events.<region>` on the central cluster and writes what each zone's
//! scheduler did with a launch to the timeline and to `deployment_zones`: accepted (the zone is
//! `deploying` until the region observes it), failed with the reason, or superseded by a newer
//! deployment. Each write is timestamped with the outcome's own time (its cause's), so a
//! replayed outcome lands on the same cells and rows, and an older outcome never overwrites what
//! the region observed since. What a region's TrafficAgent did with a traffic request
//! (`TrafficApplied`) goes to the timeline too: each zone switched, or refused with the reason.

use std::sync::Arc;

use scylla::statement::prepared::PreparedStatement;

use crate::models::deployment::{
    DeploymentCompleted, TrafficApplied, TrafficZoneOutcome, ZoneOutcome,
};
use crate::models::desired::{DriftEvent, DriftReport};
use crate::models::envelope::HEADER_EVENT_TYPE;
use crate::models::state::ZoneStatus;
use crate::topics::catalog;
use crate::topics::names::RegionName;

use super::archival::{self, stored, timestamp, with_retries, Archive, TimelineEntry};
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, PipelineError, Source};

/// The agent: its writes, shared by those in flight.
pub struct CompleteEventArchivalAgent(Arc<Writer>);

/// The agent's session and statements.
struct Writer {
    region: RegionName,
    archive: Archive,
    /// A zone's status and reason (counts are the observations' to write).
    zone_status: PreparedStatement,
    /// How the deployment's time in the zone ended (superseded, removed): final, whatever the
    /// observations write to `status` afterwards.
    zone_ended: PreparedStatement,
    /// A zone's drift (JSON, or null once mended).
    zone_drift: PreparedStatement,
}

impl Writer {
    /// A traffic request's outcome per zone, on the timeline at the request's time.
    async fn traffic(&self, incoming: &Incoming) -> Outcome {
        let done = match incoming.decode::<TrafficApplied>() {
            Ok(done) => done,
            Err(rejected) => return rejected,
        };
        if done.origin != self.region {
            return Outcome::Skip;
        }
        let t = &done.payload;
        let mut writes = 0;
        for zone in &t.zones {
            let (zone, kind, detail) = match zone {
                TrafficZoneOutcome::Switched { zone, instances } => (
                    zone,
                    "traffic-applied",
                    serde_json::json!({"enabled": t.enabled, "instances": instances}),
                ),
                TrafficZoneOutcome::Refused { zone, reason } => (
                    zone,
                    "traffic-refused",
                    serde_json::json!({"enabled": t.enabled, "reason": reason}),
                ),
            };
            let detail = detail.to_string();
            let written = self
                .archive
                .timeline(TimelineEntry {
                    deployment: t.deployment_id,
                    time_us: done.time_us,
                    region: t.region.as_str(),
                    zone: zone.as_str(),
                    subject: "traffic",
                    kind,
                    detail: detail.as_str(),
                })
                .await;
            if let Err(problem) = written {
                return problem.into();
            }
            writes += 1;
        }
        stored(Ok(writes))
    }
}

impl Writer {
    /// A zone's drift: on the timeline, and on the zone's row until it is mended or resolved.
    async fn drift(&self, incoming: &Incoming) -> Outcome {
        let report = match incoming.decode::<DriftReport>() {
            Ok(report) => report,
            Err(rejected) => return rejected,
        };
        if report.origin != self.region {
            return Outcome::Skip;
        }
        let d = &report.payload;
        let t = d.event.time_us();
        let cell = match &d.event {
            DriftEvent::Detected { what, time_us } => Some(
                serde_json::json!({"detected_at_ms": time_us / 1000, "what": what}).to_string(),
            ),
            DriftEvent::Mended { .. } | DriftEvent::Resolved { .. } => None,
        };
        let written = with_retries("UPDATE deployment_zones", || {
            self.archive.session.execute_unpaged(
                &self.zone_drift,
                (
                    t,
                    cell.as_deref(),
                    d.deployment_id,
                    d.region.as_str(),
                    d.zone.as_str(),
                ),
            )
        })
        .await;
        if let Err(problem) = written {
            return problem.into();
        }
        let detail =
            serde_json::json!({"what": d.event.what(), "generation": d.generation}).to_string();
        stored(
            self.archive
                .timeline(TimelineEntry {
                    deployment: d.deployment_id,
                    time_us: t,
                    region: d.region.as_str(),
                    zone: d.zone.as_str(),
                    subject: "drift",
                    kind: d.event.kind(),
                    detail: detail.as_str(),
                })
                .await
                .map(|_| 2),
        )
    }
}

impl Agent for CompleteEventArchivalAgent {
    const NAME: &'static str = "CompleteEventArchivalAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        Ok(archival::source(ctx, &catalog::DEPLOYMENT_COMPLETE_EVENTS))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let archive = Archive::open(ctx).await?;
        Ok(Self(Arc::new(Writer {
            region: ctx.region.name.clone(),
            zone_status: archive
                .prepare(
                    "INSERT INTO {ks}.deployment_zones (deployment_id, region, zone, app, version, \
                     status, reason, event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                )
                .await?,
            zone_ended: archive
                .prepare(
                    "UPDATE {ks}.deployment_zones USING TIMESTAMP ? SET ended = ?, ended_reason = ? \
                     WHERE deployment_id = ? AND region = ? AND zone = ?",
                )
                .await?,
            zone_drift: archive
                .prepare(
                    "UPDATE {ks}.deployment_zones USING TIMESTAMP ? SET drift = ? \
                     WHERE deployment_id = ? AND region = ? AND zone = ?",
                )
                .await?,
            archive,
        })))
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let (writer, incoming) = (self.0.clone(), incoming.clone());
        Outcome::pending(async move { writer.write(&incoming).await })
    }
}

impl Writer {
    /// Writes what `incoming` says (the windowed part of the agent).
    async fn write(&self, incoming: &Incoming) -> Outcome {
        if incoming
            .header(HEADER_EVENT_TYPE)
            .is_some_and(|t| t.starts_with(b"TrafficApplied."))
        {
            return self.traffic(incoming).await;
        }
        if incoming
            .header(HEADER_EVENT_TYPE)
            .is_some_and(|t| t.starts_with(b"DeploymentDrift."))
        {
            return self.drift(incoming).await;
        }
        let done = match incoming.decode::<DeploymentCompleted>() {
            Ok(done) => done,
            Err(rejected) => return rejected,
        };
        if done.origin != self.region {
            return Outcome::Skip;
        }
        let c = &done.payload;
        let mut writes = 0;
        for outcome in &c.zones {
            // Records written before outcomes carried their time: the event's.
            let t = match outcome.time_us() {
                0 => done.time_us,
                t => t,
            };
            let (status, reason, kind, detail) = match outcome {
                ZoneOutcome::Accepted { version, .. } => (
                    ZoneStatus::Deploying,
                    None,
                    "scheduler-accepted",
                    serde_json::json!({"scheduler_version": version}),
                ),
                ZoneOutcome::Failed { reason, .. } => (
                    ZoneStatus::Failed,
                    Some(reason.clone()),
                    "scheduler-failed",
                    serde_json::json!({"reason": reason}),
                ),
                ZoneOutcome::Removed {
                    by, by_generation, ..
                } => (
                    ZoneStatus::Removed,
                    Some(format!("removed by {by} (generation {by_generation})")),
                    "removed",
                    serde_json::json!({"by": by, "by_generation": by_generation}),
                ),
                ZoneOutcome::Superseded {
                    by, by_generation, ..
                } => (
                    ZoneStatus::Superseded,
                    Some(format!(
                        "replaced by deployment {by} (generation {by_generation})"
                    )),
                    "superseded",
                    serde_json::json!({"by": by, "by_generation": by_generation}),
                ),
            };
            let zone = outcome.zone();
            // The timeline first: whoever reads the zone's new status finds its event there.
            let detail = detail.to_string();
            let event = self
                .archive
                .timeline(TimelineEntry {
                    deployment: c.deployment_id,
                    time_us: t,
                    region: c.region.as_str(),
                    zone: zone.as_str(),
                    subject: "scheduler",
                    kind,
                    detail: detail.as_str(),
                })
                .await;
            if let Err(problem) = event {
                return problem.into();
            }
            let written = with_retries("INSERT deployment_zones", || {
                self.archive.session.execute_unpaged(
                    &self.zone_status,
                    (
                        c.deployment_id,
                        c.region.as_str(),
                        zone.as_str(),
                        c.app.as_str(),
                        c.version.as_str(),
                        status.as_str(),
                        reason.as_deref(),
                        timestamp(t),
                        t,
                    ),
                )
            })
            .await;
            if let Err(problem) = written {
                return problem.into();
            }
            if matches!(status, ZoneStatus::Superseded | ZoneStatus::Removed) {
                let ended = with_retries("UPDATE deployment_zones ended", || {
                    self.archive.session.execute_unpaged(
                        &self.zone_ended,
                        (
                            t,
                            status.as_str(),
                            reason.as_deref(),
                            c.deployment_id,
                            c.region.as_str(),
                            zone.as_str(),
                        ),
                    )
                })
                .await;
                if let Err(problem) = ended {
                    return problem.into();
                }
            }
            writes += 2;
        }
        stored(Ok(writes))
    }
}

//! InstanceArchivalAgent (persistence layer, one per region): consumes the region's
//! `mot-instance-state-change.<region>` on the central cluster and writes each instance of a
//! deployment (`deployment_instances`: host, port, zone, health, checks, tags, traffic, state),
//! with a timeline entry when an instance appears or goes. Instances no deployment launched
//! (no deployment label) are not a deployment's and are passed over.

use std::sync::Arc;

use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use crate::models::envelope::Kind;
use crate::models::instance::InstanceInfo;
use crate::topics::catalog;
use crate::topics::names::RegionName;

use super::archival::{self, stored, timestamp, with_retries, Archive, TimelineEntry};
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, PipelineError, Source};

/// The agent: its writes, shared by those in flight.
pub struct InstanceArchivalAgent(Arc<Writer>);

/// The agent's session and statements.
struct Writer {
    region: RegionName,
    archive: Archive,
    instance: PreparedStatement,
}

impl Agent for InstanceArchivalAgent {
    const NAME: &'static str = "InstanceArchivalAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        Ok(archival::source(ctx, &catalog::INSTANCE_STATE_CHANGE))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let archive = Archive::open(ctx).await?;
        Ok(Self(Arc::new(Writer {
            region: ctx.region.name.clone(),
            instance: archive
                .prepare(
                    "INSERT INTO {ks}.deployment_instances (deployment_id, region, zone, \
                     instance_id, service, node, host, port, health, checks, tags, traffic, state, \
                     event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
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
        let change = match incoming.decode::<InstanceInfo>() {
            Ok(change) => change,
            Err(rejected) => return rejected,
        };
        if change.origin != self.region {
            return Outcome::Skip;
        }
        let i = &change.payload;
        let Some(deployment) = i
            .deployment_id
            .as_deref()
            .and_then(|d| Uuid::parse_str(d).ok())
        else {
            return Outcome::Skip;
        };
        let t = change.time_us;
        let state = if change.kind == Kind::Deleted {
            "gone"
        } else {
            "running"
        };
        let health = serde_json::to_value(i.health)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let checks = serde_json::to_string(&i.checks).unwrap_or_default();
        let written = with_retries("INSERT deployment_instances", || {
            self.archive.session.execute_unpaged(
                &self.instance,
                (
                    deployment,
                    i.region.as_str(),
                    i.zone.as_str(),
                    i.instance_id.as_str(),
                    i.service.as_str(),
                    i.node.as_str(),
                    i.host.as_str(),
                    i32::from(i.port),
                    health.as_str(),
                    checks.as_str(),
                    &i.tags,
                    i.traffic,
                    state,
                    timestamp(t),
                    t,
                ),
            )
        })
        .await;
        if let Err(problem) = written {
            return problem.into();
        }
        let event = match change.kind {
            Kind::Created => "instance-started",
            Kind::Deleted => "instance-gone",
            _ => return Outcome::Stored(1),
        };
        let detail = serde_json::json!({
            "host": i.host, "port": i.port, "health": health, "node": i.node,
        })
        .to_string();
        let subject = format!("instance/{}", i.instance_id);
        stored(
            self.archive
                .timeline(TimelineEntry {
                    deployment,
                    time_us: t,
                    region: i.region.as_str(),
                    zone: i.zone.as_str(),
                    subject: subject.as_str(),
                    kind: event,
                    detail: detail.as_str(),
                })
                .await
                .map(|_| 2),
        )
    }
}

//! RolloutArchivalAgent (persistence layer, central): consumes `mot-rollouts` and writes each
//! rollout of a deployment with a strategy: its state (`deployment_rollouts`) and its steps on
//! the deployment's timeline (subject `rollout`: `wave-started`, `wave-healthy`, `wave-failed`,
//! `paused`, `resumed`, `cancelled`, `rolled-back`, `failed`, `healthy`, `superseded`,
//! `removed`), each at its own time.

use std::sync::Arc;

use scylla::statement::prepared::PreparedStatement;

use crate::models::rollout::Rollout;
use crate::topics::catalog;
use crate::topics::names::TopicName;

use super::archival::{stored, timestamp, with_retries, Archive, TimelineEntry};
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, PipelineError, Source};

/// The agent: its writes, shared by those in flight.
pub struct RolloutArchivalAgent(Arc<Writer>);

/// The agent's session and statements.
struct Writer {
    central: crate::topics::names::RegionName,
    archive: Archive,
    insert: PreparedStatement,
}

impl Agent for RolloutArchivalAgent {
    const NAME: &'static str = "RolloutArchivalAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![TopicName::local(
            &catalog::ROLLOUTS.base(),
        )]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let archive = Archive::open(ctx).await?;
        Ok(Self(Arc::new(Writer {
            central: ctx.region.name.clone(),
            insert: archive
                .prepare(
                    "INSERT INTO {ks}.deployment_rollouts (deployment_id, app, status, rollout, \
                     updated_at) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
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
        let record = match incoming.decode::<Rollout>() {
            Ok(record) => record,
            Err(rejected) => return rejected,
        };
        // A deployment without a strategy is followed only for its CDEvents: its own views
        // (zones, timeline) tell its story.
        if record.origin != self.central || record.payload.strategy().is_none() {
            return Outcome::Skip;
        }
        let r = &record.payload;
        let t = r.updated_us;
        let json = match serde_json::to_string(r) {
            Ok(json) => json,
            Err(e) => return Outcome::Reject(e.to_string()),
        };
        let written = with_retries("INSERT deployment_rollouts", || {
            self.archive.session.execute_unpaged(
                &self.insert,
                (
                    r.id(),
                    r.request.spec.app.as_str(),
                    r.status.as_str(),
                    json.as_str(),
                    timestamp(t),
                    t,
                ),
            )
        })
        .await;
        if let Err(problem) = written {
            return problem.into();
        }
        for step in &r.transitions {
            let detail = step.detail.to_string();
            let entry = TimelineEntry {
                deployment: r.id(),
                time_us: step.time_us,
                region: "",
                zone: "",
                subject: "rollout",
                kind: &step.kind,
                detail: &detail,
            };
            if let Err(problem) = self.archive.timeline(entry).await {
                return problem.into();
            }
        }
        stored(Ok(1 + r.transitions.len() as u64))
    }
}

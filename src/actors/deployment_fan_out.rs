//! DeploymentFanOutAgent (service layer, central): turns each accepted request on
//! `mot-deployment-requests` into one launch event per target region, on
//! `mot-deployment-launch-events-<env>-<region>` in the central cluster.
//!
//! Why a request log and a fan-out, rather than the API producing every launch event itself: the
//! API's answer then rests on one record's acknowledgement, so a request is accepted whole or not
//! at all; and once accepted, this agent (at least once, offsets stored after every launch event
//! is acknowledged) makes sure every region gets its event, even across crashes. A replayed
//! request yields the same launch events again (the same ids, derived from the request's), keyed
//! by the app, so all of an app's launches for a region are in one partition, in the order the
//! service layer accepted them; each carries the deployment's generation, by which the regions
//! tell a newer deployment from a replayed older one.

use crate::models::deployment::{
    DeploymentRequested, LaunchRequested, RemovalLaunch, RemovalRequested,
};
use crate::models::envelope::{Envelope, Kind, HEADER_EVENT_TYPE};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::pipeline::{Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source};

/// The agent.
pub struct DeploymentFanOutAgent {
    central: RegionName,
}

/// The launch events of one request, in target order: for every target region, or for those of
/// `only` (a rollout's wave).
pub fn launch_events(
    request: &Envelope<DeploymentRequested>,
    cause: &Incoming,
    only: Option<&[RegionName]>,
) -> Result<Vec<Outgoing>, String> {
    let base = catalog::DEPLOYMENT_LAUNCH_EVENTS.base();
    request
        .payload
        .targets
        .iter()
        .filter(|target| only.is_none_or(|regions| regions.contains(&target.region)))
        .map(|target| {
            let launch = LaunchRequested {
                deployment_id: request.payload.id,
                generation: request.payload.generation,
                region: target.region.clone(),
                zones: target.zones.clone(),
                spec: request.payload.spec.clone(),
            };
            let json = serde_json::to_vec(&launch).map_err(|e| e.to_string())?;
            let head = Envelope::derived(
                Kind::Requested,
                request.payload.spec.app.as_str(),
                request.origin.clone(),
                request.time_us,
                &format!("{}/{}", request.id, target.region),
                (),
            );
            Outgoing::envelope(
                TopicName::to_region(&base, &target.region),
                "LaunchRequested",
                head,
                &json,
                cause,
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

/// The removal events of one removal request, in target order, on the same topics as the app's
/// launches (so one partition orders them).
pub fn removal_events(
    request: &Envelope<RemovalRequested>,
    cause: &Incoming,
) -> Result<Vec<Outgoing>, String> {
    let base = catalog::DEPLOYMENT_LAUNCH_EVENTS.base();
    let r = &request.payload;
    r.targets
        .iter()
        .map(|target| {
            let removal = RemovalLaunch {
                removal_id: r.id,
                generation: r.generation,
                app: r.app.clone(),
                region: target.region.clone(),
                zones: target.zones.clone(),
            };
            let json = serde_json::to_vec(&removal).map_err(|e| e.to_string())?;
            let head = Envelope::derived(
                Kind::Requested,
                r.app.as_str(),
                request.origin.clone(),
                request.time_us,
                &format!("{}/{}", request.id, target.region),
                (),
            );
            Outgoing::envelope(
                TopicName::to_region(&base, &target.region),
                "RemovalLaunch",
                head,
                &json,
                cause,
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

impl Agent for DeploymentFanOutAgent {
    const NAME: &'static str = "DeploymentFanOutAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![TopicName::local(
            &catalog::DEPLOYMENT_REQUESTS.base(),
        )]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        Ok(Self {
            central: ctx.region.name.clone(),
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        if incoming
            .header(HEADER_EVENT_TYPE)
            .is_some_and(|t| t.starts_with(b"RolloutCommand."))
        {
            // The RolloutAgent's.
            return Outcome::Skip;
        }
        if incoming
            .header(HEADER_EVENT_TYPE)
            .is_some_and(|t| t.starts_with(b"RemovalRequested."))
        {
            let request = match incoming.decode::<RemovalRequested>() {
                Ok(request) => request,
                Err(rejected) => return rejected,
            };
            if request.origin != self.central {
                return Outcome::Skip;
            }
            return match removal_events(&request, incoming) {
                Ok(events) => Outcome::Publish(events),
                Err(reason) => Outcome::Reject(reason),
            };
        }
        let request = match incoming.decode::<DeploymentRequested>() {
            Ok(request) => request,
            Err(rejected) => return rejected,
        };
        if request.origin != self.central || request.payload.strategy.is_some() {
            // A rollout's waves are launched by the RolloutAgent, each when its time comes.
            return Outcome::Skip;
        }
        match launch_events(&request, incoming, None) {
            Ok(events) => Outcome::Publish(events),
            Err(reason) => Outcome::Reject(reason),
        }
    }
}

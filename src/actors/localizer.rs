//! Localizer: mot's own mirror. It runs in the destination datacenter of a route, consumes the
//! route's topic on the foreign cluster, and produces it to its home cluster under the route's
//! name (suffixed for regional topics arriving in the central cluster), keeping each record's
//! key, value, headers and timestamp. So it keeps rule 1 (it produces only at home) and is the
//! one consumer of a foreign cluster a route justifies (rule 2).

use super::pipeline::{Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source};
use crate::topics::names::TopicName;

/// The agent: one per route hop carried by mot.
pub struct Localizer {
    lands_as: TopicName,
}

fn no_route() -> PipelineError {
    PipelineError::Other("a localizer needs the route it carries".into())
}

impl Agent for Localizer {
    const NAME: &'static str = "Localizer";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        let route = ctx.route.as_ref().ok_or_else(no_route)?;
        Ok(Source::Foreign(ctx.topology.localizer_source(route)))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let route = ctx.route.as_ref().ok_or_else(no_route)?;
        if ctx.home.name() != &route.to {
            return Err(PipelineError::Other(format!(
                "a localizer runs in its destination {}, not in {}",
                route.to,
                ctx.home.name()
            )));
        }
        Ok(Self {
            lands_as: route.as_topic.clone(),
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        Outcome::Publish(vec![Outgoing {
            topic: self.lands_as.clone(),
            key: incoming.key.clone(),
            value: incoming.value.clone(),
            headers: incoming.headers.clone(),
            timestamp_ms: incoming.timestamp_ms,
        }])
    }
}

//! The poller source: a timer plus an HTTP client, for agents whose source is a platform API
//! (Marathon, Mesos, Consul) rather than a topic. Each poll yields the records to publish (the
//! poller diffs against its last-record cache, so only changes), which the shared sink produces
//! to the home cluster.
//!
//! A platform that does not answer is not an agent failure: the error is counted and the next
//! poll waits longer (capped exponential backoff), so a sick scheduler does not restart its agent
//! in a loop. A Kafka failure is an agent failure: the supervisor restarts it.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::counters::Counters;
use super::pipeline::{acknowledged, enqueue, AgentContext, Outgoing, PipelineError};

/// Why a poll got nothing.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("platform unreachable: {0}")]
    Unreachable(String),
    #[error("platform answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("platform answer not understood: {0}")]
    BadAnswer(String),
}

impl From<reqwest::Error> for PollError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_decode() {
            PollError::BadAnswer(e.to_string())
        } else {
            PollError::Unreachable(e.to_string())
        }
    }
}

/// An agent whose source is a timer and an HTTP client.
pub trait Poller: Sized + 'static {
    /// Its name in logs and metrics.
    const NAME: &'static str;

    /// Builds the poller for one region (e.g. rebuild its cache from its output topic).
    fn build(ctx: &AgentContext) -> impl Future<Output = Result<Self, PipelineError>>;

    /// Pause between the end of one poll and the start of the next. A poller using blocking
    /// queries (Consul's `?index=`) can keep it short: the platform holds the request.
    fn interval(&self) -> Duration;

    /// One poll: the records to publish (none when nothing changed).
    fn poll(
        &mut self,
        http: &reqwest::Client,
    ) -> impl Future<Output = Result<Vec<Outgoing>, PollError>>;
}

/// The longest pause after repeated poll errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(30);

/// Runs poller `P` for the region of `ctx` until `stop` turns true or Kafka fails.
pub async fn run_poller<P: Poller>(
    ctx: AgentContext,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let mut poller = P::build(&ctx).await?;
    let producer = ctx.home.producer()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(70))
        .build()
        .map_err(|e| PipelineError::Other(format!("http client: {e}")))?;
    let counters = &ctx.counters;
    let mut consecutive_errors: u32 = 0;
    tracing::info!(agent = P::NAME, region = %ctx.region.name, "poller started");
    while !*stop.borrow() {
        let polled = tokio::select! {
            _ = stop.changed() => break,
            polled = poller.poll(&http) => polled,
        };
        let pause = match polled {
            Ok(records) => {
                consecutive_errors = 0;
                Counters::add(&counters.records_in, 1);
                if records.is_empty() {
                    Counters::add(&counters.unchanged, 1);
                }
                let n = records.len() as u64;
                let deliveries: Vec<_> = records.iter().map(|r| enqueue(&producer, r)).collect();
                for delivery in deliveries {
                    acknowledged(delivery).await?;
                }
                Counters::add(&counters.published, n);
                poller.interval()
            }
            Err(error) => {
                consecutive_errors += 1;
                Counters::add(&counters.poll_errors, 1);
                let pause = poller
                    .interval()
                    .saturating_mul(1 << consecutive_errors.min(10))
                    .min(MAX_ERROR_BACKOFF.max(poller.interval()));
                tracing::warn!(agent = P::NAME, region = %ctx.region.name, %error, retry_in_ms = pause.as_millis() as u64, "poll failed");
                pause
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    producer.inner_flush();
    tracing::info!(agent = P::NAME, region = %ctx.region.name, "poller stopped");
    Ok(())
}

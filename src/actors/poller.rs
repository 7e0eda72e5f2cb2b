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

use super::cache::LastRecordCache;
use super::counters::Counters;
use super::pipeline::{AgentContext, Incoming, Outgoing, PipelineError};
use crate::config::ZoneConfig;
use crate::models::envelope::{now_us, Envelope, Kind};
pub use crate::platform::http::{checked, get_json, PollError};
use crate::topics::names::{RegionName, TopicName};

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
    let producer = ctx.producers.get(&ctx.home)?;
    let http = ctx.http_client(|b| b.timeout(Duration::from_secs(70)))?;
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
                producer.send_all(&records).await?;
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
    producer.flush().await;
    tracing::info!(agent = P::NAME, region = %ctx.region.name, "poller stopped");
    Ok(())
}

/// What a zone poller publishes to, and under which payload type.
pub struct ZoneOutput<'a> {
    pub agent: &'static str,
    pub region: &'a RegionName,
    pub cache: &'a LastRecordCache,
    pub topic: &'a TopicName,
    pub payload_type: &'static str,
    /// Publish as soon as one zone reports a change, leaving the zones whose answers are still
    /// held (Consul blocking queries) to the next poll: a change in one zone must not wait for
    /// the others' watches to time out.
    pub first_change: bool,
    /// Where a zone that did not answer is counted (`zone_errors`).
    pub counters: &'a Counters,
}

/// One poll of every zone of a region, the zones concurrently: `zone_state` reads one zone's
/// complete current state as `(key, json)` pairs (`None`: the zone says nothing changed, as a
/// Consul blocking query that timed out does); the cache turns it into the changes to publish
/// (group `<region>/<zone>`, so whatever a zone no longer has is published deleted, with its
/// last state). A zone that does not answer is left as it was (no false deletions); only when no
/// zone answered is the poll a failure. With [`ZoneOutput::first_change`], the poll ends at the
/// first zone that changed (with any other answer ready by then).
pub async fn poll_zones<F, Fut>(
    out: ZoneOutput<'_>,
    zones: &[ZoneConfig],
    zone_state: F,
) -> Result<Vec<Outgoing>, PollError>
where
    F: FnMut(ZoneConfig) -> Fut,
    Fut: Future<Output = Result<Option<Vec<(String, Vec<u8>)>>, PollError>>,
{
    // Stamped before the reads: whatever they return was true no earlier than this, so a record's
    // time never makes an old answer (a slow zone) look newer than it is.
    let time = now_us();
    use futures::{FutureExt, StreamExt};
    let mut pending: futures::stream::FuturesUnordered<_> = zones
        .iter()
        .cloned()
        .map(zone_state)
        .enumerate()
        .map(|(i, read)| read.map(move |answer| (i, answer)))
        .collect();
    let mut answers = Vec::with_capacity(zones.len());
    while let Some((i, answer)) = pending.next().await {
        let changed = matches!(answer, Ok(Some(_)));
        answers.push((i, answer));
        if out.first_change && changed {
            while let Some(Some(ready)) = pending.next().now_or_never() {
                answers.push(ready);
            }
            break;
        }
    }
    drop(pending);
    answers.sort_by_key(|(i, _)| *i);
    let mut records = Vec::new();
    let mut last_error = None;
    let mut failed_zones = 0;
    let cause = Incoming::unprompted();
    for (i, answer) in answers {
        let zone = &zones[i];
        let items = match answer {
            Ok(Some(items)) => items,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(agent = out.agent, region = %out.region, zone = %zone.name, error = %e, "zone did not answer");
                Counters::add(&out.counters.zone_errors, 1);
                last_error = Some(e);
                failed_zones += 1;
                continue;
            }
        };
        let group = format!("{}/{}", out.region, zone.name);
        for change in out.cache.diff_group(&group, items) {
            let kind = if change.kind == Kind::Deleted {
                Kind::Deleted
            } else {
                Kind::Snapshot
            };
            let head = Envelope::new(kind, change.key.clone(), out.region.clone(), time, ());
            let record = Outgoing::envelope(
                out.topic.clone(),
                out.payload_type,
                head,
                &change.json,
                &cause,
            )
            .map_err(|e| PollError::BadAnswer(e.to_string()))?;
            records.extend(change.published_as(record));
        }
    }
    match last_error {
        Some(e) if failed_zones == zones.len() => Err(e),
        _ => Ok(records),
    }
}

/// A platform whose every zone is read whole on each poll (Marathon's apps, Mesos's tasks): the
/// reading is all that differs between such pollers; [`ZoneSnapshots`] is the poller around it.
pub trait ZoneReader: 'static {
    /// The agent's name.
    const NAME: &'static str;
    /// The payload type its records carry (their event-type header).
    const PAYLOAD: &'static str;
    /// Where its records go: a local, compacted topic.
    const TOPIC: crate::topics::catalog::TopicSpec;
    /// Pause between polls.
    const INTERVAL: Duration;
    /// One entity of a zone, knowing its region and zone.
    type State: serde::Serialize + serde::de::DeserializeOwned + crate::models::envelope::Validate;

    /// The entity's record key.
    fn key(state: &Self::State) -> String;

    /// `<region>/<zone>` of an entity: the group one zone's read replaces.
    fn zone_group(state: &Self::State) -> String;

    /// Every entity of one zone, as the platform reports it now.
    fn read(
        http: &reqwest::Client,
        region: &RegionName,
        zone: &ZoneConfig,
    ) -> impl Future<Output = Result<Vec<Self::State>, PollError>>;
}

/// The poller of a [`ZoneReader`]: reads every zone, diffs each zone's entities against the
/// last-record cache (rebuilt from its output topic), publishes the changes.
pub struct ZoneSnapshots<R> {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    cache: LastRecordCache,
    output: TopicName,
    counters: std::sync::Arc<Counters>,
    reader: std::marker::PhantomData<R>,
}

impl<R: ZoneReader> Poller for ZoneSnapshots<R> {
    const NAME: &'static str = R::NAME;

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let output = TopicName::local(&R::TOPIC.base());
        let cache = LastRecordCache::rebuild(R::NAME, ctx, &output, R::zone_group).await?;
        Ok(Self {
            region: ctx.region.name.clone(),
            zones: ctx.region.zones.clone(),
            cache,
            output,
            counters: ctx.counters.clone(),
            reader: std::marker::PhantomData,
        })
    }

    fn interval(&self) -> Duration {
        R::INTERVAL
    }

    async fn poll(&mut self, http: &reqwest::Client) -> Result<Vec<Outgoing>, PollError> {
        let out = ZoneOutput {
            agent: R::NAME,
            region: &self.region,
            cache: &self.cache,
            topic: &self.output,
            payload_type: R::PAYLOAD,
            first_change: false,
            counters: &self.counters,
        };
        let region = &self.region;
        poll_zones(out, &self.zones, |zone| async move {
            R::read(http, region, &zone)
                .await?
                .iter()
                .map(|state| {
                    serde_json::to_vec(state)
                        .map(|json| (R::key(state), json))
                        .map_err(|e| PollError::BadAnswer(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .await
    }
}

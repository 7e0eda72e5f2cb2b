//! Shared consumers: one Kafka consumer per (agent kind, source cluster, home cluster) in a
//! process, reading every region's topics of that kind (e.g. every
//! `mot-instance-state-change.<region>` on the central cluster, or every hop a localizer carries
//! from one regional cluster) and handing each record to the lane of the region's agent whose
//! topic it came on. So a process's consumers grow with the clusters it reads, not with
//! regions x agents.
//!
//! ```text
//!   consumer (group mot-<agent>-<cluster>)
//!     -> by topic: lane of region A  -> agent A (its own actor, thread, backoff)
//!                  lane of region B  -> agent B
//!     <- settled (topic, partition, offset), in order per partition: stored, committed
//! ```
//!
//! - A lane is bounded: a region whose agent is slow fills its lane; once it is far behind
//!   ([`HOLD_BEFORE_PAUSE`] records held) only its own partitions are paused, until its agent has
//!   taken what it holds; the others flow. When every lane is full the consumer stops taking
//!   records (librdkafka's own bounded queue holds them), pausing nothing.
//! - A region whose agent fails (or stops) leaves: its settled offsets are committed and its
//!   topics unsubscribed (the cooperative protocol takes only its partitions away). When its agent
//!   is restarted it joins again and reads on from its last committed offset: nothing is lost,
//!   and what was in flight is replayed to it alone.
//! - Each region's topics are its own; a region whose topics another lane already reads gets no
//!   lane ([`SharedSources::join`] says so) and its agent reads with a consumer of its own, as
//!   before.
//!
//! The consumer runs on a thread of the worker pool; its only blocking call, the commit when a
//! region leaves, runs on a blocking thread.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::TopicPartitionList;
use tokio::sync::{mpsc, oneshot};

use super::pipeline::{commit, Incoming};
use super::workers::Workers;
use crate::topics::clients::MotConsumer;
use crate::topics::names::TopicName;

/// Records a lane holds for its agent before its partitions are paused.
pub const LANE_CAPACITY: usize = 512;

/// How long a consumer no region reads through is kept before it is closed.
const IDLE_CLOSE: Duration = Duration::from_secs(5);

/// The shared consumers of a process, by consumer group. Cloning shares them.
#[derive(Clone, Default)]
pub struct SharedSources(Arc<Mutex<HashMap<String, Source>>>);

/// A running shared consumer: where to tell it, and the regions reading through it now.
#[derive(Clone)]
struct Source {
    control: mpsc::UnboundedSender<Control>,
    regions: Regions,
}

type Regions = Arc<Mutex<std::collections::BTreeSet<String>>>;

impl std::fmt::Debug for SharedSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self
            .0
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_tuple("SharedSources").field(&groups).finish()
    }
}

/// Builds a shared consumer in group `group`.
pub type MakeConsumer = Box<dyn FnOnce(&str) -> Result<MotConsumer, KafkaError> + Send>;

impl SharedSources {
    /// A lane of the consumer of `group` for `topics`: made (on a worker thread) if there is
    /// none yet. `None` when another lane reads one of `topics` already.
    pub async fn join(
        &self,
        group: &str,
        region: &str,
        topics: Vec<TopicName>,
        make: MakeConsumer,
        workers: &Workers,
    ) -> Result<Option<Lane>, KafkaError> {
        let mut make = Some(make);
        for _ in 0..3 {
            let control = {
                let mut sources = self.0.lock().unwrap_or_else(|p| p.into_inner());
                match sources.get(group) {
                    Some(source) if !source.control.is_closed() => source.control.clone(),
                    _ => {
                        let Some(make) = make.take() else {
                            break;
                        };
                        let regions = Regions::default();
                        let control = start(
                            group.to_owned(),
                            make,
                            workers,
                            self.clone(),
                            regions.clone(),
                        );
                        sources.insert(
                            group.to_owned(),
                            Source {
                                control: control.clone(),
                                regions,
                            },
                        );
                        control
                    }
                }
            };
            let (records, lane_records) = mpsc::channel(LANE_CAPACITY);
            let (reply, joined) = oneshot::channel();
            let id = next_lane_id();
            let asked = control.send(Control::Join {
                id,
                region: region.to_owned(),
                topics: topics.clone(),
                records,
                reply,
            });
            if asked.is_err() {
                continue;
            }
            match joined.await {
                Ok(Ok(true)) => {
                    return Ok(Some(Lane {
                        id,
                        records: lane_records,
                        control,
                        closed: false,
                    }))
                }
                Ok(Ok(false)) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                // The consumer closed meanwhile (idle): make a new one.
                Err(_) => continue,
            }
        }
        Err(KafkaError::Canceled)
    }

    /// The groups of the shared consumers running now.
    pub fn groups(&self) -> Vec<String> {
        let sources = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut groups: Vec<String> = sources
            .iter()
            .filter(|(_, s)| !s.control.is_closed())
            .map(|(g, _)| g.clone())
            .collect();
        groups.sort();
        groups
    }

    /// The regions reading through the consumer of `group` now.
    pub fn regions(&self, group: &str) -> Vec<String> {
        let sources = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sources
            .get(group)
            .map(|s| {
                let regions = s.regions.lock().unwrap_or_else(|p| p.into_inner());
                regions.iter().cloned().collect()
            })
            .unwrap_or_default()
    }

    fn forget(&self, group: &str, control: &mpsc::UnboundedSender<Control>) {
        let mut sources = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if sources
            .get(group)
            .is_some_and(|s| s.control.same_channel(control))
        {
            sources.remove(group);
        }
    }
}

fn next_lane_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One region's agent's view of a shared consumer: the records of its topics, in order per
/// partition, and where it says which it has settled.
pub struct Lane {
    id: u64,
    records: mpsc::Receiver<Incoming>,
    control: mpsc::UnboundedSender<Control>,
    closed: bool,
}

impl Lane {
    /// The next record; `None` when the shared consumer is gone (the agent fails and rejoins).
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.records.recv().await
    }

    /// The record at `offset` of `topic`/`partition` is done: its offset may be stored.
    pub fn settled(&self, topic: &str, partition: i32, offset: i64) {
        let _ = self.control.send(Control::Settled {
            id: self.id,
            topic: topic.to_owned(),
            partition,
            offset,
        });
    }

    /// Leaves the consumer once what was settled is committed.
    pub async fn close(mut self) {
        self.closed = true;
        let (reply, committed) = oneshot::channel();
        if self
            .control
            .send(Control::Leave {
                id: self.id,
                reply: Some(reply),
            })
            .is_ok()
        {
            let _ = committed.await;
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.control.send(Control::Leave {
                id: self.id,
                reply: None,
            });
        }
    }
}

/// What lanes tell their consumer.
pub enum Control {
    Join {
        id: u64,
        region: String,
        topics: Vec<TopicName>,
        records: mpsc::Sender<Incoming>,
        reply: oneshot::Sender<Result<bool, KafkaError>>,
    },
    Settled {
        id: u64,
        topic: String,
        partition: i32,
        offset: i64,
    },
    Leave {
        id: u64,
        reply: Option<oneshot::Sender<()>>,
    },
}

struct LaneState {
    region: String,
    topics: Vec<String>,
    records: mpsc::Sender<Incoming>,
    /// Records the lane had no room for, in order.
    held: VecDeque<Incoming>,
    /// Whether its partitions are paused (it holds [`HOLD_BEFORE_PAUSE`] records or more while
    /// other lanes flow).
    paused: bool,
}

/// Records a full lane holds before its partitions are paused. Pausing drops what librdkafka
/// prefetched for them (it is fetched again on resume), so a lane is paused only when it is far
/// behind and other lanes could use the consumer meanwhile; when every lane is full the consumer
/// simply stops taking records.
const HOLD_BEFORE_PAUSE: usize = 256;

fn start(
    group: String,
    make: MakeConsumer,
    workers: &Workers,
    sources: SharedSources,
    regions: Regions,
) -> mpsc::UnboundedSender<Control> {
    let (control, inbox) = mpsc::unbounded_channel();
    let me = control.clone();
    workers.next().spawn_fn(move || {
        actix::spawn(async move {
            match make(&group) {
                Ok(consumer) => {
                    tracing::info!(%group, "shared consumer started");
                    run(&group, Arc::new(consumer), inbox, &regions).await;
                    tracing::info!(%group, "shared consumer closed");
                }
                Err(e) => tracing::error!(%group, error = %e, "cannot make the shared consumer"),
            }
            sources.forget(&group, &me);
        });
    });
    control
}

async fn run(
    group: &str,
    consumer: Arc<MotConsumer>,
    mut inbox: mpsc::UnboundedReceiver<Control>,
    regions: &Regions,
) {
    let joined = |lanes: &HashMap<u64, LaneState>| {
        let mut regions = regions.lock().unwrap_or_else(|p| p.into_inner());
        *regions = lanes.values().map(|l| l.region.clone()).collect();
    };
    let mut lanes: HashMap<u64, LaneState> = HashMap::new();
    let mut owner: HashMap<String, u64> = HashMap::new();
    let mut idle = tokio::time::interval(IDLE_CLOSE);
    idle.tick().await;
    loop {
        tokio::select! {
            biased;
            message = inbox.recv() => {
                let Some(message) = message else { break };
                match message {
                    Control::Join { id, region, topics, records, reply } => {
                        let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
                        if names.iter().any(|t| owner.contains_key(t)) {
                            let _ = reply.send(Ok(false));
                            continue;
                        }
                        for topic in &names {
                            owner.insert(topic.clone(), id);
                        }
                        lanes.insert(id, LaneState { region: region.clone(), topics: names, records, held: VecDeque::new(), paused: false });
                        joined(&lanes);
                        let subscribed = subscribe(&consumer, &owner);
                        tracing::info!(group, %region, topics = ?topics, lanes = lanes.len(), "region joined the shared consumer");
                        let _ = reply.send(subscribed.map(|()| true));
                    }
                    Control::Settled { id, topic, partition, offset } => {
                        if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                            // The partition was revoked meanwhile: its new owner replays.
                            tracing::debug!(group, %topic, partition, offset, error = %e, "offset not stored");
                        }
                        if let Some(lane) = lanes.get_mut(&id) {
                            hand_over_held(&consumer, lane);
                        }
                    }
                    Control::Leave { id, reply } => {
                        if let Some(lane) = lanes.remove(&id) {
                            joined(&lanes);
                            owner.retain(|_, lane_id| *lane_id != id);
                            // Its partitions go; paused ones are resumed first, so they come
                            // back unpaused when it joins again.
                            set_paused(&consumer, &lane.topics, false);
                            commit(group, &consumer).await;
                            if let Err(e) = subscribe(&consumer, &owner) {
                                tracing::warn!(group, error = %e, "resubscribing failed");
                            }
                            tracing::info!(group, region = %lane.region, lanes = lanes.len(), "region left the shared consumer");
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(());
                        }
                        idle.reset();
                    }
                }
            }
            received = consumer.recv(), if lanes.values().any(|l| l.held.is_empty()) => {
                let message = match received {
                    Ok(message) => message,
                    Err(e) => {
                        // librdkafka recovers by itself (a broker away, a topic not there yet).
                        tracing::warn!(group, error = %e, "shared consumer reported an error; continuing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let incoming = Incoming::from_message(&message);
                drop(message);
                // A record of a topic no lane reads any more (fetched before it left) is not
                // stored: whoever reads that topic next starts from the last commit.
                let Some(lane) = owner.get(&incoming.topic).and_then(|id| lanes.get_mut(id)) else {
                    continue;
                };
                if lane.held.is_empty() {
                    match lane.records.try_send(incoming) {
                        Ok(()) => continue,
                        Err(mpsc::error::TrySendError::Full(incoming)) => lane.held.push_back(incoming),
                        // Its agent is gone; its Leave is on the way.
                        Err(mpsc::error::TrySendError::Closed(_)) => continue,
                    }
                } else {
                    lane.held.push_back(incoming);
                }
                if lane.held.len() >= HOLD_BEFORE_PAUSE && !lane.paused {
                    lane.paused = true;
                    set_paused(&consumer, &lane.topics, true);
                    tracing::debug!(group, region = %lane.region, "lane far behind; its partitions paused");
                }
            }
            _ = idle.tick(), if lanes.is_empty() => {
                break;
            }
        }
    }
    commit(group, &consumer).await;
    // Dropping a consumer can block (it leaves the group): not on a worker thread.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
}

/// Moves what `lane` holds into its channel while there is room; resumes its partitions once
/// it holds nothing.
fn hand_over_held(consumer: &MotConsumer, lane: &mut LaneState) {
    if lane.held.is_empty() {
        return;
    }
    while let Some(incoming) = lane.held.pop_front() {
        match lane.records.try_send(incoming) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(incoming)) => {
                lane.held.push_front(incoming);
                return;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                lane.held.clear();
                return;
            }
        }
    }
    if lane.paused {
        lane.paused = false;
        set_paused(consumer, &lane.topics, false);
    }
}

/// Pauses or resumes the partitions of `topics` this consumer is assigned.
fn set_paused(consumer: &MotConsumer, topics: &[String], paused: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let mut mine = TopicPartitionList::new();
    for element in assignment.elements() {
        if topics.iter().any(|t| t == element.topic()) {
            mine.add_partition(element.topic(), element.partition());
        }
    }
    if mine.count() == 0 {
        return;
    }
    let done = if paused {
        consumer.pause(&mine)
    } else {
        consumer.resume(&mine)
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, paused, "pausing or resuming partitions failed");
    }
}

fn subscribe(consumer: &MotConsumer, owner: &HashMap<String, u64>) -> Result<(), KafkaError> {
    let mut topics: Vec<&str> = owner.keys().map(String::as_str).collect();
    topics.sort_unstable();
    if topics.is_empty() {
        consumer.unsubscribe();
        return Ok(());
    }
    consumer.subscribe(&topics)
}

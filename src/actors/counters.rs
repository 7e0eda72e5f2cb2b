//! Counters per agent and region: records in, published, unchanged, skipped, dead-lettered,
//! restarts. Readable by tests and exported as metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;

use crate::topics::names::RegionName;

/// One agent's counters in one region.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records consumed.
    pub records_in: AtomicU64,
    /// Records produced and acknowledged by the home cluster.
    pub published: AtomicU64,
    /// Records whose result equalled the last published one, so nothing was published.
    pub unchanged: AtomicU64,
    /// Records for another region, passed over.
    pub skipped: AtomicU64,
    /// Records sent to the dead-letter topic (acknowledged).
    pub dead_lettered: AtomicU64,
    /// Polls of a platform API that got no answer (pollers only).
    pub poll_errors: AtomicU64,
    /// Full reads of a zone, by a poller that watches before it reads (Consul's).
    pub zone_reads: AtomicU64,
    /// Reads of one zone that got no usable answer (zone pollers; each zone counted, whether or
    /// not the others answered).
    pub zone_errors: AtomicU64,
    /// Times the agent was restarted by its supervisor.
    pub restarts: AtomicU64,
    /// The backoff before the latest restart, in milliseconds.
    pub last_backoff_ms: AtomicU64,
    /// Zones found drifted from their deployment (the mending agent).
    pub drifts_detected: AtomicU64,
    /// Drifts mended: the scheduler runs the deployment again (the mending agent).
    pub mended: AtomicU64,
    /// Mends the scheduler refused or did not answer, each retried later (the mending agent).
    pub mend_failures: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    pub records_in: u64,
    pub published: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub poll_errors: u64,
    pub zone_reads: u64,
    pub zone_errors: u64,
    pub restarts: u64,
    pub last_backoff_ms: u64,
    pub drifts_detected: u64,
    pub mended: u64,
    pub mend_failures: u64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            records_in: get(&self.records_in),
            published: get(&self.published),
            unchanged: get(&self.unchanged),
            skipped: get(&self.skipped),
            dead_lettered: get(&self.dead_lettered),
            poll_errors: get(&self.poll_errors),
            zone_reads: get(&self.zone_reads),
            zone_errors: get(&self.zone_errors),
            restarts: get(&self.restarts),
            last_backoff_ms: get(&self.last_backoff_ms),
            drifts_detected: get(&self.drifts_detected),
            mended: get(&self.mended),
            mend_failures: get(&self.mend_failures),
        }
    }
}

/// What every agent of a process shares: its counters, by agent name and region, the Cassandra
/// session of the agents that write projections, the producers, and the threads they run on. Cloning shares the registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    counters: Arc<DashMap<(String, RegionName), Arc<Counters>>>,
    /// The projections' session, opened by the first agent that needs it.
    pub store: crate::store::SharedSession,
    /// One producer per home cluster, shared by the agents producing there.
    pub producers: crate::topics::clients::SharedProducers,
    /// The threads agents run on.
    pub workers: super::workers::Workers,
    /// The consumers shared by the agents, one per agent kind and cluster read.
    pub sources: super::shared_source::SharedSources,
}

impl Registry {
    /// A registry whose agents run on `threads` threads (0: one per core).
    pub fn with_workers(threads: usize) -> Self {
        Self {
            workers: super::workers::Workers::new(threads),
            ..Self::default()
        }
    }

    /// The counters of `agent` in `region`, created on first use.
    pub fn get(&self, agent: &str, region: &RegionName) -> Arc<Counters> {
        self.counters
            .entry((agent.to_owned(), region.clone()))
            .or_default()
            .clone()
    }

    /// Forgets the counters of `region`'s agents (the region was removed from the topology).
    pub fn remove_region(&self, region: &RegionName) {
        self.counters.retain(|(_, r), _| r != region);
    }

    /// A snapshot of every agent's counters.
    pub fn snapshot(&self) -> Vec<(String, RegionName, CountersSnapshot)> {
        let mut all: Vec<_> = self
            .counters
            .iter()
            .map(|e| (e.key().0.clone(), e.key().1.clone(), e.value().snapshot()))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }
}

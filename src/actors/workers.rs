//! The threads agents run on: a fixed pool of actix arbiters, one per core unless
//! `node.worker_threads` says otherwise, made on first use and shared by every region's agents.
//! Each agent starts on the next thread in turn, so a process's agents use every core, and no
//! agent's work waits for another's on a single thread. What could block a thread (librdkafka's
//! synchronous calls: commits, flushes, metadata and watermark reads) runs on tokio's blocking
//! threads instead, never on these.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use actix::{Arbiter, ArbiterHandle};

/// The pool. Cloning shares it.
#[derive(Clone, Default)]
pub struct Workers(Arc<Pool>);

#[derive(Default)]
struct Pool {
    /// Threads to make; 0: one per core.
    size: usize,
    arbiters: OnceLock<Vec<Arbiter>>,
    next: AtomicUsize,
}

impl Workers {
    /// A pool of `threads` threads (0: one per core), made when first used.
    pub fn new(threads: usize) -> Self {
        Self(Arc::new(Pool {
            size: threads,
            ..Pool::default()
        }))
    }

    /// The thread the next agent starts on. Must be called inside the actix system.
    pub fn next(&self) -> ArbiterHandle {
        let arbiters = self.0.arbiters.get_or_init(|| {
            let size = match self.0.size {
                0 => std::thread::available_parallelism()
                    .map(std::num::NonZeroUsize::get)
                    .unwrap_or(1),
                n => n,
            };
            tracing::info!(threads = size, "agent worker threads started");
            (0..size).map(|_| Arbiter::new()).collect()
        });
        let i = self.0.next.fetch_add(1, Ordering::Relaxed) % arbiters.len();
        arbiters[i].handle()
    }

    /// How many threads the pool has made (0 before first use).
    pub fn threads(&self) -> usize {
        self.0.arbiters.get().map_or(0, Vec::len)
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("size", &self.0.size)
            .field("threads", &self.threads())
            .finish()
    }
}

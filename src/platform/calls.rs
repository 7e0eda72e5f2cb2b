//! Calls to the platforms (Marathon, Mesos, Consul) made by this process: how many, how they
//! ended and how long they took, by platform and operation, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use dashmap::DashMap;

/// Platform, operation (method and route), outcome (`ok` or `error`).
pub type CallKey = (&'static str, &'static str, &'static str);

/// Count and microseconds spent.
#[derive(Debug, Default)]
pub struct CallTotals {
    pub count: AtomicU64,
    pub micros: AtomicU64,
}

fn calls() -> &'static DashMap<CallKey, CallTotals> {
    static CALLS: OnceLock<DashMap<CallKey, CallTotals>> = OnceLock::new();
    CALLS.get_or_init(DashMap::new)
}

/// Counts one call of `operation` on `platform` that took `elapsed`.
pub fn record(platform: &'static str, operation: &'static str, ok: bool, elapsed: Duration) {
    let entry = calls()
        .entry((platform, operation, if ok { "ok" } else { "error" }))
        .or_default();
    entry.count.fetch_add(1, Ordering::Relaxed);
    entry
        .micros
        .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
}

/// Every call series: key, count, microseconds.
pub fn snapshot() -> Vec<(CallKey, u64, u64)> {
    let mut all: Vec<_> = calls()
        .iter()
        .map(|e| {
            (
                *e.key(),
                e.value().count.load(Ordering::Relaxed),
                e.value().micros.load(Ordering::Relaxed),
            )
        })
        .collect();
    all.sort();
    all
}

/// Runs `call`, recording it.
pub async fn timed<T, E>(
    platform: &'static str,
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    let result = call.await;
    record(platform, operation, result.is_ok(), started.elapsed());
    result
}

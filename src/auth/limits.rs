//! The per-principal rate limit on mutating calls: a token bucket per principal, refilled at
//! `mutations_per_minute`, holding at most `mutation_burst` calls. Each API instance keeps its
//! own buckets: behind a load balancer spreading calls over N instances, a principal gets up to
//! N times the rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by principal.
pub struct RateLimiter {
    /// Calls per minute (0: no limit), and the burst, packed so a reload changes both at once.
    rate: AtomicU64,
    buckets: DashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            rate: AtomicU64::new(pack(per_minute, burst)),
            buckets: DashMap::new(),
        }
    }

    pub fn set_rate(&self, per_minute: u32, burst: u32) {
        self.rate.store(pack(per_minute, burst), Ordering::Relaxed);
    }

    /// Takes one call from `principal`'s bucket; when it is empty, how long until it holds one.
    pub fn take(&self, principal: &str) -> Result<(), Duration> {
        self.take_at(principal, Instant::now())
    }

    fn take_at(&self, principal: &str, now: Instant) -> Result<(), Duration> {
        let packed = self.rate.load(Ordering::Relaxed);
        let (per_minute, burst) = ((packed >> 32) as u32, packed as u32);
        if per_minute == 0 {
            return Ok(());
        }
        let per_sec = f64::from(per_minute) / 60.0;
        let capacity = f64::from(burst.max(1));
        let mut bucket = self.buckets.entry(principal.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

fn pack(per_minute: u32, burst: u32) -> u64 {
    (u64::from(per_minute) << 32) | u64::from(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(60, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take_at("ci", t0), Ok(()));
        }
        let wait = limiter.take_at("ci", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another principal has its own bucket.
        assert_eq!(limiter.take_at("other", t0), Ok(()));
        assert_eq!(limiter.take_at("ci", t0 + Duration::from_secs(1)), Ok(()));
        assert!(limiter.take_at("ci", t0 + Duration::from_secs(1)).is_err());
        limiter.set_rate(0, 0);
        assert_eq!(limiter.take_at("ci", t0), Ok(()));
    }
}

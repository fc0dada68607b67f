//! In-process rate limiting with bounded memory.
//!
//! Token buckets keyed by client address or principal. Written here rather than taken from
//! `governor` because failed-authentication limiting needs to ask "is this address blocked?"
//! without spending a token (only failures spend), which governor's API cannot do, and
//! because memory must stay bounded under a flood of distinct keys between purges: when the
//! table is full, idle buckets (refilled to capacity, so holding no state) are dropped, and
//! if none are idle a new key is refused, failing closed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A keyed token-bucket limiter.
#[derive(Debug)]
pub struct Limiter {
    /// Tokens added per second.
    rate: f64,
    /// Bucket capacity (the burst).
    burst: f64,
    capacity: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Limiter {
    /// `per_period` events per `period`, with bursts up to `per_period`, tracking at most
    /// `capacity` keys.
    #[must_use]
    pub fn new(per_period: u32, period: Duration, capacity: usize) -> Self {
        let burst = f64::from(per_period.max(1));
        Self {
            rate: burst / period.as_secs_f64().max(f64::EPSILON),
            burst,
            capacity: capacity.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
    }

    fn wait_for_token(&self, bucket: &Bucket) -> Duration {
        Duration::from_secs_f64(((1.0 - bucket.tokens) / self.rate).max(0.0))
    }

    /// Whether `key` has a token left, without spending it.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match buckets.get_mut(key) {
            Some(bucket) => {
                self.refill(bucket, now);
                if bucket.tokens >= 1.0 { Ok(()) } else { Err(self.wait_for_token(bucket)) }
            }
            None => Ok(()),
        }
    }

    /// Spends a token of `key`; refused (with the wait until the next token) when none is left.
    pub fn spend(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.capacity {
            buckets.retain(|_, bucket| {
                let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
                bucket.tokens + elapsed * self.rate < self.burst
            });
            if buckets.len() >= self.capacity {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, updated: now });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait_for_token(bucket))
        }
    }

    /// How many keys are tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_the_burst_then_refuses() {
        let limiter = Limiter::new(3, Duration::from_secs(60), 10);
        for _ in 0..3 {
            assert!(limiter.spend("a").is_ok());
        }
        let wait = limiter.spend("a").unwrap_err();
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(limiter.check("a").is_err());
        assert!(limiter.spend("b").is_ok(), "keys are independent");
    }

    #[test]
    fn check_does_not_spend() {
        let limiter = Limiter::new(1, Duration::from_secs(60), 10);
        for _ in 0..10 {
            assert!(limiter.check("a").is_ok());
        }
        assert!(limiter.spend("a").is_ok());
        assert!(limiter.check("a").is_err());
    }

    #[test]
    fn memory_is_bounded_and_full_tables_fail_closed() {
        let limiter = Limiter::new(5, Duration::from_secs(3600), 100);
        for i in 0..100 {
            assert!(limiter.spend(&format!("k{i}")).is_ok());
        }
        // Every bucket has spent a token and will not refill for minutes: nothing is idle.
        assert!(limiter.spend("new").is_err());
        assert_eq!(limiter.len(), 100);
        // Existing keys still work.
        assert!(limiter.spend("k0").is_ok());
    }

    #[test]
    fn idle_buckets_make_room() {
        let limiter = Limiter::new(1000, Duration::from_millis(1), 2);
        assert!(limiter.spend("a").is_ok());
        assert!(limiter.spend("b").is_ok());
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.spend("c").is_ok());
        assert!(limiter.len() <= 2);
    }
}

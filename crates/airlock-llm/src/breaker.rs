//! Circuit breakers, one per upstream id: an upstream that keeps failing is skipped for a while
//! instead of making every request wait for it.
//!
//! A breaker opens after `failure_threshold` consecutive failures (connect errors, timeouts,
//! 5xx, 429), stays open for `open_for`, then lets exactly one trial request through
//! (half-open): its success closes the breaker, its failure opens it again. Memory is bounded:
//! only upstreams with recent failures are remembered, at most [`MAX_TRACKED`] of them. Time is
//! [`std::time::Instant`], so short durations work in tests without a mocked clock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The most upstream ids a [`Breakers`] remembers; past it, the least recently failed is
/// forgotten (that upstream's breaker starts again closed).
pub const MAX_TRACKED: usize = 4096;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 counts as 1.
    pub failure_threshold: u32,
    /// How long an open breaker skips its upstream before letting one trial request through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    /// Five consecutive failures open the breaker for 30 s.
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(30) }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests go through.
    Closed,
    /// Requests skip the upstream.
    Open,
    /// The open period is over: the next request is a trial (and while it runs, others still
    /// skip the upstream).
    HalfOpen,
}

impl BreakerState {
    /// The state's name, for metrics and status pages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// The breakers of every upstream, keyed by upstream id. Shared by reference (put it in an
/// `Arc`); all methods take `&self`.
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    entries: Mutex<HashMap<String, Entry>>,
}

/// What is remembered of an upstream that has failed since its last success.
#[derive(Debug)]
struct Entry {
    consecutive_failures: u32,
    /// When the breaker last opened; `None` while closed.
    opened_at: Option<Instant>,
    /// Whether the half-open trial request is running.
    trial_running: bool,
    /// The last failure, for eviction.
    last_failure: Instant,
}

impl Breakers {
    /// Breakers that all follow `config`.
    #[must_use]
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, entries: Mutex::default() }
    }

    /// The breaker's state for `upstream_id` (closed if nothing is known of it).
    #[must_use]
    pub fn state(&self, upstream_id: &str) -> BreakerState {
        self.state_at(upstream_id, Instant::now())
    }

    /// Asks to send one request to `upstream_id`: `None` while its breaker is open (or while
    /// another request is its half-open trial). The answer's verdict must be reported on the
    /// [`Admission`]; dropping it without one records nothing (and frees the trial slot).
    #[must_use]
    pub fn admit(&self, upstream_id: &str) -> Option<Admission<'_>> {
        self.admit_at(upstream_id, Instant::now())
    }

    /// Records a failure of `upstream_id` seen outside an admission, such as a stream that
    /// broke off after its successful start.
    pub fn record_failure(&self, upstream_id: &str) {
        self.failed_at(upstream_id, false, Instant::now());
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // The map is consistent after every statement, so a panic elsewhere cannot leave it
        // half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether an entry opened at `opened_at` is still within its open period at `now`.
    fn still_open(&self, opened_at: Instant, now: Instant) -> bool {
        opened_at.checked_add(self.config.open_for).is_none_or(|until| now < until)
    }

    fn state_at(&self, upstream_id: &str, now: Instant) -> BreakerState {
        match self.lock().get(upstream_id).and_then(|entry| entry.opened_at) {
            None => BreakerState::Closed,
            Some(opened_at) if self.still_open(opened_at, now) => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn admit_at(&self, upstream_id: &str, now: Instant) -> Option<Admission<'_>> {
        let trial = {
            let mut entries = self.lock();
            match entries.get_mut(upstream_id) {
                Some(Entry { opened_at: Some(opened_at), trial_running, .. }) => {
                    if self.still_open(*opened_at, now) || *trial_running {
                        return None;
                    }
                    *trial_running = true;
                    true
                }
                _ => false,
            }
        };
        Some(Admission { breakers: self, upstream_id: upstream_id.to_owned(), trial, reported: false })
    }

    fn succeeded(&self, upstream_id: &str) {
        // A closed breaker with no failures is the default: nothing to remember.
        self.lock().remove(upstream_id);
    }

    fn failed_at(&self, upstream_id: &str, trial: bool, now: Instant) {
        let threshold = self.config.failure_threshold.max(1);
        let mut entries = self.lock();
        if !entries.contains_key(upstream_id) && entries.len() >= MAX_TRACKED {
            let oldest = entries.iter().min_by_key(|(_, e)| e.last_failure).map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        let entry = entries.entry(upstream_id.to_owned()).or_insert(Entry {
            consecutive_failures: 0,
            opened_at: None,
            trial_running: false,
            last_failure: now,
        });
        entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
        entry.last_failure = now;
        if trial {
            entry.trial_running = false;
            entry.opened_at = Some(now);
        } else if entry.opened_at.is_none() && entry.consecutive_failures >= threshold {
            entry.opened_at = Some(now);
        }
    }

    fn abandoned(&self, upstream_id: &str) {
        if let Some(entry) = self.lock().get_mut(upstream_id) {
            entry.trial_running = false;
        }
    }
}

/// Leave to send one request to an upstream, from [`Breakers::admit`]. Report how it went with
/// [`Admission::succeeded`] or [`Admission::failed`]; dropped without a verdict (the request
/// was cancelled, or its answer says nothing about the upstream's health), it records nothing.
#[derive(Debug)]
#[must_use = "an admission reports the request's outcome to the breaker"]
pub struct Admission<'a> {
    breakers: &'a Breakers,
    upstream_id: String,
    /// Whether this is the half-open trial.
    trial: bool,
    reported: bool,
}

impl Admission<'_> {
    /// Whether this request is the half-open trial.
    #[must_use]
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The upstream answered: its breaker closes and its failure count resets.
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breakers.succeeded(&self.upstream_id);
    }

    /// The upstream failed (connect error, timeout, 5xx, 429).
    pub fn failed(self) {
        self.failed_at(Instant::now());
    }

    fn failed_at(mut self, now: Instant) {
        self.reported = true;
        self.breakers.failed_at(&self.upstream_id, self.trial, now);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.trial && !self.reported {
            self.breakers.abandoned(&self.upstream_id);
        }
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;

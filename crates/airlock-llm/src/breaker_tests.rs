//! The breaker's state machine, on explicit instants so nothing sleeps.

use super::*;

const OPEN_FOR: Duration = Duration::from_secs(10);

fn breakers(failure_threshold: u32) -> Breakers {
    Breakers::new(BreakerConfig { failure_threshold, open_for: OPEN_FOR })
}

fn fail(breakers: &Breakers, id: &str, now: Instant) {
    breakers.admit_at(id, now).expect("admitted").failed_at(now);
}

#[test]
fn an_unknown_upstream_is_closed() {
    let breakers = breakers(3);
    assert_eq!(breakers.state("never-seen"), BreakerState::Closed);
    assert!(breakers.admit("never-seen").is_some());
}

#[test]
fn it_opens_after_the_threshold_of_consecutive_failures() {
    let breakers = breakers(3);
    let t0 = Instant::now();
    fail(&breakers, "a", t0);
    fail(&breakers, "a", t0);
    assert_eq!(breakers.state_at("a", t0), BreakerState::Closed);
    fail(&breakers, "a", t0);
    assert_eq!(breakers.state_at("a", t0), BreakerState::Open);
    assert!(breakers.admit_at("a", t0 + OPEN_FOR / 2).is_none());
    assert_eq!(breakers.state_at("b", t0), BreakerState::Closed, "breakers are per upstream");
}

#[test]
fn a_success_resets_the_count() {
    let breakers = breakers(2);
    let t0 = Instant::now();
    fail(&breakers, "a", t0);
    breakers.admit_at("a", t0).unwrap().succeeded();
    fail(&breakers, "a", t0);
    assert_eq!(breakers.state_at("a", t0), BreakerState::Closed);
    assert!(breakers.lock().get("a").is_some_and(|e| e.consecutive_failures == 1));
}

#[test]
fn half_open_lets_exactly_one_trial_through() {
    let breakers = breakers(1);
    let t0 = Instant::now();
    fail(&breakers, "a", t0);
    let later = t0 + OPEN_FOR;
    assert_eq!(breakers.state_at("a", later), BreakerState::HalfOpen);

    let trial = breakers.admit_at("a", later).unwrap();
    assert!(trial.is_trial());
    assert!(breakers.admit_at("a", later).is_none(), "a second request waits for the trial");
    trial.succeeded();
    assert_eq!(breakers.state_at("a", later), BreakerState::Closed);
    assert!(!breakers.admit_at("a", later).unwrap().is_trial());
}

#[test]
fn a_failed_trial_opens_the_breaker_again() {
    let breakers = breakers(1);
    let t0 = Instant::now();
    fail(&breakers, "a", t0);
    let t1 = t0 + OPEN_FOR;
    breakers.admit_at("a", t1).unwrap().failed_at(t1);
    assert_eq!(breakers.state_at("a", t1), BreakerState::Open);
    assert_eq!(breakers.state_at("a", t1 + OPEN_FOR), BreakerState::HalfOpen);
}

#[test]
fn an_abandoned_trial_frees_the_slot() {
    let breakers = breakers(1);
    let t0 = Instant::now();
    fail(&breakers, "a", t0);
    let t1 = t0 + OPEN_FOR;
    drop(breakers.admit_at("a", t1).unwrap());
    assert!(breakers.admit_at("a", t1).unwrap().is_trial());
}

#[test]
fn a_failure_after_the_answer_counts_too() {
    let breakers = breakers(2);
    breakers.record_failure("a");
    breakers.record_failure("a");
    assert_eq!(breakers.state("a"), BreakerState::Open);
}

#[test]
fn a_zero_threshold_counts_as_one() {
    let breakers = breakers(0);
    let t0 = Instant::now();
    fail(&breakers, "a", t0);
    assert_eq!(breakers.state_at("a", t0), BreakerState::Open);
}

#[test]
fn memory_is_bounded_and_the_oldest_failure_is_forgotten() {
    let breakers = breakers(1);
    let t0 = Instant::now();
    for i in 0..MAX_TRACKED {
        fail(&breakers, &format!("u{i}"), t0 + Duration::from_millis(u64::try_from(i).unwrap()));
    }
    fail(&breakers, "newest", t0 + Duration::from_secs(60));
    let entries = breakers.lock();
    assert_eq!(entries.len(), MAX_TRACKED);
    assert!(!entries.contains_key("u0"));
    assert!(entries.contains_key("u1") && entries.contains_key("newest"));
}

#[test]
fn states_have_stable_names() {
    assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
    assert_eq!(serde_json::to_value(BreakerState::HalfOpen).unwrap(), "half_open");
}

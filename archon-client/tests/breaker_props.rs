#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of breaker invariants.

use std::collections::VecDeque;
use std::sync::Barrier;
use std::time::Duration;

use archon_client::Outcome;
use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
use proptest::prelude::*;

proptest! {
    /// The window's counts are exactly those of the last N recorded calls.
    #[test]
    fn failure_rate_is_over_exactly_the_last_n_calls(
        size in 1u32..40,
        outcomes in proptest::collection::vec(any::<bool>(), 0..200),
    ) {
        let cfg = CircuitBreakerConfig::default().count_window(size);
        let breaker = CircuitBreakerHandle::new("p", cfg).unwrap();
        breaker.metrics_only();
        let mut model = VecDeque::new();
        for failed in outcomes {
            let p = breaker.try_acquire().unwrap();
            p.record_with_duration(
                if failed { Outcome::Failure } else { Outcome::Success },
                Duration::ZERO,
            );
            model.push_back(failed);
            if model.len() > size as usize {
                model.pop_front();
            }
            let m = breaker.metrics();
            prop_assert_eq!(m.calls, model.len() as u64);
            prop_assert_eq!(m.failures, model.iter().filter(|f| **f).count() as u64);
        }
    }

    /// Half-open never has more than N probes out at once, whatever the interleaving of
    /// acquisitions, completions and cancellations.
    #[test]
    fn half_open_never_admits_more_than_n_probes(
        n in 1u32..8,
        ops in proptest::collection::vec(0u8..4, 1..200),
    ) {
        let cfg = CircuitBreakerConfig::default()
            .count_window(4)
            .minimum_calls(4)
            .permitted_calls_in_half_open(n)
            .wait_in_open(Duration::ZERO);
        let breaker = CircuitBreakerHandle::new("p", cfg).unwrap();
        for _ in 0..4 {
            breaker.try_acquire().unwrap().record_with_duration(Outcome::Failure, Duration::ZERO);
        }
        prop_assert_eq!(breaker.state(), CircuitState::Open);
        let mut held = Vec::new();
        for op in ops {
            match op {
                0 | 1 => {
                    if let Ok(p) = breaker.try_acquire() {
                        held.push((breaker.state(), p));
                    }
                }
                2 => {
                    if let Some((_, p)) = held.pop() {
                        p.record_with_duration(Outcome::Failure, Duration::ZERO);
                    }
                }
                _ => {
                    held.pop();
                }
            }
            if breaker.state() == CircuitState::HalfOpen {
                let generation = breaker.generation();
                let out = held
                    .iter()
                    .filter(|(s, p)| *s == CircuitState::HalfOpen && format!("{p:?}").contains(&format!("generation: {generation}")))
                    .count();
                prop_assert!(out <= n as usize, "{out} probes out with n = {n}");
            }
        }
    }

    /// Several threads recording on one breaker at once (each on its own stripe): with no
    /// more calls than the window holds nothing is lost. Past that, the ring orders outcomes
    /// by when they moved in, and a thread's successes move in batches of up to 63, so they
    /// can land after newer outcomes of other threads: the window is the last N calls up to
    /// `(threads - 1) * 63` places of reordering. With a window of at least
    /// `threads * (64 + failures)` calls, failures recorded after every thread's run of
    /// successes are therefore all in it, and it holds exactly N calls.
    #[test]
    fn concurrent_recording_loses_nothing_and_reorders_at_most_one_batch_per_thread(
        threads in 2usize..5,
        extra in 0u32..300,
        failures in 1u32..8,
        seed in any::<u64>(),
    ) {
        let size = threads as u32 * (64 + failures) + extra;
        let cfg = CircuitBreakerConfig::default().count_window(size);
        let breaker = CircuitBreakerHandle::new("p", cfg).unwrap();
        breaker.metrics_only();
        let record = |failed: bool| {
            breaker.try_acquire().unwrap().record_with_duration(
                if failed { Outcome::Failure } else { Outcome::Success },
                Duration::ZERO,
            );
        };
        // Phase 1: fewer calls than the window holds, a pseudo-random mix.
        let per_thread = size as usize / threads;
        let expected_failures: usize = (0..threads)
            .map(|t| (0..per_thread).filter(|i| mix(seed, t, *i)).count())
            .sum();
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (record, barrier) = (&record, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..per_thread {
                        record(mix(seed, t, i));
                    }
                });
            }
        });
        let m = breaker.metrics();
        prop_assert_eq!(m.calls, (per_thread * threads) as u64);
        prop_assert_eq!(m.failures, expected_failures as u64);

        // Phase 2: many successes, then (after every thread is done with them) a few failures
        // per thread: the last N calls are known exactly whatever the interleaving.
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let (record, barrier) = (&record, &barrier);
                s.spawn(move || {
                    for _ in 0..2 * size {
                        record(false);
                    }
                    barrier.wait();
                    for _ in 0..failures {
                        record(true);
                    }
                });
            }
        });
        let m = breaker.metrics();
        prop_assert_eq!(m.calls, u64::from(size));
        prop_assert_eq!(m.failures, u64::from(failures) * threads as u64);
    }
}

/// A pseudo-random outcome for call `i` of thread `t`.
fn mix(seed: u64, t: usize, i: usize) -> bool {
    let x = seed ^ ((t as u64) << 32) ^ i as u64;
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        .is_multiple_of(3)
}

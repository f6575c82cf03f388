#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of breaker invariants.

use std::collections::VecDeque;
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
}

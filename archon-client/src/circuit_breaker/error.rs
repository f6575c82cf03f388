//! Errors of the circuit breaker layer.

use std::fmt;
use std::time::Duration;

use archon_core::BoxError;

use super::state::CircuitState;

/// The breaker rejected the call without calling the inner service.
///
/// Returned by value (no allocation). Inside a `BoxError` find it with
/// `err.downcast_ref::<CircuitOpen>()`.
///
/// ```
/// use archon_client::circuit_breaker::{CircuitBreakerHandle, CircuitOpen, CircuitState};
/// let breaker = CircuitBreakerHandle::new("x", Default::default()).unwrap();
/// breaker.force_open();
/// let open: CircuitOpen = breaker.try_acquire().unwrap_err();
/// assert_eq!(open.state(), CircuitState::ForcedOpen);
/// assert_eq!(open.remaining_wait(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    state: CircuitState,
    remaining: Option<Duration>,
}

impl CircuitOpen {
    pub(crate) fn new(state: CircuitState, remaining: Option<Duration>) -> Self {
        Self { state, remaining }
    }

    /// How long until the breaker lets probes through; `None` when not known (forced open,
    /// or half-open with every probe slot taken).
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle};
    /// let cfg = CircuitBreakerConfig::default().count_window(1).wait_in_open(Duration::from_secs(30));
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// let wait = breaker.try_acquire().unwrap_err().remaining_wait().unwrap();
    /// assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30));
    /// ```
    pub fn remaining_wait(&self) -> Option<Duration> {
        self.remaining
    }

    /// The state that rejected the call: `Open`, `HalfOpen` or `ForcedOpen`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
    /// let cfg = CircuitBreakerConfig::default()
    ///     .count_window(1)
    ///     .wait_in_open(Duration::ZERO)
    ///     .permitted_calls_in_half_open(1);
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// let probe = breaker.try_acquire().unwrap();
    /// let open = breaker.try_acquire().unwrap_err(); // the only probe slot is taken
    /// assert_eq!(open.state(), CircuitState::HalfOpen);
    /// assert_eq!(open.remaining_wait(), None);
    /// # drop(probe);
    /// ```
    pub fn state(&self) -> CircuitState {
        self.state
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.remaining {
            Some(wait) => write!(
                f,
                "circuit breaker is {}; calls allowed again in {wait:?}",
                self.state
            ),
            None => write!(f, "circuit breaker is {}; call rejected", self.state),
        }
    }
}

impl std::error::Error for CircuitOpen {}

/// The error of a [`CircuitBreaker`](super::CircuitBreaker) service: either the breaker
/// rejected the call, or the inner service failed.
///
/// It is not itself boxed, so a rejection costs no allocation. It converts into a `BoxError`
/// (the inner error unchanged, or a boxed [`CircuitOpen`]), so it works wherever tower expects
/// `Into<BoxError>`.
///
/// ```
/// use archon_client::circuit_breaker::{CircuitBreakerError, CircuitOpen};
/// use archon_core::BoxError;
/// let err: CircuitBreakerError<std::io::Error> =
///     CircuitBreakerError::Inner(std::io::Error::other("boom"));
/// let boxed: BoxError = err.into();
/// assert!(boxed.downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Debug)]
pub enum CircuitBreakerError<E> {
    /// Rejected by the breaker.
    Open(CircuitOpen),
    /// The inner service's error.
    Inner(E),
}

impl<E> CircuitBreakerError<E> {
    /// The rejection, if this is one.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerError, CircuitBreakerHandle, CircuitState};
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// breaker.force_open();
    /// let err = CircuitBreakerError::<std::io::Error>::Open(breaker.try_acquire().unwrap_err());
    /// assert_eq!(err.as_open().unwrap().state(), CircuitState::ForcedOpen);
    /// let err = CircuitBreakerError::Inner(std::io::Error::other("boom"));
    /// assert!(err.as_open().is_none());
    /// ```
    pub fn as_open(&self) -> Option<&CircuitOpen> {
        match self {
            Self::Open(open) => Some(open),
            Self::Inner(_) => None,
        }
    }

    /// The inner error, if this is one.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerError, CircuitBreakerHandle};
    /// let err = CircuitBreakerError::Inner(std::io::Error::from(std::io::ErrorKind::TimedOut));
    /// assert_eq!(err.into_inner().unwrap().kind(), std::io::ErrorKind::TimedOut);
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// breaker.force_open();
    /// let err = CircuitBreakerError::<std::io::Error>::Open(breaker.try_acquire().unwrap_err());
    /// assert!(err.into_inner().is_none());
    /// ```
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Open(_) => None,
            Self::Inner(e) => Some(e),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CircuitBreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(open) => open.fmt(f),
            Self::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: Into<BoxError>> From<CircuitBreakerError<E>> for BoxError {
    fn from(err: CircuitBreakerError<E>) -> Self {
        match err {
            CircuitBreakerError::Open(open) => Box::new(open),
            CircuitBreakerError::Inner(e) => e.into(),
        }
    }
}

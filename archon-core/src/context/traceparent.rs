//! The W3C `traceparent` header.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A parsed W3C Trace Context `traceparent`: trace id, parent (span) id and flags.
///
/// Parsing is strict (lower-case hex, no all-zero ids, version `ff` rejected) so that a forged or
/// garbled header is never trusted; later versions are read by their version-00 prefix, as the
/// specification asks.
///
/// ```
/// use archon_core::context::TraceParent;
/// let tp: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(tp.is_sampled());
/// let child = tp.child();
/// assert_eq!(child.trace_id(), tp.trace_id());
/// assert_ne!(child.span_id(), tp.span_id());
/// assert!("00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse::<TraceParent>().is_err());
/// # Ok::<(), archon_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceParent {
    const SAMPLED: u8 = 0x01;

    /// Starts a new trace with random ids, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: random_nonzero_u128(),
            span_id: random_nonzero_u64(),
            flags: Self::SAMPLED,
        }
    }

    /// The same trace with a new span id: what a callee or consumer should propagate onwards.
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            span_id: random_nonzero_u64(),
            ..*self
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span (parent) id as 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The trace id as a number.
    pub fn trace_id_u128(&self) -> u128 {
        self.trace_id
    }

    /// The span id as a number.
    pub fn span_id_u64(&self) -> u64 {
        self.span_id
    }

    /// The trace flags byte.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller sampled this trace.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// Builds one from raw parts; `None` if either id is zero (invalid per the specification).
    pub fn from_parts(trace_id: u128, span_id: u64, flags: u8) -> Option<Self> {
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl FromStr for TraceParent {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &'static str| Error::TraceContext { reason };
        let s = s.trim_matches([' ', '\t']);
        let bytes = s.as_bytes();
        if bytes.len() < 55 {
            return Err(invalid("too short"));
        }
        if !bytes[..55].is_ascii() {
            return Err(invalid("not ASCII"));
        }
        let version = hex_field(&s[0..2]).ok_or(invalid("version is not lower-case hex"))?;
        if version == 0xff {
            return Err(invalid("version ff is forbidden"));
        }
        if version == 0 && bytes.len() != 55 {
            return Err(invalid("version 00 must be exactly 55 characters"));
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return Err(invalid("trailing data must start with '-'"));
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(invalid("fields must be separated by '-'"));
        }
        let trace_id = hex_field(&s[3..35]).ok_or(invalid("trace id is not 32 lower-case hex"))?;
        let span_id = hex_field(&s[36..52]).ok_or(invalid("parent id is not 16 lower-case hex"))?;
        let flags = hex_field(&s[53..55]).ok_or(invalid("flags are not 2 lower-case hex"))?;
        let span_id = u64::try_from(span_id).map_err(|_| invalid("parent id too long"))?;
        let flags = u8::try_from(flags).map_err(|_| invalid("flags too long"))?;
        Self::from_parts(trace_id, span_id, flags).ok_or(invalid("all-zero trace or parent id"))
    }
}

/// Parses lower-case hex only (upper case is invalid in `traceparent`).
fn hex_field(s: &str) -> Option<u128> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

fn random_nonzero_u128() -> u128 {
    loop {
        let v = uuid::Uuid::new_v4().as_u128();
        if v != 0 {
            return v;
        }
    }
}

fn random_nonzero_u64() -> u64 {
    loop {
        // Take 64 random bits from a v4 UUID (its version/variant bits sit in the high half).
        let v = uuid::Uuid::new_v4().as_u128() as u64;
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips() {
        let tp: TraceParent = VALID.parse().unwrap();
        assert_eq!(tp.to_string(), VALID);
        assert_eq!(tp.span_id(), "00f067aa0ba902b7");
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é-",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7é-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn reads_future_versions_by_their_prefix() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        let tp: TraceParent = future.parse().unwrap();
        assert_eq!(tp.to_string(), VALID);
        assert!(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"
                .parse::<TraceParent>()
                .is_err()
        );
    }

    #[test]
    fn roots_are_distinct_and_valid() {
        let a = TraceParent::new_root();
        let b = TraceParent::new_root();
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.to_string().parse::<TraceParent>().unwrap(), a);
    }
}

//! RFC 3339 `time` attribute: written in UTC with nanoseconds, read with any offset.

use std::time::{Duration, SystemTime};

use super::EnvelopeError;

pub(crate) fn format(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

pub(crate) fn parse(raw: &str) -> Result<SystemTime, EnvelopeError> {
    let bad = || EnvelopeError::invalid_attribute("time", "not an RFC 3339 timestamp");
    let raw = raw.trim();
    if !raw.is_ascii() || raw.len() < 20 {
        return Err(bad());
    }
    // Split off a numeric offset (`+02:00`, `-05:30`); humantime reads only `Z`.
    let (base, offset_secs) = match raw.as_bytes()[raw.len() - 6] {
        sign @ (b'+' | b'-') if raw.as_bytes()[raw.len() - 3] == b':' => {
            let hours: u64 = raw[raw.len() - 5..raw.len() - 3]
                .parse()
                .map_err(|_| bad())?;
            let minutes: u64 = raw[raw.len() - 2..].parse().map_err(|_| bad())?;
            if hours > 23 || minutes > 59 {
                return Err(bad());
            }
            let secs = (hours * 3600 + minutes * 60) as i64;
            let secs = if sign == b'+' { secs } else { -secs };
            (format!("{}Z", &raw[..raw.len() - 6]), secs)
        }
        _ => {
            let base = raw
                .strip_suffix('Z')
                .or_else(|| raw.strip_suffix('z'))
                .ok_or_else(bad)?;
            (format!("{base}Z"), 0)
        }
    };
    let utc_as_local = humantime::parse_rfc3339_weak(&base).map_err(|_| bad())?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    let time = if offset_secs >= 0 {
        utc_as_local.checked_sub(shift)
    } else {
        utc_as_local.checked_add(shift)
    };
    time.ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offsets_and_round_trips_nanoseconds() {
        let z = parse("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(parse("2026-11-23T12:30:00+02:30").unwrap(), z);
        assert_eq!(parse("2026-11-23T05:00:00-05:00").unwrap(), z);
        let now = SystemTime::now();
        assert_eq!(parse(&format(now)).unwrap(), now);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for raw in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-23T10:00:00+99:00",
            "é2026-11-23T10:00:00Z",
        ] {
            assert!(parse(raw).is_err(), "{raw}");
        }
    }
}

//! Wall-clock instants with millisecond precision, and durations as the
//! configuration writes them. Pure: the clock the shell reads is in the
//! `clock` module; the planner never reads one, the shell passes `now` in. Timestamps keep
//! milliseconds because second-scale policies (tests run `publish_ahead: 3s`)
//! must not round a key that was published at 10.9 s into signing at 13.0 s.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down), as JWT `iat`/`exp` use.
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn from_unix_seconds(s: i64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// Time from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    pub fn to_chrono(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn from_chrono(t: DateTime<Utc>) -> Self {
        Timestamp(t.timestamp_millis())
    }

    pub fn from_system(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(duration_millis(d)),
            Err(e) => Timestamp(-duration_millis(e.duration())),
        }
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T03:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_chrono()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn parse_rfc3339(s: &str) -> Result<Self, chrono::ParseError> {
        Ok(Timestamp::from_chrono(
            DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc),
        ))
    }
}

/// Milliseconds in `d`, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid timestamp {s:?}: {e}")))
    }
}

/// Formats a duration the way the config file writes it (`25h 1m`), dropping
/// sub-second noise.
pub fn format_duration(d: Duration) -> String {
    let secs = Duration::from_secs(d.as_secs());
    if secs.is_zero() && !d.is_zero() {
        return format!("{}ms", d.as_millis());
    }
    humantime::format_duration(secs).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_milliseconds() {
        let t = Timestamp::from_millis(1_764_126_000_123);
        let s = t.to_rfc3339();
        assert_eq!(s, "2025-11-26T03:00:00.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&s).unwrap(), t);
    }

    #[test]
    fn since_is_zero_when_earlier_is_later() {
        let a = Timestamp::from_millis(1000);
        let b = Timestamp::from_millis(2500);
        assert_eq!(b.since(a), Duration::from_millis(1500));
        assert_eq!(a.since(b), Duration::ZERO);
    }

    #[test]
    fn unix_seconds_rounds_down() {
        assert_eq!(Timestamp::from_millis(10_999).unix_seconds(), 10);
        assert_eq!(Timestamp::from_millis(-1).unix_seconds(), -1);
    }

    #[test]
    fn format_duration_reads_like_config() {
        assert_eq!(format_duration(Duration::from_secs(90_060)), "1day 1h 1m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    }
}

//! Wall-clock instants with millisecond precision, and the clock the shell reads.
//!
//! The planner never reads a clock: the shell passes `now` in. Timestamps keep
//! milliseconds because second-scale policies (tests run `publish_ahead: 3s`)
//! must not round a key that was published at 10.9 s into signing at 13.0 s.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Where the shell gets `now`. Tests inject their own.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }
}

/// Monotonic time since some fixed start: the source [`SteadyClock`] trusts
/// for how much time has passed.
pub type Monotonic = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The operating system's monotonic clock, counting time suspended too
/// (CLOCK_BOOTTIME): after a suspend or a paused VM, the wall clock's
/// advance is real time passed, not a jump.
pub fn os_monotonic() -> Monotonic {
    match boottime() {
        Some(start) => Arc::new(move || boottime().unwrap_or(start).saturating_sub(start)),
        None => {
            let start = Instant::now();
            Arc::new(move || start.elapsed())
        }
    }
}

fn boottime() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (rc == 0).then(|| {
        Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    })
}

/// The daemon's clock: the wall clock, as long as it advances the way the
/// monotonic clock says time passes. A wall clock that jumps (forward or
/// back) by more than `threshold` is not followed: a jump of days forward
/// must not retire keys whose tokens are still alive, nor a jump back issue
/// tokens that are already expired. jwksd keeps its own time (the wall clock
/// at the last agreement plus monotonic time since) until the wall clock
/// agrees again or the daemon restarts; the jump is logged and counted.
pub struct SteadyClock {
    wall: Arc<dyn Clock>,
    mono: Monotonic,
    threshold: Duration,
    state: Mutex<Steady>,
    jumps: AtomicU64,
    offset_ms: AtomicI64,
}

struct Steady {
    anchor_wall: Timestamp,
    anchor_mono: Duration,
    last: Timestamp,
    diverged: bool,
}

impl SteadyClock {
    pub fn new(wall: Arc<dyn Clock>, mono: Monotonic, threshold: Duration) -> SteadyClock {
        let now = wall.now();
        let m = mono();
        SteadyClock {
            wall,
            mono,
            threshold,
            state: Mutex::new(Steady {
                anchor_wall: now,
                anchor_mono: m,
                last: now,
                diverged: false,
            }),
            jumps: AtomicU64::new(0),
            offset_ms: AtomicI64::new(0),
        }
    }

    /// The largest wall-clock step followed: half the clock skew verifiers
    /// tolerate, within 250 ms to 30 s.
    pub fn threshold_for(clock_skew: Duration) -> Duration {
        (clock_skew / 2).clamp(Duration::from_millis(250), Duration::from_secs(30))
    }

    /// How many jumps were detected.
    pub fn jumps(&self) -> u64 {
        self.jumps.load(Ordering::Relaxed)
    }

    /// Wall clock minus this clock, in milliseconds, when they disagree.
    pub fn offset_millis(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

impl Clock for SteadyClock {
    fn now(&self) -> Timestamp {
        let wall = self.wall.now();
        let mono = (self.mono)();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let steady = s
            .anchor_wall
            .saturating_add(mono.saturating_sub(s.anchor_mono));
        let diff = wall.as_millis() - steady.as_millis();
        let now = if diff.unsigned_abs() <= duration_millis(self.threshold) as u64 {
            if s.diverged {
                tracing::warn!(
                    offset_ms = diff,
                    "wall clock agrees with jwksd's time again; following it"
                );
                s.diverged = false;
                self.offset_ms.store(0, Ordering::Relaxed);
            }
            s.anchor_wall = wall;
            s.anchor_mono = mono;
            wall
        } else {
            if !s.diverged {
                s.diverged = true;
                self.jumps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    jump_ms = diff,
                    wall = %wall,
                    jwksd_time = %steady,
                    "wall clock jumped; jwksd keeps its own time (no rotation burst, no early \
                     retirement) until the clocks agree or it is restarted"
                );
            }
            self.offset_ms.store(diff, Ordering::Relaxed);
            steady
        };
        // Never backwards, even by a small step.
        let now = now.max(s.last);
        s.last = now;
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeWall(AtomicI64);
    impl Clock for FakeWall {
        fn now(&self) -> Timestamp {
            Timestamp::from_millis(self.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn steady_clock_ignores_jumps_and_follows_small_drift() {
        let wall = Arc::new(FakeWall(AtomicI64::new(1_000_000)));
        let mono_ms = Arc::new(AtomicI64::new(0));
        let m = mono_ms.clone();
        let mono: Monotonic =
            Arc::new(move || Duration::from_millis(m.load(Ordering::SeqCst) as u64));
        let c = SteadyClock::new(wall.clone(), mono, Duration::from_millis(500));
        let advance = |ms: i64, wall_extra: i64| {
            mono_ms.fetch_add(ms, Ordering::SeqCst);
            wall.0.fetch_add(ms + wall_extra, Ordering::SeqCst);
        };
        advance(1000, 0);
        assert_eq!(c.now().as_millis(), 1_001_000);
        // Small drift is followed.
        advance(1000, 200);
        assert_eq!(c.now().as_millis(), 1_002_200);
        // Three days forward: not followed.
        advance(1000, 3 * 86_400_000);
        assert_eq!(c.now().as_millis(), 1_003_200);
        assert_eq!(c.jumps(), 1);
        assert_eq!(c.offset_millis(), 3 * 86_400_000);
        advance(1000, 0);
        assert_eq!(c.now().as_millis(), 1_004_200);
        assert_eq!(c.jumps(), 1);
        // Back again: agreement, followed.
        advance(0, -3 * 86_400_000);
        assert_eq!(c.now().as_millis(), 1_004_200);
        assert_eq!(c.offset_millis(), 0);
        // A jump back: time does not go backwards.
        advance(1000, -3_600_000);
        assert_eq!(c.now().as_millis(), 1_005_200);
        assert_eq!(c.jumps(), 2);
        // A small step back is clamped, never backwards.
        advance(0, 3_600_000 - 300);
        let t = c.now().as_millis();
        assert!(t >= 1_005_200, "{t}");
    }

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

//! The clocks the shell reads: the operating system's wall clock, and the
//! steady clock the daemon runs on, which reports wall-clock jumps instead
//! of following them. Everything else takes `now` as a [`Timestamp`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::time::{Timestamp, duration_millis};

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
}

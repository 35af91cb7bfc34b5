//! Readiness rules that depend on the timeline. Pure: the upcoming events,
//! the ages of what a process knows and the time in; what makes it unready,
//! or its keys unusable, out.

use std::fmt;
use std::time::Duration;

use crate::lifecycle::policy::Policy;
use crate::lifecycle::{Upcoming, UpcomingEvent};
use crate::time::Timestamp;

/// How long ago the keys a process holds were last known to be the
/// store's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyAges {
    /// How long the commit in flight has run, if one is: the keys it may
    /// deactivate were current when it started.
    pub commit_in_flight: Option<Duration>,
    /// With a shared store: since the state was last read and applied.
    pub since_sync: Option<Duration>,
}

/// Why a process may not sign with or hand out the keys it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotCurrent {
    /// A commit has been in flight this long, past the freshness window:
    /// the store is slow or stalled.
    CommitInFlight(Duration),
    /// The shared state was last read and applied this long ago.
    NotSynced(Duration),
}

impl fmt::Display for NotCurrent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotCurrent::CommitInFlight(d) => write!(
                f,
                "a commit has been in flight for {} s (the store is slow or stalled): signing \
                 refused until it finishes",
                d.as_secs()
            ),
            NotCurrent::NotSynced(d) => write!(
                f,
                "shared state not read for {} s: signing refused until it is",
                d.as_secs()
            ),
        }
    }
}

/// The max-age to serve the active key with now, or why the keys held may
/// not be used at all: they were last known current at the older of the
/// two ages, and are vouched for only within the freshness `window` after
/// it ([`Policy::signing_key_max_age`]). The reason names the older age.
pub fn key_currency(
    policy: &Policy,
    ages: KeyAges,
    window: Duration,
) -> Result<Duration, NotCurrent> {
    let since = match (ages.since_sync, ages.commit_in_flight) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if let Some(max_age) = policy.signing_key_max_age(since, window) {
        return Ok(max_age);
    }
    Err(match (ages.commit_in_flight, ages.since_sync) {
        (Some(c), Some(s)) if c >= s => NotCurrent::CommitInFlight(c),
        (Some(c), None) => NotCurrent::CommitInFlight(c),
        (_, s) => NotCurrent::NotSynced(s.unwrap_or_default()),
    })
}

/// The rotations that were due before `now` and have not happened. While
/// a replica cannot bring its key ring up to date, it serves the last keys
/// it knows only as long as they are still the right ones: until one of
/// these exists. Retirements do not count: a key published longer than
/// needed harms no verifier.
pub fn overdue_rotations(upcoming: &[Upcoming], now: Timestamp) -> impl Iterator<Item = &Upcoming> {
    upcoming
        .iter()
        .filter(move |u| u.at < now && !matches!(u.event, UpcomingEvent::Retire))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::id::{Alg, Kid};

    fn event(at: i64, event: UpcomingEvent) -> Upcoming {
        let kid: Kid = "k1".parse().unwrap();
        Upcoming {
            at: Timestamp::from_unix_seconds(at),
            alg: Alg::ES256,
            kid,
            event,
        }
    }

    #[test]
    fn only_rotations_due_strictly_before_now_are_overdue() {
        let now = Timestamp::from_unix_seconds(1000);
        let up = vec![
            event(999, UpcomingEvent::Rotation),
            event(998, UpcomingEvent::RotationWaitingForPublishAhead),
            event(1000, UpcomingEvent::Rotation),
            event(1001, UpcomingEvent::Rotation),
            event(10, UpcomingEvent::Retire),
        ];
        let overdue: Vec<_> = overdue_rotations(&up, now).collect();
        assert_eq!(overdue, vec![&up[0], &up[1]]);
    }

    #[test]
    fn keys_are_current_within_the_window_after_the_older_age() {
        let p = crate::lifecycle::testing::policy(3); // signer cache 1 s
        let window = Duration::from_secs(10);
        let s = Duration::from_secs;
        let ages = |c: Option<u64>, y: Option<u64>| KeyAges {
            commit_in_flight: c.map(s),
            since_sync: y.map(s),
        };
        // A store of its own, nothing in flight: the configured max-age.
        assert_eq!(key_currency(&p, ages(None, None), window), Ok(s(1)));
        // Cut to what is left of the window after the older age.
        let mut q = p.clone();
        q.signing_key_cache_max_age = s(60);
        assert_eq!(key_currency(&q, ages(Some(4), Some(7)), window), Ok(s(3)));
        assert_eq!(key_currency(&q, ages(Some(7), Some(4)), window), Ok(s(3)));
        // Past it, the reason names the older age.
        assert_eq!(
            key_currency(&p, ages(Some(12), Some(11)), window),
            Err(NotCurrent::CommitInFlight(s(12)))
        );
        assert_eq!(
            key_currency(&p, ages(Some(2), Some(11)), window),
            Err(NotCurrent::NotSynced(s(11)))
        );
        assert_eq!(
            key_currency(&p, ages(Some(11), None), window),
            Err(NotCurrent::CommitInFlight(s(11)))
        );
    }

    #[test]
    fn nothing_upcoming_is_nothing_overdue() {
        let now = Timestamp::from_unix_seconds(1000);
        assert_eq!(overdue_rotations(&[], now).count(), 0);
    }
}

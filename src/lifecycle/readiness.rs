//! Readiness rules that depend on the timeline. Pure: the upcoming events
//! and the time in, what makes a process unready out.

use crate::lifecycle::{Upcoming, UpcomingEvent};
use crate::time::Timestamp;

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
    fn nothing_upcoming_is_nothing_overdue() {
        let now = Timestamp::from_unix_seconds(1000);
        assert_eq!(overdue_rotations(&[], now).count(), 0);
    }
}

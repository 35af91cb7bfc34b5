//! The token lifetime rules: which `iat`/`exp` a token may be signed with,
//! so that no token outlives the time its key stays published. Pure: the
//! claims as numbers, the limits and the time in, a verdict out. The HTTP
//! layer parses JSON and words the refusals.

use std::time::Duration;

use crate::time::{Timestamp, duration_millis};

/// A time claim as it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Absent,
    /// Seconds since the epoch, not negative.
    Seconds(i64),
    /// Present but not a non-negative integer.
    Invalid,
}

/// The time claims of a token to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub iat: Claim,
    pub exp: Claim,
    pub nbf: Claim,
}

/// What the rules are checked against: the policy's `max_token_lifetime`
/// and `clock_skew`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `tokens.max_lifetime`: how long keys stay published after they stop
    /// signing, hence the longest a token may live.
    pub max_token_lifetime: Duration,
    /// `tokens.clock_skew`: how far `iat` may be ahead of this clock.
    pub clock_skew: Duration,
}

/// The `iat` and `exp` a token is signed with (absent claims filled in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub iat: i64,
    pub exp: i64,
}

/// Why a token may not be signed. Times in seconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The claim named is not a non-negative integer.
    NotSeconds(&'static str),
    /// `iat` is ahead of `now` by more than the clock skew.
    IatInFuture { iat: i64, now: i64 },
    /// `exp` is not after `now`.
    ExpInPast { exp: i64, now: i64 },
    /// The token would live past the maximum lifetime, in seconds.
    TooLong { max: i64 },
}

/// Checks the time claims of a token to sign at `now`. Absent `iat` is
/// `now`, absent `exp` is `iat` + the maximum lifetime. The checks run in
/// a fixed order (iat, then exp, then nbf) so that a request breaking
/// several rules is always refused for the same one.
pub fn lifetime(claimed: Claimed, limits: Limits, now: Timestamp) -> Result<Lifetime, Refusal> {
    let now_s = now.unix_seconds();
    let max = duration_millis(limits.max_token_lifetime) / 1000;
    let skew = duration_millis(limits.clock_skew) / 1000;
    let iat = match claimed.iat {
        Claim::Absent => now_s,
        Claim::Seconds(n) => n,
        Claim::Invalid => return Err(Refusal::NotSeconds("iat")),
    };
    if iat > now_s.saturating_add(skew) {
        return Err(Refusal::IatInFuture { iat, now: now_s });
    }
    let exp = match claimed.exp {
        Claim::Absent => iat.saturating_add(max),
        Claim::Seconds(n) => n,
        Claim::Invalid => return Err(Refusal::NotSeconds("exp")),
    };
    if exp <= now_s {
        return Err(Refusal::ExpInPast { exp, now: now_s });
    }
    // Both bounds: an old iat must not stretch the lifetime past now + max.
    if exp.saturating_sub(iat) > max || exp > now_s.saturating_add(max) {
        return Err(Refusal::TooLong { max });
    }
    // nbf is passed through; only its form is checked.
    if claimed.nbf == Claim::Invalid {
        return Err(Refusal::NotSeconds("nbf"));
    }
    Ok(Lifetime { iat, exp })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn limits() -> Limits {
        Limits {
            max_token_lifetime: Duration::from_secs(900),
            clock_skew: Duration::from_secs(60),
        }
    }

    fn check(iat: Claim, exp: Claim, nbf: Claim) -> Result<Lifetime, Refusal> {
        let now = Timestamp::from_unix_seconds(NOW);
        lifetime(Claimed { iat, exp, nbf }, limits(), now)
    }

    use Claim::{Absent, Invalid, Seconds};

    #[test]
    fn absent_claims_give_the_longest_lifetime_from_now() {
        assert_eq!(
            check(Absent, Absent, Absent),
            Ok(Lifetime {
                iat: NOW,
                exp: NOW + 900
            })
        );
        assert_eq!(
            check(Seconds(NOW - 100), Absent, Absent),
            Ok(Lifetime {
                iat: NOW - 100,
                exp: NOW + 800
            })
        );
    }

    #[test]
    fn iat_may_be_ahead_by_the_clock_skew_only() {
        assert!(check(Seconds(NOW + 60), Seconds(NOW + 900), Absent).is_ok());
        assert_eq!(
            check(Seconds(NOW + 61), Absent, Absent),
            Err(Refusal::IatInFuture {
                iat: NOW + 61,
                now: NOW
            })
        );
    }

    #[test]
    fn exp_must_be_after_now() {
        assert_eq!(
            check(Absent, Seconds(NOW), Absent),
            Err(Refusal::ExpInPast { exp: NOW, now: NOW })
        );
        assert!(check(Absent, Seconds(NOW + 1), Absent).is_ok());
    }

    #[test]
    fn the_lifetime_is_bounded_from_iat_and_from_now() {
        assert_eq!(
            check(Seconds(NOW - 10), Seconds(NOW + 891), Absent),
            Err(Refusal::TooLong { max: 900 })
        );
        // iat ahead within the skew: exp - iat fits, exp past now + max does not.
        assert_eq!(
            check(Seconds(NOW + 30), Seconds(NOW + 901), Absent),
            Err(Refusal::TooLong { max: 900 })
        );
        assert!(check(Seconds(NOW), Seconds(NOW + 900), Absent).is_ok());
    }

    #[test]
    fn rules_are_checked_in_order_iat_exp_nbf() {
        assert_eq!(
            check(Seconds(NOW + 61), Invalid, Invalid),
            Err(Refusal::IatInFuture {
                iat: NOW + 61,
                now: NOW
            })
        );
        assert_eq!(
            check(Invalid, Seconds(NOW - 1), Absent),
            Err(Refusal::NotSeconds("iat"))
        );
        assert_eq!(
            check(Absent, Seconds(NOW - 1), Invalid),
            Err(Refusal::ExpInPast {
                exp: NOW - 1,
                now: NOW
            })
        );
        assert_eq!(
            check(Absent, Absent, Invalid),
            Err(Refusal::NotSeconds("nbf"))
        );
        assert!(check(Absent, Absent, Seconds(0)).is_ok());
    }

    #[test]
    fn extreme_values_saturate_instead_of_overflowing() {
        assert_eq!(
            check(Seconds(0), Seconds(i64::MAX), Absent),
            Err(Refusal::TooLong { max: 900 })
        );
        assert_eq!(
            check(Seconds(i64::MAX), Absent, Absent),
            Err(Refusal::IatInFuture {
                iat: i64::MAX,
                now: NOW
            })
        );
        let forever = Limits {
            max_token_lifetime: Duration::MAX,
            clock_skew: Duration::MAX,
        };
        let now = Timestamp::from_unix_seconds(NOW);
        let claimed = Claimed {
            iat: Seconds(NOW),
            exp: Absent,
            nbf: Absent,
        };
        let l = lifetime(claimed, forever, now).unwrap();
        assert_eq!(l.exp, NOW.saturating_add(i64::MAX / 1000));
    }
}

//! The timeline policy: when keys rotate, how long a key is published before
//! it signs, and how long after it stops signing it stays published.

use std::fmt;
use std::time::Duration;

use crate::keys::custody::Custody;
use crate::keys::id::{Alg, RSA_BITS};
use crate::lifecycle::state::Promised;
use crate::time::{Timestamp, format_duration};

/// When scheduled rotations happen.
#[derive(Clone)]
pub enum Schedule {
    /// A fixed period after the active key was activated.
    Every(Duration),
    /// A cron expression (seconds first, UTC). The next rotation is the first
    /// fire after the active key was activated.
    Cron(Box<CronSchedule>),
}

#[derive(Clone)]
pub struct CronSchedule {
    expr: String,
    schedule: cron::Schedule,
}

impl CronSchedule {
    pub fn expr(&self) -> &str {
        &self.expr
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", format_duration(*d)),
            Schedule::Cron(c) => write!(f, "cron {:?}", c.expr),
        }
    }
}

/// How many future fires [`Schedule::min_period`] inspects.
const MIN_PERIOD_HORIZON: usize = 1000;

impl Schedule {
    /// Parses a cron expression with seconds first (6 or 7 fields), as the
    /// `cron` crate reads it. Five-field expressions are refused: that crate
    /// would read their first field as seconds.
    pub fn cron(expr: &str) -> Result<Schedule, PolicyError> {
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && !(6..=7).contains(&fields) {
            return Err(PolicyError::CronFields {
                expr: expr.to_owned(),
                fields,
            });
        }
        let schedule: cron::Schedule =
            expr.parse()
                .map_err(|e: cron::error::Error| PolicyError::CronInvalid {
                    expr: expr.to_owned(),
                    reason: e.to_string(),
                })?;
        let s = Schedule::Cron(Box::new(CronSchedule {
            expr: expr.to_owned(),
            schedule,
        }));
        Ok(s)
    }

    /// The first scheduled rotation strictly after `t`; `None` when the
    /// schedule never fires again.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => Some(t.saturating_add(*d)),
            Schedule::Cron(c) => c
                .schedule
                .after(&t.to_chrono())
                .next()
                .map(Timestamp::from_chrono),
        }
    }

    /// The shortest gap between two consecutive rotations from `from` on
    /// (over the next thousand fires of a cron schedule).
    pub fn min_period(&self, from: Timestamp) -> Option<Duration> {
        match self {
            Schedule::Every(d) => Some(*d),
            Schedule::Cron(c) => {
                let mut fires = c.schedule.after(&from.to_chrono()).take(MIN_PERIOD_HORIZON);
                let mut prev = Timestamp::from_chrono(fires.next()?);
                let mut min: Option<Duration> = None;
                for f in fires {
                    let f = Timestamp::from_chrono(f);
                    let gap = f.since(prev);
                    min = Some(min.map_or(gap, |m| m.min(gap)));
                    prev = f;
                }
                min
            }
        }
    }
}

/// The timeline rules, derived from configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Algorithms that must each have an active and a next key.
    pub algorithms: Vec<Alg>,
    /// Modulus size for newly generated RSA keys.
    pub rsa_bits: u32,
    pub schedule: Schedule,
    /// `tokens.max_lifetime`: the longest `exp - iat` of any token.
    pub max_token_lifetime: Duration,
    /// `tokens.clock_skew`: the leeway verifiers allow.
    pub clock_skew: Duration,
    /// `jwks.cache_max_age`: Cache-Control max-age of the JWKS.
    pub jwks_cache_max_age: Duration,
    /// `jwks.publish_ahead`: minimum time in the JWKS before a key signs.
    pub publish_ahead: Duration,
    /// `signing_key.cache_max_age`: how long a signer may keep using a key it
    /// pulled.
    pub signing_key_cache_max_age: Duration,
    /// How long after the planner's `now` a committed change may still be
    /// unknown to a reader, so that a key it deactivates may still be handed
    /// out and sign: the store's commit window (a key directory's 2 s, past
    /// which this process stops handing out keys until the commit returns;
    /// PostgreSQL's 10 s commit deadline), plus, with a shared store,
    /// `store.poll_interval` (a replica learns of the change at its next
    /// read). Part of the retention; derived from the store, not configured.
    pub propagation: Duration,
    /// Where new keys are made (`keys.backend`). A next key made elsewhere
    /// (before a backend change) is retired unused and made again here: a
    /// backend change is a rotation ([`crate::lifecycle::plan`]).
    pub custody: Custody,
}

/// Manual rotations whose retired-out keys may be published at once, per
/// algorithm, on top of what the schedule produces: keeps the JWK Set bounded
/// when an operator rotates in a loop.
pub const MANUAL_RETIRING_LIMIT: usize = 4;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error(
        "cron expression {expr:?} has {fields} fields: expected 6 or 7 with seconds first \
         (\"sec min hour day-of-month month day-of-week [year]\", e.g. \"0 0 3 * * *\")"
    )]
    CronFields { expr: String, fields: usize },
    #[error("cron expression {expr:?} is invalid: {reason}")]
    CronInvalid { expr: String, reason: String },
    #[error("cron expression {0:?} never fires again")]
    CronNeverFires(String),
    #[error("{} must be greater than zero", .path.join("."))]
    Zero { path: &'static [&'static str] },
    #[error(
        "jwks.publish_ahead ({publish_ahead}) is shorter than jwks.cache_max_age ({cache}): \
         verifiers holding a cached JWKS would not know a new key when it starts to sign"
    )]
    PublishAheadTooShort {
        publish_ahead: String,
        cache: String,
    },
    #[error(
        "rotations can come {period} apart, less than jwks.publish_ahead ({publish_ahead}): \
         a new key could not be published long enough before it signs; rotate less often \
         or lower jwks.cache_max_age"
    )]
    PeriodTooShort {
        period: String,
        publish_ahead: String,
    },
    #[error(
        "algorithms is empty: configure one or more of ES256, ES384, RS256, PS256, EdDSA and Ed25519"
    )]
    NoAlgorithms,
    #[error("algorithm {0} is listed twice")]
    DuplicateAlg(Alg),
    #[error("rsa_bits {0} is not supported: expected 2048, 3072 or 4096")]
    RsaBits(u32),
}

impl PolicyError {
    /// The configuration field the error concerns, as its YAML path, so that
    /// the configuration can point at its line. A period too short is the
    /// fault of whichever of rotation.every and rotation.schedule made
    /// `schedule`.
    pub fn config_path(&self, schedule: &Schedule) -> &'static [&'static str] {
        match self {
            PolicyError::CronFields { .. }
            | PolicyError::CronInvalid { .. }
            | PolicyError::CronNeverFires(_) => &["rotation", "schedule"],
            PolicyError::PeriodTooShort { .. } => match schedule {
                Schedule::Every(_) => &["rotation", "every"],
                Schedule::Cron(_) => &["rotation", "schedule"],
            },
            PolicyError::PublishAheadTooShort { .. } => &["jwks", "publish_ahead"],
            PolicyError::Zero { path } => path,
            PolicyError::NoAlgorithms | PolicyError::DuplicateAlg(_) => &["algorithms"],
            PolicyError::RsaBits(_) => &["rsa_bits"],
        }
    }
}

impl Policy {
    /// How long a key stays published after the planner deactivates it,
    /// under this configuration alone: every reader knows of the change
    /// within `propagation`, signers may still use a copy they pulled before
    /// for `signing_key.cache_max_age`, the last token it signs lives
    /// `tokens.max_lifetime`, and verifiers accept it `tokens.clock_skew`
    /// longer. A key's actual retention also honours what was promised
    /// while it was active: [`Policy::retention_of`].
    pub fn retention(&self) -> Duration {
        self.retention_of(&Promised::default())
    }

    /// The retention of a key that was active under `promised`: the rule
    /// above with each of signing_key.cache_max_age, tokens.max_lifetime and
    /// tokens.clock_skew replaced by the larger of the configured and the
    /// promised value.
    pub fn retention_of(&self, promised: &Promised) -> Duration {
        let held = self.promised().max(*promised);
        held.signing_key_cache_max_age()
            .saturating_add(held.max_token_lifetime())
            .saturating_add(held.clock_skew())
            .saturating_add(self.propagation)
    }

    /// What this process may promise signers about a key that was made
    /// active under `promised`: its own values, but none above what the
    /// key records. The retention that keeps the key published was computed
    /// by the process that deactivated it, from its own configuration and
    /// the key's record ([`Policy::retention_of`]); a replica whose
    /// configuration says more than that record (a larger
    /// `signing_key.cache_max_age`, `tokens.max_lifetime` or
    /// `tokens.clock_skew` than the leader's) must not serve it, or its
    /// tokens could outlive the key's place in the JWK Set. A key with no
    /// record (written before they were kept) is served as configured.
    pub fn served(&self, promised: &Promised) -> Promised {
        let own = self.promised();
        if promised.is_empty() {
            return own;
        }
        Promised {
            signing_key_cache_max_age_ms: own
                .signing_key_cache_max_age_ms
                .min(promised.signing_key_cache_max_age_ms),
            max_token_lifetime_ms: own
                .max_token_lifetime_ms
                .min(promised.max_token_lifetime_ms),
            clock_skew_ms: own.clock_skew_ms.min(promised.clock_skew_ms),
        }
    }

    /// How long the keys a process holds may still be signed with and
    /// handed out after they were last known current, so that every copy
    /// expires within what [`Policy::retention`] covers:
    /// - with a shared store (`poll_interval` given), after the replica last
    ///   read and applied the state (or committed it):
    ///   `signing_key.cache_max_age + store.poll_interval`. Past it, the
    ///   leader may have rotated or revoked them without this replica
    ///   knowing;
    /// - with its own store, after a commit started that has not finished:
    ///   `signing_key.cache_max_age + propagation` (a stalled disk must not
    ///   keep a key it is deactivating in use past its retention).
    pub fn freshness_window(&self, poll_interval: Option<Duration>) -> Duration {
        self.signing_key_cache_max_age
            .saturating_add(poll_interval.unwrap_or(self.propagation))
    }

    /// The `max-age` to serve with the active key: the configured one, but
    /// never past the end of the freshness `window` of a replica that read
    /// the shared state `since_sync` ago (`None`: the store is its own), so
    /// no signer's copy outlives what this replica can vouch for. `None`:
    /// the window is over and the key must not be handed out or used.
    pub fn signing_key_max_age(
        &self,
        since_sync: Option<Duration>,
        window: Duration,
    ) -> Option<Duration> {
        match since_sync {
            None => Some(self.signing_key_cache_max_age),
            Some(s) if s > window => None,
            Some(s) => Some(self.signing_key_cache_max_age.min(window - s)),
        }
    }

    /// What this configuration promises signers about the active key.
    pub fn promised(&self) -> Promised {
        Promised {
            signing_key_cache_max_age_ms: duration_ms(self.signing_key_cache_max_age),
            max_token_lifetime_ms: duration_ms(self.max_token_lifetime),
            clock_skew_ms: duration_ms(self.clock_skew),
        }
    }

    /// The default `publish_ahead` for a cache max-age and clock skew.
    pub fn default_publish_ahead(cache_max_age: Duration, clock_skew: Duration) -> Duration {
        cache_max_age.saturating_add(clock_skew)
    }

    /// Refuses policies that cannot keep the promise; returns warnings for
    /// those that merely look unwise. `now` anchors cron look-ahead.
    pub fn validate(&self, now: Timestamp) -> Result<Vec<String>, PolicyError> {
        if self.algorithms.is_empty() {
            return Err(PolicyError::NoAlgorithms);
        }
        for (i, a) in self.algorithms.iter().enumerate() {
            if self.algorithms[..i].contains(a) {
                return Err(PolicyError::DuplicateAlg(*a));
            }
        }
        if !RSA_BITS.contains(&self.rsa_bits) {
            return Err(PolicyError::RsaBits(self.rsa_bits));
        }
        for (path, d) in [
            (&["tokens", "max_lifetime"], self.max_token_lifetime),
            (&["jwks", "cache_max_age"], self.jwks_cache_max_age),
        ] {
            if d.is_zero() {
                return Err(PolicyError::Zero { path });
            }
        }
        if let Schedule::Every(d) = &self.schedule
            && d.is_zero()
        {
            return Err(PolicyError::Zero {
                path: &["rotation", "every"],
            });
        }
        if self.publish_ahead < self.jwks_cache_max_age {
            return Err(PolicyError::PublishAheadTooShort {
                publish_ahead: format_duration(self.publish_ahead),
                cache: format_duration(self.jwks_cache_max_age),
            });
        }
        let period = match self.schedule.min_period(now) {
            Some(p) => p,
            None => match &self.schedule {
                Schedule::Cron(c) if self.schedule.next_after(now).is_none() => {
                    return Err(PolicyError::CronNeverFires(c.expr.clone()));
                }
                // A cron that fires exactly once more: nothing to compare.
                _ => Duration::MAX,
            },
        };
        if period < self.publish_ahead {
            return Err(PolicyError::PeriodTooShort {
                period: format_duration(period),
                publish_ahead: format_duration(self.publish_ahead),
            });
        }

        let mut warnings = Vec::new();
        let default_ahead = Self::default_publish_ahead(self.jwks_cache_max_age, self.clock_skew);
        if self.publish_ahead < default_ahead {
            warnings.push(format!(
                "jwks.publish_ahead ({}) is below jwks.cache_max_age + tokens.clock_skew ({}): \
                 a verifier whose clock runs behind may meet a new key before its cache expires",
                format_duration(self.publish_ahead),
                format_duration(default_ahead)
            ));
        }
        if self.jwks_cache_max_age.subsec_millis() != 0 {
            warnings.push(format!(
                "jwks.cache_max_age ({} ms) is not whole seconds: Cache-Control max-age is \
                 rounded down to {} s",
                self.jwks_cache_max_age.as_millis(),
                self.jwks_cache_max_age.as_secs()
            ));
        }
        if self.clock_skew.is_zero() {
            warnings.push(
                "tokens.clock_skew is 0: verifiers and jwksd never agree to the millisecond".into(),
            );
        }
        if self.jwks_cache_max_age > Duration::from_secs(3600) {
            warnings.push(format!(
                "jwks.cache_max_age is {}: an emergency revocation takes that long to reach \
                 verifiers",
                format_duration(self.jwks_cache_max_age)
            ));
        }
        if self.signing_key_cache_max_age > period {
            warnings.push(format!(
                "signing_key.cache_max_age ({}) is longer than the rotation period ({}): \
                 signers may sign with a key well after it was rotated out",
                format_duration(self.signing_key_cache_max_age),
                format_duration(period)
            ));
        }
        let published = self.max_published_per_alg(now);
        if published > 12 {
            warnings.push(format!(
                "up to {published} keys per algorithm may be published at once (retention {} \
                 over a rotation period of {}): some verifiers limit the size of a JWK Set",
                format_duration(self.retention()),
                format_duration(period)
            ));
        }
        Ok(warnings)
    }

    /// Upper bound of published keys per algorithm: one active, one next,
    /// the keys the schedule rotated out within one retention, and those
    /// manual rotations may add.
    pub fn max_published_per_alg(&self, now: Timestamp) -> usize {
        let period = self
            .schedule
            .min_period(now)
            .unwrap_or(Duration::MAX)
            .max(self.publish_ahead)
            .max(Duration::from_millis(1));
        let scheduled = (self.retention().as_millis() / period.as_millis()) as usize + 2;
        scheduled + 2 + MANUAL_RETIRING_LIMIT
    }
}

/// Milliseconds, saturating: durations in the state are whole milliseconds.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_serves_no_more_than_the_key_records() {
        let p = crate::lifecycle::testing::policy(3); // signer cache 1 s, tokens 4 s, skew 1 s
        let ms = |c, t, k| Promised {
            signing_key_cache_max_age_ms: c,
            max_token_lifetime_ms: t,
            clock_skew_ms: k,
        };
        // Recorded larger (the leader's configuration says more): its own.
        assert_eq!(p.served(&ms(5000, 9000, 3000)), p.promised());
        // Recorded smaller: capped to the record, field by field.
        assert_eq!(p.served(&ms(500, 9000, 0)), ms(500, 4000, 0));
        // No record: as configured.
        assert_eq!(p.served(&Promised::default()), p.promised());
    }
    use crate::lifecycle::testing::policy;

    #[test]
    fn a_replica_never_serves_a_key_past_its_freshness_window() {
        let mut p = policy(3);
        p.signing_key_cache_max_age = Duration::from_secs(4);
        let w = p.freshness_window(Some(Duration::from_secs(2)));
        assert_eq!(w, Duration::from_secs(6));
        let s = Duration::from_secs;
        assert_eq!(p.signing_key_max_age(None, w), Some(s(4)));
        assert_eq!(p.signing_key_max_age(Some(s(0)), w), Some(s(4)));
        // Cut off 4.3 s ago: 1.7 s left, not 4 s.
        assert_eq!(
            p.signing_key_max_age(Some(Duration::from_millis(4300)), w),
            Some(Duration::from_millis(1700))
        );
        assert_eq!(p.signing_key_max_age(Some(s(6)), w), Some(s(0)));
        assert_eq!(
            p.signing_key_max_age(Some(Duration::from_millis(6001)), w),
            None
        );
    }

    #[test]
    fn retention_adds_signer_cache_lifetime_skew_and_propagation() {
        let mut p = policy(3);
        assert_eq!(p.retention(), Duration::from_secs(6));
        p.propagation = Duration::from_millis(10_500);
        assert_eq!(p.retention(), Duration::from_millis(16_500));
        // Its own store: a commit in flight for longer than the commit
        // window stops the keys being handed out.
        assert_eq!(p.freshness_window(None), Duration::from_millis(11_500));
    }

    #[test]
    fn five_field_cron_is_refused() {
        assert!(matches!(
            Schedule::cron("0 3 * * *"),
            Err(PolicyError::CronFields { fields: 5, .. })
        ));
        assert!(matches!(
            Schedule::cron("0 0 3 * * * * *"),
            Err(PolicyError::CronFields { .. })
        ));
        assert!(matches!(
            Schedule::cron("0 0 25 * * *"),
            Err(PolicyError::CronInvalid { .. })
        ));
    }

    #[test]
    fn cron_next_after_and_min_period() {
        let s = Schedule::cron("0 0 3 * * *").unwrap();
        let t = Timestamp::parse_rfc3339("2026-01-01T02:59:59.500Z").unwrap();
        assert_eq!(
            s.next_after(t).unwrap(),
            Timestamp::parse_rfc3339("2026-01-01T03:00:00Z").unwrap()
        );
        assert_eq!(s.min_period(t), Some(Duration::from_secs(86400)));
        let s = Schedule::cron("0 0 3,4 * * *").unwrap();
        assert_eq!(s.min_period(t), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn validation_refuses_what_breaks_the_promise() {
        let now = Timestamp::from_millis(0);
        let mut p = policy(3);
        assert!(p.validate(now).is_ok());
        p.publish_ahead = Duration::from_millis(500);
        assert!(matches!(
            p.validate(now),
            Err(PolicyError::PublishAheadTooShort { .. })
        ));
        let mut p = policy(1);
        p.publish_ahead = Duration::from_secs(2);
        assert!(matches!(
            p.validate(now),
            Err(PolicyError::PeriodTooShort { .. })
        ));
        let mut p = policy(3);
        p.schedule = Schedule::cron("* * * * * *").unwrap();
        assert!(matches!(
            p.validate(now),
            Err(PolicyError::PeriodTooShort { .. })
        ));
        let mut p = policy(3);
        p.schedule = Schedule::cron("0 0 0 1 1 * 2020").unwrap();
        assert!(matches!(
            p.validate(now.saturating_add(Duration::from_secs(2_000_000_000))),
            Err(PolicyError::CronNeverFires(_))
        ));
    }

    #[test]
    fn validation_warns_when_publish_ahead_ignores_skew() {
        let mut p = policy(3);
        p.publish_ahead = p.jwks_cache_max_age;
        let w = p.validate(Timestamp::from_millis(0)).unwrap();
        assert!(w.iter().any(|w| w.contains("publish_ahead")), "{w:?}");
    }
}

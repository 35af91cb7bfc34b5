//! The promises already served, and what they defer: a configuration's
//! values become the ones served from now on, but a value lower than one
//! served before takes effect only once what was promised under it has
//! expired (runbook.md, "Changing lifetimes, schedule or algorithms").

use std::time::Duration;

use serde::Serialize;

use crate::keys::id::Kid;
use crate::lifecycle::action::Action;
use crate::lifecycle::policy::{Policy, duration_ms};
use crate::lifecycle::state::{EarlierJwks, KeyState, KeyringState, STATE_FORMAT};
use crate::time::{Timestamp, format_duration};

/// The promises to record before anything else happens under `policy`:
/// its values become the ones served from now on; a value lower than the
/// one recorded takes effect only once what was promised under the earlier
/// one has expired. For the JWK Set that is `now` + the earlier max-age
/// (a set served just before this configuration took over); for an active
/// key, its recorded [`Promised`](crate::lifecycle::Promised) keeps the larger values until it retires.
/// `None` when the state already records this configuration.
pub fn record_promises(state: &KeyringState, policy: &Policy, now: Timestamp) -> Option<Action> {
    let configured = duration_ms(policy.jwks_cache_max_age);
    let recorded = state.served.jwks_cache_max_age_ms;
    let mut served = state.served.clone();
    served.jwks_cache_max_age_ms = configured;
    if configured < recorded {
        let cached_until = now.saturating_add(Duration::from_millis(recorded));
        served.earlier_jwks = Some(match served.earlier_jwks.take() {
            Some(e) => EarlierJwks {
                cache_max_age_ms: e.cache_max_age_ms.max(recorded),
                cached_until: e.cached_until.max(cached_until),
            },
            None => EarlierJwks {
                cache_max_age_ms: recorded,
                cached_until,
            },
        });
    }
    // An expired earlier promise constrains nothing: forget it.
    if served
        .earlier_jwks
        .as_ref()
        .is_some_and(|e| e.cached_until <= now)
    {
        served.earlier_jwks = None;
    }
    let signing = policy.promised();
    let behind = state
        .keys
        .iter()
        .any(|k| k.state == KeyState::Active && !k.promised.covers(&signing));
    let stale = served != state.served || behind || state.format != STATE_FORMAT;
    (stale && !state.is_empty()).then_some(Action::RecordPromises { served, signing })
}

/// `state` as it is once the promises `policy` makes at `now` are recorded
/// (the planner's first step under a new configuration): what readers are
/// told about upcoming transitions before that step has committed.
pub fn with_promises(state: &KeyringState, policy: &Policy, now: Timestamp) -> KeyringState {
    let mut state = state.clone();
    if let Some(a) = record_promises(&state, policy, now) {
        // RecordPromises names no key: applying it cannot fail.
        let _ = state.apply(&a, now, None);
    }
    state
}

/// A lowered configuration value that does not yet apply in full, because
/// of what was promised under an earlier, larger one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deferred {
    /// The configuration key, as in the YAML file.
    pub field: &'static str,
    pub configured_ms: u64,
    pub promised_ms: u64,
    /// The key the earlier promise was made for (`None`: the JWK Set).
    pub kid: Option<Kid>,
    /// Until when the earlier value holds; `None`: until the key, once
    /// rotated out, has been retained under it.
    pub until: Option<Timestamp>,
}

impl std::fmt::Display for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let configured = format_duration(Duration::from_millis(self.configured_ms));
        let promised = format_duration(Duration::from_millis(self.promised_ms));
        match (&self.kid, self.until) {
            (None, Some(until)) => write!(
                f,
                "{} lowered to {configured}: JWK Sets served under {promised} may be cached \
                 until {until}; no key published before then signs earlier (plus \
                 tokens.clock_skew)",
                self.field
            ),
            (Some(kid), Some(until)) => write!(
                f,
                "{} lowered to {configured}: key {kid} was active under {promised}; it stays \
                 published until {until}",
                self.field
            ),
            (Some(kid), None) => write!(
                f,
                "{} lowered to {configured}: the active key {kid} was handed out under \
                 {promised}; once rotated out it stays published as long as {promised} \
                 requires",
                self.field
            ),
            (None, None) => write!(f, "{} lowered to {configured} (was {promised})", self.field),
        }
    }
}

/// Configuration changes that wait for earlier promises to expire, as
/// they stand once `policy` has taken over at `now`: for `check-config` and
/// the start-up log.
pub fn deferred(state: &KeyringState, policy: &Policy, now: Timestamp) -> Vec<Deferred> {
    let state = with_promises(state, policy, now);
    let mut out = Vec::new();
    if let Some(e) = &state.served.earlier_jwks
        && e.cached_until > now
    {
        out.push(Deferred {
            field: "jwks.cache_max_age",
            configured_ms: duration_ms(policy.jwks_cache_max_age),
            promised_ms: e.cache_max_age_ms,
            kid: None,
            until: Some(e.cached_until),
        });
    }
    let configured = policy.promised();
    for k in &state.keys {
        let until = match k.state {
            KeyState::Active => None,
            KeyState::Retiring => match k.retire_at {
                Some(t) if t > now => Some(t),
                _ => continue,
            },
            _ => continue,
        };
        for (field, promised, conf) in [
            (
                "signing_key.cache_max_age",
                k.promised.signing_key_cache_max_age_ms,
                configured.signing_key_cache_max_age_ms,
            ),
            (
                "tokens.max_lifetime",
                k.promised.max_token_lifetime_ms,
                configured.max_token_lifetime_ms,
            ),
            (
                "tokens.clock_skew",
                k.promised.clock_skew_ms,
                configured.clock_skew_ms,
            ),
        ] {
            if promised > conf {
                out.push(Deferred {
                    field,
                    configured_ms: conf,
                    promised_ms: promised,
                    kid: Some(k.kid.clone()),
                    until,
                });
            }
        }
    }
    out
}

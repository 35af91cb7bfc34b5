//! The key ring as plain data: every key's state, timestamps and the trigger
//! of each transition. This is what the store persists and the planner reads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::custody::Custody;
use crate::keys::id::{Alg, Kid, PublicKey};
use crate::time::Timestamp;

/// Version of the persisted state format written; bumped on changes an
/// older jwksd cannot read. Format 2 added the promises (`served`,
/// `promised`), 3 the clock skew among them, 4 where each key lives
/// (`custody`).
pub const STATE_FORMAT: u32 = 4;

/// Whether this jwksd reads a stored state of format `format`: 1 (no
/// promises recorded: they start from the configuration), 2 (promises
/// without the clock skew, which then starts from the configuration), 3
/// (every key in the store) and 4. A jwksd that reads only up to 3 refuses
/// a format-4 state by its number,
/// with the message that names the version to run, rather than on a field
/// it does not know.
pub fn format_readable(format: u32) -> bool {
    (1..=STATE_FORMAT).contains(&format)
}

/// Retired and revoked keys kept for audit, newest last.
pub const HISTORY_LIMIT: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, does not sign yet.
    Next,
    /// The one signing key of its algorithm.
    Active,
    /// Published, no longer signs; stays until `retire_at`.
    Retiring,
    /// Gone from the JWKS; private key destroyed.
    Retired,
    /// Taken out of the JWKS at once by an operator; private key destroyed.
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
        }
    }

    /// Whether keys in this state appear in the JWK Set.
    pub fn is_published(self) -> bool {
        matches!(self, KeyState::Next | KeyState::Active | KeyState::Retiring)
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// First keys of an algorithm (empty store, or an algorithm added).
    Startup,
    /// The rotation schedule.
    Schedule,
    /// An operator's rotation that waited for `publish_ahead`.
    Manual,
    /// An operator's rotation that did not wait: recorded as unsafe.
    Forced,
    /// An operator's revocation (and the emergency promotion it causes).
    Revoke,
    /// A retiring key reached its retire time.
    Retention,
    /// The algorithm was removed from the configuration.
    Config,
    /// A missing next key replaced after a failed generation.
    Recovery,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Forced => "forced",
            Trigger::Revoke => "revoke",
            Trigger::Retention => "retention",
            Trigger::Config => "config",
            Trigger::Recovery => "recovery",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key began to sign before it had been published for `publish_ahead`:
/// the only, recorded, exceptions to "published before it signs".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyActivation {
    /// First key of an algorithm: nothing could have been published before.
    Bootstrap,
    /// An operator forced a rotation.
    Forced,
    /// The active key was revoked and the next one promoted at once.
    Emergency,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub at: Timestamp,
    /// `None` for the key's creation.
    pub from: Option<KeyState>,
    pub to: KeyState,
    pub trigger: Trigger,
}

/// What signers and verifiers were promised about one key while it was
/// active: the largest `signing_key.cache_max_age` served with it on
/// `/v1/keys/active`, the largest `tokens.max_lifetime` allowed for tokens
/// it signed, and the largest `tokens.clock_skew` (the leeway verifiers were
/// told to allow those tokens). Its retention is computed from the larger of
/// these and the configuration ([`crate::lifecycle::Policy::retention_of`]),
/// so lowering any takes effect only for keys activated afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promised {
    #[serde(default)]
    pub signing_key_cache_max_age_ms: u64,
    #[serde(default)]
    pub max_token_lifetime_ms: u64,
    /// Absent in states written before it was recorded (and when zero).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clock_skew_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Promised {
    pub fn is_empty(&self) -> bool {
        *self == Promised::default()
    }

    pub fn signing_key_cache_max_age(&self) -> Duration {
        Duration::from_millis(self.signing_key_cache_max_age_ms)
    }

    pub fn max_token_lifetime(&self) -> Duration {
        Duration::from_millis(self.max_token_lifetime_ms)
    }

    pub fn clock_skew(&self) -> Duration {
        Duration::from_millis(self.clock_skew_ms)
    }

    /// The larger of two promises, field by field.
    pub fn max(self, other: Promised) -> Promised {
        Promised {
            signing_key_cache_max_age_ms: self
                .signing_key_cache_max_age_ms
                .max(other.signing_key_cache_max_age_ms),
            max_token_lifetime_ms: self.max_token_lifetime_ms.max(other.max_token_lifetime_ms),
            clock_skew_ms: self.clock_skew_ms.max(other.clock_skew_ms),
        }
    }

    /// Whether `self` promises at least as much as `other` in every field.
    pub fn covers(&self, other: &Promised) -> bool {
        self.max(*other) == *self
    }
}

/// What verifiers were promised about the JWK Set: the `jwks.cache_max_age`
/// it was last served with, and until when sets served under an earlier,
/// larger max-age may still be cached. A key published after such a set
/// signs only once it has expired ([`crate::lifecycle::earliest_activation`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Served {
    #[serde(default)]
    pub jwks_cache_max_age_ms: u64,
    /// Sets served under a larger max-age before it was lowered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier_jwks: Option<EarlierJwks>,
}

impl Served {
    /// Until when a JWK Set served under an earlier max-age may be cached.
    pub fn jwks_cached_until(&self) -> Option<Timestamp> {
        self.earlier_jwks.as_ref().map(|e| e.cached_until)
    }
}

/// JWK Sets served under a larger `jwks.cache_max_age` than today's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlierJwks {
    pub cache_max_age_ms: u64,
    /// The last of them expires from verifiers' caches then.
    pub cached_until: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub kid: Kid,
    pub alg: Alg,
    pub state: KeyState,
    pub public: PublicKey,
    pub created_at: Timestamp,
    pub published_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<Timestamp>,
    /// When the key left the JWKS (retired or revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_activation: Option<EarlyActivation>,
    /// Promises made to signers while it was active.
    #[serde(default, skip_serializing_if = "Promised::is_empty")]
    pub promised: Promised,
    /// Where its private key lives; absent: in the store.
    #[serde(default, skip_serializing_if = "Custody::is_software")]
    pub custody: Custody,
    pub transitions: Vec<Transition>,
}

impl KeyRecord {
    pub(crate) fn transition(&mut self, at: Timestamp, to: KeyState, trigger: Trigger) {
        self.transitions.push(Transition {
            at,
            from: Some(self.state),
            to,
            trigger,
        });
        self.state = to;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringState {
    pub format: u32,
    /// Bumped by every committed change; stores compare-and-set on it.
    pub version: u64,
    /// Published keys: next, active and retiring.
    pub keys: Vec<KeyRecord>,
    /// Retired and revoked keys, newest last, bounded by [`HISTORY_LIMIT`].
    pub history: Vec<KeyRecord>,
    /// Promises made to verifiers about the JWK Set.
    #[serde(default)]
    pub served: Served,
}

impl Default for KeyringState {
    fn default() -> Self {
        KeyringState {
            format: STATE_FORMAT,
            version: 0,
            keys: Vec::new(),
            history: Vec::new(),
            served: Served::default(),
        }
    }
}

impl KeyringState {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.history.is_empty()
    }

    pub fn in_state(&self, alg: Alg, state: KeyState) -> impl Iterator<Item = &KeyRecord> {
        self.keys
            .iter()
            .filter(move |k| k.alg == alg && k.state == state)
    }

    pub fn active(&self, alg: Alg) -> Option<&KeyRecord> {
        self.in_state(alg, KeyState::Active).next()
    }

    pub fn next_key(&self, alg: Alg) -> Option<&KeyRecord> {
        self.in_state(alg, KeyState::Next).next()
    }

    /// Published keys, in a stable order (by algorithm, then oldest first).
    pub fn published(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.iter().filter(|k| k.state.is_published())
    }

    pub fn find(&self, kid: &Kid) -> Option<&KeyRecord> {
        self.keys
            .iter()
            .chain(self.history.iter())
            .find(|k| &k.kid == kid)
    }
}

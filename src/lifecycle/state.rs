//! The key ring as plain data: every key's state, timestamps and the trigger
//! of each transition. This is what the store persists and the planner reads.

use serde::{Deserialize, Serialize};

use crate::keys::{Alg, Kid, PublicKey};
use crate::lifecycle::planner::Action;
use crate::time::Timestamp;

/// Version of the persisted state format; bumped on incompatible changes.
pub const STATE_FORMAT: u32 = 1;

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
    pub transitions: Vec<Transition>,
}

impl KeyRecord {
    fn transition(&mut self, at: Timestamp, to: KeyState, trigger: Trigger) {
        self.transitions.push(Transition {
            at,
            from: Some(self.state),
            to,
            trigger,
        });
        self.state = to;
    }
}

/// The public facts of a newly generated key, as the shell hands them back
/// for a [`Action::Generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub kid: Kid,
    pub alg: Alg,
    pub public: PublicKey,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("key {0} is not in the key ring")]
    UnknownKid(Kid),
    #[error("key {kid} is {state}, cannot {action}")]
    WrongState {
        kid: Kid,
        state: KeyState,
        action: &'static str,
    },
    #[error("generate action carried out without the generated key")]
    MissingKey,
    #[error("generated key {0} is an {1} key, the action asked for another algorithm")]
    AlgMismatch(Kid, Alg),
    #[error("key {0} already exists")]
    DuplicateKid(Kid),
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
}

impl Default for KeyringState {
    fn default() -> Self {
        KeyringState {
            format: STATE_FORMAT,
            version: 0,
            keys: Vec::new(),
            history: Vec::new(),
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

    fn live_mut(&mut self, kid: &Kid) -> Result<&mut KeyRecord, ApplyError> {
        self.keys
            .iter_mut()
            .find(|k| &k.kid == kid)
            .ok_or_else(|| ApplyError::UnknownKid(kid.clone()))
    }

    /// Carries out one action at `now`. `new` is the key the shell generated
    /// for an [`Action::Generate`]. Pure: the caller decides when to persist.
    pub fn apply(
        &mut self,
        action: &Action,
        now: Timestamp,
        new: Option<NewKey>,
    ) -> Result<(), ApplyError> {
        match action {
            Action::Generate {
                alg,
                role,
                trigger,
                early,
                ..
            } => {
                let new = new.ok_or(ApplyError::MissingKey)?;
                if new.alg != *alg {
                    return Err(ApplyError::AlgMismatch(new.kid, new.alg));
                }
                if self.find(&new.kid).is_some() {
                    return Err(ApplyError::DuplicateKid(new.kid));
                }
                let mut transitions = vec![Transition {
                    at: now,
                    from: None,
                    to: KeyState::Next,
                    trigger: *trigger,
                }];
                let mut activated_at = None;
                if *role == KeyState::Active {
                    transitions.push(Transition {
                        at: now,
                        from: Some(KeyState::Next),
                        to: KeyState::Active,
                        trigger: *trigger,
                    });
                    activated_at = Some(now);
                }
                self.keys.push(KeyRecord {
                    kid: new.kid,
                    alg: new.alg,
                    state: *role,
                    public: new.public,
                    created_at: now,
                    published_at: now,
                    activated_at,
                    deactivated_at: None,
                    retire_at: None,
                    ended_at: None,
                    early_activation: if *role == KeyState::Active {
                        *early
                    } else {
                        None
                    },
                    transitions,
                });
            }
            Action::Activate {
                kid,
                trigger,
                early,
            } => {
                let k = self.live_mut(kid)?;
                expect_state(k, &[KeyState::Next], "activate")?;
                k.transition(now, KeyState::Active, *trigger);
                k.activated_at = Some(now);
                k.early_activation = *early;
            }
            Action::Deactivate {
                kid,
                trigger,
                retire_at,
            } => {
                let k = self.live_mut(kid)?;
                expect_state(k, &[KeyState::Active], "deactivate")?;
                k.transition(now, KeyState::Retiring, *trigger);
                k.deactivated_at = Some(now);
                k.retire_at = Some(*retire_at);
            }
            Action::Retire { kid, trigger } => {
                let k = self.live_mut(kid)?;
                expect_state(k, &[KeyState::Retiring, KeyState::Next], "retire")?;
                k.transition(now, KeyState::Retired, *trigger);
                k.ended_at = Some(now);
                self.move_to_history(kid);
            }
            Action::Revoke { kid } => {
                let k = self.live_mut(kid)?;
                expect_state(
                    k,
                    &[KeyState::Next, KeyState::Active, KeyState::Retiring],
                    "revoke",
                )?;
                if k.state == KeyState::Active {
                    k.deactivated_at = Some(now);
                }
                k.transition(now, KeyState::Revoked, Trigger::Revoke);
                k.ended_at = Some(now);
                self.move_to_history(kid);
            }
        }
        Ok(())
    }

    fn move_to_history(&mut self, kid: &Kid) {
        if let Some(i) = self.keys.iter().position(|k| &k.kid == kid) {
            let k = self.keys.remove(i);
            self.history.push(k);
            let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
            self.history.drain(..excess);
        }
    }
}

fn expect_state(
    k: &KeyRecord,
    allowed: &[KeyState],
    action: &'static str,
) -> Result<(), ApplyError> {
    if allowed.contains(&k.state) {
        Ok(())
    } else {
        Err(ApplyError::WrongState {
            kid: k.kid.clone(),
            state: k.state,
            action,
        })
    }
}

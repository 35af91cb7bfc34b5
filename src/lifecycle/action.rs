//! What the planner decides and the shell carries out: one change to the
//! key ring. Apart from the planner so that the state can apply an action
//! without importing the rules that chose it.

use crate::keys::custody::Custody;
use crate::keys::id::{Alg, Kid, PublicKey};
use crate::lifecycle::state::{
    EarlyActivation, HISTORY_LIMIT, KeyRecord, KeyState, KeyringState, Promised, STATE_FORMAT,
    Served, Transition, Trigger,
};
use crate::time::Timestamp;

/// A change the shell must carry out. Transitions come before generations
/// in a plan; the shell commits them in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Generate a keypair and add it in `role` (`Next`, or `Active` when the
    /// algorithm has no key that could be promoted).
    Generate {
        alg: Alg,
        rsa_bits: u32,
        role: KeyState,
        trigger: Trigger,
        early: Option<EarlyActivation>,
        /// Recorded on the key when it is added as active.
        promised: Promised,
    },
    /// next -> active; `promised` is what the configuration promises
    /// signers from now on.
    Activate {
        kid: Kid,
        trigger: Trigger,
        early: Option<EarlyActivation>,
        promised: Promised,
    },
    /// Records the promises the configuration makes from now on, keeping
    /// those made under earlier, larger values: see [`crate::lifecycle::record_promises`].
    RecordPromises { served: Served, signing: Promised },
    /// active -> retiring; published until `retire_at`.
    Deactivate {
        kid: Kid,
        trigger: Trigger,
        retire_at: Timestamp,
    },
    /// retiring (or next) -> retired: out of the JWKS, private key destroyed.
    Retire { kid: Kid, trigger: Trigger },
    /// Out of the JWKS at once, private key destroyed.
    Revoke { kid: Kid },
}

impl Action {
    pub fn is_generate(&self) -> bool {
        matches!(self, Action::Generate { .. })
    }
}

/// The public facts of a newly generated key, as the shell hands them back
/// for a [`Action::Generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub kid: Kid,
    pub alg: Alg,
    pub public: PublicKey,
    /// Where the shell made it.
    pub custody: Custody,
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

/// How an action changes the state: the one place the state is written.
impl KeyringState {
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
                promised,
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
                    promised: if *role == KeyState::Active {
                        *promised
                    } else {
                        Promised::default()
                    },
                    custody: new.custody,
                    transitions,
                });
            }
            Action::Activate {
                kid,
                trigger,
                early,
                promised,
            } => {
                let k = self.live_mut(kid)?;
                expect_state(k, &[KeyState::Next], "activate")?;
                k.transition(now, KeyState::Active, *trigger);
                k.activated_at = Some(now);
                k.early_activation = *early;
                k.promised = k.promised.max(*promised);
            }
            Action::RecordPromises { served, signing } => {
                self.format = STATE_FORMAT;
                self.served = served.clone();
                for k in self.keys.iter_mut().filter(|k| k.state == KeyState::Active) {
                    k.promised = k.promised.max(*signing);
                }
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

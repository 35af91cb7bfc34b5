//! The key lifecycle as pure functions: (state, policy, now) -> actions.
//!
//! Nothing here reads a clock, touches a file or draws a random number: key
//! generation is an [`Action`] the shell carries out. That keeps every
//! timeline rule in one place, testable over months of simulated time.

use serde::{Deserialize, Serialize};

use crate::keys::id::{Alg, Kid};
pub use crate::lifecycle::action::Action;
use crate::lifecycle::policy::{MANUAL_RETIRING_LIMIT, Policy};
pub use crate::lifecycle::promises::{Deferred, deferred, record_promises, with_promises};
use crate::lifecycle::state::{EarlyActivation, KeyRecord, KeyState, KeyringState, Trigger};
use crate::time::Timestamp;

/// What is due next, for the scheduler's wake-up and for operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upcoming {
    pub at: Timestamp,
    pub alg: Alg,
    pub kid: Kid,
    pub event: UpcomingEvent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpcomingEvent {
    /// The scheduled rotation: `kid` (the next key) becomes active.
    Rotation,
    /// A rotation is due but `kid` (the next key) has not been published for
    /// `publish_ahead` yet; it happens at `at`.
    RotationWaitingForPublishAhead,
    /// `kid` leaves the JWKS.
    Retire,
}

impl UpcomingEvent {
    /// A rotation, due or waiting for `publish_ahead`.
    pub fn is_rotation(self) -> bool {
        matches!(
            self,
            UpcomingEvent::Rotation | UpcomingEvent::RotationWaitingForPublishAhead
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Carry these out, then call [`plan`] again.
    pub actions: Vec<Action>,
    /// When to call [`plan`] again if nothing else happens first.
    pub wake_at: Option<Timestamp>,
    /// The next transition on the timeline, past the actions of this plan:
    /// when to call [`plan`] again while its generations are in flight.
    pub next_event: Option<Timestamp>,
}

/// What the scheduler must do at `now`.
pub fn plan(state: &KeyringState, policy: &Policy, now: Timestamp) -> Plan {
    // Promises first and alone: every other rule reads them.
    if let Some(a) = record_promises(state, policy, now) {
        return Plan {
            actions: vec![a],
            wake_at: Some(now),
            next_event: Some(now),
        };
    }
    let mut actions = Vec::new();

    for k in &state.keys {
        let configured = policy.algorithms.contains(&k.alg);
        match k.state {
            KeyState::Retiring if k.retire_at.is_none_or(|t| t <= now) => {
                actions.push(Action::Retire {
                    kid: k.kid.clone(),
                    trigger: Trigger::Retention,
                });
            }
            // An algorithm removed from the configuration: its active key
            // keeps verifying what it signed; its next key never signed.
            KeyState::Active if !configured => actions.push(Action::Deactivate {
                kid: k.kid.clone(),
                trigger: Trigger::Config,
                retire_at: now.saturating_add(policy.retention_of(&k.promised)),
            }),
            KeyState::Next if !configured => actions.push(Action::Retire {
                kid: k.kid.clone(),
                trigger: Trigger::Config,
            }),
            // `keys.backend` changed: a next key made under the old one never
            // signed, so it goes now and is made again where new keys go;
            // the active key stays where it is until the rotation.
            KeyState::Next if k.custody != policy.custody => actions.push(Action::Retire {
                kid: k.kid.clone(),
                trigger: Trigger::Config,
            }),
            _ => {}
        }
    }

    for &alg in &policy.algorithms {
        match (state.active(alg), next_here(state, policy, alg)) {
            (None, None) => {
                actions.push(generate(
                    policy,
                    alg,
                    KeyState::Active,
                    Trigger::Startup,
                    Some(EarlyActivation::Bootstrap),
                ));
                actions.push(generate(
                    policy,
                    alg,
                    KeyState::Next,
                    Trigger::Startup,
                    None,
                ));
            }
            (None, Some(next)) => {
                // No active key but a next one: the first keys of an
                // algorithm, or the active key was revoked while no next key
                // existed and a generated next key arrived first.
                let had_active = state
                    .keys
                    .iter()
                    .chain(state.history.iter())
                    .any(|k| k.alg == alg && k.activated_at.is_some());
                let (trigger, kind) = if had_active {
                    (Trigger::Recovery, EarlyActivation::Emergency)
                } else {
                    (Trigger::Startup, EarlyActivation::Bootstrap)
                };
                let early = (now < earliest_activation(state, next, policy)).then_some(kind);
                actions.push(Action::Activate {
                    kid: next.kid.clone(),
                    trigger,
                    early,
                    promised: policy.promised(),
                });
                actions.push(generate(policy, alg, KeyState::Next, trigger, None));
            }
            (Some(_), None) => {
                let trigger = if state.next_key(alg).is_some() {
                    Trigger::Config
                } else {
                    Trigger::Recovery
                };
                actions.push(generate(policy, alg, KeyState::Next, trigger, None));
            }
            (Some(active), Some(next)) => {
                let due = rotation_due(active, policy);
                if due.is_some_and(|d| d <= now) && earliest_activation(state, next, policy) <= now
                {
                    rotation(
                        &mut actions,
                        policy,
                        now,
                        active,
                        next,
                        Trigger::Schedule,
                        None,
                    );
                }
            }
        }
    }

    actions.sort_by_key(Action::is_generate);
    let next_event = upcoming(state, policy, now).first().map(|u| u.at);
    let wake_at = if actions.is_empty() {
        next_event
    } else {
        Some(now)
    };
    Plan {
        actions,
        wake_at,
        next_event,
    }
}

/// Upcoming transitions, soonest first.
pub fn upcoming(state: &KeyringState, policy: &Policy, now: Timestamp) -> Vec<Upcoming> {
    let mut out = Vec::new();
    for k in &state.keys {
        if k.state == KeyState::Retiring
            && let Some(at) = k.retire_at
        {
            out.push(Upcoming {
                at,
                alg: k.alg,
                kid: k.kid.clone(),
                event: UpcomingEvent::Retire,
            });
        }
    }
    for &alg in &policy.algorithms {
        if let (Some(active), Some(next)) = (state.active(alg), next_here(state, policy, alg))
            && let Some(due) = rotation_due(active, policy)
        {
            let ready = earliest_activation(state, next, policy);
            let (at, event) = if due <= now && now < ready {
                (ready, UpcomingEvent::RotationWaitingForPublishAhead)
            } else {
                (due.max(ready), UpcomingEvent::Rotation)
            };
            out.push(Upcoming {
                at,
                alg,
                kid: next.kid.clone(),
                event,
            });
        }
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then(a.alg.cmp(&b.alg)));
    out
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RotateError {
    #[error("{0} is not a configured algorithm")]
    NotConfigured(Alg),
    #[error("{alg} has no {missing} key yet (it is being generated); try again in a moment")]
    NotReady { alg: Alg, missing: &'static str },
    #[error(
        "the next key is not yet published long enough (jwks.publish_ahead); a safe rotation \
         is possible at {earliest}, or force it (unsafe: verifiers with a cached JWKS will \
         reject tokens until their cache expires)"
    )]
    TooEarly { earliest: Timestamp, algs: Vec<Alg> },
    #[error(
        "{alg} already has {count} keys rotated out by hand still published; the next one \
         retires at {until}: revoke one, or wait"
    )]
    TooManyPublished {
        alg: Alg,
        count: usize,
        until: Timestamp,
    },
}

/// An operator's rotation of `alg` (every configured algorithm when `None`).
/// All or nothing: when one algorithm cannot rotate, none does.
pub fn rotate(
    state: &KeyringState,
    policy: &Policy,
    now: Timestamp,
    alg: Option<Alg>,
    force: bool,
) -> Result<Vec<Action>, RotateError> {
    let algs: Vec<Alg> = match alg {
        Some(a) if !policy.algorithms.contains(&a) => return Err(RotateError::NotConfigured(a)),
        Some(a) => vec![a],
        None => policy.algorithms.clone(),
    };
    let mut pairs = Vec::new();
    let mut too_early: Vec<(Alg, Timestamp)> = Vec::new();
    for &a in &algs {
        let (Some(active), Some(next)) = (state.active(a), next_here(state, policy, a)) else {
            let missing = match (state.active(a), next_here(state, policy, a)) {
                (Some(_), _) => "next",
                (None, Some(_)) => "active",
                (None, None) => "active or next",
            };
            return Err(RotateError::NotReady { alg: a, missing });
        };
        let manual: Vec<&KeyRecord> = state
            .in_state(a, KeyState::Retiring)
            .filter(|k| {
                k.transitions
                    .last()
                    .is_some_and(|t| matches!(t.trigger, Trigger::Manual | Trigger::Forced))
            })
            .collect();
        if manual.len() >= MANUAL_RETIRING_LIMIT {
            let until = manual
                .iter()
                .filter_map(|k| k.retire_at)
                .min()
                .unwrap_or(now);
            return Err(RotateError::TooManyPublished {
                alg: a,
                count: manual.len(),
                until,
            });
        }
        let ready = earliest_activation(state, next, policy);
        if now < ready {
            too_early.push((a, ready));
        }
        pairs.push((active, next, now < ready));
    }
    if !force && !too_early.is_empty() {
        let earliest = too_early.iter().map(|(_, t)| *t).max().unwrap_or(now);
        return Err(RotateError::TooEarly {
            earliest,
            algs: too_early.into_iter().map(|(a, _)| a).collect(),
        });
    }
    let mut actions = Vec::new();
    for (active, next, early) in pairs {
        let (trigger, early) = if early {
            (Trigger::Forced, Some(EarlyActivation::Forced))
        } else {
            (Trigger::Manual, None)
        };
        rotation(&mut actions, policy, now, active, next, trigger, early);
    }
    actions.sort_by_key(Action::is_generate);
    Ok(actions)
}

/// Whether a rotation judged on `before` that lost its compare-and-set was
/// carried out by the writer that won, as `after` shows: every key it would
/// have rotated out (`rotated_out`, per algorithm) was active in `before`
/// and is active no more. Then the operator's rotation is done ("already
/// rotated" is success); otherwise it is judged again on `after`.
pub fn rotated_elsewhere(
    before: &KeyringState,
    after: &KeyringState,
    rotated_out: &[(Alg, Kid)],
) -> bool {
    rotated_out.iter().all(|(alg, previous)| {
        before.active(*alg).is_some_and(|k| &k.kid == previous)
            && after
                .find(previous)
                .is_some_and(|k| k.state != KeyState::Active)
    })
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RevokeError {
    #[error("no key with kid {0}")]
    Unknown(Kid),
    #[error("key {kid} is already {state}")]
    AlreadyEnded { kid: Kid, state: KeyState },
}

/// An operator's revocation: the key leaves the JWKS at once. Revoking the
/// active key promotes the next one at once (the emergency path).
pub fn revoke(
    state: &KeyringState,
    policy: &Policy,
    now: Timestamp,
    kid: &Kid,
) -> Result<Vec<Action>, RevokeError> {
    let Some(key) = state.find(kid) else {
        return Err(RevokeError::Unknown(kid.clone()));
    };
    if !key.state.is_published() {
        return Err(RevokeError::AlreadyEnded {
            kid: kid.clone(),
            state: key.state,
        });
    }
    let alg = key.alg;
    let configured = policy.algorithms.contains(&alg);
    let mut actions = vec![Action::Revoke { kid: kid.clone() }];
    match key.state {
        KeyState::Active if configured => match state.next_key(alg) {
            Some(next) => {
                let early = (now < earliest_activation(state, next, policy))
                    .then_some(EarlyActivation::Emergency);
                actions.push(Action::Activate {
                    kid: next.kid.clone(),
                    trigger: Trigger::Revoke,
                    early,
                    promised: policy.promised(),
                });
                actions.push(generate(policy, alg, KeyState::Next, Trigger::Revoke, None));
            }
            None => {
                actions.push(generate(
                    policy,
                    alg,
                    KeyState::Active,
                    Trigger::Revoke,
                    Some(EarlyActivation::Emergency),
                ));
                actions.push(generate(policy, alg, KeyState::Next, Trigger::Revoke, None));
            }
        },
        KeyState::Next if configured => {
            actions.push(generate(policy, alg, KeyState::Next, Trigger::Revoke, None));
        }
        _ => {}
    }
    Ok(actions)
}

/// Whether a key generated for `action` (a [`Action::Generate`]) is still
/// wanted in `state`: generation runs beside the timeline, and meanwhile
/// another key may have taken its place (a revocation's replacement, another
/// replica's commit). A key no longer wanted is discarded, never committed.
pub fn still_wanted(state: &KeyringState, action: &Action) -> bool {
    match action {
        Action::Generate {
            alg,
            role: KeyState::Active,
            ..
        } => state.active(*alg).is_none(),
        Action::Generate { alg, .. } => state.next_key(*alg).is_none(),
        _ => false,
    }
}

/// The next key of `alg` that may become active: one made where new keys
/// go (`policy.custody`). One made under an earlier `keys.backend` is
/// retired by [`plan`] and rotates to nothing.
fn next_here<'a>(state: &'a KeyringState, policy: &Policy, alg: Alg) -> Option<&'a KeyRecord> {
    state.next_key(alg).filter(|k| k.custody == policy.custody)
}

/// When the scheduled rotation of `active` falls due.
fn rotation_due(active: &KeyRecord, policy: &Policy) -> Option<Timestamp> {
    policy
        .schedule
        .next_after(active.activated_at.unwrap_or(active.published_at))
}

/// From when `next` may sign without breaking a promise: once it has been
/// published for `jwks.publish_ahead`, and once every JWK Set served under
/// an earlier, larger `jwks.cache_max_age` (which lacked it) has expired
/// from verifiers' caches, plus `tokens.clock_skew`.
pub fn earliest_activation(state: &KeyringState, next: &KeyRecord, policy: &Policy) -> Timestamp {
    let own = next.published_at.saturating_add(policy.publish_ahead);
    match state.served.jwks_cached_until() {
        Some(until) => own.max(until.saturating_add(policy.clock_skew)),
        None => own,
    }
}

fn generate(
    policy: &Policy,
    alg: Alg,
    role: KeyState,
    trigger: Trigger,
    early: Option<EarlyActivation>,
) -> Action {
    Action::Generate {
        alg,
        rsa_bits: policy.rsa_bits,
        role,
        trigger,
        early,
        promised: policy.promised(),
    }
}

fn rotation(
    actions: &mut Vec<Action>,
    policy: &Policy,
    now: Timestamp,
    active: &KeyRecord,
    next: &KeyRecord,
    trigger: Trigger,
    early: Option<EarlyActivation>,
) {
    actions.push(Action::Activate {
        kid: next.kid.clone(),
        trigger,
        early,
        promised: policy.promised(),
    });
    actions.push(Action::Deactivate {
        kid: active.kid.clone(),
        trigger,
        retire_at: now.saturating_add(policy.retention_of(&active.promised)),
    });
    actions.push(generate(policy, active.alg, KeyState::Next, trigger, None));
}

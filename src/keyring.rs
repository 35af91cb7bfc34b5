//! The key ring in memory, and the one place where planned actions are
//! carried out: generate, stage, apply, commit.
//!
//! Everything here blocks (key generation, fsync); the daemon calls it on a
//! blocking thread. It is synchronous so that tests can drive it directly.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::keys::{self, KeyMaterial, Kid};
use crate::lifecycle::{Action, ApplyError, KeyState, KeyringState, NewKey, Trigger, still_wanted};
use crate::store::{KeyStore, StoreError};

/// A lifecycle transition that was committed, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kid: Kid,
    pub alg: keys::Alg,
    pub from: Option<KeyState>,
    pub to: KeyState,
    pub trigger: Trigger,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("planned action no longer fits the state: {0}")]
    Apply(#[from] ApplyError),
}

impl ExecuteError {
    /// Whether a key generation (rather than a write) failed.
    pub fn is_generation(&self) -> bool {
        matches!(self, ExecuteError::Key(_))
    }
}

/// What [`Keyring::execute`] committed, and what stopped it.
#[derive(Debug)]
pub struct Executed {
    pub events: Vec<Event>,
    pub error: Option<ExecuteError>,
}

impl Executed {
    pub fn into_result(self) -> Result<Vec<Event>, ExecuteError> {
        match self.error {
            None => Ok(self.events),
            Some(e) => Err(e),
        }
    }
}

pub struct Keyring {
    store: Arc<dyn KeyStore>,
    state: KeyringState,
    keys: HashMap<Kid, KeyMaterial>,
}

impl Keyring {
    /// Loads the store; returns the notes the store made while loading.
    pub fn load(store: Box<dyn KeyStore>) -> Result<(Keyring, Vec<String>), StoreError> {
        let store: Arc<dyn KeyStore> = Arc::from(store);
        let loaded = store.load()?;
        Ok((
            Keyring {
                store,
                state: loaded.state,
                keys: loaded.keys,
            },
            loaded.notes,
        ))
    }

    pub fn state(&self) -> &KeyringState {
        &self.state
    }

    pub fn key(&self, kid: &Kid) -> Option<&KeyMaterial> {
        self.keys.get(kid)
    }

    pub fn store_location(&self) -> String {
        self.store.location()
    }

    /// The store, for what needs no key ring (leases, version polling).
    pub fn store(&self) -> Arc<dyn KeyStore> {
        self.store.clone()
    }

    /// Reloads from the store when another replica changed it. Returns
    /// whether anything changed.
    pub fn reload(&mut self) -> Result<bool, StoreError> {
        if self.store.version()? == self.state.version {
            return Ok(false);
        }
        let loaded = self.store.load()?;
        for n in &loaded.notes {
            tracing::warn!(store = %self.store.location(), "{n}");
        }
        let changed = loaded.state != self.state;
        self.state = loaded.state;
        self.keys = loaded.keys;
        Ok(changed)
    }

    /// Carries out a plan: the transitions in one commit, then the generated
    /// keys (staged durably first) in another. Returns the committed events,
    /// and the error that stopped the rest, if any; the in-memory state is
    /// always what the store last committed.
    pub fn execute(&mut self, actions: &[Action], clock: &dyn Clock) -> Executed {
        let (gens, transitions): (Vec<Action>, Vec<Action>) =
            actions.iter().cloned().partition(Action::is_generate);
        let mut events = Vec::new();
        let error = self
            .commit_transitions(&transitions, clock, &mut events)
            .err();
        log_events(&events);
        if error.is_some() || gens.is_empty() {
            return Executed { events, error };
        }
        match generate_staged(&*self.store, &gens) {
            Ok(made) => {
                let done = self.commit_generated(made, clock);
                events.extend(done.events);
                Executed {
                    events,
                    error: done.error,
                }
            }
            Err(e) => Executed {
                events,
                error: Some(e),
            },
        }
    }

    /// Applies transitions (no generation) and commits them as one change.
    fn commit_transitions(
        &mut self,
        transitions: &[Action],
        clock: &dyn Clock,
        events: &mut Vec<Event>,
    ) -> Result<(), ExecuteError> {
        if transitions.is_empty() {
            return Ok(());
        }
        let now = clock.now();
        let mut next = self.state.clone();
        let mut pending = Vec::new();
        for a in transitions {
            let before = action_kid(a).and_then(|k| next.find(k)).map(|k| k.state);
            next.apply(a, now, None)?;
            if let Some(kid) = action_kid(a)
                && let Some(k) = next.find(kid)
            {
                pending.push(Event {
                    kid: kid.clone(),
                    alg: k.alg,
                    from: before,
                    to: k.state,
                    trigger: k
                        .transitions
                        .last()
                        .map(|t| t.trigger)
                        .unwrap_or(Trigger::Startup),
                });
            }
        }
        next.version += 1;
        self.store.commit(&next)?;
        self.keys
            .retain(|kid, _| next.keys.iter().any(|k| &k.kid == kid));
        self.state = next;
        events.append(&mut pending);
        Ok(())
    }
}

/// One structured log event per committed lifecycle transition.
fn log_events(events: &[Event]) {
    for e in events {
        tracing::info!(
            kid = %e.kid,
            alg = %e.alg,
            from = e.from.map(|s| s.as_str()).unwrap_or("none"),
            to = %e.to,
            trigger = %e.trigger,
            "key transition"
        );
    }
}

/// Generates the keys `actions` ask for (at a low CPU priority) and
/// stages them durably, without the key ring: the scheduler keeps its
/// timeline while this runs. Staged keys are discarded again on failure.
pub fn generate_staged(
    store: &dyn KeyStore,
    actions: &[Action],
) -> Result<Vec<(Action, KeyMaterial)>, ExecuteError> {
    generate_staged_gated(store, actions, &StagingGate::default())
}

/// Lets shutdown end key generation without waiting for it: a key is
/// staged only while the gate is open, and [`StagingGate::close`] waits
/// for a staging in progress and keeps any other from starting. Generating
/// (CPU only, nothing written) can then be abandoned at any instant: the
/// process may exit under it and no store is left half-written. (Within
/// the scheduler's shutdown wait for the gate: a staging that outlasts it,
/// on a stalled store, is left to the store's own crash rules, which
/// discard a staged key no state names at the next start.)
#[derive(Debug, Default)]
pub struct StagingGate {
    closed: std::sync::Mutex<bool>,
}

impl StagingGate {
    /// Closes the gate once no key is being staged. Blocks for as long as a
    /// staging in progress takes.
    pub fn close(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    fn stage(&self, store: &dyn KeyStore, key: &KeyMaterial) -> Result<(), ExecuteError> {
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Err(ExecuteError::Store(StoreError::Other(
                "shutting down: the key generated was not staged".into(),
            )));
        }
        store.stage(key)?;
        Ok(())
    }

    fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`generate_staged`], staging through `gate`: once it is closed, nothing
/// more is staged (nor discarded: the next start discards what is staged).
pub fn generate_staged_gated(
    store: &dyn KeyStore,
    actions: &[Action],
    gate: &StagingGate,
) -> Result<Vec<(Action, KeyMaterial)>, ExecuteError> {
    let mut out: Vec<(Action, KeyMaterial)> = Vec::with_capacity(actions.len());
    for a in actions {
        let Action::Generate { alg, rsa_bits, .. } = a else {
            continue;
        };
        let made = keys::generate_in_background(*alg, *rsa_bits)
            .map_err(ExecuteError::from)
            .and_then(|key| {
                gate.stage(store, &key)?;
                Ok(key)
            });
        match made {
            Ok(key) => out.push((a.clone(), key)),
            Err(e) => {
                if !gate.is_closed() {
                    for (_, key) in &out {
                        store.discard(&key.kid);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

impl Keyring {
    /// Commits keys made by [`generate_staged`] for the actions that still
    /// apply (no active, or no next, key of that algorithm yet); the others
    /// are discarded. One commit.
    pub fn commit_generated(
        &mut self,
        made: Vec<(Action, KeyMaterial)>,
        clock: &dyn Clock,
    ) -> Executed {
        let now = clock.now();
        let mut next = self.state.clone();
        let mut events = Vec::new();
        let mut keep = Vec::new();
        for (a, key) in made {
            let Action::Generate {
                alg, role, trigger, ..
            } = &a
            else {
                continue;
            };
            if !still_wanted(&next, &a) || key.alg != *alg {
                self.store.discard(&key.kid);
                continue;
            }
            let new = NewKey {
                kid: key.kid.clone(),
                alg: key.alg,
                public: key.public.clone(),
            };
            if let Err(e) = next.apply(&a, now, Some(new)) {
                self.store.discard(&key.kid);
                for (_, k) in &keep {
                    let k: &KeyMaterial = k;
                    self.store.discard(&k.kid);
                }
                return Executed {
                    events: Vec::new(),
                    error: Some(e.into()),
                };
            }
            events.push(Event {
                kid: key.kid.clone(),
                alg: key.alg,
                from: None,
                to: *role,
                trigger: *trigger,
            });
            keep.push((a.clone(), key));
        }
        if keep.is_empty() {
            return Executed {
                events,
                error: None,
            };
        }
        next.version += 1;
        if let Err(e) = self.store.commit(&next) {
            for (_, key) in &keep {
                self.store.discard(&key.kid);
            }
            return Executed {
                events: Vec::new(),
                error: Some(e.into()),
            };
        }
        self.state = next;
        for (_, key) in keep {
            self.keys.insert(key.kid.clone(), key);
        }
        log_events(&events);
        Executed {
            events,
            error: None,
        }
    }
}

fn action_kid(a: &Action) -> Option<&Kid> {
    match a {
        Action::Activate { kid, .. }
        | Action::Deactivate { kid, .. }
        | Action::Retire { kid, .. }
        | Action::Revoke { kid } => Some(kid),
        Action::Generate { .. } | Action::RecordPromises { .. } => None,
    }
}

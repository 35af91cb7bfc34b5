//! The key ring in memory, and the one place where planned actions are
//! carried out: generate, stage, apply, commit.
//!
//! Everything here blocks (key generation, fsync, the token); the daemon
//! calls it on a blocking thread. It is synchronous so that tests can drive
//! it directly. Private keys live in the store or in a PKCS#11 token, as
//! each key's record says (`custody`); the token's crash rules are in
//! [`token`].

pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::audit::{Actor, Entry, Record};
use crate::clock::Clock;
use crate::keys::custody::Custody;
use crate::keys::pkcs11::{Token, TokenError};
use crate::keys::{self, KeyMaterial, Kid, PrivateKey};
use crate::lifecycle::event::between;
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
    /// Generating in the token failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("planned action no longer fits the state: {0}")]
    Apply(#[from] ApplyError),
}

impl ExecuteError {
    /// Whether a key generation (rather than a write) failed.
    pub fn is_generation(&self) -> bool {
        matches!(self, ExecuteError::Key(_) | ExecuteError::Token(_))
    }
}

/// What [`Keyring::execute`] committed, and what stopped it.
#[derive(Debug)]
pub struct Executed {
    pub events: Vec<Event>,
    /// The audit records the commits wrote (`crate::audit`).
    pub records: Vec<Record>,
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
    /// The token keys are kept in (`keys.pkcs11`), when one is configured.
    token: Option<Arc<Token>>,
    state: KeyringState,
    keys: HashMap<Kid, PrivateKey>,
}

impl Keyring {
    /// Loads the store; returns the notes the store made while loading.
    pub fn load(store: Box<dyn KeyStore>) -> Result<(Keyring, Vec<String>), StoreError> {
        Keyring::load_with(store, None)
    }

    /// Loads the store and checks the token against it (the crash rules in
    /// [`token`]); returns the notes made while loading.
    pub fn load_with(
        store: Box<dyn KeyStore>,
        token: Option<Arc<Token>>,
    ) -> Result<(Keyring, Vec<String>), StoreError> {
        let store: Arc<dyn KeyStore> = Arc::from(store);
        let (state, keys, notes) = load_all(&*store, token.as_ref(), !store.shared())?;
        Ok((
            Keyring {
                store,
                token,
                state,
                keys,
            },
            notes,
        ))
    }

    pub fn state(&self) -> &KeyringState {
        &self.state
    }

    pub fn key(&self, kid: &Kid) -> Option<&PrivateKey> {
        self.keys.get(kid)
    }

    /// The token, when one is configured.
    pub fn token(&self) -> Option<&Arc<Token>> {
        self.token.as_ref()
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
        let (state, keys, notes) = load_all(&*self.store, self.token.as_ref(), false)?;
        for n in &notes {
            tracing::warn!(store = %self.store.location(), "{n}");
        }
        let changed = state != self.state;
        self.state = state;
        self.keys = keys;
        Ok(changed)
    }

    /// Carries out a plan: the transitions in one commit, then the generated
    /// keys (staged durably first) in another. Returns the committed events,
    /// and the error that stopped the rest, if any; the in-memory state is
    /// always what the store last committed.
    pub fn execute(&mut self, actions: &[Action], clock: &dyn Clock) -> Executed {
        self.execute_as(actions, clock, &Actor::jwksd())
    }

    /// [`Keyring::execute`] on behalf of `actor` (an operator's command),
    /// whom the audit records of its transitions name.
    pub fn execute_as(&mut self, actions: &[Action], clock: &dyn Clock, actor: &Actor) -> Executed {
        let (gens, transitions): (Vec<Action>, Vec<Action>) =
            actions.iter().cloned().partition(Action::is_generate);
        let mut events = Vec::new();
        let mut records = Vec::new();
        let error = self
            .commit_transitions(&transitions, clock, actor, &mut events, &mut records)
            .err();
        log_events(&events);
        if error.is_some() || gens.is_empty() {
            return Executed {
                events,
                records,
                error,
            };
        }
        match generate_staged(&*self.store, &gens) {
            Ok(made) => {
                let done = self.commit_generated(made, clock);
                events.extend(done.events);
                records.extend(done.records);
                Executed {
                    events,
                    records,
                    error: done.error,
                }
            }
            Err(e) => Executed {
                events,
                records,
                error: Some(e),
            },
        }
    }

    /// Applies transitions (no generation) and commits them as one change.
    fn commit_transitions(
        &mut self,
        transitions: &[Action],
        clock: &dyn Clock,
        actor: &Actor,
        events: &mut Vec<Event>,
        records: &mut Vec<Record>,
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
        let audit = audit_entries(&self.state, &next, now, actor);
        records.extend(self.store.commit(&next, &audit)?);
        if let Some(t) = &self.token {
            token::destroy_ended(t, &self.state, &next);
        }
        self.keys
            .retain(|kid, _| next.keys.iter().any(|k| &k.kid == kid));
        self.state = next;
        events.append(&mut pending);
        Ok(())
    }
}

type LoadedAll = (KeyringState, HashMap<Kid, PrivateKey>, Vec<String>);

/// The store's state and keys, and the token's keys checked against it.
fn load_all(
    store: &dyn KeyStore,
    token: Option<&Arc<Token>>,
    tidy: bool,
) -> Result<LoadedAll, StoreError> {
    let loaded = store.load()?;
    token::require_token(&loaded.state, token)?;
    let mut keys: HashMap<Kid, PrivateKey> = loaded
        .keys
        .into_iter()
        .map(|(kid, k)| (kid, PrivateKey::Store(k)))
        .collect();
    let mut notes = loaded.notes;
    if let Some(t) = token {
        let ring = token::ring_of(&store.location());
        let checked = token::check_within(t, &loaded.state, &ring, tidy, store.shared())?;
        keys.extend(checked.keys);
        notes.extend(checked.notes);
    }
    Ok((loaded.state, keys, notes))
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
) -> Result<Vec<(Action, PrivateKey)>, ExecuteError> {
    generate_staged_gated(&Maker::store(store), actions, &StagingGate::default())
}

/// Where [`generate_staged_gated`] makes keys: the store (which stages
/// what is generated in memory), or the token (whose generation is the
/// staging), as `custody` says. The token is held weakly: a generation
/// thread left behind at shutdown must not be the one that closes the
/// module (its last `Arc`) while the process exits, and it uses the token
/// only while the staging gate is open ([`StagingGate::close`] waits for
/// that).
pub struct Maker<'a> {
    pub store: &'a dyn KeyStore,
    pub token: Option<Weak<Token>>,
    pub custody: &'a Custody,
}

impl<'a> Maker<'a> {
    /// Keys made in memory and staged in `store`.
    pub fn store(store: &'a dyn KeyStore) -> Maker<'a> {
        Maker {
            store,
            token: None,
            custody: &Custody::Software,
        }
    }

    /// Drops a key made but not committed (best effort: load discards what
    /// remains).
    pub fn discard(&self, key: &PrivateKey) {
        let token = self.token.as_ref().and_then(Weak::upgrade);
        discard(self.store, token.as_deref(), key);
    }
}

fn discard(store: &dyn KeyStore, token: Option<&Token>, key: &PrivateKey) {
    match (key, token) {
        (PrivateKey::Store(k), _) => store.discard(&k.kid),
        (PrivateKey::Token(k), Some(t)) => {
            if let Err(e) = t.destroy(&k.kid) {
                tracing::warn!(kid = %k.kid, error = %e, "could not destroy a key generated but not committed; the next start destroys it");
            }
        }
        (PrivateKey::Token(_), None) => {}
    }
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
            return Err(shutting_down());
        }
        store.stage(key)?;
        Ok(())
    }

    /// Generates in the token `label` while the gate is open: generation
    /// there is the staging (the objects are durable as they are made).
    /// The token is used, and let go, within the gate.
    fn stage_in(
        &self,
        t: &Weak<Token>,
        label: &str,
        ring: &str,
        alg: keys::Alg,
        rsa_bits: u32,
    ) -> Result<keys::pkcs11::TokenKey, ExecuteError> {
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = t.upgrade().filter(|_| !*closed) else {
            return Err(shutting_down());
        };
        if t.label() != label {
            return Err(ExecuteError::Store(StoreError::Other(format!(
                "new keys go to pkcs11:{label}, which this jwksd has not opened"
            ))));
        }
        let made = t.stage(alg, rsa_bits, ring, token::unix_now());
        drop(t);
        drop(closed);
        Ok(made?)
    }

    /// Runs `f` while the gate is open (none when it is closed).
    fn while_open(&self, f: impl FnOnce()) {
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if !*closed {
            f();
        }
    }
}

fn shutting_down() -> ExecuteError {
    ExecuteError::Store(StoreError::Other(
        "shutting down: the key generated was not staged".into(),
    ))
}

/// [`generate_staged`], staging through `gate`: once it is closed, nothing
/// more is staged (nor discarded: the next start discards what is staged).
pub fn generate_staged_gated(
    maker: &Maker<'_>,
    actions: &[Action],
    gate: &StagingGate,
) -> Result<Vec<(Action, PrivateKey)>, ExecuteError> {
    let mut out: Vec<(Action, PrivateKey)> = Vec::with_capacity(actions.len());
    for a in actions {
        let Action::Generate { alg, rsa_bits, .. } = a else {
            continue;
        };
        let made = match (maker.custody, &maker.token) {
            (Custody::Software, _) => keys::generate_in_background(*alg, *rsa_bits)
                .map_err(ExecuteError::from)
                .and_then(|key| {
                    gate.stage(maker.store, &key)?;
                    Ok(PrivateKey::Store(key))
                }),
            (Custody::Pkcs11 { token_label }, Some(t)) => gate
                .stage_in(
                    t,
                    token_label,
                    &token::ring_of(&maker.store.location()),
                    *alg,
                    *rsa_bits,
                )
                .map(PrivateKey::Token),
            (custody, _) => Err(ExecuteError::Store(StoreError::Other(format!(
                "new keys go to {custody}, which this jwksd has not opened"
            )))),
        };
        match made {
            Ok(key) => out.push((a.clone(), key)),
            Err(e) => {
                gate.while_open(|| {
                    for (_, key) in &out {
                        maker.discard(key);
                    }
                });
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
        made: Vec<(Action, PrivateKey)>,
        clock: &dyn Clock,
    ) -> Executed {
        let token = self.token.clone();
        let discard = |key: &PrivateKey| discard(&*self.store, token.as_deref(), key);
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
            if !still_wanted(&next, &a) || key.alg() != *alg {
                discard(&key);
                continue;
            }
            let custody = match (&key, &token) {
                (PrivateKey::Token(_), Some(t)) => Custody::Pkcs11 {
                    token_label: t.label().to_owned(),
                },
                _ => Custody::Software,
            };
            let new = NewKey {
                kid: key.kid().clone(),
                alg: key.alg(),
                public: key.public().clone(),
                custody,
            };
            if let Err(e) = next.apply(&a, now, Some(new)) {
                discard(&key);
                for (_, k) in &keep {
                    discard(k);
                }
                return Executed {
                    events: Vec::new(),
                    records: Vec::new(),
                    error: Some(e.into()),
                };
            }
            events.push(Event {
                kid: key.kid().clone(),
                alg: key.alg(),
                from: None,
                to: *role,
                trigger: *trigger,
            });
            keep.push((a.clone(), key));
        }
        if keep.is_empty() {
            return Executed {
                events,
                records: Vec::new(),
                error: None,
            };
        }
        next.version += 1;
        let audit = audit_entries(&self.state, &next, now, &Actor::jwksd());
        let records = match self.store.commit(&next, &audit) {
            Ok(r) => r,
            Err(e) => {
                // A conflict or a refused write: nothing names them. (A commit
                // that failed yet landed cannot name a key destroyed here: the
                // stores refuse to commit a state whose keys they lack, and a
                // token key named but destroyed would fail the next load;
                // the token's keys are therefore kept, staged, for the load's
                // rules to judge.)
                for (_, key) in &keep {
                    if matches!(key, PrivateKey::Store(_))
                        || matches!(e, StoreError::Conflict { .. })
                    {
                        discard(key);
                    }
                }
                return Executed {
                    events: Vec::new(),
                    records: Vec::new(),
                    error: Some(e.into()),
                };
            }
        };
        self.state = next;
        for (_, key) in keep {
            self.keys.insert(key.kid().clone(), key);
        }
        log_events(&events);
        Executed {
            events,
            records,
            error: None,
        }
    }
}

/// The audit entries of the change from `before` to `after`: its
/// transitions (`lifecycle::event::between`), by `actor`, at `now`.
fn audit_entries(
    before: &KeyringState,
    after: &KeyringState,
    now: crate::time::Timestamp,
    actor: &Actor,
) -> Vec<Entry> {
    between(before, after)
        .into_iter()
        .map(|event| Entry {
            at: now,
            actor: actor.clone(),
            event,
        })
        .collect()
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

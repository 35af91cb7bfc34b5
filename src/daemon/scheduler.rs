//! The scheduler: the one task that changes the key ring. It sleeps until
//! the planner's next wake-up (or an operator's command), carries the
//! actions out on a blocking thread, and swaps in a new snapshot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::daemon::Shared;
use crate::daemon::snapshot::Snapshot;
use crate::keyring::{Event, ExecuteError, Executed, Keyring, generate_staged};
use crate::keys::KeyMaterial;
use crate::keys::{Alg, Kid};
use crate::lifecycle::{
    Action, KeyState, Policy, RevokeError, RotateError, Trigger, plan, revoke, rotate,
};
use crate::store::StoreError;
use crate::time::{Clock, Timestamp};

/// The longest the scheduler sleeps: bounds how late it notices a wall
/// clock that jumped.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub enum Command {
    Rotate {
        alg: Option<Alg>,
        force: bool,
        reply: oneshot::Sender<Result<Vec<Rotated>, CommandError>>,
    },
    Revoke {
        kid: Kid,
        reply: oneshot::Sender<Result<Revoked, CommandError>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rotate(RotateError),
    #[error(transparent)]
    Revoke(RevokeError),
    #[error("{0}")]
    Failed(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct Rotated {
    pub alg: Alg,
    /// The new active key.
    pub kid: Kid,
    pub previous_kid: Kid,
    pub forced: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Revoked {
    pub kid: Kid,
    pub alg: Alg,
    /// The state the key was in.
    pub was: KeyState,
    /// The next key promoted in its place, when the active key was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted: Option<Kid>,
}

/// What a generation task yields: the keys made for the actions.
type Generated = Result<Vec<(Action, KeyMaterial)>, ExecuteError>;

pub struct Scheduler {
    pub ring: Arc<Mutex<Keyring>>,
    pub policy: Arc<Policy>,
    pub clock: Arc<dyn Clock>,
    pub shared: Arc<Shared>,
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: watch::Receiver<bool>,
    /// Set when other replicas share the store.
    pub replication: Option<Replication>,
}

/// How a replica learns what others changed.
pub struct Replication {
    /// Woken by change notifications (and by a newly won lease).
    pub changes: Arc<Notify>,
    /// How often the store's version is checked anyway.
    pub poll: Duration,
}

fn lock(ring: &Mutex<Keyring>) -> std::sync::MutexGuard<'_, Keyring> {
    // The key ring's in-memory state only changes after a successful commit,
    // so it is consistent even if a panic poisoned the lock.
    ring.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    pub async fn run(mut self) {
        self.shared.set_scheduler_running(true);
        // An empty store publishes nothing until its first keys exist: an
        // empty JWK Set must not be cached by verifiers while the first
        // key (which signs at once) is being generated.
        if !lock(&self.ring).state().keys.is_empty() {
            self.publish().await;
        }
        let mut backoff = BACKOFF_START;
        let mut retry_at: Option<Timestamp> = None;
        // Key generation runs beside the timeline: retirements and rotations
        // never wait for an RSA key to be found.
        // Generation tasks in flight: the planner's one at a time, an
        // operator's always (a revocation must not wait for a rotation's).
        let mut generating: JoinSet<Generated> = JoinSet::new();
        loop {
            if self.replication.is_some() {
                self.sync().await;
            }
            // Only the leader runs the planner; every replica serves.
            let leading = self.shared.is_leader();
            let now = self.clock.now();
            let state = lock(&self.ring).state().clone();
            let plan = plan(&state, &self.policy, now);
            let mut wake = plan.wake_at;
            let (gens, transitions): (Vec<Action>, Vec<Action>) =
                plan.actions.into_iter().partition(Action::is_generate);
            if leading && !gens.is_empty() && transitions.is_empty() {
                if generating.is_empty() && retry_at.is_none_or(|r| r <= now) {
                    self.start_generation(&mut generating, gens.clone());
                }
                // Woken by the generation finishing, the retry time, or the
                // next transition on the timeline, whichever comes first.
                wake = crate::lifecycle::upcoming(&state, &self.policy, now)
                    .first()
                    .map(|u| u.at)
                    .into_iter()
                    .chain(retry_at)
                    .min();
            }
            if leading && !transitions.is_empty() {
                if retry_at.is_none_or(|r| r <= now) {
                    match self.execute(transitions, true).await {
                        Ok(()) => {
                            backoff = BACKOFF_START;
                            retry_at = None;
                            // The keys this step needs, under its trigger.
                            if generating.is_empty() && !gens.is_empty() {
                                self.start_generation(&mut generating, gens);
                            }
                            continue;
                        }
                        Err(ExecuteError::Store(StoreError::Conflict { expected, found })) => {
                            // Another writer committed first: that counts
                            // as done. Reload and plan again.
                            tracing::info!(expected, found, "the stored state moved on; reloading");
                            self.sync().await;
                            continue;
                        }
                        Err(e) => {
                            let at = now.saturating_add(backoff);
                            tracing::error!(error = %e, retry_at = %at, "lifecycle step failed; current keys keep serving");
                            retry_at = Some(at);
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                wake = retry_at;
            }
            let mut sleep = wake
                .map(|w| w.since(now))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            if !leading {
                sleep = MAX_SLEEP;
            }
            let changes = self.replication.as_ref().map(|r| {
                sleep = sleep.min(r.poll);
                r.changes.clone()
            });
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = async { match &changes { Some(c) => c.notified().await, None => std::future::pending().await } } => {}
                Some(done) = generating.join_next(), if !generating.is_empty() => {
                    match self.finish_generation(done).await {
                        Ok(()) => {
                            backoff = BACKOFF_START;
                            retry_at = None;
                        }
                        Err(e) => {
                            let at = self.clock.now().saturating_add(backoff);
                            tracing::error!(error = %e, retry_at = %at, "key generation failed; current keys keep serving");
                            retry_at = Some(at);
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => {
                        let gens = self.command(cmd).await;
                        if !gens.is_empty() {
                            self.start_generation(&mut generating, gens);
                        }
                    }
                    None => break,
                },
                _ = self.shutdown.changed() => break,
            }
        }
        self.shared.set_scheduler_running(false);
    }

    /// Starts generating (and staging) keys on a blocking thread.
    fn start_generation(&self, set: &mut JoinSet<Generated>, actions: Vec<Action>) {
        let store = lock(&self.ring).store();
        set.spawn_blocking(move || generate_staged(&*store, &actions));
    }

    /// Commits finished keys, records metrics and publishes.
    async fn finish_generation(
        &self,
        done: Result<Generated, tokio::task::JoinError>,
    ) -> Result<(), ExecuteError> {
        let made = match done {
            Ok(Ok(made)) => made,
            Ok(Err(e)) => {
                self.record(&[], &[], Some(&e), true);
                self.shared.set_lifecycle_error(Some(e.to_string()));
                return Err(e);
            }
            Err(join) => {
                let e = ExecuteError::Store(StoreError::Other(format!(
                    "generation task failed: {join}"
                )));
                self.shared.set_lifecycle_error(Some(e.to_string()));
                return Err(e);
            }
        };
        let ring = self.ring.clone();
        let clock = self.clock.clone();
        let before = lock(&self.ring).state().version;
        let executed =
            tokio::task::spawn_blocking(move || lock(&ring).commit_generated(made, &*clock))
                .await
                .map_err(|e| {
                    ExecuteError::Store(StoreError::Other(format!("commit task failed: {e}")))
                })?;
        match self.settle(&[], before, executed, true).await {
            Err(ExecuteError::Store(StoreError::Conflict { .. })) => {
                self.sync().await;
                Ok(())
            }
            other => other,
        }
    }

    /// Reloads the key ring when another replica changed the store, and
    /// publishes it; tracks whether the store answers.
    async fn sync(&self) {
        let ring = self.ring.clone();
        match tokio::task::spawn_blocking(move || lock(&ring).reload()).await {
            Ok(Ok(changed)) => {
                self.shared.set_store_reachable(true);
                if changed {
                    self.publish().await;
                }
            }
            Ok(Err(e)) => {
                if self.shared.set_store_reachable(false) {
                    tracing::warn!(error = %e, "store unreachable; serving the last known keys");
                }
            }
            Err(e) => tracing::error!(error = %e, "sync task failed"),
        }
    }

    /// Carries out actions on a blocking thread, records metrics, publishes.
    /// `background`: a step of the schedule, whose failure readers see as
    /// `lifecycle_failing`; an operator's command reports its own.
    async fn execute(&self, actions: Vec<Action>, background: bool) -> Result<(), ExecuteError> {
        let ring = self.ring.clone();
        let clock = self.clock.clone();
        let acts = actions.clone();
        let before = lock(&self.ring).state().version;
        let executed =
            tokio::task::spawn_blocking(move || lock(&ring).execute(&acts, &*clock)).await;
        let executed = match executed {
            Ok(e) => e,
            Err(join) => {
                self.shared
                    .set_lifecycle_error(Some(format!("lifecycle task failed: {join}")));
                return Err(ExecuteError::Store(crate::store::StoreError::Other(
                    format!("lifecycle task failed: {join}"),
                )));
            }
        };
        self.settle(&actions, before, executed, background).await
    }

    /// After a step: metrics, publishing what was committed (even when a
    /// later part failed), and the lifecycle error readers see.
    async fn settle(
        &self,
        actions: &[Action],
        before: u64,
        executed: Executed,
        background: bool,
    ) -> Result<(), ExecuteError> {
        self.record(
            actions,
            &executed.events,
            executed.error.as_ref(),
            background,
        );
        if lock(&self.ring).state().version != before {
            self.publish().await;
        }
        match executed.error {
            None => {
                if background {
                    self.shared.set_lifecycle_error(None);
                }
                Ok(())
            }
            Some(e) => {
                if background {
                    self.shared.set_lifecycle_error(Some(e.to_string()));
                }
                Err(e)
            }
        }
    }

    fn record(
        &self,
        actions: &[Action],
        events: &[Event],
        error: Option<&ExecuteError>,
        background: bool,
    ) {
        let m = &self.shared.metrics;
        for e in events {
            if e.to == KeyState::Active && e.from == Some(KeyState::Next) {
                m.rotation(e.alg, e.trigger, true);
            }
        }
        let Some(err) = error else {
            if background {
                m.lifecycle_failing.set(0);
            }
            return;
        };
        if background {
            m.lifecycle_failing.set(1);
        }
        let action = if err.is_generation() {
            "generate"
        } else {
            "commit"
        };
        m.lifecycle_failures
            .get_or_create(&crate::metrics::ActionLabels {
                action: action.into(),
            })
            .inc();
        if let ExecuteError::Key(crate::keys::KeyError::Generate { alg, .. }) = err {
            m.generation_failures
                .get_or_create(&crate::metrics::AlgLabels { alg: (*alg).into() })
                .inc();
        }
        for a in actions {
            match a {
                Action::Activate { kid, trigger, .. } if !events.iter().any(|e| &e.kid == kid) => {
                    if let Some(alg) = lock(&self.ring).state().find(kid).map(|k| k.alg) {
                        m.rotation(alg, *trigger, false);
                    }
                }
                _ => {}
            }
        }
    }

    /// Rebuilds the snapshot from the key ring and swaps it in.
    pub async fn publish(&self) {
        let ring = self.ring.clone();
        let policy = self.policy.clone();
        let now = self.clock.now();
        let built =
            tokio::task::spawn_blocking(move || Snapshot::build(&lock(&ring), &policy, now)).await;
        match built {
            Ok(Ok(snap)) => {
                for alg in Alg::ALL {
                    // The last rotation is the active key's activation,
                    // which also holds across restarts.
                    if let Some(at) = snap.state.active(alg).and_then(|k| k.activated_at) {
                        self.shared
                            .metrics
                            .last_rotation
                            .get_or_create(&crate::metrics::AlgLabels { alg: alg.into() })
                            .set(at.as_millis() as f64 / 1000.0);
                    }
                    for st in [KeyState::Next, KeyState::Active, KeyState::Retiring] {
                        self.shared
                            .metrics
                            .set_published(alg, st, snap.count(alg, st) as i64);
                    }
                }
                self.shared.snapshot.store(Some(Arc::new(snap)));
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot load an active key for signing"),
            Err(e) => tracing::error!(error = %e, "snapshot task failed"),
        }
    }

    /// Carries an operator's command out: its transitions at once; the keys
    /// it needs are returned, for the caller to generate beside the timeline.
    async fn command(&self, cmd: Command) -> Vec<Action> {
        // Any replica carries operator commands out: the store's
        // compare-and-set keeps replicas from undoing each other.
        if self.replication.is_some() {
            self.sync().await;
        }
        let now = self.clock.now();
        let state = lock(&self.ring).state().clone();
        match cmd {
            Command::Rotate { alg, force, reply } => {
                let actions = match rotate(&state, &self.policy, now, alg, force) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::info!(error = %e, "rotation refused");
                        let _ = reply.send(Err(CommandError::Rotate(e)));
                        return Vec::new();
                    }
                };
                let (gens, transitions): (Vec<Action>, Vec<Action>) =
                    actions.into_iter().partition(Action::is_generate);
                let pairs: Vec<(Alg, Kid, Kid)> = transitions
                    .iter()
                    .filter_map(|a| match a {
                        Action::Activate { kid, .. } => {
                            let alg = state.find(kid)?.alg;
                            Some((alg, kid.clone(), state.active(alg)?.kid.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                let result = self.execute(transitions, false).await;
                let after = lock(&self.ring).state().clone();
                let done: Vec<Rotated> = pairs
                    .into_iter()
                    .filter(|(_, kid, _)| after.find(kid).is_some_and(|k| k.state == KeyState::Active))
                    .map(|(alg, kid, previous_kid)| {
                        let forced = after
                            .find(&kid)
                            .and_then(|k| k.transitions.last())
                            .is_some_and(|t| t.trigger == Trigger::Forced);
                        if forced {
                            tracing::warn!(alg = %alg, kid = %kid, "forced rotation: the new key signs before verifiers' caches can know it");
                        }
                        Rotated {
                            alg,
                            kid,
                            previous_kid,
                            forced,
                        }
                    })
                    .collect();
                let ok = !done.is_empty();
                let _ = reply.send(match (result, ok) {
                    (Err(e), false) => Err(CommandError::Failed(e.to_string())),
                    _ => Ok(done),
                });
                if ok { gens } else { Vec::new() }
            }
            Command::Revoke { kid, reply } => {
                let actions = match revoke(&state, &self.policy, now, &kid) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = reply.send(Err(CommandError::Revoke(e)));
                        return Vec::new();
                    }
                };
                let Some(before) = state.find(&kid).cloned() else {
                    let _ = reply.send(Err(CommandError::Revoke(RevokeError::Unknown(kid))));
                    return Vec::new();
                };
                let (gens, transitions): (Vec<Action>, Vec<Action>) =
                    actions.into_iter().partition(Action::is_generate);
                let result = self.execute(transitions, false).await;
                let after = lock(&self.ring).state().clone();
                let revoked = after
                    .find(&kid)
                    .is_some_and(|k| k.state == KeyState::Revoked);
                if !revoked {
                    let msg = result.err().map(|e| e.to_string()).unwrap_or_default();
                    let _ = reply.send(Err(CommandError::Failed(format!(
                        "revocation of {kid} was not committed: {msg}"
                    ))));
                    return Vec::new();
                }
                let promoted = (before.state == KeyState::Active)
                    .then(|| after.active(before.alg).map(|k| k.kid.clone()))
                    .flatten();
                tracing::warn!(kid = %kid, alg = %before.alg, was = %before.state, promoted = promoted.as_ref().map(|k| k.as_str()).unwrap_or("none"), "key revoked");
                let _ = reply.send(Ok(Revoked {
                    kid,
                    alg: before.alg,
                    was: before.state,
                    promoted,
                }));
                gens
            }
        }
    }
}

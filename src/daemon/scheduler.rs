//! The scheduler: the one task that changes the key ring. It sleeps until
//! the planner's next wake-up (or an operator's command), carries the
//! actions out on a blocking thread, and swaps in a new snapshot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;

// The answers are wire types; re-exported where they were defined.
pub use crate::api::{Revoked, Rotated};
use crate::daemon::Shared;
use crate::daemon::snapshot::Snapshot;
use crate::keyring::{Event, ExecuteError, Executed, Keyring, generate_staged};
use crate::keys::KeyMaterial;
use crate::keys::{Alg, Kid};
use crate::lifecycle::{
    Action, EarlyActivation, KeyState, KeyringState, Policy, RevokeError, RotateError, Trigger,
    plan, revoke, rotate,
};
use crate::store::StoreError;
use crate::time::{Clock, Timestamp};

/// The longest the scheduler sleeps: bounds how late it notices a wall
/// clock that jumped.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
/// The longest wait between two reads of a shared state that failed.
const SYNC_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a command waiting for a key is tried again.
const RETRY_POLL: Duration = Duration::from_millis(100);
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

/// How often an operator's rotation is judged again when other replicas
/// keep committing first.
const ROTATE_ATTEMPTS: u32 = 3;

/// How long an operator's rotation waits for its new next key before it
/// answers anyway (RSA-4096 generation can take seconds).
pub const ROTATE_NEXT_WAIT: Duration = Duration::from_secs(30);

/// What became of an operator's command.
enum Outcome {
    /// Carried out (or refused): keys to generate, an answer still owed.
    Done(Vec<Action>, Option<PendingRotation>),
    /// To try again once the keys it waits for exist.
    Retry(Command, std::time::Instant),
}

/// A rotation that committed and waits for its new next keys to answer.
struct PendingRotation {
    reply: oneshot::Sender<Result<Vec<Rotated>, CommandError>>,
    done: Vec<Rotated>,
    until: std::time::Instant,
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
        let mut pending: Vec<PendingRotation> = Vec::new();
        let mut retry: Vec<(Command, std::time::Instant)> = Vec::new();
        // Retries of a shared state that cannot be read: capped, doubling.
        let mut sync_backoff = Duration::ZERO;
        loop {
            let mut in_sync = true;
            if let Some(r) = &self.replication {
                in_sync = self.sync().await;
                // A store that does not answer is polled as usual (it is
                // back when it is back); one whose state cannot be used is
                // retried with a doubling backoff: nothing changes by itself.
                let unreadable = self.shared.sync_failure().is_some_and(|f| !f.unreachable);
                sync_backoff = if in_sync || !unreadable {
                    r.poll
                } else {
                    (sync_backoff * 2).clamp(r.poll, SYNC_BACKOFF_MAX.max(r.poll))
                };
            }
            // Only the leader runs the planner, and only on the state it
            // just read; every replica serves.
            let leading = self.shared.is_leader() && in_sync;
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
                sleep = if in_sync {
                    sleep.min(r.poll)
                } else {
                    sync_backoff
                };
                r.changes.clone()
            });
            self.answer_pending(&mut pending, generating.is_empty());
            for (cmd, since) in std::mem::take(&mut retry) {
                self.run_command(cmd, Some(since), &mut generating, &mut pending, &mut retry)
                    .await;
            }
            if !retry.is_empty() {
                sleep = sleep.min(RETRY_POLL);
            }
            if let Some(p) = pending.iter().map(|p| p.until).min() {
                sleep = sleep.min(p.saturating_duration_since(std::time::Instant::now()));
            }
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
                    Some(cmd) => self.run_command(cmd, None, &mut generating, &mut pending, &mut retry).await,
                    None => break,
                },
                _ = self.shutdown.changed() => break,
            }
        }
        self.answer_pending(&mut pending, true);
        self.shared.set_scheduler_running(false);
    }

    async fn run_command(
        &self,
        cmd: Command,
        since: Option<std::time::Instant>,
        generating: &mut JoinSet<Generated>,
        pending: &mut Vec<PendingRotation>,
        retry: &mut Vec<(Command, std::time::Instant)>,
    ) {
        match self.command(cmd, since).await {
            Outcome::Done(gens, waiting) => {
                if !gens.is_empty() {
                    self.start_generation(generating, gens);
                }
                pending.extend(waiting);
            }
            Outcome::Retry(cmd, since) => retry.push((cmd, since)),
        }
    }

    /// Answers the rotations whose new next keys are committed; with
    /// `all`, or past their wait, the others too, with what there is.
    fn answer_pending(&self, pending: &mut Vec<PendingRotation>, all: bool) {
        if pending.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let state = lock(&self.ring).state().clone();
        let mut i = 0;
        while i < pending.len() {
            let p = &mut pending[i];
            for r in &mut p.done {
                r.next_kid = state.next_key(r.alg).map(|k| k.kid.clone());
            }
            if all || p.until <= now || p.done.iter().all(|r| r.next_kid.is_some()) {
                let p = pending.swap_remove(i);
                let _ = p.reply.send(Ok(p.done));
            } else {
                i += 1;
            }
        }
    }

    /// Starts generating (and staging) keys on blocking threads: an
    /// emergency active key (its predecessor revoked with no next key to
    /// promote) on one of its own, committed as soon as it is made, so that
    /// signing never waits for the next key generated beside it; the
    /// others together, committed at once.
    fn start_generation(&self, set: &mut JoinSet<Generated>, actions: Vec<Action>) {
        let store = lock(&self.ring).store();
        let (alone, together): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .filter(Action::is_generate)
            .partition(|a| {
                matches!(
                    a,
                    Action::Generate {
                        role: KeyState::Active,
                        early: Some(EarlyActivation::Emergency),
                        ..
                    }
                )
            });
        for a in alone {
            let store = store.clone();
            set.spawn_blocking(move || generate_staged(&*store, std::slice::from_ref(&a)));
        }
        if !together.is_empty() {
            set.spawn_blocking(move || generate_staged(&*store, &together));
        }
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
        let started = std::time::Instant::now();
        let executed =
            tokio::task::spawn_blocking(move || lock(&ring).commit_generated(made, &*clock))
                .await
                .map_err(|e| {
                    ExecuteError::Store(StoreError::Other(format!("commit task failed: {e}")))
                })?;
        match self.settle(&[], before, started, executed, true).await {
            Err(ExecuteError::Store(StoreError::Conflict { .. })) => {
                self.sync().await;
                Ok(())
            }
            other => other,
        }
    }

    /// Reloads the key ring when another replica changed the store, and
    /// publishes it; tracks whether the store answers and whether its state
    /// could be applied. Returns whether the key ring is now what the store
    /// holds.
    async fn sync(&self) -> bool {
        let ring = self.ring.clone();
        let started = std::time::Instant::now();
        let error = match tokio::task::spawn_blocking(move || lock(&ring).reload()).await {
            Ok(Ok(changed)) => {
                self.shared.set_store_reachable(true);
                self.shared.mark_synced(started);
                if changed {
                    self.publish().await;
                }
                return true;
            }
            Ok(Err(e)) => e,
            Err(e) => StoreError::Other(format!("sync task failed: {e}")),
        };
        let unreachable = error.is_unreachable();
        let went_down = self.shared.set_store_reachable(!unreachable);
        let news = self.shared.set_sync_failure(super::SyncFailure {
            unreachable,
            message: error.to_string(),
        });
        if unreachable && (went_down || news) {
            tracing::warn!(error = %error, "store unreachable; serving the last known keys, signing only within the freshness window");
        } else if news {
            tracing::error!(error = %error, "cannot read the shared key-ring state; this replica stops leading and stops signing once its freshness window is over; retrying with backoff");
        }
        false
    }

    /// Carries out actions on a blocking thread, records metrics, publishes.
    /// `background`: a step of the schedule, whose failure readers see as
    /// `lifecycle_failing`; an operator's command reports its own.
    async fn execute(&self, actions: Vec<Action>, background: bool) -> Result<(), ExecuteError> {
        let ring = self.ring.clone();
        let clock = self.clock.clone();
        let acts = actions.clone();
        let before = lock(&self.ring).state().version;
        // Until what it commits is served, the keys it may deactivate are
        // handed out only within the freshness window (Policy::propagation).
        let _in_flight = self.shared.commit_in_flight();
        let started = std::time::Instant::now();
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
        self.settle(&actions, before, started, executed, background)
            .await
    }

    /// After a step: metrics, publishing what was committed (even when a
    /// later part failed), and the lifecycle error readers see.
    async fn settle(
        &self,
        actions: &[Action],
        before: u64,
        started: std::time::Instant,
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
            // What this replica committed is what the store holds.
            self.shared.mark_synced(started);
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
                self.shared.publish(snap);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot load an active key for signing"),
            Err(e) => tracing::error!(error = %e, "snapshot task failed"),
        }
    }

    /// An operator's rotation, judged on `state` (just read). When another
    /// replica commits first, it is judged again on what that replica
    /// committed, by the same rules as on one replica; when that was this
    /// very rotation (the keys it would rotate out are no longer active),
    /// it answers as done there.
    async fn rotate_command(
        &self,
        arrived: KeyringState,
        alg: Option<Alg>,
        force: bool,
        reply: oneshot::Sender<Result<Vec<Rotated>, CommandError>>,
        waiting_since: Option<std::time::Instant>,
    ) -> Outcome {
        let mut state = arrived.clone();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let actions = match rotate(&state, &self.policy, self.clock.now(), alg, force) {
                Ok(a) => a,
                Err(RotateError::NotReady {
                    missing: "next", ..
                }) if waiting_since.is_none_or(|t| t.elapsed() < ROTATE_NEXT_WAIT) => {
                    // The next key of a rotation just made is on its way
                    // (here or on another replica): answer by the rules
                    // once it is there.
                    let since = waiting_since.unwrap_or_else(std::time::Instant::now);
                    return Outcome::Retry(Command::Rotate { alg, force, reply }, since);
                }
                Err(e) => {
                    tracing::info!(error = %e, "rotation refused");
                    let _ = reply.send(Err(CommandError::Rotate(e)));
                    return Outcome::Done(Vec::new(), None);
                }
            };
            let (gens, transitions): (Vec<Action>, Vec<Action>) =
                actions.into_iter().partition(Action::is_generate);
            // (algorithm, key made active, key rotated out)
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
            if let Err(ExecuteError::Store(StoreError::Conflict { .. })) = &result
                && attempts < ROTATE_ATTEMPTS
            {
                self.sync().await;
                state = lock(&self.ring).state().clone();
                let rotated_out = |(alg, _, previous): &(Alg, Kid, Kid)| {
                    arrived.active(*alg).is_some_and(|k| &k.kid == previous)
                        && state
                            .find(previous)
                            .is_some_and(|k| k.state != KeyState::Active)
                };
                if pairs.iter().all(rotated_out) {
                    let done = pairs
                        .iter()
                        .filter_map(|(alg, _, previous)| {
                            let kid = state.active(*alg)?.kid.clone();
                            Some(rotated(&state, *alg, kid, previous.clone(), true))
                        })
                        .collect();
                    tracing::info!("rotation already carried out by another replica");
                    let _ = reply.send(Ok(done));
                    return Outcome::Done(Vec::new(), None);
                }
                continue;
            }
            let after = lock(&self.ring).state().clone();
            let done: Vec<Rotated> = pairs
                .into_iter()
                .filter(|(_, kid, _)| after.find(kid).is_some_and(|k| k.state == KeyState::Active))
                .map(|(alg, kid, previous)| rotated(&after, alg, kid, previous, false))
                .collect();
            if done.is_empty() {
                let msg = match result {
                    Err(e) => e.to_string(),
                    Ok(()) => "the rotation was not committed".into(),
                };
                let _ = reply.send(Err(CommandError::Failed(msg)));
                return Outcome::Done(Vec::new(), None);
            }
            for r in done.iter().filter(|r| r.forced) {
                tracing::warn!(alg = %r.alg, kid = %r.kid, "forced rotation: the new key signs before verifiers' caches can know it");
            }
            // The answer waits for the new next keys: an operator who
            // rotates again gets the rules' answer, not "not ready".
            let waiting = PendingRotation {
                reply,
                done,
                until: std::time::Instant::now() + ROTATE_NEXT_WAIT,
            };
            return Outcome::Done(gens, Some(waiting));
        }
    }

    /// Carries an operator's command out: its transitions at once; the keys
    /// it needs are returned, for the caller to generate beside the timeline.
    /// `waiting_since`: when a rotation that met a next key still being
    /// generated (here or by another replica) was first tried; it is
    /// handed back in [`Outcome::Retry`] until that key exists or
    /// [`ROTATE_NEXT_WAIT`] has passed.
    async fn command(&self, cmd: Command, waiting_since: Option<std::time::Instant>) -> Outcome {
        // Any replica carries operator commands out: the store's
        // compare-and-set keeps replicas from undoing each other. One that
        // cannot read the shared state refuses rather than act on old keys.
        if self.replication.is_some() && !self.sync().await {
            let why = format!(
                "this replica cannot read the shared key-ring state ({}); send the command to \
                 another replica",
                self.shared
                    .sync_failure()
                    .map(|f| f.message)
                    .unwrap_or_default()
            );
            match cmd {
                Command::Rotate { reply, .. } => {
                    let _ = reply.send(Err(CommandError::Failed(why)));
                }
                Command::Revoke { reply, .. } => {
                    let _ = reply.send(Err(CommandError::Failed(why)));
                }
            }
            return Outcome::Done(Vec::new(), None);
        }
        let now = self.clock.now();
        let state = lock(&self.ring).state().clone();
        match cmd {
            Command::Rotate { alg, force, reply } => {
                self.rotate_command(state, alg, force, reply, waiting_since)
                    .await
            }
            Command::Revoke { kid, reply } => {
                let actions = match revoke(&state, &self.policy, now, &kid) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = reply.send(Err(CommandError::Revoke(e)));
                        return Outcome::Done(Vec::new(), None);
                    }
                };
                let Some(before) = state.find(&kid).cloned() else {
                    let _ = reply.send(Err(CommandError::Revoke(RevokeError::Unknown(kid))));
                    return Outcome::Done(Vec::new(), None);
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
                    return Outcome::Done(Vec::new(), None);
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
                Outcome::Done(gens, None)
            }
        }
    }
}

/// The answer for one algorithm rotated to `kid`, as `state` records it.
fn rotated(
    state: &KeyringState,
    alg: Alg,
    kid: Kid,
    previous_kid: Kid,
    by_another_replica: bool,
) -> Rotated {
    let forced = state
        .find(&kid)
        .and_then(|k| k.transitions.last())
        .is_some_and(|t| t.trigger == Trigger::Forced);
    Rotated {
        alg,
        kid,
        previous_kid,
        forced,
        next_kid: state.next_key(alg).map(|k| k.kid.clone()),
        by_another_replica,
    }
}

//! The scheduler: the one task that changes the key ring. It performs what
//! the [`Driver`] decides (commits on blocking threads, key generations on
//! threads of their own), feeds it what happened (a commit's or a generation's outcome,
//! a read of the shared state, leadership, an operator's command), sleeps
//! until the driver's next wake-up (or a command, a change notification, a
//! generation finishing), hands the driver's answers to the operators who
//! asked, and swaps in a new snapshot after every change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::audit::{Actor, Entry};
use crate::clock::Clock;
use crate::daemon::request::{Reply, Request};
use crate::daemon::shared::{Shared, SyncFailure};
use crate::daemon::snapshot::{Export, Snapshot};
use crate::keyring::{
    Event, ExecuteError, Executed, Keyring, Maker, StagingGate, generate_staged_gated,
};
use crate::keys::{Alg, PrivateKey};
use crate::lifecycle::event::Event as AuditEvent;
use crate::lifecycle::{
    Action, Answer, Command, CommandError, CommandId, Committed, Driver, KeyState, Policy, Synced,
    Work,
};
use crate::store::StoreError;

/// The longest the scheduler sleeps: bounds how late it notices a wall
/// clock that jumped.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long shutdown waits for a key being staged (written to the store)
/// at that moment; generating itself is not waited for.
const GENERATION_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// The most audit records a replica reads from the shared store at once
/// for its feed.
const CATCH_UP: usize = 512;
/// The most pieces of work done before the scheduler sleeps again.
const WORK_PER_WAKE: usize = 32;

/// How long a generation in a PKCS#11 token may take before it counts as
/// failed, and is retried as any failed generation is
/// ([docs/timeline.md](../../docs/timeline.md), "When a step fails"): an
/// HSM that stops answering must not stop the rotations without a word.
/// Generous: a network HSM makes an RSA-4096 key in tens of seconds. A
/// generation left behind that ends after all leaves staged objects no
/// state names, which the next load (or the leader's tidy) destroys.
pub const TOKEN_GENERATION_DEADLINE: Duration = Duration::from_secs(120);

/// An operator's command the driver is carrying out: where its answer
/// goes, who asked (for the audit log) and what.
struct Asked {
    reply: Reply,
    actor: Actor,
    command: Command,
}

/// What a generation task yields: the keys made for the actions.
type Generated = Result<Vec<(Action, PrivateKey)>, ExecuteError>;

pub struct Scheduler {
    pub ring: Arc<Mutex<Keyring>>,
    pub policy: Arc<Policy>,
    pub clock: Arc<dyn Clock>,
    pub shared: Arc<Shared>,
    pub commands: mpsc::Receiver<Request>,
    pub shutdown: watch::Receiver<bool>,
    /// Set when other replicas share the store.
    pub replication: Option<Replication>,
    /// Closed at shutdown: key generations in flight stage nothing more.
    pub staging: Arc<StagingGate>,
    /// What `/v1/keys/active` hands out (`signing_key.export`).
    pub export: Export,
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
        let mut driver = Driver::new(self.replication.as_ref().map(|r| r.poll));
        // Key generation runs beside the timeline: retirements and rotations
        // never wait for an RSA key to be found.
        let mut generating: JoinSet<Generated> = JoinSet::new();
        let mut replies: HashMap<CommandId, Asked> = HashMap::new();
        self.start_feed().await;
        let mut next_id = 0u64;
        loop {
            if self.replication.is_some() {
                let synced = self.sync().await;
                driver.synced(synced);
                self.catch_up_feed().await;
            }
            // Everything due now, as the driver says; bounded in case a
            // store keeps answering without changing anything. Leadership
            // is read before each step: a slow commit may outlast a lease.
            for _ in 0..WORK_PER_WAKE {
                driver.set_leader(self.shared.is_leader());
                let state = lock(&self.ring).state().clone();
                let Some(work) = driver.poll(&state, &self.policy, self.clock.now()) else {
                    break;
                };
                self.perform(work, &mut driver, &mut generating, &replies)
                    .await;
                self.answer(&mut driver, &mut replies);
            }
            self.answer(&mut driver, &mut replies);
            let now = self.clock.now();
            let state = lock(&self.ring).state().clone();
            let wake = driver.poll_timeout(&state, &self.policy, now);
            let mut sleep = wake
                .map(|w| w.since(now))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            if let Some(every) = driver.sync_interval() {
                sleep = if driver.in_sync() {
                    sleep.min(every)
                } else {
                    every
                };
            }
            let changes = self.replication.as_ref().map(|r| r.changes.clone());
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = async { match &changes { Some(c) => c.notified().await, None => std::future::pending().await } } => {}
                Some(done) = generating.join_next(), if !generating.is_empty() => {
                    let ok = match self.finish_generation(done).await {
                        Ok(()) => true,
                        Err(e) => {
                            let at = self.clock.now().saturating_add(driver.backoff());
                            tracing::error!(error = %e, retry_at = %at, "key generation failed; current keys keep serving");
                            false
                        }
                    };
                    driver.generated(ok, self.clock.now());
                }
                request = self.commands.recv() => match request {
                    Some(request) => {
                        let id = CommandId(next_id);
                        next_id += 1;
                        let (command, reply, actor) = request.split();
                        replies.insert(id, Asked { reply, actor, command: command.clone() });
                        driver.command(id, command, self.clock.now());
                    }
                    None => break,
                },
                _ = self.shutdown.changed() => break,
            }
        }
        let state = lock(&self.ring).state().clone();
        driver.stop(&state, &self.policy, self.clock.now());
        self.answer(&mut driver, &mut replies);
        // A generation in flight is not waited for (an RSA-4096 key takes
        // seconds): once no key is being staged, none will be, and the
        // generating threads are left to the process's exit. What is
        // staged is discarded at the next start.
        if !generating.is_empty() {
            let gate = self.staging.clone();
            let closed = tokio::task::spawn_blocking(move || gate.close());
            if tokio::time::timeout(GENERATION_SHUTDOWN_WAIT, closed)
                .await
                .is_err()
            {
                tracing::warn!("a key being staged at shutdown did not finish in time");
            }
            generating.detach_all();
            tracing::info!(
                "a key generation in progress was abandoned at shutdown; the next start generates it again"
            );
        }
        self.shared.set_scheduler_running(false);
    }

    /// Carries out one piece of the driver's work and tells it the outcome.
    async fn perform(
        &self,
        work: Work,
        driver: &mut Driver,
        generating: &mut JoinSet<Generated>,
        replies: &HashMap<CommandId, Asked>,
    ) {
        match work {
            Work::Sync => {
                let synced = self.sync().await;
                driver.synced(synced);
            }
            Work::Generate(batches) => self.spawn_generation(generating, batches),
            Work::Commit(actions) => {
                let outcome = match self.execute(actions, true, Actor::jwksd()).await {
                    Ok(()) => Committed::Done,
                    Err(ExecuteError::Store(StoreError::Conflict { expected, found })) => {
                        // Another writer committed first: that counts as
                        // done. Read it, and plan again.
                        tracing::info!(expected, found, "the stored state moved on; reloading");
                        Committed::Conflict
                    }
                    Err(e) => {
                        let at = self.clock.now().saturating_add(driver.backoff());
                        tracing::error!(error = %e, retry_at = %at, "lifecycle step failed; current keys keep serving");
                        Committed::Failed
                    }
                };
                driver.committed(outcome, self.clock.now());
            }
            Work::CommitCommand(actions) => {
                // An operator's command reports its own failure; the
                // schedule's backoff and lifecycle error are not its.
                let actor = driver
                    .committing_command()
                    .and_then(|id| replies.get(&id))
                    .map_or_else(Actor::jwksd, |a| a.actor.clone());
                let (outcome, error) = match self.execute(actions, false, actor).await {
                    Ok(()) => (Committed::Done, None),
                    Err(e @ ExecuteError::Store(StoreError::Conflict { .. })) => {
                        (Committed::Conflict, Some(e.to_string()))
                    }
                    Err(e) => (Committed::Failed, Some(e.to_string())),
                };
                driver.command_committed(outcome, error);
            }
        }
    }

    /// Hands the driver's answers to the operators who asked, saying in the
    /// log what was done.
    fn answer(&self, driver: &mut Driver, replies: &mut HashMap<CommandId, Asked>) {
        while let Some((id, result)) = driver.poll_answer() {
            let result = match result {
                Err(CommandError::NotSynced) => Err(CommandError::Failed(format!(
                    "this replica cannot read the shared key-ring state ({}); send the command \
                     to another replica",
                    self.shared
                        .sync_failure()
                        .map(|f| f.message)
                        .unwrap_or_default()
                ))),
                other => other,
            };
            match &result {
                Err(CommandError::Rotate(e)) => tracing::info!(error = %e, "rotation refused"),
                Ok(Answer::Rotated(done)) => {
                    if done.iter().any(|r| r.by_another_replica) {
                        tracing::info!("rotation already carried out by another replica");
                    }
                    for r in done.iter().filter(|r| r.forced && !r.by_another_replica) {
                        tracing::warn!(alg = %r.alg, kid = %r.kid, "forced rotation: the new key signs before verifiers' caches can know it");
                    }
                }
                Ok(Answer::Revoked(r)) => {
                    let promoted = r.promoted.as_ref().map(|k| k.as_str()).unwrap_or("none");
                    tracing::warn!(kid = %r.kid, alg = %r.alg, was = %r.was, promoted, "key revoked");
                }
                Err(_) => {}
            }
            if let Some(asked) = replies.remove(&id) {
                if let Err(e) = &result {
                    self.record_refused(&asked.command, e, asked.actor);
                }
                asked.reply.send(result);
            }
        }
    }

    /// Starts the feed after the store's last audit record.
    async fn start_feed(&self) {
        let store = lock(&self.ring).store();
        match tokio::task::spawn_blocking(move || store.audit_head()).await {
            Ok(Ok(head)) => {
                self.shared.feed.start_after(head.seq);
                self.shared.metrics.audit_last_seq.set(head.seq as i64);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the audit log's last record"),
            Err(e) => tracing::warn!(error = %e, "audit head task failed"),
        }
    }

    /// Records a refused command in the audit log, beside the scheduler
    /// (the store may be slow; the answer does not wait for it).
    fn record_refused(&self, command: &Command, error: &CommandError, actor: Actor) {
        let event = match command {
            Command::Rotate { alg, force } => AuditEvent::refused(
                if *force { "rotate --force" } else { "rotate" },
                None,
                *alg,
                error.code(),
            ),
            Command::Revoke { kid } => {
                AuditEvent::refused("revoke", Some(kid.clone()), None, error.code())
            }
        };
        let entry = Entry {
            at: self.clock.now(),
            actor,
            event,
        };
        let store = lock(&self.ring).store();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || match store.record(&[entry]) {
            Ok(records) => shared.feed.publish(&records, &shared.metrics),
            Err(e) => {
                shared.metrics.audit_write_failures.inc();
                tracing::error!(error = %e, "a refused command could not be recorded in the audit log");
            }
        });
    }

    /// With a shared store: hands the feed what other replicas recorded
    /// (once it knows where the log ended at start).
    async fn catch_up_feed(&self) {
        if !self.shared.feed.started() {
            self.start_feed().await;
            return;
        }
        let store = lock(&self.ring).store();
        let after = self.shared.feed.last();
        match tokio::task::spawn_blocking(move || store.audit_since(after, CATCH_UP)).await {
            Ok(Ok(records)) => self.shared.feed.publish(&records, &self.shared.metrics),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the audit log"),
            Err(e) => tracing::debug!(error = %e, "audit read task failed"),
        }
    }

    /// Starts generating (and staging) each batch of keys on a blocking
    /// thread of its own (see [`Driver::generate`]).
    fn spawn_generation(&self, set: &mut JoinSet<Generated>, batches: Vec<Vec<Action>>) {
        let (store, token) = {
            let ring = lock(&self.ring);
            (ring.store(), ring.token().map(Arc::downgrade))
        };
        for batch in batches {
            let store = store.clone();
            let token = token.clone();
            let policy = self.policy.clone();
            let gate = self.staging.clone();
            let in_token = policy.custody != crate::keys::Custody::Software;
            // A thread of its own, not the runtime's blocking pool: the
            // runtime's shutdown waits for its blocking threads, and a
            // generation abandoned at shutdown must not hold the exit.
            set.spawn(async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let thread = std::thread::Builder::new()
                    .name("jwksd-generate".into())
                    .spawn(move || {
                        let maker = Maker {
                            store: &*store,
                            token: token.clone(),
                            custody: &policy.custody,
                        };
                        let _ = tx.send(generate_staged_gated(&maker, &batch, &gate));
                    });
                let failed = |why: String| ExecuteError::Store(StoreError::Other(why));
                let ended = || failed("the generation thread ended without an answer".into());
                match thread {
                    Ok(_) if in_token => {
                        match tokio::time::timeout(TOKEN_GENERATION_DEADLINE, rx).await {
                            Ok(answer) => answer.unwrap_or_else(|_| Err(ended())),
                            Err(_) => Err(failed(format!(
                                "the token made no key within {TOKEN_GENERATION_DEADLINE:?}"
                            ))),
                        }
                    }
                    Ok(_) => rx.await.unwrap_or_else(|_| Err(ended())),
                    Err(e) => Err(failed(format!("cannot start the generation thread: {e}"))),
                }
            });
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
            // Another writer committed first: read what it wrote. (With a
            // shared store the loop reads it again, and tells the driver,
            // before the driver plans.)
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
    async fn sync(&self) -> Synced {
        let ring = self.ring.clone();
        let started = std::time::Instant::now();
        let error = match tokio::task::spawn_blocking(move || lock(&ring).reload()).await {
            Ok(Ok(changed)) => {
                self.shared.set_store_reachable(true);
                self.shared.mark_synced(started);
                if changed {
                    self.publish().await;
                }
                return Synced::Current;
            }
            Ok(Err(e)) => e,
            Err(e) => StoreError::Other(format!("sync task failed: {e}")),
        };
        let unreachable = error.is_unreachable();
        let went_down = self.shared.set_store_reachable(!unreachable);
        let news = self.shared.set_sync_failure(SyncFailure {
            unreachable,
            message: error.to_string(),
        });
        if unreachable && (went_down || news) {
            tracing::warn!(error = %error, "store unreachable; serving the last known keys, signing only within the freshness window");
        } else if news {
            tracing::error!(error = %error, "cannot read the shared key-ring state; this replica stops leading and stops signing once its freshness window is over; retrying with backoff");
        }
        if unreachable {
            Synced::Unreachable
        } else {
            Synced::Unreadable
        }
    }

    /// Carries out actions on a blocking thread, records metrics, publishes.
    /// `background`: a step of the schedule, whose failure readers see as
    /// `lifecycle_failing`; an operator's command reports its own.
    async fn execute(
        &self,
        actions: Vec<Action>,
        background: bool,
        actor: Actor,
    ) -> Result<(), ExecuteError> {
        let ring = self.ring.clone();
        let clock = self.clock.clone();
        let acts = actions.clone();
        let before = lock(&self.ring).state().version;
        // Until what it commits is served, the keys it may deactivate are
        // handed out only within the freshness window (Policy::propagation).
        let _in_flight = self.shared.commit_in_flight();
        let started = std::time::Instant::now();
        let executed =
            tokio::task::spawn_blocking(move || lock(&ring).execute_as(&acts, &*clock, &actor))
                .await;
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
        self.shared
            .feed
            .publish(&executed.records, &self.shared.metrics);
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
        let export = self.export;
        let now = self.clock.now();
        let built = tokio::task::spawn_blocking(move || {
            Snapshot::build(&lock(&ring), &policy, export, now)
        })
        .await;
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
}

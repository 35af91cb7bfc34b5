//! The scheduler: the one task that changes the key ring. It sleeps until
//! the planner's next wake-up (or an operator's command), carries the
//! actions out on a blocking thread, and swaps in a new snapshot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::daemon::Shared;
use crate::daemon::snapshot::Snapshot;
use crate::keyring::{Event, ExecuteError, Keyring};
use crate::keys::{Alg, Kid};
use crate::lifecycle::{
    Action, KeyState, Policy, RevokeError, RotateError, Trigger, plan, revoke, rotate,
};
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
    /// Set when the replacement key could not be generated yet (it is
    /// retried); the revocation itself is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

pub struct Scheduler {
    pub ring: Arc<Mutex<Keyring>>,
    pub policy: Arc<Policy>,
    pub clock: Arc<dyn Clock>,
    pub shared: Arc<Shared>,
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: watch::Receiver<bool>,
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
        loop {
            let now = self.clock.now();
            let state = lock(&self.ring).state().clone();
            let plan = plan(&state, &self.policy, now);
            let mut wake = plan.wake_at;
            if !plan.actions.is_empty() {
                if retry_at.is_none_or(|r| r <= now) {
                    match self.execute(plan.actions).await {
                        Ok(()) => {
                            backoff = BACKOFF_START;
                            retry_at = None;
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
            let sleep = wake
                .map(|w| w.since(now))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                _ = self.shutdown.changed() => break,
            }
        }
        self.shared.set_scheduler_running(false);
    }

    /// Carries out actions on a blocking thread, records metrics, publishes.
    async fn execute(&self, actions: Vec<Action>) -> Result<(), ExecuteError> {
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
        self.record(&actions, &executed.events, executed.error.as_ref());
        // Whatever was committed is served, even when a later step failed.
        if lock(&self.ring).state().version != before {
            self.publish().await;
        }
        match executed.error {
            None => {
                self.shared.set_lifecycle_error(None);
                Ok(())
            }
            Some(e) => {
                self.shared.set_lifecycle_error(Some(e.to_string()));
                Err(e)
            }
        }
    }

    fn record(&self, actions: &[Action], events: &[Event], error: Option<&ExecuteError>) {
        let m = &self.shared.metrics;
        for e in events {
            if e.to == KeyState::Active && e.from == Some(KeyState::Next) {
                m.rotation(e.alg, e.trigger, true);
            }
        }
        let Some(err) = error else {
            m.lifecycle_failing.set(0);
            return;
        };
        m.lifecycle_failing.set(1);
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

    async fn command(&self, cmd: Command) {
        let now = self.clock.now();
        let state = lock(&self.ring).state().clone();
        match cmd {
            Command::Rotate { alg, force, reply } => {
                let actions = match rotate(&state, &self.policy, now, alg, force) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::info!(error = %e, "rotation refused");
                        let _ = reply.send(Err(CommandError::Rotate(e)));
                        return;
                    }
                };
                let pairs: Vec<(Alg, Kid, Kid)> = actions
                    .iter()
                    .filter_map(|a| match a {
                        Action::Activate { kid, .. } => {
                            let alg = state.find(kid)?.alg;
                            Some((alg, kid.clone(), state.active(alg)?.kid.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                let result = self.execute(actions).await;
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
                let _ = reply.send(match (result, done.is_empty()) {
                    (Err(e), true) => Err(CommandError::Failed(e.to_string())),
                    _ => Ok(done),
                });
            }
            Command::Revoke { kid, reply } => {
                let actions = match revoke(&state, &self.policy, now, &kid) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = reply.send(Err(CommandError::Revoke(e)));
                        return;
                    }
                };
                let Some(before) = state.find(&kid).cloned() else {
                    let _ = reply.send(Err(CommandError::Revoke(RevokeError::Unknown(kid))));
                    return;
                };
                let result = self.execute(actions).await;
                let after = lock(&self.ring).state().clone();
                let revoked = after
                    .find(&kid)
                    .is_some_and(|k| k.state == KeyState::Revoked);
                if !revoked {
                    let msg = result.err().map(|e| e.to_string()).unwrap_or_default();
                    let _ = reply.send(Err(CommandError::Failed(format!(
                        "revocation of {kid} was not committed: {msg}"
                    ))));
                    return;
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
                    warning: result
                        .err()
                        .map(|e| format!("replacement key not generated yet (retrying): {e}")),
                }));
            }
        }
    }
}

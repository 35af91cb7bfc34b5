//! Operators' commands (rotate, revoke), carried out by the scheduler: each
//! is judged by the core's rules ([`crate::lifecycle::rotate`],
//! [`crate::lifecycle::revoke`]) on the state just read, committed under
//! the same compare-and-set as the schedule's steps, and answered once
//! what it promises is served. A child of the scheduler: it uses the
//! scheduler's own commit and sync steps.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::{Generated, Scheduler, lock};
use crate::api::{Revoked, Rotated};
use crate::keyring::ExecuteError;
use crate::keys::{Alg, Kid};
use crate::lifecycle::{
    Action, Driver, KeyState, KeyringState, RevokeError, RotateError, Synced, Trigger, Work,
    revoke, rotate, rotated_elsewhere,
};
use crate::store::StoreError;

/// An operator's command, sent by the admin API to the scheduler.
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
pub(super) enum Outcome {
    /// Carried out (or refused): keys to generate, an answer still owed.
    Done(Vec<Action>, Option<PendingRotation>),
    /// To try again once the keys it waits for exist.
    Retry(Command, std::time::Instant),
}

/// A rotation that committed and waits for its new next keys to answer.
pub(super) struct PendingRotation {
    reply: oneshot::Sender<Result<Vec<Rotated>, CommandError>>,
    done: Vec<Rotated>,
    pub(super) until: std::time::Instant,
}

impl Scheduler {
    pub(super) async fn run_command(
        &self,
        cmd: Command,
        since: Option<std::time::Instant>,
        driver: &mut Driver,
        generating: &mut JoinSet<Generated>,
        pending: &mut Vec<PendingRotation>,
        retry: &mut Vec<(Command, std::time::Instant)>,
    ) {
        match self.command(cmd, since).await {
            Outcome::Done(gens, waiting) => {
                if !gens.is_empty()
                    && let Work::Generate(batches) = driver.generate(gens)
                {
                    self.spawn_generation(generating, batches);
                }
                pending.extend(waiting);
            }
            Outcome::Retry(cmd, since) => retry.push((cmd, since)),
        }
    }

    /// Answers the rotations whose new next keys are committed; with
    /// `all`, or past their wait, the others too, with what there is.
    pub(super) fn answer_pending(&self, pending: &mut Vec<PendingRotation>, all: bool) {
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
                let out: Vec<(Alg, Kid)> = pairs
                    .iter()
                    .map(|(alg, _, previous)| (*alg, previous.clone()))
                    .collect();
                if rotated_elsewhere(&arrived, &state, &out) {
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
        if self.replication.is_some() && self.sync().await != Synced::Current {
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

//! Operators' commands in progress, as the [`Driver`] carries them out.
//! Each is judged by the core's rules ([`rotate`], [`revoke`]) on a state
//! just read (with a shared store: read after the command arrived),
//! committed under the same compare-and-set as the schedule's steps, and
//! answered once what it promises is served: a rotation when its new next
//! keys are committed (or [`ROTATE_NEXT_WAIT`] has passed), a revocation
//! once it is committed. A rotation that loses its compare-and-set is
//! judged again on what the winner committed; when the winner rotated the
//! same keys out, it is done there: "already rotated" is success.
//!
//! [`Driver`]: crate::lifecycle::Driver

use std::collections::VecDeque;

use crate::keys::id::{Alg, Kid};
use crate::lifecycle::action::Action;
use crate::lifecycle::command::{
    Answer, Command, CommandError, CommandId, RETRY_POLL, ROTATE_ATTEMPTS, ROTATE_NEXT_WAIT,
    Revoked, Rotated,
};
use crate::lifecycle::planner::{RevokeError, RotateError, revoke, rotate, rotated_elsewhere};
use crate::lifecycle::policy::Policy;
use crate::lifecycle::state::{KeyRecord, KeyState, KeyringState, Trigger};
use crate::time::Timestamp;

/// What a command asks of the driver next.
pub(crate) enum Next {
    /// Read the shared state (report with `Driver::synced`).
    Sync,
    /// Commit the command's transitions (report with
    /// `Driver::command_committed`).
    Commit(Vec<Action>),
    /// Generate the keys it needs, beside the timeline.
    Generate(Vec<Action>),
}

/// The commands in progress, in the order they arrived, and the answers
/// not yet taken.
#[derive(Clone, Debug, Default)]
pub(crate) struct Commands {
    pending: Vec<Pending>,
    answers: VecDeque<(CommandId, Result<Answer, CommandError>)>,
}

#[derive(Clone, Debug)]
struct Pending {
    id: CommandId,
    command: Command,
    stage: Stage,
}

#[derive(Clone, Debug)]
enum Stage {
    /// To judge from `at`, on a state read since it was queued when
    /// `needs_sync`.
    Queued {
        at: Timestamp,
        needs_sync: bool,
        /// Since when a rotation has waited for a next key being generated.
        waiting_since: Option<Timestamp>,
        /// The rotation lost its compare-and-set: check what won first.
        lost: Option<Rotation>,
    },
    /// Its transitions are being committed.
    Committing(Judged),
    /// Its commit ended (with this error, if any): what it achieved is
    /// read on the state after it.
    Committed(Judged, Option<String>),
    /// Committed; waits for its new next keys before it answers.
    Answering {
        done: Vec<Rotated>,
        until: Timestamp,
    },
}

#[derive(Clone, Debug)]
enum Judged {
    Rotation(Rotation),
    Revocation {
        before: KeyRecord,
        gens: Vec<Action>,
    },
}

/// A rotation judged on `arrived`: for each algorithm, the key it makes
/// active and the one it rotates out; the keys to generate after it.
#[derive(Clone, Debug)]
struct Rotation {
    arrived: KeyringState,
    attempts: u32,
    pairs: Vec<(Alg, Kid, Kid)>,
    gens: Vec<Action>,
}

impl Commands {
    /// A command arrived at `now`; `shared`: the store is shared, so the
    /// command waits for the state to be read first.
    pub(crate) fn push(&mut self, id: CommandId, command: Command, now: Timestamp, shared: bool) {
        self.pending.push(Pending {
            id,
            command,
            stage: Stage::Queued {
                at: now,
                needs_sync: shared,
                waiting_since: None,
                lost: None,
            },
        });
    }

    /// The state was read (`usable`: and applied, or the store is this
    /// process's own). Commands waiting for it are judged next; when it
    /// could not be used they are refused.
    pub(crate) fn synced(&mut self, usable: bool) {
        let mut i = 0;
        while i < self.pending.len() {
            if let Stage::Queued { needs_sync, .. } = &mut self.pending[i].stage
                && *needs_sync
            {
                if !usable {
                    let p = self.pending.remove(i);
                    self.answers.push_back((p.id, Err(CommandError::NotSynced)));
                    continue;
                }
                *needs_sync = false;
            }
            i += 1;
        }
    }

    /// A command's commit ended. A rotation that lost its compare-and-set
    /// (and may try again) waits for the state to be read, to see what won.
    /// `lost`: another writer committed first.
    pub(crate) fn committed(&mut self, lost: bool, error: Option<String>) {
        let Some(i) = self
            .pending
            .iter()
            .position(|p| matches!(p.stage, Stage::Committing(_)))
        else {
            return;
        };
        let Pending {
            id,
            command,
            stage: Stage::Committing(judged),
        } = self.pending.remove(i)
        else {
            return;
        };
        let stage = match judged {
            Judged::Rotation(r) if lost && r.attempts < ROTATE_ATTEMPTS => Stage::Queued {
                at: Timestamp::from_millis(i64::MIN),
                needs_sync: true,
                waiting_since: None,
                lost: Some(r),
            },
            judged => Stage::Committed(judged, error),
        };
        self.pending.insert(i, Pending { id, command, stage });
    }

    /// Whether a commit of a command is in flight (nothing else is done
    /// until it is reported).
    pub(crate) fn committing(&self) -> bool {
        self.pending
            .iter()
            .any(|p| matches!(p.stage, Stage::Committing(_)))
    }

    /// What the commands need now, on `state` as the shell holds it;
    /// `generating`: generation batches in flight. Answers reached on the
    /// way are queued for [`Commands::poll_answer`].
    pub(crate) fn poll(
        &mut self,
        state: &KeyringState,
        policy: &Policy,
        now: Timestamp,
        shared: bool,
        generating: usize,
    ) -> Option<Next> {
        let mut i = 0;
        while i < self.pending.len() {
            let due = match &self.pending[i].stage {
                Stage::Queued { at, .. } => *at <= now,
                Stage::Committing(_) => false,
                Stage::Committed(..) | Stage::Answering { .. } => true,
            };
            if !due {
                i += 1;
                continue;
            }
            let Pending { id, command, stage } = self.pending.remove(i);
            let at = Context {
                state,
                policy,
                now,
                shared,
                generating,
            };
            let (stage, step) = at.advance(&command, stage);
            if let Some(stage) = stage {
                // Queued again for now (to be read first): its turn again.
                let again = matches!(stage, Stage::Queued { at, .. } if at <= now)
                    && matches!(step, Step::Wait);
                self.pending.insert(i, Pending { id, command, stage });
                if !again {
                    i += 1;
                }
            }
            let (answer, work) = match step {
                Step::Wait => (None, None),
                Step::Answer(a) => (Some(a), None),
                Step::Work(w) => (None, Some(w)),
                Step::Both(a, w) => (Some(a), Some(w)),
            };
            if let Some(a) = answer {
                self.answers.push_back((id, a));
            }
            if work.is_some() {
                return work;
            }
        }
        None
    }

    /// When the commands need polling again if nothing happens first.
    pub(crate) fn poll_timeout(&self, now: Timestamp) -> Option<Timestamp> {
        self.pending
            .iter()
            .filter_map(|p| match &p.stage {
                Stage::Queued { at, .. } => Some((*at).max(now)),
                Stage::Committing(_) => None,
                Stage::Committed(..) => Some(now),
                Stage::Answering { until, .. } => Some(*until),
            })
            .min()
    }

    /// The next answer, with the command it is for.
    pub(crate) fn poll_answer(&mut self) -> Option<(CommandId, Result<Answer, CommandError>)> {
        self.answers.pop_front()
    }

    /// The daemon stops: rotations waiting for their next keys answer with
    /// what there is; other commands in progress are dropped unanswered.
    pub(crate) fn stop(&mut self, state: &KeyringState) {
        for p in std::mem::take(&mut self.pending) {
            if let Stage::Answering { mut done, .. } = p.stage {
                for r in &mut done {
                    r.next_kid = state.next_key(r.alg).map(|k| k.kid.clone());
                }
                self.answers.push_back((p.id, Ok(Answer::Rotated(done))));
            }
        }
    }
}

/// What one step of a command yields: nothing yet, an answer, work for
/// the shell, or both (a revocation answers, then its keys are generated).
enum Step {
    Wait,
    Answer(Result<Answer, CommandError>),
    Work(Next),
    Both(Result<Answer, CommandError>, Next),
}

/// What a command is judged on.
struct Context<'a> {
    state: &'a KeyringState,
    policy: &'a Policy,
    now: Timestamp,
    shared: bool,
    generating: usize,
}

impl Context<'_> {
    /// One step of `command`, from `stage`: its next stage (`None`: done)
    /// and what it yields.
    fn advance(&self, command: &Command, stage: Stage) -> (Option<Stage>, Step) {
        match stage {
            Stage::Queued {
                needs_sync: true, ..
            } => (Some(stage), Step::Work(Next::Sync)),
            Stage::Queued {
                waiting_since,
                lost,
                ..
            } => match command {
                Command::Rotate { alg, force } => self.rotate(*alg, *force, waiting_since, lost),
                Command::Revoke { kid } => self.revoke(kid),
            },
            Stage::Committing(j) => (Some(Stage::Committing(j)), Step::Wait),
            Stage::Committed(Judged::Rotation(r), error) => self.rotation_committed(r, error),
            Stage::Committed(Judged::Revocation { before, gens }, error) => {
                self.revocation_committed(before, gens, error)
            }
            Stage::Answering { mut done, until } => {
                for r in &mut done {
                    r.next_kid = self.state.next_key(r.alg).map(|k| k.kid.clone());
                }
                let all = done.iter().all(|r| r.next_kid.is_some());
                if all || self.generating == 0 || until <= self.now {
                    (None, Step::Answer(Ok(Answer::Rotated(done))))
                } else {
                    (Some(Stage::Answering { done, until }), Step::Wait)
                }
            }
        }
    }

    fn rotate(
        &self,
        alg: Option<Alg>,
        force: bool,
        waiting_since: Option<Timestamp>,
        lost: Option<Rotation>,
    ) -> (Option<Stage>, Step) {
        let state = self.state;
        if let Some(lost) = &lost {
            let out: Vec<(Alg, Kid)> = lost
                .pairs
                .iter()
                .map(|(alg, _, previous)| (*alg, previous.clone()))
                .collect();
            if rotated_elsewhere(&lost.arrived, state, &out) {
                let done = lost
                    .pairs
                    .iter()
                    .filter_map(|(alg, _, previous)| {
                        let kid = state.active(*alg)?.kid.clone();
                        Some(rotated(state, *alg, kid, previous.clone(), true))
                    })
                    .collect();
                return (None, Step::Answer(Ok(Answer::Rotated(done))));
            }
        }
        let actions = match rotate(state, self.policy, self.now, alg, force) {
            Ok(a) => a,
            Err(RotateError::NotReady {
                missing: "next", ..
            }) if waiting_since.is_none_or(|t| self.now.since(t) < ROTATE_NEXT_WAIT) => {
                // The next key of a rotation just made is on its way (here
                // or on another replica): judged by the rules once it is.
                let stage = Stage::Queued {
                    at: self.now.saturating_add(RETRY_POLL),
                    needs_sync: self.shared,
                    waiting_since: Some(waiting_since.unwrap_or(self.now)),
                    lost: None,
                };
                return (Some(stage), Step::Wait);
            }
            Err(e) => return (None, Step::Answer(Err(CommandError::Rotate(e)))),
        };
        let (gens, transitions): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(Action::is_generate);
        // (algorithm, key made active, key rotated out)
        let pairs = transitions
            .iter()
            .filter_map(|a| match a {
                Action::Activate { kid, .. } => {
                    let alg = state.find(kid)?.alg;
                    Some((alg, kid.clone(), state.active(alg)?.kid.clone()))
                }
                _ => None,
            })
            .collect();
        let (arrived, attempts) = match lost {
            Some(l) => (l.arrived, l.attempts),
            None => (state.clone(), 0),
        };
        let judged = Rotation {
            arrived,
            attempts: attempts + 1,
            pairs,
            gens,
        };
        (
            Some(Stage::Committing(Judged::Rotation(judged))),
            Step::Work(Next::Commit(transitions)),
        )
    }

    /// A rotation's commit ended (lost for the last time, or not).
    fn rotation_committed(&self, r: Rotation, error: Option<String>) -> (Option<Stage>, Step) {
        let state = self.state;
        let done: Vec<Rotated> = r
            .pairs
            .into_iter()
            .filter(|(_, kid, _)| state.find(kid).is_some_and(|k| k.state == KeyState::Active))
            .map(|(alg, kid, previous)| rotated(state, alg, kid, previous, false))
            .collect();
        if done.is_empty() {
            let message = error.unwrap_or_else(|| "the rotation was not committed".into());
            return (None, Step::Answer(Err(CommandError::Failed(message))));
        }
        // The answer waits for the new next keys: an operator who rotates
        // again gets the rules' answer, not "not ready".
        let stage = Stage::Answering {
            done,
            until: self.now.saturating_add(ROTATE_NEXT_WAIT),
        };
        let step = if r.gens.is_empty() {
            Step::Wait
        } else {
            Step::Work(Next::Generate(r.gens))
        };
        (Some(stage), step)
    }

    fn revoke(&self, kid: &Kid) -> (Option<Stage>, Step) {
        let actions = match revoke(self.state, self.policy, self.now, kid) {
            Ok(a) => a,
            Err(e) => return (None, Step::Answer(Err(CommandError::Revoke(e)))),
        };
        let Some(before) = self.state.find(kid).cloned() else {
            let e = RevokeError::Unknown(kid.clone());
            return (None, Step::Answer(Err(CommandError::Revoke(e))));
        };
        let (gens, transitions): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(Action::is_generate);
        (
            Some(Stage::Committing(Judged::Revocation { before, gens })),
            Step::Work(Next::Commit(transitions)),
        )
    }

    fn revocation_committed(
        &self,
        before: KeyRecord,
        gens: Vec<Action>,
        error: Option<String>,
    ) -> (Option<Stage>, Step) {
        let kid = before.kid.clone();
        let after = self.state;
        if !after
            .find(&kid)
            .is_some_and(|k| k.state == KeyState::Revoked)
        {
            let message = format!(
                "revocation of {kid} was not committed: {}",
                error.unwrap_or_default()
            );
            return (None, Step::Answer(Err(CommandError::Failed(message))));
        }
        let promoted = (before.state == KeyState::Active)
            .then(|| after.active(before.alg).map(|k| k.kid.clone()))
            .flatten();
        let answer = Ok(Answer::Revoked(Revoked {
            kid,
            alg: before.alg,
            was: before.state,
            promoted,
        }));
        if gens.is_empty() {
            (None, Step::Answer(answer))
        } else {
            (None, Step::Both(answer, Next::Generate(gens)))
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

#[cfg(test)]
mod tests;

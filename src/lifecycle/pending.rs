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
//! One file, over 500 lines: one state machine, a command's stages and the
//! step taken from each, which reads best whole.
//!
//! [`Driver`]: crate::lifecycle::Driver

use std::collections::VecDeque;

use crate::keys::id::{Alg, Kid};
use crate::lifecycle::action::Action;
use crate::lifecycle::command::{
    Answer, COMMAND_DEADLINE, Command, CommandError, CommandId, RETRY_POLL, ROTATE_ATTEMPTS,
    ROTATE_NEXT_WAIT, Revoked, Rotated,
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
    /// Arrival + [`COMMAND_DEADLINE`]: a command still waiting then (for
    /// a next key, or after losing to other writers again and again) is
    /// refused rather than carried out after its caller gave up.
    deadline: Timestamp,
}

impl Pending {
    fn new(id: CommandId, command: Command, stage: Stage, deadline: Timestamp) -> Pending {
        Pending {
            id,
            command,
            stage,
            deadline,
        }
    }
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
        /// It lost its compare-and-set: check what won first.
        lost: Option<Judged>,
    },
    /// Its transitions are being committed.
    Committing(Judged),
    /// Its commit ended (with this error, if any): what it achieved is
    /// read on the state after it.
    Committed {
        judged: Judged,
        /// Another writer committed first (for the last time it may).
        lost: bool,
        error: Option<String>,
    },
    /// Committed; waits for its new next keys before it answers.
    Answering {
        done: Vec<Rotated>,
        until: Timestamp,
    },
}

#[derive(Clone, Debug)]
enum Judged {
    Rotation(Rotation),
    Revocation(Revocation),
}

/// A revocation judged on a state where the key was `before`; the keys to
/// generate after it.
#[derive(Clone, Debug)]
struct Revocation {
    before: KeyRecord,
    attempts: u32,
    gens: Vec<Action>,
}

impl Judged {
    fn attempts(&self) -> u32 {
        match self {
            Judged::Rotation(r) => r.attempts,
            Judged::Revocation(r) => r.attempts,
        }
    }
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
            deadline: now.saturating_add(COMMAND_DEADLINE),
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

    /// A command's commit ended. One that lost its compare-and-set (and may
    /// try again) waits for the state to be read, to see what won.
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
            deadline,
        } = self.pending.remove(i)
        else {
            return;
        };
        let stage = if lost && judged.attempts() < ROTATE_ATTEMPTS {
            Stage::Queued {
                at: Timestamp::from_millis(i64::MIN),
                needs_sync: true,
                waiting_since: None,
                lost: Some(judged),
            }
        } else {
            Stage::Committed {
                judged,
                lost,
                error,
            }
        };
        self.pending
            .insert(i, Pending::new(id, command, stage, deadline));
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
            let p = &self.pending[i];
            let due = match &p.stage {
                Stage::Queued { at, .. } => *at <= now || p.deadline <= now,
                Stage::Committing(_) => false,
                Stage::Committed { .. } | Stage::Answering { .. } => true,
            };
            if !due {
                i += 1;
                continue;
            }
            let Pending {
                id,
                command,
                stage,
                deadline,
            } = self.pending.remove(i);
            let at = Context {
                state,
                policy,
                now,
                shared,
                generating,
            };
            let (stage, step) = if matches!(stage, Stage::Queued { .. }) && deadline <= now {
                let message = format!(
                    "gave up after {} s: the keys it waits for did not come, or other replicas \
                     kept committing first; nothing was changed, try again",
                    COMMAND_DEADLINE.as_secs()
                );
                (None, Step::Answer(Err(CommandError::Failed(message))))
            } else {
                at.advance(&command, stage)
            };
            if let Some(stage) = stage {
                self.pending
                    .insert(i, Pending::new(id, command, stage, deadline));
                i += 1;
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

    /// The command whose transitions are being committed, if any (the
    /// shell names its requester in the audit log).
    pub(crate) fn committing_id(&self) -> Option<CommandId> {
        self.pending
            .iter()
            .find(|p| matches!(p.stage, Stage::Committing(_)))
            .map(|p| p.id)
    }

    /// When the commands need polling again if nothing happens first.
    pub(crate) fn poll_timeout(&self, now: Timestamp) -> Option<Timestamp> {
        self.pending
            .iter()
            .filter_map(|p| match &p.stage {
                Stage::Queued { at, .. } => Some((*at).min(p.deadline).max(now)),
                Stage::Committing(_) => None,
                Stage::Committed { .. } => Some(now),
                Stage::Answering { until, .. } => Some(*until),
            })
            .min()
    }

    /// The next answer, with the command it is for.
    pub(crate) fn poll_answer(&mut self) -> Option<(CommandId, Result<Answer, CommandError>)> {
        self.answers.pop_front()
    }

    /// The daemon stops at `now`: commands whose commit ended are answered
    /// on `state` (what they achieved stands), rotations waiting for their
    /// new next keys answer with what there is; the others are dropped
    /// unanswered (nothing of theirs was committed).
    pub(crate) fn stop(&mut self, state: &KeyringState, policy: &Policy, now: Timestamp) {
        let at = Context {
            state,
            policy,
            now,
            shared: false,
            // Nothing more is generated: answer now.
            generating: 0,
        };
        for p in std::mem::take(&mut self.pending) {
            if !matches!(p.stage, Stage::Committed { .. } | Stage::Answering { .. }) {
                continue;
            }
            // Committed, then answering with what there is: two steps.
            let (mut stage, mut step) = at.advance(&p.command, p.stage);
            if let (Some(s), Step::Wait | Step::Work(_)) = (stage.take(), &step) {
                (stage, step) = at.advance(&p.command, s);
            }
            drop(stage);
            if let Step::Answer(a) | Step::Both(a, _) = step {
                self.answers.push_back((p.id, a));
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
                Command::Rotate { alg, force } => {
                    let lost = lost.and_then(|j| match j {
                        Judged::Rotation(r) => Some(r),
                        Judged::Revocation(_) => None,
                    });
                    self.rotate(*alg, *force, waiting_since, lost)
                }
                Command::Revoke { kid } => {
                    let lost = lost.and_then(|j| match j {
                        Judged::Revocation(r) => Some(r),
                        Judged::Rotation(_) => None,
                    });
                    self.revoke(kid, lost)
                }
            },
            Stage::Committing(j) => (Some(Stage::Committing(j)), Step::Wait),
            Stage::Committed {
                judged: Judged::Rotation(r),
                lost,
                error,
            } => self.rotation_committed(r, lost, error),
            Stage::Committed {
                judged: Judged::Revocation(r),
                error,
                ..
            } => self.revocation_committed(r, error),
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
        if let Some(done) = lost.as_ref().and_then(|l| self.done_elsewhere(l)) {
            return (None, Step::Answer(Ok(Answer::Rotated(done))));
        }
        let actions = match rotate(state, self.policy, self.now, alg, force) {
            Ok(a) => a,
            Err(RotateError::NotReady {
                missing: "next", ..
            }) if waiting_since.is_none_or(|t| self.now.since(t) < ROTATE_NEXT_WAIT) => {
                // The next key of a rotation just made is on its way (here
                // or on another replica): judged by the rules once it is.
                // What it lost to stays known (its attempts count on).
                let stage = Stage::Queued {
                    at: self.now.saturating_add(RETRY_POLL),
                    needs_sync: self.shared,
                    waiting_since: Some(waiting_since.unwrap_or(self.now)),
                    lost: lost.map(Judged::Rotation),
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

    /// The answer of a rotation that lost to another writer which rotated
    /// the same keys out: done there ("already rotated" is success).
    fn done_elsewhere(&self, lost: &Rotation) -> Option<Vec<Rotated>> {
        let state = self.state;
        let out: Vec<(Alg, Kid)> = lost
            .pairs
            .iter()
            .map(|(alg, _, previous)| (*alg, previous.clone()))
            .collect();
        rotated_elsewhere(&lost.arrived, state, &out).then(|| {
            lost.pairs
                .iter()
                .filter_map(|(alg, _, previous)| {
                    let kid = state.active(*alg)?.kid.clone();
                    Some(rotated(state, *alg, kid, previous.clone(), true))
                })
                .collect()
        })
    }

    /// A rotation's commit ended (`lost`: to another writer, for the last
    /// time it may: it may still have been done there).
    fn rotation_committed(
        &self,
        r: Rotation,
        lost: bool,
        error: Option<String>,
    ) -> (Option<Stage>, Step) {
        if lost && let Some(done) = self.done_elsewhere(&r) {
            return (None, Step::Answer(Ok(Answer::Rotated(done))));
        }
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

    /// A revocation, judged on the state just read; `lost`: it lost its
    /// compare-and-set before, and a key the winner revoked is revoked.
    fn revoke(&self, kid: &Kid, lost: Option<Revocation>) -> (Option<Stage>, Step) {
        if let Some(lost) = &lost
            && self
                .state
                .find(kid)
                .is_some_and(|k| k.state == KeyState::Revoked)
        {
            return (None, Step::Answer(self.revoked(&lost.before)));
        }
        let actions = match revoke(self.state, self.policy, self.now, kid) {
            Ok(a) => a,
            Err(e) => return (None, Step::Answer(Err(CommandError::Revoke(e)))),
        };
        let Some(found) = self.state.find(kid).cloned() else {
            let e = RevokeError::Unknown(kid.clone());
            return (None, Step::Answer(Err(CommandError::Revoke(e))));
        };
        let (gens, transitions): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(Action::is_generate);
        // What the key was when the command first met it.
        let (before, attempts) = match lost {
            Some(l) => (l.before, l.attempts),
            None => (found, 0),
        };
        let judged = Revocation {
            before,
            attempts: attempts + 1,
            gens,
        };
        (
            Some(Stage::Committing(Judged::Revocation(judged))),
            Step::Work(Next::Commit(transitions)),
        )
    }

    /// The answer for a key that was `before` and is revoked now.
    fn revoked(&self, before: &KeyRecord) -> Result<Answer, CommandError> {
        let promoted = (before.state == KeyState::Active)
            .then(|| self.state.active(before.alg).map(|k| k.kid.clone()))
            .flatten();
        Ok(Answer::Revoked(Revoked {
            kid: before.kid.clone(),
            alg: before.alg,
            was: before.state,
            promoted,
        }))
    }

    fn revocation_committed(&self, r: Revocation, error: Option<String>) -> (Option<Stage>, Step) {
        let kid = &r.before.kid;
        if !self
            .state
            .find(kid)
            .is_some_and(|k| k.state == KeyState::Revoked)
        {
            let message = format!(
                "revocation of {kid} was not committed: {}",
                error.unwrap_or_default()
            );
            return (None, Step::Answer(Err(CommandError::Failed(message))));
        }
        let answer = self.revoked(&r.before);
        if r.gens.is_empty() {
            (None, Step::Answer(answer))
        } else {
            (None, Step::Both(answer, Next::Generate(r.gens)))
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

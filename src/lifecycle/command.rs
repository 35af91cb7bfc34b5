//! Operators' commands (rotate, revoke) as the [`Driver`] carries them out.
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
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::id::{Alg, Kid};
use crate::lifecycle::action::Action;
use crate::lifecycle::planner::{RevokeError, RotateError, revoke, rotate, rotated_elsewhere};
use crate::lifecycle::policy::Policy;
use crate::lifecycle::state::{KeyRecord, KeyState, KeyringState, Trigger};
use crate::time::Timestamp;

/// How often an operator's rotation is judged again when other replicas
/// keep committing first.
pub const ROTATE_ATTEMPTS: u32 = 3;

/// How long an operator's rotation waits for its new next key before it
/// answers anyway (RSA-4096 generation can take seconds), and how long one
/// that meets a next key still being generated waits for it.
pub const ROTATE_NEXT_WAIT: Duration = Duration::from_secs(30);

/// How often a rotation that waits for a next key being generated (here or
/// by another replica) is judged again.
pub const RETRY_POLL: Duration = Duration::from_millis(100);

/// Names a command between the shell, which holds where its answer goes,
/// and the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

/// An operator's command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Rotate `alg` (every configured algorithm when `None`); `force`:
    /// before the next key is published long enough (unsafe).
    Rotate {
        alg: Option<Alg>,
        force: bool,
    },
    Revoke {
        kid: Kid,
    },
}

/// What a command that was carried out answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Rotated(Vec<Rotated>),
    Revoked(Revoked),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rotate(RotateError),
    #[error(transparent)]
    Revoke(RevokeError),
    /// This replica cannot read the shared state: it refuses rather than
    /// act on old keys (the shell adds why the read fails).
    #[error(
        "this replica cannot read the shared key-ring state; send the command to another replica"
    )]
    NotSynced,
    #[error("{0}")]
    Failed(String),
}

/// One algorithm rotated, in `/v1/rotate`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    pub alg: Alg,
    /// The new active key.
    pub kid: Kid,
    pub previous_kid: Kid,
    pub forced: bool,
    /// The new next key, committed and published before the answer (absent
    /// only when its generation failed or took longer than
    /// [`ROTATE_NEXT_WAIT`]; the rotation itself stands either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_kid: Option<Kid>,
    /// Another replica carried out this very rotation first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_another_replica: bool,
}

/// A `/v1/keys/{kid}/revoke` answer. The revocation is committed before it
/// is sent; an emergency replacement key is generated afterwards, so the
/// answer cannot tell whether that worked (see the log and `/readyz`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub kid: Kid,
    pub alg: Alg,
    /// The state the key was in.
    pub was: KeyState,
    /// The next key promoted in its place, when the active key was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<Kid>,
}

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
mod tests {
    use super::*;
    use crate::lifecycle::driver::{Committed, Driver, Synced, Work};
    use crate::lifecycle::planner::still_wanted;
    use crate::lifecycle::testing::{fake_key, policy};

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    /// A shell that carries work out at once, generations included unless
    /// `hold` keeps them (returned for the test to finish).
    struct Shell {
        state: KeyringState,
        policy: Policy,
        n: u32,
        answers: Vec<(CommandId, Result<Answer, CommandError>)>,
        held: Vec<Vec<Action>>,
        hold: bool,
    }

    impl Shell {
        fn new() -> Shell {
            let mut shell = Shell {
                state: KeyringState::default(),
                policy: policy(3),
                n: 0,
                answers: Vec::new(),
                held: Vec::new(),
                hold: false,
            };
            let mut d = Driver::new(None);
            shell.run(&mut d, t(0));
            shell
        }

        fn commit(&mut self, actions: &[Action], now: Timestamp) {
            for a in actions {
                let new = a.is_generate().then(|| {
                    self.n += 1;
                    fake_key(self.n)
                });
                self.state.apply(a, now, new).unwrap();
            }
            self.state.version += 1;
        }

        fn finish(&mut self, d: &mut Driver, batch: Vec<Action>, now: Timestamp) {
            let wanted: Vec<Action> = batch
                .into_iter()
                .filter(|a| still_wanted(&self.state, a))
                .collect();
            self.commit(&wanted, now);
            d.generated(true, now);
        }

        /// Everything due at `now`; commits of commands end as `outcome`.
        fn run_with(&mut self, d: &mut Driver, now: Timestamp, outcome: Committed) -> Vec<Work> {
            let mut done = Vec::new();
            while let Some(w) = d.poll(&self.state, &self.policy, now) {
                match &w {
                    Work::Commit(a) => {
                        self.commit(a, now);
                        d.committed(Committed::Done, now);
                    }
                    Work::CommitCommand(a) => {
                        if outcome == Committed::Done {
                            self.commit(a, now);
                        }
                        d.command_committed(outcome, Some("the store moved on".into()));
                    }
                    Work::Generate(batches) => {
                        for b in batches {
                            if self.hold {
                                self.held.push(b.clone());
                            } else {
                                self.finish(d, b.clone(), now);
                            }
                        }
                    }
                    Work::Sync => d.synced(Synced::Current),
                }
                done.push(w);
                assert!(done.len() < 32, "{done:?}");
            }
            while let Some(a) = d.poll_answer() {
                self.answers.push(a);
            }
            done
        }

        fn run(&mut self, d: &mut Driver, now: Timestamp) -> Vec<Work> {
            self.run_with(d, now, Committed::Done)
        }

        fn active(&self) -> Kid {
            self.state.active(Alg::ES256).unwrap().kid.clone()
        }

        fn next(&self) -> Kid {
            self.state.next_key(Alg::ES256).unwrap().kid.clone()
        }
    }

    const ROTATE: Command = Command::Rotate {
        alg: None,
        force: false,
    };

    #[test]
    fn a_rotation_answers_once_its_new_next_key_is_committed() {
        let mut s = Shell::new();
        let mut d = Driver::new(None);
        let (active, next) = (s.active(), s.next());
        s.hold = true;
        d.command(CommandId(1), ROTATE, t(2500));
        let done = s.run(&mut d, t(2500));
        assert!(matches!(done[0], Work::CommitCommand(_)), "{done:?}");
        assert_eq!(s.active(), next);
        assert!(s.answers.is_empty(), "answered before the next key exists");
        let batch = s.held.pop().unwrap();
        s.finish(&mut d, batch, t(2600));
        s.run(&mut d, t(2600));
        let [(id, Ok(Answer::Rotated(r)))] = &s.answers[..] else {
            panic!("{:?}", s.answers)
        };
        assert_eq!(*id, CommandId(1));
        assert_eq!((&r[0].kid, &r[0].previous_kid), (&next, &active));
        assert_eq!(r[0].next_kid.as_ref(), Some(&s.next()));
        assert!(!r[0].forced && !r[0].by_another_replica);
    }

    #[test]
    fn a_rotation_too_early_is_refused_with_the_earliest_time() {
        let mut s = Shell::new();
        let mut d = Driver::new(None);
        d.command(CommandId(1), ROTATE, t(100));
        let done = s.run(&mut d, t(100));
        assert!(done.is_empty(), "{done:?}");
        assert!(matches!(
            s.answers[..],
            [(_, Err(CommandError::Rotate(RotateError::TooEarly { .. })))]
        ));
    }

    /// A second rotation right after one waits for the next key being
    /// generated, then gets the rules' answer (too early), not "not ready".
    #[test]
    fn a_rotation_meeting_a_next_key_in_the_making_waits_for_it() {
        let mut s = Shell::new();
        let mut d = Driver::new(None);
        s.hold = true;
        d.command(CommandId(1), ROTATE, t(2500));
        s.run(&mut d, t(2500));
        d.command(CommandId(2), ROTATE, t(2510));
        s.run(&mut d, t(2510));
        assert!(s.answers.is_empty(), "{:?}", s.answers);
        assert_eq!(
            d.poll_timeout(&s.state, &s.policy, t(2510)),
            Some(t(2610)),
            "tried again after RETRY_POLL"
        );
        s.run(&mut d, t(2610));
        assert!(s.answers.is_empty());
        let batch = s.held.pop().unwrap();
        s.finish(&mut d, batch, t(2700));
        s.run(&mut d, t(2710));
        assert!(matches!(s.answers[0], (CommandId(1), Ok(_))));
        assert!(matches!(
            s.answers[1],
            (
                CommandId(2),
                Err(CommandError::Rotate(RotateError::TooEarly { .. }))
            )
        ));
    }

    #[test]
    fn revoking_the_active_key_answers_at_commit_and_generates_after() {
        let mut s = Shell::new();
        let mut d = Driver::new(None);
        let (active, next) = (s.active(), s.next());
        s.hold = true;
        d.command(
            CommandId(7),
            Command::Revoke {
                kid: active.clone(),
            },
            t(100),
        );
        let done = s.run(&mut d, t(100));
        assert!(matches!(
            done[..],
            [Work::CommitCommand(_), Work::Generate(_)]
        ));
        let [(_, Ok(Answer::Revoked(r)))] = &s.answers[..] else {
            panic!("{:?}", s.answers)
        };
        assert_eq!(r.kid, active);
        assert_eq!(r.was, KeyState::Active);
        assert_eq!(r.promoted.as_ref(), Some(&next));
        assert_eq!(d.generating(), 1);
        // Unknown and already ended are refused.
        d.command(CommandId(8), Command::Revoke { kid: active }, t(200));
        s.run(&mut d, t(200));
        assert!(matches!(
            s.answers[1],
            (
                _,
                Err(CommandError::Revoke(RevokeError::AlreadyEnded { .. }))
            )
        ));
    }

    /// With a shared store a command waits for a read, and is refused when
    /// the state read cannot be used.
    #[test]
    fn a_replica_that_cannot_read_the_shared_state_refuses_commands() {
        let mut s = Shell::new();
        let mut d = Driver::new(Some(Duration::from_secs(2)));
        d.command(CommandId(1), ROTATE, t(2500));
        assert_eq!(d.poll(&s.state, &s.policy, t(2500)), Some(Work::Sync));
        d.synced(Synced::Unreadable);
        assert_eq!(d.poll(&s.state, &s.policy, t(2500)), None);
        assert!(matches!(
            d.poll_answer(),
            Some((CommandId(1), Err(CommandError::NotSynced)))
        ));
        // Read fine: carried out, by a replica that does not lead.
        d.synced(Synced::Current);
        d.command(CommandId(2), ROTATE, t(2500));
        let done = s.run(&mut d, t(2500));
        assert!(matches!(done[..2], [Work::Sync, Work::CommitCommand(_)]));
        assert!(!d.leading() || d.in_sync());
        assert!(matches!(s.answers[..], [(CommandId(2), Ok(_))]));
    }

    /// Lost to another writer that rotated the same key out: done there.
    #[test]
    fn a_rotation_lost_to_the_same_rotation_elsewhere_is_success() {
        let mut s = Shell::new();
        let mut d = Driver::new(None);
        let (active, next) = (s.active(), s.next());
        d.command(CommandId(1), ROTATE, t(2500));
        let Some(Work::CommitCommand(actions)) = d.poll(&s.state, &s.policy, t(2500)) else {
            panic!()
        };
        // The other writer commits the same rotation first.
        s.commit(&actions, t(2500));
        d.command_committed(Committed::Conflict, Some("conflict".into()));
        let done = s.run(&mut d, t(2500));
        assert_eq!(done[0], Work::Sync);
        let [(_, Ok(Answer::Rotated(r)))] = &s.answers[..] else {
            panic!("{:?}", s.answers)
        };
        assert!(r[0].by_another_replica);
        assert_eq!((&r[0].kid, &r[0].previous_kid), (&next, &active));
    }

    /// Lost to writers that change something else every time: judged again
    /// up to ROTATE_ATTEMPTS times, then refused with the store's error.
    #[test]
    fn a_rotation_that_keeps_losing_gives_up_with_the_error() {
        let mut s = Shell::new();
        let mut d = Driver::new(None);
        d.command(CommandId(1), ROTATE, t(2500));
        let done = s.run_with(&mut d, t(2500), Committed::Conflict);
        let commits = done
            .iter()
            .filter(|w| matches!(w, Work::CommitCommand(_)))
            .count();
        assert_eq!(commits, ROTATE_ATTEMPTS as usize, "{done:?}");
        assert!(matches!(
            &s.answers[..],
            [(_, Err(CommandError::Failed(m)))] if m == "the store moved on"
        ));
    }

    #[test]
    fn stopping_answers_a_rotation_waiting_for_its_next_key() {
        let mut s = Shell::new();
        let mut d = Driver::new(None);
        s.hold = true;
        d.command(CommandId(1), ROTATE, t(2500));
        s.run(&mut d, t(2500));
        assert!(s.answers.is_empty());
        d.stop(&s.state);
        let Some((_, Ok(Answer::Rotated(r)))) = d.poll_answer() else {
            panic!()
        };
        assert_eq!(r[0].next_kid, None);
    }
}

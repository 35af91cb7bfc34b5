//! The scheduler as a state machine, in the manner of quinn-proto's
//! `Connection`: it is told what happened (a commit's outcome, a
//! generation's, a read of the shared state, leadership) and polled for what
//! to do next and when to be polled again. Backoff, the generations in
//! flight and leadership live here; the daemon's task only performs the
//! [`Work`] it returns, and the simulation tests drive this same machine
//! over months of simulated time, failures and restarts included.
//!
//! Operators' commands are fed in too ([`Driver::command`]) and carried out
//! here by the rules of `lifecycle::pending`; the keys they need
//! count as generations in flight like the schedule's, and their answers
//! are polled with [`Driver::poll_answer`].

use std::time::Duration;

use crate::lifecycle::action::Action;
use crate::lifecycle::command::{Answer, Command, CommandError, CommandId};
use crate::lifecycle::pending::{Commands, Next};
use crate::lifecycle::planner::plan;
use crate::lifecycle::policy::Policy;
use crate::lifecycle::state::{EarlyActivation, KeyState, KeyringState};
use crate::time::Timestamp;

/// The first wait after a failed step; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The longest wait between two reads of a shared state that could not be
/// used (nothing changes by itself: a master key, a newer format).
pub const SYNC_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the shell must do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Read the shared state again, then report with [`Driver::synced`]:
    /// another writer committed first.
    Sync,
    /// Commit these transitions in one commit, then report with
    /// [`Driver::committed`].
    Commit(Vec<Action>),
    /// Commit an operator's command's transitions in one commit, then
    /// report with [`Driver::command_committed`].
    CommitCommand(Vec<Action>),
    /// Generate these keys beside the timeline, each batch on a thread of
    /// its own and committed as soon as it is made (a key no longer
    /// [`crate::lifecycle::still_wanted`] is discarded); report each batch
    /// with [`Driver::generated`].
    Generate(Vec<Vec<Action>>),
}

/// How a commit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    Done,
    /// Another writer committed first: that counts as done once the state
    /// is read again.
    Conflict,
    Failed,
}

/// How a read of the shared state ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synced {
    /// Read and applied: the key ring is what the store holds.
    Current,
    /// The store did not answer (or not in time): polled as usual, it is
    /// back when it is back.
    Unreachable,
    /// The store answered with a state this replica cannot use: retried
    /// with a doubling backoff.
    Unreadable,
}

#[derive(Clone, Debug)]
pub struct Driver {
    backoff: Duration,
    /// No step is tried again before this, after a failure.
    retry_at: Option<Timestamp>,
    /// Generation batches in flight, the planner's and operators' alike:
    /// the planner starts one only when none is.
    generating: usize,
    /// The keys the plan being committed needs, generated once it commits
    /// (under the trigger of that plan).
    after_commit: Vec<Action>,
    /// A commit lost to another writer: read before planning again.
    must_sync: bool,
    /// This replica holds the leader lease (always, with a store of its own).
    leader: bool,
    /// The key ring is what the store holds.
    in_sync: bool,
    /// With a shared store: how often it is read when nothing else wakes
    /// the scheduler.
    poll: Option<Duration>,
    sync_backoff: Duration,
    /// Operators' commands in progress.
    commands: Commands,
}

impl Driver {
    /// A driver for a store of its own (`poll` `None`: always the leader,
    /// always in sync) or a shared one read every `poll`.
    pub fn new(poll: Option<Duration>) -> Driver {
        Driver {
            backoff: BACKOFF_START,
            retry_at: None,
            generating: 0,
            after_commit: Vec::new(),
            must_sync: false,
            leader: poll.is_none(),
            in_sync: true,
            poll,
            sync_backoff: poll.unwrap_or_default(),
            commands: Commands::default(),
        }
    }

    /// Whether this replica holds the leader lease now.
    pub fn set_leader(&mut self, leader: bool) {
        self.leader = leader || self.poll.is_none();
    }

    /// Only the leader runs the planner, and only on the state it just read
    /// (or committed); every replica serves.
    pub fn leading(&self) -> bool {
        self.leader && self.in_sync
    }

    /// Whether the key ring is what the store holds, as last read.
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// Generation batches in flight.
    pub fn generating(&self) -> usize {
        self.generating
    }

    /// A read of the shared state ended.
    pub fn synced(&mut self, outcome: Synced) {
        // A store of its own holds nothing this process did not write: a
        // failed re-read leaves its key ring what it committed.
        self.in_sync = outcome == Synced::Current || self.poll.is_none();
        if self.in_sync {
            self.must_sync = false;
        }
        self.commands.synced(self.in_sync);
        let poll = self.poll.unwrap_or_default();
        self.sync_backoff = match outcome {
            Synced::Current | Synced::Unreachable => poll,
            Synced::Unreadable => (self.sync_backoff * 2).clamp(poll, SYNC_BACKOFF_MAX.max(poll)),
        };
    }

    /// How long until the shared state should be read again when nothing
    /// else happens (`None`: the store is this process's own).
    pub fn sync_interval(&self) -> Option<Duration> {
        self.poll.map(|_| self.sync_backoff)
    }

    /// What to do now, at `now`, on `state` as the shell holds it. Call
    /// until it answers `None`, carrying out each [`Work`] in turn.
    pub fn poll(&mut self, state: &KeyringState, policy: &Policy, now: Timestamp) -> Option<Work> {
        if self.commands.committing() {
            return None;
        }
        if self.must_sync {
            self.must_sync = false;
            return Some(Work::Sync);
        }
        // Any replica carries operators' commands out, the leader or not:
        // the compare-and-set keeps replicas from undoing each other.
        let shared = self.poll.is_some();
        match self
            .commands
            .poll(state, policy, now, shared, self.generating)
        {
            Some(Next::Sync) => return Some(Work::Sync),
            Some(Next::Commit(actions)) => return Some(Work::CommitCommand(actions)),
            Some(Next::Generate(actions)) => return Some(self.generate(actions)),
            None => {}
        }
        if !self.leading() {
            self.after_commit.clear();
            return None;
        }
        if !self.after_commit.is_empty() && self.generating == 0 {
            let gens = std::mem::take(&mut self.after_commit);
            return Some(self.generate(gens));
        }
        self.after_commit.clear();
        let p = plan(state, policy, now);
        let (gens, transitions): (Vec<Action>, Vec<Action>) =
            p.actions.into_iter().partition(Action::is_generate);
        let may_retry = self.retry_at.is_none_or(|r| r <= now);
        if !transitions.is_empty() {
            if !may_retry {
                return None;
            }
            self.after_commit = gens;
            return Some(Work::Commit(transitions));
        }
        if !gens.is_empty() && self.generating == 0 && may_retry {
            return Some(self.generate(gens));
        }
        None
    }

    /// When to poll again if nothing happens first (`None`: only when
    /// something does, or when the state is read again).
    pub fn poll_timeout(
        &self,
        state: &KeyringState,
        policy: &Policy,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let commands = self.commands.poll_timeout(now);
        let schedule = self.schedule_timeout(state, policy, now);
        commands.into_iter().chain(schedule).min()
    }

    fn schedule_timeout(
        &self,
        state: &KeyringState,
        policy: &Policy,
        now: Timestamp,
    ) -> Option<Timestamp> {
        if self.must_sync || (!self.after_commit.is_empty() && self.generating == 0) {
            return Some(now);
        }
        if !self.leading() {
            return None;
        }
        let retry = self.retry_at.filter(|r| *r > now);
        let p = plan(state, policy, now);
        let transitions = p.actions.iter().any(|a| !a.is_generate());
        let gens = p.actions.iter().any(Action::is_generate);
        if transitions {
            return Some(retry.unwrap_or(now));
        }
        if gens {
            if self.generating == 0 && retry.is_none() {
                return Some(now);
            }
            // Woken by the generation finishing, the retry time, or the
            // next transition on the timeline, whichever comes first.
            return p.next_event.into_iter().chain(retry).min();
        }
        p.wake_at
    }

    /// A commit of [`Work::Commit`] ended at `now`.
    pub fn committed(&mut self, outcome: Committed, now: Timestamp) {
        match outcome {
            Committed::Done => {
                self.succeeded();
                if self.generating > 0 {
                    // The planner asks again once those are done.
                    self.after_commit.clear();
                }
            }
            Committed::Conflict => {
                self.after_commit.clear();
                self.must_sync = true;
            }
            Committed::Failed => {
                self.after_commit.clear();
                self.failed(now);
            }
        }
    }

    /// An operator's command arrived at `now`. With a shared store it is
    /// judged once the state has been read since.
    pub fn command(&mut self, id: CommandId, command: Command, now: Timestamp) {
        self.commands.push(id, command, now, self.poll.is_some());
    }

    /// The command a [`Work::CommitCommand`] just polled belongs to.
    pub fn committing_command(&self) -> Option<CommandId> {
        self.commands.committing_id()
    }

    /// A commit of [`Work::CommitCommand`] ended; `error`: why it failed
    /// or conflicted. What it achieved is read on the state at the next
    /// poll.
    pub fn command_committed(&mut self, outcome: Committed, error: Option<String>) {
        let lost = outcome == Committed::Conflict;
        if lost {
            self.must_sync = true;
        }
        self.commands.committed(lost, error);
    }

    /// The next answer to an operator's command, with the command it is for.
    pub fn poll_answer(&mut self) -> Option<(CommandId, Result<Answer, CommandError>)> {
        self.commands.poll_answer()
    }

    /// The daemon stops at `now`: commands whose commit ended, and
    /// rotations waiting for their new next keys, answer with what there is
    /// (take them with [`Driver::poll_answer`]); other commands in progress
    /// are dropped, having changed nothing.
    pub fn stop(&mut self, state: &KeyringState, policy: &Policy, now: Timestamp) {
        self.commands.stop(state, policy, now);
    }

    /// One batch of [`Work::Generate`] ended at `now`: its keys were made
    /// and committed (or discarded as no longer wanted), or it failed.
    pub fn generated(&mut self, ok: bool, now: Timestamp) {
        self.generating = self.generating.saturating_sub(1);
        if ok {
            self.succeeded();
        } else {
            self.failed(now);
        }
    }

    /// The batches in which to generate `actions`' keys, counted as in
    /// flight: an emergency active key (its predecessor revoked with no
    /// next key to promote) alone, so that signing never waits for the next
    /// key generated beside it; the others together, committed at once.
    pub fn generate(&mut self, actions: Vec<Action>) -> Work {
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
        let mut batches: Vec<Vec<Action>> = alone.into_iter().map(|a| vec![a]).collect();
        if !together.is_empty() {
            batches.push(together);
        }
        self.generating += batches.len();
        Work::Generate(batches)
    }

    fn succeeded(&mut self) {
        self.backoff = BACKOFF_START;
        self.retry_at = None;
    }

    fn failed(&mut self, now: Timestamp) {
        self.retry_at = Some(now.saturating_add(self.backoff));
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The wait after the next failure.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// When a failed step is tried again, while one is waiting.
    pub fn retry_at(&self) -> Option<Timestamp> {
        self.retry_at
    }
}

#[cfg(test)]
mod tests;

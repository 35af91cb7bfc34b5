//! The commands in progress, driven through the driver as the shell drives it.

use std::time::Duration;

use crate::keys::id::{Alg, Kid};
use crate::lifecycle::action::Action;
use crate::lifecycle::command::{Answer, Command, CommandError, CommandId, ROTATE_ATTEMPTS};
use crate::lifecycle::driver::{Committed, Driver, Synced, Work};
use crate::lifecycle::planner::still_wanted;
use crate::lifecycle::planner::{RevokeError, RotateError};
use crate::lifecycle::policy::Policy;
use crate::lifecycle::state::{KeyState, KeyringState};
use crate::lifecycle::testing::{fake_key, policy};
use crate::time::Timestamp;

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
    d.stop(&s.state, &s.policy, t(2600));
    let Some((_, Ok(Answer::Rotated(r)))) = d.poll_answer() else {
        panic!()
    };
    assert_eq!(r[0].next_kid, None);
}

/// Lost for the last time it may, to a writer that did the same rotation:
/// done there, not a failure.
#[test]
fn the_last_lost_rotation_is_success_when_it_was_done_elsewhere() {
    let mut s = Shell::new();
    let mut d = Driver::new(None);
    let next = s.next();
    d.command(CommandId(1), ROTATE, t(2500));
    for attempt in 1..=ROTATE_ATTEMPTS {
        let mut work = d.poll(&s.state, &s.policy, t(2500));
        if work == Some(Work::Sync) {
            d.synced(Synced::Current);
            work = d.poll(&s.state, &s.policy, t(2500));
        }
        let Some(Work::CommitCommand(actions)) = work else {
            panic!("attempt {attempt}: {work:?}")
        };
        if attempt == ROTATE_ATTEMPTS {
            // The winner of the last race rotated the same key out.
            s.commit(&actions, t(2500));
        }
        d.command_committed(Committed::Conflict, Some("conflict".into()));
    }
    s.hold = true;
    s.run(&mut d, t(2500));
    let [(_, Ok(Answer::Rotated(r)))] = &s.answers[..] else {
        panic!("{:?}", s.answers)
    };
    assert!(r[0].by_another_replica);
    assert_eq!(r[0].kid, next);
}

/// A revocation that loses its compare-and-set is judged again; when the
/// winner revoked the same key, it is done.
#[test]
fn a_lost_revocation_is_judged_again_and_a_key_revoked_elsewhere_is_done() {
    let mut s = Shell::new();
    let mut d = Driver::new(None);
    let next = s.next();
    let revoke = Command::Revoke { kid: next.clone() };
    // Lost to a writer that changed something else: tried again, committed.
    d.command(CommandId(1), revoke.clone(), t(100));
    let Some(Work::CommitCommand(_)) = d.poll(&s.state, &s.policy, t(100)) else {
        panic!()
    };
    d.command_committed(Committed::Conflict, Some("conflict".into()));
    let done = s.run(&mut d, t(100));
    assert!(
        matches!(done[..2], [Work::Sync, Work::CommitCommand(_)]),
        "{done:?}"
    );
    assert!(matches!(
        &s.answers[..],
        [(CommandId(1), Ok(Answer::Revoked(r)))] if r.kid == next && r.was == KeyState::Next
    ));
    // Lost to a writer that revoked the same key: revoked.
    let next = s.next();
    d.command(CommandId(2), Command::Revoke { kid: next.clone() }, t(200));
    let Some(Work::CommitCommand(actions)) = d.poll(&s.state, &s.policy, t(200)) else {
        panic!()
    };
    s.commit(&actions, t(200));
    d.command_committed(Committed::Conflict, Some("conflict".into()));
    s.hold = true;
    let done = s.run(&mut d, t(200));
    assert!(
        !done.iter().any(|w| matches!(w, Work::CommitCommand(_))),
        "{done:?}"
    );
    assert!(matches!(
        &s.answers[1],
        (CommandId(2), Ok(Answer::Revoked(r))) if r.kid == next && r.was == KeyState::Next
    ));
}

/// A command still waiting at its deadline is refused, having changed
/// nothing: nothing is committed after its caller gave up.
#[test]
fn a_command_still_waiting_at_its_deadline_is_refused() {
    let mut s = Shell::new();
    let mut d = Driver::new(None);
    s.hold = true;
    d.command(CommandId(1), ROTATE, t(2500));
    s.run(&mut d, t(2500));
    // The next key is being generated: the second rotation waits for it.
    d.command(CommandId(2), ROTATE, t(2510));
    s.run(&mut d, t(2510));
    let late = t(2510).saturating_add(crate::lifecycle::command::COMMAND_DEADLINE);
    assert!(d.poll_timeout(&s.state, &s.policy, t(2600)) <= Some(late));
    let done = s.run(&mut d, late);
    assert!(
        !done.iter().any(|w| matches!(w, Work::CommitCommand(_))),
        "nothing of the command committed: {done:?}"
    );
    assert!(
        s.answers.iter().any(|(id, a)| *id == CommandId(2)
            && matches!(a, Err(CommandError::Failed(m)) if m.starts_with("gave up after 100 s"))),
        "{:?}",
        s.answers
    );
}

/// Stopping answers a command whose commit ended on the state it left.
#[test]
fn stopping_answers_a_command_whose_commit_ended() {
    let mut s = Shell::new();
    let mut d = Driver::new(None);
    let active = s.active();
    d.command(CommandId(1), Command::Revoke { kid: active }, t(100));
    let Some(Work::CommitCommand(actions)) = d.poll(&s.state, &s.policy, t(100)) else {
        panic!()
    };
    s.commit(&actions, t(100));
    d.command_committed(Committed::Done, None);
    d.stop(&s.state, &s.policy, t(100));
    assert!(matches!(
        d.poll_answer(),
        Some((CommandId(1), Ok(Answer::Revoked(_))))
    ));
}

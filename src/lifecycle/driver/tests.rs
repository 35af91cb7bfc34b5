//! The driver on simulated time: work, backoff, leadership and syncs.

use super::*;
use crate::keys::id::Alg;

fn policy() -> Policy {
    crate::lifecycle::testing::policy(3)
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

use crate::lifecycle::testing::fake_key as key;

/// Carries a generation batch out on `state`, as the shell commits it.
fn commit_batch(state: &mut KeyringState, batch: &[Action], now: Timestamp, n: &mut u32) {
    for a in batch {
        *n += 1;
        if crate::lifecycle::still_wanted(state, a) {
            state.apply(a, now, Some(key(*n))).unwrap();
        }
    }
    state.version += 1;
}

/// Polls and carries out all work due at `now` (generations finish at
/// once); returns what was done.
fn run(d: &mut Driver, s: &mut KeyringState, p: &Policy, now: Timestamp) -> Vec<Work> {
    let mut n = s.version as u32 * 10;
    let mut done = Vec::new();
    while let Some(w) = d.poll(s, p, now) {
        match &w {
            Work::Commit(a) => {
                for x in a {
                    s.apply(x, now, None).unwrap();
                }
                s.version += 1;
                d.committed(Committed::Done, now);
            }
            Work::Generate(batches) => {
                for b in batches {
                    commit_batch(s, b, now, &mut n);
                    d.generated(true, now);
                }
            }
            Work::CommitCommand(a) => {
                for x in a {
                    s.apply(x, now, None).unwrap();
                }
                s.version += 1;
                d.command_committed(Committed::Done, None);
            }
            Work::Sync => d.synced(Synced::Current),
        }
        done.push(w);
        assert!(done.len() < 16, "{done:?}");
    }
    done
}

#[test]
fn bootstrap_generates_once_then_waits_for_the_schedule() {
    let p = policy();
    let mut d = Driver::new(None);
    let mut s = KeyringState::default();
    let mut n = 0;
    let Some(Work::Generate(batches)) = d.poll(&s, &p, t(0)) else {
        panic!("first keys")
    };
    assert_eq!(batches.len(), 1);
    assert_eq!(d.generating(), 1);
    // Nothing more while they are made: no second generation, and no
    // wake-up before the generation says it is done.
    assert_eq!(d.poll(&s, &p, t(10)), None);
    assert!(d.poll_timeout(&s, &p, t(10)).is_none_or(|w| w > t(10)));
    commit_batch(&mut s, &batches[0], t(50), &mut n);
    d.generated(true, t(50));
    run(&mut d, &mut s, &p, t(50));
    assert!(s.active(Alg::ES256).is_some() && s.next_key(Alg::ES256).is_some());
    // Woken for the scheduled rotation, not before.
    assert_eq!(d.poll_timeout(&s, &p, t(60)), Some(t(3050)));
    // The rotation commits, then its new next key is generated under
    // the rotation's trigger.
    let done = run(&mut d, &mut s, &p, t(3050));
    assert!(matches!(done[0], Work::Commit(_)), "{done:?}");
    let Work::Generate(b) = &done[1] else {
        panic!("{done:?}")
    };
    assert!(matches!(
        b[0][0],
        Action::Generate {
            trigger: crate::lifecycle::state::Trigger::Schedule,
            ..
        }
    ));
}

fn bootstrapped() -> (Driver, KeyringState, Policy) {
    let p = policy();
    let mut d = Driver::new(None);
    let mut s = KeyringState::default();
    run(&mut d, &mut s, &p, t(0));
    (d, s, p)
}

#[test]
fn failures_back_off_doubling_and_a_success_resets() {
    let (mut d, s, p) = bootstrapped();
    let due = t(3000);
    let Some(Work::Commit(_)) = d.poll(&s, &p, due) else {
        panic!("the rotation")
    };
    d.committed(Committed::Failed, due);
    assert_eq!(d.poll(&s, &p, t(3500)), None);
    assert_eq!(d.poll_timeout(&s, &p, t(3500)), Some(t(4000)));
    let Some(Work::Commit(_)) = d.poll(&s, &p, t(4000)) else {
        panic!("retried at the backoff")
    };
    d.committed(Committed::Failed, t(4000));
    assert_eq!(d.retry_at(), Some(t(6000)));
    let Some(Work::Commit(_)) = d.poll(&s, &p, t(6000)) else {
        panic!()
    };
    d.committed(Committed::Done, t(6000));
    assert_eq!(d.retry_at(), None);
}

/// While a retried generation is in flight the scheduler is not woken
/// again and again: the retry time is past, the generation will say.
#[test]
fn a_generation_in_flight_is_waited_for_not_spun_on() {
    let p = policy();
    let mut d = Driver::new(None);
    let s = KeyringState::default();
    let Some(Work::Generate(_)) = d.poll(&s, &p, t(0)) else {
        panic!()
    };
    d.generated(false, t(100));
    assert_eq!(d.poll(&s, &p, t(500)), None);
    let Some(Work::Generate(_)) = d.poll(&s, &p, t(1100)) else {
        panic!("retried")
    };
    let wake = d.poll_timeout(&s, &p, t(1200));
    assert!(wake.is_none_or(|w| w > t(1200)), "{wake:?}");
}

#[test]
fn a_lost_compare_and_set_reads_the_state_before_planning_again() {
    let (_, s, p) = bootstrapped();
    let mut d = Driver::new(Some(Duration::from_secs(2)));
    assert_eq!(d.poll(&s, &p, t(3000)), None, "not the leader");
    d.set_leader(true);
    let Some(Work::Commit(_)) = d.poll(&s, &p, t(3000)) else {
        panic!()
    };
    d.committed(Committed::Conflict, t(3000));
    assert_eq!(d.poll_timeout(&s, &p, t(3000)), Some(t(3000)));
    assert_eq!(d.poll(&s, &p, t(3000)), Some(Work::Sync));
    d.synced(Synced::Unreadable);
    assert!(!d.leading());
    assert_eq!(d.poll(&s, &p, t(3000)), None);
    assert_eq!(d.sync_interval(), Some(Duration::from_secs(4)));
    d.synced(Synced::Unreadable);
    d.synced(Synced::Unreadable);
    d.synced(Synced::Unreadable);
    assert_eq!(d.sync_interval(), Some(SYNC_BACKOFF_MAX));
    d.synced(Synced::Unreachable);
    assert_eq!(d.sync_interval(), Some(Duration::from_secs(2)));
    d.synced(Synced::Current);
    assert!(d.leading());
}

/// A store of its own: a re-read that fails after a lost compare-and-set
/// does not stop the planner (nothing else writes it).
#[test]
fn its_own_store_keeps_leading_after_a_failed_re_read() {
    let (mut d, s, p) = bootstrapped();
    let Some(Work::Commit(_)) = d.poll(&s, &p, t(3000)) else {
        panic!()
    };
    d.committed(Committed::Conflict, t(3000));
    assert_eq!(d.poll(&s, &p, t(3000)), Some(Work::Sync));
    d.synced(Synced::Unreadable);
    assert!(d.leading());
    assert!(matches!(d.poll(&s, &p, t(3000)), Some(Work::Commit(_))));
}

#[test]
fn an_emergency_active_key_is_generated_alone() {
    let mut d = Driver::new(None);
    let generate = |role, early| Action::Generate {
        alg: Alg::RS256,
        rsa_bits: 4096,
        role,
        trigger: crate::lifecycle::state::Trigger::Revoke,
        early,
        promised: Default::default(),
    };
    let Work::Generate(b) = d.generate(vec![
        generate(KeyState::Active, Some(EarlyActivation::Emergency)),
        generate(KeyState::Next, None),
    ]) else {
        panic!()
    };
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].len(), 1);
    assert_eq!(d.generating(), 2);
}

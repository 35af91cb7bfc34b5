//! The planner, driven through a simulated shell: tricky instants as unit
//! tests, and months of random operation as property tests.

mod support;

use std::time::Duration;

use jwksd::keys::Alg;
use jwksd::lifecycle::{
    Action, Answer, Command, CommandId, Driver, EarlyActivation, KeyState, Policy, RevokeError,
    RotateError, Schedule, Trigger, UpcomingEvent, plan, upcoming,
};
use jwksd::time::Timestamp;
use proptest::prelude::*;
use support::sim::{Faults, Sim};

const S: u64 = 1;
const M: u64 = 60;
const H: u64 = 3600;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn t0() -> Timestamp {
    Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap()
}

/// Test-scale policy: rotate every 10 s, publish 3 s ahead, retain 7 s.
fn policy() -> Policy {
    Policy {
        algorithms: vec![Alg::ES256, Alg::RS256],
        rsa_bits: 2048,
        schedule: Schedule::Every(secs(10)),
        max_token_lifetime: secs(4),
        clock_skew: secs(1),
        jwks_cache_max_age: secs(2),
        publish_ahead: secs(3),
        signing_key_cache_max_age: secs(2),
        propagation: secs(0),
        custody: Default::default(),
    }
}

fn assert_clean(sim: &mut Sim) {
    sim.check_history();
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}

#[test]
fn empty_store_generates_active_and_next_per_algorithm() {
    let p = plan(&Default::default(), &policy(), t0());
    assert_eq!(p.actions.len(), 4);
    assert!(p.actions.iter().all(Action::is_generate));
    assert!(p.actions.iter().any(|a| matches!(
        a,
        Action::Generate {
            alg: Alg::RS256,
            role: KeyState::Active,
            trigger: Trigger::Startup,
            early: Some(EarlyActivation::Bootstrap),
            ..
        }
    )));
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    for alg in [Alg::ES256, Alg::RS256] {
        let active = sim.state.active(alg).unwrap();
        assert_eq!(active.early_activation, Some(EarlyActivation::Bootstrap));
        assert!(sim.state.next_key(alg).is_some());
    }
    assert_eq!(sim.state.published().count(), 4);
    assert_clean(&mut sim);
}

/// A change of `keys.backend` is a rotation: the next key made under the
/// old backend never signed and goes at once, a new one is made where new
/// keys go, and the active key keeps signing from where it lives until the
/// scheduled rotation, then retires on its normal retention.
#[test]
fn a_backend_change_replaces_the_next_key_and_rotates_on_schedule() {
    use jwksd::keys::Custody;
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    let old_active = sim.state.active(Alg::ES256).unwrap().kid.clone();
    let old_next = sim.state.next_key(Alg::ES256).unwrap().kid.clone();
    let token = Custody::Pkcs11 {
        token_label: "hsm".into(),
    };
    sim.policy.custody = token.clone();
    sim.advance(secs(1));
    let gone = sim.state.find(&old_next).unwrap();
    assert_eq!(gone.state, KeyState::Retired);
    assert_eq!(gone.transitions.last().unwrap().trigger, Trigger::Config);
    let next = sim.state.next_key(Alg::ES256).unwrap();
    assert_eq!(next.custody, token);
    assert_eq!(next.transitions[0].trigger, Trigger::Config);
    let new_next = next.kid.clone();
    let active = sim.state.active(Alg::ES256).unwrap();
    assert_eq!(
        (&active.kid, &active.custody),
        (&old_active, &Custody::Software)
    );
    // The scheduled rotation (10 s after activation) moves signing to the
    // token; the old key retires on its normal retention (7 s).
    sim.advance(secs(9));
    assert_eq!(sim.state.active(Alg::ES256).unwrap().kid, new_next);
    let retiring = sim.state.find(&old_active).unwrap();
    assert_eq!(retiring.state, KeyState::Retiring);
    assert_eq!(retiring.retire_at, Some(sim.now.saturating_add(secs(7))));
    assert!(
        sim.state
            .published()
            .filter(|k| k.kid != old_active)
            .all(|k| k.custody == token || k.alg == Alg::RS256)
    );
    // And back: the same rule the other way.
    sim.policy.custody = Custody::Software;
    sim.advance(secs(1));
    assert_eq!(
        sim.state.next_key(Alg::ES256).unwrap().custody,
        Custody::Software
    );
    assert_eq!(sim.state.active(Alg::ES256).unwrap().custody, token);
    sim.advance(secs(30));
    assert!(
        sim.state
            .published()
            .all(|k| k.custody == Custody::Software)
    );
    assert_clean(&mut sim);
}

#[test]
fn scheduled_rotation_switches_at_once_and_retains() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    let old = sim.state.active(Alg::ES256).unwrap().kid.clone();
    let next = sim.state.next_key(Alg::ES256).unwrap().kid.clone();
    let p = plan(&sim.state, &sim.policy, sim.now);
    assert_eq!(p.wake_at, Some(t0().saturating_add(secs(10))));
    sim.advance(secs(10));
    assert_eq!(sim.state.active(Alg::ES256).unwrap().kid, next);
    let old_rec = sim.state.find(&old).unwrap();
    assert_eq!(old_rec.state, KeyState::Retiring);
    assert_eq!(old_rec.retire_at, Some(sim.now.saturating_add(secs(7))));
    // Still published until retire_at, gone after.
    sim.advance(secs(6));
    assert!(sim.state.published().any(|k| k.kid == old));
    sim.advance(secs(1));
    assert!(!sim.state.published().any(|k| k.kid == old));
    assert_eq!(sim.state.find(&old).unwrap().state, KeyState::Retired);
    assert_clean(&mut sim);
}

#[test]
fn rotation_exactly_at_publish_ahead_is_allowed() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(10)); // scheduled rotation; new next published now
    let rotated_at = sim.now;
    sim.advance(secs(3) - Duration::from_millis(1));
    assert!(matches!(
        sim.manual_rotate(Some(Alg::ES256), false),
        Err(RotateError::TooEarly { earliest, .. }) if earliest == rotated_at.saturating_add(secs(3))
    ));
    sim.advance(Duration::from_millis(1));
    sim.manual_rotate(Some(Alg::ES256), false).unwrap();
    let a = sim.state.active(Alg::ES256).unwrap();
    assert_eq!(a.activated_at, Some(sim.now));
    assert_eq!(a.early_activation, None);
    assert_eq!(a.transitions.last().unwrap().trigger, Trigger::Manual);
    assert_clean(&mut sim);
}

#[test]
fn sub_second_precision_is_kept() {
    // Published at 10.9 s with publish_ahead 3 s: may not sign at 13.0 s.
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(Duration::from_millis(10_900)); // rotation at 10 s, not yet
    let mut p = policy();
    p.schedule = Schedule::Every(Duration::from_millis(10_900));
    let mut sim = Sim::new(p, t0());
    sim.settle();
    sim.advance(Duration::from_millis(10_900));
    let published = sim.state.next_key(Alg::ES256).unwrap().published_at;
    assert_eq!(published.as_millis() - t0().as_millis(), 10_900);
    sim.advance(Duration::from_millis(2_100));
    assert!(matches!(
        sim.manual_rotate(Some(Alg::ES256), false),
        Err(RotateError::TooEarly { .. })
    ));
}

#[test]
fn schedule_faster_than_publish_ahead_waits_and_reports_when() {
    let mut p = policy();
    p.schedule = Schedule::Every(secs(1)); // invalid config, planner stays safe
    let mut sim = Sim::new(p, t0());
    sim.settle();
    sim.advance(secs(1));
    // Due, but the next key has been published 1 s of the 3 s needed.
    let up = upcoming(&sim.state, &sim.policy, sim.now);
    let es = up
        .iter()
        .find(|u| u.alg == Alg::ES256 && u.event != UpcomingEvent::Retire)
        .unwrap();
    assert_eq!(es.event, UpcomingEvent::RotationWaitingForPublishAhead);
    assert_eq!(es.at, t0().saturating_add(secs(3)));
    assert_eq!(plan(&sim.state, &sim.policy, sim.now).wake_at, Some(es.at));
    sim.advance(secs(60));
    assert_clean(&mut sim);
    // One rotation per publish_ahead at most.
    let n = sim.scheduled_rotations[&Alg::ES256].len();
    assert_eq!(n, 20, "{:?}", sim.scheduled_rotations[&Alg::ES256]);
}

#[test]
fn downtime_across_many_fires_rotates_once() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(5));
    sim.downtime(secs(100));
    assert_eq!(sim.scheduled_rotations[&Alg::ES256].len(), 1);
    assert_clean(&mut sim);
}

#[test]
fn downtime_longer_than_retention_retires_and_keeps_one_active() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(12)); // one rotation; a retiring key per alg
    assert_eq!(
        sim.state.in_state(Alg::ES256, KeyState::Retiring).count(),
        1
    );
    sim.downtime(secs(3600));
    // The key retiring before the downtime is gone; the key active before it
    // now retires from the restart on.
    let retiring: Vec<_> = sim.state.in_state(Alg::ES256, KeyState::Retiring).collect();
    assert_eq!(retiring.len(), 1);
    assert_eq!(retiring[0].deactivated_at, Some(sim.now));
    assert_clean(&mut sim);
}

#[test]
fn revoking_active_promotes_next_at_once_as_emergency() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(1));
    let active = sim.state.active(Alg::ES256).unwrap().kid.clone();
    let next = sim.state.next_key(Alg::ES256).unwrap().kid.clone();
    sim.revoke(&active).unwrap();
    assert!(!sim.state.published().any(|k| k.kid == active));
    let a = sim.state.active(Alg::ES256).unwrap();
    assert_eq!(a.kid, next);
    assert_eq!(a.early_activation, Some(EarlyActivation::Emergency));
    assert!(sim.state.next_key(Alg::ES256).is_some());
    assert_eq!(
        sim.revoke(&active),
        Err(RevokeError::AlreadyEnded {
            kid: active.clone(),
            state: KeyState::Revoked
        })
    );
    assert_clean(&mut sim);
}

#[test]
fn revoking_next_replaces_it_and_delays_rotation() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(9));
    let next = sim.state.next_key(Alg::ES256).unwrap().kid.clone();
    sim.revoke(&next).unwrap();
    let replacement = sim.state.next_key(Alg::ES256).unwrap();
    assert_ne!(replacement.kid, next);
    assert_eq!(replacement.published_at, sim.now);
    sim.advance(secs(1)); // due at 10 s, replacement ready at 12 s
    assert_eq!(sim.scheduled_rotations.get(&Alg::ES256), None);
    sim.advance(secs(2));
    assert_eq!(
        sim.scheduled_rotations[&Alg::ES256],
        vec![t0().saturating_add(secs(12))]
    );
    assert_clean(&mut sim);
}

#[test]
fn revoking_retiring_removes_it_and_unknown_is_reported() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(10));
    let retiring = sim
        .state
        .in_state(Alg::RS256, KeyState::Retiring)
        .next()
        .unwrap()
        .kid
        .clone();
    sim.revoke(&retiring).unwrap();
    assert_eq!(sim.state.find(&retiring).unwrap().state, KeyState::Revoked);
    let unknown: jwksd::keys::Kid = "nope".parse().unwrap();
    assert_eq!(
        sim.revoke(&unknown),
        Err(RevokeError::Unknown(unknown.clone()))
    );
    assert_clean(&mut sim);
}

#[test]
fn forced_rotation_is_recorded_as_unsafe() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(1));
    sim.manual_rotate(None, true).unwrap();
    for alg in [Alg::ES256, Alg::RS256] {
        let a = sim.state.active(alg).unwrap();
        assert_eq!(a.early_activation, Some(EarlyActivation::Forced));
        assert_eq!(a.transitions.last().unwrap().trigger, Trigger::Forced);
    }
    assert_clean(&mut sim);
}

#[test]
fn manual_rotations_are_bounded() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    let mut refused = None;
    for _ in 0..10 {
        match sim.manual_rotate(Some(Alg::ES256), true) {
            Ok(()) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(matches!(
        refused,
        Some(RotateError::TooManyPublished {
            alg: Alg::ES256,
            count: 4,
            ..
        })
    ));
    assert_clean(&mut sim);
}

#[test]
fn removed_algorithm_retires_gracefully_and_can_return() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(2));
    let rs_active = sim.state.active(Alg::RS256).unwrap().kid.clone();
    let rs_next = sim.state.next_key(Alg::RS256).unwrap().kid.clone();
    sim.policy.algorithms = vec![Alg::ES256];
    sim.settle();
    let a = sim.state.find(&rs_active).unwrap();
    assert_eq!(a.state, KeyState::Retiring);
    assert_eq!(a.transitions.last().unwrap().trigger, Trigger::Config);
    assert_eq!(sim.state.find(&rs_next).unwrap().state, KeyState::Retired);
    sim.advance(secs(30));
    assert!(sim.state.published().all(|k| k.alg == Alg::ES256));
    sim.policy.algorithms = vec![Alg::ES256, Alg::RS256];
    sim.settle();
    assert!(sim.state.active(Alg::RS256).is_some());
    assert_clean(&mut sim);
}

#[test]
fn rsa_size_change_applies_to_next_generated_key() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.policy.rsa_bits = 4096;
    let p = plan(&sim.state, &sim.policy, sim.now.saturating_add(secs(10)));
    assert!(p.actions.iter().any(|a| matches!(
        a,
        Action::Generate {
            alg: Alg::RS256,
            rsa_bits: 4096,
            ..
        }
    )));
}

#[test]
fn cron_schedule_rotates_at_fires_and_once_after_downtime() {
    let mut p = policy();
    p.schedule = Schedule::cron("0 0 3 * * *").unwrap();
    p.publish_ahead = secs(6 * M);
    p.jwks_cache_max_age = secs(5 * M);
    p.max_token_lifetime = secs(24 * H);
    let mut sim = Sim::new(p, t0());
    sim.settle();
    sim.advance(secs(3 * 24 * H));
    let times: Vec<String> = sim.scheduled_rotations[&Alg::ES256]
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    assert_eq!(
        times,
        [
            "2026-01-01T03:00:00.000Z",
            "2026-01-02T03:00:00.000Z",
            "2026-01-03T03:00:00.000Z"
        ]
    );
    sim.downtime(secs(10 * 24 * H));
    assert_eq!(sim.scheduled_rotations[&Alg::ES256].len(), 4);
    assert_clean(&mut sim);
}

/// Issue reproduction: rotate every 20 s with a JWKS max-age of 8 s and a
/// signing-key max-age of 15 s; restart with every 6 s and both max-ages
/// 1 s. Promises made under the old values must still be kept.
#[test]
fn lowered_values_wait_for_the_promises_already_served() {
    let mut before = policy();
    before.algorithms = vec![Alg::ES256];
    before.schedule = Schedule::Every(secs(20));
    before.jwks_cache_max_age = secs(8);
    before.publish_ahead = secs(9);
    before.signing_key_cache_max_age = secs(15);
    let mut sim = Sim::new(before.clone(), t0());
    sim.settle();
    sim.advance(secs(30));
    let old_active = sim.state.active(Alg::ES256).unwrap().kid.clone();
    let mut after = before.clone();
    after.schedule = Schedule::Every(secs(6));
    after.jwks_cache_max_age = secs(1);
    after.publish_ahead = secs(2);
    after.signing_key_cache_max_age = secs(1);
    sim.reconfigure(after.clone(), Duration::ZERO);
    let restart = sim.now;
    sim.settle();
    let deferred = jwksd::lifecycle::deferred(&sim.state, &sim.policy, sim.now);
    assert!(
        deferred
            .iter()
            .any(|d| d.field == "jwks.cache_max_age"
                && d.until == Some(restart.saturating_add(secs(8)))),
        "{deferred:?}"
    );
    assert!(
        deferred
            .iter()
            .any(|d| d.field == "signing_key.cache_max_age" && d.kid.as_ref() == Some(&old_active)),
        "{deferred:?}"
    );
    sim.advance(secs(60));
    // The first rotation after the restart waited for the 8 s sets; the key
    // rotated out kept the 15 s signer promise.
    let old = sim.state.find(&old_active).unwrap();
    let deactivated = old.deactivated_at.unwrap();
    assert!(
        deactivated >= restart.saturating_add(secs(9)),
        "{deactivated:?}"
    );
    let ended = old.ended_at.unwrap();
    assert!(
        ended.since(deactivated) >= secs(15 + 4 + 1),
        "retained {:?}",
        ended.since(deactivated)
    );
    // Keys activated under the new values alone get the new retention.
    let later: Vec<_> = sim
        .state
        .history
        .iter()
        .filter(|k| {
            k.activated_at
                .is_some_and(|a| a > restart.saturating_add(secs(20)))
        })
        .collect();
    assert!(!later.is_empty());
    for k in later {
        assert_eq!(
            k.ended_at.unwrap().since(k.deactivated_at.unwrap()),
            after.retention()
        );
    }
    assert_clean(&mut sim);
}

#[test]
fn raised_values_apply_at_once() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    sim.advance(secs(5));
    let mut p = policy();
    p.signing_key_cache_max_age = secs(5);
    p.max_token_lifetime = secs(8);
    sim.reconfigure(p.clone(), secs(1));
    sim.settle();
    let active = sim.state.active(Alg::ES256).unwrap();
    assert_eq!(active.promised, p.promised());
    assert!(jwksd::lifecycle::deferred(&sim.state, &sim.policy, sim.now).is_empty());
    sim.advance(secs(40));
    assert_clean(&mut sim);
}

// ---- properties ----

/// Time steps are in hundredths of the policy's rotation period, so that
/// every policy sees a few rotations per step whatever its scale.
#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Rotate(Option<Alg>, bool),
    Revoke(usize),
    Restart,
    Downtime(u64),
    ToggleRs256,
    /// Restart under another configuration after a downtime: every
    /// duration up or down, algorithms added or removed, rsa_bits changed.
    Reconfigure(Box<Policy>, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..400).prop_map(Op::Advance),
        2 => (prop::option::of(prop::sample::select(Alg::ALL.to_vec())), any::<bool>())
            .prop_map(|(a, f)| Op::Rotate(a, f)),
        1 => (0usize..16).prop_map(Op::Revoke),
        1 => Just(Op::Restart),
        1 => (0u64..5000).prop_map(Op::Downtime),
        1 => Just(Op::ToggleRs256),
        // Any mix of the algorithms, each added or removed at any time.
        2 => (arb_policy(), prop::sample::subsequence(Alg::ALL.to_vec(), 1..=Alg::ALL.len()), prop_oneof![Just(2048u32), Just(3072), Just(4096)], 0u64..200, any::<bool>())
            .prop_map(|(mut p, algs, bits, down, token)| {
                p.algorithms = algs;
                p.rsa_bits = bits;
                // keys.backend moved (or not): a rotation, never a copy.
                if token {
                    p.custody = jwksd::keys::Custody::Pkcs11 { token_label: "hsm".into() };
                }
                Op::Reconfigure(Box::new(p), down)
            }),
    ]
}

/// The body of `operators_commands_through_the_scheduler_keep_the_invariants`,
/// callable with one input (regressions below).
fn operators_run(
    policy: Policy,
    seed: u64,
    commit_fails: f64,
    generation_fails: f64,
    generation_max_pct: u64,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let period = policy.schedule.min_period(t0()).unwrap();
    let mut faults = Faults::new(
        seed,
        commit_fails,
        generation_fails,
        period * (generation_max_pct as u32) / 100,
    );
    let mut sim = Sim::new(policy, t0());
    let mut driver = Driver::new(None);
    // Commands fed to the driver now running (a restart drops the rest).
    let mut asked: Vec<CommandId> = Vec::new();
    for op in ops {
        let period = sim.policy.schedule.min_period(sim.now).unwrap();
        let scaled = |n: u64| period * (n as u32) / 100;
        let command = match op {
            Op::Rotate(alg, force) => Some(Command::Rotate { alg, force }),
            Op::Revoke(i) => {
                let kids: Vec<_> = sim.state.published().map(|k| k.kid.clone()).collect();
                kids.get(i % kids.len().max(1))
                    .map(|kid| Command::Revoke { kid: kid.clone() })
            }
            _ => None,
        };
        if let Some(c) = command {
            asked.push(sim.command(&mut driver, c));
            let until = sim.now.saturating_add(scaled(2));
            sim.run_driven(&mut driver, until, &mut faults);
            continue;
        }
        match op {
            Op::Restart | Op::Reconfigure(..) | Op::Downtime(_) => {
                match op {
                    Op::Restart => sim.restart(),
                    Op::Reconfigure(p, down) => sim.reconfigure(*p, scaled(down)),
                    Op::Downtime(n) => sim.downtime(scaled(n)),
                    _ => {}
                }
                driver = Driver::new(None);
                asked.clear();
            }
            other => {
                let n = match other {
                    Op::Advance(n) => n,
                    _ => 50,
                };
                let until = sim.now.saturating_add(scaled(n));
                sim.run_driven(&mut driver, until, &mut faults);
            }
        }
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    }
    let until = sim.now.saturating_add(jwksd::lifecycle::ROTATE_NEXT_WAIT);
    sim.run_driven(&mut driver, until, &mut faults);
    for id in &asked {
        prop_assert!(sim.answer(*id).is_some(), "command {id:?} never answered");
    }
    for (_, answer, _) in &sim.answers {
        match answer {
            Ok(Answer::Revoked(r)) => {
                // Unless it has since left the bounded history (many
                // algorithms rotating through a long run fill it).
                let state = sim.state.find(&r.kid).map(|k| k.state);
                prop_assert!(
                    state == Some(KeyState::Revoked)
                        || (state.is_none()
                            && sim.state.history.len() == jwksd::lifecycle::HISTORY_LIMIT),
                    "{:?}: {state:?}",
                    r.kid
                );
            }
            Ok(Answer::Rotated(done)) => {
                for r in done {
                    let o = &sim.keys[&r.kid];
                    prop_assert!(o.active_from.is_some(), "{r:?} never active");
                    prop_assert!(sim.keys[&r.previous_kid].active_until.is_some(), "{r:?}");
                }
            }
            Err(_) => {}
        }
    }
    sim.check_history();
    prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    Ok(())
}

/// A key generation the simulation lets take 0 ms finishes at the instant
/// it started: the simulation's own loop takes it in, not a wake-up of the
/// driver "with nothing to do" (a false violation the property test once
/// reported, with this input).
#[test]
fn a_generation_that_takes_no_time_is_taken_in_at_once() {
    let policy = Policy {
        algorithms: vec![Alg::ES256, Alg::RS256],
        rsa_bits: 2048,
        schedule: Schedule::cron("0 0 */6 * * *").unwrap(),
        max_token_lifetime: secs(64785),
        clock_skew: secs(0),
        jwks_cache_max_age: secs(60),
        publish_ahead: secs(60),
        signing_key_cache_max_age: secs(0),
        propagation: secs(17),
        custody: Default::default(),
    };
    operators_run(
        policy,
        7385407880481555760,
        0.11869410659368118,
        0.0,
        1,
        vec![Op::Advance(351), Op::Advance(325), Op::Advance(224)],
    )
    .unwrap();
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        (M..=60 * M),         // cache max-age
        (0u64..=5 * M),       // skew
        (0u64..=H),           // extra publish_ahead
        (0u64..=H),           // signer cache
        (5 * M..=7 * 24 * H), // max lifetime
        (0u64..=48 * H),      // period above publish_ahead
        any::<bool>(),
        (0u64..=30), // propagation (the store's commit window and poll)
    )
        .prop_map(
            |(cache, skew, extra, sk, life, period, cron, propagation)| {
                let publish_ahead = cache + skew + extra;
                let schedule = if cron && publish_ahead <= 6 * H {
                    Schedule::cron("0 0 */6 * * *").unwrap()
                } else {
                    Schedule::Every(secs(publish_ahead + period))
                };
                Policy {
                    algorithms: vec![Alg::ES256, Alg::RS256],
                    rsa_bits: 2048,
                    schedule,
                    max_token_lifetime: secs(life),
                    clock_skew: secs(skew),
                    jwks_cache_max_age: secs(cache),
                    publish_ahead: secs(publish_ahead),
                    signing_key_cache_max_age: secs(sk),
                    propagation: secs(propagation),
                    custody: Default::default(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Months of operation with random schedules, lifetimes, manual and
    /// forced rotations, revocations, restarts, downtime and configuration
    /// changes keep I1 to I5 (checked in the simulated shell).
    #[test]
    fn lifecycle_invariants_hold(policy in arb_policy(), ops in prop::collection::vec(op(), 1..120)) {
        let mut sim = Sim::new(policy, t0());
        sim.settle();
        for op in ops {
            let period = match &op {
                Op::Advance(_) | Op::Downtime(_) | Op::Reconfigure(..) => {
                    sim.policy.schedule.min_period(sim.now).unwrap()
                }
                _ => Duration::ZERO,
            };
            let scaled = |n: u64| period * (n as u32) / 100;
            match op {
                Op::Advance(n) => sim.advance(scaled(n)),
                Op::Rotate(alg, force) => { let _ = sim.manual_rotate(alg, force); }
                Op::Revoke(i) => {
                    let kids: Vec<_> = sim.state.published().map(|k| k.kid.clone()).collect();
                    if !kids.is_empty() {
                        sim.revoke(&kids[i % kids.len()]).unwrap();
                    }
                }
                Op::Restart => { sim.restart(); sim.settle(); }
                Op::Downtime(n) => sim.downtime(scaled(n)),
                Op::ToggleRs256 => {
                    if sim.policy.algorithms.contains(&Alg::RS256) {
                        sim.policy.algorithms = vec![Alg::ES256];
                    } else {
                        sim.policy.algorithms = vec![Alg::ES256, Alg::RS256];
                    }
                    sim.settle();
                }
                Op::Reconfigure(p, down) => {
                    sim.reconfigure(*p, scaled(down));
                    sim.settle();
                }
            }
            prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
        }
        sim.check_history();
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    }

    /// The daemon's own scheduler, the same `Driver` the daemon runs, over
    /// months of simulated time: commits that fail, key generations that
    /// take up to hours and fail, restarts and configuration changes. I1 to
    /// I5 hold, and no key signs early except the first ones.
    #[test]
    fn the_scheduler_keeps_the_invariants_through_failures(
        policy in arb_policy(),
        seed in any::<u64>(),
        commit_fails in 0.0f64..0.4,
        generation_fails in 0.0f64..0.4,
        generation_max_pct in 1u64..200,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let period = policy.schedule.min_period(t0()).unwrap();
        let mut faults = Faults::new(seed, commit_fails, generation_fails, period * (generation_max_pct as u32) / 100);
        let mut sim = Sim::new(policy, t0());
        let mut driver = Driver::new(None);
        for op in ops {
            let period = sim.policy.schedule.min_period(sim.now).unwrap();
            let scaled = |n: u64| period * (n as u32) / 100;
            match op {
                Op::Restart => {
                    sim.restart();
                    driver = Driver::new(None);
                }
                Op::Reconfigure(p, down) => {
                    sim.reconfigure(*p, scaled(down));
                    driver = Driver::new(None);
                }
                Op::Downtime(n) => {
                    sim.downtime(scaled(n));
                    driver = Driver::new(None);
                }
                // Operators' commands are not the driver's: time passes.
                other => {
                    let n = match other { Op::Advance(n) => n, _ => 50 };
                    let until = sim.now.saturating_add(scaled(n));
                    sim.run_driven(&mut driver, until, &mut faults);
                }
            }
            prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
        }
        sim.check_history();
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
        for o in sim.keys.values() {
            prop_assert!(matches!(o.early, None | Some(EarlyActivation::Bootstrap)), "{o:?}");
        }
    }

    /// Operators' commands go through the same `Driver` as the schedule,
    /// beside failing commits and slow, failing generations: every command
    /// is answered, what an answer says was done is what the state holds,
    /// and I1 to I5 hold (early activations only where a command asked).
    #[test]
    fn operators_commands_through_the_scheduler_keep_the_invariants(
        policy in arb_policy(),
        seed in any::<u64>(),
        commit_fails in 0.0f64..0.3,
        generation_fails in 0.0f64..0.3,
        generation_max_pct in 1u64..50,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        operators_run(policy, seed, commit_fails, generation_fails, generation_max_pct, ops)?;
    }

    /// Without operator intervention, every rotation is safe: no key ever
    /// signs early except the first ones.
    #[test]
    fn unattended_operation_never_activates_early(policy in arb_policy(), steps in prop::collection::vec(1u64..400, 1..200)) {
        let period = policy.schedule.min_period(t0()).unwrap();
        let mut sim = Sim::new(policy, t0());
        sim.settle();
        for n in steps {
            sim.advance(period * (n as u32) / 100);
        }
        sim.check_history();
        prop_assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
        for o in sim.keys.values() {
            prop_assert!(matches!(o.early, None | Some(EarlyActivation::Bootstrap)));
        }
    }
}

#[test]
fn a_year_of_hourly_rotations_simulates_quickly() {
    let mut p = policy();
    p.schedule = Schedule::Every(secs(H));
    p.publish_ahead = secs(6 * M);
    p.max_token_lifetime = secs(24 * H);
    let mut sim = Sim::new(p, t0());
    sim.settle();
    sim.advance(secs(365 * 24 * H));
    assert_eq!(sim.scheduled_rotations[&Alg::ES256].len(), 365 * 24);
    assert_clean(&mut sim);
    let _ = S;
}

#[test]
fn a_next_key_promoted_after_a_revocation_is_an_emergency_not_a_bootstrap() {
    // The active key was revoked while no next key existed; a next key
    // generated meanwhile arrives before the replacement active key.
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    let active = sim.state.active(Alg::ES256).unwrap().kid.clone();
    let now = sim.now;
    sim.state
        .apply(&Action::Revoke { kid: active }, now, None)
        .unwrap();
    let p = plan(&sim.state, &sim.policy, now);
    let next = sim.state.next_key(Alg::ES256).unwrap().kid.clone();
    assert!(
        p.actions.contains(&Action::Activate {
            kid: next,
            trigger: Trigger::Recovery,
            early: Some(EarlyActivation::Emergency),
            promised: sim.policy.promised(),
        }),
        "{:?}",
        p.actions
    );
    // On an empty store the same shape is a bootstrap.
    let fresh = plan(&Default::default(), &sim.policy, now);
    assert!(fresh.actions.iter().any(|a| matches!(
        a,
        Action::Generate {
            early: Some(EarlyActivation::Bootstrap),
            ..
        }
    )));
}

/// A month of daily rotations run by the daemon's scheduler (the `Driver`)
/// while three commits in ten fail and key generations take up to an hour
/// and fail as often: every rotation still happens, late by at most the
/// retries, and every invariant holds.
#[test]
fn a_month_of_the_scheduler_with_failing_commits_and_generations() {
    let mut p = policy();
    p.schedule = Schedule::Every(secs(24 * H));
    p.publish_ahead = secs(6 * M);
    p.max_token_lifetime = secs(H);
    let mut sim = Sim::new(p, t0());
    let mut driver = Driver::new(None);
    let mut faults = Faults::new(7, 0.3, 0.3, secs(H));
    let until = t0().saturating_add(secs(30 * 24 * H));
    sim.run_driven(&mut driver, until, &mut faults);
    assert_clean(&mut sim);
    let rotations = &sim.scheduled_rotations[&Alg::ES256];
    assert!(
        rotations.len() >= 28,
        "{} rotations in 30 days",
        rotations.len()
    );
    for pair in rotations.windows(2) {
        let gap = pair[1].since(pair[0]);
        assert!(gap >= secs(24 * H), "rotated {gap:?} after the last one");
    }
}

/// A rotation that lost its compare-and-set is done when the winner rotated
/// the same keys out ("already rotated" is success), and judged again when
/// the winner did something else.
#[test]
fn a_rotation_lost_to_another_writer_is_done_only_if_its_keys_were_rotated_out() {
    let mut sim = Sim::new(policy(), t0());
    sim.settle();
    let before = sim.state.clone();
    let active = before.active(Alg::ES256).unwrap().kid.clone();
    let out = [(Alg::ES256, active.clone())];
    // The winner revoked the next key instead: the active key still is.
    let next = before.next_key(Alg::ES256).unwrap().kid.clone();
    sim.revoke(&next).unwrap();
    assert!(!jwksd::lifecycle::rotated_elsewhere(
        &before, &sim.state, &out
    ));
    // The winner rotated it out.
    sim.manual_rotate(Some(Alg::ES256), true).unwrap();
    assert!(jwksd::lifecycle::rotated_elsewhere(
        &before, &sim.state, &out
    ));
    // A key that was not active when the rotation was judged is no proof.
    let other = [(Alg::ES256, next)];
    assert!(!jwksd::lifecycle::rotated_elsewhere(
        &before, &sim.state, &other
    ));
}

//! The key timeline as the operator console draws it: for each algorithm,
//! each key's instants (published, earliest and scheduled activation,
//! activated, deactivated, retire-at, ended), the `publish_ahead` and
//! retention windows, and what a rotation or a revocation would do now.
//!
//! Pure: a function of (state, policy, now), like the planner it asks. The
//! console computes no rule of its own; it draws what this returns
//! (docs/console.md, "The timeline").

use serde::Serialize;

use crate::keys::custody::Custody;
use crate::keys::id::{Alg, Kid};
use crate::lifecycle::planner::{RotateError, Upcoming, earliest_activation, rotate, upcoming};
use crate::lifecycle::policy::Policy;
use crate::lifecycle::state::{EarlyActivation, KeyRecord, KeyState, KeyringState};
use crate::time::{Timestamp, format_duration};

/// Everything the console's timeline shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub now: Timestamp,
    pub version: u64,
    pub policy: PolicyView,
    pub lanes: Vec<Lane>,
    pub upcoming: Vec<Upcoming>,
}

/// The durations that shape the timeline, in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    pub schedule: String,
    pub publish_ahead_seconds: u64,
    pub retention_seconds: u64,
    pub max_token_lifetime_seconds: u64,
    pub clock_skew_seconds: u64,
    pub jwks_cache_max_age_seconds: u64,
    pub signing_key_cache_max_age_seconds: u64,
    pub propagation_seconds: u64,
}

/// One algorithm: its keys (published and in the history) and what a
/// rotation of it would do now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lane {
    pub alg: Alg,
    /// In `algorithms`: rotated and replaced. A lane of keys left from an
    /// algorithm no longer configured only retires.
    pub configured: bool,
    pub keys: Vec<Bar>,
    pub rotate: RotateOutlook,
}

/// One key through its states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bar {
    pub kid: Kid,
    pub alg: Alg,
    pub state: KeyState,
    pub custody: &'static str,
    pub published_at: Timestamp,
    /// A next key: from when it may sign ([`earliest_activation`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earliest_activation: Option<Timestamp>,
    /// A next key: when the schedule makes it active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_activation: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Timestamp>,
    /// An active or next key: when the schedule will deactivate it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projected_deactivation: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<Timestamp>,
    /// An active or next key: when it would retire after the scheduled
    /// deactivation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projected_retire_at: Option<Timestamp>,
    /// When it left the JWK Set (retired or revoked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_activation: Option<EarlyActivation>,
    pub windows: Vec<Window>,
    /// What revoking it now would do; `None` for a key already gone.
    pub revoke: Option<RevokeOutlook>,
}

/// A span drawn to scale behind a key's bar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub kind: WindowKind,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Drawn from the schedule, not yet happened.
    pub projected: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// `jwks.publish_ahead`: published, not yet signing.
    PublishAhead,
    /// The retention: no longer signing, still published for the tokens
    /// it signed.
    Retention,
}

/// What revoking a key now would do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RevokeOutlook {
    /// The tokens that stop verifying were signed from here…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_signed_from: Option<Timestamp>,
    /// …to here (for the active key: until signers let go of their copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_signed_until: Option<Timestamp>,
    /// The last of them would have verified until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_valid_until: Option<Timestamp>,
    /// By then every verifier that honours Cache-Control has dropped the
    /// key: the JWK Set's max-age (or a longer one served earlier), after
    /// every replica knows.
    pub verifiers_stop_by: Timestamp,
    /// The revoked active key's replacement: the next key, promoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successor: Option<Kid>,
    /// The successor signs before `publish_ahead` has passed.
    pub successor_early: bool,
    /// Signers that pulled the revoked active key switch by then (at once
    /// when they follow the event stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signers_switch_by: Option<Timestamp>,
    pub summary: String,
}

/// What rotating an algorithm now would do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RotateOutlook {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<Kid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Kid>,
    /// When the next key may sign without breaking a verifier's cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earliest_safe: Option<Timestamp>,
    pub safe_now: bool,
    /// What forcing it now would break, when it is not safe yet.
    pub force_breaks: Option<ForceBreaks>,
    /// Why a rotation is refused now, forced or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForceBreaks {
    /// Until then some verifiers reject the new key's tokens.
    pub until: Timestamp,
    pub summary: String,
}

/// The timeline of `state` under `policy` at `now`.
pub fn timeline(state: &KeyringState, policy: &Policy, now: Timestamp) -> Timeline {
    let upcoming = upcoming(state, policy, now);
    let mut algs: Vec<Alg> = policy.algorithms.clone();
    for k in state.keys.iter().chain(&state.history) {
        if !algs.contains(&k.alg) {
            algs.push(k.alg);
        }
    }
    let lanes = algs
        .into_iter()
        .map(|alg| Lane {
            alg,
            configured: policy.algorithms.contains(&alg),
            keys: state
                .keys
                .iter()
                .chain(state.history.iter().rev())
                .filter(|k| k.alg == alg)
                .map(|k| bar(state, policy, now, &upcoming, k))
                .collect(),
            rotate: rotate_outlook(state, policy, now, alg),
        })
        .collect();
    Timeline {
        now,
        version: state.version,
        policy: policy_view(policy),
        lanes,
        upcoming,
    }
}

fn secs(d: std::time::Duration) -> u64 {
    d.as_secs()
}

fn policy_view(policy: &Policy) -> PolicyView {
    PolicyView {
        schedule: format!("{:?}", policy.schedule),
        publish_ahead_seconds: secs(policy.publish_ahead),
        retention_seconds: secs(policy.retention()),
        max_token_lifetime_seconds: secs(policy.max_token_lifetime),
        clock_skew_seconds: secs(policy.clock_skew),
        jwks_cache_max_age_seconds: secs(policy.jwks_cache_max_age),
        signing_key_cache_max_age_seconds: secs(policy.signing_key_cache_max_age),
        propagation_seconds: secs(policy.propagation),
    }
}

/// When the schedule deactivates a key that becomes (or became) active at
/// `from`: the scheduled rotation, never before `publish_ahead` has passed
/// for the next key (the planner's `upcoming` says so for the active key).
fn projected(
    k: &KeyRecord,
    policy: &Policy,
    upcoming: &[Upcoming],
) -> (Option<Timestamp>, Option<Timestamp>) {
    // The rotation that activates the next key deactivates the active one.
    let rotation = |hit: &dyn Fn(&Upcoming) -> bool| {
        upcoming
            .iter()
            .find(|u| u.event.is_rotation() && hit(u))
            .map(|u| u.at)
    };
    let scheduled = rotation(&|u| u.kid == k.kid);
    match k.state {
        KeyState::Active => (None, rotation(&|u| u.alg == k.alg)),
        KeyState::Next => (
            scheduled,
            scheduled.and_then(|at| policy.schedule.next_after(at)),
        ),
        _ => (None, None),
    }
}

fn bar(
    state: &KeyringState,
    policy: &Policy,
    now: Timestamp,
    upcoming: &[Upcoming],
    k: &KeyRecord,
) -> Bar {
    let (scheduled_activation, projected_deactivation) = projected(k, policy, upcoming);
    let retention = policy.retention_of(&k.promised);
    let projected_retire_at = projected_deactivation.map(|d| d.saturating_add(retention));
    let earliest = (k.state == KeyState::Next).then(|| earliest_activation(state, k, policy));
    let mut windows = vec![Window {
        kind: WindowKind::PublishAhead,
        from: k.published_at,
        to: earliest.unwrap_or(k.published_at.saturating_add(policy.publish_ahead)),
        projected: false,
    }];
    match (k.deactivated_at, k.retire_at, projected_deactivation) {
        (Some(from), Some(to), _) => windows.push(Window {
            kind: WindowKind::Retention,
            from,
            to: k.ended_at.map_or(to, |e| e.min(to)),
            projected: false,
        }),
        (None, _, Some(from)) => windows.push(Window {
            kind: WindowKind::Retention,
            from,
            to: from.saturating_add(retention),
            projected: true,
        }),
        _ => {}
    }
    Bar {
        kid: k.kid.clone(),
        alg: k.alg,
        state: k.state,
        custody: match k.custody {
            Custody::Software => "software",
            Custody::Pkcs11 { .. } => "pkcs11",
        },
        published_at: k.published_at,
        earliest_activation: earliest,
        scheduled_activation,
        activated_at: k.activated_at,
        projected_deactivation,
        deactivated_at: k.deactivated_at,
        retire_at: k.retire_at,
        projected_retire_at,
        ended_at: k.ended_at,
        early_activation: k.early_activation,
        windows,
        revoke: k
            .state
            .is_published()
            .then(|| revoke_outlook(state, policy, now, k)),
    }
}

/// How long after `now` a verifier that honours Cache-Control may still
/// hold a JWK Set served before a change made at `now`: every replica
/// serves the change within `propagation`, then the JWK Set's max-age (or
/// a longer one served earlier) runs out.
fn verifiers_drop_by(state: &KeyringState, policy: &Policy, now: Timestamp) -> Timestamp {
    let own = now
        .saturating_add(policy.propagation)
        .saturating_add(policy.jwks_cache_max_age);
    state.served.jwks_cached_until().map_or(own, |t| own.max(t))
}

fn revoke_outlook(
    state: &KeyringState,
    policy: &Policy,
    now: Timestamp,
    k: &KeyRecord,
) -> RevokeOutlook {
    let verifiers_stop_by = verifiers_drop_by(state, policy, now);
    // What any replica may have promised about it: the larger of this
    // configuration and the key's record, as its retention counts.
    let held = policy.promised().max(k.promised);
    let tokens_live = held.max_token_lifetime().saturating_add(held.clock_skew());
    // Signers keep a pulled copy this long after they could learn of a
    // change.
    let copies = policy
        .propagation
        .saturating_add(held.signing_key_cache_max_age());
    let stop = verifiers_stop_by.to_rfc3339();
    let configured = policy.algorithms.contains(&k.alg);
    match k.state {
        KeyState::Active => {
            let successor = state
                .next_key(k.alg)
                .filter(|n| configured && n.custody == policy.custody);
            let successor_early =
                successor.is_some_and(|n| now < earliest_activation(state, n, policy));
            let switch_by = now.saturating_add(copies);
            let valid_until = switch_by.saturating_add(tokens_live);
            let from = k.activated_at.unwrap_or(k.published_at);
            let mut summary = format!(
                "Every token {kid} signed since {from} stops verifying: verifiers that honour \
                 Cache-Control drop the key by {stop} (the JWK Set's max-age of {cache}). \
                 Signers holding a copy of it may sign with it until {switch} (at once if they \
                 follow the event stream); those tokens fail too. Without the revocation the \
                 last of them would have verified until {valid}.",
                kid = k.kid,
                from = from.to_rfc3339(),
                cache = format_duration(policy.jwks_cache_max_age),
                switch = switch_by.to_rfc3339(),
                valid = valid_until.to_rfc3339(),
            );
            match successor {
                Some(n) if successor_early => summary.push_str(&format!(
                    " The next key {} is promoted at once, before jwks.publish_ahead has \
                     passed: verifiers whose cached JWK Set predates it reject its tokens until \
                     {}.",
                    n.kid,
                    earliest_activation(state, n, policy).to_rfc3339()
                )),
                Some(n) => summary.push_str(&format!(
                    " The next key {} (published since {}) is promoted at once; every verifier \
                     already has it.",
                    n.kid,
                    n.published_at.to_rfc3339()
                )),
                None if configured => summary.push_str(
                    " There is no next key: a new one is generated and signs at once, before \
                     any verifier can have it.",
                ),
                None => summary.push_str(&format!(
                    " {} is no longer configured: no key replaces it.",
                    k.alg
                )),
            }
            RevokeOutlook {
                tokens_signed_from: Some(from),
                tokens_signed_until: Some(switch_by),
                tokens_valid_until: Some(valid_until),
                verifiers_stop_by,
                successor: successor.map(|n| n.kid.clone()),
                successor_early: successor_early || (configured && successor.is_none()),
                signers_switch_by: Some(switch_by),
                summary,
            }
        }
        KeyState::Retiring => {
            let from = k.activated_at.unwrap_or(k.published_at);
            // Signers holding a copy went on signing after the
            // deactivation, until their copy's max-age ran out.
            let until = k
                .deactivated_at
                .map_or(now, |d| d.saturating_add(copies))
                .min(now);
            let valid = k
                .retire_at
                .unwrap_or(until.saturating_add(tokens_live))
                .max(now);
            RevokeOutlook {
                tokens_signed_from: Some(from),
                tokens_signed_until: Some(until),
                tokens_valid_until: Some(valid),
                verifiers_stop_by,
                successor: None,
                successor_early: false,
                signers_switch_by: None,
                summary: format!(
                    "Tokens {kid} signed from {from} to {until} stop verifying before their \
                     expiry (the last would have verified until {valid}): verifiers that honour \
                     Cache-Control drop the key by {stop}. Nothing signs with it any more; the \
                     active key is not affected.",
                    kid = k.kid,
                    from = from.to_rfc3339(),
                    until = until.to_rfc3339(),
                    valid = valid.to_rfc3339(),
                ),
            }
        }
        _ => RevokeOutlook {
            tokens_signed_from: None,
            tokens_signed_until: None,
            tokens_valid_until: None,
            verifiers_stop_by,
            successor: None,
            successor_early: false,
            signers_switch_by: None,
            summary: format!(
                "{} has never signed: no token stops verifying. It leaves the JWK Set and a new \
                 next key is generated, which must be published for jwks.publish_ahead ({}) \
                 before a rotation is safe again.",
                k.kid,
                format_duration(policy.publish_ahead)
            ),
        },
    }
}

fn rotate_outlook(
    state: &KeyringState,
    policy: &Policy,
    now: Timestamp,
    alg: Alg,
) -> RotateOutlook {
    let active = state.active(alg);
    // Only a next key made where new keys go may become active (the
    // planner's `next_here`); another is retired and made again.
    let next = state.next_key(alg).filter(|n| n.custody == policy.custody);
    let earliest_safe = next.map(|n| earliest_activation(state, n, policy));
    let (safe_now, force_breaks, refusal) = match rotate(state, policy, now, Some(alg), false) {
        Ok(_) => (true, None, None),
        Err(RotateError::TooEarly { earliest, .. }) => {
            let summary = format!(
                "{next} would sign before every verifier can have it: a verifier that fetched \
                 the JWK Set before {next} was published ({published}) keeps a copy without it \
                 for up to its max-age, and rejects tokens signed by {next} until {earliest}.",
                next = next.map_or("the next key".into(), |n| n.kid.to_string()),
                published = next.map_or(String::new(), |n| n.published_at.to_rfc3339()),
                earliest = earliest.to_rfc3339(),
            );
            (
                false,
                Some(ForceBreaks {
                    until: earliest,
                    summary,
                }),
                None,
            )
        }
        Err(e) => (false, None, Some(e.to_string())),
    };
    let summary = match (active, next, &refusal) {
        (_, _, Some(why)) => format!("A rotation of {alg} is refused now: {why}."),
        (Some(a), Some(n), None) => format!(
            "{a} stops signing and stays published until about {retire} for the tokens it \
             signed; {n} signs from then on; a new next key is generated.{when}",
            a = a.kid,
            n = n.kid,
            retire = now
                .saturating_add(policy.retention_of(&a.promised))
                .to_rfc3339(),
            when = match earliest_safe {
                Some(t) if !safe_now => format!(" It is safe from {}.", t.to_rfc3339()),
                _ => " It is safe now.".into(),
            },
        ),
        _ => format!("{alg} has no active and next key to rotate."),
    };
    RotateOutlook {
        active: active.map(|k| k.kid.clone()),
        next: next.map(|k| k.kid.clone()),
        earliest_safe,
        safe_now,
        force_breaks,
        refusal,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::testing::{fake_key, policy};
    use crate::lifecycle::{Action, plan};

    fn apply_all(state: &mut KeyringState, actions: &[Action], n: &mut u32, now: Timestamp) {
        for a in actions {
            let new = a.is_generate().then(|| {
                *n += 1;
                fake_key(*n)
            });
            state.apply(a, now, new).expect("applies");
        }
    }

    /// Runs the planner from `start` to `until` in steps of 100 ms, with
    /// keys generated at once.
    fn run(p: &Policy, start: i64, until: i64) -> KeyringState {
        let mut state = KeyringState::default();
        let mut n = 0;
        let mut t = start;
        while t <= until {
            let now = Timestamp::from_millis(t);
            let actions = plan(&state, p, now).actions;
            if !actions.is_empty() {
                apply_all(&mut state, &actions, &mut n, now);
                continue;
            }
            t += 100;
        }
        state
    }

    #[test]
    fn every_key_has_its_instants_in_order_and_its_windows_to_scale() {
        let p = policy(3);
        let state = run(&p, 0, 20_000);
        let now = Timestamp::from_millis(20_000);
        let t = timeline(&state, &p, now);
        assert_eq!(t.lanes.len(), 1);
        let lane = &t.lanes[0];
        assert!(lane.keys.len() >= 4, "{}", lane.keys.len());
        for b in &lane.keys {
            let pa = &b.windows[0];
            assert_eq!(pa.kind, WindowKind::PublishAhead);
            assert_eq!(pa.from, b.published_at);
            if let Some(a) = b.activated_at {
                assert!(b.published_at <= a);
                if b.early_activation.is_none() {
                    // Never before publish_ahead has passed.
                    assert!(pa.to <= a, "{b:?}");
                }
            }
            if let (Some(a), Some(d)) = (b.activated_at, b.deactivated_at) {
                assert!(a <= d);
                let r = b.retire_at.expect("a deactivated key has a retire-at");
                assert_eq!(r.since(d), p.retention_of(&Default::default()));
                let w = b.windows.iter().find(|w| w.kind == WindowKind::Retention);
                assert!(w.is_some_and(|w| w.from == d && !w.projected), "{b:?}");
            }
            assert_eq!(b.revoke.is_some(), b.state.is_published());
        }
        let active = lane
            .keys
            .iter()
            .find(|b| b.state == KeyState::Active)
            .expect("an active key");
        let next = lane
            .keys
            .iter()
            .find(|b| b.state == KeyState::Next)
            .expect("a next key");
        // The rotation that activates the next key deactivates the active one.
        assert_eq!(active.projected_deactivation, next.scheduled_activation);
        assert!(next.scheduled_activation >= next.earliest_activation);
        let projected = active.windows.iter().find(|w| w.projected).unwrap();
        assert_eq!(projected.to.since(projected.from), p.retention());
        assert_eq!(t.policy.publish_ahead_seconds, 2);
        assert_eq!(t.policy.retention_seconds, p.retention().as_secs());
    }

    #[test]
    fn a_rotation_before_publish_ahead_says_what_force_breaks_and_until_when() {
        let p = policy(3600);
        let state = run(&p, 0, 100);
        let now = Timestamp::from_millis(500);
        let t = timeline(&state, &p, now);
        let r = &t.lanes[0].rotate;
        assert!(!r.safe_now);
        let next = t.lanes[0]
            .keys
            .iter()
            .find(|b| b.state == KeyState::Next)
            .unwrap();
        let breaks = r
            .force_breaks
            .as_ref()
            .expect("forcing now breaks something");
        assert_eq!(Some(breaks.until), next.earliest_activation);
        assert_eq!(r.earliest_safe, next.earliest_activation);
        assert!(breaks.summary.contains(&next.kid.to_string()));
        // Once publish_ahead has passed, it is safe and breaks nothing.
        let later = timeline(&state, &p, Timestamp::from_millis(10_000));
        assert!(later.lanes[0].rotate.safe_now);
        assert!(later.lanes[0].rotate.force_breaks.is_none());
    }

    #[test]
    fn revoking_the_active_key_names_its_tokens_the_successor_and_the_cache_delay() {
        let p = policy(3600);
        let state = run(&p, 0, 100);
        let now = Timestamp::from_millis(1_000);
        let t = timeline(&state, &p, now);
        let active = t.lanes[0]
            .keys
            .iter()
            .find(|b| b.state == KeyState::Active)
            .unwrap();
        let next = t.lanes[0]
            .keys
            .iter()
            .find(|b| b.state == KeyState::Next)
            .unwrap();
        let r = active.revoke.as_ref().unwrap();
        assert_eq!(r.successor.as_ref(), Some(&next.kid));
        // Promoted before publish_ahead has passed.
        assert!(r.successor_early);
        assert_eq!(
            r.verifiers_stop_by,
            now.saturating_add(p.jwks_cache_max_age)
        );
        assert_eq!(r.tokens_signed_from, active.activated_at);
        assert_eq!(
            r.tokens_valid_until,
            Some(now.saturating_add(std::time::Duration::from_secs(1 + 4 + 1)))
        );
        // The next key never signed: no token stops verifying.
        let n = next.revoke.as_ref().unwrap();
        assert!(n.tokens_signed_from.is_none() && n.successor.is_none());
        assert!(n.summary.contains("never signed"));
    }

    #[test]
    fn revoking_a_retiring_key_counts_what_signers_signed_with_their_copies() {
        let mut p = policy(3);
        p.propagation = std::time::Duration::from_secs(2);
        let state = run(&p, 0, 10_000);
        let now = Timestamp::from_millis(10_000);
        let t = timeline(&state, &p, now);
        let retiring: Vec<&Bar> = t.lanes[0]
            .keys
            .iter()
            .filter(|b| b.state == KeyState::Retiring)
            .collect();
        assert!(!retiring.is_empty());
        for b in retiring {
            let r = b.revoke.as_ref().unwrap();
            let d = b.deactivated_at.unwrap();
            // Copies pulled before the deactivation signed on for the
            // propagation and their max-age (2 s + 1 s), never past now.
            let copies = d.saturating_add(std::time::Duration::from_secs(3)).min(now);
            assert_eq!(r.tokens_signed_until, Some(copies), "{b:?}");
            assert!(r.tokens_signed_until.unwrap() > d || d == now);
            assert_eq!(r.tokens_valid_until, b.retire_at.map(|t| t.max(now)));
        }
    }

    #[test]
    fn a_lane_of_an_algorithm_no_longer_configured_promises_no_successor() {
        let p = policy(3600);
        let state = run(&p, 0, 100);
        let mut removed = p.clone();
        removed.algorithms = vec![crate::keys::id::Alg::ES384];
        let t = timeline(&state, &removed, Timestamp::from_millis(5_000));
        let lane = t
            .lanes
            .iter()
            .find(|l| l.alg == crate::keys::id::Alg::ES256)
            .unwrap();
        assert!(!lane.configured);
        let active = lane
            .keys
            .iter()
            .find(|b| b.state == KeyState::Active)
            .unwrap();
        let r = active.revoke.as_ref().unwrap();
        assert!(r.successor.is_none() && !r.successor_early, "{r:?}");
        assert!(r.summary.contains("no longer configured"), "{}", r.summary);
        assert!(lane.rotate.refusal.is_some());
    }

    #[test]
    fn ended_keys_have_no_outlook_and_their_retention_ends_when_they_left() {
        let p = policy(3);
        let mut state = run(&p, 0, 10_000);
        let now = Timestamp::from_millis(10_000);
        let retiring = state
            .keys
            .iter()
            .find(|k| k.state == KeyState::Retiring)
            .unwrap()
            .kid
            .clone();
        let actions = vec![Action::Revoke {
            kid: retiring.clone(),
        }];
        apply_all(&mut state, &actions, &mut 1000, now);
        let t = timeline(&state, &p, now);
        let b = t.lanes[0].keys.iter().find(|b| b.kid == retiring).unwrap();
        assert_eq!(b.state, KeyState::Revoked);
        assert!(b.revoke.is_none());
        let w = b
            .windows
            .iter()
            .find(|w| w.kind == WindowKind::Retention)
            .unwrap();
        assert_eq!(Some(w.to), b.ended_at);
    }
}

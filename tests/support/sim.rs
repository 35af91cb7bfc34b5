//! A simulated shell around the pure core: it carries out actions with
//! fake keys, advances simulated time, restarts, and records what was
//! published when, so that tests can check the lifecycle invariants. It
//! runs the planner directly ([`Sim::advance`]) or through the daemon's own
//! scheduler, the [`Driver`], with injected faults ([`Sim::run_driven`]).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jwksd::keys::{Alg, KeyKind, Kid, PublicKey};
use jwksd::lifecycle::{
    Action, Answer, Command, CommandError, CommandId, Committed, Driver, EarlyActivation, KeyState,
    KeyringState, NewKey, Policy, RevokeError, RotateError, Synced, Work, plan, revoke, rotate,
    still_wanted,
};
use jwksd::time::Timestamp;

#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub alg: Option<Alg>,
    pub published_from: Option<Timestamp>,
    pub published_until: Option<Timestamp>,
    pub active_from: Option<Timestamp>,
    pub active_until: Option<Timestamp>,
    pub revoked: bool,
    pub early: Option<EarlyActivation>,
    /// What the simulation did when the key was activated early.
    pub early_cause: Option<&'static str>,
    pub activations: u32,
    pub deactivations: u32,
    /// The configuration it was activated under (index into the epochs).
    pub activated_under: usize,
}

/// One run of the daemon under one configuration: what it served, from
/// when until when (`None`: still running).
#[derive(Clone, Debug)]
pub struct Epoch {
    pub from: Timestamp,
    pub until: Option<Timestamp>,
    pub policy: Policy,
}

pub struct Sim {
    pub state: KeyringState,
    pub policy: Policy,
    /// Every configuration the daemon ran under, oldest first: the
    /// invariants are checked against what each actually served.
    pub epochs: Vec<Epoch>,
    pub now: Timestamp,
    counter: u64,
    pub keys: BTreeMap<Kid, Observed>,
    /// Kids that left the JWKS; they must never come back.
    pub gone: HashSet<Kid>,
    /// Rotations per algorithm carried out by the schedule, with their times.
    pub scheduled_rotations: HashMap<Alg, Vec<Timestamp>>,
    pub max_published: HashMap<Alg, usize>,
    pub violations: Vec<String>,
    cause: &'static str,
    /// Algorithms that had neither an active nor a next key before the last
    /// execution: the only ones that may bootstrap.
    empty_algs: HashSet<Alg>,
    /// Kids seen published and not yet gone.
    live: HashSet<Kid>,
    /// Algorithms whose active key was revoked and that have had no active
    /// key since: their next active key may be an emergency one whatever
    /// commits it (a retried generation, a later promotion).
    orphaned: HashSet<Alg>,
    /// Operators' commands fed to the driver, and the answers it gave.
    pub commands: Vec<(CommandId, Command, Timestamp)>,
    pub answers: Vec<(CommandId, Result<Answer, CommandError>, Timestamp)>,
}

impl Sim {
    pub fn new(policy: Policy, start: Timestamp) -> Sim {
        Sim {
            state: KeyringState::default(),
            epochs: vec![Epoch {
                from: start,
                until: None,
                policy: policy.clone(),
            }],
            policy,
            now: start,
            counter: 0,
            keys: BTreeMap::new(),
            gone: HashSet::new(),
            scheduled_rotations: HashMap::new(),
            max_published: HashMap::new(),
            violations: Vec::new(),
            cause: "schedule",
            empty_algs: HashSet::new(),
            live: HashSet::new(),
            orphaned: HashSet::new(),
            commands: Vec::new(),
            answers: Vec::new(),
        }
    }

    fn fake_key(&mut self, alg: Alg) -> NewKey {
        self.counter += 1;
        let public = match alg.key_kind() {
            KeyKind::Ec(curve) => PublicKey::Ec {
                crv: curve.name().into(),
                x: format!("x{}", self.counter),
                y: "y".into(),
            },
            KeyKind::Rsa => PublicKey::Rsa {
                n: format!("n{}", self.counter),
                e: "AQAB".into(),
            },
            KeyKind::Ed25519 => PublicKey::Okp {
                crv: "Ed25519".into(),
                x: format!("x{}", self.counter),
            },
        };
        NewKey {
            kid: public.thumbprint(),
            alg,
            public,
            // Made where the policy says new keys go, as the shell does.
            custody: self.policy.custody.clone(),
        }
    }

    /// Carries actions out the way the daemon does: transitions in one
    /// commit, then the generated keys in another.
    pub fn execute(&mut self, actions: &[Action]) {
        self.empty_algs = self
            .policy
            .algorithms
            .iter()
            .copied()
            .filter(|a| self.state.active(*a).is_none() && self.state.next_key(*a).is_none())
            .collect();
        let (gens, transitions): (Vec<&Action>, Vec<&Action>) =
            actions.iter().partition(|a| a.is_generate());
        for batch in [transitions, gens] {
            if batch.is_empty() {
                continue;
            }
            for a in batch {
                let new = match a {
                    Action::Generate { alg, .. } => Some(self.fake_key(*alg)),
                    _ => None,
                };
                if let Action::Activate { kid, trigger, .. } = a
                    && *trigger == jwksd::lifecycle::Trigger::Schedule
                {
                    let alg = self.state.find(kid).map(|k| k.alg).unwrap();
                    self.scheduled_rotations
                        .entry(alg)
                        .or_default()
                        .push(self.now);
                }
                if let Err(e) = self.state.apply(a, self.now, new) {
                    self.violations
                        .push(format!("{:?}: apply {a:?} failed: {e}", self.now));
                }
            }
            self.state.version += 1;
            self.observe();
        }
    }

    /// Records what is published and active now, and checks the invariants
    /// that must hold at every instant.
    fn observe(&mut self) {
        let now = self.now;
        let published: HashSet<Kid> = self.state.published().map(|k| k.kid.clone()).collect();
        let mut per_alg: HashMap<Alg, usize> = HashMap::new();
        for k in self.state.published() {
            *per_alg.entry(k.alg).or_default() += 1;
            if self.gone.contains(&k.kid) {
                self.violations
                    .push(format!("{now:?}: {} published again after it left", k.kid));
            }
            self.live.insert(k.kid.clone());
            let o = self.keys.entry(k.kid.clone()).or_default();
            o.alg = Some(k.alg);
            o.published_from.get_or_insert(now);
            if k.state == KeyState::Active && o.active_from.is_none() {
                o.active_from = Some(now);
                o.activated_under = self.epochs.len() - 1;
                o.activations += 1;
                o.early = k.early_activation;
                if k.early_activation.is_some() {
                    o.early_cause = Some(self.cause);
                    let legit = match k.early_activation {
                        Some(EarlyActivation::Bootstrap) => self.empty_algs.contains(&k.alg),
                        Some(EarlyActivation::Forced) => self.cause == "force",
                        Some(EarlyActivation::Emergency) => {
                            self.cause == "revoke" || self.orphaned.contains(&k.alg)
                        }
                        None => true,
                    };
                    if !legit {
                        self.violations.push(format!(
                            "{now:?}: {} activated early as {:?} while the simulation did {}",
                            k.kid, k.early_activation, self.cause
                        ));
                    }
                }
            }
            if k.state == KeyState::Retiring && o.active_until.is_none() && o.active_from.is_some()
            {
                o.active_until = Some(now);
                o.deactivations += 1;
            }
        }
        for (alg, n) in per_alg {
            let m = self.max_published.entry(alg).or_default();
            *m = (*m).max(n);
        }
        let left: Vec<Kid> = self
            .live
            .iter()
            .filter(|k| !published.contains(*k))
            .cloned()
            .collect();
        for kid in left {
            self.live.remove(&kid);
            let o = self.keys.get_mut(&kid).unwrap();
            {
                o.published_until = Some(now);
                if o.active_from.is_some() && o.active_until.is_none() {
                    o.active_until = Some(now);
                    o.deactivations += 1;
                }
                o.revoked = self
                    .state
                    .find(&kid)
                    .is_some_and(|k| k.state == KeyState::Revoked);
                if o.revoked && o.active_until == Some(now) {
                    let alg = o.alg.unwrap();
                    if self.state.active(alg).is_none() {
                        self.orphaned.insert(alg);
                    }
                }
                self.gone.insert(kid);
            }
        }
        for &alg in &self.policy.algorithms {
            if self.state.active(alg).is_some() {
                self.orphaned.remove(&alg);
            }
            let active = self.state.in_state(alg, KeyState::Active).count();
            if active > 1 {
                self.violations
                    .push(format!("{now:?}: {alg} has {active} active keys"));
            }
        }
    }

    /// Runs the planner to a fixed point at the current time.
    pub fn settle(&mut self) {
        for _ in 0..16 {
            let p = plan(&self.state, &self.policy, self.now);
            if p.actions.is_empty() {
                self.check_quiescent();
                return;
            }
            self.execute(&p.actions);
            self.cause = "schedule";
        }
        self.violations
            .push(format!("{:?}: planner did not settle", self.now));
    }

    fn check_quiescent(&mut self) {
        for &alg in &self.policy.algorithms {
            if self.state.active(alg).is_some() {
                self.orphaned.remove(&alg);
            }
            let active = self.state.in_state(alg, KeyState::Active).count();
            let next = self.state.in_state(alg, KeyState::Next).count();
            if active != 1 || next != 1 {
                self.violations.push(format!(
                    "{:?}: {alg} settled with {active} active and {next} next keys",
                    self.now
                ));
            }
        }
    }

    /// The daemon runs from now until `until`, waking when the planner says.
    pub fn run_until(&mut self, until: Timestamp) {
        self.settle();
        let mut guard = 0u32;
        loop {
            guard += 1;
            if guard > 100_000 {
                self.violations.push("run_until did not finish".into());
                return;
            }
            let p = plan(&self.state, &self.policy, self.now);
            if !p.actions.is_empty() {
                self.execute(&p.actions);
                continue;
            }
            match p.wake_at {
                Some(w) if w <= until => {
                    if w <= self.now {
                        self.violations
                            .push(format!("{:?}: wake-up {w:?} not in the future", self.now));
                        return;
                    }
                    self.now = w;
                }
                _ => {
                    self.now = until;
                    self.settle();
                    return;
                }
            }
        }
    }

    pub fn advance(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        self.run_until(until);
    }

    /// The daemon is down for `d`, then starts from its saved state.
    pub fn downtime(&mut self, d: Duration) {
        let policy = self.policy.clone();
        self.reconfigure(policy, d);
    }

    /// The daemon stops, is down for `d`, and starts again under `policy`.
    pub fn reconfigure(&mut self, policy: Policy, d: Duration) {
        self.restart();
        if let Some(e) = self.epochs.last_mut() {
            e.until = Some(self.now);
        }
        self.now = self.now.saturating_add(d);
        self.policy = policy.clone();
        self.epochs.push(Epoch {
            from: self.now,
            until: None,
            policy,
        });
        let before: HashMap<Alg, usize> = self
            .scheduled_rotations
            .iter()
            .map(|(a, v)| (*a, v.len()))
            .collect();
        self.settle();
        for (alg, v) in &self.scheduled_rotations {
            let n = v.len() - before.get(alg).copied().unwrap_or(0);
            if n > 1 {
                self.violations.push(format!(
                    "{:?}: {alg} rotated {n} times after downtime",
                    self.now
                ));
            }
        }
    }

    /// The daemon's own scheduler (the same [`Driver`]) runs from now until
    /// `until`, with the faults `faults` injects: commits that fail, key
    /// generations that take time and fail. Generations still in flight at
    /// `until` finish first (a stop would discard them; a restart does).
    pub fn run_driven(&mut self, driver: &mut Driver, until: Timestamp, faults: &mut Faults) {
        let mut in_flight: Vec<(Timestamp, Vec<Action>, bool)> = Vec::new();
        for _ in 0..200_000 {
            while let Some(i) = in_flight.iter().position(|g| g.0 <= self.now) {
                let (_, batch, ok) = in_flight.swap_remove(i);
                if ok {
                    let wanted: Vec<Action> = batch
                        .into_iter()
                        .filter(|a| still_wanted(&self.state, a))
                        .collect();
                    if !wanted.is_empty() {
                        self.execute(&wanted);
                    }
                }
                driver.generated(ok, self.now);
            }
            let mut done = 0;
            while let Some(work) = driver.poll(&self.state, &self.policy, self.now) {
                done += 1;
                if done > 64 {
                    self.violations
                        .push(format!("{:?}: the driver did not settle", self.now));
                    return;
                }
                match work {
                    Work::Sync => driver.synced(Synced::Current),
                    Work::Commit(actions) => {
                        if faults.fail(faults.commit) {
                            driver.committed(Committed::Failed, self.now);
                        } else {
                            self.execute(&actions);
                            driver.committed(Committed::Done, self.now);
                        }
                    }
                    Work::CommitCommand(actions) => {
                        if faults.fail(faults.commit) {
                            driver.command_committed(
                                Committed::Failed,
                                Some("injected commit failure".into()),
                            );
                        } else {
                            self.cause = cause_of(&actions);
                            self.execute(&actions);
                            self.cause = "schedule";
                            driver.command_committed(Committed::Done, None);
                        }
                    }
                    Work::Generate(batches) => {
                        for b in batches {
                            let takes = faults.generation_time();
                            let ok = !faults.fail(faults.generation);
                            in_flight.push((self.now.saturating_add(takes), b, ok));
                        }
                    }
                }
            }
            while let Some((id, answer)) = driver.poll_answer() {
                self.answers.push((id, answer, self.now));
            }
            let next = driver
                .poll_timeout(&self.state, &self.policy, self.now)
                .into_iter()
                .chain(in_flight.iter().map(|g| g.0))
                .min();
            match next {
                Some(t) if t <= until || !in_flight.is_empty() => {
                    // A generation that took no time finishes at once (the
                    // loop's top takes it in); the driver itself must not
                    // ask to be woken now with nothing to do.
                    if t <= self.now && in_flight.iter().any(|g| g.0 <= self.now) {
                        continue;
                    }
                    if t <= self.now {
                        self.violations.push(format!(
                            "{:?}: woken at {t:?}, not in the future, with nothing to do",
                            self.now
                        ));
                        return;
                    }
                    self.now = t;
                }
                _ => {
                    self.now = self.now.max(until);
                    return;
                }
            }
        }
        self.violations.push("run_driven did not finish".into());
    }

    /// An operator's command reaches the driver now; run the driver to see
    /// it carried out and answered (in [`Sim::answers`]).
    pub fn command(&mut self, driver: &mut Driver, command: Command) -> CommandId {
        let id = CommandId(self.commands.len() as u64);
        self.commands.push((id, command.clone(), self.now));
        driver.command(id, command, self.now);
        id
    }

    /// The answer the driver gave command `id`, if any yet.
    pub fn answer(&self, id: CommandId) -> Option<&Result<Answer, CommandError>> {
        self.answers.iter().find(|a| a.0 == id).map(|a| &a.1)
    }

    /// Saves the state as the store would and loads it back.
    pub fn restart(&mut self) {
        let saved = serde_json::to_string(&self.state).unwrap();
        let loaded: KeyringState = serde_json::from_str(&saved).unwrap();
        if loaded != self.state {
            self.violations
                .push("state changed across save and load".into());
        }
        self.state = loaded;
    }

    pub fn manual_rotate(&mut self, alg: Option<Alg>, force: bool) -> Result<(), RotateError> {
        self.settle();
        let actions = rotate(&self.state, &self.policy, self.now, alg, force)?;
        self.cause = if force { "force" } else { "manual" };
        self.execute(&actions);
        self.cause = "schedule";
        self.settle();
        Ok(())
    }

    pub fn revoke(&mut self, kid: &Kid) -> Result<(), RevokeError> {
        self.settle();
        let actions = revoke(&self.state, &self.policy, self.now, kid)?;
        self.cause = "revoke";
        self.execute(&actions);
        self.cause = "schedule";
        self.settle();
        Ok(())
    }

    /// Checks the invariants over the whole observed history, against the
    /// values each configuration actually served while it ran.
    pub fn check_history(&mut self) {
        let mut found = Vec::new();
        for (kid, o) in &self.keys {
            if o.activations > 1 || o.deactivations > 1 {
                found.push(format!(
                    "{kid}: activated {} and deactivated {} times",
                    o.activations, o.deactivations
                ));
            }
            let (Some(from), Some(active_from)) = (o.published_from, o.active_from) else {
                continue;
            };
            // I2: published publish_ahead before it signs, unless recorded.
            let ahead = self.epochs[o.activated_under].policy.publish_ahead;
            if o.early.is_none() && active_from.since(from) < ahead {
                found.push(format!(
                    "{kid}: signed {:?} after it was published, publish_ahead is {ahead:?}",
                    active_from.since(from),
                ));
            }
            if o.revoked {
                continue;
            }
            // I3 (lower bound): every JWK Set served before the kid was
            // published, under whichever max-age it carried, has expired
            // from verifiers' caches when it first signs.
            if o.early.is_none() {
                for e in self.epochs.iter().filter(|e| e.from < from) {
                    let last = e.until.map_or(from, |u| u.min(from));
                    let expires = last.saturating_add(e.policy.jwks_cache_max_age);
                    if active_from < expires {
                        found.push(format!(
                            "{kid}: first signature at {active_from:?}, but a JWK Set without it \
                             served at {last:?} with max-age {:?} is cached until {expires:?}",
                            e.policy.jwks_cache_max_age
                        ));
                    }
                }
            }
            // I3 (upper bound): published until the last token it could have
            // signed has expired: signers cache it for the max-age it was
            // served with, and sign tokens of the lifetime then allowed.
            if let Some(until) = o.published_until {
                let active_until = o.active_until.unwrap_or(until);
                for e in &self.epochs[o.activated_under..] {
                    let served_until = e.until.map_or(active_until, |u| u.min(active_until));
                    if e.from >= active_until || served_until < active_from {
                        continue;
                    }
                    let p = &e.policy;
                    let needed = served_until
                        .saturating_add(p.signing_key_cache_max_age)
                        .saturating_add(p.max_token_lifetime)
                        .saturating_add(p.clock_skew);
                    if until < needed {
                        found.push(format!(
                            "{kid}: removed at {until:?}, tokens it signed under a configuration \
                             served until {served_until:?} live until {needed:?}"
                        ));
                    }
                }
            }
        }
        self.violations.extend(found);
        // The bound on published keys, for the worst mix of configurations:
        // the longest retention over the shortest rotation period.
        let mut retention = Duration::ZERO;
        let mut period = Duration::MAX;
        for e in &self.epochs {
            let p = &e.policy;
            retention = retention.max(p.retention());
            period = period.min(
                p.schedule
                    .min_period(self.now)
                    .unwrap_or(Duration::MAX)
                    .max(p.publish_ahead)
                    .max(Duration::from_millis(1)),
            );
        }
        let bound = (retention.as_millis() / period.as_millis()) as usize
            + 4
            + jwksd::lifecycle::policy::MANUAL_RETIRING_LIMIT;
        for (alg, n) in &self.max_published {
            if *n > bound {
                self.violations.push(format!(
                    "{alg}: {n} keys published at once, bound is {bound}"
                ));
            }
        }
        if self.state.history.len() > jwksd::lifecycle::state::HISTORY_LIMIT {
            self.violations.push("history unbounded".into());
        }
        // I5: every key ever published is accounted for.
        for kid in self.keys.keys() {
            let live = self.state.keys.iter().any(|k| &k.kid == kid);
            if !live && !self.gone.contains(kid) {
                self.violations.push(format!("{kid}: lost"));
            }
        }
    }
}

/// Faults injected into [`Sim::run_driven`], from a seeded generator so
/// that a failing case replays.
pub struct Faults {
    /// Probability that a commit fails.
    pub commit: f64,
    /// Probability that a key generation fails.
    pub generation: f64,
    /// The longest a key generation takes.
    pub generation_max: Duration,
    state: u64,
}

impl Faults {
    pub fn new(seed: u64, commit: f64, generation: f64, generation_max: Duration) -> Faults {
        Faults {
            commit,
            generation,
            generation_max,
            state: seed | 1,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64: enough to spread faults; no cryptography here.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn fail(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }

    fn generation_time(&mut self) -> Duration {
        let max = self.generation_max.as_millis().max(1) as u64;
        Duration::from_millis(self.next() % max)
    }
}

/// What an operator's command did, by the triggers of what it commits
/// (early activations are checked against it).
fn cause_of(actions: &[Action]) -> &'static str {
    use jwksd::lifecycle::Trigger;
    let triggers = actions.iter().filter_map(|a| match a {
        Action::Activate { trigger, .. } => Some(*trigger),
        Action::Revoke { .. } => Some(Trigger::Revoke),
        _ => None,
    });
    let mut cause = "schedule";
    for t in triggers {
        cause = match t {
            Trigger::Revoke => return "revoke",
            Trigger::Forced => "force",
            Trigger::Manual if cause == "schedule" => "manual",
            _ => cause,
        };
    }
    cause
}

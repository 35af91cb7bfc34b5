//! Crash safety: the real daemon, rotating every second, is killed with
//! SIGKILL at random instants (during start-up generation, rotations and
//! writes) and restarted, at least 100 times. After every kill the store
//! must load and be consistent, nothing published may be lost, and the
//! audit log must hold exactly the transitions the state does.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use jwksd::client::Client;
use jwksd::lifecycle::state::HISTORY_LIMIT;
use jwksd::lifecycle::{KeyState, Trigger};
use jwksd::store::KeyStore;
use jwksd::store::audit_log;
use jwksd::store::fs::FsStore;
use support::crash::{Rng, env_count, observe_jwks, spawn};
use support::daemon::write_config;

#[derive(Default)]
struct Stats {
    kills: u32,
    during_startup: u32,
    with_leftovers: u32,
    repaired_notes: u32,
    pruned: u32,
    audit_records: usize,
    /// Loads that dropped audit records of a commit the kill cut short.
    audit_tails: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_sigkill_at_random_instants() {
    let kills = env_count("JWKSD_CRASH_KILLS", 100);
    let (mut rng, seed) = Rng::from_env("JWKSD_CRASH_SEED", "crash test");
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let config = write_config(
        tmp.path(),
        "rotation:\n  every: 1s\ntokens:\n  max_lifetime: 2s\n  clock_skew: 0s\njwks:\n  cache_max_age: 500ms\nsigning_key:\n  cache_max_age: 0s\n",
    );
    let client = Client::new(Duration::from_secs(5));
    let mut observed: BTreeMap<String, Instant> = BTreeMap::new();
    let mut stats = Stats::default();

    for cycle in 0..kills {
        let mut p = spawn(&config);
        if rng.below(4) == 0 {
            // Kill during start-up: loading, first generation, first commit.
            std::thread::sleep(Duration::from_millis(rng.below(400)));
            stats.during_startup += 1;
        } else {
            let (public, admin) = p
                .addrs
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("cycle {cycle} (seed {seed}): daemon did not start"));
            let signer = std::fs::read_to_string(keys.join("signer.token"))
                .unwrap()
                .trim()
                .to_owned();
            // After every restart: ready, and both APIs answer.
            wait_ready(&client, &public, &format!("cycle {cycle} (seed {seed})")).await;
            let a = client
                .get(&format!("{admin}/v1/keys/active?alg=RS256"), Some(&signer))
                .await
                .unwrap();
            assert_eq!(a.status, 200, "cycle {cycle} (seed {seed}): admin API");
            observe_jwks(
                &client,
                &public,
                &mut observed,
                &mut rng,
                &format!("cycle {cycle} (seed {seed})"),
            )
            .await;
        }
        p.kill();
        stats.kills += 1;

        // What the kill left behind.
        if keys.exists() {
            let leftovers = std::fs::read_dir(&keys).unwrap().any(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.ends_with(".tmp") || n.ends_with(".pending")
            });
            stats.with_leftovers += leftovers as u32;
        }
        check_store(&keys, &observed, cycle, seed, &mut stats);
    }

    // A last start: ready, serving, and a clean stop.
    let mut p = spawn(&config);
    let (public, _) = p.addrs.recv_timeout(Duration::from_secs(30)).unwrap();
    wait_ready(&client, &public, "the last restart").await;
    Command::new("kill")
        .arg("-TERM")
        .arg(p.child.id().to_string())
        .status()
        .unwrap();
    assert_eq!(p.child.wait().unwrap().code(), Some(0));

    eprintln!(
        "crash test: {} kills survived ({} during start-up, {} left an interrupted write or \
         generation behind, {} loads repaired something); {} kids observed, {} pruned from the \
         bounded history; {} audit records, each matching its key's transitions ({} loads \
         dropped records of a commit the kill cut short)",
        stats.kills,
        stats.during_startup,
        stats.with_leftovers,
        stats.repaired_notes,
        observed.len(),
        stats.pruned,
        stats.audit_records,
        stats.audit_tails
    );
    assert!(stats.kills >= kills);
}

async fn wait_ready(client: &Client, public: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get(&format!("{public}/readyz"), None).await;
        if r.is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loads the store as the daemon would and checks it.
fn check_store(
    keys: &std::path::Path,
    observed: &BTreeMap<String, Instant>,
    cycle: u32,
    seed: u64,
    stats: &mut Stats,
) {
    let ctx = format!("cycle {cycle} (seed {seed})");
    let store = FsStore::open(keys, None).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let loaded = store
        .load()
        .unwrap_or_else(|e| panic!("{ctx}: store does not load: {e}"));
    stats.repaired_notes += (!loaded.notes.is_empty()) as u32;
    stats.audit_tails += loaded.notes.iter().any(|n| n.contains("record line(s)")) as u32;
    let state = &loaded.state;

    // Private keys and state agree exactly.
    let live: HashSet<String> = state.keys.iter().map(|k| k.kid.to_string()).collect();
    let mut files = HashSet::new();
    for e in std::fs::read_dir(keys).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !n.ends_with(".tmp") && !n.ends_with(".pending"),
            "{ctx}: {n} left after load"
        );
        if let Some(kid) = n.strip_suffix(".key") {
            files.insert(kid.to_owned());
        }
    }
    assert_eq!(files, live, "{ctx}: private key files and state differ");
    assert_eq!(
        loaded.keys.len(),
        live.len(),
        "{ctx}: a private key did not load"
    );

    // One active key per algorithm (once the store holds any key).
    if !state.keys.is_empty() {
        for alg in support::DEFAULT_ALGS {
            let n = state.in_state(alg, KeyState::Active).count();
            assert_eq!(n, 1, "{ctx}: {alg} has {n} active keys");
        }
    }

    // Nothing observed is lost; nothing retired early; nothing rotated twice.
    for kid in observed.keys() {
        let Some(k) = state.find(&kid.parse().unwrap()) else {
            assert_eq!(state.history.len(), HISTORY_LIMIT, "{ctx}: {kid} lost");
            stats.pruned += 1;
            continue;
        };
        match k.state {
            KeyState::Retired => {
                let last = k.transitions.last().unwrap();
                if last.trigger == Trigger::Retention {
                    assert!(k.ended_at >= k.retire_at, "{ctx}: {kid} retired early");
                }
            }
            KeyState::Revoked => panic!("{ctx}: {kid} revoked, nobody asked"),
            _ => {}
        }
        let activations = k
            .transitions
            .iter()
            .filter(|t| t.to == KeyState::Active)
            .count();
        assert!(
            activations <= 1,
            "{ctx}: {kid} activated {activations} times"
        );
    }
    assert!(state.history.len() <= HISTORY_LIMIT);

    // The audit log (repaired by the load): one unbroken chain, and for
    // every key the state holds exactly its transitions, in order: no
    // change without its record, no record of a change that did not land.
    let verified = audit_log::verify(keys).unwrap_or_else(|b| panic!("{ctx}: audit log: {b}"));
    let records = audit_log::read_since(keys, 0, usize::MAX, u64::MAX).unwrap();
    assert_eq!(records.len() as u64, verified.records, "{ctx}");
    let mut by_kid: BTreeMap<String, Vec<(KeyState, Trigger)>> = BTreeMap::new();
    for r in &records {
        if let (Some(kid), Some(to), Some(trigger)) = (&r.event.kid, r.event.to, r.event.trigger) {
            by_kid
                .entry(kid.to_string())
                .or_default()
                .push((to, trigger));
        }
        if let Some(v) = r.state_version {
            assert!(
                v <= state.version,
                "{ctx}: a record of version {v} past the state's"
            );
        }
    }
    for k in state.keys.iter().chain(&state.history) {
        let want: Vec<(KeyState, Trigger)> =
            k.transitions.iter().map(|t| (t.to, t.trigger)).collect();
        let got = by_kid.get(k.kid.as_str()).cloned().unwrap_or_default();
        assert_eq!(
            got, want,
            "{ctx}: {}: audit records and transitions differ",
            k.kid
        );
    }
    stats.audit_records = records.len();
}

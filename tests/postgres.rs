//! Several replicas on one PostgreSQL store: one rotation per fire, one
//! leader, failover, simultaneous start on an empty database, store copy.
//! The cluster is started by the test (see support/pg.rs).

mod support;

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jwksd::clock::Clock;
use jwksd::keyring::Keyring;
use jwksd::keys::Alg;
use jwksd::lifecycle::{KeyState, KeyringState, Trigger, plan};
use jwksd::store::postgres::PgStore;
use jwksd::store::{KeyStore, MasterKey, StoreError};
use jwksd::time::Timestamp;
use serde_json::{Value, json};
use support::daemon::{BIN, Daemon, FAST, write_config};
use support::pg::Cluster;

const MK: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";
const REPLICA: &str = "store:\n  leader_lease: 2s\n  poll_interval: 300ms\n";

fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(Cluster::start)
}

fn mk() -> MasterKey {
    MasterKey::from_encoded(MK).unwrap()
}

struct Fixed(Timestamp);
impl Clock for Fixed {
    fn now(&self) -> Timestamp {
        self.0
    }
}

fn state_of(db: &str) -> KeyringState {
    serde_json::from_str(&cluster().sql(db, "SELECT state::text FROM jwksd_state")).unwrap()
}

async fn start_replicas(tmp: &std::path::Path, url: &str, n: usize) -> Vec<Daemon> {
    let mut v = Vec::new();
    for i in 0..n {
        let dir = tmp.join(format!("r{i}"));
        let config = write_config(&dir, &format!("{FAST}{REPLICA}"));
        v.push(
            Daemon::start_with(
                &dir,
                &config,
                &[("JWKSD_STORE_URL", url), ("JWKSD_MASTER_KEY", MK)],
            )
            .await,
        );
    }
    v
}

/// Every key activated at most once, and scheduled activations of an
/// algorithm at least `min_gap` apart: no rotation doubled.
fn check_no_double_rotation(state: &KeyringState, min_gap: Duration) {
    for alg in Alg::ALL {
        let mut times: Vec<Timestamp> = state
            .keys
            .iter()
            .chain(state.history.iter())
            .filter(|k| k.alg == alg)
            .flat_map(|k| {
                let n = k
                    .transitions
                    .iter()
                    .filter(|t| t.to == KeyState::Active)
                    .count();
                assert!(n <= 1, "{} activated {n} times", k.kid);
                k.transitions
                    .iter()
                    .filter(|t| t.to == KeyState::Active && t.trigger == Trigger::Schedule)
                    .map(|t| t.at)
                    .collect::<Vec<_>>()
            })
            .collect();
        times.sort();
        for w in times.windows(2) {
            assert!(
                w[1].since(w[0]) >= min_gap,
                "{alg} rotated at {:?} and again at {:?}",
                w[0],
                w[1]
            );
        }
    }
}

#[test]
fn store_migrates_once_compares_and_sets_and_leases() {
    let url = cluster().database("unit");
    // Two replicas migrate at the same instant.
    let (a, b) = std::thread::scope(|s| {
        let h1 = s.spawn(|| PgStore::connect(&url, Some(mk()), None).unwrap());
        let h2 = s.spawn(|| PgStore::connect(&url, Some(mk()), None).unwrap());
        (h1.join().unwrap(), h2.join().unwrap())
    });
    // 1: the initial schema; 2: the audit log and webhook cursors.
    assert_eq!(
        cluster().sql("unit", "SELECT version FROM jwksd_schema"),
        "2"
    );
    assert!(
        PgStore::connect(&url, None, None)
            .err()
            .unwrap()
            .to_string()
            .contains("master key")
    );

    let policy = support::policy();
    let t0 = Timestamp::from_millis(1_800_000_000_000);
    let (mut ring_a, _) = Keyring::load(Box::new(a)).unwrap();
    let (mut ring_b, _) = Keyring::load(Box::new(b)).unwrap();
    let p = plan(ring_a.state(), &policy, t0);
    ring_a
        .execute(&p.actions, &Fixed(t0))
        .into_result()
        .unwrap();
    // Private keys are sealed in the database.
    let sealed = cluster().sql(
        "unit",
        "SELECT convert_from(sealed, 'UTF8') FROM jwksd_private_keys LIMIT 1",
    );
    assert!(sealed.contains("jwksd-sealed-v1") && !sealed.contains("PRIVATE KEY"));

    // B has not seen A's commit: its own bootstrap loses the race.
    let p = plan(ring_b.state(), &policy, t0);
    let err = ring_b
        .execute(&p.actions, &Fixed(t0))
        .into_result()
        .unwrap_err();
    assert!(
        matches!(
            err,
            jwksd::keyring::ExecuteError::Store(StoreError::Conflict {
                expected: 0,
                found: 1
            })
        ),
        "{err}"
    );
    // Its staged keys were discarded; the database holds one set.
    assert_eq!(
        cluster().sql("unit", "SELECT count(*) FROM jwksd_private_keys"),
        "2"
    );
    assert!(ring_b.reload().unwrap());
    assert_eq!(ring_b.state(), ring_a.state());
    assert_eq!(ring_b.state().published().count(), 2);

    // Re-sealing under a new master key, with the old one as previous.
    let new_mk = || MasterKey::from_encoded(&"5a".repeat(32)).unwrap();
    let r = PgStore::connect(&url, Some(new_mk()), Some(mk()))
        .unwrap()
        .rekey(&mut |_| true)
        .unwrap();
    assert_eq!((r.rewritten, r.already), (2, 0));
    let r = PgStore::connect(&url, Some(new_mk()), Some(mk()))
        .unwrap()
        .rekey(&mut |_| true)
        .unwrap();
    assert_eq!((r.rewritten, r.already), (0, 2));
    let (fresh, notes) = Keyring::load(Box::new(
        PgStore::connect(&url, Some(new_mk()), None).unwrap(),
    ))
    .unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(fresh.state(), ring_a.state());

    // One lease holder at a time; resigning hands it over at once.
    let (sa, sb) = (ring_a.store(), ring_b.store());
    assert!(sa.lead(Duration::from_secs(5)).unwrap().is_some());
    assert!(
        sa.lead(Duration::from_secs(5)).unwrap().is_some(),
        "renewal"
    );
    assert!(sb.lead(Duration::from_secs(5)).unwrap().is_none());
    sa.resign();
    assert!(sb.lead(Duration::from_secs(5)).unwrap().is_some());
    // An expired lease is taken over.
    assert!(sb.lead(Duration::from_millis(800)).unwrap().is_some());
    assert!(sa.lead(Duration::from_secs(5)).unwrap().is_none());
    std::thread::sleep(Duration::from_millis(900));
    assert!(sa.lead(Duration::from_secs(5)).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_rotate_once_per_fire_and_serve_the_same_keys() {
    let url = cluster().database("three");
    let tmp = tempfile::tempdir().unwrap();
    let replicas = start_replicas(tmp.path(), &url, 3).await;
    let started = Instant::now();
    let mut tokens: Vec<(String, &str, usize)> = Vec::new();
    while started.elapsed() < Duration::from_secs(11) {
        for (i, d) in replicas.iter().enumerate() {
            for alg in ["ES256", "RS256"] {
                let r = d.sign(alg, json!({"sub": "x"})).await;
                assert_eq!(r.status, 200, "replica {i}: {}", r.error_message());
                tokens.push((
                    r.json().unwrap()["token"].as_str().unwrap().to_owned(),
                    alg,
                    i,
                ));
            }
        }
        // Every replica's JWKS holds every token signed so far on any
        // replica whose key is still current (publish_ahead covers the
        // convergence delay).
        for (i, d) in replicas.iter().enumerate() {
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(d.jwks().await).unwrap();
            for (token, _, from) in tokens.iter().rev().take(6) {
                let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
                assert!(
                    set.find(&kid).is_some(),
                    "token from replica {from} unknown to replica {i}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Converged: identical JWK Sets.
    let sets: Vec<Vec<String>> = {
        let mut v = Vec::new();
        for d in &replicas {
            v.push(d.kids().await);
        }
        v
    };
    assert!(
        sets.windows(2).all(|w| w[0] == w[1]) || {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut v = Vec::new();
            for d in &replicas {
                v.push(d.kids().await);
            }
            v.windows(2).all(|w| w[0] == w[1])
        }
    );
    // Exactly one leader.
    let mut leaders = 0;
    for d in &replicas {
        leaders += (d.metric("jwksd_leader").await == Some(1.0)) as usize;
    }
    assert_eq!(leaders, 1);
    // One rotation per fire: about 11 s / 3 s, never doubled.
    let state = state_of("three");
    check_no_double_rotation(&state, Duration::from_secs(2));
    let scheduled = state
        .keys
        .iter()
        .chain(state.history.iter())
        .filter(|k| k.alg == Alg::ES256)
        .filter(|k| {
            k.transitions
                .iter()
                .any(|t| t.to == KeyState::Active && t.trigger == Trigger::Schedule)
        })
        .count();
    assert!(
        (2..=4).contains(&scheduled),
        "{scheduled} scheduled ES256 rotations in 11 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease() {
    let url = cluster().database("failover");
    let tmp = tempfile::tempdir().unwrap();
    let mut replicas = start_replicas(tmp.path(), &url, 3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let mut found = None;
        for (i, d) in replicas.iter().enumerate() {
            if d.metric("jwksd_leader").await == Some(1.0) {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[leader].kill();
    let killed = Instant::now();
    let new_leader = loop {
        let mut found = None;
        for (i, d) in replicas.iter().enumerate() {
            if i != leader && d.metric("jwksd_leader").await == Some(1.0) {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        // Lease 2 s, renewed every 2/3 s: taken over within 3 s.
        assert!(
            killed.elapsed() < Duration::from_secs(4),
            "no replica took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = killed.elapsed();
    // Rotations go on under the new leader.
    let before = state_of("failover").version;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = state_of("failover");
    assert!(state.version > before, "no rotation after the failover");
    check_no_double_rotation(&state, Duration::from_secs(2));
    let rotated_by_new = d_events(&replicas[new_leader]);
    assert!(rotated_by_new > 0, "the new leader did not rotate");
    eprintln!("failover: replica {new_leader} took over {took:?} after the leader was killed");
}

fn d_events(d: &Daemon) -> usize {
    d.events("key transition")
        .iter()
        .filter(|e| e["trigger"] == "schedule")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_started_at_once_on_an_empty_database_make_one_set_of_keys() {
    let url = cluster().database("race");
    let tmp = tempfile::tempdir().unwrap();
    let configs: Vec<_> = (0..2)
        .map(|i| {
            let dir = tmp.path().join(format!("r{i}"));
            (dir.clone(), write_config(&dir, &format!("rotation:\n  every: 1h\njwks:\n  cache_max_age: 1s\ntokens:\n  clock_skew: 1s\n{REPLICA}")))
        })
        .collect();
    let env = [("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)];
    let (a, b) = tokio::join!(
        Daemon::start_with(&configs[0].0, &configs[0].1, &env),
        Daemon::start_with(&configs[1].0, &configs[1].1, &env)
    );
    let state = state_of("race");
    for alg in support::DEFAULT_ALGS {
        assert_eq!(state.in_state(alg, KeyState::Active).count(), 1);
        assert_eq!(state.in_state(alg, KeyState::Next).count(), 1);
    }
    assert!(
        state.history.is_empty(),
        "a second set was made and dropped: {:?}",
        state.history
    );
    assert_eq!(
        cluster().sql("race", "SELECT count(*) FROM jwksd_private_keys"),
        "4"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ka, kb) = (a.kids().await, b.kids().await);
        if ka == kb {
            assert_eq!(ka.len(), 4);
            break;
        }
        assert!(Instant::now() < deadline, "{ka:?} != {kb:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An operator's revocation on the follower reaches the other replica.
    let follower = if a.metric("jwksd_leader").await == Some(1.0) {
        &b
    } else {
        &a
    };
    let other = if std::ptr::eq(follower, &a) { &b } else { &a };
    let kid = follower.kids().await[0].clone();
    assert_eq!(follower.revoke(&kid).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(3);
    while other.kids().await.contains(&kid) {
        assert!(
            Instant::now() < deadline,
            "revocation did not reach the other replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_keys_between_a_directory_and_postgres() {
    let url = cluster().database("copy");
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(
        tmp.path(),
        "rotation:\n  every: 1h\njwks:\n  cache_max_age: 1s\ntokens:\n  clock_skew: 1s\n",
    );
    let mut single = Daemon::start_with(tmp.path(), &config, &[("JWKSD_MASTER_KEY", MK)]).await;
    let kids = single.kids().await;
    let copy = |from: &str, to: &str| {
        std::process::Command::new(BIN)
            .args(["-c"])
            .arg(&config)
            .args(["store", "copy", "--from", from, "--to", to])
            .env("JWKSD_MASTER_KEY", MK)
            .env_remove("JWKSD_STORE_URL")
            .output()
            .unwrap()
    };
    let keys_dir = tmp.path().join("keys");
    let keys_dir = keys_dir.to_str().unwrap();
    // Not while the daemon holds the directory.
    assert!(!copy(keys_dir, &url).status.success());
    single.stop();
    let out = copy(keys_dir, &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("postgres@"),
        "password-free locations only"
    );
    // Into a store that has keys: refused.
    let out = copy(keys_dir, &url);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds keys"));
    // A replica on the database serves the same keys.
    let dir = tmp.path().join("replica");
    let rconfig = write_config(
        &dir,
        &format!(
            "rotation:\n  every: 1h\njwks:\n  cache_max_age: 1s\ntokens:\n  clock_skew: 1s\n{REPLICA}"
        ),
    );
    let replica = Daemon::start_with(
        &dir,
        &rconfig,
        &[("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)],
    )
    .await;
    assert_eq!(replica.kids().await, kids);
    assert!(
        replica.events("key transition").is_empty(),
        "a key was generated"
    );
    // And back to a new directory.
    let back = tmp.path().join("back");
    let out = copy(&url, back.to_str().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: HashSet<String> = std::fs::read_dir(&back)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".key")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(files, kids.iter().cloned().collect());
    let _: Value = json!({});
}

/// A replica whose configuration says more than the leader's (a longer
/// `signing_key.cache_max_age` and `tokens.max_lifetime`) promises signers
/// no more than the active key records: the retention that keeps the key
/// published comes from that record, so a longer max-age or token from
/// this replica could outlive the key's place in the JWK Set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promises_no_more_than_the_active_key_records() {
    let url = cluster().database("promised");
    let tmp = tempfile::tempdir().unwrap();
    let env = [("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)];
    // The leader, on the FAST timeline: signer cache 1 s, tokens 4 s.
    let dir = tmp.path().join("leader");
    let config = write_config(&dir, &format!("{FAST}{REPLICA}"));
    let leader = Daemon::start_with(&dir, &config, &env).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader.metric("jwksd_leader").await != Some(1.0) {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A replica that would promise 10 s of each.
    let more = "rotation:\n  every: 3s\ntokens:\n  max_lifetime: 10s\n  clock_skew: 1s\n\
                jwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 10s\n";
    let dir = tmp.path().join("replica");
    let config = write_config(&dir, &format!("{more}{REPLICA}"));
    let replica = Daemon::start_with(&dir, &config, &env).await;
    assert_eq!(replica.metric("jwksd_leader").await, Some(0.0));

    let r = replica.active_key("ES256").await;
    assert_eq!(r.status, 200);
    let cc = r.headers["cache-control"].to_str().unwrap().to_owned();
    let max_age: u64 = cc
        .rsplit("max-age=")
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{cc}"));
    assert!(max_age <= 1, "the replica serves {cc}; the key records 1 s");
    assert_eq!(r.json().unwrap()["max_token_lifetime_seconds"], 4);

    // Signed tokens: no longer than the record, even asked for.
    let r = replica.sign("ES256", json!({"sub": "a"})).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let token = r.json().unwrap()["token"].as_str().unwrap().to_owned();
    let claims = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 4, "{claims}");
    let now = Timestamp::from_system(std::time::SystemTime::now()).unix_seconds();
    let r = replica.sign("ES256", json!({"exp": now + 8})).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    assert_eq!(r.json().unwrap()["code"], "lifetime_too_long");
}

//! Replicas when the database goes away: they keep serving the last keys
//! they knew and say so, then catch up when it is back, losing nothing.
//! Its own cluster: this test stops it.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jwksd::lifecycle::KeyringState;
use jwksd::store::postgres::PgStore;
use jwksd::store::{KeyStore, MasterKey, StoreError};
use support::daemon::{Daemon, FAST, write_config};
use support::pg::Cluster;

const MK: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_through_a_database_outage_and_catch_up() {
    let pg = Cluster::start();
    let url = pg.database("outage");
    let tmp = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for i in 0..2 {
        let dir = tmp.path().join(format!("r{i}"));
        let config = write_config(
            &dir,
            &format!("{FAST}store:\n  leader_lease: 2s\n  poll_interval: 300ms\n"),
        );
        replicas.push(
            Daemon::start_with(
                &dir,
                &config,
                &[("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)],
            )
            .await,
        );
    }
    let mut seen: HashSet<String> = HashSet::new();
    for d in &replicas {
        seen.extend(d.kids().await);
    }
    let before: Vec<Vec<String>> = vec![replicas[0].kids().await, replicas[1].kids().await];

    pg.stop_server();
    let stopped = Instant::now();
    // Both keep serving the JWKS. They sign only while the keys they hold
    // are known current: for signing_key.cache_max_age + poll_interval
    // (1.3 s here) after the store last answered; then 503 and unready.
    let mut saw_unreachable = false;
    let mut saw_refused = false;
    while stopped.elapsed() < Duration::from_secs(6) {
        for d in &replicas {
            let r = d.get_public("/.well-known/jwks.json").await;
            assert_eq!(r.status, 200);
            let s = d.sign("ES256", serde_json::json!({})).await;
            let ready = d.get_public("/readyz").await;
            let body = ready.json().unwrap();
            if body["store_reachable"] == false {
                saw_unreachable = true;
                assert_eq!(d.metric("jwksd_store_up").await, Some(0.0));
            }
            if stopped.elapsed() > Duration::from_secs(3) {
                assert_eq!(
                    s.status, 503,
                    "still signing long after the store went away"
                );
                assert_eq!(s.json().unwrap()["code"], "store_unreachable");
                assert_eq!(ready.status, 503, "{body}");
                saw_refused = true;
            } else if stopped.elapsed() < Duration::from_millis(500) {
                assert_eq!(s.status, 200, "refused right away");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        saw_unreachable && saw_refused,
        "no replica noticed the outage"
    );
    // Nothing changed while the store was away.
    assert_eq!(replicas[0].kids().await, before[0]);

    pg.start_server();
    // Catching up: the store answers again and rotations resume.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = replicas[0].metric("jwksd_store_up").await == Some(1.0)
            && replicas[1].metric("jwksd_store_up").await == Some(1.0);
        let changed = replicas[0].kids().await != before[0];
        if up && changed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not catch up after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing lost: every kid ever served is in the state.
    let state: KeyringState =
        serde_json::from_str(&pg.sql("outage", "SELECT state::text FROM jwksd_state")).unwrap();
    for kid in &seen {
        assert!(state.find(&kid.parse().unwrap()).is_some(), "{kid} lost");
    }
    let ready = replicas[1].get_public("/readyz").await.json().unwrap();
    assert_eq!(ready["store_reachable"], true, "{ready}");
    for d in &replicas {
        assert_eq!(d.sign("ES256", serde_json::json!({})).await.status, 200);
    }
    for d in &mut replicas {
        assert_eq!(d.stop().code(), Some(0));
    }
}

fn mk() -> MasterKey {
    MasterKey::from_encoded(MK).unwrap()
}

/// Asserts `r` is the client-side timeout of a store call, returned within
/// `deadline` plus a margin; prints how long it took.
fn assert_timed_out<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, StoreError>,
    started: Instant,
    deadline: Duration,
) {
    let took = started.elapsed();
    eprintln!("{what}: returned after {took:?}: {r:?}");
    let msg = match &r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{what}: expected a timeout after {deadline:?}, got {v:?} after {took:?}"),
    };
    assert!(
        msg.contains("did not answer") && msg.contains(&format!("{deadline:?}")),
        "{what}: {msg}"
    );
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(1500),
        "{what} took {took:?}, deadline {deadline:?}"
    );
}

/// A database that hangs instead of refusing (every server process
/// stopped, as a frozen VM or a stalled disk): every call gives up on our
/// side within its deadline, and the next call after the server resumes
/// reconnects.
#[test]
fn calls_to_a_hung_database_time_out_and_then_reconnect() {
    let pg = Cluster::start();
    let url = pg.database("hang");
    let store = PgStore::connect(&url, Some(mk()), None).unwrap();
    let lease = Duration::from_secs(2);
    assert_eq!(store.version().unwrap(), 0);
    assert!(store.lead(lease).unwrap().is_some());
    let state = KeyringState {
        version: 1,
        ..Default::default()
    };

    let frozen = pg.freeze(Duration::from_secs(40));
    let t = Instant::now();
    assert_timed_out("version()", store.version(), t, Duration::from_secs(5));
    let t = Instant::now();
    assert_timed_out(
        "commit()",
        store.commit(&state, &[]),
        t,
        Duration::from_secs(10),
    );
    // The lease call gives up well within a third of the lease.
    let t = Instant::now();
    assert_timed_out("lead()", store.lead(lease), t, lease / 4);
    let t = Instant::now();
    assert_timed_out(
        "connect()",
        PgStore::connect(&url, Some(mk()), None).map(|_| ()),
        t,
        Duration::from_secs(5),
    );
    drop(frozen);

    // Resumed: the next calls reconnect and succeed.
    let t = Instant::now();
    assert_eq!(store.version().unwrap(), 0);
    store.commit(&state, &[]).unwrap();
    assert!(store.lead(lease).unwrap().is_some());
    assert_eq!(store.version().unwrap(), 1);
    eprintln!("after resuming: version, commit, lead in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// A lease renewal answered only after the lease it asked for has run out
/// (the database hung meanwhile) never counts as leadership.
#[test]
fn a_lease_answered_after_it_ran_out_is_not_leadership() {
    let pg = Cluster::start();
    let url = pg.database("stale");
    let store = PgStore::connect(&url, Some(mk()), None).unwrap();
    let lease = Duration::from_secs(1);
    assert!(store.lead(lease).unwrap().is_some());
    let frozen = pg.freeze(Duration::from_millis(1500));
    let r = store.lead(lease);
    let now = Instant::now();
    drop(frozen);
    eprintln!("lead() during a 1.5 s stop: {r:?}");
    if let Ok(Some(until)) = r {
        panic!(
            "a lease that ran out {:?} ago counts as leadership",
            now.duration_since(until)
        );
    }
    // Once answering again, the lease is held again.
    assert!(
        store
            .lead(lease)
            .unwrap()
            .is_some_and(|t| t > Instant::now())
    );
}

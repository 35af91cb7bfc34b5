//! Replicas whose key ring is not current: one that cannot read the shared
//! state stops leading and, after its freshness window, stops signing; one
//! cut off from the database never hands out a key for longer than that
//! window covers. Their own cluster: these tests change the state row by
//! hand and stop the server.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, FAST, write_config};
use support::pg::Cluster;

const MK: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";

async fn replica(dir: &std::path::Path, url: &str, body: &str) -> Daemon {
    let config = write_config(dir, body);
    let d = Daemon::start_with(
        dir,
        &config,
        &[("JWKSD_STORE_URL", url), ("JWKSD_MASTER_KEY", MK)],
    )
    .await;
    d.wait_ready().await;
    d
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_read_the_state_stops_leading_and_signing() {
    let pg = Cluster::start();
    let url = pg.database("unreadable");
    let tmp = tempfile::tempdir().unwrap();
    let d = replica(
        &tmp.path().join("r0"),
        &url,
        &format!("{FAST}store:\n  leader_lease: 2s\n  poll_interval: 300ms\n"),
    )
    .await;
    wait_for("leads", Duration::from_secs(10), async || {
        d.metric("jwksd_leader").await == Some(1.0)
    })
    .await;
    let commits_before = d
        .metric("jwksd_lifecycle_failures_total{action=\"commit\"}")
        .await
        .unwrap_or(0.0);

    // A state written by a newer jwksd: this one cannot read it.
    pg.sql(
        "unreadable",
        "UPDATE jwksd_state SET state = jsonb_set(state, '{format}', '99'), version = version + 1",
    );
    let broken = Instant::now();
    wait_for("unready", Duration::from_secs(5), async || {
        d.get_public("/readyz").await.status == 503
    })
    .await;
    let ready = d.get_public("/readyz").await.json().unwrap();
    assert!(
        ready["reasons"].as_array().unwrap().iter().any(|r| r
            .as_str()
            .unwrap()
            .contains("cannot read the shared key-ring state")),
        "{ready}"
    );
    assert_eq!(d.metric("jwksd_store_state_readable").await, Some(0.0));
    wait_for("gives up the lease", Duration::from_secs(5), async || {
        d.metric("jwksd_leader").await == Some(0.0)
    })
    .await;
    let lease = pg.sql("unreadable", "SELECT expires_at > now() FROM jwksd_leader");
    assert_ne!(lease.trim(), "t", "the lease is still held");
    // Past the freshness window (1 s + 300 ms) it signs and hands out
    // nothing.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(broken.elapsed())).await;
    let s = d.sign("ES256", serde_json::json!({})).await;
    assert_eq!(s.status, 503, "still signing on a state it cannot read");
    assert_eq!(d.active_key("ES256").await.status, 503);
    // Retries back off: no hot loop of commits or reads.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let commits = d
        .metric("jwksd_lifecycle_failures_total{action=\"commit\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        commits - commits_before <= 1.0,
        "{} commit failures",
        commits - commits_before
    );
    let logged = d
        .log_text()
        .matches("cannot read the shared key-ring state")
        .count();
    assert_eq!(logged, 1, "one log line per change, not per attempt");

    // Repaired: it reads the state again, leads, and signs.
    pg.sql(
        "unreadable",
        "UPDATE jwksd_state SET state = jsonb_set(state, '{format}', '2'), version = version + 1",
    );
    wait_for("recovers", Duration::from_secs(40), async || {
        d.get_public("/readyz").await.status == 200 && d.metric("jwksd_leader").await == Some(1.0)
    })
    .await;
    assert_eq!(d.sign("ES256", serde_json::json!({})).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_replica_serves_the_key_only_for_what_its_window_covers() {
    let pg = Cluster::start();
    let url = pg.database("cutoff");
    let tmp = tempfile::tempdir().unwrap();
    // Freshness window: signing_key.cache_max_age 4 s + poll_interval 500 ms.
    let d = replica(
        &tmp.path().join("r0"),
        &url,
        "rotation:\n  every: 1h\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 4s\nstore:\n  leader_lease: 2s\n  poll_interval: 500ms\n",
    )
    .await;
    let r = d.active_key("ES256").await;
    assert_eq!(r.header("cache-control"), Some("private, max-age=4"));
    pg.stop_server();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = d.active_key("ES256").await;
    let since = stopped.elapsed().as_secs_f64();
    assert_eq!(r.status, 200);
    let max_age: f64 = r
        .header("cache-control")
        .and_then(|v| v.strip_prefix("private, max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    // The copy a signer takes now must expire by the end of the window.
    assert!(
        since + max_age <= 4.5 + 0.6,
        "handed out {since:.1} s after the store went away with max-age {max_age}"
    );
    pg.start_server();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_rotating_at_once_on_two_replicas_both_get_the_rules_answer() {
    let pg = Cluster::start();
    let url = pg.database("concurrent");
    let tmp = tempfile::tempdir().unwrap();
    let body = "algorithms: [ES256]\nrotation:\n  every: 1h\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\nstore:\n  leader_lease: 2s\n  poll_interval: 300ms\n";
    let a = replica(&tmp.path().join("a"), &url, body).await;
    let b = replica(&tmp.path().join("b"), &url, body).await;
    // Three rounds: a fourth would meet the limit of keys rotated out by hand.
    for round in 0..3 {
        let force = serde_json::json!({"alg": "ES256", "force": true});
        let (ra, rb) = tokio::join!(a.rotate(force.clone()), b.rotate(force));
        for r in [&ra, &rb] {
            assert!(
                r.status == 200 || r.status == 409,
                "round {round}: {} {}",
                r.status,
                r.error_message()
            );
        }
        // Either the same rotation (one answer says so), or one after the
        // other, as on one replica: never two keys activated over one.
        let (va, vb) = (ra.json().unwrap(), rb.json().unwrap());
        let (a0, b0) = (&va["rotated"][0], &vb["rotated"][0]);
        if ra.status == 200 && rb.status == 200 {
            let same = a0["kid"] == b0["kid"]
                && (a0["by_another_replica"] == true || b0["by_another_replica"] == true);
            let chained = a0["previous_kid"] == b0["kid"] || b0["previous_kid"] == a0["kid"];
            assert!(same || chained, "round {round}: {va} {vb}");
        }
    }
}

/// A rotation whose commit waits seconds on the state row's lock (held by
/// another session, as a slow transaction or a vacuum would): every copy of
/// the old key handed out meanwhile, here or on the replica that learns of
/// the rotation a poll later, still expires in time for its last token to
/// verify until the key retires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_commit_waits_on_a_lock_keeps_the_old_key_published_long_enough() {
    let pg = Cluster::start();
    let url = pg.database("locked");
    let tmp = tempfile::tempdir().unwrap();
    // signing_key.cache_max_age 4 s, tokens 4 s, skew 1 s, poll 500 ms.
    let body = "algorithms: [ES256]\nrotation:\n  every: 1h\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 4s\nstore:\n  leader_lease: 2s\n  poll_interval: 500ms\n";
    let r0 = replica(&tmp.path().join("r0"), &url, body).await;
    let r1 = replica(&tmp.path().join("r1"), &url, body).await;
    let old = r0.active_key("ES256").await.json().unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };

    // Another session holds the state row for 4 s (under the server's 5 s
    // lock timeout, so the commit waits rather than fails).
    let mut lock = pg.psql(
        "locked",
        "BEGIN; SELECT 1 FROM jwksd_state WHERE id = 1 FOR UPDATE; SELECT pg_sleep(4); COMMIT;",
    );
    let locker = std::thread::spawn(move || lock.output().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotating = tokio::spawn({
        let (client, url, token) = (
            r0.client.clone(),
            format!("{}/v1/rotate", r0.admin),
            r0.operator.clone(),
        );
        async move {
            client
                .post_json(&url, Some(&token), &serde_json::json!({"force": true}))
                .await
                .unwrap()
        }
    });
    // Every copy of the old key handed out, on either replica: when it
    // expires.
    let mut last_expiry: f64 = 0.0;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        for d in [&r0, &r1] {
            let asked = unix();
            let r = d.active_key("ES256").await;
            if r.status != 200 || r.json().unwrap()["kid"] != old.as_str() {
                continue;
            }
            let max_age: f64 = r
                .header("cache-control")
                .and_then(|v| v.strip_prefix("private, max-age="))
                .and_then(|v| v.parse().ok())
                .unwrap();
            last_expiry = last_expiry.max(asked + max_age);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = rotating.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert!(locker.join().unwrap().status.success());
    let keys = r0.keys().await;
    let k = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == old.as_str())
        .unwrap();
    assert_eq!(k["state"], "retiring", "{k}");
    let retire_at = chrono::DateTime::parse_from_rfc3339(k["retire_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    // A signer signs with its copy until it expires; that token lives 4 s
    // and verifiers accept it 1 s longer.
    let needed = last_expiry + 4.0 + 1.0;
    eprintln!("retire_at - needed = {:.2} s", retire_at - needed);
    assert!(
        retire_at >= needed,
        "{old} retires at {retire_at:.2}, {:.2} s before the last token signed with a copy handed out meanwhile stops verifying",
        needed - retire_at
    );
}

//! Promises already served outlive a configuration change: the real binary
//! restarted with smaller max-ages keeps what it promised under the larger
//! ones (the JWK Set max-age for new keys, the signing-key max-age for the
//! key that was active).

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::daemon::{Daemon, write_config};

const BEFORE: &str = "algorithms: [ES256]\nrotation:\n  every: 20s\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 8s\nsigning_key:\n  cache_max_age: 15s\n";
const AFTER: &str = "algorithms: [ES256]\nrotation:\n  every: 6s\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn unix(v: &Value) -> f64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0
}

fn key<'a>(keys: &'a Value, kid: &str) -> &'a Value {
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("{kid} not in {keys}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn lowered_max_ages_wait_for_what_was_served_under_the_larger_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(tmp.path(), BEFORE).await;
    d.wait_ready().await;
    let active = d.active_key("ES256").await;
    assert_eq!(active.header("cache-control"), Some("private, max-age=15"));
    let old = active.json().unwrap()["kid"].as_str().unwrap().to_owned();
    assert_eq!(d.stop().code(), Some(0));

    write_config(tmp.path(), AFTER);
    // check-config reads the stored state and says what waits, until when.
    let out = d.cli(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("deferred: jwks.cache_max_age lowered to 1s: JWK Sets served under 8s"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "deferred: signing_key.cache_max_age lowered to 1s: the active key {old}"
        )),
        "{text}"
    );

    let restarted = unix_now();
    d.restart().await;
    d.wait_ready().await;
    let deferred = d.events("change deferred");
    assert!(
        deferred.iter().any(|e| e["field"] == "jwks.cache_max_age")
            && deferred
                .iter()
                .any(|e| e["field"] == "signing_key.cache_max_age" && e["kid"] == old.as_str()),
        "{deferred:?}"
    );

    // A verifier may hold the 8 s set fetched just before the restart: the
    // next key signs no earlier than restart + 8 s + skew.
    let active = d.active_key("ES256").await.json().unwrap();
    let earliest = unix(&active["next"]["earliest_activation"]);
    assert!(
        earliest >= restarted + 9.0 - 0.5,
        "the next key may sign {:.1} s after the restart",
        earliest - restarted
    );
    let r = d.rotate(json!({"alg": "ES256"})).await;
    assert_eq!(r.status, 409, "{}", r.error_message());
    assert!(unix(&r.json().unwrap()["earliest_safe_rotation"]) >= restarted + 8.5);

    // Signers hold the old key for up to 15 s: rotated out now, it stays
    // published 15 s + 4 s + 1 s + the key directory's 2 s commit window
    // (propagation), not the 8 s the new values alone give.
    let r = d.rotate(json!({"alg": "ES256", "force": true})).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let keys = d.keys().await;
    let k = key(&keys, &old);
    assert_eq!(k["state"], "retiring");
    let retained = unix(&k["retire_at"]) - unix(&k["deactivated_at"]);
    assert!(
        (retained - 22.0).abs() < 0.01,
        "retained {retained:.1} s after rotation"
    );
    // The key activated now was only ever served under the new values.
    let new = r.json().unwrap()["rotated"][0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let active = d.active_key("ES256").await;
    assert_eq!(active.header("cache-control"), Some("private, max-age=1"));
    assert_eq!(active.json().unwrap()["kid"], new.as_str());
}

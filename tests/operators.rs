//! Operator commands finish before they answer: a rotation answers once
//! its new next key is committed and published, so the next command meets
//! the rules, not a key still being generated.

mod support;

use serde_json::json;
use support::daemon::Daemon;

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_answers_with_its_new_next_key_published() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        "rotation:\n  every: 1h\njwks:\n  cache_max_age: 2s\ntokens:\n  clock_skew: 1s\n",
    )
    .await;
    d.wait_ready().await;
    for alg in ["RS256", "ES256"] {
        let r = d.rotate(json!({"alg": alg, "force": true})).await;
        assert_eq!(r.status, 200, "{}", r.error_message());
        let v = r.json().unwrap();
        let rotated = &v["rotated"][0];
        let next = rotated["next_kid"]
            .as_str()
            .unwrap_or_else(|| panic!("no next key in {v}"))
            .to_owned();
        // Published before the answer.
        assert!(d.kids().await.contains(&next), "{next} not in the JWKS");
        // Rotating again at once meets the rules: too early, with a time.
        let again = d.rotate(json!({"alg": alg})).await;
        assert_eq!(again.status, 409, "{}", again.error_message());
        let body = again.json().unwrap();
        assert_eq!(body["code"], "too_early", "{body}");
        assert!(body["earliest_safe_rotation"].is_string());
        // And a forced one goes through, promoting the key just reported.
        let forced = d.rotate(json!({"alg": alg, "force": true})).await;
        assert_eq!(forced.status, 200, "{}", forced.error_message());
        assert_eq!(forced.json().unwrap()["rotated"][0]["kid"], next.as_str());
    }
}

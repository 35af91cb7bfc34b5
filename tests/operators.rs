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

/// Revoking the active key while its replacement is still being generated
/// (RSA-4096 takes seconds): signers wait for the emergency key instead of
/// failing, and nothing is signed with a revoked key.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_active_key_while_its_replacement_is_generated_fails_no_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        "algorithms: [RS256]\nrsa_bits: 4096\nrotation:\n  every: 1h\njwks:\n  cache_max_age: 2s\ntokens:\n  clock_skew: 1s\n",
    )
    .await;
    d.wait_ready().await;
    // Both first keys exist once a key list shows an active and a next key.
    let mut first = None;
    for _ in 0..600 {
        let keys = d.keys().await;
        let of = |s: &str| {
            keys["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["state"] == s)
                .map(|k| k["kid"].as_str().unwrap().to_owned())
        };
        if let (Some(a), Some(n)) = (of("active"), of("next")) {
            first = Some((a, n));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (active, next) = first.expect("an active and a next key");

    // Signers keep asking throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signer = {
        let (client, url, token, stop) = (
            jwksd::client::Client::new(std::time::Duration::from_secs(60)),
            format!("{}/v1/sign", d.admin),
            d.signer.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let r = client
                    .post_json(&url, Some(&token), &json!({"alg": "RS256", "claims": {}}))
                    .await
                    .unwrap();
                let kid = r.json().and_then(|v| v["kid"].as_str().map(str::to_owned));
                answers.push((r.status, kid, started.elapsed(), r.error_message(), started));
            }
            answers
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The active key, then at once its successor: no next key is left, and
    // the emergency key is yet to be generated.
    let r = d.revoke(&active).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let r = d.revoke(&next).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let revoked_at = std::time::Instant::now();
    // Until a new key signs, and a little longer.
    let mut replaced = false;
    for _ in 0..1200 {
        let r = d.active_key("RS256").await;
        if r.status == 200 {
            replaced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(replaced, "no new active key");
    let replaced_after = revoked_at.elapsed();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = signer.await.unwrap();

    let failed: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} signatures failed while the replacement was generated ({replaced_after:?}): {:?}",
        failed.len(),
        answers.len(),
        failed.first().map(|a| (a.0, &a.3))
    );
    // Nothing asked for after the revocations answered is signed with a
    // revoked key.
    let late: Vec<_> = answers.iter().filter(|a| a.4 > revoked_at).collect();
    assert!(!late.is_empty(), "no signature after the revocations");
    for a in &late {
        let kid = a.1.as_deref().unwrap();
        assert!(kid != active && kid != next, "signed with revoked {kid}");
    }
    let max_wait = answers.iter().map(|a| a.2).max().unwrap();
    eprintln!(
        "replacement signing after {replaced_after:?}; {} signatures, longest wait {max_wait:?}",
        answers.len()
    );
}

//! Load while keys rotate: JWKS readers and signers hammer the daemon while
//! it rotates every 2 s (RSA generation included). Zero 5xx, zero tokens
//! that fail to verify.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::header;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use support::daemon::Daemon;

fn verify(set: &JwkSet, token: &str, alg: Algorithm) -> Result<(), String> {
    let head = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = head.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or(format!("{kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(alg);
    v.leeway = 1;
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_during_rotation_has_no_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Arc::new(
        Daemon::start(
            tmp.path(),
            "rotation:\n  every: 2s\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n",
        )
        .await,
    );
    let requests = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let verified = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (d, requests, errors) = (d.clone(), requests.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let url = format!("{}/.well-known/jwks.json", d.public);
            let mut etag = String::new();
            while Instant::now() < until {
                let extra: Vec<(header::HeaderName, &str)> = if i % 2 == 0 && !etag.is_empty() {
                    vec![(header::IF_NONE_MATCH, etag.as_str())]
                } else {
                    vec![]
                };
                match d.client.send(Method::GET, &url, None, &extra, None).await {
                    Ok(r) if r.status == 200 || r.status == 304 => {
                        if let Some(t) = r.header(header::ETAG) {
                            etag = t.to_owned();
                        }
                    }
                    Ok(r) => errors.lock().unwrap().push(format!("JWKS {}", r.status)),
                    Err(e) => errors.lock().unwrap().push(format!("JWKS {e}")),
                }
                requests.fetch_add(1, Ordering::Relaxed);
            }
            0usize
        }));
    }
    for i in 0..4 {
        let (d, requests, errors, verified) = (
            d.clone(),
            requests.clone(),
            errors.clone(),
            verified.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (alg, name) = if i % 2 == 0 {
                (Algorithm::ES256, "ES256")
            } else {
                (Algorithm::RS256, "RS256")
            };
            let mut kids = Vec::new();
            while Instant::now() < until {
                let r = d.sign(name, json!({"sub": "load"})).await;
                requests.fetch_add(1, Ordering::Relaxed);
                if r.status != 200 {
                    errors.lock().unwrap().push(format!(
                        "sign {}: {}",
                        r.status,
                        r.error_message()
                    ));
                    continue;
                }
                let v = r.json().unwrap();
                let kid = v["kid"].as_str().unwrap().to_owned();
                if kids.last() != Some(&kid) {
                    kids.push(kid);
                }
                let set: JwkSet = serde_json::from_value(d.jwks().await).unwrap();
                match verify(&set, v["token"].as_str().unwrap(), alg) {
                    Ok(()) => {
                        verified.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().unwrap().push(format!("verify {name}: {e}")),
                }
            }
            kids.len()
        }));
    }
    let mut rotations = Vec::new();
    for t in tasks {
        rotations.push(t.await.unwrap());
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let kids_seen = rotations[4..].iter().min().copied().unwrap();
    assert!(
        kids_seen >= 3,
        "signers saw only {kids_seen} keys: too few rotations"
    );
    assert!(verified.load(Ordering::Relaxed) > 100);
    eprintln!(
        "load test: {} requests, {} tokens verified, {} keys per signer, 0 errors",
        requests.load(Ordering::Relaxed),
        verified.load(Ordering::Relaxed),
        kids_seen
    );
}

//! Two replicas on one PostgreSQL store and one SoftHSM2 token (issue 12):
//! the leader generates the keys in the token, both replicas sign with
//! them; a rotation through one replica reaches the other; a killed leader
//! is replaced by the follower, which generates the next keys in the token
//! and signs with them; no key is lost.
//!
//! The SoftHSM2 token is the test's own (support/softhsm.rs: both daemons
//! and the test share its `SOFTHSM2_CONF`); the PostgreSQL cluster is
//! started by the test, as in tests/postgres.rs (support/pg.rs).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jwksd::keys::custody::Custody;
use jwksd::keys::pkcs11::{Owner, Token};
use jwksd::keys::{Alg, Kid};
use jwksd::lifecycle::{KeyState, KeyringState};
use serde_json::{Value, json};
use support::daemon::{Daemon, write_config};
use support::pg::Cluster;
use support::softhsm::{Hsm, LABEL, isolated, key_afresh, list_afresh};

const MK: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";
/// Rotations only when asked for; tokens 4 s, skew 1 s, caches 1 s
/// (publish_ahead 2 s); a lease of 2 s.
const BODY: &str = "rotation:\n  every: 1h\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\nstore:\n  leader_lease: 2s\n  poll_interval: 300ms\n";

#[test]
fn two_replicas_on_one_token_sign_rotate_and_fail_over() {
    isolated(
        "two_replicas_on_one_token_sign_rotate_and_fail_over",
        Duration::from_secs(240),
        |hsm| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(replicas(hsm))
        },
    );
}

fn state_of(cluster: &Cluster, db: &str) -> KeyringState {
    serde_json::from_str(&cluster.sql(db, "SELECT state::text FROM jwksd_state")).unwrap()
}

async fn replicas(hsm: &Hsm) {
    let began = Instant::now();
    let cluster = Cluster::start();
    let url = cluster.database("pkcs11");
    let tmp = tempfile::tempdir().unwrap();
    let env = [("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)];
    let mut replicas = Vec::new();
    for i in 0..2 {
        let dir = tmp.path().join(format!("r{i}"));
        let config = write_config(&dir, &format!("{BODY}{}", hsm.keys_config()));
        replicas.push(Daemon::start_with(&dir, &config, &env).await);
    }
    eprintln!("both replicas ready after {:?}", began.elapsed());
    let token = hsm.open();
    let mut observed = BTreeSet::new();
    let leader = leader_of(&replicas, None).await;
    let follower = 1 - leader;

    // The leader made every key, in the token.
    let state = check_in_token(&token, &cluster, "after the start");
    assert_eq!(state.keys.len(), 4, "{:?}", state.keys);
    for k in &state.keys {
        assert_eq!(
            made_by(&replicas, &k.kid),
            Some(leader),
            "{} ({} {})",
            k.kid,
            k.state,
            k.alg
        );
    }
    // Both replicas sign with them; the signatures verify against either
    // replica's JWK Set.
    for alg in support::DEFAULT_ALGS {
        let active = state
            .in_state(alg, KeyState::Active)
            .next()
            .unwrap()
            .kid
            .clone();
        for d in &replicas {
            assert_eq!(
                sign(d, &replicas, alg, &mut observed).await,
                active.as_str()
            );
        }
    }

    // A rotation through the follower; both replicas sign with the new
    // keys within a few seconds.
    let rotated = rotate(&replicas[follower]).await;
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    check_in_token(&token, &cluster, "after the rotation");
    for r in &rotated {
        let alg: Alg = r["alg"].as_str().unwrap().parse().unwrap();
        let kid = r["kid"].as_str().unwrap();
        assert!(r["next_kid"].is_string(), "no next key: {r}");
        for (i, d) in replicas.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if sign(d, &replicas, alg, &mut observed).await == kid {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {i} does not sign {alg} with {kid}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for d in &replicas {
        observed.extend(d.kids().await);
    }

    // The leader killed: the follower takes the lease.
    let before: BTreeSet<Kid> = state_of(&cluster, "pkcs11")
        .keys
        .iter()
        .map(|k| k.kid.clone())
        .collect();
    replicas[leader].kill();
    let killed = Instant::now();
    assert_eq!(leader_of(&replicas, Some(leader)).await, follower);
    eprintln!(
        "the follower took the lease {:?} after the kill",
        killed.elapsed()
    );
    let survivor = &replicas[follower];
    // It generates the next keys in the token (a rotation asks for them),
    // then signs with them once they are rotated in.
    let first = rotate(survivor).await;
    let made: Vec<(Alg, Kid)> = first
        .iter()
        .map(|r| {
            (
                r["alg"].as_str().unwrap().parse().unwrap(),
                r["next_kid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no next key: {r}"))
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    for (alg, kid) in &made {
        assert!(!before.contains(kid), "{alg} {kid}");
        assert_eq!(
            made_by(&replicas, kid),
            Some(follower),
            "{alg} {kid} was not generated by the new leader"
        );
    }
    check_in_token(&token, &cluster, "after the failover");
    let second = rotate(survivor).await;
    for (alg, kid) in &made {
        let r = second
            .iter()
            .find(|r| r["alg"] == alg.as_str())
            .unwrap_or_else(|| panic!("{alg} not rotated: {second:?}"));
        assert_eq!(r["kid"], kid.as_str(), "{r}");
        assert_eq!(
            &sign(survivor, &replicas, *alg, &mut observed).await,
            kid.as_str()
        );
    }
    observed.extend(survivor.kids().await);

    // No key lost: every kid once published is published still, or was
    // retired once its retention ended.
    let state = check_in_token(&token, &cluster, "at the end");
    for kid in &observed {
        let k = state
            .find(&kid.parse().unwrap())
            .unwrap_or_else(|| panic!("{kid} lost"));
        match k.state {
            KeyState::Retired => assert!(k.ended_at >= k.retire_at, "{kid} retired early"),
            KeyState::Revoked => panic!("{kid} revoked, nobody asked"),
            _ => {}
        }
    }
    eprintln!(
        "two replicas on one token: {} kids observed, passed in {:?}",
        observed.len(),
        began.elapsed()
    );
}

/// The replica holding the lease (other than `not`), within 5 s.
async fn leader_of(replicas: &[Daemon], not: Option<usize>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for (i, d) in replicas.iter().enumerate() {
            if Some(i) != not && d.metric("jwksd_leader").await == Some(1.0) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which replica generated `kid`, by its log.
fn made_by(replicas: &[Daemon], kid: &Kid) -> Option<usize> {
    replicas.iter().position(|d| {
        d.events("key transition")
            .iter()
            .any(|e| e["kid"] == kid.as_str() && e["from"] == "none")
    })
}

/// Every key the state names is whole in the token; no retired key's
/// objects remain; no object carries a kid the state does not name. (A
/// commit and the naming or destruction in the token that follows it are
/// not one step: looked at again for up to 3 s.) Returns the state.
fn check_in_token(token: &Token, cluster: &Cluster, when: &str) -> KeyringState {
    let custody = Custody::Pkcs11 {
        token_label: LABEL.into(),
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let state = state_of(cluster, "pkcs11");
        let objects = list_afresh(token);
        for k in &state.keys {
            assert_eq!(k.custody, custody, "{when}: {}", k.kid);
            let found = key_afresh(token, &k.kid, k.alg).unwrap_or_else(|| {
                panic!("{when}: {} {} {} not in the token", k.state, k.alg, k.kid)
            });
            assert_eq!(found.public, k.public);
        }
        let extra: Vec<String> = objects
            .into_iter()
            .filter_map(|o| match o.owner {
                Owner::Kid(kid) if !state.keys.iter().any(|k| k.kid == kid) => {
                    Some(format!("{kid} ({:?})", state.find(&kid).map(|k| k.state)))
                }
                _ => None,
            })
            .collect();
        if extra.is_empty() {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: the token holds keys the state does not name: {extra:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Rotates every algorithm through `d`, retrying while the next keys have
/// not been published for publish_ahead; returns `rotated`.
async fn rotate(d: &Daemon) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = d.rotate(json!({})).await;
        let body = r.json().unwrap_or(Value::Null);
        if r.status == 200 {
            return body["rotated"].as_array().unwrap().clone();
        }
        assert!(
            (r.status == 409 && body["code"] == "too_early")
                || (r.status == 503 && body["code"] == "not_ready"),
            "rotate: {} {body}",
            r.status
        );
        assert!(Instant::now() < deadline, "rotate: {} {body}", r.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Signs with `alg` on `d`; verifies the token with jsonwebtoken against
/// the JWK Set of every running replica; returns the kid.
async fn sign(d: &Daemon, all: &[Daemon], alg: Alg, observed: &mut BTreeSet<String>) -> String {
    let r = d.sign(alg.as_str(), json!({"sub": "replica"})).await;
    assert_eq!(r.status, 200, "sign {alg}: {}", r.error_message());
    let jwt = r.json().unwrap()["token"].as_str().unwrap().to_owned();
    let kid = jsonwebtoken::decode_header(&jwt).unwrap().kid.unwrap();
    observed.insert(kid.clone());
    for other in all.iter().filter(|o| o.pid() != 0) {
        // A replica learns of a key within its poll interval: the key was
        // published for publish_ahead before it signed.
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(other.jwks().await).unwrap();
        let jwk = set
            .find(&kid)
            .unwrap_or_else(|| panic!("{alg} {kid} not in a replica's JWK Set"));
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(support::jwt_algorithm(alg).unwrap());
        v.validate_aud = false;
        let claims = jsonwebtoken::decode::<Value>(&jwt, &key, &v)
            .unwrap_or_else(|e| panic!("{alg} token of {kid} does not verify: {e}"))
            .claims;
        assert_eq!(claims["sub"], "replica");
    }
    kid
}

/// With a shared store, the leader carries out the token's crash rules
/// (`daemon::token`'s watch, once it leads, then hourly): pending and
/// staged objects of its key ring that no state names are destroyed once
/// older than `keyring::token::STALE_STAGED` (1 hour), and younger ones (a
/// generation in flight on another replica) are left be; another key
/// ring's are left too.
#[test]
fn the_leader_destroys_stale_leftovers_in_the_token() {
    isolated(
        "the_leader_destroys_stale_leftovers_in_the_token",
        Duration::from_secs(120),
        |hsm| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(stale_leftovers(hsm))
        },
    );
}

async fn stale_leftovers(hsm: &Hsm) {
    let cluster = Cluster::start();
    let url = cluster.database("pkcs11");
    let token = hsm.open();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // What a replica killed two hours ago in mid-generation left, and what
    // one generating now has staged.
    let ring = {
        let url = url.clone();
        let store = tokio::task::spawn_blocking(move || {
            jwksd::store::postgres::PgStore::connect(
                &url,
                Some(jwksd::store::MasterKey::from_encoded(MK).unwrap()),
                None,
            )
            .unwrap()
        })
        .await
        .unwrap();
        use jwksd::store::KeyStore as _;
        jwksd::keyring::token::ring_of(&store.location())
    };
    let old = token
        .stage(Alg::ES256, 2048, &ring, now - 7200)
        .unwrap()
        .kid;
    let young = token.stage(Alg::ES256, 2048, &ring, now).unwrap().kid;
    let other = token
        .stage(Alg::ES256, 2048, "0123456789abcdef", now - 7200)
        .unwrap()
        .kid;
    let old_pending = format!("jwksd-pending-{}-{}", now - 7200, "ab".repeat(16));
    let made_pending = std::process::Command::new("pkcs11-tool")
        .args(["--module", support::softhsm::MODULE])
        .args(["--token-label", LABEL, "--login", "--pin"])
        .arg(support::softhsm::USER_PIN)
        .args(["--keypairgen", "--key-type", "EC:prime256v1", "--label"])
        .arg(&old_pending)
        .arg("--id")
        .arg(hex::encode(old_pending.as_bytes()))
        .output()
        .is_ok_and(|o| o.status.success());
    if !made_pending {
        eprintln!("pkcs11-tool (opensc) absent or failed: no pending object");
    }
    let tmp = tempfile::tempdir().unwrap();
    let env = [("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)];
    let dir = tmp.path().join("r0");
    let config = write_config(&dir, &format!("{BODY}{}", hsm.keys_config()));
    let d = Daemon::start_with(&dir, &config, &env).await;
    assert_eq!(leader_of(std::slice::from_ref(&d), None).await, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let owners: Vec<Owner> = list_afresh(&token).into_iter().map(|o| o.owner).collect();
        let staged = |kid: &Kid| {
            owners
                .iter()
                .any(|o| matches!(o, Owner::Staged { kid: k, .. } if k == kid))
        };
        assert!(staged(&young), "a young staged key was destroyed");
        assert!(
            staged(&other),
            "another key ring's staged key was destroyed"
        );
        let pending_left = owners.contains(&Owner::Pending(old_pending.clone()));
        if !staged(&old) && !pending_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader left stale leftovers in the token: staged {old}: {}, pending \
             {old_pending}: {pending_left}",
            staged(&old)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! The real binary, from outside, over HTTP: the promise (tokens verify for
//! their whole lifetime across rotations, checked with an independent JOSE
//! implementation), HTTP caching, the error paths, operator actions,
//! restarts and `check-config`.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::Method;
use hyper::header::{self, HeaderName};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use support::daemon::{BIN, Daemon, FAST, write_config};
use support::member_names;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn alg_of(name: &str) -> Algorithm {
    support::jwt_algorithm(name.parse().unwrap()).unwrap_or_else(|| panic!("{name}"))
}

/// A strict verifier: keeps the JWK Set for its Cache-Control max-age and
/// never refetches early on an unknown kid (like the Kubernetes API server).
struct Verifier {
    set: JwkSet,
    fetched: Instant,
    max_age: Duration,
}

impl Verifier {
    async fn new(d: &Daemon) -> Verifier {
        let mut v = Verifier {
            set: JwkSet { keys: vec![] },
            fetched: Instant::now(),
            max_age: Duration::ZERO,
        };
        v.fetch(d).await;
        v
    }

    async fn fetch(&mut self, d: &Daemon) {
        let r = d.get_public("/.well-known/jwks.json").await;
        assert_eq!(r.status, 200);
        let cc = r.header(header::CACHE_CONTROL).unwrap().to_owned();
        let secs: u64 = cc.rsplit("max-age=").next().unwrap().parse().unwrap();
        self.max_age = Duration::from_secs(secs);
        self.set = serde_json::from_slice(&r.body).unwrap();
        self.fetched = Instant::now();
    }

    async fn refresh_if_stale(&mut self, d: &Daemon) {
        if self.fetched.elapsed() >= self.max_age {
            self.fetch(d).await;
        }
    }

    fn verify(&self, token: &str, alg: &str) -> Result<Value, String> {
        let head = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = head.kid.ok_or("no kid")?;
        let jwk = self
            .set
            .find(&kid)
            .ok_or(format!("kid {kid} not in the cached JWKS"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut v = Validation::new(alg_of(alg));
        v.leeway = 1;
        v.validate_aud = false;
        jsonwebtoken::decode::<Value>(token, &key, &v)
            .map(|t| t.claims)
            .map_err(|e| format!("{kid}: {e}"))
    }
}

/// An auth server that pulls the active key and signs itself, honouring the
/// key's Cache-Control max-age.
struct SelfSigner {
    cached: HashMap<String, (Instant, Duration, String, String, u64)>,
}

impl SelfSigner {
    async fn sign(&mut self, d: &Daemon, alg: &str) -> String {
        let stale = self
            .cached
            .get(alg)
            .is_none_or(|(at, age, ..)| at.elapsed() >= *age);
        if stale {
            let r = d.active_key(alg).await;
            assert_eq!(r.status, 200, "{}", r.error_message());
            let cc = r.header(header::CACHE_CONTROL).unwrap().to_owned();
            assert!(cc.starts_with("private, max-age="), "{cc}");
            let secs: u64 = cc.rsplit("max-age=").next().unwrap().parse().unwrap();
            let v = r.json().unwrap();
            self.cached.insert(
                alg.to_owned(),
                (
                    Instant::now(),
                    Duration::from_secs(secs),
                    v["kid"].as_str().unwrap().to_owned(),
                    v["pem"].as_str().unwrap().to_owned(),
                    v["max_token_lifetime_seconds"].as_u64().unwrap(),
                ),
            );
        }
        let (_, _, kid, pem, life) = &self.cached[alg];
        let key = match alg {
            "ES256" => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg_of(alg));
        header.kid = Some(kid.clone());
        let now = unix_now() as u64;
        let claims = json!({"sub": "self-signed", "iat": now, "exp": now + life});
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verify_for_their_whole_lifetime_across_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), FAST).await;
    let mut verifier = Verifier::new(&d).await;
    let mut signer = SelfSigner {
        cached: HashMap::new(),
    };
    // (token, alg, exp)
    let mut tokens: Vec<(String, &str, f64, &str)> = Vec::new();
    let mut seen_kids: HashMap<&str, Vec<String>> = HashMap::new();
    let mut checks = 0usize;
    let sign_until = Instant::now() + Duration::from_secs(11);
    loop {
        let signing = Instant::now() < sign_until;
        if signing {
            for alg in ["ES256", "RS256"] {
                let r = d.sign(alg, json!({"sub": "alice"})).await;
                assert_eq!(r.status, 200, "{}", r.error_message());
                let v = r.json().unwrap();
                let token = v["token"].as_str().unwrap().to_owned();
                let claims: Value = verifier
                    .verify(&token, alg)
                    .unwrap_or_else(|e| panic!("a fresh token does not verify: {e}"));
                assert_eq!(
                    claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
                    4
                );
                let kids = seen_kids.entry(alg).or_default();
                let kid = v["kid"].as_str().unwrap().to_owned();
                if kids.last() != Some(&kid) {
                    kids.push(kid);
                }
                tokens.push((token, alg, claims["exp"].as_f64().unwrap(), "jwksd"));
                let own = signer.sign(&d, alg).await;
                let exp = verifier
                    .verify(&own, alg)
                    .map(|c| c["exp"].as_f64().unwrap());
                tokens.push((own, alg, exp.unwrap_or(unix_now() + 4.0), "self"));
            }
        }
        verifier.refresh_if_stale(&d).await;
        let now = unix_now();
        let live: Vec<_> = tokens.iter().filter(|t| now < t.2).collect();
        if !signing && live.is_empty() {
            break;
        }
        for (token, alg, exp, who) in live {
            checks += 1;
            if let Err(e) = verifier.verify(token, alg) {
                panic!(
                    "a {who}-signed {alg} token failed {:.2} s before it expires: {e}\n{}",
                    exp - now,
                    d.log_text()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several rotations happened while tokens were in flight.
    for alg in ["ES256", "RS256"] {
        assert!(
            seen_kids[alg].len() >= 3,
            "{alg} kids: {:?}",
            seen_kids[alg]
        );
    }
    assert!(checks > 500, "only {checks} verifications");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_http_caching_etag_304_and_head() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        "rotation:\n  every: 1h\njwks:\n  cache_max_age: 1s\ntokens:\n  clock_skew: 1s\n",
    )
    .await;
    let url = format!("{}/.well-known/jwks.json", d.public);
    let r = d.client.get(&url, None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header(header::CONTENT_TYPE), Some("application/json"));
    assert_eq!(r.header(header::CACHE_CONTROL), Some("public, max-age=1"));
    let etag = r.header(header::ETAG).unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "{etag}"
    );
    let body = r.body.clone();
    let jwks: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4);
    for k in jwks["keys"].as_array().unwrap() {
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(k.get(private).is_none(), "{private} published: {k}");
        }
        assert_eq!(k["use"], "sig");
    }

    async fn inm_get(d: &Daemon, url: &str, v: &str) -> jwksd::client::Reply {
        d.client
            .send(Method::GET, url, None, &[(header::IF_NONE_MATCH, v)], None)
            .await
            .unwrap()
    }
    for matching in [
        etag.clone(),
        format!("\"nope\", {etag}"),
        "*".into(),
        format!("W/{etag}"),
    ] {
        let r = inm_get(&d, &url, &matching).await;
        assert_eq!(r.status, 304, "If-None-Match: {matching}");
        assert!(r.body.is_empty());
        assert_eq!(r.header(header::ETAG), Some(etag.as_str()));
        assert_eq!(r.header(header::CACHE_CONTROL), Some("public, max-age=1"));
    }
    let r = inm_get(&d, &url, "\"other\"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);

    let head = d
        .client
        .send(Method::HEAD, &url, None, &[], None)
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header(header::ETAG), Some(etag.as_str()));
    assert_eq!(
        head.header(header::CONTENT_LENGTH),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        head.header(header::CACHE_CONTROL),
        Some("public, max-age=1")
    );

    // Same set, same tag; a changed set, a new tag.
    let again = d.client.get(&url, None).await.unwrap();
    assert_eq!(again.header(header::ETAG), Some(etag.as_str()));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = d.rotate(json!({})).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    // The new next keys are generated beside the rotation: the set (and
    // its tag) changes when they are published.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = d.client.get(&url, None).await.unwrap();
        if after.header(header::ETAG) != Some(etag.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "the ETag did not change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(inm_get(&d, &url, &etag).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_public_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), FAST).await;
    let r = d.get_public("/healthz").await;
    assert_eq!(r.status, 200);
    let r = d.get_public("/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["ready"], true);
    let r = d.get_public("/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json().unwrap()["code"], "not_found");
    let r = d
        .client
        .send(
            Method::DELETE,
            &format!("{}/.well-known/jwks.json", d.public),
            None,
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header(header::ALLOW), Some("GET, HEAD, OPTIONS"));
    assert!(r.json().unwrap()["error"].is_string());
    // The admin API is not on the public listener.
    assert_eq!(d.get_public("/v1/keys").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_authentication_and_roles() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), FAST).await;
    let keys = format!("{}/v1/keys", d.admin);
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token-wrong-token"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
    ] {
        let extra: Vec<(HeaderName, &str)> =
            auth.iter().map(|a| (header::AUTHORIZATION, *a)).collect();
        let r = d
            .client
            .send(Method::GET, &keys, None, &extra, None)
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(
            r.header(header::WWW_AUTHENTICATE)
                .unwrap()
                .starts_with("Bearer"),
            "{auth:?}"
        );
        assert_eq!(r.json().unwrap()["code"], "unauthorized");
    }
    // The signer may not manage keys.
    let r = d.client.get(&keys, Some(&d.signer)).await.unwrap();
    assert_eq!(r.status, 403);
    let r = d
        .client
        .post_json(
            &format!("{}/v1/rotate", d.admin),
            Some(&d.signer),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    // The operator can do what the signer can.
    let r = d
        .client
        .get(
            &format!("{}/v1/keys/active?alg=ES256", d.admin),
            Some(&d.operator),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // Token files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["operator.token", "signer.token"] {
        let m = std::fs::metadata(tmp.path().join("keys").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600, "{f}");
    }
    // Metrics need no token and count the failures.
    let m = d
        .client
        .get(&format!("{}/metrics", d.admin), None)
        .await
        .unwrap();
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(
        text.contains("jwksd_admin_auth_failures_total{status=\"401\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("jwksd_admin_auth_failures_total{status=\"403\"} 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_refuses_what_retention_cannot_cover() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        &FAST.replace(
            "tokens:\n",
            "tokens:\n  issuer: https://auth.example.com\n  audience: api.example.com\n",
        ),
    )
    .await;
    let now = unix_now() as i64;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!(["not", "an", "object"]), 422, "claims_not_object"),
        (json!({"exp": now - 10}), 422, "exp_in_past"),
        (json!({"exp": now + 3600}), 422, "lifetime_too_long"),
        (json!({"iat": now + 3600}), 422, "iat_in_future"),
        (json!({"exp": "soon"}), 422, "invalid_claims"),
    ];
    for (claims, status, code) in cases {
        let r = d.sign("ES256", claims.clone()).await;
        assert_eq!(r.status, status, "{claims}: {}", r.error_message());
        assert_eq!(r.json().unwrap()["code"], code, "{claims}");
    }
    let url = format!("{}/v1/sign", d.admin);
    let raw = |body: &'static str| {
        d.client.send(
            Method::POST,
            &url,
            Some(&d.signer),
            &[],
            Some(bytes::Bytes::from_static(body.as_bytes())),
        )
    };
    let r = raw("{not json").await.unwrap();
    assert_eq!(
        (
            r.status.as_u16(),
            r.json().unwrap()["code"].as_str().unwrap()
        ),
        (400, "bad_json")
    );
    let r = d.sign("ES512", json!({})).await;
    assert_eq!(r.json().unwrap()["code"], "unknown_alg");
    // Known, but not among this daemon's algorithms.
    let r = d.sign("ES384", json!({})).await;
    assert_eq!(r.json().unwrap()["code"], "alg_not_configured");
    let r = d
        .client
        .post_json(&url, Some(&d.signer), &json!({"claims": {}}))
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["code"], "alg_required");
    let deep = format!(
        "{{\"alg\":\"ES256\",\"claims\":{{\"a\":{}{}}}}}",
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let r = d
        .client
        .send(Method::POST, &url, Some(&d.signer), &[], Some(deep.into()))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let big = vec![b' '; 70 * 1024];
    let r = d
        .client
        .send(Method::POST, &url, Some(&d.signer), &[], Some(big.into()))
        .await
        .unwrap();
    assert_eq!(r.status, 413);

    // Defaults: iat, exp, jti, iss and aud.
    let r = d.sign("RS256", json!({"sub": "bob"})).await;
    assert_eq!(r.status, 200);
    let token = r.json().unwrap()["token"].as_str().unwrap().to_owned();
    let v = Verifier::new(&d).await;
    let mut val = Validation::new(Algorithm::RS256);
    val.set_audience(&["api.example.com"]);
    val.set_issuer(&["https://auth.example.com"]);
    let jwks = &v.set;
    let head = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(head.typ.as_deref(), Some("JWT"));
    let key = DecodingKey::from_jwk(jwks.find(head.kid.as_deref().unwrap()).unwrap()).unwrap();
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &val)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "bob");
    assert!(claims["jti"].as_str().unwrap().len() >= 16);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        4
    );
    let r = d.sign("RS256", json!({"sub": "bob"})).await;
    let other = r.json().unwrap()["token"].as_str().unwrap().to_owned();
    let c2 = jsonwebtoken::decode::<Value>(&other, &key, &val)
        .unwrap()
        .claims;
    assert_ne!(c2["jti"], claims["jti"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rotation_waits_for_publish_ahead_and_revocation_is_immediate() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        "rotation:\n  every: 1h\njwks:\n  cache_max_age: 2s\ntokens:\n  clock_skew: 1s\n",
    )
    .await;
    // The next key was published moments ago: publish_ahead is 3 s.
    let r = d.rotate(json!({"alg": "ES256"})).await;
    assert_eq!(r.status, 409, "{}", r.error_message());
    let v = r.json().unwrap();
    assert_eq!(v["code"], "too_early");
    let earliest = v["earliest_safe_rotation"].as_str().unwrap().to_owned();
    assert!(earliest.ends_with('Z'));
    let out = d.cli(&["rotate", "--alg", "ES256"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("jwksd: ") && err.trim().lines().count() == 1,
        "{err}"
    );

    let before = d.keys().await;
    let next_kid = before["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "ES256" && k["state"] == "next")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    // Wait until the earliest safe time, then rotate with the CLI.
    let at = chrono::DateTime::parse_from_rfc3339(&earliest)
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    tokio::time::sleep(Duration::from_secs_f64((at - unix_now()).max(0.0) + 0.1)).await;
    let out = d.cli(&["rotate", "--alg", "ES256"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&next_kid));
    let active = d.active_key("ES256").await.json().unwrap();
    assert_eq!(active["kid"], next_kid.as_str());

    // A forced rotation goes through at once and is recorded.
    let r = d.rotate(json!({"alg": "RS256"})).await;
    assert_eq!(
        (
            r.status.as_u16(),
            &r.json().unwrap()["rotated"][0]["forced"]
        ),
        (200, &json!(false))
    );
    // Once the new next key exists, rotating again so soon is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.keys().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["alg"] == "RS256" && k["state"] == "next")
    {
        assert!(Instant::now() < deadline, "no new RS256 next key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.rotate(json!({"alg": "RS256"})).await.status, 409);
    let r = d.rotate(json!({"alg": "RS256", "force": true})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["rotated"][0]["forced"], true);

    // Revoking the active key: gone from the JWKS at once, next promoted.
    let new_next = d.keys().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "ES256" && k["state"] == "next")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = d.cli(&["revoke", &next_kid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kids = d.kids().await;
    assert!(!kids.contains(&next_kid));
    let active = d.active_key("ES256").await.json().unwrap();
    assert_eq!(active["kid"], new_next.as_str());
    let keys = d.keys().await;
    let rec = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == next_kid.as_str())
        .unwrap();
    assert_eq!(rec["state"], "revoked");
    let promoted = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == new_next.as_str())
        .unwrap();
    assert_eq!(promoted["early_activation"], "emergency");
    // Tokens now carry the promoted kid.
    assert_eq!(
        d.sign("ES256", json!({})).await.json().unwrap()["kid"],
        new_next.as_str()
    );

    // Unknown, invalid and repeated revocations.
    assert_eq!(
        d.revoke("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .await
            .status,
        404
    );
    let r = d.revoke("..%2F..%2Fetc").await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.json().unwrap()["code"].as_str().unwrap()
        ),
        (400, "invalid_kid")
    );
    assert_eq!(d.revoke(&next_kid).await.status, 409);
    let out = d.cli(&["revoke", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]);
    assert_eq!(out.status.code(), Some(3));

    // The operator's table names every key and what comes next.
    let out = d.cli(&["keys"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.contains(&next_kid)
            && table.contains("revoked")
            && table.contains("next transitions"),
        "{table}"
    );
    let out = d.cli(&["keys", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["keys"].as_array().unwrap().len() >= 6);
    // Every admin action is in the log, with the role.
    let rev = d.wait_events("revocation requested").await;
    assert!(
        rev.iter()
            .any(|e| e["role"] == "operator" && e["kid"] == next_kid.as_str()),
        "{rev:?}"
    );
    let transitions = d.events("key transition");
    assert!(transitions.iter().any(|e| e["kid"] == next_kid.as_str()
        && e["to"] == "revoked"
        && e["trigger"] == "revoke"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_key_after_sigterm_and_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        tmp.path(),
        "rotation:\n  every: 1h\njwks:\n  cache_max_age: 1s\ntokens:\n  clock_skew: 1s\n",
    )
    .await;
    let before = d.kids().await;
    let token = d.sign("ES256", json!({})).await.json().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = d.stop();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    d.restart().await;
    assert_eq!(d.kids().await, before);
    let v = Verifier::new(&d).await;
    v.verify(&token, "ES256").unwrap();
    let loaded = d.events("key store loaded");
    assert_eq!(loaded[0]["keys"], 4);
    d.kill();
    d.restart().await;
    assert_eq!(d.kids().await, before);
    // No key was generated on either restart.
    assert!(d.events("key transition").is_empty(), "{}", d.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_keys_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), FAST).await;
    let out = std::process::Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&d.config)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
}

#[test]
fn check_config_rejects_each_bad_config_with_a_useful_message() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "rotation:\n  schedule: \"0 3 * * *\"\n",
            &["rotation.schedule", "5 fields"],
        ),
        (
            "rotation:\n  schedule: \"0 0 25 * * *\"\n",
            &["rotation.schedule", "outside 0-23"],
        ),
        (
            "rotation:\n  every: 1m\n",
            &["rotation.every", "publish_ahead"],
        ),
        (
            "rotation:\n  schedule: \"0 * * * * *\"\n",
            &["rotation.schedule", "publish_ahead"],
        ),
        (
            "jwks:\n  cache_max_age: 5m\n  publish_ahead: 1m\n",
            &["jwks.publish_ahead", "line 3"],
        ),
        (
            "tokens:\n  max_lifetime: 3600\n",
            &["tokens.max_lifetime", "line 2", "units"],
        ),
        ("tokens:\n  max_lifetime: 1M\n", &["\"M\"", "minutes"]),
        ("jwks:\n  max_age: 5m\n", &["max_age", "line 2"]),
        (
            "rotation:\n  every: 24h\n  schedule: \"0 0 3 * * *\"\n",
            &["not both"],
        ),
        ("rsa_bits: 1024\n", &["rsa_bits", "2048"]),
        ("algorithms: [HS256]\n", &["HS256"]),
        (
            "jwks:\n  cors_allow_origins: [\"https://app.example/\"]\n",
            &[
                "jwks.cors_allow_origins (line 2)",
                "entry 1",
                "scheme://host[:port]",
            ],
        ),
    ];
    for (i, (yaml, wants)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(BIN)
            .arg("check-config")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml:?} accepted");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for w in *wants {
            assert!(err.contains(w), "{yaml:?}: {err:?} lacks {w:?}");
        }
    }
    // A huge file is refused unread.
    let huge = tmp.path().join("huge.yaml");
    std::fs::write(&huge, "# padding\n".repeat(200_000)).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("check-config")
        .arg("-c")
        .arg(&huge)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than 1 MiB"));
    let good = write_config(tmp.path(), FAST);
    let out = std::process::Command::new(BIN)
        .arg("check-config")
        .arg("-c")
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("published at least 2s before they sign"),
        "{text}"
    );
    assert!(text.contains("stays published 8s"), "{text}");
    // The built-in default.
    let out = std::process::Command::new(BIN)
        .arg("check-config")
        .current_dir(tmp.path())
        .env_remove("JWKSD_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("built-in defaults: valid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keys_with_a_master_key_and_a_wrong_one() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), FAST);
    let mk = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";
    let mut d = Daemon::start_with(tmp.path(), &config, &[("JWKSD_MASTER_KEY", mk)]).await;
    let kids_before = d.kids().await;
    for k in &kids_before {
        let f = std::fs::read_to_string(tmp.path().join("keys").join(format!("{k}.key"))).unwrap();
        assert!(f.contains("jwksd-sealed-v1") && !f.contains("PRIVATE KEY"));
    }
    d.stop();
    let out = std::process::Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .env("JWKSD_MASTER_KEY", "0f".repeat(32))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master key"), "{err}");
    // Nothing was regenerated.
    for k in &kids_before {
        assert!(tmp.path().join("keys").join(format!("{k}.key")).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_moves_a_stopped_store_to_a_new_master_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), FAST);
    let old = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";
    let new = "5a".repeat(32);
    let mut d = Daemon::start_with(tmp.path(), &config, &[("JWKSD_MASTER_KEY", old)]).await;
    let kids = d.kids().await;
    // Not while the daemon holds the store.
    let run = |envs: &[(&str, &str)]| {
        let mut c = std::process::Command::new(BIN);
        c.arg("rekey").arg("-c").arg(&config);
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[("JWKSD_MASTER_KEY", old), ("JWKSD_NEW_MASTER_KEY", &new)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("pid {}", d.pid())));
    d.stop();
    let out = run(&[("JWKSD_MASTER_KEY", old), ("JWKSD_NEW_MASTER_KEY", &new)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{} keys re-sealed", kids.len()))
    );
    // Again: nothing left to do.
    let out = run(&[("JWKSD_MASTER_KEY", old), ("JWKSD_NEW_MASTER_KEY", &new)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 keys re-sealed"));
    let d = Daemon::start_with(tmp.path(), &config, &[("JWKSD_MASTER_KEY", &new)]).await;
    assert_eq!(d.kids().await, kids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_out_keys_stay_published_for_retention_then_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), FAST).await;
    let first = d.active_key("ES256").await.json().unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    // Wait for the rotation that makes it retiring.
    let deadline = Instant::now() + Duration::from_secs(15);
    let retire_at = loop {
        let keys = d.keys().await;
        let k = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == first.as_str())
            .cloned()
            .unwrap();
        if k["state"] == "retiring" {
            break chrono::DateTime::parse_from_rfc3339(k["retire_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis() as f64
                / 1000.0;
        }
        assert!(Instant::now() < deadline, "never rotated out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Published until its retire time, gone right after.
    while unix_now() < retire_at - 0.3 {
        assert!(
            d.kids().await.contains(&first),
            "left the JWKS {:.2} s early",
            retire_at - unix_now()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = retire_at + 1.5;
    while d.kids().await.contains(&first) {
        assert!(
            unix_now() < deadline,
            "still published 1.5 s after its retire time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = d.events("key transition");
    assert!(
        t.iter().any(|e| e["kid"] == first.as_str()
            && e["to"] == "retired"
            && e["trigger"] == "retention"),
        "{t:?}"
    );

    // Revoking a retiring key takes it out at once.
    let keys = d.keys().await;
    let retiring = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "retiring")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(d.revoke(&retiring).await.status, 200);
    assert!(!d.kids().await.contains(&retiring));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_key_etag_changes_with_any_part_of_the_body_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let body = |lifetime: &str| {
        format!(
            "rotation:\n  every: 1h\ntokens:\n  max_lifetime: {lifetime}\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\n"
        )
    };
    let mut d = Daemon::start(tmp.path(), &body("4s")).await;
    let first = d.active_key("ES256").await;
    assert_eq!(first.status, 200, "{}", first.error_message());
    assert_eq!(first.json().unwrap()["max_token_lifetime_seconds"], 4);
    let etag = first.header(header::ETAG).unwrap().to_owned();
    assert_eq!(d.stop().code(), Some(0));
    write_config(tmp.path(), &body("8s"));
    d.restart().await;
    // The raised lifetime is promised once the planner's first step has
    // recorded it (until then the key's record says 4 s, and the body, so
    // its tag, is the old one).
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.active_key("ES256").await.json().unwrap()["max_token_lifetime_seconds"] != 8 {
        assert!(Instant::now() < deadline, "8s never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = d.active_key_if_none_match("ES256", &etag).await;
    assert_eq!(r.status, 200, "a stale ETag matched the changed body");
    let v = r.json().unwrap();
    assert_eq!(v["kid"], first.json().unwrap()["kid"], "same key");
    assert_eq!(v["max_token_lifetime_seconds"], 8);
    assert_ne!(r.header(header::ETAG), Some(etag.as_str()));
    // An unchanged body keeps its tag.
    let new_tag = r.header(header::ETAG).unwrap().to_owned();
    let again = d.active_key_if_none_match("ES256", &new_tag).await;
    assert_eq!(again.status, 304);
}

/// The `Access-Control-*` headers of an answer, by name.
fn cors_of(r: &jwksd::client::Reply) -> HashMap<String, String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-"))
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect()
}

async fn send_with(
    d: &Daemon,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    headers: &[(HeaderName, &str)],
) -> jwksd::client::Reply {
    d.client
        .send(method, url, bearer, headers, None)
        .await
        .unwrap()
}

/// The CORS preflight headers for an allowed origin, `allow_origin` given.
fn preflight(allow_origin: &str) -> HashMap<String, String> {
    [
        ("access-control-allow-origin", allow_origin),
        ("access-control-allow-methods", "GET, HEAD, OPTIONS"),
        ("access-control-allow-headers", "If-None-Match"),
        ("access-control-max-age", "7200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn simple(allow_origin: &str) -> HashMap<String, String> {
    [
        ("access-control-allow-origin", allow_origin),
        ("access-control-expose-headers", "ETag"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// CORS on the JWK Set (`jwks.cors_allow_origins`): `*` by default on GET,
/// HEAD (304 included) and the OPTIONS preflight; nothing on the health
/// checks or anywhere on the admin listener, whose OPTIONS is a 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwk_set_answers_cors_for_any_origin_by_default_and_the_admin_listener_never() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &format!("algorithms: [ES256]\n{FAST}")).await;
    let url = format!("{}/.well-known/jwks.json", d.public);
    let origin = (header::ORIGIN, "https://spa.example");
    for method in [Method::GET, Method::HEAD] {
        for headers in [&[origin.clone()][..], &[]] {
            let r = send_with(&d, method.clone(), &url, None, headers).await;
            assert_eq!(r.status, 200, "{method}");
            assert_eq!(cors_of(&r), simple("*"), "{method} {headers:?}");
            assert!(r.header(header::VARY).is_none());
        }
    }
    let etag = d.client.get(&url, None).await.unwrap();
    let etag = etag.header(header::ETAG).unwrap();
    let r = send_with(
        &d,
        Method::GET,
        &url,
        None,
        &[origin.clone(), (header::IF_NONE_MATCH, etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(cors_of(&r), simple("*"));

    let r = send_with(
        &d,
        Method::OPTIONS,
        &url,
        None,
        &[
            origin.clone(),
            (header::ACCESS_CONTROL_REQUEST_METHOD, "GET"),
            (header::ACCESS_CONTROL_REQUEST_HEADERS, "if-none-match"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header(header::ALLOW), Some("GET, HEAD, OPTIONS"));
    assert_eq!(cors_of(&r), preflight("*"));

    // Only the JWK Set.
    for path in ["/healthz", "/readyz"] {
        let r = send_with(
            &d,
            Method::GET,
            &format!("{}{path}", d.public),
            None,
            std::slice::from_ref(&origin),
        )
        .await;
        assert!(cors_of(&r).is_empty(), "{path}");
        let r = send_with(
            &d,
            Method::OPTIONS,
            &format!("{}{path}", d.public),
            None,
            std::slice::from_ref(&origin),
        )
        .await;
        assert_eq!(r.status, 405, "{path}");
        assert!(cors_of(&r).is_empty(), "{path}");
    }

    // Nothing CORS on the admin listener: not on answers, errors or
    // preflights, whatever the token.
    let preflight_headers = [
        origin.clone(),
        (header::ACCESS_CONTROL_REQUEST_METHOD, "POST"),
        (header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization"),
    ];
    for (path, token) in [
        ("/v1/keys/active?alg=ES256", Some(d.signer.as_str())),
        ("/v1/keys", Some(d.operator.as_str())),
        ("/v1/keys", None),
        ("/metrics", None),
        ("/v1/sign", Some(d.signer.as_str())),
        ("/v1/rotate", Some(d.operator.as_str())),
        ("/.well-known/jwks.json", None),
    ] {
        let url = format!("{}{path}", d.admin);
        let r = send_with(&d, Method::GET, &url, token, std::slice::from_ref(&origin)).await;
        assert!(cors_of(&r).is_empty(), "GET {path}: {:?}", r.headers);
        let r = send_with(&d, Method::OPTIONS, &url, token, &preflight_headers).await;
        assert!(!r.status.is_success(), "OPTIONS {path}: {}", r.status);
        assert!(cors_of(&r).is_empty(), "OPTIONS {path}: {:?}", r.headers);
    }
    let r = send_with(
        &d,
        Method::OPTIONS,
        &format!("{}/v1/sign", d.admin),
        None,
        &preflight_headers,
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header(header::ALLOW), Some("POST"));
}

/// An explicit origin list echoes a listed `Origin` (with `Vary: Origin`)
/// and sends no CORS header to others; `[]` turns CORS off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwk_set_cors_follows_an_origin_list_and_an_empty_list_turns_it_off() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        "algorithms: [ES256]\njwks:\n  cors_allow_origins: [\"https://app.example\", \"http://localhost:3000\"]\n",
    )
    .await;
    let url = format!("{}/.well-known/jwks.json", d.public);
    for listed in ["https://app.example", "http://localhost:3000"] {
        for method in [Method::GET, Method::HEAD] {
            let r = send_with(&d, method.clone(), &url, None, &[(header::ORIGIN, listed)]).await;
            assert_eq!(r.status, 200);
            assert_eq!(cors_of(&r), simple(listed), "{method} {listed}");
            assert_eq!(r.header(header::VARY), Some("Origin"));
        }
        let r = send_with(&d, Method::OPTIONS, &url, None, &[(header::ORIGIN, listed)]).await;
        assert_eq!(r.status, 204);
        assert_eq!(cors_of(&r), preflight(listed));
        assert_eq!(r.header(header::VARY), Some("Origin"));
    }
    for other in [
        Some("https://evil.example"),
        Some("https://app.example:8443"),
        Some("null"),
        None,
    ] {
        let headers: Vec<(HeaderName, &str)> =
            other.map(|o| (header::ORIGIN, o)).into_iter().collect();
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            let r = send_with(&d, method.clone(), &url, None, &headers).await;
            assert!(r.status.is_success(), "{method} {other:?}");
            assert!(
                cors_of(&r).is_empty(),
                "{method} {other:?}: {:?}",
                r.headers
            );
            // Caches keep answers per origin.
            assert_eq!(r.header(header::VARY), Some("Origin"));
        }
    }
    drop(d);

    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        "algorithms: [ES256]\njwks:\n  cors_allow_origins: []\n",
    )
    .await;
    let url = format!("{}/.well-known/jwks.json", d.public);
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        let r = send_with(
            &d,
            method.clone(),
            &url,
            None,
            &[
                (header::ORIGIN, "https://app.example"),
                (header::ACCESS_CONTROL_REQUEST_METHOD, "GET"),
            ],
        )
        .await;
        assert!(r.status.is_success(), "{method}");
        assert!(cors_of(&r).is_empty(), "{method}: {:?}", r.headers);
        assert!(r.header(header::VARY).is_none());
    }
    let r = send_with(&d, Method::OPTIONS, &url, None, &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header(header::ALLOW), Some("GET, HEAD, OPTIONS"));
}

/// The active key's private scalar `d`, base64url, from its key file (an
/// unsealed store).
fn d_of(dir: &std::path::Path, kid: &str, alg: &str) -> String {
    use base64::Engine as _;
    let pem = std::fs::read(dir.join("keys").join(format!("{kid}.key"))).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(support::private_scalar(alg, &pem))
}

/// `signing_key.export: false`: `/v1/keys/active` answers the key's public
/// half and its times, with no private member at all, `/v1/sign` still
/// signs (verified with jsonwebtoken against the JWK Set), and a cached
/// answer of the exporting daemon is not revalidated by the sign-only one.
/// The default (export) answer is the one it always was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_only_mode_hands_out_no_private_key_and_still_signs() {
    let tmp = tempfile::tempdir().unwrap();
    let body = |export: &str| {
        format!(
            "rotation:\n  every: 1h\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n{export}"
        )
    };
    let mut d = Daemon::start(tmp.path(), &body("")).await;
    let mut exported_tags = HashMap::new();
    for alg in ["ES256", "RS256"] {
        let r = d.active_key(alg).await;
        assert_eq!(r.status, 200, "{}", r.error_message());
        let v = r.json().unwrap();
        let members: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            members,
            [
                "kid",
                "alg",
                "jwk",
                "pem",
                "activated_at",
                "max_token_lifetime_seconds",
                "next"
            ],
            "the default answer is unchanged: {v}"
        );
        let kid = v["kid"].as_str().unwrap();
        assert_eq!(v["jwk"]["d"], d_of(tmp.path(), kid, alg).as_str());
        assert!(v["pem"].as_str().unwrap().contains("PRIVATE KEY"));
        exported_tags.insert(alg, r.header(header::ETAG).unwrap().to_owned());
    }
    assert!(!d.wait_events("signing key pulled").await.is_empty());
    let out = std::process::Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&d.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("the signing key is exported"),
        "check-config: {text}"
    );

    assert_eq!(d.stop().code(), Some(0));
    write_config(tmp.path(), &body("  export: false\n"));
    let out = std::process::Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&d.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("the signing key is not exported"),
        "check-config: {text}"
    );
    d.restart().await;
    let jwks = d.jwks().await;
    for alg in ["ES256", "RS256"] {
        let url = format!("{}/v1/keys/active?alg={alg}", d.admin);
        let old_tag = exported_tags[alg].as_str();
        let r = d.active_key_if_none_match(alg, old_tag).await;
        assert_eq!(
            r.status, 200,
            "the exporting daemon's cached answer was revalidated"
        );
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let kid = v["kid"].as_str().unwrap().to_owned();
        let mut names = Vec::new();
        member_names(&v, &mut names);
        for private in [
            "d", "p", "q", "dp", "dq", "qi", "oth", "k", "pem", "private", "jwk",
        ] {
            assert!(
                !names.iter().any(|n| n == private),
                "{alg}: {private} in the sign-only answer: {text}"
            );
        }
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(
            !text.contains(&d_of(tmp.path(), &kid, alg)),
            "{alg}: the private scalar in the answer"
        );
        let members: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            members,
            [
                "kid",
                "alg",
                "export",
                "public_jwk",
                "activated_at",
                "max_token_lifetime_seconds",
                "next"
            ],
            "{v}"
        );
        assert_eq!(v["export"], false);
        assert_eq!(v["alg"], alg);
        assert_eq!(v["max_token_lifetime_seconds"], 4);
        assert!(v["next"]["kid"].is_string(), "{v}");
        // The public JWK is the JWK Set's entry for the kid.
        let published = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .expect("the active key is published");
        assert_eq!(&v["public_jwk"], published);
        let cc = r.header(header::CACHE_CONTROL).unwrap();
        assert!(cc.starts_with("private, max-age="), "{cc}");
        let tag = r.header(header::ETAG).unwrap().to_owned();
        assert_ne!(tag, old_tag);
        let again = d.active_key_if_none_match(alg, &tag).await;
        assert_eq!(again.status, 304);
        let head = d
            .client
            .send(Method::HEAD, &url, Some(&d.signer), &[], None)
            .await
            .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header(header::ETAG), Some(tag.as_str()));

        // Signing goes on, with the key the answer names.
        let r = d.sign(alg, json!({"sub": "sign-only"})).await;
        assert_eq!(r.status, 200, "{}", r.error_message());
        let s = r.json().unwrap();
        assert_eq!(s["kid"], kid.as_str());
        let token = s["token"].as_str().unwrap();
        let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let head = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(head.kid.as_deref(), Some(kid.as_str()));
        let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
        let mut val = Validation::new(alg_of(alg));
        val.validate_aud = false;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &val)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "sign-only");
    }
    // (The log reaches the test through a reader thread.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        d.events("signing key pulled").is_empty(),
        "no private key was pulled"
    );
}

//! Every algorithm jwksd signs, from outside, with two JOSE implementations
//! independent of it and of each other: the jsonwebtoken crate (RustCrypto)
//! and PyJWT (Python's cryptography, on OpenSSL), run as one Python process
//! per test (tests/verify_pyjwt.py) that verifies many tokens. Tokens from
//! `POST /v1/sign` and tokens signed by clients with the key pulled from
//! `GET /v1/keys/active` verify against the served JWK Set across
//! rotations; the JWK Set's members are what each algorithm needs. And the
//! runbook's procedure for moving issuers to another algorithm
//! ("Moving issuers to another algorithm"), run exactly, across restarts,
//! with no failed verification.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use jwksd::keys::{Alg, KeyKind, PublicKey};
use serde_json::{Value, json};
use support::daemon::{Daemon, FAST, write_config};

/// The Debian packages PyJWT comes from (scripts/test installs them).
const PYJWT_PACKAGES: &str = "python3-jwt and python3-cryptography";

/// FAST's publish_ahead: jwks.cache_max_age 1 s + tokens.clock_skew 1 s.
const PUBLISH_AHEAD: Duration = Duration::from_secs(2);

/// FAST's retention of a key after it stops signing: signing_key.cache_max_age
/// 1 s + tokens.max_lifetime 4 s + clock_skew 1 s + the 2 s commit window.
const RETENTION: Duration = Duration::from_secs(8);

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn algs_config(algs: &[Alg]) -> String {
    let names: Vec<&str> = algs.iter().map(|a| a.as_str()).collect();
    format!("algorithms: [{}]\n{FAST}", names.join(", "))
}

/// PyJWT in a Python subprocess speaking JSON lines (tests/verify_pyjwt.py).
struct PyJwt {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version: String,
}

impl PyJwt {
    /// Starts the script; fails, naming the Debian packages, when PyJWT or
    /// cryptography cannot be imported, and when PyJWT cannot verify one of
    /// jwksd's algorithms at all.
    fn start() -> PyJwt {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_pyjwt.py");
        let missing = |why: String| -> ! {
            panic!(
                "PyJWT is needed as the second JOSE implementation and is not usable ({why}): \
                 install Debian's {PYJWT_PACKAGES} (apt-get install python3-jwt \
                 python3-cryptography; scripts/test does)"
            )
        };
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| missing(format!("cannot run /usr/bin/python3: {e}")));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        stdout.read_line(&mut banner).unwrap();
        let banner: Value = serde_json::from_str(&banner)
            .unwrap_or_else(|_| missing(format!("the script printed {banner:?}")));
        if let Some(e) = banner["error"].as_str() {
            missing(e.to_owned());
        }
        let version = banner["pyjwt"].as_str().unwrap().to_owned();
        let known: Vec<&str> = banner["algorithms"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        for alg in Alg::ALL {
            if known.contains(&alg.as_str()) {
                continue;
            }
            // RFC 9864's name is newer than PyJWT 2.6: the script verifies
            // those tokens with PyJWT's EdDSA object. Said here so that it
            // is never mistaken for PyJWT's own Ed25519 support.
            assert_eq!(
                alg,
                Alg::Ed25519,
                "PyJWT {version} cannot verify {alg} at all: no second implementation \
                 checks {alg} (it knows {known:?})"
            );
            eprintln!(
                "NOTE: PyJWT {version} does not know RFC 9864's \"Ed25519\": its tokens are \
                 checked for header alg \"Ed25519\" and verified with PyJWT's EdDSA algorithm \
                 object (OKPAlgorithm)"
            );
        }
        PyJwt {
            child,
            stdin,
            stdout,
            version,
        }
    }

    /// Sends `requests` and reads one answer for each. In chunks, so that
    /// neither pipe fills while the other side waits.
    fn call(&mut self, requests: &[Value]) -> Vec<Value> {
        let mut answers = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(64) {
            for r in chunk {
                serde_json::to_writer(&mut self.stdin, r).unwrap();
                self.stdin.write_all(b"\n").unwrap();
            }
            self.stdin.flush().unwrap();
            for _ in chunk {
                let mut line = String::new();
                let n = self.stdout.read_line(&mut line).unwrap();
                assert!(n > 0, "PyJWT's script ended");
                answers.push(serde_json::from_str(&line).unwrap());
            }
        }
        answers
    }

    /// Verifies each `(token, alg)` against `jwks`: its claims, or why not.
    fn verify(&mut self, jwks: &Value, tokens: &[(&str, Alg)]) -> Vec<Result<Value, String>> {
        let requests: Vec<Value> = tokens
            .iter()
            .map(|(t, a)| json!({"jwks": jwks, "token": t, "alg": a.as_str()}))
            .collect();
        self.call(&requests)
            .into_iter()
            .map(|a| {
                if a["ok"] == true {
                    Ok(a["claims"].clone())
                } else {
                    Err(format!("PyJWT {}: {}", self.version, a["error"]))
                }
            })
            .collect()
    }

    /// A token signed by PyJWT with a private JWK.
    fn sign(&mut self, alg: Alg, jwk: &Value, kid: &str, claims: &Value) -> String {
        let a = self
            .call(&[json!({"op": "sign", "alg": alg.as_str(), "jwk": jwk, "kid": kid, "claims": claims})])
            .remove(0);
        assert_eq!(a["ok"], true, "PyJWT cannot sign {alg}: {a}");
        a["token"].as_str().unwrap().to_owned()
    }
}

impl Drop for PyJwt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token's protected header.
fn header_of(token: &str) -> Value {
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

/// Signs like an auth server with a pulled key, with jsonwebtoken. It
/// knows no `Ed25519` alg: that token's header is written here and its
/// signature made as the EdDSA signature it is.
fn jsonwebtoken_sign(alg: Alg, pem: &str, kid: &str, claims: &Value) -> String {
    let key = match alg.key_kind() {
        KeyKind::Ec(_) => EncodingKey::from_ec_pem(pem.as_bytes()),
        KeyKind::Rsa => EncodingKey::from_rsa_pem(pem.as_bytes()),
        KeyKind::Ed25519 => EncodingKey::from_ed_pem(pem.as_bytes()),
    }
    .unwrap_or_else(|e| panic!("jsonwebtoken cannot read the {alg} PEM: {e}"));
    match support::jwt_algorithm(alg) {
        Some(known) => {
            let mut header = Header::new(known);
            header.kid = Some(kid.to_owned());
            jsonwebtoken::encode(&header, claims, &key).unwrap()
        }
        None => {
            let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
            let input = format!(
                "{}.{}",
                enc(&json!({"typ": "JWT", "alg": alg.as_str(), "kid": kid})),
                enc(claims)
            );
            let sig =
                jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::EdDSA)
                    .unwrap();
            format!("{input}.{sig}")
        }
    }
}

/// The JWK Set member with `kid`.
fn jwk_by_kid<'a>(jwks: &'a Value, kid: &str) -> Option<&'a Value> {
    jwks["keys"]
        .as_array()?
        .iter()
        .find(|k| k["kid"].as_str() == Some(kid))
}

/// Each member of `jwks` has exactly the members of its algorithm (kty and
/// crv by key kind), `alg` one of `configured`, `use: sig` and its RFC 7638
/// thumbprint as `kid`; returns the algorithms present.
fn check_members(jwks: &Value, configured: &[Alg]) -> BTreeSet<Alg> {
    let mut present = BTreeSet::new();
    for k in jwks["keys"].as_array().unwrap() {
        let alg: Alg = k["alg"].as_str().unwrap().parse().unwrap();
        assert!(
            configured.contains(&alg),
            "{alg} published, configured {configured:?}: {k}"
        );
        present.insert(alg);
        let (kty, crv, public): (&str, Option<&str>, &[&str]) = match alg.key_kind() {
            KeyKind::Ec(c) => ("EC", Some(c.name()), &["crv", "x", "y"]),
            KeyKind::Rsa => ("RSA", None, &["n", "e"]),
            KeyKind::Ed25519 => ("OKP", Some("Ed25519"), &["crv", "x"]),
        };
        assert_eq!(k["kty"], kty, "{k}");
        assert_eq!(k["crv"].as_str(), crv, "{k}");
        assert_eq!(k["use"], "sig", "{k}");
        let mut names: Vec<&str> = k.as_object().unwrap().keys().map(|s| s.as_str()).collect();
        names.sort_unstable();
        let mut want = vec!["alg", "kid", "kty", "use"];
        want.extend(public);
        want.sort_unstable();
        assert_eq!(names, want, "members of {k}");
        // The thumbprint over the JWK's own public members.
        let mut members = k.clone();
        for m in ["kid", "use", "alg"] {
            members.as_object_mut().unwrap().remove(m);
        }
        let public: PublicKey = serde_json::from_value(members).unwrap();
        assert_eq!(
            k["kid"].as_str().unwrap(),
            public.thumbprint().as_str(),
            "kid is not the RFC 7638 thumbprint: {k}"
        );
    }
    present
}

/// A token in flight, re-verified until it expires.
struct Token {
    token: String,
    alg: Alg,
    kid: String,
    exp: f64,
    /// Who signed it: "jwksd", "jsonwebtoken" or "PyJWT" (with a pulled key).
    by: &'static str,
}

/// Verifies every live token (by `now`) against `jwks`, with both
/// implementations; failures go to `failures`. Returns the checks made.
fn verify_live(
    py: &mut PyJwt,
    jwks: &Value,
    tokens: &[Token],
    failures: &mut Vec<String>,
    now: f64,
) -> usize {
    let live: Vec<&Token> = tokens.iter().filter(|t| now < t.exp).collect();
    let mut fail = |t: &Token, who: &str, e: String| {
        failures.push(format!(
            "{}-signed {} token (kid {}), {:.2} s before it expires, by {who}: {e}",
            t.by,
            t.alg,
            t.kid,
            t.exp - now
        ))
    };
    for t in &live {
        let result = match jwk_by_kid(jwks, &t.kid) {
            None => Err("kid not in the JWK Set".to_owned()),
            Some(jwk) => support::jsonwebtoken_verify(&t.token, jwk, t.alg),
        };
        match result {
            Ok(claims) if claims["exp"].as_f64() == Some(t.exp) => {}
            Ok(claims) => fail(t, "jsonwebtoken", format!("claims {claims}")),
            Err(e) => fail(t, "jsonwebtoken", e),
        }
    }
    let batch: Vec<(&str, Alg)> = live.iter().map(|t| (t.token.as_str(), t.alg)).collect();
    for (t, r) in live.iter().zip(py.verify(jwks, &batch)) {
        match r {
            Ok(claims) if claims["exp"].as_f64() == Some(t.exp) => {}
            Ok(claims) => fail(t, "PyJWT", format!("claims {claims}")),
            Err(e) => fail(t, "PyJWT", e),
        }
    }
    live.len() * 2
}

/// Signs one token of `alg` each way: by jwksd (`POST /v1/sign`), and with
/// the key `GET /v1/keys/active` hands out, by jsonwebtoken (from the PEM)
/// and by PyJWT (from the private JWK). Returns the kid jwksd signed with.
async fn sign_each_way(d: &Daemon, py: &mut PyJwt, alg: Alg, tokens: &mut Vec<Token>) -> String {
    let r = d.sign(alg.as_str(), json!({"sub": "interop"})).await;
    assert_eq!(r.status, 200, "{alg}: {}", r.error_message());
    let v = r.json().unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let kid = v["kid"].as_str().unwrap().to_owned();
    let head = header_of(&token);
    assert_eq!(
        head,
        json!({"typ": "JWT", "alg": alg.as_str(), "kid": kid}),
        "{alg}"
    );
    let body: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    tokens.push(Token {
        token,
        alg,
        kid: kid.clone(),
        exp: body["exp"].as_f64().unwrap(),
        by: "jwksd",
    });

    let r = d.active_key(alg.as_str()).await;
    assert_eq!(r.status, 200, "{alg}: {}", r.error_message());
    let a = r.json().unwrap();
    assert_eq!(a["alg"], alg.as_str());
    let pulled = a["kid"].as_str().unwrap().to_owned();
    let jwk = &a["jwk"];
    assert_eq!(jwk["kid"], pulled.as_str(), "{a}");
    assert_eq!(jwk["alg"], alg.as_str(), "{a}");
    assert!(jwk["d"].is_string(), "{alg}: no private d in {a}");
    let pem = a["pem"].as_str().unwrap();
    let now = unix_now() as u64;
    let exp = now + a["max_token_lifetime_seconds"].as_u64().unwrap();
    for by in ["jsonwebtoken", "PyJWT"] {
        let claims = json!({"sub": by, "iat": now, "exp": exp});
        let token = match by {
            "jsonwebtoken" => jsonwebtoken_sign(alg, pem, &pulled, &claims),
            _ => py.sign(alg, jwk, &pulled, &claims),
        };
        assert_eq!(header_of(&token)["alg"], alg.as_str(), "{by}");
        tokens.push(Token {
            token,
            alg,
            kid: pulled.clone(),
            exp: exp as f64,
            by,
        });
    }
    kid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_verifies_with_jsonwebtoken_and_pyjwt_across_rotations() {
    let started = Instant::now();
    let mut py = PyJwt::start();
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &algs_config(&Alg::ALL)).await;
    let mut tokens: Vec<Token> = Vec::new();
    let mut kids: HashMap<Alg, Vec<String>> = HashMap::new();
    let mut failures = Vec::new();
    let mut checks = 0;
    // Every 3 s a rotation: 13 s of signing sees 3 or more of each.
    let sign_until = Instant::now() + Duration::from_secs(13);
    let mut last_round: Option<Instant> = None;
    loop {
        let signing = Instant::now() < sign_until;
        if signing && last_round.is_none_or(|t| t.elapsed() >= Duration::from_millis(800)) {
            last_round = Some(Instant::now());
            for alg in Alg::ALL {
                let kid = sign_each_way(&d, &mut py, alg, &mut tokens).await;
                let seen = kids.entry(alg).or_default();
                if seen.last() != Some(&kid) {
                    seen.push(kid);
                }
            }
        }
        // Fetched after every token so far was signed.
        let jwks = d.jwks().await;
        let present = check_members(&jwks, &Alg::ALL);
        assert_eq!(present, BTreeSet::from(Alg::ALL), "{jwks}");
        let now = unix_now();
        if !signing && tokens.iter().all(|t| t.exp <= now) {
            break;
        }
        checks += verify_live(&mut py, &jwks, &tokens, &mut failures, now);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {checks} verifications failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        d.log_text()
    );
    for alg in Alg::ALL {
        assert!(
            kids[&alg].len() >= 4,
            "{alg} rotated fewer than 3 times: {:?}",
            kids[&alg]
        );
        // Each way of signing was checked, by both implementations.
        for by in ["jwksd", "jsonwebtoken", "PyJWT"] {
            assert!(
                tokens.iter().any(|t| t.alg == alg && t.by == by),
                "{alg} {by}"
            );
        }
    }
    assert!(checks > 1000, "only {checks} verifications");
    eprintln!(
        "{checks} verifications of {} tokens in {:.1} s",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A verifier as deployed: keeps the JWK Set for its `Cache-Control`
/// max-age, never refetches early for an unknown kid, and keeps the last
/// set while jwksd is down (its restarts).
struct CachingVerifier {
    jwks: Value,
    fetched: Instant,
    max_age: Duration,
}

impl CachingVerifier {
    async fn new(d: &Daemon) -> CachingVerifier {
        let mut v = CachingVerifier {
            jwks: json!({"keys": []}),
            fetched: Instant::now(),
            max_age: Duration::ZERO,
        };
        assert!(v.fetch(d).await);
        v
    }

    async fn fetch(&mut self, d: &Daemon) -> bool {
        let Ok(r) = d
            .client
            .get(&format!("{}/.well-known/jwks.json", d.public), None)
            .await
        else {
            return false;
        };
        if r.status != 200 {
            return false;
        }
        let cc = r.header(hyper::header::CACHE_CONTROL).unwrap().to_owned();
        let secs: u64 = cc.rsplit("max-age=").next().unwrap().parse().unwrap();
        self.max_age = Duration::from_secs(secs);
        self.jwks = serde_json::from_slice(&r.body).unwrap();
        self.fetched = Instant::now();
        true
    }

    async fn refresh_if_stale(&mut self, d: &Daemon) {
        if self.fetched.elapsed() >= self.max_age {
            self.fetch(d).await;
        }
    }
}

/// The algorithms, states and kids `jwksd keys` lists (its table).
fn keys_table(d: &Daemon) -> Vec<(String, String, String)> {
    let out = d.cli(&["keys"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let kid = cols.next()?.to_owned();
            let alg = cols.next()?.to_owned();
            alg.parse::<Alg>().ok()?;
            let state = cols.next()?.trim_end_matches('*').to_owned();
            Some((alg, state, kid))
        })
        .collect()
}

/// The migration as it runs: auth servers sign with `signing` (by jwksd and
/// with pulled keys) every 500 ms, a caching verifier verifies every live
/// token with both implementations every 250 ms, and every JWK Set fetched
/// is checked (only `publishable` algorithms in it); for `phase`, then
/// until `until` holds.
struct Migration {
    tokens: Vec<Token>,
    failures: Vec<String>,
    checks: HashMap<Alg, usize>,
    verifier: CachingVerifier,
    py: PyJwt,
    publishable: Vec<Alg>,
}

impl Migration {
    async fn run(
        &mut self,
        d: &Daemon,
        signing: &[Alg],
        phase: Duration,
        mut until: impl FnMut(&Value, &[Token]) -> bool,
    ) {
        let end = Instant::now() + phase;
        let mut last_round: Option<Instant> = None;
        loop {
            if last_round.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                last_round = Some(Instant::now());
                for &alg in signing {
                    sign_each_way(d, &mut self.py, alg, &mut self.tokens).await;
                }
            }
            let served = d.jwks().await;
            check_members(&served, &self.publishable);
            self.verifier.refresh_if_stale(d).await;
            let now = unix_now();
            for t in self.tokens.iter().filter(|t| now < t.exp) {
                *self.checks.entry(t.alg).or_default() += 4;
            }
            // Against the verifier's cached set (what deployed verifiers
            // hold) and against the set just served.
            for jwks in [&self.verifier.jwks, &served] {
                verify_live(&mut self.py, jwks, &self.tokens, &mut self.failures, now);
            }
            if Instant::now() >= end && until(&served, &self.tokens) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn kids_of(jwks: &Value, alg: Alg) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] == alg.as_str())
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// runbook.md, "Moving issuers to another algorithm", step by step, with
/// the real binary and one key directory across its restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_issuers_from_rs256_to_es256_fails_no_verification() {
    let started = Instant::now();
    let py = PyJwt::start();
    let tmp = tempfile::tempdir().unwrap();
    let (rs, es) = (Alg::RS256, Alg::ES256);
    let mut d = Daemon::start(tmp.path(), &algs_config(&[rs])).await;
    let mut m = Migration {
        tokens: Vec::new(),
        failures: Vec::new(),
        checks: HashMap::new(),
        verifier: CachingVerifier::new(&d).await,
        py,
        publishable: vec![rs],
    };
    let always = |_: &Value, _: &[Token]| true;

    // Before: RS256 only, through a rotation or two.
    m.run(&d, &[rs], Duration::from_secs(5), always).await;

    // Step 1: add ES256 and restart.
    write_config(tmp.path(), &algs_config(&[rs, es]));
    assert!(d.stop().success());
    d.restart().await;
    let added = Instant::now();
    m.publishable = vec![rs, es];
    // The verifier's cached set, fetched before the restart, does not know
    // ES256 yet: why auth servers wait for publish_ahead before using it.
    assert!(kids_of(&m.verifier.jwks, es).is_empty());
    // `jwksd keys` shows the new algorithm with an active and a next key.
    let table = keys_table(&d);
    for state in ["active", "next"] {
        assert!(
            table.iter().any(|(a, s, _)| a == "ES256" && s == state),
            "no {state} ES256 key in `jwksd keys`: {table:?}"
        );
    }
    // Its first active key signed before publish_ahead, and says so.
    let keys = d.keys().await;
    let es_active: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] == "ES256" && k["state"] == "active")
        .collect();
    assert_eq!(es_active.len(), 1, "{keys}");
    assert_eq!(es_active[0]["early_activation"], "bootstrap");
    // Step 0 is needed: with two algorithms, a request must name one.
    let r = d
        .client
        .post_json(
            &format!("{}/v1/sign", d.admin),
            Some(&d.signer),
            &json!({"claims": {}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json().unwrap()["code"], "alg_required");
    // Wait publish_ahead, still signing RS256 only. (Signing ES256 right
    // away instead fails this test: the caching verifier meets ES256 kids
    // not in its set.)
    m.run(
        &d,
        &[rs],
        PUBLISH_AHEAD.saturating_sub(added.elapsed()),
        always,
    )
    .await;
    assert!(
        !kids_of(&m.verifier.jwks, es).is_empty(),
        "after publish_ahead the verifier's set still has no ES256 key"
    );

    // Step 2: auth servers switch, one by one (both algorithms meanwhile),
    // until the last signs ES256 only.
    m.run(&d, &[rs, es], Duration::from_secs(4), always).await;
    let rs_signed = r#"jwksd_sign_requests_total{alg="RS256",result="ok"}"#;
    let before = d.metric(rs_signed).await;
    m.run(&d, &[es], Duration::from_secs(1), always).await;
    // What the runbook watches to know the switch is done.
    assert!(before.is_some_and(|n| n > 0.0));
    assert_eq!(d.metric(rs_signed).await, before);

    // Step 3: remove RS256 and restart.
    write_config(tmp.path(), &algs_config(&[es]));
    assert!(d.stop().success());
    d.restart().await;
    let removed = Instant::now();
    let r = d.sign("RS256", json!({})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json().unwrap()["code"], "alg_not_configured");
    // Its keys no longer sign but stay published, as retiring.
    let table = keys_table(&d);
    assert!(
        table
            .iter()
            .filter(|(a, _, _)| a == "RS256")
            .all(|(_, s, _)| ["retiring", "retired"].contains(&s.as_str())),
        "{table:?}"
    );
    assert!(
        d.metric(r#"jwksd_published_keys{alg="RS256",state="retiring"}"#)
            .await
            .is_some_and(|n| n >= 1.0)
    );
    let last_rs_exp = m
        .tokens
        .iter()
        .filter(|t| t.alg == rs)
        .map(|t| t.exp)
        .fold(0.0, f64::max);
    assert!(
        last_rs_exp > unix_now(),
        "every RS256 token expired during the restart: the test proves nothing"
    );

    // After: ES256 only, until the RS256 keys have left the JWK Set...
    let mut rs_left_at = None;
    m.run(&d, &[es], Duration::ZERO, |served, _| {
        let now = unix_now();
        if kids_of(served, rs).is_empty() {
            rs_left_at = Some(now);
            return true;
        }
        assert!(
            removed.elapsed() < RETENTION + Duration::from_secs(5),
            "RS256 keys still published {:?} after the restart that removed it",
            removed.elapsed()
        );
        false
    })
    .await;
    // ...which is after the last RS256 token expired: they stayed while
    // any RS256 token lived.
    let left = rs_left_at.unwrap();
    assert!(
        left >= last_rs_exp,
        "RS256 keys gone {:.2} s before the last RS256 token expires",
        last_rs_exp - left
    );
    // Then no more signing, and every ES256 token verified until it
    // expires; RS256 does not come back.
    m.publishable = vec![es];
    m.run(&d, &[], Duration::ZERO, |_, tokens| {
        let now = unix_now();
        tokens.iter().all(|t| t.exp <= now)
    })
    .await;
    // The RS256 keys retired on their normal timeline: the key active at the
    // removal stayed published for at least signing_key.cache_max_age +
    // tokens.max_lifetime + clock_skew (6 s) after it stopped signing, and
    // none was revoked.
    let keys = d.keys().await;
    let time = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{v}")))
            .unwrap()
            .timestamp_millis() as f64
            / 1000.0
    };
    let rs_keys: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] == "RS256")
        .collect();
    assert!(
        rs_keys.iter().all(|k| k["state"] == "retired"),
        "{rs_keys:?}"
    );
    let last_active = rs_keys
        .iter()
        .filter(|k| k["activated_at"].is_string())
        .max_by(|a, b| time(&a["activated_at"]).total_cmp(&time(&b["activated_at"])))
        .unwrap();
    let published_after = time(&last_active["ended_at"]) - time(&last_active["deactivated_at"]);
    assert!(
        published_after >= 6.0,
        "the last RS256 active key left {published_after:.2} s after it stopped signing: {last_active}"
    );

    assert!(
        m.failures.is_empty(),
        "{} failed verifications:\n{}\n{}",
        m.failures.len(),
        m.failures.join("\n"),
        d.log_text()
    );
    for alg in [rs, es] {
        assert!(
            m.checks[&alg] > 200,
            "{alg}: only {} checks",
            m.checks[&alg]
        );
    }
    eprintln!(
        "{:?} verifications of {} tokens in {:.1} s; the last RS256 active key published {published_after:.2} s after it stopped signing",
        m.checks,
        m.tokens.len(),
        started.elapsed().as_secs_f64()
    );
}

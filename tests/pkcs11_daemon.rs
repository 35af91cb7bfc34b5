//! The daemon's binary with `keys.backend: pkcs11` against SoftHSM2
//! (issue 12), from outside: rotations with tokens verified by
//! jsonwebtoken, `/v1/keys/active` without private material, the token's
//! objects checked with OpenSC's `pkcs11-tool`; start-up errors of a token;
//! a token taken away and given back while the daemon runs, idle or across
//! scheduled rotations; a token that hangs (a module in front of SoftHSM2,
//! tests/support/hang_pkcs11.c) answered within jwksd's deadlines; moving
//! between backends both ways; the leftovers a load tidies or reports; a
//! stop in the middle of a generation.
//!
//! Each test initialises its own token in a temporary SoftHSM2
//! configuration, which reaches the daemon (and `pkcs11-tool`) through
//! `SOFTHSM2_CONF` in their environment: nothing in this process loads the
//! module, so the tests may run side by side. Without SoftHSM2 and
//! `pkcs11-tool` the tests say so and pass, unless
//! `JWKSD_TEST_REQUIRE_SOFTHSM2` is set (scripts/test sets it and installs
//! softhsm2 and opensc).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::header;
use serde_json::{Value, json};
use support::daemon::{Daemon, FAST, Started, start_binary, write_config};
use support::member_names;
use support::softhsm::{self, LABEL, MODULE};

const PIN: &str = "4921-user-pin";
const ALGS: [&str; 2] = ["ES256", "RS256"];
/// Every algorithm, each generated and signed with in the token.
const EVERY_ALG: [&str; 6] = ["ES256", "ES384", "RS256", "PS256", "EdDSA", "Ed25519"];

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether `name` must be skipped: SoftHSM2 or `pkcs11-tool` missing (and
/// not required).
fn skip(name: &str) -> bool {
    if Path::new(MODULE).exists() && runs("softhsm2-util", "--version") && runs("pkcs11-tool", "-I")
    {
        return false;
    }
    assert!(
        std::env::var_os("JWKSD_TEST_REQUIRE_SOFTHSM2").is_none(),
        "softhsm2 or pkcs11-tool is not installed (apt-get install softhsm2 opensc) and \
         JWKSD_TEST_REQUIRE_SOFTHSM2 is set"
    );
    eprintln!(
        "skipped {name}: softhsm2 or pkcs11-tool is not installed (apt-get install softhsm2 opensc)"
    );
    true
}

/// A SoftHSM2 configuration of the test's own, with the token `LABEL`.
struct Hsm {
    conf: PathBuf,
    tokens: PathBuf,
    pin_file: PathBuf,
}

/// One object on the token, as `pkcs11-tool --list-objects` prints it.
#[derive(Debug, Clone)]
struct Object {
    private: bool,
    label: String,
    /// Hex, as printed.
    id: String,
    access: BTreeSet<String>,
}

impl Hsm {
    fn init(root: &Path) -> Hsm {
        Hsm {
            conf: softhsm::init(root, &[LABEL], PIN),
            tokens: root.join("tokens"),
            pin_file: root.join("pin"),
        }
    }

    fn init_token(&self, label: &str) {
        softhsm::init_token(&self.conf, label, PIN);
    }

    fn conf(&self) -> &str {
        self.conf.to_str().unwrap()
    }

    /// The daemon's environment.
    fn env(&self) -> [(&str, &str); 1] {
        [("SOFTHSM2_CONF", self.conf())]
    }

    /// `keys:` for `backend`, naming this token.
    fn keys(&self, backend: &str) -> String {
        format!(
            "keys:\n  backend: {backend}\n  pkcs11:\n    module: {MODULE}\n    token_label: {LABEL}\n    pin_file: {}\n    sessions: 4\n",
            self.pin_file.display()
        )
    }

    /// `pkcs11-tool` on the token, logged in.
    fn tool(&self, args: &[&str]) -> Output {
        Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", LABEL, "--login"])
            .args(["--pin", PIN])
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap()
    }

    /// Every key object on the token.
    fn objects(&self) -> Vec<Object> {
        let out = self.tool(&["--list-objects"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "pkcs11-tool --list-objects: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut objects: Vec<Object> = Vec::new();
        for line in text.lines() {
            if !line.starts_with(char::is_whitespace) {
                let private = line.starts_with("Private Key Object");
                if private || line.starts_with("Public Key Object") {
                    objects.push(Object {
                        private,
                        label: String::new(),
                        id: String::new(),
                        access: BTreeSet::new(),
                    });
                }
                continue;
            }
            let Some(o) = objects.last_mut() else {
                continue;
            };
            let line = line.trim();
            if let Some(v) = line.strip_prefix("label:") {
                o.label = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("ID:") {
                o.id = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("Access:") {
                o.access = v.split(',').map(|a| a.trim().to_owned()).collect();
            }
        }
        objects
    }

    /// The objects whose `CKA_ID` is `id` (a kid or a label, as text).
    fn objects_with_id(&self, id: &str) -> Vec<Object> {
        let hex = hex::encode(id);
        self.objects().into_iter().filter(|o| o.id == hex).collect()
    }

    /// An EC P-256 keypair made by `pkcs11-tool` with this label and id.
    fn keypair(&self, label: &str, id: &str) {
        let out = self.tool(&[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            label,
            "--id",
            &hex::encode(id),
        ]);
        assert!(
            out.status.success(),
            "pkcs11-tool --keypairgen: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn write_secret(path: &Path, body: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Verifies `token` (an `alg` JWT) with jsonwebtoken against the JWK Set
/// `jwks` ([`support::jsonwebtoken_verify`]); its claims. `exp` is checked
/// (with a second of leeway) when `check_exp`.
fn verify(jwks: &Value, token: &str, alg: &str, check_exp: bool) -> Result<Value, String> {
    let kid = support::kid_of(token).ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .ok_or(format!("kid {kid} not in the JWK Set"))?;
    let claims = support::jsonwebtoken_verify(token, jwk, alg.parse().unwrap())
        .map_err(|e| format!("{kid}: {e}"))?;
    if check_exp {
        let exp = claims["exp"].as_f64().ok_or("no exp")?;
        if exp + 1.0 < unix_now() {
            return Err(format!("{kid}: expired {:.1} s ago", unix_now() - exp));
        }
    }
    Ok(claims)
}

/// A token from `/v1/sign`: (kid, token).
async fn sign(d: &Daemon, alg: &str, sub: &str) -> (String, String) {
    let r = d.sign(alg, json!({"sub": sub})).await;
    assert_eq!(
        r.status,
        200,
        "{alg}: {}\n{}",
        r.error_message(),
        d.log_text()
    );
    let v = r.json().unwrap();
    (
        v["kid"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// `/v1/keys/active?alg=`: no private member anywhere, `export: false`, the
/// public JWK the JWK Set `jwks` publishes for the kid. Its kid.
async fn active_without_private_material(d: &Daemon, alg: &str, jwks: &Value) -> String {
    let r = d.active_key(alg).await;
    assert_eq!(r.status, 200, "{alg}: {}", r.error_message());
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut names = Vec::new();
    member_names(&v, &mut names);
    for private in [
        "d", "p", "q", "dp", "dq", "qi", "oth", "k", "pem", "jwk", "private",
    ] {
        assert!(
            !names.iter().any(|n| n == private),
            "{alg}: {private} in /v1/keys/active: {text}"
        );
    }
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert_eq!(v["export"], false, "{text}");
    assert_eq!(v["alg"], alg, "{text}");
    let kid = v["kid"].as_str().unwrap().to_owned();
    let published = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("the active {alg} key {kid} is not published: {jwks}"));
    assert_eq!(&v["public_jwk"], published, "{text}");
    kid
}

/// The records of `/v1/keys` (published and ended).
fn records(keys: &Value) -> &Vec<Value> {
    keys["keys"].as_array().unwrap()
}

fn record<'a>(keys: &'a Value, kid: &str) -> &'a Value {
    records(keys)
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("{kid} not in /v1/keys: {keys}"))
}

/// One line per key: kid, alg, state, custody, the last transition's
/// trigger (for failure messages).
fn summary(keys: &Value) -> String {
    records(keys)
        .iter()
        .map(|k| {
            format!(
                "{} {} {} {} {}\n",
                k["kid"].as_str().unwrap_or_default(),
                k["alg"].as_str().unwrap_or_default(),
                k["state"].as_str().unwrap_or_default(),
                k["custody"],
                k["transitions"]
                    .as_array()
                    .and_then(|t| t.last())
                    .map(|t| t["trigger"].to_string())
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// The kid of the `alg` key in `state`, if exactly one.
fn kid_in(keys: &Value, alg: &str, state: &str) -> String {
    let found: Vec<&str> = records(keys)
        .iter()
        .filter(|k| k["alg"] == alg && k["state"] == state)
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{alg} {state}:\n{}", summary(keys));
    found[0].to_owned()
}

fn is_published(state: &Value) -> bool {
    ["next", "active", "retiring"].contains(&state.as_str().unwrap_or_default())
}

fn token_custody() -> Value {
    json!({"backend": "pkcs11", "token_label": LABEL})
}

/// `jwksd keys`: the CUSTODY column of `kid`'s row.
fn custody_column(d: &Daemon, kid: &str) -> String {
    let out = d.cli(&["keys"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "jwksd keys: {table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = table.lines().next().unwrap_or_default();
    assert!(header.trim_end().ends_with("CUSTODY"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(kid))
        .unwrap_or_else(|| panic!("{kid} not in jwksd keys:\n{table}"));
    row.split_whitespace().last().unwrap().to_owned()
}

/// The token holds both halves of `kid`, as the daemon stages a key (its
/// `CKA_ID` the kid, its label `jwksd-staged-<ring>-<secs>`, never changed
/// after the commit) or named by the kid (a key it did not make), the
/// private one sensitive and never extractable.
fn assert_in_token(objects: &[Object], kid: &str) {
    let hex = hex::encode(kid);
    let mine: Vec<&Object> = objects.iter().filter(|o| o.id == hex).collect();
    assert_eq!(mine.len(), 2, "{kid}: {objects:?}");
    for o in &mine {
        assert!(
            o.label.starts_with("jwksd-staged-") || o.label == kid,
            "{o:?}"
        );
    }
    let private = mine
        .iter()
        .find(|o| o.private)
        .unwrap_or_else(|| panic!("{kid}: no private object: {objects:?}"));
    for a in ["sensitive", "always sensitive", "never extractable"] {
        assert!(private.access.contains(a), "{kid}: {private:?}");
    }
    assert!(
        !private.access.contains("extractable"),
        "{kid}: {private:?}"
    );
}

/// Starts the binary on `config` and expects it to exit non-zero quickly;
/// its log and how long it took.
async fn start_fails(config: &Path, env: &[(&str, &str)]) -> (String, Duration) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let started = Instant::now();
    let Started { mut child, addrs } = start_binary(config, &env, log.clone());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if addrs.try_recv().is_ok() || started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "jwksd started (or hung) instead of refusing:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    assert!(!status.success(), "{status}");
    // The reader thread reaches the end of the log shortly after the exit.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = log.lock().unwrap().join("\n");
        if text.contains("cannot start") || Instant::now() > deadline {
            return (text, took);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rotation timings of `FAST` with a rotation an hour away (tests that
/// rotate by hand): publish_ahead 2 s, a key rotated out published 8 s.
const MANUAL: &str = "rotation:\n  every: 1h\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n";

/// Waits until `d` is ready (`ready` true) or unready (false) by its `/readyz`;
/// the answer and how long it took.
async fn wait_readiness(d: &Daemon, ready: bool, within: Duration) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let r = d.get_public("/readyz").await;
        let v = r.json().unwrap();
        if (r.status == 200) == ready {
            assert_eq!(v["ready"], ready, "{v}");
            return (v, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "/readyz not {} within {within:?}: {v}\n{}",
            if ready { "ready" } else { "unready" },
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/v1/rotate` of every algorithm as soon as publish_ahead allows it
/// (409 `too_early` until then).
async fn rotate_when_allowed(d: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = d.rotate(json!({})).await;
        let v = r.json().unwrap();
        if r.status == 200 {
            return v;
        }
        assert_eq!(r.status, 409, "{v}");
        assert_eq!(v["code"], "too_early", "{v}");
        assert!(Instant::now() < deadline, "rotation refused for 10 s: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rotations over several cycles on the token, ES256 and RS256, with the
/// private key exported by configuration (which a token key ignores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_on_the_token_verify_and_never_hand_out_a_private_key() {
    if skip("rotations_on_the_token_verify_and_never_hand_out_a_private_key") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    let fast = FAST.replace("signing_key:\n", "signing_key:\n  export: true\n");
    assert_ne!(fast, FAST);
    let algorithms = format!("algorithms: [{}]\n", EVERY_ALG.join(", "));
    let config = write_config(
        tmp.path(),
        &format!("{algorithms}{fast}{}", hsm.keys("pkcs11")),
    );
    let mut d = Daemon::start_with(tmp.path(), &config, &hsm.env()).await;

    // (token, alg, exp, kid)
    let mut tokens: Vec<(String, &str, f64, String)> = Vec::new();
    let mut kids_seen: Vec<Vec<String>> = vec![Vec::new(); EVERY_ALG.len()];
    let mut after_rotation = [0usize; EVERY_ALG.len()];
    let mut checks = 0usize;
    let sign_until = Instant::now() + Duration::from_secs(13);
    while Instant::now() < sign_until {
        let jwks = d.jwks().await;
        for (i, alg) in EVERY_ALG.into_iter().enumerate() {
            let active = active_without_private_material(&d, alg, &jwks).await;
            let (kid, token) = sign(&d, alg, "alice").await;
            // (The key may have rotated between the two requests.)
            for k in [&active, &kid] {
                if kids_seen[i].last() != Some(k) {
                    kids_seen[i].push(k.clone());
                }
            }
            let jwks = d.jwks().await;
            let claims = verify(&jwks, &token, alg, true)
                .unwrap_or_else(|e| panic!("a fresh {alg} token does not verify: {e}"));
            assert_eq!(claims["sub"], "alice");
            if tokens.len() < EVERY_ALG.len() {
                // The verification can fail: a signature altered, or a
                // JWK Set without the key.
                let (head, sig) = token.rsplit_once('.').unwrap();
                let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
                let altered = format!("{head}.{flipped}{}", &sig[1..]);
                assert!(verify(&jwks, &altered, alg, true).is_err());
                assert!(verify(&json!({"keys": []}), &token, alg, true).is_err());
            }
            tokens.push((token, alg, claims["exp"].as_f64().unwrap(), kid));
        }
        // Every token verifies until it expires, its key rotated out or
        // not.
        let jwks = d.jwks().await;
        let now = unix_now();
        for (token, alg, exp, kid) in tokens.iter().filter(|t| now + 0.5 < t.2) {
            checks += 1;
            if let Err(e) = verify(&jwks, token, alg, true) {
                panic!(
                    "a {alg} token failed {:.2} s before it expires: {e}\n{}",
                    exp - now,
                    d.log_text()
                );
            }
            let i = EVERY_ALG.iter().position(|a| a == alg).unwrap();
            if kids_seen[i].last() != Some(kid) {
                after_rotation[i] += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (i, alg) in EVERY_ALG.into_iter().enumerate() {
        assert!(
            kids_seen[i].len() >= 4,
            "{alg}: fewer than 3 rotations: {:?}",
            kids_seen[i]
        );
        assert!(
            after_rotation[i] > 0,
            "{alg}: no token was checked after its key rotated out"
        );
    }
    assert!(checks > 100, "only {checks} verifications");

    // Keys rotated out retire (8 s after): wait for one of each.
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let keys = d.keys().await;
        let retired = |alg: &str| {
            records(&keys)
                .iter()
                .any(|k| k["alg"] == alg && k["state"] == "retired")
        };
        if EVERY_ALG.into_iter().all(retired) {
            break;
        }
        assert!(Instant::now() < deadline, "no key retired: {keys}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // `jwksd keys` names the token as the keys' custody.
    let keys = d.keys().await;
    let active = kid_in(&keys, "ES256", "active");
    assert_eq!(custody_column(&d, &active), format!("pkcs11:{LABEL}"));
    // No private key was ever pulled.
    assert!(d.events("signing key pulled").is_empty());
    // The retired keys' objects left the token at their retirement.
    let objects = hsm.objects();
    let mut retired = 0;
    for k in records(&keys) {
        let kid = k["kid"].as_str().unwrap();
        assert_eq!(k["custody"], token_custody(), "{k}");
        if !is_published(&k["state"]) {
            assert_eq!(k["state"], "retired", "{k}");
            retired += 1;
            let hex = hex::encode(kid);
            assert!(
                objects.iter().all(|o| o.id != hex && o.label != kid),
                "the retired key {kid} is still in the token: {objects:?}"
            );
        }
    }
    assert!(retired >= EVERY_ALG.len(), "{}", summary(&keys));

    // From outside, exactly: the token holds the published keys, each
    // sensitive and never extractable, and nothing else.
    let keys = stop_settled(&mut d, tmp.path(), &hsm).await;
    held_exactly(&hsm, &published_kids(&keys)).await;
}

/// A signature of `alg` answered `503 code`, the JWK Set `jwks` served
/// meanwhile: the answer and how long it took.
async fn sign_refused(
    d: &Daemon,
    jwks: &Value,
    alg: &str,
    code: &str,
) -> (jwksd::client::Reply, Duration) {
    let asked = Instant::now();
    let r = jwks_served_during(d, jwks, d.sign(alg, json!({"sub": "refused"}))).await;
    let took = asked.elapsed();
    assert_eq!(r.status, 503, "{}", r.error_message());
    assert_eq!(r.json().unwrap()["code"], code, "{}", r.error_message());
    (r, took)
}

/// `n` signatures started at once, answered later: the handle's answers.
async fn futures_burst(d: &Daemon, n: usize) -> tokio::task::JoinHandle<Vec<jwksd::client::Reply>> {
    let mut started = Vec::new();
    for i in 0..n {
        let (client, url, signer) = (
            d.client.clone(),
            format!("{}/v1/sign", d.admin),
            d.signer.clone(),
        );
        started.push(tokio::spawn(async move {
            client
                .post_json(
                    &url,
                    Some(&signer),
                    &json!({"alg": "ES256", "claims": {"sub": format!("burst{i}")}}),
                )
                .await
                .unwrap()
        }));
    }
    // Their requests are in flight before the caller's next one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::spawn(async move {
        let mut answers = Vec::new();
        for s in started {
            answers.push(s.await.unwrap());
        }
        answers
    })
}

/// SIGTERM, and an exit status of 0 (not a signal: a stop while a key is
/// being generated in the token has ended in SIGSEGV).
fn stop_clean(d: &mut Daemon) {
    use std::os::unix::process::ExitStatusExt as _;
    let status = d.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "jwksd ended by signal {:?} at shutdown:\n{}",
        status.signal(),
        d.log_text()
    );
}

/// Stops `d` with its keys settled, for a listing that no write of the
/// daemon's overlaps (which can show an object half-written): stopped, then
/// started again without scheduled rotations (its load tidies what a stop
/// in the middle of a generation leaves) until its keys are settled, and
/// stopped again. The state then on disk.
async fn stop_settled(d: &mut Daemon, dir: &Path, hsm: &Hsm) -> Value {
    // (Settled: no generation in flight, unless a rotation falls due now.)
    settled(d, &token_custody()).await;
    stop_clean(d);
    let written = write_config(dir, &format!("{MANUAL}{}", hsm.keys("pkcs11")));
    assert_eq!(written, d.config);
    d.restart().await;
    settled(d, &token_custody()).await;
    stop_clean(d);
    state_on_disk(dir)
}

/// The directory store's state of a stopped daemon in `dir`, as `/v1/keys`
/// shows it (`keys` and `history`, published first).
fn state_on_disk(dir: &Path) -> Value {
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("keys").join("state.json")).unwrap())
            .unwrap();
    let mut all = state["keys"].as_array().cloned().unwrap_or_default();
    all.extend(state["history"].as_array().cloned().unwrap_or_default());
    json!({"version": state["version"], "keys": all})
}

/// The token's objects once they are exactly both halves of each of
/// `kids`, named by it, the private ones sensitive and never extractable.
/// For a daemon that runs: a commit may be finishing, and a listing from
/// another process while the daemon's SoftHSM2 writes can show an object
/// half-written (no label, or every attribute false but one), so look again
/// for a while; what persists fails. Stopped daemons too: once in a full
/// run under load, `pkcs11-tool` listed a stopped daemon's active key
/// without `sensitive` and the next listings never did, so one listing is
/// not taken for the token's contents.
async fn held_exactly(hsm: &Hsm, kids: &BTreeSet<String>) -> Vec<Object> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let objects = hsm.objects();
        if matches_exactly(&objects, kids) {
            for kid in kids {
                assert_in_token(&objects, kid);
            }
            return objects;
        }
        assert!(
            Instant::now() < deadline,
            "the token's objects are not those of {kids:?}:\n{objects:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn matches_exactly(objects: &[Object], kids: &BTreeSet<String>) -> bool {
    // Objects with neither a label nor an id are what SoftHSM2 leaves when
    // a creation is cut short, or when another process (this test's
    // `pkcs11-tool --login`) reads while the daemon generates
    // (docs/pkcs11.md, "Several processes on one token"): never published,
    // reported at load, not jwksd's to destroy.
    let objects: Vec<&Object> = objects
        .iter()
        .filter(|o| !(o.label.is_empty() && o.id.is_empty()))
        .collect();
    let ids: BTreeSet<String> = kids.iter().map(hex::encode).collect();
    let held: BTreeSet<String> = objects.iter().map(|o| o.id.clone()).collect();
    // Staged by the daemon, or named by its kid (keys it did not make).
    let named = objects
        .iter()
        .all(|o| o.label.starts_with("jwksd-staged-") || hex::encode(&o.label) == o.id);
    let protected = objects.iter().filter(|o| o.private).all(|o| {
        ["sensitive", "always sensitive", "never extractable"]
            .iter()
            .all(|a| o.access.contains(*a))
    });
    ids == held && named && protected && objects.len() == 2 * kids.len()
}

/// The published kids of `/v1/keys` (or of [`state_on_disk`]).
fn published_kids(keys: &Value) -> BTreeSet<String> {
    records(keys)
        .iter()
        .filter(|k| is_published(&k["state"]))
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Starts on `keys` (with `MANUAL`) and expects a refusal; the log.
async fn refused(tmp: &Path, hsm: &Hsm, keys: &str) -> String {
    let config = write_config(tmp, &format!("{MANUAL}{keys}"));
    let (log, took) = start_fails(&config, &hsm.env()).await;
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{log}");
    assert!(log.contains("jwksd cannot start"), "{log}");
    // Nothing was made in the token, nor in the store.
    assert!(hsm.objects().is_empty(), "{:?}", hsm.objects());
    let keys_dir = tmp.join("keys");
    if let Ok(entries) = std::fs::read_dir(&keys_dir) {
        let names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".key") || n == "state.json")
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused_at_start_and_never_printed() {
    if skip("a_wrong_pin_is_refused_at_start_and_never_printed") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    let wrong = "7303-wrong-pin";
    write_secret(&hsm.pin_file, &format!("{wrong}\n"), 0o600);
    let log = refused(tmp.path(), &hsm, &hsm.keys("pkcs11")).await;
    assert!(
        log.contains(&format!("token \\\"{LABEL}\\\" refused the PIN")),
        "{log}"
    );
    assert!(!log.contains(wrong), "the PIN is in the log:\n{log}");
    assert!(!log.contains(PIN), "{log}");
    // The same PIN from the environment.
    let config = write_config(
        tmp.path(),
        &format!(
            "{MANUAL}keys:\n  backend: pkcs11\n  pkcs11:\n    module: {MODULE}\n    token_label: {LABEL}\n"
        ),
    );
    let (log, _) = start_fails(
        &config,
        &[("SOFTHSM2_CONF", hsm.conf()), ("JWKSD_PKCS11_PIN", wrong)],
    )
    .await;
    assert!(log.contains("refused the PIN"), "{log}");
    assert!(!log.contains(wrong), "the PIN is in the log:\n{log}");
    assert!(hsm.objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_module_is_refused_at_start() {
    if skip("a_missing_module_is_refused_at_start") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    let missing = tmp.path().join("no-such-module.so");
    let keys = hsm
        .keys("pkcs11")
        .replace(MODULE, missing.to_str().unwrap());
    let log = refused(tmp.path(), &hsm, &keys).await;
    assert!(
        log.contains(&format!(
            "PKCS#11 module {} does not exist",
            missing.display()
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_refused_at_start_naming_those_present() {
    if skip("a_missing_token_is_refused_at_start_naming_those_present") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    hsm.init_token("another-app");
    let keys = hsm
        .keys("pkcs11")
        .replace("token_label: jwksd", "token_label: absent-token");
    let log = refused(tmp.path(), &hsm, &keys).await;
    assert!(
        log.contains("no token labelled \\\"absent-token\\\""),
        "{log}"
    );
    let present = log
        .split("tokens present: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{log}"));
    let present = present.split(')').next().unwrap();
    assert!(
        present.contains("\\\"jwksd\\\"") && present.contains("\\\"another-app\\\""),
        "{present}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_file_readable_by_others_is_refused_at_start() {
    if skip("a_pin_file_readable_by_others_is_refused_at_start") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    write_secret(&hsm.pin_file, &format!("{PIN}\n"), 0o644);
    let log = refused(tmp.path(), &hsm, &hsm.keys("pkcs11")).await;
    assert!(
        log.contains(&format!(
            "the PKCS#11 PIN file {} has mode 644",
            hsm.pin_file.display()
        )) && log.contains("chmod 600"),
        "{log}"
    );
    assert!(!log.contains(PIN), "{log}");
}

/// The token's files taken away while the daemon runs, then given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_taken_away_turns_unready_and_recovers_when_it_returns() {
    if skip("a_token_taken_away_turns_unready_and_recovers_when_it_returns") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    let config = write_config(tmp.path(), &format!("{MANUAL}{}", hsm.keys("pkcs11")));
    let d = Daemon::start_with(tmp.path(), &config, &hsm.env()).await;
    let ready = d.get_public("/readyz").await.json().unwrap();
    assert_eq!(ready["token_available"], true, "{ready}");
    let mut active = Vec::new();
    for alg in ALGS {
        active.push(sign(&d, alg, "before").await.0);
    }
    let jwks_before = d.jwks().await;
    let keys_before = d.keys().await;

    let away = tmp.path().join("hsm").join("tokens.away");
    std::fs::rename(&hsm.tokens, &away).unwrap();
    // Noticed without any signing: the watch looks every 5 s.
    let (v, took) = wait_readiness(&d, false, Duration::from_secs(10)).await;
    eprintln!("unready {took:?} after the token went away");
    assert_eq!(v["token_available"], false, "{v}");
    let reasons: Vec<&str> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("token_unavailable:")),
        "{v}"
    );
    for alg in ALGS {
        let r = d.sign(alg, json!({"sub": "away"})).await;
        assert_eq!(r.status, 503, "{alg}: {}", r.error_message());
        assert_eq!(r.json().unwrap()["code"], "token_unavailable");
        assert!(r.header(header::RETRY_AFTER).is_some());
    }
    // The keys are still served; the absence is counted.
    assert_eq!(d.jwks().await, jwks_before);
    assert_eq!(d.metric("jwksd_token_up").await, Some(0.0));
    // Whatever the kind (a key not found, then the token or the module
    // failing as it is opened afresh).
    let mut counted = 0.0;
    for kind in [
        "token_gone",
        "key_not_found",
        "token_not_found",
        "module",
        "pin",
        "operation",
    ] {
        counted += d
            .metric(&format!("jwksd_token_errors_total{{kind=\"{kind}\"}}"))
            .await
            .unwrap_or(0.0);
    }
    assert!(
        counted >= 1.0,
        "{}",
        String::from_utf8_lossy(
            &d.client
                .get(&format!("{}/metrics", d.admin), None)
                .await
                .unwrap()
                .body
        )
    );
    // Still away a few reopenings later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(d.get_public("/readyz").await.status, 503);
    assert_eq!(d.sign("ES256", json!({})).await.status, 503);

    std::fs::rename(&away, &hsm.tokens).unwrap();
    let (v, took) = wait_readiness(&d, true, Duration::from_secs(5)).await;
    eprintln!("ready {took:?} after the token came back");
    assert_eq!(v["token_available"], true, "{v}");
    assert_eq!(d.metric("jwksd_token_up").await, Some(1.0));
    let jwks = d.jwks().await;
    assert_eq!(jwks, jwks_before);
    for (alg, kid) in ALGS.into_iter().zip(&active) {
        let (signed_by, token) = sign(&d, alg, "after").await;
        assert_eq!(&signed_by, kid);
        assert_eq!(verify(&jwks, &token, alg, true).unwrap()["sub"], "after");
    }
    // Nothing lost: the same keys, in the state and in the token.
    let keys = d.keys().await;
    assert_eq!(keys["version"], keys_before["version"]);
    assert_eq!(records(&keys), records(&keys_before));
    held_exactly(&hsm, &published_kids(&keys)).await;
    assert_eq!(published_kids(&keys).len(), records(&keys).len());
    assert!(!d.events("PKCS#11 token available again").is_empty());
}

/// `/v1/keys` once every algorithm has one active key and one next key of
/// custody `next` (`null`: the store): a next key is made, and one of
/// another backend retired, by the first lifecycle step after the rotation
/// or the start that calls for it.
async fn settled(d: &Daemon, next: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = d.keys().await;
        let of = |alg: &str, state: &str| {
            records(&keys)
                .iter()
                .filter(|k| k["alg"] == alg && k["state"] == state)
                .collect::<Vec<_>>()
        };
        let done = |alg| {
            let next_keys = of(alg, "next");
            of(alg, "active").len() == 1 && next_keys.len() == 1 && &next_keys[0]["custody"] == next
        };
        if ALGS.into_iter().all(done) {
            return keys;
        }
        assert!(
            Instant::now() < deadline,
            "the keys never settled:\n{}",
            summary(&keys)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// software → pkcs11 → software, by rotation; then the token dropped from
/// the configuration while one of its keys is published: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_between_backends_is_a_rotation_both_ways() {
    if skip("moving_between_backends_is_a_rotation_both_ways") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    let config = write_config(tmp.path(), MANUAL);
    let mut d = Daemon::start_with(tmp.path(), &config, &hsm.env()).await;
    let keys = settled(&d, &Value::Null).await;
    let soft_active: Vec<String> = ALGS.iter().map(|a| kid_in(&keys, a, "active")).collect();
    let soft_next: Vec<String> = ALGS.iter().map(|a| kid_in(&keys, a, "next")).collect();
    for k in records(&keys) {
        assert!(k.get("custody").is_none(), "{k}");
    }
    // (token, alg)
    let mut tokens: Vec<(String, &str)> = Vec::new();
    for (alg, kid) in ALGS.into_iter().zip(&soft_active) {
        let (by, token) = sign(&d, alg, "software").await;
        assert_eq!(&by, kid);
        tokens.push((token, alg));
    }
    assert_eq!(custody_column(&d, &soft_active[0]), "software");

    // To the token.
    stop_clean(&mut d);
    write_config(tmp.path(), &format!("{MANUAL}{}", hsm.keys("pkcs11")));
    d.restart().await;
    let keys = settled(&d, &token_custody()).await;
    let jwks = d.jwks().await;
    let published_kids = support::daemon::kids(&jwks);
    let mut token_next = Vec::new();
    for (i, alg) in ALGS.into_iter().enumerate() {
        // The active key stays in the store and signs.
        assert_eq!(kid_in(&keys, alg, "active"), soft_active[i]);
        assert!(record(&keys, &soft_active[i]).get("custody").is_none());
        let (by, token) = sign(&d, alg, "software-after-move").await;
        assert_eq!(by, soft_active[i]);
        verify(&jwks, &token, alg, true).unwrap();
        tokens.push((token, alg));
        // The old next key retired at once; a new one in the token.
        let old = record(&keys, &soft_next[i]);
        assert_eq!(old["state"], "retired", "{old}");
        assert_eq!(
            old["transitions"].as_array().unwrap().last().unwrap()["trigger"],
            "config",
            "{old}"
        );
        assert!(!published_kids.contains(&soft_next[i]));
        let next = kid_in(&keys, alg, "next");
        assert_ne!(next, soft_next[i]);
        assert_eq!(record(&keys, &next)["custody"], token_custody());
        assert!(published_kids.contains(&next));
        token_next.push(next);
    }
    assert_eq!(custody_column(&d, &soft_active[0]), "software");
    // The store's active key is exported as configured (the default).
    for (alg, kid) in ALGS.into_iter().zip(&soft_active) {
        let v = d.active_key(alg).await.json().unwrap();
        assert_eq!(v["kid"], kid.as_str());
        assert!(
            v["pem"].as_str().unwrap().contains("PRIVATE KEY") && v["jwk"]["d"].is_string(),
            "{alg}: {v}"
        );
    }
    assert_eq!(
        custody_column(&d, &token_next[0]),
        format!("pkcs11:{LABEL}")
    );
    let in_token: BTreeSet<String> = token_next.iter().cloned().collect();
    held_exactly(&hsm, &in_token).await;
    for (token, alg) in &tokens {
        verify(&jwks, token, alg, false).unwrap();
    }

    // The rotation makes the token's keys active.
    let rotated = rotate_when_allowed(&d).await;
    assert_eq!(rotated["rotated"].as_array().unwrap().len(), 2, "{rotated}");
    let keys = settled(&d, &token_custody()).await;
    let jwks = d.jwks().await;
    for (i, alg) in ALGS.into_iter().enumerate() {
        assert_eq!(kid_in(&keys, alg, "active"), token_next[i]);
        // The token's key: not exported, whatever the configuration says.
        assert_eq!(
            active_without_private_material(&d, alg, &jwks).await,
            token_next[i]
        );
        let old = record(&keys, &soft_active[i]);
        assert_eq!(old["state"], "retiring", "{old}");
        assert!(support::daemon::kids(&jwks).contains(&soft_active[i]));
        let (by, token) = sign(&d, alg, "token").await;
        assert_eq!(by, token_next[i]);
        verify(&jwks, &token, alg, true).unwrap();
        tokens.push((token, alg));
    }
    // Tokens of the store's keys still verify (their keys still published).
    for (token, alg) in &tokens {
        verify(&jwks, token, alg, false).unwrap();
    }

    // And back to the store, the token still configured.
    stop_clean(&mut d);
    write_config(tmp.path(), &format!("{MANUAL}{}", hsm.keys("software")));
    d.restart().await;
    let keys = settled(&d, &Value::Null).await;
    let jwks = d.jwks().await;
    let published_kids = support::daemon::kids(&jwks);
    let mut soft_next2 = Vec::new();
    let mut token_next_retired = Vec::new();
    for (i, alg) in ALGS.into_iter().enumerate() {
        assert_eq!(kid_in(&keys, alg, "active"), token_next[i]);
        let (by, token) = sign(&d, alg, "token-after-move").await;
        assert_eq!(by, token_next[i]);
        verify(&jwks, &token, alg, true).unwrap();
        tokens.push((token, alg));
        // The token's next key (made at the rotation) retired at once.
        let retired: Vec<&Value> = records(&keys)
            .iter()
            .filter(|k| {
                k["alg"] == alg
                    && k["state"] == "retired"
                    && k["custody"] == token_custody()
                    && k["transitions"].as_array().unwrap().last().unwrap()["trigger"] == "config"
            })
            .collect();
        assert_eq!(retired.len(), 1, "{alg}:\n{}", summary(&keys));
        let gone = retired[0]["kid"].as_str().unwrap().to_owned();
        assert!(!published_kids.contains(&gone));
        token_next_retired.push(gone);
        let next = kid_in(&keys, alg, "next");
        assert!(record(&keys, &next).get("custody").is_none(), "{keys}");
        soft_next2.push(next);
    }
    // The retired next keys left the token; the active ones are there.
    let objects = held_exactly(&hsm, &in_token).await;
    for kid in &token_next_retired {
        let hex = hex::encode(kid);
        assert!(objects.iter().all(|o| o.id != hex), "{kid}: {objects:?}");
    }
    let rotated = rotate_when_allowed(&d).await;
    assert_eq!(rotated["rotated"].as_array().unwrap().len(), 2, "{rotated}");
    let keys = settled(&d, &Value::Null).await;
    let jwks = d.jwks().await;
    for (i, alg) in ALGS.into_iter().enumerate() {
        assert_eq!(kid_in(&keys, alg, "active"), soft_next2[i]);
        assert_eq!(record(&keys, &token_next[i])["state"], "retiring");
        let (by, token) = sign(&d, alg, "software-again").await;
        assert_eq!(by, soft_next2[i]);
        verify(&jwks, &token, alg, true).unwrap();
        tokens.push((token, alg));
    }
    assert_eq!(custody_column(&d, &soft_next2[0]), "software");
    assert_eq!(
        custody_column(&d, &token_next[0]),
        format!("pkcs11:{LABEL}")
    );
    for (token, alg) in &tokens {
        let head = jsonwebtoken::decode_header(token).unwrap();
        let kid = head.kid.unwrap();
        if support::daemon::kids(&jwks).contains(&kid) {
            verify(&jwks, token, alg, false).unwrap();
        }
    }
    // The token keys rotated out, still published, sign no more but are
    // still in the token until they retire.
    held_exactly(&hsm, &in_token).await;
    let retire_at = chrono::DateTime::parse_from_rfc3339(
        record(&keys, &token_next[0])["retire_at"].as_str().unwrap(),
    )
    .unwrap()
    .timestamp() as f64;

    // Without keys.pkcs11, while they are published: refused, naming them.
    stop_clean(&mut d);
    write_config(tmp.path(), MANUAL);
    assert!(
        unix_now() + 3.0 < retire_at,
        "the token's keys retire too soon for the check"
    );
    let (log, took) = start_fails(&d.config, &hsm.env()).await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    for kid in &token_next {
        assert!(log.contains(kid.as_str()), "{kid} not named:\n{log}");
    }
    assert!(log.contains("keys.pkcs11"), "{log}");

    // Configured again: once they retired, their objects are gone, and a
    // start without the token is allowed.
    write_config(tmp.path(), &format!("{MANUAL}{}", hsm.keys("software")));
    d.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while token_next
        .iter()
        .any(|kid| !hsm.objects_with_id(kid).is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the token's keys never left it: {}",
            d.keys().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let keys = settled(&d, &Value::Null).await;
    for kid in &token_next {
        assert_eq!(record(&keys, kid)["state"], "retired");
    }
    held_exactly(&hsm, &BTreeSet::new()).await;
    stop_clean(&mut d);
    write_config(tmp.path(), MANUAL);
    d.restart().await;
    for alg in ALGS {
        sign(&d, alg, "store-only").await;
    }
}

/// What a load finds in the token that no state names: staged and pending
/// objects destroyed, objects of ended keys destroyed, objects of unknown
/// kids reported with the command that removes them, and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_tidies_leftovers_and_reports_unknown_objects() {
    if skip("a_load_tidies_leftovers_and_reports_unknown_objects") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    let config = write_config(tmp.path(), &format!("{MANUAL}{}", hsm.keys("pkcs11")));
    let mut d = Daemon::start_with(tmp.path(), &config, &hsm.env()).await;
    // A revoked key of the token: its objects go at once.
    let keys = settled(&d, &token_custody()).await;
    let revoked = kid_in(&keys, "ES256", "active");
    assert_eq!(d.revoke(&revoked).await.status, 200);
    assert!(hsm.objects_with_id(&revoked).is_empty());
    let keys = settled(&d, &token_custody()).await;
    let live: Vec<String> = records(&keys)
        .iter()
        .filter(|k| is_published(&k["state"]))
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(live.len(), 4, "{keys}");
    stop_clean(&mut d);

    let staged = "Stagedkidxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1";
    let unknown = "Unknownkidyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy2";
    let elsewhere = "Elsewherekidzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz3";
    let pending = "jwksd-pending-1-00112233445566778899aabbccddeeff";
    assert_eq!((staged.len(), unknown.len(), elsewhere.len()), (43, 43, 43));
    // Staged by this key ring (the key directory's mark) and by another.
    let ring = jwksd::keyring::token::ring_of(&tmp.path().join("keys").display().to_string());
    hsm.keypair(&format!("jwksd-staged-{ring}-1"), staged);
    hsm.keypair("jwksd-staged-0123456789abcdef-1", elsewhere);
    hsm.keypair(unknown, unknown);
    hsm.keypair(pending, pending);
    // As if a destruction of the revoked key had been cut short.
    hsm.keypair(&revoked, &revoked);
    for id in [staged, unknown, elsewhere, pending, revoked.as_str()] {
        assert_eq!(hsm.objects_with_id(id).len(), 2, "{id}");
    }

    d.restart().await;
    let notes = d.log_text();
    let note = |what: &str| {
        notes
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let staged_note = note(&format!("destroyed {staged} in pkcs11:{LABEL}"));
    assert_eq!(staged_note.len(), 1, "{notes}");
    assert!(
        staged_note[0].contains("never committed"),
        "{staged_note:?}"
    );
    assert_eq!(
        note(&format!("destroyed {pending} in pkcs11:{LABEL}")).len(),
        1,
        "{notes}"
    );
    assert_eq!(
        note(&format!("destroyed {revoked} in pkcs11:{LABEL}")).len(),
        1,
        "{notes}"
    );
    let unknown_note = note(&format!("holds a key {unknown}"));
    assert_eq!(unknown_note.len(), 1, "{notes}");
    let line = &unknown_note[0];
    let command = format!(
        "pkcs11-tool --module {MODULE} --token-label {LABEL} --login --delete-object --type privkey --id {}",
        hex::encode(unknown)
    );
    assert!(line.contains(&command), "{line}");
    assert!(line.contains("--type pubkey"), "{line}");
    assert!(!line.contains(PIN), "{line}");
    // Another key ring's staged key: reported, never destroyed.
    assert_eq!(
        note(&format!("holds a key {elsewhere}")).len(),
        1,
        "{notes}"
    );
    assert_eq!(hsm.objects_with_id(elsewhere).len(), 2);

    for id in [staged, pending, revoked.as_str()] {
        assert!(
            hsm.objects_with_id(id).is_empty(),
            "{id}: {:?}",
            hsm.objects()
        );
    }
    assert_eq!(hsm.objects_with_id(unknown).len(), 2);
    // The daemon's own keys are untouched and sign.
    let mut expected: BTreeSet<String> = live.iter().cloned().collect();
    expected.insert(unknown.to_owned());
    expected.insert(elsewhere.to_owned());
    held_exactly(&hsm, &expected).await;
    for alg in ALGS {
        let (kid, _) = sign(&d, alg, "after-tidy").await;
        assert!(live.contains(&kid));
    }
    // The reported command removes it.
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = Command::new("pkcs11-tool")
        .args(&args)
        .args(["--pin", PIN])
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = hsm.objects_with_id(unknown);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left[0].private);
}

/// The token away across scheduled rotations: nothing published is lost,
/// and rotations go on once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_away_across_scheduled_rotations_loses_nothing() {
    if skip("a_token_away_across_scheduled_rotations_loses_nothing") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    let config = write_config(tmp.path(), &format!("{FAST}{}", hsm.keys("pkcs11")));
    let mut d = Daemon::start_with(tmp.path(), &config, &hsm.env()).await;
    let mut tokens = Vec::new();
    for alg in ALGS {
        tokens.push((sign(&d, alg, "before").await, alg));
    }
    let away = tmp.path().join("hsm").join("tokens.away");
    std::fs::rename(&hsm.tokens, &away).unwrap();
    // Two rotation periods away.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        let jwks = d.jwks().await;
        for ((_, token), alg) in &tokens {
            verify(&jwks, token, alg, false).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = d.keys().await;
    eprintln!("away:\n{}", summary(&during));
    std::fs::rename(&away, &hsm.tokens).unwrap();
    wait_readiness(&d, true, Duration::from_secs(5)).await;
    // A next key is made again, and rotations go on.
    let back = settled(&d, &token_custody()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = d.keys().await;
        let rotated = ALGS
            .into_iter()
            .all(|alg| kid_in(&keys, alg, "active") == kid_in(&back, alg, "next"));
        if rotated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation after the token came back:\n{}\n{}",
            summary(&keys),
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for alg in ALGS {
        sign(&d, alg, "after").await;
    }
    // After a restart (whose load destroys what a retirement while the
    // token was away could not), the token holds exactly the published
    // keys.
    settled(&d, &token_custody()).await;
    stop_clean(&mut d);
    let published = published_kids(&state_on_disk(tmp.path()));
    d.restart().await;
    let keys = stop_settled(&mut d, tmp.path(), &hsm).await;
    // Every key published then is still, or retired on its schedule since.
    for kid in &published {
        let k = record(&keys, kid);
        let trigger = &k["transitions"].as_array().unwrap().last().unwrap()["trigger"];
        assert!(
            is_published(&k["state"]) || (k["state"] == "retired" && trigger == "retention"),
            "{kid}:\n{}",
            summary(&keys)
        );
    }
    held_exactly(&hsm, &published_kids(&keys)).await;
}

/// SIGTERM while keys are being generated in the token: the generation is
/// abandoned (its staged objects are tidied at the next start) and the
/// process exits 0, never by a signal of its own; and the next start leaves
/// the token with the published keys only.
///
/// Fails intermittently on 8eda467 (about one run in three): the process
/// can end in SIGSEGV after "stopped", and an interrupted C_GenerateKeyPair
/// can leave an object with neither label nor id that no start reports or
/// destroys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_generation_in_the_token_exits_cleanly() {
    if skip("a_stop_during_a_generation_in_the_token_exits_cleanly") {
        return;
    }
    use std::os::unix::process::ExitStatusExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let hsm = Hsm::init(&tmp.path().join("hsm"));
    let config = write_config(tmp.path(), &format!("{MANUAL}{}", hsm.keys("pkcs11")));
    let mut d = Daemon::start_with(tmp.path(), &config, &hsm.env()).await;
    let mut abandoned = 0;
    for round in 0..12 {
        let keys = settled(&d, &token_custody()).await;
        // Revoking the next keys makes new ones at once.
        for alg in ALGS {
            let next = kid_in(&keys, alg, "next");
            assert_eq!(d.revoke(&next).await.status, 200);
        }
        let status = d.stop();
        if d.log_text().contains("abandoned at shutdown") {
            abandoned += 1;
        }
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: jwksd ended by signal {:?} at shutdown:\n{}",
            status.signal(),
            d.log_text()
        );
        d.restart().await;
    }
    eprintln!("{abandoned} of 12 stops abandoned a generation");
    assert!(abandoned > 0, "no stop fell during a generation");
    // What the abandoned generations left was tidied at the starts.
    let keys = settled(&d, &token_custody()).await;
    held_exactly(&hsm, &published_kids(&keys)).await;
}

/// A commit that ends a key destroys its objects within a deadline of
/// jwksd's own (`keyring::token::DESTROY_DEADLINE`, 10 s): a token that
/// hangs then holds neither the operator's command nor the key ring.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_hangs_while_a_key_is_destroyed_holds_no_command() {
    if skip("a_token_that_hangs_while_a_key_is_destroyed_holds_no_command") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut d, hsm, hang) = start_hanging(tmp.path()).await;
    let keys = d.keys().await;
    let next = kid_in(&keys, "ES256", "next");
    assert_eq!(hsm.objects_with_id(&next).len(), 2);

    // Destroying looks the objects up first (C_FindObjectsInit): it hangs.
    std::fs::write(&hang, "").unwrap();
    let asked = Instant::now();
    let r = d.revoke(&next).await;
    let took = asked.elapsed();
    eprintln!("revoked {took:?} after asking, the token hanging");
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert!(
        took >= Duration::from_millis(9500) && took < Duration::from_secs(20),
        "{took:?}"
    );
    // The key ring is not held: the keys are listed at once, the revoked
    // one among the ended ones, its objects still in the token.
    let listed = Instant::now();
    let keys = d.keys().await;
    assert!(listed.elapsed() < Duration::from_secs(2));
    assert_eq!(record(&keys, &next)["state"], "revoked");
    assert_eq!(hsm.objects_with_id(&next).len(), 2);
    assert!(
        !d.wait_events(
            "the token did not finish destroying the private key of a revoked key; it may still, or the next start destroys it"
        )
            .await
            .is_empty()
    );

    // The destruction left behind finishes once the token answers.
    std::fs::remove_file(&hang).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hsm.objects_with_id(&next).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the revoked key's objects stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_clean(&mut d);
}

/// A daemon in `dir` on a token behind [`hanging_module`], which hangs
/// while the file returned exists.
async fn start_hanging(dir: &Path) -> (Daemon, Hsm, PathBuf) {
    let hsm = Hsm::init(&dir.join("hsm"));
    let module = hanging_module(dir);
    let hang = dir.join("hang");
    let keys = hsm.keys("pkcs11").replace(MODULE, module.to_str().unwrap());
    let config = write_config(dir, &format!("{MANUAL}{keys}"));
    let env = [
        ("SOFTHSM2_CONF", hsm.conf()),
        ("JWKSD_TEST_HANG_MODULE", MODULE),
        ("JWKSD_TEST_HANG_FILE", hang.to_str().unwrap()),
    ];
    let d = Daemon::start_with(dir, &config, &env).await;
    (d, hsm, hang)
}

/// tests/support/hang_pkcs11.c built in `dir`: a module in front of
/// SoftHSM2 whose `C_Sign` and `C_FindObjectsInit` hang while the file
/// `JWKSD_TEST_HANG_FILE` names exists. Its path.
fn hanging_module(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/hang_pkcs11.c");
    let out = dir.join("libhang.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-I/usr/include/p11-kit-1", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("cc (gcc) to build tests/support/hang_pkcs11.c");
    assert!(
        built.status.success(),
        "cc {}: {} (its header is p11-kit's: apt-get install libp11-kit-dev)",
        source.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// Runs `f` to its end, and meanwhile asks for the JWK Set every 250 ms:
/// always `200` with `jwks`, within a second. `f`'s output.
async fn jwks_served_during<T>(
    d: &Daemon,
    jwks: &Value,
    f: impl std::future::Future<Output = T>,
) -> T {
    let mut f = std::pin::pin!(f);
    loop {
        tokio::select! {
            out = &mut f => return out,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let asked = Instant::now();
                let r = d.get_public("/.well-known/jwks.json").await;
                assert_eq!(r.status, 200, "{}", r.error_message());
                assert_eq!(&r.json().unwrap(), jwks);
                assert!(asked.elapsed() < Duration::from_secs(1), "JWK Set in {:?}", asked.elapsed());
            }
        }
    }
}

/// A token that hangs (a network HSM gone silent) rather than goes away:
/// the module in front of SoftHSM2 (tests/support/hang_pkcs11.c) holds
/// `C_Sign` and `C_FindObjectsInit` while a file exists. `/v1/sign`
/// answers `503 timeout` after its own deadline (10 s), also for more
/// signatures at once than there are sessions; the token then counts as
/// away (`/readyz` unready) and a signature meanwhile is answered `503
/// token_unavailable` at once; the JWK Set is served throughout; once the
/// token answers again jwksd is ready and signs with the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_hangs_is_answered_within_deadlines_and_recovers() {
    if skip("a_token_that_hangs_is_answered_within_deadlines_and_recovers") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut d, _hsm, hang) = start_hanging(tmp.path()).await;
    let ready = d.get_public("/readyz").await.json().unwrap();
    assert_eq!(ready["token_available"], true, "{ready}");
    let mut active = Vec::new();
    for alg in ALGS {
        active.push(sign(&d, alg, "before").await.0);
    }
    let jwks = d.jwks().await;

    std::fs::write(&hang, "").unwrap();
    let hung = Instant::now();
    // Signatures wait for C_Sign no longer than jwksd's deadline: more of
    // them at once than the pool has sessions (4), so that every session
    // hangs and the watch's probe finds none free.
    let burst = futures_burst(&d, 6).await;
    sign_refused(&d, &jwks, "ES256", "timeout").await;
    let took = hung.elapsed();
    eprintln!("503 {took:?} after the token hung");
    assert!(
        took >= Duration::from_millis(9500) && took < Duration::from_secs(20),
        "{took:?}"
    );
    for r in burst.await.unwrap() {
        assert_eq!(r.status, 503, "{}", r.error_message());
    }
    // The watch's probe hangs too: unready within its period and deadline.
    let (v, _) = jwks_served_during(
        &d,
        &jwks,
        wait_readiness(
            &d,
            false,
            Duration::from_secs(21).saturating_sub(hung.elapsed()),
        ),
    )
    .await;
    eprintln!("unready {:?} after the token hung", hung.elapsed());
    assert_eq!(v["token_available"], false, "{v}");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("token_unavailable")),
        "{v}"
    );
    assert_eq!(d.metric("jwksd_token_up").await, Some(0.0));
    // Each signature past its deadline is counted, and turned the token
    // away at once (before the probe's own deadline).
    assert_eq!(
        d.metric("jwksd_token_errors_total{kind=\"timeout\"}").await,
        Some(7.0)
    );
    // A signature while the token counts as away is not asked of it: it is
    // answered at once, `503 token_unavailable` with Retry-After, and
    // holds no signing thread.
    let (r, took) = sign_refused(&d, &jwks, "RS256", "token_unavailable").await;
    eprintln!("503 {took:?} while unready");
    assert!(r.header(header::RETRY_AFTER).is_some(), "no Retry-After");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(d.get_public("/readyz").await.status, 503);

    std::fs::remove_file(&hang).unwrap();
    let answers = Instant::now();
    let (v, took) = wait_readiness(&d, true, Duration::from_secs(15)).await;
    eprintln!("ready {took:?} after the token answered again");
    assert_eq!(v["token_available"], true, "{v}");
    assert_eq!(d.metric("jwksd_token_up").await, Some(1.0));
    assert_eq!(d.jwks().await, jwks);
    for (alg, kid) in ALGS.into_iter().zip(&active) {
        let (signed_by, token) = sign(&d, alg, "after").await;
        assert_eq!(&signed_by, kid);
        assert_eq!(verify(&jwks, &token, alg, true).unwrap()["sub"], "after");
    }
    assert!(
        answers.elapsed() < Duration::from_secs(15),
        "{:?}",
        answers.elapsed()
    );
    for logged in [
        "PKCS#11 token unavailable: signing with its keys fails until it answers again",
        "PKCS#11 token available again",
    ] {
        assert!(!d.wait_events(logged).await.is_empty(), "{logged}");
    }
    stop_clean(&mut d);
}

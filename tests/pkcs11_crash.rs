//! Crash safety with `keys.backend: pkcs11` (issue 12): the real daemon on
//! the directory store, its keys in a SoftHSM2 token, rotating every
//! second, is killed with SIGKILL at random instants (during start-up
//! generation, between `C_GenerateKeyPair` and the commit, during
//! retirements' destructions) and restarted.
//!
//! After every kill, with the daemon stopped: the store loads; every
//! published key whose custody is the token has both its objects there; no
//! object is named by a kid the state does not know; nothing observed in the
//! JWK Set is lost. After the next start, once ready (its load done): every
//! leftover the kill made (pending and staged objects no state names,
//! objects of retired keys) is gone, and both algorithms sign with keys
//! that verify against the JWK Set. At the end, after a clean stop and the load's repairs, the
//! token holds exactly the objects of the keys the state names (and a
//! foreign key made by the test, reported by the daemon and never touched).
//!
//! It found that a kill during an attribute write can take an object out
//! of SoftHSM2 (`a_kill_during_an_attribute_write_can_lose_the_key`), when
//! committed keys were still renamed to their kid after the commit: jwksd
//! now never writes to a committed key's objects (docs/pkcs11.md, "Crash
//! rules").
//!
//! SoftHSM2 also rewrites its own token file in place at every `C_Login`
//! (`a_kill_during_a_login_can_lose_the_token`): a kill in that instant of
//! a start takes the whole token away, whatever jwksd does. The test then
//! puts back the copy it took of that file (an operator's backup: but for a
//! write counter at its start, it does not change while the PINs do not),
//! counts it, and goes on.
//!
//! `JWKSD_PKCS11_CRASH_SEED` replays the kill instants of a printed seed;
//! `JWKSD_PKCS11_CRASH_KILLS` sets the number of kills (60).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jwksd::client::Client;
use jwksd::keyring::Keyring;
use jwksd::keys::custody::Custody;
use jwksd::keys::pkcs11::{Half, Owner, Token, TokenError, TokenObject};
use jwksd::keys::{Alg, Kid};
use jwksd::lifecycle::state::HISTORY_LIMIT;
use jwksd::lifecycle::{KeyState, KeyringState, Trigger};
use jwksd::store::KeyStore;
use jwksd::store::fs::FsStore;
use serde_json::{Value, json};
use support::crash::{Proc, Rng, env_count, observe_jwks, spawn};
use support::daemon::write_config;
use support::softhsm::{Hsm, LABEL, isolated, key_afresh, list_afresh};

/// What a kill left in the token for the next start's load to repair.
#[derive(Default, Debug)]
struct Leftovers {
    /// Pending objects (generations cut short before the kid was known).
    pending: BTreeSet<String>,
    /// Staged objects no state names (generations that never committed).
    uncommitted: BTreeSet<Kid>,
    /// Objects of keys the state records as retired or revoked.
    ended: BTreeSet<Kid>,
    /// Objects with neither label nor id (a creation killed half-way).
    unnamed: usize,
}

impl Leftovers {
    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.uncommitted.is_empty() && self.ended.is_empty()
    }
}

#[derive(Default)]
struct Stats {
    kills: u32,
    during_startup: u32,
    pending: u32,
    uncommitted: u32,
    ended: u32,
    signed: u32,
    pruned: u32,
    /// Kills during a start's `C_Login` that cut SoftHSM2's token file short.
    token_file_restored: u32,
}

#[test]
fn pkcs11_survives_sigkill_at_random_instants() {
    isolated(
        "pkcs11_survives_sigkill_at_random_instants",
        Duration::from_secs(300),
        |hsm| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(crash_test(hsm))
        },
    );
}

async fn crash_test(hsm: &Hsm) {
    let kills = env_count("JWKSD_PKCS11_CRASH_KILLS", 60);
    let (mut rng, seed) = Rng::from_env("JWKSD_PKCS11_CRASH_SEED", "pkcs11 crash test");
    let began = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let config = write_config(
        tmp.path(),
        &format!(
            "rotation:\n  every: 1s\ntokens:\n  max_lifetime: 2s\n  clock_skew: 0s\njwks:\n  cache_max_age: 500ms\nsigning_key:\n  cache_max_age: 0s\n{}",
            hsm.keys_config()
        ),
    );
    // The test's own view of the token: one module initialisation for the
    // whole test, reopened before each look.
    let token = hsm.open();
    let token_file = hsm.token_file();
    let token_file_copy = std::fs::read(&token_file).unwrap();
    // A key no state names (another jwksd's, or restored from elsewhere):
    // reported, never destroyed.
    let foreign = token.generate(Alg::ES256, 2048).unwrap().kid;
    let client = Client::new(Duration::from_secs(5));
    let mut observed: BTreeMap<String, Instant> = BTreeMap::new();
    let mut stats = Stats::default();
    let mut left = Leftovers::default();

    for cycle in 0..kills {
        let ctx = format!("cycle {cycle} (seed {seed})");
        let mut p = spawn(&config);
        if rng.below(3) == 0 {
            // Kill during start-up: loading and its repairs, the first
            // generations (RSA in SoftHSM2: 0.1 to 0.3 s each), their commit.
            std::thread::sleep(Duration::from_millis(rng.below(700)));
            stats.during_startup += 1;
        } else {
            let (public, admin) = p
                .addrs
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{ctx}: daemon did not start:\n{}", p.log_text()));
            wait_ready(&client, &public, &ctx, &p).await;
            // The load is done: what the last kill left is repaired.
            check_repaired(&token, &left, &foreign, &ctx);
            // Both algorithms sign with a key of the token, and the
            // signature verifies against the JWK Set.
            let signer = std::fs::read_to_string(keys.join("signer.token"))
                .unwrap()
                .trim()
                .to_owned();
            for alg in support::DEFAULT_ALGS {
                sign_and_verify(&client, &public, &admin, &signer, alg, &ctx).await;
                stats.signed += 1;
            }
            observe_jwks(&client, &public, &mut observed, &mut rng, &ctx).await;
        }
        p.kill();
        stats.kills += 1;
        if std::fs::read(&token_file).unwrap().len() < token_file_copy.len() {
            eprintln!(
                "{ctx}: the kill cut SoftHSM2's token file short (a kill during C_Login): \
                 put back from the copy"
            );
            std::fs::write(&token_file, &token_file_copy).unwrap();
            stats.token_file_restored += 1;
        }

        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let state = check_store(&keys, &observed, &ctx, &mut stats);
            check_token(&token, &state, &foreign, &ctx)
        }));
        left = checked.unwrap_or_else(|panic| {
            // What the killed daemon said last, and the token as it is.
            let log = p.log_text();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "{ctx}: the killed daemon's last log lines:\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
            eprintln!("{ctx}: the token: {:?}", token.list());
            let state = FsStore::open(&keys, None)
                .and_then(|s| s.load())
                .map(|l| l.state)
                .unwrap_or_default();
            eprintln!(
                "{ctx}: state.json:\n{}",
                std::fs::read_to_string(keys.join("state.json")).unwrap_or_default()
            );
            for slot in std::fs::read_dir(hsm.dir.join("tokens")).unwrap().flatten() {
                for f in std::fs::read_dir(slot.path()).unwrap().flatten() {
                    let bytes = std::fs::read(f.path()).unwrap_or_default();
                    let names: Vec<&Kid> = state
                        .keys
                        .iter()
                        .map(|k| &k.kid)
                        .filter(|kid| {
                            bytes
                                .windows(kid.as_str().len())
                                .any(|w| w == kid.as_str().as_bytes())
                        })
                        .collect();
                    eprintln!(
                        "{ctx}: {} {} bytes {names:?}",
                        f.path().display(),
                        bytes.len()
                    );
                }
            }
            std::panic::resume_unwind(panic)
        });
        stats.pending += !left.pending.is_empty() as u32;
        stats.uncommitted += !left.uncommitted.is_empty() as u32;
        stats.ended += !left.ended.is_empty() as u32;
        if !left.is_empty() {
            eprintln!("{ctx}: the kill left {left:?}");
        }
    }

    // A last start: ready, repaired, signing, and a clean stop.
    let ctx = format!("the last start (seed {seed})");
    let mut p = spawn(&config);
    let (public, admin) = p.addrs.recv_timeout(Duration::from_secs(30)).unwrap();
    wait_ready(&client, &public, &ctx, &p).await;
    check_repaired(&token, &left, &foreign, &ctx);
    let signer = std::fs::read_to_string(keys.join("signer.token"))
        .unwrap()
        .trim()
        .to_owned();
    for alg in support::DEFAULT_ALGS {
        sign_and_verify(&client, &public, &admin, &signer, alg, &ctx).await;
    }
    // The foreign key was reported (by every start; this one's log is kept).
    assert!(
        p.log_text().contains(&format!(
            "holds a key {foreign} that the state does not know"
        )),
        "{ctx}: the foreign key was not reported:\n{}",
        p.log_text()
    );
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{ctx}:\n{}", p.log_text());

    // After the load's repairs (the daemon's own load, run here on the
    // stopped daemon's store), state and token agree exactly.
    token.reopen().unwrap();
    let (ring, notes) = Keyring::load_with(
        Box::new(FsStore::open(&keys, None).unwrap()),
        Some(token.clone()),
    )
    .unwrap_or_else(|e| panic!("{ctx}: the store and token do not load: {e}"));
    let state = ring.state().clone();
    drop(ring);
    token.reopen().unwrap();
    // The state's keys, staged by this key ring (their label never changes
    // after the commit), and the foreign key, named by its kid.
    let mut expected: Vec<(Kid, Half)> = state
        .keys
        .iter()
        .map(|k| {
            assert_eq!(
                k.custody,
                Custody::Pkcs11 {
                    token_label: LABEL.into()
                },
                "{ctx}: {} is not in the token",
                k.kid
            );
            k.kid.clone()
        })
        .chain([foreign.clone()])
        .flat_map(|kid| [Half::Public, Half::Private].map(|half| (kid.clone(), half)))
        .collect();
    expected.sort();
    let objects = token.list().unwrap();
    let unnamed = objects.iter().filter(|o| o.owner == Owner::Unnamed).count();
    if unnamed > 0 {
        // Not jwksd's to destroy: the load reports them.
        assert!(
            notes
                .iter()
                .any(|n| n.contains("neither a label nor an id")),
            "{ctx}: {unnamed} unnamed objects not reported: {notes:?}"
        );
    }
    let mut listed: Vec<(Kid, Half)> = objects
        .into_iter()
        .filter_map(|o| match o.owner {
            Owner::Staged { kid, .. } => Some((kid, o.half)),
            Owner::Kid(kid) if kid == foreign => Some((kid, o.half)),
            Owner::Unnamed => None,
            other => panic!("{ctx}: {other:?} left in the token"),
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed, expected,
        "{ctx}: state and token differ (load notes: {notes:?})"
    );

    eprintln!(
        "pkcs11 crash test: {} kills survived in {:?} ({} during start-up); kills that left \
         pending objects: {}, uncommitted staged keys: {}, objects of ended keys: {}; {} signatures verified; {} kids observed, {} pruned from \
         the bounded history; SoftHSM2 token files put back after a kill during C_Login: {}",
        stats.kills,
        began.elapsed(),
        stats.during_startup,
        stats.pending,
        stats.uncommitted,
        stats.ended,
        stats.signed,
        observed.len(),
        stats.pruned,
        stats.token_file_restored
    );
    assert!(stats.kills >= kills);
}

async fn wait_ready(client: &Client, public: &str, ctx: &str, p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get(&format!("{public}/readyz"), None).await;
        if r.is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: not ready:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signs with `alg` through `/v1/sign` and verifies the token with
/// jsonwebtoken against the JWK Set.
async fn sign_and_verify(
    client: &Client,
    public: &str,
    admin: &str,
    signer: &str,
    alg: Alg,
    ctx: &str,
) {
    let r = client
        .post_json(
            &format!("{admin}/v1/sign"),
            Some(signer),
            &json!({"alg": alg.to_string(), "claims": {"sub": "crash"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{ctx}: sign {alg}: {}", r.error_message());
    let jwt = r.json().unwrap()["token"].as_str().unwrap().to_owned();
    let kid = jsonwebtoken::decode_header(&jwt).unwrap().kid.unwrap();
    // The JWK Set holds a key before it signs (publish_ahead); fetched
    // after the signature it holds it still (retention).
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(
        client
            .get(&format!("{public}/.well-known/jwks.json"), None)
            .await
            .unwrap()
            .json()
            .unwrap(),
    )
    .unwrap();
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("{ctx}: {alg} signed with {kid}, not in the JWK Set"));
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(support::jwt_algorithm(alg).unwrap());
    v.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(&jwt, &key, &v)
        .unwrap_or_else(|e| panic!("{ctx}: {alg} token of {kid} does not verify: {e}"))
        .claims;
    assert_eq!(claims["sub"], "crash");
}

/// Loads the stopped daemon's store from outside and checks it; returns
/// its state.
fn check_store(
    keys: &Path,
    observed: &BTreeMap<String, Instant>,
    ctx: &str,
    stats: &mut Stats,
) -> KeyringState {
    let store = FsStore::open(keys, None).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let loaded = store
        .load()
        .unwrap_or_else(|e| panic!("{ctx}: store does not load: {e}"));
    let state = loaded.state;
    let custody = Custody::Pkcs11 {
        token_label: LABEL.into(),
    };
    for k in &state.keys {
        assert_eq!(k.custody, custody, "{ctx}: {} is not in the token", k.kid);
    }
    assert!(
        loaded.keys.is_empty(),
        "{ctx}: private keys in the store: {:?}",
        loaded.keys.keys().collect::<Vec<_>>()
    );

    // One active key per algorithm (once the store holds any key).
    if !state.keys.is_empty() {
        for alg in support::DEFAULT_ALGS {
            let n = state.in_state(alg, KeyState::Active).count();
            assert_eq!(n, 1, "{ctx}: {alg} has {n} active keys");
        }
    }

    // Nothing observed is lost; nothing retired early; nothing revoked.
    for kid in observed.keys() {
        let Some(k) = state.find(&kid.parse().unwrap()) else {
            assert_eq!(state.history.len(), HISTORY_LIMIT, "{ctx}: {kid} lost");
            stats.pruned += 1;
            continue;
        };
        match k.state {
            KeyState::Retired => {
                let last = k.transitions.last().unwrap();
                assert_eq!(last.trigger, Trigger::Retention, "{ctx}: {kid}: {last:?}");
                assert!(k.ended_at >= k.retire_at, "{ctx}: {kid} retired early");
            }
            KeyState::Revoked => panic!("{ctx}: {kid} revoked, nobody asked"),
            _ => {}
        }
        let activations = k
            .transitions
            .iter()
            .filter(|t| t.to == KeyState::Active)
            .count();
        assert!(
            activations <= 1,
            "{ctx}: {kid} activated {activations} times"
        );
    }
    assert!(state.history.len() <= HISTORY_LIMIT);
    state
}

/// Lists the token (the daemon stopped) against the state: every key the
/// state names is whole in the token; no object carries a kid the state
/// never knew. Returns what the next load must repair.
fn check_token(token: &Token, state: &KeyringState, foreign: &Kid, ctx: &str) -> Leftovers {
    token.reopen().unwrap();
    for k in &state.keys {
        let found = token.key(&k.kid, k.alg).unwrap().unwrap_or_else(|| {
            panic!(
                "{ctx}: the {} {} key {} is not in the token",
                k.state, k.alg, k.kid
            )
        });
        assert_eq!(found.public, k.public, "{ctx}: {}", k.kid);
    }
    let live = |kid: &Kid| state.keys.iter().any(|k| &k.kid == kid);
    let ended = |kid: &Kid| state.history.iter().any(|k| &k.kid == kid);
    let mut left = Leftovers::default();
    for TokenObject { owner, .. } in token.list().unwrap() {
        match owner {
            // What SoftHSM2 leaves of an object whose creation was killed:
            // reported at load, never jwksd's to destroy.
            Owner::Unnamed => left.unnamed += 1,
            Owner::Pending(label) => {
                left.pending.insert(label);
            }
            // Committed: a state names it (its label never changes).
            Owner::Staged { kid, .. } if live(&kid) => {}
            Owner::Staged { kid, .. } if ended(&kid) => {
                left.ended.insert(kid);
            }
            Owner::Staged { kid, .. } if state.history.len() == HISTORY_LIMIT => {
                // Ended and already out of the bounded history, or never
                // committed: either way a leftover the load destroys.
                left.uncommitted.insert(kid);
            }
            Owner::Staged { kid, .. } => {
                left.uncommitted.insert(kid);
            }
            Owner::Kid(kid) => assert_eq!(
                &kid, foreign,
                "{ctx}: the token names {kid} by its kid: jwksd never does"
            ),
        }
    }
    left
}

/// After a start's load: what the previous kill left is repaired, and the
/// foreign key is untouched.
fn check_repaired(token: &Token, left: &Leftovers, foreign: &Kid, ctx: &str) {
    let objects = list_afresh(token);
    let staged: HashSet<&Kid> = objects
        .iter()
        .filter_map(|o| match &o.owner {
            Owner::Staged { kid, .. } => Some(kid),
            _ => None,
        })
        .collect();
    let named: HashSet<&Kid> = objects
        .iter()
        .filter_map(|o| match &o.owner {
            Owner::Kid(kid) => Some(kid),
            _ => None,
        })
        .collect();
    for label in &left.pending {
        assert!(
            !objects
                .iter()
                .any(|o| o.owner == Owner::Pending(label.clone())),
            "{ctx}: pending {label} left after the load"
        );
    }
    for kid in &left.uncommitted {
        assert!(
            !staged.contains(kid) && !named.contains(kid),
            "{ctx}: uncommitted staged {kid} left after the load"
        );
    }
    for kid in &left.ended {
        assert!(
            !staged.contains(kid) && !named.contains(kid),
            "{ctx}: ended {kid} left in the token after the load"
        );
    }
    assert!(
        key_afresh(token, foreign, Alg::ES256).is_some(),
        "{ctx}: the foreign key {foreign} was destroyed"
    );
}

/// A generator for kill instants seeded from the time: the
/// characterisations below look for a kill that hits, any one will do.
fn time_seeded() -> Rng {
    Rng(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1)
}

/// Runs this binary's test `writer` with `env` set, waits for it to print
/// `ready`, lets it write for 5 to 55 ms, and kills it with SIGKILL.
fn kill_writer(rng: &mut Rng, writer: &str, env: (&str, &str), ready: &str) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([writer, "--exact", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(ready) {
        line.clear();
        use std::io::BufRead as _;
        assert!(out.read_line(&mut line).unwrap() > 0, "the writer exited");
    }
    std::thread::sleep(Duration::from_millis(5 + rng.below(50)));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A writer's read-write session on the test's token (cryptoki directly,
/// not logged in).
fn writer_session() -> cryptoki::session::Session {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let ctx = Pkcs11::new(support::softhsm::MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == LABEL)
        .unwrap();
    ctx.open_rw_session(slot).unwrap()
}

/// Set in the login writer's process: logs in and out until killed.
const LOGGER: &str = "JWKSD_TEST_PKCS11_LOGIN_WRITER";

/// What a kill during any `C_Login` risks, made likely (the crash test hit
/// it during a start, about once in a few dozen runs): SoftHSM2's
/// `Token::loginUser` stores the token's flags at every login, and storing
/// rewrites the token's own file (`token.object`: label, serial, PIN blobs,
/// flags) in place, truncating it first. A process killed in between leaves
/// it empty or cut short, and SoftHSM2 then shows no token at all: every
/// key in it is out of reach until the file is put back. A process logging
/// in and out over and over is killed at random instants.
///
/// jwksd cannot prevent it (it must log in to sign; it logs in once per
/// module initialisation, at start and at a reopening); docs/pkcs11.md
/// ("Crash rules") says to keep a copy of that file. A characterisation of
/// SoftHSM2: it fails, saying to update that page, if no kill cuts the file
/// short.
#[test]
fn a_kill_during_a_login_can_lose_the_token() {
    isolated(
        "a_kill_during_a_login_can_lose_the_token",
        Duration::from_secs(120),
        |hsm| {
            let token = hsm.open();
            let kid = token.generate(Alg::ES256, 2048).unwrap().kid;
            let file = hsm.token_file();
            let copy = std::fs::read(&file).unwrap();
            let kills = 30;
            let mut lost = 0;
            let mut rng = time_seeded();
            for _ in 0..kills {
                kill_writer(&mut rng, "login_writer", (LOGGER, "1"), "LOGGER logging in");
                if std::fs::read(&file).unwrap().len() < copy.len() {
                    lost += 1;
                    // The token is gone for a fresh look...
                    assert!(
                        matches!(
                            token.reopen(),
                            Err(TokenError::TokenNotFound { .. } | TokenError::TokenGone { .. })
                        ),
                        "a cut-short token file, and the token still opens"
                    );
                    // ...and back, with its key, from the copy.
                    std::fs::write(&file, &copy).unwrap();
                }
                token.reopen().unwrap();
                assert!(token.key(&kid, Alg::ES256).unwrap().is_some());
            }
            eprintln!("{lost} of {kills} kills during C_Login cut the token file short");
            assert!(
                lost > 0,
                "no kill during C_Login cut the token file short: SoftHSM2 may now write it \
                 atomically; update docs/pkcs11.md (\"Crash rules\")"
            );
        },
    );
}

/// The process [`a_kill_during_a_login_can_lose_the_token`] kills: logs in
/// and out until killed (cryptoki directly).
#[test]
fn login_writer() {
    if std::env::var_os(LOGGER).is_none() {
        return;
    }
    use cryptoki::session::UserType;
    let session = writer_session();
    let pin =
        cryptoki::types::RawAuthPin::new(Box::new(support::softhsm::USER_PIN.as_bytes().to_vec()));
    println!("LOGGER logging in");
    loop {
        session.login_with_raw(UserType::User, &pin).unwrap();
        session.logout().unwrap();
    }
}

/// Set in the attribute writer's process: the kid whose label it rewrites.
const WRITER: &str = "JWKSD_TEST_PKCS11_WRITER_KID";

/// What a kill during any attribute write risks, made likely (the crash
/// test hit it when jwksd still renamed keys after their commit): SoftHSM2's
/// file object store rewrites an
/// object's file in place (truncate, then write: `ObjectFile::
/// writeAttributes`) on every `C_SetAttributeValue`, so a process killed
/// in between leaves the file empty or cut short, and SoftHSM2 then no
/// longer shows the object. A process rewriting the label of a named key
/// over and over is killed at random instants, and some kills lose it.
///
/// This is why jwksd never writes to a committed key's objects (it once
/// renamed them to their kid after the commit, and the crash test lost
/// keys). A characterisation of SoftHSM2: it fails, saying to update
/// docs/pkcs11.md, if no kill loses the key.
#[test]
fn a_kill_during_an_attribute_write_can_lose_the_key() {
    isolated(
        "a_kill_during_an_attribute_write_can_lose_the_key",
        Duration::from_secs(120),
        |hsm| {
            let token = hsm.open();
            let kills = 30;
            let mut lost = Vec::new();
            let mut rng = time_seeded();
            let mut kid = token.generate(Alg::ES256, 2048).unwrap().kid;
            for i in 0..kills {
                kill_writer(
                    &mut rng,
                    "attribute_writer",
                    (WRITER, kid.as_str()),
                    "WRITER writing",
                );
                token.reopen().unwrap();
                if token.key(&kid, Alg::ES256).unwrap().is_none() {
                    let left: Vec<Half> = token
                        .list()
                        .unwrap()
                        .into_iter()
                        .filter(|o| match &o.owner {
                            Owner::Kid(k) | Owner::Staged { kid: k, .. } => k == &kid,
                            Owner::Pending(_) | Owner::Unnamed => false,
                        })
                        .map(|o| o.half)
                        .collect();
                    lost.push(format!("kill {i}: {kid} lost; left of it: {left:?}"));
                    kid = token.generate(Alg::ES256, 2048).unwrap().kid;
                }
            }
            eprintln!(
                "{} of {kills} kills during C_SetAttributeValue lost the key:\n{}",
                lost.len(),
                lost.join("\n")
            );
            assert!(
                !lost.is_empty(),
                "no kill during C_SetAttributeValue lost the key: SoftHSM2 may now write \
                 objects atomically; update docs/pkcs11.md (\"Crash rules\")"
            );
        },
    );
}

/// The process [`a_kill_during_an_attribute_write_can_lose_the_key`] kills:
/// rewrites the label of both halves of one key until killed (cryptoki
/// directly: jwksd sets a label once).
#[test]
fn attribute_writer() {
    let Some(kid) = std::env::var_os(WRITER) else {
        return;
    };
    use cryptoki::object::{Attribute, ObjectClass};
    use cryptoki::session::UserType;
    let kid = kid.into_string().unwrap();
    let session = writer_session();
    session
        .login_with_raw(
            UserType::User,
            &cryptoki::types::RawAuthPin::new(Box::new(
                support::softhsm::USER_PIN.as_bytes().to_vec(),
            )),
        )
        .unwrap();
    let mut handles = Vec::new();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        handles.extend(
            session
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Id(kid.as_bytes().to_vec()),
                ])
                .unwrap(),
        );
    }
    assert_eq!(handles.len(), 2);
    println!("WRITER writing");
    let labels = [kid.clone(), format!("jwksd-staged-0123456789abcdef-{}", 1)];
    for n in 0.. {
        for h in &handles {
            session
                .update_attributes(*h, &[Attribute::Label(labels[n % 2].as_bytes().to_vec())])
                .unwrap();
        }
    }
}

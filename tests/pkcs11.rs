//! `keys::pkcs11` against SoftHSM2 (issue 12).
//!
//! SoftHSM2 reads its configuration (`SOFTHSM2_CONF`) once, when the module
//! is initialised, and a module is initialised once per process. So each
//! test runs in a process of its own: the test re-runs this binary for
//! itself alone, with `SOFTHSM2_CONF` naming a temporary directory in which
//! it initialised its own token. Without SoftHSM2 the tests say so and pass,
//! unless `JWKSD_TEST_REQUIRE_SOFTHSM2` is set (scripts/test sets it and
//! installs softhsm2 and opensc).

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jwksd::keys::pkcs11::{
    Half, Owner, PENDING_PREFIX, Pin, Token, TokenConfig, TokenError, TokenKey, TokenObject,
};
use jwksd::keys::{Alg, Kid, PublishedJwk};
use zeroize::Zeroizing;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const LABEL: &str = "jwksd-test";
const OTHER_LABEL: &str = "not-jwksd";
const USER_PIN: &str = "8416-user";
/// Set in the child process: the test's directory.
use support::softhsm::CHILD;

/// The test's token, as seen from the child process.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }

    fn config(&self) -> TokenConfig {
        TokenConfig::new(MODULE, LABEL, Pin::from_file(&self.pin_file()).unwrap())
    }

    fn open(&self) -> Arc<Token> {
        Token::open(self.config()).unwrap()
    }
}

fn has_pkcs11_tool() -> bool {
    Command::new("pkcs11-tool")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `body` in a process of its own with a fresh SoftHSM2 token
/// directory holding the tokens `LABEL` and `OTHER_LABEL`
/// (`support::softhsm`).
fn isolated(name: &str, body: impl FnOnce(&Fixture)) {
    support::softhsm::isolated_with(
        name,
        CHILD_DEADLINE,
        &[LABEL, OTHER_LABEL],
        USER_PIN,
        |hsm| {
            body(&Fixture {
                dir: hsm.dir.clone(),
            })
        },
    )
}

/// How long one test's process may run.
const CHILD_DEADLINE: Duration = Duration::from_secs(240);

fn write_secret(path: &Path, body: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A verifier from the published JWK alone (josekit; an `Ed25519` key as
/// `EdDSA`, the one name josekit knows).
fn josekit_verifier(key: &TokenKey) -> Box<dyn josekit::jws::JwsVerifier> {
    let alg = match key.alg {
        Alg::Ed25519 => Alg::EdDSA,
        other => other,
    };
    let json = serde_json::to_vec(&PublishedJwk::new(&key.kid, alg, &key.public)).unwrap();
    let jwk = josekit::jwk::Jwk::from_bytes(&json).unwrap();
    use josekit::jws;
    match alg {
        Alg::ES256 => Box::new(jws::ES256.verifier_from_jwk(&jwk).unwrap()),
        Alg::ES384 => Box::new(jws::ES384.verifier_from_jwk(&jwk).unwrap()),
        Alg::RS256 => Box::new(jws::RS256.verifier_from_jwk(&jwk).unwrap()),
        Alg::PS256 => Box::new(jws::PS256.verifier_from_jwk(&jwk).unwrap()),
        Alg::EdDSA | Alg::Ed25519 => Box::new(jws::EdDSA.verifier_from_jwk(&jwk).unwrap()),
    }
}

/// Verifies a JWT with jsonwebtoken (an implementation independent of
/// OpenSSL and josekit) from the published JWK.
fn verify_jwt(token: &str, key: &TokenKey) -> serde_json::Value {
    let jwk = serde_json::to_value(PublishedJwk::new(&key.kid, key.alg, &key.public)).unwrap();
    let head = jsonwebtoken::decode_header(token);
    if let Ok(head) = head {
        assert_eq!(head.kid.as_deref(), Some(key.kid.as_str()));
    }
    support::jsonwebtoken_verify(token, &jwk, key.alg).unwrap()
}

fn jwt(signer: &dyn josekit::jws::JwsSigner, subject: &str) -> String {
    let mut header = josekit::jws::JwsHeader::new();
    header.set_token_type("JWT");
    let mut payload = josekit::jwt::JwtPayload::new();
    payload.set_subject(subject);
    josekit::jwt::encode_with_signer(&payload, &header, signer).unwrap()
}

#[test]
fn generates_every_algorithm_named_by_the_thumbprint_read_back() {
    isolated(
        "generates_every_algorithm_named_by_the_thumbprint_read_back",
        |fx| {
            let token = fx.open();
            // SoftHSM2 offers every mechanism jwksd uses.
            token.supports(&Alg::ALL).unwrap();
            let mut kids = Vec::new();
            for (alg, bits) in [
                (Alg::ES256, 2048),
                (Alg::ES384, 2048),
                (Alg::RS256, 2048),
                (Alg::RS256, 3072),
                (Alg::RS256, 4096),
                (Alg::PS256, 2048),
                (Alg::EdDSA, 2048),
                (Alg::Ed25519, 2048),
            ] {
                let started = Instant::now();
                let key = token.generate(alg, bits).unwrap();
                eprintln!("generated {alg} ({bits}) in {:?}", started.elapsed());
                assert_eq!(key.alg, alg);
                assert_eq!(key.kid, key.public.thumbprint());
                assert_eq!(key.kid.as_str().len(), 43);
                assert!(alg.fits(&key.public), "{alg}: {:?}", key.public);
                if alg.is_rsa() {
                    assert_eq!(key.public.rsa_bits(), Some(bits));
                }
                // A kid is looked for as a key of the state's algorithm.
                let other = if alg.is_rsa() { Alg::ES256 } else { Alg::RS256 };
                assert!(token.key(&key.kid, other).is_err(), "{alg} as {other}");
                // Found again by kid, with the same public key.
                assert_eq!(token.key(&key.kid, key.alg).unwrap().as_ref(), Some(&key));
                kids.push(key.kid);
            }
            // Both halves of each, named by the kid; nothing pending.
            let mut expected: Vec<TokenObject> = kids
                .iter()
                .flat_map(|k| {
                    [Half::Public, Half::Private].map(|half| TokenObject {
                        owner: Owner::Kid(k.clone()),
                        half,
                    })
                })
                .collect();
            expected.sort();
            assert_eq!(token.list().unwrap(), expected);
            let unknown: Kid = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
                .parse()
                .unwrap();
            assert_eq!(token.key(&unknown, Alg::ES256).unwrap(), None);
            assert!(matches!(
                token.generate(Alg::RS256, 1024),
                Err(TokenError::RsaBits(1024))
            ));
        },
    );
}

#[test]
fn private_keys_are_sensitive_and_never_extractable() {
    isolated("private_keys_are_sensitive_and_never_extractable", |fx| {
        let token = fx.open();
        for alg in Alg::ALL {
            let key = token.generate(alg, 2048).unwrap();
            let p = token.protection(&key.kid).unwrap();
            assert!(
                p.token && p.private && p.sensitive && p.sign,
                "{alg}: {p:?}"
            );
            assert!(!p.extractable, "{alg}: {p:?}");
            assert!(p.always_sensitive && p.never_extractable, "{alg}: {p:?}");
            assert!(
                p.secret_refused,
                "{alg}: CKA_VALUE or CKA_PRIVATE_EXPONENT readable"
            );
            assert!(p.is_custody());
        }
        // The same, from outside the process (OpenSC's pkcs11-tool).
        if !has_pkcs11_tool() {
            eprintln!("pkcs11-tool (opensc) absent: the outside check is skipped");
            return;
        }
        let out = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", LABEL, "--login"])
            .args(["--pin", USER_PIN, "--list-objects", "--type", "privkey"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listing}");
        let access: Vec<&str> = listing
            .lines()
            .filter(|l| l.trim_start().starts_with("Access:"))
            .collect();
        assert_eq!(access.len(), Alg::ALL.len(), "{listing}");
        for line in access {
            assert!(
                line.contains("sensitive")
                    && line.contains("always sensitive")
                    && line.contains("never extractable"),
                "{line}"
            );
        }
        // (`pkcs11-tool --read-object --type privkey` proves nothing: OpenSC
        // 0.23 reads no private key, sensitive or not, and exits 0. The
        // refusal of CKA_VALUE and CKA_PRIVATE_EXPONENT is checked above,
        // through `protection`.)
    });
}

#[test]
fn signatures_from_the_token_verify_against_the_published_jwk() {
    isolated(
        "signatures_from_the_token_verify_against_the_published_jwk",
        |fx| {
            let token = fx.open();
            for alg in Alg::ALL {
                let key = token.generate(alg, 2048).unwrap();
                let signer = token.signer(&key).unwrap();
                let sig = signer.sign_message(b"message").unwrap();
                use josekit::jws::JwsSigner as _;
                assert_eq!(sig.len(), signer.signature_len());
                let verifier = josekit_verifier(&key);
                verifier.verify(b"message", &sig).unwrap();
                assert!(verifier.verify(b"other", &sig).is_err());
                // A whole JWT, checked by jsonwebtoken.
                let t = jwt(&signer, "alice");
                assert_eq!(verify_jwt(&t, &key)["sub"], "alice");
                // OpenSSL, from the JWK's numbers, for ES256's r || s.
                if alg == Alg::ES256 {
                    let (r, s) = sig.split_at(32);
                    let ecdsa = openssl::ecdsa::EcdsaSig::from_private_components(
                        openssl::bn::BigNum::from_slice(r).unwrap(),
                        openssl::bn::BigNum::from_slice(s).unwrap(),
                    )
                    .unwrap();
                    let jwks::Ec { x, y } = jwks::ec(&key);
                    let group =
                        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                            .unwrap();
                    let public = openssl::ec::EcKey::from_public_key_affine_coordinates(
                        &group,
                        &openssl::bn::BigNum::from_slice(&x).unwrap(),
                        &openssl::bn::BigNum::from_slice(&y).unwrap(),
                    )
                    .unwrap();
                    let digest = openssl::sha::sha256(b"message");
                    assert!(ecdsa.verify(&digest, &public).unwrap());
                }
            }
        },
    );
}

mod jwks {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jwksd::keys::PublicKey;
    use jwksd::keys::pkcs11::TokenKey;

    pub struct Ec {
        pub x: Vec<u8>,
        pub y: Vec<u8>,
    }

    pub fn ec(key: &TokenKey) -> Ec {
        let PublicKey::Ec { x, y, .. } = &key.public else {
            panic!("not an EC key")
        };
        Ec {
            x: URL_SAFE_NO_PAD.decode(x).unwrap(),
            y: URL_SAFE_NO_PAD.decode(y).unwrap(),
        }
    }
}

/// A message and its signature.
type Signed = (Vec<u8>, Vec<u8>);

/// Signs `per_thread` messages on each of `threads` threads; returns the
/// signatures per second and what was signed.
fn sign_rate(
    signer: &jwksd::keys::pkcs11::TokenSigner,
    threads: usize,
    per_thread: usize,
) -> (f64, Vec<Signed>) {
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let msg = format!("thread {t} message {i}").into_bytes();
                            let sig = signer.sign_message(&msg).unwrap();
                            (msg, sig)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let rate = results.len() as f64 / started.elapsed().as_secs_f64();
    (rate, results)
}

#[test]
fn concurrent_signing_through_the_pool() {
    isolated("concurrent_signing_through_the_pool", |fx| {
        let mut config = fx.config();
        config.sessions = 4;
        let token = Token::open(config).unwrap();
        for alg in Alg::ALL {
            let key = token.generate(alg, 2048).unwrap();
            let signer = token.signer(&key).unwrap();
            let verifier = josekit_verifier(&key);
            let n = if alg.is_rsa() { 100 } else { 400 };
            let (one, _) = sign_rate(&signer, 1, n);
            let (many, sigs) = sign_rate(&signer, 8, n / 4);
            for (msg, sig) in &sigs {
                verifier.verify(msg, sig).unwrap();
            }
            assert_eq!(sigs.len(), 8 * (n / 4));
            eprintln!(
                "{alg}: {one:.0} signatures/s from one thread, {many:.0}/s from 8 threads \
                 through 4 sessions ({} cores)",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
        }
    });
}

#[test]
fn a_pool_with_every_session_busy_gives_up_at_its_deadline() {
    isolated(
        "a_pool_with_every_session_busy_gives_up_at_its_deadline",
        |fx| {
            let mut config = fx.config();
            config.sessions = 1;
            config.session_wait = Duration::from_millis(200);
            let token = Token::open(config).unwrap();
            let key = token.generate(Alg::ES256, 2048).unwrap();
            let signer = token.signer(&key).unwrap();
            let held = token.occupy_session().unwrap();
            let started = Instant::now();
            let e = signer.sign_message(b"m").unwrap_err();
            assert!(
                matches!(e, TokenError::PoolTimeout { sessions: 1, .. }),
                "{e}"
            );
            assert!(e.is_unavailable());
            assert!(started.elapsed() >= Duration::from_millis(200));
            // A session given back is lent to the next waiter.
            std::thread::scope(|s| {
                let waiter = s.spawn(|| signer.sign_message(b"m"));
                std::thread::sleep(Duration::from_millis(50));
                drop(held);
                waiter.join().unwrap().unwrap();
            });
        },
    );
}

#[test]
fn destroyed_keys_are_gone_and_destroying_again_is_harmless() {
    isolated(
        "destroyed_keys_are_gone_and_destroying_again_is_harmless",
        |fx| {
            let token = fx.open();
            let keep = token.generate(Alg::ES256, 2048).unwrap();
            let gone = token.generate(Alg::RS256, 2048).unwrap();
            let signer = token.signer(&gone).unwrap();
            signer.sign_message(b"before").unwrap();
            assert_eq!(token.destroy(&gone.kid).unwrap(), 2);
            assert_eq!(token.key(&gone.kid, gone.alg).unwrap(), None);
            assert_eq!(token.destroy(&gone.kid).unwrap(), 0);
            let e = signer.sign_message(b"after").unwrap_err();
            assert!(matches!(e, TokenError::KeyNotFound { .. }), "{e}");
            assert!(e.to_string().contains(gone.kid.as_str()));
            assert!(matches!(
                token.signer(&gone),
                Err(TokenError::KeyNotFound { .. })
            ));
            let left: Vec<_> = token.list().unwrap();
            assert_eq!(left.len(), 2);
            assert!(left.iter().all(|o| o.owner == Owner::Kid(keep.kid.clone())));
        },
    );
}

#[test]
fn pending_objects_left_by_a_crash_are_listed_and_removable() {
    isolated(
        "pending_objects_left_by_a_crash_are_listed_and_removable",
        |fx| {
            if !has_pkcs11_tool() {
                eprintln!("pkcs11-tool (opensc) absent: skipped");
                return;
            }
            // What a crash between C_GenerateKeyPair and the naming leaves,
            // made from outside; and another application's key.
            let pending = format!("{PENDING_PREFIX}0123456789abcdef0123456789abcdef");
            for (label, id) in [
                (pending.as_str(), hex::encode(pending.as_bytes())),
                ("someone-else", "01".to_string()),
            ] {
                let out = Command::new("pkcs11-tool")
                    .args(["--module", MODULE, "--token-label", LABEL, "--login"])
                    .args([
                        "--pin",
                        USER_PIN,
                        "--keypairgen",
                        "--key-type",
                        "EC:prime256v1",
                    ])
                    .args(["--label", label, "--id", &id])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let token = fx.open();
            let mine = token.generate(Alg::ES256, 2048).unwrap();
            let listed = token.list().unwrap();
            let owners: Vec<_> = listed.iter().map(|o| &o.owner).collect();
            assert_eq!(listed.len(), 4, "{listed:?}");
            assert_eq!(
                owners
                    .iter()
                    .filter(|o| ***o == Owner::Pending(pending.clone()))
                    .count(),
                2
            );
            assert_eq!(
                owners
                    .iter()
                    .filter(|o| ***o == Owner::Kid(mine.kid.clone()))
                    .count(),
                2
            );
            assert!(token.destroy_pending("someone-else").is_err());
            assert_eq!(token.destroy_pending(&pending).unwrap(), 2);
            assert_eq!(token.list().unwrap().len(), 2);
        },
    );
}

/// PIN rotation without a restart: the PIN is changed on the token, then in
/// the file, and the next reopening logs in with it. A PIN the token
/// refused is not offered again (each wrong PIN counts towards locking the
/// token), a different one in the file is.
#[test]
fn the_pin_file_is_read_again_at_each_reopening() {
    isolated("the_pin_file_is_read_again_at_each_reopening", |fx| {
        if !has_pkcs11_tool() {
            eprintln!("pkcs11-tool not installed: skipped");
            return;
        }
        let mut config = fx.config();
        config.pin_file = Some(fx.pin_file());
        let token = Token::open(config).unwrap();
        let key = token.generate(Alg::ES256, 2048).unwrap();
        let signer = token.signer(&key).unwrap();
        let out = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", LABEL, "--change-pin"])
            .args(["--pin", USER_PIN, "--new-pin", "2468-new"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Logged-in sessions keep signing across the change.
        signer.sign_message(b"during").unwrap();
        write_secret(&fx.pin_file(), b"9999-wrong\n");
        for _ in 0..3 {
            let e = token.reopen().unwrap_err();
            assert!(matches!(e, TokenError::WrongPin { .. }), "{e}");
            assert!(!e.to_string().contains("9999"), "{e}");
        }
        write_secret(&fx.pin_file(), b"2468-new\n");
        token.reopen().unwrap();
        signer.sign_message(b"after").unwrap();
    });
}

#[test]
fn a_wrong_pin_is_its_own_error_and_is_never_printed() {
    isolated("a_wrong_pin_is_its_own_error_and_is_never_printed", |_fx| {
        let wrong = "7777-wrong";
        let pin = Pin::new(Zeroizing::new(wrong.as_bytes().to_vec())).unwrap();
        let e = Token::open(TokenConfig::new(MODULE, LABEL, pin)).unwrap_err();
        assert!(matches!(e, TokenError::WrongPin { .. }), "{e}");
        let text = format!("{e} {e:?}");
        assert!(!text.contains(wrong), "{text}");
        assert!(text.contains(LABEL));
        // The module was finalised: the right PIN opens it again.
        let pin = Pin::new(Zeroizing::new(USER_PIN.as_bytes().to_vec())).unwrap();
        let token = Token::open(TokenConfig::new(MODULE, LABEL, pin)).unwrap();
        assert_eq!(token.label(), LABEL);
    });
}

#[test]
fn a_missing_token_is_its_own_error_naming_those_present() {
    isolated(
        "a_missing_token_is_its_own_error_naming_those_present",
        |fx| {
            let pin = Pin::from_file(&fx.pin_file()).unwrap();
            let e = Token::open(TokenConfig::new(MODULE, "no-such-token", pin)).unwrap_err();
            let TokenError::TokenNotFound { present, .. } = &e else {
                panic!("{e}")
            };
            let mut present = present.clone();
            present.sort();
            assert_eq!(present, [LABEL, OTHER_LABEL]);
            assert!(e.to_string().contains("softhsm2-util --init-token"), "{e}");
            // A token that is not jwksd's holds nothing jwksd lists.
            let pin = Pin::from_file(&fx.pin_file()).unwrap();
            let other = Token::open(TokenConfig::new(MODULE, OTHER_LABEL, pin)).unwrap();
            assert!(other.list().unwrap().is_empty());
        },
    );
}

#[test]
fn the_pin_comes_from_the_environment_or_a_file_not_both() {
    isolated(
        "the_pin_comes_from_the_environment_or_a_file_not_both",
        |fx| {
            // SAFETY: this process runs this test alone (`isolated`), on
            // one thread: nothing reads the environment meanwhile.
            unsafe { std::env::set_var("JWKSD_PKCS11_PIN", format!("{USER_PIN}\n")) };
            let e = Pin::resolve(Some(&fx.pin_file())).unwrap_err();
            assert!(e.to_string().contains("keep one"), "{e}");
            let pin = Pin::resolve(None).unwrap();
            Token::open(TokenConfig::new(MODULE, LABEL, pin)).unwrap();
            // SAFETY: as above.
            unsafe { std::env::remove_var("JWKSD_PKCS11_PIN") };
            assert!(Pin::resolve(None).is_err());
            Pin::resolve(Some(&fx.pin_file())).unwrap();
        },
    );
}

/// Two processes on one SoftHSM2 token: each sees what the other
/// generates and destroys, and both sign.
#[test]
fn two_processes_share_one_token() {
    isolated("two_processes_share_one_token", |fx| {
        let token = fx.open();
        let mut peer = Peer::start(fx);
        // A key generated here after the peer opened the token.
        let mine = token.generate(Alg::ES256, 2048).unwrap();
        assert_eq!(peer.ask(&format!("find {}", mine.kid)), "found");
        let sig = peer.ask(&format!("sign {}", mine.kid));
        let sig = hex::decode(sig).unwrap();
        josekit_verifier(&mine).verify(b"peer", &sig).unwrap();
        // A key generated there, signed with here.
        let theirs: Kid = peer.ask("generate").parse().unwrap();
        let key = token
            .key(&theirs, Alg::ES256)
            .unwrap()
            .expect("the peer's key is visible");
        let signer = token.signer(&key).unwrap();
        josekit_verifier(&key)
            .verify(b"here", &signer.sign_message(b"here").unwrap())
            .unwrap();
        // Concurrent generation in both processes: every key lands.
        let there = std::thread::scope(|s| {
            let h = s.spawn(|| peer.ask("generate-many 5"));
            for _ in 0..5 {
                token.generate(Alg::ES256, 2048).unwrap();
            }
            h.join().unwrap()
        });
        assert_eq!(there, "5");
        // SoftHSM2 can miss the other process's objects here: each
        // process re-reads the token directory only when the token's
        // generation counter moved since its own last write, and a write
        // increments the counter from whatever is on disk, so two writes at
        // once leave one process's counter equal to the file's while it has
        // not seen the other's object (Generation::commit). The view stays
        // stale until the other process writes again; see docs/pkcs11.md.
        let seen = token.list().unwrap().len();
        assert!(seen <= 24, "{seen}");
        if seen < 24 {
            eprintln!("SoftHSM2: this process missed {} of 24 objects", 24 - seen);
        }
        // The peer writes, this process reads: its view is whole again
        // (it lists the whole directory once the counter moved).
        peer.ask("generate");
        assert_eq!(token.list().unwrap().len(), 26);
        // The masking, deterministic: the peer writes, then this process
        // writes before it reads, and the peer's key stays invisible here
        // until the peer writes again. (If this fails, SoftHSM2 changed:
        // update docs/pkcs11.md.)
        let hidden: Kid = peer.ask("generate").parse().unwrap();
        token.generate(Alg::ES256, 2048).unwrap();
        assert_eq!(
            token.key(&hidden, Alg::ES256).unwrap(),
            None,
            "SoftHSM2 no longer hides a concurrent process's object"
        );
        assert_eq!(peer.ask("count"), "30");
        peer.ask("generate");
        assert!(token.key(&hidden, Alg::ES256).unwrap().is_some());
        assert_eq!(token.list().unwrap().len(), 32);
        // Destroyed here: gone there, and its signer fails there.
        assert_eq!(token.destroy(&mine.kid).unwrap(), 2);
        assert_eq!(peer.ask(&format!("find {}", mine.kid)), "absent");
        assert!(peer.ask(&format!("sign {}", mine.kid)).starts_with("error"));
        assert_eq!(peer.ask("quit"), "bye");
    });
}

/// The other process of [`two_processes_share_one_token`]: answers one
/// line per command on stdout, prefixed `PEER `.
#[test]
fn two_processes_peer() {
    if std::env::var_os("JWKSD_TEST_PKCS11_PEER").is_none() {
        return;
    }
    let fx = Fixture {
        dir: std::env::var_os(CHILD).unwrap().into(),
    };
    let token = fx.open();
    let say = |s: &str| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "PEER {s}").unwrap();
        out.flush().unwrap();
    };
    say("ready");
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd {
            "find" => {
                let kid: Kid = arg.parse().unwrap();
                say(match token.key(&kid, Alg::ES256).unwrap() {
                    Some(_) => "found",
                    None => "absent",
                });
            }
            "sign" => {
                let kid: Kid = arg.parse().unwrap();
                let answer = token
                    .key(&kid, Alg::ES256)
                    .and_then(|k| {
                        k.ok_or(TokenError::KeyNotFound {
                            label: LABEL.into(),
                            kid: kid.clone(),
                        })
                    })
                    .and_then(|k| token.signer(&k))
                    .and_then(|s| s.sign_message(b"peer"));
                match answer {
                    Ok(sig) => say(&hex::encode(sig)),
                    Err(e) => say(&format!("error {e}")),
                }
            }
            "generate" => say(token.generate(Alg::ES256, 2048).unwrap().kid.as_str()),
            "count" => say(&token.list().unwrap().len().to_string()),
            "generate-many" => {
                let n: usize = arg.parse().unwrap();
                for _ in 0..n {
                    token.generate(Alg::ES256, 2048).unwrap();
                }
                say(&n.to_string());
            }
            "quit" => {
                say("bye");
                return;
            }
            other => say(&format!("unknown {other}")),
        }
    }
}

struct Peer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn start(fx: &Fixture) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "two_processes_peer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &fx.dir)
            .env("JWKSD_TEST_PKCS11_PEER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Peer {
            child,
            stdin,
            stdout,
        };
        assert_eq!(peer.read(), "ready");
        peer
    }

    fn read(&mut self) -> String {
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the peer exited"
            );
            // The harness may have printed "test two_processes_peer ... "
            // on the same line.
            if let Some((_, answer)) = line.trim_end().split_once("PEER ") {
                return answer.to_owned();
            }
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.read()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signatures per second on one session against the pool, for a few
/// seconds each (not a timed test: `JWKSD_PKCS11_BENCH=1 cargo test --test
/// pkcs11 pool_throughput -- --nocapture` prints the numbers).
#[test]
fn pool_throughput() {
    if std::env::var_os("JWKSD_PKCS11_BENCH").is_none() {
        return;
    }
    isolated("pool_throughput", |fx| {
        for alg in Alg::ALL {
            for (sessions, threads) in [(1, 1), (1, 2), (2, 2), (4, 4), (4, 8)] {
                let mut config = fx.config();
                config.sessions = sessions;
                let token = Token::open(config).unwrap();
                let key = token.generate(alg, 2048).unwrap();
                let signer = token.signer(&key).unwrap();
                let per_thread = if alg.is_rsa() { 2_000 } else { 20_000 } / threads;
                let (rate, _) = sign_rate(&signer, threads, per_thread);
                eprintln!(
                    "BENCH {alg}: {sessions} session(s), {threads} thread(s): {rate:.0} signatures/s"
                );
                drop(signer);
                token.destroy(&key.kid).unwrap();
            }
        }
    });
}

/// The token's files taken away while it is open, then put back: SoftHSM2
/// shows an empty token rather than a missing one, and keeps showing it
/// empty after the files return, until the module is initialised again
/// (`Token::reopen`). (A
/// characterisation of SoftHSM2 that docs/pkcs11.md builds on: if it
/// fails, SoftHSM2 changed; update the page.)
#[test]
fn a_token_taken_away_looks_empty_until_reopened() {
    isolated("a_token_taken_away_looks_empty_until_reopened", |fx| {
        let token = fx.open();
        let key = token.generate(Alg::ES256, 2048).unwrap();
        let signer = token.signer(&key).unwrap();
        signer.sign_message(b"before").unwrap();
        let tokens = fx.dir.join("tokens");
        let away = fx.dir.join("tokens.away");
        std::fs::rename(&tokens, &away).unwrap();
        // Not an error: an empty token.
        assert_eq!(token.list().unwrap(), []);
        assert_eq!(token.key(&key.kid, key.alg).unwrap(), None);
        let e = signer.sign_message(b"away").unwrap_err();
        assert!(matches!(e, TokenError::KeyNotFound { .. }), "{e}");
        // Writing fails, with CKR_GENERAL_ERROR.
        let e = token.generate(Alg::ES256, 2048).unwrap_err();
        assert!(e.to_string().contains("GeneralError"), "{e}");
        // Back: this process still sees an empty token.
        std::fs::rename(&away, &tokens).unwrap();
        assert_eq!(token.key(&key.kid, key.alg).unwrap(), None);
        assert!(signer.sign_message(b"back").is_err());
        // Reopened in place, it is all there, and the signer made before
        // signs again (it finds its key again by kid).
        token.reopen().unwrap();
        let found = token
            .key(&key.kid, key.alg)
            .unwrap()
            .expect("the key after reopening");
        assert_eq!(found, key);
        josekit_verifier(&key)
            .verify(b"again", &signer.sign_message(b"again").unwrap())
            .unwrap();
        assert_eq!(token.list().unwrap().len(), 2);
    });
}

/// A reopening waits for the lent sessions, and gives up at the pool's
/// deadline leaving the pool as it was.
#[test]
fn reopening_waits_for_lent_sessions() {
    isolated("reopening_waits_for_lent_sessions", |fx| {
        let mut config = fx.config();
        config.sessions = 2;
        config.session_wait = Duration::from_millis(300);
        let token = Token::open(config).unwrap();
        let key = token.generate(Alg::RS256, 2048).unwrap();
        let signer = token.signer(&key).unwrap();
        // Held past the deadline: the reopening gives up, nothing changed.
        let held = token.occupy_session().unwrap();
        let e = token.reopen().unwrap_err();
        assert!(matches!(e, TokenError::PoolTimeout { .. }), "{e}");
        signer.sign_message(b"still").unwrap();
        // Given back in time: the reopening goes through.
        std::thread::scope(|s| {
            let reopening = s.spawn(|| token.reopen());
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
            reopening.join().unwrap().unwrap();
        });
        // Signing from several threads across a reopening.
        std::thread::scope(|s| {
            let signers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..50 {
                            signer.sign_message(b"across").unwrap();
                        }
                    })
                })
                .collect();
            token.reopen().unwrap();
            for h in signers {
                h.join().unwrap();
            }
        });
        josekit_verifier(&key)
            .verify(b"after", &signer.sign_message(b"after").unwrap())
            .unwrap();
    });
}

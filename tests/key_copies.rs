//! Copies of a private key in the daemon's memory, counted from outside: the
//! test starts the real binary (its parent, so it may read /proc/PID/mem),
//! takes the active keys' private exponent `d` from the key files, and
//! counts every writable page of the daemon that holds `d` in one of three
//! forms. Freed memory is scanned too (the allocator does not clear it), so
//! a copy that was dropped without being wiped is counted like a live one.
//!
//! What each remaining copy is, and when it is wiped, is in docs/security.md
//! ("Copies of a private key in memory").

#![cfg(all(
    target_os = "linux",
    target_endian = "little",
    target_pointer_width = "64"
))]

mod support;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwksd::store::MasterKey;
use serde_json::Value;
use support::daemon::Daemon;

/// `d` as the daemon may hold it.
struct Forms {
    alg: &'static str,
    /// Big-endian, as in PKCS#8.
    raw: Vec<u8>,
    /// Little-endian 64-bit limbs, as in an OpenSSL BIGNUM (or a
    /// num-bigint BigUint) on this machine: the bytes reversed.
    limbs: Vec<u8>,
    /// base64url, as in the private JWK.
    b64: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    raw: usize,
    limbs: usize,
    b64: usize,
}

impl Forms {
    fn from_pem(alg: &'static str, pem: &[u8]) -> Forms {
        let raw = support::private_scalar(alg, pem);
        let mut limbs = raw.clone();
        // A leading zero byte of a padded EC key is no part of the BIGNUM.
        while limbs.first() == Some(&0) {
            limbs.remove(0);
        }
        limbs.reverse();
        let b64 = URL_SAFE_NO_PAD.encode(&raw).into_bytes();
        Forms {
            alg,
            raw,
            limbs,
            b64,
        }
    }
}

/// Occurrences of `needle` in `hay` (glibc's memmem: fast in a debug build).
fn count(hay: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while at + needle.len() <= hay.len() {
        // SAFETY: both ranges are live slices.
        let p = unsafe {
            libc::memmem(
                hay[at..].as_ptr().cast(),
                hay.len() - at,
                needle.as_ptr().cast(),
                needle.len(),
            )
        };
        if p.is_null() {
            break;
        }
        n += 1;
        at = p as usize - hay.as_ptr() as usize + 1;
    }
    n
}

/// Counts every form of every key in the writable mappings of `pid`
/// (heap, anonymous memory, thread stacks, data), the process stopped so
/// that it reads one consistent state.
fn scan(pid: u32, keys: &[Forms]) -> Vec<Counts> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = vec![
        Counts {
            raw: 0,
            limbs: 0,
            b64: 0
        };
        keys.len()
    ];
    // SAFETY: kill has no memory-safety preconditions; the pid is our child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    let mut buf = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        buf.resize((end - start) as usize, 0);
        // A mapping that cannot be read (a device, a guard) holds no key.
        if mem.read_exact_at(&mut buf, start).is_err() {
            continue;
        }
        for (k, c) in keys.iter().zip(out.iter_mut()) {
            c.raw += count(&buf, &k.raw);
            c.limbs += count(&buf, &k.limbs);
            c.b64 += count(&buf, &k.b64);
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    out
}

fn key_of(keys: &Value, alg: &str, state: &str) -> Option<String> {
    keys["keys"]
        .as_array()?
        .iter()
        .find(|k| k["alg"] == alg && k["state"] == state)
        .and_then(|k| k["kid"].as_str())
        .map(str::to_owned)
}

fn report(stage: &str, keys: &[Forms], counts: &[Counts]) {
    for (k, c) in keys.iter().zip(counts) {
        eprintln!(
            "{stage:>26} {}: raw {} limbs {} base64url {}",
            k.alg, c.raw, c.limbs, c.b64
        );
    }
}

const ALGS: [&str; 2] = ["ES256", "RS256"];
const CONFIG: &str = "algorithms: [ES256, RS256]\nrsa_bits: 2048\nrotation:\n  every: 1h\njwks:\n  cache_max_age: 2s\ntokens:\n  clock_skew: 1s\n";
const REQUESTS: usize = 20;

/// One copy of each form while a key is active: the PKCS#8 in the key ring
/// (raw), OpenSSL's key in the signer (limbs), the prepared
/// `/v1/keys/active` body (base64url).
const LIVE: Counts = Counts {
    raw: 1,
    limbs: 1,
    b64: 1,
};
const NONE: Counts = Counts {
    raw: 0,
    limbs: 0,
    b64: 0,
};

/// Waits until every algorithm has an active and a next key (the next one
/// is generated after start-up, and its arrival rebuilds the snapshot),
/// then returns the active keys' kids.
async fn settled(d: &Daemon) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let keys = loop {
        let keys = d.keys().await;
        if ALGS.iter().all(|a| key_of(&keys, a, "next").is_some()) {
            break keys;
        }
        assert!(Instant::now() < deadline, "no next keys: {keys}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Whatever the last build left to drop is dropped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ALGS.iter()
        .map(|a| key_of(&keys, a, "active").unwrap())
        .collect()
}

/// The active keys' `d`, from their key files (opened with `master` when
/// the store is sealed).
fn forms(dir: &Path, kids: &[String], master: Option<&MasterKey>) -> Vec<Forms> {
    ALGS.iter()
        .zip(kids)
        .map(|(alg, kid)| {
            let file = std::fs::read(dir.join("keys").join(format!("{kid}.key"))).unwrap();
            let pem = match master {
                None => file,
                Some(m) => {
                    let der = m
                        .open(&kid.parse().unwrap(), alg.parse().unwrap(), &file)
                        .unwrap();
                    let key = openssl::pkey::PKey::private_key_from_der(&der).unwrap();
                    key.private_key_to_pem_pkcs8().unwrap()
                }
            };
            Forms::from_pem(alg, &pem)
        })
        .collect()
}

/// Pulls every active key `REQUESTS` times, checking that the `d` searched
/// for is the one served (sign-only: that no private member is).
async fn pull(d: &Daemon, forms: &[Forms], export: bool) {
    for _ in 0..REQUESTS {
        for k in forms {
            let r = d.active_key(k.alg).await;
            assert_eq!(r.status, 200, "{}", r.error_message());
            let v = r.json().unwrap();
            if export {
                assert_eq!(v["jwk"]["d"].as_str().unwrap().as_bytes(), k.b64);
            } else {
                assert_eq!(v["export"], false, "{v}");
                assert!(v.get("jwk").is_none() && v.get("pem").is_none(), "{v}");
            }
        }
    }
}

/// Revokes the active keys and waits until their replacements are active
/// and the new next keys are in.
async fn revoke(d: &Daemon, kids: &[String]) {
    for kid in kids {
        let r = d.revoke(kid).await;
        assert_eq!(r.status, 200, "{kid}: {}", r.error_message());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut moved = true;
        for (alg, kid) in ALGS.iter().zip(kids) {
            let r = d.active_key(alg).await;
            moved &= r.status == 200 && r.json().unwrap()["kid"] != kid.as_str();
        }
        if moved {
            break;
        }
        assert!(Instant::now() < deadline, "revocation did not settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settled(d).await;
}

fn check(stage: &str, forms: &[Forms], counts: &[Counts], expected: Counts) {
    report(stage, forms, counts);
    for (k, c) in forms.iter().zip(counts) {
        assert_eq!(*c, expected, "{} {stage}", k.alg);
    }
}

/// Sign-only (`signing_key.export: false`): no `/v1/keys/active` body is
/// prepared with the private JWK, so one copy fewer: no base64url `d`.
const LIVE_SIGN_ONLY: Counts = Counts { b64: 0, ..LIVE };

/// A freshly generated key: before any request, after requests, after
/// signing, after revocation. Then the keys promoted in its place, loaded from the store
/// after a restart. `export` is `signing_key.export`.
async fn scenario(master: Option<&str>, export: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let body = if export {
        CONFIG.to_owned()
    } else {
        format!("{CONFIG}signing_key:\n  export: false\n")
    };
    let live = if export { LIVE } else { LIVE_SIGN_ONLY };
    let config = support::daemon::write_config(tmp.path(), &body);
    let env: Vec<(&str, &str)> = master
        .map(|m| ("JWKSD_MASTER_KEY", m))
        .into_iter()
        .collect();
    let mk = master.map(|m| MasterKey::from_encoded(m).unwrap());
    let mut d = Daemon::start_with(tmp.path(), &config, &env).await;

    let kids = settled(&d).await;
    let keys = forms(tmp.path(), &kids, mk.as_ref());
    let before = scan(d.pid(), &keys);
    pull(&d, &keys, export).await;
    let after_requests = scan(d.pid(), &keys);
    for _ in 0..REQUESTS {
        for alg in ALGS {
            let r = d.sign(alg, serde_json::json!({"sub": "s"})).await;
            assert_eq!(r.status, 200, "{}", r.error_message());
        }
    }
    let after_signing = scan(d.pid(), &keys);
    revoke(&d, &kids).await;
    let after_revoke = scan(d.pid(), &keys);
    check("generated, no request", &keys, &before, live);
    check("after 20 requests each", &keys, &after_requests, live);
    report("after 20 tokens each", &keys, &after_signing);
    for (k, c) in keys.iter().zip(&after_signing) {
        // An RS256 key that has signed has a second OpenSSL copy: its
        // export to OpenSSL's default provider, cached with the key.
        let limbs = if k.alg == "RS256" { 2 } else { 1 };
        assert_eq!(*c, Counts { limbs, ..live }, "{} after signing", k.alg);
    }
    check("after revocation", &keys, &after_revoke, NONE);

    d.stop();
    d.restart().await;
    let kids = settled(&d).await;
    let keys = forms(tmp.path(), &kids, mk.as_ref());
    let loaded = scan(d.pid(), &keys);
    pull(&d, &keys, export).await;
    let after_requests = scan(d.pid(), &keys);
    check("loaded, no request", &keys, &loaded, live);
    check("loaded, after 20 requests", &keys, &after_requests, live);
}

#[tokio::test(flavor = "multi_thread")]
async fn private_key_copies_are_accounted_for_and_wiped() {
    scenario(None, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn private_key_copies_in_a_sealed_store_are_accounted_for_and_wiped() {
    scenario(Some(&"5a".repeat(32)), true).await;
}

/// Sign-only: the same copies but the prepared `/v1/keys/active` body's.
#[tokio::test(flavor = "multi_thread")]
async fn sign_only_holds_one_copy_fewer() {
    scenario(None, false).await;
}

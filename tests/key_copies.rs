//! Copies of a private key in the daemon's memory, counted from outside: the
//! test starts the real binary (its parent, so it may read /proc/PID/mem),
//! takes the active keys' private `d` from the key files (the EC private
//! scalar, the RSA private exponent, the Ed25519 seed: the JWK's `d`), and
//! counts every writable page of the daemon that holds `d` in one of three
//! forms (two for Ed25519). Freed memory is scanned too (the allocator does not clear it), so
//! a copy that was dropped without being wiped is counted like a live one.
//! A last test counts the same in this process, around the private JWK and
//! the signer alone, where what is left behind is not overwritten by the
//! daemon's other work before it is looked for.
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
    /// num-bigint BigUint) on this machine: the bytes reversed. `None` for
    /// Ed25519: its private key is a 32-byte string (the seed), never a
    /// number. OpenSSL holds it as those very bytes (`PKey::
    /// private_key_from_raw_bytes`: the raw form, counted there), and the
    /// seed reversed is no form of the key that anything holds, so it is
    /// not searched for (0 would prove nothing). What OpenSSL derives from
    /// the seed to sign (its SHA-512: the secret scalar and the nonce
    /// prefix) lives in each signature's temporaries, which are not
    /// searched for, like the other algorithms' signing temporaries.
    limbs: Option<Vec<u8>>,
    /// base64url, as in the private JWK.
    b64: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    raw: usize,
    /// `None`: not searched for (Ed25519).
    limbs: Option<usize>,
    b64: usize,
}

impl Forms {
    fn from_pem(alg: &'static str, pem: &[u8]) -> Forms {
        let raw = support::private_scalar(alg, pem);
        let limbs = (!is_ed25519(alg)).then(|| {
            let mut limbs = raw.clone();
            // A leading zero byte of a padded EC key is no part of the BIGNUM.
            while limbs.first() == Some(&0) {
                limbs.remove(0);
            }
            limbs.reverse();
            limbs
        });
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
    let mut out: Vec<Counts> = keys
        .iter()
        .map(|k| Counts {
            raw: 0,
            limbs: k.limbs.as_ref().map(|_| 0),
            b64: 0,
        })
        .collect();
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
            if let (Some(n), Some(limbs)) = (c.limbs.as_mut(), &k.limbs) {
                *n += count(&buf, limbs);
            }
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
        let limbs = c.limbs.map_or("-".to_owned(), |n| n.to_string());
        eprintln!(
            "{stage:>26} {:>5}: raw {} limbs {limbs} base64url {}",
            k.alg, c.raw, c.b64
        );
    }
}

const ALGS: [&str; 5] = ["ES256", "ES384", "RS256", "PS256", "EdDSA"];
const CONFIG: &str = "algorithms: [ES256, ES384, RS256, PS256, EdDSA]\nrsa_bits: 2048\nrotation:\n  every: 1h\njwks:\n  cache_max_age: 2s\ntokens:\n  clock_skew: 1s\n";
const REQUESTS: usize = 20;

/// An Ed25519 key (`EdDSA`; `Ed25519`, RFC 9864's name, is the same key).
fn is_ed25519(alg: &str) -> bool {
    matches!(alg, "EdDSA" | "Ed25519")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Active: generated or loaded, before or after `/v1/keys/active`
    /// requests.
    Active,
    /// Active, after signing.
    Signed,
    /// Revoked and out of the key ring.
    Revoked,
}

/// The copies of an active `alg` key expected at `stage` (`export` is
/// `signing_key.export`), each one accounted for:
/// - raw: the PKCS#8 in the key ring (a zeroizing buffer); for Ed25519
///   also OpenSSL's key in the signer, which is the seed's 32 bytes as they
///   are (the private key buffer of OpenSSL's Ed25519 key, freed with
///   `OPENSSL_secure_clear_free`);
/// - limbs: OpenSSL's key in the signer (EC, RSA; a secure BIGNUM, freed
///   with `BN_clear_free`), and for an RSA key (RS256, PS256) that has
///   signed a second one: its export to OpenSSL's default provider, cached
///   with the key. An EC key signs through the `EC_KEY` itself, and an
///   Ed25519 key is made in the provider, so neither has such an export;
/// - base64url: the prepared `/v1/keys/active` body (none when sign-only).
///
/// None of any form once the key is revoked.
fn expected(alg: &str, stage: Stage, export: bool) -> Counts {
    if stage == Stage::Revoked {
        return Counts {
            raw: 0,
            limbs: (!is_ed25519(alg)).then_some(0),
            b64: 0,
        };
    }
    let b64 = usize::from(export);
    match alg {
        "ES256" | "ES384" => Counts {
            raw: 1,
            limbs: Some(1),
            b64,
        },
        "RS256" | "PS256" => Counts {
            raw: 1,
            limbs: Some(if stage == Stage::Signed { 2 } else { 1 }),
            b64,
        },
        a if is_ed25519(a) => Counts {
            raw: 2,
            limbs: None,
            b64,
        },
        other => panic!("no expectation for {other}"),
    }
}

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

/// The counts of each stage against [`expected`]: every stage is
/// reported and every unexpected count collected before the test fails.
struct Checker {
    export: bool,
    wrong: Vec<String>,
}

impl Checker {
    fn check(&mut self, stage: &str, forms: &[Forms], counts: &[Counts], at: Stage) {
        report(stage, forms, counts);
        for (k, c) in forms.iter().zip(counts) {
            let want = expected(k.alg, at, self.export);
            if *c != want {
                self.wrong
                    .push(format!("{} {stage}: {c:?}, expected {want:?}", k.alg));
            }
        }
    }

    fn finish(self) {
        assert!(self.wrong.is_empty(), "{}", self.wrong.join("\n"));
    }
}

/// A freshly generated key: before any request, after requests, after
/// signing, after revocation. Then the keys promoted in its place, loaded
/// from the store after a restart. `export` is `signing_key.export`: when
/// it is `false` (sign-only), no `/v1/keys/active` body is prepared with
/// the private JWK, so one copy fewer: no base64url `d`.
async fn scenario(master: Option<&str>, export: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let body = if export {
        CONFIG.to_owned()
    } else {
        format!("{CONFIG}signing_key:\n  export: false\n")
    };
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
    let mut c = Checker {
        export,
        wrong: Vec::new(),
    };
    c.check("generated, no request", &keys, &before, Stage::Active);
    c.check(
        "after 20 requests each",
        &keys,
        &after_requests,
        Stage::Active,
    );
    c.check("after 20 tokens each", &keys, &after_signing, Stage::Signed);
    c.check("after revocation", &keys, &after_revoke, Stage::Revoked);

    d.stop();
    d.restart().await;
    let kids = settled(&d).await;
    let keys = forms(tmp.path(), &kids, mk.as_ref());
    let loaded = scan(d.pid(), &keys);
    pull(&d, &keys, export).await;
    let after_requests = scan(d.pid(), &keys);
    c.check("loaded, no request", &keys, &loaded, Stage::Active);
    c.check(
        "loaded, after 20 requests",
        &keys,
        &after_requests,
        Stage::Active,
    );
    c.finish();
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

/// Counts `needle` in this process's writable memory (freed memory and
/// the threads' stacks included; the main thread's, which runs no test,
/// left out), read through a mapping of its own that is not scanned, so
/// that reading makes no copy that is counted.
fn count_in_self(needle: &[u8]) -> usize {
    const SCRATCH: usize = 1 << 30;
    // SAFETY: a fresh private anonymous mapping; unmapped below.
    let scratch = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SCRATCH,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(scratch, libc::MAP_FAILED);
    let (skip_from, skip_to) = (scratch as u64, scratch as u64 + SCRATCH as u64);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mem = File::open("/proc/self/mem").unwrap();
    let mut ranges = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("rw") || line.ends_with("[stack]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        // The kernel may have merged the scratch mapping with a neighbour.
        ranges.push((start, end.min(skip_from).max(start)));
        ranges.push((skip_to.max(start).min(end), end));
    }
    // Other threads map and grow memory as this reads the maps, which may
    // then list one mapping twice (before and after it grew): count each
    // address once.
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut n = 0;
    for (start, end) in merged {
        let len = (end - start) as usize;
        if len == 0 || len > SCRATCH {
            continue;
        }
        // SAFETY: within the scratch mapping, which nothing else uses.
        let buf = unsafe { std::slice::from_raw_parts_mut(scratch.cast::<u8>(), len) };
        // As much as can be read: a heap that another thread shrinks
        // loses its top pages (and what was in them) meanwhile.
        let mut got = 0;
        while got < len {
            match mem.read_at(&mut buf[got..], start + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(k) => got += k,
            }
        }
        n += count(&buf[..got], needle);
        buf[..got].fill(0);
    }
    // SAFETY: the mapping made above, no longer borrowed.
    unsafe { libc::munmap(scratch, SCRATCH) };
    n
}

/// `d` as the key's PKCS#8 holds it, borrowed from it (parsed in Rust, so
/// that finding it makes no copy): the EC private key, the RSA private
/// exponent, the Ed25519 seed.
fn d_in_pkcs8<'a>(alg: &str, pkcs8: &'a [u8]) -> &'a [u8] {
    use rsa::pkcs8::der::Decode as _;
    let info = rsa::pkcs8::PrivateKeyInfo::from_der(pkcs8).unwrap();
    match alg {
        "ES256" | "ES384" => {
            sec1::EcPrivateKey::from_der(info.private_key)
                .unwrap()
                .private_key
        }
        "RS256" | "PS256" => rsa::pkcs1::RsaPrivateKey::from_der(info.private_key)
            .unwrap()
            .private_exponent
            .as_bytes(),
        a if is_ed25519(a) => rsa::pkcs8::der::asn1::OctetStringRef::from_der(info.private_key)
            .unwrap()
            .as_bytes(),
        other => panic!("{other}"),
    }
}

/// In this process, where it is deterministic (the daemon's allocator may
/// reuse, and so overwrite, what is left behind before the scenario above
/// looks): a key's private JWK and signer leave no copy of `d` behind once
/// dropped. Two did before: base64's `encode_string` encodes through a
/// buffer on the stack that it leaves as it is (every algorithm,
/// base64url), and OpenSSL 3's `raw_private_key` hands an Ed25519 seed out
/// through an `OSSL_PARAM` array that it frees without wiping (raw). The
/// counts include the needles themselves, one of each form.
///
/// The raw form of an EC or RSA key is counted as "no more than before":
/// the p256, p384 and rsa crates generate a key in temporaries that are not
/// all wiped (docs/security.md), and what they leave in this process may
/// be overwritten at any time. An Ed25519 key is drawn straight into a
/// zeroizing buffer, so its counts are exact.
#[test]
fn a_private_jwk_and_a_signer_leave_no_copy_behind() {
    for alg in ALGS {
        let k = jwksd::keys::generate(alg.parse().unwrap(), 2048).unwrap();
        let raw = d_in_pkcs8(alg, &k.pkcs8).to_vec();
        let b64 = URL_SAFE_NO_PAD.encode(&raw).into_bytes();
        // The needle and the PKCS#8, and what generation left.
        let most = count_in_self(&raw);
        let ed25519 = is_ed25519(alg);
        let raw_ok = |n: usize| if ed25519 { n == 2 } else { n <= most };
        assert!(raw_ok(most), "{alg} generated: {most} raw");
        assert_eq!(count_in_self(&b64), 1, "{alg} generated");
        for _ in 0..3 {
            let jwk = k.private_jwk_json().unwrap();
            assert_eq!(count_in_self(&b64), 2, "{alg}: the private JWK");
            drop(jwk);
            assert_eq!(count_in_self(&b64), 1, "{alg}: private JWK dropped");
            let n = count_in_self(&raw);
            assert!(raw_ok(n), "{alg}: private JWK dropped: {n} raw");
            let signer = k.signer().unwrap();
            signer.sign(b"message").unwrap();
            if ed25519 {
                // OpenSSL's Ed25519 key is the seed as it is.
                assert_eq!(count_in_self(&raw), 3, "{alg}: a signer");
            }
            drop(signer);
            assert_eq!(count_in_self(&b64), 1, "{alg}: signer dropped");
            let n = count_in_self(&raw);
            assert!(raw_ok(n), "{alg}: signer dropped: {n} raw");
        }
    }
}

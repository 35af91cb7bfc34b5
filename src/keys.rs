//! Keypairs: generation, PKCS#8, the public JWK and its RFC 7638 `kid`, and
//! the in-memory signing key.
//!
//! The split between crates is deliberate. `p256` and `rsa` only *generate*
//! keys and export them as PKCS#8. Every private-key *operation* (signing,
//! and deriving the public half of a stored key) is OpenSSL's: the `rsa`
//! crate's private-key operations are exposed to a timing side channel
//! (RUSTSEC-2023-0071, "Marvin"), its key generation is not.
//!
//! Private keys stay in zeroizing buffers (see runbook.md, "What jwksd does
//! not do"): a stored key's DER is parsed by the `pkcs8`, `sec1` and `pkcs1`
//! crates, borrowing from its buffer, and its numbers go from there into
//! OpenSSL, which wipes them when it frees them; the private JWK is written
//! from OpenSSL's numbers through zeroizing buffers. OpenSSL's DER decoder
//! and josekit's JWK maps would each leave a plain copy behind.
//!
//! josekit assembles every JWT. The signatures themselves are made by
//! [`Es256Signer`] and [`Rs256Signer`], josekit `JwsSigner`s that call
//! OpenSSL with a key parsed once: josekit's own ES256 signer sets up
//! OpenSSL's generic signing context (an algorithm fetch) for every token,
//! which cost more than a fifth of the time of `/v1/sign`, and its RS256
//! signer is built only from DER, JWK or PEM.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jws::{ES256, JwsSigner, RS256};
use openssl::bn::{BigNum, BigNumContext, BigNumRef};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A signing algorithm jwksd manages keys for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Alg {
    ES256,
    RS256,
}

impl Alg {
    pub const ALL: [Alg; 2] = [Alg::ES256, Alg::RS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "ES256" => Ok(Alg::ES256),
            "RS256" => Ok(Alg::RS256),
            other => Err(KeyError::UnknownAlg(other.chars().take(32).collect())),
        }
    }
}

/// RSA modulus sizes jwksd generates.
pub const RSA_BITS: [u32; 3] = [2048, 3072, 4096];

/// A key id: the RFC 7638 thumbprint of the public key, so it is derived from
/// the key itself and can never be reused for another key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Kid(String);

impl Kid {
    /// Longest kid accepted from outside; our own are 43 characters.
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Kid {
    type Error = KeyError;
    /// Only base64url characters: a kid names files in the key directory and
    /// appears in URL paths, so nothing else may get in.
    fn try_from(s: String) -> Result<Self, KeyError> {
        let ok = !s.is_empty()
            && s.len() <= Kid::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Kid(s))
        } else {
            Err(KeyError::InvalidKid)
        }
    }
}

impl FromStr for Kid {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Kid::try_from(s.to_owned())
    }
}

impl From<Kid> for String {
    fn from(k: Kid) -> String {
        k.0
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The public half of a key, in JWK encoding (base64url, no padding).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty", deny_unknown_fields)]
pub enum PublicKey {
    #[serde(rename = "EC")]
    Ec { crv: String, x: String, y: String },
    #[serde(rename = "RSA")]
    Rsa { n: String, e: String },
}

impl PublicKey {
    /// RFC 7638 thumbprint: SHA-256 over the required members in
    /// lexicographic order, no white space. Written out by hand because a
    /// serialised map would follow insertion order (josekit turns on
    /// serde_json's `preserve_order`).
    pub fn thumbprint(&self) -> Kid {
        let canonical = match self {
            PublicKey::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            PublicKey::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
        };
        Kid(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
    }

    /// Modulus size of an RSA key, `None` for EC.
    pub fn rsa_bits(&self) -> Option<u32> {
        match self {
            PublicKey::Rsa { n, .. } => {
                let bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
                let first = bytes.iter().position(|b| *b != 0)?;
                let lead = 8 - bytes[first].leading_zeros();
                Some(((bytes.len() - first - 1) * 8) as u32 + lead)
            }
            PublicKey::Ec { .. } => None,
        }
    }
}

/// A published JWK: exactly `kty`, `kid`, `use`, `alg` and the public
/// parameters. Built from [`PublicKey`], which has no private members, so no
/// private member can reach the JWK Set by construction.
#[derive(Debug, Serialize)]
pub struct PublishedJwk<'a> {
    kty: &'static str,
    kid: &'a str,
    #[serde(rename = "use")]
    use_: &'static str,
    alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<&'a str>,
}

impl<'a> PublishedJwk<'a> {
    pub fn new(kid: &'a Kid, alg: Alg, public: &'a PublicKey) -> Self {
        let mut jwk = PublishedJwk {
            kty: "",
            kid: kid.as_str(),
            use_: "sig",
            alg: alg.as_str(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match public {
            PublicKey::Ec { crv, x, y } => {
                jwk.kty = "EC";
                jwk.crv = Some(crv);
                jwk.x = Some(x);
                jwk.y = Some(y);
            }
            PublicKey::Rsa { n, e } => {
                jwk.kty = "RSA";
                jwk.n = Some(n);
                jwk.e = Some(e);
            }
        }
        jwk
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown algorithm {0:?}: expected ES256 or RS256")]
    UnknownAlg(String),
    #[error("invalid kid: expected 1 to 128 characters of A-Z, a-z, 0-9, '-' and '_'")]
    InvalidKid,
    #[error("unsupported RSA key size {0}: expected 2048, 3072 or 4096")]
    RsaBits(u32),
    #[error("{alg} key generation failed: {reason}")]
    Generate { alg: Alg, reason: String },
    #[error("stored {alg} private key is not valid PKCS#8 for that algorithm: {reason}")]
    Parse { alg: Alg, reason: String },
    #[error("signing with {kid} failed: {reason}")]
    Sign { kid: Kid, reason: String },
}

/// A freshly generated or freshly loaded keypair. The PKCS#8 bytes are wiped
/// from memory when this is dropped.
pub struct KeyMaterial {
    pub kid: Kid,
    pub alg: Alg,
    pub public: PublicKey,
    pub pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Generates a keypair with randomness from the operating system. RSA takes
/// from 0.1 s to seconds: async callers run this on a blocking thread.
pub fn generate(alg: Alg, rsa_bits: u32) -> Result<KeyMaterial, KeyError> {
    use rand_core::OsRng;
    let pkcs8: Zeroizing<Vec<u8>> = match alg {
        Alg::ES256 => {
            use p256::pkcs8::EncodePrivateKey;
            let secret = p256::SecretKey::random(&mut OsRng);
            let doc = secret.to_pkcs8_der().map_err(|e| KeyError::Generate {
                alg,
                reason: e.to_string(),
            })?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
        Alg::RS256 => {
            if !RSA_BITS.contains(&rsa_bits) {
                return Err(KeyError::RsaBits(rsa_bits));
            }
            let key = rsa::RsaPrivateKey::new(&mut OsRng, rsa_bits as usize).map_err(|e| {
                KeyError::Generate {
                    alg,
                    reason: e.to_string(),
                }
            })?;
            rsa_pkcs8(&key).map_err(|e| KeyError::Generate {
                alg,
                reason: e.to_string(),
            })?
        }
    };
    // Read the key back through OpenSSL: this derives the public half the way
    // every later load will, so a key that OpenSSL cannot use is never stored.
    KeyMaterial::from_pkcs8(alg, pkcs8)
}

/// PKCS#8 of an RSA key, every intermediate in a zeroizing buffer. The `rsa`
/// crate's own `to_pkcs8_der` leaves the PKCS#1 `RSAPrivateKey` (with `d`
/// and the primes) in a plain `Vec`, freed without being wiped. The encoding
/// is the `pkcs1` and `pkcs8` crates' (DER only: no cryptography here).
fn rsa_pkcs8(key: &rsa::RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, rsa::pkcs1::Error> {
    use rsa::pkcs1::{RsaPrivateKey, UintRef};
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
    let [p, q] = key.primes() else {
        return Err(rsa::pkcs1::Error::Version);
    };
    let secret = |v: Vec<u8>| Zeroizing::new(v);
    let n = key.n().to_bytes_be();
    let e = key.e().to_bytes_be();
    let d = secret(key.d().to_bytes_be());
    let p_bytes = secret(p.to_bytes_be());
    let q_bytes = secret(q.to_bytes_be());
    // The CRT values the key computed at generation (computing them here,
    // as `to_pkcs8_der` does, would leave p - 1 and q - 1 in unwiped
    // temporaries).
    let (dp, dq, qinv) = match (key.dp(), key.dq(), key.qinv()) {
        (Some(dp), Some(dq), Some(qinv)) => (dp, dq, qinv),
        _ => return Err(rsa::pkcs1::Error::Crypto),
    };
    let dp = secret(dp.to_bytes_be());
    let dq = secret(dq.to_bytes_be());
    // A copy as an unsigned number, wiped as it is dropped.
    let qinv = Zeroizing::new(qinv.to_biguint().ok_or(rsa::pkcs1::Error::Crypto)?);
    let qinv = secret(qinv.to_bytes_be());
    let pkcs1 = RsaPrivateKey {
        modulus: UintRef::new(&n)?,
        public_exponent: UintRef::new(&e)?,
        private_exponent: UintRef::new(&d)?,
        prime1: UintRef::new(&p_bytes)?,
        prime2: UintRef::new(&q_bytes)?,
        exponent1: UintRef::new(&dp)?,
        exponent2: UintRef::new(&dq)?,
        coefficient: UintRef::new(&qinv)?,
        other_prime_infos: None,
    };
    let pkcs1 = encode_secret(&pkcs1)?;
    let info = rsa::pkcs8::PrivateKeyInfo::new(rsa::pkcs1::ALGORITHM_ID, &pkcs1);
    Ok(encode_secret(&info)?)
}

/// DER of `msg` in a zeroizing buffer of exactly its length (so it never
/// grows and leaves a copy behind).
fn encode_secret<T: rsa::pkcs1::der::Encode>(
    msg: &T,
) -> Result<Zeroizing<Vec<u8>>, rsa::pkcs1::der::Error> {
    use rsa::pkcs1::der::SliceWriter;
    let len = usize::try_from(msg.encoded_len()?)?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    let mut writer = SliceWriter::new(&mut buf);
    msg.encode(&mut writer)?;
    let written = writer.finish()?.len();
    buf.truncate(written);
    Ok(buf)
}

/// [`generate`] on a thread of its own at a low CPU priority (nice 10), so
/// that a multi-second RSA generation yields the CPU to request handling.
/// Not the lowest priority: on a saturated host that would starve the
/// generation, and a rotation needs its next key. Blocks until the key is
/// ready.
pub fn generate_in_background(alg: Alg, rsa_bits: u32) -> Result<KeyMaterial, KeyError> {
    let fail = |reason: String| KeyError::Generate { alg, reason };
    std::thread::Builder::new()
        .name("jwksd-keygen".into())
        .spawn(move || {
            lower_priority();
            generate(alg, rsa_bits)
        })
        .map_err(|e| fail(format!("cannot start the generation thread: {e}")))?
        .join()
        .map_err(|_| fail("the generation thread panicked".into()))?
}

/// The nice value key generation runs at.
const GENERATION_NICE: libc::c_int = 10;

/// Sets the calling thread's nice value to [`GENERATION_NICE`] (Linux: per
/// thread). Lowering one's own priority needs no privilege; failure only
/// costs latency.
fn lower_priority() {
    // SAFETY: setpriority and gettid have no memory-safety preconditions.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, GENERATION_NICE);
    }
}

/// A growable buffer for secrets. A `Vec` that grows moves its contents to
/// a new allocation and frees the old one as it is; this one wipes the old
/// allocation first, so growing leaves no copy behind. Serialise a secret
/// into it with `serde_json::to_writer`.
#[derive(Default)]
pub struct SecretBuf(Zeroizing<Vec<u8>>);

impl SecretBuf {
    pub fn with_capacity(capacity: usize) -> SecretBuf {
        SecretBuf(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::io::Write for SecretBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let needed = self.0.len().saturating_add(bytes.len());
        if needed > self.0.capacity() {
            let mut bigger = Vec::with_capacity(needed.max(self.0.capacity() * 2));
            bigger.extend_from_slice(&self.0);
            // The old buffer is wiped (its whole capacity) as it is dropped.
            self.0 = Zeroizing::new(bigger);
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// base64url (no padding) of a secret, in a zeroizing buffer of exactly its
/// length.
fn secret_b64(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(
        base64::encoded_len(bytes.len(), false).unwrap_or(0),
    ));
    URL_SAFE_NO_PAD.encode_string(bytes, &mut out);
    out
}

/// base64url of a big number's minimal big-endian bytes (RFC 7518
/// "Base64urlUInt"), or padded to `width` bytes (EC coordinates and `d`).
/// The bytes pass through a zeroizing buffer: some of these numbers are
/// secret.
fn bn_b64(n: &BigNumRef, width: Option<usize>) -> Result<Zeroizing<String>, ErrorStack> {
    let bytes = Zeroizing::new(match width {
        Some(w) => n.to_vec_padded(w as i32)?,
        None => n.to_vec(),
    });
    Ok(secret_b64(&bytes))
}

/// P-256 scalars and coordinates are 32 bytes.
const P256_BYTES: usize = 32;

/// The private members of a JWK, each in a zeroizing buffer, serialised
/// straight from there (never through a `serde_json::Value` or a `Jwk` map,
/// which would leave plain copies).
pub struct PrivateJwk<'a> {
    kid: &'a str,
    alg: Alg,
    public: &'a PublicKey,
    /// EC: `d`. RSA: `d`, `p`, `q`, `dp`, `dq`, `qi`.
    private: Vec<(&'static str, Zeroizing<String>)>,
}

impl Serialize for PrivateJwk<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self.public {
            PublicKey::Ec { crv, x, y } => {
                m.serialize_entry("kty", "EC")?;
                m.serialize_entry("crv", crv)?;
                m.serialize_entry("x", x)?;
                m.serialize_entry("y", y)?;
            }
            PublicKey::Rsa { n, e } => {
                m.serialize_entry("kty", "RSA")?;
                m.serialize_entry("n", n)?;
                m.serialize_entry("e", e)?;
            }
        }
        for (name, value) in &self.private {
            m.serialize_entry(name, value.as_str())?;
        }
        m.serialize_entry("kid", self.kid)?;
        m.serialize_entry("alg", self.alg.as_str())?;
        m.serialize_entry("use", "sig")?;
        m.end()
    }
}

/// A private key as OpenSSL holds it.
enum OpenSslKey {
    Ec(EcKey<Private>),
    Rsa(Rsa<Private>),
}

/// A private number for OpenSSL: a BIGNUM flagged secure, which OpenSSL
/// wipes when it frees it (`BN_clear_free`, also for the copies its key
/// structures and their export to a provider make).
fn secret_bn(bytes: &[u8]) -> Result<BigNum, ErrorStack> {
    let mut n = BigNum::new_secure()?;
    n.copy_from_slice(bytes)?;
    Ok(n)
}

/// Reads a PKCS#8 key for `alg` into OpenSSL. The DER is parsed by the
/// `pkcs8`, `sec1` and `pkcs1` crates, which borrow from the zeroizing
/// buffer, and each number goes from there straight into OpenSSL: OpenSSL's
/// own DER decoder (`d2i_AutoPrivateKey`, `d2i_PKCS8_PRIV_KEY_INFO`) leaves
/// a copy of the private key in memory it frees without wiping.
fn open_private(alg: Alg, pkcs8: &[u8]) -> Result<OpenSslKey, KeyError> {
    use rsa::pkcs8::der::Decode as _;
    let parse = |reason: String| KeyError::Parse { alg, reason };
    let ossl = |e: ErrorStack| parse(e.to_string());
    let info = rsa::pkcs8::PrivateKeyInfo::from_der(pkcs8).map_err(|e| parse(e.to_string()))?;
    match alg {
        Alg::ES256 => {
            let p256_oid = <p256::NistP256 as rsa::pkcs8::AssociatedOid>::OID;
            info.algorithm
                .assert_algorithm_oid(p256::elliptic_curve::ALGORITHM_OID)
                .map_err(|e| parse(format!("not an EC key: {e}")))?;
            if info.algorithm.parameters_oid().ok() != Some(p256_oid) {
                return Err(parse("not a P-256 key".into()));
            }
            let sec1 =
                sec1::EcPrivateKey::from_der(info.private_key).map_err(|e| parse(e.to_string()))?;
            if let Some(p) = sec1.parameters
                && p.named_curve() != Some(p256_oid)
            {
                return Err(parse("not a P-256 key".into()));
            }
            if sec1.private_key.len() != P256_BYTES {
                return Err(parse("not a P-256 private key".into()));
            }
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ossl)?;
            let d = secret_bn(sec1.private_key).map_err(ossl)?;
            // The public key from the private one, by OpenSSL: every load
            // derives it the same way, whatever the file says.
            let mut ctx = BigNumContext::new_secure().map_err(ossl)?;
            let mut public = EcPoint::new(&group).map_err(ossl)?;
            public.mul_generator2(&group, &d, &mut ctx).map_err(ossl)?;
            // A public key in the file must be that one: a damaged file is
            // refused, not repaired.
            if let Some(stored) = sec1.public_key {
                let stored = EcPoint::from_bytes(&group, stored, &mut ctx).map_err(ossl)?;
                if !stored.eq(&group, &public, &mut ctx).map_err(ossl)? {
                    return Err(parse(
                        "the public key does not match the private key".into(),
                    ));
                }
            }
            let key = EcKey::from_private_components(&group, &d, &public).map_err(ossl)?;
            key.check_key().map_err(ossl)?;
            Ok(OpenSslKey::Ec(key))
        }
        Alg::RS256 => {
            info.algorithm
                .assert_algorithm_oid(rsa::pkcs1::ALGORITHM_OID)
                .map_err(|e| parse(format!("not an RSA key: {e}")))?;
            let k = rsa::pkcs1::RsaPrivateKey::from_der(info.private_key)
                .map_err(|e| parse(e.to_string()))?;
            if k.other_prime_infos.is_some() {
                return Err(parse("multi-prime RSA keys are not supported".into()));
            }
            let public = |u: rsa::pkcs1::UintRef<'_>| BigNum::from_slice(u.as_bytes());
            let secret = |u: rsa::pkcs1::UintRef<'_>| secret_bn(u.as_bytes());
            let key = Rsa::from_private_components(
                public(k.modulus).map_err(ossl)?,
                public(k.public_exponent).map_err(ossl)?,
                secret(k.private_exponent).map_err(ossl)?,
                secret(k.prime1).map_err(ossl)?,
                secret(k.prime2).map_err(ossl)?,
                secret(k.exponent1).map_err(ossl)?,
                secret(k.exponent2).map_err(ossl)?,
                secret(k.coefficient).map_err(ossl)?,
            )
            .map_err(ossl)?;
            Ok(OpenSslKey::Rsa(key))
        }
    }
}

/// The public half, in JWK encoding: EC coordinates padded to 32 bytes, RSA
/// numbers minimal (as josekit, which derived the kids of existing keys).
fn public_of(key: &OpenSslKey) -> Result<PublicKey, ErrorStack> {
    let b64 = |z: Zeroizing<String>| z.as_str().to_owned();
    Ok(match key {
        OpenSslKey::Ec(ec) => {
            let mut x = BigNum::new()?;
            let mut y = BigNum::new()?;
            let mut ctx = BigNumContext::new()?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
            PublicKey::Ec {
                crv: "P-256".to_owned(),
                x: b64(bn_b64(&x, Some(P256_BYTES))?),
                y: b64(bn_b64(&y, Some(P256_BYTES))?),
            }
        }
        OpenSslKey::Rsa(rsa) => PublicKey::Rsa {
            n: b64(bn_b64(rsa.n(), None)?),
            e: b64(bn_b64(rsa.e(), None)?),
        },
    })
}

impl KeyMaterial {
    /// Parses a stored PKCS#8 private key (through OpenSSL) and derives its
    /// public key and kid.
    pub fn from_pkcs8(alg: Alg, pkcs8: Zeroizing<Vec<u8>>) -> Result<KeyMaterial, KeyError> {
        let parse = |reason: String| KeyError::Parse { alg, reason };
        let key = open_private(alg, &pkcs8)?;
        let public = public_of(&key).map_err(|e| parse(e.to_string()))?;
        if let Some(bits) = public.rsa_bits()
            && bits < 2048
        {
            return Err(parse(format!("RSA key of {bits} bits is too small")));
        }
        Ok(KeyMaterial {
            kid: public.thumbprint(),
            alg,
            public,
            pkcs8,
        })
    }

    /// The private key as a PKCS#8 PEM document.
    pub fn pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        use p256::pkcs8::SecretDocument;
        use p256::pkcs8::der::pem::LineEnding;
        let doc = SecretDocument::try_from(self.pkcs8.as_slice()).map_err(|e| KeyError::Parse {
            alg: self.alg,
            reason: e.to_string(),
        })?;
        // One allocation of the exact length, wiped on drop.
        doc.to_pem("PRIVATE KEY", LineEnding::LF)
            .map_err(|e| KeyError::Parse {
                alg: self.alg,
                reason: e.to_string(),
            })
    }

    /// The private key as a JWK (with `kid`, `alg` and `use`), ready to
    /// serialise (into a [`SecretBuf`]). Only the authenticated signing-key
    /// endpoint may hand this out.
    pub fn private_jwk(&self) -> Result<PrivateJwk<'_>, KeyError> {
        let parse = |reason: String| KeyError::Parse {
            alg: self.alg,
            reason,
        };
        let fail = |e: ErrorStack| parse(e.to_string());
        let private = match open_private(self.alg, &self.pkcs8)? {
            OpenSslKey::Ec(ec) => {
                vec![(
                    "d",
                    bn_b64(ec.private_key(), Some(P256_BYTES)).map_err(fail)?,
                )]
            }
            OpenSslKey::Rsa(rsa) => {
                let member = |name: &'static str, n: Option<&BigNumRef>| {
                    let n = n.ok_or_else(|| parse(format!("the RSA key has no {name:?}")))?;
                    Ok::<_, KeyError>((name, bn_b64(n, None).map_err(fail)?))
                };
                vec![
                    member("d", Some(rsa.d()))?,
                    member("p", rsa.p())?,
                    member("q", rsa.q())?,
                    member("dp", rsa.dmp1())?,
                    member("dq", rsa.dmq1())?,
                    member("qi", rsa.iqmp())?,
                ]
            }
        };
        Ok(PrivateJwk {
            kid: self.kid.as_str(),
            alg: self.alg,
            public: &self.public,
            private,
        })
    }

    /// [`Self::private_jwk`], serialised.
    pub fn private_jwk_json(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let jwk = self.private_jwk()?;
        let mut out = SecretBuf::with_capacity(4096);
        serde_json::to_writer(&mut out, &jwk).map_err(|e| KeyError::Parse {
            alg: self.alg,
            reason: e.to_string(),
        })?;
        Ok(out.into_inner())
    }

    /// A JWS signer (OpenSSL) for this key, with the kid set.
    pub fn signer(&self) -> Result<Box<dyn JwsSigner>, KeyError> {
        let parse = |reason: String| KeyError::Parse {
            alg: self.alg,
            reason,
        };
        Ok(match open_private(self.alg, &self.pkcs8)? {
            OpenSslKey::Ec(key) => Box::new(Es256Signer {
                kid: self.kid.to_string(),
                key,
            }),
            OpenSslKey::Rsa(rsa) => Box::new(Rs256Signer {
                kid: self.kid.to_string(),
                key: PKey::from_rsa(rsa).map_err(|e| parse(e.to_string()))?,
            }),
        })
    }
}

/// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) by OpenSSL, as josekit's signer
/// does it, on a key that was not read through OpenSSL's DER decoder (see
/// [`open_private`]).
#[derive(Clone)]
pub struct Rs256Signer {
    kid: String,
    key: PKey<Private>,
}

impl fmt::Debug for Rs256Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rs256Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwsSigner for Rs256Signer {
    fn algorithm(&self) -> &dyn josekit::jws::JwsAlgorithm {
        &RS256
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn signature_len(&self) -> usize {
        self.key.size()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
        let fail = |e: ErrorStack| josekit::JoseError::InvalidSignature(e.into());
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.key)
                .map_err(fail)?;
        signer
            .set_rsa_padding(openssl::rsa::Padding::PKCS1)
            .map_err(fail)?;
        signer.sign_oneshot_to_vec(message).map_err(fail)
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

/// ES256 signing with OpenSSL's ECDSA on a key parsed once (see the module
/// documentation): SHA-256, then ECDSA over P-256, the signature as the JWS
/// fixed-width `r || s`.
#[derive(Clone)]
pub struct Es256Signer {
    kid: String,
    key: openssl::ec::EcKey<openssl::pkey::Private>,
}

impl fmt::Debug for Es256Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Es256Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwsSigner for Es256Signer {
    fn algorithm(&self) -> &dyn josekit::jws::JwsAlgorithm {
        &ES256
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn signature_len(&self) -> usize {
        64
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
        let digest = openssl::sha::sha256(message);
        let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &self.key)
            .map_err(|e| josekit::JoseError::InvalidSignature(e.into()))?;
        let mut out = sig
            .r()
            .to_vec_padded(32)
            .map_err(|e| josekit::JoseError::InvalidSignature(e.into()))?;
        out.extend(
            sig.s()
                .to_vec_padded(32)
                .map_err(|e| josekit::JoseError::InvalidSignature(e.into()))?,
        );
        Ok(out)
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_signatures_verify_with_josekit_and_openssl() {
        let k = generate(Alg::ES256, 2048).unwrap();
        let signer = k.signer().unwrap();
        let sig = signer.sign(b"message").unwrap();
        assert_eq!(sig.len(), 64);
        // josekit's own verifier, from the public key.
        let der = openssl::pkey::PKey::private_key_from_der(&k.pkcs8)
            .unwrap()
            .public_key_to_der()
            .unwrap();
        let verifier = ES256.verifier_from_der(&der).unwrap();
        use josekit::jws::JwsVerifier;
        verifier.verify(b"message", &sig).unwrap();
        assert!(verifier.verify(b"other", &sig).is_err());
    }

    /// RFC 7638, section 3.1.
    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let key = PublicKey::Rsa {
            n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            e: "AQAB".into(),
        };
        assert_eq!(
            key.thumbprint().as_str(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(key.rsa_bits(), Some(2048));
    }

    #[test]
    fn kid_rejects_traversal_and_non_ascii() {
        for bad in ["", "../x", "a/b", "a.b", "ké", "a b", &"a".repeat(129)] {
            assert!(bad.parse::<Kid>().is_err(), "{bad:?} accepted");
        }
        assert!(
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
                .parse::<Kid>()
                .is_ok()
        );
    }

    #[test]
    fn es256_generation_round_trips_through_openssl() {
        let k = generate(Alg::ES256, 2048).unwrap();
        assert_eq!(k.kid.as_str().len(), 43);
        let again = KeyMaterial::from_pkcs8(Alg::ES256, k.pkcs8.clone()).unwrap();
        assert_eq!(again.kid, k.kid);
        assert_eq!(again.public, k.public);
        // A different key gets a different kid.
        assert_ne!(generate(Alg::ES256, 2048).unwrap().kid, k.kid);
    }

    #[test]
    fn background_generation_runs_at_a_low_priority() {
        let k = generate_in_background(Alg::ES256, 2048).unwrap();
        assert_eq!(k.kid.as_str().len(), 43);
        let nice = std::thread::spawn(|| {
            lower_priority();
            // SAFETY: getpriority has no memory-safety preconditions.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        })
        .join()
        .unwrap();
        assert_eq!(nice, GENERATION_NICE);
    }

    #[test]
    fn rs256_generation_has_requested_size() {
        let k = generate(Alg::RS256, 2048).unwrap();
        assert_eq!(k.public.rsa_bits(), Some(2048));
        // Every member of the PKCS#8, the CRT values included, is right.
        let rsa = openssl::pkey::PKey::private_key_from_der(&k.pkcs8)
            .unwrap()
            .rsa()
            .unwrap();
        assert!(rsa.check_key().unwrap());
        assert!(matches!(
            generate(Alg::RS256, 1024),
            Err(KeyError::RsaBits(1024))
        ));
    }

    #[test]
    fn wrong_algorithm_for_stored_key_is_refused() {
        let k = generate(Alg::ES256, 2048).unwrap();
        assert!(KeyMaterial::from_pkcs8(Alg::RS256, k.pkcs8.clone()).is_err());
        assert!(KeyMaterial::from_pkcs8(Alg::ES256, Zeroizing::new(vec![1, 2, 3])).is_err());
    }

    #[test]
    fn published_jwk_has_exactly_the_public_members() {
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            let v = serde_json::to_value(PublishedJwk::new(&k.kid, alg, &k.public)).unwrap();
            let mut names: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
            names.sort();
            let expected: &[&str] = match alg {
                Alg::ES256 => &["alg", "crv", "kid", "kty", "use", "x", "y"],
                Alg::RS256 => &["alg", "e", "kid", "kty", "n", "use"],
            };
            assert_eq!(names, expected);
            assert_eq!(v["use"], "sig");
            assert_eq!(v["alg"], alg.as_str());
        }
    }

    #[test]
    fn private_jwk_and_pem_carry_the_key() {
        let k = generate(Alg::ES256, 2048).unwrap();
        let jwk: serde_json::Value =
            serde_json::from_slice(&k.private_jwk_json().unwrap()).unwrap();
        assert_eq!(jwk["kid"], k.kid.as_str());
        assert!(jwk["d"].is_string());
        let pem = k.pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let debug = format!("{k:?}");
        assert!(!debug.contains(jwk["d"].as_str().unwrap()));
    }

    /// Stored keys keep their kids: the public half read through
    /// `open_private` is the one josekit (OpenSSL's decoder) derived.
    #[test]
    fn public_key_and_private_jwk_agree_with_josekit() {
        use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
        use josekit::jwk::alg::rsa::RsaKeyPair;
        use josekit::jwk::{Jwk, KeyPair as _};
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            let theirs = match alg {
                Alg::ES256 => EcKeyPair::from_der(&*k.pkcs8, Some(EcCurve::P256))
                    .unwrap()
                    .to_jwk_key_pair(),
                Alg::RS256 => RsaKeyPair::from_der(&*k.pkcs8).unwrap().to_jwk_key_pair(),
            };
            let ours = Jwk::from_bytes(&*k.private_jwk_json().unwrap()).unwrap();
            let members: &[&str] = match alg {
                Alg::ES256 => &["kty", "crv", "x", "y", "d"],
                Alg::RS256 => &["kty", "n", "e", "d", "p", "q", "dp", "dq", "qi"],
            };
            for m in members {
                assert_eq!(ours.parameter(m), theirs.parameter(m), "{alg} {m}");
            }
            assert_eq!(ours.key_id(), Some(k.kid.as_str()));
            assert_eq!(ours.algorithm(), Some(alg.as_str()));
            assert_eq!(ours.key_use(), Some("sig"));
        }
    }

    #[test]
    fn tampered_pkcs8_is_refused() {
        let k = generate(Alg::ES256, 2048).unwrap();
        let mut bad = k.pkcs8.clone();
        // The last byte is the public key's: it no longer matches.
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(KeyMaterial::from_pkcs8(Alg::ES256, bad).is_err());
        let mut short = k.pkcs8.clone();
        let len = short.len();
        short.truncate(len - 10);
        assert!(KeyMaterial::from_pkcs8(Alg::ES256, short).is_err());
    }

    #[test]
    fn secret_buf_keeps_everything_written_as_it_grows() {
        use std::io::Write as _;
        let mut b = SecretBuf::with_capacity(2);
        for i in 0..100u8 {
            b.write_all(&[i; 3]).unwrap();
        }
        let v = b.into_inner();
        assert_eq!(v.len(), 300);
        assert!(v.chunks(3).enumerate().all(|(i, c)| c == [i as u8; 3]));
    }

    #[test]
    fn signatures_verify_with_josekit() {
        use josekit::jws::JwsVerifier;
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            let der = openssl::pkey::PKey::private_key_from_der(&k.pkcs8)
                .unwrap()
                .public_key_to_der()
                .unwrap();
            let verifier: Box<dyn JwsVerifier> = match alg {
                Alg::ES256 => Box::new(ES256.verifier_from_der(&der).unwrap()),
                Alg::RS256 => Box::new(RS256.verifier_from_der(&der).unwrap()),
            };
            let signer = k.signer().unwrap();
            let sig = signer.sign(b"message").unwrap();
            assert_eq!(sig.len(), signer.signature_len());
            verifier.verify(b"message", &sig).unwrap();
            assert!(verifier.verify(b"other", &sig).is_err());
        }
    }

    #[test]
    fn signer_produces_verifiable_signature() {
        use josekit::jws::JwsHeader;
        use josekit::jwt::{self, JwtPayload};
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            let signer = k.signer().unwrap();
            let mut header = JwsHeader::new();
            header.set_token_type("JWT");
            let mut payload = JwtPayload::new();
            payload.set_subject("s");
            let token = jwt::encode_with_signer(&payload, &header, &*signer).unwrap();
            let head = token.split('.').next().unwrap();
            let head: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
            assert_eq!(head["kid"], k.kid.as_str());
            assert_eq!(head["alg"], alg.as_str());
        }
    }
}

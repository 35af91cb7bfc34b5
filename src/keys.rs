//! Keypairs: generation, PKCS#8, the public JWK and its RFC 7638 `kid`, and
//! the in-memory signing key.
//!
//! The split between crates is deliberate. `p256` and `rsa` only *generate*
//! keys and export them as PKCS#8. Every private-key *operation* (signing, and
//! re-reading a stored key) goes through josekit, that is OpenSSL: the `rsa`
//! crate's private-key operations are exposed to a timing side channel
//! (RUSTSEC-2023-0071, "Marvin"), its key generation is not.
//!
//! josekit assembles every JWT. For ES256 the signature itself is made by
//! [`Es256Signer`], a josekit `JwsSigner` that calls OpenSSL's ECDSA with a
//! key parsed once: josekit's own ES256 signer sets up OpenSSL's generic
//! signing context (an algorithm fetch) for every token, which cost more
//! than a fifth of the time of `/v1/sign`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jwk::KeyPair as _;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jws::{ES256, JwsSigner, RS256};
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
            use rsa::pkcs8::EncodePrivateKey;
            if !RSA_BITS.contains(&rsa_bits) {
                return Err(KeyError::RsaBits(rsa_bits));
            }
            let key = rsa::RsaPrivateKey::new(&mut OsRng, rsa_bits as usize).map_err(|e| {
                KeyError::Generate {
                    alg,
                    reason: e.to_string(),
                }
            })?;
            let doc = key.to_pkcs8_der().map_err(|e| KeyError::Generate {
                alg,
                reason: e.to_string(),
            })?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
    };
    // Read the key back through OpenSSL: this derives the public half the way
    // every later load will, so a key that OpenSSL cannot use is never stored.
    KeyMaterial::from_pkcs8(alg, pkcs8)
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

impl KeyMaterial {
    /// Parses a stored PKCS#8 private key (through OpenSSL) and derives its
    /// public key and kid.
    pub fn from_pkcs8(alg: Alg, pkcs8: Zeroizing<Vec<u8>>) -> Result<KeyMaterial, KeyError> {
        let parse = |reason: String| KeyError::Parse { alg, reason };
        let jwk = match alg {
            Alg::ES256 => EcKeyPair::from_der(&*pkcs8, Some(EcCurve::P256))
                .map_err(|e| parse(e.to_string()))?
                .to_jwk_public_key(),
            Alg::RS256 => RsaKeyPair::from_der(&*pkcs8)
                .map_err(|e| parse(e.to_string()))?
                .to_jwk_public_key(),
        };
        let param = |name: &str| -> Result<String, KeyError> {
            jwk.parameter(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| parse(format!("public key has no {name:?}")))
        };
        let public = match alg {
            Alg::ES256 => PublicKey::Ec {
                crv: "P-256".to_owned(),
                x: param("x")?,
                y: param("y")?,
            },
            Alg::RS256 => PublicKey::Rsa {
                n: param("n")?,
                e: param("e")?,
            },
        };
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
        doc.to_pem("PRIVATE KEY", LineEnding::LF)
            .map_err(|e| KeyError::Parse {
                alg: self.alg,
                reason: e.to_string(),
            })
    }

    /// The private key as a JWK (with `kid`, `alg` and `use`), serialised.
    /// Only the authenticated signing-key endpoint may hand this out.
    pub fn private_jwk_json(&self) -> Result<Zeroizing<String>, KeyError> {
        let parse = |reason: String| KeyError::Parse {
            alg: self.alg,
            reason,
        };
        let mut jwk: Jwk = match self.alg {
            Alg::ES256 => EcKeyPair::from_der(&*self.pkcs8, Some(EcCurve::P256))
                .map_err(|e| parse(e.to_string()))?
                .to_jwk_key_pair(),
            Alg::RS256 => RsaKeyPair::from_der(&*self.pkcs8)
                .map_err(|e| parse(e.to_string()))?
                .to_jwk_key_pair(),
        };
        jwk.set_key_id(self.kid.as_str());
        jwk.set_algorithm(self.alg.as_str());
        jwk.set_key_use("sig");
        Ok(Zeroizing::new(jwk.to_string()))
    }

    /// A JWS signer (OpenSSL) for this key, with the kid set.
    pub fn signer(&self) -> Result<Box<dyn JwsSigner>, KeyError> {
        let parse = |reason: String| KeyError::Parse {
            alg: self.alg,
            reason,
        };
        Ok(match self.alg {
            Alg::ES256 => {
                let key = openssl::pkey::PKey::private_key_from_der(&self.pkcs8)
                    .and_then(|k| k.ec_key())
                    .map_err(|e| parse(e.to_string()))?;
                Box::new(Es256Signer {
                    kid: self.kid.to_string(),
                    key,
                })
            }
            Alg::RS256 => {
                let mut s = RS256
                    .signer_from_der(&*self.pkcs8)
                    .map_err(|e| parse(e.to_string()))?;
                s.set_key_id(self.kid.as_str());
                Box::new(s)
            }
        })
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
        let jwk: serde_json::Value = serde_json::from_str(&k.private_jwk_json().unwrap()).unwrap();
        assert_eq!(jwk["kid"], k.kid.as_str());
        assert!(jwk["d"].is_string());
        let pem = k.pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let debug = format!("{k:?}");
        assert!(!debug.contains(jwk["d"].as_str().unwrap()));
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

//! What identifies a key, as plain data: its algorithm, its `kid` (the
//! RFC 7638 thumbprint of its public half) and that public half. Pure: the
//! lifecycle core depends on these and on nothing else of `keys`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A malformed algorithm name or kid from outside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("unknown algorithm {0:?}: expected ES256, ES384, RS256, PS256, EdDSA or Ed25519")]
    UnknownAlg(String),
    #[error("invalid kid: expected 1 to 128 characters of A-Z, a-z, 0-9, '-' and '_'")]
    InvalidKid,
}

/// A signing algorithm jwksd manages keys for. One algorithm per key (RFC
/// 8725 3.1): an RSA key signs RS256 or PS256, never both, and an Ed25519
/// key is published under one of its two names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Alg {
    /// ECDSA over P-256 with SHA-256.
    ES256,
    /// ECDSA over P-384 with SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt.
    PS256,
    /// Ed25519 (RFC 8037) under the name every verifier library knows.
    EdDSA,
    /// Ed25519 under RFC 9864's fully specified name (docs/algorithms.md).
    Ed25519,
}

/// The kind of key an algorithm signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// An elliptic-curve key on the named curve (`crv`).
    Ec(Curve),
    Rsa,
    /// An Edwards-curve key (RFC 8037 `OKP`, `crv: Ed25519`).
    Ed25519,
}

/// The NIST curves of ECDSA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// Its JWK `crv`.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    /// Bytes of a coordinate, of the private scalar, and of each half of a
    /// JWS signature (`r`, `s`).
    pub fn bytes(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

impl Alg {
    pub const ALL: [Alg; 6] = [
        Alg::ES256,
        Alg::ES384,
        Alg::RS256,
        Alg::PS256,
        Alg::EdDSA,
        Alg::Ed25519,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::RS256 => "RS256",
            Alg::PS256 => "PS256",
            Alg::EdDSA => "EdDSA",
            Alg::Ed25519 => "Ed25519",
        }
    }

    pub fn key_kind(self) -> KeyKind {
        match self {
            Alg::ES256 => KeyKind::Ec(Curve::P256),
            Alg::ES384 => KeyKind::Ec(Curve::P384),
            Alg::RS256 | Alg::PS256 => KeyKind::Rsa,
            Alg::EdDSA | Alg::Ed25519 => KeyKind::Ed25519,
        }
    }

    /// Whether `rsa_bits` applies.
    pub fn is_rsa(self) -> bool {
        self.key_kind() == KeyKind::Rsa
    }

    /// Whether `public` is a key of the kind this algorithm signs with.
    pub fn fits(self, public: &PublicKey) -> bool {
        match (self.key_kind(), public) {
            (KeyKind::Ec(c), PublicKey::Ec { crv, .. }) => crv == c.name(),
            (KeyKind::Rsa, PublicKey::Rsa { .. }) => true,
            (KeyKind::Ed25519, PublicKey::Okp { crv, .. }) => crv == ED25519_CRV,
            _ => false,
        }
    }
}

/// The JWK `crv` of Ed25519 keys (RFC 8037 2).
pub const ED25519_CRV: &str = "Ed25519";

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| IdError::UnknownAlg(s.chars().take(32).collect()))
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
    type Error = IdError;
    /// Only base64url characters: a kid names files in the key directory and
    /// appears in URL paths, so nothing else may get in.
    fn try_from(s: String) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= Kid::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Kid(s))
        } else {
            Err(IdError::InvalidKid)
        }
    }
}

impl FromStr for Kid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
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
    /// RFC 8037's octet key pair: for jwksd, Ed25519 only.
    #[serde(rename = "OKP")]
    Okp { crv: String, x: String },
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
            PublicKey::Okp { crv, x } => format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#),
        };
        Kid(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
    }

    /// Modulus size of an RSA key, `None` for the others.
    pub fn rsa_bits(&self) -> Option<u32> {
        match self {
            PublicKey::Rsa { n, .. } => {
                let bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
                let first = bytes.iter().position(|b| *b != 0)?;
                let lead = 8 - bytes[first].leading_zeros();
                Some(((bytes.len() - first - 1) * 8) as u32 + lead)
            }
            PublicKey::Ec { .. } | PublicKey::Okp { .. } => None,
        }
    }
}

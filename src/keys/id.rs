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
    #[error("unknown algorithm {0:?}: expected ES256 or RS256")]
    UnknownAlg(String),
    #[error("invalid kid: expected 1 to 128 characters of A-Z, a-z, 0-9, '-' and '_'")]
    InvalidKid,
}

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
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s {
            "ES256" => Ok(Alg::ES256),
            "RS256" => Ok(Alg::RS256),
            other => Err(IdError::UnknownAlg(other.chars().take(32).collect())),
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

//! Encryption at rest: private keys sealed with AES-256-GCM under a key
//! derived (HKDF-SHA256) from the operator's master key, with the kid and
//! algorithm as associated data so a sealed file cannot be swapped for
//! another key's.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keys::{Alg, Kid};

/// Marks a sealed key file; clear files are PEM and start with `-----`.
const SEALED_MAGIC: &str = "jwksd-sealed-v1";
const HKDF_SALT: &[u8] = b"jwksd master key v1";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "the master key must be at least 32 random bytes, base64 or hex encoded \
         (generate one with `openssl rand -base64 32`)"
    )]
    WeakMasterKey,
    #[error("sealed with master key {file_id}, but the configured master key is {configured_id}")]
    WrongMasterKey {
        file_id: String,
        configured_id: String,
    },
    #[error("sealed key does not open: the file was altered or belongs to another kid")]
    Tampered,
    #[error("sealed key file is malformed: {0}")]
    Malformed(String),
}

/// The operator's master key, held only as the keys derived from it.
pub struct MasterKey {
    kek: Zeroizing<[u8; 32]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    master_key_id: String,
    kid: String,
    alg: Alg,
    nonce: String,
    ciphertext: String,
}

impl MasterKey {
    /// Reads a master key given as base64 (standard or URL-safe, padded or
    /// not) or hex; surrounding white space is ignored.
    pub fn from_encoded(text: &str) -> Result<MasterKey, SealError> {
        let text = text.trim();
        let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(
            hex::decode(text)
                .ok()
                .or_else(|| {
                    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                        .iter()
                        .find_map(|e| e.decode(text).ok())
                })
                .ok_or(SealError::WeakMasterKey)?,
        );
        if bytes.len() < 32 {
            return Err(SealError::WeakMasterKey);
        }
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &bytes);
        let mut kek = Zeroizing::new([0u8; 32]);
        let mut id = [0u8; 8];
        hk.expand(b"private key seal", kek.as_mut())
            .map_err(|_| SealError::WeakMasterKey)?;
        hk.expand(b"master key id", &mut id)
            .map_err(|_| SealError::WeakMasterKey)?;
        Ok(MasterKey {
            kek,
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// A public fingerprint of the master key (not a secret): names which
    /// master key sealed a file.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.kek).into())
    }

    pub fn seal(&self, kid: &Kid, alg: Alg, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(kid, alg);
        let ciphertext = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Malformed("encryption failed".into()))?;
        let env = Envelope {
            format: SEALED_MAGIC.to_owned(),
            master_key_id: self.id.clone(),
            kid: kid.to_string(),
            alg,
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            ciphertext: URL_SAFE_NO_PAD.encode(ciphertext),
        };
        serde_json::to_vec_pretty(&env).map_err(|e| SealError::Malformed(e.to_string()))
    }

    pub fn open(
        &self,
        kid: &Kid,
        alg: Alg,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let env = parse_envelope(sealed)?;
        if env.master_key_id != self.id {
            return Err(SealError::WrongMasterKey {
                file_id: env.master_key_id,
                configured_id: self.id.clone(),
            });
        }
        if env.kid != kid.as_str() || env.alg != alg {
            return Err(SealError::Tampered);
        }
        let nonce: [u8; 12] = URL_SAFE_NO_PAD
            .decode(&env.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| SealError::Malformed("bad nonce".into()))?;
        let ct = URL_SAFE_NO_PAD
            .decode(&env.ciphertext)
            .map_err(|_| SealError::Malformed("bad ciphertext encoding".into()))?;
        let aad = associated_data(kid, alg);
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered)
    }
}

/// Whether a key file's bytes are a sealed envelope (rather than clear PEM).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

/// Which master key sealed a file, when it is sealed.
pub fn sealed_by(bytes: &[u8]) -> Option<String> {
    parse_envelope(bytes).ok().map(|e| e.master_key_id)
}

fn parse_envelope(bytes: &[u8]) -> Result<Envelope, SealError> {
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| SealError::Malformed(e.to_string()))?;
    if env.format != SEALED_MAGIC {
        return Err(SealError::Malformed(format!(
            "unknown format {:?}",
            env.format
        )));
    }
    Ok(env)
}

fn associated_data(kid: &Kid, alg: Alg) -> Vec<u8> {
    format!("jwksd/v1/{alg}/{kid}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kid(s: &str) -> Kid {
        s.parse().unwrap()
    }

    const MK: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";

    #[test]
    fn seal_then_open_round_trips() {
        let mk = MasterKey::from_encoded(MK).unwrap();
        let sealed = mk.seal(&kid("abc"), Alg::ES256, b"secret pkcs8").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!String::from_utf8_lossy(&sealed).contains("secret"));
        assert_eq!(
            &*mk.open(&kid("abc"), Alg::ES256, &sealed).unwrap(),
            b"secret pkcs8"
        );
        assert_eq!(sealed_by(&sealed).as_deref(), Some(mk.id()));
    }

    #[test]
    fn wrong_master_key_is_named() {
        let mk = MasterKey::from_encoded(MK).unwrap();
        let other = MasterKey::from_encoded(&"ab".repeat(32)).unwrap();
        let sealed = mk.seal(&kid("abc"), Alg::ES256, b"x").unwrap();
        assert!(matches!(
            other.open(&kid("abc"), Alg::ES256, &sealed),
            Err(SealError::WrongMasterKey { .. })
        ));
    }

    #[test]
    fn swapped_or_altered_files_do_not_open() {
        let mk = MasterKey::from_encoded(MK).unwrap();
        let sealed = mk.seal(&kid("abc"), Alg::ES256, b"x").unwrap();
        assert!(matches!(
            mk.open(&kid("abd"), Alg::ES256, &sealed),
            Err(SealError::Tampered)
        ));
        let mut env: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        env["kid"] = "abd".into();
        let swapped = serde_json::to_vec(&env).unwrap();
        assert!(matches!(
            mk.open(&kid("abd"), Alg::ES256, &swapped),
            Err(SealError::Tampered)
        ));
    }

    #[test]
    fn short_or_garbled_master_keys_are_refused() {
        for bad in ["", "short", &"ab".repeat(31), "not base64 at all!!"] {
            assert!(
                matches!(MasterKey::from_encoded(bad), Err(SealError::WeakMasterKey)),
                "{bad}"
            );
        }
        assert!(MasterKey::from_encoded(&format!("  {}\n", "0f".repeat(32))).is_ok());
    }
}

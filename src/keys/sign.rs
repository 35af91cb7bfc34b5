//! JWS signers over OpenSSL for a key parsed once: ECDSA ([`EcdsaSigner`]),
//! RSA ([`RsaSigner`], PKCS#1 v1.5 or PSS) and Ed25519 ([`Ed25519Signer`]).

use std::fmt;

use josekit::jws::{ES256, ES384, EdDSA, JwsAlgorithm, JwsSigner, PS256, RS256};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};

use super::id::{Alg, Curve};

/// RFC 9864's fully specified name for EdDSA over Ed25519: josekit knows
/// only `EdDSA`, and names the JWS header's `alg` after the signer's
/// algorithm.
#[derive(Debug, Clone, Copy)]
pub struct Ed25519Name;

impl JwsAlgorithm for Ed25519Name {
    fn name(&self) -> &str {
        Alg::Ed25519.as_str()
    }

    fn box_clone(&self) -> Box<dyn JwsAlgorithm> {
        Box::new(*self)
    }
}

/// josekit's algorithm of `alg`, which names the JWS header's `alg`.
pub fn jws_algorithm(alg: Alg) -> &'static dyn JwsAlgorithm {
    match alg {
        Alg::ES256 => &ES256,
        Alg::ES384 => &ES384,
        Alg::RS256 => &RS256,
        Alg::PS256 => &PS256,
        Alg::EdDSA => &EdDSA,
        Alg::Ed25519 => &Ed25519Name,
    }
}

fn invalid(e: ErrorStack) -> josekit::JoseError {
    josekit::JoseError::InvalidSignature(e.into())
}

/// RS256 (RSASSA-PKCS1-v1_5) or PS256 (RSASSA-PSS, MGF1 with SHA-256 and a
/// salt as long as the digest, RFC 7518 3.5) by OpenSSL, on a key that was
/// not read through OpenSSL's DER decoder (see `material::open_private`).
#[derive(Clone)]
pub struct RsaSigner {
    pub(super) kid: String,
    pub(super) alg: Alg,
    pub(super) key: PKey<Private>,
}

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigner")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl JwsSigner for RsaSigner {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        jws_algorithm(self.alg)
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn signature_len(&self) -> usize {
        self.key.size()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
        let mut signer =
            openssl::sign::Signer::new(MessageDigest::sha256(), &self.key).map_err(invalid)?;
        if self.alg == Alg::PS256 {
            signer
                .set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)
                .map_err(invalid)?;
            signer
                .set_rsa_mgf1_md(MessageDigest::sha256())
                .map_err(invalid)?;
            signer
                .set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::DIGEST_LENGTH)
                .map_err(invalid)?;
        } else {
            signer
                .set_rsa_padding(openssl::rsa::Padding::PKCS1)
                .map_err(invalid)?;
        }
        signer.sign_oneshot_to_vec(message).map_err(invalid)
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

/// ES256 or ES384 with OpenSSL's ECDSA on a key parsed once (see the module
/// documentation of `keys`): the digest, then ECDSA on the curve, the
/// signature as the JWS fixed-width `r || s`.
#[derive(Clone)]
pub struct EcdsaSigner {
    pub(super) kid: String,
    pub(super) alg: Alg,
    pub(super) curve: Curve,
    pub(super) key: openssl::ec::EcKey<openssl::pkey::Private>,
}

impl fmt::Debug for EcdsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcdsaSigner")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The message digest of an ECDSA signature on `curve` (RFC 7518 3.4).
pub fn ecdsa_digest(curve: Curve, message: &[u8]) -> Vec<u8> {
    match curve {
        Curve::P256 => openssl::sha::sha256(message).to_vec(),
        Curve::P384 => openssl::sha::sha384(message).to_vec(),
    }
}

impl JwsSigner for EcdsaSigner {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        jws_algorithm(self.alg)
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn signature_len(&self) -> usize {
        2 * self.curve.bytes()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
        let width = self.curve.bytes() as i32;
        let digest = ecdsa_digest(self.curve, message);
        let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &self.key).map_err(invalid)?;
        let mut out = sig.r().to_vec_padded(width).map_err(invalid)?;
        out.extend(sig.s().to_vec_padded(width).map_err(invalid)?);
        Ok(out)
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

/// EdDSA over Ed25519 (RFC 8037 3.1: the message itself, no digest first)
/// by OpenSSL, published as `EdDSA` or `Ed25519`.
#[derive(Clone)]
pub struct Ed25519Signer {
    pub(super) kid: String,
    pub(super) alg: Alg,
    pub(super) key: PKey<Private>,
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl JwsSigner for Ed25519Signer {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        jws_algorithm(self.alg)
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.kid)
    }

    fn signature_len(&self) -> usize {
        64
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
        let mut signer = openssl::sign::Signer::new_without_digest(&self.key).map_err(invalid)?;
        signer.sign_oneshot_to_vec(message).map_err(invalid)
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

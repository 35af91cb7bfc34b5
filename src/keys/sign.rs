//! JWS signers over OpenSSL for a key parsed once.

use std::fmt;

use josekit::jws::{ES256, JwsSigner, RS256};
use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};

/// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) by OpenSSL, as josekit's signer
/// does it, on a key that was not read through OpenSSL's DER decoder (see
/// `material::open_private`).
#[derive(Clone)]
pub struct Rs256Signer {
    pub(super) kid: String,
    pub(super) key: PKey<Private>,
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
    pub(super) kid: String,
    pub(super) key: openssl::ec::EcKey<openssl::pkey::Private>,
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

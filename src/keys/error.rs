//! What can go wrong with a key, named with its algorithm or kid.

use super::id::{Alg, IdError, Kid};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A malformed algorithm name or kid.
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("unsupported RSA key size {0}: expected 2048, 3072 or 4096")]
    RsaBits(u32),
    #[error("{alg} key generation failed: {reason}")]
    Generate { alg: Alg, reason: String },
    #[error("stored {alg} private key is not valid PKCS#8 for that algorithm: {reason}")]
    Parse { alg: Alg, reason: String },
    #[error("signing with {kid} failed: {reason}")]
    Sign { kid: Kid, reason: String },
}

//! A private key the key ring can sign with: in memory (read from the
//! store) or inside a PKCS#11 token, where only a reference to it is held.

use super::id::{Alg, Kid, PublicKey};
use super::material::KeyMaterial;
use super::pkcs11::TokenKey;

#[derive(Debug)]
pub enum PrivateKey {
    /// Held in memory; its PKCS#8 is in the store.
    Store(KeyMaterial),
    /// Held by the token; this is only its kid and public half.
    Token(TokenKey),
}

impl PrivateKey {
    pub fn kid(&self) -> &Kid {
        match self {
            PrivateKey::Store(k) => &k.kid,
            PrivateKey::Token(k) => &k.kid,
        }
    }

    pub fn alg(&self) -> Alg {
        match self {
            PrivateKey::Store(k) => k.alg,
            PrivateKey::Token(k) => k.alg,
        }
    }

    pub fn public(&self) -> &PublicKey {
        match self {
            PrivateKey::Store(k) => &k.public,
            PrivateKey::Token(k) => &k.public,
        }
    }
}

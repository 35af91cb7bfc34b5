#![allow(dead_code)]
pub mod daemon;
pub mod pg;
pub mod sim;

use std::time::Duration;

use jwksd::keys::Alg;
use jwksd::lifecycle::{Policy, Schedule};

/// ES256 every 10 s: tokens 4 s, skew 1 s, caches 1 s, publish_ahead 2 s.
pub fn policy() -> Policy {
    Policy {
        algorithms: vec![Alg::ES256],
        rsa_bits: 2048,
        schedule: Schedule::Every(Duration::from_secs(10)),
        max_token_lifetime: Duration::from_secs(4),
        clock_skew: Duration::from_secs(1),
        jwks_cache_max_age: Duration::from_secs(1),
        publish_ahead: Duration::from_secs(2),
        signing_key_cache_max_age: Duration::from_secs(1),
        propagation: Duration::ZERO,
    }
}

/// The private scalar of a PKCS#8 key as the JWK's `d` holds it, raw: EC,
/// the fixed 32 bytes of PKCS#8 and of the JWK (RFC 7518 6.2.2.1); RSA, the
/// minimal big-endian integer of both.
pub fn private_scalar(alg: &str, pem: &[u8]) -> Vec<u8> {
    let key = openssl::pkey::PKey::private_key_from_pem(pem).unwrap();
    match alg {
        "ES256" => key
            .ec_key()
            .unwrap()
            .private_key()
            .to_vec_padded(32)
            .unwrap(),
        "RS256" => key.rsa().unwrap().d().to_vec(),
        other => panic!("{other}"),
    }
}

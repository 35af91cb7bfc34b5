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

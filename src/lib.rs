//! jwksd: a key-management and JWKS rotation daemon.
//!
//! jwksd owns the signing keys of a JWT issuer: it generates ES256 and RS256
//! keypairs on a schedule, publishes each public key before it signs, keeps
//! old public keys published until the last token they could have signed has
//! expired, and hands the active key to authenticated auth servers.
//!
//! # Layout
//!
//! Data flows one way: configuration becomes a [`lifecycle::Policy`]; the
//! store yields a [`lifecycle::KeyringState`]; the pure planner turns (state,
//! policy, now) into actions; the shell carries them out and publishes an
//! immutable snapshot that the HTTP handlers read.
//!
//! - [`time`]: millisecond timestamps, the injectable clock, and the steady
//!   clock that does not follow wall-clock jumps.
//! - [`keys`]: keypair generation (p256, rsa), PKCS#8, public JWK, RFC 7638
//!   kid, and signing through josekit/OpenSSL.
//! - [`lifecycle`]: the pure core. `state` is plain data, `policy` the
//!   timeline rules, `planner` the functions from (state, policy, now) to
//!   actions and the next wake-up. No clock, no I/O, no randomness.
//! - [`store`]: the durable [`store::KeyStore`] trait; `fs` keeps keys in a
//!   directory (atomic writes, lock, consistency check), `postgres` shares
//!   them between replicas (compare-and-set, leader lease, notifications),
//!   `seal` encrypts private keys at rest under a master key.
//! - [`keyring`]: the key ring in memory and where actions are carried out
//!   (generate, stage, commit).
//! - [`config`]: the YAML configuration, validated, and the policy it sets:
//!   `schema` the structs and their defaults (the one source of them),
//!   `duration` durations with units, `locate` the line of a field for
//!   errors, `validate` the checks (the policy's among them), `describe`
//!   check-config's account, `env` every `JWKSD_*` variable the daemon reads
//!   and the file it falls back to (master keys open there).
//! - [`daemon`]: the shell: the scheduler (the one writer), the signing
//!   queue, the snapshot readers see, start-up and shutdown.
//! - [`http`]: the hyper server, the public and admin APIs, authentication.
//! - [`tls`]: rustls configurations for both listeners, reloaded on change.
//! - [`metrics`]: Prometheus metrics.
//! - [`cli`] and [`client`]: the command line and the admin API client the
//!   operator commands use.

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod http;
pub mod keyring;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod store;
pub mod time;
pub mod tls;

//! Who may use the admin API: named clients, each with a role and its own
//! credentials (bearer tokens stored as SHA-256 digests, a TLS client
//! certificate, or both), and the limits that know who is asking.
//! docs/security.md ("Named clients") is the model; this module holds its
//! rules, with no I/O: the HTTP layer presents what a request carries and
//! acts on the answer, and `reload` swaps the list when its file changes.
//!
//! - `client`: a client as configured ([`Client`]), its [`Role`] and
//!   [`Permission`]s, token digests, certificate match and sign rate.
//! - `clients`: the list in force ([`Clients`]) and [`Clients::identify`],
//!   the one place a request's credentials become a client.
//! - `cert`: the identity a verified client certificate carries.
//! - `limits`: the failure limiter (per known identity, else per address)
//!   and each client's sign rate.
//! - `proxy`: the client address behind `admin.trusted_proxies`.

pub mod cert;
pub mod client;
pub mod clients;
pub mod limits;
pub mod proxy;

pub use cert::CertIdentity;
pub use client::{
    CertMatch, Client, Permission, RateLimit, Require, Role, TokenDigest, TokenEntry,
};
pub use clients::{Clients, Denied, Refused};
pub use limits::{FailureLimiter, SignRates, Who};

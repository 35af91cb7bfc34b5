//! What readers see: an immutable view of the key ring, rebuilt (off the
//! request path) whenever the key ring changes and swapped in atomically.
//! Handlers never render a JWKS or parse a key per request.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use josekit::jws::JwsSigner;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::api::{ActiveKeyResponse, ActivePublicKeyResponse, Jwks, NextKeyInfo, NotExported};
use crate::keyring::Keyring;
use crate::keys::{Alg, KeyError, Kid, PrivateKey, PublishedJwk, SecretBuf};
use crate::lifecycle::{
    KeyState, KeyringState, Policy, Promised, Upcoming, earliest_activation, upcoming,
    with_promises,
};
use crate::time::Timestamp;

/// What `/v1/keys/active` hands out: `signing_key.export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    /// The private key, as a JWK and a PEM (`export: true`, the default).
    PrivateKey,
    /// The public JWK only (`export: false`, sign-only): no private-key
    /// body is ever built.
    PublicOnly,
}

impl Export {
    pub fn from_config(export: bool) -> Export {
        if export {
            Export::PrivateKey
        } else {
            Export::PublicOnly
        }
    }
}

/// The active key of one algorithm, ready to sign and to hand out.
pub struct ActiveKey {
    pub kid: Kid,
    pub alg: Alg,
    pub signer: Box<dyn JwsSigner>,
    /// Whether `signer` is a PKCS#11 token's: each signature a call that
    /// blocks, made off the runtime's threads.
    pub in_token: bool,
    /// What [`Self::response`] holds.
    pub export: Export,
    /// The `/v1/keys/active` response body: holds the private key when
    /// `export` is [`Export::PrivateKey`], no private member otherwise.
    pub response: Zeroizing<Vec<u8>>,
    pub etag: String,
    /// What this process may promise signers of this key: its own values,
    /// capped to the key's record ([`Policy::served`]).
    pub served: Promised,
}

pub struct Snapshot {
    pub jwks_body: Bytes,
    /// Strong ETag of `jwks_body`, quoted.
    pub jwks_etag: String,
    pub jwks_etag_header: hyper::header::HeaderValue,
    pub active: HashMap<Alg, Arc<ActiveKey>>,
    pub state: Arc<KeyringState>,
    pub upcoming: Vec<Upcoming>,
    pub algorithms: Vec<Alg>,
    pub built_at: Timestamp,
}

/// Renders the JWK Set: every next, active and retiring key, in a stable
/// order (algorithm, then publication time), so the ETag changes exactly
/// when the set does.
pub fn render_jwks(state: &KeyringState) -> (Bytes, String) {
    let mut keys: Vec<_> = state.published().collect();
    keys.sort_by(|a, b| {
        a.alg
            .cmp(&b.alg)
            .then(a.published_at.cmp(&b.published_at))
            .then(a.kid.cmp(&b.kid))
    });
    let jwks = Jwks {
        keys: keys
            .iter()
            .map(|k| PublishedJwk::new(&k.kid, k.alg, &k.public))
            .collect(),
    };
    // Serialising plain strings cannot fail.
    let body = serde_json::to_vec(&jwks).unwrap_or_default();
    let etag = strong_etag(&body);
    (Bytes::from(body), etag)
}

pub fn strong_etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("\"{}\"", &URL_SAFE_NO_PAD.encode(digest)[..27])
}

impl Snapshot {
    /// Builds the snapshot for the key ring as it is now. Parses the active
    /// keys (RSA takes milliseconds): call it on a blocking thread. `export`
    /// decides the `/v1/keys/active` bodies prepared.
    pub fn build(
        ring: &Keyring,
        policy: &Policy,
        export: Export,
        now: Timestamp,
    ) -> Result<Snapshot, KeyError> {
        let state = ring.state();
        let (jwks_body, jwks_etag) = render_jwks(state);
        // Timeline answers as the planner's first step will record them.
        let planned = with_promises(state, policy, now);
        let up = upcoming(&planned, policy, now);
        let mut active = HashMap::new();
        for &alg in &policy.algorithms {
            let Some(rec) = state.active(alg) else {
                continue;
            };
            let Some(key) = ring.key(&rec.kid) else {
                continue;
            };
            let next = state.next_key(alg);
            let next_info = next.map(|n| {
                let scheduled = up
                    .iter()
                    .find(|u| u.kid == n.kid && u.event.is_rotation())
                    .map(|u| u.at.to_rfc3339());
                NextKeyInfo {
                    kid: n.kid.as_str(),
                    earliest_activation: earliest_activation(&planned, n, policy).to_rfc3339(),
                    scheduled_activation: scheduled,
                }
            });
            let activated = rec.activated_at.unwrap_or(rec.published_at);
            let served = policy.served(&rec.promised);
            // A key in a token is never exported, whatever the setting.
            let (export, material) = match key {
                PrivateKey::Store(m) => (export, Some(m)),
                PrivateKey::Token(_) => (Export::PublicOnly, None),
            };
            let (response, etag) = match (export, material) {
                (Export::PrivateKey, Some(key)) => {
                    // Every private member stays in a zeroizing buffer, from
                    // OpenSSL's key to the response body (see runbook.md).
                    let jwk = key.private_jwk()?;
                    let pem = key.pkcs8_pem()?;
                    let response = ActiveKeyResponse {
                        kid: rec.kid.as_str(),
                        alg: alg.as_str(),
                        jwk: Some(jwk),
                        pem: Some(&pem),
                        activated_at: activated.to_rfc3339(),
                        max_token_lifetime_seconds: served.max_token_lifetime().as_secs(),
                        next: next_info,
                    };
                    // Straight into a buffer that wipes what it leaves behind
                    // as it grows (an RSA-4096 body is about 7 KiB).
                    let mut body = SecretBuf::with_capacity(8192);
                    serde_json::to_writer(&mut body, &response).map_err(|e| KeyError::Parse {
                        alg,
                        reason: e.to_string(),
                    })?;
                    let body = body.into_inner();
                    // The ETag covers the whole body without hashing private
                    // key material: it hashes the body minus `jwk` and `pem`,
                    // which the kid determines (the RFC 7638 thumbprint of
                    // the public key, checked at load; one private key per
                    // public key). Stable across restarts, unlike a keyed
                    // hash under a per-process key.
                    let public_part = ActiveKeyResponse {
                        jwk: None,
                        pem: None,
                        ..response
                    };
                    let etag = strong_etag(&serde_json::to_vec(&public_part).unwrap_or_default());
                    (body, etag)
                }
                _ => {
                    // Sign-only: neither the private JWK nor the PEM is
                    // made, so this endpoint holds no copy of the key.
                    let response = ActivePublicKeyResponse {
                        kid: rec.kid.as_str(),
                        alg: alg.as_str(),
                        export: NotExported,
                        public_jwk: PublishedJwk::new(&rec.kid, alg, &rec.public),
                        activated_at: activated.to_rfc3339(),
                        max_token_lifetime_seconds: served.max_token_lifetime().as_secs(),
                        next: next_info,
                    };
                    let body = serde_json::to_vec(&response).map_err(|e| KeyError::Parse {
                        alg,
                        reason: e.to_string(),
                    })?;
                    // The body holds nothing secret: its own hash. It differs
                    // from every exporting answer's tag (`export` and
                    // `public_jwk` are in it), so a private key cached from
                    // an exporting daemon is not revalidated by this one.
                    let etag = strong_etag(&body);
                    (Zeroizing::new(body), etag)
                }
            };
            active.insert(
                alg,
                Arc::new(ActiveKey {
                    kid: rec.kid.clone(),
                    alg,
                    signer: match (key, ring.token()) {
                        (PrivateKey::Store(m), _) => m.signer()?,
                        (PrivateKey::Token(k), Some(t)) => Box::new(t.signer_unresolved(k)),
                        // The key ring holds token keys only with its token.
                        (PrivateKey::Token(_), None) => continue,
                    },
                    in_token: matches!(key, PrivateKey::Token(_)),
                    export,
                    response,
                    etag,
                    served,
                }),
            );
        }
        let jwks_etag_header = hyper::header::HeaderValue::from_str(&jwks_etag)
            .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("\"\""));
        Ok(Snapshot {
            jwks_body,
            jwks_etag,
            jwks_etag_header,
            active,
            state: Arc::new(state.clone()),
            upcoming: up,
            algorithms: policy.algorithms.clone(),
            built_at: now,
        })
    }

    /// Whether every configured algorithm has a key that can sign.
    pub fn missing_active(&self) -> Vec<Alg> {
        self.algorithms
            .iter()
            .copied()
            .filter(|a| !self.active.contains_key(a))
            .collect()
    }

    pub fn count(&self, alg: Alg, state: KeyState) -> usize {
        self.state.in_state(alg, state).count()
    }
}

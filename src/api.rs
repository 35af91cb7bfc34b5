//! The wire types of both HTTP APIs: every request, answer and error body,
//! shared by the server (`http`), the client and the command line, so that
//! the two sides cannot drift apart.
//!
//! Field order is the JSON member order, and tests and black-box suites
//! assert on the bytes: reorder nothing. Borrowed fields are `Cow`, so that
//! the server serialises without copying and the client deserialises into
//! owned values.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys::{Alg, PrivateJwk, PublishedJwk};
use crate::lifecycle::{KeyRecord, Upcoming};

/// Every error answer: `{"error": message, "code": code}` (and the same two
/// members first in [`TooEarly`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody<'a> {
    pub error: Cow<'a, str>,
    // Only `error` is needed to report a failure.
    #[serde(default)]
    pub code: Cow<'a, str>,
}

/// `409 too_early` from `/v1/rotate`: a rotation before `publish_ahead`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TooEarly<'a> {
    pub error: String,
    pub code: Cow<'a, str>,
    pub earliest_safe_rotation: String,
    pub algs: Vec<Alg>,
}

/// `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health<'a> {
    pub status: Cow<'a, str>,
}

/// `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub reasons: Vec<String>,
    /// Whether the last lifecycle step failed (details only in the log and
    /// the metrics: this listener is public).
    pub lifecycle_failing: bool,
    /// Whether the key store answers; while it does not, the last known
    /// keys are served.
    pub store_reachable: bool,
    /// Whether the PKCS#11 token answers; absent without a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_available: Option<bool>,
}

/// The JWK Set at `/.well-known/jwks.json` (rendered once per key-ring
/// change, never per request).
#[derive(Serialize)]
pub struct Jwks<'a> {
    pub keys: Vec<PublishedJwk<'a>>,
}

/// `/v1/keys/active`. Rendered once per key-ring change into a zeroizing
/// buffer; serialise-only: nothing in jwksd reads private keys back.
#[derive(Serialize)]
pub struct ActiveKeyResponse<'a> {
    pub kid: &'a str,
    pub alg: &'static str,
    /// The private members: `None` only in the ETag's input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwk: Option<PrivateJwk<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pem: Option<&'a str>,
    pub activated_at: String,
    pub max_token_lifetime_seconds: u64,
    pub next: Option<NextKeyInfo<'a>>,
}

/// `/v1/keys/active` with `signing_key.export: false` (sign-only): the
/// active key's public half and times, and no private member. A type of its
/// own, with no field that could hold private material, rather than
/// [`ActiveKeyResponse`] with its private members left out: the snapshot
/// cannot fill in what this type does not have. The `export` member, always
/// `false`, tells a client which answer it has before it looks for a key
/// (the exporting answer has no `export` member: it is byte for byte what
/// it always was). The public JWK is under `public_jwk`, never `jwk`, so
/// that a client written for the exporting answer fails on a missing `jwk`
/// rather than taking a public key for a private one.
#[derive(Serialize)]
pub struct ActivePublicKeyResponse<'a> {
    pub kid: &'a str,
    pub alg: &'static str,
    pub export: NotExported,
    /// The active key's entry of the JWK Set.
    pub public_jwk: PublishedJwk<'a>,
    pub activated_at: String,
    pub max_token_lifetime_seconds: u64,
    pub next: Option<NextKeyInfo<'a>>,
}

/// The `export` member of [`ActivePublicKeyResponse`]: serialises as
/// `false`, and is never anything else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotExported;

impl Serialize for NotExported {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(false)
    }
}

/// The next key, in [`ActiveKeyResponse`] and [`ActivePublicKeyResponse`].
#[derive(Serialize)]
pub struct NextKeyInfo<'a> {
    pub kid: &'a str,
    /// From when a (safe) rotation may make it active.
    pub earliest_activation: String,
    /// When the schedule will make it active.
    pub scheduled_activation: Option<String>,
}

/// A `/v1/sign` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    pub claims: Value,
}

/// A `/v1/sign` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignResponse<'a> {
    pub kid: Cow<'a, str>,
    pub token: String,
}

/// `GET /v1/keys`: the keys (current, then history newest first) and what
/// is due next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysResponse<'a> {
    pub version: u64,
    pub keys: Vec<Cow<'a, KeyRecord>>,
    pub upcoming: Cow<'a, [Upcoming]>,
}

/// A `/v1/rotate` body; an empty body means every algorithm, not forced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    // Sent as `null` when absent: the body the command line always sent.
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub force: bool,
}

/// A `/v1/rotate` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateResponse {
    pub rotated: Vec<Rotated>,
}

// One algorithm rotated, in [`RotateResponse`], and a revocation's answer:
// the core's own outcomes, serialised as they are.
pub use crate::lifecycle::{Revoked, Rotated};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Kid;
    use crate::lifecycle::KeyState;

    /// The client reads what the server writes.
    #[test]
    fn answers_round_trip_with_their_member_order() {
        let kid: Kid = "abc".parse().unwrap();
        let r = Rotated {
            alg: Alg::ES256,
            kid: kid.clone(),
            previous_kid: kid.clone(),
            forced: false,
            next_kid: None,
            by_another_replica: false,
        };
        let text = serde_json::to_string(&RotateResponse {
            rotated: vec![r.clone()],
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"rotated":[{"alg":"ES256","kid":"abc","previous_kid":"abc","forced":false}]}"#
        );
        let back: RotateResponse = serde_json::from_str(&text).unwrap();
        assert_eq!(back.rotated, vec![r]);

        let e = ErrorBody {
            error: "no such resource".into(),
            code: "not_found".into(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"error":"no such resource","code":"not_found"}"#);
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), e);

        let revoked = Revoked {
            kid: kid.clone(),
            alg: Alg::RS256,
            was: KeyState::Active,
            promoted: Some(kid),
        };
        let text = serde_json::to_string(&revoked).unwrap();
        assert_eq!(
            text,
            r#"{"kid":"abc","alg":"RS256","was":"active","promoted":"abc"}"#
        );
        assert_eq!(serde_json::from_str::<Revoked>(&text).unwrap(), revoked);
    }

    #[test]
    fn the_rotate_body_the_command_line_sends_is_unchanged() {
        let body = RotateRequest {
            alg: None,
            force: false,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"alg":null,"force":false}"#
        );
    }
}

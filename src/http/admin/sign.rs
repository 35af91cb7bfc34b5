//! `POST /v1/sign`: the request parsed and checked (the token lifetime
//! rules are the core's, [`crate::lifecycle::tokens`]), then signed by the
//! daemon's signing task.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use josekit::jwt::JwtPayload;
use serde_json::Value;

use super::refusal::{Refusal, choose_alg, no_active_key};
use crate::access::Client;
use crate::api::{SignRequest, SignResponse};
use crate::daemon::{Handle, SignError};
use crate::http::{Body, Limits, error, json, read_body};
use crate::keys::Alg;
use crate::lifecycle::Promised;
use crate::lifecycle::tokens::{
    self, Claim, Claimed, Lifetime, Limits as TokenLimits, Refusal as TokenRefusal,
};
use crate::time::Timestamp;

/// What a signing request is checked against.
pub struct SignRules<'a> {
    pub algorithms: &'a [Alg],
    pub max_token_lifetime: Duration,
    pub clock_skew: Duration,
    /// For each algorithm, what its active key may be promised here
    /// ([`crate::lifecycle::Policy::served`]: the lifetime and skew above,
    /// already capped to the key's record). An algorithm not listed gets
    /// the two above.
    pub served: &'a [(Alg, Promised)],
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// Parses and checks a `/v1/sign` body: the algorithm, and the claims with
/// `iat`, `exp`, `jti`, `iss` and `aud` filled in. Refuses tokens the
/// retention window cannot cover. Pure, so it can be tested on any input.
pub fn parse_sign_request(
    body: &[u8],
    rules: &SignRules<'_>,
    now: Timestamp,
) -> Result<(Alg, JwtPayload), Refusal> {
    let parsed: SignRequest = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("invalid request body: {e}"),
        )
    })?;
    let alg = choose_alg(rules.algorithms, parsed.alg.as_deref())?;
    let Value::Object(mut claims) = parsed.claims else {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "claims_not_object",
            "claims must be a JSON object",
        ));
    };
    let refuse = |code, msg: String| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg);
    // The JSON's form here; the timeline rules in the core.
    let claim = |name: &str| match claims.get(name) {
        None => Claim::Absent,
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 0)
            .map_or(Claim::Invalid, Claim::Seconds),
    };
    let claimed = Claimed {
        iat: claim("iat"),
        exp: claim("exp"),
        nbf: claim("nbf"),
    };
    let served = rules.served.iter().find(|(a, _)| *a == alg).map(|(_, p)| p);
    let limits = TokenLimits {
        max_token_lifetime: served.map_or(rules.max_token_lifetime, Promised::max_token_lifetime),
        clock_skew: served.map_or(rules.clock_skew, Promised::clock_skew),
    };
    let Lifetime { iat, exp } = tokens::lifetime(claimed, limits, now).map_err(|r| match r {
        TokenRefusal::NotSeconds(name) => refuse(
            "invalid_claims",
            format!("{name} must be a non-negative integer (seconds since the epoch)"),
        ),
        TokenRefusal::IatInFuture { iat, now } => refuse(
            "iat_in_future",
            format!("iat {iat} is in the future (now {now})"),
        ),
        TokenRefusal::ExpInPast { exp, now } => refuse(
            "exp_in_past",
            format!("exp {exp} is not in the future (now {now})"),
        ),
        TokenRefusal::TooLong { max } => refuse(
            "lifetime_too_long",
            format!(
                "the token would live past tokens.max_lifetime ({max} s): keys are only kept \
                 published that long after they stop signing"
            ),
        ),
    })?;
    claims.insert("iat".into(), iat.into());
    claims.insert("exp".into(), exp.into());
    if !claims.contains_key("jti") {
        // Unique, not secret: the thread-local CSPRNG (seeded from the OS)
        // saves a system call per token.
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
        claims.insert("jti".into(), URL_SAFE_NO_PAD.encode(id).into());
    }
    if let Some(iss) = rules.issuer
        && !claims.contains_key("iss")
    {
        claims.insert("iss".into(), iss.into());
    }
    if let Some(aud) = rules.audience
        && !claims.contains_key("aud")
    {
        claims.insert("aud".into(), aud.into());
    }
    let payload =
        JwtPayload::from_map(claims).map_err(|e| refuse("invalid_claims", e.to_string()))?;
    Ok((alg, payload))
}

pub(super) async fn sign(
    daemon: &Handle,
    limits: &Limits,
    req: Request<Incoming>,
    client: &Client,
) -> Response<Body> {
    let body = match read_body(req, limits).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let policy = daemon.policy();
    // What each active key may be promised here: no more than its record.
    let served: Vec<(Alg, Promised)> = daemon
        .snapshot()
        .as_ref()
        .map(|snap| snap.active.iter().map(|(a, k)| (*a, k.served)).collect())
        .unwrap_or_default();
    let rules = SignRules {
        algorithms: &policy.algorithms,
        max_token_lifetime: policy.max_token_lifetime,
        clock_skew: policy.clock_skew,
        served: &served,
        issuer: daemon.issuer(),
        audience: daemon.audience(),
    };
    let (alg, payload) = match parse_sign_request(&body, &rules, daemon.now()) {
        Ok(p) => p,
        Err(refusal) => {
            let result = if refusal.status == StatusCode::BAD_REQUEST {
                "bad_request"
            } else {
                "refused"
            };
            daemon.metrics().sign_result(None, result);
            return refusal.response();
        }
    };
    if !client.may_use(alg) {
        daemon.metrics().sign_result(Some(alg), "refused");
        tracing::warn!(client = %client.name, alg = %alg, "signing refused: the algorithm is not among the client's");
        return super::forbidden_alg(client, alg);
    }
    match daemon.sign(alg, payload).await {
        Ok((kid, token)) => {
            daemon.metrics().sign_result(Some(alg), "ok");
            let mut r = json(
                StatusCode::OK,
                &SignResponse {
                    kid: kid.as_str().into(),
                    token,
                },
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(SignError::NoActiveKey) => {
            daemon.metrics().sign_result(Some(alg), "unavailable");
            no_active_key(alg)
        }
        Err(SignError::Failed(kid, e)) => {
            daemon.metrics().sign_result(Some(alg), "error");
            tracing::error!(kid = %kid, error = %e, "signing failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "sign_failed",
                "signing failed",
            )
        }
        Err(SignError::TokenUnavailable(kid, e)) => {
            daemon.metrics().sign_result(Some(alg), "unavailable");
            tracing::error!(kid = %kid, error = %e, "signing failed: the PKCS#11 token is unavailable");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                "the PKCS#11 token that holds the signing key does not answer; jwksd reopens it \
                 every second (see /readyz and the log)",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Err(SignError::TimedOut) => {
            daemon.metrics().sign_result(Some(alg), "unavailable");
            tracing::error!(alg = %alg, "signing timed out: no signature within the deadline");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "no signature within 10 s (a PKCS#11 token that does not answer?); see the log",
            )
        }
        Err(SignError::Stopped) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the signer is not running",
        ),
    }
}

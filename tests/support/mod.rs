#![allow(dead_code)]
pub mod crash;
pub mod daemon;
pub mod pg;
pub mod sim;
pub mod softhsm;

use std::time::Duration;

use jwksd::keys::Alg;
use jwksd::lifecycle::{Policy, Schedule};

/// The algorithms of the default configuration (`algorithms:` unset).
pub const DEFAULT_ALGS: [Alg; 2] = [Alg::ES256, Alg::RS256];

/// jsonwebtoken's name of `alg`; `None` for `Ed25519`, RFC 9864's name,
/// which it does not know (the same signatures verify as `EdDSA`).
pub fn jwt_algorithm(alg: Alg) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm as A;
    Some(match alg {
        Alg::ES256 => A::ES256,
        Alg::ES384 => A::ES384,
        Alg::RS256 => A::RS256,
        Alg::PS256 => A::PS256,
        Alg::EdDSA => A::EdDSA,
        Alg::Ed25519 => return None,
    })
}

/// The `kid` in a compact JWT's header, read without a JOSE library (one
/// that does not know the header's `alg` refuses the whole header).
pub fn kid_of(token: &str) -> Option<String> {
    use base64::Engine as _;
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    header["kid"].as_str().map(str::to_owned)
}

/// Verifies a compact JWT of `alg` with jsonwebtoken (RustCrypto, an
/// implementation independent of OpenSSL and josekit) against `jwk`, a
/// published JWK as JSON; returns its claims (no claim is validated).
/// jsonwebtoken knows neither RFC 9864's `Ed25519` nor a JWK naming it, so
/// such a token's header is checked here and its signature verified as
/// the EdDSA signature it is.
pub fn jsonwebtoken_verify(
    token: &str,
    jwk: &serde_json::Value,
    alg: Alg,
) -> Result<serde_json::Value, String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut jwk = jwk.clone();
    if alg == Alg::Ed25519 {
        jwk.as_object_mut()
            .ok_or("the JWK is no object")?
            .remove("alg");
    }
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).map_err(|e| e.to_string())?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    let Some(known) = jwt_algorithm(alg) else {
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact JWS".into());
        };
        let decode = |p: &str| -> Result<serde_json::Value, String> {
            let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        let header = decode(head)?;
        if header["alg"] != alg.as_str() {
            return Err(format!("header {header}: not {alg}"));
        }
        let message = format!("{head}.{body}");
        let ok = jsonwebtoken::crypto::verify(
            sig,
            message.as_bytes(),
            &key,
            jsonwebtoken::Algorithm::EdDSA,
        )
        .map_err(|e| e.to_string())?;
        return if ok {
            decode(body)
        } else {
            Err("the Ed25519 signature does not verify".into())
        };
    };
    let mut v = jsonwebtoken::Validation::new(known);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

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
        custody: Default::default(),
    }
}

/// The private scalar of a PKCS#8 key as the JWK's `d` holds it, raw: EC,
/// the fixed width of PKCS#8 and of the JWK (RFC 7518 6.2.2.1: 32 bytes on
/// P-256, 48 on P-384); RSA (RS256, PS256), the minimal big-endian integer
/// of both; Ed25519 (EdDSA, Ed25519), the 32-byte seed, which is the
/// private key itself (RFC 8032 5.1.5) and the JWK's `d` (RFC 8037 2).
pub fn private_scalar(alg: &str, pem: &[u8]) -> Vec<u8> {
    let key = openssl::pkey::PKey::private_key_from_pem(pem).unwrap();
    let ec = |width: i32| {
        key.ec_key()
            .unwrap()
            .private_key()
            .to_vec_padded(width)
            .unwrap()
    };
    match alg {
        "ES256" => ec(32),
        "ES384" => ec(48),
        "RS256" | "PS256" => key.rsa().unwrap().d().to_vec(),
        "EdDSA" | "Ed25519" => {
            assert_eq!(key.id(), openssl::pkey::Id::ED25519, "{alg}");
            key.raw_private_key().unwrap()
        }
        other => panic!("{other}"),
    }
}

/// The object keys of `v`, at any depth.
pub fn member_names(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                out.push(k.clone());
                member_names(child, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| member_names(c, out)),
        _ => {}
    }
}

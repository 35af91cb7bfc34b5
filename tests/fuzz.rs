//! Property tests over the parsers that take outside input: the
//! configuration and the admin request bodies. Whatever comes in, they
//! answer (accept or refuse with a reason) and never panic; what they
//! accept keeps the rules.

use std::time::Duration;

use jwksd::config::{Config, DEFAULT_YAML, parse_duration};
use jwksd::http::admin::{SignRules, parse_rotate_request, parse_sign_request};
use jwksd::keys::Alg;
use jwksd::time::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

const NOW_S: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_unix_seconds(NOW_S)
}

fn rules() -> SignRules<'static> {
    SignRules {
        algorithms: &[Alg::ES256, Alg::RS256],
        served: &[],
        max_token_lifetime: Duration::from_secs(900),
        clock_skew: Duration::from_secs(60),
        issuer: Some("https://issuer.example"),
        audience: None,
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (NOW_S - 2000..NOW_S + 2000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("iat".to_owned()),
                    Just("exp".to_owned()),
                    Just("nbf".to_owned()),
                    Just("iss".to_owned()),
                    Just("aud".to_owned()),
                    Just("jti".to_owned()),
                    Just("sub".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_sign(body: &[u8]) -> Result<(), TestCaseError> {
    match parse_sign_request(body, &rules(), now()) {
        Ok((_alg, payload)) => {
            let iat = payload.claim("iat").and_then(Value::as_i64).unwrap();
            let exp = payload.claim("exp").and_then(Value::as_i64).unwrap();
            prop_assert!(exp > NOW_S, "accepted an expired token");
            prop_assert!(
                exp - iat <= 900 && exp <= NOW_S + 900,
                "accepted a lifetime over the maximum"
            );
            prop_assert!(iat <= NOW_S + 60, "accepted iat in the future");
            prop_assert!(payload.claim("jti").is_some());
        }
        Err(r) => {
            prop_assert!(r.status.is_client_error());
            prop_assert!(!r.code.is_empty() && !r.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sign_bodies_of_any_bytes_are_answered(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_sign(&body)?;
    }

    #[test]
    fn sign_bodies_of_any_json_are_answered(claims in json_value(), alg in prop::option::of(prop_oneof![Just("ES256"), Just("RS256"), Just("HS256"), Just("")])) {
        let mut body = json!({ "claims": claims });
        if let Some(a) = alg {
            body["alg"] = a.into();
        }
        check_sign(&serde_json::to_vec(&body).unwrap())?;
    }

    #[test]
    fn rotate_bodies_are_answered(body in prop::collection::vec(any::<u8>(), 0..128), value in json_value()) {
        for b in [body, serde_json::to_vec(&value).unwrap()] {
            if let Err(r) = parse_rotate_request(&b, &[Alg::ES256]) {
                prop_assert!(r.status.is_client_error());
            }
        }
    }

    #[test]
    fn config_text_of_any_kind_is_answered(text in "\\PC{0,400}") {
        let _ = Config::parse(&text, "fuzz", now());
    }

    /// The default configuration with a line dropped or a value changed:
    /// refused with a message, or accepted with a policy that validates.
    #[test]
    fn mutated_default_configs_are_answered(line in 0usize..120, replacement in prop_oneof![Just(String::new()), "[ -~]{0,20}"], keep in any::<bool>()) {
        let mut lines: Vec<String> = DEFAULT_YAML.lines().map(str::to_owned).collect();
        let i = line % lines.len();
        if keep {
            if let Some((k, _)) = lines[i].clone().split_once(':') {
                lines[i] = format!("{k}: {replacement}");
            }
        } else {
            lines.remove(i);
        }
        match Config::parse(&lines.join("\n"), "fuzz", now()) {
            Ok(c) => prop_assert!(c.config.policy(now()).is_ok()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn durations_parse_or_refuse(text in "[0-9a-zA-Z .]{0,16}") {
        if let Ok(d) = parse_duration(&text) {
            prop_assert!(!text.trim().chars().all(|c| c.is_ascii_digit()));
            prop_assert!(d < Duration::from_secs(u64::MAX / 2));
        }
    }
}

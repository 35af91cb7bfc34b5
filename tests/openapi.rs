//! `docs/openapi.yaml` against the server: the file is a well-formed
//! OpenAPI 3.1 document whose every reference resolves; its (listener,
//! method, path) set is exactly the route table the routers dispatch on
//! (`jwksd::http::routes::ROUTES`); the wire types of `jwksd::api` and the
//! answers of a real daemon to every route validate against its schemas,
//! and together use every property the schemas name. A route or a field
//! added on one side only fails here.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use hyper::Method;
use hyper::header::{self, HeaderName};
use jwksd::api::{
    ActivePublicKeyResponse, ErrorBody, Health, NextKeyInfo, NotExported, Readiness, Revoked,
    RotateRequest, RotateResponse, Rotated, SignRequest, SignResponse, TooEarly,
};
use jwksd::http::routes::{Listener, ROUTES};
use jwksd::keys::{Alg, Kid, PublicKey, PublishedJwk};
use jwksd::lifecycle::KeyState;
use serde_json::{Value, json};
use support::daemon::{Daemon, FAST};

const SPEC: &str = include_str!("../docs/openapi.yaml");
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec() -> Value {
    serde_yaml::from_str(SPEC).expect("docs/openapi.yaml is YAML")
}

fn listener_name(l: Listener) -> &'static str {
    match l {
        Listener::Public => "public",
        Listener::Admin => "admin",
    }
}

/// A JSON pointer (`#/components/...`) into the spec.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    root.pointer(reference.strip_prefix('#')?)
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Every operation: (path, method, operation).
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((path.clone(), m.to_owned(), op.clone()));
            }
        }
    }
    out
}

#[test]
fn the_file_is_a_well_formed_openapi_3_1_document() {
    let spec = spec();
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "openapi: 3.1.x"
    );
    assert!(spec["info"]["title"].is_string() && spec["info"]["version"].is_string());
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        assert!(resolve(&spec, r).is_some(), "unresolved $ref {r}");
    }
    let tags: BTreeSet<&str> = spec["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&spec) {
        let at = format!("{method} {path}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: operationId"));
        assert!(ids.insert(id.to_owned()), "{at}: operationId {id} twice");
        for t in op["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("{at}: tags"))
        {
            assert!(
                tags.contains(t.as_str().unwrap()),
                "{at}: tag {t} undeclared"
            );
        }
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}"));
        assert!(!responses.is_empty(), "{at}: no responses");
        for (status, r) in responses {
            assert!(
                status.len() == 3 && status.parse::<u16>().is_ok(),
                "{at}: status {status}"
            );
            let r = match r.get("$ref") {
                Some(Value::String(x)) => resolve(&spec, x).unwrap(),
                _ => r,
            };
            assert!(r["description"].is_string(), "{at} {status}: description");
        }
        for req in op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{at}: security"))
        {
            for name in req.as_object().unwrap().keys() {
                assert!(schemes.contains_key(name), "{at}: security scheme {name}");
            }
        }
        // Path parameters: exactly the template's, required.
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| match p.get("$ref") {
                        Some(Value::String(x)) => resolve(&spec, x).unwrap(),
                        _ => p,
                    })
                    .filter(|p| p["in"] == "path")
                    .inspect(|p| assert_eq!(p["required"], true, "{at}: path parameter"))
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(in_template, declared, "{at}: path parameters");
    }
    for (name, s) in schemes {
        assert!(s["type"].is_string(), "security scheme {name}");
    }
}

#[test]
fn the_paths_and_methods_are_the_route_table() {
    let spec = spec();
    let servers: BTreeMap<&str, &str> = [
        ("public", spec["servers"][0]["url"].as_str().unwrap()),
        ("admin", spec["servers"][1]["url"].as_str().unwrap()),
    ]
    .into();
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        let listener = item["x-listener"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: x-listener"));
        assert_eq!(
            item["servers"][0]["url"].as_str(),
            servers.get(listener).copied(),
            "{path}: its servers entry is its listener's"
        );
        for m in METHODS {
            if item.get(m).is_some() {
                documented.insert((listener.to_owned(), m.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .flat_map(|r| {
            r.methods().map(|m| {
                (
                    listener_name(r.listener).to_owned(),
                    m.to_owned(),
                    r.path.to_owned(),
                )
            })
        })
        .collect();
    let only_spec: Vec<_> = documented.difference(&served).collect();
    let only_server: Vec<_> = served.difference(&documented).collect();
    assert!(
        only_spec.is_empty() && only_server.is_empty(),
        "docs/openapi.yaml and http::routes::ROUTES differ:\n  only in the spec: {only_spec:?}\n  only in the route table: {only_server:?}"
    );
}

/// A small JSON Schema validator for what the spec uses (`$ref`, `type`,
/// `const`, `enum`, `properties`, `required`, `additionalProperties: false`,
/// `items`, `oneOf`, `minimum`), which records the properties each named
/// component schema was seen with.
struct Validator<'a> {
    root: &'a Value,
    seen: BTreeMap<String, BTreeSet<String>>,
}

impl<'a> Validator<'a> {
    fn new(root: &'a Value) -> Self {
        Validator {
            root,
            seen: BTreeMap::new(),
        }
    }

    fn component(&mut self, name: &str, v: &Value) -> Result<(), String> {
        let schema = self.root["components"]["schemas"]
            .get(name)
            .unwrap_or_else(|| panic!("no component schema {name}"))
            .clone();
        self.check(v, &schema, name, Some(name), true)
    }

    fn check(
        &mut self,
        v: &Value,
        s: &Value,
        at: &str,
        name: Option<&str>,
        record: bool,
    ) -> Result<(), String> {
        if let Some(Value::String(r)) = s.get("$ref") {
            let target = resolve(self.root, r)
                .ok_or(format!("{at}: bad $ref {r}"))?
                .clone();
            let name = r.strip_prefix("#/components/schemas/");
            return self.check(v, &target, at, name, record);
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(x) => vec![x.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let ok = types.iter().any(|t| match *t {
                "null" => v.is_null(),
                "boolean" => v.is_boolean(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "string" => v.is_string(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                _ => false,
            });
            if !ok {
                return Err(format!("{at}: {v} is not of type {t}"));
            }
        }
        if let Some(c) = s.get("const")
            && c != v
        {
            return Err(format!("{at}: {v} is not {c}"));
        }
        if let Some(Value::Array(e)) = s.get("enum")
            && !e.contains(v)
        {
            return Err(format!("{at}: {v} is not one of {e:?}"));
        }
        if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64())
            && n < min
        {
            return Err(format!("{at}: {n} < {min}"));
        }
        if let Some(Value::Array(alts)) = s.get("oneOf") {
            let mut passing = 0;
            let mut errors = Vec::new();
            for alt in alts {
                // Only the alternative that matches records what it saw.
                match self.check(v, alt, at, None, false) {
                    Ok(()) => {
                        passing += 1;
                        if record {
                            self.check(v, alt, at, None, true)?;
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            if passing != 1 {
                return Err(format!("{at}: {passing} of oneOf match: {errors:?}"));
            }
        }
        if let Value::Object(m) = v {
            let props = s.get("properties").and_then(Value::as_object);
            if let Some(Value::Array(req)) = s.get("required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        return Err(format!("{at}: required {r} missing in {v}"));
                    }
                }
            }
            for (k, child) in m {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => {
                        let ps = ps.clone();
                        self.check(child, &ps, &format!("{at}.{k}"), None, record)?;
                    }
                    None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{at}: {k} is not in the schema"));
                    }
                    None => {}
                }
            }
            if record && let Some(n) = name {
                self.seen
                    .entry(n.to_owned())
                    .or_default()
                    .extend(m.keys().cloned());
            }
        }
        if let (Value::Array(items), Some(is)) = (v, s.get("items")) {
            let is = is.clone();
            for (i, item) in items.iter().enumerate() {
                self.check(item, &is, &format!("{at}[{i}]"), None, record)?;
            }
        }
        Ok(())
    }

    /// Every property of each named schema was seen at least once.
    fn assert_covered(&self, names: &[&str]) {
        for name in names {
            let schema = &self.root["components"]["schemas"][*name];
            let props: BTreeSet<String> = schema["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{name}: properties"))
                .keys()
                .cloned()
                .collect();
            let seen = self.seen.get(*name).cloned().unwrap_or_default();
            let never: Vec<_> = props.difference(&seen).collect();
            assert!(
                never.is_empty(),
                "{name}: the spec names {never:?}, which no value of the type has"
            );
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

/// The wire types, each with every optional member set once.
fn wire_examples() -> Vec<(&'static str, Value)> {
    let kid: Kid = "kid-1".parse().unwrap();
    let rotated = |full: bool| Rotated {
        alg: Alg::ES256,
        kid: kid.clone(),
        previous_kid: kid.clone(),
        forced: full,
        next_kid: full.then(|| kid.clone()),
        by_another_replica: full,
    };
    let ec = PublicKey::Ec {
        crv: "P-256".into(),
        x: "eA".into(),
        y: "eQ".into(),
    };
    let rsa = PublicKey::Rsa {
        n: "bg".into(),
        e: "AQAB".into(),
    };
    let public_answer = |alg: Alg, public: &PublicKey, next: bool| {
        to_value(&ActivePublicKeyResponse {
            kid: kid.as_str(),
            alg: alg.as_str(),
            export: NotExported,
            public_jwk: PublishedJwk::new(&kid, alg, public),
            activated_at: "2026-01-01T00:00:00.000Z".into(),
            max_token_lifetime_seconds: 60,
            next: next.then(|| NextKeyInfo {
                kid: kid.as_str(),
                earliest_activation: "2026-01-01T00:06:00.000Z".into(),
                scheduled_activation: None,
            }),
        })
    };
    vec![
        ("ActivePublicKey", public_answer(Alg::ES256, &ec, true)),
        ("ActivePublicKey", public_answer(Alg::RS256, &rsa, false)),
        (
            "Error",
            to_value(&ErrorBody {
                error: "no such resource".into(),
                code: "not_found".into(),
            }),
        ),
        (
            "TooEarly",
            to_value(&TooEarly {
                error: "too early".into(),
                code: "too_early".into(),
                earliest_safe_rotation: "2026-01-01T00:00:00.000Z".into(),
                algs: vec![Alg::ES256, Alg::RS256],
            }),
        ),
        (
            "Health",
            to_value(&Health {
                status: "alive".into(),
            }),
        ),
        (
            "Readiness",
            to_value(&Readiness {
                ready: false,
                reasons: vec!["scheduler not running".into()],
                lifecycle_failing: false,
                store_reachable: true,
                token_available: Some(false),
            }),
        ),
        (
            "SignRequest",
            to_value(&SignRequest {
                alg: Some("ES256".into()),
                claims: json!({"sub": "a"}),
            }),
        ),
        (
            "SignResponse",
            to_value(&SignResponse {
                kid: "kid-1".into(),
                token: "a.b.c".into(),
            }),
        ),
        ("RotateRequest", to_value(&RotateRequest::default())),
        (
            "RotateRequest",
            to_value(&RotateRequest {
                alg: Some("RS256".into()),
                force: true,
            }),
        ),
        (
            "RotateResponse",
            to_value(&RotateResponse {
                rotated: vec![rotated(true), rotated(false)],
            }),
        ),
        (
            "Revoked",
            to_value(&Revoked {
                kid: kid.clone(),
                alg: Alg::RS256,
                was: KeyState::Active,
                promoted: Some(kid.clone()),
            }),
        ),
        (
            "Revoked",
            to_value(&Revoked {
                kid: kid.clone(),
                alg: Alg::ES256,
                was: KeyState::Next,
                promoted: None,
            }),
        ),
    ]
}

/// `alg` is optional in the wire types (a daemon with one algorithm takes
/// requests without it) and required in the spec (the contract that holds
/// for every configuration): the one difference, on purpose.
#[test]
fn alg_is_required_by_the_spec_and_optional_on_the_wire() {
    let spec = spec();
    let mut v = Validator::new(&spec);
    let without = to_value(&SignRequest {
        alg: None,
        claims: json!({}),
    });
    assert!(v.component("SignRequest", &without).is_err());
    let sign_rules = jwksd::http::admin::SignRules {
        algorithms: &[Alg::ES256],
        served: &[],
        max_token_lifetime: std::time::Duration::from_secs(60),
        clock_skew: std::time::Duration::from_secs(1),
        issuer: None,
        audience: None,
    };
    let now = jwksd::time::Timestamp::from_unix_seconds(1_700_000_000);
    let body = serde_json::to_vec(&without).unwrap();
    assert!(jwksd::http::admin::parse_sign_request(&body, &sign_rules, now).is_ok());
}

#[test]
fn the_wire_types_are_the_schemas() {
    let spec = spec();
    let mut v = Validator::new(&spec);
    for (name, value) in wire_examples() {
        if let Err(e) = v.component(name, &value) {
            panic!("{name} {value}: {e}");
        }
    }
    v.assert_covered(&[
        "ActivePublicKey",
        "Error",
        "TooEarly",
        "Health",
        "Readiness",
        "SignRequest",
        "SignResponse",
        "RotateRequest",
        "RotateResponse",
        "Rotated",
        "Revoked",
    ]);
}

/// The validator itself: it catches a member on one side only.
#[test]
fn the_validator_catches_a_field_on_one_side_only() {
    let spec = spec();
    let mut v = Validator::new(&spec);
    let extra = json!({"error": "x", "code": "y", "hint": "z"});
    assert!(v.component("Error", &extra).is_err());
    let missing = json!({"error": "x"});
    assert!(v.component("Error", &missing).is_err());
    let mut v = Validator::new(&spec);
    v.component("Health", &json!({"status": "alive"})).unwrap();
    v.assert_covered(&["Health"]);
    let r = std::panic::catch_unwind(|| {
        let mut v = Validator::new(&spec);
        v.component(
            "Revoked",
            &json!({"kid": "a", "alg": "ES256", "was": "next"}),
        )
        .unwrap();
        v.assert_covered(&["Revoked"]);
    });
    assert!(r.is_err(), "promoted never seen must fail coverage");
}

/// The documented answer for `status` of `method path`, resolved.
fn documented<'a>(spec: &'a Value, path: &str, method: &str, status: u16) -> Option<&'a Value> {
    let r = spec["paths"][path][method]["responses"].get(status.to_string())?;
    match r.get("$ref") {
        Some(Value::String(x)) => resolve(spec, x),
        _ => Some(r),
    }
}

/// Every route of the table, on a real daemon: answered (not 404/405) on
/// its listener with a documented status whose body validates, and 404 on
/// the other listener.
#[tokio::test]
async fn every_route_answers_as_documented_on_a_real_daemon() {
    let spec = spec();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FAST).await;
    let mut v = Validator::new(&spec);
    let keys = d.keys().await;
    // A key to revoke: the ES256 next key (revoking it changes nothing
    // else the test looks at).
    let next_kid = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "ES256" && k["state"] == "next")
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .expect("an ES256 next key");

    // (path as sent, body, extra headers) per route and method.
    let mut requests: Vec<(&'static str, String, Method, Option<Value>)> = Vec::new();
    for r in ROUTES {
        for m in r.methods() {
            let method: Method = m.parse().unwrap();
            let sent = r.path.replace("{kid}", &next_kid);
            match (r.path, m) {
                ("/v1/keys/active", _) => {
                    for alg in ["ES256", "RS256"] {
                        requests.push((r.path, format!("{sent}?alg={alg}"), method.clone(), None));
                    }
                }
                ("/v1/sign", _) => requests.push((
                    r.path,
                    sent,
                    method,
                    Some(json!({"alg": "ES256", "claims": {"sub": "a"}})),
                )),
                ("/v1/rotate", _) => {
                    // Right after start: too early, then forced.
                    requests.push((
                        r.path,
                        sent.clone(),
                        method.clone(),
                        Some(json!({"alg": "RS256"})),
                    ));
                    requests.push((
                        r.path,
                        sent,
                        method,
                        Some(json!({"alg": "RS256", "force": true})),
                    ));
                }
                _ => requests.push((r.path, sent, method, None)),
            }
        }
    }
    // The revocation last but one, then the list with an ended key in it.
    requests.sort_by_key(|(p, ..)| p.contains("{kid}"));
    requests.push(("/v1/keys", "/v1/keys".into(), Method::GET, None));

    let mut statuses = BTreeSet::new();
    for (template, sent, method, body) in requests {
        let route = ROUTES.iter().find(|r| r.path == template).unwrap();
        let (base, other) = match route.listener {
            Listener::Public => (&d.public, &d.admin),
            Listener::Admin => (&d.admin, &d.public),
        };
        let m = method.as_str().to_lowercase();
        let mut extra: Vec<(HeaderName, &str)> = vec![(header::ORIGIN, "https://app.example")];
        // A stream does not end: its refusal of a bad resume point stands
        // for it here (tests/events.rs follows one).
        if template == "/v1/events" {
            extra.push((HeaderName::from_static("last-event-id"), "not-a-number"));
        }
        let reply = d
            .client
            .send(
                method.clone(),
                &format!("{base}{sent}"),
                Some(&d.operator),
                &extra,
                body.as_ref().map(|b| serde_json::to_vec(b).unwrap().into()),
            )
            .await
            .unwrap();
        let status = reply.status.as_u16();
        let at = format!("{method} {sent} -> {status}");
        statuses.insert(format!("{method} {template} {status}"));
        assert!(
            status != 404 && status != 405,
            "{at}: {}",
            reply.error_message()
        );
        let doc = documented(&spec, template, &m, status)
            .unwrap_or_else(|| panic!("{at}: status not documented"));
        let ct = reply.header(header::CONTENT_TYPE).unwrap_or_default();
        if method != Method::HEAD && !reply.body.is_empty() {
            let content = doc["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{at}: a body, none documented"));
            assert!(
                content.contains_key(ct),
                "{at}: content type {ct} not documented"
            );
            if ct == "application/json" {
                let value: Value = serde_json::from_slice(&reply.body).unwrap();
                let schema = content[ct]["schema"].clone();
                if let Err(e) = v.check(&value, &schema, &at, None, true) {
                    panic!("{at}: {e}");
                }
            }
        }
        // Documented headers that carry a const are what was sent.
        if let Some(hs) = doc["headers"].as_object() {
            for (name, h) in hs {
                let h = match h.get("$ref") {
                    Some(Value::String(x)) => resolve(&spec, x).unwrap(),
                    _ => h,
                };
                if h["required"] == true {
                    assert!(
                        reply.header(name.as_str()).is_some(),
                        "{at}: header {name} missing"
                    );
                }
                if let (Some(c), Some(sent)) =
                    (h["schema"]["const"].as_str(), reply.header(name.as_str()))
                {
                    assert_eq!(sent, c, "{at}: header {name}");
                }
            }
        }
        // The other listener does not serve it.
        let elsewhere = d
            .client
            .send(
                method,
                &format!("{other}{sent}"),
                Some(&d.operator),
                &[],
                None,
            )
            .await
            .unwrap();
        assert_eq!(elsewhere.status, 404, "{at} on the other listener");
    }
    // The rotations did what the test meant them to.
    assert!(statuses.contains("POST /v1/rotate 409"), "{statuses:?}");
    assert!(statuses.contains("POST /v1/rotate 200"), "{statuses:?}");
    assert!(
        statuses.contains("POST /v1/keys/{kid}/revoke 200"),
        "{statuses:?}"
    );
    // This daemon keeps its keys in the store: a key in a token, as
    // `/v1/keys` shows one (the type's own serialisation).
    let mut in_token: jwksd::lifecycle::KeyRecord = serde_json::from_value(json!({
        "kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "alg": "ES256", "state": "next",
        "public": {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"},
        "created_at": "2026-01-05T00:00:00Z", "published_at": "2026-01-05T00:00:00Z",
        "transitions": []
    }))
    .unwrap();
    in_token.custody = jwksd::keys::Custody::Pkcs11 {
        token_label: "jwksd".into(),
    };
    v.component("KeyRecord", &to_value(&in_token)).unwrap();
    // And its readiness, which then says whether the token answers.
    let with_token = Readiness {
        ready: true,
        reasons: vec![],
        lifecycle_failing: false,
        store_reachable: true,
        token_available: Some(true),
    };
    v.component("Readiness", &to_value(&with_token)).unwrap();
    v.assert_covered(&[
        "Jwks",
        "PublishedJwk",
        "ActiveKey",
        "PrivateJwk",
        "NextKey",
        "Keys",
        "KeyRecord",
        "PublicKey",
        "Promised",
        "Transition",
        "Upcoming",
        "Readiness",
        "Health",
        "SignResponse",
        "TooEarly",
    ]);
}

/// `signing_key.export: false` on a real daemon: `/v1/keys/active` answers
/// the documented sign-only schema (and not the exporting one), with the
/// documented headers, and `304` on its tag; `/v1/sign` as documented.
#[tokio::test]
async fn the_sign_only_answer_is_documented_on_a_real_daemon() {
    let spec = spec();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &FAST.replace("signing_key:\n", "signing_key:\n  export: false\n"),
    )
    .await;
    let mut v = Validator::new(&spec);
    for alg in ["ES256", "RS256"] {
        let url = format!("{}/v1/keys/active?alg={alg}", d.admin);
        let r = d.client.get(&url, Some(&d.signer)).await.unwrap();
        let at = format!("GET {url} -> {}", r.status);
        assert_eq!(r.status, 200, "{at}: {}", r.error_message());
        let doc = documented(&spec, "/v1/keys/active", "get", 200).unwrap();
        let schema = doc["content"]["application/json"]["schema"].clone();
        let value: Value = serde_json::from_slice(&r.body).unwrap();
        if let Err(e) = v.check(&value, &schema, &at, None, true) {
            panic!("{at}: {e}");
        }
        v.component("ActivePublicKey", &value).unwrap();
        assert!(
            Validator::new(&spec)
                .component("ActiveKey", &value)
                .is_err(),
            "{at}: the sign-only answer passes for the exporting one: {value}"
        );
        assert_eq!(value["export"], false);
        let cc = r.header(header::CACHE_CONTROL).unwrap();
        assert!(
            cc == "no-store"
                || cc
                    .strip_prefix("private, max-age=")
                    .is_some_and(|n| n.parse::<u64>().is_ok()),
            "{at}: Cache-Control {cc}"
        );
        let tag = r.header(header::ETAG).unwrap().to_owned();
        let again = d.active_key_if_none_match(alg, &tag).await;
        assert_eq!(again.status, 304);
        assert!(documented(&spec, "/v1/keys/active", "get", 304).is_some());
        let r = d.sign(alg, json!({"sub": "a"})).await;
        assert_eq!(r.status, 200, "{}", r.error_message());
        let doc = documented(&spec, "/v1/sign", "post", 200).unwrap();
        let schema = doc["content"]["application/json"]["schema"].clone();
        v.check(&r.json().unwrap(), &schema, "sign", None, true)
            .unwrap();
    }
    v.assert_covered(&["ActivePublicKey", "PublishedJwk", "NextKey", "SignResponse"]);
}

//! The messages bad configurations are refused with: a corpus of bad files
//! and the exact message each gets. Every message names the field and its
//! line once, says what is expected with an example, and never shows a Rust
//! type or serde's words for YAML's kinds.

use jwksd::config::Config;
use jwksd::time::Timestamp;

fn refusal(yaml: &str) -> String {
    let now = Timestamp::parse_rfc3339("2026-11-26T12:00:00Z").unwrap();
    match Config::parse(yaml, "bad.yaml", now) {
        Ok(_) => panic!("accepted: {yaml:?}"),
        Err(e) => e.to_string(),
    }
}

/// (what the case is, the file, the message).
const CORPUS: &[(&str, &str, &str)] = &[
    (
        "console idle timeout too short",
        "console:\n  idle_timeout: 0s\n",
        "configuration bad.yaml: console.idle_timeout (line 2): expected 1s to 24h",
    ),
    (
        "console session shorter than its idle timeout",
        "console:\n  idle_timeout: 30m\n  session_lifetime: 10m\n",
        "configuration bad.yaml: console.session_lifetime (line 3): expected console.idle_timeout (30m) to 7d",
    ),
    (
        "console origin with a path",
        "console:\n  origins: [https://keys.example.com/console]\n",
        "configuration bad.yaml: console.origins (line 2): \"https://keys.example.com/console\": an origin has no path, query, credentials or spaces",
    ),
    (
        "number given text",
        "rsa_bits: big\n",
        "configuration bad.yaml: rsa_bits (line 1): expected a whole number (0 or more), for example `rsa_bits: 2048`, not the text \"big\"",
    ),
    (
        "negative number",
        "http:\n  max_connections: -1\n",
        "configuration bad.yaml: http.max_connections (line 2): expected a whole number (0 or more), for example `max_connections: 4096`, not the number -1",
    ),
    (
        "fractional number",
        "http:\n  max_body_bytes: 65536.5\n",
        "configuration bad.yaml: http.max_body_bytes (line 2): expected a whole number (0 or more), for example `max_body_bytes: 65536`, not the number 65536.5",
    ),
    (
        "number given a list",
        "rsa_bits: [2048]\n",
        "configuration bad.yaml: rsa_bits (line 1): expected a whole number (0 or more), for example `rsa_bits: 2048`, not a list",
    ),
    (
        "duration given a list",
        "tokens:\n  clock_skew: [1s]\n",
        "configuration bad.yaml: tokens.clock_skew (line 2): expected a duration with units, like \"90s\", \"15m\", \"24h\" or \"7d\", for example `clock_skew: 60s`, not a list",
    ),
    (
        "duration given a section",
        "jwks:\n  cache_max_age:\n    m: 5\n",
        "configuration bad.yaml: jwks.cache_max_age (line 2): expected a duration with units, like \"90s\", \"15m\", \"24h\" or \"7d\", for example `cache_max_age: 5m`, not a section (`name: value` lines)",
    ),
    (
        "bare number duration",
        "tokens:\n  clock_skew: 90\n",
        "configuration bad.yaml: tokens.clock_skew (line 2): \"90\" has a number without a unit: expected a duration with units, like \"90s\", \"15m\", \"24h\" or \"7d\" (a bare number is refused: seconds or minutes?)",
    ),
    (
        "fraction duration",
        "tokens:\n  max_lifetime: 1.5h\n",
        "configuration bad.yaml: tokens.max_lifetime (line 2): \"1.5h\" has a fraction: durations take whole numbers; write a smaller unit or parts, like \"1h 30m\" or \"90m\" for 1.5h",
    ),
    (
        "months",
        "tokens:\n  max_lifetime: 1month\n",
        "configuration bad.yaml: tokens.max_lifetime (line 2): \"1month\" uses the unit \"month\", which is not accepted (months and years have no fixed length; use ms, s, m for minutes, h, d or w, like \"30d\" or \"52w\")",
    ),
    (
        "capital M",
        "tokens:\n  max_lifetime: 5M\n",
        "configuration bad.yaml: tokens.max_lifetime (line 2): \"5M\" uses the unit \"M\", which is not accepted (months and years have no fixed length; use ms, s, m for minutes, h, d or w, like \"30d\" or \"52w\")",
    ),
    (
        "years",
        "jwks:\n  cache_max_age: 2y\n",
        "configuration bad.yaml: jwks.cache_max_age (line 2): \"2y\" uses the unit \"y\", which is not accepted (months and years have no fixed length; use ms, s, m for minutes, h, d or w, like \"30d\" or \"52w\")",
    ),
    (
        "list given text",
        "algorithms: ES256\n",
        "configuration bad.yaml: algorithms (line 1): expected a list, for example `algorithms: [ES256, RS256]`, not the text \"ES256\"",
    ),
    (
        "list given a section",
        "admin:\n  allow:\n    a: 1\n",
        "configuration bad.yaml: admin.allow (line 2): expected a list, for example `allow: [10.0.0.0/8, 127.0.0.1/32]`, not a section (`name: value` lines)",
    ),
    (
        "algorithm unknown",
        "algorithms: [ES256, ES512]\n",
        "configuration bad.yaml: algorithms[1] (line 1): \"ES512\" is not accepted: expected ES256, ES384, RS256, PS256, EdDSA or Ed25519, for example `algorithms: [ES256, RS256]`",
    ),
    (
        "algorithm given a list",
        "algorithms: [[ES256]]\n",
        "configuration bad.yaml: algorithms[0] (line 1): expected ES256, ES384, RS256, PS256, EdDSA or Ed25519, for example `algorithms: [ES256, RS256]`, not a list",
    ),
    (
        "enum unknown",
        "log:\n  format: xml\n",
        "configuration bad.yaml: log.format (line 2): \"xml\" is not accepted: expected text or json, for example `format: text`",
    ),
    (
        "section given a number",
        "rotation: 5\n",
        "configuration bad.yaml: rotation (line 1): expected a section of settings (indented `name: value` lines), for example `rotation:` followed by indented settings, not the number 5",
    ),
    (
        "section given text",
        "jwks: fast\n",
        "configuration bad.yaml: jwks (line 1): expected a section of settings (indented `name: value` lines), for example `jwks:` followed by indented settings, not the text \"fast\"",
    ),
    (
        "section given a list",
        "listen: [a]\n",
        "configuration bad.yaml: listen (line 1): expected a section of settings (indented `name: value` lines), for example `listen:` followed by indented settings, not a list",
    ),
    (
        "document is a list",
        "- a\n- b\n",
        "configuration bad.yaml: the configuration (line 1): expected a section of settings (indented `name: value` lines), for example `keys_dir: keys`, not a list",
    ),
    (
        "unknown field, near",
        "jwks:\n  cache_max_age: 5m\n  cache_maxage: 5m\n",
        "configuration bad.yaml: jwks.cache_maxage (line 3): unknown setting \"cache_maxage\": did you mean \"cache_max_age\"? (this section takes cache_max_age, publish_ahead or cors_allow_origins)",
    ),
    (
        "pkcs11 backend without its token",
        "keys:\n  backend: pkcs11\n",
        "configuration bad.yaml: keys.backend (line 2): pkcs11 needs the token: add keys.pkcs11 with module and token_label (docs/configuration.md, \"keys.pkcs11\")",
    ),
    (
        "unknown key backend",
        "keys:\n  backend: kms\n",
        "configuration bad.yaml: keys.backend (line 2): \"kms\" is not accepted: expected software or pkcs11, for example `backend: software`",
    ),
    (
        "pkcs11 without its module",
        "keys:\n  pkcs11:\n    token_label: x\n",
        "configuration bad.yaml: keys.pkcs11 (line 2): module is missing: this section needs it",
    ),
    (
        "pkcs11 sessions out of range",
        "keys:\n  pkcs11:\n    module: /usr/lib/softhsm/libsofthsm2.so\n    token_label: jwksd\n    sessions: 0\n",
        "configuration bad.yaml: keys.pkcs11.sessions (line 5): expected 1 to 64",
    ),
    (
        "pkcs11 token label too long",
        "keys:\n  pkcs11:\n    module: /m.so\n    token_label: abcdefghijklmnopqrstuvwxyz0123456789\n",
        "configuration bad.yaml: keys.pkcs11.token_label (line 4): expected the token's label: 1 to 32 bytes",
    ),
    (
        "unknown field, far",
        "frobnicate: 1\n",
        "configuration bad.yaml: frobnicate (line 1): unknown setting \"frobnicate\" (this section takes keys_dir, keys, algorithms, rsa_bits, rotation, tokens, jwks, signing_key, listen, admin, master_key_file, http, tls, store, events, console or log)",
    ),
    (
        "unknown top-level typo",
        "keyz_dir: x\n",
        "configuration bad.yaml: keyz_dir (line 1): unknown setting \"keyz_dir\": did you mean \"keys_dir\"? (this section takes keys_dir, keys, algorithms, rsa_bits, rotation, tokens, jwks, signing_key, listen, admin, master_key_file, http, tls, store, events, console or log)",
    ),
    (
        "text given a section",
        "keys_dir:\n  a: b\n",
        "configuration bad.yaml: keys_dir (line 1): expected text, for example `keys_dir: keys`, not a section (`name: value` lines)",
    ),
    (
        "network malformed",
        "admin:\n  allow: [10.0.0.0/33]\n",
        "configuration bad.yaml: admin.allow[0] (line 2): \"10.0.0.0/33\": invalid IP address syntax: expected a network in CIDR notation (address/prefix length), like 10.0.0.0/8 or 127.0.0.1/32",
    ),
    (
        "tls missing key_file",
        "tls:\n  admin:\n    cert_file: a.pem\n",
        "configuration bad.yaml: tls.admin (line 2): key_file is missing: this section needs it, for example `key_file: /etc/jwksd/tls/key.pem`",
    ),
    (
        "listen host name",
        "listen:\n  public: localhost:8080\n",
        "configuration bad.yaml: listen.public (line 2): \"localhost:8080\" is not an IP address and port: expected IP:port, for example 127.0.0.1:8080 or [::1]:8080 (host names are not accepted: jwksd listens on exactly the address given; use 127.0.0.1 for loopback, 0.0.0.0 or [::] for every interface)",
    ),
    (
        "listen without port",
        "listen:\n  admin: 127.0.0.1\n",
        "configuration bad.yaml: listen.admin (line 2): \"127.0.0.1\" is not an IP address and port: expected IP:port, for example 127.0.0.1:8080 or [::1]:8080",
    ),
    (
        "listen a number",
        "listen:\n  admin: 8081\n",
        "configuration bad.yaml: listen.admin (line 2): \"8081\" is not an IP address and port: expected IP:port, for example 127.0.0.1:8080 or [::1]:8080",
    ),
    (
        "cron hour 25",
        "rotation:\n  schedule: \"0 0 25 * * *\"\n",
        "configuration bad.yaml: rotation.schedule (line 2): cron expression \"0 0 25 * * *\": the hour field is 25, outside 0-23 (sec min hour day-of-month month day-of-week [year], for example \"0 0 3 * * *\")",
    ),
    (
        "cron minute 60",
        "rotation:\n  schedule: \"0 60 3 * * *\"\n",
        "configuration bad.yaml: rotation.schedule (line 2): cron expression \"0 60 3 * * *\": the minute field is 60, outside 0-59 (sec min hour day-of-month month day-of-week [year], for example \"0 0 3 * * *\")",
    ),
    (
        "cron five fields",
        "rotation:\n  schedule: \"0 3 * * *\"\n",
        "configuration bad.yaml: rotation.schedule (line 2): cron expression \"0 3 * * *\" has 5 fields: expected 6 or 7 with seconds first (\"sec min hour day-of-month month day-of-week [year]\", e.g. \"0 0 3 * * *\")",
    ),
    (
        "cron nonsense",
        "rotation:\n  schedule: \"a b c d e f\"\n",
        "configuration bad.yaml: rotation.schedule (line 2): cron expression \"a b c d e f\" is invalid: The 'Seconds' field does not support using names. 'a' specified. (sec min hour day-of-month month day-of-week [year], for example \"0 0 3 * * *\")",
    ),
    (
        "schedule and every",
        "rotation:\n  schedule: \"0 0 3 * * *\"\n  every: 24h\n",
        "configuration bad.yaml: rotation (line 1): set either schedule (cron) or every (a duration), not both",
    ),
    (
        "every too short",
        "rotation:\n  every: 1m\n",
        "configuration bad.yaml: rotation.every (line 2): rotations can come 1m apart, less than jwks.publish_ahead (6m): a new key could not be published long enough before it signs; rotate less often or lower jwks.cache_max_age",
    ),
    (
        "publish_ahead short",
        "jwks:\n  cache_max_age: 5m\n  publish_ahead: 1m\n",
        "configuration bad.yaml: jwks.publish_ahead (line 3): jwks.publish_ahead (1m) is shorter than jwks.cache_max_age (5m): verifiers holding a cached JWKS would not know a new key when it starts to sign",
    ),
    (
        "zero lifetime",
        "tokens:\n  max_lifetime: 0s\n",
        "configuration bad.yaml: tokens.max_lifetime (line 2): tokens.max_lifetime must be greater than zero",
    ),
    (
        "no algorithms",
        "algorithms: []\n",
        "configuration bad.yaml: algorithms (line 1): algorithms is empty: configure one or more of ES256, ES384, RS256, PS256, EdDSA and Ed25519",
    ),
    (
        "rsa bits",
        "rsa_bits: 1024\n",
        "configuration bad.yaml: rsa_bits (line 1): rsa_bits 1024 is not supported: expected 2048, 3072 or 4096",
    ),
    (
        "max_connections zero",
        "http:\n  max_connections: 0\n",
        "configuration bad.yaml: http.max_connections (line 2): must be greater than zero",
    ),
    (
        "max_body_bytes",
        "http:\n  max_body_bytes: 10\n",
        "configuration bad.yaml: http.max_body_bytes (line 2): expected 1024 to 16777216 bytes",
    ),
    (
        "client ca public",
        "tls:\n  public:\n    cert_file: a\n    key_file: b\n    client_ca_file: c\n",
        "configuration bad.yaml: tls.public.client_ca_file (line 5): the public listener serves every verifier: client certificates belong on the admin listener",
    ),
    (
        "lease",
        "store:\n  leader_lease: 1h\n",
        "configuration bad.yaml: store.leader_lease (line 2): expected 1s to 10m",
    ),
    (
        "same listen",
        "listen:\n  public: 127.0.0.1:9000\n  admin: 127.0.0.1:9000\n",
        "configuration bad.yaml: listen.admin (line 3): the admin listener must not share the public listener's address",
    ),
    (
        "same token files",
        "admin:\n  operator_token_file: t\n  signer_token_file: t\n",
        "configuration bad.yaml: admin.signer_token_file (line 3): the signer and operator tokens need two different files",
    ),
    (
        "empty issuer",
        "tokens:\n  issuer: \"\"\n",
        "configuration bad.yaml: tokens.issuer (line 2): must not be empty; leave it out instead",
    ),
    (
        "yaml syntax",
        "jwks:\n  cache_max_age: 5m\n bad: [\n",
        "configuration bad.yaml: line 3 column 2: not valid YAML: did not find expected key, while parsing a section",
    ),
    (
        "yaml indentation",
        "a: b\n  c: d\n",
        "configuration bad.yaml: line 2 column 4: not valid YAML: a `name: value` is not allowed here (check the indentation, or quote a value that holds \": \")",
    ),
    (
        "empty value",
        "keys_dir:\n",
        "configuration bad.yaml: keys_dir (line 1): expected text, for example `keys_dir: keys`, not an empty value",
    ),
    (
        "yaml tabs",
        "jwks:\n\tcache_max_age: 5m\n",
        "configuration bad.yaml: line 2 column 1: not valid YAML: found character that cannot start any token, while scanning for the next token",
    ),
];

/// serde's and Rust's words, which an operator should never read.
const FORBIDDEN: &[&str] = &[
    "u32",
    "u64",
    "usize",
    "i64",
    "struct",
    "enum",
    "invalid type",
    "map",
    "sequence",
    "variant",
    "identifier",
    "Option",
    "String",
    "PathBuf",
    "SocketAddr",
    "Rotation",
    "Jwks",
];

#[test]
fn bad_configurations_get_these_messages() {
    let mut wrong = Vec::new();
    for (what, yaml, want) in CORPUS {
        let got = refusal(yaml);
        if got != *want {
            wrong.push(format!("{what}:\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn messages_speak_the_configuration_not_rust() {
    for (what, yaml, _) in CORPUS {
        let got = refusal(yaml);
        for word in FORBIDDEN {
            // Setting names may hold the word (max_body_bytes is no "map").
            let without_fields = got.replace("cache_max_age", "").replace("max_", "");
            assert!(!without_fields.contains(word), "{what}: {word:?} in {got}");
        }
        assert_eq!(
            got.matches("line ").count(),
            1,
            "{what}: line given once: {got}"
        );
        assert!(
            !got.contains('\n') || got.lines().all(|l| !l.is_empty()),
            "{what}: {got}"
        );
    }
}

/// Text settings keep what was written: an unquoted value YAML reads as a
/// number is refused rather than respelled (`0x1F` would become "31").
#[test]
fn unquoted_numbers_are_not_respelled_into_text_settings() {
    for yaml in [
        "tokens:\n  audience: 0x1F\n",
        "tokens:\n  issuer: 1.10\n",
        "keys_dir: 2024\n",
    ] {
        let got = refusal(yaml);
        assert!(got.contains("written in quotes"), "{yaml:?}: {got}");
    }
    let now = Timestamp::parse_rfc3339("2026-11-26T12:00:00Z").unwrap();
    let quoted = Config::parse("tokens:\n  audience: \"0x1F\"\n", "ok.yaml", now).unwrap();
    assert_eq!(quoted.config.tokens.audience.as_deref(), Some("0x1F"));
}

/// A list setting with every entry commented out is an empty list, as it
/// was before the configuration's own reader.
#[test]
fn an_empty_list_setting_is_an_empty_list() {
    let now = Timestamp::parse_rfc3339("2026-11-26T12:00:00Z").unwrap();
    let c = Config::parse("admin:\n  allow:\n  #  - 10.0.0.0/8\n", "ok.yaml", now).unwrap();
    assert!(c.config.admin.allow.is_empty());
}

/// A connection string pasted where a section belongs is not repeated in
/// the error: it may hold a password.
#[test]
fn a_misplaced_connection_string_is_not_echoed() {
    let got = refusal("store: postgres://jwksd:s3cret@db/jwksd\n");
    assert!(!got.contains("s3cret"), "{got}");
    assert!(got.contains("store (line 1)"), "{got}");
}

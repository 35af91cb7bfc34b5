//! Validation: what a configuration must satisfy beyond its types. Every
//! problem names its field as a YAML path (data, not text), which the parser
//! turns into the field's line.

use std::fmt;
use std::time::Duration;

use super::locate::Text;
use super::{Config, ConfigError};
use crate::lifecycle::{Policy, Schedule};
use crate::time::Timestamp;

/// A refused setting: the field, as its YAML path, and what is wrong.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) path: &'static [&'static str],
    pub(super) message: String,
    /// The message names the field itself (the policy's do).
    names_field: bool,
}

impl Invalid {
    /// The message where there is no text to find the line in.
    pub(super) fn without_line(self) -> String {
        if self.names_field {
            self.message
        } else {
            format!("{}: {}", self.path.join("."), self.message)
        }
    }
}

fn invalid(path: &'static [&'static str], message: impl fmt::Display) -> Invalid {
    Invalid {
        path,
        message: message.to_string(),
        names_field: false,
    }
}

impl Config {
    /// `keys`: a backend that needs a token has one, described within the
    /// limits of PKCS#11 (a token label is at most 32 bytes).
    fn check_keys(&self) -> Result<(), Invalid> {
        use super::schema::Backend;
        let Some(t) = &self.keys.pkcs11 else {
            return match self.keys.backend {
                Backend::Pkcs11 => Err(invalid(
                    &["keys", "backend"],
                    "pkcs11 needs the token: add keys.pkcs11 with module and token_label \
                     (docs/configuration.md, \"keys.pkcs11\")",
                )),
                Backend::Software => Ok(()),
            };
        };
        if t.module.as_os_str().is_empty() {
            return Err(invalid(
                &["keys", "pkcs11", "module"],
                "expected the path of the PKCS#11 library",
            ));
        }
        if t.token_label.is_empty() || t.token_label.len() > 32 {
            return Err(invalid(
                &["keys", "pkcs11", "token_label"],
                "expected the token's label: 1 to 32 bytes",
            ));
        }
        if !(1..=64).contains(&t.sessions) {
            return Err(invalid(&["keys", "pkcs11", "sessions"], "expected 1 to 64"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&t.session_wait.0) {
            return Err(invalid(
                &["keys", "pkcs11", "session_wait"],
                "expected 100ms to 60s",
            ));
        }
        Ok(())
    }

    /// Checks the configuration against `text`'s lines; returns the policy's
    /// warnings.
    pub(super) fn validate(
        &self,
        text: &Text<'_>,
        now: Timestamp,
    ) -> Result<(Policy, Vec<String>), ConfigError> {
        self.check(now).map_err(|e| text.error(e.path, e.message))
    }

    /// Every rule a configuration must keep; the policy's own rules
    /// ([`Policy::validate`]) are applied here and nowhere else, and their
    /// errors placed with [`crate::lifecycle::PolicyError::config_path`].
    /// Returns the policy and its warnings.
    pub(super) fn check(&self, now: Timestamp) -> Result<(Policy, Vec<String>), Invalid> {
        if self.rotation.schedule.is_some() && self.rotation.every.is_some() {
            return Err(invalid(
                &["rotation"],
                "set either schedule (cron) or every (a duration), not both",
            ));
        }
        let h = &self.http;
        for (path, zero) in [
            (
                &["http", "header_read_timeout"],
                h.header_read_timeout.0.is_zero(),
            ),
            (
                &["http", "body_read_timeout"],
                h.body_read_timeout.0.is_zero(),
            ),
            (&["http", "write_timeout"], h.write_timeout.0.is_zero()),
            (&["http", "max_connections"], h.max_connections == 0),
            (
                &["http", "max_connections_per_client"],
                h.max_connections_per_client == 0,
            ),
        ] {
            if zero {
                return Err(invalid(path, "must be greater than zero"));
            }
        }
        for (path, n) in [
            (&["http", "max_connections"], h.max_connections),
            (
                &["http", "max_connections_per_client"],
                h.max_connections_per_client,
            ),
        ] {
            if n > 1_000_000 {
                return Err(invalid(path, "expected at most 1000000"));
            }
        }
        if !(1024..=16 << 20).contains(&h.max_body_bytes) {
            return Err(invalid(
                &["http", "max_body_bytes"],
                "expected 1024 to 16777216 bytes",
            ));
        }
        if !(8192..=1 << 20).contains(&h.max_header_bytes) {
            return Err(invalid(
                &["http", "max_header_bytes"],
                "expected 8192 to 1048576 bytes",
            ));
        }
        if self
            .tls
            .public
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some())
        {
            return Err(invalid(
                &["tls", "public", "client_ca_file"],
                "the public listener serves every verifier: client certificates belong on the \
                 admin listener",
            ));
        }
        self.check_keys()?;
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.store.leader_lease.0)
        {
            return Err(invalid(&["store", "leader_lease"], "expected 1s to 10m"));
        }
        if self.store.poll_interval.0.is_zero() {
            return Err(invalid(
                &["store", "poll_interval"],
                "must be greater than zero",
            ));
        }
        if self.store_url().is_some() && self.store.poll_interval.0 > self.tokens.clock_skew.0 {
            // A replica learns of a new next key up to poll_interval after
            // it was committed, and serves the JWK Set without it meanwhile:
            // publish_ahead counts tokens.clock_skew for that. (The retention
            // counts it explicitly: Policy::propagation.)
            return Err(invalid(
                &["store", "poll_interval"],
                "must not exceed tokens.clock_skew with a shared store",
            ));
        }
        if self.listen.public == self.listen.admin && self.listen.public.port() != 0 {
            return Err(invalid(
                &["listen", "admin"],
                "the admin listener must not share the public listener's address",
            ));
        }
        if self.operator_token_file() == self.signer_token_file() {
            return Err(invalid(
                &["admin", "signer_token_file"],
                "the signer and operator tokens need two different files",
            ));
        }
        if let Some(super::ClientsSetting::Inline(list)) = &self.admin.clients
            && let Err(why) = crate::access::Clients::new(list.clone(), Vec::new())
        {
            return Err(invalid(&["admin", "clients"], why));
        }
        for (path, v) in [
            (&["tokens", "issuer"], &self.tokens.issuer),
            (&["tokens", "audience"], &self.tokens.audience),
        ] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(invalid(path, "must not be empty; leave it out instead"));
            }
        }
        if self.events.max_subscribers == 0 || self.events.max_subscribers > 100_000 {
            return Err(invalid(
                &["events", "max_subscribers"],
                "expected 1 to 100000",
            ));
        }
        let keepalive = self.events.keepalive.0;
        if keepalive < Duration::from_secs(1) || keepalive > Duration::from_secs(300) {
            return Err(invalid(&["events", "keepalive"], "expected 1s to 5m"));
        }
        let idle = self.console.idle_timeout.0;
        if idle < Duration::from_secs(1) || idle > Duration::from_secs(86_400) {
            return Err(invalid(&["console", "idle_timeout"], "expected 1s to 24h"));
        }
        let lifetime = self.console.session_lifetime.0;
        if lifetime < idle || lifetime > Duration::from_secs(7 * 86_400) {
            return Err(invalid(
                &["console", "session_lifetime"],
                format!(
                    "expected console.idle_timeout ({}) to 7d",
                    crate::time::format_duration(idle)
                ),
            ));
        }
        for o in &self.console.origins {
            if let Some(why) = crate::http::admin::console::origin_problem(o) {
                return Err(invalid(&["console", "origins"], format!("{o:?}: {why}")));
            }
        }
        let mut names = std::collections::HashSet::new();
        for w in &self.events.webhooks {
            if w.name.is_empty() || !names.insert(w.name.as_str()) {
                return Err(invalid(
                    &["events", "webhooks"],
                    format!(
                        "every webhook needs a name of its own ({:?} is empty or used twice)",
                        w.name
                    ),
                ));
            }
            if let Some(why) = webhook_url_problem(&w.url, w.allow_http) {
                return Err(invalid(
                    &["events", "webhooks"],
                    format!("webhook {}: {why}", w.name),
                ));
            }
            let t = w.timeout.0;
            if t < Duration::from_secs(1) || t > Duration::from_secs(300) {
                return Err(invalid(
                    &["events", "webhooks"],
                    format!("webhook {}: timeout: expected 1s to 5m", w.name),
                ));
            }
        }
        if let Some(why) = cors_origins_error(&self.jwks.cors_allow_origins) {
            return Err(invalid(&["jwks", "cors_allow_origins"], why));
        }
        if let Some(expr) = &self.rotation.schedule {
            if let Some(problem) = cron_problem(expr) {
                return Err(invalid(&["rotation", "schedule"], problem));
            }
            if let Err(e) = Schedule::cron(expr) {
                return Err(invalid(&["rotation", "schedule"], e));
            }
        }
        let policy = self.policy_unchecked(now);
        match policy.validate(now) {
            Ok(mut warnings) => {
                if let Some(super::ClientsSetting::Inline(list)) = &self.admin.clients {
                    warnings.extend(self.client_warnings(list));
                }
                Ok((policy, warnings))
            }
            Err(e) => Err(Invalid {
                path: e.config_path(&policy.schedule),
                message: e.to_string(),
                names_field: true,
            }),
        }
    }
}

impl Config {
    /// Clients that work, but not as their entry suggests.
    pub fn client_warnings(&self, clients: &[crate::access::Client]) -> Vec<String> {
        let verifies = self
            .tls
            .admin
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        clients
            .iter()
            .filter(|c| c.certificate.is_some() && !verifies)
            .map(|c| {
                format!(
                    "client {}: its certificate can never be presented: the admin listener does \
                     not verify client certificates (set tls.admin.client_ca_file){}",
                    c.name,
                    if c.tokens.is_empty() || c.require == crate::access::Require::Both {
                        ", so it cannot authenticate at all"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    }
}

/// What is wrong with a `jwks.cors_allow_origins` list, if anything: `*`
/// alone, or origins as browsers send them in `Origin`
/// (`scheme://host[:port]`, no path, query or user).
/// What is wrong with a webhook URL: not http(s), no host, or plain HTTP
/// to a host that is not loopback without `allow_http`.
pub fn webhook_url_problem(url: &str, allow_http: bool) -> Option<String> {
    let uri: hyper::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Some(format!("url {url:?} is not a URL: {e}")),
    };
    let Some(host) = uri.host() else {
        return Some(format!("url {url:?} names no host"));
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Some(format!(
            "url {url:?} carries credentials: put the secret in secret_file"
        ));
    }
    match uri.scheme_str() {
        Some("https") => None,
        Some("http") if allow_http || is_loopback(host) => None,
        Some("http") => Some(format!(
            "url {url:?} is plain HTTP to a host that is not loopback: use https, or set \
             allow_http: true"
        )),
        _ => Some(format!(
            "url {url:?} must start with https:// (or http:// to loopback)"
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn cors_origins_error(origins: &[String]) -> Option<String> {
    const EXPECTED: &str = "expected [\"*\"] (any origin), a list of origins \
                            scheme://host[:port] without a path (e.g. \
                            [\"https://app.example.com\", \"http://localhost:3000\"]), or [] \
                            (no CORS)";
    if origins.len() > 1 && origins.iter().any(|o| o == "*") {
        return Some(format!("\"*\" must stand alone: {EXPECTED}"));
    }
    origins
        .iter()
        .enumerate()
        .find(|(_, o)| o.as_str() != "*" && !is_origin(o))
        .map(|(i, o)| format!("entry {} ({o:?}) is not an origin: {EXPECTED}", i + 1))
}

/// `scheme://host[:port]` exactly as a browser sends it in `Origin` (else
/// it could never match): the `http` crate parses it; no user, path,
/// query, fragment or trailing slash, and no default port.
fn is_origin(o: &str) -> bool {
    let Ok(uri) = o.parse::<hyper::Uri>() else {
        return false;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    !authority.host().is_empty()
        && !authority.as_str().contains('@')
        && !o.contains('#')
        && port_ok(scheme, authority.as_str())
        && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        && !o.ends_with('/')
}

/// The port of an authority, if it names one, is a port number as browsers
/// write it: in range (the `http` crate leaves that unchecked), without
/// leading zeros, and not the scheme's default (browsers leave it out).
fn port_ok(scheme: &str, authority: &str) -> bool {
    let after_host = authority.rfind(']').map_or(0, |i| i + 1);
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    authority[after_host..]
        .rsplit_once(':')
        .is_none_or(|(_, p)| {
            p.parse::<u16>()
                .is_ok_and(|n| n > 0 && p == n.to_string() && Some(n) != default)
        })
}

/// The fields of a cron expression, seconds first, with their ranges.
const CRON_FIELDS: [(&str, u32, u32); 7] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 1, 7),
    ("year", 1970, 2100),
];

/// What is wrong with a cron expression, said here rather than by the cron
/// crate (whose message is three lines, a caret under the wrong place, and
/// says "hours must be less than 23" of a range that ends at 23): numbers
/// outside a field's range, or else the crate's complaint on one line.
/// `None` when the expression parses (or has the wrong number of fields,
/// which `Schedule::cron` says).
fn cron_problem(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if expr.trim_start().starts_with('@') || !(6..=7).contains(&fields.len()) {
        return None;
    }
    let shape = "sec min hour day-of-month month day-of-week [year], for example \"0 0 3 * * *\"";
    for (field, (name, lo, hi)) in fields.iter().zip(CRON_FIELDS) {
        // Numbers in lists, ranges and steps ("1,5", "2-4", "*/15"); the
        // step is a count, not a value of the field.
        for part in field.split(',') {
            let values = part.split('/').next().unwrap_or(part);
            for v in values.split('-') {
                if let Ok(n) = v.parse::<u32>()
                    && !(lo..=hi).contains(&n)
                {
                    return Some(format!(
                        "cron expression {expr:?}: the {name} field is {n}, outside {lo}-{hi} \
                         ({shape})"
                    ));
                }
            }
        }
    }
    match expr.parse::<cron::Schedule>() {
        Ok(_) => None,
        Err(e) => {
            let text = e.to_string();
            let reason = text
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or(&text);
            Some(format!(
                "cron expression {expr:?} is invalid: {} ({shape})",
                reason.trim()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{now, parse};

    #[test]
    fn webhook_urls_are_https_or_loopback_http() {
        for ok in [
            "https://hooks.example.com/x",
            "http://127.0.0.1:9000/x",
            "http://[::1]:9000/",
            "http://localhost/x",
        ] {
            assert_eq!(webhook_url_problem(ok, false), None, "{ok}");
        }
        for bad in [
            "http://hooks.example.com/x",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "/relative",
            "not a url",
        ] {
            assert!(webhook_url_problem(bad, false).is_some(), "{bad}");
        }
        assert_eq!(webhook_url_problem("http://10.0.0.1/x", true), None);
    }

    #[test]
    fn bad_schedules_are_refused() {
        let e = parse("rotation:\n  schedule: \"0 3 * * *\"\n").unwrap_err();
        assert!(
            e.contains("5 fields") && e.contains("rotation.schedule"),
            "{e}"
        );
        let e = parse("rotation:\n  schedule: \"nonsense\"\n").unwrap_err();
        assert!(e.contains("rotation.schedule"), "{e}");
        let e = parse("rotation:\n  schedule: \"0 0 3 * * *\"\n  every: 24h\n").unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse("rotation:\n  every: 1m\n").unwrap_err();
        assert!(
            e.contains("rotation.every") && e.contains("publish_ahead"),
            "{e}"
        );
    }

    #[test]
    fn cron_fields_out_of_range_name_the_field_and_its_range() {
        let e = parse("rotation:\n  schedule: \"0 0 25 * * *\"\n").unwrap_err();
        assert_eq!(
            e,
            "configuration test.yaml: rotation.schedule (line 2): cron expression \"0 0 25 * * *\": \
             the hour field is 25, outside 0-23 (sec min hour day-of-month month day-of-week \
             [year], for example \"0 0 3 * * *\")"
        );
        assert!(!e.contains('\n') && !e.contains('^') && !e.contains("less than 23"));
        let e = parse("rotation:\n  schedule: \"0 0 3 * 13 *\"\n").unwrap_err();
        assert!(e.contains("the month field is 13, outside 1-12"), "{e}");
        let e = parse("rotation:\n  schedule: \"0 */15 1-30 * * *\"\n").unwrap_err();
        assert!(e.contains("the hour field is 30"), "{e}");
        assert!(parse("rotation:\n  schedule: \"0 */15 1-23 * * Mon-Fri\"\n").is_ok());
        let e = parse("rotation:\n  schedule: \"a b c d e f\"\n").unwrap_err();
        assert!(!e.contains('\n') && e.contains("invalid"), "{e}");
    }

    #[test]
    fn publish_ahead_below_cache_max_age_is_refused_with_line() {
        let e = parse("jwks:\n  cache_max_age: 5m\n  publish_ahead: 1m\n").unwrap_err();
        assert!(e.contains("jwks.publish_ahead (line 3)"), "{e}");
    }

    #[test]
    fn http_limits_and_tls_placement_are_checked() {
        for (yaml, field) in [
            ("http:\n  max_connections: 0\n", "http.max_connections"),
            (
                "http:\n  max_connections_per_client: 0\n",
                "http.max_connections_per_client",
            ),
            ("http:\n  write_timeout: 0s\n", "http.write_timeout"),
            (
                "http:\n  header_read_timeout: 0s\n",
                "http.header_read_timeout",
            ),
            ("http:\n  max_body_bytes: 10\n", "http.max_body_bytes"),
            ("http:\n  max_header_bytes: 100\n", "http.max_header_bytes"),
            (
                "tls:\n  public:\n    cert_file: a\n    key_file: b\n    client_ca_file: c\n",
                "tls.public.client_ca_file",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(field), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn cors_origins_are_star_alone_or_origins_without_a_path() {
        for ok in [
            "jwks:\n  cors_allow_origins: [\"*\"]\n",
            "jwks:\n  cors_allow_origins: []\n",
            "jwks:\n  cors_allow_origins: [\"https://app.example.com\", \"http://localhost:3000\", \"http://[::1]:8080\"]\n",
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}: {:?}", parse(ok).err());
        }
        for (bad, entry) in [
            ("[\"*\", \"https://a.example\"]", "\"*\" must stand alone"),
            (
                "[\"https://a.example/\"]",
                "entry 1 (\"https://a.example/\")",
            ),
            (
                "[\"https://a.example\", \"https://b.example/path\"]",
                "entry 2",
            ),
            ("[\"a.example\"]", "entry 1"),
            ("[\"https://a.example:0\"]", "entry 1"),
            ("[\"https://a.example:99999\"]", "entry 1"),
            ("[\"https://a.example:443\"]", "entry 1"),
            ("[\"http://a.example:0080\"]", "entry 1"),
            ("[\"https://a.example#x\"]", "entry 1"),
            ("[\"https://user@a.example\"]", "entry 1"),
            ("[\"https://a.example?x=1\"]", "entry 1"),
            ("[\"https://\"]", "entry 1"),
            ("[\"\"]", "entry 1"),
        ] {
            let yaml = format!("log:\n  format: json\njwks:\n  cors_allow_origins: {bad}\n");
            let e = parse(&yaml).unwrap_err();
            assert!(
                e.contains("jwks.cors_allow_origins (line 4): ") && e.contains(entry),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn policy_errors_point_at_their_field_and_line() {
        for (yaml, want) in [
            (
                "tokens:\n  max_lifetime: 0s\n",
                "configuration test.yaml: tokens.max_lifetime (line 2): tokens.max_lifetime must be greater \
                 than zero",
            ),
            (
                "rotation:\n  every: 0s\n",
                "configuration test.yaml: rotation.every (line 2): rotation.every must be greater than zero",
            ),
            (
                "algorithms: []\n",
                "configuration test.yaml: algorithms (line 1): algorithms is empty: configure one or more \
                 of ES256, ES384, RS256, PS256, EdDSA and Ed25519",
            ),
            (
                "rsa_bits: 1024\n",
                "configuration test.yaml: rsa_bits (line 1): rsa_bits 1024 is not supported: expected 2048, \
                 3072 or 4096",
            ),
        ] {
            assert_eq!(parse(yaml).unwrap_err(), want, "{yaml:?}");
        }
    }

    #[test]
    fn a_configuration_built_in_code_keeps_the_same_rules() {
        use crate::config::HumanDuration;
        // Without a file the source is named "configuration", as it was.
        let policy_of = |c: &Config| c.policy(now()).map(|_| ()).map_err(|e| e.to_string());
        assert!(policy_of(&Config::default()).is_ok());
        let mut c = Config::default();
        c.tokens.max_lifetime = HumanDuration(Duration::ZERO);
        assert_eq!(
            policy_of(&c).unwrap_err(),
            "configuration configuration: tokens.max_lifetime must be greater than zero"
        );
        let mut c = Config::default();
        c.http.max_connections = 0;
        assert_eq!(
            policy_of(&c).unwrap_err(),
            "configuration configuration: http.max_connections: must be greater than zero"
        );
    }
}

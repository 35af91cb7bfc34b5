//! Validation: what a configuration must satisfy beyond its types.

use std::time::Duration;

use super::locate::Text;
use super::{Config, ConfigError};
use crate::lifecycle::{PolicyError, Schedule};
use crate::time::Timestamp;

impl Config {
    pub(super) fn validate(
        &self,
        text: &Text<'_>,
        now: Timestamp,
    ) -> Result<Vec<String>, ConfigError> {
        if self.rotation.schedule.is_some() && self.rotation.every.is_some() {
            return Err(text.error(
                &["rotation"],
                "set either schedule (cron) or every (a duration), not both",
            ));
        }
        let h = &self.http;
        for (field, zero) in [
            ("header_read_timeout", h.header_read_timeout.0.is_zero()),
            ("body_read_timeout", h.body_read_timeout.0.is_zero()),
            ("write_timeout", h.write_timeout.0.is_zero()),
            ("max_connections", h.max_connections == 0),
            (
                "max_connections_per_client",
                h.max_connections_per_client == 0,
            ),
        ] {
            if zero {
                return Err(text.error(&["http", field], "must be greater than zero"));
            }
        }
        for (field, n) in [
            ("max_connections", h.max_connections),
            ("max_connections_per_client", h.max_connections_per_client),
        ] {
            if n > 1_000_000 {
                return Err(text.error(&["http", field], "expected at most 1000000"));
            }
        }
        if !(1024..=16 << 20).contains(&h.max_body_bytes) {
            return Err(text.error(
                &["http", "max_body_bytes"],
                "expected 1024 to 16777216 bytes",
            ));
        }
        if !(8192..=1 << 20).contains(&h.max_header_bytes) {
            return Err(text.error(
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
            return Err(text.error(
                &["tls", "public", "client_ca_file"],
                "the public listener serves every verifier: client certificates belong on the \
                 admin listener",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.store.leader_lease.0)
        {
            return Err(text.error(&["store", "leader_lease"], "expected 1s to 10m"));
        }
        if self.store.poll_interval.0.is_zero() {
            return Err(text.error(&["store", "poll_interval"], "must be greater than zero"));
        }
        if self.store_url().is_some() && self.store.poll_interval.0 > self.tokens.clock_skew.0 {
            // A replica learns of a new next key up to poll_interval after
            // it was committed, and serves the JWK Set without it meanwhile:
            // publish_ahead counts tokens.clock_skew for that. (The retention
            // counts it explicitly: Policy::propagation.)
            return Err(text.error(
                &["store", "poll_interval"],
                "must not exceed tokens.clock_skew with a shared store",
            ));
        }
        if self.listen.public == self.listen.admin && self.listen.public.port() != 0 {
            return Err(text.error(
                &["listen", "admin"],
                "the admin listener must not share the public listener's address",
            ));
        }
        if self.operator_token_file() == self.signer_token_file() {
            return Err(text.error(
                &["admin", "signer_token_file"],
                "the signer and operator tokens need two different files",
            ));
        }
        for (field, v) in [
            ("issuer", &self.tokens.issuer),
            ("audience", &self.tokens.audience),
        ] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(text.error(
                    &["tokens", field],
                    "must not be empty; leave it out instead",
                ));
            }
        }
        if let Some(expr) = &self.rotation.schedule
            && let Err(e) = Schedule::cron(expr)
        {
            return Err(text.error(&["rotation", "schedule"], e));
        }
        let policy = self.policy_unchecked(now);
        policy.validate(now).map_err(|e| {
            let path: &[&str] = match &e {
                PolicyError::CronFields { .. }
                | PolicyError::CronInvalid { .. }
                | PolicyError::CronNeverFires(_) => &["rotation", "schedule"],
                PolicyError::PeriodTooShort { .. } => {
                    if self.rotation.every.is_some() {
                        &["rotation", "every"]
                    } else {
                        &["rotation", "schedule"]
                    }
                }
                PolicyError::PublishAheadTooShort { .. } => &["jwks", "publish_ahead"],
                PolicyError::Zero { field } => {
                    return text.error(&field.split('.').collect::<Vec<_>>(), &e);
                }
                PolicyError::NoAlgorithms | PolicyError::DuplicateAlg(_) => &["algorithms"],
                PolicyError::RsaBits(_) => &["rsa_bits"],
            };
            text.error(path, &e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-26T12:00:00Z").unwrap()
    }

    fn parse(yaml: &str) -> Result<Config, String> {
        Config::parse(yaml, "test.yaml", now())
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
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
}

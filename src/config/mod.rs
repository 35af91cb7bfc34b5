//! Configuration: YAML -> validated [`Config`], and the [`Policy`] it implies.
//!
//! Every field has a default (the embedded `config/jwksd.yaml`). Durations
//! are strings with units; bare numbers and units of uncertain length
//! (months, years) are refused. Errors name the field, the line and what is
//! expected.
//!
//! Split by concern: `schema` (the structs and their defaults), `de` (reads
//! the parsed YAML into the schema, with errors in the configuration's
//! words and their path as data), `clients` (the clients file), `duration`, `error`, `locate` (lines for
//! errors), `validate`, `describe`, `env` (every `JWKSD_*` variable); this
//! file reads and parses, and turns a configuration into its policy.

pub mod clients;
mod de;
mod describe;
mod duration;
pub mod env;
mod error;
mod locate;
mod schema;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{HumanDuration, parse_duration};
pub use error::ConfigError;
pub use schema::*;

use crate::lifecycle::Policy;
use crate::lifecycle::Schedule;
use crate::time::Timestamp;
use locate::Text;

/// The configuration jwksd runs on when no file is given.
pub const DEFAULT_YAML: &str = include_str!("../../config/jwksd.yaml");
/// Where `jwksd` looks when neither `-c` nor `JWKSD_CONFIG` names a file.
pub const DEFAULT_PATH: &str = "config/jwksd.yaml";
/// A configuration file larger than this is refused unread.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Where a configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    BuiltIn,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::BuiltIn => f.write_str("built-in defaults"),
        }
    }
}

/// A configuration that passed validation, the policy it sets, and
/// warnings about unwise settings: what [`Config::parse`] and
/// [`Config::load`] return, so that its rules are checked once.
#[derive(Clone, Debug)]
pub struct Checked {
    pub config: Config,
    pub policy: Policy,
    pub warnings: Vec<String>,
}

impl Config {
    /// The PostgreSQL store's connection string, if one is configured
    /// (`JWKSD_STORE_URL` first).
    pub fn store_url(&self) -> Option<String> {
        env::store_url(self.store.postgres.as_ref().map(|c| c.0.as_str()))
    }

    /// The master key the store is sealed with: `JWKSD_MASTER_KEY`, else
    /// `master_key_file`.
    pub fn master_key(&self) -> Result<Option<crate::store::MasterKey>, env::MasterKeyError> {
        env::master_key(self.master_key_file.as_deref())
    }

    /// Parses and validates a configuration's text. `name` is for messages.
    /// Returns the configuration, the policy it sets and warnings about
    /// unwise settings: checked once, here.
    pub fn parse(yaml: &str, name: &str, now: Timestamp) -> Result<Checked, ConfigError> {
        let text = Text {
            name: name.to_owned(),
            yaml,
        };
        // Parsed, then read into the schema by `de`, whose errors carry
        // their path and say what is expected in words.
        let value: serde_yaml::Value =
            serde_yaml::from_str(yaml).map_err(|e| text.syntax_error(&e))?;
        let config: Config = match de::from_value::<Option<Config>>(&value) {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                let keys = e.keys();
                let example = locate::example(DEFAULT_YAML, &keys);
                return Err(text.error_named(&e.field(), &keys, e.message(example.as_deref())));
            }
        };
        let (policy, warnings) = config.validate(&text, now)?;
        Ok(Checked {
            config,
            policy,
            warnings,
        })
    }

    /// Reads the configuration: `explicit` (from `-c`), else `JWKSD_CONFIG`,
    /// else `config/jwksd.yaml` if it exists, else the built-in defaults.
    pub fn load(
        explicit: Option<&Path>,
        now: Timestamp,
    ) -> Result<(Checked, ConfigSource), ConfigError> {
        let path = match (explicit, env::config_file()) {
            (Some(p), _) => Some(p.to_owned()),
            (None, Some(p)) => Some(p),
            (None, None) => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
        };
        match path {
            Some(path) => {
                let yaml = read_config(&path)?;
                let c = Config::parse(&yaml, &path.display().to_string(), now)?;
                Ok((c, ConfigSource::File(path)))
            }
            None => {
                let c = Config::parse(DEFAULT_YAML, "built-in defaults", now)?;
                Ok((c, ConfigSource::BuiltIn))
            }
        }
    }

    /// Where the operator token lives (unless `JWKSD_OPERATOR_TOKEN` is set).
    pub fn operator_token_file(&self) -> PathBuf {
        self.admin
            .operator_token_file
            .clone()
            .unwrap_or_else(|| self.keys_dir.join("operator.token"))
    }

    /// Where the signer token lives (unless `JWKSD_SIGNER_TOKEN` is set).
    pub fn signer_token_file(&self) -> PathBuf {
        self.admin
            .signer_token_file
            .clone()
            .unwrap_or_else(|| self.keys_dir.join("signer.token"))
    }

    /// The timeline policy this configuration sets, once it keeps every
    /// rule: validation (`validate.rs`) is the one place they are checked,
    /// for a configuration parsed or built in code alike.
    pub fn policy(&self, now: Timestamp) -> Result<Policy, ConfigError> {
        self.check(now)
            .map(|(policy, _)| policy)
            .map_err(|e| ConfigError::Invalid {
                source_name: "configuration".into(),
                message: e.without_line(),
            })
    }

    pub(super) fn policy_unchecked(&self, _now: Timestamp) -> Policy {
        let schedule = match (&self.rotation.every, &self.rotation.schedule) {
            (Some(every), _) => Schedule::Every(every.0),
            // A bad expression is refused in validation before this runs.
            (None, Some(cron)) => Schedule::cron(cron).unwrap_or(Schedule::Every(Duration::ZERO)),
            (None, None) => {
                Schedule::cron(DEFAULT_SCHEDULE).unwrap_or(Schedule::Every(Duration::ZERO))
            }
        };
        let clock_skew = self.tokens.clock_skew.0;
        let cache = self.jwks.cache_max_age.0;
        Policy {
            algorithms: self.algorithms.clone(),
            rsa_bits: self.rsa_bits,
            schedule,
            max_token_lifetime: self.tokens.max_lifetime.0,
            clock_skew,
            jwks_cache_max_age: cache,
            publish_ahead: self
                .jwks
                .publish_ahead
                .map(|d| d.0)
                .unwrap_or_else(|| Policy::default_publish_ahead(cache, clock_skew)),
            signing_key_cache_max_age: self.signing_key.cache_max_age.0,
            propagation: match self.store_url() {
                Some(_) => crate::store::postgres::deadline::COMMIT
                    .saturating_add(self.store.poll_interval.0),
                None => crate::store::fs::COMMIT_WINDOW,
            },
            custody: match (&self.keys.backend, &self.keys.pkcs11) {
                (Backend::Pkcs11, Some(t)) => crate::keys::Custody::Pkcs11 {
                    token_label: t.token_label.clone(),
                },
                // Backend pkcs11 without a token is refused in validation.
                _ => crate::keys::Custody::Software,
            },
        }
    }
}

fn read_config(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    String::from_utf8(buf).map_err(|_| ConfigError::Invalid {
        source_name: path.display().to_string(),
        message: "not UTF-8 text".into(),
    })
}

/// What the configuration's unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::Config;
    use crate::time::Timestamp;

    pub(crate) fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-26T12:00:00Z").unwrap()
    }

    /// `yaml` parsed as a file named test.yaml, or its error's text.
    pub(crate) fn parse(yaml: &str) -> Result<Config, String> {
        Config::parse(yaml, "test.yaml", now())
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{now, parse};
    use super::*;
    use crate::keys::Alg;

    #[test]
    fn embedded_default_is_valid_and_complete() {
        let c = parse(DEFAULT_YAML).unwrap();
        assert_eq!(c.keys_dir, PathBuf::from("keys"));
        assert_eq!(c.algorithms, vec![Alg::ES256, Alg::RS256]);
        let p = c.policy(now()).unwrap();
        assert_eq!(p.publish_ahead, Duration::from_secs(6 * 60));
        assert_eq!(p.retention(), Duration::from_secs(24 * 3600 + 120 + 2));
        // The embedded file and the compiled-in defaults agree.
        let d = Config::default();
        let dp = d.policy(now()).unwrap();
        assert_eq!(format!("{p:?}"), format!("{dp:?}"));
        assert_eq!(c.listen.public, d.listen.public);
        assert_eq!(c.listen.admin, d.listen.admin);
        assert_eq!(c.operator_token_file(), d.operator_token_file());
        assert_eq!(
            d.operator_token_file(),
            PathBuf::from("keys/operator.token")
        );
        let moved = parse("keys_dir: /var/lib/jwksd\n").unwrap();
        assert_eq!(
            moved.signer_token_file(),
            PathBuf::from("/var/lib/jwksd/signer.token")
        );
        assert_eq!(c.keys_dir, d.keys_dir);
        assert_eq!(c.log.format, d.log.format);
        assert_eq!(format!("{:?}", c.http), format!("{:?}", d.http));
        // An empty file is the default.
        let e = parse("").unwrap();
        assert_eq!(e.listen.public, c.listen.public);
        assert_eq!(format!("{:?}", e.policy(now()).unwrap()), format!("{dp:?}"));
        // Field for field: the file and the Default impls are one set of
        // defaults (http::Limits takes its defaults from them).
        assert_eq!(c, d);
        assert_eq!(e, d);
        assert_eq!(parse("rotation: {}\n").unwrap(), d);
    }

    #[test]
    fn rotation_every_alone_leaves_the_schedule_unset() {
        let c = parse("rotation:\n  every: 24h\n").unwrap();
        assert!(c.rotation.schedule.is_none());
        let e = parse("rotation: 5\n").unwrap_err();
        assert_eq!(
            e,
            "configuration test.yaml: rotation (line 1): expected a section of settings \
             (indented `name: value` lines), for example `rotation:` followed by indented \
             settings, not the number 5"
        );
    }

    #[test]
    fn partial_file_takes_defaults_for_the_rest() {
        let c = parse(
            "jwks:\n  cache_max_age: 1s\ntokens:\n  clock_skew: 1s\nrotation:\n  every: 3s\n",
        )
        .unwrap();
        assert_eq!(c.jwks.cache_max_age.0, Duration::from_secs(1));
        assert!(c.rotation.schedule.is_none());
        assert_eq!(c.tokens.max_lifetime.0, Duration::from_secs(86400));
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let e = parse("jwks:\n  cache_max_age: 5m\n  max_age: 5m\n").unwrap_err();
        assert!(e.contains("max_age") && e.contains("line"), "{e}");
        let e = parse("keyz_dir: x\n").unwrap_err();
        assert!(e.contains("keyz_dir"), "{e}");
    }

    #[test]
    fn wrong_types_and_hostile_documents_are_refused() {
        assert!(parse("algorithms: ES256\n").is_err());
        assert!(
            parse("algorithms: [ES512]\n")
                .unwrap_err()
                .contains("ES512")
        );
        let e = parse("- a\n- b\n").unwrap_err();
        assert!(
            e.contains("expected a section") && e.contains("not a list"),
            "{e}"
        );
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
                    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
        assert!(parse(bomb).is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&deep).is_err());
    }
}

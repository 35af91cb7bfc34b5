//! Configuration: YAML -> validated [`Config`], and the [`Policy`] it implies.
//!
//! Every field has a default (the embedded `config/jwksd.yaml`). Durations
//! are strings with units; bare numbers and units of uncertain length
//! (months, years) are refused. Errors name the field, the line and what is
//! expected.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::keys::Alg;
use crate::lifecycle::{Policy, PolicyError, Schedule};
use crate::time::{Timestamp, format_duration};

/// The configuration jwksd runs on when no file is given.
pub const DEFAULT_YAML: &str = include_str!("../config/jwksd.yaml");
/// Where `jwksd` looks when neither `-c` nor `JWKSD_CONFIG` names a file.
pub const DEFAULT_PATH: &str = "config/jwksd.yaml";
/// A configuration file larger than this is refused unread.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub keys_dir: PathBuf,
    pub algorithms: Vec<Alg>,
    pub rsa_bits: u32,
    pub rotation: Rotation,
    pub tokens: Tokens,
    pub jwks: Jwks,
    pub signing_key: SigningKey,
    pub listen: Listen,
    pub admin: Admin,
    pub master_key_file: Option<PathBuf>,
    pub http: Http,
    pub tls: Tls,
    pub store: Store,
    pub log: Log,
}

/// Where keys live when several replicas share them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// PostgreSQL connection string (URL or key=value); `JWKSD_STORE_URL`
    /// overrides it. Absent: the directory store in `keys_dir`.
    pub postgres: Option<ConnectionString>,
    /// How long a leader's lease lasts: the bound on failover.
    pub leader_lease: HumanDuration,
    /// How often replicas check the store for changes when no notification
    /// arrives.
    pub poll_interval: HumanDuration,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            postgres: None,
            leader_lease: HumanDuration(Duration::from_secs(10)),
            poll_interval: HumanDuration(Duration::from_secs(2)),
        }
    }
}

/// A connection string, which may hold a password: never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ConnectionString(pub String);

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionString(..)")
    }
}

impl Config {
    /// The PostgreSQL store's connection string, if one is configured.
    pub fn store_url(&self) -> Option<String> {
        std::env::var("JWKSD_STORE_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.store.postgres.as_ref().map(|c| c.0.clone()))
    }
}

/// TLS per listener; a listener without it speaks plain HTTP.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub public: Option<crate::tls::TlsFiles>,
    pub admin: Option<crate::tls::TlsFiles>,
}

/// The rotation schedule when the configuration sets none.
pub const DEFAULT_SCHEDULE: &str = "0 0 3 * * *";

impl Default for Config {
    fn default() -> Self {
        Config {
            keys_dir: PathBuf::from("keys"),
            algorithms: vec![Alg::ES256, Alg::RS256],
            rsa_bits: 2048,
            rotation: Rotation::default(),
            tokens: Tokens::default(),
            jwks: Jwks::default(),
            signing_key: SigningKey::default(),
            listen: Listen::default(),
            admin: Admin::default(),
            master_key_file: None,
            http: Http::default(),
            tls: Tls::default(),
            store: Store::default(),
            log: Log::default(),
        }
    }
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            max_lifetime: HumanDuration(Duration::from_secs(24 * 3600)),
            clock_skew: HumanDuration(Duration::from_secs(60)),
            issuer: None,
            audience: None,
        }
    }
}

impl Default for Jwks {
    fn default() -> Self {
        Jwks {
            cache_max_age: HumanDuration(Duration::from_secs(300)),
            publish_ahead: None,
        }
    }
}

impl Default for SigningKey {
    fn default() -> Self {
        SigningKey {
            cache_max_age: HumanDuration(Duration::from_secs(60)),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            public: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8081)),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
        }
    }
}

/// Exactly one of the two may be set; neither means [`DEFAULT_SCHEDULE`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rotation {
    pub schedule: Option<String>,
    pub every: Option<HumanDuration>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    pub max_lifetime: HumanDuration,
    pub clock_skew: HumanDuration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jwks {
    pub cache_max_age: HumanDuration,
    pub publish_ahead: Option<HumanDuration>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningKey {
    pub cache_max_age: HumanDuration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Default: `<keys_dir>/operator.token`.
    pub operator_token_file: Option<PathBuf>,
    /// Default: `<keys_dir>/signer.token`.
    pub signer_token_file: Option<PathBuf>,
    /// Client networks allowed on the admin listener; empty allows all.
    pub allow: Vec<ipnet::IpNet>,
}

/// Limits both listeners apply to every connection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Time to send a request's headers; also closes idle keep-alive
    /// connections (slow clients cannot hold a connection).
    pub header_read_timeout: HumanDuration,
    pub body_read_timeout: HumanDuration,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    /// Open connections per listener; more wait in the accept queue.
    pub max_connections: usize,
    /// Open connections per client (IPv4 address, IPv6 /64) per listener;
    /// more are closed at once.
    pub max_connections_per_client: usize,
    /// A connection whose response writes make no progress this long is
    /// closed.
    pub write_timeout: HumanDuration,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: HumanDuration,
}

impl Default for Http {
    fn default() -> Self {
        let l = crate::http::Limits::default();
        Http {
            header_read_timeout: HumanDuration(l.header_read_timeout),
            body_read_timeout: HumanDuration(l.body_read_timeout),
            max_body_bytes: l.max_body_bytes,
            max_header_bytes: l.max_header_bytes,
            max_connections: l.max_connections,
            max_connections_per_client: l.max_connections_per_client,
            write_timeout: HumanDuration(l.write_timeout),
            shutdown_grace: HumanDuration(l.shutdown_grace),
        }
    }
}

impl Http {
    pub fn limits(&self) -> crate::http::Limits {
        crate::http::Limits {
            header_read_timeout: self.header_read_timeout.0,
            body_read_timeout: self.body_read_timeout.0,
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            write_timeout: self.write_timeout.0,
            shutdown_grace: self.shutdown_grace.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A duration written with units (`90s`, `15m`, `24h`, `7d`, `1h 30m`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Units accepted in durations. Months and years are left out on purpose:
/// humantime reads `M` as months (not minutes) and both have no fixed length.
const UNITS: &[&str] = &[
    "ms", "msec", "s", "sec", "secs", "second", "seconds", "m", "min", "mins", "minute", "minutes",
    "h", "hr", "hrs", "hour", "hours", "d", "day", "days", "w", "week", "weeks",
];

/// Parses a duration with units, refusing bare numbers and unclear units.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration with units, like \"90s\", \"15m\", \"24h\" or \"7d\"";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("empty duration: {expected}"));
    }
    let mut chars = t.chars().peekable();
    let mut saw_part = false;
    while chars.peek().is_some() {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut digits = String::new();
        while let Some(c) = chars.peek().copied().filter(|c| c.is_ascii_digit()) {
            digits.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut unit = String::new();
        while let Some(c) = chars.peek().copied().filter(|c| c.is_alphabetic()) {
            unit.push(c);
            chars.next();
        }
        if digits.is_empty() {
            return Err(format!("{text:?} is not a duration: {expected}"));
        }
        if unit.is_empty() {
            return Err(format!("{text:?} has a number without a unit: {expected}"));
        }
        if !UNITS.contains(&unit.as_str()) {
            return Err(format!(
                "{text:?} uses the unit {unit:?}, which is not accepted (use ms, s, m for \
                 minutes, h, d or w)"
            ));
        }
        saw_part = true;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    }
    if !saw_part {
        return Err(format!("{text:?}: {expected}"));
    }
    let d = humantime::parse_duration(t).map_err(|e| format!("{text:?}: {e}; {expected}"))?;
    // Nothing in jwksd is meant to last a century; larger values would only
    // overflow the arithmetic of the timeline.
    if d > Duration::from_secs(100 * 365 * 86_400) {
        return Err(format!("{text:?} is longer than 100 years"));
    }
    Ok(d)
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with units, like \"90s\", \"15m\", \"24h\" or \"7d\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration {path} is larger than 1 MiB; that is not a jwksd configuration")]
    TooLarge { path: PathBuf },
    #[error("configuration {source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

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

/// A configuration file's text, kept to point errors at lines.
struct Text<'a> {
    name: String,
    yaml: &'a str,
}

impl Text<'_> {
    fn error(&self, path: &[&str], message: impl fmt::Display) -> ConfigError {
        let at = locate(self.yaml, path)
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        ConfigError::Invalid {
            source_name: self.name.clone(),
            message: format!("{}{at}: {message}", path.join(".")),
        }
    }
}

/// The 1-based line of a nested key in simple block YAML, if found.
fn locate(yaml: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (i, line) in yaml.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        stack.push((indent, key.trim().trim_matches('"')));
        if stack.len() == path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p) {
            return Some(i + 1);
        }
    }
    None
}

impl Config {
    /// Parses and validates a configuration's text. `name` is for messages.
    /// Returns the configuration and warnings about unwise settings.
    pub fn parse(
        yaml: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let text = Text {
            name: name.to_owned(),
            yaml,
        };
        let config: Config = match serde_yaml::from_str::<Option<Config>>(yaml) {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                return Err(ConfigError::Invalid {
                    source_name: name.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        let warnings = config.validate(&text, now)?;
        Ok((config, warnings))
    }

    /// Reads the configuration: `explicit` (from `-c`), else `JWKSD_CONFIG`,
    /// else `config/jwksd.yaml` if it exists, else the built-in defaults.
    pub fn load(
        explicit: Option<&Path>,
        now: Timestamp,
    ) -> Result<(Config, ConfigSource, Vec<String>), ConfigError> {
        let env = std::env::var_os("JWKSD_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let path = match (explicit, env) {
            (Some(p), _) => Some(p.to_owned()),
            (None, Some(p)) => Some(p),
            (None, None) => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
        };
        match path {
            Some(path) => {
                let yaml = read_config(&path)?;
                let (c, w) = Config::parse(&yaml, &path.display().to_string(), now)?;
                Ok((c, ConfigSource::File(path), w))
            }
            None => {
                let (c, w) = Config::parse(DEFAULT_YAML, "built-in defaults", now)?;
                Ok((c, ConfigSource::BuiltIn, w))
            }
        }
    }

    fn validate(&self, text: &Text<'_>, now: Timestamp) -> Result<Vec<String>, ConfigError> {
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

    /// The timeline policy this configuration sets.
    pub fn policy(&self, now: Timestamp) -> Result<Policy, ConfigError> {
        let p = self.policy_unchecked(now);
        p.validate(now).map_err(|e| ConfigError::Invalid {
            source_name: "configuration".into(),
            message: e.to_string(),
        })?;
        Ok(p)
    }

    fn policy_unchecked(&self, _now: Timestamp) -> Policy {
        let schedule = match (&self.rotation.every, &self.rotation.schedule) {
            (Some(every), _) => Schedule::Every(every.0),
            // Checked when deserialized.
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
        }
    }

    /// The effective timeline in words, for `jwksd check-config`.
    pub fn describe(&self, now: Timestamp) -> Result<String, ConfigError> {
        let p = self.policy(now)?;
        let mut out = String::new();
        let algs: Vec<&str> = p.algorithms.iter().map(|a| a.as_str()).collect();
        out.push_str(&format!(
            "algorithms: {} (RSA keys of {} bits)\n",
            algs.join(", "),
            p.rsa_bits
        ));
        match &p.schedule {
            Schedule::Every(d) => out.push_str(&format!(
                "keys rotate every {} after the active key was activated\n",
                format_duration(*d)
            )),
            Schedule::Cron(c) => out.push_str(&format!(
                "keys rotate on the cron schedule {:?} (UTC)\n",
                c.expr()
            )),
        }
        let mut t = now;
        let mut fires = Vec::new();
        for _ in 0..3 {
            match p.schedule.next_after(t) {
                Some(n) => {
                    fires.push(n.to_rfc3339());
                    t = n;
                }
                None => break,
            }
        }
        match &p.schedule {
            Schedule::Every(_) => out.push_str(&format!(
                "if a key were activated now, it would rotate out at {}\n",
                fires.first().map(String::as_str).unwrap_or("never")
            )),
            Schedule::Cron(_) => out.push_str(&format!(
                "the next scheduled rotations: {}\n",
                fires.join(", ")
            )),
        }
        out.push_str(&format!(
            "keys are published at least {} before they sign (jwks.publish_ahead)\n",
            format_duration(p.publish_ahead)
        ));
        out.push_str(&format!(
            "verifiers may cache the JWKS for {} (Cache-Control max-age)\n",
            format_duration(p.jwks_cache_max_age)
        ));
        out.push_str(&format!(
            "a rotated-out key stays published {} (retention = signing_key.cache_max_age {} + \
             tokens.max_lifetime {} + tokens.clock_skew {} + propagation {})\n",
            format_duration(p.retention()),
            format_duration(p.signing_key_cache_max_age),
            format_duration(p.max_token_lifetime),
            format_duration(p.clock_skew),
            format_duration(p.propagation)
        ));
        out.push_str(&format!(
            "at most {} keys per algorithm are published at once\n",
            p.max_published_per_alg(now)
        ));
        let store = if self.store_url().is_some() {
            format!(
                "a shared PostgreSQL store (replicas; leader lease {}, polled every {})",
                format_duration(self.store.leader_lease.0),
                format_duration(self.store.poll_interval.0)
            )
        } else {
            self.keys_dir.display().to_string()
        };
        out.push_str(&format!(
            "public listener {}, admin listener {}; keys in {store}\n",
            self.listen.public, self.listen.admin
        ));
        Ok(out)
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
        assert_eq!(
            format!("{:?}", c.http.limits()),
            format!("{:?}", d.http.limits())
        );
        // An empty file is the default.
        let e = parse("").unwrap();
        assert_eq!(e.listen.public, c.listen.public);
        assert_eq!(format!("{:?}", e.policy(now()).unwrap()), format!("{dp:?}"));
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
    fn durations_refuse_bare_numbers_and_months() {
        for bad in ["90", "5M", "1month", "2y", "m", "", "1.5h", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        let e = parse("tokens:\n  clock_skew: 90\n").unwrap_err();
        assert!(
            e.contains("tokens.clock_skew") && e.contains("line 2"),
            "{e}"
        );
        let e = parse("tokens:\n  max_lifetime: 5M\n").unwrap_err();
        assert!(e.contains("\"M\"") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let e = parse("jwks:\n  cache_max_age: 5m\n  max_age: 5m\n").unwrap_err();
        assert!(e.contains("max_age") && e.contains("line"), "{e}");
        let e = parse("keyz_dir: x\n").unwrap_err();
        assert!(e.contains("keyz_dir"), "{e}");
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

    #[test]
    fn describe_speaks_the_timeline() {
        let c = parse(DEFAULT_YAML).unwrap();
        let d = c.describe(now()).unwrap();
        assert!(d.contains("published at least 6m before they sign"), "{d}");
        assert!(d.contains("stays published 1day 2m"), "{d}");
        assert!(d.contains("2026-11-27T03:00:00.000Z"), "{d}");
    }

    #[test]
    fn wrong_types_and_hostile_documents_are_refused() {
        assert!(parse("algorithms: ES256\n").is_err());
        assert!(
            parse("algorithms: [ES384]\n")
                .unwrap_err()
                .contains("ES384")
        );
        assert!(parse("- a\n- b\n").unwrap_err().contains("sequence"));
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

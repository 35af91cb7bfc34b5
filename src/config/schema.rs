//! The configuration's schema: the serde structs and their defaults, the one
//! source of them (`config/jwksd.yaml` restates them, and a test holds the
//! two equal; `http::Limits` takes its defaults from [`Http`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::HumanDuration;
use crate::keys::Alg;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub keys_dir: PathBuf,
    pub keys: Keys,
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
    pub events: Events,
    pub console: Console,
    pub log: Log,
}

/// Where new private keys are made and kept (`keys.backend`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keys {
    pub backend: Backend,
    /// The token, for `backend: pkcs11` and for as long as any published
    /// key lives in it.
    pub pkcs11: Option<Pkcs11>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In the store: key files or database rows, sealed when a master key
    /// is set.
    #[default]
    Software,
    /// Generated and used inside a PKCS#11 token; never leave it.
    Pkcs11,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Software => "software",
            Backend::Pkcs11 => "pkcs11",
        }
    }
}

/// A PKCS#11 token (docs/pkcs11.md).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11 {
    /// The module: the vendor's PKCS#11 shared library.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// A file holding the user PIN (one line, mode 600 or 400); or
    /// `JWKSD_PKCS11_PIN`, not both.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Logged-in sessions kept open: signatures made at once.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// How long an operation waits for a free session.
    #[serde(default = "default_session_wait")]
    pub session_wait: HumanDuration,
}

fn default_sessions() -> usize {
    4
}

fn default_session_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// Where keys live when several replicas share them.
#[derive(Clone, Debug, PartialEq, Deserialize)]
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
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct ConnectionString(pub String);

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionString(..)")
    }
}

/// TLS per listener; a listener without it speaks plain HTTP.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
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
            keys: Keys::default(),
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
            events: Events::default(),
            console: Console::default(),
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
            cors_allow_origins: vec!["*".to_owned()],
        }
    }
}

impl Default for SigningKey {
    fn default() -> Self {
        SigningKey {
            cache_max_age: HumanDuration(Duration::from_secs(60)),
            export: true,
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

/// Exactly one of the two may be set. A file that sets neither gets the
/// default, [`DEFAULT_SCHEDULE`], so that the defaults and an empty
/// `rotation` agree; setting `every` alone leaves `schedule` unset (in code,
/// clear `schedule` when setting `every`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "RotationFields")]
pub struct Rotation {
    pub schedule: Option<String>,
    pub every: Option<HumanDuration>,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            schedule: Some(DEFAULT_SCHEDULE.to_owned()),
            every: None,
        }
    }
}

/// `rotation` as written, before the default schedule fills an empty one.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RotationFields {
    schedule: Option<String>,
    every: Option<HumanDuration>,
}

impl From<RotationFields> for Rotation {
    fn from(r: RotationFields) -> Rotation {
        match r {
            RotationFields {
                schedule: None,
                every: None,
            } => Rotation::default(),
            RotationFields { schedule, every } => Rotation { schedule, every },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    pub max_lifetime: HumanDuration,
    pub clock_skew: HumanDuration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jwks {
    pub cache_max_age: HumanDuration,
    pub publish_ahead: Option<HumanDuration>,
    /// Origins whose browser scripts may read the JWK Set (CORS): `["*"]`
    /// (any), a list of `scheme://host[:port]` echoed back with
    /// `Vary: Origin`, or empty for no CORS headers.
    pub cors_allow_origins: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningKey {
    pub cache_max_age: HumanDuration,
    /// Whether `GET /v1/keys/active` hands out the private key (its JWK and
    /// PEM). `false` is sign-only: the answer carries the public JWK and
    /// the times, and auth servers sign through `/v1/sign`.
    pub export: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    #[serde(deserialize_with = "super::de::socket_addr")]
    pub public: SocketAddr,
    #[serde(deserialize_with = "super::de::socket_addr")]
    pub admin: SocketAddr,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Default: `<keys_dir>/operator.token`.
    pub operator_token_file: Option<PathBuf>,
    /// Default: `<keys_dir>/signer.token`.
    pub signer_token_file: Option<PathBuf>,
    /// Client networks allowed on the admin listener; empty allows all.
    /// Applied to the client address: the forwarded one behind
    /// `trusted_proxies`.
    pub allow: Vec<ipnet::IpNet>,
    /// Named clients: a clients file, or the list itself
    /// (docs/configuration.md, "Named clients").
    pub clients: Option<ClientsSetting>,
    /// Proxies whose `X-Forwarded-For` names the client address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `admin.clients`: the path of a clients file (`clients:` and the list,
/// managed by `jwksd client`), or the list inline.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientsSetting {
    File(PathBuf),
    Inline(Vec<crate::access::Client>),
}

impl<'de> Deserialize<'de> for ClientsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ClientsSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the path of a clients file, or a list of clients")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ClientsSetting, E> {
                Ok(ClientsSetting::File(PathBuf::from(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<ClientsSetting, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(ClientsSetting::Inline)
            }
        }
        d.deserialize_any(V)
    }
}

/// Limits both listeners apply to every connection.
#[derive(Clone, Debug, PartialEq, Deserialize)]
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

/// The source of the HTTP limits' defaults too (`http::Limits`).
impl Default for Http {
    fn default() -> Self {
        Http {
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            body_read_timeout: HumanDuration(Duration::from_secs(10)),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            max_connections_per_client: 64,
            write_timeout: HumanDuration(Duration::from_secs(10)),
            shutdown_grace: HumanDuration(Duration::from_secs(10)),
        }
    }
}

/// The live event stream and the webhooks (docs/events.md).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Connections following `GET /v1/events` at once; more are refused
    /// with 503.
    pub max_subscribers: usize,
    /// How often an idle stream sends a keep-alive comment.
    pub keepalive: HumanDuration,
    pub webhooks: Vec<Webhook>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            max_subscribers: 256,
            keepalive: HumanDuration(Duration::from_secs(15)),
            webhooks: Vec::new(),
        }
    }
}

/// The operator console on the admin listener (docs/console.md).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Console {
    /// Whether `/console/` is served.
    pub enabled: bool,
    /// How long a sign-in lasts at most, however active.
    pub session_lifetime: HumanDuration,
    /// A session unused this long ends.
    pub idle_timeout: HumanDuration,
    /// The origins the console is reached at (`https://keys.example.com`),
    /// when not the admin listener's own `Host` (behind a proxy that
    /// terminates TLS or rewrites `Host`). State-changing requests from any
    /// other origin are refused.
    pub origins: Vec<String>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            enabled: true,
            session_lifetime: HumanDuration(Duration::from_secs(3600)),
            idle_timeout: HumanDuration(Duration::from_secs(900)),
            origins: Vec::new(),
        }
    }
}

/// One webhook endpoint: the audit log's events POSTed to `url`, signed
/// per the Standard Webhooks specification.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Names the endpoint in metrics, logs and its delivery cursor; unique.
    pub name: String,
    /// `https://…`, or `http://` to a loopback address (or anywhere with
    /// `allow_http`).
    pub url: String,
    /// The signing secret, `whsec_` and base64 (as Standard Webhooks
    /// libraries print it), in a file of mode 600 or 400.
    pub secret_file: PathBuf,
    /// The events to deliver (`key.next`, `key.revoked`, …); empty: all.
    #[serde(default)]
    pub events: Vec<crate::lifecycle::event::Kind>,
    /// Allow `http://` to a host that is not loopback (not recommended:
    /// events and signatures cross the network in the clear).
    #[serde(default)]
    pub allow_http: bool,
    /// How long one delivery may take, connecting included.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: HumanDuration,
    /// Trust only this CA (PEM) for the endpoint's certificate [default:
    /// the system's CA certificates].
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_webhook_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
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

//! The command line: `serve` runs the daemon; `keys`, `rotate` and `revoke`
//! are clients of a running daemon's admin API; `check-config` works
//! offline; `client` (in `cli/clients.rs`) manages the clients file.
//!
//! Exit codes: 0 ok; 1 failed; 2 usage; 3 refused by the daemon (for
//! example a rotation before `publish_ahead`); 4 daemon unreachable.
//!
//! One file, over 500 lines: each command's arguments, call and printed
//! output side by side, because the output is a contract (operators'
//! scripts and the tests read it); the wire types are `api`'s.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

mod audit;
mod clients;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{KeysResponse, Revoked, RotateRequest, RotateResponse};

use crate::client::{Client, ClientError, Reply};
use crate::clock::{Clock, SystemClock};
use crate::config::env::{self, KeySource, MasterKeyError};
use crate::config::{Checked, Config, ConfigSource, LogFormat};
use crate::lifecycle::event::{Event, Kind};
use crate::lifecycle::{KeyRecord, KeyState, UpcomingEvent};
use crate::time::Timestamp;

#[derive(Parser, Debug)]
#[command(
    name = "jwksd",
    version,
    about = "Key management and JWKS rotation daemon"
)]
pub struct Cli {
    /// Configuration file [default: $JWKSD_CONFIG, else config/jwksd.yaml
    /// when present, else the built-in defaults]
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The admin-client options, also accepted before the command (as
    /// `jwksd --admin-url URL keys`, the form scripts written for earlier
    /// versions use); hidden here, shown with the commands that use them.
    #[command(flatten)]
    pub client: AdminClientTop,

    #[command(subcommand)]
    pub command: Command,
}

/// How an operator command reaches a running daemon's admin API: the
/// options of `keys`, `rotate` and `revoke`, under their own heading.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Admin client options (reaching a running daemon)")]
pub struct AdminClient {
    /// Admin API base URL [default: from listen.admin]
    #[arg(long, env = "JWKSD_ADMIN_URL", value_name = "URL")]
    pub admin_url: Option<String>,

    /// CA certificate (PEM) to verify an https admin URL with
    #[arg(long, env = "JWKSD_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for an admin listener that requires one
    #[arg(
        long,
        env = "JWKSD_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate
    #[arg(
        long,
        env = "JWKSD_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
}

/// [`AdminClient`] before the command: hidden from every help, without
/// the environment (which the command's own options read).
#[derive(Args, Debug, Clone, Default)]
pub struct AdminClientTop {
    #[arg(
        long = "admin-url",
        id = "top_admin_url",
        hide = true,
        value_name = "URL"
    )]
    pub admin_url: Option<String>,
    #[arg(long = "tls-ca", id = "top_tls_ca", hide = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    #[arg(
        long = "tls-client-cert",
        id = "top_tls_client_cert",
        hide = true,
        value_name = "FILE",
        requires = "top_tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,
    #[arg(
        long = "tls-client-key",
        id = "top_tls_client_key",
        hide = true,
        value_name = "FILE",
        requires = "top_tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
}

impl AdminClient {
    /// The options in effect: one given before the command (where scripts
    /// have always put them) wins, so that it also beats the environment
    /// variable the command's own option falls back to; then the command's
    /// own (given after it, or from the environment).
    fn or(&self, top: &AdminClientTop) -> AdminClient {
        let (cert, key) = match (&top.tls_client_cert, &top.tls_client_key) {
            (Some(c), Some(k)) => (Some(c.clone()), Some(k.clone())),
            _ => (self.tls_client_cert.clone(), self.tls_client_key.clone()),
        };
        AdminClient {
            admin_url: top.admin_url.clone().or_else(|| self.admin_url.clone()),
            tls_ca: top.tls_ca.clone().or_else(|| self.tls_ca.clone()),
            tls_client_cert: cert,
            tls_client_key: key,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// List every key with its state and timestamps, and what happens next.
    #[command(long_about = KEYS_ABOUT, after_help = TOKEN_HELP)]
    Keys {
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: AdminClient,
    },
    /// Rotate now: the next key becomes active.
    #[command(after_help = TOKEN_HELP)]
    Rotate {
        /// Only this algorithm (ES256, ES384, RS256, PS256, EdDSA or Ed25519) [default: every configured one]
        #[arg(long)]
        alg: Option<String>,
        /// Rotate even if the next key has not been published for
        /// publish_ahead (unsafe: verifiers with a cached JWKS reject new
        /// tokens until their cache expires).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: AdminClient,
    },
    /// Revoke a key: out of the JWKS at once. Revoking the active key
    /// promotes the next one immediately.
    #[command(after_help = TOKEN_HELP)]
    Revoke {
        /// The key's kid (a kid may begin with `-`: it is taken as the kid,
        /// not an option).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[command(flatten)]
        client: AdminClient,
    },
    /// Validate a configuration offline and print its timeline in words.
    CheckConfig,
    /// Re-seal every private key under a new master key (or seal keys kept
    /// in the clear). Run it with the daemon stopped; if interrupted, run it
    /// again. The current key comes from JWKSD_MASTER_KEY or master_key_file.
    Rekey {
        /// File holding the new master key [default: $JWKSD_NEW_MASTER_KEY]
        #[arg(long, value_name = "FILE")]
        new_master_key_file: Option<PathBuf>,
    },
    /// Work on key stores offline.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Manage the named clients of the admin API in their file
    /// (admin.clients): tokens, listing, removal.
    Client {
        #[command(subcommand)]
        command: clients::ClientCommand,
    },
    /// List the audit log of the configured store (who rotated or revoked
    /// which key, and when), or `verify` its hash chain.
    Audit(audit::AuditArgs),
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy every key and its state from one store to an empty one (a key
    /// directory or a postgres:// URL), e.g. to move a single host to
    /// replicas without a new key. Stop the daemons using either first.
    Copy {
        /// Source: a key directory or a PostgreSQL URL.
        #[arg(long)]
        from: String,
        /// Destination (must hold no keys): a key directory or a PostgreSQL URL.
        #[arg(long)]
        to: String,
    },
}

/// Failure with an exit code and a one-line reason.
struct Fail(u8, String);

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        Fail(4, e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig => check_config(&cli),
        Command::Serve => serve(&cli),
        Command::Rekey {
            ref new_master_key_file,
        } => rekey(&cli, new_master_key_file.as_deref()),
        Command::Store {
            command: StoreCommand::Copy { ref from, ref to },
        } => store_copy(&cli, from, to),
        Command::Client { ref command } => clients::run(&cli, command),
        Command::Audit(ref args) => audit::run(&cli, args),
        _ => operator(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprint!("{}", failure_text(&msg));
            ExitCode::from(code)
        }
    }
}

/// A failure as printed: `jwksd: ` and its first line, each further line
/// on its own, indented (not joined into one); nothing for an empty one
/// (`serve` with JSON logs, which logged it).
fn failure_text(msg: &str) -> String {
    let mut out = String::new();
    for (i, line) in msg.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let lead = if i == 0 { "jwksd: " } else { "  " };
        let _ = writeln!(out, "{lead}{}", line.trim_end());
    }
    out
}

fn load_config(cli: &Cli) -> Result<(Checked, ConfigSource), Fail> {
    Config::load(cli.config.as_deref(), SystemClock.now()).map_err(|e| Fail(1, e.to_string()))
}

fn check_config(cli: &Cli) -> Result<(), Fail> {
    let now = SystemClock.now();
    let (checked, source) = load_config(cli)?;
    let Checked {
        config,
        policy,
        warnings,
    } = checked;
    let text = config
        .describe(&policy, now)
        .map_err(|e| Fail(1, e.to_string()))?;
    // The clients file is part of the configuration: read and checked too.
    let clients = config.clients().map_err(|e| Fail(1, e.to_string()))?;
    println!("{source}: valid");
    print!("{text}");
    let replaced = |name: &str| clients.iter().any(|c| c.name == name);
    let builtins: Vec<&str> = ["operator", "signer"]
        .into_iter()
        .filter(|n| !replaced(n))
        .collect();
    println!(
        "Admin clients: {} named{}{}.",
        clients.len(),
        match &config.admin.clients {
            Some(crate::config::ClientsSetting::File(p)) => format!(" (in {})", p.display()),
            _ => String::new(),
        },
        if builtins.is_empty() {
            ", no built-in".to_owned()
        } else {
            format!(", built-in {}", builtins.join(" and "))
        }
    );
    let mut warnings = warnings;
    if let Some(crate::config::ClientsSetting::File(_)) = &config.admin.clients {
        warnings.extend(config.client_warnings(&clients));
    }
    for w in warnings {
        println!("warning: {w}");
    }
    // What the stored state was promised under earlier settings (directory
    // store only: check-config opens no database).
    if config.store_url().is_none() {
        match crate::store::fs::read_state(&config.keys_dir) {
            Ok(Some(state)) => {
                for d in crate::lifecycle::deferred(&state, &policy, now) {
                    println!("deferred: {d}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                println!("warning: cannot read the stored state to check deferred changes: {e}")
            }
        }
    }
    Ok(())
}

fn rekey(cli: &Cli, new_file: Option<&std::path::Path>) -> Result<(), Fail> {
    use crate::store::KeyStore;
    use crate::store::fs::FsStore;
    let config = load_config(cli)?.0.config;
    let current = config.master_key().map_err(|e| Fail(1, e.to_string()))?;
    // The file is handed to this one command: its mode is the operator's
    // business, unlike the daemon's master_key_file.
    let source = match new_file {
        Some(path) => KeySource::File {
            path,
            private: false,
        },
        None => KeySource::Env(env::NEW_MASTER_KEY),
    };
    let new = match env::open_master_key(&[source]) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return Err(Fail(
                2,
                "give the new master key with --new-master-key-file or JWKSD_NEW_MASTER_KEY".into(),
            ));
        }
        Err(MasterKeyError::File { path, source }) => {
            return Err(Fail(
                1,
                format!(
                    "cannot read the new master key {}: {source}",
                    path.display()
                ),
            ));
        }
        Err(MasterKeyError::Invalid(e)) => return Err(Fail(1, format!("new master key: {e}"))),
        Err(e) => return Err(Fail(1, e.to_string())),
    };
    let new_id = new.id().to_owned();
    // Keys not yet moved are sealed with the current master key, or, when
    // the configuration already names the new one, with the key given in
    // JWKSD_PREVIOUS_MASTER_KEY.
    let previous = match current {
        Some(c) if c.id() != new_id => Some(c),
        _ => env::previous_master_key().map_err(|e| Fail(1, e.to_string()))?,
    };
    let store: Box<dyn KeyStore> = match config.store_url() {
        Some(url) => Box::new(
            crate::store::postgres::PgStore::connect(&url, Some(new), previous)
                .map_err(|e| Fail(1, e.to_string()))?,
        ),
        None => Box::new(
            FsStore::open(&config.keys_dir, Some(new))
                .map_err(|e| Fail(1, e.to_string()))?
                .with_previous_master(previous),
        ),
    };
    let done = store
        .rekey(&mut |_| true)
        .map_err(|e| Fail(1, e.to_string()))?;
    let what = format!(
        "{} keys re-sealed, {} already sealed with master key {new_id}",
        done.rewritten, done.already
    );
    store
        .record(&[cli_entry(Event::store(Kind::Rekeyed, "rekey", what))])
        .map_err(|e| {
            Fail(
                1,
                format!("the keys were re-sealed, but the audit log could not record it: {e}"),
            )
        })?;
    let location = match store.shared() {
        true => store.location(),
        false => config.keys_dir.display().to_string(),
    };
    println!(
        "{location}: {} keys re-sealed, {} already sealed with the new master key {new_id}",
        done.rewritten, done.already
    );
    if store.shared() {
        println!(
            "now give every replica the new master key (JWKSD_MASTER_KEY or master_key_file) and restart them"
        );
    } else {
        println!(
            "now configure the new master key (JWKSD_MASTER_KEY or master_key_file) and start jwksd"
        );
    }
    Ok(())
}

/// An audit entry for a command run on the store, now.
fn cli_entry(event: Event) -> crate::audit::Entry {
    crate::audit::Entry {
        at: crate::time::Timestamp::from_system(std::time::SystemTime::now()),
        actor: crate::audit::Actor::cli(),
        event,
    }
}

fn is_postgres(location: &str) -> bool {
    location.starts_with("postgres://")
        || location.starts_with("postgresql://")
        || location.contains("host=")
        || location.contains("dbname=")
}

fn open_store(location: &str, config: &Config) -> Result<Box<dyn crate::store::KeyStore>, Fail> {
    use crate::store::fs::FsStore;
    use crate::store::postgres::PgStore;
    let fail = |e: String| Fail(1, format!("{}: {e}", redact(location)));
    let master = config.master_key().map_err(|e| fail(e.to_string()))?;
    let previous = env::previous_master_key().map_err(|e| fail(e.to_string()))?;
    if is_postgres(location) {
        Ok(Box::new(
            PgStore::connect(location, master, previous).map_err(|e| fail(e.to_string()))?,
        ))
    } else {
        Ok(Box::new(
            FsStore::open(location, master)
                .map_err(|e| fail(e.to_string()))?
                .with_previous_master(previous),
        ))
    }
}

/// A store location fit for messages: no password.
fn redact(location: &str) -> String {
    match (location.find("://"), location.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            format!("{}://...@{}", &location[..s], &location[at + 1..])
        }
        _ if location.contains("password") => "the PostgreSQL store".into(),
        _ => location.to_owned(),
    }
}

fn store_copy(cli: &Cli, from: &str, to: &str) -> Result<(), Fail> {
    let config = load_config(cli)?.0.config;
    let src = open_store(from, &config)?;
    let loaded = src
        .load()
        .map_err(|e| Fail(1, format!("{}: {e}", redact(from))))?;
    if loaded.state.is_empty() {
        return Err(Fail(
            1,
            format!("{} holds no keys: nothing to copy", redact(from)),
        ));
    }
    let dst = open_store(to, &config)?;
    let existing = dst
        .load()
        .map_err(|e| Fail(1, format!("{}: {e}", redact(to))))?;
    if !existing.state.is_empty() {
        return Err(Fail(
            1,
            format!(
                "{} already holds keys: copy only into an empty store (nothing was changed)",
                redact(to)
            ),
        ));
    }
    let mut copied = 0;
    for k in &loaded.state.keys {
        if let Some(key) = loaded.keys.get(&k.kid) {
            dst.stage(key)
                .map_err(|e| Fail(1, format!("{}: {e}", redact(to))))?;
            copied += 1;
        }
    }
    let mut state = loaded.state.clone();
    state.version = existing.state.version + 1;
    // The copy's first record names the source and where its audit log
    // ended, linking the two chains (docs/events.md).
    let head = src
        .audit_head()
        .map_err(|e| Fail(1, format!("{}: {e}", redact(from))))?;
    let what = format!(
        "copied from {} (state version {}, audit log at record {} {})",
        redact(from),
        loaded.state.version,
        head.seq,
        head.hash
    );
    dst.commit(
        &state,
        &[cli_entry(Event::store(Kind::Copied, "store copy", what))],
    )
    .map_err(|e| Fail(1, format!("{}: {e}", redact(to))))?;
    println!(
        "copied {} keys ({copied} private) and {} history entries from {} to {}",
        state.keys.len(),
        state.history.len(),
        redact(from),
        redact(to)
    );
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(1, format!("cannot start the async runtime: {e}")))
}

fn serve(cli: &Cli) -> Result<(), Fail> {
    let (checked, source) = load_config(cli)?;
    let checked_format = checked.config.log.format;
    init_logging(checked_format);
    let rt = runtime()?;
    let result = rt.block_on(crate::server::run(checked, source));
    // What may still run on the runtime's blocking threads once `run`
    // returned (commits are awaited; key generations run on threads of
    // their own and stage nothing more): giving up the leader lease, which
    // has its own deadline. Bounded in case something else hangs.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
    // Said once: in JSON logs as an event, else as the command line's own
    // failure line (not both, and never the cause twice).
    result.map_err(|e| match checked_format {
        LogFormat::Json => {
            tracing::error!(error = %e, "jwksd cannot start");
            Fail(1, String::new())
        }
        LogFormat::Text => Fail(1, format!("cannot start: {e}")),
    })
}

/// How long `serve` waits at exit for blocking threads still running:
/// longer than giving up the lease may take (its deadline is 2 s).
const RUNTIME_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// The admin API base URL: `--admin-url`, or `listen.admin` (a wildcard
/// address is reached on loopback).
fn admin_base(client: &AdminClient, config: &Config) -> String {
    if let Some(u) = &client.admin_url {
        return u.trim_end_matches('/').to_owned();
    }
    let mut addr = config.listen.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if config.tls.admin.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
}

fn operator(cli: &Cli) -> Result<(), Fail> {
    let config = load_config(cli)?.0.config;
    let token = crate::http::auth::operator_token(&config).map_err(|e| {
        Fail(
            1,
            format!(
                "{e} (the operator token is needed: jwksd serve creates it at its first start; \
                 or set JWKSD_OPERATOR_TOKEN or admin.operator_token_file)"
            ),
        )
    })?;
    let options = match &cli.command {
        Command::Keys { client, .. }
        | Command::Rotate { client, .. }
        | Command::Revoke { client, .. } => client.or(&cli.client),
        _ => AdminClient::default().or(&cli.client),
    };
    let base = admin_base(&options, &config);
    let rt = runtime()?;
    let client = if options.tls_ca.is_some() || options.tls_client_cert.is_some() {
        let tls = crate::tls::client_config(
            options.tls_ca.as_deref(),
            options
                .tls_client_cert
                .as_deref()
                .zip(options.tls_client_key.as_deref()),
        )
        .map_err(|e| Fail(1, e.to_string()))?;
        Client::with_tls(tls, std::time::Duration::from_secs(150))
    } else {
        Client::default()
    };
    rt.block_on(async {
        match &cli.command {
            Command::Keys { json, .. } => {
                let r = client.get(&format!("{base}/v1/keys"), Some(&token)).await?;
                if *json {
                    // The daemon's JSON re-indented, whatever it holds: a
                    // generic value, not the typed answer.
                    let v: Value = expect_ok(&r)?;
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                } else {
                    let keys: KeysResponse = expect_ok(&r)?;
                    print!("{}", keys_table(&keys));
                }
                Ok(())
            }
            Command::Rotate { alg, force, .. } => {
                let body = RotateRequest { alg: alg.clone(), force: *force };
                let r = client.post_json(&format!("{base}/v1/rotate"), Some(&token), &body).await?;
                let answer: RotateResponse = expect_ok(&r)?;
                for rot in &answer.rotated {
                    println!(
                        "{}: {} is active (was {}){}",
                        rot.alg,
                        rot.kid,
                        rot.previous_kid,
                        if rot.forced {
                            " [forced: unsafe]"
                        } else {
                            ""
                        }
                    );
                }
                Ok(())
            }
            Command::Revoke { kid, .. } => {
                let r = client
                    .send(hyper::Method::POST, &format!("{base}/v1/keys/{kid}/revoke"), Some(&token), &[], None)
                    .await?;
                let v: Revoked = expect_ok(&r)?;
                println!(
                    "{} revoked (was {}); it is out of the JWKS now, verifiers drop it when their cache expires",
                    v.kid, v.was
                );
                if let Some(p) = &v.promoted {
                    println!("{p} is the new active key");
                }
                Ok(())
            }
            Command::Serve
            | Command::CheckConfig
            | Command::Rekey { .. }
            | Command::Store { .. }
            | Command::Client { .. }
            | Command::Audit(_) => Ok(()),
        }
    })
}

fn expect_ok<T: DeserializeOwned>(r: &Reply) -> Result<T, Fail> {
    if r.status.is_success() {
        return r.parse().ok_or_else(|| {
            Fail(
                1,
                "the daemon answered with something that is not JSON".into(),
            )
        });
    }
    let code = if r.status.as_u16() == 409 || r.status.as_u16() == 404 || r.status.as_u16() == 400 {
        3
    } else {
        1
    };
    Err(Fail(code, format!("{} ({})", r.error_message(), r.status)))
}

/// Under the admin-client options: where the token they send comes from.
const TOKEN_HELP: &str = "The operator token is read from JWKSD_OPERATOR_TOKEN, else from \
admin.operator_token_file (default: <keys_dir>/operator.token).";

/// `jwksd keys --help`: the table, its order and its columns.
const KEYS_ABOUT: &str = "\
List every key with its state and timestamps, and what happens next.

Order (stable: scripts may rely on it): by algorithm (ES256, ES384, RS256,
PS256, EdDSA, Ed25519), then by state (next, active, retiring, then retired and revoked), then by
creation time, oldest first.

Columns: CREATED, ACTIVATED, RETIRE-AT (when a published key is scheduled
to leave the JWKS), RETIRED/REVOKED-AT (when a retired or revoked key left
it) and CUSTODY (where its private key lives: `software`, in the store, or
`pkcs11:<token label>` for a key inside a PKCS#11 token). Times in UTC; `-` when not set; a `*` after the state marks a key
activated before publish_ahead. `--json` prints the admin API's answer
as it is.";

/// Where a state sorts in the table: published keys in the order they
/// live, then the ones gone.
fn state_rank(s: KeyState) -> u8 {
    match s {
        KeyState::Next => 0,
        KeyState::Active => 1,
        KeyState::Retiring => 2,
        KeyState::Retired | KeyState::Revoked => 3,
    }
}

/// One table row: cells padded to `widths`, no trailing spaces.
fn row(cells: &[&str], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let _ = write!(line, "{cell:<w$}");
    }
    line.trim_end().to_owned()
}

/// Renders `GET /v1/keys` as a table, in the order `KEYS_ABOUT` states.
pub fn keys_table(v: &KeysResponse<'_>) -> String {
    let short = |t: Option<Timestamp>| -> String {
        t.map(|t| {
            let s = t.to_rfc3339();
            s.get(..19).unwrap_or(&s).replace('T', " ")
        })
        .unwrap_or_else(|| "-".into())
    };
    // ALG as wide as the longest name shown (`Ed25519`), at least `RS256`.
    let alg_width = v
        .keys
        .iter()
        .map(|k| k.as_ref().alg)
        .chain(v.upcoming.iter().map(|u| u.alg))
        .map(|a| a.as_str().len())
        .max()
        .unwrap_or(0)
        .max(5);
    let widths: [usize; 8] = [43, alg_width, 9, 19, 19, 19, 19, 0];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        row(
            &[
                "KID",
                "ALG",
                "STATE",
                "CREATED",
                "ACTIVATED",
                "RETIRE-AT",
                "RETIRED/REVOKED-AT",
                "CUSTODY"
            ],
            &widths
        )
    );
    let mut keys: Vec<&KeyRecord> = v.keys.iter().map(|k| k.as_ref()).collect();
    keys.sort_by(|a, b| {
        (a.alg, state_rank(a.state), a.created_at, a.kid.as_str()).cmp(&(
            b.alg,
            state_rank(b.state),
            b.created_at,
            b.kid.as_str(),
        ))
    });
    for k in keys {
        let (retire, ended) = match k.state {
            KeyState::Retired | KeyState::Revoked => (None, k.ended_at),
            _ => (k.retire_at, None),
        };
        let mut state = k.state.as_str().to_owned();
        if k.early_activation.is_some() {
            state.push('*');
        }
        let _ = writeln!(
            out,
            "{}",
            row(
                &[
                    k.kid.as_str(),
                    k.alg.as_str(),
                    &state,
                    &short(Some(k.created_at)),
                    &short(k.activated_at),
                    &short(retire),
                    &short(ended),
                    &k.custody.to_string(),
                ],
                &widths
            )
        );
    }
    if v.upcoming.is_empty() {
        let _ = writeln!(out, "\nnext transition: none scheduled");
    } else {
        let _ = writeln!(out, "\nnext transitions:");
        for u in v.upcoming.iter() {
            let what = match u.event {
                UpcomingEvent::Rotation => "becomes active (scheduled rotation)",
                UpcomingEvent::RotationWaitingForPublishAhead => {
                    "becomes active (rotation due, waiting for publish_ahead)"
                }
                UpcomingEvent::Retire => "leaves the JWKS (retired)",
            };
            let _ = writeln!(
                out,
                "  {}  {:<alg_width$}  {}  {}",
                short(Some(u.at)),
                u.alg.as_str(),
                u.kid.as_str(),
                what
            );
        }
    }
    let _ = writeln!(
        out,
        "(times in UTC; * = activated before publish_ahead: first key, forced or emergency)"
    );
    out
}

#[cfg(test)]
mod tests {

    /// Kids are base64url: one may begin with `-`, and must still name the
    /// key to revoke (found by a test whose random kid did).
    #[test]
    fn a_kid_beginning_with_a_hyphen_is_the_kid() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["jwksd", "revoke", "-tAbc_d"]).unwrap();
        match cli.command {
            Command::Revoke { kid, .. } => assert_eq!(kid, "-tAbc_d"),
            other => panic!("{other:?}"),
        }
        // The same for the audit log's filter (found the same way).
        let cli = Cli::try_parse_from(["jwksd", "audit", "--kid", "-7Abc_d"]).unwrap();
        match cli.command {
            Command::Audit(a) => assert_eq!(a.kid.as_deref(), Some("-7Abc_d")),
            other => panic!("{other:?}"),
        }
    }
    use super::*;

    const KEYS: &str = r#"{"version":7,"keys":[
      {"kid":"active1","alg":"ES256","state":"active","public":{"kty":"EC","crv":"P-256","x":"a","y":"b"},
       "created_at":"2026-01-01T00:00:00.123Z","published_at":"2026-01-01T00:00:00Z","activated_at":"2026-01-02T10:11:12Z",
       "retire_at":"2026-03-01T00:00:00Z","early_activation":"bootstrap","transitions":[]},
      {"kid":"next1","alg":"RS256","state":"next","public":{"kty":"RSA","n":"n","e":"AQAB"},
       "created_at":"2026-01-05T00:00:00Z","published_at":"2026-01-05T00:00:00Z",
       "custody":{"backend":"pkcs11","token_label":"hsm"},"transitions":[]},
      {"kid":"old1","alg":"ES256","state":"revoked","public":{"kty":"EC","crv":"P-256","x":"a","y":"b"},
       "created_at":"2025-12-01T00:00:00Z","published_at":"2025-12-01T00:00:00Z","retire_at":"2026-02-01T00:00:00Z",
       "ended_at":"2025-12-24T18:00:00Z","transitions":[]},
      {"kid":"next2","alg":"ES256","state":"next","public":{"kty":"EC","crv":"P-256","x":"a","y":"b"},
       "created_at":"2026-01-06T00:00:00Z","published_at":"2026-01-06T00:00:00Z","transitions":[]},
      {"kid":"ret1","alg":"ES256","state":"retiring","public":{"kty":"EC","crv":"P-256","x":"a","y":"b"},
       "created_at":"2025-12-20T00:00:00Z","published_at":"2025-12-20T00:00:00Z","activated_at":"2025-12-21T00:00:00Z",
       "retire_at":"2026-01-03T00:00:00Z","transitions":[]},
      {"kid":"gone1","alg":"ES256","state":"retired","public":{"kty":"EC","crv":"P-256","x":"a","y":"b"},
       "created_at":"2025-11-01T00:00:00Z","published_at":"2025-11-01T00:00:00Z","activated_at":"2025-11-02T00:00:00Z",
       "retire_at":"2025-12-01T00:00:00Z","ended_at":"2025-12-01T00:00:01Z","transitions":[]}],
      "upcoming":[{"at":"2026-02-01T00:00:00Z","alg":"ES256","kid":"next1","event":"rotation"},
        {"at":"2026-02-02T00:00:00Z","alg":"RS256","kid":"next1","event":"rotation_waiting_for_publish_ahead"},
        {"at":"2026-03-01T00:00:00Z","alg":"ES256","kid":"active1","event":"retire"}]}"#;

    #[test]
    fn failures_print_each_line_on_its_own() {
        assert_eq!(
            failure_text("cannot connect\nset sslmode=verify-full\n"),
            "jwksd: cannot connect\n  set sslmode=verify-full\n"
        );
        assert_eq!(failure_text("one"), "jwksd: one\n");
        // Already said in the log.
        assert_eq!(failure_text(""), "");
    }

    /// The table: by algorithm, then state (next, active, retiring, then
    /// retired and revoked), then creation time; no trailing spaces; a
    /// retired or revoked key's end under a column that says so.
    #[test]
    fn the_keys_table_has_a_stable_order_and_true_columns() {
        let keys: KeysResponse = serde_json::from_str(KEYS).unwrap();
        let expected = [
            "KID                                          ALG    STATE      CREATED              ACTIVATED            RETIRE-AT            RETIRED/REVOKED-AT   CUSTODY",
            "next2                                        ES256  next       2026-01-06 00:00:00  -                    -                    -                    software",
            "active1                                      ES256  active*    2026-01-01 00:00:00  2026-01-02 10:11:12  2026-03-01 00:00:00  -                    software",
            "ret1                                         ES256  retiring   2025-12-20 00:00:00  2025-12-21 00:00:00  2026-01-03 00:00:00  -                    software",
            "gone1                                        ES256  retired    2025-11-01 00:00:00  2025-11-02 00:00:00  -                    2025-12-01 00:00:01  software",
            "old1                                         ES256  revoked    2025-12-01 00:00:00  -                    -                    2025-12-24 18:00:00  software",
            "next1                                        RS256  next       2026-01-05 00:00:00  -                    -                    -                    pkcs11:hsm",
            "",
            "next transitions:",
            "  2026-02-01 00:00:00  ES256  next1  becomes active (scheduled rotation)",
            "  2026-02-02 00:00:00  RS256  next1  becomes active (rotation due, waiting for publish_ahead)",
            "  2026-03-01 00:00:00  ES256  active1  leaves the JWKS (retired)",
            "(times in UTC; * = activated before publish_ahead: first key, forced or emergency)",
        ];
        let table = keys_table(&keys);
        assert_eq!(table, expected.join("\n") + "\n");
        assert!(table.lines().all(|l| !l.ends_with(' ')), "{table}");
        // The order is the keys', not the answer's.
        let mut reversed: KeysResponse = serde_json::from_str(KEYS).unwrap();
        reversed.keys.reverse();
        assert_eq!(keys_table(&reversed), table);
        let empty: KeysResponse =
            serde_json::from_str(r#"{"version":1,"keys":[],"upcoming":[]}"#).unwrap();
        assert!(keys_table(&empty).contains("\nnext transition: none scheduled\n"));
        // A longer algorithm name widens ALG for every row: STATE starts
        // at the same column in each.
        let longer = KEYS.replacen(r#""alg":"RS256""#, r#""alg":"Ed25519""#, 1);
        assert_ne!(longer, KEYS);
        let longer: KeysResponse = serde_json::from_str(&longer).unwrap();
        let table = keys_table(&longer);
        let column = |line: &str, word: &str| line.find(word);
        let lines: Vec<&str> = table.lines().take(7).collect();
        let state = column(lines[0], "STATE").unwrap();
        for line in &lines[1..] {
            let cell = &line[state..];
            assert!(
                ["next ", "active", "retiring", "retired", "revoked"]
                    .iter()
                    .any(|s| cell.starts_with(s)),
                "{table}"
            );
        }
        assert!(table.contains("Ed25519  next "), "{table}");
    }
}

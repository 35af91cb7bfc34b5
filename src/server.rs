//! The process: the daemon's core and its two HTTP listeners, started
//! together and stopped in order. The one module that knows both `daemon`
//! and `http`, so that neither imports the other's internals: `http` holds
//! a [`daemon::Handle`], `daemon` knows nothing of HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{Clock, SteadyClock, SystemClock, os_monotonic};
use crate::config::env::{MasterKeyError, previous_master_key};
use crate::config::{Checked, Config, ConfigSource};
use crate::daemon::{self, Handle};
use crate::http;
use crate::http::admin::AdminApi;
use crate::http::auth::{TokenError, builtin_clients};
use crate::http::public::PublicApi;
use crate::keyring::Keyring;
use crate::lifecycle::Policy;
use crate::reload::ReloadingClients;
use crate::store::KeyStore;
use crate::store::StoreError;
use crate::store::fs::FsStore;
use crate::store::postgres::PgStore;
use crate::tls::ReloadingTls;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error("cannot listen on {addr} ({which}): {source}")]
    Bind {
        which: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    // Transparent: "{0}" with #[from] would also give it as the source,
    // and a cause chain would print it twice.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("start-up task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The PKCS#11 token of `keys.pkcs11`.
    #[error(transparent)]
    Pkcs11(#[from] crate::keys::pkcs11::TokenError),
    #[error(transparent)]
    Webhook(#[from] crate::daemon::webhooks::WebhookError),
}

/// What a daemon runs on. The store and the wall clock may be injected
/// (tests do); by default they come from the configuration and the system.
/// Either way the daemon reads time through a [`SteadyClock`].
pub struct Options {
    pub config: Config,
    /// The policy `config` sets, checked when it was parsed.
    pub policy: Policy,
    pub source: ConfigSource,
    pub warnings: Vec<String>,
    pub wall: Option<Arc<dyn Clock>>,
    pub store: Option<Box<dyn KeyStore>>,
}

impl Options {
    pub fn new(checked: Checked, source: ConfigSource) -> Options {
        Options {
            config: checked.config,
            policy: checked.policy,
            source,
            warnings: checked.warnings,
            wall: None,
            store: None,
        }
    }
}

/// A started daemon: its bound addresses and the handle to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub handle: Handle,
    shutdown: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, then stops the
    /// scheduler once its current step is done (a commit is never cut
    /// short).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), self.scheduler).await;
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(checked: Checked, source: ConfigSource) -> Result<(), DaemonError> {
    // Listening for SIGTERM before "listening" is logged: a signal sent
    // once that line appears stops the daemon in order, not by default.
    let signals = wait_for_signal();
    let running = start(Options::new(checked, source)).await?;
    signals.await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the store, starts the daemon's core, binds both listeners and
/// starts serving.
pub async fn start(opts: Options) -> Result<Running, DaemonError> {
    let Options {
        config,
        policy,
        source,
        warnings,
        wall,
        store,
    } = opts;
    // Their secrets are read before anything else starts: a bad one stops
    // the start-up.
    let webhooks = daemon::webhooks::load(&config.events.webhooks)?;
    let steady = Arc::new(SteadyClock::new(
        wall.unwrap_or_else(|| Arc::new(SystemClock)),
        os_monotonic(),
        SteadyClock::threshold_for(config.tokens.clock_skew.0),
    ));
    let clock: Arc<dyn Clock> = steady.clone();
    let policy = Arc::new(policy);
    tracing::info!(config = %source, "starting jwksd {}", env!("CARGO_PKG_VERSION"));
    for w in &warnings {
        tracing::warn!(config = %source, "{w}");
    }

    let store_url = config.store_url();
    let store: Box<dyn KeyStore> = match store {
        Some(s) => s,
        None => open_store(&config, store_url.clone()).await?,
    };
    let token = open_token(&config).await?;
    let read_at = std::time::Instant::now();
    let (ring, notes) = tokio::task::spawn_blocking(move || Keyring::load_with(store, token))
        .await
        .map_err(|e| DaemonError::Join(e.to_string()))??;
    for n in &notes {
        tracing::warn!(store = %ring.store_location(), "{n}");
    }
    for d in crate::lifecycle::deferred(ring.state(), &policy, clock.now()) {
        tracing::info!(config = %source, field = d.field, until = ?d.until.map(|t| t.to_rfc3339()), kid = d.kid.as_ref().map(|k| k.as_str()), detail = %d, "change deferred");
    }
    tracing::info!(
        store = %ring.store_location(),
        keys = ring.state().published().count(),
        version = ring.state().version,
        "key store loaded"
    );

    // Every file is checked before anything new is created.
    let tls = |listener, files: &Option<_>| {
        files
            .clone()
            .map(|f| ReloadingTls::load(listener, f))
            .transpose()
    };
    let public_tls = tls("public", &config.tls.public)?;
    let admin_tls = tls("admin", &config.tls.admin)?;
    let configured = config.clients()?;
    let clients_source = config.clients_source(match &source {
        ConfigSource::File(p) => Some(p.as_path()),
        ConfigSource::BuiltIn => None,
    });
    if matches!(
        clients_source,
        crate::config::clients::ClientsSource::File(_)
    ) {
        // Inline lists were warned about with the configuration.
        for w in config.client_warnings(&configured) {
            tracing::warn!("{w}");
        }
    }
    let builtins = builtin_clients(
        &config.operator_token_file(),
        &config.signer_token_file(),
        |name| configured.iter().any(|c| c.name == name),
    )?;
    let from = |name: &str| {
        builtins
            .iter()
            .find(|(c, _)| c.name == name)
            .map_or("(replaced by a named client)".to_owned(), |(_, f)| {
                f.to_string()
            })
    };
    tracing::info!(operator = %from("operator"), signer = %from("signer"), "admin tokens loaded");
    let builtins: Vec<_> = builtins.into_iter().map(|(c, _)| c).collect();
    let named = configured.len();
    let clients = crate::access::Clients::new(configured, builtins.clone()).map_err(|message| {
        crate::config::ConfigError::Invalid {
            source_name: source.to_string(),
            message,
        }
    })?;
    tracing::info!(clients = clients.len(), named, "admin clients loaded");

    let bind = |which: &'static str, addr: SocketAddr| async move {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                which,
                addr,
                source,
            })?;
        let local = l.local_addr().map_err(|source| DaemonError::Bind {
            which,
            addr,
            source,
        })?;
        Ok::<_, DaemonError>((l, local))
    };
    let (public, public_addr) = bind("listen.public", config.listen.public).await?;
    let (admin, admin_addr) = bind("listen.admin", config.listen.admin).await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = http::Limits::from(&config.http);
    let daemon::Core { handle, scheduler } = daemon::spawn(
        &config,
        policy.clone(),
        steady,
        daemon::Start {
            ring,
            read_at,
            store_url,
            webhooks,
        },
        shutdown_rx.clone(),
    );
    let reloadable: Vec<Arc<ReloadingTls>> =
        public_tls.iter().chain(admin_tls.iter()).cloned().collect();
    let clients = ReloadingClients::new(clients_source, builtins, clients, handle.clone());
    // Always: without a handler, SIGHUP would end the process.
    tokio::spawn(crate::reload::run(
        reloadable,
        clients.clone(),
        shutdown_rx.clone(),
    ));
    let public_api = Arc::new(PublicApi::new(
        handle.clone(),
        http::cors::Cors::new(&config.jwks.cors_allow_origins),
    ));
    let public_task = tokio::spawn(http::serve(
        public,
        limits,
        public_tls.clone(),
        shutdown_rx.clone(),
        move |req, _conn| http::public::handle(public_api.clone(), req),
    ));
    let api = Arc::new(AdminApi::new(
        handle.clone(),
        clients.current(),
        config.admin.allow.clone(),
        config.admin.trusted_proxies.clone(),
        limits,
        http::admin::console::Settings::from_config(&config.console, admin_tls.is_some()),
    ));
    let weak = Arc::downgrade(&api);
    clients.after_reload(move || {
        if let Some(api) = weak.upgrade() {
            api.forget_removed_clients();
        }
    });
    let admin_task = tokio::spawn(http::serve(
        admin,
        limits,
        admin_tls.clone(),
        shutdown_rx,
        move |req, conn| http::admin::handle(api.clone(), req, conn),
    ));
    tracing::info!(
        public = %public_addr,
        admin = %admin_addr,
        public_tls = public_tls.is_some(),
        admin_tls = admin_tls.is_some(),
        admin_client_certificates = admin_tls.as_ref().is_some_and(|t| t.requires_client_certificates()),
        "listening"
    );
    Ok(Running {
        public_addr,
        admin_addr,
        handle,
        shutdown: shutdown_tx,
        servers: vec![public_task, admin_task],
        scheduler,
    })
}

/// Opens the store the configuration names: the PostgreSQL store when a
/// connection string is set, the key directory otherwise, each with its
/// master keys (current and previous).
/// How long opening the token (loading the module, logging in, opening the
/// sessions) may take at start-up.
const TOKEN_OPEN_DEADLINE: Duration = Duration::from_secs(30);

/// Opens the token of `keys.pkcs11`, when configured (with `keys.backend:
/// software` too: keys made in it before a move stay there until they
/// retire). Its errors are start-up errors (runbook.md, "Start-up errors of
/// a token").
async fn open_token(
    config: &Config,
) -> Result<Option<Arc<crate::keys::pkcs11::Token>>, DaemonError> {
    use crate::keys::pkcs11::{Pin, Token, TokenConfig};
    let Some(t) = config.keys.pkcs11.clone() else {
        return Ok(None);
    };
    let label = t.token_label.clone();
    let algorithms = config.algorithms.clone();
    let opening = tokio::task::spawn_blocking(move || {
        let pin = Pin::resolve(t.pin_file.as_deref())?;
        let mut c = TokenConfig::new(&t.module, &t.token_label, pin);
        c.pin_file = t.pin_file.clone();
        c.sessions = t.sessions;
        c.session_wait = t.session_wait.0;
        let token = Token::open(c)?;
        token.supports(&algorithms)?;
        Ok::<_, crate::keys::pkcs11::TokenError>(token)
    });
    // A module that hangs (a network HSM that does not answer) fails the
    // start instead of holding it.
    let token = tokio::time::timeout(TOKEN_OPEN_DEADLINE, opening)
        .await
        .map_err(|_| {
            DaemonError::Pkcs11(crate::keys::pkcs11::TokenError::TokenGone {
                label,
                op: "open",
                reason: format!("no answer within {TOKEN_OPEN_DEADLINE:?}"),
            })
        })?
        .map_err(|e| DaemonError::Join(e.to_string()))??;
    tracing::info!(
        custody = %format!("pkcs11:{}", token.label()),
        module = %token.module().display(),
        sessions = token.sessions(),
        backend = config.keys.backend.as_str(),
        "PKCS#11 token opened"
    );
    Ok(Some(token))
}

async fn open_store(
    config: &Config,
    store_url: Option<String>,
) -> Result<Box<dyn KeyStore>, DaemonError> {
    Ok(match store_url {
        Some(url) => {
            let master = config.master_key()?;
            if let Some(m) = &master {
                tracing::info!(
                    master_key_id = m.id(),
                    "private keys are sealed before they reach the database"
                );
            }
            let previous = previous_master_key()?;
            tokio::task::spawn_blocking(move || PgStore::connect(&url, master, previous))
            .await
            .map_err(|e| DaemonError::Join(e.to_string()))?
            .map(|s| {
                tracing::info!(store = %s.location(), replica = s.holder(), "shared PostgreSQL store");
                Box::new(s) as Box<dyn KeyStore>
            })?
        }
        None => {
            let master = config.master_key()?;
            match &master {
                Some(m) => {
                    tracing::info!(master_key_id = m.id(), "private keys are sealed at rest")
                }
                // With a token, new keys are not in the store at all; what
                // may be is a key from before a move to it.
                None if config.keys.backend == crate::config::Backend::Pkcs11 => tracing::info!(
                    "no master key configured: new keys live in the PKCS#11 token; a key still in \
                 the key directory from before the move to it is stored in the clear (mode 600)"
                ),
                None => tracing::warn!(
                    "no master key configured: private keys are stored in the clear (mode 600); \
                 set JWKSD_MASTER_KEY or master_key_file to seal them"
                ),
            }
            let previous = previous_master_key()?;
            let dir = config.keys_dir.clone();
            tokio::task::spawn_blocking(move || {
                FsStore::open(dir, master).map(|s| s.with_previous_master(previous))
            })
            .await
            .map_err(|e| DaemonError::Join(e.to_string()))?
            .map(|s| Box::new(s) as Box<dyn KeyStore>)?
        }
    })
}

/// Registers for SIGTERM and SIGINT now; the future ends at the first.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match signals {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

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
use crate::http::auth::{TokenError, Tokens};
use crate::http::public::PublicApi;
use crate::keyring::Keyring;
use crate::lifecycle::Policy;
use crate::store::KeyStore;
use crate::store::StoreError;
use crate::store::fs::FsStore;
use crate::store::postgres::PgStore;
use crate::tls::ReloadingTls;

/// How often TLS certificate files are checked for changes.
const TLS_WATCH_INTERVAL: Duration = Duration::from_secs(5);

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
    let read_at = std::time::Instant::now();
    let (ring, notes) = tokio::task::spawn_blocking(move || Keyring::load(store))
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
    let (tokens, sources) =
        Tokens::load_or_create(&config.operator_token_file(), &config.signer_token_file())?;
    tracing::info!(operator = %sources[0], signer = %sources[1], "admin tokens loaded");

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
        ring,
        read_at,
        store_url,
        shutdown_rx.clone(),
    );
    let reloadable: Vec<Arc<ReloadingTls>> =
        public_tls.iter().chain(admin_tls.iter()).cloned().collect();
    // Always: without a handler, SIGHUP would end the process.
    tokio::spawn(reload_tls(reloadable, shutdown_rx.clone()));
    let public_api = Arc::new(PublicApi::new(
        handle.clone(),
        http::cors::Cors::new(&config.jwks.cors_allow_origins),
    ));
    let public_task = tokio::spawn(http::serve(
        public,
        limits,
        public_tls.clone(),
        shutdown_rx.clone(),
        move |req, _peer| http::public::handle(public_api.clone(), req),
    ));
    let api = Arc::new(AdminApi::new(
        handle.clone(),
        tokens,
        config.admin.allow.clone(),
        limits,
    ));
    let admin_task = tokio::spawn(http::serve(
        admin,
        limits,
        admin_tls.clone(),
        shutdown_rx,
        move |req, peer| http::admin::handle(api.clone(), req, peer),
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

/// Reloads TLS certificates on SIGHUP and when their files change. Without
/// TLS, SIGHUP is logged and otherwise ignored.
async fn reload_tls(listeners: Vec<Arc<ReloadingTls>>, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; certificates reload on file change only");
            None
        }
    };
    let mut tick = tokio::time::interval(TLS_WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                if listeners.is_empty() {
                    tracing::info!("SIGHUP: no TLS certificate to reload; the configuration is read at start only");
                }
                for l in &listeners {
                    l.reload_logged("SIGHUP");
                }
            }
            _ = tick.tick() => {
                // File stats and PEM parsing: off the async workers.
                let ls = listeners.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for l in &ls {
                        l.reload_if_changed();
                    }
                })
                .await;
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
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

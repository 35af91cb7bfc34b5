//! The imperative shell around the lifecycle core: loads the store, runs the
//! scheduler and both listeners, and shuts down cleanly on SIGTERM/SIGINT.
//!
//! - `scheduler`: the single task that changes keys.
//! - `snapshot`: the immutable view the HTTP handlers read.

pub mod scheduler;
pub mod snapshot;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::header::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ConfigSource};
use crate::http::admin::AdminApi;
use crate::http::auth::{TokenError, Tokens};
use crate::http::{self, Limits};
use crate::keyring::Keyring;
use crate::lifecycle::{KeyState, Policy};
use crate::metrics::{AlgLabels, Metrics};
use crate::store::fs::FsStore;
use crate::store::{MasterKey, SealError, StoreError};
use crate::time::{Clock, SystemClock, Timestamp};
pub use snapshot::Snapshot;

/// What the HTTP handlers share with the scheduler.
pub struct Shared {
    pub snapshot: ArcSwapOption<Snapshot>,
    pub metrics: Metrics,
    pub policy: Arc<Policy>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_cache_control: HeaderValue,
    pub signing_key_cache_control: HeaderValue,
    pub commands: mpsc::Sender<scheduler::Command>,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    scheduler_running: AtomicBool,
    lifecycle_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn scheduler_running(&self) -> bool {
        self.scheduler_running.load(Ordering::Acquire)
    }

    fn set_scheduler_running(&self, v: bool) {
        self.scheduler_running.store(v, Ordering::Release);
    }

    /// The last lifecycle failure, while it is not resolved.
    pub fn lifecycle_error(&self) -> Option<String> {
        self.lifecycle_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_lifecycle_error(&self, e: Option<String>) {
        *self
            .lifecycle_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = e;
    }

    /// Sets the gauges that depend on the time from the current snapshot.
    pub fn refresh_gauges(&self) {
        let now = self.clock.now();
        let guard = self.snapshot.load();
        let Some(snap) = guard.as_ref() else { return };
        for &alg in &self.policy.algorithms {
            if let Some(a) = snap.state.active(alg).and_then(|k| k.activated_at) {
                self.metrics
                    .active_key_age
                    .get_or_create(&AlgLabels { alg: alg.into() })
                    .set(now.since(a).as_secs_f64());
            }
            if let Some(u) = snap.upcoming.iter().find(|u| {
                u.alg == alg && !matches!(u.event, crate::lifecycle::UpcomingEvent::Retire)
            }) {
                self.metrics
                    .next_rotation
                    .get_or_create(&AlgLabels { alg: alg.into() })
                    .set((u.at.as_millis() - now.as_millis()) as f64 / 1000.0);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("master key: {0}")]
    MasterKey(#[from] SealError),
    #[error("cannot read the master key file {path}: {source}")]
    MasterKeyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("start-up task failed: {0}")]
    Join(String),
}

/// Reads the master key from `JWKSD_MASTER_KEY` or the configured file.
pub fn master_key(config: &Config) -> Result<Option<MasterKey>, DaemonError> {
    if let Ok(v) = std::env::var("JWKSD_MASTER_KEY")
        && !v.is_empty()
    {
        return Ok(Some(MasterKey::from_encoded(&v)?));
    }
    match &config.master_key_file {
        None => Ok(None),
        Some(path) => {
            let text =
                zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    DaemonError::MasterKeyFile {
                        path: path.clone(),
                        source,
                    }
                })?);
            Ok(Some(MasterKey::from_encoded(&text)?))
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(
    config: Config,
    source: ConfigSource,
    warnings: Vec<String>,
) -> Result<(), DaemonError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let policy = Arc::new(config.policy(clock.now())?);
    tracing::info!(config = %source, "starting jwksd {}", env!("CARGO_PKG_VERSION"));
    for w in &warnings {
        tracing::warn!(config = %source, "{w}");
    }

    let master = master_key(&config)?;
    match &master {
        Some(m) => tracing::info!(master_key_id = m.id(), "private keys are sealed at rest"),
        None => tracing::warn!(
            "no master key configured: private keys are stored in the clear (mode 600); set \
             JWKSD_MASTER_KEY or master_key_file to seal them"
        ),
    }
    let dir = config.keys_dir.clone();
    let (ring, notes) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let store = FsStore::open(dir, master)?;
        Keyring::load(Box::new(store))
    })
    .await
    .map_err(|e| DaemonError::Join(e.to_string()))??;
    for n in &notes {
        tracing::warn!(store = %ring.store_location(), "{n}");
    }
    tracing::info!(
        store = %ring.store_location(),
        keys = ring.state().published().count(),
        version = ring.state().version,
        "key store loaded"
    );

    let (tokens, sources) = Tokens::load_or_create(
        &config.admin.operator_token_file,
        &config.admin.signer_token_file,
    )?;
    tracing::info!(operator = %sources[0], signer = %sources[1], "admin tokens loaded");

    let public = TcpListener::bind(config.listen.public)
        .await
        .map_err(|source| DaemonError::Bind {
            which: "listen.public",
            addr: config.listen.public,
            source,
        })?;
    let admin = TcpListener::bind(config.listen.admin)
        .await
        .map_err(|source| DaemonError::Bind {
            which: "listen.admin",
            addr: config.listen.admin,
            source,
        })?;
    let public_addr = public.local_addr().map_err(|source| DaemonError::Bind {
        which: "listen.public",
        addr: config.listen.public,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| DaemonError::Bind {
        which: "listen.admin",
        addr: config.listen.admin,
        source,
    })?;

    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = Limits::default();
    let shared = Arc::new(Shared {
        snapshot: ArcSwapOption::empty(),
        metrics: Metrics::new(),
        policy: policy.clone(),
        issuer: config.tokens.issuer.clone(),
        audience: config.tokens.audience.clone(),
        jwks_cache_control: cache_control("public", policy.jwks_cache_max_age),
        signing_key_cache_control: cache_control("private", policy.signing_key_cache_max_age),
        commands: cmd_tx,
        clock: clock.clone(),
        limits,
        scheduler_running: AtomicBool::new(false),
        lifecycle_error: Mutex::new(None),
    });

    let scheduler = scheduler::Scheduler {
        ring: Arc::new(Mutex::new(ring)),
        policy: policy.clone(),
        clock: clock.clone(),
        shared: shared.clone(),
        commands: cmd_rx,
        shutdown: shutdown_rx.clone(),
    };
    let scheduler = tokio::spawn(scheduler.run());

    let public_shared = shared.clone();
    let public_task = tokio::spawn(http::serve(
        public,
        limits,
        shutdown_rx.clone(),
        move |req, _peer| http::public::handle(public_shared.clone(), req),
    ));
    let api = Arc::new(AdminApi {
        shared: shared.clone(),
        tokens,
    });
    let admin_task = tokio::spawn(http::serve(
        admin,
        limits,
        shutdown_rx.clone(),
        move |req, peer| http::admin::handle(api.clone(), req, peer),
    ));
    tracing::info!(public = %public_addr, admin = %admin_addr, "listening");

    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = shutdown_tx.send(true);
    let _ = tokio::join!(public_task, admin_task);
    // The scheduler finishes the step it is in (a commit is never cut short).
    let _ = tokio::time::timeout(Duration::from_secs(60), scheduler).await;
    let _ = shared.metrics.encode();
    tracing::info!(at = %Timestamp::from_millis(clock.now().as_millis()), "stopped");
    Ok(())
}

fn cache_control(scope: &str, max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("{scope}, max-age={}", max_age.as_secs()))
        .unwrap_or_else(|_| HeaderValue::from_static("no-store"))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
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

/// Keys of a state, by state, for logs.
pub fn count(state: &crate::lifecycle::KeyringState, s: KeyState) -> usize {
    state.keys.iter().filter(|k| k.state == s).count()
}

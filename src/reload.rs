//! What is re-read on SIGHUP and when its files change, without a restart:
//! the TLS certificates of both listeners ([`crate::tls::ReloadingTls`])
//! and the clients list ([`ReloadingClients`]). A reload that fails keeps
//! the last good one and says why.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::access::{Client, Clients};
use crate::config::ConfigError;
use crate::config::clients::{ClientsSource, read_source};
use crate::daemon::Handle;
use crate::tls::ReloadingTls;

/// How often watched files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// A file's identity and version as far as a change is concerned: a file
/// replaced by a rename (what `jwksd client` does) has a new inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The clients the admin listener accepts, reloaded from their source.
pub struct ReloadingClients {
    source: ClientsSource,
    /// The built-in clients in force (read at start only).
    builtins: Vec<Client>,
    current: Arc<ArcSwap<Clients>>,
    stamp: Mutex<Stamp>,
    daemon: Handle,
    /// Called after each successful reload (the admin API forgets the
    /// sign rates of removed clients).
    after: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl ReloadingClients {
    pub fn new(
        source: ClientsSource,
        builtins: Vec<Client>,
        clients: Clients,
        daemon: Handle,
    ) -> Arc<ReloadingClients> {
        daemon.metrics().clients.set(clients.len() as i64);
        let r = ReloadingClients {
            stamp: Mutex::new(None),
            source,
            builtins,
            current: Arc::new(ArcSwap::from_pointee(clients)),
            daemon,
            after: Mutex::new(None),
        };
        *r.stamp.lock().unwrap_or_else(|e| e.into_inner()) = r.file().and_then(|f| stamp(&f));
        Arc::new(r)
    }

    /// What the admin API reads.
    pub fn current(&self) -> Arc<ArcSwap<Clients>> {
        Arc::clone(&self.current)
    }

    pub fn after_reload(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.after.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// The file whose changes reload the list, if any.
    pub fn file(&self) -> Option<PathBuf> {
        match &self.source {
            ClientsSource::None | ClientsSource::Inline(None) => None,
            ClientsSource::File(p) | ClientsSource::Inline(Some(p)) => Some(p.clone()),
        }
    }

    /// Reads the list again; on error the current one stays. Returns the
    /// clients now accepted.
    pub fn reload(&self) -> Result<usize, ConfigError> {
        let file = self.file();
        // Recorded before reading, whatever comes of it: a bad file is
        // reported once, not again at every watch tick.
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = file.as_deref().and_then(stamp);
        let list = read_source(&self.source, self.daemon.now())?;
        let clients = Clients::new(list, self.builtins.clone())
            .map(|c| c.succeeding(&self.current.load()))
            .map_err(|message| ConfigError::Invalid {
                source_name: file
                    .as_ref()
                    .map_or("admin.clients".into(), |f| f.display().to_string()),
                message,
            })?;
        let n = clients.len();
        self.current.store(Arc::new(clients));
        self.daemon.metrics().clients.set(n as i64);
        if let Some(f) = self
            .after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            f();
        }
        Ok(n)
    }

    /// Reloads when the file changed since the last reload (or attempt:
    /// a bad file is reported once, not every few seconds).
    pub fn reload_if_changed(&self) {
        let Some(file) = self.file() else { return };
        let now = stamp(&file);
        let changed = {
            let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            let changed = *last != now;
            *last = now;
            changed
        };
        if changed {
            self.reload_logged("file changed");
        }
    }

    pub fn reload_logged(&self, why: &str) {
        let file = self.file().map(|f| f.display().to_string());
        match self.reload() {
            Ok(n) => {
                self.daemon.metrics().clients_reloaded(true);
                tracing::info!(
                    file = file.as_deref().unwrap_or("-"),
                    why,
                    clients = n,
                    "clients reloaded"
                );
            }
            Err(e) => {
                self.daemon.metrics().clients_reloaded(false);
                tracing::error!(
                    file = file.as_deref().unwrap_or("-"),
                    why,
                    error = %e,
                    "clients reload failed; the previous clients stay in force"
                );
            }
        }
    }
}

/// Reloads TLS certificates and the clients on SIGHUP and when their files
/// change, until `shutdown`.
pub async fn run(
    tls: Vec<Arc<ReloadingTls>>,
    clients: Arc<ReloadingClients>,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; certificates and clients reload on file change only");
            None
        }
    };
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                let (tls, clients) = (tls.clone(), clients.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    if tls.is_empty() && clients.file().is_none() {
                        tracing::info!("SIGHUP: no TLS certificate and no clients file to reload; the rest of the configuration is read at start only");
                    }
                    for l in &tls {
                        l.reload_logged("SIGHUP");
                    }
                    if clients.file().is_some() {
                        clients.reload_logged("SIGHUP");
                    }
                })
                .await;
            }
            _ = tick.tick() => {
                // File stats and parsing: off the async workers.
                let (tls, clients) = (tls.clone(), clients.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    for l in &tls {
                        l.reload_if_changed();
                    }
                    clients.reload_if_changed();
                })
                .await;
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}

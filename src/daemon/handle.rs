//! The handle the HTTP layer holds on the daemon: a cheap clone over the
//! private shared state, with the few things a request needs (the
//! snapshot, signing, operator commands, readiness facts, metrics). The
//! channels, locks and clocks behind it stay the daemon's own.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::Guard;
use josekit::jwt::JwtPayload;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{Actor, Record};
use crate::daemon::request::Request;
use crate::daemon::shared::{ACTIVE_KEY_WAIT, Shared, SyncFailure};
use crate::daemon::signing::{AWAY, SIGN_DEADLINE, SignError, SignJob};
use crate::daemon::snapshot::{ActiveKey, Snapshot};
use crate::keys::{Alg, Kid};
use crate::lifecycle::readiness::NotCurrent;
use crate::lifecycle::{CommandError, Policy, Revoked, Rotated};
use crate::metrics::Metrics;
use crate::time::Timestamp;

/// How long an operator request waits for the scheduler (RSA-4096
/// generation can take seconds); above the core's own deadline for a
/// command ([`crate::lifecycle::command::COMMAND_DEADLINE`]), so that the
/// answer, not this wait, says what became of it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Tries of a signature that meets no active key between the wait and the
/// signing task.
const SIGN_ATTEMPTS: usize = 3;

/// Why an operator command got no answer of its own.
#[derive(Debug)]
pub enum CallError {
    /// The scheduler is not running (shutting down).
    NotRunning,
    /// The scheduler did not answer within the command timeout.
    NoAnswer,
    /// The scheduler refused or failed it.
    Refused(CommandError),
}

#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    /// To the scheduler: operators' commands.
    commands: mpsc::Sender<Request>,
    /// To the signing task.
    sign_jobs: mpsc::Sender<SignJob>,
}

impl Handle {
    pub(super) fn new(
        shared: Arc<Shared>,
        commands: mpsc::Sender<Request>,
        sign_jobs: mpsc::Sender<SignJob>,
    ) -> Handle {
        Handle {
            shared,
            commands,
            sign_jobs,
        }
    }

    /// The current snapshot, if the first one is built. A guard rather
    /// than an `Arc`: the JWKS path then touches no shared counter.
    pub fn snapshot(&self) -> Guard<Option<Arc<Snapshot>>> {
        self.shared.snapshot.load()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The timeline settings (algorithms, token lifetime, cache max-ages).
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// `tokens.issuer`, filled into tokens that do not name one.
    pub fn issuer(&self) -> Option<&str> {
        self.shared.issuer.as_deref()
    }

    /// `tokens.audience`, filled into tokens that do not name one.
    pub fn audience(&self) -> Option<&str> {
        self.shared.audience.as_deref()
    }

    /// The daemon's time.
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// The active key of `alg`, waiting for one being generated: see
    /// [`Shared::active_key`].
    pub async fn active_key(&self, alg: Alg) -> Option<Arc<ActiveKey>> {
        self.shared.active_key(alg).await
    }

    /// Signs `payload` with the active key of `alg` on the signing task.
    pub async fn sign(&self, alg: Alg, payload: JwtPayload) -> Result<(Kid, String), SignError> {
        let shared = &self.shared;
        // No active key: one is being generated (see `Shared::active_key`).
        // The signing task answers `NoActiveKey` if it went between the two.
        let mut result = Err(SignError::Stopped);
        // One wait for all attempts: the bound the answer and docs state.
        let until = tokio::time::Instant::now() + ACTIVE_KEY_WAIT;
        for _ in 0..SIGN_ATTEMPTS {
            let Some(active) = shared.active_key_until(alg, until).await else {
                return Err(SignError::NoActiveKey);
            };
            // A token known to be away is not asked: each signature would
            // wait for the deadline, and hold one of the signing threads
            // while it hangs. The watch finds it again.
            if active.in_token && shared.token_available() == Some(false) {
                return Err(SignError::TokenUnavailable(active.kid.clone(), AWAY.into()));
            }
            let (tx, rx) = oneshot::channel();
            let job = SignJob {
                alg,
                payload: payload.clone(),
                reply: tx,
            };
            result = match self.sign_jobs.send(job).await {
                // A token across a network may hang in C_Sign: our own
                // deadline on the answer.
                Ok(()) => match tokio::time::timeout(SIGN_DEADLINE, rx).await {
                    Ok(answer) => answer.unwrap_or(Err(SignError::Stopped)),
                    Err(_) => {
                        if active.in_token {
                            shared.token_hung();
                        }
                        Err(SignError::TimedOut)
                    }
                },
                Err(_) => Err(SignError::Stopped),
            };
            if !matches!(result, Err(SignError::NoActiveKey)) {
                break;
            }
        }
        result
    }

    /// Asks the scheduler to rotate `alg` (every algorithm when `None`).
    pub async fn rotate(
        &self,
        alg: Option<Alg>,
        force: bool,
        actor: Actor,
    ) -> Result<Vec<Rotated>, CallError> {
        let (reply, rx) = oneshot::channel();
        self.command(
            Request::Rotate {
                alg,
                force,
                actor,
                reply,
            },
            rx,
        )
        .await
    }

    /// A place among the `/v1/events` streams (`events.max_subscribers`),
    /// held while the stream lives; `None` when all are taken.
    pub fn event_stream_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.shared
            .feed
            .subscribers
            .clone()
            .try_acquire_owned()
            .ok()
    }

    /// The audit records as this replica learns of them.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Arc<Record>> {
        self.shared.feed.subscribe()
    }

    /// Whether the feed knows where the audit log ended at start.
    pub fn events_started(&self) -> bool {
        self.shared.feed.started()
    }

    /// The last audit record the feed sent.
    pub fn last_event(&self) -> u64 {
        self.shared.feed.last()
    }

    /// Audit records after `after` (at most `limit`), read from the store
    /// on a blocking thread (the store's own deadlines bound it).
    pub async fn events_since(&self, after: u64, limit: usize) -> Result<Vec<Record>, String> {
        let store = self.shared.store().map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || store.audit_since(after, limit))
            .await
            .map_err(|e| format!("audit read task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// The audit log's last record, read from the store.
    pub async fn audit_head(&self) -> Result<crate::audit::Head, String> {
        let store = self.shared.store().map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || store.audit_head())
            .await
            .map_err(|e| format!("audit read task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// `events.keepalive`.
    pub fn events_keepalive(&self) -> Duration {
        self.shared.keepalive
    }

    /// Turns true when the daemon stops.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.shutdown.clone()
    }

    /// Asks the scheduler to revoke `kid`.
    pub async fn revoke(&self, kid: Kid, actor: Actor) -> Result<Revoked, CallError> {
        let (reply, rx) = oneshot::channel();
        self.command(Request::Revoke { kid, actor, reply }, rx)
            .await
    }

    async fn command<T>(
        &self,
        request: Request,
        rx: oneshot::Receiver<Result<T, CommandError>>,
    ) -> Result<T, CallError> {
        // One deadline for handing the command over and for its answer: a
        // scheduler stuck on a full queue does not hold the request longer.
        let call = async {
            self.commands
                .send(request)
                .await
                .map_err(|_| CallError::NotRunning)?;
            match rx.await {
                Ok(r) => r.map_err(CallError::Refused),
                // The scheduler stopped without answering: shutting down.
                Err(_) => Err(CallError::NotRunning),
            }
        };
        tokio::time::timeout(COMMAND_TIMEOUT, call)
            .await
            .unwrap_or(Err(CallError::NoAnswer))
    }

    /// Why the keys held may not be used now, when they may not.
    pub fn not_current(&self) -> Option<NotCurrent> {
        self.shared.not_current()
    }

    /// Why the shared state cannot be read, while it cannot.
    pub fn sync_failure(&self) -> Option<SyncFailure> {
        self.shared.sync_failure()
    }

    /// The max-age to serve the active key with now; `None`: do not serve
    /// it (see [`Shared::signing_key_max_age`]).
    pub fn signing_key_max_age(&self) -> Option<Duration> {
        self.shared.signing_key_max_age()
    }

    pub fn scheduler_running(&self) -> bool {
        self.shared.scheduler_running()
    }

    /// Whether the last lifecycle step failed (the error is in the log).
    pub fn lifecycle_failing(&self) -> bool {
        self.shared.lifecycle_error().is_some()
    }

    pub fn store_reachable(&self) -> bool {
        self.shared.store_reachable()
    }

    /// The key timeline at this instant (the console draws it); `None`
    /// before the first keys.
    pub fn timeline(&self) -> Option<crate::lifecycle::timeline::Timeline> {
        let snap = Option::clone(&self.snapshot())?;
        Some(crate::lifecycle::timeline::timeline(
            &snap.state,
            self.policy(),
            self.now(),
        ))
    }

    /// Whether other replicas share the store, and whether this one leads.
    pub fn leadership(&self) -> (bool, bool) {
        (self.shared.store_shared, self.shared.is_leader())
    }

    /// Time since this replica last read and applied the shared state
    /// (`None` with a store of its own).
    pub fn since_sync(&self) -> Option<Duration> {
        self.shared.store_shared.then(|| self.shared.since_sync())
    }

    /// This process's name in the audit log and the lease.
    pub fn replica(&self) -> Option<String> {
        self.shared.store().ok()?.replica()
    }

    /// Who holds the leader lease of a shared store, read from it on a
    /// blocking thread within `deadline` (the store's own deadlines bound
    /// the thread).
    pub async fn lease_holder(
        &self,
        deadline: Duration,
    ) -> Result<Option<crate::store::LeaseHolder>, String> {
        let store = self.shared.store().map_err(|e| e.to_string())?;
        if !store.shared() {
            return Ok(None);
        }
        let read = tokio::task::spawn_blocking(move || store.lease_holder());
        match tokio::time::timeout(deadline, read).await {
            Err(_) => Err("the store did not answer in time".into()),
            Ok(Err(e)) => Err(format!("lease read task failed: {e}")),
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        }
    }

    /// Whether the PKCS#11 token answers (`None`: no token configured).
    pub fn token_available(&self) -> Option<bool> {
        self.shared.token_available()
    }

    /// The metrics in the Prometheus text format, time-based gauges
    /// brought up to date first.
    pub fn encode_metrics(&self) -> String {
        self.shared.refresh_gauges();
        self.shared.metrics.encode()
    }
}

//! The state the scheduler, the signing task, the lease holder and the
//! HTTP handlers (through [`crate::daemon::Handle`]) share: the snapshot
//! served, metrics, leadership, the store's reachability and freshness.
//! Private fields: only the daemon changes them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::clock::{Clock, SteadyClock};
use crate::config::Config;
use crate::daemon::snapshot::{ActiveKey, Snapshot};
use crate::keys::Alg;
use crate::lifecycle::Policy;
use crate::lifecycle::readiness::{KeyAges, NotCurrent, key_currency};
use crate::metrics::{AlgLabels, Metrics};

/// What the scheduler, the signing task and the HTTP handlers (through
/// [`crate::daemon::Handle`]) share. Its fields are the daemon's alone
/// (`pub(super)`): only the daemon's own modules read or change them.
pub struct Shared {
    pub(super) snapshot: ArcSwapOption<Snapshot>,
    /// Bumped each time a new snapshot is swapped in.
    pub(super) published: watch::Sender<u64>,
    pub(super) metrics: Metrics,
    pub(super) policy: Arc<Policy>,
    pub(super) issuer: Option<String>,
    pub(super) audience: Option<String>,
    pub(super) clock: Arc<dyn Clock>,
    /// The daemon's clock, which reports wall-clock jumps.
    pub(super) steady: Arc<SteadyClock>,
    pub(super) scheduler_running: AtomicBool,
    pub(super) lifecycle_error: Mutex<Option<String>>,
    /// Whether other replicas share the store (then only the lease holder
    /// rotates).
    pub(super) store_shared: bool,
    pub(super) leader_until: Mutex<Option<std::time::Instant>>,
    pub(super) store_reachable: AtomicBool,
    /// When this replica last read and applied the shared state (a lease
    /// call that answered does not count: it says nothing of the keys).
    pub(super) last_sync: Mutex<std::time::Instant>,
    /// Why the last read of the shared state failed, while it does.
    pub(super) sync_failure: Mutex<Option<SyncFailure>>,
    /// When the commit in flight started, if one is: the keys held are
    /// vouched for only until the freshness window after it.
    pub(super) commit_started: Mutex<Option<std::time::Instant>>,
    /// How long after `last_sync` (with a shared store) or the start of a
    /// commit in flight the keys held may still be used.
    pub(super) freshness: Duration,
    /// The PKCS#11 token's health, when one is configured.
    pub(super) token: Option<super::token::TokenHealth>,
    /// The clock jumps already counted in `jwksd_clock_jumps_total`.
    pub(super) jumps_exported: AtomicU64,
    /// Audit records to the `/v1/events` streams.
    pub(super) feed: super::feed::Feed,
    /// Where the streams and webhooks read the audit log. Weak: the key
    /// ring owns the store, whose lock goes with it at shutdown.
    pub(super) store: std::sync::Weak<dyn crate::store::KeyStore>,
    /// `events.keepalive`.
    pub(super) keepalive: Duration,
    /// Turns true at shutdown: streams end.
    pub(super) shutdown: watch::Receiver<bool>,
}

/// Marks a commit in flight while it lives.
pub struct CommitInFlight<'a>(&'a Shared);

impl Drop for CommitInFlight<'_> {
    fn drop(&mut self) {
        *self
            .0
            .commit_started
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Why a replica cannot bring its key ring up to date with the shared state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncFailure {
    /// The store did not answer (or not in time); otherwise it answered
    /// with a state this replica cannot use (master key, format, checks).
    pub unreachable: bool,
    pub message: String,
}

impl Shared {
    /// Whether this replica may run the planner now.
    pub fn is_leader(&self) -> bool {
        !self.store_shared
            || self
                .leader_until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t > std::time::Instant::now())
    }

    pub(super) fn set_leader_until(&self, until: Option<std::time::Instant>) {
        *self.leader_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    pub fn store_reachable(&self) -> bool {
        self.store_reachable.load(Ordering::Acquire)
    }

    /// Whether this replica may sign and hand out its active keys: see
    /// [`Policy::signing_key_max_age`] (with a shared store, only within the
    /// freshness window after the state was last read and applied).
    pub fn keys_current(&self) -> bool {
        self.signing_key_max_age().is_some()
    }

    /// Why the keys held may not be used now, when they may not.
    pub fn not_current(&self) -> Option<NotCurrent> {
        self.currency().err()
    }

    /// The max-age to serve with the active key now; `None`: do not serve it.
    pub fn signing_key_max_age(&self) -> Option<Duration> {
        self.currency().ok()
    }

    /// The core's verdict on the keys held ([`key_currency`]), from one
    /// reading of both clocks.
    fn currency(&self) -> Result<Duration, NotCurrent> {
        let commit_in_flight = self
            .commit_started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed());
        let ages = KeyAges {
            commit_in_flight,
            since_sync: self.store_shared.then(|| self.since_sync()),
        };
        key_currency(&self.policy, ages, self.freshness)
    }

    /// Marks a commit as in flight until the returned guard drops.
    pub fn commit_in_flight(&self) -> CommitInFlight<'_> {
        *self
            .commit_started
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        CommitInFlight(self)
    }

    /// Time since this replica last read and applied the shared state.
    pub fn since_sync(&self) -> Duration {
        self.last_sync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// The key ring is what the store held at `at`: when the read that
    /// returned it started (it may have taken seconds), or when this
    /// replica's own commit started.
    pub fn mark_synced(&self, at: std::time::Instant) {
        {
            let mut last = self.last_sync.lock().unwrap_or_else(|e| e.into_inner());
            *last = (*last).max(at);
        }
        self.metrics.store_state_readable.set(1);
        let was = self
            .sync_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if was.is_some() {
            tracing::info!("shared state read and applied again");
        }
    }

    /// Records why the shared state could not be read; returns true when
    /// that is news (no failure before, or the other kind: unreachable
    /// versus unreadable), for one log line per change rather than per
    /// attempt.
    pub fn set_sync_failure(&self, f: SyncFailure) -> bool {
        self.metrics.store_state_readable.set(0);
        let mut cur = self.sync_failure.lock().unwrap_or_else(|e| e.into_inner());
        let news = cur.as_ref().is_none_or(|c| c.unreachable != f.unreachable);
        *cur = Some(f);
        news
    }

    pub fn sync_failure(&self) -> Option<SyncFailure> {
        self.sync_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records whether the store answered; returns true when it just
    /// stopped answering.
    pub fn set_store_reachable(&self, ok: bool) -> bool {
        self.metrics.store_up.set(ok as i64);
        let was = self.store_reachable.swap(ok, Ordering::AcqRel);
        if ok && !was {
            tracing::info!("store reachable again");
        }
        was && !ok
    }

    /// Swaps in a new snapshot and wakes whoever waits for one.
    pub fn publish(&self, snap: Snapshot) {
        self.snapshot.store(Some(Arc::new(snap)));
        self.published.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The active key of `alg`. When there is none (revoked while no next
    /// key was ready: its emergency replacement is being generated), waits
    /// up to [`ACTIVE_KEY_WAIT`] for one to be published instead of failing
    /// the request.
    pub async fn active_key(&self, alg: Alg) -> Option<Arc<ActiveKey>> {
        self.active_key_until(alg, tokio::time::Instant::now() + ACTIVE_KEY_WAIT)
            .await
    }

    /// [`Shared::active_key`], waiting no later than `until`.
    pub async fn active_key_until(
        &self,
        alg: Alg,
        until: tokio::time::Instant,
    ) -> Option<Arc<ActiveKey>> {
        let current = || {
            self.snapshot
                .load()
                .as_ref()
                .and_then(|s| s.active.get(&alg))
                .cloned()
        };
        // The signing path: a key is there, no waiting set up.
        if let Some(k) = current() {
            return Some(k);
        }
        // Subscribed before looking again, so no publication is missed.
        let mut published = self.published.subscribe();
        let mut counted = false;
        loop {
            if let Some(k) = current() {
                return Some(k);
            }
            if !self.policy.algorithms.contains(&alg) || !self.scheduler_running() {
                return None;
            }
            if !counted {
                counted = true;
                self.metrics
                    .key_waits
                    .get_or_create(&crate::metrics::AlgLabels { alg: alg.into() })
                    .inc();
            }
            match tokio::time::timeout_at(until, published.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    pub fn scheduler_running(&self) -> bool {
        self.scheduler_running.load(Ordering::Acquire)
    }

    pub(super) fn set_scheduler_running(&self, v: bool) {
        self.scheduler_running.store(v, Ordering::Release);
        // Requests waiting for a key see that none will come.
        self.published.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The last lifecycle failure, while it is not resolved.
    pub fn lifecycle_error(&self) -> Option<String> {
        self.lifecycle_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn set_lifecycle_error(&self, e: Option<String>) {
        *self
            .lifecycle_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = e;
    }

    /// Sets the gauges that depend on the time from the current snapshot.
    pub fn refresh_gauges(&self) {
        let now = self.clock.now();
        self.metrics.leader.set(self.is_leader() as i64);
        if self.store_shared {
            self.metrics
                .store_state_age
                .set(self.since_sync().as_secs_f64());
        }
        let s = &self.steady;
        self.metrics
            .clock_offset
            .set(s.offset_millis() as f64 / 1000.0);
        // Two scrapes at once must not both add the same jumps: the one
        // that moves the exported count up adds the difference.
        let jumps = s.jumps();
        let exported = self.jumps_exported.fetch_max(jumps, Ordering::AcqRel);
        if jumps > exported {
            self.metrics.clock_jumps.inc_by(jumps - exported);
        }
        let guard = self.snapshot.load();
        let Some(snap) = guard.as_ref() else { return };
        for &alg in &self.policy.algorithms {
            if let Some(a) = snap.state.active(alg).and_then(|k| k.activated_at) {
                self.metrics
                    .active_key_age
                    .get_or_create(&AlgLabels { alg: alg.into() })
                    .set(now.since(a).as_secs_f64());
            }
            let label = AlgLabels { alg: alg.into() };
            match snap.upcoming.iter().find(|u| {
                u.alg == alg && !matches!(u.event, crate::lifecycle::UpcomingEvent::Retire)
            }) {
                Some(u) => {
                    self.metrics
                        .next_rotation
                        .get_or_create(&label)
                        .set((u.at.as_millis() - now.as_millis()) as f64 / 1000.0);
                }
                None => {
                    self.metrics.next_rotation.remove(&label);
                }
            }
        }
    }
}

/// What the streams and webhooks reach through [`Shared`].
pub struct Links {
    pub store: std::sync::Weak<dyn crate::store::KeyStore>,
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The store, while the daemon runs.
    pub(super) fn store(
        &self,
    ) -> Result<Arc<dyn crate::store::KeyStore>, crate::store::StoreError> {
        self.store
            .upgrade()
            .ok_or_else(|| crate::store::StoreError::Other("the daemon is stopping".into()))
    }

    pub(super) fn new(
        config: &Config,
        policy: Arc<Policy>,
        steady: Arc<SteadyClock>,
        store_shared: bool,
        read_at: std::time::Instant,
        token: Option<super::token::TokenHealth>,
        links: Links,
    ) -> Shared {
        let Links { store, shutdown } = links;
        let clock: Arc<dyn Clock> = steady.clone();
        Shared {
            snapshot: ArcSwapOption::empty(),
            published: watch::Sender::new(0),
            metrics: Metrics::new(),
            policy: policy.clone(),
            issuer: config.tokens.issuer.clone(),
            audience: config.tokens.audience.clone(),
            clock,
            steady,
            scheduler_running: AtomicBool::new(false),
            lifecycle_error: Mutex::new(None),
            store_shared,
            leader_until: Mutex::new(None),
            store_reachable: AtomicBool::new(true),
            last_sync: Mutex::new(read_at),
            sync_failure: Mutex::new(None),
            commit_started: Mutex::new(None),
            jumps_exported: AtomicU64::new(0),
            freshness: policy
                .freshness_window(store_shared.then_some(config.store.poll_interval.0)),
            token,
            feed: super::feed::Feed::new(config.events.max_subscribers),
            store,
            keepalive: config.events.keepalive.0,
            shutdown,
        }
    }
}

/// How long a request for the active key (or a signature) waits for one
/// being generated, when there is none: an RSA-4096 key takes a few seconds
/// (runbook.md, "Revoking the active key before its successor exists").
pub const ACTIVE_KEY_WAIT: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{SystemClock, os_monotonic};

    fn shared(store_shared: bool) -> Shared {
        let config = Config::default();
        let steady = Arc::new(SteadyClock::new(
            Arc::new(SystemClock),
            os_monotonic(),
            Duration::from_secs(60),
        ));
        let policy = Arc::new(config.policy(steady.now()).unwrap());
        Shared::new(
            &config,
            policy,
            steady,
            store_shared,
            std::time::Instant::now(),
            None,
            Links {
                // Never read here.
                store: std::sync::Weak::<crate::store::fs::FsStore>::new(),
                shutdown: watch::channel(false).1,
            },
        )
    }

    fn started_ago(s: &Shared, ago: Duration) {
        *s.commit_started.lock().unwrap() = std::time::Instant::now().checked_sub(ago);
    }

    /// A key directory's commit that stalls: the keys it may deactivate are
    /// handed out only until signing_key.cache_max_age (1 min) + the 2 s
    /// commit window after it started, then not at all until it returns.
    #[test]
    fn a_stalled_commit_stops_the_keys_being_handed_out_past_its_window() {
        let s = shared(false);
        assert_eq!(s.signing_key_max_age(), Some(Duration::from_secs(60)));
        let guard = s.commit_in_flight();
        started_ago(&s, Duration::from_secs(30));
        let left = s.signing_key_max_age().unwrap();
        assert!(left <= Duration::from_secs(32) && left > Duration::from_secs(31));
        assert!(s.not_current().is_none());
        started_ago(&s, Duration::from_secs(63));
        assert_eq!(s.signing_key_max_age(), None);
        assert!(matches!(
            s.not_current(),
            Some(NotCurrent::CommitInFlight(d)) if d >= Duration::from_secs(63)
        ));
        drop(guard);
        assert_eq!(s.signing_key_max_age(), Some(Duration::from_secs(60)));
        assert!(s.not_current().is_none());
    }

    /// A replica: the window runs from the start of the last read that
    /// applied the state, and a commit in flight since earlier counts.
    #[test]
    fn a_replica_counts_its_window_from_the_older_of_read_and_commit() {
        let s = shared(true);
        // signing_key.cache_max_age 1 min + poll_interval 2 s.
        s.mark_synced(std::time::Instant::now());
        assert!(s.signing_key_max_age().unwrap() > Duration::from_secs(59));
        let _guard = s.commit_in_flight();
        started_ago(&s, Duration::from_secs(61));
        assert!(s.signing_key_max_age().unwrap() <= Duration::from_secs(1));
        // A read that started before the last one does not move it back.
        s.mark_synced(std::time::Instant::now() - Duration::from_secs(10));
        assert!(s.not_current().is_none());
        started_ago(&s, Duration::from_secs(63));
        assert!(matches!(
            s.not_current(),
            Some(NotCurrent::CommitInFlight(_))
        ));
    }
}

//! The imperative shell around the lifecycle core: the scheduler that
//! performs what the core decides, the signing task, the leader lease, and
//! the state they share. It knows nothing of HTTP: the listeners hold a
//! [`Handle`] (the `server` module starts both together). This file only
//! starts them; the children name each other, never this file.
//!
//! - `shared`: the state they share ([`Shared`], private fields).
//! - `feed`: audit records to this process's `/v1/events` streams.
//! - `scheduler`: the single task that changes keys.
//! - `signing`: the task that signs `/v1/sign`'s tokens in batches.
//! - `lease`: the leader lease, with a shared store.
//! - `request`: an operator's command as the admin API sends it.
//! - `snapshot`: the immutable view the HTTP handlers read.
//! - `webhooks`: the audit log's events delivered to `events.webhooks`.
//! - `handle`: what the HTTP handlers hold: [`Handle`], over [`Shared`]
//!   and the channels to the scheduler and the signing task.

mod feed;
pub mod handle;
mod lease;
pub mod request;
pub mod scheduler;
mod shared;
pub mod signing;
pub mod snapshot;
mod token;
pub mod webhooks;

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::clock::{Clock, SteadyClock};
use crate::config::Config;
use crate::keyring::Keyring;
use crate::lifecycle::Policy;
// What the handle's methods take and return.
pub use crate::lifecycle::CommandError;
pub use crate::lifecycle::readiness::NotCurrent;
pub use handle::{CallError, Handle};
pub use shared::{ACTIVE_KEY_WAIT, CommitInFlight, Shared, SyncFailure};
pub use signing::SignError;
pub use snapshot::{ActiveKey, Export, Snapshot};

/// The daemon's core, running: the scheduler (the one writer), the signing
/// task and, with a shared store, the lease holder and the change listener.
pub struct Core {
    /// What the HTTP layer holds.
    pub handle: Handle,
    /// Ends once `shutdown` turned true and the step in progress is done.
    pub scheduler: tokio::task::JoinHandle<()>,
}

/// What the core starts on.
pub struct Start {
    pub ring: Keyring,
    /// When the read that loaded the key ring started.
    pub read_at: std::time::Instant,
    /// The PostgreSQL store's URL, if it is one.
    pub store_url: Option<String>,
    /// `events.webhooks`, ready to deliver to.
    pub webhooks: Vec<webhooks::Endpoint>,
}

/// Starts the core on `start`'s key ring: the freshness window counts from
/// `read_at`, the PostgreSQL store's change notifications (`store_url`)
/// wake the scheduler, and the webhooks deliver beside it.
pub fn spawn(
    config: &Config,
    policy: Arc<Policy>,
    steady: Arc<SteadyClock>,
    start: Start,
    shutdown: watch::Receiver<bool>,
) -> Core {
    let Start {
        ring,
        read_at,
        store_url,
        webhooks,
    } = start;
    let clock: Arc<dyn Clock> = steady.clone();
    let store_handle = ring.store();
    let store_shared = store_handle.shared();
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (sign_tx, sign_rx) = mpsc::channel(1024);
    let token = ring.token().cloned();
    let ring_mark = crate::keyring::token::ring_of(&ring.store_location());
    let shared = Arc::new(Shared::new(
        config,
        policy.clone(),
        steady,
        store_shared,
        read_at,
        token.as_deref().map(token::TokenHealth::new),
        shared::Links {
            store: Arc::downgrade(&store_handle),
            shutdown: shutdown.clone(),
        },
    ));

    let replication = store_shared.then(|| scheduler::Replication {
        changes: Arc::new(tokio::sync::Notify::new()),
        poll: config.store.poll_interval.0,
    });
    if let Some(r) = &replication {
        tokio::spawn(lease::lead(
            store_handle.clone(),
            shared.clone(),
            config.store.leader_lease.0,
            r.changes.clone(),
            shutdown.clone(),
        ));
        if let Some(url) = &store_url {
            tokio::spawn(crate::store::postgres::listen(
                url.clone(),
                r.changes.clone(),
            ));
        }
    }
    let scheduler = scheduler::Scheduler {
        ring: Arc::new(Mutex::new(ring)),
        policy: policy.clone(),
        clock: clock.clone(),
        shared: shared.clone(),
        commands: cmd_rx,
        shutdown: shutdown.clone(),
        replication,
        staging: Default::default(),
        export: snapshot::Export::from_config(config.signing_key.export),
    };
    let scheduler = tokio::spawn(scheduler.run());
    match &token {
        // A token's signatures block: on threads of their own, one per
        // session.
        Some(t) => tokio::spawn(signing::run_threads(shared.clone(), sign_rx, t.sessions())),
        None => tokio::spawn(signing::run(shared.clone(), sign_rx)),
    };
    if let Some(t) = token {
        tokio::spawn(token::watch(shared.clone(), t, ring_mark, shutdown.clone()));
    }
    webhooks::spawn(shared.clone(), webhooks, shutdown.clone());

    Core {
        handle: Handle::new(shared, cmd_tx, sign_tx),
        scheduler,
    }
}

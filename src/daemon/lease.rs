//! The leader lease of a replica sharing its store: held (or waited for)
//! so that one replica runs the planner, given up when this replica cannot
//! read the shared state, and at shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::daemon::shared::Shared;
use crate::store::KeyStore;

/// Holds (or waits for) the lease that lets this replica rotate keys:
/// renewed every third of the lease, given up at shutdown.
pub(super) async fn lead(
    store: Arc<dyn KeyStore>,
    shared: Arc<Shared>,
    lease: Duration,
    changes: Arc<tokio::sync::Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let s = store.clone();
        let was = shared.is_leader();
        // A replica that cannot read the shared state must not lead: it
        // would plan on keys it no longer knows. Hand the lease over.
        if shared.sync_failure().is_some_and(|f| !f.unreachable) {
            if was {
                shared.set_leader_until(None);
                let _ = tokio::task::spawn_blocking(move || s.resign()).await;
                tracing::warn!(
                    "gave up the rotation lease: this replica cannot read the shared state"
                );
            }
            shared.metrics.leader.set(0);
            tokio::select! {
                _ = tokio::time::sleep(lease / 3) => continue,
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            }
        }
        match tokio::task::spawn_blocking(move || s.lead(lease)).await {
            Ok(Ok(Some(until))) => {
                shared.set_leader_until(Some(until));
                shared.set_store_reachable(true);
                if !was {
                    tracing::info!(lease = %crate::time::format_duration(lease), "this replica now leads rotations");
                    changes.notify_one();
                }
            }
            Ok(Ok(None)) => {
                shared.set_leader_until(None);
                shared.set_store_reachable(true);
                if was {
                    tracing::warn!("another replica holds the rotation lease now");
                }
            }
            // Unreachable: the lease runs out on its own.
            Ok(Err(e)) => {
                if shared.set_store_reachable(false) {
                    tracing::warn!(error = %e, "cannot renew the rotation lease");
                }
            }
            Err(e) => tracing::error!(error = %e, "lease task failed"),
        }
        shared.metrics.leader.set(shared.is_leader() as i64);
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                if shared.is_leader() {
                    let s = store.clone();
                    let _ = tokio::task::spawn_blocking(move || s.resign()).await;
                }
                return;
            }
        }
    }
}

//! The feed of audit records to this process's live readers (the
//! `/v1/events` streams): each record once, in sequence order, as soon as
//! this replica wrote it or read it from the shared store.
//!
//! A broadcast channel of bounded size: a reader that falls behind misses
//! records rather than holding memory, and reads them back from the store
//! (`http::events`); so does one that sees a gap in the sequence.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, broadcast};

use crate::audit::Record;
use crate::metrics::Metrics;

/// Records the channel holds for a reader that is behind.
pub const FEED_BUFFER: usize = 256;

pub struct Feed {
    tx: broadcast::Sender<Arc<Record>>,
    /// The last sequence number sent.
    last: AtomicU64,
    /// Whether the store's head at start is known ([`Feed::start_after`]).
    started: std::sync::atomic::AtomicBool,
    /// One permit per `/v1/events` connection (`events.max_subscribers`).
    pub(crate) subscribers: Arc<Semaphore>,
}

impl Feed {
    pub fn new(max_subscribers: usize) -> Feed {
        let (tx, _) = broadcast::channel(FEED_BUFFER);
        Feed {
            tx,
            last: AtomicU64::new(0),
            started: std::sync::atomic::AtomicBool::new(false),
            subscribers: Arc::new(Semaphore::new(max_subscribers)),
        }
    }

    /// Sends nothing up to `head`: the store's last record at start.
    pub fn start_after(&self, head: u64) {
        self.last.fetch_max(head, Ordering::AcqRel);
        self.started.store(true, Ordering::Release);
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Sends what is newer than the last record sent, and counts it.
    pub fn publish(&self, records: &[Record], metrics: &Metrics) {
        for r in records {
            // fetch_max: two writers (the scheduler, a refused command's
            // task) may race; a record is sent at most once.
            let before = self.last.fetch_max(r.seq, Ordering::AcqRel);
            if r.seq > before {
                let _ = self.tx.send(Arc::new(r.clone()));
                metrics.audit_last_seq.set(r.seq as i64);
            }
        }
    }

    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.tx.subscribe()
    }
}

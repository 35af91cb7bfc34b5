//! `/v1/sign`'s signatures, made by one task in batches.
//!
//! Under load, requests are taken from the queue in batches, all signed,
//! and only then answered, so the responses leave back to back. Clients
//! waiting on other cores are then woken once per batch instead of once per
//! token, which is where most of the time went when every response was
//! written on its own. With one request at a time, a batch is one job and
//! nothing waits.

use std::sync::Arc;

use josekit::jws::JwsHeader;
use josekit::jwt::{self, JwtPayload};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::shared::Shared;
use crate::keys::{Alg, Kid};

/// The most jobs signed before their answers go out.
const BATCH: usize = 64;

pub struct SignJob {
    pub alg: Alg,
    pub payload: JwtPayload,
    pub reply: oneshot::Sender<Result<(Kid, String), SignError>>,
}

#[derive(Debug)]
pub enum SignError {
    NoActiveKey,
    Failed(Kid, String),
    /// The signing task is not running (shutting down).
    Stopped,
}

pub async fn run(shared: Arc<Shared>, mut jobs: mpsc::Receiver<SignJob>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut header = JwsHeader::new();
    header.set_token_type("JWT");
    while jobs.recv_many(&mut batch, BATCH).await > 0 {
        let snap = shared.snapshot.load_full();
        let done: Vec<_> = batch
            .drain(..)
            .map(|job| {
                let result = match snap.as_ref().and_then(|s| s.active.get(&job.alg)) {
                    None => Err(SignError::NoActiveKey),
                    Some(active) => jwt::encode_with_signer(&job.payload, &header, &*active.signer)
                        .map(|t| (active.kid.clone(), t))
                        .map_err(|e| SignError::Failed(active.kid.clone(), e.to_string())),
                };
                (job.reply, result)
            })
            .collect();
        for (reply, result) in done {
            let _ = reply.send(result);
        }
    }
}

//! `/v1/sign`'s signatures, made in batches: by one task ([`run`]), or,
//! with a PKCS#11 token, by a few threads of their own ([`run_threads`]).
//!
//! Under load, requests are taken from the queue in batches, all signed,
//! and only then answered, so the responses leave back to back. Clients
//! waiting on other cores are then woken once per batch instead of once per
//! token, which is where most of the time went when every response was
//! written on its own. With one request at a time, a batch is one job and
//! nothing waits.
//!
//! A token's signature is a call that blocks (across a network, for an
//! HSM), so with a token the batches are signed on long-lived threads, one
//! per session of the token's pool, each taking what is queued. They run at
//! `SCHED_BATCH`: a thread woken by a new job does not preempt the
//! runtime's thread at once, so jobs gather into batches instead of each
//! costing a switch; and a batch's answers go back to the runtime in one
//! message (measured in BENCHMARKS.md: about 1.3 context switches per token
//! with a thread handed each batch, about 0.6 with each answer sent from
//! the signing thread, 0.06 so).

use std::sync::Arc;

use josekit::jws::JwsHeader;
use josekit::jwt::{self, JwtPayload};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::shared::Shared;
use crate::daemon::snapshot::ActiveKey;
use crate::keyring::token::is_unavailable;
use crate::keys::pkcs11::TokenError;
use crate::keys::{Alg, Kid};

/// The most jobs signed before their answers go out.
const BATCH: usize = 64;

/// Why a signature was not asked of a token known to be away.
pub const AWAY: &str =
    "the token is unavailable (it did not answer, or failed); the watch reopens it every second";

/// How long a request waits for its signature once queued: a token that
/// hangs (a network HSM that stopped answering) is answered `503` rather
/// than waited for.
pub const SIGN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

pub struct SignJob {
    pub alg: Alg,
    pub payload: JwtPayload,
    pub reply: oneshot::Sender<Result<(Kid, String), SignError>>,
}

#[derive(Debug)]
pub enum SignError {
    NoActiveKey,
    Failed(Kid, String),
    /// The PKCS#11 token holding the key is away (`/readyz` says so).
    TokenUnavailable(Kid, String),
    /// The signing task is not running (shutting down).
    Stopped,
    /// No signature within [`SIGN_DEADLINE`].
    TimedOut,
}

type Signed = Result<(Kid, String), SignError>;

/// Signs in batches on the runtime (see the module documentation): keys
/// in the store only, whose signing is a few microseconds of CPU.
pub async fn run(shared: Arc<Shared>, mut jobs: mpsc::Receiver<SignJob>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut header = JwsHeader::new();
    header.set_token_type("JWT");
    while jobs.recv_many(&mut batch, BATCH).await > 0 {
        let done = sign_batch(&shared, &header, batch.drain(..));
        for (reply, result) in done {
            let _ = reply.send(result);
        }
    }
}

/// Signs in batches on `threads` threads of the runtime's blocking pool,
/// each taking everything queued (up to `BATCH`) when it is free, until
/// the queue closes at shutdown (see the module documentation).
pub async fn run_threads(shared: Arc<Shared>, jobs: mpsc::Receiver<SignJob>, threads: usize) {
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    // A batch's answers go back to the runtime in one message, and are
    // handed out there: one wake-up of the runtime per batch. Answering
    // each from the signing thread woke the runtime once per answer, and
    // each wake-up preempted the signing thread (at SCHED_BATCH) at once.
    // Unbounded: at most one batch per signing thread is in it.
    let (answers, mut answered) = mpsc::unbounded_channel::<Vec<Answered>>();
    let answering = tokio::spawn(async move {
        while let Some(batch) = answered.recv().await {
            for (reply, result) in batch {
                let _ = reply.send(result);
            }
        }
    });
    let mut running = Vec::new();
    for _ in 0..threads.max(1) {
        let (jobs, shared, answers) = (jobs.clone(), shared.clone(), answers.clone());
        running.push(tokio::task::spawn_blocking(move || {
            batch_priority();
            let mut header = JwsHeader::new();
            header.set_token_type("JWT");
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                {
                    let mut rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(first) = rx.blocking_recv() else {
                        return;
                    };
                    batch.push(first);
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                }
                let done = sign_batch(&shared, &header, batch.drain(..));
                // Only at shutdown is the answering task gone.
                if answers.send(done).is_err() {
                    return;
                }
            }
        }));
    }
    drop(answers);
    for r in running {
        let _ = r.await;
    }
    let _ = answering.await;
}

/// Puts the calling thread in the `SCHED_BATCH` class (Linux; best effort:
/// a refusal leaves it as it was).
fn batch_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid
    // parameter; it touches no memory of ours.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

type Answered = (oneshot::Sender<Signed>, Signed);

/// Signs `jobs` with the active keys of the current snapshot.
fn sign_batch(
    shared: &Shared,
    header: &JwsHeader,
    jobs: impl Iterator<Item = SignJob>,
) -> Vec<Answered> {
    let snap = shared.snapshot.load_full();
    jobs.map(|job| {
        let result = match snap.as_ref().and_then(|s| s.active.get(&job.alg)) {
            None => Err(SignError::NoActiveKey),
            // Queued before the token was known to be away: not asked
            // either (see `Handle::sign`).
            Some(active) if active.in_token && shared.token_available() == Some(false) => {
                Err(SignError::TokenUnavailable(active.kid.clone(), AWAY.into()))
            }
            Some(active) if active.in_token => {
                let mut result = sign(header, active, &job.payload, &|e| shared.token_failed(e));
                // While the token is known to be away, every failure of its
                // keys is that.
                if let Err(SignError::Failed(kid, e)) = &result
                    && shared.token_available() == Some(false)
                {
                    result = Err(SignError::TokenUnavailable(kid.clone(), e.clone()));
                }
                if result.is_ok() {
                    shared.token_answered();
                }
                result
            }
            Some(active) => sign(header, active, &job.payload, &|_| {}),
        };
        (job.reply, result)
    })
    .collect()
}

/// One token; `token_failed` hears of a failure of the token's.
fn sign(
    header: &JwsHeader,
    active: &ActiveKey,
    payload: &JwtPayload,
    token_failed: &dyn Fn(&TokenError),
) -> Signed {
    jwt::encode_with_signer(payload, header, &*active.signer)
        .map(|t| (active.kid.clone(), t))
        .map_err(|e| {
            let token_error = match &e {
                josekit::JoseError::InvalidSignature(inner) => inner.downcast_ref::<TokenError>(),
                _ => None,
            };
            if let Some(t) = token_error {
                token_failed(t);
            }
            match token_error {
                Some(t) if is_unavailable(t) => {
                    SignError::TokenUnavailable(active.kid.clone(), t.to_string())
                }
                _ => SignError::Failed(active.kid.clone(), e.to_string()),
            }
        })
}

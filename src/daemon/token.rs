//! The PKCS#11 token's health, as signing and a watch see it: a token that
//! goes away (or drops the login) turns `/readyz` unready and is counted;
//! the watch reopens the module every second until the token answers again
//! (which is how a token that comes back is taken up), and while it
//! answers, looks for the active keys every few seconds so that a token
//! that went away is noticed without traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::daemon::shared::Shared;
use crate::keys::pkcs11::{Token, TokenError};

/// How often the watch reopens a token that is away.
const RETRY: Duration = Duration::from_secs(1);
/// How often the watch looks for the active keys in a token that answers.
const PROBE: Duration = Duration::from_secs(5);
/// How long a look (or a reopening) may take before the token counts as
/// away.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

pub struct TokenHealth {
    /// `pkcs11:<label>`, as logs and `jwksd keys` name it.
    pub custody: String,
    available: AtomicBool,
}

impl TokenHealth {
    pub fn new(token: &Token) -> TokenHealth {
        TokenHealth {
            custody: format!("pkcs11:{}", token.label()),
            available: AtomicBool::new(true),
        }
    }

    pub fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }
}

/// The metric label of a token error.
fn kind(e: &TokenError) -> &'static str {
    match e {
        TokenError::TokenGone { .. } => "token_gone",
        TokenError::PoolTimeout { .. } => "pool_timeout",
        TokenError::KeyNotFound { .. } => "key_not_found",
        TokenError::WrongPin { .. }
        | TokenError::PinLocked { .. }
        | TokenError::PinFinalTry { .. }
        | TokenError::PinNotInitialized { .. }
        | TokenError::PinInvalid { .. }
        | TokenError::Pin(_) => "pin",
        TokenError::TokenNotFound { .. } | TokenError::AmbiguousToken { .. } => "token_not_found",
        TokenError::ModuleMissing { .. }
        | TokenError::ModuleLoad { .. }
        | TokenError::ModuleInit { .. }
        | TokenError::AlreadyOpen { .. } => "module",
        _ => "operation",
    }
}

impl Shared {
    /// Records a failure of the token: counted by kind; one that says the
    /// token is away turns it unavailable until the watch sees it again.
    pub fn token_failed(&self, e: &TokenError) {
        self.metrics.token_error(kind(e));
        let Some(h) = &self.token else {
            return;
        };
        // A pool with no free session is load, not a token away: it is
        // counted (and answered 503), and reopening would only add to it.
        let away = matches!(
            kind(e),
            "token_gone" | "key_not_found" | "pin" | "token_not_found" | "module"
        );
        if away && h.available.swap(false, Ordering::Relaxed) {
            self.metrics.token_up.set(0);
            tracing::error!(custody = %h.custody, error = %e, "PKCS#11 token unavailable: signing with its keys fails until it answers again");
        }
    }

    /// A signature with a token key that met its deadline: the token hangs
    /// (an HSM gone silent) or is overloaded past it. Either way it counts
    /// as away until the watch sees it answer (within a second of it
    /// answering), so that requests are answered at once instead of each
    /// waiting for the deadline. Without this, signatures that hang in
    /// every session leave the watch's probe waiting for a session, which
    /// is load, not a token away, and `/readyz` would stay ready.
    pub fn token_hung(&self) {
        self.metrics.token_error("timeout");
        let Some(h) = &self.token else {
            return;
        };
        if h.available.swap(false, Ordering::Relaxed) {
            self.metrics.token_up.set(0);
            let why = format!(
                "no signature within {:?}",
                crate::daemon::signing::SIGN_DEADLINE
            );
            tracing::error!(custody = %h.custody, error = %why, "PKCS#11 token unavailable: signing with its keys fails until it answers again");
        }
    }

    pub fn token_answered(&self) {
        // Once per signature: a load, and nothing more while it answers.
        let Some(h) = self.token.as_ref().filter(|h| !h.available()) else {
            return;
        };
        if !h.available.swap(true, Ordering::Relaxed) {
            self.metrics.token_up.set(1);
            tracing::info!(custody = %h.custody, "PKCS#11 token available again");
        }
    }

    /// Whether the token (when one is configured) answers.
    pub fn token_available(&self) -> Option<bool> {
        self.token.as_ref().map(TokenHealth::available)
    }
}

/// How often the leader of replicas sharing a store carries out the
/// token's crash-rule repairs (`keyring::token`); a process alone with its
/// store does so at each load.
const TIDY: Duration = Duration::from_secs(3600);
/// How long that check may take before it is given up (a listing of a
/// large token is many calls).
const TIDY_DEADLINE: Duration = Duration::from_secs(60);

/// Watches the token until shutdown (see the module documentation).
/// `ring`: the mark of this key ring (`keyring::token::ring_of`).
pub async fn watch(
    shared: Arc<Shared>,
    token: Arc<Token>,
    ring: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tidied: Option<std::time::Instant> = None;
    // A probe past its deadline, still in the module: no second one while
    // it hangs.
    let mut stuck: Option<tokio::task::JoinHandle<Result<(), TokenError>>> = None;
    loop {
        let up = shared.token_available().unwrap_or(true);
        let wait = if up { PROBE } else { RETRY };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if stuck.as_ref().is_some_and(|p| !p.is_finished()) {
            continue;
        }
        // A key being generated keeps searches of the token waiting (an
        // RSA key in a network HSM takes seconds): probe at the next round,
        // unless it has run past the generation's own deadline (a token
        // that hangs there must turn the daemon unready).
        if up
            && token
                .generating_for()
                .is_some_and(|d| d < super::scheduler::TOKEN_GENERATION_DEADLINE)
        {
            continue;
        }
        stuck = None;
        // The kids the token must show: the active keys it holds.
        let kids: Vec<_> = shared
            .snapshot
            .load_full()
            .map(|s| {
                s.active
                    .iter()
                    .filter(|(_, a)| a.in_token)
                    .map(|(alg, a)| (a.kid.clone(), *alg))
                    .collect()
            })
            .unwrap_or_default();
        let t = token.clone();
        let mut probe = tokio::task::spawn_blocking(move || -> Result<(), TokenError> {
            if !up {
                t.reopen()?;
            }
            let missing = |t: &Token| -> Result<Option<crate::keys::Kid>, TokenError> {
                for (kid, alg) in &kids {
                    if t.key(kid, *alg)?.is_none() {
                        return Ok(Some(kid.clone()));
                    }
                }
                Ok(None)
            };
            // Another process's write can hide a key from this one until
            // the module is opened again (docs/pkcs11.md): look afresh once.
            if missing(&t)?.is_some() && up {
                t.reopen()?;
            }
            match missing(&t)? {
                Some(kid) => Err(TokenError::KeyNotFound {
                    label: t.label().to_owned(),
                    kid,
                }),
                None => Ok(()),
            }
        });
        // The module call may hang (a network HSM gone silent): our own
        // deadline. The probe left behind ends when the call does.
        match tokio::time::timeout(PROBE_DEADLINE, &mut probe).await {
            Ok(Ok(Ok(()))) => shared.token_answered(),
            Ok(Ok(Err(e))) => shared.token_failed(&e),
            Ok(Err(_)) => {}
            Err(_) => {
                shared.token_failed(&TokenError::TokenGone {
                    label: token.label().to_owned(),
                    op: "probe",
                    reason: format!("no answer within {PROBE_DEADLINE:?}"),
                });
                stuck = Some(probe);
            }
        }
        if shared.store_shared
            && shared.is_leader()
            && shared.token_available() == Some(true)
            && tidied.is_none_or(|t| t.elapsed() >= TIDY)
            && let Some(snap) = shared.snapshot.load_full()
        {
            tidied = Some(std::time::Instant::now());
            let (t, state, ring) = (token.clone(), snap.state.clone(), ring.clone());
            let done = tokio::time::timeout(
                TIDY_DEADLINE,
                tokio::task::spawn_blocking(move || {
                    crate::keyring::token::check(&t, &state, &ring, true, true)
                }),
            )
            .await;
            match done {
                Ok(Ok(Ok(checked))) => {
                    for n in checked.notes {
                        tracing::warn!(custody = %format!("pkcs11:{}", token.label()), "{n}");
                    }
                }
                Ok(Ok(Err(e))) => {
                    tracing::warn!(custody = %format!("pkcs11:{}", token.label()), error = %e, "could not check the token against the state")
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::warn!(custody = %format!("pkcs11:{}", token.label()), "the check of the token against the state did not finish within {TIDY_DEADLINE:?}")
                }
            }
        }
    }
}

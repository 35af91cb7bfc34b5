//! The crash rules of keys kept in a PKCS#11 token: the same as the
//! directory store's for key files (`store::fs`), with objects for files.
//!
//! A generated keypair is pending (label `jwksd-pending-<secs>-<hex>`)
//! until its kid is known, then staged: `CKA_ID` the kid, label
//! `jwksd-staged-<ring>-<secs>`, where `ring` marks the key ring (the
//! store) that made it ([`ring_of`]). Nothing is written to it after that:
//! the state that names it is its commit (SoftHSM2 rewrites an object's
//! file in place, so a write killed half-way loses the object). On load:
//! - every next, active and retiring key the state places in the token must
//!   be there (after one reopening of the module: SoftHSM2 may hide
//!   another process's objects, docs/pkcs11.md), or the load fails and
//!   nothing is changed; a missing retiring key is a note (it will not sign
//!   again);
//! - staged objects of this key ring that no state names are destroyed,
//!   and so are pending objects: generations that never committed. With a
//!   shared store only once older than [`STALE_STAGED`], so that a
//!   generation in flight elsewhere is left be; another key ring's staged
//!   objects are reported, never destroyed (a token shared by two
//!   deployments, or a key directory that moved);
//! - objects of keys the state records as retired or revoked are destroyed
//!   (a destruction cut short by a crash);
//! - objects named by a kid the state does not know are reported with the
//!   command that removes them, never destroyed.
//!
//! A listing that lacks an object is never a reason to destroy or change
//! anything: only what a listing shows is acted on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::keys::custody::Custody;
use crate::keys::pkcs11::{Owner, Token, TokenError, TokenKey, TokenObject, pending_since};
use crate::keys::{Alg, Kid, PrivateKey};
use crate::lifecycle::{KeyRecord, KeyState, KeyringState};
use crate::store::check::{self, Finding};
use crate::store::{Problem, StoreError};

/// How old a pending or staged object no state names must be before a
/// replica sharing its store takes it for a leftover (as the PostgreSQL
/// store's staged rows).
pub const STALE_STAGED: Duration = Duration::from_secs(3600);

/// The mark of the key ring kept in `store_location` (the store's
/// location as `KeyStore::location` gives it): 16 hex digits of its
/// SHA-256. Staged objects carry it, so that a key ring destroys only its
/// own leftovers.
pub fn ring_of(store_location: &str) -> String {
    hex::encode(&openssl::sha::sha256(store_location.as_bytes())[..8])
}

/// The token's keys the state names, checked; and notes for the operator.
pub struct Checked {
    pub keys: HashMap<Kid, PrivateKey>,
    pub notes: Vec<String>,
}

/// The wall clock in Unix seconds, for the labels of objects in flight:
/// compared across replicas, whose clocks agree within far less than
/// [`STALE_STAGED`].
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Refuses a state that places published keys in a token this process has
/// not opened: they could neither sign nor be destroyed at retirement.
pub(super) fn require_token(
    state: &KeyringState,
    token: Option<&Arc<Token>>,
) -> Result<(), StoreError> {
    let elsewhere: Vec<String> = state
        .keys
        .iter()
        .filter(|k| {
            k.custody
                .token_label()
                .is_some_and(|l| token.is_none_or(|t| t.label() != l))
        })
        .map(|k| {
            let until = match (k.state, k.retire_at) {
                (KeyState::Retiring, Some(t)) => format!(", retiring until {}", t.to_rfc3339()),
                _ => String::new(),
            };
            format!("{} ({} {}, in {}{until})", k.kid, k.state, k.alg, k.custody)
        })
        .collect();
    if elsewhere.is_empty() {
        return Ok(());
    }
    Err(StoreError::Other(format!(
        "the state places keys in a PKCS#11 token this jwksd has not opened: {}; keep \
         keys.pkcs11 configured for that token until they retire (runbook.md, \"Moving \
         to and from a token\")",
        elsewhere.join("; ")
    )))
}

/// Checks the token against `state` and, when `tidy`, carries out the
/// repairs the crash rules allow for the key ring `ring` (`shared`: another
/// process may be generating in this token).
pub fn check(
    token: &Arc<Token>,
    state: &KeyringState,
    ring: &str,
    tidy: bool,
    shared: bool,
) -> Result<Checked, StoreError> {
    let custody = Custody::Pkcs11 {
        token_label: token.label().to_owned(),
    };
    let wanted: Vec<(&Kid, Alg)> = state
        .keys
        .iter()
        .filter(|k| k.custody == custody)
        .map(|k| (&k.kid, k.alg))
        .collect();
    let mut found = find_all(token, &wanted)?;
    if found.len() < wanted.len() {
        // SoftHSM2 can hide another process's new objects, and shows an
        // empty token once its files went away: look again afresh.
        token.reopen().map_err(StoreError::Token)?;
        found = find_all(token, &wanted)?;
    }
    let where_ = PathBuf::from(custody.to_string());
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut keys = HashMap::new();
    let held: Vec<Kid> = found.keys().cloned().collect();
    let (findings, _) = check::check_in(state, &custody, held.iter());
    for finding in findings {
        match finding {
            Finding::Held(k) => {
                if let Some(key) = found.remove(&k.kid) {
                    keys.insert(k.kid.clone(), PrivateKey::Token(key));
                }
            }
            Finding::NotItsOwnKey(k) => problems.push(Problem {
                path: where_.clone(),
                what: format!(
                    "key {} does not carry its own public key (the kid is not its thumbprint)",
                    k.kid
                ),
                fix: "the state was altered: restore it from a backup".into(),
            }),
            Finding::MissingRetiring(k) => notes.push(format!(
                "the private key of retiring key {} is not in {custody}: it still verifies and \
                 will not sign again, so nothing is lost",
                k.kid
            )),
            Finding::Missing(k) => problems.push(Problem {
                path: where_.clone(),
                what: format!(
                    "the private key of the {} {} key {} is not in the token",
                    k.state, k.alg, k.kid
                ),
                fix: "check that keys.pkcs11 names the token the key was made in and that \
                      the token is whole (restore it from the HSM's backup); if it is lost, see \
                      \"Backups and a lost token\" in runbook.md"
                    .into(),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(StoreError::Inconsistent(problems));
    }
    if tidy {
        notes.extend(repair(token, state, ring, shared)?);
    }
    Ok(Checked { keys, notes })
}

/// How long the load's look at the token may take.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(30);

/// [`check()`] with a deadline of our own: a module call that hangs (a
/// network HSM gone silent) fails the load within [`CHECK_DEADLINE`]
/// instead of holding it, and with it the scheduler (the look left behind
/// ends when the call does).
pub fn check_within(
    token: &Arc<Token>,
    state: &KeyringState,
    ring: &str,
    tidy: bool,
    shared: bool,
) -> Result<Checked, StoreError> {
    let (t, s, r) = (token.clone(), state.clone(), ring.to_owned());
    within(CHECK_DEADLINE, "jwksd-token-check", move || {
        check(&t, &s, &r, tidy, shared)
    })
    .map_err(|reason| {
        StoreError::Token(TokenError::TokenGone {
            label: token.label().to_owned(),
            op: "load",
            reason,
        })
    })?
}

/// Runs `f` on a thread of its own (named `name`) and waits for it at most
/// `deadline`: what a call into a token that may hang gets, so that it
/// never holds its caller (and whatever lock the caller holds) longer. A
/// call left behind ends when the module answers; its result is dropped.
/// The error says why there is no answer.
pub fn within<R: Send + 'static>(
    deadline: Duration,
    name: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a thread ({name}): {e}"))?;
    match rx.recv_timeout(deadline) {
        Ok(r) => Ok(r),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("no answer within {deadline:?}"))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("the call ended without an answer".into())
        }
    }
}

fn find_all(token: &Token, kids: &[(&Kid, Alg)]) -> Result<HashMap<Kid, TokenKey>, StoreError> {
    let mut found = HashMap::new();
    for (kid, alg) in kids {
        // An object another process destroyed while this one looked is not
        // found (and looked for again after a reopening).
        match token.key(kid, *alg) {
            Ok(Some(k)) => {
                found.insert((*kid).clone(), k);
            }
            Ok(None) | Err(TokenError::StaleHandle { .. }) => {}
            Err(e) => return Err(StoreError::Token(e)),
        }
    }
    Ok(found)
}

/// The repairs of the crash rules; returns what was done and what is left
/// for the operator.
fn repair(
    token: &Token,
    state: &KeyringState,
    ring: &str,
    shared: bool,
) -> Result<Vec<String>, StoreError> {
    let objects = token.list().map_err(StoreError::Token)?;
    let label = token.label();
    let now = unix_now();
    let stale = |since: Option<u64>| {
        !shared || since.is_none_or(|s| now.saturating_sub(s) >= STALE_STAGED.as_secs())
    };
    let live = |kid: &Kid| state.keys.iter().any(|k| &k.kid == kid);
    let ended = |kid: &Kid| state.history.iter().any(|k| &k.kid == kid);
    let mut notes = Vec::new();
    let unnamed = objects.iter().filter(|o| o.owner == Owner::Unnamed).count();
    if unnamed > 0 {
        notes.push(format!(
            "pkcs11:{label} holds {unnamed} key object(s) with neither a label nor an id: SoftHSM2 \
             leaves such objects when a process is killed while it creates one (or another \
             application made them); they were never published and jwksd does not destroy what \
             it cannot name. If nothing else uses this token, remove them with the token's own \
             tools (`pkcs11-tool --module {module} --token-label {label} --login \
             --list-objects` shows them)",
            module = token.module().display()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for TokenObject { owner, .. } in &objects {
        if !seen.insert(owner.clone()) {
            continue;
        }
        match owner {
            Owner::Staged { kid, .. } | Owner::Kid(kid) if live(kid) => {}
            Owner::Staged { kid, .. } | Owner::Kid(kid) if ended(kid) => {
                token.destroy(kid).map_err(StoreError::Token)?;
                notes.push(format!(
                    "destroyed {kid} in pkcs11:{label}, of a retired or revoked key"
                ));
            }
            Owner::Staged {
                kid,
                ring: r,
                since,
            } if r == ring && stale(Some(*since)) => {
                token.destroy(kid).map_err(StoreError::Token)?;
                notes.push(format!(
                    "destroyed {kid} in pkcs11:{label}: a key generated but never committed \
                     (it was never published)"
                ));
            }
            Owner::Pending(p) if stale(pending_since(p)) => {
                token.destroy_pending(p).map_err(StoreError::Token)?;
                notes.push(format!(
                    "destroyed {p} in pkcs11:{label}: a generation interrupted before its kid \
                     was known (never published)"
                ));
            }
            Owner::Staged { ring: r, .. } if r == ring => {}
            Owner::Pending(_) | Owner::Unnamed => {}
            Owner::Staged { kid, .. } | Owner::Kid(kid) => notes.push(unknown_object(token, kid)),
        }
    }
    Ok(notes)
}

/// The report of an object the state does not know: what it is and the
/// command that removes it, if it is not wanted.
fn unknown_object(token: &Token, kid: &Kid) -> String {
    let id = hex::encode(kid.as_str());
    format!(
        "pkcs11:{label} holds a key {kid} that the state does not know (restored from another \
         backup, or made by another jwksd); if it is not wanted, remove it with `pkcs11-tool \
         --module {module} --token-label {label} --login --delete-object --type privkey --id \
         {id}` and the same with `--type pubkey`",
        label = token.label(),
        module = token.module().display(),
    )
}

/// How long destroying the objects of the keys one commit ended may take.
pub const DESTROY_DEADLINE: Duration = Duration::from_secs(10);

/// Destroys the objects of keys a committed state ended (retired or
/// revoked), best effort: a failure leaves them for the next load, which
/// destroys them as the state says. Within [`DESTROY_DEADLINE`]: the
/// caller holds the key ring, which a token that hangs must not hold with
/// it.
pub(super) fn destroy_ended(token: &Arc<Token>, before: &KeyringState, after: &KeyringState) {
    let ended: Vec<KeyRecord> = after
        .history
        .iter()
        .filter(|k| {
            before.keys.iter().any(|b| b.kid == k.kid)
                && k.custody.token_label() == Some(token.label())
        })
        .cloned()
        .collect();
    if ended.is_empty() {
        return;
    }
    let t = token.clone();
    let left = ended.clone();
    let destroyed = within(DESTROY_DEADLINE, "jwksd-token-destroy", move || {
        for k in &left {
            match t.destroy(&k.kid) {
                Ok(_) => {
                    tracing::info!(kid = %k.kid, custody = %k.custody, "destroyed the private key of a {} key", k.state)
                }
                Err(e) => {
                    tracing::warn!(kid = %k.kid, custody = %k.custody, error = %e, "could not destroy the private key of a {} key; the next start destroys it", k.state)
                }
            }
        }
    });
    if let Err(why) = destroyed {
        for k in &ended {
            tracing::warn!(kid = %k.kid, custody = %k.custody, error = %why, "the token did not finish destroying the private key of a {} key; it may still, or the next start destroys it", k.state);
        }
    }
}

/// Whether an error of the token means it is away (as opposed to refusing
/// one request): the token's health turns unready.
pub fn is_unavailable(e: &TokenError) -> bool {
    e.is_unavailable() || matches!(e, TokenError::KeyNotFound { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_does_not_answer_is_given_up_at_its_deadline() {
        // A call blocked until the test lets it go: a token that hangs.
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let given_up = within(Duration::from_millis(20), "test-hung", move || {
            let _ = blocked.recv();
            1
        });
        assert_eq!(given_up, Err("no answer within 20ms".to_owned()));
        let _ = release.send(());
        // An answer within the deadline is the call's.
        assert_eq!(within(Duration::from_secs(10), "test-quick", || 2), Ok(2));
        // A call that panics ends without an answer.
        let panicked = within(Duration::from_secs(10), "test-panics", || -> u8 {
            panic!("module crashed")
        });
        assert_eq!(panicked, Err("the call ended without an answer".to_owned()));
    }
}

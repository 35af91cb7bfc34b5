//! Durable key storage: the [`KeyStore`] trait and its implementations.
//!
//! A store keeps two things: the key-ring state (what the planner reads) and
//! each key's private material. A key's private material is durable before
//! any state that publishes its kid ([`KeyStore::stage`] before
//! [`KeyStore::commit`]), and the commit is the one atomic step that makes a
//! change real.

pub mod audit_log;
pub mod check;
pub mod fs;
pub mod postgres;
pub mod seal;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::audit::{Cursor, Entry, Head, Record};
use crate::keys::{KeyError, KeyMaterial, Kid};
use crate::lifecycle::KeyringState;
pub use seal::{MasterKey, SealError};

/// What a store holds, as loaded and checked at start-up.
/// What a rekey did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekeyed {
    pub rewritten: usize,
    pub already: usize,
    /// False when stopped before the end; run it again to finish.
    pub complete: bool,
}

pub struct Loaded {
    pub state: KeyringState,
    /// Private keys of every next, active and retiring key that has one.
    pub keys: HashMap<Kid, KeyMaterial>,
    /// Things repaired or worth an operator's attention; never key material.
    pub notes: Vec<String>,
}

/// Storage for the key ring. Methods block (disk or database I/O): async
/// callers run them on a blocking thread.
pub trait KeyStore: Send + Sync + 'static {
    /// Loads and checks the state and the private keys it refers to.
    fn load(&self) -> Result<Loaded, StoreError>;

    /// Makes a generated key's private material durable without publishing
    /// it; a staged key no committed state refers to is discarded on load.
    fn stage(&self, key: &KeyMaterial) -> Result<(), StoreError>;

    /// Drops a staged key that will not be committed (best effort: load
    /// discards any that remain).
    fn discard(&self, kid: &Kid);

    /// Atomically replaces the state, if the stored version is still
    /// `state.version - 1`, and records `audit` (the events of the change)
    /// in the same commit: both or neither. Private keys of keys the new
    /// state retired or revoked are destroyed once the new state is
    /// durable. Returns the audit records written.
    fn commit(&self, state: &KeyringState, audit: &[Entry]) -> Result<Vec<Record>, StoreError>;

    /// Records events that change no state (a refused command, a rekey).
    fn record(&self, audit: &[Entry]) -> Result<Vec<Record>, StoreError>;

    /// Audit records after sequence number `after`, oldest first, at most
    /// `limit`.
    fn audit_since(&self, after: u64, limit: usize) -> Result<Vec<Record>, StoreError>;

    /// The last audit record's sequence number and hash.
    fn audit_head(&self) -> Result<Head, StoreError>;

    /// Where each webhook endpoint's deliveries stand, by endpoint name.
    fn webhook_cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError>;

    /// Records where `endpoint`'s deliveries stand.
    fn set_webhook_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), StoreError>;

    /// Where the store lives, for logs and errors.
    fn location(&self) -> String;

    /// Seals every private key with the current master key (those in the
    /// clear or sealed with the previous one), one key at a time, so that
    /// an interruption leaves each key openable with the old or the new
    /// master key and a second run finishes. `proceed` is asked before each
    /// key is rewritten; false stops there (`complete` false).
    fn rekey(&self, proceed: &mut dyn FnMut(&Kid) -> bool) -> Result<Rekeyed, StoreError>;

    /// The version of the committed state, read cheaply: replicas sharing
    /// a store poll it to learn of changes.
    fn version(&self) -> Result<u64, StoreError>;

    /// Takes or renews the right to run the planner for `lease`; returns
    /// until when it is held (`None`: another replica holds it). A store
    /// only one process can open (the directory store's lock) always
    /// grants it.
    fn lead(&self, lease: Duration) -> Result<Option<Instant>, StoreError> {
        Ok(Some(Instant::now() + lease))
    }

    /// Gives the lease up at shutdown, so another replica need not wait
    /// for it to expire.
    fn resign(&self) {}

    /// Whether other processes may change this store.
    fn shared(&self) -> bool {
        false
    }

    /// This process as the audit records and the lease name it.
    fn replica(&self) -> Option<String> {
        None
    }

    /// Who holds the leader lease, and for how much longer (a shared
    /// store); `None` when nobody does, or the store has no lease.
    fn lease_holder(&self) -> Result<Option<LeaseHolder>, StoreError> {
        Ok(None)
    }
}

/// The replica that holds the leader lease of a shared store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    pub replica: String,
    /// Milliseconds until the lease expires unless renewed (negative:
    /// expired, not yet taken over).
    pub expires_in_ms: i64,
}

/// One thing wrong with a store, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub what: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (fix: {})",
            self.path.display(),
            self.what,
            self.fix
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key directory {dir} is in use by another jwksd process{}; stop it first, or give \
         this one its own keys_dir",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error(
        "{path} has mode {mode:o}, readable by group or others; fix with `chmod {want:o} {path}`"
    )]
    Permissions { path: PathBuf, mode: u32, want: u32 },
    #[error("the key store is inconsistent; nothing in it was changed:\n{}", list(.0))]
    Inconsistent(Vec<Problem>),
    #[error(
        "state changed underneath: expected version {expected}, found {found} (another \
         process wrote the store)"
    )]
    Conflict { expected: u64, found: u64 },
    #[error("database: {op}: {reason}")]
    Database { op: &'static str, reason: String },
    /// The database did not answer within our deadline (it may hang rather
    /// than refuse: a stopped server, a stalled disk, a frozen VM); the
    /// connection was dropped.
    #[error(
        "database: {op}: the database did not answer in time (deadline {after:?}); the connection \
         was dropped and the next call reconnects"
    )]
    Timeout { op: &'static str, after: Duration },
    /// No connection to the database could be made (refused, no such
    /// host, role or database, authentication): the cause once, and what
    /// to check.
    #[error("database: cannot connect to {servers}: {reason}; {fix}")]
    Connect {
        servers: String,
        reason: String,
        fix: String,
    },
    /// A TLS handshake with the database failed.
    #[error("database: TLS with {hosts} (sslmode={sslmode}) failed: {reason}; {fix}")]
    Tls {
        hosts: String,
        sslmode: &'static str,
        reason: String,
        fix: String,
    },
    #[error("sealing key {kid}: {source}")]
    Seal {
        kid: Kid,
        #[source]
        source: SealError,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The PKCS#11 token that holds keys the state names.
    #[error(transparent)]
    Token(#[from] crate::keys::pkcs11::TokenError),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// Whether the store did not answer (as opposed to answering with
    /// something this process cannot use: a state it cannot unseal, parse
    /// or trust).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            StoreError::Database { .. }
                | StoreError::Io { .. }
                | StoreError::Timeout { .. }
                | StoreError::Tls { .. }
                | StoreError::Connect { .. }
        )
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// This process as the audit records and the leader lease name it:
/// host, process id and a random suffix (a restarted process is another).
pub fn replica_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // or truncates within it.
    let host = unsafe {
        if libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "unknown".to_owned()
        }
    };
    let suffix: u32 = rand::random();
    format!("{host}/{}/{suffix:08x}", std::process::id())
}

//! Operators' commands (rotate, revoke): what one is, what it answers and
//! how it is refused. The [`Driver`] carries them out by the rules of
//! `lifecycle::pending`.
//!
//! [`Driver`]: crate::lifecycle::Driver

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::id::{Alg, Kid};
use crate::lifecycle::planner::{RevokeError, RotateError};
use crate::lifecycle::state::KeyState;

/// How often an operator's command is judged again when other replicas
/// keep committing first.
pub const ROTATE_ATTEMPTS: u32 = 3;

/// How long an operator's rotation waits for its new next key before it
/// answers anyway (RSA-4096 generation can take seconds), and how long one
/// that meets a next key still being generated waits for it.
pub const ROTATE_NEXT_WAIT: Duration = Duration::from_secs(30);

/// The longest a command is worked on: one still waiting then (for a next
/// key, or after losing its compare-and-set to other writers) is refused,
/// changing nothing. Below the admin API's own wait for an answer, so that
/// nothing is committed after the caller was told it timed out.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(100);

/// How often a rotation that waits for a next key being generated (here or
/// by another replica) is judged again.
pub const RETRY_POLL: Duration = Duration::from_millis(100);

/// Names a command between the shell, which holds where its answer goes,
/// and the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

/// An operator's command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Rotate `alg` (every configured algorithm when `None`); `force`:
    /// before the next key is published long enough (unsafe).
    Rotate {
        alg: Option<Alg>,
        force: bool,
    },
    Revoke {
        kid: Kid,
    },
}

/// What a command that was carried out answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Rotated(Vec<Rotated>),
    Revoked(Revoked),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rotate(RotateError),
    #[error(transparent)]
    Revoke(RevokeError),
    /// This replica cannot read the shared state: it refuses rather than
    /// act on old keys (the shell adds why the read fails).
    #[error(
        "this replica cannot read the shared key-ring state; send the command to another replica"
    )]
    NotSynced,
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    /// The error code the admin API answers it with (docs/api.md), and the
    /// audit log records.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Rotate(RotateError::TooEarly { .. }) => "too_early",
            CommandError::Rotate(RotateError::TooManyPublished { .. }) => "too_many_published",
            CommandError::Rotate(RotateError::NotConfigured(_)) => "alg_not_configured",
            CommandError::Rotate(RotateError::NotReady { .. }) => "not_ready",
            CommandError::Revoke(RevokeError::Unknown(_)) => "unknown_kid",
            CommandError::Revoke(RevokeError::AlreadyEnded { .. }) => "already_ended",
            CommandError::NotSynced | CommandError::Failed(_) => "store_failed",
        }
    }
}

/// One algorithm rotated, in `/v1/rotate`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    pub alg: Alg,
    /// The new active key.
    pub kid: Kid,
    pub previous_kid: Kid,
    pub forced: bool,
    /// The new next key, committed and published before the answer (absent
    /// only when its generation failed or took longer than
    /// [`ROTATE_NEXT_WAIT`]; the rotation itself stands either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_kid: Option<Kid>,
    /// Another replica carried out this very rotation first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_another_replica: bool,
}

/// A `/v1/keys/{kid}/revoke` answer. The revocation is committed before it
/// is sent; an emergency replacement key is generated afterwards, so the
/// answer cannot tell whether that worked (see the log and `/readyz`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub kid: Kid,
    pub alg: Alg,
    /// The state the key was in.
    pub was: KeyState,
    /// The next key promoted in its place, when the active key was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<Kid>,
}

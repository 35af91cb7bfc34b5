//! What the admin API sends the scheduler: an operator's command with
//! where its answer goes, split into the core's [`Command`] and the reply
//! the scheduler keeps while the driver carries the command out.

use tokio::sync::oneshot;

use crate::audit::Actor;
use crate::keys::{Alg, Kid};
use crate::lifecycle::{Answer, Command, CommandError, Revoked, Rotated};

/// An operator's command from the admin API, with where its answer goes.
pub enum Request {
    Rotate {
        alg: Option<Alg>,
        force: bool,
        /// Who asked: the audit log names them.
        actor: Actor,
        reply: oneshot::Sender<Result<Vec<Rotated>, CommandError>>,
    },
    Revoke {
        kid: Kid,
        actor: Actor,
        reply: oneshot::Sender<Result<Revoked, CommandError>>,
    },
}

/// Where a command's answer goes, while the driver carries it out.
pub(super) enum Reply {
    Rotate(oneshot::Sender<Result<Vec<Rotated>, CommandError>>),
    Revoke(oneshot::Sender<Result<Revoked, CommandError>>),
}

impl Request {
    pub(super) fn split(self) -> (Command, Reply, Actor) {
        match self {
            Request::Rotate {
                alg,
                force,
                actor,
                reply,
            } => (Command::Rotate { alg, force }, Reply::Rotate(reply), actor),
            Request::Revoke { kid, actor, reply } => {
                (Command::Revoke { kid }, Reply::Revoke(reply), actor)
            }
        }
    }
}

impl Reply {
    pub(super) fn send(self, result: Result<Answer, CommandError>) {
        let mismatch = |a: Answer| CommandError::Failed(format!("unexpected answer {a:?}"));
        // A requester that gave up (timed out) is no longer listening.
        match self {
            Reply::Rotate(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Rotated(r) => Ok(r),
                    other => Err(mismatch(other)),
                }));
            }
            Reply::Revoke(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Revoked(r) => Ok(r),
                    other => Err(mismatch(other)),
                }));
            }
        }
    }
}

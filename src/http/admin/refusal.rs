//! Why an admin request is refused, and the refusals several endpoints
//! share: an unknown or unconfigured algorithm, no active key.

use hyper::{Response, StatusCode};

use crate::http::{Body, error};
use crate::keys::Alg;

/// Why a request was refused: status, machine-readable code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl std::fmt::Display,
    ) -> Refusal {
        Refusal {
            status,
            code,
            message: message.to_string(),
        }
    }

    pub(super) fn response(self) -> Response<Body> {
        error(self.status, self.code, self.message)
    }
}

/// The algorithm a request names, or the only configured one.
pub fn choose_alg(algorithms: &[Alg], given: Option<&str>) -> Result<Alg, Refusal> {
    match given {
        Some(s) => {
            let alg: Alg = s
                .parse()
                .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "unknown_alg", e))?;
            if !algorithms.contains(&alg) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "alg_not_configured",
                    format!("{alg} is not a configured algorithm"),
                ));
            }
            Ok(alg)
        }
        None => match algorithms {
            [only] => Ok(*only),
            _ => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "alg_required",
                "several algorithms are configured: name one with alg",
            )),
        },
    }
}

/// No active key for `alg` within the wait (see `daemon::ACTIVE_KEY_WAIT`).
pub(super) fn no_active_key(alg: Alg) -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_active_key",
        format!(
            "{alg} has no active key: none was published within {}s (see /readyz)",
            crate::daemon::ACTIVE_KEY_WAIT.as_secs()
        ),
    )
}

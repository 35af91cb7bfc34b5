//! What the planner decides and the shell carries out: one change to the
//! key ring. Apart from the planner so that the state can apply an action
//! without importing the rules that chose it.

use crate::keys::id::{Alg, Kid};
use crate::lifecycle::state::{EarlyActivation, KeyState, Promised, Served, Trigger};
use crate::time::Timestamp;

/// A change the shell must carry out. Transitions come before generations
/// in a plan; the shell commits them in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Generate a keypair and add it in `role` (`Next`, or `Active` when the
    /// algorithm has no key that could be promoted).
    Generate {
        alg: Alg,
        rsa_bits: u32,
        role: KeyState,
        trigger: Trigger,
        early: Option<EarlyActivation>,
        /// Recorded on the key when it is added as active.
        promised: Promised,
    },
    /// next -> active; `promised` is what the configuration promises
    /// signers from now on.
    Activate {
        kid: Kid,
        trigger: Trigger,
        early: Option<EarlyActivation>,
        promised: Promised,
    },
    /// Records the promises the configuration makes from now on, keeping
    /// those made under earlier, larger values: see [`crate::lifecycle::record_promises`].
    RecordPromises { served: Served, signing: Promised },
    /// active -> retiring; published until `retire_at`.
    Deactivate {
        kid: Kid,
        trigger: Trigger,
        retire_at: Timestamp,
    },
    /// retiring (or next) -> retired: out of the JWKS, private key destroyed.
    Retire { kid: Kid, trigger: Trigger },
    /// Out of the JWKS at once, private key destroyed.
    Revoke { kid: Kid },
}

impl Action {
    pub fn is_generate(&self) -> bool {
        matches!(self, Action::Generate { .. })
    }
}

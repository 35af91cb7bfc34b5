//! The key lifecycle: plain state, the timeline policy, the pure planner,
//! and the timeline rules the HTTP layer applies (token lifetimes,
//! readiness).

pub mod action;
pub mod planner;
pub mod policy;
pub mod readiness;
pub mod state;
pub mod tokens;

pub use action::Action;
pub use planner::{
    Deferred, Plan, RevokeError, RotateError, Upcoming, UpcomingEvent, deferred,
    earliest_activation, plan, record_promises, revoke, rotate, upcoming, with_promises,
};
pub use policy::{Policy, PolicyError, Schedule};
pub use state::{
    EarlyActivation, KeyRecord, KeyState, KeyringState, NewKey, Promised, Served, Transition,
    Trigger,
};

//! The key lifecycle: plain state, the timeline policy, and the pure planner.

pub mod planner;
pub mod policy;
pub mod state;

pub use planner::{
    Action, Plan, RevokeError, RotateError, Upcoming, UpcomingEvent, plan, revoke, rotate, upcoming,
};
pub use policy::{Policy, PolicyError, Schedule};
pub use state::{EarlyActivation, KeyRecord, KeyState, KeyringState, NewKey, Transition, Trigger};

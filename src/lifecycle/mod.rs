//! The key lifecycle: plain state, the timeline policy, the pure planner,
//! and the timeline rules the HTTP layer applies (token lifetimes,
//! readiness).

pub mod action;
pub mod command;
pub mod driver;
pub mod event;
mod pending;
pub mod planner;
pub mod policy;
pub mod promises;
pub mod readiness;
pub mod state;
pub mod timeline;
pub mod tokens;

pub use action::{Action, ApplyError, NewKey};
pub use command::{Answer, Command, CommandError, CommandId, ROTATE_NEXT_WAIT, Revoked, Rotated};
pub use driver::{Committed, Driver, Synced, Work};
pub use planner::{
    Deferred, Plan, RevokeError, RotateError, Upcoming, UpcomingEvent, deferred,
    earliest_activation, plan, record_promises, revoke, rotate, rotated_elsewhere, still_wanted,
    upcoming, with_promises,
};
pub use policy::{Policy, PolicyError, Schedule};
pub use state::{
    EarlyActivation, HISTORY_LIMIT, KeyRecord, KeyState, KeyringState, Promised, Served,
    Transition, Trigger,
};

/// What the crate's unit tests build the core from.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use crate::keys::id::{Alg, PublicKey};
    use crate::lifecycle::{NewKey, Policy, Schedule};

    /// ES256 every `every` seconds: tokens 4 s, skew 1 s, caches 1 s,
    /// publish_ahead 2 s.
    pub(crate) fn policy(every: u64) -> Policy {
        Policy {
            algorithms: vec![Alg::ES256],
            rsa_bits: 2048,
            schedule: Schedule::Every(Duration::from_secs(every)),
            max_token_lifetime: Duration::from_secs(4),
            clock_skew: Duration::from_secs(1),
            jwks_cache_max_age: Duration::from_secs(1),
            publish_ahead: Duration::from_secs(2),
            signing_key_cache_max_age: Duration::from_secs(1),
            propagation: Duration::ZERO,
            custody: Default::default(),
        }
    }

    /// A distinct ES256 key (not a real point: nothing signs with it).
    pub(crate) fn fake_key(n: u32) -> NewKey {
        let public = PublicKey::Ec {
            crv: "P-256".into(),
            x: format!("x{n}"),
            y: "y".into(),
        };
        NewKey {
            kid: public.thumbprint(),
            alg: Alg::ES256,
            public,
            custody: Default::default(),
        }
    }
}

/// The core stays pure by construction: its files, and the two modules it
/// may use (`keys::id`, `keys::custody`, `time`), name no clock, no I/O, no randomness and
/// nothing of the shell. (A module rather than a crate of its own: this
/// test holds the line as well, without a second crate's re-exports.)
#[cfg(test)]
mod purity {
    const CORE: &[(&str, &str)] = &[
        ("lifecycle/mod.rs", include_str!("mod.rs")),
        ("lifecycle/action.rs", include_str!("action.rs")),
        ("lifecycle/command.rs", include_str!("command.rs")),
        ("lifecycle/pending.rs", include_str!("pending.rs")),
        ("lifecycle/driver.rs", include_str!("driver.rs")),
        ("lifecycle/event.rs", include_str!("event.rs")),
        ("lifecycle/planner.rs", include_str!("planner.rs")),
        ("lifecycle/policy.rs", include_str!("policy.rs")),
        ("lifecycle/promises.rs", include_str!("promises.rs")),
        ("lifecycle/readiness.rs", include_str!("readiness.rs")),
        ("lifecycle/state.rs", include_str!("state.rs")),
        ("lifecycle/timeline.rs", include_str!("timeline.rs")),
        ("lifecycle/tokens.rs", include_str!("tokens.rs")),
        ("keys/id.rs", include_str!("../keys/id.rs")),
        ("keys/custody.rs", include_str!("../keys/custody.rs")),
        ("keys/error.rs", include_str!("../keys/error.rs")),
        ("time.rs", include_str!("../time.rs")),
    ];
    /// What the core may name of the crate.
    const ALLOWED: &[&str] = &[
        "crate::lifecycle",
        "crate::keys::id",
        "crate::keys::custody",
        "crate::time::",
        "super::",
    ];
    /// What would make it impure: clocks, I/O, threads, randomness, the
    /// shell's crates.
    const BANNED: &[&str] = &[
        "Instant",
        "SystemTime::now",
        "std::fs",
        "std::net",
        "std::env",
        "std::thread",
        "std::process",
        "tokio",
        "hyper",
        "openssl",
        "josekit",
        "libc",
        "rand",
        "OsRng",
        "tracing",
    ];

    fn code(text: &str) -> impl Iterator<Item = (usize, &str)> {
        // Up to this module's own tests (which name what they ban).
        let end = text.find("#[cfg(test)]\nmod purity").unwrap_or(text.len());
        text[..end]
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with("//"))
    }

    #[test]
    fn the_core_names_only_pure_modules() {
        for (file, text) in CORE {
            for (n, line) in code(text) {
                let mut rest = line;
                while let Some(i) = rest.find("crate::") {
                    let at = &rest[i..];
                    let from_super = file.starts_with("keys/") && at.starts_with("crate::keys::");
                    assert!(
                        from_super || ALLOWED.iter().any(|a| at.starts_with(a)),
                        "{file}:{}: the core names {at}",
                        n + 1
                    );
                    rest = &at[7..];
                }
            }
        }
    }

    #[test]
    fn the_core_reads_no_clock_and_does_no_io() {
        for (file, text) in CORE {
            for (n, line) in code(text) {
                for b in BANNED {
                    let hit = line.match_indices(b).any(|(i, _)| {
                        let before = line[..i].chars().next_back();
                        let after = line[i + b.len()..].chars().next();
                        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    });
                    assert!(!hit, "{file}:{}: {b} in the core: {line}", n + 1);
                }
            }
        }
    }
}

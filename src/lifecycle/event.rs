//! What happened to the key ring, as data: one [`Event`] per lifecycle
//! transition a commit makes, and one per operator's command that was
//! refused. The core derives them ([`between`]); the shell records them in
//! the audit log in the same commit as the state (`crate::audit`) and
//! delivers them (the `/v1/events` stream). docs/events.md lists them.

use serde::{Deserialize, Serialize};

use crate::keys::id::{Alg, Kid};
use crate::lifecycle::state::{EarlyActivation, KeyRecord, KeyState, KeyringState, Trigger};

/// The kind of an event: its name on the stream and in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A key was generated and published as the next key.
    #[serde(rename = "key.next")]
    Next,
    /// A key became the active (signing) key of its algorithm.
    #[serde(rename = "key.active")]
    Active,
    /// The active key stopped signing; still published until `retire_at`.
    #[serde(rename = "key.retiring")]
    Retiring,
    /// A key left the JWK Set at the end of its retention; private key
    /// destroyed.
    #[serde(rename = "key.retired")]
    Retired,
    /// An operator revoked a key: out of the JWK Set at once.
    #[serde(rename = "key.revoked")]
    Revoked,
    /// An operator's rotation or revocation was refused; nothing changed.
    #[serde(rename = "command.refused")]
    Refused,
    /// `jwksd rekey` sealed the private keys under a new master key.
    #[serde(rename = "store.rekeyed")]
    Rekeyed,
    /// `jwksd store copy` filled this store from another one.
    #[serde(rename = "store.copied")]
    Copied,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Next,
        Kind::Active,
        Kind::Retiring,
        Kind::Retired,
        Kind::Revoked,
        Kind::Refused,
        Kind::Rekeyed,
        Kind::Copied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Next => "key.next",
            Kind::Active => "key.active",
            Kind::Retiring => "key.retiring",
            Kind::Retired => "key.retired",
            Kind::Revoked => "key.revoked",
            Kind::Refused => "command.refused",
            Kind::Rekeyed => "store.rekeyed",
            Kind::Copied => "store.copied",
        }
    }

    /// Whether a signer must act on it: a new next key to prefetch, a new
    /// active key to sign with, a revoked key to drop. The `/v1/events`
    /// stream carries these.
    pub fn concerns_signers(self) -> bool {
        matches!(self, Kind::Next | Kind::Active | Kind::Revoked)
    }

    fn of(to: KeyState) -> Kind {
        match to {
            KeyState::Next => Kind::Next,
            KeyState::Active => Kind::Active,
            KeyState::Retiring => Kind::Retiring,
            KeyState::Retired => Kind::Retired,
            KeyState::Revoked => Kind::Revoked,
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event {s:?}; events are {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened to the key ring. Public facts only: never key
/// material or tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<Kid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<Alg>,
    /// The key's state before; absent for a key just generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<KeyState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<KeyState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Why a key became active before `publish_ahead` had passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_activation: Option<EarlyActivation>,
    /// For `command.refused`: the command (`rotate`, `revoke`) and the
    /// error code it was answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event {
    fn transition(k: &KeyRecord, from: Option<KeyState>, to: KeyState, trigger: Trigger) -> Event {
        Event {
            kind: Kind::of(to),
            kid: Some(k.kid.clone()),
            alg: Some(k.alg),
            from,
            to: Some(to),
            trigger: Some(trigger),
            early_activation: (to == KeyState::Active)
                .then_some(k.early_activation)
                .flatten(),
            command: None,
            reason: None,
        }
    }

    /// A command run on the store (`store.rekeyed`, `store.copied`), with
    /// what it did.
    pub fn store(kind: Kind, command: &str, detail: impl Into<String>) -> Event {
        Event {
            kind,
            kid: None,
            alg: None,
            from: None,
            to: None,
            trigger: None,
            early_activation: None,
            command: Some(command.to_owned()),
            reason: Some(detail.into()),
        }
    }

    /// An operator's command that was refused, with its error code.
    pub fn refused(
        command: &str,
        kid: Option<Kid>,
        alg: Option<Alg>,
        reason: impl Into<String>,
    ) -> Event {
        Event {
            kind: Kind::Refused,
            kid,
            alg,
            from: None,
            to: None,
            trigger: None,
            early_activation: None,
            command: Some(command.to_owned()),
            reason: Some(reason.into()),
        }
    }
}

/// The transitions `after` made since `before`, in the order they were
/// made: each key's transitions that `before` does not have. A key may
/// move to the history (retired, revoked) in the same commit.
pub fn between(before: &KeyringState, after: &KeyringState) -> Vec<Event> {
    let known = |kid: &Kid| {
        before
            .keys
            .iter()
            .chain(&before.history)
            .find(|k| &k.kid == kid)
            .map_or(0, |k| k.transitions.len())
    };
    let mut out: Vec<(crate::time::Timestamp, usize, Event)> = Vec::new();
    for k in after.keys.iter().chain(&after.history) {
        let seen = known(&k.kid);
        for t in k.transitions.iter().skip(seen) {
            let n = out.len();
            out.push((t.at, n, Event::transition(k, t.from, t.to, t.trigger)));
        }
    }
    // Stable by time, then by where they were found: one commit's
    // transitions share a time, and keys are listed in a fixed order.
    out.sort_by_key(|(at, n, _)| (*at, *n));
    out.into_iter().map(|(_, _, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::action::Action;
    use crate::lifecycle::state::Promised;
    use crate::lifecycle::testing::fake_key;
    use crate::time::Timestamp;

    #[test]
    fn each_transition_of_a_commit_is_one_event_in_order() {
        let t0 = Timestamp::from_millis(1_000_000);
        let mut s = KeyringState::default();
        let gen_ = |role| Action::Generate {
            alg: Alg::ES256,
            rsa_bits: 2048,
            role,
            trigger: Trigger::Startup,
            early: Some(EarlyActivation::Bootstrap),
            promised: Promised::default(),
        };
        let (a, b) = (fake_key(1), fake_key(2));
        s.apply(&gen_(KeyState::Active), t0, Some(a.clone()))
            .unwrap();
        let before = s.clone();
        s.apply(&gen_(KeyState::Next), t0, Some(b.clone())).unwrap();
        let evs = between(&before, &s);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].kind, Kind::Next);
        assert_eq!(evs[0].kid.as_ref(), Some(&b.kid));

        let before = s.clone();
        let t1 = Timestamp::from_millis(2_000_000);
        s.apply(
            &Action::Activate {
                kid: b.kid.clone(),
                trigger: Trigger::Manual,
                early: None,
                promised: Promised::default(),
            },
            t1,
            None,
        )
        .unwrap();
        s.apply(
            &Action::Deactivate {
                kid: a.kid.clone(),
                trigger: Trigger::Manual,
                retire_at: t1,
            },
            t1,
            None,
        )
        .unwrap();
        s.apply(&Action::Revoke { kid: a.kid.clone() }, t1, None)
            .unwrap();
        let kinds: Vec<Kind> = between(&before, &s).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [Kind::Active, Kind::Retiring, Kind::Revoked]);
        assert!(between(&s, &s).is_empty());
        assert!(
            kinds
                .iter()
                .all(|k| k.concerns_signers() != (*k == Kind::Retiring))
        );
    }

    #[test]
    fn kinds_read_back_from_their_names() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("key.lost".parse::<Kind>().unwrap_err().contains("key.next"));
    }
}

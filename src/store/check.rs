//! One consistency check for every store: the state a store loaded, judged
//! against the private keys it holds. Pure; each store words the findings
//! for its own medium (a file to restore, a database to restore) and
//! decides what it may repair by itself.

use std::collections::HashSet;

use crate::keys::Kid;
use crate::keys::custody::Custody;
use crate::lifecycle::{KeyRecord, KeyState, KeyringState};

/// What the check found for one key the state names.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding<'a> {
    /// Its private key is held: read it.
    Held(&'a KeyRecord),
    /// Its kid is not the thumbprint of the public key the state carries:
    /// the state was altered.
    NotItsOwnKey(&'a KeyRecord),
    /// A retiring key without its private key: it still verifies and will
    /// not sign again, so nothing is lost.
    MissingRetiring(&'a KeyRecord),
    /// A key that may sign (next or active) without its private key.
    Missing(&'a KeyRecord),
}

/// A private key the store holds that the state does not name.
#[derive(Debug, PartialEq, Eq)]
pub struct Unnamed<'a> {
    pub kid: &'a Kid,
    /// The state records it as retired or revoked: its private key should
    /// have been destroyed (a destruction cut short).
    pub ended: bool,
}

/// Judges `state` against the kids whose private keys the store holds.
/// Findings come in the state's order; unnamed keys in `held`'s. Keys in a
/// token are not the store's to hold: [`check_in`].
pub fn check<'a>(
    state: &'a KeyringState,
    held: impl IntoIterator<Item = &'a Kid> + Clone,
) -> (Vec<Finding<'a>>, Vec<Unnamed<'a>>) {
    check_in(state, &Custody::Software, held)
}

/// [`check`] for the keys of one custody (the store's, or one token's),
/// against what that custody holds.
pub fn check_in<'a>(
    state: &'a KeyringState,
    custody: &Custody,
    held: impl IntoIterator<Item = &'a Kid> + Clone,
) -> (Vec<Finding<'a>>, Vec<Unnamed<'a>>) {
    let holds: HashSet<&Kid> = held.clone().into_iter().collect();
    let findings = state
        .keys
        .iter()
        .filter(|k| &k.custody == custody)
        .map(|k| {
            if k.public.thumbprint() != k.kid {
                Finding::NotItsOwnKey(k)
            } else if holds.contains(&k.kid) {
                Finding::Held(k)
            } else if k.state == KeyState::Retiring {
                Finding::MissingRetiring(k)
            } else {
                Finding::Missing(k)
            }
        })
        .collect();
    let named: HashSet<&Kid> = state.keys.iter().map(|k| &k.kid).collect();
    let ended: HashSet<&Kid> = state.history.iter().map(|k| &k.kid).collect();
    let unnamed = held
        .into_iter()
        .filter(|k| !named.contains(k))
        .map(|kid| Unnamed {
            kid,
            ended: ended.contains(kid),
        })
        .collect();
    (findings, unnamed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Alg;
    use crate::lifecycle::{Action, Trigger};
    use crate::time::Timestamp;

    use crate::lifecycle::testing::fake_key as key;

    fn generate(role: KeyState) -> Action {
        Action::Generate {
            alg: Alg::ES256,
            rsa_bits: 2048,
            role,
            trigger: Trigger::Startup,
            early: None,
            promised: Default::default(),
        }
    }

    #[test]
    fn every_key_is_judged_and_every_unnamed_private_key_reported() {
        let now = Timestamp::from_millis(1_000_000);
        let mut s = KeyringState::default();
        let (gone, r, a, n) = (key(1), key(2), key(3), key(4));
        s.apply(&generate(KeyState::Active), now, Some(gone.clone()))
            .unwrap();
        s.apply(
            &Action::Revoke {
                kid: gone.kid.clone(),
            },
            now,
            None,
        )
        .unwrap();
        s.apply(&generate(KeyState::Active), now, Some(r.clone()))
            .unwrap();
        s.apply(
            &Action::Deactivate {
                kid: r.kid.clone(),
                trigger: Trigger::Manual,
                retire_at: now,
            },
            now,
            None,
        )
        .unwrap();
        s.apply(&generate(KeyState::Active), now, Some(a.clone()))
            .unwrap();
        s.apply(&generate(KeyState::Next), now, Some(n.clone()))
            .unwrap();
        // The store holds the active key, an ended key and a stranger's.
        let stranger = key(9).kid;
        let (findings, unnamed) = check(&s, [&a.kid, &gone.kid, &stranger]);
        let find = |kid: &Kid| s.find(kid).unwrap();
        assert_eq!(
            findings,
            vec![
                Finding::MissingRetiring(find(&r.kid)),
                Finding::Held(find(&a.kid)),
                Finding::Missing(find(&n.kid)),
            ]
        );
        assert_eq!(
            unnamed,
            vec![
                Unnamed {
                    kid: &gone.kid,
                    ended: true
                },
                Unnamed {
                    kid: &stranger,
                    ended: false
                }
            ]
        );
    }

    #[test]
    fn a_key_not_its_own_thumbprint_is_altered_whatever_is_held() {
        let now = Timestamp::from_millis(1_000_000);
        let mut s = KeyringState::default();
        let k = key(1);
        s.apply(&generate(KeyState::Active), now, Some(k.clone()))
            .unwrap();
        s.keys[0].public = key(2).public;
        let (findings, _) = check(&s, [&k.kid]);
        assert_eq!(findings, vec![Finding::NotItsOwnKey(&s.keys[0])]);
    }
}

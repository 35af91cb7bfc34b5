//! The clients in force and the one rule that turns what a request
//! presents (a bearer token, a verified certificate) into a client.

use std::collections::HashSet;
use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::access::cert::CertIdentity;
use crate::access::client::{Client, Require, TokenDigest};
use crate::time::Timestamp;

/// The clients the admin listener accepts: the configured ones, and the
/// built-ins `operator` and `signer` unless a configured client of that
/// name replaces them.
#[derive(Clone, Debug, Default)]
pub struct Clients {
    list: Vec<Arc<Client>>,
    /// Tokens earlier lists accepted and this one does not (the client
    /// removed, or given a new token without an overlap), newest last, at
    /// most [`MAX_WITHDRAWN`]: still recognised, so that a client cut off
    /// is refused as itself and its failures never count against the
    /// address it shares with others.
    withdrawn: Vec<(TokenDigest, Arc<Client>)>,
}

/// Withdrawn tokens remembered (since start: a restart forgets them).
pub const MAX_WITHDRAWN: usize = 1024;

/// Why a request's credentials were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Neither a bearer token nor a certificate of a client.
    Missing,
    /// A bearer token that is no client's.
    InvalidToken,
    /// A client's token past its `expires` (the old one of a rotation).
    ExpiredToken,
    /// A token an earlier list accepted: its client was removed, or given
    /// a new token without an overlap.
    WithdrawnToken,
    /// A verified certificate that matches no client (and no token).
    UnknownCertificate,
    /// A certificate that matches more than one client: which is meant
    /// cannot be told, so neither is.
    AmbiguousCertificate,
    /// `require: both` and one of the two missing or another client's.
    NeedsBoth,
    /// The token of one client over the certificate of another.
    Mismatch,
}

impl Denied {
    /// The message of the `401`.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => "send Authorization: Bearer <token>",
            Denied::InvalidToken => "the bearer token is not valid",
            Denied::ExpiredToken => {
                "the bearer token has expired (replaced by a newer one of this client)"
            }
            Denied::WithdrawnToken => {
                "the bearer token has been withdrawn (its client removed, or given a new token)"
            }
            Denied::UnknownCertificate => {
                "the client certificate is no client's; send Authorization: Bearer <token>"
            }
            Denied::AmbiguousCertificate => {
                "the client certificate matches more than one client; see the server log"
            }
            Denied::NeedsBoth => "this client must present both its certificate and its token",
            Denied::Mismatch => {
                "the bearer token and the client certificate are different clients'"
            }
        }
    }
}

/// A refusal, with the client it names when the credentials named one (its
/// failures are then counted against it, not against the address).
#[derive(Clone, Debug)]
pub struct Refused {
    pub client: Option<Arc<Client>>,
    pub why: Denied,
}

impl Clients {
    /// The list, checked as a whole (each entry's own rules are
    /// [`Client::check`]): names unique, no token digest shared by two
    /// clients. `builtins` are added unless a client of their name is
    /// listed.
    pub fn new(configured: Vec<Client>, builtins: Vec<Client>) -> Result<Clients, String> {
        let mut names = HashSet::new();
        let mut digests: HashSet<TokenDigest> = HashSet::new();
        for c in &configured {
            c.check()?;
            if !names.insert(c.name.clone()) {
                return Err(format!("client {} is listed twice", c.name));
            }
        }
        let mut list: Vec<Arc<Client>> = configured.into_iter().map(Arc::new).collect();
        list.extend(
            builtins
                .into_iter()
                .filter(|b| !names.contains(&b.name))
                .map(Arc::new),
        );
        for c in &list {
            for t in &c.tokens {
                if !digests.insert(t.sha256) {
                    return Err(format!(
                        "client {}: token {:?} is also another client's (or listed twice); \
                         every client needs tokens of its own",
                        c.name, t.sha256
                    ));
                }
            }
        }
        Ok(Clients {
            list,
            withdrawn: Vec::new(),
        })
    }

    /// This list as the successor of `previous` (a reload): the tokens
    /// `previous` accepted or remembered and this list does not accept are
    /// remembered as withdrawn.
    pub fn succeeding(mut self, previous: &Clients) -> Clients {
        let active: HashSet<TokenDigest> = self
            .list
            .iter()
            .flat_map(|c| c.tokens.iter().map(|t| t.sha256))
            .collect();
        let dropped = previous
            .list
            .iter()
            .flat_map(|c| c.tokens.iter().map(move |t| (t.sha256, Arc::clone(c))));
        let mut withdrawn: Vec<(TokenDigest, Arc<Client>)> = previous
            .withdrawn
            .iter()
            .cloned()
            .chain(dropped)
            .filter(|(d, _)| !active.contains(d))
            .collect();
        // One entry per digest, the latest kept.
        let mut seen = HashSet::new();
        withdrawn.reverse();
        withdrawn.retain(|(d, _)| seen.insert(*d));
        withdrawn.truncate(MAX_WITHDRAWN);
        withdrawn.reverse();
        self.withdrawn = withdrawn;
        self
    }

    /// Tokens remembered as withdrawn.
    pub fn withdrawn(&self) -> usize {
        self.withdrawn.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Client>> {
        self.list.iter().find(|c| c.name == name)
    }

    /// The clients a verified certificate matches.
    fn by_certificate(&self, id: &CertIdentity) -> Vec<&Arc<Client>> {
        self.list
            .iter()
            .filter(|c| c.certificate.as_ref().is_some_and(|m| m.matches(id)))
            .collect()
    }

    /// The client a certificate alone names, if exactly one: what the
    /// failure limiter counts a request against before any token is
    /// looked at.
    pub fn named_by_certificate(&self, id: Option<&CertIdentity>) -> Option<Arc<Client>> {
        match self.by_certificate(id?).as_slice() {
            [one] => Some(Arc::clone(one)),
            _ => None,
        }
    }

    /// The token digest matching `bearer`, compared with every configured
    /// digest in constant time (no early exit, so the time taken does not
    /// tell how much of a guess matched or whose token it was near). Each
    /// comparison is four 64-bit XORs folded into one word, so that a
    /// hundred clients cost about as much as two did byte by byte.
    fn by_token(&self, digest: &TokenDigest) -> Option<(&Arc<Client>, usize)> {
        let words = |d: &TokenDigest| {
            let mut w = [0u64; 4];
            for (i, chunk) in d.0.chunks_exact(8).enumerate() {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                w[i] = u64::from_ne_bytes(b);
            }
            w
        };
        let presented = words(digest);
        let mut found = subtle::Choice::from(0);
        let mut client = 0u32;
        let mut token = 0u32;
        for (ci, c) in self.list.iter().enumerate() {
            for (ti, t) in c.tokens.iter().enumerate() {
                let stored = words(&t.sha256);
                let diff = (presented[0] ^ stored[0])
                    | (presented[1] ^ stored[1])
                    | (presented[2] ^ stored[2])
                    | (presented[3] ^ stored[3]);
                let hit = diff.ct_eq(&0u64);
                client.conditional_assign(&(ci as u32), hit);
                token.conditional_assign(&(ti as u32), hit);
                found |= hit;
            }
        }
        bool::from(found).then(|| (&self.list[client as usize], token as usize))
    }

    /// The client a request is, from its bearer token (`None`: no
    /// `Authorization: Bearer`) and the verified certificate of its
    /// connection, at wall time `now` (for token expiries).
    pub fn identify(
        &self,
        bearer: Option<&str>,
        certificate: Option<&CertIdentity>,
        now: Timestamp,
    ) -> Result<Arc<Client>, Refused> {
        let digest = bearer.map(TokenDigest::of);
        self.identify_digest(digest.as_ref(), certificate, now)
    }

    /// [`Clients::identify`] from the bearer token's digest, for a caller
    /// that needs the digest too.
    pub fn identify_digest(
        &self,
        bearer: Option<&TokenDigest>,
        certificate: Option<&CertIdentity>,
        now: Timestamp,
    ) -> Result<Arc<Client>, Refused> {
        let refuse = |client: Option<&Arc<Client>>, why| Refused {
            client: client.cloned(),
            why,
        };
        let by_cert = match certificate.map(|id| self.by_certificate(id)) {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) if v.len() == 1 => Some(v[0]),
            Some(_) => return Err(refuse(None, Denied::AmbiguousCertificate)),
        };
        match bearer {
            Some(bearer) => {
                let Some((client, token)) = self.by_token(bearer) else {
                    // Not secret any more: looked up in plain time.
                    if let Some((_, was)) = self.withdrawn.iter().find(|(d, _)| d == bearer) {
                        return Err(refuse(Some(was), Denied::WithdrawnToken));
                    }
                    return Err(refuse(by_cert, Denied::InvalidToken));
                };
                if !client.tokens[token].valid_at(now) {
                    return Err(refuse(Some(client), Denied::ExpiredToken));
                }
                match by_cert {
                    Some(c) if !Arc::ptr_eq(c, client) => Err(refuse(Some(c), Denied::Mismatch)),
                    None if client.require == Require::Both => {
                        Err(refuse(Some(client), Denied::NeedsBoth))
                    }
                    _ => Ok(Arc::clone(client)),
                }
            }
            None => match by_cert {
                Some(c) if c.require == Require::Both => Err(refuse(Some(c), Denied::NeedsBoth)),
                Some(c) => Ok(Arc::clone(c)),
                None if certificate.is_some() => Err(refuse(None, Denied::UnknownCertificate)),
                None => Err(refuse(None, Denied::Missing)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::client::{CertMatch, Role, TokenEntry};

    fn client(name: &str, role: Role, tokens: &[(&str, Option<i64>)]) -> Client {
        let mut c = Client::builtin(name, role, "unused");
        c.builtin = false;
        c.tokens = tokens
            .iter()
            .map(|(t, exp)| TokenEntry {
                sha256: TokenDigest::of(t),
                expires: exp.map(Timestamp::from_unix_seconds),
            })
            .collect();
        c
    }

    fn cert(subject: &str, san: &str) -> CertIdentity {
        CertIdentity {
            subject: subject.into(),
            sans: vec![crate::access::cert::San::Dns(san.into())],
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn tokens_name_their_client_until_they_expire() {
        let clients = Clients::new(
            vec![client(
                "auth-eu",
                Role::Signer,
                &[("new-token", None), ("old-token", Some(NOW + 3600))],
            )],
            vec![Client::builtin("operator", Role::Operator, "op-token")],
        )
        .unwrap();
        let now = Timestamp::from_unix_seconds(NOW);
        let later = Timestamp::from_unix_seconds(NOW + 3600);
        assert_eq!(
            clients.identify(Some("new-token"), None, now).unwrap().name,
            "auth-eu"
        );
        assert_eq!(
            clients.identify(Some("old-token"), None, now).unwrap().name,
            "auth-eu"
        );
        let expired = clients
            .identify(Some("old-token"), None, later)
            .unwrap_err();
        assert_eq!(expired.why, Denied::ExpiredToken);
        assert_eq!(expired.client.unwrap().name, "auth-eu");
        assert_eq!(
            clients
                .identify(Some("op-token"), None, later)
                .unwrap()
                .role,
            Role::Operator
        );
        let bad = clients.identify(Some("guess"), None, now).unwrap_err();
        assert_eq!(bad.why, Denied::InvalidToken);
        assert!(bad.client.is_none());
        assert_eq!(
            clients.identify(None, None, now).unwrap_err().why,
            Denied::Missing
        );
    }

    #[test]
    fn tokens_withdrawn_by_a_reload_still_name_their_client() {
        let now = Timestamp::from_unix_seconds(NOW);
        let first = Clients::new(
            vec![
                client("a", Role::Signer, &[("a-1", None)]),
                client("b", Role::Signer, &[("b-1", None)]),
            ],
            vec![],
        )
        .unwrap();
        // b removed, a given a new token without an overlap.
        let second = Clients::new(vec![client("a", Role::Signer, &[("a-2", None)])], vec![])
            .unwrap()
            .succeeding(&first);
        for (token, name) in [("b-1", "b"), ("a-1", "a")] {
            let e = second.identify(Some(token), None, now).unwrap_err();
            assert_eq!(
                (e.why, e.client.unwrap().name.as_str()),
                (Denied::WithdrawnToken, name)
            );
        }
        assert_eq!(second.identify(Some("a-2"), None, now).unwrap().name, "a");
        assert!(
            second
                .identify(Some("guess"), None, now)
                .unwrap_err()
                .client
                .is_none()
        );
        // Remembered across reloads, until a list accepts the token again.
        let third = Clients::new(vec![client("b", Role::Viewer, &[("b-1", None)])], vec![])
            .unwrap()
            .succeeding(&second);
        assert_eq!(
            third.identify(Some("b-1"), None, now).unwrap().role,
            Role::Viewer
        );
        let e = third.identify(Some("a-1"), None, now).unwrap_err();
        assert_eq!(e.why, Denied::WithdrawnToken);
        assert_eq!(third.withdrawn(), 2, "a-1 and a-2");
        // Bounded.
        let mut list = third;
        for i in 0..MAX_WITHDRAWN + 10 {
            let t = format!("t-{i}");
            let next = Clients::new(
                vec![client("c", Role::Signer, &[(t.as_str(), None)])],
                vec![],
            )
            .unwrap();
            list = next.succeeding(&list);
        }
        assert_eq!(list.withdrawn(), MAX_WITHDRAWN);
    }

    #[test]
    fn a_listed_client_replaces_the_builtin_of_its_name() {
        let clients = Clients::new(
            vec![client("signer", Role::Signer, &[("named-signer", None)])],
            vec![
                Client::builtin("operator", Role::Operator, "op-token"),
                Client::builtin("signer", Role::Signer, "file-token"),
            ],
        )
        .unwrap();
        let now = Timestamp::from_unix_seconds(NOW);
        assert_eq!(clients.len(), 2);
        assert!(clients.identify(Some("file-token"), None, now).is_err());
        assert!(
            !clients
                .identify(Some("named-signer"), None, now)
                .unwrap()
                .builtin
        );
    }

    #[test]
    fn certificates_alone_or_with_the_token() {
        let mut a = client("a", Role::Signer, &[]);
        a.certificate = Some(CertMatch {
            subject: Some("CN=a".into()),
            san: None,
        });
        let mut b = client("b", Role::Operator, &[("b-token", None)]);
        b.certificate = Some(CertMatch {
            subject: None,
            san: Some("b.internal".into()),
        });
        b.require = Require::Both;
        let clients = Clients::new(vec![a, b], vec![]).unwrap();
        let now = Timestamp::from_unix_seconds(NOW);
        let ca = cert("CN=a", "a.internal");
        let cb = cert("CN=b", "b.internal");
        assert_eq!(clients.identify(None, Some(&ca), now).unwrap().name, "a");
        assert_eq!(
            clients
                .identify(Some("b-token"), Some(&cb), now)
                .unwrap()
                .name,
            "b"
        );
        let e = clients.identify(None, Some(&cb), now).unwrap_err();
        assert_eq!(
            (e.why, e.client.unwrap().name.as_str()),
            (Denied::NeedsBoth, "b")
        );
        assert_eq!(
            clients
                .identify(Some("b-token"), None, now)
                .unwrap_err()
                .why,
            Denied::NeedsBoth
        );
        let e = clients
            .identify(Some("b-token"), Some(&ca), now)
            .unwrap_err();
        assert_eq!(
            (e.why, e.client.unwrap().name.as_str()),
            (Denied::Mismatch, "a")
        );
        let stranger = cert("CN=c", "c.internal");
        assert_eq!(
            clients
                .identify(None, Some(&stranger), now)
                .unwrap_err()
                .why,
            Denied::UnknownCertificate
        );
        let both = cert("CN=a", "b.internal");
        assert_eq!(
            clients.identify(None, Some(&both), now).unwrap_err().why,
            Denied::AmbiguousCertificate
        );
        assert_eq!(clients.named_by_certificate(Some(&ca)).unwrap().name, "a");
        assert!(clients.named_by_certificate(Some(&both)).is_none());
    }

    proptest::proptest! {
        /// Whatever the list, the time and what is presented: a request
        /// is a client only with a token of that client valid at that
        /// time, or a certificate of it alone; `require: both` takes both;
        /// and a refusal names a client only when the credentials did.
        #[test]
        fn identification_follows_the_rules(
            specs in proptest::collection::vec(
                (0u8..3, proptest::collection::vec((0u8..6, proptest::option::of(0i64..20)), 0..3),
                 proptest::option::of(0u8..3), proptest::bool::ANY),
                1..5,
            ),
            token in proptest::option::of(0u8..8),
            subject in proptest::option::of(0u8..4),
            at in 0i64..20,
        ) {
            let mut list = Vec::new();
            let mut used = HashSet::new();
            for (i, (role, tokens, cert, both)) in specs.iter().enumerate() {
                let mut c = client(&format!("c{i}"), Role::ALL[*role as usize], &[]);
                for (t, exp) in tokens {
                    // One client per token: Clients::new refuses shared ones.
                    if used.insert(*t) {
                        c.tokens.push(TokenEntry {
                            sha256: TokenDigest::of(&format!("token-{t}")),
                            expires: exp.map(Timestamp::from_unix_seconds),
                        });
                    }
                }
                c.certificate = cert.map(|s| CertMatch { subject: Some(format!("CN={s}")), san: None });
                if *both && !c.tokens.is_empty() && c.certificate.is_some() {
                    c.require = Require::Both;
                }
                if c.check().is_ok() {
                    list.push(c);
                }
            }
            let clients = Clients::new(list.clone(), vec![]).unwrap();
            let bearer = token.map(|t| format!("token-{t}"));
            let id = subject.map(|s| cert(&format!("CN={s}"), "x"));
            let now = Timestamp::from_unix_seconds(at);
            let by_token = bearer.as_ref().and_then(|b| {
                list.iter().find_map(|c| {
                    c.tokens.iter().find(|t| t.sha256 == TokenDigest::of(b)).map(|t| (c, t.valid_at(now)))
                })
            });
            let by_cert: Vec<&Client> = id.as_ref().map_or(vec![], |id| {
                list.iter().filter(|c| c.certificate.as_ref().is_some_and(|m| m.matches(id))).collect()
            });
            match clients.identify(bearer.as_deref(), id.as_ref(), now) {
                Ok(c) => {
                    let token_ok = by_token.is_some_and(|(t, valid)| valid && t.name == c.name);
                    let cert_ok = by_cert.len() == 1 && by_cert[0].name == c.name;
                    proptest::prop_assert!(token_ok || (cert_ok && bearer.is_none()));
                    if c.require == Require::Both {
                        proptest::prop_assert!(token_ok && cert_ok);
                    }
                    if cert_ok && bearer.is_some() {
                        proptest::prop_assert!(token_ok);
                    }
                }
                Err(Refused { client, why }) => {
                    if let Some(named) = client {
                        let named_by_token = by_token.is_some_and(|(t, _)| t.name == named.name);
                        let named_by_cert = by_cert.iter().any(|c| c.name == named.name);
                        proptest::prop_assert!(named_by_token || named_by_cert, "{why:?}");
                    }
                    if let Some((t, true)) = by_token {
                        // A valid token is refused only over another
                        // client's certificate, or without the certificate
                        // its client requires.
                        let other_cert = by_cert.iter().any(|c| c.name != t.name);
                        proptest::prop_assert!(
                            other_cert || t.require == Require::Both || by_cert.len() > 1,
                            "{why:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lists_that_cannot_work_are_refused() {
        let a = client("a", Role::Signer, &[("t", None)]);
        let e = Clients::new(vec![a.clone(), a.clone()], vec![]).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let mut b = a.clone();
        b.name = "b".into();
        let e = Clients::new(vec![a.clone(), b], vec![]).unwrap_err();
        assert!(e.contains("also another client's"), "{e}");
        let e = Clients::new(
            vec![a],
            vec![Client::builtin("operator", Role::Operator, "t")],
        )
        .unwrap_err();
        assert!(e.contains("also another client's"), "{e}");
    }
}

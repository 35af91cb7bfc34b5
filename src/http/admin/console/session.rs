//! The console's sign-in sessions: a random id in a cookie, held here only
//! as its SHA-256, with the client it signed in as, the credential it
//! signed in with (the token's digest, the certificate's identity: so that
//! a token withdrawn or expired ends the session), a CSRF token, and its
//! two ends: the absolute `console.session_lifetime` and the
//! `console.idle_timeout`, which only the user's own requests push back
//! (the page's background polls and its event stream do not).
//! In memory: a restart signs everyone out, and each replica has its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, watch};

use crate::access::{CertIdentity, TokenDigest};

/// Sessions held at once; past it, the least recently used ends. A
/// session needs a valid credential, so this bounds memory, not abuse.
pub const MAX_SESSIONS: usize = 1024;
/// Sessions of one client at once; past it, that client's least recently
/// used ends (never another client's).
pub const MAX_SESSIONS_PER_CLIENT: usize = 16;
/// Event streams one session may hold open (a page has one; a second
/// covers a reload while the first closes).
pub const STREAMS_PER_SESSION: usize = 2;

/// A session as a request finds it.
#[derive(Clone, Debug)]
pub struct Active {
    pub client: String,
    /// The token it signed in with (`None`: a certificate alone).
    pub digest: Option<TokenDigest>,
    /// The client certificate of the connection it signed in on.
    pub certificate: Option<Arc<CertIdentity>>,
    pub csrf: String,
    /// When it ends unless used again (idle) or at all (lifetime).
    pub ends_at: Instant,
    /// Its absolute end.
    pub expires_at: Instant,
    /// Turns true (or its sender goes) when it is signed out.
    pub ended: watch::Receiver<bool>,
    /// Its event streams' permits.
    pub streams: Arc<Semaphore>,
}

impl Active {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.len() == presented.len()
            && bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

#[derive(Debug)]
pub enum Lookup {
    Active(Active),
    /// It was here and timed out (idle or lifetime): the page says so.
    Expired,
    /// It was ended because its credential no longer holds (a reload).
    Revoked,
    Unknown,
}

struct Entry {
    client: String,
    digest: Option<TokenDigest>,
    certificate: Option<Arc<CertIdentity>>,
    csrf: String,
    created: Instant,
    used: Instant,
    ended: watch::Sender<bool>,
    streams: Arc<Semaphore>,
    /// Ended by [`Sessions::retain_valid`]; kept until asked for once, so
    /// that the page can say why.
    revoked: bool,
}

/// Whether a request pushes the idle end back: the user's own requests
/// do, the page's background refreshes and its stream do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    User,
    Background,
}

pub struct Sessions {
    map: Mutex<HashMap<TokenDigest, Entry>>,
    lifetime: Duration,
    idle: Duration,
}

impl Sessions {
    pub fn new(lifetime: Duration, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            lifetime,
            idle,
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn over(&self, e: &Entry, now: Instant) -> bool {
        now >= e.created + self.lifetime || now >= e.used + self.idle
    }

    fn active(&self, e: &Entry) -> Active {
        let expires_at = e.created + self.lifetime;
        Active {
            client: e.client.clone(),
            digest: e.digest,
            certificate: e.certificate.clone(),
            csrf: e.csrf.clone(),
            ends_at: expires_at.min(e.used + self.idle),
            expires_at,
            ended: e.ended.subscribe(),
            streams: Arc::clone(&e.streams),
        }
    }

    /// Starts a session for `client` under the random `id` (the cookie's
    /// value) with the random `csrf`.
    pub fn create(
        &self,
        id: &str,
        client: &str,
        credential: (Option<TokenDigest>, Option<Arc<CertIdentity>>),
        csrf: String,
        now: Instant,
    ) -> Active {
        let mut map = self.lock();
        map.retain(|_, e| {
            let over = self.over(e, now);
            if over {
                let _ = e.ended.send(true);
            }
            !over
        });
        let mine = map.values().filter(|e| e.client == client).count();
        let oldest = |map: &HashMap<TokenDigest, Entry>, only: Option<&str>| {
            map.iter()
                .filter(|(_, e)| only.is_none_or(|c| e.client == c))
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| *k)
        };
        let evict = if mine >= MAX_SESSIONS_PER_CLIENT {
            oldest(&map, Some(client))
        } else if map.len() >= MAX_SESSIONS {
            oldest(&map, None)
        } else {
            None
        };
        if let Some(e) = evict.and_then(|k| map.remove(&k)) {
            let _ = e.ended.send(true);
        }
        let (ended, _) = watch::channel(false);
        let entry = Entry {
            client: client.to_owned(),
            digest: credential.0,
            certificate: credential.1,
            csrf,
            created: now,
            used: now,
            ended,
            streams: Arc::new(Semaphore::new(STREAMS_PER_SESSION)),
            revoked: false,
        };
        let active = self.active(&entry);
        map.insert(TokenDigest::of(id), entry);
        active
    }

    /// The session of cookie value `id` at `now`; a request of the user's
    /// own marks it used.
    pub fn get(&self, id: &str, now: Instant, used: Use) -> Lookup {
        let key = TokenDigest::of(id);
        let mut map = self.lock();
        match map.get_mut(&key) {
            None => Lookup::Unknown,
            Some(e) if e.revoked => {
                map.remove(&key);
                Lookup::Revoked
            }
            Some(e) if self.over(e, now) => {
                let _ = e.ended.send(true);
                map.remove(&key);
                Lookup::Expired
            }
            Some(e) => {
                if used == Use::User {
                    e.used = now;
                }
                Lookup::Active(self.active(e))
            }
        }
    }

    /// Ends every session whose credential `still_good` no longer accepts
    /// (after the clients list is reloaded); how many ended.
    pub fn retain_valid(
        &self,
        mut still_good: impl FnMut(&str, Option<&TokenDigest>, Option<&CertIdentity>) -> bool,
    ) -> usize {
        let mut ended = 0;
        for e in self.lock().values_mut().filter(|e| !e.revoked) {
            if !still_good(&e.client, e.digest.as_ref(), e.certificate.as_deref()) {
                e.revoked = true;
                let _ = e.ended.send(true);
                ended += 1;
            }
        }
        ended
    }

    /// Signs the session of `id` out: its streams end. Whether it was
    /// there.
    pub fn end(&self, id: &str) -> bool {
        match self.lock().remove(&TokenDigest::of(id)) {
            Some(e) => {
                let _ = e.ended.send(true);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(Duration::from_secs(3600), Duration::from_secs(900))
    }

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle() {
        let s = sessions();
        let t0 = Instant::now();
        s.create("id-1", "operator", (None, None), "csrf".into(), t0);
        let mut t = t0;
        // Used every 10 minutes: alive for the whole hour.
        for _ in 0..5 {
            t += Duration::from_secs(600);
            assert!(matches!(s.get("id-1", t, Use::User), Lookup::Active(_)));
        }
        // 15 minutes unused: gone, and said to have expired once.
        t += Duration::from_secs(900);
        assert!(matches!(s.get("id-1", t, Use::User), Lookup::Expired));
        assert!(matches!(s.get("id-1", t, Use::User), Lookup::Unknown));
    }

    #[test]
    fn a_session_ends_at_its_lifetime_however_used() {
        let s = sessions();
        let t0 = Instant::now();
        let a = s.create("id-1", "operator", (None, None), "csrf".into(), t0);
        assert_eq!(a.expires_at, t0 + Duration::from_secs(3600));
        let mut t = t0;
        while t < t0 + Duration::from_secs(3540) {
            t += Duration::from_secs(60);
            let Lookup::Active(a) = s.get("id-1", t, Use::User) else {
                panic!("ended early at {:?}", t - t0)
            };
            assert!(a.ends_at <= a.expires_at);
        }
        assert!(matches!(
            s.get("id-1", t0 + Duration::from_secs(3600), Use::User),
            Lookup::Expired
        ));
    }

    #[test]
    fn signing_out_ends_the_session_and_tells_its_streams() {
        let s = sessions();
        let t0 = Instant::now();
        let a = s.create("id-1", "operator", (None, None), "csrf".into(), t0);
        let ended = a.ended.clone();
        assert!(!*ended.borrow());
        assert!(s.end("id-1"));
        assert!(*ended.borrow());
        assert!(matches!(s.get("id-1", t0, Use::User), Lookup::Unknown));
        assert!(!s.end("id-1"));
    }

    #[test]
    fn ids_and_csrf_tokens_must_match_exactly() {
        let s = sessions();
        let t0 = Instant::now();
        let a = s.create("id-1", "operator", (None, None), "csrf-token".into(), t0);
        assert!(a.csrf_matches("csrf-token"));
        assert!(!a.csrf_matches("csrf-toke"));
        assert!(!a.csrf_matches("csrf-tokeN"));
        assert!(!a.csrf_matches(""));
        assert!(matches!(s.get("id-2", t0, Use::User), Lookup::Unknown));
        assert!(matches!(s.get("ID-1", t0, Use::User), Lookup::Unknown));
    }

    #[test]
    fn past_the_cap_the_least_recently_used_session_goes() {
        let s = sessions();
        let t0 = Instant::now();
        for i in 0..MAX_SESSIONS {
            s.create(
                &format!("id-{i}"),
                &format!("client-{i}"),
                (None, None),
                "c".into(),
                t0 + Duration::from_millis(i as u64),
            );
        }
        // id-0 used last: id-1 is now the least recently used.
        let t = t0 + Duration::from_secs(5);
        assert!(matches!(s.get("id-0", t, Use::User), Lookup::Active(_)));
        s.create("new", "someone", (None, None), "c".into(), t);
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(matches!(s.get("id-1", t, Use::User), Lookup::Unknown));
        assert!(matches!(s.get("id-0", t, Use::User), Lookup::Active(_)));
        assert!(matches!(s.get("new", t, Use::User), Lookup::Active(_)));
    }

    #[test]
    fn one_client_cannot_push_out_anothers_sessions() {
        let s = sessions();
        let t0 = Instant::now();
        s.create("operator", "operator", (None, None), "c".into(), t0);
        for i in 0..MAX_SESSIONS {
            let t = t0 + Duration::from_millis(i as u64 + 1);
            s.create(&format!("v-{i}"), "viewer", (None, None), "c".into(), t);
        }
        assert_eq!(s.len(), MAX_SESSIONS_PER_CLIENT + 1);
        let t = t0 + Duration::from_secs(5);
        assert!(matches!(s.get("operator", t, Use::User), Lookup::Active(_)));
        assert!(matches!(s.get("v-0", t, Use::User), Lookup::Unknown));
        let last = format!("v-{}", MAX_SESSIONS - 1);
        assert!(matches!(s.get(&last, t, Use::User), Lookup::Active(_)));
    }

    #[test]
    fn background_requests_do_not_keep_a_session_alive() {
        let s = sessions();
        let t0 = Instant::now();
        s.create("id-1", "operator", (None, None), "c".into(), t0);
        let mut t = t0;
        for _ in 0..8 {
            t += Duration::from_secs(100);
            assert!(matches!(
                s.get("id-1", t, Use::Background),
                Lookup::Active(_)
            ));
        }
        // 900 s after the last use of its own: gone, however polled.
        t = t0 + Duration::from_secs(900);
        assert!(matches!(s.get("id-1", t, Use::Background), Lookup::Expired));
    }

    #[test]
    fn a_reload_ends_the_sessions_whose_credential_is_gone() {
        let s = sessions();
        let t0 = Instant::now();
        let keep = TokenDigest::of("kept");
        let a = s.create("id-a", "a", (Some(keep), None), "c".into(), t0);
        let b = s.create(
            "id-b",
            "b",
            (Some(TokenDigest::of("withdrawn")), None),
            "c".into(),
            t0,
        );
        let ended = s.retain_valid(|_, d, _| d == Some(&keep));
        assert_eq!(ended, 1);
        assert!(!*a.ended.borrow());
        assert!(*b.ended.borrow());
        assert!(matches!(s.get("id-b", t0, Use::User), Lookup::Revoked));
        assert!(matches!(s.get("id-b", t0, Use::User), Lookup::Unknown));
        assert!(matches!(s.get("id-a", t0, Use::User), Lookup::Active(_)));
    }
}

//! The console's sign-in sessions: a random id in a cookie, held here only
//! as its SHA-256, with the client it signed in as, the digest of the
//! token it signed in with (so that a token withdrawn or expired ends the
//! session at its next request), a CSRF token, and its two ends: the
//! absolute `console.session_lifetime` and the `console.idle_timeout`.
//! In memory: a restart signs everyone out, and each replica has its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::access::TokenDigest;

/// Sessions held at once; past it, the least recently used ends. A
/// session needs a valid credential, so this bounds memory, not abuse.
pub const MAX_SESSIONS: usize = 1024;

/// A session as a request finds it.
#[derive(Clone, Debug)]
pub struct Active {
    pub client: String,
    /// The token it signed in with (`None`: a certificate alone).
    pub digest: Option<TokenDigest>,
    pub csrf: String,
    /// When it ends unless used again (idle) or at all (lifetime).
    pub ends_at: Instant,
    /// Its absolute end.
    pub expires_at: Instant,
    /// Turns true (or its sender goes) when it is signed out.
    pub ended: watch::Receiver<bool>,
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
    Unknown,
}

struct Entry {
    client: String,
    digest: Option<TokenDigest>,
    csrf: String,
    created: Instant,
    used: Instant,
    ended: watch::Sender<bool>,
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
            csrf: e.csrf.clone(),
            ends_at: expires_at.min(e.used + self.idle),
            expires_at,
            ended: e.ended.subscribe(),
        }
    }

    /// Starts a session for `client` under the random `id` (the cookie's
    /// value) with the random `csrf`.
    pub fn create(
        &self,
        id: &str,
        client: &str,
        digest: Option<TokenDigest>,
        csrf: String,
        now: Instant,
    ) -> Active {
        let mut map = self.lock();
        map.retain(|_, e| !self.over(e, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        let (ended, _) = watch::channel(false);
        let entry = Entry {
            client: client.to_owned(),
            digest,
            csrf,
            created: now,
            used: now,
            ended,
        };
        let active = self.active(&entry);
        map.insert(TokenDigest::of(id), entry);
        active
    }

    /// The session of cookie value `id`, marked used at `now`.
    pub fn get(&self, id: &str, now: Instant) -> Lookup {
        let key = TokenDigest::of(id);
        let mut map = self.lock();
        match map.get_mut(&key) {
            None => Lookup::Unknown,
            Some(e) if self.over(e, now) => {
                let _ = e.ended.send(true);
                map.remove(&key);
                Lookup::Expired
            }
            Some(e) => {
                e.used = now;
                Lookup::Active(self.active(e))
            }
        }
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
        s.create("id-1", "operator", None, "csrf".into(), t0);
        let mut t = t0;
        // Used every 10 minutes: alive for the whole hour.
        for _ in 0..5 {
            t += Duration::from_secs(600);
            assert!(matches!(s.get("id-1", t), Lookup::Active(_)));
        }
        // 15 minutes unused: gone, and said to have expired once.
        t += Duration::from_secs(900);
        assert!(matches!(s.get("id-1", t), Lookup::Expired));
        assert!(matches!(s.get("id-1", t), Lookup::Unknown));
    }

    #[test]
    fn a_session_ends_at_its_lifetime_however_used() {
        let s = sessions();
        let t0 = Instant::now();
        let a = s.create("id-1", "operator", None, "csrf".into(), t0);
        assert_eq!(a.expires_at, t0 + Duration::from_secs(3600));
        let mut t = t0;
        while t < t0 + Duration::from_secs(3540) {
            t += Duration::from_secs(60);
            let Lookup::Active(a) = s.get("id-1", t) else {
                panic!("ended early at {:?}", t - t0)
            };
            assert!(a.ends_at <= a.expires_at);
        }
        assert!(matches!(
            s.get("id-1", t0 + Duration::from_secs(3600)),
            Lookup::Expired
        ));
    }

    #[test]
    fn signing_out_ends_the_session_and_tells_its_streams() {
        let s = sessions();
        let t0 = Instant::now();
        let a = s.create("id-1", "operator", None, "csrf".into(), t0);
        let ended = a.ended.clone();
        assert!(!*ended.borrow());
        assert!(s.end("id-1"));
        assert!(*ended.borrow());
        assert!(matches!(s.get("id-1", t0), Lookup::Unknown));
        assert!(!s.end("id-1"));
    }

    #[test]
    fn ids_and_csrf_tokens_must_match_exactly() {
        let s = sessions();
        let t0 = Instant::now();
        let a = s.create("id-1", "operator", None, "csrf-token".into(), t0);
        assert!(a.csrf_matches("csrf-token"));
        assert!(!a.csrf_matches("csrf-toke"));
        assert!(!a.csrf_matches("csrf-tokeN"));
        assert!(!a.csrf_matches(""));
        assert!(matches!(s.get("id-2", t0), Lookup::Unknown));
        assert!(matches!(s.get("ID-1", t0), Lookup::Unknown));
    }

    #[test]
    fn past_the_cap_the_least_recently_used_session_goes() {
        let s = sessions();
        let t0 = Instant::now();
        for i in 0..MAX_SESSIONS {
            s.create(
                &format!("id-{i}"),
                "operator",
                None,
                "c".into(),
                t0 + Duration::from_millis(i as u64),
            );
        }
        // id-0 used last: id-1 is now the least recently used.
        let t = t0 + Duration::from_secs(5);
        assert!(matches!(s.get("id-0", t), Lookup::Active(_)));
        s.create("new", "operator", None, "c".into(), t);
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(matches!(s.get("id-1", t), Lookup::Unknown));
        assert!(matches!(s.get("id-0", t), Lookup::Active(_)));
        assert!(matches!(s.get("new", t), Lookup::Active(_)));
    }
}

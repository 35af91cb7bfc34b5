//! Limits that know who is asking: the failure limiter, which counts
//! failed authentications per known identity and per address only for
//! credentials no client has, and each client's signing rate.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::access::client::RateLimit;

/// Whom failures are counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    /// A client the credentials named (a certificate of it, an expired
    /// token of it): its failures limit it alone, wherever it comes from.
    Client(String),
    /// Credentials of no client: the address (IPv4, IPv6 /64) they came
    /// from, forwarded by a trusted proxy or not.
    Addr(IpAddr),
    /// A token that was a client's and is no more (expired, withdrawn):
    /// its failures limit that token alone, neither the client's other
    /// credentials nor the address.
    Token(crate::access::TokenDigest),
}

impl Who {
    pub fn addr(ip: IpAddr) -> Who {
        Who::Addr(address_key(ip))
    }
}

/// The client an address belongs to, for per-address limits: an IPv4
/// address, or an IPv6 /64 (one host usually has the whole prefix).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Counts failed authentications per key over a sliding window, so that
/// guessing tokens is slow while an honest typo never locks anyone out.
pub struct FailureLimiter<K = Who> {
    max: usize,
    window: Duration,
    peers: Mutex<HashMap<K, VecDeque<Instant>>>,
}

/// Keys tracked at most; beyond this, stale entries are dropped first.
const MAX_TRACKED: usize = 65_536;

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    /// More than `max` failures within `window` and the key is refused
    /// until older failures leave the window.
    pub fn new(max: usize, window: Duration) -> FailureLimiter<K> {
        FailureLimiter {
            max,
            window,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
    }

    /// Whether `key` has failed more than `max` times within the window.
    pub fn is_limited(&self, key: &K, now: Instant) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get_mut(key) {
            Some(q) => {
                Self::prune(q, now, self.window);
                q.len() > self.max
            }
            None => false,
        }
    }

    /// Records a failure; returns the failures within the window.
    pub fn record_failure(&self, key: K, now: Instant) -> usize {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_TRACKED && !peers.contains_key(&key) {
            let window = self.window;
            peers.retain(|_, q| {
                Self::prune(q, now, window);
                !q.is_empty()
            });
            // Still full: forget the key whose last failure is oldest,
            // never everyone (which would reset an attacker's count too).
            if peers.len() >= MAX_TRACKED
                && let Some(stalest) = peers
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied())
                    .map(|(k, _)| k.clone())
            {
                peers.remove(&stalest);
            }
        }
        let q = peers.entry(key).or_default();
        Self::prune(q, now, self.window);
        q.push_back(now);
        // Only whether the limit is passed matters: keep the queue bounded.
        while q.len() > self.max + 1 {
            q.pop_front();
        }
        q.len()
    }
}

/// Each client's signing rate: a bucket of `count` signatures per client,
/// refilled continuously at `count` per `per`.
#[derive(Default)]
pub struct SignRates {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl SignRates {
    /// Takes one signature from `client`'s bucket; `Err(wait)` when it is
    /// empty, with the time until the next one.
    pub fn take(&self, client: &str, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let full = f64::from(limit.count);
        let b = buckets.entry(client.to_owned()).or_insert(Bucket {
            limit,
            tokens: full,
            at: now,
        });
        if b.limit != limit {
            // A reload changed the limit: start it afresh.
            *b = Bucket {
                limit,
                tokens: full,
                at: now,
            };
        }
        let rate = full / limit.per.as_secs_f64();
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(full);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    /// Forgets clients no longer configured (the map is bounded by the
    /// names configured since start otherwise).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_key_and_prefix() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let a = Who::addr("10.0.0.1".parse().unwrap());
        let b = Who::addr("10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            l.record_failure(a.clone(), t0);
        }
        assert!(!l.is_limited(&a, t0));
        l.record_failure(a.clone(), t0);
        assert!(l.is_limited(&a, t0));
        assert!(!l.is_limited(&b, t0));
        let client = Who::Client("auth-eu".into());
        assert!(
            !l.is_limited(&client, t0),
            "an address's failures are not a client's"
        );
        for _ in 0..4 {
            l.record_failure(Who::addr("2001:db8::1".parse().unwrap()), t0);
        }
        assert!(
            l.is_limited(&Who::addr("2001:db8::ffff:2".parse().unwrap()), t0),
            "same /64"
        );
        assert!(
            !l.is_limited(&a, t0 + Duration::from_secs(60)),
            "the window passed"
        );
    }

    #[test]
    fn sign_rates_refill_at_their_rate() {
        let r = SignRates::default();
        let limit: RateLimit = "2/s".parse().unwrap();
        let t0 = Instant::now();
        assert!(r.take("a", limit, t0).is_ok());
        assert!(r.take("a", limit, t0).is_ok());
        let wait = r.take("a", limit, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(490) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(r.take("b", limit, t0).is_ok(), "buckets are per client");
        assert!(r.take("a", limit, t0 + Duration::from_millis(500)).is_ok());
        assert!(r.take("a", limit, t0 + Duration::from_millis(500)).is_err());
        let more: RateLimit = "10/s".parse().unwrap();
        assert!(
            r.take("a", more, t0 + Duration::from_millis(500)).is_ok(),
            "a new limit starts full"
        );
    }
}

//! Admin API authentication: two roles with bearer tokens, compared in
//! constant time.
//!
//! Tokens come from `JWKSD_OPERATOR_TOKEN` / `JWKSD_SIGNER_TOKEN`, or from
//! the token files, which are created at first start (256 random bits,
//! base64url, mode 600) and refused when group or others can read them.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::HeaderValue;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::env;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Pulls the active key and signs.
    Signer,
    /// Everything a signer can, plus key listing, rotation and revocation.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Signer => "signer",
            Role::Operator => "operator",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header, or not a bearer token.
    Missing,
    /// A bearer token that is neither role's.
    Invalid,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{op} token file {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "token file {path} has mode {mode:o}, readable by group or others; fix with \
         `chmod 600 {path}` (and rotate the token if others may have read it)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{0} is too short: a bearer token needs at least 32 characters")]
    TooShort(String),
    #[error("the operator and signer tokens are the same; they must differ")]
    SameTokens,
}

/// SHA-256 digests of the two tokens: comparing digests keeps the
/// comparison constant-time whatever the presented token's length.
pub struct Tokens {
    operator: [u8; 32],
    signer: [u8; 32],
}

/// Where a token came from, for the start-up log.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenSource {
    Env(&'static str),
    File(PathBuf),
    Created(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Env(v) => write!(f, "environment variable {v}"),
            TokenSource::File(p) => write!(f, "{}", p.display()),
            TokenSource::Created(p) => write!(f, "{} (created)", p.display()),
        }
    }
}

impl Tokens {
    pub fn new(operator: &str, signer: &str) -> Result<Tokens, TokenError> {
        let t = Tokens {
            operator: Sha256::digest(operator.as_bytes()).into(),
            signer: Sha256::digest(signer.as_bytes()).into(),
        };
        if bool::from(t.operator.ct_eq(&t.signer)) {
            return Err(TokenError::SameTokens);
        }
        Ok(t)
    }

    /// Loads both tokens (env first, then file, creating files as needed).
    pub fn load_or_create(
        operator_file: &Path,
        signer_file: &Path,
    ) -> Result<(Tokens, [TokenSource; 2]), TokenError> {
        let (op, op_src) = token(env::OPERATOR_TOKEN, operator_file)?;
        let (si, si_src) = token(env::SIGNER_TOKEN, signer_file)?;
        Ok((Tokens::new(&op, &si)?, [op_src, si_src]))
    }

    /// The role an `Authorization` header grants.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Result<Role, AuthError> {
        let value = authorization
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against both, always, so timing does not tell which failed.
        let op = digest.ct_eq(&self.operator);
        let si = digest.ct_eq(&self.signer);
        if bool::from(op) {
            Ok(Role::Operator)
        } else if bool::from(si) {
            Ok(Role::Signer)
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// Reads a token from `env`, else from `path`, creating the file when absent.
pub fn token(
    env: &'static str,
    path: &Path,
) -> Result<(Zeroizing<String>, TokenSource), TokenError> {
    if let Some(v) = crate::config::env::secret(env) {
        let v = Zeroizing::new(v.trim().to_owned());
        if v.len() < 32 {
            return Err(TokenError::TooShort(env.to_owned()));
        }
        return Ok((v, TokenSource::Env(env)));
    }
    match read_token_file(path) {
        Ok(t) => Ok((t, TokenSource::File(path.to_owned()))),
        Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create_token_file(path).map(|t| (t, TokenSource::Created(path.to_owned())))
        }
        Err(e) => Err(e),
    }
}

/// The operator token a command sends: `JWKSD_OPERATOR_TOKEN`, else the
/// operator token file, only read: creating it is the daemon's business
/// ([`token`]).
pub fn operator_token(config: &crate::config::Config) -> Result<Zeroizing<String>, TokenError> {
    match env::secret(env::OPERATOR_TOKEN) {
        Some(t) => Ok(Zeroizing::new(t.trim().to_owned())),
        None => read_token_file(&config.operator_token_file()),
    }
}

/// Reads a token file, refusing one that group or others can read.
pub fn read_token_file(path: &Path) -> Result<Zeroizing<String>, TokenError> {
    let io = |op| {
        move |source| TokenError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let meta = fs::metadata(path).map_err(io("read"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io("read"))?);
    let t = Zeroizing::new(text.trim().to_owned());
    if t.len() < 32 {
        return Err(TokenError::TooShort(path.display().to_string()));
    }
    Ok(t)
}

fn create_token_file(path: &Path) -> Result<Zeroizing<String>, TokenError> {
    let io = |op| {
        move |source| TokenError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io("create directory for"))?;
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    let token = Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create"))?;
    f.write_all(format!("{}\n", token.as_str()).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io("write"))?;
    Ok(token)
}

/// The client an address belongs to, for per-client limits: an IPv4
/// address, or an IPv6 /64 (one host usually has the whole prefix).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Counts failed authentications per client over a sliding window, so that
/// guessing tokens is slow while an honest typo never locks anyone out.
pub struct FailureLimiter {
    max: usize,
    window: Duration,
    peers: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

/// Peers tracked at most; beyond this, stale entries are dropped first.
const MAX_TRACKED_PEERS: usize = 65_536;

impl FailureLimiter {
    /// More than `max` failures within `window` and the peer is refused
    /// until older failures leave the window.
    pub fn new(max: usize, window: Duration) -> FailureLimiter {
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

    /// Whether `ip` has failed more than `max` times within the window.
    pub fn is_limited(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get_mut(&client_key(ip)) {
            Some(q) => {
                Self::prune(q, now, self.window);
                q.len() > self.max
            }
            None => false,
        }
    }

    /// Records a failure; returns the failures within the window.
    pub fn record_failure(&self, ip: IpAddr) -> usize {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let key = client_key(ip);
        if peers.len() >= MAX_TRACKED_PEERS && !peers.contains_key(&key) {
            let window = self.window;
            peers.retain(|_, q| {
                Self::prune(q, now, window);
                !q.is_empty()
            });
            // Still full: forget the peer whose last failure is oldest,
            // never everyone (which would reset an attacker's count too).
            if peers.len() >= MAX_TRACKED_PEERS
                && let Some(stalest) = peers
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied())
                    .map(|(k, _)| *k)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn roles_schemes_and_failures() {
        let op = "o".repeat(40);
        let si = "s".repeat(40);
        let t = Tokens::new(&op, &si).unwrap();
        assert_eq!(
            t.check(Some(&hv(&format!("Bearer {op}")))),
            Ok(Role::Operator)
        );
        assert_eq!(
            t.check(Some(&hv(&format!("bearer {si}")))),
            Ok(Role::Signer)
        );
        assert_eq!(
            t.check(Some(&hv(&format!("Basic {op}")))),
            Err(AuthError::Missing)
        );
        assert_eq!(t.check(Some(&hv("Bearer"))), Err(AuthError::Missing));
        assert_eq!(t.check(Some(&hv("Bearer "))), Err(AuthError::Missing));
        assert_eq!(t.check(None), Err(AuthError::Missing));
        assert_eq!(
            t.check(Some(&hv(&format!("Bearer {op}x")))),
            Err(AuthError::Invalid)
        );
        assert!(matches!(Tokens::new(&op, &op), Err(TokenError::SameTokens)));
    }

    #[test]
    fn failures_are_limited_per_peer_and_prefix() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            l.record_failure(a);
        }
        assert!(!l.is_limited(a));
        l.record_failure(a);
        assert!(l.is_limited(a));
        assert!(!l.is_limited(b));
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..4 {
            l.record_failure(v6a);
        }
        assert!(l.is_limited(v6b), "same /64");
        let short = FailureLimiter::new(0, Duration::from_millis(20));
        short.record_failure(a);
        assert!(short.is_limited(a));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!short.is_limited(a));
    }

    #[test]
    fn token_files_are_created_private_and_refused_when_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/operator.token");
        let (t, src) = token("JWKSD_TEST_UNSET_TOKEN", &path).unwrap();
        assert_eq!(src, TokenSource::Created(path.clone()));
        assert_eq!(t.len(), 43);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, src) = token("JWKSD_TEST_UNSET_TOKEN", &path).unwrap();
        assert_eq!(again, t);
        assert_eq!(src, TokenSource::File(path.clone()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = token("JWKSD_TEST_UNSET_TOKEN", &path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}

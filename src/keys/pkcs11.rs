//! Keys that never leave a PKCS#11 token (`keys.backend: pkcs11`;
//! docs/pkcs11.md).
//!
//! [`Token`] opens a module, finds a token by its label, logs in with a PIN
//! held in a zeroizing buffer, and keeps a small pool of sessions so that
//! concurrent operations do not serialise on one session. The token
//! generates P-256, P-384, RSA and Ed25519 keypairs as token objects whose
//! private half is sensitive, never extractable and private; the public
//! half is read back, its RFC 7638 thumbprint becomes the kid, and the kid
//! is set as both objects' `CKA_ID` and `CKA_LABEL`. Signing is the
//! token's ([`Mechanisms`]): `CKM_ECDSA` over a SHA-256 or SHA-384 digest
//! computed here (SoftHSM2 has no `CKM_ECDSA_SHA256`), which gives JOSE's
//! raw `r || s`; `CKM_SHA256_RSA_PKCS` for RS256,
//! `CKM_SHA256_RSA_PKCS_PSS` for PS256, `CKM_EDDSA` for Ed25519. Which
//! algorithm a key signs with is the state's to say: an RSA key is the
//! same object for RS256 and PS256.
//!
//! A keypair exists in the token before its kid is known. It is created
//! under a pending label ([`PENDING_PREFIX`]) and named once the public
//! half is read back (by its kid, or for the daemon by the kid as `CKA_ID`
//! and a key ring's mark as label: [`Token::stage`]); a crash in between
//! leaves objects that [`Token::list`] reports as [`Owner::Pending`]: they
//! were never named by any state and may be destroyed
//! ([`Token::destroy_pending`]).
//!
//! Every method blocks (the token may be across a network): async callers
//! run them on a blocking thread. Nothing here logs; no error carries the
//! PIN or key material.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use josekit::jws::JwsSigner;
use zeroize::Zeroizing;

use super::id::{Alg, Curve, ED25519_CRV, KeyKind, Kid, PublicKey, RSA_BITS};
use super::sign::{ecdsa_digest, jws_algorithm};

/// The environment variable a PIN may come from (read once, at open).
pub const PIN_ENV: &str = "JWKSD_PKCS11_PIN";

/// Label of a keypair generated but not yet named by its kid.
pub const PENDING_PREFIX: &str = "jwksd-pending-";

/// Label of a keypair a key ring made ([`Token::stage`]): its `CKA_ID` is
/// its kid; the label goes on with the key ring's mark and the Unix time
/// (seconds) it was made, `jwksd-staged-<ring>-<secs>`, and never changes:
/// the key counts as committed once a state of that key ring names it.
pub const STAGED_PREFIX: &str = "jwksd-staged-";

/// DER of the P-256 curve's OID (1.2.840.10045.3.1.7), `CKA_EC_PARAMS`.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// DER of the P-384 curve's OID (1.3.132.0.34), `CKA_EC_PARAMS`.
const P384_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// DER of Ed25519's OID (1.3.101.112, RFC 8410), `CKA_EC_PARAMS` of an
/// Edwards key as SoftHSM2 and most modules take it.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The same curve as PKCS#11 3.0's PrintableString "edwards25519", which
/// some modules give back instead of the OID.
const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";

impl Curve {
    fn ec_params(self) -> &'static [u8] {
        match self {
            Curve::P256 => &P256_PARAMS,
            Curve::P384 => &P384_PARAMS,
        }
    }
}

/// The mechanisms a token must offer for an algorithm: its key generation
/// and its signature.
pub struct Mechanisms {
    pub generate: MechanismType,
    pub sign: MechanismType,
}

impl Mechanisms {
    pub fn of(alg: Alg) -> Mechanisms {
        let (generate, sign) = match alg {
            Alg::ES256 | Alg::ES384 => (MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA),
            Alg::RS256 => (
                MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                MechanismType::SHA256_RSA_PKCS,
            ),
            Alg::PS256 => (
                MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                MechanismType::SHA256_RSA_PKCS_PSS,
            ),
            Alg::EdDSA | Alg::Ed25519 => (
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                MechanismType::EDDSA,
            ),
        };
        Mechanisms { generate, sign }
    }

    /// The first of `algs` whose generation or signature is not in
    /// `offered`: the algorithm, what it could not do, the mechanism.
    pub fn first_missing(
        offered: &[MechanismType],
        algs: &[Alg],
    ) -> Option<(Alg, &'static str, MechanismType)> {
        algs.iter().find_map(|&alg| {
            let m = Mechanisms::of(alg);
            [("generate", m.generate), ("sign with", m.sign)]
                .into_iter()
                .find(|(_, mechanism)| !offered.contains(mechanism))
                .map(|(what, mechanism)| (alg, what, mechanism))
        })
    }
}

/// The mechanism of a signature for `alg` and what it is given: the
/// digest for ECDSA (computed here), the signing input itself for the
/// others. The one place this rule is written (examples/pkcs11_speed.rs
/// measures with it too).
pub fn signing(alg: Alg, message: &[u8]) -> (Mechanism<'static>, std::borrow::Cow<'_, [u8]>) {
    use std::borrow::Cow;
    match alg.key_kind() {
        KeyKind::Ec(curve) => (Mechanism::Ecdsa, Cow::Owned(ecdsa_digest(curve, message))),
        KeyKind::Rsa if alg == Alg::PS256 => (
            Mechanism::Sha256RsaPkcsPss(PSS_SHA256),
            Cow::Borrowed(message),
        ),
        KeyKind::Rsa => (Mechanism::Sha256RsaPkcs, Cow::Borrowed(message)),
        KeyKind::Ed25519 => (
            Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            Cow::Borrowed(message),
        ),
    }
}

/// PS256's parameters (RFC 7518 3.5): SHA-256, MGF1 with SHA-256, a salt
/// as long as the digest.
const PSS_SHA256: PkcsPssParams = PkcsPssParams {
    hash_alg: MechanismType::SHA256,
    mgf: PkcsMgfType::MGF1_SHA256,
    s_len: cryptoki::types::Ulong::new(32),
};

/// Length of jwksd's kids (base64url of a SHA-256 digest).
const KID_LEN: usize = 43;

/// RSA public exponent 65537.
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// A token's user PIN, wiped from memory when dropped. Never printed.
pub struct Pin(Zeroizing<Vec<u8>>);

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

impl Pin {
    /// A PIN from bytes (tests, or a caller that has it already).
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Result<Pin, PinError> {
        if bytes.is_empty() {
            return Err(PinError::Empty {
                from: "the given value".into(),
            });
        }
        Ok(Pin(bytes))
    }

    /// Reads the PIN from a file: readable by its owner only, one line
    /// (one trailing newline, `\n` or `\r\n`, is not part of the PIN).
    pub fn from_file(path: &Path) -> Result<Pin, PinError> {
        use std::io::Read as _;
        let io = |source| PinError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(PinError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        // The file's size bounds the buffer, so it never grows (a growing
        // Vec would leave a copy behind).
        let mut bytes = Zeroizing::new(Vec::with_capacity(256));
        (&mut file).take(256).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() >= 256 {
            return Err(PinError::TooLong {
                from: path.display().to_string(),
            });
        }
        strip_newline(&mut bytes);
        if bytes.is_empty() {
            return Err(PinError::Empty {
                from: path.display().to_string(),
            });
        }
        Ok(Pin(bytes))
    }

    /// The PIN from [`PIN_ENV`], if set. (The environment's own copy stays:
    /// prefer a file.)
    pub fn from_env() -> Result<Option<Pin>, PinError> {
        let Some(value) = std::env::var_os(PIN_ENV) else {
            return Ok(None);
        };
        use std::os::unix::ffi::OsStringExt as _;
        let mut bytes = Zeroizing::new(value.into_vec());
        strip_newline(&mut bytes);
        if bytes.is_empty() {
            return Err(PinError::Empty {
                from: PIN_ENV.into(),
            });
        }
        Ok(Some(Pin(bytes)))
    }

    /// The configured PIN: the file if one is configured, else
    /// [`PIN_ENV`]; both set is refused (which one is meant?).
    pub fn resolve(pin_file: Option<&Path>) -> Result<Pin, PinError> {
        match (pin_file, Pin::from_env()?) {
            (Some(path), None) => Pin::from_file(path),
            (None, Some(pin)) => Ok(pin),
            (Some(path), Some(_)) => Err(PinError::Both {
                path: path.to_owned(),
            }),
            (None, None) => Err(PinError::Missing),
        }
    }

    fn raw(&self) -> RawAuthPin {
        RawAuthPin::new(Box::new(self.0.to_vec()))
    }
}

fn strip_newline(bytes: &mut Zeroizing<Vec<u8>>) {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
}

/// What is wrong with the configured PIN (never the PIN itself).
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot read the PKCS#11 PIN file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the PKCS#11 PIN file {path} has mode {mode:o}, readable by group or others; fix with \
         `chmod 600 {path}`",
        path = .path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the PKCS#11 PIN from {from} is empty")]
    Empty { from: String },
    #[error("the PKCS#11 PIN from {from} is longer than 255 bytes")]
    TooLong { from: String },
    #[error(
        "both keys.pkcs11.pin_file ({path}) and {PIN_ENV} are set; keep one",
        path = .path.display()
    )]
    Both { path: PathBuf },
    #[error("no PKCS#11 PIN: set keys.pkcs11.pin_file or {PIN_ENV}")]
    Missing,
}

/// Where the token is and how to use it.
#[derive(Debug)]
pub struct TokenConfig {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token's label (`CKA_LABEL` of the token, as `softhsm2-util
    /// --show-slots` or `pkcs11-tool --list-tokens` print it).
    pub token_label: String,
    pub pin: Pin,
    /// The file `pin` came from: read again before each later login, so
    /// that a PIN changed on the token and in the file is taken up without
    /// a restart.
    pub pin_file: Option<PathBuf>,
    /// Sessions kept open and logged in (at least 1).
    pub sessions: usize,
    /// How long an operation waits for a free session before giving up.
    pub session_wait: Duration,
}

impl TokenConfig {
    pub fn new(module: impl Into<PathBuf>, token_label: impl Into<String>, pin: Pin) -> Self {
        TokenConfig {
            module: module.into(),
            token_label: token_label.into(),
            pin,
            pin_file: None,
            sessions: 4,
            session_wait: Duration::from_secs(5),
        }
    }
}

/// What failed, where, and what to do about it. Never carries the PIN or
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(
        "PKCS#11 module {module} does not exist; install it (SoftHSM2 on Debian: `apt-get \
         install softhsm2`, /usr/lib/softhsm/libsofthsm2.so) or correct keys.pkcs11.module",
        module = .module.display()
    )]
    ModuleMissing { module: PathBuf },
    #[error(
        "cannot load PKCS#11 module {module}: {reason}; check that it is a PKCS#11 library \
         built for this machine",
        module = .module.display()
    )]
    ModuleLoad { module: PathBuf, reason: String },
    #[error(
        "PKCS#11 module {module} failed to initialise: {reason}; check its configuration \
         (SoftHSM2: the file SOFTHSM2_CONF names, or /etc/softhsm/softhsm2.conf, and that its \
         tokendir is readable by this user)",
        module = .module.display()
    )]
    ModuleInit { module: PathBuf, reason: String },
    #[error(
        "PKCS#11 module {module} is already open in this process; open each module once and \
         share the Token",
        module = .module.display()
    )]
    AlreadyOpen { module: PathBuf },
    #[error(
        "no token labelled {label:?} in PKCS#11 module {module} (tokens present: {present}); \
         initialise one (SoftHSM2: `softhsm2-util --init-token --free --label {label}`) or \
         correct keys.pkcs11.token_label",
        module = .module.display(),
        present = if .present.is_empty() { "none".to_string() } else { format!("{:?}", .present) }
    )]
    TokenNotFound {
        module: PathBuf,
        label: String,
        present: Vec<String>,
    },
    #[error(
        "{count} tokens are labelled {label:?} in PKCS#11 module {module}; give each token a \
         distinct label",
        module = .module.display()
    )]
    AmbiguousToken {
        module: PathBuf,
        label: String,
        count: usize,
    },
    #[error(
        "token {label:?} refused the PIN (CKR_PIN_INCORRECT); check keys.pkcs11.pin_file or \
         {PIN_ENV}. Every refused PIN counts towards locking the token's user PIN"
    )]
    WrongPin { label: String },
    #[error(
        "token {label:?}: the user PIN is locked after too many wrong PINs; the security \
         officer must set it again (`pkcs11-tool --init-pin --login --login-type so`)"
    )]
    PinLocked { label: String },
    #[error(
        "token {label:?}: one wrong PIN would lock the user PIN, so jwksd does not try; log in \
         once by hand with the right PIN (`pkcs11-tool --login --test`) to reset the counter"
    )]
    PinFinalTry { label: String },
    #[error(
        "token {label:?} has no user PIN set; set one (`pkcs11-tool --init-pin --login \
         --login-type so`)"
    )]
    PinNotInitialized { label: String },
    #[error(
        "token {label:?} cannot {what} {alg} keys: its module does not offer {mechanism}; \
         remove {alg} from algorithms, or keep keys.backend: software (docs/algorithms.md)"
    )]
    Unsupported {
        label: String,
        alg: Alg,
        what: &'static str,
        mechanism: String,
    },
    #[error(
        "token {label:?} refused the PIN as malformed ({reason}); check the PIN's length and characters"
    )]
    PinInvalid { label: String, reason: String },
    #[error(
        "token {label:?}: no session free after {waited:?} ({sessions} sessions, all busy); \
         raise keys.pkcs11.sessions or lower the load"
    )]
    PoolTimeout {
        label: String,
        waited: Duration,
        sessions: usize,
    },
    #[error(
        "token {label:?} is gone or no longer logged in ({op}: {reason}); jwksd reopens its \
         sessions when it returns. Check the device or the network HSM, and the PIN"
    )]
    TokenGone {
        label: String,
        op: &'static str,
        reason: String,
    },
    /// A cached object handle the token no longer knows (found again by
    /// kid, then retried once).
    #[error("token {label:?}: the object handle of {kid} is no longer valid")]
    StaleHandle { label: String, kid: String },
    #[error(
        "token {label:?} holds no private key {kid}; it was destroyed or never generated there"
    )]
    KeyNotFound { label: String, kid: Kid },
    #[error("token {label:?}: {kid} is not a usable key: {reason}")]
    BadKey {
        label: String,
        kid: String,
        reason: String,
    },
    #[error("unsupported RSA key size {0}: expected 2048, 3072 or 4096")]
    RsaBits(u32),
    #[error("token {label:?}: {op}{}: {reason}", .kid.as_ref().map(|k| format!(" ({k})")).unwrap_or_default())]
    Operation {
        label: String,
        op: &'static str,
        kid: Option<String>,
        reason: String,
    },
}

impl TokenError {
    /// Whether the token went away or dropped the login (as opposed to
    /// refusing one operation): what `/readyz` would report.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            TokenError::TokenGone { .. } | TokenError::PoolTimeout { .. }
        )
    }
}

/// PKCS#11 return values after which a session is of no further use.
fn session_is_broken(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SlotIdInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
    )
}

/// A key as the token holds it: its kid and public half (what the JWK Set
/// publishes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenKey {
    pub kid: Kid,
    pub alg: Alg,
    pub public: PublicKey,
}

/// Whose an object on the token is, as its label and id say.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// Named by its kid (`CKA_ID` and `CKA_LABEL` both the kid).
    Kid(Kid),
    /// Generated, never named: a crash between generation and naming.
    Pending(String),
    /// Made by the key ring marked `ring` ([`Token::stage`]) at `since`
    /// (Unix seconds): committed if a state of that key ring names it, a
    /// leftover of an interrupted generation otherwise.
    Staged { kid: Kid, ring: String, since: u64 },
    /// Neither a label nor an id: what SoftHSM2 leaves of an object whose
    /// creation was killed half-way (or another application's object).
    Unnamed,
}

/// Public or private half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Half {
    Public,
    Private,
}

/// One jwksd object found on the token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenObject {
    pub owner: Owner,
    pub half: Half,
}

/// The protection attributes of a private key object, read back from the
/// token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    pub token: bool,
    pub private: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
    pub sign: bool,
    /// Whether the token refused to return the secret value (`CKA_VALUE`
    /// for EC, `CKA_PRIVATE_EXPONENT` and the primes for RSA).
    pub secret_refused: bool,
}

impl Protection {
    /// Whether the key can never have left the token.
    pub fn is_custody(&self) -> bool {
        self.token
            && self.private
            && self.sensitive
            && !self.extractable
            && self.always_sensitive
            && self.never_extractable
            && self.secret_refused
    }
}

struct PoolState {
    idle: Vec<Session>,
    /// Sessions open, idle or lent.
    open: usize,
    /// Initialisations of the module since `open`; object handles are
    /// valid within one.
    epoch: u64,
    /// A reopening is waiting for the lent sessions: lend none.
    closing: bool,
    /// Threads waiting on `freed`: a session given back wakes them only
    /// when there are any (a wake is a system call, once per signature).
    waiting: usize,
}

/// Marks a generation in progress while it lives.
struct Generating<'a>(&'a Mutex<Option<Instant>>);

impl<'a> Generating<'a> {
    fn set(since: &'a Mutex<Option<Instant>>) -> Generating<'a> {
        *since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Generating(since)
    }
}

impl Drop for Generating<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// An open, logged-in token and its pool of sessions.
pub struct Token {
    ctx: Pkcs11,
    slot: Mutex<Slot>,
    module: PathBuf,
    label: String,
    pin: Mutex<Pin>,
    pin_file: Option<PathBuf>,
    /// The SHA-256 of the last PIN the token refused, never offered again.
    refused: Mutex<Option<[u8; 32]>>,
    sessions: usize,
    wait: Duration,
    pool: Mutex<PoolState>,
    freed: Condvar,
    /// One reopening at a time.
    reopening: Mutex<()>,
    /// Held for writing while a keypair is generated and named, for reading
    /// by every search of the token's objects (`C_FindObjects`). SoftHSM2
    /// re-reads every object of the token for a search, and a search from
    /// another session of this process while it creates a keypair can
    /// leave the new private key without `CKA_SENSITIVE` (seen under load:
    /// docs/pkcs11.md, "Several sessions of one process"). Signing with a
    /// key made or found before (`handles`) searches nothing and never
    /// waits here.
    objects: std::sync::RwLock<()>,
    /// Since when a generation holds `objects` (the health probe then
    /// waits for its next round rather than for the generation).
    generating: Mutex<Option<Instant>>,
    /// Private key handles found or made since the module was opened (by
    /// epoch), so that signing with them searches nothing.
    handles: Mutex<std::collections::HashMap<Kid, (u64, ObjectHandle)>>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.module)
            .field("label", &self.label)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        // Sessions first (closing the last one logs out), then the module.
        match self.pool.lock() {
            Ok(mut p) => p.idle.clear(),
            Err(poisoned) => poisoned.into_inner().idle.clear(),
        }
        let _ = self.ctx.clone().finalize();
    }
}

/// A session lent by the pool; given back when dropped, or closed if an
/// operation found it broken.
struct Lent<'a> {
    token: &'a Token,
    session: Option<Session>,
    epoch: u64,
    broken: bool,
}

impl std::ops::Deref for Lent<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Present from creation until drop.
        self.session.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let mut pool = self.token.lock_pool();
        let wake = pool.waiting > 0;
        if pool.epoch != self.epoch {
            // Opened before a reinitialisation (only if a reopening gave up
            // waiting and went on failing): its handle may now name another
            // initialisation's session, which closing it would close.
            drop(pool);
            std::mem::forget(session);
        } else if self.broken {
            pool.open = pool.open.saturating_sub(1);
            drop(pool);
            drop(session);
        } else {
            pool.idle.push(session);
            drop(pool);
        }
        if wake {
            self.token.freed.notify_all();
        }
    }
}

/// Why an operation on a lent session failed: a PKCS#11 call (mapped to a
/// [`TokenError`] with the session's fate decided), or a finding of ours.
enum Fail {
    Ck(&'static str, CkError),
    Token(TokenError),
}

fn ck(op: &'static str) -> impl Fn(CkError) -> Fail {
    move |e| Fail::Ck(op, e)
}

impl Token {
    /// Loads the module, finds the token, logs in and opens the pool's
    /// sessions. Each failure is its own error: the module missing or not
    /// loadable, no such token, a wrong or locked PIN.
    pub fn open(config: TokenConfig) -> Result<Arc<Token>, TokenError> {
        let TokenConfig {
            module,
            token_label: label,
            pin,
            pin_file,
            sessions,
            session_wait,
        } = config;
        if !module.exists() {
            return Err(TokenError::ModuleMissing { module });
        }
        let ctx = Pkcs11::new(&module).map_err(|e| TokenError::ModuleLoad {
            module: module.clone(),
            reason: e.to_string(),
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                return Err(TokenError::AlreadyOpen { module });
            }
            Err(e) => {
                return Err(TokenError::ModuleInit {
                    module,
                    reason: reason(&e),
                });
            }
        }
        // Once the Token exists, its drop finalises the module; before
        // that, by hand.
        let slot = match find_slot(&ctx, &module, &label) {
            Ok(slot) => slot,
            Err(e) => {
                let _ = ctx.finalize();
                return Err(e);
            }
        };
        let token = Arc::new(Token {
            ctx,
            slot: Mutex::new(slot),
            module,
            label,
            pin: Mutex::new(pin),
            pin_file,
            refused: Mutex::new(None),
            sessions: sessions.max(1),
            wait: session_wait,
            pool: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                epoch: 0,
                closing: false,
                waiting: 0,
            }),
            freed: Condvar::new(),
            reopening: Mutex::new(()),
            objects: std::sync::RwLock::new(()),
            generating: Mutex::new(None),
            handles: Mutex::new(std::collections::HashMap::new()),
        });
        token.check_pin_flags()?;
        // Every session now, so that a problem shows at start-up.
        let first = token.open_sessions()?;
        {
            let mut pool = token.lock_pool();
            pool.open = first.len();
            pool.idle = first;
        }
        Ok(token)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn module(&self) -> &Path {
        &self.module
    }

    /// Sessions the pool keeps.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    fn lock_pool(&self) -> MutexGuard<'_, PoolState> {
        // Nothing panics while holding the lock; a poisoned pool is still a
        // consistent list of sessions.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self) -> Slot {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses the first of `algs` whose key generation or signature the
    /// token does not offer ([`Mechanisms`]), so that a start fails
    /// naming it instead of the first rotation.
    pub fn supports(&self, algs: &[Alg]) -> Result<(), TokenError> {
        let offered = self
            .ctx
            .get_mechanism_list(self.slot())
            .map_err(|e| self.fail("C_GetMechanismList", None, e))?;
        match Mechanisms::first_missing(&offered, algs) {
            Some((alg, what, mechanism)) => Err(TokenError::Unsupported {
                label: self.label.clone(),
                alg,
                what,
                mechanism: mechanism.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn check_pin_flags(&self) -> Result<(), TokenError> {
        let info = self
            .ctx
            .get_token_info(self.slot())
            .map_err(|e| self.fail("C_GetTokenInfo", None, e))?;
        let label = self.label.clone();
        if !info.user_pin_initialized() {
            return Err(TokenError::PinNotInitialized { label });
        }
        if info.user_pin_locked() {
            return Err(TokenError::PinLocked { label });
        }
        if info.user_pin_final_try() {
            return Err(TokenError::PinFinalTry { label });
        }
        Ok(())
    }

    fn open_sessions(&self) -> Result<Vec<Session>, TokenError> {
        let mut all = Vec::with_capacity(self.sessions);
        for _ in 0..self.sessions {
            all.push(self.open_session()?);
        }
        Ok(all)
    }

    /// A new read-write session, logged in. (The login is the
    /// application's: once one session is logged in, every session is.)
    fn open_session(&self) -> Result<Session, TokenError> {
        let session = self
            .ctx
            .open_rw_session(self.slot())
            .map_err(|e| self.fail("C_OpenSession", None, e))?;
        let (pin, digest) = {
            let held = self.pin.lock().unwrap_or_else(|p| p.into_inner());
            (held.raw(), openssl::sha::sha256(&held.0))
        };
        // Every wrong PIN counts towards locking the token: one it refused
        // is not offered again (a reopening every second would spend the
        // tries); a different PIN in the file is.
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if *refused == Some(digest) {
            return Err(TokenError::WrongPin {
                label: self.label.clone(),
            });
        }
        match session.login_with_raw(UserType::User, &pin) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                *refused = None;
                Ok(session)
            }
            Err(CkError::Pkcs11(rv, _)) => {
                let label = self.label.clone();
                Err(match rv {
                    RvError::PinIncorrect => {
                        *refused = Some(digest);
                        TokenError::WrongPin { label }
                    }
                    RvError::PinLocked => TokenError::PinLocked { label },
                    RvError::UserPinNotInitialized => TokenError::PinNotInitialized { label },
                    RvError::PinLenRange | RvError::PinInvalid => TokenError::PinInvalid {
                        label,
                        reason: format!("{rv:?}"),
                    },
                    other => self.fail(
                        "C_Login",
                        None,
                        CkError::Pkcs11(other, cryptoki::context::Function::Login),
                    ),
                })
            }
            Err(e) => Err(self.fail("C_Login", None, e)),
        }
    }

    /// Waits up to `wait` for a session to come back, counted among the
    /// waiters (whom a session given back wakes).
    fn wait_freed<'a>(
        &self,
        mut pool: MutexGuard<'a, PoolState>,
        wait: Duration,
    ) -> MutexGuard<'a, PoolState> {
        pool.waiting += 1;
        let mut pool = self
            .freed
            .wait_timeout(pool, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        pool.waiting -= 1;
        pool
    }

    fn pool_timeout(&self) -> TokenError {
        TokenError::PoolTimeout {
            label: self.label.clone(),
            waited: self.wait,
            sessions: self.sessions,
        }
    }

    /// Lends a session: an idle one, a new one while fewer than the pool's
    /// size are open, or the first one given back before the deadline.
    fn lend(&self) -> Result<Lent<'_>, TokenError> {
        let deadline = Instant::now() + self.wait;
        let mut pool = self.lock_pool();
        loop {
            if !pool.closing {
                let epoch = pool.epoch;
                if let Some(session) = pool.idle.pop() {
                    return Ok(Lent {
                        token: self,
                        session: Some(session),
                        epoch,
                        broken: false,
                    });
                }
                if pool.open < self.sessions {
                    pool.open += 1;
                    drop(pool);
                    return match self.open_session() {
                        Ok(session) => Ok(Lent {
                            token: self,
                            session: Some(session),
                            epoch,
                            broken: false,
                        }),
                        Err(e) => {
                            let mut pool = self.lock_pool();
                            if pool.epoch == epoch {
                                pool.open = pool.open.saturating_sub(1);
                            }
                            drop(pool);
                            self.freed.notify_all();
                            Err(e)
                        }
                    };
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.pool_timeout());
            }
            pool = self.wait_freed(pool, deadline - now);
        }
    }

    /// Lends one session and keeps it until the returned guard drops: a
    /// test's way to make every session of the pool busy.
    #[doc(hidden)]
    pub fn occupy_session(&self) -> Result<impl Sized + '_, TokenError> {
        self.lend()
    }

    /// Runs `f` on one lent session, with the initialisation it belongs
    /// to. Every handle `f` gets from the token is used within `f`, on that
    /// session, so that no reopening falls between finding an object and
    /// using it. A session the error shows broken is closed rather than
    /// given back; the next operation opens a new one.
    fn run<R>(
        &self,
        kid: Option<&str>,
        f: impl FnOnce(&Session, u64) -> Result<R, Fail>,
    ) -> Result<R, TokenError> {
        let mut lent = self.lend()?;
        let epoch = lent.epoch;
        match f(&lent, epoch) {
            Ok(r) => Ok(r),
            Err(Fail::Token(e)) => Err(e),
            Err(Fail::Ck(op, e)) => {
                if let CkError::Pkcs11(rv, _) = &e
                    && session_is_broken(*rv)
                {
                    lent.broken = true;
                }
                Err(self.fail(op, kid, e))
            }
        }
    }

    fn fail(&self, op: &'static str, kid: Option<&str>, e: CkError) -> TokenError {
        let label = self.label.clone();
        match e {
            CkError::Pkcs11(rv, _) if session_is_broken(rv) => TokenError::TokenGone {
                label,
                op,
                reason: reason(&e),
            },
            CkError::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _) => {
                TokenError::StaleHandle {
                    label,
                    kid: kid.unwrap_or_default().to_owned(),
                }
            }
            e => TokenError::Operation {
                label,
                op,
                kid: kid.map(str::to_owned),
                reason: reason(&e),
            },
        }
    }

    fn bad(&self, name: &str, reason: String) -> Fail {
        Fail::Token(TokenError::BadKey {
            label: self.label.clone(),
            kid: name.to_owned(),
            reason,
        })
    }

    /// Opens the module again: waits (up to `session_wait`) for the lent
    /// sessions to come back, closes every session, finalises and
    /// initialises the module, finds the token again and logs in. What
    /// recovers a token that went away and came back (SoftHSM2 shows such a
    /// token empty until then: docs/pkcs11.md). Signers made before keep
    /// working: they find their key again by kid.
    pub fn reopen(&self) -> Result<(), TokenError> {
        let _one = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + self.wait;
        let mut pool = self.lock_pool();
        pool.closing = true;
        while pool.idle.len() < pool.open {
            let now = Instant::now();
            if now >= deadline {
                pool.closing = false;
                drop(pool);
                self.freed.notify_all();
                return Err(self.pool_timeout());
            }
            pool = self.wait_freed(pool, deadline - now);
        }
        // Every session is back: close them while the module still knows
        // them, then start again.
        pool.idle.clear();
        pool.open = 0;
        pool.epoch += 1;
        drop(pool);
        if let Some(file) = &self.pin_file
            && let Ok(pin) = Pin::from_file(file)
        {
            *self.pin.lock().unwrap_or_else(|p| p.into_inner()) = pin;
        }
        let result = self.reinitialise();
        let mut pool = self.lock_pool();
        let result = match result {
            Ok(sessions) => {
                pool.open = sessions.len();
                pool.idle = sessions;
                Ok(())
            }
            Err(e) => {
                pool.open = 0;
                Err(e)
            }
        };
        pool.closing = false;
        drop(pool);
        self.freed.notify_all();
        result
    }

    fn reinitialise(&self) -> Result<Vec<Session>, TokenError> {
        // Not initialised (an earlier reopening failed half-way) is fine.
        let _ = self.ctx.clone().finalize();
        self.ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| TokenError::ModuleInit {
                module: self.module.clone(),
                reason: reason(&e),
            })?;
        let slot = find_slot(&self.ctx, &self.module, &self.label)?;
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = slot;
        self.check_pin_flags()?;
        self.open_sessions()
    }

    /// Generates a keypair in the token, names both halves by the kid (the
    /// RFC 7638 thumbprint of the public half read back) and returns it, on
    /// one session. If naming fails, the pending objects are destroyed
    /// (best effort: a crash leaves them for [`Token::list`] to report as
    /// pending).
    pub fn generate(&self, alg: Alg, rsa_bits: u32) -> Result<TokenKey, TokenError> {
        self.make(alg, rsa_bits, |kid| kid.as_str().as_bytes().to_vec())
    }

    /// Generates a keypair as [`Token::generate`] does, for the key ring
    /// marked `ring` (letters and digits): its `CKA_ID` is the kid and its
    /// label [`STAGED_PREFIX`], `ring` and `now` (Unix seconds). Nothing is
    /// written to it afterwards: SoftHSM2 rewrites an object's file in
    /// place, and a process killed during a write loses the object
    /// (docs/pkcs11.md, "Crash rules"). The daemon's generation: the key is
    /// committed once a state of that key ring names it.
    pub fn stage(
        &self,
        alg: Alg,
        rsa_bits: u32,
        ring: &str,
        now: u64,
    ) -> Result<TokenKey, TokenError> {
        self.make(alg, rsa_bits, |_| {
            format!("{STAGED_PREFIX}{ring}-{now}").into_bytes()
        })
    }

    fn make(
        &self,
        alg: Alg,
        rsa_bits: u32,
        label: impl Fn(&Kid) -> Vec<u8>,
    ) -> Result<TokenKey, TokenError> {
        if alg.is_rsa() && !RSA_BITS.contains(&rsa_bits) {
            return Err(TokenError::RsaBits(rsa_bits));
        }
        let pending = pending_label();
        let _alone = self.objects.write().unwrap_or_else(|p| p.into_inner());
        let _flag = Generating::set(&self.generating);
        self.run(Some(&pending), |s, epoch| {
            let (mechanism, public_template, private_template) =
                templates(alg, rsa_bits, pending.as_bytes());
            let (public_handle, private_handle) = s
                .generate_key_pair(&mechanism, &public_template, &private_template)
                .map_err(ck("C_GenerateKeyPair"))?;
            let named = (|| -> Result<TokenKey, Fail> {
                let public = self.read_public(s, alg, public_handle, &pending)?;
                let kid = public.thumbprint();
                let rename = [
                    Attribute::Id(kid.as_str().as_bytes().to_vec()),
                    Attribute::Label(label(&kid)),
                ];
                s.update_attributes(private_handle, &rename)
                    .map_err(ck("C_SetAttributeValue"))?;
                s.update_attributes(public_handle, &rename)
                    .map_err(ck("C_SetAttributeValue"))?;
                self.remember(&kid, epoch, private_handle);
                Ok(TokenKey { kid, alg, public })
            })();
            if named.is_err() {
                let _ = s.destroy_object(private_handle);
                let _ = s.destroy_object(public_handle);
            }
            named
        })
    }

    /// The public half of `handle`, checked (curve, point on the curve, RSA
    /// size).
    fn read_public(
        &self,
        s: &Session,
        alg: Alg,
        handle: ObjectHandle,
        name: &str,
    ) -> Result<PublicKey, Fail> {
        let read = ck("C_GetAttributeValue");
        let key_type = s
            .get_attributes(handle, &[AttributeType::KeyType])
            .map_err(&read)?;
        let expected = match alg.key_kind() {
            KeyKind::Ec(_) => KeyType::EC,
            KeyKind::Rsa => KeyType::RSA,
            KeyKind::Ed25519 => KeyType::EC_EDWARDS,
        };
        match key_type.first() {
            Some(Attribute::KeyType(t)) if *t == expected => {}
            other => {
                return Err(self.bad(
                    name,
                    format!("key type {other:?}, where {alg} needs {expected:?}"),
                ));
            }
        }
        match alg.key_kind() {
            KeyKind::Ec(_) | KeyKind::Ed25519 => {
                let attrs = s
                    .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
                    .map_err(read)?;
                let mut params = None;
                let mut point = None;
                for a in attrs {
                    match a {
                        Attribute::EcParams(p) => params = Some(p),
                        Attribute::EcPoint(p) => point = Some(p),
                        _ => {}
                    }
                }
                let point = point.ok_or_else(|| self.bad(name, "no CKA_EC_POINT".into()))?;
                match alg.key_kind() {
                    KeyKind::Ec(curve) => {
                        if params.as_deref() != Some(curve.ec_params()) {
                            return Err(self.bad(name, format!("not a {} key", curve.name())));
                        }
                        ec_public(curve, &point).map_err(|r| self.bad(name, r))
                    }
                    _ => {
                        let p = params.as_deref();
                        if p != Some(&ED25519_PARAMS[..]) && p != Some(ED25519_PARAMS_NAME) {
                            return Err(self.bad(name, "not an Ed25519 key".into()));
                        }
                        ed25519_public(&point).map_err(|r| self.bad(name, r))
                    }
                }
            }
            KeyKind::Rsa => {
                let attrs = s
                    .get_attributes(
                        handle,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(read)?;
                let mut n = None;
                let mut e = None;
                for a in attrs {
                    match a {
                        Attribute::Modulus(v) => n = Some(v),
                        Attribute::PublicExponent(v) => e = Some(v),
                        _ => {}
                    }
                }
                let (Some(n), Some(e)) = (n, e) else {
                    return Err(self.bad(name, "no modulus or public exponent".into()));
                };
                let public = PublicKey::Rsa {
                    n: URL_SAFE_NO_PAD.encode(strip_zeros(&n)),
                    e: URL_SAFE_NO_PAD.encode(strip_zeros(&e)),
                };
                match public.rsa_bits() {
                    Some(bits) if RSA_BITS.contains(&bits) => Ok(public),
                    other => Err(self.bad(name, format!("RSA modulus of {other:?} bits"))),
                }
            }
        }
    }

    /// Handles of the objects named `name` of one class.
    fn find(s: &Session, name: &str, class: ObjectClass) -> Result<Vec<ObjectHandle>, Fail> {
        s.find_objects(&[
            Attribute::Class(class),
            Attribute::Id(name.as_bytes().to_vec()),
        ])
        .map_err(ck("C_FindObjects"))
    }

    /// Leave to search the token's objects: never beside a generation
    /// (`objects`). Taken before a session is borrowed (a generation holds
    /// the lock, then borrows one), and waited for at most `session_wait`.
    fn searching(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>, TokenError> {
        let deadline = Instant::now() + self.wait;
        loop {
            match self.objects.try_read() {
                Ok(g) => return Ok(g),
                Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::TryLockError::WouldBlock) => return Err(self.pool_timeout()),
            }
        }
    }

    /// How long the keypair being generated now has taken, if one is.
    pub fn generating_for(&self) -> Option<Duration> {
        let since = *self.generating.lock().unwrap_or_else(|p| p.into_inner());
        since.map(|t| t.elapsed())
    }

    fn find_one(
        &self,
        s: &Session,
        kid: &Kid,
        class: ObjectClass,
    ) -> Result<Option<ObjectHandle>, Fail> {
        let found = Token::find(s, kid.as_str(), class)?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            more => Err(self.bad(
                kid.as_str(),
                format!(
                    "{} objects of one class carry this kid; remove the extra ones by hand",
                    more.len()
                ),
            )),
        }
    }

    fn not_found(&self, kid: &Kid) -> Fail {
        Fail::Token(TokenError::KeyNotFound {
            label: self.label.clone(),
            kid: kid.clone(),
        })
    }

    /// The key named `kid`, if the token holds both halves; its public half
    /// must be a key for `alg` (the state's word: an RSA object is the same
    /// for RS256 and PS256) with `kid` as its thumbprint.
    pub fn key(&self, kid: &Kid, alg: Alg) -> Result<Option<TokenKey>, TokenError> {
        let _search = self.searching()?;
        self.run(Some(kid.as_str()), |s, _| {
            let Some(public_handle) = self.find_one(s, kid, ObjectClass::PUBLIC_KEY)? else {
                return Ok(None);
            };
            if self.find_one(s, kid, ObjectClass::PRIVATE_KEY)?.is_none() {
                return Ok(None);
            }
            let public = self.read_public(s, alg, public_handle, kid.as_str())?;
            if public.thumbprint() != *kid {
                return Err(self.bad(
                    kid.as_str(),
                    format!(
                        "its public key's thumbprint is {}: the object was not made by jwksd, \
                         or was altered",
                        public.thumbprint()
                    ),
                ));
            }
            Ok(Some(TokenKey {
                kid: kid.clone(),
                alg,
                public,
            }))
        })
    }

    /// The private key's handle and the initialisation it is valid in.
    fn private_handle(&self, kid: &Kid) -> Result<(u64, ObjectHandle), TokenError> {
        // A key this process made or found since the module was opened
        // needs no search (after a rotation, the next key made here).
        if let Some(known) = self.run(Some(kid.as_str()), |_, epoch| Ok(self.known(kid, epoch)))? {
            return Ok(known);
        }
        let _search = self.searching()?;
        self.run(Some(kid.as_str()), |s, epoch| {
            let handle = self
                .find_one(s, kid, ObjectClass::PRIVATE_KEY)?
                .ok_or_else(|| self.not_found(kid))?;
            self.remember(kid, epoch, handle);
            Ok((epoch, handle))
        })
    }

    /// The private key handle of `kid` this process knows in `epoch`.
    fn known(&self, kid: &Kid, epoch: u64) -> Option<(u64, ObjectHandle)> {
        let known = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        known.get(kid).copied().filter(|(e, _)| *e == epoch)
    }

    fn forget(&self, kid: &Kid) {
        let mut known = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        known.remove(kid);
    }

    fn remember(&self, kid: &Kid, epoch: u64, handle: ObjectHandle) {
        let mut known = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(kid.clone(), (epoch, handle));
    }

    /// A signer for the private key of `key`, found now.
    pub fn signer(self: &Arc<Self>, key: &TokenKey) -> Result<TokenSigner, TokenError> {
        let handle = self.private_handle(&key.kid)?;
        let signer = self.signer_unresolved(key);
        *signer.handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(signer)
    }

    /// A signer for the private key of `key` that finds it at its first
    /// signature: making it asks nothing of the token (the daemon builds
    /// its view of the key ring while the token may be away).
    pub fn signer_unresolved(self: &Arc<Self>, key: &TokenKey) -> TokenSigner {
        let len = match key.alg.key_kind() {
            KeyKind::Ec(curve) => 2 * curve.bytes(),
            KeyKind::Ed25519 => 64,
            KeyKind::Rsa => key.public.rsa_bits().unwrap_or(2048) as usize / 8,
        };
        TokenSigner {
            token: Arc::clone(self),
            kid: key.kid.clone(),
            alg: key.alg,
            handle: Arc::new(Mutex::new(None)),
            len,
        }
    }

    /// Signs `message` with the private key `handle` of initialisation
    /// `epoch` (`StaleHandle` if the module was initialised again since):
    /// ECDSA over its SHA-256 digest (JOSE's `r || s`), or
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    fn sign_with(
        &self,
        alg: Alg,
        (epoch, handle): (u64, ObjectHandle),
        kid: &Kid,
        message: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        self.run(Some(kid.as_str()), |s, now| {
            if now != epoch {
                return Err(Fail::Token(TokenError::StaleHandle {
                    label: self.label.clone(),
                    kid: kid.to_string(),
                }));
            }
            let (mechanism, input) = signing(alg, message);
            let sig = s.sign(&mechanism, handle, &input).map_err(ck("C_Sign"))?;
            let expected = match alg.key_kind() {
                KeyKind::Ec(curve) => Some(2 * curve.bytes()),
                KeyKind::Ed25519 => Some(64),
                KeyKind::Rsa => None,
            };
            if let Some(len) = expected
                && sig.len() != len
            {
                return Err(self.bad(
                    kid.as_str(),
                    format!("{alg} signature of {} bytes, expected {len}", sig.len()),
                ));
            }
            Ok(sig)
        })
    }

    /// Destroys both halves of `kid`; returns how many objects went (0: the
    /// token held none, which is not an error, so a retried retirement
    /// succeeds).
    pub fn destroy(&self, kid: &Kid) -> Result<usize, TokenError> {
        self.destroy_named(kid.as_str())
    }

    /// Destroys the objects of a keypair left pending by a crash (see
    /// [`Owner::Pending`]).
    pub fn destroy_pending(&self, label: &str) -> Result<usize, TokenError> {
        if !label.starts_with(PENDING_PREFIX) {
            return Err(TokenError::BadKey {
                label: self.label.clone(),
                kid: label.to_owned(),
                reason: format!("not a pending label (they start with {PENDING_PREFIX})"),
            });
        }
        self.destroy_named(label)
    }

    fn destroy_named(&self, name: &str) -> Result<usize, TokenError> {
        if let Ok(kid) = name.parse::<Kid>() {
            self.forget(&kid);
        }
        let _search = self.searching()?;
        self.run(Some(name), |s, _| {
            let mut handles = Token::find(s, name, ObjectClass::PRIVATE_KEY)?;
            handles.extend(Token::find(s, name, ObjectClass::PUBLIC_KEY)?);
            for h in &handles {
                s.destroy_object(*h).map_err(ck("C_DestroyObject"))?;
            }
            Ok(handles.len())
        })
    }

    /// Every jwksd object on the token: keys named by a kid (`CKA_ID` equal
    /// to `CKA_LABEL`, a kid of 43 characters), staged and pending ones. Other
    /// objects (another application's) are left out. A listing is what the
    /// token shows now, which may be less than it holds (docs/pkcs11.md):
    /// never destroy anything because it is missing from one.
    pub fn list(&self) -> Result<Vec<TokenObject>, TokenError> {
        let _search = self.searching()?;
        self.run(None, |s, _| {
            let mut out = Vec::new();
            for (class, half) in [
                (ObjectClass::PRIVATE_KEY, Half::Private),
                (ObjectClass::PUBLIC_KEY, Half::Public),
            ] {
                let handles = s
                    .find_objects(&[Attribute::Class(class)])
                    .map_err(ck("C_FindObjects"))?;
                for h in handles {
                    // Another process may destroy or change an object while
                    // this one lists: what cannot be read is not listed
                    // (a listing is never evidence of absence).
                    let Ok(attrs) = s.get_attributes(h, &[AttributeType::Label, AttributeType::Id])
                    else {
                        continue;
                    };
                    let mut label = None;
                    let mut id = None;
                    for a in attrs {
                        match a {
                            Attribute::Label(v) => label = Some(v),
                            Attribute::Id(v) => id = Some(v),
                            _ => {}
                        }
                    }
                    let (label, id) = (label.unwrap_or_default(), id.unwrap_or_default());
                    if label.is_empty() && id.is_empty() {
                        out.push(TokenObject {
                            owner: Owner::Unnamed,
                            half,
                        });
                        continue;
                    }
                    let Ok(label) = String::from_utf8(label) else {
                        continue;
                    };
                    if let Some(rest) = label.strip_prefix(STAGED_PREFIX) {
                        let kid = std::str::from_utf8(&id)
                            .ok()
                            .and_then(|i| i.parse::<Kid>().ok());
                        if let (Some(kid), Some((ring, since))) = (kid, rest.rsplit_once('-'))
                            && let Ok(since) = since.parse::<u64>()
                            && kid.as_str().len() == KID_LEN
                        {
                            out.push(TokenObject {
                                owner: Owner::Staged {
                                    kid,
                                    ring: ring.to_owned(),
                                    since,
                                },
                                half,
                            });
                        }
                        continue;
                    }
                    if label.as_bytes() != id.as_slice() {
                        continue;
                    }
                    let owner = if label.starts_with(PENDING_PREFIX) {
                        Owner::Pending(label)
                    } else if let Ok(kid) = label.parse::<Kid>()
                        && kid.as_str().len() == KID_LEN
                    {
                        Owner::Kid(kid)
                    } else {
                        continue;
                    };
                    out.push(TokenObject { owner, half });
                }
            }
            out.sort();
            Ok(out)
        })
    }

    /// The protection attributes of `kid`'s private object, as the token
    /// reports them (an audit: [`Protection::is_custody`]).
    pub fn protection(&self, kid: &Kid) -> Result<Protection, TokenError> {
        let _search = self.searching()?;
        self.run(Some(kid.as_str()), |s, _| {
            let handle = self
                .find_one(s, kid, ObjectClass::PRIVATE_KEY)?
                .ok_or_else(|| self.not_found(kid))?;
            let read = ck("C_GetAttributeValue");
            let attrs = s
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Sign,
                    ],
                )
                .map_err(&read)?;
            let mut p = Protection {
                token: false,
                private: false,
                sensitive: false,
                extractable: true,
                always_sensitive: false,
                never_extractable: false,
                sign: false,
                secret_refused: false,
            };
            for a in attrs {
                match a {
                    Attribute::Token(v) => p.token = v,
                    Attribute::Private(v) => p.private = v,
                    Attribute::Sensitive(v) => p.sensitive = v,
                    Attribute::Extractable(v) => p.extractable = v,
                    Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                    Attribute::NeverExtractable(v) => p.never_extractable = v,
                    Attribute::Sign(v) => p.sign = v,
                    _ => {}
                }
            }
            let key_type = s
                .get_attributes(handle, &[AttributeType::KeyType])
                .map_err(&read)?;
            let secrets: &[AttributeType] = match key_type.first() {
                Some(Attribute::KeyType(t)) if *t == KeyType::RSA => &[
                    AttributeType::PrivateExponent,
                    AttributeType::Prime1,
                    AttributeType::Prime2,
                ],
                // EC and Edwards keys: the private value.
                _ => &[AttributeType::Value],
            };
            // Only the length is asked for: the value never reaches this
            // process, even from a token that would hand it out.
            let info = s.get_attribute_info(handle, secrets).map_err(&read)?;
            p.secret_refused = info
                .iter()
                .all(|i| matches!(i, AttributeInfo::Sensitive | AttributeInfo::Unavailable));
            Ok(p)
        })
    }
}

/// A PKCS#11 failure in a few words: the return value's name
/// (`CKR_PIN_INCORRECT` as `PinIncorrect`), not cryptoki's paragraph.
fn reason(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

/// Finds the one slot whose token has `label`.
fn find_slot(ctx: &Pkcs11, module: &Path, label: &str) -> Result<Slot, TokenError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| TokenError::ModuleInit {
            module: module.to_owned(),
            reason: reason(&e),
        })?;
    let mut present = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let l = info.label().trim_end().to_owned();
        if l == label {
            matching.push(slot);
        }
        present.push(l);
    }
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => Err(TokenError::TokenNotFound {
            module: module.to_owned(),
            label: label.to_owned(),
            present,
        }),
        more => Err(TokenError::AmbiguousToken {
            module: module.to_owned(),
            label: label.to_owned(),
            count: more.len(),
        }),
    }
}

/// A label no other generation uses: the prefix, the Unix time (seconds)
/// and 128 random bits.
fn pending_label() -> String {
    let mut bytes = [0u8; 16];
    // OpenSSL's generator; a failure here only makes a collision with
    // another pending label possible, which generation then reports.
    let _ = openssl::rand::rand_bytes(&mut bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{PENDING_PREFIX}{now}-{}", hex::encode(bytes))
}

/// When a pending label (`jwksd-pending-<secs>-<hex>`) was made; `None`
/// for one without a time (made by hand, or by an older jwksd).
pub fn pending_since(label: &str) -> Option<u64> {
    let rest = label.strip_prefix(PENDING_PREFIX)?;
    let (secs, _) = rest.split_once('-')?;
    secs.parse().ok()
}

/// The mechanism and templates jwksd generates a keypair named `name` with
/// (both halves token objects; the private one sensitive, never
/// extractable, private, for signing only). Public for the benchmark's
/// reference loop (`examples/pkcs11_speed.rs`), which measures the token
/// on keys like jwksd's.
pub fn templates(
    alg: Alg,
    rsa_bits: u32,
    name: &[u8],
) -> (Mechanism<'static>, Vec<Attribute>, Vec<Attribute>) {
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Id(name.to_vec()),
        Attribute::Label(name.to_vec()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Id(name.to_vec()),
        Attribute::Label(name.to_vec()),
    ];
    let mechanism = match alg.key_kind() {
        KeyKind::Ec(curve) => {
            public.push(Attribute::EcParams(curve.ec_params().to_vec()));
            Mechanism::EccKeyPairGen
        }
        KeyKind::Rsa => {
            public.push(Attribute::ModulusBits(u64::from(rsa_bits).into()));
            public.push(Attribute::PublicExponent(RSA_EXPONENT.to_vec()));
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyKind::Ed25519 => {
            public.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
            Mechanism::EccEdwardsKeyPairGen
        }
    };
    (mechanism, public, private)
}

/// The public key on `curve` in `CKA_EC_POINT`: the uncompressed point,
/// DER OCTET STRING-wrapped as PKCS#11 says (some modules give it bare).
fn ec_public(curve: Curve, point: &[u8]) -> Result<PublicKey, String> {
    let width = curve.bytes();
    let len = 1 + 2 * width;
    let raw = match point {
        [0x04, l, rest @ ..] if usize::from(*l) == len && rest.len() == len => rest,
        bare if bare.len() == len => bare,
        _ => {
            return Err(format!(
                "CKA_EC_POINT of {} bytes is not a {} point",
                point.len(),
                curve.name()
            ));
        }
    };
    if raw[0] != 0x04 {
        return Err("the EC point is not uncompressed".into());
    }
    // On the curve (OpenSSL checks as it decodes).
    let group = openssl::ec::EcGroup::from_curve_name(curve.nid()).map_err(|e| e.to_string())?;
    let mut ctx = openssl::bn::BigNumContext::new().map_err(|e| e.to_string())?;
    openssl::ec::EcPoint::from_bytes(&group, raw, &mut ctx)
        .map_err(|e| format!("the EC point is not on {}: {e}", curve.name()))?;
    Ok(PublicKey::Ec {
        crv: curve.name().into(),
        x: URL_SAFE_NO_PAD.encode(&raw[1..1 + width]),
        y: URL_SAFE_NO_PAD.encode(&raw[1 + width..]),
    })
}

/// The Ed25519 public key in `CKA_EC_POINT`: 32 bytes, DER OCTET
/// STRING-wrapped (or bare), and a point OpenSSL accepts.
fn ed25519_public(point: &[u8]) -> Result<PublicKey, String> {
    let raw = match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        bare if bare.len() == 32 => bare,
        _ => {
            return Err(format!(
                "CKA_EC_POINT of {} bytes is not an Ed25519 public key",
                point.len()
            ));
        }
    };
    openssl::pkey::PKey::public_key_from_raw_bytes(raw, openssl::pkey::Id::ED25519)
        .map_err(|e| format!("not an Ed25519 public key: {e}"))?;
    Ok(PublicKey::Okp {
        crv: ED25519_CRV.into(),
        x: URL_SAFE_NO_PAD.encode(raw),
    })
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[first..]
}

/// A josekit signer whose private key stays in the token: each signature is
/// one `C_Sign` on a session lent by the pool.
#[derive(Clone)]
pub struct TokenSigner {
    token: Arc<Token>,
    kid: Kid,
    alg: Alg,
    /// The private key's handle and the initialisation it belongs to;
    /// found (again) by kid when unknown, when the token forgets it or
    /// after a reopening.
    handle: Arc<Mutex<Option<(u64, ObjectHandle)>>>,
    len: usize,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("token", &self.token.label)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// Signs `message` (the JWS signing input) in the token. A handle from
    /// before a reopening is found again by kid (at most twice: a token
    /// reopened over and over is reported, not chased).
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        let mut tries = 0;
        loop {
            let known = *self.handle.lock().unwrap_or_else(|p| p.into_inner());
            let handle = match known {
                Some(h) => h,
                None => {
                    let fresh = self.token.private_handle(&self.kid)?;
                    *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
                    fresh
                }
            };
            match self.token.sign_with(self.alg, handle, &self.kid, message) {
                Err(TokenError::StaleHandle { .. }) if tries < 2 => {
                    tries += 1;
                    *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    // Nor the handle the token remembered: search again.
                    self.token.forget(&self.kid);
                }
                other => return other,
            }
        }
    }
}

impl JwsSigner for TokenSigner {
    fn algorithm(&self) -> &dyn josekit::jws::JwsAlgorithm {
        jws_algorithm(self.alg)
    }

    fn key_id(&self) -> Option<&str> {
        Some(self.kid.as_str())
    }

    fn signature_len(&self) -> usize {
        self.len
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, josekit::JoseError> {
        self.sign_message(message)
            .map_err(|e| josekit::JoseError::InvalidSignature(e.into()))
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_without_a_mechanism_is_refused_naming_it() {
        let all: Vec<MechanismType> = Alg::ALL
            .iter()
            .flat_map(|a| {
                let m = Mechanisms::of(*a);
                [m.generate, m.sign]
            })
            .collect();
        assert_eq!(Mechanisms::first_missing(&all, &Alg::ALL), None);
        let without = |gone: MechanismType| -> Vec<MechanismType> {
            all.iter().copied().filter(|m| *m != gone).collect()
        };
        // No EdDSA: the Ed25519 algorithms only.
        let no_eddsa = without(MechanismType::EDDSA);
        assert_eq!(
            Mechanisms::first_missing(&no_eddsa, &[Alg::ES256, Alg::RS256, Alg::Ed25519]),
            Some((Alg::Ed25519, "sign with", MechanismType::EDDSA))
        );
        assert_eq!(
            Mechanisms::first_missing(&no_eddsa, &[Alg::ES256, Alg::PS256]),
            None
        );
        // No PSS: PS256, not RS256.
        let no_pss = without(MechanismType::SHA256_RSA_PKCS_PSS);
        assert_eq!(Mechanisms::first_missing(&no_pss, &[Alg::RS256]), None);
        assert_eq!(
            Mechanisms::first_missing(&no_pss, &[Alg::PS256]),
            Some((Alg::PS256, "sign with", MechanismType::SHA256_RSA_PKCS_PSS))
        );
        let no_edwards = without(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN);
        assert_eq!(
            Mechanisms::first_missing(&no_edwards, &[Alg::EdDSA]),
            Some((
                Alg::EdDSA,
                "generate",
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN
            ))
        );
        let e = TokenError::Unsupported {
            label: "jwksd".into(),
            alg: Alg::EdDSA,
            what: "sign with",
            mechanism: MechanismType::EDDSA.to_string(),
        };
        assert_eq!(
            e.to_string(),
            "token \"jwksd\" cannot sign with EdDSA keys: its module does not offer CKM_EDDSA; \
             remove EdDSA from algorithms, or keep keys.backend: software (docs/algorithms.md)"
        );
    }

    #[test]
    fn ec_point_is_unwrapped_from_its_octet_string() {
        // The P-256 generator.
        let g = hex::decode(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
             4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        )
        .unwrap();
        let bare = ec_public(Curve::P256, &g).unwrap();
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&g);
        assert_eq!(ec_public(Curve::P256, &wrapped).unwrap(), bare);
        assert!(ec_public(Curve::P384, &wrapped).is_err());
        let PublicKey::Ec { x, .. } = &bare else {
            panic!("not EC")
        };
        assert_eq!(x, "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY");
        // Off the curve, truncated, compressed.
        let mut off = g.clone();
        off[64] ^= 1;
        assert!(ec_public(Curve::P256, &off).is_err());
        assert!(ec_public(Curve::P256, &g[..64]).is_err());
        let mut compressed = g.clone();
        compressed[0] = 0x02;
        assert!(ec_public(Curve::P256, &compressed).is_err());
    }

    fn write_pin(dir: &Path, name: &str, body: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn pin_file_is_one_line_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write_pin(dir.path(), "ok", b"1234\n", 0o600);
        assert_eq!(&*Pin::from_file(&ok).unwrap().0, b"1234");
        let crlf = write_pin(dir.path(), "crlf", b"12 34\r\n", 0o400);
        assert_eq!(&*Pin::from_file(&crlf).unwrap().0, b"12 34");
        let open = write_pin(dir.path(), "open", b"1234", 0o640);
        let e = Pin::from_file(&open).unwrap_err();
        assert!(
            matches!(e, PinError::Permissions { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"));
        let empty = write_pin(dir.path(), "empty", b"\n", 0o600);
        assert!(matches!(
            Pin::from_file(&empty),
            Err(PinError::Empty { .. })
        ));
        let long = write_pin(dir.path(), "long", &[b'1'; 300], 0o600);
        assert!(matches!(
            Pin::from_file(&long),
            Err(PinError::TooLong { .. })
        ));
        let e = Pin::from_file(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(e, PinError::Io { .. }));
        // Nothing prints the PIN.
        let pin = Pin::from_file(&ok).unwrap();
        assert!(!format!("{pin:?}").contains("1234"));
    }

    #[test]
    fn missing_module_is_its_own_error() {
        let pin = Pin::new(Zeroizing::new(b"1234".to_vec())).unwrap();
        let e =
            Token::open(TokenConfig::new("/nonexistent/libpkcs11.so", "jwksd", pin)).unwrap_err();
        assert!(matches!(e, TokenError::ModuleMissing { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/libpkcs11.so"));
    }

    #[test]
    fn a_file_that_is_no_module_is_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libfake.so");
        std::fs::write(&fake, b"not a library").unwrap();
        let pin = Pin::new(Zeroizing::new(b"1234".to_vec())).unwrap();
        let e = Token::open(TokenConfig::new(&fake, "jwksd", pin)).unwrap_err();
        assert!(matches!(e, TokenError::ModuleLoad { .. }), "{e}");
    }
}

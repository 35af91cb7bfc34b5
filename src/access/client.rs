//! A client as configured: name, role, credentials and restrictions. The
//! same structs are the clients file's schema (`config::clients` reads and
//! writes them).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::cert::CertIdentity;
use crate::keys::Alg;
use crate::time::Timestamp;

/// What a client may do on the admin listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Pulls the active key and signs.
    Signer,
    /// Everything: what a signer and a viewer may, plus rotate and revoke.
    Operator,
    /// Reads the key list and timeline; no key material, no signing, no
    /// changes.
    Viewer,
}

/// What an endpoint needs ([`Role::allows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// `GET /v1/keys`: public keys, states and times.
    ReadKeys,
    /// `GET /v1/keys/active`, `POST /v1/sign`: the signing key.
    UseKey,
    /// `POST /v1/rotate`, `POST /v1/keys/{kid}/revoke`.
    Change,
    /// `GET /v1/events`: the live stream of key changes.
    FollowEvents,
    /// The operator console's audit records and its stream of every
    /// record (who did what): operators and viewers, as `jwksd audit`
    /// shows them to whoever can read the store.
    ReadAudit,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Signer, Role::Operator, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Signer => "signer",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub fn allows(self, p: Permission) -> bool {
        match self {
            Role::Operator => true,
            Role::Signer => matches!(p, Permission::UseKey | Permission::FollowEvents),
            Role::Viewer => matches!(p, Permission::ReadKeys | Permission::ReadAudit),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected signer, operator or viewer"))
    }
}

/// The SHA-256 of a bearer token: all the configuration holds of it.
/// Written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// The first 8 hex digits: enough to tell tokens apart in a listing,
    /// never the whole digest in a log line.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}…", self.short())
    }
}

impl fmt::Display for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for TokenDigest {
    type Err = String;
    fn from_str(s: &str) -> Result<TokenDigest, String> {
        let why = "a SHA-256 digest is 64 hex digits (`jwksd client token NAME` writes one; \
                   never put the token itself here)";
        if s.len() != 64 {
            return Err(format!("{why}; this has {} characters", s.len()));
        }
        let mut d = [0u8; 32];
        hex::decode_to_slice(s, &mut d).map_err(|_| why.to_owned())?;
        Ok(TokenDigest(d))
    }
}

impl Serialize for TokenDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TokenDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One token a client may present: its digest, and when it stops being
/// accepted (the old token of a rotation with an overlap).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub sha256: TokenDigest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
}

impl TokenEntry {
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// Which of a verified client certificate's names identify a client: each
/// one given must match.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertMatch {
    /// The subject in RFC 4514 form, as `openssl x509 -noout -subject
    /// -nameopt RFC2253` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Equal to one of the certificate's DNS (case-insensitive), URI,
    /// email or IP subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san: Option<String>,
}

impl CertMatch {
    pub fn matches(&self, id: &CertIdentity) -> bool {
        (self.subject.is_some() || self.san.is_some())
            && self.subject.as_ref().is_none_or(|s| *s == id.subject)
            && self.san.as_ref().is_none_or(|s| id.has_san(s))
    }
}

impl fmt::Display for CertMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.subject, &self.san) {
            (Some(s), Some(n)) => write!(f, "subject {s:?} and SAN {n:?}"),
            (Some(s), None) => write!(f, "subject {s:?}"),
            (None, Some(n)) => write!(f, "SAN {n:?}"),
            (None, None) => f.write_str("(nothing)"),
        }
    }
}

/// Which credentials a client must present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    /// Either a valid token or a matching certificate.
    #[default]
    Any,
    /// A valid token over a connection with a matching certificate.
    Both,
}

/// At most `count` signatures per `per`: a bucket of `count`, refilled
/// at that rate. Written `100/s`, `6000/min` or `100000/h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<RateLimit, String> {
        let why = || format!("{s:?} is not a rate: write N/s, N/min or N/h, e.g. 100/s");
        let (n, unit) = s.split_once('/').ok_or_else(why)?;
        let count: u32 = n.trim().parse().map_err(|_| why())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(why()),
        };
        if count == 0 {
            return Err(format!(
                "{s:?} allows no signature: remove the client's role to sign instead"
            ));
        }
        Ok(RateLimit { count, per })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A named client of the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`: in log lines and metric labels.
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertMatch>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub require: Require,
    /// The only algorithms it may sign with or pull the key of; all when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<Alg>>,
    /// Its client address must be in one of these; any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_rate_limit: Option<RateLimit>,
    /// `operator` and `signer` from the token files or `JWKSD_*_TOKEN`.
    #[serde(skip)]
    pub builtin: bool,
}

fn is_default(r: &Require) -> bool {
    *r == Require::Any
}

impl Client {
    /// A built-in client: one token, no restrictions.
    pub fn builtin(name: &str, role: Role, token: &str) -> Client {
        Client {
            name: name.to_owned(),
            role,
            tokens: vec![TokenEntry {
                sha256: TokenDigest::of(token),
                expires: None,
            }],
            certificate: None,
            require: Require::Any,
            algorithms: None,
            networks: Vec::new(),
            sign_rate_limit: None,
            builtin: true,
        }
    }

    pub fn may_use(&self, alg: Alg) -> bool {
        self.algorithms.as_ref().is_none_or(|a| a.contains(&alg))
    }

    pub fn may_come_from(&self, ip: std::net::IpAddr) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip))
    }

    /// What is wrong with this entry on its own, if anything: names are
    /// metric labels, and a client that can never authenticate is a
    /// mistake. (`Clients::new` checks the list as a whole.)
    pub fn check(&self) -> Result<(), String> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid_name {
            return Err(format!(
                "name {:?}: 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                self.name
            ));
        }
        if self.name == "unknown" {
            return Err(
                "name \"unknown\" is what metrics and logs call a caller no client matches; \
                 choose another"
                    .into(),
            );
        }
        if let Some(c) = &self.certificate
            && c.subject.is_none()
            && c.san.is_none()
        {
            return Err(format!(
                "client {}: certificate needs a subject, a san or both",
                self.name
            ));
        }
        if self.tokens.is_empty() && self.certificate.is_none() {
            return Err(format!(
                "client {}: no tokens and no certificate, so it can never authenticate; give it \
                 a token (`jwksd client token {}`) or remove it",
                self.name, self.name
            ));
        }
        if self.require == Require::Both && (self.tokens.is_empty() || self.certificate.is_none()) {
            return Err(format!(
                "client {}: require: both needs tokens and a certificate",
                self.name
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_model_says() {
        use Permission::*;
        assert!(Role::Operator.allows(ReadKeys) && Role::Operator.allows(UseKey));
        assert!(Role::Operator.allows(Change));
        assert!(Role::Signer.allows(UseKey) && Role::Signer.allows(FollowEvents));
        assert!(!Role::Viewer.allows(FollowEvents));
        assert!(!Role::Signer.allows(ReadKeys) && !Role::Signer.allows(Change));
        assert!(!Role::Signer.allows(ReadAudit));
        assert!(Role::Viewer.allows(ReadAudit) && Role::Operator.allows(ReadAudit));
        assert!(Role::Viewer.allows(ReadKeys));
        assert!(!Role::Viewer.allows(UseKey) && !Role::Viewer.allows(Change));
    }

    #[test]
    fn digests_rates_and_names_parse_or_say_why() {
        let d = TokenDigest::of("example");
        assert_eq!(d.to_string().parse::<TokenDigest>().unwrap(), d);
        assert!(
            format!("{d:?}").len() < 20,
            "never the whole digest in Debug"
        );
        let e = "a".repeat(40).parse::<TokenDigest>().unwrap_err();
        assert!(
            e.contains("64 hex digits") && e.contains("40 characters"),
            "{e}"
        );
        assert!("zz".repeat(32).parse::<TokenDigest>().is_err());
        assert_eq!(
            "100/s".parse::<RateLimit>().unwrap(),
            RateLimit {
                count: 100,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(
            "6000/min".parse::<RateLimit>().unwrap().to_string(),
            "6000/min"
        );
        assert!("0/s".parse::<RateLimit>().is_err());
        assert!("100".parse::<RateLimit>().is_err());
        assert!("100/day".parse::<RateLimit>().is_err());
        let mut c = Client::builtin("auth-eu.1", Role::Signer, "t");
        c.builtin = false;
        assert!(c.check().is_ok());
        for bad in ["", "a b", "ä", "unknown", &"x".repeat(65)] {
            c.name = bad.into();
            assert!(c.check().is_err(), "{bad:?}");
        }
        c.name = "x".into();
        c.require = Require::Both;
        assert!(c.check().unwrap_err().contains("require: both"));
        c.tokens.clear();
        c.require = Require::Any;
        assert!(c.check().unwrap_err().contains("never authenticate"));
    }
}

//! Keys as JWKs: the published public JWK, and the private JWK the
//! signing-key endpoint hands out, written through zeroizing buffers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::BigNumRef;
use openssl::error::ErrorStack;
use serde::Serialize;
use zeroize::Zeroizing;

use super::id::{Alg, Kid, PublicKey};

/// A published JWK: exactly `kty`, `kid`, `use`, `alg` and the public
/// parameters. Built from [`PublicKey`], which has no private members, so no
/// private member can reach the JWK Set by construction.
#[derive(Debug, Serialize)]
pub struct PublishedJwk<'a> {
    kty: &'static str,
    kid: &'a str,
    #[serde(rename = "use")]
    use_: &'static str,
    alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<&'a str>,
}

impl<'a> PublishedJwk<'a> {
    pub fn new(kid: &'a Kid, alg: Alg, public: &'a PublicKey) -> Self {
        let mut jwk = PublishedJwk {
            kty: "",
            kid: kid.as_str(),
            use_: "sig",
            alg: alg.as_str(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match public {
            PublicKey::Ec { crv, x, y } => {
                jwk.kty = "EC";
                jwk.crv = Some(crv);
                jwk.x = Some(x);
                jwk.y = Some(y);
            }
            PublicKey::Rsa { n, e } => {
                jwk.kty = "RSA";
                jwk.n = Some(n);
                jwk.e = Some(e);
            }
            PublicKey::Okp { crv, x } => {
                jwk.kty = "OKP";
                jwk.crv = Some(crv);
                jwk.x = Some(x);
            }
        }
        jwk
    }
}

/// A growable buffer for secrets. A `Vec` that grows moves its contents to
/// a new allocation and frees the old one as it is; this one wipes the old
/// allocation first, so growing leaves no copy behind. Serialise a secret
/// into it with `serde_json::to_writer`.
#[derive(Default)]
pub struct SecretBuf(Zeroizing<Vec<u8>>);

impl SecretBuf {
    pub fn with_capacity(capacity: usize) -> SecretBuf {
        SecretBuf(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::io::Write for SecretBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let needed = self.0.len().saturating_add(bytes.len());
        if needed > self.0.capacity() {
            let mut bigger = Vec::with_capacity(needed.max(self.0.capacity() * 2));
            bigger.extend_from_slice(&self.0);
            // The old buffer is wiped (its whole capacity) as it is dropped.
            self.0 = Zeroizing::new(bigger);
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// base64url (no padding) of a secret, in a zeroizing buffer of exactly its
/// length, encoded straight into it: `encode_string` encodes through a
/// buffer on the stack that it leaves as it is.
pub(super) fn secret_b64(bytes: &[u8]) -> Zeroizing<String> {
    let len = base64::encoded_len(bytes.len(), false).unwrap_or(0);
    let mut out = Zeroizing::new(vec![0u8; len]);
    let written = URL_SAFE_NO_PAD
        .encode_slice(bytes, &mut out)
        .expect("the buffer has the encoded length");
    out.truncate(written);
    // The same allocation, as a string (base64 is ASCII).
    Zeroizing::new(String::from_utf8(std::mem::take(&mut *out)).expect("base64 is ASCII"))
}

/// base64url of a big number's minimal big-endian bytes (RFC 7518
/// "Base64urlUInt"), or padded to `width` bytes (EC coordinates and `d`).
/// The bytes pass through a zeroizing buffer: some of these numbers are
/// secret.
pub(super) fn bn_b64(n: &BigNumRef, width: Option<usize>) -> Result<Zeroizing<String>, ErrorStack> {
    let bytes = Zeroizing::new(match width {
        Some(w) => n.to_vec_padded(w as i32)?,
        None => n.to_vec(),
    });
    Ok(secret_b64(&bytes))
}

/// The private members of a JWK, each in a zeroizing buffer, serialised
/// straight from there (never through a `serde_json::Value` or a `Jwk` map,
/// which would leave plain copies).
pub struct PrivateJwk<'a> {
    pub(super) kid: &'a str,
    pub(super) alg: Alg,
    pub(super) public: &'a PublicKey,
    /// EC and OKP: `d`. RSA: `d`, `p`, `q`, `dp`, `dq`, `qi`.
    pub(super) private: Vec<(&'static str, Zeroizing<String>)>,
}

impl Serialize for PrivateJwk<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self.public {
            PublicKey::Ec { crv, x, y } => {
                m.serialize_entry("kty", "EC")?;
                m.serialize_entry("crv", crv)?;
                m.serialize_entry("x", x)?;
                m.serialize_entry("y", y)?;
            }
            PublicKey::Rsa { n, e } => {
                m.serialize_entry("kty", "RSA")?;
                m.serialize_entry("n", n)?;
                m.serialize_entry("e", e)?;
            }
            PublicKey::Okp { crv, x } => {
                m.serialize_entry("kty", "OKP")?;
                m.serialize_entry("crv", crv)?;
                m.serialize_entry("x", x)?;
            }
        }
        for (name, value) in &self.private {
            m.serialize_entry(name, value.as_str())?;
        }
        m.serialize_entry("kid", self.kid)?;
        m.serialize_entry("alg", self.alg.as_str())?;
        m.serialize_entry("use", "sig")?;
        m.end()
    }
}

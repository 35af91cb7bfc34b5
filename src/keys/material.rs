//! A keypair in memory: its PKCS#8 in a zeroizing buffer, read into
//! OpenSSL without OpenSSL's DER decoder (which would leave a plain copy),
//! and what is derived from it (public key, kid, PEM, private JWK, signer).

use std::fmt;

use josekit::jws::JwsSigner;
use openssl::bn::{BigNum, BigNumContext, BigNumRef};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use zeroize::Zeroizing;

use super::error::KeyError;
use super::id::{Alg, Curve, ED25519_CRV, KeyKind, Kid, PublicKey};
use super::jwk::{PrivateJwk, SecretBuf, bn_b64, secret_b64};
use super::sign::{EcdsaSigner, Ed25519Signer, RsaSigner};

/// A freshly generated or freshly loaded keypair. The PKCS#8 bytes are wiped
/// from memory when this is dropped.
pub struct KeyMaterial {
    pub kid: Kid,
    pub alg: Alg,
    pub public: PublicKey,
    pub pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A private key as OpenSSL holds it.
enum OpenSslKey {
    Ec(Curve, EcKey<Private>),
    Rsa(Rsa<Private>),
    Ed25519(PKey<Private>),
}

/// Ed25519 keys are 32 bytes, private and public alike (RFC 8032 5.1.5).
const ED25519_BYTES: usize = 32;

impl Curve {
    /// OpenSSL's name of the curve.
    pub(super) fn nid(self) -> Nid {
        match self {
            Curve::P256 => Nid::X9_62_PRIME256V1,
            Curve::P384 => Nid::SECP384R1,
        }
    }

    fn oid(self) -> rsa::pkcs8::ObjectIdentifier {
        use rsa::pkcs8::AssociatedOid as _;
        match self {
            Curve::P256 => p256::NistP256::OID,
            Curve::P384 => p384::NistP384::OID,
        }
    }
}

/// A private number for OpenSSL: a BIGNUM flagged secure, which OpenSSL
/// wipes when it frees it (`BN_clear_free`, also for the copies its key
/// structures and their export to a provider make).
fn secret_bn(bytes: &[u8]) -> Result<BigNum, ErrorStack> {
    let mut n = BigNum::new_secure()?;
    n.copy_from_slice(bytes)?;
    Ok(n)
}

/// Reads a PKCS#8 key for `alg` into OpenSSL. The DER is parsed by the
/// `pkcs8`, `sec1` and `pkcs1` crates, which borrow from the zeroizing
/// buffer, and each number goes from there straight into OpenSSL: OpenSSL's
/// own DER decoder (`d2i_AutoPrivateKey`, `d2i_PKCS8_PRIV_KEY_INFO`) leaves
/// a copy of the private key in memory it frees without wiping.
fn open_private(alg: Alg, pkcs8: &[u8]) -> Result<OpenSslKey, KeyError> {
    use rsa::pkcs8::der::Decode as _;
    let parse = |reason: String| KeyError::Parse { alg, reason };
    let ossl = |e: ErrorStack| parse(e.to_string());
    let info = rsa::pkcs8::PrivateKeyInfo::from_der(pkcs8).map_err(|e| parse(e.to_string()))?;
    match alg.key_kind() {
        KeyKind::Ec(curve) => {
            let curve_oid = curve.oid();
            let name = curve.name();
            info.algorithm
                .assert_algorithm_oid(p256::elliptic_curve::ALGORITHM_OID)
                .map_err(|e| parse(format!("not an EC key: {e}")))?;
            if info.algorithm.parameters_oid().ok() != Some(curve_oid) {
                return Err(parse(format!("not a {name} key")));
            }
            let sec1 =
                sec1::EcPrivateKey::from_der(info.private_key).map_err(|e| parse(e.to_string()))?;
            if let Some(p) = sec1.parameters
                && p.named_curve() != Some(curve_oid)
            {
                return Err(parse(format!("not a {name} key")));
            }
            if sec1.private_key.len() != curve.bytes() {
                return Err(parse(format!("not a {name} private key")));
            }
            let group = EcGroup::from_curve_name(curve.nid()).map_err(ossl)?;
            let d = secret_bn(sec1.private_key).map_err(ossl)?;
            // The public key from the private one, by OpenSSL: every load
            // derives it the same way, whatever the file says.
            let mut ctx = BigNumContext::new_secure().map_err(ossl)?;
            let mut public = EcPoint::new(&group).map_err(ossl)?;
            public.mul_generator2(&group, &d, &mut ctx).map_err(ossl)?;
            // A public key in the file must be that one: a damaged file is
            // refused, not repaired.
            if let Some(stored) = sec1.public_key {
                let stored = EcPoint::from_bytes(&group, stored, &mut ctx).map_err(ossl)?;
                if !stored.eq(&group, &public, &mut ctx).map_err(ossl)? {
                    return Err(parse(
                        "the public key does not match the private key".into(),
                    ));
                }
            }
            let key = EcKey::from_private_components(&group, &d, &public).map_err(ossl)?;
            key.check_key().map_err(ossl)?;
            Ok(OpenSslKey::Ec(curve, key))
        }
        KeyKind::Ed25519 => {
            let seed = ed25519_seed(alg, &info)?;
            // OpenSSL keeps the seed in a buffer of its own (its secure
            // heap if one were set up; jwksd sets none up, so ordinary
            // memory), wiped on free.
            let key =
                PKey::private_key_from_raw_bytes(seed, openssl::pkey::Id::ED25519).map_err(ossl)?;
            if let Some(stored) = info.public_key
                && stored != key.raw_public_key().map_err(ossl)?.as_slice()
            {
                return Err(parse(
                    "the public key does not match the private key".into(),
                ));
            }
            Ok(OpenSslKey::Ed25519(key))
        }
        KeyKind::Rsa => {
            info.algorithm
                .assert_algorithm_oid(rsa::pkcs1::ALGORITHM_OID)
                .map_err(|e| parse(format!("not an RSA key: {e}")))?;
            let k = rsa::pkcs1::RsaPrivateKey::from_der(info.private_key)
                .map_err(|e| parse(e.to_string()))?;
            if k.other_prime_infos.is_some() {
                return Err(parse("multi-prime RSA keys are not supported".into()));
            }
            let public = |u: rsa::pkcs1::UintRef<'_>| BigNum::from_slice(u.as_bytes());
            let secret = |u: rsa::pkcs1::UintRef<'_>| secret_bn(u.as_bytes());
            let key = Rsa::from_private_components(
                public(k.modulus).map_err(ossl)?,
                public(k.public_exponent).map_err(ossl)?,
                secret(k.private_exponent).map_err(ossl)?,
                secret(k.prime1).map_err(ossl)?,
                secret(k.prime2).map_err(ossl)?,
                secret(k.exponent1).map_err(ossl)?,
                secret(k.exponent2).map_err(ossl)?,
                secret(k.coefficient).map_err(ossl)?,
            )
            .map_err(ossl)?;
            Ok(OpenSslKey::Rsa(key))
        }
    }
}

/// The 32-byte seed of an Ed25519 PKCS#8, borrowed from it. RFC 8410 7:
/// the private key is an OCTET STRING of the seed, inside the PKCS#8
/// OCTET STRING.
fn ed25519_seed<'a>(alg: Alg, info: &rsa::pkcs8::PrivateKeyInfo<'a>) -> Result<&'a [u8], KeyError> {
    use rsa::pkcs8::der::Decode as _;
    use rsa::pkcs8::der::asn1::OctetStringRef;
    let parse = |reason: String| KeyError::Parse { alg, reason };
    info.algorithm
        .assert_algorithm_oid(super::generate::ED25519_OID)
        .map_err(|e| parse(format!("not an Ed25519 key: {e}")))?;
    let seed = OctetStringRef::from_der(info.private_key)
        .map_err(|e| parse(e.to_string()))?
        .as_bytes();
    if seed.len() != ED25519_BYTES {
        return Err(parse("not an Ed25519 private key".into()));
    }
    Ok(seed)
}

/// The public half, in JWK encoding: EC coordinates padded to the curve's
/// width, RSA numbers minimal (as josekit, which derived the kids of
/// existing keys), Ed25519's 32 bytes as they are.
fn public_of(key: &OpenSslKey) -> Result<PublicKey, ErrorStack> {
    let b64 = |z: Zeroizing<String>| z.as_str().to_owned();
    Ok(match key {
        OpenSslKey::Ec(curve, ec) => {
            let mut x = BigNum::new()?;
            let mut y = BigNum::new()?;
            let mut ctx = BigNumContext::new()?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
            PublicKey::Ec {
                crv: curve.name().to_owned(),
                x: b64(bn_b64(&x, Some(curve.bytes()))?),
                y: b64(bn_b64(&y, Some(curve.bytes()))?),
            }
        }
        OpenSslKey::Ed25519(key) => PublicKey::Okp {
            crv: ED25519_CRV.to_owned(),
            x: b64(secret_b64(&key.raw_public_key()?)),
        },
        OpenSslKey::Rsa(rsa) => PublicKey::Rsa {
            n: b64(bn_b64(rsa.n(), None)?),
            e: b64(bn_b64(rsa.e(), None)?),
        },
    })
}

impl KeyMaterial {
    /// Parses a stored PKCS#8 private key (through OpenSSL) and derives its
    /// public key and kid.
    pub fn from_pkcs8(alg: Alg, pkcs8: Zeroizing<Vec<u8>>) -> Result<KeyMaterial, KeyError> {
        let parse = |reason: String| KeyError::Parse { alg, reason };
        let key = open_private(alg, &pkcs8)?;
        let public = public_of(&key).map_err(|e| parse(e.to_string()))?;
        if let Some(bits) = public.rsa_bits()
            && bits < 2048
        {
            return Err(parse(format!("RSA key of {bits} bits is too small")));
        }
        Ok(KeyMaterial {
            kid: public.thumbprint(),
            alg,
            public,
            pkcs8,
        })
    }

    /// The private key as a PKCS#8 PEM document.
    pub fn pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        use p256::pkcs8::SecretDocument;
        use p256::pkcs8::der::pem::LineEnding;
        let doc = SecretDocument::try_from(self.pkcs8.as_slice()).map_err(|e| KeyError::Parse {
            alg: self.alg,
            reason: e.to_string(),
        })?;
        // One allocation of the exact length, wiped on drop.
        doc.to_pem("PRIVATE KEY", LineEnding::LF)
            .map_err(|e| KeyError::Parse {
                alg: self.alg,
                reason: e.to_string(),
            })
    }

    /// The private key as a JWK (with `kid`, `alg` and `use`), ready to
    /// serialise (into a [`SecretBuf`]). Only the authenticated signing-key
    /// endpoint may hand this out.
    pub fn private_jwk(&self) -> Result<PrivateJwk<'_>, KeyError> {
        let parse = |reason: String| KeyError::Parse {
            alg: self.alg,
            reason,
        };
        let fail = |e: ErrorStack| parse(e.to_string());
        let private = match open_private(self.alg, &self.pkcs8)? {
            OpenSslKey::Ec(curve, ec) => {
                vec![(
                    "d",
                    bn_b64(ec.private_key(), Some(curve.bytes())).map_err(fail)?,
                )]
            }
            OpenSslKey::Ed25519(_) => {
                // The seed from the PKCS#8, not from OpenSSL: OpenSSL 3's
                // `EVP_PKEY_get_raw_private_key` (`raw_private_key`) copies
                // it into an `OSSL_PARAM` array (outside the secure heap,
                // which jwksd does not set up) that it frees without
                // wiping.
                use rsa::pkcs8::der::Decode as _;
                let info = rsa::pkcs8::PrivateKeyInfo::from_der(&self.pkcs8)
                    .map_err(|e| parse(e.to_string()))?;
                vec![("d", secret_b64(ed25519_seed(self.alg, &info)?))]
            }
            OpenSslKey::Rsa(rsa) => {
                let member = |name: &'static str, n: Option<&BigNumRef>| {
                    let n = n.ok_or_else(|| parse(format!("the RSA key has no {name:?}")))?;
                    Ok::<_, KeyError>((name, bn_b64(n, None).map_err(fail)?))
                };
                vec![
                    member("d", Some(rsa.d()))?,
                    member("p", rsa.p())?,
                    member("q", rsa.q())?,
                    member("dp", rsa.dmp1())?,
                    member("dq", rsa.dmq1())?,
                    member("qi", rsa.iqmp())?,
                ]
            }
        };
        Ok(PrivateJwk {
            kid: self.kid.as_str(),
            alg: self.alg,
            public: &self.public,
            private,
        })
    }

    /// [`Self::private_jwk`], serialised.
    pub fn private_jwk_json(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let jwk = self.private_jwk()?;
        let mut out = SecretBuf::with_capacity(4096);
        serde_json::to_writer(&mut out, &jwk).map_err(|e| KeyError::Parse {
            alg: self.alg,
            reason: e.to_string(),
        })?;
        Ok(out.into_inner())
    }

    /// A JWS signer (OpenSSL) for this key, with the kid set.
    pub fn signer(&self) -> Result<Box<dyn JwsSigner>, KeyError> {
        let parse = |reason: String| KeyError::Parse {
            alg: self.alg,
            reason,
        };
        Ok(match open_private(self.alg, &self.pkcs8)? {
            OpenSslKey::Ec(curve, key) => Box::new(EcdsaSigner {
                kid: self.kid.to_string(),
                alg: self.alg,
                curve,
                key,
            }),
            OpenSslKey::Rsa(rsa) => Box::new(RsaSigner {
                kid: self.kid.to_string(),
                alg: self.alg,
                key: PKey::from_rsa(rsa).map_err(|e| parse(e.to_string()))?,
            }),
            OpenSslKey::Ed25519(key) => Box::new(Ed25519Signer {
                kid: self.kid.to_string(),
                alg: self.alg,
                key,
            }),
        })
    }
}

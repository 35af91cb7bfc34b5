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
use super::id::{Alg, Kid, PublicKey};
use super::jwk::{P256_BYTES, PrivateJwk, SecretBuf, bn_b64};
use super::sign::{Es256Signer, Rs256Signer};

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
    Ec(EcKey<Private>),
    Rsa(Rsa<Private>),
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
    match alg {
        Alg::ES256 => {
            let p256_oid = <p256::NistP256 as rsa::pkcs8::AssociatedOid>::OID;
            info.algorithm
                .assert_algorithm_oid(p256::elliptic_curve::ALGORITHM_OID)
                .map_err(|e| parse(format!("not an EC key: {e}")))?;
            if info.algorithm.parameters_oid().ok() != Some(p256_oid) {
                return Err(parse("not a P-256 key".into()));
            }
            let sec1 =
                sec1::EcPrivateKey::from_der(info.private_key).map_err(|e| parse(e.to_string()))?;
            if let Some(p) = sec1.parameters
                && p.named_curve() != Some(p256_oid)
            {
                return Err(parse("not a P-256 key".into()));
            }
            if sec1.private_key.len() != P256_BYTES {
                return Err(parse("not a P-256 private key".into()));
            }
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ossl)?;
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
            Ok(OpenSslKey::Ec(key))
        }
        Alg::RS256 => {
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

/// The public half, in JWK encoding: EC coordinates padded to 32 bytes, RSA
/// numbers minimal (as josekit, which derived the kids of existing keys).
fn public_of(key: &OpenSslKey) -> Result<PublicKey, ErrorStack> {
    let b64 = |z: Zeroizing<String>| z.as_str().to_owned();
    Ok(match key {
        OpenSslKey::Ec(ec) => {
            let mut x = BigNum::new()?;
            let mut y = BigNum::new()?;
            let mut ctx = BigNumContext::new()?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
            PublicKey::Ec {
                crv: "P-256".to_owned(),
                x: b64(bn_b64(&x, Some(P256_BYTES))?),
                y: b64(bn_b64(&y, Some(P256_BYTES))?),
            }
        }
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
            OpenSslKey::Ec(ec) => {
                vec![(
                    "d",
                    bn_b64(ec.private_key(), Some(P256_BYTES)).map_err(fail)?,
                )]
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
            OpenSslKey::Ec(key) => Box::new(Es256Signer {
                kid: self.kid.to_string(),
                key,
            }),
            OpenSslKey::Rsa(rsa) => Box::new(Rs256Signer {
                kid: self.kid.to_string(),
                key: PKey::from_rsa(rsa).map_err(|e| parse(e.to_string()))?,
            }),
        })
    }
}

//! Key generation (p256, p384, rsa; Ed25519 by OpenSSL) with randomness from the operating system,
//! on a thread of its own at a low CPU priority.

use zeroize::Zeroizing;

use super::error::KeyError;
use super::id::{Alg, Curve, KeyKind, RSA_BITS};
use super::material::KeyMaterial;

/// Generates a keypair with randomness from the operating system. RSA takes
/// from 0.1 s to seconds: async callers run this on a blocking thread.
pub fn generate(alg: Alg, rsa_bits: u32) -> Result<KeyMaterial, KeyError> {
    use rand_core::OsRng;
    let fail = |reason: String| KeyError::Generate { alg, reason };
    let pkcs8: Zeroizing<Vec<u8>> = match alg.key_kind() {
        KeyKind::Ec(Curve::P256) => {
            use p256::pkcs8::EncodePrivateKey;
            let doc = p256::SecretKey::random(&mut OsRng)
                .to_pkcs8_der()
                .map_err(|e| fail(e.to_string()))?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
        KeyKind::Ec(Curve::P384) => {
            use p384::pkcs8::EncodePrivateKey;
            let doc = p384::SecretKey::random(&mut OsRng)
                .to_pkcs8_der()
                .map_err(|e| fail(e.to_string()))?;
            Zeroizing::new(doc.as_bytes().to_vec())
        }
        KeyKind::Ed25519 => {
            // The private key is 32 random bytes (RFC 8032 5.1.5), drawn
            // as OpenSSL's own Ed25519 generation draws them (from its
            // private DRBG), straight into a buffer wiped on drop; OpenSSL
            // derives the public key as it reads the key back below. Not
            // `PKey::generate_ed25519` and then `raw_private_key`: OpenSSL
            // 3 hands the seed out through an `OSSL_PARAM` array that it
            // frees without wiping.
            let mut seed = Zeroizing::new([0u8; 32]);
            openssl::rand::rand_priv_bytes(&mut seed[..]).map_err(|e| fail(e.to_string()))?;
            ed25519_pkcs8(&seed[..]).map_err(|e| fail(e.to_string()))?
        }
        KeyKind::Rsa => {
            if !RSA_BITS.contains(&rsa_bits) {
                return Err(KeyError::RsaBits(rsa_bits));
            }
            let key = rsa::RsaPrivateKey::new(&mut OsRng, rsa_bits as usize)
                .map_err(|e| fail(e.to_string()))?;
            rsa_pkcs8(&key).map_err(|e| fail(e.to_string()))?
        }
    };
    // Read the key back through OpenSSL: this derives the public half the way
    // every later load will, so a key that OpenSSL cannot use is never stored.
    KeyMaterial::from_pkcs8(alg, pkcs8)
}

/// PKCS#8 of an RSA key, every intermediate in a zeroizing buffer. The `rsa`
/// crate's own `to_pkcs8_der` leaves the PKCS#1 `RSAPrivateKey` (with `d`
/// and the primes) in a plain `Vec`, freed without being wiped. The encoding
/// is the `pkcs1` and `pkcs8` crates' (DER only: no cryptography here).
fn rsa_pkcs8(key: &rsa::RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, rsa::pkcs1::Error> {
    use rsa::pkcs1::{RsaPrivateKey, UintRef};
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
    let [p, q] = key.primes() else {
        return Err(rsa::pkcs1::Error::Version);
    };
    let secret = |v: Vec<u8>| Zeroizing::new(v);
    let n = key.n().to_bytes_be();
    let e = key.e().to_bytes_be();
    let d = secret(key.d().to_bytes_be());
    let p_bytes = secret(p.to_bytes_be());
    let q_bytes = secret(q.to_bytes_be());
    // The CRT values the key computed at generation (computing them here,
    // as `to_pkcs8_der` does, would leave p - 1 and q - 1 in unwiped
    // temporaries).
    let (dp, dq, qinv) = match (key.dp(), key.dq(), key.qinv()) {
        (Some(dp), Some(dq), Some(qinv)) => (dp, dq, qinv),
        _ => return Err(rsa::pkcs1::Error::Crypto),
    };
    let dp = secret(dp.to_bytes_be());
    let dq = secret(dq.to_bytes_be());
    // A copy as an unsigned number, wiped as it is dropped.
    let qinv = Zeroizing::new(qinv.to_biguint().ok_or(rsa::pkcs1::Error::Crypto)?);
    let qinv = secret(qinv.to_bytes_be());
    let pkcs1 = RsaPrivateKey {
        modulus: UintRef::new(&n)?,
        public_exponent: UintRef::new(&e)?,
        private_exponent: UintRef::new(&d)?,
        prime1: UintRef::new(&p_bytes)?,
        prime2: UintRef::new(&q_bytes)?,
        exponent1: UintRef::new(&dp)?,
        exponent2: UintRef::new(&dq)?,
        coefficient: UintRef::new(&qinv)?,
        other_prime_infos: None,
    };
    let pkcs1 = encode_secret(&pkcs1)?;
    let info = rsa::pkcs8::PrivateKeyInfo::new(rsa::pkcs1::ALGORITHM_ID, &pkcs1);
    Ok(encode_secret(&info)?)
}

/// Ed25519's OID (RFC 8410 3).
pub(super) const ED25519_OID: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");

/// RFC 8410's PKCS#8 of an Ed25519 seed: version 1, without the public
/// key (OpenSSL 3.0 and josekit refuse the version 2 that ed25519-dalek
/// writes), every intermediate in a zeroizing buffer.
pub(super) fn ed25519_pkcs8(seed: &[u8]) -> Result<Zeroizing<Vec<u8>>, rsa::pkcs1::der::Error> {
    use rsa::pkcs1::der::asn1::OctetStringRef;
    let curve_private_key = encode_secret(&OctetStringRef::new(seed)?)?;
    let algorithm = rsa::pkcs8::spki::AlgorithmIdentifierRef {
        oid: ED25519_OID,
        parameters: None,
    };
    let info = rsa::pkcs8::PrivateKeyInfo::new(algorithm, &curve_private_key);
    encode_secret(&info)
}

/// DER of `msg` in a zeroizing buffer of exactly its length (so it never
/// grows and leaves a copy behind).
fn encode_secret<T: rsa::pkcs1::der::Encode>(
    msg: &T,
) -> Result<Zeroizing<Vec<u8>>, rsa::pkcs1::der::Error> {
    use rsa::pkcs1::der::SliceWriter;
    let len = usize::try_from(msg.encoded_len()?)?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    let mut writer = SliceWriter::new(&mut buf);
    msg.encode(&mut writer)?;
    let written = writer.finish()?.len();
    buf.truncate(written);
    Ok(buf)
}

/// [`generate`] on a thread of its own at a low CPU priority (nice 10), so
/// that a multi-second RSA generation yields the CPU to request handling.
/// Not the lowest priority: on a saturated host that would starve the
/// generation, and a rotation needs its next key. Blocks until the key is
/// ready.
pub fn generate_in_background(alg: Alg, rsa_bits: u32) -> Result<KeyMaterial, KeyError> {
    let fail = |reason: String| KeyError::Generate { alg, reason };
    std::thread::Builder::new()
        .name("jwksd-keygen".into())
        .spawn(move || {
            lower_priority();
            generate(alg, rsa_bits)
        })
        .map_err(|e| fail(format!("cannot start the generation thread: {e}")))?
        .join()
        .map_err(|_| fail("the generation thread panicked".into()))?
}

/// The nice value key generation runs at.
const GENERATION_NICE: libc::c_int = 10;

/// Sets the calling thread's nice value to [`GENERATION_NICE`] (Linux: per
/// thread). Lowering one's own priority needs no privilege; failure only
/// costs latency.
fn lower_priority() {
    // SAFETY: setpriority and gettid have no memory-safety preconditions.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, GENERATION_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_generation_runs_at_a_low_priority() {
        let k = generate_in_background(Alg::ES256, 2048).unwrap();
        assert_eq!(k.kid.as_str().len(), 43);
        let nice = std::thread::spawn(|| {
            lower_priority();
            // SAFETY: getpriority has no memory-safety preconditions.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        })
        .join()
        .unwrap();
        assert_eq!(nice, GENERATION_NICE);
    }
}

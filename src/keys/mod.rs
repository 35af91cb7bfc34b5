//! Keypairs: generation, PKCS#8, the public JWK and its RFC 7638 `kid`, and
//! the in-memory signing key.
//!
//! The split between crates is deliberate. `p256`, `p384`, `ed25519-dalek`
//! and `rsa` only *generate* keys and export them as PKCS#8. Every private-key *operation* (signing,
//! and deriving the public half of a stored key) is OpenSSL's: the `rsa`
//! crate's private-key operations are exposed to a timing side channel
//! (RUSTSEC-2023-0071, "Marvin"), its key generation is not.
//!
//! Private keys stay in zeroizing buffers (see runbook.md, "What jwksd does
//! not do"): a stored key's DER is parsed by the `pkcs8`, `sec1` and `pkcs1`
//! crates, borrowing from its buffer, and its numbers go from there into
//! OpenSSL, which wipes them when it frees them; the private JWK is written
//! from OpenSSL's numbers through zeroizing buffers. OpenSSL's DER decoder
//! and josekit's JWK maps would each leave a plain copy behind.
//!
//! josekit assembles every JWT. The signatures themselves are made by
//! [`EcdsaSigner`], [`RsaSigner`] and [`Ed25519Signer`], josekit
//! `JwsSigner`s that call OpenSSL with a key parsed once: josekit's own
//! ES256 signer sets up
//! OpenSSL's generic signing context (an algorithm fetch) for every token,
//! which cost more than a fifth of the time of `/v1/sign`, and its RS256
//! signer is built only from DER, JWK or PEM.

pub mod custody;
mod error;
mod generate;
pub mod id;
mod jwk;
mod material;
pub mod pkcs11;
mod private;
mod sign;

pub use custody::Custody;
pub use error::KeyError;
pub use generate::{generate, generate_in_background};
pub use id::{Alg, Curve, IdError, KeyKind, Kid, PublicKey, RSA_BITS};
pub use jwk::{PrivateJwk, PublishedJwk, SecretBuf};
pub use material::KeyMaterial;
pub use private::PrivateKey;
pub use sign::{EcdsaSigner, Ed25519Signer, RsaSigner, ecdsa_digest, jws_algorithm};

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use josekit::jws::{ES256, ES384, EdDSA, PS256, RS256};
    use zeroize::Zeroizing;

    #[test]
    fn es256_signatures_verify_with_josekit_and_openssl() {
        let k = generate(Alg::ES256, 2048).unwrap();
        let signer = k.signer().unwrap();
        let sig = signer.sign(b"message").unwrap();
        assert_eq!(sig.len(), 64);
        // josekit's own verifier, from the public key.
        let der = openssl::pkey::PKey::private_key_from_der(&k.pkcs8)
            .unwrap()
            .public_key_to_der()
            .unwrap();
        let verifier = ES256.verifier_from_der(&der).unwrap();
        use josekit::jws::JwsVerifier;
        verifier.verify(b"message", &sig).unwrap();
        assert!(verifier.verify(b"other", &sig).is_err());
    }

    /// RFC 8037, appendix A.3: the OKP key of A.2 (RFC 8032's test 1).
    #[test]
    fn okp_thumbprint_matches_rfc8037_example() {
        let key = PublicKey::Okp {
            crv: "Ed25519".into(),
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
        };
        assert_eq!(
            key.thumbprint().as_str(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert_eq!(key.rsa_bits(), None);
    }

    /// RFC 8037, appendix A.4: the signature of "Example of Ed25519
    /// signing" under the key of A.1, made by our signer (Ed25519 is
    /// deterministic), as both names.
    #[test]
    fn ed25519_signature_matches_rfc8037_example() {
        let seed = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let pkcs8 = generate::ed25519_pkcs8(&seed).unwrap();
        // What OpenSSL itself reads.
        let theirs = openssl::pkey::PKey::private_key_from_der(&pkcs8).unwrap();
        assert_eq!(theirs.raw_private_key().unwrap(), seed);
        for alg in [Alg::EdDSA, Alg::Ed25519] {
            let k = KeyMaterial::from_pkcs8(alg, pkcs8.clone()).unwrap();
            assert_eq!(
                k.kid.as_str(),
                "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
            );
            let signer = k.signer().unwrap();
            assert_eq!(signer.algorithm().name(), alg.as_str());
            let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
            assert_eq!(
                URL_SAFE_NO_PAD.encode(signer.sign(input.as_bytes()).unwrap()),
                "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
            );
        }
    }

    /// RFC 7638, section 3.1.
    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let key = PublicKey::Rsa {
            n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            e: "AQAB".into(),
        };
        assert_eq!(
            key.thumbprint().as_str(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(key.rsa_bits(), Some(2048));
    }

    #[test]
    fn kid_rejects_traversal_and_non_ascii() {
        for bad in ["", "../x", "a/b", "a.b", "ké", "a b", &"a".repeat(129)] {
            assert!(bad.parse::<Kid>().is_err(), "{bad:?} accepted");
        }
        assert!(
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
                .parse::<Kid>()
                .is_ok()
        );
    }

    #[test]
    fn es256_generation_round_trips_through_openssl() {
        let k = generate(Alg::ES256, 2048).unwrap();
        assert_eq!(k.kid.as_str().len(), 43);
        let again = KeyMaterial::from_pkcs8(Alg::ES256, k.pkcs8.clone()).unwrap();
        assert_eq!(again.kid, k.kid);
        assert_eq!(again.public, k.public);
        // A different key gets a different kid.
        assert_ne!(generate(Alg::ES256, 2048).unwrap().kid, k.kid);
    }

    #[test]
    fn every_algorithm_round_trips_through_openssl_with_its_own_curve() {
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            assert!(alg.fits(&k.public), "{alg}: {:?}", k.public);
            let again = KeyMaterial::from_pkcs8(alg, k.pkcs8.clone()).unwrap();
            assert_eq!((again.kid, again.public), (k.kid.clone(), k.public.clone()));
            let signer = k.signer().unwrap();
            assert_eq!(signer.algorithm().name(), alg.as_str());
            let len = match alg.key_kind() {
                KeyKind::Ec(c) => 2 * c.bytes(),
                KeyKind::Rsa => 256,
                KeyKind::Ed25519 => 64,
            };
            assert_eq!(signer.sign(b"m").unwrap().len(), len, "{alg}");
        }
        assert!(matches!(
            generate(Alg::PS256, 1024),
            Err(KeyError::RsaBits(1024))
        ));
    }

    #[test]
    fn rs256_generation_has_requested_size() {
        let k = generate(Alg::RS256, 2048).unwrap();
        assert_eq!(k.public.rsa_bits(), Some(2048));
        // Every member of the PKCS#8, the CRT values included, is right.
        let rsa = openssl::pkey::PKey::private_key_from_der(&k.pkcs8)
            .unwrap()
            .rsa()
            .unwrap();
        assert!(rsa.check_key().unwrap());
        assert!(matches!(
            generate(Alg::RS256, 1024),
            Err(KeyError::RsaBits(1024))
        ));
    }

    #[test]
    fn wrong_algorithm_for_stored_key_is_refused() {
        let k = generate(Alg::ES256, 2048).unwrap();
        assert!(KeyMaterial::from_pkcs8(Alg::RS256, k.pkcs8.clone()).is_err());
        assert!(KeyMaterial::from_pkcs8(Alg::ES384, k.pkcs8.clone()).is_err());
        assert!(KeyMaterial::from_pkcs8(Alg::EdDSA, k.pkcs8.clone()).is_err());
        let ed = generate(Alg::EdDSA, 2048).unwrap();
        assert!(KeyMaterial::from_pkcs8(Alg::ES256, ed.pkcs8.clone()).is_err());
        assert!(KeyMaterial::from_pkcs8(Alg::PS256, ed.pkcs8.clone()).is_err());
        let p384 = generate(Alg::ES384, 2048).unwrap();
        assert!(KeyMaterial::from_pkcs8(Alg::ES256, p384.pkcs8.clone()).is_err());
        assert!(KeyMaterial::from_pkcs8(Alg::ES256, Zeroizing::new(vec![1, 2, 3])).is_err());
    }

    #[test]
    fn published_jwk_has_exactly_the_public_members() {
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            let v = serde_json::to_value(PublishedJwk::new(&k.kid, alg, &k.public)).unwrap();
            let mut names: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
            names.sort();
            let expected: &[&str] = match alg.key_kind() {
                KeyKind::Ec(_) => &["alg", "crv", "kid", "kty", "use", "x", "y"],
                KeyKind::Rsa => &["alg", "e", "kid", "kty", "n", "use"],
                KeyKind::Ed25519 => &["alg", "crv", "kid", "kty", "use", "x"],
            };
            assert_eq!(names, expected);
            assert_eq!(v["use"], "sig");
            assert_eq!(v["alg"], alg.as_str());
        }
    }

    #[test]
    fn private_jwk_and_pem_carry_the_key() {
        let k = generate(Alg::ES256, 2048).unwrap();
        let jwk: serde_json::Value =
            serde_json::from_slice(&k.private_jwk_json().unwrap()).unwrap();
        assert_eq!(jwk["kid"], k.kid.as_str());
        assert!(jwk["d"].is_string());
        let pem = k.pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let debug = format!("{k:?}");
        assert!(!debug.contains(jwk["d"].as_str().unwrap()));
    }

    /// Stored keys keep their kids: the public half read through
    /// `open_private` is the one josekit (OpenSSL's decoder) derived.
    #[test]
    fn public_key_and_private_jwk_agree_with_josekit() {
        use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
        use josekit::jwk::alg::ed::EdKeyPair;
        use josekit::jwk::alg::rsa::RsaKeyPair;
        use josekit::jwk::{Jwk, KeyPair as _};
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            let theirs = match alg.key_kind() {
                KeyKind::Ec(Curve::P256) => EcKeyPair::from_der(&*k.pkcs8, Some(EcCurve::P256))
                    .unwrap()
                    .to_jwk_key_pair(),
                KeyKind::Ec(Curve::P384) => EcKeyPair::from_der(&*k.pkcs8, Some(EcCurve::P384))
                    .unwrap()
                    .to_jwk_key_pair(),
                KeyKind::Rsa => RsaKeyPair::from_der(&*k.pkcs8).unwrap().to_jwk_key_pair(),
                KeyKind::Ed25519 => EdKeyPair::from_der(&*k.pkcs8).unwrap().to_jwk_key_pair(),
            };
            let ours = Jwk::from_bytes(&*k.private_jwk_json().unwrap()).unwrap();
            let members: &[&str] = match alg.key_kind() {
                KeyKind::Ec(_) => &["kty", "crv", "x", "y", "d"],
                KeyKind::Rsa => &["kty", "n", "e", "d", "p", "q", "dp", "dq", "qi"],
                KeyKind::Ed25519 => &["kty", "crv", "x", "d"],
            };
            for m in members {
                assert_eq!(ours.parameter(m), theirs.parameter(m), "{alg} {m}");
            }
            assert_eq!(ours.key_id(), Some(k.kid.as_str()));
            assert_eq!(ours.algorithm(), Some(alg.as_str()));
            assert_eq!(ours.key_use(), Some("sig"));
        }
    }

    #[test]
    fn tampered_pkcs8_is_refused() {
        let k = generate(Alg::ES256, 2048).unwrap();
        let mut bad = k.pkcs8.clone();
        // The last byte is the public key's: it no longer matches.
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(KeyMaterial::from_pkcs8(Alg::ES256, bad).is_err());
        let mut short = k.pkcs8.clone();
        let len = short.len();
        short.truncate(len - 10);
        assert!(KeyMaterial::from_pkcs8(Alg::ES256, short).is_err());
    }

    #[test]
    fn secret_buf_keeps_everything_written_as_it_grows() {
        use std::io::Write as _;
        let mut b = SecretBuf::with_capacity(2);
        for i in 0..100u8 {
            b.write_all(&[i; 3]).unwrap();
        }
        let v = b.into_inner();
        assert_eq!(v.len(), 300);
        assert!(v.chunks(3).enumerate().all(|(i, c)| c == [i as u8; 3]));
    }

    #[test]
    fn signatures_verify_with_josekit() {
        use josekit::jws::JwsVerifier;
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            let der = openssl::pkey::PKey::private_key_from_der(&k.pkcs8)
                .unwrap()
                .public_key_to_der()
                .unwrap();
            let verifier: Box<dyn JwsVerifier> = match alg {
                Alg::ES256 => Box::new(ES256.verifier_from_der(&der).unwrap()),
                Alg::ES384 => Box::new(ES384.verifier_from_der(&der).unwrap()),
                Alg::RS256 => Box::new(RS256.verifier_from_der(&der).unwrap()),
                Alg::PS256 => Box::new(PS256.verifier_from_der(&der).unwrap()),
                Alg::EdDSA | Alg::Ed25519 => Box::new(EdDSA.verifier_from_der(&der).unwrap()),
            };
            let signer = k.signer().unwrap();
            let sig = signer.sign(b"message").unwrap();
            assert_eq!(sig.len(), signer.signature_len());
            verifier.verify(b"message", &sig).unwrap();
            assert!(verifier.verify(b"other", &sig).is_err());
        }
    }

    #[test]
    fn signer_produces_verifiable_signature() {
        use josekit::jws::JwsHeader;
        use josekit::jwt::{self, JwtPayload};
        for alg in Alg::ALL {
            let k = generate(alg, 2048).unwrap();
            let signer = k.signer().unwrap();
            let mut header = JwsHeader::new();
            header.set_token_type("JWT");
            let mut payload = JwtPayload::new();
            payload.set_subject("s");
            let token = jwt::encode_with_signer(&payload, &header, &*signer).unwrap();
            let head = token.split('.').next().unwrap();
            let head: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
            assert_eq!(head["kid"], k.kid.as_str());
            assert_eq!(head["alg"], alg.as_str());
        }
    }
}

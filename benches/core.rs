//! Criterion benchmarks of the pure core and the hot paths' building
//! blocks: the planner over a year of rotations, rendering the JWK Set,
//! ES256 signing, and identifying an admin client by its token. `cargo bench`; the HTTP-level comparison with nginx and
//! OpenSSL is bench/run.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use josekit::jws::{JwsHeader, JwsSigner};
use josekit::jwt::{self, JwtPayload};
use jwksd::daemon::snapshot::render_jwks;
use jwksd::keys::{Alg, PublicKey, generate};
use jwksd::lifecycle::{KeyringState, NewKey, Policy, Schedule, plan};
use jwksd::time::Timestamp;

fn policy() -> Policy {
    Policy {
        algorithms: vec![Alg::ES256, Alg::RS256],
        rsa_bits: 2048,
        schedule: Schedule::Every(Duration::from_secs(3600)),
        max_token_lifetime: Duration::from_secs(24 * 3600),
        clock_skew: Duration::from_secs(60),
        jwks_cache_max_age: Duration::from_secs(300),
        publish_ahead: Duration::from_secs(360),
        signing_key_cache_max_age: Duration::from_secs(60),
        propagation: Duration::ZERO,
        custody: Default::default(),
    }
}

/// A year of hourly rotations of two algorithms, driven through the planner
/// with fake keys: 17,520 rotations, each followed by its retirement.
fn simulate_year() -> usize {
    let p = policy();
    let mut state = KeyringState::default();
    let mut now =
        Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap_or(Timestamp::from_millis(0));
    let end = now.saturating_add(Duration::from_secs(365 * 24 * 3600));
    let mut n = 0u64;
    let mut steps = 0;
    while now < end {
        let pl = plan(&state, &p, now);
        if pl.actions.is_empty() {
            now = pl.wake_at.unwrap_or(end);
            continue;
        }
        for a in &pl.actions {
            let new = a.is_generate().then(|| {
                n += 1;
                let public = PublicKey::Ec {
                    crv: "P-256".into(),
                    x: n.to_string(),
                    y: "y".into(),
                };
                let alg = match a {
                    jwksd::lifecycle::Action::Generate { alg, .. } => *alg,
                    _ => Alg::ES256,
                };
                NewKey {
                    kid: public.thumbprint(),
                    alg,
                    public,
                    custody: Default::default(),
                }
            });
            let _ = state.apply(a, now, new);
        }
        state.version += 1;
        steps += 1;
    }
    steps
}

fn benches(c: &mut Criterion) {
    c.bench_function("planner: a year of hourly rotations (2 algorithms)", |b| {
        b.iter(simulate_year)
    });

    let mut state = KeyringState::default();
    let p = policy();
    let now = Timestamp::from_millis(1_800_000_000_000);
    for a in plan(&state, &p, now).actions {
        let (alg, bits) = match &a {
            jwksd::lifecycle::Action::Generate { alg, rsa_bits, .. } => (*alg, *rsa_bits),
            _ => continue,
        };
        let k = generate(alg, bits).expect("key generation");
        let _ = state.apply(
            &a,
            now,
            Some(NewKey {
                kid: k.kid.clone(),
                alg,
                public: k.public.clone(),
                custody: Default::default(),
            }),
        );
    }
    c.bench_function("render the JWK Set (2 ES256 + 2 RS256-2048)", |b| {
        b.iter(|| render_jwks(&state))
    });

    let key = generate(Alg::ES256, 2048).expect("key generation");
    let ours = key.signer().expect("signer");
    let josekits = josekit::jws::ES256
        .signer_from_der(&*key.pkcs8)
        .expect("signer");
    let mut header = JwsHeader::new();
    header.set_token_type("JWT");
    let mut payload = JwtPayload::new();
    payload.set_subject("bench");
    payload.set_issued_at(&std::time::SystemTime::now());
    c.bench_function(
        "ES256 JWT, jwksd's signer (OpenSSL ECDSA, key parsed once)",
        |b| b.iter(|| jwt::encode_with_signer(&payload, &header, &*ours)),
    );
    c.bench_function(
        "ES256 JWT, josekit's signer (OpenSSL EVP set up per token)",
        |b| b.iter(|| jwt::encode_with_signer(&payload, &header, &josekits as &dyn JwsSigner)),
    );
    // The other algorithms, with jwksd's signers.
    for alg in [Alg::ES384, Alg::PS256, Alg::EdDSA] {
        let signer = generate(alg, 2048)
            .and_then(|k| k.signer())
            .expect("signer");
        c.bench_function(&format!("{alg} JWT, jwksd's signer"), |b| {
            b.iter(|| jwt::encode_with_signer(&payload, &header, &*signer))
        });
    }
}

/// What each admin request pays to be a client: the token's digest
/// compared with every configured one (constant time, no early exit).
fn identify(c: &mut Criterion) {
    use jwksd::access::{Client, Clients, Role};
    let now = Timestamp::from_millis(1_800_000_000_000);
    for n in [2usize, 100] {
        let list: Vec<Client> = (0..n)
            .map(|i| {
                let mut c =
                    Client::builtin(&format!("c{i}"), Role::Signer, &format!("token-{i:040}"));
                c.builtin = false;
                c
            })
            .collect();
        let clients = Clients::new(list, Vec::new()).expect("clients");
        let last = format!("token-{:040}", n - 1);
        c.bench_function(&format!("identify a client by its token among {n}"), |b| {
            b.iter(|| clients.identify(Some(&last), None, now).is_ok())
        });
    }
}

criterion_group!(core, benches, identify);
criterion_main!(core);

//! TLS to the database with libpq's sslmode semantics: verify-full checks
//! the chain against sslrootcert and the host name, verify-ca the chain
//! only, prefer and require encrypt without checking. A failed handshake is
//! one error naming the host, the sslmode and what to set. Its own cluster,
//! with ssl=on and a certificate made in the test (rcgen).

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jwksd::store::postgres::PgStore;
use jwksd::store::{KeyStore, MasterKey};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::daemon::{Daemon, write_config};
use support::pg::Cluster;

const MK: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn connect(url: &str) -> Result<PgStore, String> {
    PgStore::connect(url, Some(MasterKey::from_encoded(MK).unwrap()), None)
        .map_err(|e| e.to_string())
}

struct Fixture {
    pg: Cluster,
    dir: tempfile::TempDir,
    right_file: PathBuf,
    wrong_file: PathBuf,
}

/// A cluster with ssl=on whose certificate names localhost (not
/// 127.0.0.1), signed by the CA in `right_file`.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let right = ca("jwksd test database CA");
        let wrong = ca("some other CA");
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &right)
            .unwrap();
        let pg = Cluster::start_tls(
            &format!("{}{}", cert.pem(), right.pem()),
            &key.serialize_pem(),
        );
        pg.database("tls");
        let write = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Fixture {
            right_file: write("right.pem", right.pem()),
            wrong_file: write("wrong.pem", wrong.pem()),
            pg,
            dir,
        }
    })
}

#[test]
fn verify_full_checks_the_ca_and_the_host_name_and_failures_say_what_to_set() {
    let f = fixture();
    let (pg, right_file, wrong_file) = (&f.pg, &f.right_file, &f.wrong_file);
    let url =
        |host: &str, params: String| pg.url_with("tls", &params).replacen("127.0.0.1", host, 1);
    let with_root =
        |mode: &str, root: &Path| format!("sslmode={mode}&sslrootcert={}", root.display());

    // The right CA and a name the certificate carries.
    // The state answers (its version is whatever the other tests of this
    // file, which share the database and run beside this one, committed).
    let s = connect(&url("localhost", with_root("verify-full", right_file))).unwrap();
    s.version().unwrap();
    // The chain only: any host name.
    connect(&url("127.0.0.1", with_root("verify-ca", right_file))).unwrap();
    // libpq's meaning: encrypted, not verified.
    connect(&url("127.0.0.1", "sslmode=require".into())).unwrap();
    connect(&url("127.0.0.1", "sslmode=prefer".into())).unwrap();
    connect(&url("127.0.0.1", String::new())).unwrap();
    // key=value connection strings too.
    connect(&format!(
        "host=localhost port={} user=postgres dbname=tls sslmode=verify-full sslrootcert='{}'",
        pg.port,
        right_file.display()
    ))
    .unwrap();

    // The wrong CA: one error, naming the host, the sslmode, the reason
    // once, and what to set.
    let e = connect(&url("localhost", with_root("verify-full", wrong_file)))
        .err()
        .unwrap();
    eprintln!("wrong CA: {e}");
    assert!(
        e.contains("TLS with localhost (sslmode=verify-full) failed"),
        "{e}"
    );
    assert_eq!(e.matches("certificate verify failed").count(), 1, "{e}");
    assert!(e.contains("set sslrootcert"), "{e}");
    assert!(!e.contains("error:0A"), "raw OpenSSL codes: {e}");
    // A root certificate makes require check the chain, as in libpq.
    let e = connect(&url("127.0.0.1", with_root("require", wrong_file)))
        .err()
        .unwrap();
    assert!(e.contains("certificate verify failed"), "{e}");

    // The right CA, but a host name the certificate does not carry.
    let e = connect(&url("127.0.0.1", with_root("verify-full", right_file)))
        .err()
        .unwrap();
    eprintln!("wrong host: {e}");
    assert!(
        e.contains("(sslmode=verify-full)") && e.contains("mismatch"),
        "{e}"
    );
    assert!(
        e.contains("host name the server's certificate carries"),
        "{e}"
    );

    // Verification without a CA to verify against is refused up front.
    let e = connect(&url("localhost", "sslmode=verify-full".into()))
        .err()
        .unwrap();
    assert!(e.contains("needs sslrootcert"), "{e}");
}

#[test]
fn require_against_a_server_without_tls_says_so_once() {
    let pg = Cluster::start();
    pg.database("plain");
    let e = connect(&pg.url_with("plain", "sslmode=require"))
        .err()
        .unwrap();
    eprintln!("no TLS: {e}");
    assert!(
        e.contains("TLS with 127.0.0.1 (sslmode=require) failed"),
        "{e}"
    );
    assert_eq!(e.matches("does not support TLS").count(), 1, "{e}");
    // prefer falls back to plain text, as libpq.
    connect(&pg.url_with("plain", "sslmode=prefer")).unwrap();
}

/// Encryption without verification is allowed, as in libpq, but the
/// daemon says once at start-up what it exposes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_without_verification_warns_once_at_start_up() {
    let f = fixture();
    let dir = f.dir.path().join("daemon");
    let config = write_config(&dir, "store:\n  leader_lease: 2s\n  poll_interval: 300ms\n");
    let url = f.pg.url_with("tls", "sslmode=require");
    let mut d = Daemon::start_with(
        &dir,
        &config,
        &[("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)],
    )
    .await;
    assert_eq!(d.kids().await.len(), 4);
    let warnings: Vec<String> = d
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("certificate is not verified"))
        .cloned()
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("verify-full") && warnings[0].contains("man in the middle"));
    assert_eq!(d.stop().code(), Some(0));
}

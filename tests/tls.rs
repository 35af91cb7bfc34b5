//! TLS on both listeners, client certificates on the admin listener, and
//! certificate reloading on SIGHUP and on file change. Certificates are
//! made in the test (rcgen).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jwksd::client::Client;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use support::daemon::{BIN, Daemon, FAST};

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate and key (PEM) signed by `ca`.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, client: bool) -> (String, String) {
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_owned()
}

fn client(ca: Option<&Path>, cert: Option<(&Path, &Path)>) -> Client {
    Client::with_tls(
        jwksd::tls::client_config(ca, cert).unwrap(),
        Duration::from_secs(10),
    )
}

struct Pki {
    server_ca: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca_file: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let server_ca = ca("jwksd test server CA");
    let client_ca = ca("jwksd test client CA");
    let (sc, sk) = leaf(&server_ca, false);
    let (cc, ck) = leaf(&client_ca, true);
    Pki {
        ca_file: write(&dir.join("server-ca.pem"), &server_ca.pem()),
        server_cert: write(&dir.join("server.pem"), &sc),
        server_key: write(&dir.join("server.key"), &sk),
        client_ca_file: write(&dir.join("client-ca.pem"), &client_ca.pem()),
        client_cert: write(&dir.join("client.pem"), &cc),
        client_key: write(&dir.join("client.key"), &ck),
        server_ca,
    }
}

fn tls_config(p: &Pki) -> String {
    format!(
        "{FAST}tls:\n  public:\n    cert_file: {c}\n    key_file: {k}\n  admin:\n    cert_file: {c}\n    key_file: {k}\n    client_ca_file: {ca}\n",
        c = p.server_cert.display(),
        k = p.server_key.display(),
        ca = p.client_ca_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_speak_tls_and_admin_requires_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let config = support::daemon::write_config(tmp.path(), &tls_config(&p));
    let trusted = client(Some(&p.ca_file), Some((&p.client_cert, &p.client_key)));
    let d = Daemon::start_with_client(tmp.path(), &config, &[], trusted).await;
    assert!(d.public.starts_with("https://") && d.admin.starts_with("https://"));

    // The JWKS over TLS, verified against our CA.
    let r = d.get_public("/.well-known/jwks.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["keys"].as_array().unwrap().len(), 4);
    // Not with a client that does not trust the CA, nor over plain HTTP.
    assert!(
        client(None, None)
            .get(&format!("{}/healthz", d.public), None)
            .await
            .is_err()
    );
    let plain = d.public.replace("https://", "http://");
    assert!(
        Client::new(Duration::from_secs(5))
            .get(&format!("{plain}/healthz"), None)
            .await
            .is_err()
    );

    // The admin listener: the signer's key with a client certificate...
    let r = d.active_key("ES256").await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    // ...refused without one, or with one from another CA.
    let url = format!("{}/v1/keys/active?alg=ES256", d.admin);
    assert!(
        client(Some(&p.ca_file), None)
            .get(&url, Some(&d.signer))
            .await
            .is_err()
    );
    let stranger = ca("someone else");
    let (sc, sk) = leaf(&stranger, true);
    let (sc, sk) = (
        write(&tmp.path().join("s.pem"), &sc),
        write(&tmp.path().join("s.key"), &sk),
    );
    assert!(
        client(Some(&p.ca_file), Some((&sc, &sk)))
            .get(&url, Some(&d.signer))
            .await
            .is_err()
    );

    // The operator CLI over mutual TLS.
    let out = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&config)
        .arg("--admin-url")
        .arg(&d.admin)
        .arg("--tls-ca")
        .arg(&p.ca_file)
        .arg("--tls-client-cert")
        .arg(&p.client_cert)
        .arg("--tls-client-key")
        .arg(&p.client_key)
        .arg("keys")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("active"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_and_on_file_change() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let config = support::daemon::write_config(
        tmp.path(),
        &format!(
            "{FAST}tls:\n  public:\n    cert_file: {}\n    key_file: {}\n",
            p.server_cert.display(),
            p.server_key.display()
        ),
    );
    let d =
        Daemon::start_with_client(tmp.path(), &config, &[], client(Some(&p.ca_file), None)).await;
    let health = format!("{}/healthz", d.public);
    assert!(d.client.get(&health, None).await.is_ok());

    // A certificate from a new CA, then SIGHUP.
    let ca2 = ca("second CA");
    let ca2_file = write(&tmp.path().join("ca2.pem"), &ca2.pem());
    let (c, k) = leaf(&ca2, false);
    write(&p.server_cert, &c);
    write(&p.server_key, &k);
    std::process::Command::new("kill")
        .arg("-HUP")
        .arg(d.pid().to_string())
        .status()
        .unwrap();
    let new_ca = client(Some(&ca2_file), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while new_ca.get(&health, None).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "not reloaded after SIGHUP:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        client(Some(&p.ca_file), None)
            .get(&health, None)
            .await
            .is_err()
    );
    assert!(!d.wait_events("TLS certificate reloaded").await.is_empty());

    // A broken file: the last good certificate keeps serving.
    write(&p.server_key, "not a key");
    std::process::Command::new("kill")
        .arg("-HUP")
        .arg(d.pid().to_string())
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(new_ca.get(&health, None).await.is_ok());

    // Back to the first CA, without a signal: noticed by the file watch.
    let (c, k) = leaf(&p.server_ca, false);
    write(&p.server_cert, &c);
    write(&p.server_key, &k);
    let old_ca = client(Some(&p.ca_file), None);
    let deadline = Instant::now() + Duration::from_secs(15);
    while old_ca.get(&health, None).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "file change not noticed:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_readable_tls_key_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    std::fs::set_permissions(&p.server_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = support::daemon::write_config(tmp.path(), &tls_config(&p));
    let out = std::process::Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chmod 600") && err.contains("server.key"),
        "{err}"
    );
}

/// The console over TLS: its cookie is `__Secure-` and `Secure`, and the
/// origin it accepts changes from is the https one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_over_tls_has_a_secure_cookie() {
    use hyper::Method;
    use hyper::header::HeaderName;
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let body = format!(
        "{FAST}tls:\n  admin:\n    cert_file: {c}\n    key_file: {k}\n",
        c = p.server_cert.display(),
        k = p.server_key.display(),
    );
    let config = support::daemon::write_config(tmp.path(), &body);
    let d =
        Daemon::start_with_client(tmp.path(), &config, &[], client(Some(&p.ca_file), None)).await;
    assert!(d.admin.starts_with("https://"));
    let origin = HeaderName::from_static("origin");
    let url = format!("{}/console/api/session", d.admin);
    let sign_in = |o: String| {
        let body = bytes::Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "token": d.operator })).unwrap(),
        );
        let url = url.clone();
        let c = d.client.clone();
        let origin = origin.clone();
        async move {
            c.send(
                Method::POST,
                &url,
                None,
                &[(origin, o.as_str())],
                Some(body),
            )
            .await
            .unwrap()
        }
    };
    let plain = sign_in(d.admin.replace("https://", "http://")).await;
    assert_eq!(plain.status, 403, "an http origin is not the console's");
    let r = sign_in(d.admin.clone()).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let cookie = r.header("set-cookie").unwrap().to_owned();
    assert!(cookie.starts_with("__Secure-jwksd_console="), "{cookie}");
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    for a in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/console/"] {
        assert!(attrs.contains(&a), "{a} in {cookie}");
    }
    let value = attrs[0];
    // A cookie of the plain-HTTP name is not this listener's.
    let plain_name = value.replacen("__Secure-", "", 1);
    for (cookie, want) in [(value, 200), (plain_name.as_str(), 401)] {
        let t = d
            .client
            .send(
                Method::GET,
                &format!("{}/console/api/timeline", d.admin),
                None,
                &[(HeaderName::from_static("cookie"), cookie)],
                None,
            )
            .await
            .unwrap();
        assert_eq!(t.status, want, "{cookie}");
    }
}

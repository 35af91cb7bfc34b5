//! Named clients (issue 16) against the real binary: clients cut off and
//! tokens rotated by a reload with no refusal of anyone else, mTLS
//! identities and roles, networks and algorithms, limits behind a trusted
//! proxy, bad clients files, the built-ins, metrics and logs per client.
//! The clients file is reloaded by SIGHUP (at once) except in one test,
//! which waits for the 5 s file watch.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::header::HeaderName;
use jwksd::access::TokenDigest;
use jwksd::client::{Client, Reply};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use serde_json::{Value, json};
use support::daemon::{BIN, Daemon, FAST, write_config_with};

/// Rotation out of the way (operators force it when a test needs one).
const SLOW: &str =
    "rotation:\n  every: 1h\njwks:\n  cache_max_age: 1s\ntokens:\n  clock_skew: 1s\n";

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");

// ---------------------------------------------------------------- helpers

/// A fresh random bearer token (as `jwksd client token` makes them).
fn new_token() -> String {
    jwksd::http::auth::random_token().as_str().to_owned()
}

fn digest(token: &str) -> String {
    TokenDigest::of(token).to_string()
}

/// One clients-file entry; `extra` lines are indented by four spaces.
fn entry(name: &str, role: &str, token: Option<&str>, extra: &str) -> String {
    let mut s = format!("  - name: {name}\n    role: {role}\n");
    if let Some(t) = token {
        s.push_str(&format!("    tokens:\n      - sha256: {}\n", digest(t)));
    }
    s.push_str(extra);
    s
}

/// Writes a clients file atomically (the daemon's file watch must never
/// read half of it), mode 600.
fn write_clients(path: &Path, entries: &[String]) {
    write_raw(path, &format!("clients:\n{}", entries.concat()));
}

fn write_raw(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A config naming `clients` as its clients file.
fn clients_config(dir: &Path, clients: &Path, admin_extra: &str, body: &str) -> PathBuf {
    write_config_with(
        dir,
        &format!("  clients: {}\n{admin_extra}", clients.display()),
        body,
    )
}

/// `jwksd -c config ARGS` (no daemon needed).
fn jwksd(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("JWKSD_CONFIG")
        .env_remove("JWKSD_OPERATOR_TOKEN")
        .env_remove("JWKSD_SIGNER_TOKEN")
        .output()
        .unwrap()
}

/// `jwksd client token NAME ARGS`: the token it prints, checked to be
/// printed alone on stdout and absent from the clients file, whose digest
/// is there instead.
fn cli_token(config: &Path, clients: &Path, name: &str, args: &[&str]) -> String {
    let mut all = vec!["client", "token", name];
    all.extend_from_slice(args);
    let out = jwksd(config, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client token {name}: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on stdout: {stdout:?}");
    let token = lines[0].to_owned();
    assert!(
        token.len() >= 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "a base64url token of 256 bits: {token:?}"
    );
    assert!(
        !stderr.contains(&token),
        "the token is printed once: {stderr}"
    );
    let file = std::fs::read_to_string(clients).unwrap();
    assert!(
        !file.contains(&token),
        "the token itself in the file:\n{file}"
    );
    assert!(file.contains(&digest(&token)), "its digest not in:\n{file}");
    token
}

fn sighup(d: &Daemon) {
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
}

async fn reloads(d: &Daemon, result: &str) -> f64 {
    d.metric(&format!(
        "jwksd_clients_reloads_total{{result=\"{result}\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

/// Waits (10 s at most) until reloads with `result` pass `before`.
async fn wait_reloads(d: &Daemon, result: &str, before: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(d, result).await <= before {
        assert!(
            Instant::now() < deadline,
            "no clients reload ({result}) after {before}:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGHUP, then waits for the reload to succeed.
async fn reload(d: &Daemon) {
    let before = reloads(d, "ok").await;
    sighup(d);
    wait_reloads(d, "ok", before).await;
}

async fn request(
    client: &Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    headers: &[(HeaderName, &str)],
    body: Option<Value>,
) -> Reply {
    let body = body.map(|b| bytes::Bytes::from(serde_json::to_vec(&b).unwrap()));
    client
        .send(method, url, token, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

async fn sign_as(d: &Daemon, token: Option<&str>, alg: &str) -> Reply {
    sign_with(&d.client, &d.admin, token, alg, &[]).await
}

async fn sign_with(
    client: &Client,
    admin: &str,
    token: Option<&str>,
    alg: &str,
    headers: &[(HeaderName, &str)],
) -> Reply {
    request(
        client,
        Method::POST,
        &format!("{admin}/v1/sign"),
        token,
        headers,
        Some(json!({"alg": alg, "claims": {"sub": "clients-test"}})),
    )
    .await
}

async fn get_as(d: &Daemon, path: &str, token: Option<&str>) -> Reply {
    request(
        &d.client,
        Method::GET,
        &format!("{}{path}", d.admin),
        token,
        &[],
        None,
    )
    .await
}

async fn post_as(d: &Daemon, path: &str, token: Option<&str>, body: Value) -> Reply {
    request(
        &d.client,
        Method::POST,
        &format!("{}{path}", d.admin),
        token,
        &[],
        Some(body),
    )
    .await
}

fn code(r: &Reply) -> String {
    r.json()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Asserts the status and (when not empty) the error code of an answer.
#[track_caller]
fn expect(r: &Reply, status: u16, want_code: &str, what: &str) {
    assert_eq!(
        (r.status.as_u16(), code(r).as_str()),
        (status, want_code),
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// The ES256 key the daemon lists as active, as an operator sees it.
async fn active_kid(d: &Daemon) -> String {
    let keys = d.keys().await;
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "active" && k["alg"] == "ES256")
        .and_then(|k| k["kid"].as_str())
        .unwrap_or_else(|| panic!("no active ES256 key in {keys}"))
        .to_owned()
}

/// One signer's results: (when its request was sent, since `t0`; status;
/// the kid of the signature).
type Results = Arc<Mutex<Vec<(Duration, u16, Option<String>)>>>;

/// Signs ES256 in a loop with the token in `token` until `stop`, as the
/// client at `from` behind a trusted proxy when given.
fn signing_loop(
    admin: &str,
    token: Arc<Mutex<String>>,
    from: Option<&str>,
    stop: Arc<AtomicBool>,
    t0: Instant,
) -> (Results, tokio::task::JoinHandle<()>) {
    let results: Results = Arc::default();
    let (out, admin) = (results.clone(), admin.to_owned());
    let from = from.map(str::to_owned);
    let task = tokio::spawn(async move {
        let client = Client::new(Duration::from_secs(10));
        let headers: Vec<(HeaderName, &str)> = from.iter().map(|f| (XFF, f.as_str())).collect();
        while !stop.load(Ordering::SeqCst) {
            let t = token.lock().unwrap().clone();
            let sent = t0.elapsed();
            let r = sign_with(&client, &admin, Some(&t), "ES256", &headers).await;
            let kid = r
                .json()
                .and_then(|v| v["token"].as_str().and_then(support::kid_of));
            out.lock().unwrap().push((sent, r.status.as_u16(), kid));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (results, task)
}

// ------------------------------------------------------------------ tests

/// Issue 16, test 1: two signers sign in loops while keys rotate every 3 s;
/// one is removed by `jwksd client remove` and SIGHUP. From the reload on
/// it gets 401 (then 429, once its withdrawn token has failed 31 times);
/// the other has no failure at any point. Both from one address: the
/// removed client's token is known as withdrawn, so its failures are its
/// own and never the address's (they were, and held back the other client
/// too, before the reload remembered withdrawn tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_signer_is_cut_off_while_the_other_signs_through_rotations() {
    cut_off_one_of_two_signers(false).await;
}

/// Test 1 again, the two signers behind a trusted proxy, each with its own
/// forwarded address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_signer_behind_a_proxy_is_cut_off_while_the_other_signs() {
    cut_off_one_of_two_signers(true).await;
}

async fn cut_off_one_of_two_signers(behind_proxy: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let (proxy, from) = if behind_proxy {
        (
            "  trusted_proxies: [127.0.0.1/32]\n",
            [Some("10.1.0.1"), Some("10.2.0.1")],
        )
    } else {
        ("", [None, None])
    };
    let config = clients_config(tmp.path(), &clients, proxy, FAST);
    let a = cli_token(&config, &clients, "auth-a", &["--role", "signer"]);
    let b = cli_token(&config, &clients, "auth-b", &["--role", "signer"]);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    assert_eq!(d.metric("jwksd_clients").await, Some(4.0), "2 + built-ins");

    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let (ra, ta) = signing_loop(&d.admin, Arc::new(Mutex::new(a)), from[0], stop.clone(), t0);
    let (rb, tb) = signing_loop(&d.admin, Arc::new(Mutex::new(b)), from[1], stop.clone(), t0);
    let first_kid = active_kid(&d).await;
    // Load through at least one rotation before the cut.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let removed_at = t0.elapsed();
    let out = d.cli(&["client", "remove", "auth-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reload(&d).await;
    let reloaded_at = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    stop.store(true, Ordering::SeqCst);
    ta.await.unwrap();
    tb.await.unwrap();

    let ra = ra.lock().unwrap().clone();
    let rb = rb.lock().unwrap().clone();
    let failures: Vec<_> = ra.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(
        failures.is_empty(),
        "auth-a failed {} of {} signatures: {failures:?}",
        failures.len(),
        ra.len()
    );
    assert!(ra.len() >= 20, "auth-a signed only {} times", ra.len());
    let mut kids: Vec<&String> = ra.iter().filter_map(|(_, _, k)| k.as_ref()).collect();
    kids.dedup();
    assert!(
        kids.len() >= 2,
        "no rotation under load (kids {kids:?}, first {first_kid})"
    );
    let before: Vec<_> = rb.iter().filter(|(t, _, _)| *t < removed_at).collect();
    let after: Vec<_> = rb.iter().filter(|(t, _, _)| *t > reloaded_at).collect();
    assert!(!before.is_empty() && !after.is_empty(), "{rb:?}");
    assert!(
        before.iter().all(|(_, s, _)| *s == 200),
        "auth-b refused before its removal: {before:?}"
    );
    assert!(
        after.iter().all(|(_, s, _)| *s == 401 || *s == 429),
        "auth-b not cut off after the reload: {after:?}"
    );
    // From the removal on: still accepted until the reload, then 401
    // until its failures pass the limit, then 429.
    let cut: Vec<u16> = rb
        .iter()
        .filter(|(t, _, _)| *t >= removed_at)
        .map(|(_, s, _)| *s)
        .collect();
    let accepted = cut.iter().take_while(|s| **s == 200).count();
    let unauthorized = cut[accepted..].iter().take_while(|s| **s == 401).count();
    assert!(
        unauthorized >= 1 && cut[accepted + unauthorized..].iter().all(|s| *s == 429),
        "200 until the reload, 401 until the failure limit, then 429: {cut:?}"
    );
    assert_eq!(d.metric("jwksd_clients").await, Some(3.0));
    let reloaded = d.wait_events("clients reloaded").await;
    assert!(
        reloaded.iter().any(|e| e["why"] == "SIGHUP"),
        "{reloaded:?}"
    );
    assert!(
        d.metric("jwksd_client_sign_requests_total{client=\"auth-b\",result=\"ok\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

/// Issue 16, test 2: `jwksd client token NAME --overlap 4s` and a reload:
/// the client signs with its old token, then its new one, and is never
/// refused; once the overlap is over the old token is refused (as expired)
/// and the new one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_switches_tokens_during_the_overlap_with_no_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let config = clients_config(tmp.path(), &clients, "", SLOW);
    let old = cli_token(&config, &clients, "auth-eu", &["--role", "signer"]);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;

    let current = Arc::new(Mutex::new(old.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let (results, task) = signing_loop(
        &d.admin,
        current.clone(),
        None,
        stop.clone(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new = cli_token(&config, &clients, "auth-eu", &["--overlap", "4s"]);
    assert_ne!(new, old);
    reload(&d).await;
    // Both valid now; the client still uses the old one for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    expect(
        &sign_as(&d, Some(&old), "ES256").await,
        200,
        "",
        "old token in the overlap",
    );
    expect(
        &sign_as(&d, Some(&new), "ES256").await,
        200,
        "",
        "new token in the overlap",
    );
    *current.lock().unwrap() = new.clone();

    // The old token's expiry, as the CLI wrote it.
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&clients).unwrap()).unwrap();
    let tokens = file["clients"][0]["tokens"].as_sequence().unwrap();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert!(
        tokens[0]["expires"].is_null(),
        "the new token first: {tokens:?}"
    );
    let expires = chrono::DateTime::parse_from_rfc3339(tokens[1]["expires"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let left = (expires - chrono::Utc::now()).num_milliseconds();
    assert!((1000..=4100).contains(&left), "expires in {left} ms");
    let listed = jwksd(&config, &["client", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("auth-eu") && listed.contains("until"),
        "{listed}"
    );

    // Polled until the old token is refused: never before its expiry,
    // promptly after.
    // The server reads its clock between `asked` and `answered`.
    let deadline = expires + chrono::Duration::seconds(5);
    let slack = chrono::Duration::milliseconds(50);
    loop {
        let asked = chrono::Utc::now();
        let r = sign_as(&d, Some(&old), "ES256").await;
        let answered = chrono::Utc::now();
        if r.status == 401 {
            assert!(
                answered + slack >= expires,
                "old token refused by {answered}, before its expiry {expires}"
            );
            expect(&r, 401, "unauthorized", "old token after the overlap");
            assert!(
                r.error_message().contains("expired"),
                "{}",
                r.error_message()
            );
            break;
        }
        expect(&r, 200, "", "old token in the overlap");
        assert!(
            asked < expires + slack,
            "old token still accepted at {asked}, after its expiry {expires}"
        );
        assert!(answered < deadline, "old token never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();

    let results = results.lock().unwrap().clone();
    let refused: Vec<_> = results.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "the switching client was refused: {refused:?}"
    );
    assert!(results.len() >= 20, "{}", results.len());
    expect(
        &sign_as(&d, Some(&old), "ES256").await,
        401,
        "unauthorized",
        "old",
    );
    expect(&sign_as(&d, Some(&new), "ES256").await, 200, "", "new");
    // An expired token names its client: counted under it, not unknown.
    assert!(
        d.metric("jwksd_client_auth_failures_total{client=\"auth-eu\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

// mTLS ------------------------------------------------------------------

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn write_secret(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_owned()
}

/// A client certificate of `ca` with subject `dn` (in the order given:
/// the last is first in RFC 4514) and DNS name `san`; returns a client
/// that trusts `server_ca` and presents it.
fn cert_client(
    dir: &Path,
    ca: &CertifiedIssuer<'static, KeyPair>,
    server_ca: &Path,
    file: &str,
    dn: &[(DnType, &str)],
    san: &str,
) -> Client {
    let mut p = CertificateParams::new(vec![san.to_owned()]).unwrap();
    p.distinguished_name = DistinguishedName::new();
    for (t, v) in dn {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    let c = write_secret(&dir.join(format!("{file}.pem")), &cert.pem());
    let k = write_secret(&dir.join(format!("{file}.key")), &key.serialize_pem());
    Client::with_tls(
        jwksd::tls::client_config(Some(server_ca), Some((&c, &k))).unwrap(),
        Duration::from_secs(10),
    )
}

/// Issue 16, test 3: verified client certificates name clients by subject
/// or SAN, each with its role; `require: both` needs the token too; a
/// certificate of no client is refused without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_identities_map_to_their_roles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server_ca = ca("jwksd test server CA");
    let client_ca = ca("jwksd test client CA");
    let mut sp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    sp.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let sk = KeyPair::generate().unwrap();
    let sc = sp.signed_by(&sk, &server_ca).unwrap();
    let server_ca_file = write_secret(&dir.join("server-ca.pem"), &server_ca.pem());
    let server_cert = write_secret(&dir.join("server.pem"), &sc.pem());
    let server_key = write_secret(&dir.join("server.key"), &sk.serialize_pem());
    let client_ca_file = write_secret(&dir.join("client-ca.pem"), &client_ca.pem());

    let both_token = new_token();
    let clients = dir.join("clients.yaml");
    write_clients(
        &clients,
        &[
            entry(
                "signer-cert",
                "signer",
                None,
                "    certificate:\n      subject: \"CN=auth-eu,O=Example\"\n",
            ),
            entry(
                "viewer-cert",
                "viewer",
                None,
                "    certificate:\n      san: viewer.internal\n",
            ),
            entry(
                "ops-cert",
                "operator",
                None,
                "    certificate:\n      subject: CN=ops\n",
            ),
            entry(
                "both",
                "signer",
                Some(&both_token),
                "    certificate:\n      san: both.internal\n    require: both\n",
            ),
        ],
    );
    let config = clients_config(
        dir,
        &clients,
        "",
        &format!(
            "{SLOW}tls:\n  admin:\n    cert_file: {}\n    key_file: {}\n    client_ca_file: {}\n",
            server_cert.display(),
            server_key.display(),
            client_ca_file.display()
        ),
    );
    let mk = |file: &str, dn: &[(DnType, &str)], san: &str| {
        cert_client(dir, &client_ca, &server_ca_file, file, dn, san)
    };
    let signer = mk(
        "signer",
        &[
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, "auth-eu"),
        ],
        "auth-eu.internal",
    );
    let viewer = mk(
        "viewer",
        &[(DnType::CommonName, "dashboard")],
        "viewer.internal",
    );
    let ops = mk("ops", &[(DnType::CommonName, "ops")], "ops.internal");
    let both = mk("both", &[(DnType::CommonName, "both")], "both.internal");
    let stranger = mk(
        "stranger",
        &[(DnType::CommonName, "stranger")],
        "stranger.internal",
    );
    let metrics_client = mk("metrics", &[(DnType::CommonName, "prometheus")], "prom");
    let d = Daemon::start_with_client(dir, &config, &[], metrics_client).await;
    assert!(d.admin.starts_with("https://"), "{}", d.admin);
    let url = |p: &str| format!("{}{p}", d.admin);
    let get = |c: &Client, p: &str, t: Option<&str>| {
        let (c, u, t) = (c.clone(), url(p), t.map(str::to_owned));
        async move { request(&c, Method::GET, &u, t.as_deref(), &[], None).await }
    };
    let sign = |c: &Client, t: Option<&str>| {
        let (c, a, t) = (c.clone(), d.admin.clone(), t.map(str::to_owned));
        async move { sign_with(&c, &a, t.as_deref(), "ES256", &[]).await }
    };

    // The signer's certificate (by subject) alone: it signs and pulls the
    // key, but lists nothing.
    let r = sign(&signer, None).await;
    expect(&r, 200, "", "signer certificate signs");
    let kid = support::kid_of(r.json().unwrap()["token"].as_str().unwrap()).unwrap();
    assert!(d.kids().await.contains(&kid));
    expect(
        &get(&signer, "/v1/keys/active?alg=ES256", None).await,
        200,
        "",
        "signer certificate pulls the key",
    );
    expect(
        &get(&signer, "/v1/keys", None).await,
        403,
        "forbidden",
        "signer certificate lists keys",
    );
    let pulled = d.wait_events("signing key pulled").await;
    assert!(
        pulled.iter().any(|e| e["client"] == "signer-cert"),
        "{pulled:?}"
    );

    // The viewer's (by SAN): the key list only.
    let r = get(&viewer, "/v1/keys", None).await;
    expect(&r, 200, "", "viewer certificate lists keys");
    assert!(!r.json().unwrap()["keys"].as_array().unwrap().is_empty());
    expect(&sign(&viewer, None).await, 403, "forbidden", "viewer signs");
    expect(
        &get(&viewer, "/v1/keys/active?alg=ES256", None).await,
        403,
        "forbidden",
        "viewer pulls the key",
    );
    let rotate = |c: &Client| {
        let (c, u) = (c.clone(), url("/v1/rotate"));
        async move {
            request(
                &c,
                Method::POST,
                &u,
                None,
                &[],
                Some(json!({"alg": "ES256", "force": true})),
            )
            .await
        }
    };
    expect(&rotate(&viewer).await, 403, "forbidden", "viewer rotates");
    expect(&rotate(&signer).await, 403, "forbidden", "signer rotates");

    // The operator's: rotates.
    let before = active_kid(&d).await;
    let r = rotate(&ops).await;
    expect(&r, 200, "", "operator certificate rotates");
    assert_ne!(active_kid(&d).await, before, "not rotated");
    let rotations = d.wait_events("rotation requested").await;
    assert!(
        rotations.iter().any(|e| e["client"] == "ops-cert"),
        "{rotations:?}"
    );

    // require: both.
    expect(
        &sign(&both, Some(&both_token)).await,
        200,
        "",
        "both: certificate and token",
    );
    let r = sign(&both, None).await;
    expect(&r, 401, "unauthorized", "both: certificate alone");
    assert!(r.error_message().contains("both"), "{}", r.error_message());
    expect(
        &sign(&stranger, Some(&both_token)).await,
        401,
        "unauthorized",
        "both: token over a certificate of no client",
    );
    expect(
        &sign(&signer, Some(&both_token)).await,
        401,
        "unauthorized",
        "both: token over another client's certificate",
    );

    // A verified certificate of no client, without a token.
    let r = sign(&stranger, None).await;
    expect(&r, 401, "unauthorized", "unknown certificate");
    expect(
        &get(&stranger, "/v1/keys", None).await,
        401,
        "unauthorized",
        "unknown certificate lists keys",
    );
    // With a client's token it is that client.
    expect(
        &sign(&stranger, Some(&d.signer)).await,
        200,
        "",
        "built-in signer token over an unknown certificate",
    );
}

/// Issue 16, test 4: a viewer (by token) lists keys, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_lists_keys_but_cannot_sign_pull_rotate_or_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let viewer = new_token();
    write_clients(&clients, &[entry("dash", "viewer", Some(&viewer), "")]);
    let config = clients_config(tmp.path(), &clients, "", SLOW);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let v = Some(viewer.as_str());

    let r = get_as(&d, "/v1/keys", v).await;
    expect(&r, 200, "", "viewer lists keys");
    let keys = r.json().unwrap();
    let mut names = Vec::new();
    support::member_names(&keys, &mut names);
    assert!(
        !names.iter().any(|n| n == "d"),
        "private key material: {keys}"
    );
    let kid = active_kid(&d).await;

    let r = get_as(&d, "/v1/keys/active?alg=ES256", v).await;
    expect(&r, 403, "forbidden", "viewer pulls the key");
    assert!(
        r.error_message().contains("dash is a viewer"),
        "{}",
        r.error_message()
    );
    expect(
        &sign_as(&d, v, "ES256").await,
        403,
        "forbidden",
        "viewer signs",
    );
    expect(
        &post_as(&d, "/v1/rotate", v, json!({"alg": "ES256", "force": true})).await,
        403,
        "forbidden",
        "viewer rotates",
    );
    expect(
        &post_as(&d, &format!("/v1/keys/{kid}/revoke"), v, json!({})).await,
        403,
        "forbidden",
        "viewer revokes",
    );
    assert_eq!(active_kid(&d).await, kid, "the viewer changed the keys");
    assert_eq!(
        d.metric("jwksd_client_sign_requests_total{client=\"dash\",result=\"refused\"}")
            .await,
        Some(1.0)
    );
    // The built-ins still work beside it.
    expect(
        &d.sign("ES256", json!({})).await,
        200,
        "",
        "built-in signer",
    );
}

/// Issue 16, test 5: a client outside its networks, or asking for an
/// algorithm outside its list, is refused (on signing and on the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_their_networks_or_algorithms_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let (far, near, es, slow) = (new_token(), new_token(), new_token(), new_token());
    write_clients(
        &clients,
        &[
            entry(
                "far",
                "signer",
                Some(&far),
                "    networks: [192.0.2.0/24]\n",
            ),
            entry(
                "near",
                "signer",
                Some(&near),
                "    networks: [127.0.0.0/8]\n",
            ),
            entry("es-only", "signer", Some(&es), "    algorithms: [ES256]\n"),
            entry(
                "slow",
                "signer",
                Some(&slow),
                "    sign_rate_limit: 2/min\n",
            ),
        ],
    );
    let config = clients_config(
        tmp.path(),
        &clients,
        "",
        &format!("algorithms: [ES256, RS256]\n{SLOW}"),
    );
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;

    let r = sign_as(&d, Some(&far), "ES256").await;
    expect(&r, 403, "forbidden_network", "far signs");
    expect(
        &get_as(&d, "/v1/keys/active?alg=ES256", Some(&far)).await,
        403,
        "forbidden_network",
        "far pulls",
    );
    expect(
        &sign_as(&d, Some(&near), "RS256").await,
        200,
        "",
        "near signs",
    );

    let r = sign_as(&d, Some(&es), "RS256").await;
    expect(&r, 403, "forbidden_alg", "es-only signs RS256");
    assert!(r.error_message().contains("ES256"), "{}", r.error_message());
    expect(
        &get_as(&d, "/v1/keys/active?alg=RS256", Some(&es)).await,
        403,
        "forbidden_alg",
        "es-only pulls RS256",
    );
    expect(
        &sign_as(&d, Some(&es), "ES256").await,
        200,
        "",
        "es-only ES256",
    );
    expect(
        &get_as(&d, "/v1/keys/active?alg=ES256", Some(&es)).await,
        200,
        "",
        "es-only pulls ES256",
    );
    // RS256 is configured: others may use it.
    expect(&d.sign("RS256", json!({})).await, 200, "", "built-in RS256");
    let warned = d
        .wait_events("admin request from a network not among the client's")
        .await;
    assert!(warned.iter().any(|e| e["client"] == "far"), "{warned:?}");
    // A client past its sign_rate_limit (a bucket of 2, one more every 30 s).
    for _ in 0..2 {
        expect(
            &sign_as(&d, Some(&slow), "ES256").await,
            200,
            "",
            "slow, in its rate",
        );
    }
    let r = sign_as(&d, Some(&slow), "ES256").await;
    expect(&r, 429, "rate_limited", "slow, past its rate");
    let retry: u64 = r
        .header(hyper::header::RETRY_AFTER)
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    expect(
        &sign_as(&d, Some(&es), "ES256").await,
        200,
        "",
        "another client's rate",
    );
}

/// Sends `n` signatures as `token` with `X-Forwarded-For: xff` until one is
/// not 401; returns how many were 401 and the first other answer.
async fn fail_until_limited(d: &Daemon, xff: &str, token: &str) -> (usize, Reply) {
    for i in 0..40 {
        let r = sign_with(&d.client, &d.admin, Some(token), "ES256", &[(XFF, xff)]).await;
        if r.status != 401 {
            return (i, r);
        }
    }
    panic!("40 failures from {xff} and no 429");
}

/// Issue 16, test 6: behind a trusted proxy, the failure limit counts the
/// forwarded address; without one, X-Forwarded-For is nobody's business.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_one_clients_failures_do_not_limit_another() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let (a, b, c) = (new_token(), new_token(), new_token());
    write_clients(
        &clients,
        &[
            entry("a", "signer", Some(&a), ""),
            entry("b", "signer", Some(&b), ""),
            entry("c", "signer", Some(&c), "    networks: [198.51.100.0/24]\n"),
        ],
    );
    let config = clients_config(
        tmp.path(),
        &clients,
        "  trusted_proxies: [127.0.0.1/32]\n",
        SLOW,
    );
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let sign = |token: &str, xff: Option<&str>| {
        let (c, a, t, x) = (
            d.client.clone(),
            d.admin.clone(),
            token.to_owned(),
            xff.map(str::to_owned),
        );
        async move {
            let h: Vec<(HeaderName, &str)> = x.iter().map(|x| (XFF, x.as_str())).collect();
            sign_with(&c, &a, Some(&t), "ES256", &h).await
        }
    };

    // The client behind 198.51.100.1 with a wrong token: 31 failures are
    // 401, then 429.
    let (failed, r) =
        fail_until_limited(&d, "198.51.100.1", "wrong-token-of-a-misconfigured-client").await;
    assert_eq!(failed, 31, "401s before the limit");
    expect(&r, 429, "too_many_failures", "after 31 failures");
    assert_eq!(r.header(hyper::header::RETRY_AFTER), Some("60"));
    // Another client behind the same proxy is not limited...
    expect(
        &sign(&b, Some("198.51.100.2")).await,
        200,
        "",
        "b behind the proxy",
    );
    // ...nor the proxy's own address; the limited address is, even with a
    // valid token.
    expect(&sign(&b, None).await, 200, "", "the proxy itself");
    expect(
        &sign(&a, Some("198.51.100.1")).await,
        429,
        "too_many_failures",
        "a valid token from the limited address",
    );
    // The rightmost untrusted entry is the client (the left one is
    // written by the client itself).
    expect(
        &sign(&b, Some("198.51.100.1, 198.51.100.3")).await,
        200,
        "",
        "spoofed leftmost entry",
    );
    // Networks apply to the forwarded address.
    expect(
        &sign(&c, Some("198.51.100.7")).await,
        200,
        "",
        "c from its network",
    );
    expect(
        &sign(&c, Some("203.0.113.7")).await,
        403,
        "forbidden_network",
        "c from elsewhere",
    );
    expect(
        &sign(&c, None).await,
        403,
        "forbidden_network",
        "c as the proxy",
    );
    // A malformed header from a trusted proxy.
    let r = sign(&b, Some("not-an-address")).await;
    expect(&r, 400, "bad_forwarded_for", "malformed X-Forwarded-For");
    let r = sign(&b, Some("198.51.100.2, 999.1.1.1")).await;
    expect(&r, 400, "bad_forwarded_for", "malformed last entry");

    // Without trusted proxies the header is ignored: the spoofed address
    // does not escape the limit, and a malformed one is no error.
    let tmp2 = tempfile::tempdir().unwrap();
    let clients2 = tmp2.path().join("clients.yaml");
    write_clients(&clients2, &[entry("b", "signer", Some(&b), "")]);
    let config2 = clients_config(tmp2.path(), &clients2, "", SLOW);
    let d2 = Daemon::start_with(tmp2.path(), &config2, &[]).await;
    let r = sign_with(
        &d2.client,
        &d2.admin,
        Some(&b),
        "ES256",
        &[(XFF, "garbage")],
    )
    .await;
    expect(&r, 200, "", "malformed X-Forwarded-For, untrusted");
    let (failed, r) =
        fail_until_limited(&d2, "198.51.100.1", "wrong-token-of-a-misconfigured-client").await;
    assert_eq!(failed, 31);
    expect(&r, 429, "too_many_failures", "after 31 failures");
    let r = sign_with(
        &d2.client,
        &d2.admin,
        Some(&b),
        "ES256",
        &[(XFF, "198.51.100.2")],
    )
    .await;
    expect(
        &r,
        429,
        "too_many_failures",
        "a spoofed X-Forwarded-For escapes the limit",
    );
}

/// Issue 16, test 7: a bad clients file (invalid YAML, an invalid entry)
/// keeps the last good list and says why, naming the file; a good one is
/// then reloaded, this time by the file watch (no signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_clients_file_keeps_the_last_good_list() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let (a, b) = (new_token(), new_token());
    write_clients(&clients, &[entry("a", "signer", Some(&a), "")]);
    let config = clients_config(tmp.path(), &clients, "", SLOW);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    expect(&sign_as(&d, Some(&a), "ES256").await, 200, "", "a at start");
    let failed_events = || {
        d.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("clients reload failed"))
            })
            .collect::<Vec<_>>()
    };
    let path = clients.display().to_string();

    // Not YAML.
    write_raw(
        &clients,
        &format!(
            "clients:\n  - name: b\n    role: signer\n    tokens: [\n      - sha256: {}\n",
            digest(&b)
        ),
    );
    sighup(&d);
    wait_reloads(&d, "failed", 0.0).await;
    expect(
        &sign_as(&d, Some(&a), "ES256").await,
        200,
        "",
        "a after bad YAML",
    );
    expect(
        &sign_as(&d, Some(&b), "ES256").await,
        401,
        "unauthorized",
        "b after bad YAML",
    );
    let events = failed_events();
    assert!(!events.is_empty(), "{}", d.log_text());
    assert!(
        events[0]["file"] == path.as_str() && events[0]["error"].as_str().unwrap().contains(&path),
        "the file is not named: {events:?}"
    );

    // YAML, but an invalid entry (its role, on line 7).
    let failed = reloads(&d, "failed").await;
    write_raw(
        &clients,
        &format!(
            "clients:\n  - name: a\n    role: signer\n    tokens:\n      - sha256: {}\n  - name: b\n    role: admin\n    tokens:\n      - sha256: {}\n",
            digest(&a),
            digest(&b)
        ),
    );
    sighup(&d);
    wait_reloads(&d, "failed", failed).await;
    // (The file watch may report the first bad file again meanwhile.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = loop {
        let found = failed_events()
            .into_iter()
            .find(|e| e["error"].as_str().is_some_and(|m| m.contains("role")));
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = last["error"].as_str().unwrap();
    assert!(
        last["file"] == path.as_str() && error.contains(&path) && error.contains("admin"),
        "{last}"
    );
    expect(
        &sign_as(&d, Some(&a), "ES256").await,
        200,
        "",
        "a after a bad entry",
    );
    expect(
        &sign_as(&d, Some(&b), "ES256").await,
        401,
        "unauthorized",
        "b after a bad entry",
    );
    assert_eq!(d.metric("jwksd_clients").await, Some(3.0), "a + built-ins");

    // A good file, noticed without a signal.
    let ok = reloads(&d, "ok").await;
    write_clients(&clients, &[entry("b", "signer", Some(&b), "")]);
    let deadline = Instant::now() + Duration::from_secs(12);
    while reloads(&d, "ok").await <= ok {
        assert!(
            Instant::now() < deadline,
            "file change not noticed:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expect(
        &sign_as(&d, Some(&b), "ES256").await,
        200,
        "",
        "b after the good file",
    );
    expect(
        &sign_as(&d, Some(&a), "ES256").await,
        401,
        "unauthorized",
        "a removed",
    );
    let reloaded = d.wait_events("clients reloaded").await;
    assert!(
        reloaded.iter().any(|e| e["why"] == "file changed"),
        "{reloaded:?}"
    );
}

/// Issue 16, test 8: with no `admin.clients` the built-in token files work
/// as before; a listed client named `signer` replaces the built-in one,
/// whose token file is then refused (and, in a new directory, not made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_token_files_work_as_before_unless_a_listed_client_replaces_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(tmp.path(), SLOW).await;
    assert!(!d.signer.is_empty() && !d.operator.is_empty());
    expect(
        &d.sign("ES256", json!({})).await,
        200,
        "",
        "built-in signer",
    );
    expect(
        &d.active_key("ES256").await,
        200,
        "",
        "built-in signer pulls",
    );
    let before = active_kid(&d).await;
    expect(
        &d.rotate(json!({"alg": "ES256", "force": true})).await,
        200,
        "",
        "built-in operator",
    );
    assert_ne!(active_kid(&d).await, before);
    // The built-in signer is a signer still.
    expect(
        &get_as(&d, "/v1/keys", Some(&d.signer.clone())).await,
        403,
        "forbidden",
        "built-in signer lists keys",
    );
    assert_eq!(d.metric("jwksd_clients").await, Some(2.0));
    let loaded = d.wait_events("admin tokens loaded").await;
    assert!(
        loaded.len() == 1
            && loaded[0]["operator"]
                .as_str()
                .is_some_and(|s| s.ends_with("operator.token (created)"))
            && loaded[0]["signer"]
                .as_str()
                .is_some_and(|s| s.ends_with("signer.token (created)")),
        "{loaded:?}"
    );
    // SIGHUP with no clients file: nothing changes.
    sighup(&d);
    tokio::time::sleep(Duration::from_millis(300)).await;
    expect(&d.sign("ES256", json!({})).await, 200, "", "after SIGHUP");

    // A listed `signer` replaces the built-in one.
    let old_signer = d.signer.clone();
    d.stop();
    let clients = tmp.path().join("clients.yaml");
    let listed = new_token();
    write_clients(&clients, &[entry("signer", "signer", Some(&listed), "")]);
    clients_config(tmp.path(), &clients, "", SLOW);
    d.restart().await;
    expect(
        &sign_as(&d, Some(&old_signer), "ES256").await,
        401,
        "unauthorized",
        "the replaced signer token file",
    );
    expect(
        &sign_as(&d, Some(&listed), "ES256").await,
        200,
        "",
        "listed signer",
    );
    expect(
        &d.rotate(json!({"alg": "ES256", "force": true})).await,
        200,
        "",
        "built-in operator beside it",
    );
    assert_eq!(d.metric("jwksd_clients").await, Some(2.0));

    // In a new directory its token file is not even created.
    let tmp2 = tempfile::tempdir().unwrap();
    let clients2 = tmp2.path().join("clients.yaml");
    write_clients(
        &clients2,
        &[entry("signer", "signer", Some(&new_token()), "")],
    );
    let config2 = clients_config(tmp2.path(), &clients2, "", SLOW);
    let d2 = Daemon::start_with(tmp2.path(), &config2, &[]).await;
    assert!(!d2.operator.is_empty(), "the operator token file is made");
    assert!(
        !tmp2.path().join("keys/signer.token").exists(),
        "a replaced built-in's token file was created"
    );
}

/// Issue 16, test 9: sign requests are counted per client (`unknown` for a
/// token of no client); log lines name the client and never a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_logs_name_the_client_never_its_token() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let (a, ops) = (new_token(), new_token());
    write_clients(
        &clients,
        &[
            entry("a", "signer", Some(&a), ""),
            entry("ops", "operator", Some(&ops), ""),
        ],
    );
    let config = clients_config(tmp.path(), &clients, "", SLOW);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let wrong = new_token();

    for _ in 0..3 {
        expect(&sign_as(&d, Some(&a), "ES256").await, 200, "", "a signs");
    }
    expect(
        &sign_as(&d, Some(&wrong), "ES256").await,
        401,
        "unauthorized",
        "wrong token",
    );
    expect(
        &sign_as(&d, None, "ES256").await,
        401,
        "unauthorized",
        "no token",
    );
    expect(
        &get_as(&d, "/v1/keys/active?alg=ES256", Some(&a)).await,
        200,
        "",
        "a pulls",
    );
    expect(
        &post_as(
            &d,
            "/v1/rotate",
            Some(&ops),
            json!({"alg": "ES256", "force": true}),
        )
        .await,
        200,
        "",
        "ops rotates",
    );
    let m = |s: &'static str| d.metric(s);
    assert_eq!(
        m("jwksd_client_sign_requests_total{client=\"a\",result=\"ok\"}").await,
        Some(3.0)
    );
    assert_eq!(
        m("jwksd_client_sign_requests_total{client=\"unknown\",result=\"refused\"}").await,
        Some(2.0)
    );
    assert_eq!(
        m("jwksd_client_auth_failures_total{client=\"unknown\"}").await,
        Some(2.0)
    );
    assert_eq!(
        m("jwksd_client_sign_requests_total{client=\"a\",result=\"refused\"}").await,
        None
    );

    let pulled = d.wait_events("signing key pulled").await;
    assert!(
        !pulled.is_empty() && pulled.iter().all(|e| e["client"] == "a"),
        "{pulled:?}"
    );
    let rotated = d.wait_events("rotation requested").await;
    assert!(rotated.iter().any(|e| e["client"] == "ops"), "{rotated:?}");
    let refused = d.wait_events("admin request without a valid token").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused.iter().all(|e| e["client"] == "unknown"),
        "{refused:?}"
    );

    let log = d.log_text();
    for (name, secret) in [
        ("a", &a),
        ("ops", &ops),
        ("wrong", &wrong),
        ("built-in operator", &d.operator),
        ("built-in signer", &d.signer),
    ] {
        assert!(
            !log.contains(secret.as_str()),
            "{name}'s token in the log:\n{log}"
        );
        assert!(
            !log.contains(&digest(secret)),
            "{name}'s whole digest in the log:\n{log}"
        );
    }
}

/// Runs `jwksd serve` expecting it to stop at start-up: its exit code and
/// stderr.
fn start_fails(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("JWKSD_CONFIG")
        .env_remove("JWKSD_OPERATOR_TOKEN")
        .env_remove("JWKSD_SIGNER_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "jwksd started with a bad clients file:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` as the clients file and checks that the start stops with
/// exit code 1 and an error naming the file and one of `lines`.
fn check_start_refused(config: &Path, clients: &Path, text: &str, lines: &[&str], secret: &str) {
    write_raw(clients, text);
    let path = clients.display().to_string();
    let (code, stderr) = start_fails(config);
    assert_eq!(code, Some(1), "{text}\n{stderr}");
    let error = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "jwksd cannot start")
        .unwrap_or_else(|| panic!("no start-up error for\n{text}\n{stderr}"));
    let error = error["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&path) && lines.iter().any(|l| error.contains(l)),
        "the file and {lines:?} not named for\n{text}\n{error}"
    );
    assert!(
        !stderr.contains(secret),
        "the token in the error:\n{stderr}"
    );
    assert!(!stderr.contains("\"listening\""), "{stderr}");
}

/// Issue 16, test 10: a bad clients file stops the start, naming the file
/// and the line.
#[test]
fn a_bad_clients_file_stops_the_start_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let config = clients_config(tmp.path(), &clients, "", SLOW);
    let t = new_token();
    let check =
        |text: String, lines: &[&str]| check_start_refused(&config, &clients, &text, lines, &t);

    // An unknown role on line 3.
    check(
        format!(
            "clients:\n  - name: a\n    role: admin\n    tokens:\n      - sha256: {}\n",
            digest(&t)
        ),
        &["line 3"],
    );
    // A token, not its digest, on line 5 (its list, `tokens:`, on line 4).
    check(
        format!("clients:\n  - name: a\n    role: signer\n    tokens:\n      - sha256: {t}\n"),
        &["line 4", "line 5"],
    );
    // The same name twice (lines 2 and 6).
    check(
        format!(
            "clients:\n  - name: a\n    role: signer\n    tokens:\n      - sha256: {}\n  - name: a\n    role: viewer\n    tokens:\n      - sha256: {}\n",
            digest(&t),
            digest(&new_token())
        ),
        &["line 2", "line 6"],
    );
    // Not YAML: an unclosed list from line 3.
    check(
        "clients:\n  - name: a\n    role: [signer\n".to_owned(),
        &["line 3", "line 4"],
    );
    // A missing clients file.
    std::fs::remove_file(&clients).unwrap();
    let (code, stderr) = start_fails(&config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&clients.display().to_string()), "{stderr}");
}

/// An error in the second client's entry is reported at its own line and
/// names its client (found when the line was the first client's field of
/// the same name: `locate` follows keys, not list entries).
#[test]
fn an_error_in_a_later_client_is_reported_at_its_own_line() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let config = clients_config(tmp.path(), &clients, "", SLOW);
    let t = new_token();
    check_start_refused(
        &config,
        &clients,
        &format!(
            "clients:\n  - name: a\n    role: signer\n    tokens:\n      - sha256: {}\n  - name: b\n    role: admin\n    tokens:\n      - sha256: {}\n",
            digest(&t),
            digest(&new_token())
        ),
        &["(client b, line 7)"],
        &t,
    );
}

/// A bad clients file is reported once: a failed SIGHUP reload records the
/// file as seen, so the next watch tick does not report it again (it did:
/// the stamp was recorded only on success).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_clients_file_is_reported_once_after_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients.yaml");
    let a = new_token();
    write_clients(&clients, &[entry("a", "signer", Some(&a), "")]);
    let config = clients_config(tmp.path(), &clients, "", SLOW);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    write_raw(&clients, "clients: [\n");
    sighup(&d);
    wait_reloads(&d, "failed", 0.0).await;
    // Past the next file watch tick.
    tokio::time::sleep(reload_watch() + Duration::from_millis(700)).await;
    expect(
        &sign_as(&d, Some(&a), "ES256").await,
        200,
        "",
        "a, last good list",
    );
    let failed: Vec<Value> = d
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("clients reload failed"))
        })
        .collect();
    assert_eq!(
        (reloads(&d, "failed").await, failed.len()),
        (1.0, 1),
        "one bad file, reported more than once: {failed:?}"
    );
}

fn reload_watch() -> Duration {
    jwksd::reload::WATCH_INTERVAL
}

/// The log line of a malformed X-Forwarded-For from a trusted proxy names
/// the client (`unknown`: before authentication), as every admin line does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bad_forwarded_for_log_line_names_the_client() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config_with(tmp.path(), "  trusted_proxies: [127.0.0.1/32]\n", SLOW);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let r = sign_with(
        &d.client,
        &d.admin,
        Some(&d.signer),
        "ES256",
        &[(XFF, "not-an-address")],
    )
    .await;
    expect(&r, 400, "bad_forwarded_for", "malformed X-Forwarded-For");
    let lines = d
        .wait_events("X-Forwarded-For from a trusted proxy is not a list of addresses")
        .await;
    assert!(!lines.is_empty(), "{}", d.log_text());
    assert!(
        lines.iter().all(|l| l["client"].is_string()),
        "no client in {lines:?}"
    );
}

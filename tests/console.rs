//! The operator console (docs/console.md) against the real binary: its
//! files and security headers, sign-in and the session cookie, the CSRF
//! token and the Origin check on every change, sessions that expire, sign
//! out, or lose their credential, roles, and the page itself driven in
//! Debian's Chromium by playwright-core (`tests/console/browser.mjs`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::header::HeaderName;
use jwksd::access::TokenDigest;
use jwksd::client::Reply;
use serde_json::{Value, json};
use support::daemon::{Daemon, write_config_with};

const ORIGIN: HeaderName = HeaderName::from_static("origin");
const COOKIE: HeaderName = HeaderName::from_static("cookie");
const CSRF: HeaderName = HeaderName::from_static("x-csrf-token");
const FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const CONTENT_TYPE: HeaderName = HeaderName::from_static("content-type");

/// Rotation out of the way: the tests rotate by hand.
const SLOW: &str = "rotation:\n  every: 1h\njwks:\n  cache_max_age: 1s\ntokens:\n  clock_skew: 1s\n  max_lifetime: 4s\nsigning_key:\n  cache_max_age: 1s\n";

/// What in a page the CSP would block as inline: script elements with a
/// body or without `src`, `<style>`, `style=` and `on…=` attributes.
fn inline_code(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find('<') {
        let tag_end = rest[i..].find('>').map_or(rest.len(), |j| i + j);
        let tag = &rest[i..tag_end];
        let name: String = tag[1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name == "style" {
            found.push(tag.to_owned());
        }
        if name == "script" {
            let body_end = rest[tag_end..].find("</script").map_or(0, |j| j);
            if !tag.contains(" src=") || rest[tag_end + 1..tag_end + body_end].trim() != "" {
                found.push(tag.to_owned());
            }
        }
        for attr in tag.split_whitespace().skip(1) {
            let key = attr.split('=').next().unwrap_or("");
            if attr.contains('=') && (key == "style" || (key.starts_with("on") && key.len() > 2)) {
                found.push(tag.to_owned());
            }
        }
        rest = &rest[tag_end.min(rest.len())..];
        if rest.len() <= 1 {
            break;
        }
        rest = &rest[1..];
    }
    found
}

#[test]
fn the_inline_code_check_finds_what_the_csp_blocks() {
    assert!(inline_code("<p>hi</p><script type=\"module\" src=\"a.js\"></script>").is_empty());
    for bad in [
        "<script>alert(1)</script>",
        "<script type=\"module\">import x from 'y'</script>",
        "<script src=\"a.js\">x()</script>",
        "<button onclick=\"x()\">b</button>",
        "<p style=\"color:red\">p</p>",
        "<style>p{}</style>",
    ] {
        assert!(!inline_code(bad).is_empty(), "{bad}");
    }
}

fn new_token() -> String {
    jwksd::http::auth::random_token().as_str().to_owned()
}

fn write_clients(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn viewer_entry(token: &str) -> String {
    format!(
        "  - name: view\n    role: viewer\n    tokens:\n      - sha256: {}\n",
        TokenDigest::of(token)
    )
}

/// The page's origin: what a browser sends as `Origin` from it.
fn origin(d: &Daemon) -> String {
    d.admin.trim_end_matches('/').to_owned()
}

async fn send(
    d: &Daemon,
    method: Method,
    path: &str,
    headers: &[(HeaderName, &str)],
    body: Option<Value>,
) -> Reply {
    let url = format!("{}{path}", d.admin);
    let body = body.map(|b| bytes::Bytes::from(serde_json::to_vec(&b).unwrap()));
    d.client
        .send(method, &url, None, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn code(r: &Reply) -> String {
    r.json()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `console.idle_timeout` in the session test: long enough that a stream
/// ending within a second of its cause did not end at its idle end.
const IDLE_S: u64 = 4;
const BACKGROUND: HeaderName = HeaderName::from_static("x-console-background");

/// Opens the console's event stream with `cookie`; the task ends with the
/// stream, and says when.
fn open_stream(d: &Daemon, cookie: &str) -> tokio::task::JoinHandle<(Reply, Instant)> {
    let client = d.client.clone();
    let url = format!("{}/console/api/events", d.admin);
    let cookie = cookie.to_owned();
    tokio::spawn(async move {
        let r = client
            .send(Method::GET, &url, None, &[(COOKIE, cookie.as_str())], None)
            .await
            .expect("the stream answered");
        (r, Instant::now())
    })
}

/// Waits for a stream to end within `within` of `cause`.
async fn ended_within(
    stream: tokio::task::JoinHandle<(Reply, Instant)>,
    cause: Instant,
    within: Duration,
) -> Reply {
    let (r, at) = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(
        at.duration_since(cause) < within,
        "the stream ended {:?} after its cause",
        at.duration_since(cause)
    );
    r
}

/// A signed-in session: the cookie to send back and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
    set_cookie: String,
    body: Value,
}

async fn sign_in(d: &Daemon, token: &str) -> Result<Session, Reply> {
    let o = origin(d);
    let r = send(
        d,
        Method::POST,
        "/console/api/session",
        &[(ORIGIN, &o)],
        Some(json!({ "token": token })),
    )
    .await;
    if r.status != 200 {
        return Err(r);
    }
    let set_cookie = r.header("set-cookie").expect("a session cookie").to_owned();
    let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
    let body = r.json().unwrap();
    Ok(Session {
        cookie,
        csrf: body["csrf"].as_str().unwrap().to_owned(),
        set_cookie,
        body,
    })
}

impl Session {
    async fn get(&self, d: &Daemon, path: &str) -> Reply {
        send(d, Method::GET, path, &[(COOKIE, &self.cookie)], None).await
    }

    /// A change as the page sends it: cookie, Origin and CSRF token.
    async fn change(&self, d: &Daemon, method: Method, path: &str, body: Option<Value>) -> Reply {
        let o = origin(d);
        send(
            d,
            method,
            path,
            &[(COOKIE, &self.cookie), (ORIGIN, &o), (CSRF, &self.csrf)],
            body,
        )
        .await
    }
}

fn published(keys: &Value, state: &str) -> Vec<String> {
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == state)
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn files_headers_and_sign_in() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config_with(tmp.path(), "", SLOW);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;

    // The page and its files, each with the console's headers.
    let r = send(&d, Method::GET, "/console", &[], None).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/console/"));
    for (path, ty) in [
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/timeline.js", "text/javascript"),
        ("/console/console.css", "text/css"),
        ("/console/api/timeline", "application/json"),
    ] {
        let r = send(&d, Method::GET, path, &[], None).await;
        assert!(
            r.header("content-type").is_some_and(|t| t.starts_with(ty)),
            "{path}: {:?}",
            r.header("content-type")
        );
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    let index = send(&d, Method::GET, "/console/", &[], None).await;
    assert_eq!(index.status, 200);
    let html = String::from_utf8_lossy(&index.body);
    assert!(html.contains("src=\"console.js\""), "{html}");
    assert_eq!(
        inline_code(&html),
        Vec::<String>::new(),
        "no inline script or style"
    );
    // Revalidated with its ETag.
    let etag = index.header("etag").unwrap().to_owned();
    let again = send(
        &d,
        Method::GET,
        "/console/",
        &[(HeaderName::from_static("if-none-match"), &etag)],
        None,
    )
    .await;
    assert_eq!(again.status, 304);
    assert_eq!(
        send(&d, Method::GET, "/console/nope.js", &[], None)
            .await
            .status,
        404
    );
    assert_eq!(
        send(&d, Method::POST, "/console/", &[], None).await.status,
        405
    );

    // Nothing without a session.
    let r = send(&d, Method::GET, "/console/api/timeline", &[], None).await;
    assert_eq!((r.status.as_u16(), code(&r).as_str()), (401, "no_session"));
    let r = send(
        &d,
        Method::GET,
        "/console/api/timeline",
        &[(COOKIE, "jwksd_console=made-up")],
        None,
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r).as_str()), (401, "no_session"));

    // Sign-in: from the console's origin, as JSON, with a good token of
    // an operator or viewer.
    let o = origin(&d);
    let token = json!({ "token": d.operator });
    let evil = [(ORIGIN, "http://evil.example")];
    let cross_site = [(ORIGIN, o.as_str()), (FETCH_SITE, "cross-site")];
    for headers in [&[][..], &evil[..], &cross_site[..]] {
        let r = send(
            &d,
            Method::POST,
            "/console/api/session",
            headers,
            Some(token.clone()),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), code(&r).as_str()),
            (403, "cross_origin"),
            "{headers:?}"
        );
    }
    let url = format!("{}/console/api/session", d.admin);
    let form = d
        .client
        .send(
            Method::POST,
            &url,
            None,
            &[
                (ORIGIN, &o),
                (CONTENT_TYPE, "application/x-www-form-urlencoded"),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(form.status, 415);
    let wrong = sign_in(&d, "not-a-token").await.err().expect("refused");
    assert_eq!(
        (wrong.status.as_u16(), code(&wrong).as_str()),
        (401, "unauthorized")
    );
    let signer = sign_in(&d, &d.signer).await.err().expect("refused");
    assert_eq!(
        (signer.status.as_u16(), code(&signer).as_str()),
        (403, "forbidden")
    );

    let s = sign_in(&d, &d.operator).await.expect("signed in");
    // Counted: the refusals above (three origins, the form, a wrong token,
    // a signer) and this one.
    assert_eq!(
        d.metric("jwksd_console_sign_ins_total{result=\"refused\"}")
            .await,
        Some(6.0)
    );
    assert_eq!(
        d.metric("jwksd_console_sign_ins_total{result=\"ok\"}")
            .await,
        Some(1.0)
    );
    let attrs: Vec<&str> = s.set_cookie.split(';').map(str::trim).collect();
    assert!(attrs[0].starts_with("jwksd_console="), "{attrs:?}");
    assert!(attrs[0].len() > "jwksd_console=".len() + 40, "{attrs:?}");
    for a in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console/",
        "Max-Age=3600",
    ] {
        assert!(attrs.contains(&a), "{a} in {attrs:?}");
    }
    // Plain HTTP here: no Secure (tests/tls.rs checks it over TLS).
    assert!(!attrs.contains(&"Secure"), "{attrs:?}");
    assert_eq!(s.body["client"]["role"], "operator");
    assert_eq!(s.body["idle_timeout_seconds"], 900);
    assert!(s.csrf.len() >= 40);
    // The session is not the token: the token never comes back.
    assert!(!s.set_cookie.contains(&d.operator));
    assert!(!s.body.to_string().contains(&d.operator));

    // The timeline: every key of /v1/keys, no private key anywhere.
    let t = s.get(&d, "/console/api/timeline").await;
    assert_eq!(t.status, 200);
    let text = String::from_utf8_lossy(&t.body).into_owned();
    for private in ["\"d\":", "\"p\":", "PRIVATE KEY"] {
        assert!(!text.contains(private), "{private} in {text}");
    }
    let t = t.json().unwrap();
    let keys = d.keys().await;
    let mut on_timeline: Vec<String> = t["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["keys"].as_array().unwrap().iter())
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    let mut listed: Vec<String> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    on_timeline.sort();
    listed.sort();
    assert_eq!(on_timeline, listed);
    for lane in t["lanes"].as_array().unwrap() {
        let active = lane["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["state"] == "active")
            .unwrap();
        assert!(
            active["revoke"]["summary"]
                .as_str()
                .unwrap()
                .contains("stops verifying")
        );
        assert!(lane["rotate"]["earliest_safe"].is_string(), "{lane}");
    }
    let h = s.get(&d, "/console/api/health").await;
    assert_eq!(h.status, 200);
    let h = h.json().unwrap();
    assert_eq!(h["ready"], true);
    assert_eq!(h["store_reachable"], true);
    assert_eq!(h["shared_store"], false);
}

#[tokio::test]
async fn changes_need_the_origin_and_the_csrf_token_and_sessions_end() {
    let tmp = tempfile::tempdir().unwrap();
    let viewer = new_token();
    let clients = tmp.path().join("clients.yaml");
    write_clients(&clients, &format!("clients:\n{}", viewer_entry(&viewer)));
    let config = write_config_with(
        tmp.path(),
        &format!("  clients: {}\n", clients.display()),
        &format!("{SLOW}console:\n  idle_timeout: {IDLE_S}s\n  session_lifetime: 1h\n"),
    );
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let before = d.keys().await;
    // Past publish_ahead, so that a rotation is safe.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = sign_in(&d, &d.operator).await.expect("signed in");
    let o = origin(&d);

    // Without the CSRF token, with a wrong one, from another origin or
    // site, or without Origin: refused, and nothing changes.
    let body = Some(json!({}));
    for (headers, want) in [
        (
            vec![(COOKIE, s.cookie.as_str()), (ORIGIN, o.as_str())],
            "csrf",
        ),
        (
            vec![
                (COOKIE, s.cookie.as_str()),
                (ORIGIN, o.as_str()),
                (CSRF, "wrong"),
            ],
            "csrf",
        ),
        (
            vec![
                (COOKIE, s.cookie.as_str()),
                (ORIGIN, "http://evil.example"),
                (CSRF, s.csrf.as_str()),
            ],
            "cross_origin",
        ),
        (
            vec![
                (COOKIE, s.cookie.as_str()),
                (ORIGIN, o.as_str()),
                (CSRF, s.csrf.as_str()),
                (FETCH_SITE, "same-site"),
            ],
            "cross_origin",
        ),
        (
            vec![(COOKIE, s.cookie.as_str()), (CSRF, s.csrf.as_str())],
            "cross_origin",
        ),
    ] {
        let r = send(
            &d,
            Method::POST,
            "/console/api/rotate",
            &headers,
            body.clone(),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), code(&r).as_str()),
            (403, want),
            "{headers:?}"
        );
    }
    // Nothing was done by hand (the daemon's own commits may go on).
    let after = d.keys().await;
    assert_eq!(published(&after, "active"), published(&before, "active"));
    assert!(
        !after.to_string().contains("\"manual\"") && !after.to_string().contains("\"forced\""),
        "{after}"
    );

    // With both: the rotation happens, and its audit record names the
    // operator.
    let seq = s.get(&d, "/console/api/timeline").await.json().unwrap()["audit_seq"]
        .as_u64()
        .unwrap();
    let r = s
        .change(
            &d,
            Method::POST,
            "/console/api/rotate",
            Some(json!({ "alg": "ES256" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let audit = s
        .get(&d, &format!("/console/api/audit?after={seq}"))
        .await
        .json()
        .unwrap();
    let records = audit["records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["event"]["type"] == "key.active" && r["actor"]["role"] == "operator"),
        "{audit}"
    );
    // Revoke a key rotated out, from the console.
    let after = d.keys().await;
    let retiring = published(&after, "retiring");
    let kid = retiring.first().expect("a key rotated out");
    let r = s
        .change(
            &d,
            Method::POST,
            &format!("/console/api/keys/{kid}/revoke"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let now = d.keys().await;
    assert!(
        now["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str() && k["state"] == "revoked"),
        "{now}"
    );

    // A viewer reads, and may not change anything.
    let v = sign_in(&d, &viewer).await.expect("a viewer signs in");
    assert_eq!(v.body["client"]["role"], "viewer");
    assert_eq!(v.get(&d, "/console/api/timeline").await.status, 200);
    let r = v
        .change(&d, Method::POST, "/console/api/rotate", Some(json!({})))
        .await;
    assert_eq!((r.status.as_u16(), code(&r).as_str()), (403, "forbidden"));

    // Requests from another origin of the same site (another port) are
    // refused, reads too; a cookie planted to shadow ours does not hide it.
    let r = send(
        &d,
        Method::GET,
        "/console/api/timeline",
        &[(COOKIE, s.cookie.as_str()), (FETCH_SITE, "same-site")],
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (403, "cross_origin")
    );
    let shadowed = format!("jwksd_console=planted; {}", s.cookie);
    let r = send(
        &d,
        Method::GET,
        "/console/api/timeline",
        &[(COOKIE, shadowed.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    // Nothing to sign in with: refused, and not counted as a failure.
    let o = origin(&d);
    let r = send(
        &d,
        Method::POST,
        "/console/api/session",
        &[(ORIGIN, &o)],
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (400, "no_credential")
    );

    // Two streams per session, not three.
    let first = open_stream(&d, &s.cookie);
    let second = open_stream(&d, &s.cookie);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = send(
        &d,
        Method::GET,
        "/console/api/events",
        &[(COOKIE, s.cookie.as_str())],
        None,
    )
    .await;
    assert_eq!(
        (third.status.as_u16(), code(&third).as_str()),
        (429, "too_many_streams")
    );

    // The streams end at sign-out, at once; the session is gone.
    let r = s
        .change(&d, Method::DELETE, "/console/api/session", None)
        .await;
    let signed_out = Instant::now();
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    for stream in [first, second] {
        let ended = ended_within(stream, signed_out, Duration::from_secs(1)).await;
        assert_eq!(ended.status, 200);
        assert!(String::from_utf8_lossy(&ended.body).starts_with("retry:"));
    }
    let r = s.get(&d, "/console/api/timeline").await;
    assert_eq!((r.status.as_u16(), code(&r).as_str()), (401, "no_session"));

    // Idle past console.idle_timeout: expired. The page's background
    // refreshes do not keep it alive; the user's own requests do.
    let polled = sign_in(&d, &d.operator).await.expect("signed in");
    let used = sign_in(&d, &d.operator).await.expect("signed in");
    let start = Instant::now();
    let expired = loop {
        let r = send(
            &d,
            Method::GET,
            "/console/api/health",
            &[(COOKIE, polled.cookie.as_str()), (BACKGROUND, "1")],
            None,
        )
        .await;
        if r.status != 200 {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(IDLE_S + 2),
            "background polls kept the session alive"
        );
        assert_eq!(used.get(&d, "/console/api/health").await.status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        (expired.status.as_u16(), code(&expired).as_str()),
        (401, "session_expired")
    );
    assert!(start.elapsed() >= Duration::from_secs(IDLE_S - 1));
    assert_eq!(used.get(&d, "/console/api/timeline").await.status, 200);

    // A credential withdrawn from the clients file ends its sessions, and
    // their streams, at the reload.
    let v = sign_in(&d, &viewer).await.expect("a viewer signs in");
    let stream = open_stream(&d, &v.cookie);
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_clients(&clients, "clients: []\n");
    let reloaded = Instant::now();
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
    ended_within(stream, reloaded, Duration::from_secs(2)).await;
    let r = v.get(&d, "/console/api/timeline").await;
    assert_eq!(
        (r.status.as_u16(), code(&r).as_str()),
        (401, "session_ended")
    );
    let log = d.log_text();
    assert!(
        log.contains("session ended"),
        "the streams say why they ended"
    );
    assert!(!log.contains(&s.csrf), "the CSRF token is never logged");
    assert!(
        !log.contains(s.cookie.split('=').nth(1).unwrap()),
        "nor the session id"
    );
}

#[tokio::test]
async fn a_disabled_console_is_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config_with(
        tmp.path(),
        "",
        &format!("{SLOW}console:\n  enabled: false\n"),
    );
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    for path in ["/console/", "/console/api/session", "/console/console.js"] {
        assert_eq!(
            send(&d, Method::GET, path, &[], None).await.status,
            404,
            "{path}"
        );
    }
}

/// Where `scripts/test` installs playwright-core.
fn browser_test_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let dir = browser_test_dir();
    let chromium =
        std::env::var("JWKSD_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists() && dir.join("node_modules/playwright-core").exists(),
        "the browser test needs Debian's chromium ({chromium}) and playwright-core in {}: \
         scripts/test installs both",
        dir.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let viewer = new_token();
    let clients = tmp.path().join("clients.yaml");
    write_clients(&clients, &format!("clients:\n{}", viewer_entry(&viewer)));
    // Rotating every 5 s: the page has something to follow.
    let config = write_config_with(
        tmp.path(),
        &format!("  clients: {}\n", clients.display()),
        "algorithms: [ES256, EdDSA]\nrotation:\n  every: 5s\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n",
    );
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new("node")
        .arg(dir.join("browser.mjs"))
        .env("ADMIN_URL", d.admin.trim_end_matches('/'))
        .env("PUBLIC_URL", d.public.trim_end_matches('/'))
        .env("OPERATOR_TOKEN", &d.operator)
        .env("VIEWER_TOKEN", &viewer)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/test installs it)");
    // The script bounds each step; this bounds the whole.
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        status.success(),
        "the browser test failed ({status}):\n{stdout}\n{stderr}\nscreenshots in {}\ndaemon log:\n{}",
        shots.display(),
        d.log_text()
    );
    // Each step it reports passed, and the screenshots are there.
    for step in [
        "signed in",
        "bars match /v1/keys",
        "updated live",
        "rotated",
        "revoked",
        "csrf refused",
        "cross-origin refused",
        "signed out",
    ] {
        assert!(stdout.contains(&format!("ok: {step}")), "{step}:\n{stdout}");
    }
    // The cross-origin POST the page made was refused by the Origin check
    // (it carried no CSRF token either, but the Origin check comes first).
    assert!(
        d.log_text()
            .contains("console request refused: not from the console's origin"),
        "the Origin check refused the cross-origin POST"
    );
    for shot in [
        "timeline.png",
        "rotate-dialog.png",
        "revoke-dialog.png",
        "narrow.png",
    ] {
        let p = shots.join(shot);
        assert!(
            std::fs::metadata(&p).is_ok_and(|m| m.len() > 1000),
            "{}",
            p.display()
        );
    }
}

/// With PostgreSQL: each replica's health panel names the lease holder,
/// and after the leader is killed the other replica takes the lease and
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_leader_of_replicas() {
    let cluster = support::pg::Cluster::start();
    let url = cluster.database("console");
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("JWKSD_STORE_URL", url.as_str()),
        (
            "JWKSD_MASTER_KEY",
            "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=",
        ),
    ];
    let mut replicas = Vec::new();
    for i in 0..2 {
        let dir = tmp.path().join(format!("r{i}"));
        let config = support::daemon::write_config(
            &dir,
            &format!("{SLOW}store:\n  leader_lease: 2s\n  poll_interval: 300ms\n"),
        );
        replicas.push(Daemon::start_with(&dir, &config, &env).await);
    }
    async fn health(d: &Daemon) -> Value {
        let s = sign_in(d, &d.operator).await.expect("signed in");
        let r = s.get(d, "/console/api/health").await;
        assert_eq!(r.status, 200);
        r.json().unwrap()
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let (leader, holder) = loop {
        let h0 = health(&replicas[0]).await;
        let h1 = health(&replicas[1]).await;
        assert_eq!(
            (h0["shared_store"].clone(), h1["shared_store"].clone()),
            (json!(true), json!(true))
        );
        let leading: Vec<usize> = [&h0, &h1]
            .iter()
            .enumerate()
            .filter(|(_, h)| h["leader"] == true)
            .map(|(i, _)| i)
            .collect();
        if let [i] = leading[..] {
            let me = [&h0, &h1][i]["replica"].clone();
            // Both name the same holder: the leader.
            if h0["lease_holder"] == me && h1["lease_holder"] == me {
                assert!(h0["lease_expires_in_seconds"].as_f64().unwrap() > 0.0);
                assert!([&h0, &h1][1 - i]["synced_seconds_ago"].as_f64().unwrap() < 5.0);
                break (i, me);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single leader named: {h0}\n{h1}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    replicas[leader].kill();
    let other = &replicas[1 - leader];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = health(other).await;
        if h["leader"] == true && h["lease_holder"] == h["replica"] {
            assert_ne!(h["lease_holder"], holder);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lease was not taken over: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! The operator console at `/console/` on the admin listener
//! (docs/console.md): static files embedded in the binary, and the page's
//! own API under `/console/api/`, authenticated by a session cookie that
//! a sign-in with a client's token starts.
//!
//! The console is a second way in for the same clients, never a wider
//! one: a session is re-identified from the credential it signed in with
//! at every request (a token withdrawn or expired ends it), the client's
//! role and networks apply as on the bearer API, and the answers are the
//! bearer API's own (`/v1/keys`, `/v1/rotate`, `/v1/keys/{kid}/revoke`,
//! the event stream). What only the console has: sign-in and sign-out,
//! the timeline ([`crate::lifecycle::timeline`]), the health panel and a
//! page of the audit log. No private key is ever in an answer.
//!
//! Browsers send cookies by themselves, so every state-changing request
//! (sign-in, sign-out, rotate, revoke) must come from the console's own
//! origin (`Origin`, and `Sec-Fetch-Site` when sent) and, once signed in,
//! carry the session's CSRF token in `X-CSRF-Token`.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AdminApi, authenticate, events, revoke, rotate};
use crate::access::{Client, Permission};
use crate::http::auth::random_token;
use crate::http::{
    Body, Conn, bytes_response, error, json, method_not_allowed, not_found, read_body,
};

pub mod session;

use session::{Active, Lookup, Sessions};

/// Where the console is served.
pub const PREFIX: &str = "/console/";
const API: &str = "/console/api/";

/// Sent with every console answer: scripts and styles from the console's
/// own files only (no inline script), no framing, no referrer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Audit records the page reads at once, at most.
const AUDIT_PAGE: usize = 200;
/// How long the health panel waits for the store to name the leader.
const LEASE_READ: Duration = Duration::from_secs(2);
/// How long a page of the audit log may take to read.
const AUDIT_READ: Duration = Duration::from_secs(5);

/// The console's settings (`console.*`, and whether the admin listener has
/// TLS: then the cookie is `Secure`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub enabled: bool,
    pub secure: bool,
    pub session_lifetime: Duration,
    pub idle_timeout: Duration,
    pub origins: Vec<String>,
}

impl Settings {
    pub fn from_config(c: &crate::config::Console, admin_tls: bool) -> Settings {
        Settings {
            enabled: c.enabled,
            secure: admin_tls,
            session_lifetime: c.session_lifetime.0,
            idle_timeout: c.idle_timeout.0,
            origins: c
                .origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }
}

/// The console's state: its settings and the sessions signed in.
pub struct Console {
    settings: Settings,
    sessions: Sessions,
}

impl Console {
    pub fn new(settings: Settings) -> Console {
        let sessions = Sessions::new(settings.session_lifetime, settings.idle_timeout);
        Console { settings, sessions }
    }

    /// The cookie's name: `__Secure-` over TLS, so that a page served
    /// without TLS cannot set it.
    fn cookie_name(&self) -> &'static str {
        if self.settings.secure {
            "__Secure-jwksd_console"
        } else {
            "jwksd_console"
        }
    }

    fn cookie(&self, value: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.settings.secure { "; Secure" } else { "" };
        let text = format!(
            "{}={value}; Path={PREFIX}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name(),
            max_age.as_secs()
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// What is wrong with an entry of `console.origins`, if anything: it must
/// be `scheme://host[:port]`, as browsers send `Origin`.
pub fn origin_problem(o: &str) -> Option<&'static str> {
    let Some((scheme, rest)) = o.split_once("://") else {
        return Some("expected scheme://host[:port], e.g. https://keys.example.com");
    };
    if scheme != "https" && scheme != "http" {
        return Some("the scheme must be https or http");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some("no host");
    }
    if rest.contains(['/', '?', '#', '@', ' ']) {
        return Some("an origin has no path, query, credentials or spaces");
    }
    None
}

/// Whether `path` is the console's.
pub(super) fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with(PREFIX)
}

/// One embedded file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../console/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../console/console.js"),
    },
    Asset {
        name: "timeline.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../console/timeline.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../console/console.css"),
    },
];

/// Each asset's ETag, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..32]))
            .collect()
    })
}

pub(super) async fn handle(
    api: Arc<AdminApi>,
    req: Request<Incoming>,
    conn: Conn,
    addr: IpAddr,
) -> Response<Body> {
    let Some(console) = api.console.as_ref() else {
        return not_found();
    };
    let mut r = route(&api, console, req, &conn, addr).await;
    let h = r.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn route(
    api: &AdminApi,
    console: &Console,
    req: Request<Incoming>,
    conn: &Conn,
    addr: IpAddr,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == "/console" {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static(PREFIX));
        return r;
    }
    let Some(rest) = path.strip_prefix(API) else {
        let name = &path[PREFIX.len()..];
        return match ASSETS.iter().position(|a| a.name == name) {
            Some(i) if method == Method::GET || method == Method::HEAD => asset(&req, i),
            Some(_) => method_not_allowed("GET, HEAD"),
            None => not_found(),
        };
    };
    let allow = match rest {
        "session" => "GET, POST, DELETE",
        "timeline" | "health" | "audit" | "events" => "GET",
        "rotate" => "POST",
        _ if revoke_kid(rest).is_some() => "POST",
        _ => return not_found(),
    };
    if !allow.split(", ").any(|m| m == method.as_str()) {
        return method_not_allowed(allow);
    }
    if rest == "session" && method == Method::POST {
        return sign_in(api, console, req, conn, addr).await;
    }
    let changes = method != Method::GET;
    let (active, client, id) = match signed_in(api, console, &req, conn, addr, changes) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let needs = match rest {
        "rotate" => Permission::Change,
        _ if revoke_kid(rest).is_some() => Permission::Change,
        _ => Permission::ReadKeys,
    };
    if !client.role.allows(needs) {
        tracing::warn!(client = %client.name, role = client.role.as_str(), addr = %addr, path, "console request refused for its role");
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs an operator client; {} is a {}",
                client.name, client.role
            ),
        );
    }
    let peer = conn.peer;
    match (rest, &method) {
        ("session", &Method::GET) => session_info(api, console, &active, &client, None),
        ("session", _) => {
            console.sessions.end(&id);
            tracing::info!(client = %client.name, addr = %addr, "console sign-out");
            let mut r = Response::new(Body::default());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r.headers_mut()
                .insert(header::SET_COOKIE, console.cookie("", Duration::ZERO));
            r
        }
        ("timeline", _) => timeline(api),
        ("health", _) => health(api).await,
        ("audit", _) => audit(api, &req).await,
        ("events", _) => events::stream(
            &api.daemon,
            &req,
            &client,
            peer,
            addr,
            events::Scope {
                all: true,
                ends: Some(active.ended.clone()),
                until: Some(tokio::time::Instant::from_std(active.ends_at)),
            },
        ),
        ("rotate", _) => rotate(api, req, &client, peer, addr).await,
        (r, _) => match revoke_kid(r) {
            Some(kid) => {
                let kid = kid.to_owned();
                revoke(api, req, &kid, &client, peer, addr).await
            }
            None => not_found(),
        },
    }
}

/// `keys/{kid}/revoke`'s kid.
fn revoke_kid(rest: &str) -> Option<&str> {
    let kid = rest.strip_prefix("keys/")?.strip_suffix("/revoke")?;
    (!kid.is_empty() && !kid.contains('/')).then_some(kid)
}

fn asset(req: &Request<Incoming>, i: usize) -> Response<Body> {
    let a = &ASSETS[i];
    let etag = &etags()[i];
    let mut r = if super::if_none_match(req.headers().get(header::IF_NONE_MATCH), etag) {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        bytes_response(StatusCode::OK, bytes::Bytes::from_static(a.body))
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    // Revalidated each time: a new binary serves new files at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    r
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
}

/// Whether a state-changing request comes from the console's own page:
/// its `Origin` is the listener's (or one of `console.origins`), and
/// `Sec-Fetch-Site`, when the browser sends it, says same-origin.
fn same_origin(console: &Console, headers: &HeaderMap) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(format!(
            "Sec-Fetch-Site is {:?}: the console's changes are accepted from its own page only",
            site.to_str().unwrap_or("(not text)")
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Err(
            "no Origin header: the console's changes are accepted from its own page only".into(),
        );
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let ok = if console.settings.origins.is_empty() {
        let scheme = if console.settings.secure {
            "https"
        } else {
            "http"
        };
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| origin == format!("{scheme}://{}", host.to_ascii_lowercase()))
    } else {
        console.settings.origins.contains(&origin)
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Origin {origin:?} is not the console's: its changes are accepted from its own page \
             only (behind a proxy, list the origin in console.origins)"
        ))
    }
}

fn cross_origin(why: String) -> Response<Body> {
    error(StatusCode::FORBIDDEN, "cross_origin", why)
}

fn no_session(code: &str, message: &str) -> Response<Body> {
    error(StatusCode::UNAUTHORIZED, code, message)
}

/// The session a request belongs to, its client as identified again now,
/// and the cookie's value; or the answer that refuses it. `changes`: the
/// request changes something, so it must come from the console's origin
/// and carry the CSRF token.
fn signed_in(
    api: &AdminApi,
    console: &Console,
    req: &Request<Incoming>,
    conn: &Conn,
    addr: IpAddr,
    changes: bool,
) -> Result<(Active, Arc<Client>, String), Response<Body>> {
    if changes {
        same_origin(console, req.headers()).map_err(|why| {
            tracing::warn!(addr = %addr, path = req.uri().path(), why, "console request refused: not from the console's origin");
            cross_origin(why)
        })?;
    }
    let Some(id) = cookie(req.headers(), console.cookie_name()) else {
        return Err(no_session(
            "no_session",
            "not signed in: sign in with a token",
        ));
    };
    let active = match console.sessions.get(id, Instant::now()) {
        Lookup::Active(a) => a,
        Lookup::Expired => {
            return Err(no_session(
                "session_expired",
                "the session has ended (console.idle_timeout or console.session_lifetime): \
                 sign in again",
            ));
        }
        Lookup::Unknown => {
            return Err(no_session(
                "no_session",
                "no such session (signed out, or the daemon restarted): sign in again",
            ));
        }
    };
    if changes {
        let presented = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !active.csrf_matches(presented) {
            tracing::warn!(client = %active.client, addr = %addr, path = req.uri().path(), "console request refused: no valid CSRF token");
            return Err(error(
                StatusCode::FORBIDDEN,
                "csrf",
                "the request lacks this session's CSRF token (X-CSRF-Token): reload the console",
            ));
        }
    }
    // The credential must still be good: a token withdrawn, expired or
    // removed from the clients list ends the session.
    let clients = api.clients.load();
    let client = match clients.identify_digest(
        active.digest.as_ref(),
        conn.certificate.as_deref(),
        api.daemon.now(),
    ) {
        Ok(c) if c.name == active.client => c,
        _ => {
            console.sessions.end(id);
            tracing::warn!(client = %active.client, addr = %addr, "console session ended: its credential is no longer valid");
            return Err(no_session(
                "session_ended",
                "the credential this session signed in with is no longer valid: sign in again",
            ));
        }
    };
    if !client.may_come_from(addr) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden_network",
            "this client's address is not among its networks",
        ));
    }
    Ok((active, client, id.to_owned()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    #[serde(default)]
    token: Option<String>,
}

#[derive(Serialize)]
struct ClientView<'a> {
    name: &'a str,
    role: &'a str,
}

#[derive(Serialize)]
struct SessionInfo<'a> {
    client: ClientView<'a>,
    csrf: &'a str,
    expires_at: String,
    idle_timeout_seconds: u64,
}

fn session_info(
    api: &AdminApi,
    console: &Console,
    active: &Active,
    client: &Client,
    cookie: Option<HeaderValue>,
) -> Response<Body> {
    let left = active.expires_at.saturating_duration_since(Instant::now());
    let mut r = json(
        StatusCode::OK,
        &SessionInfo {
            client: ClientView {
                name: &client.name,
                role: client.role.as_str(),
            },
            csrf: &active.csrf,
            expires_at: api.daemon.now().saturating_add(left).to_rfc3339(),
            idle_timeout_seconds: console.sessions.idle_timeout().as_secs(),
        },
    );
    if let Some(c) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `POST /console/api/session`: a token (or the connection's client
/// certificate) for a session. Counted by the failure limiter as a bearer
/// request is.
async fn sign_in(
    api: &AdminApi,
    console: &Console,
    req: Request<Incoming>,
    conn: &Conn,
    addr: IpAddr,
) -> Response<Body> {
    if let Err(why) = same_origin(console, req.headers()) {
        tracing::warn!(addr = %addr, why, "console sign-in refused: not from the console's origin");
        return cross_origin(why);
    }
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "sign in with a JSON body: {\"token\": \"...\"}",
        );
    }
    let body = match read_body(req, &api.limits).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: SignIn = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("invalid sign-in body: {e}; expected {{\"token\": \"...\"}}"),
            );
        }
    };
    let token = parsed.token.map(zeroize::Zeroizing::new);
    let presented = token.as_deref().map(|t| t.trim()).filter(|t| !t.is_empty());
    let client = match authenticate(api, presented, conn, addr, "/console/api/session") {
        Ok(c) => c,
        Err((_, r)) => return r,
    };
    if !client.may_come_from(addr) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden_network",
            "this client's address is not among its networks",
        );
    }
    if !client.role.allows(Permission::ReadKeys) {
        tracing::warn!(client = %client.name, role = client.role.as_str(), addr = %addr, "console sign-in refused for its role");
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the console is for operator and viewer clients; {} is a {}",
                client.name, client.role
            ),
        );
    }
    let id = random_token();
    let digest = presented.map(crate::access::TokenDigest::of);
    let active = console.sessions.create(
        &id,
        &client.name,
        digest,
        random_token().to_string(),
        Instant::now(),
    );
    tracing::info!(client = %client.name, role = client.role.as_str(), peer = %conn.peer, addr = %addr, "console sign-in");
    let cookie = console.cookie(&id, console.sessions.lifetime());
    session_info(api, console, &active, &client, Some(cookie))
}

#[derive(Serialize)]
struct TimelineBody {
    #[serde(flatten)]
    timeline: crate::lifecycle::timeline::Timeline,
    /// The last audit record this replica knows: the page reads the
    /// records after it once it has acted.
    audit_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
}

fn timeline(api: &AdminApi) -> Response<Body> {
    let Some(timeline) = api.daemon.timeline() else {
        return super::not_ready();
    };
    json(
        StatusCode::OK,
        &TimelineBody {
            timeline,
            audit_seq: api.daemon.last_event(),
            replica: api.daemon.replica(),
        },
    )
}

#[derive(Serialize)]
struct HealthBody {
    #[serde(flatten)]
    readiness: crate::api::Readiness,
    replica: Option<String>,
    shared_store: bool,
    leader: bool,
    lease_holder: Option<String>,
    lease_expires_in_seconds: Option<f64>,
    /// Why the lease could not be read, when it could not.
    lease_error: Option<String>,
    synced_seconds_ago: Option<f64>,
}

async fn health(api: &AdminApi) -> Response<Body> {
    let (shared_store, leader) = api.daemon.leadership();
    let (lease_holder, lease_expires_in_seconds, lease_error) =
        match api.daemon.lease_holder(LEASE_READ).await {
            Ok(Some(l)) => (Some(l.replica), Some(l.expires_in_ms as f64 / 1000.0), None),
            Ok(None) => (None, None, None),
            Err(e) => (None, None, Some(e)),
        };
    json(
        StatusCode::OK,
        &HealthBody {
            readiness: crate::http::public::readiness_of(&api.daemon),
            replica: api.daemon.replica(),
            shared_store,
            leader,
            lease_holder,
            lease_expires_in_seconds,
            lease_error,
            synced_seconds_ago: api.daemon.since_sync().map(|d| d.as_secs_f64()),
        },
    )
}

#[derive(Serialize)]
struct AuditPage {
    records: Vec<crate::audit::Record>,
}

/// `GET /console/api/audit?after=N&limit=M`: the records after `N`.
async fn audit(api: &AdminApi, req: &Request<Incoming>) -> Response<Body> {
    let number = |name: &str| super::query_param(req, name).map(str::parse::<u64>);
    let after = match number("after") {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "after must be a number",
            );
        }
    };
    let limit = match number("limit") {
        None => 50,
        Some(Ok(n)) if (1..=AUDIT_PAGE as u64).contains(&n) => n as usize,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("limit must be 1 to {AUDIT_PAGE}"),
            );
        }
    };
    match tokio::time::timeout(AUDIT_READ, api.daemon.events_since(after, limit)).await {
        Ok(Ok(records)) => json(StatusCode::OK, &AuditPage { records }),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unreachable",
            format!("the audit log cannot be read: {e}"),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unreachable",
            "the audit log did not answer in time",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(secure: bool, origins: &[&str]) -> Console {
        Console::new(Settings {
            enabled: true,
            secure,
            session_lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(900),
            origins: origins.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_listeners_own_origin_may_change_anything() {
        let c = console(false, &[]);
        let own = headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000"),
        ]);
        assert!(same_origin(&c, &own).is_ok());
        for bad in [
            vec![("host", "127.0.0.1:9000")],
            vec![("host", "127.0.0.1:9000"), ("origin", "null")],
            vec![
                ("host", "127.0.0.1:9000"),
                ("origin", "http://evil.example"),
            ],
            vec![
                ("host", "127.0.0.1:9000"),
                ("origin", "https://127.0.0.1:9000"),
            ],
            vec![
                ("host", "127.0.0.1:9000"),
                ("origin", "http://127.0.0.1:9001"),
            ],
            vec![
                ("host", "127.0.0.1:9000"),
                ("origin", "http://127.0.0.1:9000"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            assert!(same_origin(&c, &headers(&bad)).is_err(), "{bad:?}");
        }
        // Over TLS the scheme is https.
        let tls = console(true, &[]);
        let h = headers(&[("host", "keys:8443"), ("origin", "https://keys:8443")]);
        assert!(same_origin(&tls, &h).is_ok());
        // Behind a proxy: the configured origins, and only those.
        let proxied = console(false, &["https://keys.example.com"]);
        let h = headers(&[
            ("host", "10.0.0.5:9000"),
            ("origin", "https://keys.example.com"),
        ]);
        assert!(same_origin(&proxied, &h).is_ok());
        let h = headers(&[
            ("host", "10.0.0.5:9000"),
            ("origin", "http://10.0.0.5:9000"),
        ]);
        assert!(same_origin(&proxied, &h).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_strict_path_scoped_and_secure_over_tls() {
        let plain = console(false, &[]).cookie("abc", Duration::from_secs(3600));
        let plain = plain.to_str().unwrap();
        assert_eq!(
            plain,
            "jwksd_console=abc; Path=/console/; Max-Age=3600; HttpOnly; SameSite=Strict"
        );
        let tls = console(true, &[]).cookie("abc", Duration::from_secs(60));
        let tls = tls.to_str().unwrap();
        assert!(tls.starts_with("__Secure-jwksd_console=abc;"));
        assert!(tls.ends_with("; Secure"));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "a=1; jwksd_console=xyz; b=2")]);
        assert_eq!(cookie(&h, "jwksd_console"), Some("xyz"));
        let h = headers(&[("cookie", "xjwksd_console=1"), ("cookie", "jwksd_console=")]);
        assert_eq!(cookie(&h, "jwksd_console"), None);
    }

    #[test]
    fn origins_in_the_configuration_are_checked() {
        assert!(origin_problem("https://keys.example.com").is_none());
        assert!(origin_problem("http://127.0.0.1:9000/").is_none());
        for bad in [
            "keys.example.com",
            "ftp://keys",
            "https://",
            "https://keys/console",
            "https://user@keys",
        ] {
            assert!(origin_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn revoke_paths_name_one_kid() {
        assert_eq!(revoke_kid("keys/abc/revoke"), Some("abc"));
        assert_eq!(revoke_kid("keys//revoke"), None);
        assert_eq!(revoke_kid("keys/a/b/revoke"), None);
        assert_eq!(revoke_kid("rotate"), None);
    }

    #[test]
    fn every_asset_is_embedded_with_its_type() {
        assert_eq!(ASSETS.len(), etags().len());
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
        }
        let index = std::str::from_utf8(ASSETS[0].body).unwrap();
        // No inline script: the CSP would block it.
        assert!(!index.contains("<script>"));
        assert!(index.contains("console.js"));
    }
}

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
use crate::access::{Client, Clients, Permission};
use crate::http::auth::random_token;
use crate::http::{
    Body, Conn, bytes_response, error, json, method_not_allowed, not_found, read_body,
};

pub mod session;

use session::{Active, Lookup, Sessions, Use};

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

/// The console's state: its settings, the sessions signed in, and the
/// lease holder last read for the health panel.
pub struct Console {
    settings: Settings,
    sessions: Arc<Sessions>,
    lease: tokio::sync::Mutex<Option<(Instant, LeaseRead)>>,
}

/// The leader lease as the health panel shows it.
type LeaseRead = Result<Option<crate::store::LeaseHolder>, ()>;

/// How long a read of the lease holder serves every page: health polls
/// must not queue on the database connection that commits use.
const LEASE_CACHE: Duration = Duration::from_secs(2);

impl Console {
    pub fn new(settings: Settings) -> Console {
        let sessions = Arc::new(Sessions::new(
            settings.session_lifetime,
            settings.idle_timeout,
        ));
        Console {
            settings,
            sessions,
            lease: tokio::sync::Mutex::new(None),
        }
    }

    /// Ends the sessions whose credential no longer identifies their
    /// client, or whose client may no longer read the console (after the
    /// clients list is reloaded): their streams close at once.
    pub fn revalidate(&self, clients: &Clients, now: crate::time::Timestamp) {
        let ended = self.sessions.retain_valid(|name, digest, certificate| {
            clients
                .identify_digest(digest, certificate, now)
                .is_ok_and(|c| c.name == name && c.role.allows(Permission::ReadKeys))
        });
        if ended > 0 {
            tracing::info!(
                sessions = ended,
                "console sessions ended: their credential is no longer valid"
            );
        }
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
    // Any API request must come from the console's own page: a page of
    // another origin on the same site (another port) carries the cookie.
    if let Err(why) = same_site_fetch(req.headers()) {
        tracing::warn!(addr = %addr, path = req.uri().path(), why, "console request refused: not from the console's origin");
        if rest == "session" && method == Method::POST {
            api.daemon.metrics().console_sign_in(false);
        }
        return cross_origin(why);
    }
    if rest == "session" && method == Method::POST {
        let r = sign_in(api, console, req, conn, addr).await;
        api.daemon
            .metrics()
            .console_sign_in(r.status().is_success());
        return r;
    }
    let changes = method != Method::GET;
    let (active, id) = match session_of(console, &req, addr, changes) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if rest == "session" && method == Method::DELETE {
        // Signed out as soon as the page proves it is the session's own,
        // whatever has become of its credential.
        console.sessions.end(&id);
        tracing::info!(client = %active.client, addr = %addr, "console sign-out");
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut()
            .insert(header::SET_COOKIE, console.cookie("", Duration::ZERO));
        return r;
    }
    let client = match identify(api, console, &active, &id, conn, addr) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let needs = match rest {
        "rotate" => Permission::Change,
        "audit" | "events" => Permission::ReadAudit,
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
        ("session", _) => session_info(api, console, &active, &client, None),
        ("timeline", _) => timeline(api),
        ("health", _) => health(api, console).await,
        ("audit", _) => audit(api, &req).await,
        ("events", _) => {
            let Ok(hold) = Arc::clone(&active.streams).try_acquire_owned() else {
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_streams",
                    format!(
                        "this session already has {} event streams open: close another tab \
                         of the console",
                        session::STREAMS_PER_SESSION
                    ),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return r;
            };
            let still = StillSignedIn {
                sessions: Arc::clone(&console.sessions),
                clients: Arc::clone(&api.clients),
                daemon: api.daemon.clone(),
                id: id.clone(),
                client: client.name.clone(),
            };
            events::stream(
                &api.daemon,
                &req,
                &client,
                peer,
                addr,
                events::Scope {
                    all: true,
                    ends: Some(active.ended.clone()),
                    until: Some(tokio::time::Instant::from_std(active.ends_at)),
                    still_allowed: Some(Box::new(move || still.check())),
                    hold: Some(hold),
                },
            )
        }
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

/// Whether a console stream's session still stands, asked as it runs: its
/// credential still names its client (a token expiring on time, a client
/// list reloaded), and it has not timed out.
struct StillSignedIn {
    sessions: Arc<Sessions>,
    clients: Arc<arc_swap::ArcSwap<Clients>>,
    daemon: crate::daemon::Handle,
    id: String,
    client: String,
}

impl StillSignedIn {
    fn check(&self) -> bool {
        let Lookup::Active(a) = self.sessions.get(&self.id, Instant::now(), Use::Background) else {
            return false;
        };
        let good = self
            .clients
            .load()
            .identify_digest(
                a.digest.as_ref(),
                a.certificate.as_deref(),
                self.daemon.now(),
            )
            .is_ok_and(|c| c.name == self.client && c.role.allows(Permission::ReadAudit));
        if !good {
            self.sessions.end(&self.id);
        }
        good
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

/// The values of cookie `name` in the request's `Cookie` headers: all of
/// them, since a page of another port of the host may have set one of the
/// same name to shadow ours.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
}

/// `Sec-Fetch-Site`, when the browser sends it, must say the request
/// comes from the console's own origin.
fn same_site_fetch(headers: &HeaderMap) -> Result<(), String> {
    match headers.get("sec-fetch-site") {
        Some(site) if site.as_bytes() != b"same-origin" => Err(format!(
            "Sec-Fetch-Site is {:?}: the console's API answers its own page only",
            site.to_str().unwrap_or("(not text)")
        )),
        _ => Ok(()),
    }
}

/// Whether a state-changing request comes from the console's own page:
/// its `Origin` is the listener's (or one of `console.origins`), and
/// `Sec-Fetch-Site`, when the browser sends it, says same-origin.
fn same_origin(console: &Console, headers: &HeaderMap) -> Result<(), String> {
    same_site_fetch(headers)?;
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

/// The session a request belongs to, and the cookie's value; or the
/// answer that refuses it. `changes`: the request changes something, so
/// it must come from the console's origin and carry the CSRF token. The
/// page marks its background refreshes (`X-Console-Background: 1`), which
/// do not push the idle end back; the event stream never does.
fn session_of(
    console: &Console,
    req: &Request<Incoming>,
    addr: IpAddr,
    changes: bool,
) -> Result<(Active, String), Response<Body>> {
    if changes {
        same_origin(console, req.headers()).map_err(|why| {
            tracing::warn!(addr = %addr, path = req.uri().path(), why, "console request refused: not from the console's origin");
            cross_origin(why)
        })?;
    }
    let background = req.uri().path().ends_with("/events")
        || req
            .headers()
            .get("x-console-background")
            .is_some_and(|v| v.as_bytes() == b"1");
    let used = if background {
        Use::Background
    } else {
        Use::User
    };
    let now = Instant::now();
    let mut expired = false;
    let mut revoked = false;
    let mut found = None;
    for id in cookies(req.headers(), console.cookie_name()) {
        match console.sessions.get(id, now, used) {
            Lookup::Active(a) => {
                found = Some((a, id.to_owned()));
                break;
            }
            Lookup::Expired => expired = true,
            Lookup::Revoked => revoked = true,
            Lookup::Unknown => {}
        }
    }
    let Some((active, id)) = found else {
        return Err(if revoked {
            no_session(
                "session_ended",
                "the credential this session signed in with is no longer valid: sign in again",
            )
        } else if expired {
            no_session(
                "session_expired",
                "the session has ended (console.idle_timeout or console.session_lifetime): \
                 sign in again",
            )
        } else {
            no_session(
                "no_session",
                "not signed in, or no such session (signed out, or the daemon restarted): sign \
                 in with a token",
            )
        });
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
    Ok((active, id))
}

/// The session's client, identified again now from the credential it
/// signed in with (a token withdrawn, expired or removed from the clients
/// list ends the session), or the answer that refuses it.
fn identify(
    api: &AdminApi,
    console: &Console,
    active: &Active,
    id: &str,
    conn: &Conn,
    addr: IpAddr,
) -> Result<Arc<Client>, Response<Body>> {
    let clients = api.clients.load();
    let certificate = conn
        .certificate
        .as_deref()
        .or(active.certificate.as_deref());
    let client = match clients.identify_digest(
        active.digest.as_ref(),
        certificate,
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
    Ok(client)
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
    let headers = req.headers().clone();
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
    if presented.is_none() && conn.certificate.is_none() {
        // Nothing presented: not a failed authentication to count.
        return error(
            StatusCode::BAD_REQUEST,
            "no_credential",
            "sign in with a token (or over mutual TLS with a client certificate)",
        );
    }
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
    // A session this browser still had ends: one sign-in, one session.
    for old in cookies(&headers, console.cookie_name()) {
        console.sessions.end(old);
    }
    let id = random_token();
    let digest = presented.map(crate::access::TokenDigest::of);
    let active = console.sessions.create(
        &id,
        &client.name,
        (digest, conn.certificate.clone()),
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

/// The lease holder, read at most every [`LEASE_CACHE`].
async fn lease(api: &AdminApi, console: &Console) -> LeaseRead {
    let mut cached = console.lease.lock().await;
    if let Some((at, read)) = &*cached
        && at.elapsed() < LEASE_CACHE
    {
        return read.clone();
    }
    let read = api.daemon.lease_holder(LEASE_READ).await.map_err(|e| {
        // The details in the log only, as /readyz keeps them.
        tracing::warn!(error = %e, "console: the leader lease cannot be read");
    });
    *cached = Some((Instant::now(), read.clone()));
    read
}

async fn health(api: &AdminApi, console: &Console) -> Response<Body> {
    let (shared_store, leader) = api.daemon.leadership();
    let (lease_holder, lease_expires_in_seconds, lease_error) = match lease(api, console).await {
        Ok(Some(l)) => (Some(l.replica), Some(l.expires_in_ms as f64 / 1000.0), None),
        Ok(None) => (None, None, None),
        Err(()) => (
            None,
            None,
            Some("the store did not answer: see this replica's log".to_owned()),
        ),
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
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "console: the audit log cannot be read");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unreachable",
                "the audit log cannot be read: see this replica's log",
            )
        }
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
    fn cookies_are_found_by_exact_name_every_one() {
        let h = headers(&[("cookie", "a=1; jwksd_console=xyz; b=2")]);
        assert_eq!(cookies(&h, "jwksd_console").collect::<Vec<_>>(), ["xyz"]);
        let h = headers(&[("cookie", "xjwksd_console=1"), ("cookie", "jwksd_console=")]);
        assert_eq!(cookies(&h, "jwksd_console").count(), 0);
        // A shadowing cookie first, ours after: both are tried.
        let h = headers(&[("cookie", "jwksd_console=planted; jwksd_console=real")]);
        assert_eq!(
            cookies(&h, "jwksd_console").collect::<Vec<_>>(),
            ["planted", "real"]
        );
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

//! The admin listener: the signing key and signing for auth servers
//! (signer role), the key list for viewers, key management for operators
//! (operator role), and `/metrics` (no authentication: it holds no
//! secrets). Who a request is comes from [`crate::access`].

// Helpers return the finished error response as their `Err`: one per
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::api::{KeysResponse, Revoked, RotateRequest, RotateResponse, TooEarly};
pub mod console;
mod events;
mod refusal;
mod sign;

use crate::access::proxy::{BadForwardedFor, client_address};
use crate::access::{
    Client, Clients, Denied, FailureLimiter, Permission, Refused, SignRates, TokenDigest, Who,
};
use crate::daemon::{ActiveKey, CallError, CommandError, Export, Handle, NotCurrent, Snapshot};
use crate::http::{
    Body, Conn, Limits, bytes_response, cache_control, error, if_none_match, json,
    method_not_allowed, not_found, read_body, signing_key_cache_control,
};
use crate::keys::{Alg, Kid};
use crate::lifecycle::{RevokeError, RotateError};
use ipnet::IpNet;
use refusal::no_active_key;
pub use refusal::{Refusal, choose_alg};
pub use sign::{SignRules, parse_sign_request};

use crate::http::routes::{self, Endpoint, Listener};

/// An admin route of [`routes::ROUTES`], with its parameter.
enum Route {
    Metrics,
    ActiveKey,
    Sign,
    Keys,
    Rotate,
    Revoke(String),
    Events,
}

/// Failed authentications a client (or an address) may make per minute
/// before it gets 429: generous for typos, ruinous for guessing 256-bit
/// tokens.
pub const AUTH_FAILURES_PER_MINUTE: usize = 30;

pub struct AdminApi {
    daemon: Handle,
    /// The clients in force, swapped by `reload` when their file changes.
    clients: Arc<ArcSwap<Clients>>,
    allow: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
    failures: FailureLimiter<Who>,
    sign_rates: SignRates,
    limits: Limits,
    /// `Cache-Control` of `/v1/keys/active` for the configured max-age,
    /// rendered once: the usual case, served without formatting.
    signing_key_cache_control: HeaderValue,
    /// The operator console at `/console/`; `None` when disabled.
    console: Option<console::Console>,
}

impl AdminApi {
    pub fn new(
        daemon: Handle,
        clients: Arc<ArcSwap<Clients>>,
        allow: Vec<IpNet>,
        trusted_proxies: Vec<IpNet>,
        limits: Limits,
        console: console::Settings,
    ) -> AdminApi {
        let signing_key_cache_control =
            cache_control("private", daemon.policy().signing_key_cache_max_age);
        AdminApi {
            daemon,
            clients,
            allow,
            trusted_proxies,
            failures: FailureLimiter::new(AUTH_FAILURES_PER_MINUTE, Duration::from_secs(60)),
            sign_rates: SignRates::default(),
            limits,
            signing_key_cache_control,
            console: console.enabled.then(|| console::Console::new(console)),
        }
    }

    /// `Cache-Control` of `/v1/keys/active` now, for a key whose record
    /// allows a max-age of `served` here.
    fn signing_key_cache_control(&self, served: Duration) -> HeaderValue {
        let max_age = self.daemon.signing_key_max_age().map(|m| m.min(served));
        if max_age == Some(self.daemon.policy().signing_key_cache_max_age) {
            return self.signing_key_cache_control.clone();
        }
        signing_key_cache_control(max_age)
    }

    fn count(&self, status: &str) {
        self.daemon
            .metrics()
            .auth_failures
            .get_or_create(&crate::metrics::StatusLabels {
                status: status.into(),
            })
            .inc();
    }

    /// Forgets the sign rates of clients no longer configured, and ends
    /// the console sessions whose credential no longer identifies their
    /// client (after a reload).
    pub fn forget_removed_clients(&self) {
        let clients = self.clients.load();
        self.sign_rates.retain(|name| clients.get(name).is_some());
        if let Some(c) = &self.console {
            c.revalidate(&clients, self.daemon.now());
        }
    }
}

/// The token of `Authorization: Bearer <token>`; `None` without one (no
/// header, another scheme, an empty token).
fn bearer(value: Option<&HeaderValue>) -> Option<&str> {
    let (scheme, token) = value?.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What each route needs of a client's role.
fn permission(route: &Route) -> Option<Permission> {
    match route {
        Route::Metrics => None,
        Route::Keys => Some(Permission::ReadKeys),
        Route::ActiveKey | Route::Sign => Some(Permission::UseKey),
        Route::Rotate | Route::Revoke(_) => Some(Permission::Change),
        Route::Events => Some(Permission::FollowEvents),
    }
}

pub async fn handle(api: Arc<AdminApi>, req: Request<Incoming>, conn: Conn) -> Response<Body> {
    if console::is_console(req.uri().path()) {
        return match admitted(&api, &req, conn.peer) {
            Ok(addr) => console::handle(api, req, conn, addr).await,
            Err(r) => r,
        };
    }
    let Some((route, param)) = routes::find(Listener::Admin, req.uri().path()) else {
        return not_found();
    };
    let (allow, allowed) = (route.allow, route.allows(req.method()));
    let route = match (route.endpoint, param) {
        (Endpoint::Metrics, _) => Route::Metrics,
        (Endpoint::ActiveKey, _) => Route::ActiveKey,
        (Endpoint::Sign, _) => Route::Sign,
        (Endpoint::Keys, _) => Route::Keys,
        (Endpoint::Rotate, _) => Route::Rotate,
        (Endpoint::Revoke, Some(kid)) => Route::Revoke(kid.to_owned()),
        (Endpoint::Events, _) => Route::Events,
        (Endpoint::Revoke, None) | (Endpoint::Jwks | Endpoint::Healthz | Endpoint::Readyz, _) => {
            return not_found();
        }
    };
    let peer = conn.peer;
    let addr = match admitted(&api, &req, peer) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !allowed {
        return method_not_allowed(allow);
    }
    let Some(needs) = permission(&route) else {
        return metrics(&api.daemon);
    };
    let is_sign = matches!(route, Route::Sign);
    let presented = bearer(req.headers().get(header::AUTHORIZATION));
    let client = match authenticate(&api, presented, &conn, addr, req.uri().path()) {
        Ok(c) => c,
        Err((name, r)) => {
            if is_sign {
                api.daemon.metrics().client_sign_result(&name, "refused");
            }
            return r;
        }
    };
    let name = client.name.as_str();
    if !client.may_come_from(addr) {
        api.count("403");
        tracing::warn!(peer = %peer, addr = %addr, client = name, "admin request from a network not among the client's");
        if is_sign {
            api.daemon.metrics().client_sign_result(name, "refused");
        }
        return error(
            StatusCode::FORBIDDEN,
            "forbidden_network",
            "this client's address is not among its networks",
        );
    }
    if !client.role.allows(needs) {
        api.count("403");
        tracing::warn!(peer = %peer, addr = %addr, client = name, role = client.role.as_str(), path = req.uri().path(), "admin request refused for its role");
        if is_sign {
            api.daemon.metrics().client_sign_result(name, "refused");
        }
        let needed = match needs {
            Permission::ReadKeys => "a viewer or operator client",
            Permission::UseKey => "a signer or operator client",
            Permission::Change => "an operator client",
            Permission::FollowEvents => "a signer or operator client",
            Permission::ReadAudit => "a viewer or operator client",
        };
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this endpoint needs {needed}; {name} is a {}", client.role),
        );
    }
    if matches!(route, Route::ActiveKey | Route::Sign)
        && let Some(why) = api.daemon.not_current()
    {
        let message = match why {
            NotCurrent::NotSynced(d) => format!(
                "this replica has not read the shared key-ring state for {} s ({}): it cannot \
                 confirm its keys are current; use another replica",
                d.as_secs(),
                match api.daemon.sync_failure() {
                    Some(f) if !f.unreachable => "the state cannot be read: see this replica's log",
                    _ => "the store does not answer",
                }
            ),
            NotCurrent::CommitInFlight(d) => format!(
                "a commit to the key store has been in flight for {} s: the keys it may change \
                 are not handed out or used until it finishes; check the store (disk or database)",
                d.as_secs()
            ),
        };
        if is_sign {
            api.daemon.metrics().client_sign_result(name, "failed");
        }
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unreachable",
            message,
        );
    }
    match route {
        Route::ActiveKey => active_key(&api, &req, &client, peer, addr).await,
        Route::Sign => {
            let r = match client
                .sign_rate_limit
                .map(|limit| api.sign_rates.take(name, limit, std::time::Instant::now()))
            {
                Some(Err(wait)) => rate_limited(&client, wait),
                _ => sign::sign(&api.daemon, &api.limits, req, &client).await,
            };
            let result = match r.status() {
                s if s.is_success() => "ok",
                s if s.is_client_error() => "refused",
                _ => "failed",
            };
            api.daemon.metrics().client_sign_result(name, result);
            r
        }
        Route::Keys => keys(&api.daemon),
        Route::Rotate => rotate(&api, req, &client, peer, addr).await,
        Route::Revoke(kid) => revoke(&api, req, &kid, &client, peer, addr).await,
        Route::Events => events::stream(
            &api.daemon,
            &req,
            &client,
            peer,
            addr,
            events::Scope::signers(),
        ),
        Route::Metrics => not_found(),
    }
}

/// The client address of a request (the forwarded one behind a trusted
/// proxy), or the answer that refuses it: a bad `X-Forwarded-For`, or an
/// address outside `admin.allow`.
fn admitted(
    api: &AdminApi,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<IpAddr, Response<Body>> {
    // The client address: the forwarded one behind a trusted proxy.
    let forwarded: Result<Vec<&str>, _> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str())
        .collect();
    let addr = match forwarded
        .map_err(|_| BadForwardedFor("(not text)".into()))
        .and_then(|f| client_address(peer.ip(), f, &api.trusted_proxies))
    {
        Ok(a) => a,
        Err(BadForwardedFor(entry)) => {
            tracing::warn!(peer = %peer, client = "unknown", entry, "X-Forwarded-For from a trusted proxy is not a list of addresses");
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_forwarded_for",
                format!(
                    "X-Forwarded-For from a trusted proxy holds {entry:?}, not an address: fix \
                     the proxy's configuration"
                ),
            ));
        }
    };
    if !api.allow.is_empty() && !api.allow.iter().any(|n| n.contains(&addr)) {
        api.count("403");
        tracing::warn!(peer = %peer, addr = %addr, client = "unknown", "admin request from a network not in admin.allow");
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden_network",
            "this client's address is not allowed on the admin listener",
        ));
    }
    Ok(addr)
}

/// The client a request is, or the answer that refuses it (with the name
/// its failure is counted under: a client's, or `unknown`). Failures are
/// counted against a stale (expired, withdrawn) token itself, or the
/// client a certificate named, else the address; a request is held back by
/// the count of what it can be known as before its token is looked at: its
/// certificate's client, else its address, and its token's own count
/// (docs/security.md, "The failure limit").
fn authenticate(
    api: &AdminApi,
    presented: Option<&str>,
    conn: &Conn,
    addr: IpAddr,
    path: &str,
) -> Result<Arc<Client>, (String, Response<Body>)> {
    let clients = api.clients.load();
    let certificate = conn.certificate.as_deref();
    let now = std::time::Instant::now();
    let held_by = match clients.named_by_certificate(certificate) {
        Some(c) => Who::Client(c.name.clone()),
        None => Who::addr(addr),
    };
    // A stale token used over and over is held back by its own count.
    let digest = presented.map(TokenDigest::of);
    let stale = digest.map(Who::Token);
    let limited = api.failures.is_limited(&held_by, now)
        || stale
            .as_ref()
            .is_some_and(|s| api.failures.is_limited(s, now));
    if limited {
        api.count("429");
        let name = match &held_by {
            Who::Client(n) => n.clone(),
            Who::Addr(_) | Who::Token(_) => "unknown".to_owned(),
        };
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed authentications from this client; try again in a minute",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return Err((name, r));
    }
    match clients.identify_digest(digest.as_ref(), certificate, api.daemon.now()) {
        Ok(c) => Ok(c),
        Err(Refused { client, why }) => {
            api.count("401");
            let name = client
                .as_ref()
                .map_or("unknown".to_owned(), |c| c.name.clone());
            let key = match (why, &client, stale) {
                (Denied::ExpiredToken | Denied::WithdrawnToken, _, Some(token)) => token,
                (_, Some(c), _) => Who::Client(c.name.clone()),
                (_, None, _) => Who::addr(addr),
            };
            api.daemon.metrics().client_auth_failure(&name);
            let n = api.failures.record_failure(key, now);
            if n > AUTH_FAILURES_PER_MINUTE {
                tracing::warn!(peer = %conn.peer, addr = %addr, client = name, failures = n, "rate limiting a client after repeated failed authentications");
            } else {
                tracing::warn!(peer = %conn.peer, addr = %addr, client = name, reason = why.message(), path, "admin request without a valid token");
            }
            Err((name, unauthorized(why)))
        }
    }
}

fn unauthorized(why: Denied) -> Response<Body> {
    let challenge = match why {
        Denied::Missing => "Bearer realm=\"jwksd\"",
        _ => "Bearer realm=\"jwksd\", error=\"invalid_token\"",
    };
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", why.message());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// The `403` of an algorithm outside a client's `algorithms`.
fn forbidden_alg(client: &Client, alg: Alg) -> Response<Body> {
    let allowed: Vec<&str> = client
        .algorithms
        .iter()
        .flatten()
        .map(|a| a.as_str())
        .collect();
    error(
        StatusCode::FORBIDDEN,
        "forbidden_alg",
        format!(
            "client {} may use {} only, not {alg}",
            client.name,
            allowed.join(", ")
        ),
    )
}

/// The `429` of a client past its `sign_rate_limit`.
fn rate_limited(client: &Client, wait: Duration) -> Response<Body> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "client {} is past its sign_rate_limit ({}); retry in {secs} s",
            client.name,
            client
                .sign_rate_limit
                .map(|l| l.to_string())
                .unwrap_or_default()
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn not_ready() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "no keys yet: the store is loading or the first keys are being generated",
    )
}

fn snapshot_or_503(daemon: &Handle) -> Result<Arc<Snapshot>, Response<Body>> {
    Option::clone(&daemon.snapshot()).ok_or_else(not_ready)
}

fn pick_alg(daemon: &Handle, given: Option<&str>) -> Result<Alg, Response<Body>> {
    choose_alg(&daemon.policy().algorithms, given).map_err(Refusal::response)
}

fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

async fn active_key(
    api: &AdminApi,
    req: &Request<Incoming>,
    client: &Client,
    peer: SocketAddr,
    addr: IpAddr,
) -> Response<Body> {
    if api.daemon.snapshot().is_none() {
        return not_ready();
    }
    let alg = match pick_alg(&api.daemon, query_param(req, "alg")) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !client.may_use(alg) {
        tracing::warn!(client = %client.name, addr = %addr, alg = %alg, "active key refused: the algorithm is not among the client's");
        return forbidden_alg(client, alg);
    }
    let Some(active) = api.daemon.active_key(alg).await else {
        return no_active_key(alg);
    };
    let mut r = if if_none_match(req.headers().get(header::IF_NONE_MATCH), &active.etag) {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        match active.export {
            Export::PrivateKey => {
                tracing::info!(client = %client.name, role = client.role.as_str(), peer = %peer, addr = %addr, alg = %alg, kid = %active.kid, "signing key pulled");
            }
            Export::PublicOnly => {
                tracing::debug!(client = %client.name, role = client.role.as_str(), peer = %peer, addr = %addr, alg = %alg, kid = %active.kid, "active key read (sign-only)");
            }
        }
        // No copy: the body sent is the snapshot's own zeroizing buffer,
        // kept alive by the response and wiped when the snapshot and every
        // response that holds it are dropped.
        bytes_response(
            StatusCode::OK,
            Bytes::from_owner(ActiveBody(Arc::clone(&active))),
        )
    };
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        api.signing_key_cache_control(active.served.signing_key_cache_max_age()),
    );
    if let Ok(v) = HeaderValue::from_str(&active.etag) {
        h.insert(header::ETAG, v);
    }
    r
}

/// The `/v1/keys/active` body of one active key, lent to hyper.
struct ActiveBody(Arc<ActiveKey>);

impl AsRef<[u8]> for ActiveBody {
    fn as_ref(&self) -> &[u8] {
        &self.0.response
    }
}

fn keys(daemon: &Handle) -> Response<Body> {
    let snap = match snapshot_or_503(daemon) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut r = json(
        StatusCode::OK,
        &KeysResponse {
            version: snap.state.version,
            keys: snap
                .state
                .keys
                .iter()
                .chain(snap.state.history.iter().rev())
                .map(Cow::Borrowed)
                .collect(),
            upcoming: Cow::Borrowed(&snap.upcoming),
        },
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Parses a `/v1/rotate` body (empty means every algorithm, not forced).
pub fn parse_rotate_request(
    body: &[u8],
    algorithms: &[Alg],
) -> Result<(Option<Alg>, bool), Refusal> {
    let parsed: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("invalid request body: {e}"),
            )
        })?
    };
    let alg = match parsed.alg.as_deref() {
        None => None,
        Some(s) => Some(choose_alg(algorithms, Some(s))?),
    };
    Ok((alg, parsed.force))
}

/// The answer to an operator command that got none from the scheduler, or
/// its refusal.
fn call_error(e: CallError) -> Response<Body> {
    match e {
        CallError::NotRunning => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the scheduler is not running",
        ),
        CallError::NoAnswer => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the scheduler did not answer in time; see the log",
        ),
        CallError::Refused(e) => command_error(e),
    }
}

async fn rotate(
    api: &AdminApi,
    req: Request<Incoming>,
    client: &Client,
    peer: SocketAddr,
    addr: IpAddr,
) -> Response<Body> {
    let body = match read_body(req, &api.limits).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (alg, force) = match parse_rotate_request(&body, &api.daemon.policy().algorithms) {
        Ok(p) => p,
        Err(r) => return r.response(),
    };
    tracing::info!(client = %client.name, role = client.role.as_str(), peer = %peer, addr = %addr, alg = ?alg, force, "rotation requested");
    match api.daemon.rotate(alg, force, actor_of(client)).await {
        Ok(rotated) => json(StatusCode::OK, &RotateResponse { rotated }),
        Err(e) => call_error(e),
    }
}

/// The client as the audit log names it.
fn actor_of(client: &Client) -> crate::audit::Actor {
    crate::audit::Actor::client(&client.name, client.role.as_str())
}

fn command_error(e: CommandError) -> Response<Body> {
    let code = e.code();
    match e {
        CommandError::Rotate(RotateError::TooEarly { earliest, algs }) => {
            let msg = RotateError::TooEarly {
                earliest,
                algs: algs.clone(),
            }
            .to_string();
            let mut r = json(
                StatusCode::CONFLICT,
                &TooEarly {
                    error: msg,
                    code: code.into(),
                    earliest_safe_rotation: earliest.to_rfc3339(),
                    algs,
                },
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        e => {
            let status = match &e {
                CommandError::Rotate(RotateError::NotConfigured(_)) => StatusCode::BAD_REQUEST,
                CommandError::Revoke(RevokeError::Unknown(_)) => StatusCode::NOT_FOUND,
                CommandError::Rotate(RotateError::TooManyPublished { .. })
                | CommandError::Revoke(RevokeError::AlreadyEnded { .. }) => StatusCode::CONFLICT,
                // Not ready, or the store failed (the scheduler says why
                // the read fails, as `Failed`).
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            match e {
                CommandError::Failed(msg) => error(status, code, msg),
                e => error(status, code, e),
            }
        }
    }
}

async fn revoke(
    api: &AdminApi,
    req: Request<Incoming>,
    kid: &str,
    client: &Client,
    peer: SocketAddr,
    addr: IpAddr,
) -> Response<Body> {
    let kid: Kid = match kid.parse() {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_kid", e),
    };
    // The body is not used, but must stay within the limits.
    if let Err(r) = read_body(req, &api.limits).await {
        return r;
    }
    tracing::warn!(client = %client.name, role = client.role.as_str(), peer = %peer, addr = %addr, kid = %kid, "revocation requested");
    match api.daemon.revoke(kid, actor_of(client)).await {
        Ok(revoked) => json::<Revoked>(StatusCode::OK, &revoked),
        Err(e) => call_error(e),
    }
}

fn metrics(daemon: &Handle) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(daemon.encode_metrics())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::Metrics::CONTENT_TYPE),
    );
    r
}

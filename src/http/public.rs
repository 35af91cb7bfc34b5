//! The public listener: `/.well-known/jwks.json` (with CORS), `/healthz`,
//! `/readyz` ([`crate::http::routes`]). No authentication; nothing here is
//! secret.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::api::{Health, Readiness};
use crate::daemon::Handle;
use crate::http::cors::Cors;
use crate::http::routes::{self, Endpoint, Listener};
use crate::http::{
    Body, bytes_response, cache_control, error, if_none_match, json, method_not_allowed, not_found,
};
use crate::lifecycle::readiness::overdue_rotations;

pub use crate::http::routes::JWKS_PATH;

/// The public listener's state: the daemon handle, the JWKS
/// `Cache-Control`, rendered once (it only depends on the configuration),
/// and its CORS rule.
pub struct PublicApi {
    daemon: Handle,
    jwks_cache_control: HeaderValue,
    cors: Cors,
}

impl PublicApi {
    pub fn new(daemon: Handle, cors: Cors) -> PublicApi {
        let jwks_cache_control = cache_control("public", daemon.policy().jwks_cache_max_age);
        PublicApi {
            daemon,
            jwks_cache_control,
            cors,
        }
    }
}

pub async fn handle(api: Arc<PublicApi>, req: Request<Incoming>) -> Response<Body> {
    let Some((route, _)) = routes::find(Listener::Public, req.uri().path()) else {
        return not_found();
    };
    if !route.allows(req.method()) {
        return method_not_allowed(route.allow);
    }
    match route.endpoint {
        Endpoint::Jwks if req.method() == Method::OPTIONS => preflight(&api, &req, route.allow),
        Endpoint::Jwks => jwks(&api, &req),
        Endpoint::Healthz => json(
            StatusCode::OK,
            &Health {
                status: "alive".into(),
            },
        ),
        Endpoint::Readyz => readiness(&api.daemon),
        Endpoint::Metrics
        | Endpoint::ActiveKey
        | Endpoint::Sign
        | Endpoint::Keys
        | Endpoint::Rotate
        | Endpoint::Revoke
        | Endpoint::Events => not_found(),
    }
}

/// `OPTIONS` on the JWK Set: 204 with `Allow`, and the CORS preflight
/// headers when the request's origin may read it.
fn preflight(api: &PublicApi, req: &Request<Incoming>, allow: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    api.cors.preflight(req.headers().get(header::ORIGIN), h);
    r
}

fn jwks(api: &PublicApi, req: &Request<Incoming>) -> Response<Body> {
    let mut resp = jwks_answer(api, req);
    api.cors
        .response(req.headers().get(header::ORIGIN), resp.headers_mut());
    resp
}

fn jwks_answer(api: &PublicApi, req: &Request<Incoming>) -> Response<Body> {
    let guard = api.daemon.snapshot();
    let Some(snap) = guard.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no keys yet: the store is loading or the first keys are being generated",
        );
    };
    let mut resp = if if_none_match(req.headers().get(header::IF_NONE_MATCH), &snap.jwks_etag) {
        api.daemon.metrics().jwks_304.inc();
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        api.daemon.metrics().jwks_200.inc();
        bytes_response(StatusCode::OK, snap.jwks_body.clone())
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, snap.jwks_etag_header.clone());
    h.insert(header::CACHE_CONTROL, api.jwks_cache_control.clone());
    resp
}

fn readiness(daemon: &Handle) -> Response<Body> {
    let body = readiness_of(daemon);
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = json(status, &body);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether this replica is ready, and why not: `/readyz`'s body, and the
/// console's health panel.
pub fn readiness_of(daemon: &Handle) -> Readiness {
    let mut reasons = Vec::new();
    let guard = daemon.snapshot();
    match guard.as_ref() {
        None => reasons.push("no keys yet: store loading or first keys being generated".to_owned()),
        Some(s) => {
            for alg in s.missing_active() {
                reasons.push(format!("{alg} has no active key"));
            }
            let failure = daemon.sync_failure();
            if let Some(f) = &failure
                && !f.unreachable
            {
                // Details only in the log: this listener is public.
                reasons.push(
                    "this replica cannot read the shared key-ring state (see its log): it does \
                     not lead, and stops signing once its freshness window is over"
                        .to_owned(),
                );
            }
            if let Some(why) = daemon.not_current() {
                reasons.push(why.to_string());
            }
            // The last known keys are served while they are still the
            // right ones: until a scheduled rotation is overdue.
            if failure.is_some() {
                let now = daemon.now();
                for u in overdue_rotations(&s.upcoming, now) {
                    reasons.push(format!(
                        "shared state not current and the {} rotation due at {} is overdue",
                        u.alg, u.at
                    ));
                }
            }
        }
    }
    if !daemon.scheduler_running() {
        reasons.push("scheduler not running".to_owned());
    }
    let token_available = daemon.token_available();
    if token_available == Some(false) {
        // Details only in the log: this listener is public.
        reasons.push(
            "token_unavailable: the PKCS#11 token does not answer (see the log); signing with \
             its keys fails until it does, and jwksd reopens it every second"
                .to_owned(),
        );
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons,
        // A failing rotation does not make jwksd unready while the current
        // keys still serve; it is reported here and in the metrics.
        lifecycle_failing: daemon.lifecycle_failing(),
        store_reachable: daemon.store_reachable(),
        token_available,
    }
}

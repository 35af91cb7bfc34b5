//! The route table of both listeners: the one list the routers dispatch on
//! and `docs/openapi.yaml` is checked against (`tests/openapi.rs`), so that
//! the two cannot drift.
//!
//! A path is written as in OpenAPI: `{name}` stands for one non-empty path
//! segment, handed to the endpoint.

/// Which listener serves a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The JWK Set and health checks; no authentication.
    Public,
    /// Signing key, signing, key management, metrics.
    Admin,
}

/// What a route does: the routers' `match` on it is exhaustive, so a route
/// added here must be handled there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Jwks,
    Healthz,
    Readyz,
    Metrics,
    ActiveKey,
    Sign,
    Keys,
    Rotate,
    Revoke,
    Events,
}

/// One route: where, what, and the methods it answers (its `Allow`).
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub listener: Listener,
    pub path: &'static str,
    /// As sent in `Allow`: `"GET, HEAD"`.
    pub allow: &'static str,
    pub endpoint: Endpoint,
}

impl Route {
    /// The methods of [`Route::allow`], one by one.
    pub fn methods(&self) -> impl Iterator<Item = &'static str> {
        self.allow.split(", ")
    }

    /// Whether the route answers `method`.
    pub fn allows(&self, method: &hyper::Method) -> bool {
        self.methods().any(|m| m == method.as_str())
    }
}

/// The JWK Set's path.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

const fn route(
    listener: Listener,
    path: &'static str,
    allow: &'static str,
    endpoint: Endpoint,
) -> Route {
    Route {
        listener,
        path,
        allow,
        endpoint,
    }
}

/// Every route of both listeners. Order matters only where two templates
/// could match one path: the first wins.
// A table: one route a line.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    // OPTIONS: the CORS preflight (`jwks.cors_allow_origins`); without CORS
    // a plain 204 with `Allow`.
    route(Listener::Public, JWKS_PATH, "GET, HEAD, OPTIONS", Endpoint::Jwks),
    route(Listener::Public, "/healthz", "GET, HEAD", Endpoint::Healthz),
    route(Listener::Public, "/readyz", "GET, HEAD", Endpoint::Readyz),
    route(Listener::Admin, "/metrics", "GET", Endpoint::Metrics),
    route(Listener::Admin, "/v1/keys/active", "GET, HEAD", Endpoint::ActiveKey),
    route(Listener::Admin, "/v1/sign", "POST", Endpoint::Sign),
    route(Listener::Admin, "/v1/keys", "GET, HEAD", Endpoint::Keys),
    route(Listener::Admin, "/v1/rotate", "POST", Endpoint::Rotate),
    route(Listener::Admin, "/v1/keys/{kid}/revoke", "POST", Endpoint::Revoke),
    route(Listener::Admin, "/v1/events", "GET", Endpoint::Events),
];

/// The route of `listener` that `path` names, and the value of its
/// `{parameter}` if it has one.
pub fn find(listener: Listener, path: &str) -> Option<(&'static Route, Option<&str>)> {
    ROUTES
        .iter()
        .filter(|r| r.listener == listener)
        .find_map(|r| matches(r.path, path).map(|param| (r, param)))
}

/// Matches `path` against `template`; `Some(param)` when it matches.
fn matches<'p>(template: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut param = None;
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some(ts), Some(ps)) => {
                if ts.starts_with('{') && ts.ends_with('}') {
                    if ps.is_empty() {
                        return None;
                    }
                    param = Some(ps);
                } else if ts != ps {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_route_and_parameter() {
        let (r, p) = find(Listener::Admin, "/v1/keys/abc/revoke").unwrap();
        assert_eq!((r.endpoint, p), (Endpoint::Revoke, Some("abc")));
        let (r, p) = find(Listener::Admin, "/v1/keys/active").unwrap();
        assert_eq!((r.endpoint, p), (Endpoint::ActiveKey, None));
        assert!(find(Listener::Admin, "/v1/keys//revoke").is_none());
        assert!(find(Listener::Admin, "/v1/keys/a/b/revoke").is_none());
        assert!(find(Listener::Admin, "/v1/keys/").is_none());
        assert!(find(Listener::Admin, JWKS_PATH).is_none());
        assert!(find(Listener::Public, "/metrics").is_none());
        let (r, _) = find(Listener::Public, JWKS_PATH).unwrap();
        assert!(r.allows(&hyper::Method::OPTIONS));
        assert!(!r.allows(&hyper::Method::POST));
    }

    #[test]
    fn no_two_routes_share_a_listener_and_path() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(a.listener != b.listener || a.path != b.path, "{a:?}");
            }
        }
    }
}

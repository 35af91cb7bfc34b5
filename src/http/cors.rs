//! CORS on the JWK Set (`jwks.cors_allow_origins`): browser-side verifiers
//! and single-page apps read it. The public listener only; the admin
//! listener answers nothing CORS.

use hyper::HeaderMap;
use hyper::header::{self, HeaderValue};

/// The methods and request headers a preflight allows, and how long a
/// browser may keep its answer (Chromium caps it at 2 h).
pub const ALLOW_METHODS: &str = "GET, HEAD, OPTIONS";
pub const ALLOW_HEADERS: &str = "If-None-Match";
pub const MAX_AGE_SECONDS: u64 = 7200;
/// `Cache-Control` is safelisted; `ETag` must be exposed for scripts that
/// revalidate with `If-None-Match`.
pub const EXPOSE_HEADERS: &str = "ETag";

/// Which origins get CORS headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cors {
    /// `[]`: none.
    Off,
    /// `["*"]`: any, with `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins (checked by `config::validate`), each echoed back when
    /// it is the request's `Origin`, with `Vary: Origin`.
    Origins(Vec<String>),
}

impl Cors {
    /// From `jwks.cors_allow_origins`, as validated.
    pub fn new(origins: &[String]) -> Cors {
        match origins {
            [] => Cors::Off,
            [only] if only == "*" => Cors::Any,
            list => Cors::Origins(list.to_vec()),
        }
    }

    /// The `Access-Control-Allow-Origin` for a request from `origin`.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Cors::Off => None,
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::Origins(list) => {
                let origin = origin?;
                let text = origin.to_str().ok()?;
                list.iter()
                    .any(|o| o.eq_ignore_ascii_case(text))
                    .then(|| origin.clone())
            }
        }
    }

    fn vary(&self, h: &mut HeaderMap) {
        if matches!(self, Cors::Origins(_)) {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    /// The CORS headers of an answer (GET, HEAD) to a request from `origin`.
    pub fn response(&self, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
        self.headers(
            origin,
            h,
            &[(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS)],
        );
    }

    /// The CORS headers of a preflight (OPTIONS) from `origin`.
    pub fn preflight(&self, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
        let max_age = HeaderValue::from(MAX_AGE_SECONDS);
        self.headers(
            origin,
            h,
            &[
                (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
            ],
        );
        if h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, max_age);
        }
    }

    /// `Vary`, and for an allowed origin `Access-Control-Allow-Origin` with
    /// `extra`.
    fn headers(
        &self,
        origin: Option<&HeaderValue>,
        h: &mut HeaderMap,
        extra: &[(header::HeaderName, &'static str)],
    ) {
        self.vary(h);
        if let Some(v) = self.allow_origin(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            for (name, value) in extra {
                h.insert(name.clone(), HeaderValue::from_static(value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cors: &Cors, origin: Option<&'static str>, preflight: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        let origin = origin.map(HeaderValue::from_static);
        if preflight {
            cors.preflight(origin.as_ref(), &mut h);
        } else {
            cors.response(origin.as_ref(), &mut h);
        }
        h
    }

    #[test]
    fn any_off_and_a_list() {
        let any = Cors::new(&["*".to_owned()]);
        assert_eq!(any, Cors::Any);
        let h = headers(&any, None, false);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "ETag");
        assert!(h.get(header::VARY).is_none());
        let h = headers(&any, Some("https://x.example"), true);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], ALLOW_METHODS);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], ALLOW_HEADERS);
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "7200");

        assert!(headers(&Cors::new(&[]), Some("https://x.example"), true).is_empty());

        let list = Cors::new(&["https://app.example".to_owned()]);
        let h = headers(&list, Some("https://app.example"), false);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(h[header::VARY], "Origin");
        let h = headers(&list, Some("https://evil.example"), true);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(h[header::VARY], "Origin");
        assert_eq!(h.len(), 1);
    }
}

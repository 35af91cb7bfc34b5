//! A small HTTP client for the admin API: what the operator commands (and
//! the integration tests) use to talk to a running daemon.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as one of the API's answers ([`crate::api`]), or `None`
    /// when it is not that.
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error` of a JSON error body, or the body as text.
    pub fn error_message(&self) -> String {
        self.parse::<ErrorBody>()
            .map(|e| e.error.into_owned())
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned())
    }
}

/// The largest answer read (the admin API's largest, `/v1/keys` with a full
/// history, is well below).
pub const MAX_REPLY_BYTES: usize = 16 << 20;

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Default for Client {
    fn default() -> Self {
        Self::new(Duration::from_secs(150))
    }
}

impl Client {
    /// A client for `http://` URLs (and `https://` ones signed by nothing it
    /// trusts: use [`Client::with_tls`] for those).
    pub fn new(timeout: Duration) -> Client {
        // Without files to read this cannot fail: ring supports TLS 1.2 and 1.3.
        let tls = crate::tls::client_config(None, None)
            .expect("a TLS client configuration without files");
        Self::with_tls(tls, timeout)
    }

    /// A client that speaks TLS with `config` to `https://` URLs.
    pub fn with_tls(config: rustls::ClientConfig, timeout: Duration) -> Client {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Sends a request; `bearer` becomes `Authorization: Bearer ...`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        extra: &[(header::HeaderName, &str)],
        body: Option<Bytes>,
    ) -> Result<Reply, ClientError> {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (name, value) in extra {
            req = req.header(name, *value);
        }
        if body.is_some() {
            req = req.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| ClientError::Url(url.to_owned()))?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.to_owned(),
                    reason: describe(&e),
                })?;
            let (parts, body) = resp.into_parts();
            // Bounded: a server (a webhook receiver, anything in the path)
            // cannot make this process hold more than this.
            let body = http_body_util::Limited::new(body, MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.to_owned(),
                secs: self.timeout.as_secs(),
            })?
    }

    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<Reply, ClientError> {
        self.send(Method::GET, url, bearer, &[], None).await
    }

    pub async fn post_json<T: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: &T,
    ) -> Result<Reply, ClientError> {
        let b = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.send(Method::POST, url, bearer, &[], Some(b)).await
    }
}

/// The innermost cause of a client error, which says the most.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

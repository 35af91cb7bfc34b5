//! The HTTP shell: a small hyper server loop with the limits every listener
//! shares, and the JSON responses both APIs use.
//!
//! - `public`: the JWK Set and health checks, no authentication.
//! - `admin`: the signing key, signing, key management and metrics.
//! - `auth`: bearer tokens, roles, constant-time comparison.

pub mod admin;
pub mod auth;
pub mod public;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub type Body = Full<Bytes>;

/// Limits applied to every connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time allowed to send a request's headers; also closes idle
    /// keep-alive connections after this long.
    pub header_read_timeout: Duration,
    /// Time allowed to send a request body.
    pub body_read_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `handler` on `listener` (over TLS when `tls` is set) until
/// `shutdown` turns true, then lets in-flight requests finish (up to the
/// grace period).
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<crate::tls::ReloadingTls>>,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // An IPv4 client of a dual-stack ([::]) listener arrives as
        // ::ffff:a.b.c.d: admin.allow, the limits and the logs all see a.b.c.d.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            match tls {
                None => {
                    serve_connection(TokioIo::new(stream), peer, limits, shutdown, handler).await
                }
                Some(acceptor) => {
                    // The handshake gets the same time as request headers.
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => {
                            serve_connection(TokioIo::new(s), peer, limits, shutdown, handler).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a slot: all slots back means all done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all)).await;
}

async fn serve_connection<I, H, F>(
    io: I,
    peer: SocketAddr,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req, peer).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Reads a request body, refusing bodies over the limit or too slow.
#[allow(clippy::result_large_err)]
pub async fn read_body(req: Request<Incoming>, limits: &Limits) -> Result<Bytes, Response<Body>> {
    let body = Limited::new(req.into_body(), limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, body.collect()).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "request body not received in time",
        )),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body over {} bytes", limits.max_body_bytes),
        )),
        Ok(Ok(b)) => Ok(b.to_bytes()),
    }
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    // Serialising our own response types cannot fail.
    let body = serde_json::to_vec(value).unwrap_or_default();
    bytes_response(status, Bytes::from(body))
}

pub fn bytes_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'a str,
}

/// `{"error": message, "code": code}` with `status`.
pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response<Body> {
    let mut r = json(
        status,
        &ErrorBody {
            error: &message.to_string(),
            code,
        },
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed methods: {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as
/// RFC 9110 asks for If-None-Match; lists and `*` included).
pub fn if_none_match(req_header: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(v) = req_header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let ours = etag.trim_start_matches("W/");
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_handles_lists_star_and_weak_tags() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        let tag = "\"abc\"";
        assert!(if_none_match(Some(&h("\"abc\"")), tag));
        assert!(if_none_match(Some(&h("\"x\", \"abc\"")), tag));
        assert!(if_none_match(Some(&h("W/\"abc\"")), tag));
        assert!(if_none_match(Some(&h("*")), tag));
        assert!(!if_none_match(Some(&h("\"abcd\"")), tag));
        assert!(!if_none_match(Some(&h("abc")), tag));
        assert!(!if_none_match(None, tag));
    }
}

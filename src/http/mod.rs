//! The HTTP shell: a small hyper server loop with the limits every listener
//! shares, and the JSON responses both APIs use.
//!
//! - `public`: the JWK Set and health checks, no authentication.
//! - `admin`: the signing key, signing, key management and metrics.
//! - `auth`: bearer tokens, roles, constant-time comparison.
//! - `routes`: the route table of both, which they dispatch on.
//! - `cors`: CORS on the JWK Set.

pub mod admin;
pub mod auth;
pub mod cors;
pub mod public;
pub mod routes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

use crate::api::ErrorBody;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Sleep;

/// A response body: a whole one, or a stream (`/v1/events`) fed through a
/// bounded channel, which ends when its sender is dropped.
pub struct Body(BodyKind);

enum BodyKind {
    Full(Full<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn new(bytes: Bytes) -> Body {
        Body(BodyKind::Full(Full::new(bytes)))
    }

    /// A body that sends what arrives on `rx`, as it arrives.
    pub fn stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
        Body(BodyKind::Stream(rx))
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::new(Bytes::new())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            BodyKind::Full(f) => Pin::new(f).poll_frame(cx),
            BodyKind::Stream(rx) => rx
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            BodyKind::Full(f) => f.is_end_stream(),
            BodyKind::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.0 {
            BodyKind::Full(f) => f.size_hint(),
            BodyKind::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

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
    /// Open connections one client (IPv4 address, IPv6 /64) may hold per
    /// listener.
    pub max_connections_per_client: usize,
    /// Time a response write may make no progress before the connection is
    /// closed (a client that stops reading cannot hold a slot).
    pub write_timeout: Duration,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

/// The configuration's defaults (`http` in `config/jwksd.yaml`), kept in one
/// place.
impl Default for Limits {
    fn default() -> Self {
        Limits::from(&crate::config::Http::default())
    }
}

impl From<&crate::config::Http> for Limits {
    fn from(c: &crate::config::Http) -> Limits {
        Limits {
            header_read_timeout: c.header_read_timeout.0,
            body_read_timeout: c.body_read_timeout.0,
            max_body_bytes: c.max_body_bytes,
            max_header_bytes: c.max_header_bytes,
            max_connections: c.max_connections,
            max_connections_per_client: c.max_connections_per_client,
            write_timeout: c.write_timeout.0,
            shutdown_grace: c.shutdown_grace.0,
        }
    }
}

/// What a handler knows of a request's connection.
#[derive(Clone, Debug)]
pub struct Conn {
    /// The TCP peer (an IPv4 client of a dual-stack listener as IPv4).
    pub peer: SocketAddr,
    /// The client certificate rustls verified (admin listener with
    /// `tls.admin.client_ca_file`), read once per connection.
    pub certificate: Option<Arc<crate::access::CertIdentity>>,
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
    H: Fn(Request<Incoming>, Conn) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(PerClient::new(limits.max_connections_per_client));
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
        let Some(client_slot) = clients.try_take(peer.ip()) else {
            // Closed at once: waiting would hold a global slot for it.
            tracing::debug!(peer = %peer, "connection closed: client at http.max_connections_per_client");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            match tls {
                None => {
                    let io = WriteTimeout::new(TokioIo::new(stream), limits.write_timeout);
                    let conn = Conn {
                        peer,
                        certificate: None,
                    };
                    serve_connection(io, conn, limits, shutdown, handler).await
                }
                Some(acceptor) => {
                    // The handshake gets the same time as request headers.
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => {
                            // Verified by rustls already; parsed once for
                            // every request of the connection.
                            let certificate = s
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| crate::access::CertIdentity::from_der(c.as_ref()))
                                .map(Arc::new);
                            let io = WriteTimeout::new(TokioIo::new(s), limits.write_timeout);
                            let conn = Conn { peer, certificate };
                            serve_connection(io, conn, limits, shutdown, handler).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(client_slot);
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a slot: all slots back means all done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all)).await;
}

/// Open connections per client, so that one client cannot take every slot.
/// Holds only clients with an open connection: at most `max_connections`.
struct PerClient {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client; given back on drop.
struct ClientSlot {
    clients: Arc<PerClient>,
    key: IpAddr,
}

impl PerClient {
    fn new(max: usize) -> PerClient {
        PerClient {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `ip`'s client, or `None` when it is at its cap.
    fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let key = crate::access::limits::address_key(ip);
        let mut open = self.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Connection IO whose writes fail with `TimedOut` once one has been
/// pending (no progress) for `timeout`: a client that stops reading its
/// responses cannot hold a connection. Progress, not the total time, is
/// timed, so large responses to slow but live readers still go out.
pub struct WriteTimeout<I> {
    inner: I,
    timeout: Duration,
    /// Created at the first pending write, then reset for each stall.
    sleep: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<I> WriteTimeout<I> {
    pub fn new(inner: I, timeout: Duration) -> WriteTimeout<I> {
        WriteTimeout {
            inner,
            timeout,
            sleep: None,
            stalled: false,
        }
    }

    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.stalled {
            sleep.as_mut().reset(deadline);
            self.stalled = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "response write made no progress within http.write_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for WriteTimeout<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for WriteTimeout<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(cx, polled)
    }
}

async fn serve_connection<I, H, F>(
    io: I,
    conn: Conn,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Conn) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let peer = conn.peer;
    let service = service_fn(move |req| {
        let handler = handler.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handler(req, conn).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "connection closed on an error");
            }
        }
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
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"error": message, "code": code}` with `status`.
pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response<Body> {
    let mut r = json(
        status,
        &ErrorBody {
            error: message.to_string().into(),
            code: code.into(),
        },
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `Cache-Control: {scope}, max-age=...` for `max_age`.
pub fn cache_control(scope: &str, max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("{scope}, max-age={}", max_age.as_secs()))
        .unwrap_or_else(|_| HeaderValue::from_static("no-store"))
}

/// `Cache-Control` of `/v1/keys/active` for the daemon's
/// `signing_key_max_age()`: `None` means the key must not be kept.
pub fn signing_key_cache_control(max_age: Option<Duration>) -> HeaderValue {
    match max_age {
        Some(d) => cache_control("private", d),
        None => HeaderValue::from_static("no-store"),
    }
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
mod tests;

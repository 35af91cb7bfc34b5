//! Hostile input against the real binary: oversized and slow requests, idle
//! connections past the limit, token guessing, and clients outside the
//! admin allow-list. Each gets a clear answer and the daemon keeps serving.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::daemon::{Daemon, FAST, write_config_with};

const LIMITS: &str = "http:\n  header_read_timeout: 1s\n  max_connections: 4\n";

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// Sends raw bytes, returns what the server answered before closing.
fn raw(to: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

async fn request_from(from: &str, to: SocketAddr, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_slow_and_idle_clients_do_not_stop_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &format!("{FAST}{LIMITS}")).await;
    let public = addr(&d.public);

    // Headers far over the limit: 431, connection closed.
    let big = format!(
        "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = tokio::task::spawn_blocking(move || raw(public, big.as_bytes()))
        .await
        .unwrap();
    assert_eq!(status(&r), 431, "{r}");

    // Not HTTP at all: 400.
    let r = tokio::task::spawn_blocking(move || raw(public, b"\x16\x03\x01garbage\r\n\r\n"))
        .await
        .unwrap();
    assert_eq!(status(&r), 400, "{r}");

    // Slowloris: half a request, then silence. Closed after the header
    // read timeout.
    let t = Instant::now();
    let r = tokio::task::spawn_blocking(move || {
        raw(
            public,
            b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n",
        )
    })
    .await
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "slow client held the connection {:?}",
        t.elapsed()
    );
    assert!(!r.contains("200 OK"), "{r}");

    // Four idle connections fill the limit; a fifth client is still served
    // once the idle ones are closed by the header read timeout.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(public).unwrap())
        .collect();
    let r = d.get_public("/.well-known/jwks.json").await;
    assert_eq!(r.status, 200);
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let n = s.read_to_end(&mut buf).unwrap_or(0);
        assert!(
            n == 0 || String::from_utf8_lossy(&buf).contains("408"),
            "idle connection got {buf:?}"
        );
    }

    // A body that never finishes: refused, not waited for forever.
    let admin = addr(&d.admin);
    let signer = d.signer.clone();
    let t = Instant::now();
    let r = tokio::task::spawn_blocking(move || {
        raw(
            admin,
            format!("POST /v1/sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {signer}\r\nContent-Length: 1000\r\n\r\n{{").as_bytes(),
        )
    })
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(
        r.is_empty() || status(&r) == 408 || status(&r) == 400,
        "{r}"
    );

    // Still healthy and serving.
    assert_eq!(d.get_public("/readyz").await.status, 200);
    assert_eq!(d.sign("ES256", serde_json::json!({})).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_tokens_is_rate_limited_per_client() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), FAST).await;
    let admin = addr(&d.admin);
    let req = |token: &str| {
        format!(
            "GET /v1/keys/active?alg=ES256 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
    };
    // 30 failures a minute are tolerated...
    for i in 0..30 {
        let r = request_from("127.0.0.1", admin, req(&format!("guess-{i:040}"))).await;
        assert_eq!(status(&r), 401, "attempt {i}: {r}");
    }
    // ...the 31st failure too, but from then on the client is refused, even
    // with the right token.
    assert_eq!(
        status(
            &request_from(
                "127.0.0.1",
                admin,
                req("guess-last-one-guess-last-one-guess")
            )
            .await
        ),
        401
    );
    let r = request_from("127.0.0.1", admin, req(&d.signer)).await;
    assert_eq!(status(&r), 429, "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 60"), "{r}");
    // Another client is not affected.
    let r = request_from("127.0.0.2", admin, req(&d.signer)).await;
    assert_eq!(status(&r), 200, "{r}");
    let warned = d
        .wait_events("rate limiting a client after repeated failed authentications")
        .await;
    assert!(!warned.is_empty());
    let m = d
        .client
        .get(&format!("{}/metrics", d.admin), None)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&m.body)
            .contains("jwksd_admin_auth_failures_total{status=\"429\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_allow_list_refuses_other_networks() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config_with(tmp.path(), "  allow: [127.0.0.2/32]\n", FAST);
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let admin = addr(&d.admin);
    let req = format!(
        "GET /v1/keys/active?alg=ES256 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        d.signer
    );
    let r = request_from("127.0.0.1", admin, req.clone()).await;
    assert_eq!(status(&r), 403, "{r}");
    assert!(r.contains("forbidden_network"), "{r}");
    let r = request_from("127.0.0.2", admin, req).await;
    assert_eq!(status(&r), 200, "{r}");
    // The public listener is not restricted.
    assert_eq!(d.get_public("/.well-known/jwks.json").await.status, 200);
}

/// A client that pipelines JWKS requests on one connection and never reads
/// the answers.
struct Pipeliner {
    /// Request bytes the server's side accepted so far.
    written: Arc<AtomicU64>,
    /// Set once a write failed: the server closed the connection.
    closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pipeliner {
    async fn start(from: &str, to: SocketAddr) -> Pipeliner {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let s = sock.connect(to).await.unwrap().into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        // Short, so the thread notices `stop`.
        s.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, c, st) = (written.clone(), closed.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut s = s;
            let chunk = "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
            // Where a partial write stopped: the stream must stay valid HTTP.
            let mut at = 0;
            while !st.load(Ordering::SeqCst) {
                match s.write(&chunk.as_bytes()[at..]) {
                    Ok(n) => {
                        at = (at + n) % chunk.len();
                        w.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => {
                        c.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
        Pipeliner {
            written,
            closed,
            stop,
            thread: Some(thread),
        }
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for Pipeliner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Time a fresh client takes to get the JWK Set (status 0: no answer within
/// the 10 s the helper waits).
async fn fresh_client(from: &str, to: SocketAddr) -> (u16, Duration) {
    let t = Instant::now();
    let r = request_from(
        from,
        to,
        "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    (status(&r), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_their_responses_are_closed_by_the_write_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // The header timeout is long, so only the write timeout can free a slot.
    let d = Daemon::start(
        tmp.path(),
        &format!(
            "{FAST}http:\n  header_read_timeout: 30s\n  max_connections: 4\n  max_connections_per_client: 2\n  write_timeout: 1s\n"
        ),
    )
    .await;
    let public = addr(&d.public);
    let mut hogs = Vec::new();
    for i in 0..4 {
        hogs.push(Pipeliner::start(&format!("127.0.0.{}", 11 + i), public).await);
    }
    let (status, waited) = fresh_client("127.0.0.20", public).await;
    println!("fifth client answered {status} after {waited:?}");
    assert_eq!(status, 200, "fifth client not answered within {waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "fifth client waited {waited:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hogs.iter().all(Pipeliner::closed) {
        assert!(
            Instant::now() < deadline,
            "a stalled connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.get_public("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_connection_slot() {
    let tmp = tempfile::tempdir().unwrap();
    // A write timeout far beyond the test: only the per-client cap helps.
    let d = Daemon::start(
        tmp.path(),
        &format!(
            "{FAST}http:\n  header_read_timeout: 30s\n  max_connections: 4\n  max_connections_per_client: 2\n  write_timeout: 60s\n"
        ),
    )
    .await;
    let public = addr(&d.public);
    let mut hogs = Vec::new();
    // Not 127.0.0.1: the harness's own client keeps a connection from there.
    for _ in 0..4 {
        hogs.push(Pipeliner::start("127.0.0.3", public).await);
    }
    let (status, waited) = fresh_client("127.0.0.2", public).await;
    println!("another client answered {status} after {waited:?}");
    assert_eq!(status, 200, "another client not answered within {waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "another client waited {waited:?}"
    );
    // Two connections over the cap were closed at once; two are held.
    let deadline = Instant::now() + Duration::from_secs(5);
    while hogs.iter().filter(|h| h.closed()).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "connections over the cap stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hogs.iter().filter(|h| h.closed()).count(), 2);
    // A held connection's backlog is bounded: the server stops reading
    // requests it cannot answer, so the client's writes stall.
    let held = hogs.iter().find(|h| !h.closed()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = held.written.load(Ordering::SeqCst);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(1) {
        assert!(
            Instant::now() < deadline,
            "the server kept reading requests"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = held.written.load(Ordering::SeqCst);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    println!("a pipelining client got {last} request bytes in before it stalled");
    assert!(last < 64 << 20, "{last} bytes of requests taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_allow_sees_ipv4_clients_of_a_dual_stack_listener_as_ipv4() {
    // Needs IPv6 and a dual-stack socket (IPV6_V6ONLY off).
    let probe = match std::net::TcpListener::bind("[::]:0") {
        Ok(l) => l,
        Err(e) => {
            println!("skipped: cannot bind [::]:0 ({e})");
            return;
        }
    };
    let port = probe.local_addr().unwrap().port();
    if let Err(e) = TcpStream::connect(("127.0.0.1", port)) {
        println!("skipped: [::] does not accept IPv4 clients here ({e})");
        return;
    }
    drop(probe);
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let config = tmp.path().join("jwksd.yaml");
    std::fs::write(
        &config,
        format!(
            "keys_dir: {k}\nlisten:\n  public: 127.0.0.1:0\n  admin: \"[::]:0\"\nadmin:\n  operator_token_file: {k}/operator.token\n  signer_token_file: {k}/signer.token\n  allow: [127.0.0.1/32]\nlog:\n  format: json\n{FAST}",
            k = keys.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_with(tmp.path(), &config, &[]).await;
    let port = addr(&d.admin).port();
    let admin: SocketAddr = ([127, 0, 0, 1], port).into();
    let req = format!(
        "GET /v1/keys/active?alg=ES256 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        d.signer
    );
    let r = request_from("127.0.0.1", admin, req).await;
    assert_eq!(status(&r), 200, "{r}");
    // The log is read by another thread: wait for the line.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pulled = loop {
        let e = d.events("signing key pulled");
        if !e.is_empty() {
            break e;
        }
        assert!(Instant::now() < deadline, "no signing key pulled line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let peer = pulled[0]["peer"].as_str().unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
}

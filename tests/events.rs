//! Events (issue 14) against the real binary: the audit log in the same
//! commit as each change, with who did it, verified and tampered with by
//! hand; the `/v1/events` stream resumed after a dropped connection with no
//! gap, its limits and its latency; webhooks to a receiver that fails a
//! third of its requests, across a restart and (PostgreSQL) a killed
//! leader, every event exactly once after deduplication.

mod support;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::daemon::{BIN, Daemon, FAST, write_config};
use support::pg::Cluster;

/// Rotations out of the way.
const SLOW: &str = "rotation:\n  every: 1h\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n";

/// The kinds the stream carries.
const FOR_SIGNERS: [&str; 3] = ["key.next", "key.active", "key.revoked"];

fn run_cli(config: &Path, args: &[&str]) -> Output {
    run_cli_with(config, args, &[])
}

/// `jwksd -c config ARGS` with `env` (and no `JWKSD_*` of the caller's).
fn run_cli_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env_remove("JWKSD_CONFIG")
        .env_remove("JWKSD_STORE_URL")
        .env_remove("JWKSD_MASTER_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `jwksd audit --json` of `config`'s store: every record.
fn audit(config: &Path, env: &[(&str, &str)]) -> Vec<Value> {
    let out = run_cli_with(config, &["audit", "--json"], env);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every transition the state records, as (kid, to): what the audit log's
/// `key.*` records must be.
fn transitions(keys: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for k in keys["keys"].as_array().unwrap() {
        for t in k["transitions"].as_array().unwrap() {
            out.push((
                k["kid"].as_str().unwrap().to_owned(),
                t["to"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out.sort();
    out
}

fn audited_transitions(records: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["event"]["type"].as_str().unwrap().starts_with("key."))
        .map(|r| {
            (
                r["event"]["kid"].as_str().unwrap().to_owned(),
                r["event"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The kid of `alg`'s key in `state` once there is one (a next key is
/// generated just after each rotation).
async fn wait_kid(d: &Daemon, alg: &str, state: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = d.keys().await;
        let found = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["alg"] == alg && k["state"] == state)
            .map(|k| k["kid"].as_str().unwrap().to_owned());
        if let Some(kid) = found {
            return kid;
        }
        assert!(Instant::now() < deadline, "no {alg} {state} key: {keys}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log of the key directory `keys`: its one segment's lines.
fn segment(keys: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(keys.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

/// Who did what, in the same commit as the change: the schedule, an
/// operator's forced rotation and revocation, a refused command; a restart
/// goes on with the chain. Then each kind of tampering, by hand, on a
/// copy: `jwksd audit verify` names the first broken record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_tells_every_change_and_detects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(tmp.path(), FAST).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = d.rotate(json!({"alg": "ES256", "force": true})).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let next = wait_kid(&d, "RS256", "next").await;
    assert_eq!(d.revoke(&next).await.status, 200);
    let unknown = "A".repeat(43);
    assert_eq!(d.revoke(&unknown).await.status, 404);
    // The refusal is recorded beside the answer: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !audit(&d.config, &[])
        .iter()
        .any(|r| r["event"]["type"] == "command.refused")
    {
        assert!(Instant::now() < deadline, "the refusal was never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.stop().code(), Some(0));
    d.restart().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let last_seq = d.metric("jwksd_audit_last_seq").await.unwrap();
    let keys = d.keys().await;
    assert_eq!(d.stop().code(), Some(0));

    let records = audit(&d.config, &[]);
    // One sequence, no gap, each record chained to the one before.
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1, "{r}");
        if i > 0 {
            assert_eq!(r["prev"], records[i - 1]["hash"], "{r}");
        }
    }
    assert!(last_seq >= records.len() as f64 - 2.0, "{last_seq}");
    // Every transition the state holds, exactly once.
    assert_eq!(audited_transitions(&records), transitions(&keys));
    let by = |kind: &str, pred: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["event"]["type"] == kind && pred(r))
            .cloned()
            .collect()
    };
    let forced = by("key.active", &|r| r["event"]["trigger"] == "forced");
    assert_eq!(forced.len(), 1, "{records:?}");
    assert_eq!(
        forced[0]["actor"],
        json!({"name": "operator", "role": "operator"})
    );
    assert_eq!(forced[0]["event"]["early_activation"], "forced");
    let revoked = by("key.revoked", &|_| true);
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["event"]["kid"], next.as_str());
    assert_eq!(revoked[0]["actor"]["name"], "operator");
    let refused = by("command.refused", &|_| true);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["result"], "refused");
    assert_eq!(refused[0]["event"]["reason"], "unknown_kid");
    assert_eq!(refused[0]["event"]["kid"], unknown.as_str());
    assert!(by("key.active", &|r| r["event"]["trigger"] == "schedule").len() >= 2);
    assert!(
        by("key.active", &|r| r["event"]["trigger"] == "schedule")
            .iter()
            .all(|r| r["actor"]["name"] == "jwksd")
    );
    // Records with a state version name the versions in order.
    let versions: Vec<u64> = records
        .iter()
        .filter_map(|r| r["state_version"].as_u64())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");

    // Never a token or key material in the log.
    let keys_dir = tmp.path().join("keys");
    let log = std::fs::read_to_string(segment(&keys_dir)).unwrap();
    for secret in [&d.operator, &d.signer] {
        assert!(!log.contains(secret.as_str()));
    }
    assert!(!log.contains("PRIVATE KEY") && !log.contains("\"d\":"));
    // The listing: filtered by key, a line a record.
    let out = run_cli(&d.config, &["audit", "--kid", &next]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listed.lines().filter(|l| l.contains(&next)).count(),
        records
            .iter()
            .filter(|r| r["event"]["kid"] == next.as_str())
            .count()
    );
    assert!(listed.contains("key.revoked") && listed.contains("operator (operator)"));

    let out = run_cli(&d.config, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{} records", records.len())),
        "{}",
        text(&out)
    );

    // Tampering, each on a copy of the key directory.
    let n = records.len();
    assert!(n >= 10, "{n} records");
    type Tamper = fn(&mut Vec<String>);
    let cases: [(&str, Tamper, String); 4] = [
        (
            "edit",
            |lines| lines[2] = lines[2].replacen("\"jwksd\"", "\"mallory\"", 1),
            "record 3".into(),
        ),
        (
            "delete",
            |lines| {
                lines.remove(3);
            },
            "record 4".into(),
        ),
        ("reorder", |lines| lines.swap(4, 5), "record 5".into()),
        (
            "truncate",
            |lines| {
                lines.truncate(lines.len() - 2);
            },
            format!("record {}", n - 1),
        ),
    ];
    for (what, tamper, broken_at) in cases {
        let copy = tmp.path().join(format!("copy-{what}"));
        std::fs::create_dir_all(&copy).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(&keys_dir)
            .arg(copy.join("keys"))
            .status()
            .unwrap();
        assert!(st.success());
        let seg = segment(&copy.join("keys"));
        let mut lines: Vec<String> = std::fs::read_to_string(&seg)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let before = lines.clone();
        tamper(&mut lines);
        assert_ne!(lines, before, "{what} changed nothing");
        std::fs::write(&seg, lines.join("\n") + "\n").unwrap();
        let config = write_config(&copy, "");
        let out = run_cli(&config, &["audit", "verify"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("broken at {broken_at}")),
            "{what}: {}",
            text(&out)
        );
    }
}

/// One `/v1/events` connection, read frame by frame.
struct Stream {
    body: Incoming,
    buf: String,
    status: u16,
    content_type: String,
}

#[derive(Debug, Clone)]
struct Sse {
    id: u64,
    event: String,
    data: Value,
}

/// Opens the stream of the daemon whose admin base URL is `admin`.
async fn open(admin: &str, token: &str, last: Option<&str>) -> Stream {
    let authority = admin.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(format!("{admin}/v1/events"))
        .header("host", authority)
        .header("authorization", format!("Bearer {token}"));
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Stream {
        body: resp.into_body(),
        buf: String::new(),
        status,
        content_type,
    }
}

impl Stream {
    /// The next block (up to a blank line), or None after `within`.
    async fn block(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block = self.buf[..i].to_owned();
                self.buf.drain(..i + 2);
                return Some(block);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The events that arrive within `within` (comments and `retry` left
    /// out).
    async fn events(&mut self, within: Duration) -> Vec<Sse> {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Some(block) = self.block(left).await else {
                break;
            };
            if let Some(e) = parse(&block) {
                out.push(e);
            }
        }
        out
    }

    async fn next_event(&mut self, within: Duration) -> Option<Sse> {
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let block = self.block(left).await?;
            if let Some(e) = parse(&block) {
                return Some(e);
            }
        }
        None
    }
}

/// Reads `s` until the revocation of `kid` arrives (what came before it
/// into `got`, it too); how long after `asked`.
async fn revoked_on(s: &mut Stream, kid: &str, asked: Instant, got: &mut Vec<Sse>) -> Duration {
    loop {
        let e = s
            .next_event(Duration::from_secs(5))
            .await
            .expect("no event after the revocation");
        got.push(e.clone());
        if e.event == "key.revoked" {
            assert_eq!(e.data["kid"], kid);
            return asked.elapsed();
        }
    }
}

fn parse(block: &str) -> Option<Sse> {
    let (mut id, mut event, mut data) = (None, None, None);
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = serde_json::from_str(v).ok();
        }
    }
    Some(Sse {
        id: id?,
        event: event?,
        data: data?,
    })
}

/// A signer follows the stream through rotations, drops the connection,
/// misses a rotation, and resumes with `Last-Event-ID`: every event of the
/// audit log it acts on, once, in order. Also: the subscriber cap, a bad
/// resume point, and revoke-to-event latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_after_a_dropped_connection_without_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        &format!("{FAST}events:\n  max_subscribers: 2\n  keepalive: 1s\n"),
    )
    .await;
    let mut s = open(&d.admin, &d.signer, None).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.content_type, "text/event-stream");
    let mut got = s.events(Duration::from_secs(5)).await;
    assert!(!got.is_empty(), "no event in 5 s of rotations every 3 s");
    drop(s);
    // A rotation while away.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let last = got.last().unwrap().id.to_string();
    let mut s = open(&d.admin, &d.signer, Some(&last)).await;
    assert_eq!(s.status, 200);
    got.extend(s.events(Duration::from_secs(4)).await);

    // The cap: this stream and one more; a third is refused.
    let second = open(&d.admin, &d.operator, None).await;
    assert_eq!(second.status, 200);
    let third = open(&d.admin, &d.signer, None).await;
    assert_eq!(third.status, 503);
    drop(second);
    drop(third);
    let bad = open(&d.admin, &d.signer, Some("yesterday")).await;
    assert_eq!(bad.status, 400);

    // Revocation to event, on this stream.
    let next = wait_kid(&d, "ES256", "next").await;
    let asked = Instant::now();
    assert_eq!(d.revoke(&next).await.status, 200);
    let latency = revoked_on(&mut s, &next, asked, &mut got).await;
    eprintln!("revoke-to-event latency, one daemon: {latency:?}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    drop(s);

    // Exactly the audit log's signer events from the first seen on.
    let records = audit(&d.config, &[]);
    let first = got[0].id;
    let last = got.last().unwrap().id;
    let want: Vec<u64> = records
        .iter()
        .filter(|r| {
            let seq = r["seq"].as_u64().unwrap();
            seq >= first
                && seq <= last
                && FOR_SIGNERS.contains(&r["event"]["type"].as_str().unwrap())
        })
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let ids: Vec<u64> = got.iter().map(|e| e.id).collect();
    assert_eq!(ids, want, "events: {got:?}");
    for e in &got {
        let r = &records[e.id as usize - 1];
        assert_eq!(e.event, r["event"]["type"].as_str().unwrap());
        assert_eq!(e.data["kid"], r["event"]["kid"]);
        assert_eq!(e.data["seq"], e.id);
    }
    assert!(got.iter().any(|e| e.event == "key.active"));
    assert!(got.iter().any(|e| e.event == "key.next"));
}

/// An idle stream says it is alive; a viewer-less setup still refuses the
/// stream to a token that is no client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_sends_keep_alives_and_unknown_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path(), &format!("{SLOW}events:\n  keepalive: 1s\n")).await;
    let mut s = open(&d.admin, &d.signer, None).await;
    assert_eq!(s.status, 200);
    let first = s.block(Duration::from_secs(3)).await.unwrap();
    assert!(first.starts_with("retry: "), "{first}");
    let block = s.block(Duration::from_secs(3)).await.unwrap();
    assert_eq!(block, ": keep-alive");
    let bad = open(&d.admin, "not-a-token", None).await;
    assert_eq!(bad.status, 401);
    assert_eq!(d.metric("jwksd_event_subscribers").await, Some(1.0));
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    seq: u64,
    kind: String,
    answered: u16,
}

/// A Standard Webhooks receiver on loopback that answers 500 to every
/// third request and checks every request: its signature with `secret`,
/// its timestamp, one `Content-Type: application/json` (a request that
/// fails a check counts in `bad_signatures`).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
    bad_signatures: Arc<AtomicUsize>,
}

fn hmac(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = openssl::pkey::PKey::hmac(secret).unwrap();
    let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    s.update(msg).unwrap();
    s.sign_to_vec().unwrap()
}

async fn receiver(secret: Vec<u8>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let bad = Arc::new(AtomicUsize::new(0));
    let count = Arc::new(AtomicUsize::new(0));
    let (g, b, secret) = (got.clone(), bad.clone(), Arc::new(secret));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (g, b, c, secret) = (g.clone(), b.clone(), count.clone(), secret.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (g, b, c, secret) = (g.clone(), b.clone(), c.clone(), secret.clone());
                    async move {
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (id, ts, sig) = (
                            h("webhook-id"),
                            h("webhook-timestamp"),
                            h("webhook-signature"),
                        );
                        // One JSON body, said once (a repeated header is
                        // refused by strict receivers).
                        let types = req.headers().get_all("content-type").iter().count();
                        let json = h("content-type") == "application/json";
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut signed = format!("{id}.{ts}.").into_bytes();
                        signed.extend_from_slice(&body);
                        let want = format!(
                            "v1,{}",
                            base64::engine::general_purpose::STANDARD
                                .encode(hmac(&secret, &signed))
                        );
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs() as i64;
                        let fresh = ts.parse::<i64>().is_ok_and(|t| (now - t).abs() < 300);
                        if sig != want || !fresh || types != 1 || !json {
                            b.fetch_add(1, Ordering::SeqCst);
                        }
                        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                        let answered = if n % 3 == 0 { 500 } else { 204 };
                        g.lock().unwrap().push(Delivery {
                            id,
                            seq: v["data"]["seq"].as_u64().unwrap_or(0),
                            kind: v["type"].as_str().unwrap_or_default().to_owned(),
                            answered,
                        });
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = hyper::StatusCode::from_u16(answered).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Receiver {
        url: format!("http://{addr}/hook"),
        got,
        bad_signatures: bad,
    }
}

const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn secret_file(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("hook.secret");
    std::fs::write(&p, format!("whsec_{SECRET_B64}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn webhook_config(url: &str, secret: &Path) -> String {
    format!(
        "events:\n  webhooks:\n    - name: test\n      url: {url}\n      secret_file: {}\n      timeout: 2s\n",
        secret.display()
    )
}

/// Waits until the receiver has every record of `want` (deduplicated by
/// `webhook-id`), in order; what it received.
async fn delivered_all(r: &Receiver, want: &[u64], within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    loop {
        let got = r.got.lock().unwrap().clone();
        let ok: Vec<&Delivery> = got.iter().filter(|d| d.answered < 300).collect();
        let mut seen = BTreeSet::new();
        let firsts: Vec<u64> = ok
            .iter()
            .filter(|d| seen.insert(d.id.clone()))
            .map(|d| d.seq)
            .collect();
        // In order, none skipped; later records may follow.
        assert!(
            firsts.iter().enumerate().all(|(i, s)| *s == i as u64 + 1),
            "out of order or with a gap: {firsts:?}"
        );
        if firsts.len() >= want.len() && firsts[..want.len()] == *want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "delivered {firsts:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A receiver that fails a third of its requests gets every event exactly
/// once after deduplication, in order, across rotations and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_every_event_once_after_dedup_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = base64::engine::general_purpose::STANDARD
        .decode(SECRET_B64)
        .unwrap();
    let r = receiver(secret).await;
    let config = write_config(
        tmp.path(),
        &format!(
            "{FAST}{}",
            webhook_config(&r.url, &secret_file(&tmp.path().join("s")))
        ),
    );
    let mut d = Daemon::start_with(tmp.path(), &config, &[]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(d.stop().code(), Some(0));
    d.restart().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let next = wait_kid(&d, "ES256", "next").await;
    assert_eq!(d.revoke(&next).await.status, 200);
    let records = audit(&d.config, &[]);
    let want: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let got = delivered_all(&r, &want, Duration::from_secs(30)).await;
    assert_eq!(r.bad_signatures.load(Ordering::SeqCst), 0);
    assert!(
        got.iter().any(|g| g.answered == 500),
        "no failure was injected"
    );
    assert!(got.iter().any(|g| g.kind == "key.revoked"));
    // Each record has an id of its own, the same at every attempt.
    let mut id_of = std::collections::BTreeMap::new();
    for g in &got {
        assert_eq!(id_of.entry(g.seq).or_insert(g.id.clone()), &g.id, "{g:?}");
    }
    let distinct: BTreeSet<&String> = id_of.values().collect();
    assert_eq!(distinct.len(), id_of.len());
    assert!(got.len() > id_of.len(), "no record was sent twice");
    assert!(
        d.metric("jwksd_webhook_delivered_seq{endpoint=\"test\"}")
            .await
            .is_some_and(|n| n >= *want.last().unwrap() as f64)
    );
    assert!(
        d.metric("jwksd_webhook_deliveries_total{endpoint=\"test\",result=\"failed\"}")
            .await
            .is_some_and(|n| n > 0.0)
    );
    // `jwksd audit` says where the endpoint stands.
    let out = d.cli(&["audit"]);
    let through: u64 = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("webhook test: delivered through record "))
        .and_then(|n| n.split(';').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert!(through >= *want.last().unwrap(), "{}", text(&out));
}

/// Webhook URLs and secrets are checked at start-up.
#[test]
fn bad_webhooks_stop_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = secret_file(&tmp.path().join("s"));
    for (url, extra, says) in [
        ("http://example.com/hook", "", "plain HTTP"),
        ("https://user:pw@example.com/hook", "", "credentials"),
        (
            "https://example.com/hook",
            "redirects: 1\n",
            "unknown setting",
        ),
    ] {
        let config = write_config(
            tmp.path(),
            &format!("{}      {extra}", webhook_config(url, &secret)),
        );
        let out = run_cli(&config, &["check-config"]);
        assert!(!out.status.success(), "{url}: {}", text(&out));
        assert!(text(&out).contains(says), "{url}: {}", text(&out));
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = write_config(tmp.path(), &webhook_config("https://example.com/", &secret));
    let out = Command::new(BIN)
        .arg("serve")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
}

fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(Cluster::start)
}

const MK: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";
const REPLICA: &str = "store:\n  leader_lease: 2s\n  poll_interval: 300ms\n";

/// With PostgreSQL: the records are rows written in the state's
/// transaction; a follower's stream sees a revocation made through the
/// leader; the leader is killed and the other replica delivers the rest:
/// every event exactly once after deduplication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_deliver_through_a_killed_leader_and_stream_on_followers() {
    let url = cluster().database("events");
    let tmp = tempfile::tempdir().unwrap();
    let secret = base64::engine::general_purpose::STANDARD
        .decode(SECRET_B64)
        .unwrap();
    let r = receiver(secret).await;
    let secret_path = secret_file(&tmp.path().join("s"));
    let env = [("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)];
    let mut replicas = Vec::new();
    for i in 0..2 {
        let dir = tmp.path().join(format!("r{i}"));
        let config = write_config(
            &dir,
            &format!("{FAST}{REPLICA}{}", webhook_config(&r.url, &secret_path)),
        );
        replicas.push(Daemon::start_with(&dir, &config, &env).await);
    }
    let leader = loop {
        let mut found = None;
        for (i, d) in replicas.iter().enumerate() {
            if d.metric("jwksd_leader").await == Some(1.0) {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let follower = 1 - leader;
    // The follower's stream learns of a revocation sent to the leader.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut s = open(&replicas[follower].admin, &replicas[follower].signer, None).await;
    assert_eq!(s.status, 200);
    let next = wait_kid(&replicas[leader], "RS256", "next").await;
    let asked = Instant::now();
    assert_eq!(replicas[leader].revoke(&next).await.status, 200);
    let latency = revoked_on(&mut s, &next, asked, &mut Vec::new()).await;
    eprintln!("revoke-to-event latency, leader to a follower's stream: {latency:?}");
    assert!(latency < Duration::from_secs(3), "{latency:?}");
    drop(s);

    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[leader].kill();
    // The other takes over, rotates and delivers.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let config = &replicas[follower].config;
    let records = audit(config, &env);
    assert!(
        records
            .iter()
            .filter(|r| r["replica"] != records[0]["replica"])
            .count()
            > 0,
        "one replica wrote everything"
    );
    let want: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    for (i, seq) in want.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
    }
    delivered_all(&r, &want, Duration::from_secs(30)).await;
    assert_eq!(r.bad_signatures.load(Ordering::SeqCst), 0);
    let out = run_cli_with(config, &["audit", "verify"], &env);
    assert!(out.status.success(), "{}", text(&out));
    // The last row deleted by hand: the next record follows the recorded
    // head, so the gap stays and verify names it.
    let last: u64 = cluster()
        .sql("events", "SELECT max(seq) FROM jwksd_audit")
        .trim()
        .parse()
        .unwrap();
    cluster().sql(
        "events",
        &format!("DELETE FROM jwksd_audit WHERE seq = {last}"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster()
        .sql("events", "SELECT max(seq) FROM jwksd_audit")
        .trim()
        .parse::<u64>()
        .unwrap()
        < last
    {
        assert!(Instant::now() < deadline, "no record after the deleted one");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = run_cli_with(config, &["audit", "verify"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("broken at record {last}")),
        "{}",
        text(&out)
    );
    // A row deleted by hand breaks the chain.
    cluster().sql("events", "DELETE FROM jwksd_audit WHERE seq = 2");
    let out = run_cli_with(config, &["audit", "verify"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("broken at record 2"), "{}", text(&out));
}

/// The README's signer (examples/follow_events.py) against a real daemon:
/// it signs with the active key, and switches within a fraction of a
/// second of an emergency revocation, where polling alone would wait for
/// `signing_key.cache_max_age` (30 s here). The README's excerpt is the
/// script's own code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_signer_switches_at_once_on_a_revocation() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let script_path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/follow_events.py");
    let script = std::fs::read_to_string(script_path).unwrap();
    let excerpt = readme
        .split("```python\n")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("a python block in the README");
    for line in excerpt.lines() {
        let code = line.split("  #").next().unwrap().trim_end();
        assert!(
            code.trim().is_empty()
                || script
                    .lines()
                    .any(|l| l.split("  #").next().unwrap().trim_end() == code),
            "README line not in the script: {line:?}"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        tmp.path(),
        "rotation:\n  every: 1h\nalgorithms: [ES256]\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 30s\n",
    )
    .await;
    let active = wait_kid(&d, "ES256", "active").await;
    wait_kid(&d, "ES256", "next").await;
    let lines = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let mut child = Command::new("python3")
        .arg(script_path)
        .env("JWKSD_ADMIN_URL", &d.admin)
        .env("JWKSD_SIGNER_TOKEN", &d.signer)
        .env("JWKSD_ALG", "ES256")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let out = child.stdout.take().unwrap();
    let l = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push((Instant::now(), line));
        }
    });
    let seen = |what: String| {
        let lines = lines.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some((at, _)) = lines.lock().unwrap().iter().find(|(_, l)| *l == what) {
                    return *at;
                }
                assert!(
                    Instant::now() < deadline,
                    "never printed {what:?}: {:?}",
                    lines.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    seen(format!("signing with {active}")).await;
    seen("following the event stream".to_owned()).await;
    let asked = Instant::now();
    let r = d.revoke(&active).await;
    assert_eq!(r.status, 200);
    let promoted = r.json().unwrap()["promoted"].as_str().unwrap().to_owned();
    let switched = seen(format!("signing with {promoted}")).await;
    let took = switched.saturating_duration_since(asked);
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("revocation to the README signer switching keys: {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "{took:?}: not faster than max-age polling"
    );
}

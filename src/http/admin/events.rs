//! `GET /v1/events`: the key changes a signer acts on (`key.next`,
//! `key.active`, `key.revoked`) as Server-Sent Events, each with the audit
//! record's sequence number as its `id`, so that a client that reconnects
//! with `Last-Event-ID` misses nothing (docs/events.md, "The live stream").
//!
//! A stream follows the daemon's feed; what the feed no longer holds (a
//! slow reader, a gap in the sequence, a resume) it reads back from the
//! audit log. Its buffer is bounded: a reader that stops reading is closed
//! by `http.write_timeout`.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::access::Client;
use crate::audit::Record;
use crate::daemon::Handle;
use crate::http::{Body, error};
use crate::lifecycle::event::Event;

/// Frames waiting for a slow reader.
const BUFFER: usize = 16;
/// Records read from the audit log at once while catching up.
const PAGE: usize = 256;
/// Sent first: how long a client waits before it reconnects (ms).
const RETRY_MS: u64 = 1000;

/// One event as the stream carries it (`data:`).
#[derive(Serialize)]
struct Message<'a> {
    seq: u64,
    at: String,
    #[serde(flatten)]
    event: &'a Event,
}

/// Who a stream is for, and what it carries.
pub(crate) struct Scope {
    /// Every record, whole (the console's stream); else the events signers
    /// act on, as [`Message`]s.
    pub all: bool,
    /// Ends the stream when it turns true or its sender goes (a console
    /// session signed out or expired).
    pub ends: Option<tokio::sync::watch::Receiver<bool>>,
    /// Ends the stream then (a console session's idle or absolute end);
    /// the browser reconnects, and is refused if the session is over.
    pub until: Option<tokio::time::Instant>,
    /// Asked before each record and at each keep-alive: `false` ends the
    /// stream (a console session whose credential expired or was
    /// withdrawn).
    pub still_allowed: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Held as long as the stream lives (a console session's share).
    pub hold: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Scope {
    /// `GET /v1/events`.
    pub(crate) fn signers() -> Scope {
        Scope {
            all: false,
            ends: None,
            until: None,
            still_allowed: None,
            hold: None,
        }
    }
}

fn frame(r: &Record, all: bool) -> Bytes {
    let data = if all {
        serde_json::to_string(r)
    } else {
        serde_json::to_string(&Message {
            seq: r.seq,
            at: r.at().to_rfc3339(),
            event: &r.event,
        })
    }
    .unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        r.seq, r.event.kind
    ))
}

pub(crate) fn stream(
    daemon: &Handle,
    req: &Request<Incoming>,
    client: &Client,
    peer: SocketAddr,
    addr: IpAddr,
    scope: Scope,
) -> Response<Body> {
    let after = match req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()))
    {
        None => None,
        Some(Some(n)) => Some(n),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_last_event_id",
                "Last-Event-ID must be the id of an event this stream sent (a number)",
            );
        }
    };
    let Some(permit) = daemon.event_stream_permit() else {
        tracing::warn!(client = %client.name, peer = %peer, addr = %addr, "event stream refused: events.max_subscribers reached");
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            "events.max_subscribers streams are open; try again later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    // Subscribed before anything is read, so that nothing falls between.
    let feed = daemon.subscribe_events();
    let from = after.unwrap_or_else(|| daemon.last_event());
    let (tx, rx) = mpsc::channel(BUFFER);
    let daemon = daemon.clone();
    let name = client.name.clone();
    tracing::info!(client = %name, peer = %peer, addr = %addr, after = from, "event stream opened");
    tokio::spawn(async move {
        let metrics = daemon.metrics();
        metrics.event_subscribers.inc();
        let ended = follow(&daemon, feed, from, after.is_some(), &tx, scope).await;
        metrics.event_subscribers.dec();
        drop(permit);
        tracing::info!(client = %name, peer = %peer, addr = %addr, why = ended, "event stream closed");
    });
    let mut r = Response::new(Body::stream(rx));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer (nginx) would hold events back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Sends what follows `sent` until the client goes, the daemon stops or
/// the audit log cannot be read; why it ended.
async fn follow(
    daemon: &Handle,
    mut feed: broadcast::Receiver<std::sync::Arc<Record>>,
    mut sent: u64,
    resume: bool,
    tx: &mpsc::Sender<Bytes>,
    scope: Scope,
) -> &'static str {
    let all = scope.all;
    let mut ends = scope.ends;
    let until = scope.until;
    let allowed = || scope.still_allowed.as_ref().is_none_or(|f| f());
    let _hold = scope.hold;
    let mut stopping = daemon.stopping();
    let keepalive = daemon.events_keepalive();
    if tx
        .send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
        .await
        .is_err()
    {
        return "client gone";
    }
    // Without a resume point the stream starts where the feed stood when
    // it subscribed, so that nothing written while it connected is missed;
    // right after a start the feed may not know the log's end yet: then the
    // store's.
    if !resume
        && !daemon.events_started()
        && let Ok(head) = daemon.audit_head().await
    {
        sent = sent.max(head.seq);
    }
    if resume {
        // A resume point past the log's end (another store's, or a log
        // started anew): from the end, rather than skip what comes next.
        match daemon.audit_head().await {
            Ok(head) if head.seq < sent => {
                tracing::info!(
                    last_event_id = sent,
                    head = head.seq,
                    "event stream: Last-Event-ID is past the audit log's end; following from its end"
                );
                sent = head.seq;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "event stream: the audit log cannot be read; closing");
                return "audit log unreadable";
            }
        }
        if let Err(why) = catch_up(daemon, &mut sent, u64::MAX, tx, all).await {
            return why;
        }
    }
    loop {
        tokio::select! {
            got = feed.recv() => match got {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) if !allowed() => {
                    return "session ended";
                }
                Ok(r) => {
                    if r.seq <= sent {
                        continue;
                    }
                    // A gap: records the feed skipped (written elsewhere
                    // first); read them back.
                    if r.seq > sent + 1
                        && let Err(why) = catch_up(daemon, &mut sent, r.seq - 1, tx, all).await
                    {
                        return why;
                    }
                    if let Err(why) = send(&r, &mut sent, tx, all).await {
                        return why;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(why) = catch_up(daemon, &mut sent, u64::MAX, tx, all).await {
                        return why;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return "daemon stopping",
            },
            _ = tokio::time::sleep(keepalive) => {
                if !allowed() {
                    return "session ended";
                }
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return "client gone";
                }
            }
            _ = tx.closed() => return "client gone",
            _ = async {
                match &mut ends {
                    Some(e) => { let _ = e.wait_for(|ended| *ended).await; }
                    None => std::future::pending().await,
                }
            } => return "session ended",
            _ = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => return "session idle",
            _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => return "daemon stopping",
        }
    }
}

/// Sends `r` if the stream carries it (every record, or those a signer
/// acts on); `sent` moves past it either way.
async fn send(
    r: &Record,
    sent: &mut u64,
    tx: &mpsc::Sender<Bytes>,
    all: bool,
) -> Result<(), &'static str> {
    if all || r.event.kind.concerns_signers() {
        tx.send(frame(r, all)).await.map_err(|_| "client gone")?;
    }
    *sent = r.seq;
    Ok(())
}

/// Sends the records after `sent`, up to `until`, from the audit log.
async fn catch_up(
    daemon: &Handle,
    sent: &mut u64,
    until: u64,
    tx: &mpsc::Sender<Bytes>,
    all: bool,
) -> Result<(), &'static str> {
    loop {
        let page = match daemon.events_since(*sent, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "event stream: the audit log cannot be read; closing");
                return Err("audit log unreadable");
            }
        };
        let full = page.len() == PAGE;
        for r in page.iter().filter(|r| r.seq <= until) {
            send(r, sent, tx, all).await?;
        }
        if !full || *sent >= until {
            return Ok(());
        }
    }
}

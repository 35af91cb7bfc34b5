//! Webhooks: the audit log's events POSTed to each `events.webhooks`
//! endpoint, signed per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com>), in sequence order, at least once
//! (docs/events.md, "Webhooks").
//!
//! The audit log is the outbox: each endpoint has a cursor in the store
//! (the last record delivered), moved only after a 2xx answer. Only the
//! leader delivers; a new leader reads the cursor and goes on from there,
//! so a failover repeats at most the record in flight (its `webhook-id`
//! is the same, for receivers that deduplicate). A failing endpoint is
//! retried with a capped backoff and holds back the records after it:
//! order before speed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderName;
use serde::Serialize;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::audit::{Cursor, Record};
use crate::client::Client;
use crate::config::Webhook;
use crate::daemon::shared::Shared;
use crate::lifecycle::event::{Event, Kind};
use crate::metrics::{EndpointLabels, WebhookLabels};

/// The first retry's wait; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Records read from the log at a time.
const PAGE: usize = 100;
/// How often a follower checks whether it leads, and an idle leader
/// whether a record was written elsewhere.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// The prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// One endpoint, ready to deliver to.
pub struct Endpoint {
    pub name: String,
    url: String,
    secret: Zeroizing<Vec<u8>>,
    /// Empty: every event.
    events: Vec<Kind>,
    client: Client,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A webhook that cannot be set up, with what to do.
#[derive(Debug, thiserror::Error)]
#[error("events.webhooks {name}: {why}")]
pub struct WebhookError {
    pub name: String,
    pub why: String,
}

/// Reads a Standard Webhooks secret (`whsec_` and base64) from `path`,
/// which only its owner may read.
fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("secret_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secret_file {} has mode {mode:o}: others may read it; chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("secret_file {}: {e}", path.display()))?,
    );
    let b64 = text
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .unwrap_or(text.trim());
    let key = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| {
                format!(
                    "secret_file {}: not a secret (expected whsec_ and base64, e.g. whsec_$(openssl \
                     rand -base64 32))",
                    path.display()
                )
            })?,
    );
    if key.len() < 24 || key.len() > 64 {
        return Err(format!(
            "secret_file {}: the secret must be 24 to 64 bytes (it is {})",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

/// The endpoints of the configuration, their secrets read and their TLS
/// set up (the system's roots, or `ca_file`'s alone).
pub fn load(webhooks: &[Webhook]) -> Result<Vec<Endpoint>, WebhookError> {
    webhooks
        .iter()
        .map(|w| {
            let fail = |why: String| WebhookError {
                name: w.name.clone(),
                why,
            };
            let secret = read_secret(&w.secret_file).map_err(fail)?;
            let tls = match &w.ca_file {
                Some(ca) => {
                    crate::tls::client_config(Some(ca), None).map_err(|e| fail(e.to_string()))?
                }
                None => system_roots().map_err(fail)?,
            };
            Ok(Endpoint {
                name: w.name.clone(),
                url: w.url.clone(),
                secret,
                events: w.events.clone(),
                client: Client::with_tls(tls, w.timeout.0),
            })
        })
        .collect()
}

fn system_roots() -> Result<rustls::ClientConfig, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    for c in found.certs {
        // A certificate the store holds but rustls cannot use is skipped.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(
            "the system holds no CA certificates (install ca-certificates), or set ca_file".into(),
        );
    }
    crate::tls::client_config_with_roots(roots).map_err(|e| e.to_string())
}

/// `webhook-signature`: `v1,` and the base64 of HMAC-SHA256 over
/// `{id}.{timestamp}.{body}` (Standard Webhooks, "Signature scheme").
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = openssl::pkey::PKey::hmac(secret).and_then(|key| {
        let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)?;
        s.update(format!("{id}.{timestamp}.").as_bytes())?;
        s.update(body)?;
        s.sign_to_vec()
    });
    match mac {
        Ok(m) => format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(m)),
        // HMAC over a key and bytes in memory does not fail; an empty
        // signature would be refused by the receiver, never accepted.
        Err(_) => String::new(),
    }
}

/// `webhook-id`: the same for every attempt of a record, and unique
/// across stores (the record's hash is part of it).
pub fn message_id(r: &Record) -> String {
    format!("evt_{}_{}", r.seq, r.hash.get(..16).unwrap_or(&r.hash))
}

/// The payload: Standard Webhooks' `type`, `timestamp` and `data` (the
/// record's facts, without its hashes).
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: Kind,
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    seq: u64,
    replica: &'a str,
    actor: &'a crate::audit::Actor,
    result: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

pub fn body(r: &Record) -> Vec<u8> {
    serde_json::to_vec(&Payload {
        kind: r.event.kind,
        timestamp: r.at().to_rfc3339(),
        data: Data {
            seq: r.seq,
            replica: &r.replica,
            actor: &r.actor,
            result: &r.result,
            event: &r.event,
        },
    })
    .unwrap_or_default()
}

impl Endpoint {
    fn wants(&self, kind: Kind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }

    /// One attempt: `Err` says why it failed (never the secret).
    async fn deliver(&self, r: &Record, now_s: i64) -> Result<(), String> {
        let id = message_id(r);
        let body = body(r);
        let sig = signature(&self.secret, &id, now_s, &body);
        let ts = now_s.to_string();
        let headers = [
            (HeaderName::from_static("webhook-id"), id.as_str()),
            (HeaderName::from_static("webhook-timestamp"), ts.as_str()),
            (HeaderName::from_static("webhook-signature"), sig.as_str()),
        ];
        let reply = self
            .client
            .send(
                Method::POST,
                &self.url,
                None,
                &headers,
                Some(Bytes::from(body)),
            )
            .await
            .map_err(|e| e.to_string())?;
        let status = reply.status.as_u16();
        match status {
            200..=299 => Ok(()),
            // Redirects are not followed: the configured URL is the one
            // trusted.
            300..=399 => Err(format!("answered {status} (a redirect, not followed)")),
            _ => Err(format!("answered {status}")),
        }
    }
}

/// Delivers to every endpoint while the daemon runs (one task each).
pub fn spawn(shared: Arc<Shared>, endpoints: Vec<Endpoint>, shutdown: watch::Receiver<bool>) {
    for e in endpoints {
        tokio::spawn(run(shared.clone(), Arc::new(e), shutdown.clone()));
    }
}

/// Waits `d`, or until shutdown; false at shutdown.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*shutdown.borrow(),
        _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => false,
    }
}

async fn run(shared: Arc<Shared>, e: Arc<Endpoint>, mut shutdown: watch::Receiver<bool>) {
    let labels = EndpointLabels {
        endpoint: e.name.clone(),
    };
    let mut backoff = MIN_BACKOFF;
    let mut feed = shared.feed.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !shared.is_leader() {
            if !pause(IDLE_POLL, &mut shutdown).await {
                return;
            }
            continue;
        }
        // Read each round: another leader may have moved it.
        let Ok(store) = shared.store() else {
            return;
        };
        let name = e.name.clone();
        let read = tokio::task::spawn_blocking(move || {
            let cursor = store
                .webhook_cursors()?
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c)
                .unwrap_or_default();
            // Nothing new: no read of the log (idle endpoints poll).
            let page = if store.audit_head()?.seq > cursor.delivered {
                store.audit_since(cursor.delivered, PAGE)?
            } else {
                Vec::new()
            };
            Ok::<_, crate::store::StoreError>((cursor, page))
        })
        .await;
        let (mut cursor, page) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(err)) => {
                tracing::warn!(endpoint = %e.name, error = %err, "webhook: the audit log cannot be read; retrying");
                if !pause(backoff, &mut shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(err) => {
                tracing::error!(endpoint = %e.name, error = %err, "webhook task failed");
                return;
            }
        };
        shared
            .metrics
            .webhook_delivered_seq
            .get_or_create(&labels)
            .set(cursor.delivered as i64);
        shared
            .metrics
            .webhook_pending
            .get_or_create(&labels)
            .set(shared.feed.last().saturating_sub(cursor.delivered) as i64);
        if page.is_empty() {
            // Woken by a record this replica learns of, or the poll.
            tokio::select! {
                _ = feed.recv() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => return,
            }
            continue;
        }
        let mut saved = cursor.delivered;
        for r in &page {
            if !e.wants(r.event.kind) {
                // Not subscribed to: passed over, saved with the next one.
                cursor.delivered = r.seq;
                continue;
            }
            // A replica that lost the lease stops at once: the new leader
            // goes on from the cursor.
            if !shared.is_leader() {
                break;
            }
            let now_s = shared.clock.now().unix_seconds();
            match e.deliver(r, now_s).await {
                Ok(()) => {
                    count(&shared, &e.name, "ok");
                    if cursor.failures > 0 {
                        tracing::info!(endpoint = %e.name, seq = r.seq, failures = cursor.failures, "webhook delivered after failures");
                    }
                    backoff = MIN_BACKOFF;
                    cursor.delivered = r.seq;
                    cursor.failures = 0;
                    cursor.last_error = None;
                    cursor.failing_since_ms = None;
                    // Each delivery is recorded before the next is sent: a
                    // failover repeats at most one. A replica that lost the
                    // lease meanwhile leaves the cursor to the new leader.
                    if !shared.is_leader() || !save(&shared, &e.name, &cursor).await {
                        break;
                    }
                    saved = cursor.delivered;
                    shared
                        .metrics
                        .webhook_delivered_seq
                        .get_or_create(&labels)
                        .set(cursor.delivered as i64);
                }
                Err(why) => {
                    count(&shared, &e.name, "failed");
                    cursor.failures += 1;
                    cursor.last_error = Some(why.clone());
                    cursor
                        .failing_since_ms
                        .get_or_insert(shared.clock.now().as_millis());
                    tracing::warn!(endpoint = %e.name, seq = r.seq, error = %why, retry_in = ?backoff, "webhook delivery failed");
                    if shared.is_leader() && save(&shared, &e.name, &cursor).await {
                        saved = cursor.delivered;
                    }
                    if !pause(backoff, &mut shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    // The next round starts again at this record.
                    break;
                }
            }
        }
        if cursor.delivered != saved && shared.is_leader() {
            save(&shared, &e.name, &cursor).await;
        }
    }
}

fn count(shared: &Shared, endpoint: &str, result: &str) {
    shared
        .metrics
        .webhook_deliveries
        .get_or_create(&WebhookLabels {
            endpoint: endpoint.into(),
            result: result.into(),
        })
        .inc();
}

/// Records the cursor in the store; false when it could not be.
async fn save(shared: &Shared, endpoint: &str, cursor: &Cursor) -> bool {
    let Ok(store) = shared.store() else {
        return false;
    };
    let (name, c) = (endpoint.to_owned(), cursor.clone());
    match tokio::task::spawn_blocking(move || store.set_webhook_cursor(&name, &c)).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::warn!(endpoint, error = %err, "webhook cursor not saved; the record may be delivered again");
            false
        }
        Err(err) => {
            tracing::warn!(endpoint, error = %err, "webhook cursor task failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (standard-webhooks, spec/
    /// standard-webhooks.md, and its libraries' tests).
    #[test]
    fn the_signature_is_the_specifications() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_read_strictly() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s");
        std::fs::write(&p, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&p).unwrap().len(), 24);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_secret(&p).unwrap_err().contains("chmod 600"));
        std::fs::write(&p, "whsec_not base64!").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_secret(&p).unwrap_err().contains("not a secret"));
    }
}

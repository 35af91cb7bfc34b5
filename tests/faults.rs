//! Faults, in process with injected parts: a store that fails like a full
//! or read-only disk, and a wall clock that jumps.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use jwksd::audit::{Cursor, Entry, Head, Record};
use jwksd::client::Client;
use jwksd::clock::{Clock, SystemClock};
use jwksd::config::{Checked, Config, ConfigSource};
use jwksd::keys::{KeyMaterial, Kid};
use jwksd::lifecycle::KeyringState;
use jwksd::server::{self, Options, Running};
use jwksd::store::fs::FsStore;
use jwksd::store::{KeyStore, Loaded, Rekeyed, StoreError};
use jwksd::time::Timestamp;
use serde_json::{Value, json};

/// A directory store whose writes fail while `fail` is set (ENOSPC).
struct FaultyStore {
    inner: FsStore,
    fail: Arc<AtomicBool>,
}

impl FaultyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::Io {
                op: "write",
                path: self.inner.dir().join("state.json.tmp"),
                source: std::io::Error::from_raw_os_error(28),
            })
        } else {
            Ok(())
        }
    }
}

impl KeyStore for FaultyStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.load()
    }
    fn stage(&self, key: &KeyMaterial) -> Result<(), StoreError> {
        self.check()?;
        self.inner.stage(key)
    }
    fn discard(&self, kid: &Kid) {
        self.inner.discard(kid)
    }
    fn commit(&self, state: &KeyringState, audit: &[Entry]) -> Result<Vec<Record>, StoreError> {
        self.check()?;
        self.inner.commit(state, audit)
    }
    fn record(&self, audit: &[Entry]) -> Result<Vec<Record>, StoreError> {
        self.check()?;
        self.inner.record(audit)
    }
    fn audit_since(&self, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.inner.audit_since(after, limit)
    }
    fn audit_head(&self) -> Result<Head, StoreError> {
        self.inner.audit_head()
    }
    fn webhook_cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError> {
        self.inner.webhook_cursors()
    }
    fn set_webhook_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), StoreError> {
        self.inner.set_webhook_cursor(endpoint, cursor)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn version(&self) -> Result<u64, StoreError> {
        self.inner.version()
    }
    fn rekey(&self, proceed: &mut dyn FnMut(&Kid) -> bool) -> Result<Rekeyed, StoreError> {
        self.inner.rekey(proceed)
    }
}

/// The system clock plus an offset the test can jump.
struct JumpingWall(AtomicI64);

impl Clock for JumpingWall {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(SystemClock.now().as_millis() + self.0.load(Ordering::SeqCst))
    }
}

fn config(dir: &Path, body: &str) -> Checked {
    let yaml = format!(
        "keys_dir: {k}\nalgorithms: [ES256]\nlisten:\n  public: 127.0.0.1:0\n  admin: 127.0.0.1:0\nadmin:\n  operator_token_file: {k}/operator.token\n  signer_token_file: {k}/signer.token\n{body}",
        k = dir.join("keys").display()
    );
    Config::parse(&yaml, "test", SystemClock.now()).unwrap()
}

struct Harness {
    running: Running,
    client: Client,
    public: String,
    admin: String,
    signer: String,
}

impl Harness {
    async fn start(
        dir: &Path,
        body: &str,
        store: Option<Box<dyn KeyStore>>,
        wall: Option<Arc<dyn Clock>>,
    ) -> Harness {
        let mut opts = Options::new(config(dir, body), ConfigSource::BuiltIn);
        opts.store = store;
        opts.wall = wall;
        let running = server::start(opts).await.unwrap();
        let h = Harness {
            public: format!("http://{}", running.public_addr),
            admin: format!("http://{}", running.admin_addr),
            signer: std::fs::read_to_string(dir.join("keys/signer.token"))
                .unwrap()
                .trim()
                .to_owned(),
            client: Client::new(Duration::from_secs(20)),
            running,
        };
        h.wait(|h| async move { h.active().await.is_some() }).await;
        h
    }

    async fn wait<'a, F, Fut>(&'a self, f: F)
    where
        F: Fn(&'a Harness) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f(self).await {
            assert!(Instant::now() < deadline, "condition not met in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn active(&self) -> Option<String> {
        let r = self
            .client
            .get(
                &format!("{}/v1/keys/active", self.admin),
                Some(&self.signer),
            )
            .await
            .ok()?;
        r.json()?["kid"].as_str().map(str::to_owned)
    }

    async fn jwks_kids(&self) -> Vec<String> {
        let r = self
            .client
            .get(&format!("{}/.well-known/jwks.json", self.public), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        r.json().unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn metrics(&self) -> String {
        let r = self
            .client
            .get(&format!("{}/metrics", self.admin), None)
            .await
            .unwrap();
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    /// The value of one sample (`name{labels}` as printed), if present.
    async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    async fn sign(&self) -> Value {
        let r = self
            .client
            .post_json(
                &format!("{}/v1/sign", self.admin),
                Some(&self.signer),
                &json!({"claims": {"sub": "x"}}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.error_message());
        r.json().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_rotation_loudly_and_keeps_serving_until_it_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let store = FaultyStore {
        inner: FsStore::open(tmp.path().join("keys"), None).unwrap(),
        fail: fail.clone(),
    };
    let body = "rotation:\n  every: 2s\ntokens:\n  max_lifetime: 4s\n  clock_skew: 0s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n";
    let h = Harness::start(tmp.path(), body, Some(Box::new(store)), None).await;
    let first = h.active().await.unwrap();
    fail.store(true, Ordering::SeqCst);
    // The scheduled rotation (2 s after activation) fails, and is retried.
    h.wait(|h| async move { h.metric("jwksd_lifecycle_failing").await == Some(1.0) })
        .await;
    assert!(
        h.metric("jwksd_rotations_total{alg=\"ES256\",trigger=\"schedule\",result=\"error\"}")
            .await
            >= Some(1.0)
    );
    assert!(
        h.metric("jwksd_lifecycle_failures_total{action=\"commit\"}")
            .await
            >= Some(1.0)
    );
    // Still ready, still serving and signing with the current key.
    let r = h
        .client
        .get(&format!("{}/readyz", h.public), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let ready = r.json().unwrap();
    assert_eq!(ready["lifecycle_failing"], true, "{ready}");
    // Details (paths in the key directory) stay off the public listener.
    assert!(!ready.to_string().contains("state.json"), "{ready}");
    assert!(h.jwks_kids().await.contains(&first));
    assert_eq!(h.sign().await["kid"], first.as_str());
    assert_eq!(h.active().await.as_deref(), Some(first.as_str()));
    // Nothing half-written is on disk.
    assert!(
        std::fs::read_dir(tmp.path().join("keys"))
            .unwrap()
            .all(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                !n.ends_with(".tmp") && !n.ends_with(".pending")
            })
    );

    fail.store(false, Ordering::SeqCst);
    h.wait(|h| {
        let first = first.clone();
        async move { h.active().await.is_some_and(|k| k != first) }
    })
    .await;
    assert_eq!(h.metric("jwksd_lifecycle_failing").await, Some(0.0));
    assert!(
        h.metric("jwksd_rotations_total{alg=\"ES256\",trigger=\"schedule\",result=\"ok\"}")
            .await
            >= Some(1.0)
    );
    let r = h
        .client
        .get(&format!("{}/readyz", h.public), None)
        .await
        .unwrap();
    assert_eq!(r.json().unwrap()["lifecycle_failing"], false);
    h.running.shutdown().await;
    // What is on disk loads cleanly.
    let store = FsStore::open(tmp.path().join("keys"), None).unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
    assert_eq!(loaded.state.keys.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jumps_cause_no_burst_and_no_early_retirement() {
    let tmp = tempfile::tempdir().unwrap();
    let wall = Arc::new(JumpingWall(AtomicI64::new(0)));
    let body = "rotation:\n  every: 3s\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n";
    let h = Harness::start(tmp.path(), body, None, Some(wall.clone())).await;
    let first = h.active().await.unwrap();
    // Wait for one rotation: `first` is now retiring (retention 6 s).
    h.wait(|h| {
        let first = first.clone();
        async move { h.active().await.is_some_and(|k| k != first) }
    })
    .await;
    let second = h.active().await.unwrap();
    let rotated_at = Instant::now();

    // Three days forward.
    wall.0.store(3 * 86_400_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rotated_at.elapsed() < Duration::from_secs(6));
    assert!(h.jwks_kids().await.contains(&first), "retired early");
    assert_eq!(
        h.active().await.as_deref(),
        Some(second.as_str()),
        "rotated on the jump"
    );
    assert_eq!(h.metric("jwksd_clock_jumps_total").await, Some(1.0));
    let offset = h.metric("jwksd_clock_offset_seconds").await.unwrap();
    assert!((offset - 259_200.0).abs() < 5.0, "{offset}");
    // Tokens carry jwksd's time, not the jumped wall clock.
    let token = h.sign().await["token"].as_str().unwrap().to_owned();
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let real = SystemClock.now().unix_seconds();
    assert!(
        (payload["iat"].as_i64().unwrap() - real).abs() <= 2,
        "{payload}"
    );

    // Back to agreement, then one hour backwards: still no early retirement
    // and rotations keep their pace.
    wall.0.store(0, Ordering::SeqCst);
    assert_eq!(h.metric("jwksd_clock_offset_seconds").await, Some(0.0));
    wall.0.store(-3_600_000, Ordering::SeqCst);
    let t = Instant::now();
    let mut actives = vec![second.clone()];
    while t.elapsed() < Duration::from_secs(7) {
        let a = h.active().await.unwrap();
        if actives.last() != Some(&a) {
            actives.push(a);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Rotations continued every 3 s on jwksd's time: 2 or 3 in 7 s.
    assert!((2..=4).contains(&actives.len()), "{actives:?}");
    assert_eq!(h.metric("jwksd_clock_jumps_total").await, Some(2.0));
    h.running.shutdown().await;
}

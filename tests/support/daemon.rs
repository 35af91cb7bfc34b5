//! Starts the real `jwksd` binary on ephemeral ports and talks HTTP to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jwksd::client::{Client, Reply};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_jwksd");

/// Second-scale timings: rotate every 3 s, tokens live 4 s, verifiers cache
/// 1 s, skew 1 s (so publish_ahead is 2 s), signers cache 1 s (so a key
/// rotated out stays published 8 s: 1 + 4 + 1 + the key directory's 2 s
/// commit window).
pub const FAST: &str = "rotation:\n  every: 3s\ntokens:\n  max_lifetime: 4s\n  clock_skew: 1s\njwks:\n  cache_max_age: 1s\nsigning_key:\n  cache_max_age: 1s\n";

pub struct Daemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    pub public: String,
    pub admin: String,
    pub operator: String,
    pub signer: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub client: Client,
    env: Vec<(String, String)>,
}

/// Writes a config for `dir` with `body` appended (ports are ephemeral).
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    write_config_with(dir, "", body)
}

/// Like [`write_config`], with extra lines for the `admin` section.
pub fn write_config_with(dir: &Path, admin_extra: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("jwksd.yaml");
    let text = format!(
        "keys_dir: {keys}\nlisten:\n  public: 127.0.0.1:0\n  admin: 127.0.0.1:0\nadmin:\n  operator_token_file: {keys}/operator.token\n  signer_token_file: {keys}/signer.token\n{admin_extra}log:\n  format: json\n{body}",
        keys = dir.join("keys").display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// A started binary: its process, and the (public, admin) base URLs it
/// reports once it listens. Every test that runs the daemon's binary starts
/// it here ([`Daemon`] on top; the crash test uses it bare, to kill the
/// process at any instant, start-up included).
pub struct Started {
    pub child: Child,
    pub addrs: std::sync::mpsc::Receiver<(String, String)>,
}

/// Starts `jwksd serve -c config` with `env` (and none of the caller's
/// `JWKSD_*` secrets); its log lines go to `log`.
pub fn start_binary(
    config: &Path,
    env: &[(String, String)],
    log: Arc<Mutex<Vec<String>>>,
) -> Started {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("JWKSD_CONFIG")
        .env_remove("JWKSD_STORE_URL")
        .env_remove("JWKSD_MASTER_KEY")
        .env_remove("JWKSD_PREVIOUS_MASTER_KEY")
        .env_remove("JWKSD_NEW_MASTER_KEY")
        .env_remove("JWKSD_OPERATOR_TOKEN")
        .env_remove("JWKSD_SIGNER_TOKEN")
        .env_remove("JWKSD_PKCS11_PIN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start jwksd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    let scheme = |tls: &Value| {
        if tls == &Value::Bool(true) {
            "https"
        } else {
            "http"
        }
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send((
                    format!(
                        "{}://{}",
                        scheme(&v["public_tls"]),
                        v["public"].as_str().unwrap_or_default()
                    ),
                    format!(
                        "{}://{}",
                        scheme(&v["admin_tls"]),
                        v["admin"].as_str().unwrap_or_default()
                    ),
                ));
            }
            log.lock().unwrap().push(line);
        }
    });
    Started { child, addrs: rx }
}

impl Daemon {
    /// Starts jwksd in a fresh directory with `body` as extra configuration.
    pub async fn start(dir: &Path, body: &str) -> Daemon {
        let config = write_config(dir, body);
        Self::start_with(dir, &config, &[]).await
    }

    pub async fn start_with(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::start_with_client(dir, config, env, Client::new(Duration::from_secs(30))).await
    }

    /// Starts jwksd and talks to it with `client` (for TLS).
    pub async fn start_with_client(
        dir: &Path,
        config: &Path,
        env: &[(&str, &str)],
        client: Client,
    ) -> Daemon {
        let mut d = Daemon {
            dir: dir.to_owned(),
            config: config.to_owned(),
            child: None,
            public: String::new(),
            admin: String::new(),
            operator: String::new(),
            signer: String::new(),
            log: Arc::new(Mutex::new(Vec::new())),
            client,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn().await;
        d
    }

    async fn spawn(&mut self) {
        let Started { child, addrs: rx } = start_binary(&self.config, &self.env, self.log.clone());
        self.child = Some(child);
        let (public, admin) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => panic!("jwksd did not start listening:\n{}", self.log_text()),
        };
        self.public = public;
        self.admin = admin;
        let keys = self.dir.join("keys");
        self.operator = std::fs::read_to_string(keys.join("operator.token"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        self.signer = std::fs::read_to_string(keys.join("signer.token"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        self.wait_ready().await;
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Log events (JSON objects) whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// The log lines with `message`, waiting up to 10 s for the first: the
    /// daemon's stderr reaches the test through a reader thread.
    pub async fn wait_events(&self, message: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.events(message);
            if !found.is_empty() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self
                .client
                .get(&format!("{}/readyz", self.public), None)
                .await
                && r.status == 200
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("jwksd not ready in time:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get_public(&self, path: &str) -> Reply {
        self.client
            .get(&format!("{}{path}", self.public), None)
            .await
            .unwrap()
    }

    pub async fn jwks(&self) -> Value {
        self.get_public("/.well-known/jwks.json")
            .await
            .json()
            .unwrap()
    }

    pub async fn kids(&self) -> Vec<String> {
        kids(&self.jwks().await)
    }

    pub async fn keys(&self) -> Value {
        let r = self
            .client
            .get(&format!("{}/v1/keys", self.admin), Some(&self.operator))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.error_message());
        r.json().unwrap()
    }

    pub async fn sign(&self, alg: &str, claims: Value) -> Reply {
        self.client
            .post_json(
                &format!("{}/v1/sign", self.admin),
                Some(&self.signer),
                &serde_json::json!({"alg": alg, "claims": claims}),
            )
            .await
            .unwrap()
    }

    pub async fn rotate(&self, body: Value) -> Reply {
        self.client
            .post_json(
                &format!("{}/v1/rotate", self.admin),
                Some(&self.operator),
                &body,
            )
            .await
            .unwrap()
    }

    pub async fn revoke(&self, kid: &str) -> Reply {
        self.client
            .send(
                hyper::Method::POST,
                &format!("{}/v1/keys/{kid}/revoke", self.admin),
                Some(&self.operator),
                &[],
                None,
            )
            .await
            .unwrap()
    }

    pub async fn active_key(&self, alg: &str) -> Reply {
        self.client
            .get(
                &format!("{}/v1/keys/active?alg={alg}", self.admin),
                Some(&self.signer),
            )
            .await
            .unwrap()
    }

    /// `/v1/keys/active` revalidated with `If-None-Match: tag`.
    pub async fn active_key_if_none_match(&self, alg: &str, tag: &str) -> Reply {
        self.client
            .send(
                hyper::Method::GET,
                &format!("{}/v1/keys/active?alg={alg}", self.admin),
                Some(&self.signer),
                &[(hyper::header::IF_NONE_MATCH, tag)],
                None,
            )
            .await
            .unwrap()
    }

    /// The value of one metric sample (`name{labels}` as printed).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let r = self
            .client
            .get(&format!("{}/metrics", self.admin), None)
            .await
            .ok()?;
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// Runs a jwksd operator command against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .arg("--admin-url")
            .arg(&self.admin)
            .args(args)
            .env_remove("JWKSD_CONFIG")
            .env_remove("JWKSD_OPERATOR_TOKEN")
            .output()
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), "TERM");
        wait(&mut child, Duration::from_secs(30))
    }

    /// SIGKILL, then waits.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.log.lock().unwrap().clear();
        self.spawn().await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn wait(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("jwksd did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

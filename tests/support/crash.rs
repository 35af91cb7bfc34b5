//! What the crash tests (`tests/crash.rs`, `tests/pkcs11_crash.rs`) share:
//! reproducible kill instants from a printed seed, the daemon as a child
//! process to kill, and the JWK Set watched between kills.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jwksd::client::Client;

use super::daemon::start_binary;

/// xorshift64*: reproducible kill instants from a printed seed.
pub struct Rng(pub u64);

impl Rng {
    /// The seed in `var` (to replay a run), else one from the clock;
    /// printed with `what` so that a failure can be replayed.
    pub fn from_env(var: &str, what: &str) -> (Rng, u64) {
        let seed: u64 = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{what} seed {seed} (set {var} to replay)");
        (Rng(seed), seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `var` as a number, else `default`.
pub fn env_count(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A daemon started to be killed, with its log.
pub struct Proc {
    pub child: Child,
    pub addrs: mpsc::Receiver<(String, String)>,
    log: Arc<Mutex<Vec<String>>>,
}

pub fn spawn(config: &Path) -> Proc {
    let log = Arc::new(Mutex::new(Vec::new()));
    let started = start_binary(config, &[], log.clone());
    Proc {
        child: started.child,
        addrs: started.addrs,
        log,
    }
}

impl Proc {
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGKILL, and the exit collected.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Reads the JWK Set for a random while (up to 1.5 s), recording when each
/// kid was first seen.
pub async fn observe_jwks(
    client: &Client,
    public: &str,
    observed: &mut BTreeMap<String, Instant>,
    rng: &mut Rng,
    ctx: &str,
) {
    let until = Instant::now() + Duration::from_millis(rng.below(1500));
    loop {
        let r = client
            .get(&format!("{public}/.well-known/jwks.json"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{ctx}: JWKS");
        for k in r.json().unwrap()["keys"].as_array().unwrap() {
            observed
                .entry(k["kid"].as_str().unwrap().to_owned())
                .or_insert_with(Instant::now);
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
    }
}

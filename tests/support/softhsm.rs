//! A SoftHSM2 token of its own for a test that runs the daemon with
//! `keys.backend: pkcs11` (tests/pkcs11_crash.rs, tests/pkcs11_replicas.rs).
//!
//! As in tests/pkcs11.rs: SoftHSM2 reads `SOFTHSM2_CONF` when its module is
//! initialised, once per process, so the test re-runs its own binary for
//! itself alone with `SOFTHSM2_CONF` naming a fresh token directory; every
//! daemon it starts inherits it, and so shares the token with the test
//! process. Without SoftHSM2 the test says so and passes, unless
//! `JWKSD_TEST_REQUIRE_SOFTHSM2` is set (scripts/test sets it).

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jwksd::keys::pkcs11::{Pin, Token, TokenConfig, TokenError, TokenKey, TokenObject};
use jwksd::keys::{Alg, Kid};

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const LABEL: &str = "jwksd";
pub const SO_PIN: &str = "0000";
pub const USER_PIN: &str = "1234";
/// Set in the child process: the test's directory (SoftHSM2 configuration,
/// token directory, PIN file).
pub const CHILD: &str = "JWKSD_TEST_SOFTHSM_DIR";

/// The test's token directory, as seen from the child process.
pub struct Hsm {
    pub dir: PathBuf,
}

impl Hsm {
    pub fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }

    /// The `keys:` section of a daemon configuration on this token.
    pub fn keys_config(&self) -> String {
        format!(
            "keys:\n  backend: pkcs11\n  pkcs11:\n    module: {MODULE}\n    token_label: {LABEL}\n    pin_file: {}\n",
            self.pin_file().display()
        )
    }

    /// SoftHSM2's own file for the one token (label, serial, PIN blobs,
    /// flags), which every `C_Login` rewrites in place: see
    /// `a_kill_during_a_login_can_lose_the_token` in tests/pkcs11_crash.rs.
    pub fn token_file(&self) -> PathBuf {
        let slots: Vec<PathBuf> = std::fs::read_dir(self.dir.join("tokens"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(slots.len(), 1, "one token directory: {slots:?}");
        slots[0].join("token.object")
    }

    /// Opens the token in this process (once per process: call
    /// [`Token::reopen`] to see afresh what other processes wrote).
    pub fn open(&self) -> Arc<Token> {
        let mut config = TokenConfig::new(MODULE, LABEL, Pin::from_file(&self.pin_file()).unwrap());
        config.pin_file = Some(self.pin_file());
        config.sessions = 1;
        Token::open(config).unwrap()
    }
}

/// The token's jwksd objects, listed afresh. A listing made while a daemon
/// changes the token can fail on an object made, renamed or destroyed in
/// between (`StaleHandle` for a handle that went, cryptoki's
/// `InvalidValue` for an attribute that was empty when its length was
/// asked and not when its value was): listed again, a few times.
pub fn list_afresh(token: &Token) -> Vec<TokenObject> {
    retried(|| {
        token.reopen()?;
        token.list()
    })
}

/// [`Token::key`], looked up again as [`list_afresh`] lists again.
pub fn key_afresh(token: &Token, kid: &Kid, alg: Alg) -> Option<TokenKey> {
    retried(|| token.key(kid, alg))
}

fn retried<R>(mut f: impl FnMut() -> Result<R, TokenError>) -> R {
    let mut failures = Vec::new();
    loop {
        match f() {
            Ok(r) => return r,
            Err(e) if failures.len() < 20 => {
                failures.push(e.to_string());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the token: {e} (before: {failures:?})"),
        }
    }
}

pub fn installed() -> bool {
    Path::new(MODULE).exists()
        && Command::new("softhsm2-util")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Runs `body` in a process of its own (this test binary, filtered to
/// `name`) whose `SOFTHSM2_CONF` names a fresh directory holding one token
/// labelled [`LABEL`], user PIN [`USER_PIN`] in `pin` (mode 600). The child
/// runs in a process group of its own: past `deadline` the whole group
/// (the daemons it started included) is killed and the test fails.
pub fn isolated(name: &str, deadline: Duration, body: impl FnOnce(&Hsm)) {
    isolated_with(name, deadline, &[LABEL], USER_PIN, body)
}

/// [`isolated`] with these tokens (each with SO PIN [`SO_PIN`] and user PIN
/// `user_pin`, which `pin` holds).
pub fn isolated_with(
    name: &str,
    deadline: Duration,
    labels: &[&str],
    user_pin: &str,
    body: impl FnOnce(&Hsm),
) {
    if let Some(dir) = std::env::var_os(CHILD) {
        body(&Hsm { dir: dir.into() });
        return;
    }
    if !installed() {
        assert!(
            std::env::var_os("JWKSD_TEST_REQUIRE_SOFTHSM2").is_none(),
            "softhsm2 is not installed (apt-get install softhsm2) and JWKSD_TEST_REQUIRE_SOFTHSM2 is set"
        );
        eprintln!("skipped {name}: softhsm2 is not installed (apt-get install softhsm2)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = init(dir.path(), labels, user_pin);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD, dir.path())
        .env("SOFTHSM2_CONF", &conf)
        .env_remove("JWKSD_PKCS11_PIN")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let until = started + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= until {
            // SAFETY: kill(2) of the process group this test created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The daemons of a child that failed may outlive it: end its group.
    // SAFETY: as above (ESRCH when the group is gone already).
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    println!("{stdout}");
    eprintln!("{stderr}");
    let Some(status) = status else {
        panic!("{name} did not finish within {deadline:?}");
    };
    assert!(
        status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process (after {:?})",
        started.elapsed()
    );
    eprintln!("{name}: passed in {:?}", started.elapsed());
}

/// Initialises one more token `label` in the SoftHSM2 configuration `conf`.
pub fn init_token(conf: &Path, label: &str, user_pin: &str) {
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", SO_PIN, "--pin", user_pin])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A SoftHSM2 configuration under `dir` and the tokens `labels`,
/// initialised; the user PIN in `dir/pin` (mode 600).
pub fn init(dir: &Path, labels: &[&str], user_pin: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    for label in labels {
        init_token(&conf, label, user_pin);
    }
    let pin = dir.join("pin");
    std::fs::write(&pin, format!("{user_pin}\n")).unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    conf
}

//! A PKCS#11 token's own signing rate: the reference that `/v1/sign` on the
//! `pkcs11` key backend is measured against (bench/run, BENCHMARKS.md).
//!
//! Generates a keypair in the token with the attributes jwksd gives its
//! keys (token objects; the private half private, sensitive, never
//! extractable), signs a typical JWS signing input (253 bytes) in a
//! loop for a while, prints the signatures per second, and destroys the
//! keypair. Signing is what jwksd asks of the token: ES256 is a SHA-256
//! digest computed here (OpenSSL, as jwksd does) signed with `CKM_ECDSA`;
//! RS256 is `CKM_SHA256_RSA_PKCS` over the input. Each signature is one
//! `C_SignInit` and `C_Sign` (cryptoki's `Session::sign`).
//!
//! `--via cryptoki` (the default) calls the module through cryptoki on
//! sessions of its own, nothing of jwksd's in between: the bare token
//! rate. `--via token` signs through `jwksd::keys::pkcs11`
//! (`Token::open`, `Token::generate`, `TokenSigner::sign_message`, one
//! pooled session per thread), which adds the pool's lending and the
//! handle's lock. Pin the process to a core (`taskset -c 0`) to get the
//! one-core rate.
//!
//! ```text
//! SOFTHSM2_CONF=/tmp/x/softhsm2.conf taskset -c 0 \
//!   cargo run --release --example pkcs11_speed -- --token jwksd --pin-file /tmp/x/pin
//! ```
//!
//! Output, one line per algorithm (bench/run reads the third field):
//!
//! ```text
//! ES256 cryptoki 18412.3 signatures/s (92061 in 5.000 s, 1 thread; 54.2 us CPU per signature)
//! ```

use std::error::Error;
use std::path::PathBuf;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Parser, ValueEnum};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use jwksd::keys::Alg;
use jwksd::keys::pkcs11::{self, Pin, Token, TokenConfig};
use zeroize::Zeroizing;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Parser)]
#[command(about = "A PKCS#11 token's own ES256/RS256 signing rate")]
struct Args {
    /// The PKCS#11 module.
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    module: PathBuf,
    /// The token's label.
    #[arg(long, default_value = "jwksd")]
    token: String,
    /// File holding the user PIN (one line, mode 600); without it,
    /// JWKSD_PKCS11_PIN.
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// Seconds of signing per algorithm (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Algorithms, in order (RS256 is RSA-2048).
    #[arg(long = "alg", value_enum, default_values_t = [AlgArg::Es256, AlgArg::Rs256])]
    algs: Vec<AlgArg>,
    /// Signing threads, each on a session of its own.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Through cryptoki directly, or through jwksd's keys::pkcs11.
    #[arg(long, value_enum, default_value_t = Via::Cryptoki)]
    via: Via,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AlgArg {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "RS256")]
    Rs256,
}

impl AlgArg {
    fn alg(self) -> Alg {
        match self {
            AlgArg::Es256 => Alg::ES256,
            AlgArg::Rs256 => Alg::RS256,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Via {
    Cryptoki,
    Token,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Cryptoki => "cryptoki",
            Via::Token => "token",
        }
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("pkcs11_speed: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let duration = Duration::try_from_secs_f64(args.seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or("--seconds must be a number above 0")?;
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    match args.via {
        Via::Cryptoki => {
            let bench = Bare::open(&args)?;
            let result = args.algs.iter().try_for_each(|&alg| {
                let message = signing_input(alg.alg());
                let rate = bench.rate(alg.alg(), &message, args.threads, duration)?;
                report(alg.alg(), args.via, rate, args.threads);
                Ok(())
            });
            bench.close();
            result
        }
        Via::Token => {
            let pin = Pin::resolve(args.pin_file.as_deref())?;
            let mut config = TokenConfig::new(&args.module, &args.token, pin);
            config.sessions = args.threads;
            let token = Token::open(config)?;
            for &alg in &args.algs {
                let message = signing_input(alg.alg());
                let key = token.generate(alg.alg(), 2048)?;
                let signer = token.signer(&key)?;
                let rate = measure(
                    args.threads,
                    duration,
                    || Ok(()),
                    |()| signer.sign_message(&message).map(drop).map_err(Into::into),
                );
                drop(signer);
                let destroyed = token.destroy(&key.kid);
                let rate = rate?;
                destroyed?;
                report(alg.alg(), args.via, rate, args.threads);
            }
            Ok(())
        }
    }
}

struct Rate {
    signatures: u64,
    elapsed: Duration,
    /// The process's CPU time (user and system, every thread) over
    /// `elapsed`.
    cpu: Duration,
}

/// The process's CPU time so far, user and system, every thread.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given, which is plain
    // data; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn report(alg: Alg, via: Via, rate: Rate, threads: usize) {
    let secs = rate.elapsed.as_secs_f64();
    let n = rate.signatures.max(1) as f64;
    println!(
        "{alg} {} {:.1} signatures/s ({} in {secs:.3} s, {threads} thread{}; {:.1} us CPU per signature)",
        via.name(),
        rate.signatures as f64 / secs,
        rate.signatures,
        if threads == 1 { "" } else { "s" },
        rate.cpu.as_secs_f64() * 1e6 / n,
    );
}

/// A JWS signing input like the ones `/v1/sign` makes: the base64url
/// header (alg, typ, a 43-character kid) and claims (sub, aud, iat, nbf,
/// exp, a 22-character jti), joined by a dot.
fn signing_input(alg: Alg) -> Vec<u8> {
    let header = format!(
        r#"{{"typ":"JWT","alg":"{alg}","kid":"{}"}}"#,
        "k".repeat(43)
    );
    let claims = format!(
        r#"{{"sub":"bench","aud":"api","iat":1764633600,"nbf":1764633600,"exp":1764634500,"jti":"{}"}}"#,
        "j".repeat(22)
    );
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
    .into_bytes()
}

/// Signs on `threads` threads for `duration`, each thread with the state
/// `setup` gives it (its session), after a warm-up of a tenth of
/// `duration` (at most 0.5 s) that is not counted.
fn measure<S>(
    threads: usize,
    duration: Duration,
    setup: impl Fn() -> Result<S> + Sync,
    sign: impl Fn(&S) -> Result<()> + Sync,
) -> Result<Rate> {
    let warmup = (duration / 10).min(Duration::from_millis(500));
    let ready = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<u64> {
                    // Every thread reaches the barrier, even on an error,
                    // so that the others are not left waiting.
                    let warm = setup().and_then(|state| {
                        let until = Instant::now() + warmup;
                        while Instant::now() < until {
                            sign(&state)?;
                        }
                        Ok(state)
                    });
                    ready.wait();
                    let state = warm?;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        sign(&state)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        let cpu = cpu_time();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let counts = workers
            .into_iter()
            .map(|w| w.join().map_err(|_| "a signing thread panicked")?)
            .collect::<Result<Vec<u64>>>()?;
        // Each thread's last signature ends after the stop: the time is
        // taken once all of them have.
        Ok(Rate {
            signatures: counts.iter().sum(),
            elapsed: start.elapsed(),
            cpu: cpu_time().saturating_sub(cpu),
        })
    })
}

/// The module through cryptoki, logged in, one session per signing thread.
struct Bare {
    ctx: Pkcs11,
    slot: Slot,
    /// Keeps the login (the application's) while keys are made and used.
    main: Session,
}

impl Bare {
    fn open(args: &Args) -> Result<Bare> {
        let pin = read_pin(args.pin_file.as_deref())?;
        let ctx = Pkcs11::new(&args.module)
            .map_err(|e| format!("loading {}: {e}", args.module.display()))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
        let mut slot = None;
        for s in ctx.get_slots_with_initialized_token()? {
            if ctx.get_token_info(s)?.label().trim_end() == args.token {
                slot = Some(s);
            }
        }
        let slot = slot.ok_or_else(|| format!("no token labelled {:?}", args.token))?;
        let main = ctx.open_rw_session(slot)?;
        match main.login_with_raw(UserType::User, &RawAuthPin::new(Box::new(pin.to_vec()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(format!("logging in to {:?}: {e}", args.token).into()),
        }
        Ok(Bare { ctx, slot, main })
    }

    /// The signing rate of a keypair generated for it (and destroyed
    /// after).
    fn rate(&self, alg: Alg, message: &[u8], threads: usize, duration: Duration) -> Result<Rate> {
        let (public, private) = self.generate(alg)?;
        let result = (|| {
            // Correct once: the token verifies its own signature.
            let signature = sign_once(&self.main, alg, private, message)?;
            let (mechanism, input) = pkcs11::signing(alg, message);
            self.main
                .verify(&mechanism, public, &input, &signature)
                .map_err(|e| format!("the token's own {alg} signature does not verify: {e}"))?;
            // (A Session is not Sync: the threads share the context, not
            // self.)
            let (ctx, slot) = (&self.ctx, self.slot);
            measure(
                threads,
                duration,
                || Ok(ctx.open_rw_session(slot)?),
                |session| sign_once(session, alg, private, message).map(drop),
            )
        })();
        let destroyed = self
            .main
            .destroy_object(private)
            .and(self.main.destroy_object(public));
        let rate = result?;
        destroyed?;
        Ok(rate)
    }

    /// A keypair with jwksd's attributes (keys::pkcs11's own templates),
    /// named `pkcs11_speed-<pid>` (not a kid: jwksd's listing leaves it
    /// out).
    fn generate(&self, alg: Alg) -> Result<(ObjectHandle, ObjectHandle)> {
        let name = format!("pkcs11_speed-{}", std::process::id()).into_bytes();
        let (mechanism, public, private) = jwksd::keys::pkcs11::templates(alg, 2048, &name);
        Ok(self.main.generate_key_pair(&mechanism, &public, &private)?)
    }

    fn close(self) {
        let Bare { ctx, main, .. } = self;
        drop(main);
        let _ = ctx.finalize();
    }
}

/// One signature as jwksd makes it ([`pkcs11::signing`]).
fn sign_once(session: &Session, alg: Alg, key: ObjectHandle, message: &[u8]) -> Result<Vec<u8>> {
    let (mechanism, input) = pkcs11::signing(alg, message);
    Ok(session.sign(&mechanism, key, &input)?)
}

/// The PIN from `--pin-file` (one line) or JWKSD_PKCS11_PIN.
fn read_pin(file: Option<&std::path::Path>) -> Result<Zeroizing<Vec<u8>>> {
    let mut pin = match file {
        Some(path) => Zeroizing::new(
            std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?,
        ),
        None => {
            use std::os::unix::ffi::OsStringExt as _;
            Zeroizing::new(
                std::env::var_os(jwksd::keys::pkcs11::PIN_ENV)
                    .ok_or("no PIN: give --pin-file or set JWKSD_PKCS11_PIN")?
                    .into_vec(),
            )
        }
    };
    if pin.last() == Some(&b'\n') {
        pin.pop();
        if pin.last() == Some(&b'\r') {
            pin.pop();
        }
    }
    if pin.is_empty() {
        return Err("the PIN is empty".into());
    }
    Ok(pin)
}

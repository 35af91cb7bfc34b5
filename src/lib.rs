//! jwksd: a key-management and JWKS rotation daemon.
//!
//! jwksd owns the signing keys of a JWT issuer: it generates ES256, ES384,
//! RS256, PS256 and EdDSA (Ed25519) keypairs on a schedule, publishes each public key before it signs, keeps
//! old public keys published until the last token they could have signed has
//! expired, and hands the active key to authenticated auth servers.
//!
//! # Layout
//!
//! Data flows one way: configuration becomes a [`lifecycle::Policy`]; the
//! store yields a [`lifecycle::KeyringState`]; the pure planner turns (state,
//! policy, now) into actions and the pure [`lifecycle::Driver`] decides when
//! to carry them out; the shell carries them out and publishes an
//! immutable snapshot that the HTTP handlers read. `docs/architecture.md`
//! draws it, and says where a new rule, store or endpoint goes.
//!
//! - [`time`]: millisecond timestamps and durations as text. Pure.
//! - [`clock`]: the injectable clock the shell reads, and the steady clock
//!   that does not follow wall-clock jumps.
//! - [`keys`]: `id` (algorithm, kid, public key: plain data, the one part
//!   the core uses), `material` (a keypair in zeroizing buffers, read into
//!   OpenSSL), `generate` (p256, p384, rsa, OpenSSL's DRBG for Ed25519, at
//!   a low priority), `jwk` (public and private JWKs), `sign` (JWS signers
//!   over OpenSSL: ECDSA, RSA PKCS#1 and PSS, Ed25519), `pkcs11` (keys
//!   generated and used inside a PKCS#11 token, through a pool of
//!   sessions: docs/pkcs11.md), `custody` (where a key's private half
//!   lives: the store or a token; plain data the core uses) and `private`
//!   (a private key the key ring can sign with, in memory or in a token).
//! - [`lifecycle`]: the pure core. `state` is plain data, `action` the
//!   changes it takes (and how it applies them), `event` what a change
//!   did, as the audit log records it, `policy` the timeline
//!   rules, `promises` what was served and what it defers, `planner` the
//!   functions from (state, policy, now) to actions and the next wake-up,
//!   `driver` the scheduler as a state machine (fed outcomes and operators'
//!   commands, polled for work and answers: backoff, generations in flight,
//!   leadership), `command` what an operator's command is and answers,
//!   `pending` how the driver judges, commits, retries after a lost
//!   compare-and-set and answers the commands in progress, `tokens` the
//!   lifetime rules of a token to sign, `readiness` when the last known
//!   keys stop being the right ones and whether the keys held may still be
//!   used (`key_currency`), `timeline` the key timeline the console draws
//!   (each key's instants and windows, what a rotation or a revocation
//!   would do now). No clock, no I/O, no randomness: a
//!   test holds it to `keys::id`, `keys::custody` and `time`.
//! - [`audit`]: the audit log's record, actor and hash chain, and its
//!   verification ([`audit::Chain`]); plain data and SHA-256, no I/O. The
//!   events themselves are the core's (`lifecycle::event`).
//! - [`store`]: the durable [`store::KeyStore`] trait; `check` is the one
//!   consistency check of a loaded state against the private keys held
//!   (pure); `fs` keeps keys in a directory (atomic writes, lock), `postgres`
//!   shares them between replicas (compare-and-set, leader lease,
//!   notifications), `seal` encrypts private keys at rest under a master key,
//!   `audit_log` the directory store's audit log (sealed segments, the
//!   crash rules of records, webhook cursors). Both stores write the audit
//!   records of a change in its commit.
//! - [`keyring`]: the key ring in memory and where actions are carried out
//!   (generate, stage, commit), in the store or the token as each key's
//!   custody says; `token` holds the crash rules of keys in a token (what a
//!   load checks, repairs and reports) and the deadline of each call into
//!   it (`within`).
//! - [`config`]: the YAML configuration, validated, and the policy it sets:
//!   `schema` the structs and their defaults (the one source of them),
//!   `de` the reader of the parsed YAML into them (errors in the
//!   configuration's words), `duration` durations with units, `locate` the line of a field for
//!   errors, `validate` the checks (the policy's among them), `describe`
//!   check-config's account, `env` every `JWKSD_*` variable the daemon reads
//!   and the file it falls back to (master keys open there).
//! - [`daemon`]: the shell: the scheduler task (the one writer, performing
//!   what the driver decides and handing its answers to operators), the
//!   signing queue (a token's signatures on blocking threads), the leader
//!   `lease`, `token` (the PKCS#11 token's health and its watch), `feed`
//!   (audit records to the `/v1/events` streams), `webhooks` (the audit
//!   log delivered to `events.webhooks`), the snapshot readers see,
//!   `shared`, the state they share, and `request`, a command as the admin
//!   API sends it. `handle` is all the HTTP layer sees of
//!   it: [`daemon::Handle`], a cheap clone with a few methods over that
//!   state and the channels to the scheduler and the signing task.
//! - [`server`]: the process: store, core and both listeners started
//!   together, stopped in order (the one module that knows `daemon` and
//!   `http` both).
//! - [`http`]: the hyper server, the route table of both listeners
//!   (`docs/openapi.yaml` is checked against it), the public and admin APIs
//!   (the `/v1/events` stream among them: `admin::events`), the operator
//!   console (`admin::console`: its embedded files from `console/`, the
//!   session cookie and its CSRF and Origin checks, the console's own API),
//!   CORS on the JWK Set, authentication;
//!   it renders HTTP (status, headers such as Cache-Control from the
//!   daemon's max-ages) and maps the core's refusals to answers.
//! - [`access`]: who may use the admin API: named clients, their roles,
//!   credentials and restrictions, [`access::Clients::identify`] (a
//!   request's credentials to a client), the failure limiter and sign
//!   rates, trusted proxies. No I/O; `config` reads the clients file into
//!   it and `reload` swaps it.
//! - [`reload`]: what is re-read on SIGHUP and when its files change (TLS
//!   certificates, the clients list), keeping the last good on error.
//! - [`tls`]: rustls configurations for both listeners, reloaded on change.
//! - [`metrics`]: Prometheus metrics.
//! - [`api`]: the wire types of both HTTP APIs (requests, answers, error
//!   bodies), shared by the server, the client and the command line.
//! - [`cli`] and [`client`]: the command line and the admin API client the
//!   operator commands use.

pub mod access;
pub mod api;
pub mod audit;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod http;
pub mod keyring;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod store;
pub mod time;
pub mod tls;

//! The PostgreSQL store: one key ring shared by several replicas.
//!
//! ```text
//! jwksd_schema        (version)                          migrations applied
//! jwksd_state         (id = 1, version, state jsonb)     the key ring; CAS on version
//! jwksd_private_keys  (kid, alg, sealed, committed)      sealed with the master key
//! jwksd_leader        (id = 1, holder, expires_at, term) the rotation lease
//! ```
//! Every change is one transaction that compare-and-sets the state version,
//! so two replicas that both believe they lead can never rotate twice or
//! lose a key: the second commit finds the version moved and reloads.
//! Private keys are sealed before they reach the database; a master key is
//! required. Leadership is a lease row with an expiry, not an advisory lock:
//! it needs no session of its own, so it also works behind a transaction-
//! pooling proxy (where session locks and LISTEN do not; replicas then learn
//! of changes by polling), and a leader cut off from the database loses it
//! after one lease even if its session lingers on the server.
//!
//! Every call has a deadline on our side ([`deadline`]): a server that
//! hangs rather than refuses answers no server-side timeout, so the store
//! gives up, drops the connection, and reconnects on the next call. TLS
//! follows libpq's `sslmode` (see `tls`).
//!
//! One file, over 500 lines: migrations, the compare-and-set commit, the
//! lease, notifications and the deadlines on every call are one protocol
//! against one schema, whose SQL is best read side by side; connection TLS
//! is in `tls`, the consistency check in `store::check`.

mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

pub use tls::SslMode;

use crate::audit::{Broken, Chain, Cursor, Entry, Head, Record, Verified};
use crate::keys::{Alg, KeyMaterial, Kid};
use crate::lifecycle::KeyringState;
use crate::lifecycle::state::{STATE_FORMAT, format_readable};
use crate::store::check::{self, Finding};
use crate::store::seal::{self, MasterKey};
use crate::store::{KeyStore, Loaded, Problem, Rekeyed, StoreError};

/// Channel replicas LISTEN on; the payload is the new state version.
pub const CHANNEL: &str = "jwksd_state";
/// Serialises migrations between replicas starting at once.
const MIGRATION_LOCK: i64 = 0x6a77_6b73_6400_0001;
/// Staged keys older than this were left by a replica that died mid-change.
const STALE_STAGED: &str = "1 hour";
/// Upper bounds on how long one statement may run or wait for a lock, and
/// how long a transaction may sit idle (a replica that vanished mid-commit).
/// These run on the server, so they cannot fire when the server hangs
/// (stopped, a stalled disk, a frozen VM): the deadlines below are ours.
const STATEMENT_TIMEOUT_MS: u32 = 10_000;
const LOCK_TIMEOUT_MS: u32 = 5_000;
const IDLE_IN_TX_TIMEOUT_MS: u32 = 15_000;

/// Client-side deadlines, counted on our clock and including a reconnect:
/// a call that misses one fails with [`StoreError::Timeout`] and drops its
/// connection, so the next call starts afresh.
pub mod deadline {
    use std::time::Duration;
    /// Establishing a connection, per host tried (unless the connection
    /// string sets `connect_timeout`).
    pub const CONNECT: Duration = Duration::from_secs(5);
    /// Reading the state or its version, staging or discarding a key.
    pub const QUERY: Duration = Duration::from_secs(5);
    /// A commit: above the server's lock timeout (5 s), so a commit waiting
    /// on a lock gets the server's clearer error first. The retention
    /// counts it (`Policy::propagation`).
    pub const COMMIT: Duration = Duration::from_secs(10);
    /// Migrations wait for another replica's under the advisory lock.
    pub const MIGRATE: Duration = Duration::from_secs(15);
    /// Giving the lease up at shutdown: it expires anyway.
    pub const RESIGN: Duration = Duration::from_secs(2);
    /// Renewing the lease: a quarter of it, at most 5 s. Under a third, so
    /// that a renewal that gives up still leaves time for the next one
    /// before the lease runs out.
    pub fn lease(lease: Duration) -> Duration {
        (lease / 4).min(Duration::from_secs(5))
    }
}

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE jwksd_state (
        id integer PRIMARY KEY CHECK (id = 1),
        version bigint NOT NULL,
        state jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE jwksd_private_keys (
        kid text PRIMARY KEY,
        alg text NOT NULL,
        sealed bytea NOT NULL,
        committed boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE jwksd_leader (
        id integer PRIMARY KEY CHECK (id = 1),
        holder text NOT NULL,
        term bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );",
    // 2: the audit log (docs/events.md), written in the transaction of
    // the state change each record describes.
    "CREATE TABLE jwksd_audit (
        seq bigint PRIMARY KEY,
        record text NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE jwksd_audit_head (
        id integer PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash text NOT NULL
    );
    CREATE TABLE jwksd_webhook_cursor (
        endpoint text PRIMARY KEY,
        delivered bigint NOT NULL,
        cursor text NOT NULL
    );",
];

/// Serialises the writers of the audit chain (each record carries the
/// previous one's hash), within their transaction.
const AUDIT_LOCK: i64 = 0x6a77_6b73_6400_0002;

/// Appends `audit` to the chain inside `tx`: under the advisory lock, after
/// the last record the table holds.
async fn append_audit(
    tx: &tokio_postgres::Transaction<'_>,
    audit: &[Entry],
    replica: &str,
    state_version: Option<u64>,
) -> Result<Vec<Record>, StoreError> {
    if audit.is_empty() {
        return Ok(Vec::new());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .await
        .map_err(db("lock the audit log"))?;
    let head = chain_end(tx).await?;
    let records = crate::audit::chain(&head, audit, replica, state_version);
    for r in &records {
        tx.execute(
            "INSERT INTO jwksd_audit (seq, record) VALUES ($1, $2)",
            &[&(r.seq as i64), &r.to_line()],
        )
        .await
        .map_err(db("write the audit log"))?;
    }
    // The end of the chain, apart from the rows: rows deleted from the end
    // are detected (`jwksd audit verify`).
    if let Some(last) = records.last() {
        tx.execute(
            "INSERT INTO jwksd_audit_head (id, seq, hash) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
            &[&(last.seq as i64), &last.hash],
        )
        .await
        .map_err(db("write the audit head"))?;
    }
    Ok(records)
}

/// Where the next record chains on: the last row, or the head recorded
/// apart from the rows when that is further (rows deleted from the end: the
/// gap stays for `jwksd audit verify` to see, never papered over).
async fn chain_end(c: &impl tokio_postgres::GenericClient) -> Result<Head, StoreError> {
    let last = last_audit(c).await?;
    let recorded = recorded_head(c).await?;
    Ok(match recorded {
        Some(h) if h.seq > last.seq => {
            tracing::error!(
                last = last.seq,
                recorded = h.seq,
                "jwksd_audit ends before jwksd_audit_head: rows were deleted; new records follow the recorded head (jwksd audit verify reports the gap)"
            );
            h
        }
        _ => last,
    })
}

async fn recorded_head(c: &impl tokio_postgres::GenericClient) -> Result<Option<Head>, StoreError> {
    let row = c
        .query_opt("SELECT seq, hash FROM jwksd_audit_head WHERE id = 1", &[])
        .await
        .map_err(db("read the audit head"))?;
    Ok(row.map(|r| Head {
        seq: r.get::<_, i64>(0) as u64,
        hash: r.get(1),
    }))
}

/// The last record's sequence number and hash (genesis for none).
async fn last_audit(c: &impl tokio_postgres::GenericClient) -> Result<Head, StoreError> {
    let row = c
        .query_opt(
            "SELECT record FROM jwksd_audit ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(db("read the audit log"))?;
    match row {
        None => Ok(Head::genesis()),
        Some(row) => {
            let text: String = row.get(0);
            let r: Record = serde_json::from_str(&text).map_err(|e| {
                StoreError::Other(format!(
                    "the last row of jwksd_audit is not an audit record ({e}); run `jwksd audit verify`"
                ))
            })?;
            Ok(r.head())
        }
    }
}

pub struct PgStore {
    target: Target,
    master: MasterKey,
    previous: Option<MasterKey>,
    /// This replica's name in the lease row.
    holder: String,
    /// Drives both connections while a caller waits in `block_on`, as the
    /// synchronous `postgres` crate does; None only while dropped.
    rt: Option<tokio::runtime::Runtime>,
    /// Data and lease on separate connections: a slow commit never delays
    /// a lease renewal.
    data: Mutex<Option<Conn>>,
    lease: Mutex<Option<Conn>>,
}

/// Where and how to connect, from the connection string (the store and
/// [`listen`] each parse their own).
struct Target {
    config: tokio_postgres::Config,
    tls: tls::Tls,
    /// `postgres://<hosts>/<database>`, never with the password.
    location: String,
    /// The hosts alone, for TLS errors.
    hosts: String,
    connect_deadline: Duration,
}

struct Conn {
    client: Client,
    /// The task that drives the socket; aborted with the connection (a
    /// hung server would keep it waiting forever).
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Conn {
    /// Closes politely: without its client the connection tells the server
    /// goodbye and ends.
    async fn close(mut self) {
        let task = self.task.take();
        drop(self);
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

fn db(op: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Database {
        op,
        reason: describe(&e),
    }
}

/// The most specific part of a database error (never the connection
/// string), each cause once: the chain often repeats its sources.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => {
            let mut s = e.to_string();
            let mut cur: &dyn std::error::Error = e;
            while let Some(next) = cur.source() {
                let n = next.to_string();
                if !s.contains(&n) {
                    s = format!("{s}: {n}");
                }
                cur = next;
            }
            s
        }
    }
}

/// Warned once per process, not for every store or connection.
static WARNED_UNVERIFIED: std::sync::Once = std::sync::Once::new();

impl Target {
    fn parse(url: &str) -> Result<Target, StoreError> {
        let invalid = |e: String| {
            StoreError::Other(format!("store.postgres: invalid connection string: {e}"))
        };
        let (rest, sslmode, rootcert) = tls::take_params(url).map_err(invalid)?;
        let tls = tls::connector(sslmode.as_deref(), rootcert)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| invalid(e.to_string()))?;
        config.ssl_mode(tls.mode.transport());
        let per_host = match config.get_connect_timeout() {
            Some(t) => *t,
            None => {
                config.connect_timeout(deadline::CONNECT);
                deadline::CONNECT
            }
        };
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .tcp_user_timeout(Duration::from_secs(10));
        // Bounded waits: a commit stuck behind a lock held by a leader that
        // vanished mid-transaction fails (and is retried) within seconds,
        // instead of holding its timestamps while time passes.
        let bounded = format!(
            "-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS} \
             -c idle_in_transaction_session_timeout={IDLE_IN_TX_TIMEOUT_MS}"
        );
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {bounded}"),
            _ => bounded,
        };
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("jwksd");
        }
        let hosts = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let location = format!("postgres://{hosts}/{}", config.get_dbname().unwrap_or(""));
        let tried = config
            .get_hosts()
            .len()
            .max(config.get_hostaddrs().len())
            .max(1) as u32;
        Ok(Target {
            config,
            tls,
            location,
            hosts,
            connect_deadline: per_host * tried,
        })
    }

    /// Whether TLS may be used without checking who answers.
    fn unverified_tls(&self) -> bool {
        let hosts = self.config.get_hosts();
        let tcp = hosts.is_empty()
            || hosts
                .iter()
                .any(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)));
        tcp && matches!(self.tls.mode, SslMode::Prefer | SslMode::Require)
            && !self.tls.verifies_chain()
    }

    async fn open(&self) -> Result<Conn, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.tls.connector.clone())
            .await
            .map_err(|e| self.connect_error(&e))?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "database connection closed");
            }
        });
        Ok(Conn {
            client,
            task: Some(task),
        })
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> StoreError {
        tls::failure(e, &self.tls, &self.hosts).unwrap_or_else(|| StoreError::Connect {
            servers: self.servers(),
            reason: describe(e),
            fix: connect_fix(e, &self.config),
        })
    }

    /// `host:port` of each server tried, as libpq pairs them.
    fn servers(&self) -> String {
        let ports = self.config.get_ports();
        self.config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    tokio_postgres::config::Host::Tcp(h) if h.contains(':') => {
                        format!("[{h}]:{port}")
                    }
                    tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                    tokio_postgres::config::Host::Unix(p) => {
                        format!("{}/.s.PGSQL.{port}", p.display())
                    }
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What to check when no connection could be made, by its cause.
fn connect_fix(e: &tokio_postgres::Error, config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("<user>");
    let dbname = config.get_dbname().unwrap_or(user);
    let place = "in the connection string (store.postgres or JWKSD_STORE_URL)";
    if let Some(d) = e.as_db_error() {
        let code = d.code().code();
        return match code {
            // invalid_authorization_specification: no such role, or no
            // pg_hba.conf line for this client.
            "28000" if d.message().contains("pg_hba.conf") => format!(
                "allow this client in the server's pg_hba.conf (host {dbname} {user} <address> scram-sha-256), then reload PostgreSQL"
            ),
            "28000" => format!(
                "check user {place}, or create the role: CREATE ROLE {user} LOGIN PASSWORD '...'"
            ),
            // invalid_password
            "28P01" => format!("check the user and password {place}"),
            // invalid_catalog_name
            "3D000" => {
                format!("check dbname {place}, or create it: CREATE DATABASE {dbname} OWNER {user}")
            }
            // too_many_connections, cannot_connect_now (starting, shutting
            // down, in recovery)
            "53300" | "57P03" => {
                "the server refuses connections for now: try again, or raise its max_connections"
                    .to_owned()
            }
            _ => "check the connection string (store.postgres or JWKSD_STORE_URL)".to_owned(),
        };
    }
    let text = describe(e).to_lowercase();
    if text.contains("connection refused") {
        format!("is PostgreSQL running and listening there? Check host and port {place}")
    } else if text.contains("lookup address") || text.contains("name or service not known") {
        format!("the host name does not resolve: check host {place}")
    } else if text.contains("password") {
        format!("give the password {place} (password=... or postgres://user:password@host/db)")
    } else {
        format!("check the server's address and that it is reachable from here ({place})")
    }
}

impl PgStore {
    /// Verifies the whole audit log: every row in order, each a record that
    /// follows the one before, ending at `jwksd_audit_head`.
    pub fn verify_audit(&self) -> Result<Verified, Broken> {
        let fail = |why: String| Broken {
            seq: 0,
            place: "jwksd_audit".into(),
            why,
        };
        // The head first: rows committed after it are not judged (they are
        // written with the head, in one transaction).
        let head = self
            .with(
                &self.data,
                "read the audit head",
                deadline::QUERY,
                async |c| recorded_head(&*c).await,
            )
            .map_err(|e| fail(e.to_string()))?;
        let upto = head.as_ref().map_or(u64::MAX, |h| h.seq);
        let mut chain = Chain::after(Head::genesis());
        'pages: loop {
            let page = match self.audit_since(chain.head().seq, 1000) {
                Ok(p) => p,
                // A row that is not a record: name the first one after.
                Err(e) => {
                    return Err(Broken {
                        seq: chain.head().seq + 1,
                        ..fail(e.to_string())
                    });
                }
            };
            if page.is_empty() {
                break;
            }
            for r in &page {
                if chain.head().seq >= upto {
                    break 'pages;
                }
                chain.push(r, &format!("jwksd_audit row {}", r.seq))?;
            }
        }
        match head {
            Some(h) => chain.ends_at(&h, "jwksd_audit_head")?,
            None if chain.head().seq > 0 => {
                return Err(fail(
                    "jwksd_audit_head is empty: the log's end cannot be checked".into(),
                ));
            }
            None => {}
        }
        Ok(Verified {
            records: chain.count(),
            parts: 1,
            head: chain.head().clone(),
            from: Head::genesis(),
        })
    }
    /// Connects, creates or migrates the schema, and checks the master key
    /// is there. `url` is a libpq-style connection string or URL.
    pub fn connect(
        url: &str,
        master: Option<MasterKey>,
        previous: Option<MasterKey>,
    ) -> Result<PgStore, StoreError> {
        let master = master.ok_or_else(|| {
            StoreError::Other(
                "the PostgreSQL store needs a master key: private keys are sealed before they reach \
                 the database (set JWKSD_MASTER_KEY or master_key_file)"
                    .into(),
            )
        })?;
        let target = Target::parse(url)?;
        if target.unverified_tls() {
            WARNED_UNVERIFIED.call_once(|| {
                tracing::warn!(
                    store = %target.location,
                    sslmode = target.tls.mode.as_str(),
                    "the database's certificate is not verified: a man in the middle can read and \
                     change the key ring (and sslmode=prefer falls back to plain text); set \
                     sslmode=verify-full and sslrootcert=<CA file>"
                );
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Other(format!("database runtime: {e}")))?;
        let connect_deadline = target.connect_deadline;
        let store = PgStore {
            target,
            master,
            previous,
            holder: super::replica_name(),
            rt: Some(rt),
            data: Mutex::new(None),
            lease: Mutex::new(None),
        };
        store.with(
            &store.data,
            "connect to the database",
            connect_deadline,
            async |_| Ok(()),
        )?;
        store.with(
            &store.data,
            "migrate the schema",
            deadline::MIGRATE,
            async |c| migrate(c).await,
        )?;
        Ok(store)
    }

    /// This replica's name in the lease row: host, pid and a random suffix.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Runs `f` on the connection in `slot`, (re)connecting first if
    /// needed, all within `deadline`. A missed deadline drops the
    /// connection: whatever it was doing is abandoned (an open transaction
    /// rolls back on the server) and the next call reconnects.
    fn with<T>(
        &self,
        slot: &Mutex<Option<Conn>>,
        op: &'static str,
        deadline: Duration,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| StoreError::Other("the database store is closed".into()))?;
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        // The timer is made inside: it needs the runtime's context.
        let work = async {
            // The socket is only read while a call runs: let the connection
            // task see a close that arrived meanwhile.
            tokio::task::yield_now().await;
            if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
                *guard = None;
                *guard = Some(self.target.open().await?);
            }
            match guard.as_mut() {
                Some(c) => f(&mut c.client).await,
                None => Err(StoreError::Other("no database connection".into())),
            }
        };
        let outcome = rt.block_on(async { tokio::time::timeout(deadline, work).await });
        match outcome {
            Ok(result) => {
                if result.is_err() && guard.as_ref().is_some_and(|c| c.client.is_closed()) {
                    *guard = None;
                }
                result
            }
            Err(_) => {
                *guard = None;
                Err(StoreError::Timeout {
                    op,
                    after: deadline,
                })
            }
        }
    }

    fn open_key(&self, kid: &Kid, alg: Alg, sealed: &[u8]) -> Result<(KeyMaterial, bool), String> {
        let by = seal::sealed_by(sealed);
        let (key, previous) = match &self.previous {
            Some(p) if by.as_deref() == Some(p.id()) => (p, true),
            _ => (&self.master, false),
        };
        let der = key.open(kid, alg, sealed).map_err(|e| e.to_string())?;
        let k = KeyMaterial::from_pkcs8(alg, der).map_err(|e| e.to_string())?;
        if &k.kid != kid {
            return Err(format!("holds the key {}, not {kid}", k.kid));
        }
        Ok((k, previous))
    }
}

impl PgStore {
    /// [`KeyStore::rekey`]: re-seals every private key not yet sealed with
    /// the current master key (those sealed with the previous one), one row
    /// at a time: an
    /// interruption leaves each key openable with one of the two, and a
    /// second run finishes. Replicas may keep running meanwhile when they
    /// know both keys (`JWKSD_PREVIOUS_MASTER_KEY`).
    fn rekey_rows(&self, proceed: &mut dyn FnMut(&Kid) -> bool) -> Result<Rekeyed, StoreError> {
        let rows: Vec<(String, String, Vec<u8>)> = self.with(
            &self.data,
            "read private keys",
            deadline::QUERY,
            async |c| {
                Ok(c.query(
                    "SELECT kid, alg, sealed FROM jwksd_private_keys WHERE committed",
                    &[],
                )
                .await
                .map_err(db("read private keys"))?
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
            },
        )?;
        let mut done = Rekeyed {
            rewritten: 0,
            already: 0,
            complete: true,
        };
        for (kid, alg, sealed) in rows {
            if seal::sealed_by(&sealed).as_deref() == Some(self.master.id()) {
                done.already += 1;
                continue;
            }
            let bad = |what: String| {
                StoreError::Inconsistent(vec![Problem {
                    path: key_path(&kid),
                    what,
                    fix: "give the master key it was sealed with in JWKSD_PREVIOUS_MASTER_KEY"
                        .into(),
                }])
            };
            let k: Kid = kid.parse().map_err(|_| bad("invalid kid".into()))?;
            if !proceed(&k) {
                done.complete = false;
                break;
            }
            let a: Alg = alg
                .parse()
                .map_err(|_| bad(format!("unknown algorithm {alg:?}")))?;
            let (key, _) = self.open_key(&k, a, &sealed).map_err(bad)?;
            let resealed =
                self.master
                    .seal(&k, a, &key.pkcs8)
                    .map_err(|source| StoreError::Seal {
                        kid: k.clone(),
                        source,
                    })?;
            self.with(
                &self.data,
                "re-seal a private key",
                deadline::QUERY,
                async |c| {
                    c.execute(
                        "UPDATE jwksd_private_keys SET sealed = $1 WHERE kid = $2 AND sealed = $3",
                        &[&resealed, &kid, &sealed],
                    )
                    .await
                    .map_err(db("re-seal a private key"))
                },
            )?;
            done.rewritten += 1;
        }
        Ok(done)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let conns: Vec<Conn> = [&self.data, &self.lease]
            .into_iter()
            .filter_map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).take())
            .collect();
        let Some(rt) = self.rt.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking here would panic on an async worker: the sockets
            // just close.
            drop(conns);
            rt.shutdown_background();
            return;
        }
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                for c in conns {
                    c.close().await;
                }
            })
            .await;
        });
    }
}

async fn migrate(c: &mut Client) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(db("begin migration"))?;
    // `CREATE TABLE IF NOT EXISTS` says NOTICE when the table is there, at
    // every start: not news (this transaction only).
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(db("begin migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db("lock for migration"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS jwksd_schema (version integer NOT NULL)")
        .await
        .map_err(db("create jwksd_schema"))?;
    let row = tx
        .query_opt("SELECT version FROM jwksd_schema", &[])
        .await
        .map_err(db("read schema version"))?;
    let current: i32 = row.map(|r| r.get(0)).unwrap_or(0);
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Other(format!(
            "the database schema is at version {current}, newer than this jwksd knows ({}): run the \
             jwksd version that migrated it",
            MIGRATIONS.len()
        )));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(m)
            .await
            .map_err(db("migrate the schema"))?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    let latest = MIGRATIONS.len() as i32;
    if current == 0 {
        tx.execute("INSERT INTO jwksd_schema (version) VALUES ($1)", &[&latest])
            .await
            .map_err(db("record schema version"))?;
    } else if current < latest {
        tx.execute("UPDATE jwksd_schema SET version = $1", &[&latest])
            .await
            .map_err(db("record schema version"))?;
    }
    tx.commit().await.map_err(db("commit migration"))
}

const LEASE_OP: &str = "renew the leader lease";

/// Until when a lease asked for at `asked` and answered at `answered` is
/// held. An answer that arrives after the lease it asked for has run out
/// (the database hung in between) is no leadership: an error, so that the
/// caller neither leads nor believes another replica does.
fn lease_end(
    asked: Instant,
    lease: Duration,
    granted: bool,
    answered: Instant,
) -> Result<Option<Instant>, StoreError> {
    if !granted {
        return Ok(None);
    }
    match asked.checked_add(lease) {
        Some(end) if end > answered => Ok(Some(end)),
        _ => Err(StoreError::Database {
            op: LEASE_OP,
            reason: format!(
                "the answer came {:?} after the request, when the {lease:?} lease it asked for had \
                 already run out; not leading",
                answered.saturating_duration_since(asked)
            ),
        }),
    }
}

fn key_path(kid: &str) -> PathBuf {
    PathBuf::from(format!("jwksd_private_keys/{kid}"))
}

impl KeyStore for PgStore {
    fn rekey(&self, proceed: &mut dyn FnMut(&Kid) -> bool) -> Result<Rekeyed, StoreError> {
        self.rekey_rows(proceed)
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let (state_text, rows, stale) = self.with(&self.data, "load the state", deadline::QUERY, async |c| {
            // One snapshot for the state and the keys it refers to.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .start()
                .await
                .map_err(db("begin load"))?;
            // Keys staged by a replica that died before committing them.
            let stale = tx
                .execute(
                    &format!(
                        "DELETE FROM jwksd_private_keys WHERE NOT committed AND created_at < now() - interval '{STALE_STAGED}'"
                    ),
                    &[],
                )
                .await
                .map_err(db("discard stale staged keys"))?;
            let state = tx
                .query_opt("SELECT state::text FROM jwksd_state WHERE id = 1", &[])
                .await
                .map_err(db("read the state"))?
                .map(|r| r.get::<_, String>(0));
            let rows: Vec<(String, String, Vec<u8>)> = tx
                .query("SELECT kid, alg, sealed FROM jwksd_private_keys WHERE committed", &[])
                .await
                .map_err(db("read private keys"))?
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            tx.commit().await.map_err(db("commit load"))?;
            Ok((state, rows, stale))
        })?;
        let mut notes = Vec::new();
        if stale > 0 {
            notes.push(format!(
                "discarded {stale} key(s) staged but never committed (a replica stopped mid-change; they were never published)"
            ));
        }
        let mut problems = Vec::new();
        let state = match state_text {
            None => KeyringState::default(),
            Some(text) => match serde_json::from_str::<KeyringState>(&text) {
                Ok(s) if format_readable(s.format) => s,
                Ok(s) => {
                    return Err(StoreError::Inconsistent(vec![Problem {
                        path: PathBuf::from("jwksd_state"),
                        what: format!(
                            "state format {} is not supported (this jwksd reads {STATE_FORMAT})",
                            s.format
                        ),
                        fix: "run the jwksd version that wrote it".into(),
                    }]));
                }
                Err(e) => {
                    return Err(StoreError::Inconsistent(vec![Problem {
                        path: PathBuf::from("jwksd_state"),
                        what: format!("state is damaged: {e}"),
                        fix: "restore the database from a backup".into(),
                    }]));
                }
            },
        };
        let sealed: HashMap<String, (String, Vec<u8>)> =
            rows.into_iter().map(|(k, a, s)| (k, (a, s))).collect();
        let held: Vec<Kid> = sealed.keys().filter_map(|k| k.parse().ok()).collect();
        let mut keys = HashMap::new();
        let (findings, unnamed) = check::check(&state, held.iter());
        for finding in findings {
            match finding {
                Finding::MissingRetiring(k) => notes.push(format!(
                    "private key of retiring key {} is missing: it still verifies and will not sign again",
                    k.kid
                )),
                Finding::Missing(k) => problems.push(Problem {
                    path: key_path(k.kid.as_str()),
                    what: format!("private key of the {} {} key {} is missing", k.state, k.alg, k.kid),
                    fix: "restore the database from a backup; see \"A private key is missing\" in runbook.md".into(),
                }),
                Finding::NotItsOwnKey(k) => problems.push(Problem {
                    path: PathBuf::from("jwksd_state"),
                    what: format!("key {} does not carry its own public key (the kid is not its thumbprint)", k.kid),
                    fix: "the state was altered: restore the database from a backup".into(),
                }),
                Finding::Held(k) => {
                    let Some((_, bytes)) = sealed.get(k.kid.as_str()) else {
                        continue;
                    };
                    match self.open_key(&k.kid, k.alg, bytes) {
                        Ok((key, previous)) => {
                            if previous {
                                notes.push(format!(
                                    "key {} is sealed with the previous master key: run `jwksd rekey`",
                                    k.kid
                                ));
                            }
                            keys.insert(k.kid.clone(), key);
                        }
                        Err(e) => problems.push(Problem {
                            path: key_path(k.kid.as_str()),
                            what: format!("cannot open sealed key: {e}"),
                            fix: "configure the master key this database was sealed with".into(),
                        }),
                    }
                }
            }
        }
        // A committed private key the state does not name, ended or not: a
        // commit deletes ended keys' rows in the same transaction.
        let mut unknown: Vec<String> = unnamed.iter().map(|u| u.kid.to_string()).collect();
        unknown.extend(sealed.keys().filter(|k| k.parse::<Kid>().is_err()).cloned());
        for kid in unknown {
            problems.push(Problem {
                path: key_path(&kid),
                what: "a committed private key that the state does not know".into(),
                fix: "the database was restored inconsistently; restore it from one backup".into(),
            });
        }
        if !problems.is_empty() {
            return Err(StoreError::Inconsistent(problems));
        }
        Ok(Loaded { state, keys, notes })
    }

    fn stage(&self, key: &KeyMaterial) -> Result<(), StoreError> {
        let sealed = self
            .master
            .seal(&key.kid, key.alg, &key.pkcs8)
            .map_err(|source| StoreError::Seal {
                kid: key.kid.clone(),
                source,
            })?;
        self.with(&self.data, "stage a private key", deadline::QUERY, async |c| {
            c.execute(
                "INSERT INTO jwksd_private_keys (kid, alg, sealed, committed) VALUES ($1, $2, $3, false)",
                &[&key.kid.as_str(), &key.alg.as_str(), &sealed],
            )
            .await
            .map_err(db("stage a private key"))
            .map(|_| ())
        })
    }

    fn discard(&self, kid: &Kid) {
        let _ = self.with(
            &self.data,
            "discard a staged key",
            deadline::QUERY,
            async |c| {
                c.execute(
                    "DELETE FROM jwksd_private_keys WHERE kid = $1 AND NOT committed",
                    &[&kid.as_str()],
                )
                .await
                .map_err(db("discard a staged key"))
            },
        );
    }

    fn commit(&self, state: &KeyringState, audit: &[Entry]) -> Result<Vec<Record>, StoreError> {
        let json = serde_json::to_string(state)
            .map_err(|e| StoreError::Other(format!("serialising state: {e}")))?;
        let new = state.version as i64;
        let expected = new - 1;
        let live: Vec<String> = state.keys.iter().map(|k| k.kid.to_string()).collect();
        // Keys in a token have no row: the token holds them.
        let signing: Vec<String> = state
            .keys
            .iter()
            .filter(|k| {
                k.custody.is_software()
                    && matches!(
                        k.state,
                        crate::lifecycle::KeyState::Next | crate::lifecycle::KeyState::Active
                    )
            })
            .map(|k| k.kid.to_string())
            .collect();
        self.with(&self.data, "commit", deadline::COMMIT, async |c| {
            let tx = c.transaction().await.map_err(db("begin commit"))?;
            let changed = if expected == 0 {
                tx.execute(
                    "INSERT INTO jwksd_state (id, version, state) VALUES (1, $1, $2::text::jsonb) ON CONFLICT (id) DO NOTHING",
                    &[&new, &json],
                )
                .await
            } else {
                tx.execute(
                    "UPDATE jwksd_state SET version = $1, state = $2::text::jsonb, updated_at = now() WHERE id = 1 AND version = $3",
                    &[&new, &json, &expected],
                )
                .await
            }
            .map_err(db("write the state"))?;
            if changed != 1 {
                let found: i64 = tx
                    .query_opt("SELECT version FROM jwksd_state WHERE id = 1", &[])
                    .await
                    .map_err(db("read the state version"))?
                    .map(|r| r.get(0))
                    .unwrap_or(0);
                return Err(StoreError::Conflict {
                    expected: expected as u64,
                    found: found as u64,
                });
            }
            tx.execute(
                "UPDATE jwksd_private_keys SET committed = true WHERE kid = ANY($1) AND NOT committed",
                &[&live],
            )
            .await
            .map_err(db("commit private keys"))?;
            // Every key that may sign must have its private key in this
            // commit (a staged row could have been cleaned up as stale).
            let held: i64 = tx
                .query_one(
                    "SELECT count(*) FROM jwksd_private_keys WHERE committed AND kid = ANY($1)",
                    &[&signing],
                )
                .await
                .map_err(db("check private keys"))?
                .get(0);
            if held as usize != signing.len() {
                return Err(StoreError::Other(format!(
                    "{} of the {} next and active keys have no private key in the database; \
                     not committed",
                    signing.len().saturating_sub(held as usize),
                    signing.len()
                )));
            }
            tx.execute(
                "DELETE FROM jwksd_private_keys WHERE committed AND NOT (kid = ANY($1))",
                &[&live],
            )
            .await
            .map_err(db("destroy ended private keys"))?;
            let records = append_audit(&tx, audit, &self.holder, Some(state.version)).await?;
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &new.to_string()])
                .await
                .map_err(db("notify replicas"))?;
            tx.commit().await.map_err(db("commit"))?;
            Ok(records)
        })
    }

    fn record(&self, audit: &[Entry]) -> Result<Vec<Record>, StoreError> {
        self.with(
            &self.data,
            "write the audit log",
            deadline::COMMIT,
            async |c| {
                let tx = c.transaction().await.map_err(db("begin audit"))?;
                let records = append_audit(&tx, audit, &self.holder, None).await?;
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &"audit"])
                    .await
                    .map_err(db("notify replicas"))?;
                tx.commit().await.map_err(db("commit audit"))?;
                Ok(records)
            },
        )
    }

    fn audit_since(&self, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.with(&self.data, "read the audit log", deadline::QUERY, async |c| {
            let rows = c
                .query(
                    "SELECT seq, record FROM jwksd_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&(after as i64), &(limit as i64)],
                )
                .await
                .map_err(db("read the audit log"))?;
            rows.iter()
                .map(|row| {
                    let seq: i64 = row.get(0);
                    let text: String = row.get(1);
                    serde_json::from_str(&text).map_err(|e| {
                        StoreError::Other(format!(
                            "jwksd_audit row {seq} is not an audit record ({e}); run `jwksd audit verify`"
                        ))
                    })
                })
                .collect()
        })
    }

    fn webhook_cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError> {
        self.with(
            &self.data,
            "read the webhook cursors",
            deadline::QUERY,
            async |c| {
                let rows = c
                    .query("SELECT endpoint, cursor FROM jwksd_webhook_cursor", &[])
                    .await
                    .map_err(db("read the webhook cursors"))?;
                rows.iter()
                    .map(|row| {
                        let name: String = row.get(0);
                        let text: String = row.get(1);
                        serde_json::from_str(&text)
                        .map(|c| (name.clone(), c))
                        .map_err(|e| {
                            StoreError::Other(format!(
                                "jwksd_webhook_cursor {name} is not a cursor ({e}); delete the row \
                                 to deliver every event again"
                            ))
                        })
                    })
                    .collect()
            },
        )
    }

    fn set_webhook_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), StoreError> {
        let text = serde_json::to_string(cursor).unwrap_or_default();
        self.with(
            &self.data,
            "write a webhook cursor",
            deadline::QUERY,
            async |c| {
                // Never backwards (a replica that lost the lease while
                // a delivery was under way).
                c.execute(
                    "INSERT INTO jwksd_webhook_cursor (endpoint, delivered, cursor) \
                     VALUES ($1, $2, $3) ON CONFLICT (endpoint) DO UPDATE SET \
                     delivered = EXCLUDED.delivered, cursor = EXCLUDED.cursor \
                     WHERE jwksd_webhook_cursor.delivered <= EXCLUDED.delivered",
                    &[&endpoint, &(cursor.delivered as i64), &text],
                )
                .await
                .map_err(db("write a webhook cursor"))?;
                Ok(())
            },
        )
    }

    fn audit_head(&self) -> Result<Head, StoreError> {
        self.with(
            &self.data,
            "read the audit log",
            deadline::QUERY,
            async |c| last_audit(&*c).await,
        )
    }

    fn location(&self) -> String {
        self.target.location.clone()
    }

    fn version(&self) -> Result<u64, StoreError> {
        self.with(
            &self.data,
            "read the state version",
            deadline::QUERY,
            async |c| {
                Ok(
                    c.query_opt("SELECT version FROM jwksd_state WHERE id = 1", &[])
                        .await
                        .map_err(db("read the state version"))?
                        .map(|r| r.get::<_, i64>(0) as u64)
                        .unwrap_or(0),
                )
            },
        )
    }

    fn replica(&self) -> Option<String> {
        Some(self.holder.clone())
    }

    fn lease_holder(&self) -> Result<Option<super::LeaseHolder>, StoreError> {
        self.with(
            &self.data,
            "read the leader lease",
            deadline::QUERY,
            async |c| {
                Ok(c.query_opt(
                    "SELECT holder, (extract(epoch FROM expires_at - now()) * 1000)::bigint \
                         FROM jwksd_leader WHERE id = 1",
                    &[],
                )
                .await
                .map_err(db("read the leader lease"))?
                .map(|r| super::LeaseHolder {
                    replica: r.get(0),
                    expires_in_ms: r.get(1),
                }))
            },
        )
    }

    fn lead(&self, lease: Duration) -> Result<Option<Instant>, StoreError> {
        // Measured before the request (and any reconnect): the lease is
        // never thought longer than the database granted it.
        let asked = Instant::now();
        let ms = lease.as_millis() as i64;
        let granted = self.with(&self.lease, LEASE_OP, deadline::lease(lease), async |c| {
            c.query_opt(
                "INSERT INTO jwksd_leader (id, holder, term, expires_at)
                 VALUES (1, $1, 1, now() + $2 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE
                   SET holder = EXCLUDED.holder,
                       term = jwksd_leader.term + CASE WHEN jwksd_leader.holder = EXCLUDED.holder THEN 0 ELSE 1 END,
                       expires_at = EXCLUDED.expires_at
                   WHERE jwksd_leader.holder = EXCLUDED.holder OR jwksd_leader.expires_at < now()
                 RETURNING term",
                &[&self.holder, &(ms as f64)],
            )
            .await
            .map_err(db(LEASE_OP))
        })?;
        lease_end(asked, lease, granted.is_some(), Instant::now())
    }

    fn resign(&self) {
        let _ = self.with(
            &self.lease,
            "resign the lease",
            deadline::RESIGN,
            async |c| {
                c.execute(
                    "DELETE FROM jwksd_leader WHERE holder = $1",
                    &[&self.holder],
                )
                .await
                .map_err(db("resign the lease"))
            },
        );
    }

    fn shared(&self) -> bool {
        true
    }
}

/// How often the idle notification connection checks that the server
/// still answers: a hung server sends nothing, and neither does a quiet
/// channel.
const LISTEN_CHECK: Duration = Duration::from_secs(10);

/// Waits for change notifications on a connection of its own and calls
/// `changed` for each; reconnects with backoff. Behind a transaction-pooling
/// proxy no notification arrives, and the polling replicas do anyway covers
/// that.
pub async fn listen(url: String, changed: std::sync::Arc<tokio::sync::Notify>) {
    let target = match Target::parse(&url) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "no notification connection; relying on polling");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        match tokio::time::timeout(
            target.connect_deadline,
            target.config.connect(target.tls.connector.clone()),
        )
        .await
        {
            Ok(Ok((client, mut connection))) => {
                let notify = changed.clone();
                let mut conn = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                                notify.notify_one()
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return,
                        }
                    }
                });
                let listening = tokio::time::timeout(
                    deadline::QUERY,
                    client.batch_execute(&format!("LISTEN {CHANNEL}")),
                )
                .await;
                if let Ok(Ok(())) = listening {
                    backoff = Duration::from_secs(1);
                    // A missed change while reconnecting: look once.
                    changed.notify_one();
                    loop {
                        tokio::select! {
                            _ = &mut conn => break,
                            _ = tokio::time::sleep(LISTEN_CHECK) => {
                                let alive = tokio::time::timeout(deadline::QUERY, client.simple_query("")).await;
                                if !matches!(alive, Ok(Ok(_))) {
                                    tracing::debug!("notification connection does not answer; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                }
                conn.abort();
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %target.connect_error(&e), "notification connection failed")
            }
            Err(_) => tracing::debug!("notification connection timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_counted_from_before_the_request_and_a_late_answer_is_none() {
        let asked = Instant::now();
        let lease = Duration::from_secs(2);
        let soon = asked + Duration::from_millis(30);
        assert_eq!(
            lease_end(asked, lease, true, soon).unwrap(),
            Some(asked + lease)
        );
        assert_eq!(lease_end(asked, lease, false, soon).unwrap(), None);
        // Answered after the lease it asked for ran out (the database hung
        // in between): not leadership.
        for late in [asked + lease, asked + Duration::from_secs(10)] {
            let e = lease_end(asked, lease, true, late).unwrap_err();
            assert!(
                matches!(e, StoreError::Database { op: LEASE_OP, .. })
                    && e.to_string().contains("already run out"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_lease_deadline_leaves_room_for_another_renewal() {
        for secs in [1, 2, 10, 60, 600] {
            let lease = Duration::from_secs(secs);
            assert!(deadline::lease(lease) < lease / 3, "{lease:?}");
            assert!(deadline::lease(lease) <= Duration::from_secs(5));
        }
    }
}

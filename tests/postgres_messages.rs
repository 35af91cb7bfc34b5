//! What the PostgreSQL store says when it cannot be used: what to do, and
//! the underlying error once; and nothing at all (no NOTICE) when it can.
//! The cluster is started by the test (see support/pg.rs).

mod support;

use std::sync::OnceLock;

use jwksd::store::MasterKey;
use jwksd::store::postgres::PgStore;
use support::daemon::{BIN, Daemon, FAST, write_config};
use support::pg::Cluster;

const MK: &str = "q1XJtQ8e3k5m9r2Yb7vL0pZcW4sN6aHdF1gU8iT3oKE=";
const REPLICA: &str = "store:\n  leader_lease: 2s\n  poll_interval: 300ms\n";

fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(Cluster::start)
}

fn connect(url: &str) -> String {
    match PgStore::connect(url, Some(MasterKey::from_encoded(MK).unwrap()), None) {
        Ok(_) => panic!("connected: {url}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_prints_no_notice_from_the_schema_migration() {
    let pg = cluster();
    let url = pg.database("notice");
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &format!("{FAST}{REPLICA}"));
    let env = [("JWKSD_STORE_URL", url.as_str()), ("JWKSD_MASTER_KEY", MK)];
    let mut d = Daemon::start_with(tmp.path(), &config, &env).await;
    assert_eq!(d.stop().code(), Some(0));
    // The schema exists now: the second start used to print
    // `NOTICE: relation "jwksd_schema" already exists, skipping`.
    d.restart().await;
    assert_eq!(d.stop().code(), Some(0));
    let log = d.log_text();
    assert!(!log.contains("NOTICE"), "{log}");
    assert!(log.contains("shared PostgreSQL store"), "{log}");
}

#[test]
fn connection_failures_say_what_to_do_and_the_cause_once() {
    let pg = cluster();
    pg.database("present");
    let port = pg.port;

    // Nothing listens there.
    let e = connect("postgres://postgres@127.0.0.1:1/present?sslmode=disable");
    eprintln!("refused: {e}");
    assert!(e.contains("cannot connect to 127.0.0.1:1"), "{e}");
    assert_eq!(
        e.to_lowercase().matches("connection refused").count(),
        1,
        "{e}"
    );
    assert!(e.contains("is PostgreSQL running"), "{e}");

    let e = connect(&format!(
        "postgres://nobody@127.0.0.1:{port}/present?sslmode=disable"
    ));
    eprintln!("no role: {e}");
    assert_eq!(
        e.matches("role \"nobody\" does not exist").count(),
        1,
        "{e}"
    );
    assert!(e.contains("CREATE ROLE"), "{e}");

    let e = connect(&format!(
        "postgres://postgres@127.0.0.1:{port}/absent?sslmode=disable"
    ));
    eprintln!("no database: {e}");
    assert_eq!(
        e.matches("database \"absent\" does not exist").count(),
        1,
        "{e}"
    );
    assert!(e.contains("CREATE DATABASE"), "{e}");

    // `jwksd serve` prints it once, not once logged and once again.
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "");
    let out = std::process::Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .env(
            "JWKSD_STORE_URL",
            "postgres://postgres@127.0.0.1:1/present?sslmode=disable",
        )
        .env("JWKSD_MASTER_KEY", MK)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.to_lowercase().matches("connection refused").count(),
        1,
        "{err}"
    );
}

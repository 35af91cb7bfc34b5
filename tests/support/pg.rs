//! A throwaway PostgreSQL cluster for tests, from the machine's PostgreSQL
//! binaries (Debian's `postgresql` package, which scripts/test installs):
//! its own data directory, a free port on 127.0.0.1, trust authentication.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries under /usr/lib/postgresql: run scripts/test, which installs them")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // PostgreSQL refuses to run as root: use its own user then.
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let c = Cluster {
            _dir: dir,
            data,
            bin,
            port: free_port(),
            as_postgres,
        };
        run(c
            .cmd("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&c.data));
        c.start_server();
        register_cleanup(&c);
        c
    }

    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.data.display()
        );
        run(self
            .cmd("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .args(["-l"])
            .arg(self.data.join("server.log"))
            .args(["-o", &opts, "start"]));
    }

    pub fn stop_server(&self) {
        run(self
            .cmd("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .args(["-m", "fast", "stop"]));
    }

    /// A fresh database; returns its URL.
    pub fn database(&self, name: &str) -> String {
        let mut psql = self.cmd("psql");
        psql.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-qc",
        ])
        .arg(format!("CREATE DATABASE {name}"));
        run(&mut psql);
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Runs SQL in `db`, returns psql's unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self
            .cmd("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-qAtc",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Clusters to stop when the test process exits: a cluster kept in a static
/// is never dropped, and a server left running would outlive the tests.
static RUNNING: std::sync::Mutex<Vec<(Vec<String>, PathBuf)>> = std::sync::Mutex::new(Vec::new());

extern "C" fn stop_all() {
    let list = RUNNING.lock().map(|l| l.clone()).unwrap_or_default();
    for (prefix, data) in list {
        let _ = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn register_cleanup(c: &Cluster) {
    let ctl = c.bin.join("pg_ctl").display().to_string();
    let prefix = if c.as_postgres {
        vec![
            "runuser".into(),
            "-u".into(),
            "postgres".into(),
            "--".into(),
            ctl,
        ]
    } else {
        vec![ctl]
    };
    let mut list = RUNNING.lock().unwrap();
    if list.is_empty() {
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe {
            libc_atexit(stop_all);
        }
    }
    list.push((prefix, c.data.clone()));
}

unsafe extern "C" {
    #[link_name = "atexit"]
    fn libc_atexit(f: extern "C" fn()) -> i32;
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

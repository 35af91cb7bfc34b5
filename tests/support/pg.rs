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
    ssl: bool,
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
        Cluster::start_with_tls(None)
    }

    /// A cluster with `ssl=on`, serving the given certificate chain and
    /// key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Cluster {
        Cluster::start_with_tls(Some((cert_pem, key_pem)))
    }

    fn start_with_tls(tls: Option<(&str, &str)>) -> Cluster {
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
            ssl: tls.is_some(),
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
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (name, text) in [("server.crt", cert), ("server.key", key)] {
                let path = c.data.join(name);
                std::fs::write(&path, text).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                if c.as_postgres {
                    run(Command::new("chown").arg("postgres:postgres").arg(&path));
                }
            }
        }
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
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200{}",
            self.port,
            self.data.display(),
            if self.ssl { " -c ssl=on" } else { "" }
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
        run(&mut self.psql("postgres", &format!("CREATE DATABASE {name}")));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// A URL with the given query parameters instead of `sslmode=disable`.
    pub fn url_with(&self, db: &str, params: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?{params}", self.port)
    }

    /// Runs SQL in `db`, returns psql's unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, sql).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The psql command that runs SQL in `db`, to run beside the test.
    pub fn psql(&self, db: &str, sql: &str) -> Command {
        let mut c = self.cmd("psql");
        c.args([
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
        ]);
        c
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The postmaster and every process it started (backends, checkpointer,
    /// ...): what must stop for the server to hang rather than refuse.
    pub fn processes(&self) -> Vec<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap();
        let postmaster: i32 = text.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parens.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok())
                == Some(postmaster)
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops every process of the server with SIGSTOP, like a frozen VM or
    /// a stalled disk: connections stay open, the kernel still ACKs, nothing
    /// answers. Resumed when the guard is dropped, or after `at_most` (so a
    /// test that hangs never leaves the server stopped).
    pub fn freeze(&self, at_most: std::time::Duration) -> Frozen {
        let pids = self.processes();
        for &p in &pids {
            // SAFETY: kill(2) with a pid of this cluster and a valid signal.
            unsafe { libc::kill(p, libc::SIGSTOP) };
        }
        let thawed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, list) = (thawed.clone(), pids.clone());
        std::thread::spawn(move || {
            std::thread::sleep(at_most);
            if !t.swap(true, std::sync::atomic::Ordering::SeqCst) {
                eprintln!("watchdog: resuming the stopped server after {at_most:?}");
                thaw(&list);
            }
        });
        Frozen { pids, thawed }
    }
}

/// A stopped server; resumes it when dropped.
pub struct Frozen {
    pids: Vec<i32>,
    thawed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            thaw(&self.pids);
        }
    }
}

fn thaw(pids: &[i32]) {
    for &p in pids {
        // SAFETY: kill(2) with a pid of this cluster and a valid signal.
        unsafe { libc::kill(p, libc::SIGCONT) };
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

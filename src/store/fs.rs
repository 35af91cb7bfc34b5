//! The directory store: one file per private key plus `state.json`.
//!
//! ```text
//! keys/
//!   .lock              flock held while a daemon uses the directory (holds its pid)
//!   state.json         the key-ring state: the commit point of every change
//!   <kid>.key          a committed private key: PKCS#8 PEM, or sealed (JSON envelope)
//!   <kid>.key.pending  a generated key not yet in state.json
//!   *.tmp              a write in progress
//! ```
//! Every write is temp file, fsync, rename, fsync of the directory. A key is
//! staged as `.pending` before the state that publishes it is committed, and
//! renamed to `.key` after; load rolls either way forward or back, so a crash
//! at any instant leaves a store that loads.
//!
//! One file, over 500 lines: the crash rules of write, commit and load are
//! one protocol, each step correct only given the others, and read together
//! (the consistency check itself is `store::check`).

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use p256::pkcs8::SecretDocument;
use zeroize::Zeroizing;

use crate::audit::{self, Head, Record};
use crate::keys::{KeyMaterial, Kid};
use crate::lifecycle::KeyringState;
use crate::lifecycle::state::{STATE_FORMAT, format_readable};
use crate::store::audit_log::{self as segments, Segments};
use crate::store::check::{self, Finding, Unnamed};
use crate::store::seal::{self, MasterKey};
use crate::store::{KeyStore, Loaded, Problem, Rekeyed, StoreError};

/// How long a commit (local writes and fsyncs, normally milliseconds) may
/// be in flight before this process stops handing out and signing with the
/// keys it may change, until it returns: part of the retention
/// (`Policy::propagation`), so that a stalled disk cannot keep a key it is
/// deactivating in use past its retention.
pub const COMMIT_WINDOW: Duration = Duration::from_secs(2);

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = ".lock";
const KEY_EXT: &str = ".key";
const PENDING_EXT: &str = ".key.pending";
const TMP_EXT: &str = ".tmp";
/// A state file larger than this is not ours.
const MAX_STATE_BYTES: u64 = 16 << 20;
const MAX_KEY_BYTES: u64 = 64 << 10;

pub struct FsStore {
    dir: PathBuf,
    /// Seals new keys; opens keys sealed with it.
    master: Option<MasterKey>,
    /// Opens keys sealed with it, never seals: the key a rekey moves from.
    previous: Option<MasterKey>,
    /// This process, in the audit records it writes.
    replica: String,
    /// Held for the life of the store: the flock is released on close.
    _lock: File,
    inner: Mutex<Inner>,
}

/// What a key file is sealed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sealing {
    Clear,
    Current,
    Previous,
}

struct Inner {
    /// Version of the state last loaded or committed.
    version: u64,
    /// How each loaded key file is sealed.
    sealing: HashMap<Kid, Sealing>,
    /// Kids with a committed `.key` file.
    on_disk: HashSet<Kid>,
    /// Things done at open time, reported with the next load.
    notes: Vec<String>,
    /// The audit log, opened at load (it needs the committed version).
    audit: Option<Segments>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl FsStore {
    /// Opens (creating if needed) the key directory and takes its lock.
    pub fn open(dir: impl Into<PathBuf>, master: Option<MasterKey>) -> Result<FsStore, StoreError> {
        let dir = dir.into();
        let mut notes = Vec::new();
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io("create key directory", &dir))?;
        }
        let meta = fs::metadata(&dir).map_err(io("stat key directory", &dir))?;
        if !meta.is_dir() {
            return Err(StoreError::Other(format!(
                "{} is not a directory; point keys_dir at a directory",
                dir.display()
            )));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            if holds_key_material(&dir)? {
                return Err(StoreError::Permissions {
                    path: dir,
                    mode,
                    want: 0o700,
                });
            }
            // A fresh directory (as a checkout makes it): tighten it before the
            // first key is written.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(io("restrict key directory", &dir))?;
            notes.push(format!(
                "key directory {} had mode {mode:o} and held no key yet: tightened to 700 before the first key (nothing to do)",
                dir.display()
            ));
        }
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut s = String::new();
                let _ = lock.read_to_string(&mut s);
                return Err(StoreError::Locked {
                    dir,
                    pid: s.trim().parse().ok(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        lock.set_len(0).map_err(io("write lock file", &lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io("write lock file", &lock_path))?;
        Ok(FsStore {
            dir,
            master,
            previous: None,
            replica: super::replica_name(),
            _lock: lock,
            inner: Mutex::new(Inner {
                version: 0,
                sealing: HashMap::new(),
                on_disk: HashSet::new(),
                notes,
                audit: None,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The audit log, opened on first use when no load opened it.
    fn audit_log<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut Segments, StoreError> {
        if inner.audit.is_none() {
            // Not loaded (`jwksd rekey`): the committed version is the
            // state file's, never a guess that would drop its records.
            let committed = read_state(&self.dir)?.map_or(0, |s| s.version);
            let (log, notes) = Segments::open(&self.dir, committed)?;
            for n in notes {
                tracing::warn!(store = %self.dir.display(), "{n}");
            }
            inner.audit = Some(log);
        }
        inner
            .audit
            .as_mut()
            .ok_or_else(|| StoreError::Other("the audit log is not open".into()))
    }

    /// Also opens keys sealed with `previous` (as left by an interrupted
    /// `jwksd rekey`); new keys are still sealed with the current master key.
    pub fn with_previous_master(mut self, previous: Option<MasterKey>) -> FsStore {
        self.previous = previous;
        self
    }

    /// [`KeyStore::rekey`]: one atomic file at a time.
    fn rekey_files(&self, proceed: &mut dyn FnMut(&Kid) -> bool) -> Result<Rekeyed, StoreError> {
        let Some(master) = &self.master else {
            return Err(StoreError::Other(
                "rekey needs the new master key (JWKSD_NEW_MASTER_KEY or --new-master-key-file)"
                    .into(),
            ));
        };
        let loaded = self.load()?;
        let sealing = self.inner().sealing.clone();
        let mut report = Rekeyed {
            rewritten: 0,
            already: 0,
            complete: true,
        };
        for k in &loaded.state.keys {
            let Some(key) = loaded.keys.get(&k.kid) else {
                continue;
            };
            if sealing.get(&k.kid) == Some(&Sealing::Current) {
                report.already += 1;
                continue;
            }
            if !proceed(&k.kid) {
                report.complete = false;
                return Ok(report);
            }
            let sealed = master
                .seal(&key.kid, key.alg, &key.pkcs8)
                .map_err(|source| StoreError::Seal {
                    kid: key.kid.clone(),
                    source,
                })?;
            self.write_atomic(&format!("{}{KEY_EXT}", key.kid), &sealed)?;
            self.inner().sealing.insert(k.kid.clone(), Sealing::Current);
            report.rewritten += 1;
        }
        Ok(report)
    }

    fn key_path(&self, kid: &Kid) -> PathBuf {
        self.dir.join(format!("{kid}{KEY_EXT}"))
    }

    fn pending_path(&self, kid: &Kid) -> PathBuf {
        self.dir.join(format!("{kid}{PENDING_EXT}"))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `name` atomically and durably: temp file, fsync, rename, fsync
    /// of the directory.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_and_rename(name, bytes)?;
        self.sync_dir()
    }

    /// Writes `name` through a synced temp file and renames it into place;
    /// the caller syncs the directory.
    fn write_and_rename(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.dir.join(format!("{name}{TMP_EXT}"));
        let dest = self.dir.join(name);
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        let written = f
            .write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io("write", &tmp));
        drop(f);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(io("rename", &dest)(e));
        }
        Ok(())
    }

    /// The directory sync that makes a committed state's rename durable.
    fn sync_committed_state(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        if tests::FAIL_STATE_SYNC.with(std::cell::Cell::get) {
            return Err(io("fsync", &self.dir)(std::io::Error::from_raw_os_error(
                libc::EIO,
            )));
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))
    }

    /// Reads a private key file and opens it into key material.
    fn read_key(
        &self,
        kid: &Kid,
        alg: crate::keys::Alg,
        path: &Path,
    ) -> Result<(KeyMaterial, Sealing), Problem> {
        let problem = |what: String, fix: &str| Problem {
            path: path.to_owned(),
            what,
            fix: fix.to_owned(),
        };
        let bytes = read_limited(path, MAX_KEY_BYTES).map_err(|e| {
            problem(
                format!("cannot read: {e}"),
                "check the file's owner and mode (600)",
            )
        })?;
        let mut sealing = Sealing::Clear;
        let der: Zeroizing<Vec<u8>> = if seal::is_sealed(&bytes) {
            let by = seal::sealed_by(&bytes);
            let (master, how) = match (&self.master, &self.previous) {
                (_, Some(p)) if by.as_deref() == Some(p.id()) => (p, Sealing::Previous),
                (Some(m), _) => (m, Sealing::Current),
                (None, _) => {
                    return Err(problem(
                        "the key is sealed and no master key is configured".into(),
                        "set JWKSD_MASTER_KEY (or master_key_file) to the master key the store was sealed with",
                    ));
                }
            };
            sealing = how;
            master.open(kid, alg, &bytes).map_err(|e| {
                problem(
                    format!("cannot open sealed key: {e}"),
                    "configure the master key this store was sealed with; if it is lost, the keys \
                     are too (restore the directory from a backup and its master key)",
                )
            })?
        } else {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| problem("not PEM".into(), "restore the file from a backup"))?;
            let (label, doc) = SecretDocument::from_pem(text).map_err(|e| {
                problem(
                    format!("not a PEM document: {e}"),
                    "restore the file from a backup",
                )
            })?;
            if label != "PRIVATE KEY" {
                return Err(problem(
                    format!("PEM label {label:?}, expected \"PRIVATE KEY\" (PKCS#8)"),
                    "restore the file from a backup",
                ));
            }
            Zeroizing::new(doc.as_bytes().to_vec())
        };
        let key = KeyMaterial::from_pkcs8(alg, der)
            .map_err(|e| problem(e.to_string(), "restore the file from a backup"))?;
        if &key.kid != kid {
            return Err(problem(
                format!("holds the key {}, not {kid}", key.kid),
                "the file was swapped or damaged: restore it from a backup",
            ));
        }
        Ok((key, sealing))
    }
}

/// Whether a directory already holds a state or a private key.
fn holds_key_material(dir: &Path) -> Result<bool, StoreError> {
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let name = entry.map_err(io("list", dir))?.file_name();
        let name = name.to_string_lossy();
        if name == STATE_FILE || name.ends_with(KEY_EXT) || name.ends_with(PENDING_EXT) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_limited(path: &Path, limit: u64) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let f = File::open(path)?;
    // Sized up front: a buffer that grew while reading would leave the
    // first part of the file (a private key) in memory freed unwiped.
    let size = f.metadata()?.len().min(limit) as usize;
    let mut buf = Zeroizing::new(Vec::with_capacity(size + 1));
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(buf)
}

/// A repair of an interrupted write, carried out once the store checks out.
enum Repair {
    Remove(PathBuf),
    Rename(PathBuf, PathBuf),
}

/// A file name in the key directory, classified.
enum Entry {
    Key(Kid),
    Pending(Kid),
    Temp,
    Other,
}

fn classify(name: &str) -> Entry {
    if name.ends_with(TMP_EXT) {
        Entry::Temp
    } else if let Some(kid) = name.strip_suffix(PENDING_EXT) {
        kid.parse().map(Entry::Pending).unwrap_or(Entry::Other)
    } else if let Some(kid) = name.strip_suffix(KEY_EXT) {
        kid.parse().map(Entry::Key).unwrap_or(Entry::Other)
    } else {
        Entry::Other
    }
}

impl KeyStore for FsStore {
    fn rekey(&self, proceed: &mut dyn FnMut(&Kid) -> bool) -> Result<Rekeyed, StoreError> {
        self.rekey_files(proceed)
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let mut inner = self.inner();
        let mut notes = std::mem::take(&mut inner.notes);
        // Everything is checked first; repairs of interrupted writes are
        // only carried out when nothing is wrong, so a refused store is
        // left exactly as it was found.
        let mut problems = Vec::new();
        let mut repairs: Vec<(Repair, String)> = Vec::new();
        let mut key_files = HashSet::new();
        let mut pending_files = HashSet::new();

        for entry in fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let entry = entry.map_err(io("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            match classify(&name) {
                Entry::Temp => repairs.push((
                    Repair::Remove(path.clone()),
                    format!(
                        "removed {}, left by an interrupted write (never committed)",
                        path.display()
                    ),
                )),
                Entry::Key(kid) => {
                    let mode = entry
                        .metadata()
                        .map_err(io("stat", &path))?
                        .permissions()
                        .mode();
                    if mode & 0o077 != 0 {
                        problems.push(Problem {
                            path: path.clone(),
                            what: format!("private key file has mode {:o}", mode & 0o777),
                            fix: format!("chmod 600 {}", path.display()),
                        });
                    }
                    key_files.insert(kid);
                }
                Entry::Pending(kid) => {
                    pending_files.insert(kid);
                }
                Entry::Other => {}
            }
        }

        let state_path = self.dir.join(STATE_FILE);
        let state = if state_path.exists() {
            let bytes =
                read_limited(&state_path, MAX_STATE_BYTES).map_err(io("read", &state_path))?;
            match parse_state(&bytes) {
                Ok(s) => s,
                Err(what) => {
                    problems.push(Problem {
                        path: state_path.clone(),
                        what,
                        fix: "restore state.json from a backup of the key directory".into(),
                    });
                    return Err(StoreError::Inconsistent(problems));
                }
            }
        } else {
            KeyringState::default()
        };

        let mut keys = HashMap::new();
        let mut sealing = HashMap::new();
        let live: HashSet<&Kid> = state.keys.iter().map(|k| &k.kid).collect();
        // A key committed but not yet renamed from `.pending` is held too.
        let held: Vec<&Kid> = key_files
            .iter()
            .chain(
                pending_files
                    .iter()
                    .filter(|k| live.contains(k) && !key_files.contains(*k)),
            )
            .collect();
        let (findings, unnamed) = check::check(&state, held.iter().copied());
        for finding in findings {
            let k = match finding {
                Finding::NotItsOwnKey(k) => {
                    problems.push(Problem {
                        path: state_path.clone(),
                        what: format!(
                            "key {} does not carry its own public key (the kid is not its thumbprint)",
                            k.kid
                        ),
                        fix: "state.json was altered: restore it from a backup".into(),
                    });
                    continue;
                }
                Finding::MissingRetiring(k) => {
                    notes.push(format!(
                        "private key of retiring key {} is missing ({}): it still verifies and \
                         will not sign again, so nothing is lost",
                        k.kid,
                        self.key_path(&k.kid).display()
                    ));
                    continue;
                }
                Finding::Missing(k) => {
                    problems.push(Problem {
                        path: self.key_path(&k.kid),
                        what: format!(
                            "private key of the {} {} key {} is missing",
                            k.state, k.alg, k.kid
                        ),
                        fix: "restore the file from a backup of the key directory; if it is \
                              lost, see \"A private key is missing\" in runbook.md"
                            .into(),
                    });
                    continue;
                }
                Finding::Held(k) => k,
            };
            let path = self.key_path(&k.kid);
            let mut read_from = path.clone();
            if !key_files.contains(&k.kid) {
                // Committed, but the rename after the commit did not happen.
                read_from = self.pending_path(&k.kid);
                repairs.push((
                    Repair::Rename(read_from.clone(), path.clone()),
                    format!("completed the commit of {}", path.display()),
                ));
            }
            match self.read_key(&k.kid, k.alg, &read_from) {
                Ok((key, how)) => {
                    match how {
                        Sealing::Clear if self.master.is_some() => notes.push(format!(
                            "{} is stored in the clear although a master key is configured: run \
                             `jwksd rekey` to seal it",
                            path.display()
                        )),
                        Sealing::Previous => notes.push(format!(
                            "{} is sealed with the previous master key: run `jwksd rekey` to \
                             finish moving to the new one",
                            path.display()
                        )),
                        _ => {}
                    }
                    sealing.insert(k.kid.clone(), how);
                    keys.insert(k.kid.clone(), key);
                }
                Err(p) => problems.push(p),
            }
        }
        for kid in pending_files.iter().filter(|k| !live.contains(k)) {
            let path = self.pending_path(kid);
            repairs.push((
                Repair::Remove(path.clone()),
                format!(
                    "removed {}: a key generated but never committed (it was never published)",
                    path.display()
                ),
            ));
        }
        for Unnamed { kid, ended } in unnamed {
            let path = self.key_path(kid);
            if ended {
                repairs.push((
                    Repair::Remove(path.clone()),
                    format!("destroyed {} of a retired or revoked key", path.display()),
                ));
            } else {
                problems.push(Problem {
                    path,
                    what: "a private key that state.json does not know".into(),
                    fix: "if this directory was restored from several backups, restore state.json \
                          from the same backup as this key, or move the file out of the key \
                          directory"
                        .into(),
                });
            }
        }
        if !problems.is_empty() {
            return Err(StoreError::Inconsistent(problems));
        }
        if !repairs.is_empty() {
            // The state read may not be durable yet (a sync that failed before
            // a restart): make it so before destroying files it has ended.
            self.sync_dir()?;
            for (repair, note) in repairs {
                match &repair {
                    Repair::Remove(p) => fs::remove_file(p).map_err(io("remove", p))?,
                    Repair::Rename(from, to) => fs::rename(from, to).map_err(io("rename", to))?,
                }
                notes.push(note);
            }
            self.sync_dir()?;
        }
        inner.version = state.version;
        inner.on_disk = keys.keys().cloned().collect();
        inner.sealing = sealing;
        let (audit, audit_notes) = Segments::open(&self.dir, state.version)?;
        notes.extend(audit_notes);
        inner.audit = Some(audit);
        Ok(Loaded { state, keys, notes })
    }

    fn stage(&self, key: &KeyMaterial) -> Result<(), StoreError> {
        let bytes: Zeroizing<Vec<u8>> = match &self.master {
            Some(m) => Zeroizing::new(m.seal(&key.kid, key.alg, &key.pkcs8).map_err(|source| {
                StoreError::Seal {
                    kid: key.kid.clone(),
                    source,
                }
            })?),
            None => Zeroizing::new(key.pkcs8_pem()?.as_bytes().to_vec()),
        };
        self.write_atomic(&format!("{}{PENDING_EXT}", key.kid), &bytes)
    }

    fn discard(&self, kid: &Kid) {
        let _ = fs::remove_file(self.pending_path(kid));
    }

    fn commit(
        &self,
        state: &KeyringState,
        audit: &[audit::Entry],
    ) -> Result<Vec<Record>, StoreError> {
        let mut inner = self.inner();
        if state.version != inner.version + 1 {
            return Err(StoreError::Conflict {
                expected: state.version.saturating_sub(1),
                found: inner.version,
            });
        }
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| StoreError::Other(format!("serialising state: {e}")))?;
        // The events first, synced: a crash before the rename leaves
        // records for a version that never committed, which the next load
        // drops (audit::segments); never a change without its records.
        let log = self.audit_log(&mut inner)?;
        let records = audit::chain(log.head(), audit, &self.replica, Some(state.version));
        let mark = log.append(&records)?;
        if let Err(e) = self.write_and_rename(STATE_FILE, &json) {
            log.undo(mark);
            return Err(e);
        }
        log.committed();
        // The rename is the commit point: from here on the change stands,
        // and nothing below may report it as not made (callers would discard
        // keys the state now names). What fails is repaired by the next
        // commit or by load.
        inner.version = state.version;
        // Until the rename is durable, a power loss can bring back the
        // previous state, which may still name the keys this one ends: their
        // files are destroyed only after a successful sync (here, at a later
        // commit, or at load).
        let durable = match self.sync_committed_state() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "state committed, but the key directory could not be synced; ended keys' files are kept until it can be");
                false
            }
        };
        let mut changed = false;
        for k in &state.keys {
            if !inner.on_disk.contains(&k.kid) {
                let pending = self.pending_path(&k.kid);
                if pending.exists() {
                    let path = self.key_path(&k.kid);
                    if let Err(e) = fs::rename(&pending, &path) {
                        tracing::warn!(error = %e, file = %path.display(), "committed key not yet renamed; retried at the next commit or load");
                        continue;
                    }
                    changed = true;
                }
                inner.on_disk.insert(k.kid.clone());
            }
        }
        let live: HashSet<&Kid> = state.keys.iter().map(|k| &k.kid).collect();
        let ended: Vec<Kid> = inner
            .on_disk
            .iter()
            .filter(|k| durable && !live.contains(k))
            .cloned()
            .collect();
        for kid in ended {
            let path = self.key_path(&kid);
            match fs::remove_file(&path) {
                Ok(()) => changed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, file = %path.display(), "private key of an ended key not yet destroyed; retried at the next commit or load");
                    continue;
                }
            }
            inner.on_disk.remove(&kid);
        }
        if changed && let Err(e) = self.sync_dir() {
            tracing::warn!(error = %e, "key directory could not be synced after a commit");
        }
        Ok(records)
    }

    fn record(&self, audit: &[audit::Entry]) -> Result<Vec<Record>, StoreError> {
        let mut inner = self.inner();
        let log = self.audit_log(&mut inner)?;
        let records = audit::chain(log.head(), audit, &self.replica, None);
        log.append(&records)?;
        log.committed();
        Ok(records)
    }

    fn audit_since(&self, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        // Up to the committed head, read outside the lock: never a record
        // of a commit in progress or undone, and commits never wait.
        let upto = {
            let mut inner = self.inner();
            self.audit_log(&mut inner)?.head().seq
        };
        segments::read_since(&self.dir, after, limit, upto)
    }

    fn audit_head(&self) -> Result<Head, StoreError> {
        let mut inner = self.inner();
        Ok(self.audit_log(&mut inner)?.head().clone())
    }

    fn webhook_cursors(&self) -> Result<Vec<(String, audit::Cursor)>, StoreError> {
        let _inner = self.inner();
        segments::read_cursors(&self.dir)
    }

    fn set_webhook_cursor(&self, endpoint: &str, cursor: &audit::Cursor) -> Result<(), StoreError> {
        let _inner = self.inner();
        segments::write_cursor(&self.dir, endpoint, cursor)
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn replica(&self) -> Option<String> {
        Some(self.replica.clone())
    }

    fn version(&self) -> Result<u64, StoreError> {
        Ok(self.inner().version)
    }
}

fn parse_state(bytes: &[u8]) -> Result<KeyringState, String> {
    #[derive(serde::Deserialize)]
    struct Header {
        format: u32,
    }
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| format!("not a jwksd state file: {e}"))?;
    if !format_readable(header.format) {
        return Err(format!(
            "state format {} is not supported by this jwksd (it reads formats 1 to \
             {STATE_FORMAT}); run the jwksd version that wrote it",
            header.format
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("state file is damaged: {e}"))
}

/// Reads the committed state of a key directory without locking it or
/// opening any private key: for `jwksd check-config`, which may run beside
/// the daemon. `None` when the directory holds no state yet.
pub fn read_state(dir: &Path) -> Result<Option<KeyringState>, StoreError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                op: "read",
                path,
                source,
            });
        }
    };
    parse_state(&bytes).map(Some).map_err(|what| {
        StoreError::Inconsistent(vec![Problem {
            path,
            what,
            fix: "restore state.json from a backup of the key directory".into(),
        }])
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::clock::Clock;
    use crate::keyring::Keyring;
    use crate::keys::Alg;
    use crate::lifecycle::{KeyState, Policy, plan, revoke};
    use crate::time::Timestamp;

    thread_local! {
        /// Fails the directory sync after a state's rename (EIO), on this
        /// thread only.
        pub(super) static FAIL_STATE_SYNC: Cell<bool> = const { Cell::new(false) };
    }

    struct Fixed(Timestamp);
    impl Clock for Fixed {
        fn now(&self) -> Timestamp {
            self.0
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + s * 1000)
    }

    fn policy() -> Policy {
        crate::lifecycle::testing::policy(10)
    }

    /// A key directory with its first keys: the next key's kid and file.
    fn a_ring_with_a_next_key() -> (tempfile::TempDir, Policy, Keyring, Kid, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let policy = policy();
        let (mut ring, _) =
            Keyring::load(Box::new(FsStore::open(tmp.path(), None).unwrap())).unwrap();
        let p = plan(ring.state(), &policy, t(0));
        ring.execute(&p.actions, &Fixed(t(0)))
            .into_result()
            .unwrap();
        let next = ring.state().next_key(Alg::ES256).unwrap().kid.clone();
        let file = tmp.path().join(format!("{next}.key"));
        (tmp, policy, ring, next, file)
    }

    #[test]
    fn ended_key_files_are_kept_until_the_state_that_ends_them_is_durable() {
        let (tmp, policy, mut ring, next, file) = a_ring_with_a_next_key();
        assert!(file.exists());

        FAIL_STATE_SYNC.with(|f| f.set(true));
        let actions = revoke(ring.state(), &policy, t(1), &next).unwrap();
        let done = ring.execute(&actions, &Fixed(t(1)));
        FAIL_STATE_SYNC.with(|f| f.set(false));
        // The rename is the commit point: the revocation stands...
        done.into_result().unwrap();
        assert_eq!(ring.state().find(&next).unwrap().state, KeyState::Revoked);
        // ...but until it is durable, a power loss can bring back the state
        // that names the key: its file stays.
        assert!(file.exists(), "deleted before the revocation was durable");

        // Load destroys it once the state is durable.
        drop(ring);
        let store = FsStore::open(tmp.path(), None).unwrap();
        let loaded = store.load().unwrap();
        assert!(!file.exists());
        assert!(
            loaded.notes.iter().any(|n| n.contains("destroyed")),
            "{:?}",
            loaded.notes
        );
    }

    #[test]
    fn ended_key_files_left_by_a_failed_sync_go_at_the_next_commit() {
        let (_tmp, policy, mut ring, next, file) = a_ring_with_a_next_key();
        FAIL_STATE_SYNC.with(|f| f.set(true));
        let actions = revoke(ring.state(), &policy, t(1), &next).unwrap();
        // Only the revocation: the replacement key comes with the next commit.
        let transitions: Vec<_> = actions.into_iter().filter(|a| !a.is_generate()).collect();
        ring.execute(&transitions, &Fixed(t(1)))
            .into_result()
            .unwrap();
        FAIL_STATE_SYNC.with(|f| f.set(false));
        assert!(file.exists());
        let p = plan(ring.state(), &policy, t(2));
        ring.execute(&p.actions, &Fixed(t(2)))
            .into_result()
            .unwrap();
        assert!(!file.exists(), "the next durable commit destroys it");
    }
}

//! The directory store's audit log: `<key dir>/audit/`, JSON lines in
//! segments named by their first sequence number (`00000000000000000001.jsonl`),
//! each sealed once it holds [`SEGMENT_RECORDS`] records: the next record
//! starts a new segment and carries the last hash of the one before.
//! `head.json` holds the last record's sequence number and hash (written
//! after each append), so that records cut off the end are detected;
//! `pruned.json` the last record of the newest segment removed by
//! retention ([`KEEP_SEGMENTS`]), where verification then starts.
//!
//! Records are appended and fsynced before the state that they describe is
//! renamed into place (`store::fs`); a load drops records for a state
//! version that never committed, and a line cut short by a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::audit::{Broken, Chain, Cursor, Head, Record, Verified};
use crate::store::StoreError;

/// The log's directory inside the key directory.
pub const DIR: &str = "audit";
/// Records in a segment before it is sealed: at a few hundred bytes a
/// record, a few MiB a segment.
pub const SEGMENT_RECORDS: u64 = 10_000;
/// Sealed segments kept; older ones are removed (export them first if they
/// must be kept longer: docs/events.md).
pub const KEEP_SEGMENTS: usize = 100;
const HEAD_FILE: &str = "head.json";
const PRUNED_FILE: &str = "pruned.json";
const EXT: &str = ".jsonl";

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The log of one key directory, open for appending (the store's lock
/// makes this process its one writer).
pub struct Segments {
    dir: PathBuf,
    per_segment: u64,
    keep: usize,
    /// The segment appended to, its first sequence number and records.
    current: Option<(PathBuf, u64)>,
    head: Head,
    /// Set when records of a failed commit could not be removed: no more
    /// appends (they would follow records that never committed) until a
    /// restart's load drops them.
    stuck: Option<String>,
}

/// Where an append began, to undo it if the commit it belongs to fails.
pub struct Mark {
    path: PathBuf,
    len: u64,
    head: Head,
    current: Option<(PathBuf, u64)>,
}

/// The segment files of `dir`, oldest first, with their first sequence
/// numbers.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(first) = name.strip_suffix(EXT).and_then(|n| n.parse::<u64>().ok()) {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One line of a segment.
struct Line {
    /// 1, 2, 3, …
    n: usize,
    /// Where it starts in the file.
    offset: u64,
    text: String,
    /// Whether it ends in a newline (a line being written, or cut short by
    /// a crash, does not).
    complete: bool,
}

impl Line {
    fn record(&self) -> Option<Record> {
        serde_json::from_str(&self.text).ok()
    }
}

/// The lines of a segment, read one at a time.
struct Lines<'a> {
    path: &'a Path,
    reader: BufReader<File>,
    n: usize,
    offset: u64,
}

impl<'a> Lines<'a> {
    /// `None` when the file is gone (removed by retention meanwhile).
    fn open(path: &'a Path) -> Result<Option<Lines<'a>>, StoreError> {
        match File::open(path) {
            Ok(f) => Ok(Some(Lines {
                path,
                reader: BufReader::new(f),
                n: 0,
                offset: 0,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("open", path)(e)),
        }
    }
}

impl Iterator for Lines<'_> {
    type Item = Result<Line, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = Vec::new();
        let read = match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => return Some(Err(io("read", self.path)(e))),
        };
        self.n += 1;
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
        }
        let line = Line {
            n: self.n,
            offset: self.offset,
            text: String::from_utf8_lossy(&buf).into_owned(),
            complete,
        };
        self.offset += read as u64;
        Some(Ok(line))
    }
}

/// Every line of a segment (none for one that is gone).
fn lines(path: &Path) -> Result<Vec<Line>, StoreError> {
    match Lines::open(path)? {
        Some(l) => l.collect(),
        None => Ok(Vec::new()),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            StoreError::Other(format!(
                "{}: not a jwksd audit head ({e}); run `jwksd audit verify`",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Writes `name` in `dir` through a synced temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dest = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io("write", &tmp))?;
    fs::rename(&tmp, &dest).map_err(io("rename", &dest))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

impl Segments {
    /// Opens (creating) the log in `key_dir`; `committed` is the version
    /// of the state on disk: records written for a later version belong to
    /// a commit that never happened and are dropped, as is a last line cut
    /// short. Returns the notes of what was repaired.
    pub fn open(key_dir: &Path, committed: u64) -> Result<(Segments, Vec<String>), StoreError> {
        Segments::open_with(key_dir, committed, SEGMENT_RECORDS, KEEP_SEGMENTS)
    }

    pub fn open_with(
        key_dir: &Path,
        committed: u64,
        per_segment: u64,
        keep: usize,
    ) -> Result<(Segments, Vec<String>), StoreError> {
        let dir = key_dir.join(DIR);
        if !dir.exists() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(io("create", &dir))?;
        }
        let mut notes = Vec::new();
        let files = segment_files(&dir)?;
        let pruned: Option<Head> = read_json(&dir.join(PRUNED_FILE))?;
        let mut head = pruned.unwrap_or_else(Head::genesis);
        let mut current = None;
        if let Some((_, path)) = files.last() {
            let lines = lines(path)?;
            let parsed: Vec<Option<Record>> = lines.iter().map(Line::record).collect();
            // The tail a crash can leave: the records of the one commit in
            // flight (all for version `committed + 1`), and a line cut
            // short. Records of later versions before them are no crash's
            // (a state.json restored from an older backup): kept, since
            // those changes happened.
            let torn = lines.last().is_some_and(|l| !l.complete);
            let mut cut = lines.len() - usize::from(torn);
            while cut > 0
                && parsed[cut - 1].as_ref().and_then(|r| r.state_version) == Some(committed + 1)
            {
                cut -= 1;
            }
            if cut < lines.len() {
                notes.push(format!(
                    "{}: dropped {} record line(s) from line {} on, written for a change that \
                     never committed",
                    path.display(),
                    lines.len() - cut,
                    cut + 1
                ));
            }
            let damaged = parsed[..cut].iter().filter(|r| r.is_none()).count();
            if damaged > 0 {
                notes.push(format!(
                    "{}: {damaged} line(s) are not audit records: the log was damaged; \
                     `jwksd audit verify` names the first",
                    path.display()
                ));
            }
            let later = parsed[..cut]
                .iter()
                .flatten()
                .filter(|r| r.state_version.is_some_and(|v| v > committed))
                .count();
            if later > 0 {
                notes.push(format!(
                    "{}: {later} audit record(s) describe changes after state version \
                     {committed}: state.json is older than the log (restored from a backup?); \
                     they are kept",
                    path.display()
                ));
            }
            let count = cut as u64;
            let last: Option<Head> = parsed[..cut].iter().flatten().last().map(Record::head);
            if let Some(keep_to) = lines.get(cut).map(|l| l.offset) {
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io("open", path))?;
                f.set_len(keep_to)
                    .and_then(|_| f.sync_all())
                    .map_err(io("truncate", path))?;
            }
            if let Some(l) = last {
                head = l;
            } else if files.len() > 1 {
                // An empty newest segment: the head is the one before's end.
                let (_, prev) = &files[files.len() - 2];
                if let Some(r) = lines_records(prev)?.last() {
                    head = r.head();
                }
            }
            current = Some((path.clone(), count));
        }
        let recorded: Option<Head> = read_json(&dir.join(HEAD_FILE))?;
        // A log that ends before the head recorded apart from it was cut:
        // a crash never does that (the head is written after the records).
        // Chain on from the recorded head, so that the gap stays visible to
        // `jwksd audit verify` rather than be papered over.
        if let Some(r) = &recorded
            && r.seq > head.seq
        {
            notes.push(format!(
                "{}: the audit log ends at record {} but {HEAD_FILE} records {}: records were \
                 cut off (jwksd audit verify reports it); new records follow record {}",
                dir.display(),
                head.seq,
                r.seq,
                r.seq
            ));
            head = r.clone();
        }
        let s = Segments {
            dir,
            per_segment,
            keep,
            current,
            head,
            stuck: None,
        };
        if recorded.as_ref() != Some(&s.head) && s.head.seq > 0 {
            s.write_head()?;
        }
        Ok((s, notes))
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    fn write_head(&self) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&self.head).unwrap_or_default();
        write_atomic(&self.dir, HEAD_FILE, &json)
    }

    /// Appends `records` (which follow [`Segments::head`]) and syncs them;
    /// the mark undoes it.
    pub fn append(&mut self, records: &[Record]) -> Result<Mark, StoreError> {
        if let Some(why) = &self.stuck {
            return Err(StoreError::Other(format!(
                "the audit log holds records of a commit that failed ({why}); restart jwksd to \
                 drop them"
            )));
        }
        let first = records.first().map_or(self.head.seq + 1, |r| r.seq);
        let sealed = self
            .current
            .as_ref()
            .is_none_or(|(_, n)| *n >= self.per_segment);
        let current = self.current.clone();
        if sealed {
            let path = self.dir.join(format!("{first:020}{EXT}"));
            self.current = Some((path, 0));
        }
        let Some((path, count)) = self.current.clone() else {
            return Err(StoreError::Other("no audit segment".into()));
        };
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        let len = f.metadata().map_err(io("stat", &path))?.len();
        let mark = Mark {
            path: path.clone(),
            len,
            head: self.head.clone(),
            current,
        };
        let mut text = String::new();
        for r in records {
            text.push_str(&r.to_line());
            text.push('\n');
        }
        let written = f
            .write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io("write", &path));
        if let Err(e) = written {
            self.undo(mark);
            return Err(e);
        }
        if sealed {
            // A new segment's name must be durable with its records.
            let synced = File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync", &self.dir));
            if let Err(e) = synced {
                self.undo(mark);
                return Err(e);
            }
        }
        if let Some(last) = records.last() {
            self.head = last.head();
        }
        self.current = Some((path, count + records.len() as u64));
        Ok(mark)
    }

    /// After the commit the records belong to: the head file, and retention.
    pub fn committed(&mut self) {
        if let Err(e) = self.write_head() {
            tracing::warn!(error = %e, "audit head not written; the next start writes it");
        }
        if let Err(e) = self.prune() {
            tracing::warn!(error = %e, "old audit segments not removed; retried at the next record");
        }
    }

    /// Undoes an append whose commit failed.
    pub fn undo(&mut self, mark: Mark) {
        let cut = OpenOptions::new()
            .write(true)
            .open(&mark.path)
            .and_then(|f| f.set_len(mark.len).and_then(|_| f.sync_all()));
        if let Err(e) = cut {
            tracing::error!(error = %e, file = %mark.path.display(), "records of a failed commit not removed; no change is committed until a restart drops them");
            self.stuck = Some(e.to_string());
        }
        if mark.len == 0 {
            let _ = fs::remove_file(&mark.path);
        }
        self.head = mark.head;
        self.current = mark.current;
    }

    fn prune(&mut self) -> Result<(), StoreError> {
        let files = segment_files(&self.dir)?;
        if files.len() <= self.keep + 1 {
            return Ok(());
        }
        for (_, path) in &files[..files.len() - self.keep - 1] {
            if let Some(last) = lines_records(path)?.last() {
                write_atomic(
                    &self.dir,
                    PRUNED_FILE,
                    &serde_json::to_vec(&last.head()).unwrap_or_default(),
                )?;
            }
            fs::remove_file(path).map_err(io("remove", path))?;
            tracing::info!(file = %path.display(), "removed an old sealed audit segment (retention)");
        }
        Ok(())
    }
}

/// The records of one segment that parse (what verification reads line by
/// line instead).
fn lines_records(path: &Path) -> Result<Vec<Record>, StoreError> {
    Ok(lines(path)?
        .into_iter()
        .filter_map(|l| l.record())
        .collect())
}

/// Records after `after`, at most `limit`, up to record `upto` (the
/// writer's committed head: what lies beyond is a write in progress, or
/// records of a commit that failed), from the log in `key_dir`. Read line
/// by line, without the store's lock. A complete line that is no record is
/// an error (the log was damaged: `jwksd audit verify`); records removed by
/// retention are reported in the log, not invented.
pub fn read_since(
    key_dir: &Path,
    after: u64,
    limit: usize,
    upto: u64,
) -> Result<Vec<Record>, StoreError> {
    let dir = key_dir.join(DIR);
    let files = segment_files(&dir)?;
    if let Some((first, _)) = files.first()
        && *first > after + 1
        && after < upto
    {
        tracing::warn!(
            after,
            first = *first,
            "audit records after {after} were removed by retention; reading from {first}"
        );
    }
    // The segment holding `after + 1`: the last whose first is at most it.
    let start = files
        .iter()
        .rposition(|(first, _)| *first <= after + 1)
        .unwrap_or(0);
    let mut out = Vec::new();
    for (_, path) in &files[start..] {
        let Some(lines) = Lines::open(path)? else {
            continue;
        };
        for line in lines {
            let line = line?;
            if !line.complete {
                break;
            }
            let rec = line.record().ok_or_else(|| {
                StoreError::Other(format!(
                    "{}:{}: not an audit record; run `jwksd audit verify`",
                    path.display(),
                    line.n
                ))
            })?;
            if rec.seq > upto {
                return Ok(out);
            }
            if rec.seq > after {
                out.push(rec);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The head the writer recorded after its last commit (`head.json`): what
/// a reader in another process may trust as written; `None` before the
/// first record.
pub fn recorded_head(key_dir: &Path) -> Result<Option<Head>, StoreError> {
    read_json(&key_dir.join(DIR).join(HEAD_FILE))
}

const CURSORS_FILE: &str = "webhooks.json";

/// The webhook cursors kept beside the log (`webhooks.json`).
pub fn read_cursors(key_dir: &Path) -> Result<Vec<(String, Cursor)>, StoreError> {
    let path = key_dir.join(DIR).join(CURSORS_FILE);
    let map: Option<std::collections::BTreeMap<String, Cursor>> = match fs::read(&path) {
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
            StoreError::Other(format!(
                "{}: not a jwksd webhook cursor file ({e}); remove it to deliver every event again",
                path.display()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("read", &path)(e)),
    };
    Ok(map.unwrap_or_default().into_iter().collect())
}

/// Replaces `endpoint`'s cursor, atomically.
pub fn write_cursor(key_dir: &Path, endpoint: &str, cursor: &Cursor) -> Result<(), StoreError> {
    let mut map: std::collections::BTreeMap<String, Cursor> =
        read_cursors(key_dir)?.into_iter().collect();
    // Never backwards: a delivery that ends after another writer moved on
    // must not send records again (or lose the failure count of the one
    // it stopped at).
    if map
        .get(endpoint)
        .is_some_and(|c| c.delivered > cursor.delivered)
    {
        return Ok(());
    }
    map.insert(endpoint.to_owned(), cursor.clone());
    let json = serde_json::to_vec_pretty(&map).unwrap_or_default();
    write_atomic(&key_dir.join(DIR), CURSORS_FILE, &json)
}

/// Verifies the whole log in `key_dir`: every segment in order, each line
/// a record that follows the one before, ending at `head.json`.
pub fn verify(key_dir: &Path) -> Result<Verified, Broken> {
    let dir = key_dir.join(DIR);
    let fail = |place: &Path, why: String| Broken {
        seq: 0,
        place: place.display().to_string(),
        why,
    };
    let files = segment_files(&dir).map_err(|e| fail(&dir, e.to_string()))?;
    let from: Head = read_json(&dir.join(PRUNED_FILE))
        .map_err(|e| fail(&dir.join(PRUNED_FILE), e.to_string()))?
        .unwrap_or_else(Head::genesis);
    // The head first: what a running daemon appends after this read (a
    // record past it, a line being written) is not judged.
    let head_path = dir.join(HEAD_FILE);
    let recorded = read_json::<Head>(&head_path).map_err(|e| fail(&head_path, e.to_string()))?;
    let upto = recorded.as_ref().map_or(u64::MAX, |h| h.seq);
    let mut chain = Chain::after(from.clone());
    'files: for (first, path) in &files {
        let lines = lines(path).map_err(|e| fail(path, e.to_string()))?;
        for Line {
            n, text, complete, ..
        } in &lines
        {
            if chain.head().seq >= upto {
                break 'files;
            }
            let place = format!("{}:{n}", path.display());
            if !complete {
                return Err(Broken {
                    seq: chain.head().seq + 1,
                    place,
                    why: "the line is cut short (the file was truncated)".into(),
                });
            }
            let r: Record = serde_json::from_str(text).map_err(|e| Broken {
                seq: chain.head().seq + 1,
                place: place.clone(),
                why: format!("not an audit record: {e}"),
            })?;
            if *n == 1 && r.seq != *first {
                return Err(Broken {
                    seq: chain.head().seq + 1,
                    place,
                    why: format!(
                        "the segment is named {first} but starts with record {}",
                        r.seq
                    ),
                });
            }
            chain.push(&r, &place)?;
        }
    }
    match recorded {
        Some(h) => chain.ends_at(&h, &head_path.display().to_string())?,
        None if chain.head().seq > 0 => {
            return Err(fail(
                &head_path,
                "missing: the log's end cannot be checked (deleted?)".into(),
            ));
        }
        None => {}
    }
    Ok(Verified {
        records: chain.count(),
        parts: files.len(),
        head: chain.head().clone(),
        from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, Entry, chain};
    use crate::lifecycle::event::Event;
    use crate::time::Timestamp;

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                at: Timestamp::from_millis(i as i64),
                actor: Actor::jwksd(),
                event: Event::refused("rotate", None, None, "too_early"),
            })
            .collect()
    }

    #[test]
    fn segments_seal_prune_and_verify_across_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut s, _) = Segments::open_with(tmp.path(), 0, 3, 2).unwrap();
        for v in 1..=10u64 {
            let recs = chain(s.head(), &entries(1), "r", Some(v));
            s.append(&recs).unwrap();
            s.committed();
        }
        let files = segment_files(&tmp.path().join(DIR)).unwrap();
        // 10 records, 3 a segment: 4 segments, the oldest pruned to keep 2
        // sealed ones and the current one.
        assert_eq!(files.iter().map(|f| f.0).collect::<Vec<_>>(), [4, 7, 10]);
        let v = verify(tmp.path()).unwrap();
        assert_eq!((v.records, v.head.seq, v.from.seq), (7, 10, 3));
        assert_eq!(read_since(tmp.path(), 5, 3, u64::MAX).unwrap()[0].seq, 6);
        assert_eq!(read_since(tmp.path(), 5, 100, u64::MAX).unwrap().len(), 5);
        assert_eq!(read_since(tmp.path(), 5, 100, 8).unwrap().len(), 3);

        // A commit of version 12 that never happened (state at 11 after
        // one more): dropped at open; a line cut short too.
        let recs = chain(s.head(), &entries(1), "r", Some(11));
        s.append(&recs).unwrap();
        s.committed();
        let recs = chain(s.head(), &entries(2), "r", Some(12));
        s.append(&recs).unwrap();
        drop(s);
        let last = segment_files(&tmp.path().join(DIR))
            .unwrap()
            .pop()
            .unwrap()
            .1;
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(b"{\"seq\":14,").unwrap();
        let (s, notes) = Segments::open_with(tmp.path(), 11, 3, 2).unwrap();
        assert_eq!(s.head().seq, 11);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(verify(tmp.path()).unwrap().head.seq, 11);
    }

    /// A log of five commits, versions 1 to 5, one record each.
    fn five_commits(dir: &Path) {
        let (mut s, _) = Segments::open(dir, 0).unwrap();
        for v in 1..=5u64 {
            let recs = chain(s.head(), &entries(1), "r", Some(v));
            s.append(&recs).unwrap();
            s.committed();
        }
    }

    #[test]
    fn a_webhook_cursor_never_moves_backwards() {
        let tmp = tempfile::tempdir().unwrap();
        Segments::open(tmp.path(), 0).unwrap();
        let at = |delivered| Cursor {
            delivered,
            ..Cursor::default()
        };
        write_cursor(tmp.path(), "chat", &at(7)).unwrap();
        // A replica that lost the lease mid-delivery reports 5: ignored.
        write_cursor(tmp.path(), "chat", &at(5)).unwrap();
        write_cursor(tmp.path(), "pager", &at(2)).unwrap();
        assert_eq!(
            read_cursors(tmp.path()).unwrap(),
            [("chat".to_owned(), at(7)), ("pager".to_owned(), at(2))]
        );
        write_cursor(tmp.path(), "chat", &at(9)).unwrap();
        assert_eq!(read_cursors(tmp.path()).unwrap()[0].1, at(9));
    }

    #[test]
    fn records_of_a_state_restored_from_an_older_backup_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        five_commits(tmp.path());
        // state.json back at version 2: versions 3 to 5 happened; kept.
        let (s, notes) = Segments::open(tmp.path(), 2).unwrap();
        assert_eq!(s.head().seq, 5);
        assert!(notes.iter().any(|n| n.contains("restored")), "{notes:?}");
        assert_eq!(verify(tmp.path()).unwrap().records, 5);
    }

    #[test]
    fn records_cut_off_the_end_stay_a_gap_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        five_commits(tmp.path());
        // Two records cut off by hand; the state stays at version 5.
        let seg = segment_files(&tmp.path().join(DIR))
            .unwrap()
            .pop()
            .unwrap()
            .1;
        let text = std::fs::read_to_string(&seg).unwrap();
        let kept: Vec<&str> = text.lines().take(3).collect();
        std::fs::write(&seg, kept.join("\n") + "\n").unwrap();
        let (mut s, notes) = Segments::open(tmp.path(), 5).unwrap();
        assert!(notes.iter().any(|n| n.contains("cut off")), "{notes:?}");
        // The next record follows the recorded head: the gap stays.
        assert_eq!(s.head().seq, 5);
        let recs = chain(s.head(), &entries(1), "r", Some(6));
        s.append(&recs).unwrap();
        s.committed();
        let b = verify(tmp.path()).unwrap_err();
        assert_eq!(b.seq, 4, "{b}");
    }

    #[test]
    fn a_failed_commit_leaves_no_record() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut s, _) = Segments::open(tmp.path(), 0).unwrap();
        let recs = chain(s.head(), &entries(2), "r", Some(1));
        let mark = s.append(&recs).unwrap();
        s.undo(mark);
        assert_eq!(s.head().seq, 0);
        assert!(read_since(tmp.path(), 0, 10, u64::MAX).unwrap().is_empty());
        let recs = chain(s.head(), &entries(1), "r", Some(1));
        s.append(&recs).unwrap();
        s.committed();
        assert_eq!(verify(tmp.path()).unwrap().head.seq, 1);
    }
}

//! The audit log: every [`Event`] the key ring records, numbered, timed and
//! hash-chained, written by the store in the same commit as the state
//! change it describes (docs/events.md, "The audit log").
//!
//! - [`Record`] is one entry as stored: its sequence number, time, replica,
//!   actor and result, the event, the previous record's hash and its own.
//! - [`Chain`] checks records in order: a record edited, deleted, moved or
//!   cut off breaks it, and [`Broken`] names the first that does.
//!
//! The stores keep the records: `store::audit_log` the directory store's
//! sealed segments of JSON lines, `store::postgres` a table.
//!
//! No key material and no token is ever part of an event.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::lifecycle::event::{Event, Kind};
use crate::time::Timestamp;

/// The `prev` of the first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who caused an event: a named client of the admin API (its role with
/// it), or jwksd itself (the schedule, retention, start-up), or a command
/// run on the store (`jwksd rekey`, `jwksd store copy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// `jwksd`, `cli`, or the admin client's name.
    pub name: String,
    /// `jwksd`, `cli`, or the client's role (`operator`, `signer`, `viewer`).
    pub role: String,
}

impl Actor {
    /// The daemon itself: the schedule and the rules of the timeline.
    pub fn jwksd() -> Actor {
        Actor {
            name: "jwksd".into(),
            role: "jwksd".into(),
        }
    }

    /// A command run against the store from the command line.
    pub fn cli() -> Actor {
        Actor {
            name: "cli".into(),
            role: "cli".into(),
        }
    }

    pub fn client(name: &str, role: &str) -> Actor {
        Actor {
            name: name.into(),
            role: role.into(),
        }
    }
}

/// What the shell asks a store to record: an event, who caused it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub at: Timestamp,
    pub actor: Actor,
    pub event: Event,
}

/// One record of the audit log, as stored and served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1, 2, 3, …: one sequence across the store, never reused.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The replica (process) that wrote it.
    pub replica: String,
    pub actor: Actor,
    /// `ok`, or `refused` for a command that changed nothing.
    pub result: String,
    /// The state version this record's commit made; absent for a record
    /// that changed no state (a refused command, a rekey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<u64>,
    pub event: Event,
    /// SHA-256 (hex) of the previous record; [`GENESIS`] for the first.
    pub prev: String,
    /// SHA-256 (hex) of this record with `hash` empty.
    pub hash: String,
}

/// The end of a chain: the last record's sequence number and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.into(),
        }
    }
}

impl Record {
    /// The record that follows `head`.
    pub fn next(head: &Head, entry: &Entry, replica: &str, state_version: Option<u64>) -> Record {
        let mut r = Record {
            seq: head.seq + 1,
            at_ms: entry.at.as_millis(),
            replica: replica.to_owned(),
            actor: entry.actor.clone(),
            result: if entry.event.kind == Kind::Refused {
                "refused".into()
            } else {
                "ok".into()
            },
            state_version,
            event: entry.event.clone(),
            prev: head.hash.clone(),
            hash: String::new(),
        };
        r.hash = r.digest();
        r
    }

    /// SHA-256 of the record as one JSON line with `hash` empty (fields in
    /// their declared order): what `hash` must be.
    pub fn digest(&self) -> String {
        let mut bare = self.clone();
        bare.hash = String::new();
        // Serialising plain strings, numbers and enums cannot fail.
        let bytes = serde_json::to_vec(&bare).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }

    /// One line of the log (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn at(&self) -> Timestamp {
        Timestamp::from_millis(self.at_ms)
    }
}

/// Records appended one by one in the order given, each from `head` on.
pub fn chain(
    head: &Head,
    entries: &[Entry],
    replica: &str,
    state_version: Option<u64>,
) -> Vec<Record> {
    let mut head = head.clone();
    entries
        .iter()
        .map(|e| {
            let r = Record::next(&head, e, replica, state_version);
            head = r.head();
            r
        })
        .collect()
}

/// Where a webhook endpoint's deliveries stand, kept in the store
/// (`daemon::webhooks`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The last record delivered (or skipped as not subscribed to).
    pub delivered: u64,
    /// Failed attempts at the record after it, in a row.
    #[serde(default)]
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
}

/// What a verification of a whole log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// Segments (directory store) or tables (PostgreSQL) read.
    pub parts: usize,
    pub head: Head,
    /// Where the chain starts: genesis, or the end of a segment removed by
    /// retention.
    pub from: Head,
}

/// Where a record is, for a verification error: a file and line, or a row.
pub type Place = String;

/// The first record that breaks the chain, and how.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {why}")]
pub struct Broken {
    /// The sequence number the chain expected there.
    pub seq: u64,
    pub place: Place,
    pub why: String,
}

/// Checks records one by one, in the order stored.
pub struct Chain {
    head: Head,
    count: u64,
}

impl Chain {
    /// A chain that starts after `head` (genesis, or the last record of a
    /// segment removed by retention).
    pub fn after(head: Head) -> Chain {
        Chain { head, count: 0 }
    }

    /// Checks the next record, found at `place`.
    pub fn push(&mut self, r: &Record, place: &str) -> Result<(), Broken> {
        let expected = self.head.seq + 1;
        let broken = |why: String| Broken {
            seq: expected,
            place: place.to_owned(),
            why,
        };
        if r.seq != expected {
            return Err(broken(format!(
                "record {} where record {expected} belongs (a record deleted, moved or inserted)",
                r.seq
            )));
        }
        if r.prev != self.head.hash {
            return Err(broken(format!(
                "record {} does not follow record {}: its prev is not that record's hash \
                 (an earlier record was edited or replaced)",
                r.seq, self.head.seq
            )));
        }
        if r.digest() != r.hash {
            return Err(broken(format!(
                "record {} was edited: its content does not match its hash",
                r.seq
            )));
        }
        self.head = r.head();
        self.count += 1;
        Ok(())
    }

    /// The end of what was checked.
    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The chain must end at `expected` (the head the store recorded
    /// apart from the records): a shorter one was cut off.
    pub fn ends_at(&self, expected: &Head, place: &str) -> Result<(), Broken> {
        if self.head.seq < expected.seq {
            return Err(Broken {
                seq: self.head.seq + 1,
                place: place.to_owned(),
                why: format!(
                    "the log ends at record {} but the store recorded {} records: records {}..{} \
                     were cut off",
                    self.head.seq,
                    expected.seq,
                    self.head.seq + 1,
                    expected.seq
                ),
            });
        }
        if self.head.seq == expected.seq && self.head.hash != expected.hash {
            return Err(Broken {
                seq: self.head.seq,
                place: place.to_owned(),
                why: format!(
                    "record {} is not the last record the store recorded (replaced)",
                    self.head.seq
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                at: Timestamp::from_millis(1_000 * i as i64),
                actor: Actor::jwksd(),
                event: Event::refused("rotate", None, None, format!("too_early {i}")),
            })
            .collect()
    }

    fn check(records: &[Record]) -> Result<Head, Broken> {
        let mut c = Chain::after(Head::genesis());
        for (i, r) in records.iter().enumerate() {
            c.push(r, &format!("line {}", i + 1))?;
        }
        Ok(c.head().clone())
    }

    #[test]
    fn a_chain_verifies_and_every_kind_of_tampering_breaks_it() {
        let good = chain(&Head::genesis(), &entries(5), "r1", None);
        let head = check(&good).unwrap();
        assert_eq!(head.seq, 5);

        let mut edited = good.clone();
        edited[2].actor.name = "mallory".into();
        let e = check(&edited).unwrap_err();
        assert_eq!((e.seq, e.place.as_str()), (3, "line 3"));
        assert!(e.why.contains("edited"), "{e}");

        // Rehashed after the edit: the next record no longer follows it.
        edited[2].hash = edited[2].digest();
        assert_eq!(check(&edited).unwrap_err().seq, 4);

        let mut deleted = good.clone();
        deleted.remove(1);
        assert_eq!(check(&deleted).unwrap_err().seq, 2);

        let mut moved = good.clone();
        moved.swap(1, 3);
        assert_eq!(check(&moved).unwrap_err().seq, 2);

        let cut = &good[..3];
        let mut c = Chain::after(Head::genesis());
        for r in cut {
            c.push(r, "x").unwrap();
        }
        let e = c.ends_at(&head, "end").unwrap_err();
        assert_eq!(e.seq, 4);
        assert!(e.why.contains("cut off"), "{e}");
    }

    #[test]
    fn a_record_is_one_json_line_that_reads_back_the_same() {
        let r = &chain(&Head::genesis(), &entries(1), "r1", Some(7))[0];
        let line = r.to_line();
        assert!(!line.contains('\n'));
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(&back, r);
        assert_eq!(back.digest(), r.hash);
        assert_eq!(r.prev, GENESIS);
        assert_eq!(r.result, "refused");
    }
}

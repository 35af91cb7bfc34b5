//! `jwksd audit`: the audit log of the configured store, listed or
//! verified (docs/events.md, "The audit log"). It reads the store itself:
//! a key directory's log while the daemon runs (never its lock), or the
//! PostgreSQL table.

use std::fmt::Write as _;
use std::path::Path;

use super::{Cli, Fail, load_config, redact};
use crate::audit::{Broken, Record, Verified};
use crate::config::Config;
use crate::store::KeyStore as _;
use crate::store::audit_log;
use crate::store::postgres::PgStore;
use crate::time::Timestamp;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only records at or after this time: RFC 3339 (2026-12-01T00:00:00Z),
    /// or a duration ago (24h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records about this key (a kid may begin with `-`: it is taken
    /// as the kid, not an option).
    #[arg(long, allow_hyphen_values = true)]
    pub kid: Option<String>,
    /// One JSON record a line, as stored (with its hashes).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain from the first record to the last; name the
    /// first record that was edited, deleted, moved or cut off (exit 1).
    Verify,
}

/// Records read at a time.
const PAGE: usize = 1000;

pub(super) fn run(cli: &Cli, args: &AuditArgs) -> Result<(), Fail> {
    let config = load_config(cli)?.0.config;
    match args.command {
        Some(AuditCommand::Verify) => verify(&config),
        None => list(&config, args),
    }
}

fn since(text: &str, now: Timestamp) -> Result<Timestamp, Fail> {
    Timestamp::parse_rfc3339(text)
        .ok()
        .or_else(|| {
            crate::config::parse_duration(text)
                .ok()
                .map(|d| now.saturating_sub(d))
        })
        .ok_or_else(|| {
            Fail(
                2,
                format!("--since {text:?}: expected an RFC 3339 time or a duration such as 24h"),
            )
        })
}

/// The store's records after `after`, a page at a time.
fn page(config: &Config, pg: Option<&PgStore>, after: u64) -> Result<Vec<Record>, Fail> {
    match pg {
        Some(s) => s.audit_since(after, PAGE),
        // Up to the head the daemon recorded: not a commit in progress.
        None => audit_log::recorded_head(&config.keys_dir).and_then(|h| {
            audit_log::read_since(&config.keys_dir, after, PAGE, h.map_or(0, |h| h.seq))
        }),
    }
    .map_err(|e| Fail(1, e.to_string()))
}

fn postgres(config: &Config) -> Result<Option<PgStore>, Fail> {
    let Some(url) = config.store_url() else {
        return Ok(None);
    };
    let master = config.master_key().map_err(|e| Fail(1, e.to_string()))?;
    PgStore::connect(&url, master, None)
        .map(Some)
        .map_err(|e| Fail(1, format!("{}: {e}", redact(&url))))
}

fn list(config: &Config, args: &AuditArgs) -> Result<(), Fail> {
    let now = Timestamp::from_system(std::time::SystemTime::now());
    let since = args.since.as_deref().map(|s| since(s, now)).transpose()?;
    let pg = postgres(config)?;
    let mut after = 0;
    let mut out = String::new();
    if !args.json {
        out.push_str("SEQ  TIME  EVENT  KID  ALG  CHANGE  TRIGGER  ACTOR  RESULT\n");
    }
    loop {
        let records = page(config, pg.as_ref(), after)?;
        let Some(last) = records.last() else {
            break;
        };
        after = last.seq;
        for r in records.iter().filter(|r| {
            since.is_none_or(|t| r.at() >= t)
                && args
                    .kid
                    .as_deref()
                    .is_none_or(|k| r.event.kid.as_ref().is_some_and(|kid| kid.as_str() == k))
        }) {
            if args.json {
                out.push_str(&r.to_line());
                out.push('\n');
            } else {
                line(&mut out, r);
            }
        }
        print!("{out}");
        out.clear();
    }
    if !args.json {
        let cursors = match &pg {
            Some(s) => s.webhook_cursors(),
            None => audit_log::read_cursors(&config.keys_dir),
        }
        .map_err(|e| Fail(1, e.to_string()))?;
        for (name, c) in cursors {
            let _ = write!(
                out,
                "webhook {name}: delivered through record {}",
                c.delivered
            );
            if let Some(since) = c.failing_since_ms {
                let _ = write!(
                    out,
                    "; failing since {} ({} attempts): {}",
                    Timestamp::from_millis(since).to_rfc3339(),
                    c.failures,
                    c.last_error.as_deref().unwrap_or("")
                );
            }
            out.push('\n');
        }
        print!("{out}");
    }
    Ok(())
}

fn line(out: &mut String, r: &Record) {
    let e = &r.event;
    let dash = || "-".to_owned();
    let change = match (e.from, e.to) {
        (None, Some(to)) => format!("-> {to}"),
        (Some(from), Some(to)) => format!("{from} -> {to}"),
        _ => e
            .command
            .clone()
            .map(|c| match &e.reason {
                Some(why) => format!("{c}: {why}"),
                None => c,
            })
            .unwrap_or_else(dash),
    };
    let _ = writeln!(
        out,
        "{}  {}  {}  {}  {}  {}  {}  {} ({})  {}",
        r.seq,
        r.at().to_rfc3339(),
        e.kind,
        e.kid.as_ref().map_or_else(dash, |k| k.to_string()),
        e.alg.map_or_else(dash, |a| a.to_string()),
        change,
        e.trigger.map_or_else(dash, |t| t.as_str().to_owned()),
        r.actor.name,
        r.actor.role,
        r.result,
    );
}

fn verify(config: &Config) -> Result<(), Fail> {
    let (where_, result): (String, Result<Verified, Broken>) = match postgres(config)? {
        Some(pg) => (pg.location(), pg.verify_audit()),
        None => (
            config.keys_dir.join(audit_log::DIR).display().to_string(),
            audit_log::verify(Path::new(&config.keys_dir)),
        ),
    };
    match result {
        Ok(v) => {
            println!(
                "{where_}: the audit log verifies: {} records ({}..{}), ending at record {} {}",
                v.records,
                v.from.seq + 1,
                v.head.seq,
                v.head.seq,
                v.head.hash
            );
            if v.from.seq > 0 {
                println!(
                    "records 1..{} were removed by retention; the chain is checked from the hash \
                     they ended with ({})",
                    v.from.seq, v.from.hash
                );
            }
            Ok(())
        }
        Err(b) => Err(Fail(
            1,
            format!(
                "{where_}: the audit log is broken at record {}: {b}\n\
                 nothing after that point can be trusted; compare with an exported copy \
                 (webhooks, a backup) to see what was changed",
                b.seq
            ),
        )),
    }
}

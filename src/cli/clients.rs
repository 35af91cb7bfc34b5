//! `jwksd client`: the named clients of `admin.clients`, managed in their
//! file. The daemon reloads the file when it changes (within
//! `reload::WATCH_INTERVAL`) or on SIGHUP; nothing here talks to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Cli, Fail, load_config};
use crate::access::{Client, Require, Role, TokenDigest, TokenEntry};
use crate::clock::{Clock, SystemClock};
use crate::config::clients::{read_file, write_file};
use crate::config::{ClientsSetting, Config};
use crate::time::Timestamp;

#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Make a new random token for a client, print it once, and write its
    /// SHA-256 digest to the clients file (creating the client with
    /// --role, the file if needed). Its other tokens are cut off, or kept
    /// for --overlap.
    Token {
        /// The client's name (1 to 64 of A-Z a-z 0-9 . _ -).
        name: String,
        /// signer, operator or viewer: needed to create the client.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Keep the client's current tokens valid this long (e.g. 1h), so
        /// that it can switch to the new one without a refusal [default:
        /// they are cut off at the daemon's next reload].
        #[arg(long, value_parser = crate::config::parse_duration)]
        overlap: Option<Duration>,
    },
    /// List the clients: configured and built-in.
    List,
    /// Remove a client: cut off at the daemon's next reload.
    Remove { name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub(super) fn run(cli: &Cli, command: &ClientCommand) -> Result<(), Fail> {
    let config = load_config(cli)?.0.config;
    match command {
        ClientCommand::Token {
            name,
            role,
            overlap,
        } => token(&config, name, *role, *overlap, SystemClock.now()),
        ClientCommand::List => list(&config, SystemClock.now()),
        ClientCommand::Remove { name } => remove(&config, name),
    }
}

/// The clients file `admin.clients` names; an inline list or none is
/// refused with what to do.
fn file_of(config: &Config, what: &str) -> Result<PathBuf, Fail> {
    match &config.admin.clients {
        Some(ClientsSetting::File(p)) => Ok(p.clone()),
        Some(ClientsSetting::Inline(_)) => Err(Fail(
            2,
            format!(
                "admin.clients is a list in the configuration file, which jwksd does not \
                 rewrite: {what} by editing it, or move the list to a clients file \
                 (admin.clients: /etc/jwksd/clients.yaml)"
            ),
        )),
        None => Err(Fail(
            2,
            "admin.clients is not set: name a clients file first (admin.clients: \
             /etc/jwksd/clients.yaml) and restart the daemon once"
                .into(),
        )),
    }
}

fn read_or_empty(path: &Path) -> Result<Vec<Client>, Fail> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    read_file(path).map_err(|e| Fail(1, e.to_string()))
}

fn token(
    config: &Config,
    name: &str,
    role: Option<Role>,
    overlap: Option<Duration>,
    now: Timestamp,
) -> Result<(), Fail> {
    let new = crate::http::auth::random_token();
    let digest = TokenDigest::of(&new);
    let path = match file_of(config, "add the token") {
        Ok(p) => p,
        Err(Fail(code, why)) => {
            if let Some(ClientsSetting::Inline(_)) = &config.admin.clients {
                // Still useful: the token, and the entry to paste.
                println!("{}", new.as_str());
                eprintln!("jwksd: {why}\n  add to client {name}'s tokens:\n    - sha256: {digest}");
                return Ok(());
            }
            return Err(Fail(code, why));
        }
    };
    let mut clients = read_or_empty(&path)?;
    let kept_until = overlap.map(|o| now.saturating_add(o));
    let (client, created) = match clients.iter_mut().position(|c| c.name == name) {
        Some(i) => {
            if let Some(r) = role
                && r != clients[i].role
            {
                return Err(Fail(
                    2,
                    format!(
                        "client {name} is a {}, not a {r}: a client's role is changed by \
                         editing its entry in {}",
                        clients[i].role,
                        path.display()
                    ),
                ));
            }
            (&mut clients[i], false)
        }
        None => {
            let Some(role) = role else {
                return Err(Fail(
                    2,
                    format!(
                        "there is no client {name} in {}: give --role signer, operator or \
                         viewer to create it",
                        path.display()
                    ),
                ));
            };
            clients.push(Client {
                name: name.to_owned(),
                role,
                tokens: Vec::new(),
                certificate: None,
                require: Require::Any,
                algorithms: None,
                networks: Vec::new(),
                sign_rate_limit: None,
                builtin: false,
            });
            (clients.last_mut().expect("just pushed"), true)
        }
    };
    let before = client.tokens.len();
    match kept_until {
        None => client.tokens.clear(),
        Some(until) => {
            client.tokens.retain(|t| t.valid_at(now));
            for t in &mut client.tokens {
                t.expires = Some(t.expires.map_or(until, |e| e.min(until)));
            }
        }
    }
    let kept = client.tokens.len();
    client.tokens.insert(
        0,
        TokenEntry {
            sha256: digest,
            expires: None,
        },
    );
    write_file(&path, &clients).map_err(|e| Fail(1, e.to_string()))?;
    // The token on stdout, alone, for scripts; the rest on stderr.
    println!("{}", new.as_str());
    let old = match (before, kept_until) {
        (0, _) => String::new(),
        (_, None) => format!("; its {before} other token(s) are cut off"),
        (_, Some(until)) => {
            format!("; its {kept} other valid token(s) stay valid until {until}, then are refused")
        }
    };
    eprintln!(
        "client {name}: {} token sha256:{}… written to {}{old}. The daemon reads it within \
         {} s (or at SIGHUP). This token is printed only now.",
        if created { "created with" } else { "new" },
        digest.short(),
        path.display(),
        crate::reload::WATCH_INTERVAL.as_secs()
    );
    if created && matches!(name, "operator" | "signer") {
        eprintln!(
            "client {name} replaces the built-in {name} and its token file at the daemon's next \
             reload"
        );
    }
    Ok(())
}

fn remove(config: &Config, name: &str) -> Result<(), Fail> {
    let path = file_of(config, "remove the client")?;
    let mut clients = read_or_empty(&path)?;
    let before = clients.len();
    clients.retain(|c| c.name != name);
    if clients.len() == before {
        return Err(Fail(
            1,
            format!("there is no client {name} in {}", path.display()),
        ));
    }
    write_file(&path, &clients).map_err(|e| Fail(1, e.to_string()))?;
    eprintln!(
        "client {name} removed from {}: cut off within {} s (or at SIGHUP)",
        path.display(),
        crate::reload::WATCH_INTERVAL.as_secs()
    );
    Ok(())
}

fn list(config: &Config, now: Timestamp) -> Result<(), Fail> {
    let configured = match &config.admin.clients {
        Some(ClientsSetting::File(p)) => read_or_empty(p)?,
        _ => config.clients().map_err(|e| Fail(1, e.to_string()))?,
    };
    let mut rows: Vec<[String; 5]> = vec![[
        "NAME".into(),
        "ROLE".into(),
        "TOKENS".into(),
        "CERTIFICATE".into(),
        "LIMITS".into(),
    ]];
    for c in &configured {
        let valid: Vec<&TokenEntry> = c.tokens.iter().filter(|t| t.valid_at(now)).collect();
        let mut tokens = valid
            .iter()
            .map(|t| match t.expires {
                None => t.sha256.short(),
                Some(e) => format!("{} (until {e})", t.sha256.short()),
            })
            .collect::<Vec<_>>()
            .join(", ");
        if tokens.is_empty() {
            tokens = "-".into();
        }
        let mut certificate = c.certificate.as_ref().map_or("-".into(), |m| m.to_string());
        if c.require == Require::Both {
            certificate.push_str(" (and a token)");
        }
        let mut limits = Vec::new();
        if let Some(a) = &c.algorithms {
            let names: Vec<&str> = a.iter().map(|a| a.as_str()).collect();
            limits.push(format!("algorithms {}", names.join(",")));
        }
        if !c.networks.is_empty() {
            let nets: Vec<String> = c.networks.iter().map(|n| n.to_string()).collect();
            limits.push(format!("networks {}", nets.join(",")));
        }
        if let Some(r) = c.sign_rate_limit {
            limits.push(format!("sign {r}"));
        }
        rows.push([
            c.name.clone(),
            c.role.to_string(),
            tokens,
            certificate,
            if limits.is_empty() {
                "-".into()
            } else {
                limits.join("; ")
            },
        ]);
    }
    for (name, role, file) in [
        ("operator", Role::Operator, config.operator_token_file()),
        ("signer", Role::Signer, config.signer_token_file()),
    ] {
        if configured.iter().any(|c| c.name == name) {
            continue;
        }
        rows.push([
            name.into(),
            role.to_string(),
            format!("built-in: {}", file.display()),
            "-".into(),
            "-".into(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
    Ok(())
}

//! The clients file (`admin.clients: PATH`): read with the configuration's
//! errors (file, field, line), checked as a whole, and written back by
//! `jwksd client` (atomically: a daemon reloading it never reads half).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::locate::{self, Text};
use super::{ClientsSetting, Config, ConfigError, de};
use crate::access::{Client, Clients};
use crate::time::Timestamp;

/// A clients file larger than this is refused unread.
const MAX_CLIENTS_BYTES: u64 = 1 << 20;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    #[serde(default)]
    clients: Vec<Client>,
}

/// Where the configured clients come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientsSource {
    /// No `admin.clients`: the built-ins only.
    None,
    /// A clients file.
    File(PathBuf),
    /// Inline in the configuration file (reloading reads that file again).
    Inline(Option<PathBuf>),
}

impl Config {
    /// Where `admin.clients` says the clients are; `config_file` is the
    /// configuration's own file, if any.
    pub fn clients_source(&self, config_file: Option<&Path>) -> ClientsSource {
        match &self.admin.clients {
            None => ClientsSource::None,
            Some(ClientsSetting::File(p)) => ClientsSource::File(p.clone()),
            Some(ClientsSetting::Inline(_)) => {
                ClientsSource::Inline(config_file.map(Path::to_owned))
            }
        }
    }

    /// The configured clients (built-ins excluded) as they are now: read
    /// from the clients file, or this configuration's inline list.
    pub fn clients(&self) -> Result<Vec<Client>, ConfigError> {
        match &self.admin.clients {
            None => Ok(Vec::new()),
            Some(ClientsSetting::Inline(list)) => Ok(list.clone()),
            Some(ClientsSetting::File(p)) => read_file(p),
        }
    }
}

/// The clients of `source` read afresh: what a reload does. `now` is for
/// the configuration's own checks when the list is inline.
pub fn read_source(source: &ClientsSource, now: Timestamp) -> Result<Vec<Client>, ConfigError> {
    match source {
        ClientsSource::None | ClientsSource::Inline(None) => Ok(Vec::new()),
        ClientsSource::File(p) => read_file(p),
        ClientsSource::Inline(Some(config)) => {
            let (checked, _) = Config::load(Some(config), now)?;
            checked.config.clients()
        }
    }
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        source_name: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads and checks a clients file. A missing file is an error: the
/// configuration names it, so it is expected (`jwksd client token` creates
/// it).
pub fn read_file(path: &Path) -> Result<Vec<Client>, ConfigError> {
    let meta = fs::metadata(path).map_err(|e| {
        invalid(
            path,
            format!(
                "cannot read the clients file: {e} (create it with `jwksd client token NAME \
                 --role ROLE`)"
            ),
        )
    })?;
    if meta.len() > MAX_CLIENTS_BYTES {
        return Err(invalid(path, "larger than 1 MiB: not a clients file"));
    }
    let yaml = fs::read_to_string(path)
        .map_err(|e| invalid(path, format!("cannot read the clients file: {e}")))?;
    parse(&yaml, &path.display().to_string())
}

/// Parses and checks a clients file's text; `name` is for messages.
pub fn parse(yaml: &str, name: &str) -> Result<Vec<Client>, ConfigError> {
    let text = Text {
        name: name.to_owned(),
        yaml,
    };
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| text.syntax_error(&e))?;
    let file: ClientsFile = match de::from_value::<Option<ClientsFile>>(&value) {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            let keys = e.keys();
            let example = locate::example(EXAMPLE, &keys);
            let message = e.message(example.as_deref());
            // Inside the list: the entry's own line, and its client.
            if let Some(line) = line_in_list(yaml, &e.path) {
                let client = match e.path.get(1) {
                    Some(de::Segment::Index(i)) => value
                        .get("clients")
                        .and_then(|l| l.get(*i))
                        .and_then(|c| c.get("name"))
                        .and_then(|n| n.as_str())
                        .map(|n| format!("client {n}, ")),
                    _ => None,
                }
                .unwrap_or_default();
                return Err(invalid(
                    Path::new(name),
                    format!("{} ({client}line {line}): {message}", e.field()),
                ));
            }
            return Err(text.error_named(&e.field(), &keys, message));
        }
    };
    Clients::new(file.clients.clone(), Vec::new()).map_err(|why| {
        // The line of the client the message names, when it names one.
        let line = file
            .clients
            .iter()
            .find(|c| {
                why.contains(&format!("client {} ", c.name))
                    || why.contains(&format!("client {}:", c.name))
                    || why.contains(&format!("{:?}", c.name))
            })
            .and_then(|c| line_of_name(yaml, &c.name));
        invalid(
            Path::new(name),
            match line {
                Some(l) => format!("line {l}: {why}"),
                None => why,
            },
        )
    })?;
    Ok(file.clients)
}

/// The line of the field at `path` in block-style YAML, entry by entry
/// (`locate` follows keys only, so it would give the first entry's field
/// for every entry's). `None` where the text is not laid out as expected
/// (flow style): the caller falls back to `locate`.
fn line_in_list(yaml: &str, path: &[de::Segment]) -> Option<usize> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    // Where the field's own text starts: after any "- " of list items.
    fn key_at(l: &str) -> (usize, &str) {
        let mut rest = l.trim_start();
        let mut col = l.len() - rest.len();
        while let Some(r) = rest.strip_prefix("- ") {
            col += 2 + (r.len() - r.trim_start().len());
            rest = r.trim_start();
        }
        (col, rest)
    }
    let (mut from, mut to, mut col) = (0usize, lines.len(), 0usize);
    let mut found_index = false;
    for seg in path {
        match seg {
            de::Segment::Key(k) => {
                let want = format!("{k}:");
                let i = (from..to).find(|&i| {
                    let (c, rest) = key_at(lines[i]);
                    c >= col && (rest == want || rest.starts_with(&format!("{want} ")))
                })?;
                let (c, _) = key_at(lines[i]);
                // The key's block: until a line at its column or left of it.
                let end = (i + 1..to)
                    .find(|&j| {
                        let t = lines[j].trim();
                        !t.is_empty() && !t.starts_with('#') && indent(lines[j]) <= c
                    })
                    .unwrap_or(to);
                (from, to, col) = (i, end, c + 1);
            }
            de::Segment::Index(n) => {
                let items: Vec<usize> = (from + 1..to)
                    .filter(|&j| lines[j].trim_start().starts_with("- "))
                    .collect();
                let first = *items.first()?;
                let items: Vec<usize> = items
                    .into_iter()
                    .filter(|&j| indent(lines[j]) == indent(lines[first]))
                    .collect();
                let i = *items.get(*n)?;
                let end = items.get(n + 1).copied().unwrap_or(to);
                (from, to, col) = (i, end, indent(lines[i]));
                found_index = true;
            }
        }
    }
    found_index.then_some(from + 1)
}

/// The line of `name: NAME` in a clients file.
fn line_of_name(yaml: &str, name: &str) -> Option<usize> {
    yaml.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ").trim();
            l.strip_prefix("name:")
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
                == Some(name)
        })
        .map(|i| i + 1)
}

/// An example entry, for the "for example" of errors.
const EXAMPLE: &str = "clients:\n  - name: auth-eu\n    role: signer\n    tokens:\n      - sha256: 50d858e0985ecc7f60418aaf0cc5ab587f42c2570a884095a9e8ccacd0f6545c\n    require: any\n    algorithms: [ES256]\n    networks: [10.1.0.0/16]\n    sign_rate_limit: 100/s\n";

const HEADER: &str = "# jwksd clients (admin.clients). Written by `jwksd client`, which keeps\n# no comments; it holds SHA-256 digests of tokens, never tokens.\n";

/// Writes `clients` to `path` atomically (a temporary file in the same
/// directory, synced, renamed over it): mode 600 for a new file; a file
/// replaced keeps its owner, group and mode (never readable by others), so
/// that a command run as root leaves it readable by the daemon's user.
pub fn write_file(path: &Path, clients: &[Client]) -> Result<(), ConfigError> {
    Clients::new(clients.to_vec(), Vec::new()).map_err(|why| invalid(path, why))?;
    let body = serde_yaml::to_string(&ClientsFile {
        clients: clients.to_vec(),
    })
    .map_err(|e| invalid(path, format!("cannot write the clients: {e}")))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("clients"),
        std::process::id()
    ));
    let io = |e: std::io::Error| invalid(path, format!("cannot write the clients file: {e}"));
    let before = fs::metadata(path).ok();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    if let Some(m) = &before {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let now = f.metadata().map_err(io)?;
        // Owner first (only root may change it; anyone else replaces files
        // it owns already), then the mode, which chown may clear.
        if (m.uid(), m.gid()) != (now.uid(), now.gid()) {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())).map_err(|e| {
                invalid(
                    path,
                    format!(
                        "cannot give the new file the owner of the old one (uid {}, gid {}): \
                         {e}; run the command as that user or as root",
                        m.uid(),
                        m.gid()
                    ),
                )
            })?;
        }
        f.set_permissions(fs::Permissions::from_mode(m.mode() & 0o660))
            .map_err(io)?;
    }
    f.write_all(HEADER.as_bytes())
        .and_then(|_| f.write_all(body.as_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Role, TokenDigest, TokenEntry};

    #[test]
    fn a_clients_file_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.yaml");
        let mut c = Client::builtin("auth-eu", Role::Signer, "example");
        c.builtin = false;
        c.tokens.push(TokenEntry {
            sha256: TokenDigest::of("older"),
            expires: Some(Timestamp::from_unix_seconds(1_800_000_000)),
        });
        c.algorithms = Some(vec![crate::keys::Alg::ES256]);
        c.networks = vec!["10.1.0.0/16".parse().unwrap()];
        c.sign_rate_limit = Some("100/s".parse().unwrap());
        write_file(&path, std::slice::from_ref(&c)).unwrap();
        assert_eq!(read_file(&path).unwrap(), vec![c.clone()]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // A file replaced keeps its mode, never readable by others.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&path, std::slice::from_ref(&c)).unwrap();
        assert_eq!(mode(&path), 0o640);
        // And its owner (root can give it back: as the command run by root
        // on the daemon's file).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::fs::MetadataExt as _;
            std::os::unix::fs::chown(&path, Some(4321), Some(4321)).unwrap();
            write_file(&path, std::slice::from_ref(&c)).unwrap();
            let m = fs::metadata(&path).unwrap();
            assert_eq!((m.uid(), m.gid(), mode(&path)), (4321, 4321, 0o640));
        }
    }

    #[test]
    fn errors_in_later_entries_point_at_their_own_line() {
        let yaml = "clients:\n  - name: a\n    role: signer\n    certificate: {san: a}\n  - name: b\n    # b's\n    role: admin\n";
        let e = parse(yaml, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("clients[1].role (client b, line 7)"), "{e}");
        let yaml = "clients:\n  - name: a\n    role: signer\n    tokens:\n      - sha256: 50d858e0985ecc7f60418aaf0cc5ab587f42c2570a884095a9e8ccacd0f6545c\n      - sha256: abc\n";
        let e = parse(yaml, "c.yaml").unwrap_err().to_string();
        assert!(
            e.contains("clients[0].tokens[1].sha256 (client a, line 6)"),
            "{e}"
        );
        // Flow style: the key's line, from locate.
        let e = parse("clients: [{name: a, role: boss}]\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("role (line 1)"), "{e}");
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_line() {
        let e = parse("clients:\n  - name: a\n    role: admin\n", "clients.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("clients.yaml") && e.contains("role") && e.contains("line 3"),
            "{e}"
        );
        let e = parse(
            "clients:\n  - name: a\n    role: signer\n    tokens:\n      - sha256: abc\n",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("64 hex digits") && e.contains("tokens[0].sha256 (client a, line 5)"),
            "{e}"
        );
        let e = parse(
            "clients:\n  - name: a\n    role: signer\n    colour: red\n",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("colour"), "{e}");
        let twice = "clients:\n  - name: a\n    role: signer\n    certificate: {san: a}\n  - name: b\n    role: viewer\n    tokens: []\n";
        let e = parse(twice, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("client b") && e.contains("line 5"), "{e}");
        assert!(parse("", "c.yaml").unwrap().is_empty());
    }
}

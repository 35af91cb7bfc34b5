//! The built-in clients' tokens: `operator` and `signer`, from
//! `JWKSD_OPERATOR_TOKEN` / `JWKSD_SIGNER_TOKEN` or from the token files,
//! which are created at first start (256 random bits, base64url, mode 600)
//! and refused when group or others can read them. Every client, these
//! two included, is identified by [`crate::access::Clients::identify`].

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::access::{Client, Role};
use crate::config::env;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{op} token file {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "token file {path} has mode {mode:o}, readable by group or others; fix with \
         `chmod 600 {path}` (and rotate the token if others may have read it)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{0} is too short: a bearer token needs at least 32 characters")]
    TooShort(String),
    #[error("the operator and signer tokens are the same; they must differ")]
    SameTokens,
}

/// Where a token came from, for the start-up log.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenSource {
    Env(&'static str),
    File(PathBuf),
    Created(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Env(v) => write!(f, "environment variable {v}"),
            TokenSource::File(p) => write!(f, "{}", p.display()),
            TokenSource::Created(p) => write!(f, "{} (created)", p.display()),
        }
    }
}

/// The built-in clients `operator` and `signer`, from `JWKSD_*_TOKEN` or
/// their token files (created at first start), except those a configured
/// client replaces (`replaced` says so by name): their files are then
/// neither read nor created. Returns each with where its token came from.
pub fn builtin_clients(
    operator_file: &Path,
    signer_file: &Path,
    replaced: impl Fn(&str) -> bool,
) -> Result<Vec<(Client, TokenSource)>, TokenError> {
    let mut out = Vec::new();
    let mut tokens = Vec::new();
    for (name, role, var, file) in [
        (
            "operator",
            Role::Operator,
            env::OPERATOR_TOKEN,
            operator_file,
        ),
        ("signer", Role::Signer, env::SIGNER_TOKEN, signer_file),
    ] {
        if replaced(name) {
            continue;
        }
        let (t, src) = token(var, file)?;
        out.push((Client::builtin(name, role, &t), src));
        tokens.push(t);
    }
    if let [a, b] = tokens.as_slice()
        && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
    {
        return Err(TokenError::SameTokens);
    }
    Ok(out)
}

/// Reads a token from `env`, else from `path`, creating the file when absent.
pub fn token(
    env: &'static str,
    path: &Path,
) -> Result<(Zeroizing<String>, TokenSource), TokenError> {
    if let Some(v) = crate::config::env::secret(env) {
        let v = Zeroizing::new(v.trim().to_owned());
        if v.len() < 32 {
            return Err(TokenError::TooShort(env.to_owned()));
        }
        return Ok((v, TokenSource::Env(env)));
    }
    match read_token_file(path) {
        Ok(t) => Ok((t, TokenSource::File(path.to_owned()))),
        Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create_token_file(path).map(|t| (t, TokenSource::Created(path.to_owned())))
        }
        Err(e) => Err(e),
    }
}

/// The operator token a command sends: `JWKSD_OPERATOR_TOKEN`, else the
/// operator token file, only read: creating it is the daemon's business
/// ([`token`]).
pub fn operator_token(config: &crate::config::Config) -> Result<Zeroizing<String>, TokenError> {
    match env::secret(env::OPERATOR_TOKEN) {
        Some(t) => Ok(Zeroizing::new(t.trim().to_owned())),
        None => read_token_file(&config.operator_token_file()),
    }
}

/// Reads a token file, refusing one that group or others can read.
pub fn read_token_file(path: &Path) -> Result<Zeroizing<String>, TokenError> {
    let io = |op| {
        move |source| TokenError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let meta = fs::metadata(path).map_err(io("read"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io("read"))?);
    let t = Zeroizing::new(text.trim().to_owned());
    if t.len() < 32 {
        return Err(TokenError::TooShort(path.display().to_string()));
    }
    Ok(t)
}

/// A new bearer token: 256 bits from the OS, base64url (43 characters).
pub fn random_token() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

fn create_token_file(path: &Path) -> Result<Zeroizing<String>, TokenError> {
    let io = |op| {
        move |source| TokenError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io("create directory for"))?;
    }
    let token = random_token();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create"))?;
    f.write_all(format!("{}\n", token.as_str()).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io("write"))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_the_two_tokens_unless_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (op, si) = (
            dir.path().join("operator.token"),
            dir.path().join("signer.token"),
        );
        let both = builtin_clients(&op, &si, |_| false).unwrap();
        let names: Vec<(&str, Role)> = both
            .iter()
            .map(|(c, _)| (c.name.as_str(), c.role))
            .collect();
        assert_eq!(
            names,
            [("operator", Role::Operator), ("signer", Role::Signer)]
        );
        assert!(both.iter().all(|(c, _)| c.builtin && c.tokens.len() == 1));
        let only_op =
            builtin_clients(&op, &dir.path().join("never.token"), |n| n == "signer").unwrap();
        assert_eq!(only_op.len(), 1);
        assert!(
            !dir.path().join("never.token").exists(),
            "a replaced built-in's file is not created"
        );
        fs::copy(&op, &si).unwrap();
        assert!(matches!(
            builtin_clients(&op, &si, |_| false),
            Err(TokenError::SameTokens)
        ));
    }

    #[test]
    fn token_files_are_created_private_and_refused_when_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/operator.token");
        let (t, src) = token("JWKSD_TEST_UNSET_TOKEN", &path).unwrap();
        assert_eq!(src, TokenSource::Created(path.clone()));
        assert_eq!(t.len(), 43);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, src) = token("JWKSD_TEST_UNSET_TOKEN", &path).unwrap();
        assert_eq!(again, t);
        assert_eq!(src, TokenSource::File(path.clone()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = token("JWKSD_TEST_UNSET_TOKEN", &path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}

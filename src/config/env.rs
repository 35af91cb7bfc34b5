//! Every `JWKSD_*` environment variable the daemon reads, and the file each
//! falls back to, in one place. An unset variable and an empty one are
//! alike: absent. (The command line's own variables are clap's `env =`
//! attributes in cli.rs.)

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::store::{MasterKey, SealError};

/// The configuration file, when `-c` names none.
pub const CONFIG: &str = "JWKSD_CONFIG";
/// The PostgreSQL store's connection string; overrides `store.postgres`.
pub const STORE_URL: &str = "JWKSD_STORE_URL";
/// The master key; overrides `master_key_file`.
pub const MASTER_KEY: &str = "JWKSD_MASTER_KEY";
/// The master key an interrupted `jwksd rekey` moved from.
pub const PREVIOUS_MASTER_KEY: &str = "JWKSD_PREVIOUS_MASTER_KEY";
/// The master key `jwksd rekey` moves to, when no file is given.
pub const NEW_MASTER_KEY: &str = "JWKSD_NEW_MASTER_KEY";
/// The admin API's operator token; overrides `admin.operator_token_file`.
pub const OPERATOR_TOKEN: &str = "JWKSD_OPERATOR_TOKEN";
/// The admin API's signer token; overrides `admin.signer_token_file`.
pub const SIGNER_TOKEN: &str = "JWKSD_SIGNER_TOKEN";
/// The PKCS#11 token's user PIN; instead of `keys.pkcs11.pin_file` (read
/// where the token is opened, `keys::pkcs11::Pin`).
pub const PKCS11_PIN: &str = crate::keys::pkcs11::PIN_ENV;

/// A variable that may hold a secret, wiped when dropped. Not UTF-8 counts
/// as unset, as it always has.
pub fn secret(name: &str) -> Option<Zeroizing<String>> {
    std::env::var(name)
        .ok()
        .map(Zeroizing::new)
        .filter(|v| !v.is_empty())
}

/// `JWKSD_CONFIG`, when set.
pub fn config_file() -> Option<PathBuf> {
    std::env::var_os(CONFIG)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `JWKSD_STORE_URL`, else the configured `store.postgres`.
pub fn store_url(configured: Option<&str>) -> Option<String> {
    std::env::var(STORE_URL)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| configured.map(str::to_owned))
}

/// Where a master key may come from.
#[derive(Clone, Copy, Debug)]
pub enum KeySource<'a> {
    /// An environment variable.
    Env(&'static str),
    /// A file; `private`: refused when group or others can read it (a key
    /// the daemon keeps, not one handed to a single command).
    File { path: &'a Path, private: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key: {0}")]
    Invalid(#[from] SealError),
    #[error("cannot read the master key file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "master key file {path} has mode {mode:o}, readable by group or others; fix with \
         `chmod 600 {path}`, and treat the master key as exposed (runbook.md)"
    )]
    Permissions { path: PathBuf, mode: u32 },
}

/// Opens the master key of the first of `sources` that holds one; `None`
/// when none does. The one place a master key is read.
pub fn open_master_key(sources: &[KeySource<'_>]) -> Result<Option<MasterKey>, MasterKeyError> {
    for source in sources {
        let text = match *source {
            KeySource::Env(name) => match secret(name) {
                Some(v) => v,
                None => continue,
            },
            KeySource::File { path, private } => read_key_file(path, private)?,
        };
        return Ok(Some(MasterKey::from_encoded(&text)?));
    }
    Ok(None)
}

fn read_key_file(path: &Path, private: bool) -> Result<Zeroizing<String>, MasterKeyError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| MasterKeyError::File {
        path: path.to_owned(),
        source,
    };
    if private {
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(Zeroizing::new(std::fs::read_to_string(path).map_err(io)?))
}

/// The master key the store is sealed with: `JWKSD_MASTER_KEY`, else
/// `master_key_file` (`file`).
pub fn master_key(file: Option<&Path>) -> Result<Option<MasterKey>, MasterKeyError> {
    match file {
        Some(path) => open_master_key(&[
            KeySource::Env(MASTER_KEY),
            KeySource::File {
                path,
                private: true,
            },
        ]),
        None => open_master_key(&[KeySource::Env(MASTER_KEY)]),
    }
}

/// `JWKSD_PREVIOUS_MASTER_KEY`: keys sealed with it still open.
pub fn previous_master_key() -> Result<Option<MasterKey>, MasterKeyError> {
    open_master_key(&[KeySource::Env(PREVIOUS_MASTER_KEY)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_key_file_must_be_private_unless_handed_to_one_command() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, "0f".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = |private| {
            open_master_key(&[KeySource::File {
                path: &path,
                private,
            }])
        };
        let e = open(true).unwrap_err();
        assert!(
            matches!(e, MasterKeyError::Permissions { mode: 0o644, .. }),
            "{e}"
        );
        assert!(open(false).unwrap().is_some());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(open(true).unwrap().is_some());
        let missing = dir.path().join("absent.key");
        let e = open_master_key(&[KeySource::File {
            path: &missing,
            private: true,
        }])
        .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "cannot read the master key file {}",
                missing.display()
            )),
            "{e}"
        );
        assert!(open_master_key(&[]).unwrap().is_none());
    }
}

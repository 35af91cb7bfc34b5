//! What a configuration that cannot be used is refused with.

use std::path::PathBuf;

/// Each names the file and, for a field, its path and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration {path} is larger than 1 MiB; that is not a jwksd configuration")]
    TooLarge { path: PathBuf },
    #[error("configuration {source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

//! TLS for both listeners (rustls), with optional client certificates on
//! the admin listener, and reloading: certificates, keys and the client CA
//! are re-read on SIGHUP and when their files change, without a restart.
//! A reload that fails keeps the last good configuration.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// One listener's TLS files.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); mode 600.
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these
    /// CAs (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "TLS key file {path} has mode {mode:o}, readable by group or others; fix with \
         `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(file("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// Builds a server configuration from the files as they are now.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert_file)?;
    let mode = fs::metadata(&files.key_file)
        .map_err(|e| TlsError::File {
            path: files.key_file.clone(),
            reason: e.to_string(),
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::Permissions {
            path: files.key_file.clone(),
            mode,
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::File {
        path: files.key_file.clone(),
        reason: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| TlsError::File {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.cert_file.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A listener's TLS configuration that can be swapped while serving.
pub struct ReloadingTls {
    name: &'static str,
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl ReloadingTls {
    /// Loads the files; an error here stops start-up.
    pub fn load(name: &'static str, files: TlsFiles) -> Result<Arc<ReloadingTls>, TlsError> {
        let config = server_config(&files)?;
        let stamps = Mutex::new(stamps(&files));
        Ok(Arc::new(ReloadingTls {
            name,
            files,
            current: ArcSwap::from_pointee(config),
            stamps,
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca_file.is_some()
    }

    /// Re-reads the files; on error the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        self.current.store(Arc::new(config));
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps(&self.files);
        Ok(())
    }

    /// Reloads when a file's modification time changed; logs the outcome.
    pub fn reload_if_changed(&self) {
        let changed = *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != stamps(&self.files);
        if changed {
            self.reload_logged("files changed");
        }
    }

    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(listener = self.name, why, "TLS certificate reloaded"),
            Err(e) => tracing::error!(
                listener = self.name,
                why,
                error = %e,
                "TLS reload failed; still serving the previous certificate"
            ),
        }
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [
        Some(&files.cert_file),
        Some(&files.key_file),
        files.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

/// A client configuration for the operator commands: trusts `ca_file`
/// (else the system's roots are not used: jwksd admin certificates are
/// usually private) and presents a client certificate when given.
fn client_builder(
    roots: RootCertStore,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, TlsError>
{
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots))
}

/// A client configuration that trusts `roots` (the system's, for webhooks).
pub fn client_config_with_roots(roots: RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    Ok(client_builder(roots)?.with_no_client_auth())
}

pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = ca_file {
        for c in read_certs(ca)? {
            roots.add(c).map_err(|e| TlsError::File {
                path: ca.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    let builder = client_builder(roots)?;
    // ALPN is left to the HTTP connector, which sets it.
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                path: key.to_owned(),
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Config(e.to_string()))?
        }
    };
    Ok(config)
}

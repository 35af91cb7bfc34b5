//! TLS to the database with libpq's `sslmode` semantics, which
//! tokio-postgres only partly knows (it has no `verify-ca`/`verify-full` and
//! no `sslrootcert`): those two parameters are taken out of the connection
//! string here and turned into an OpenSSL connector.
//!
//! | sslmode       | encrypted            | chain verified         | host name verified |
//! |---------------|----------------------|------------------------|--------------------|
//! | `disable`     | no                   | -                      | -                  |
//! | `prefer`      | if the server offers | only with `sslrootcert`| no                 |
//! | `require`     | yes                  | only with `sslrootcert`| no                 |
//! | `verify-ca`   | yes                  | yes                    | no                 |
//! | `verify-full` | yes                  | yes                    | yes                |
//!
//! `sslrootcert` is a PEM file of CA certificates (only those are trusted),
//! or `system` for the system's trust store (then only with `verify-full`,
//! as in libpq: any public CA would pass `verify-ca`).

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use postgres_openssl::MakeTlsConnector;

use crate::store::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// What tokio-postgres is told: whether TLS is tried and whether it is
    /// required (verification is the connector's business).
    pub fn transport(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// How TLS is used for one connection string.
pub struct Tls {
    pub mode: SslMode,
    pub rootcert: Option<String>,
    pub connector: MakeTlsConnector,
}

impl Tls {
    /// Whether the server's certificate chain is checked.
    pub fn verifies_chain(&self) -> bool {
        verifies_chain(self.mode, self.rootcert.is_some())
    }
}

/// Splits `sslmode` and `sslrootcert` out of a URL or `key=value`
/// connection string; returns the rest, for tokio-postgres to parse.
pub fn take_params(s: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let (mut mode, mut root) = (None, None);
    let mut take = |k: &str, v: String| match k {
        "sslmode" => {
            mode = Some(v);
            true
        }
        "sslrootcert" => {
            root = Some(v);
            true
        }
        _ => false,
    };
    let rest = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        match s.split_once('?') {
            None => s.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(&percent_decode(k)?, percent_decode(v)?) {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (k, v, raw) in key_values(s)? {
            if !take(&k, v) {
                kept.push(raw);
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid percent-encoding")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "invalid UTF-8 in percent-encoding".to_owned())
}

/// libpq's `key = value` syntax: values may be single-quoted; a backslash
/// escapes the next character. Returns key, value and the pair as written.
fn key_values(s: &str) -> Result<Vec<(String, String, &str)>, String> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            it.next();
        }
    };
    loop {
        skip_ws(&mut it);
        let Some(&(start, _)) = it.peek() else { break };
        let mut key = String::new();
        while let Some(&(_, c)) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        skip_ws(&mut it);
        if it.next().map(|(_, c)| c) != Some('=') {
            return Err(format!("missing `=` after `{key}`"));
        }
        skip_ws(&mut it);
        let mut value = String::new();
        let quoted = it.peek().is_some_and(|(_, c)| *c == '\'');
        if quoted {
            it.next();
        }
        let mut closed = !quoted;
        while let Some(&(_, c)) = it.peek() {
            if !quoted && c.is_whitespace() {
                break;
            }
            it.next();
            match c {
                '\\' => match it.next() {
                    Some((_, e)) => value.push(e),
                    None => return Err(format!("`{key}` ends in a backslash")),
                },
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Err(format!("unterminated quoted value of `{key}`"));
        }
        let end = it.peek().map_or(s.len(), |(i, _)| *i);
        out.push((key, value, &s[start..end]));
    }
    Ok(out)
}

/// The connector for `sslmode` (default `prefer`, as libpq) and
/// `sslrootcert`.
pub fn connector(mode: Option<&str>, rootcert: Option<String>) -> Result<Tls, StoreError> {
    let bad = |m: String| StoreError::Other(format!("store.postgres: {m}"));
    let mode = match mode {
        None => SslMode::Prefer,
        Some(m) => SslMode::parse(m).ok_or_else(|| {
            bad(format!(
                "unknown sslmode {m:?} (disable, prefer, require, verify-ca or verify-full)"
            ))
        })?,
    };
    let ssl = |e: openssl::error::ErrorStack| bad(format!("TLS for the database: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(ssl)?;
    match rootcert.as_deref() {
        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(bad(format!(
                "sslmode={} needs sslrootcert=<file> with the CA certificate(s) that signed the \
                 server's certificate (or sslrootcert=system with verify-full)",
                mode.as_str()
            )));
        }
        None => {}
        Some("system") if mode != SslMode::VerifyFull => {
            return Err(bad(format!(
                "sslrootcert=system needs sslmode=verify-full (with sslmode={} any certificate \
                 from a public CA would pass)",
                mode.as_str()
            )));
        }
        // The builder already trusts the system's store.
        Some("system") => {}
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            let certs = X509::stack_from_pem(&pem)
                .map_err(|e| bad(format!("sslrootcert {path}: not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(bad(format!("sslrootcert {path}: no certificate in it")));
            }
            // Only these CAs: not the system's store as well.
            let mut store = X509StoreBuilder::new().map_err(ssl)?;
            for c in certs {
                store.add_cert(c).map_err(ssl)?;
            }
            b.set_cert_store(store.build());
        }
    }
    let chain = verifies_chain(mode, rootcert.is_some());
    b.set_verify(if chain {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });
    let mut connector = MakeTlsConnector::new(b.build());
    let host = mode == SslMode::VerifyFull;
    connector.set_callback(move |c, _| {
        c.set_verify_hostname(host);
        Ok(())
    });
    Ok(Tls {
        mode,
        rootcert,
        connector,
    })
}

/// As libpq: a root certificate makes even `prefer` and `require` check
/// the chain.
fn verifies_chain(mode: SslMode, rootcert: bool) -> bool {
    matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
        || (rootcert && mode != SslMode::Disable)
}

/// One line for a failed TLS handshake, or None when `e` is not one: the
/// OpenSSL reason once (the error chain repeats it), and what to set.
pub fn failure(e: &tokio_postgres::Error, tls: &Tls, hosts: &str) -> Option<StoreError> {
    let top = e.to_string();
    let mut reason = None;
    let mut parent: &dyn std::error::Error = e;
    while let Some(cur) = parent.source() {
        if let Some(s) = cur.downcast_ref::<openssl::ssl::Error>() {
            let mut r: Vec<String> = s
                .ssl_error()
                .map(|st| {
                    st.errors()
                        .iter()
                        .filter_map(|x| x.reason().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            r.dedup();
            if r.is_empty() {
                r.push(
                    s.io_error()
                        .map(|io| io.to_string())
                        .unwrap_or_else(|| "the handshake failed".into()),
                );
            }
            let mut text = r.join("; ");
            // postgres-openssl appends the certificate check's result.
            if let Some(detail) = parent
                .to_string()
                .strip_prefix(&s.to_string())
                .map(|d| d.trim_start_matches(": ").to_owned())
                .filter(|d| !d.is_empty())
            {
                text = format!("{text} ({detail})");
            }
            reason = Some(text);
            break;
        }
        parent = cur;
    }
    let reason = match reason {
        Some(r) => r,
        None if top.starts_with("error performing TLS handshake") => std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| top.clone()),
        None => return None,
    };
    let mode = tls.mode.as_str();
    let fix = if reason.contains("does not support TLS") {
        "enable ssl on the server, or set sslmode=disable on a trusted local socket only".to_owned()
    } else if reason.contains("mismatch") {
        "connect by a host name the server's certificate carries (or fix the certificate); \
         sslmode=verify-ca checks the chain only"
            .to_owned()
    } else if tls.verifies_chain() {
        // OpenSSL's words for a leaf that signed itself (not for a chain
        // whose root is unknown, "... in certificate chain").
        let self_signed = if reason.contains("(self-signed certificate)")
            || reason.contains("(self signed certificate)")
        {
            " (a self-signed server certificate is its own CA: Debian's default cluster serves \
             /etc/ssl/certs/ssl-cert-snakeoil.pem, made for the machine's host name)"
        } else {
            ""
        };
        format!(
            "set sslrootcert in the connection string (store.postgres or JWKSD_STORE_URL) to \
             the CA certificate that signed the server's certificate, now {}{self_signed}, e.g. \
             sslmode=verify-full sslrootcert=/etc/ssl/certs/ca.pem; sslmode=require without \
             sslrootcert connects without checking it (encrypted, open to a man in the middle)",
            tls.rootcert.as_deref().unwrap_or("unset")
        )
    } else {
        "set sslmode=verify-full and sslrootcert=/etc/ssl/certs/<ca>.pem, or sslmode=disable on \
         a trusted local socket"
            .to_owned()
    };
    Some(StoreError::Tls {
        hosts: hosts.to_owned(),
        sslmode: mode,
        reason,
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_key_values() {
        let (rest, m, r) = take_params(
            "postgres://u:p@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(m.as_deref(), Some("verify-full"));
        assert_eq!(r.as_deref(), Some("/etc/ca.pem"));
        let (rest, m, r) = take_params("postgres://db/x?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), m.as_deref(), r),
            ("postgres://db/x", Some("require"), None)
        );
        let (rest, m, r) = take_params(
            "host=db password='a \\' b' sslmode = verify-ca sslrootcert='/a b/ca.pem' dbname=j",
        )
        .unwrap();
        assert_eq!(rest, "host=db password='a \\' b' dbname=j");
        assert_eq!(m.as_deref(), Some("verify-ca"));
        assert_eq!(r.as_deref(), Some("/a b/ca.pem"));
        assert!(take_params("host=db sslmode='x").is_err());
        assert!(take_params("host").is_err());
    }

    #[test]
    fn verification_modes_need_a_root_certificate() {
        assert!(connector(Some("verify-full"), None).is_err());
        assert!(connector(Some("verify-ca"), Some("system".into())).is_err());
        assert!(connector(Some("verify-full"), Some("system".into())).is_ok());
        assert!(connector(Some("bogus"), None).is_err());
        let t = connector(None, None).unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        assert!(!t.verifies_chain());
        assert!(connector(Some("verify-full"), Some("/nonexistent/ca.pem".into())).is_err());
    }
}

//! The names a verified TLS client certificate carries: its subject, in
//! RFC 4514 form, and its subject alternative names. rustls verified the
//! chain against `tls.admin.client_ca_file` before this is read; here it is
//! only parsed (by OpenSSL), once per connection.

use std::net::IpAddr;

use openssl::x509::X509;

/// What identifies the client of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// RFC 4514: the last RDN first, `CN=auth-eu,O=Example`, with the
    /// escapes `openssl x509 -nameopt RFC2253` prints.
    pub subject: String,
    pub sans: Vec<San>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Uri(String),
    Email(String),
    Ip(IpAddr),
}

impl CertIdentity {
    /// Parses a certificate in DER; `None` when OpenSSL cannot (a chain
    /// rustls accepted always parses, so this is not expected).
    pub fn from_der(der: &[u8]) -> Option<CertIdentity> {
        let cert = X509::from_der(der).ok()?;
        let mut rdns: Vec<String> = cert
            .subject_name()
            .entries()
            .map(|e| {
                let key = e.object().nid().short_name().unwrap_or("?").to_owned();
                let value = e
                    .data()
                    .to_string()
                    .map(|s| escape(&s))
                    .unwrap_or_else(|_| format!("#{}", hex::encode(e.data().as_slice())));
                format!("{key}={value}")
            })
            .collect();
        rdns.reverse();
        let sans = cert
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| {
                        if let Some(d) = n.dnsname() {
                            Some(San::Dns(d.to_owned()))
                        } else if let Some(u) = n.uri() {
                            Some(San::Uri(u.to_owned()))
                        } else if let Some(e) = n.email() {
                            Some(San::Email(e.to_owned()))
                        } else {
                            n.ipaddress()
                                .and_then(|b| match b.len() {
                                    4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
                                    16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
                                    _ => None,
                                })
                                .map(San::Ip)
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(CertIdentity {
            subject: rdns.join(","),
            sans,
        })
    }

    /// Whether `name` is one of the SANs: DNS names compared without case,
    /// IP addresses as addresses, the others exactly.
    pub fn has_san(&self, name: &str) -> bool {
        let ip: Option<IpAddr> = name.parse().ok();
        self.sans.iter().any(|s| match s {
            San::Dns(d) => d.eq_ignore_ascii_case(name),
            San::Uri(u) => u == name,
            San::Email(e) => e == name,
            San::Ip(a) => ip == Some(*a),
        })
    }
}

/// An attribute value escaped as RFC 4514 section 2.4 asks, and as OpenSSL's
/// RFC2253 output does: `,+"\<>;` with a backslash, a leading `#` or space
/// and a trailing space too, control and non-ASCII bytes as `\XX`.
fn escape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    for (i, &b) in bytes.iter().enumerate() {
        let edge = (i == 0 && (b == b'#' || b == b' ')) || (i + 1 == bytes.len() && b == b' ');
        if !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\{b:02X}"));
        } else if edge || matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';') {
            out.push('\\');
            out.push(b as char);
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_sans_of_a_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["auth-eu.internal".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "auth-eu");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/auth-eu".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = CertIdentity::from_der(cert.der()).unwrap();
        assert_eq!(id.subject, "CN=auth-eu,O=Example\\, Inc.");
        assert!(id.has_san("AUTH-EU.internal"));
        assert!(id.has_san("10.1.2.3"));
        assert!(id.has_san("spiffe://example.org/auth-eu"));
        assert!(!id.has_san("spiffe://example.org/AUTH-EU"));
        assert!(!id.has_san("auth-us.internal"));
    }

    #[test]
    fn values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape("#x "), "\\#x\\ ");
        assert_eq!(escape(" x"), "\\ x");
        assert_eq!(escape("é"), "\\C3\\A9");
        assert_eq!(escape("plain-name.1"), "plain-name.1");
    }
}

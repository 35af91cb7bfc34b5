//! The client address of a request: the TCP peer, or, when the peer is one
//! of `admin.trusted_proxies`, the address its `X-Forwarded-For` gives.

use std::net::IpAddr;

use ipnet::IpNet;

/// An `X-Forwarded-For` from a trusted proxy that is not a list of
/// addresses.
#[derive(Debug, PartialEq, Eq)]
pub struct BadForwardedFor(pub String);

/// The address `admin.allow`, the clients' networks and the failure
/// limiter see. `forwarded` are the `X-Forwarded-For` values in the order
/// received; each proxy appends the address it got the request from, so
/// the client is the rightmost entry that is not itself a trusted proxy
/// (entries left of it could be written by anyone). Without a trusted
/// proxy in front, the header is ignored: anyone can send it.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl IntoIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> Result<IpAddr, BadForwardedFor> {
    let trusts = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !trusts(&peer) {
        return Ok(peer);
    }
    let mut entries = Vec::new();
    for value in forwarded {
        for entry in value.split(',') {
            let entry = entry.trim();
            let ip = parse_entry(entry).ok_or_else(|| BadForwardedFor(entry.to_owned()))?;
            entries.push(ip.to_canonical());
        }
    }
    Ok(entries
        .iter()
        .rev()
        .find(|ip| !trusts(ip))
        // Every hop a trusted proxy: the first one is the client.
        .or(entries.first())
        .copied()
        .unwrap_or(peer))
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]` or either with a port, as
/// proxies write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let spoofed = ["203.0.113.9"];
        assert_eq!(
            client_address(ip("198.51.100.7"), spoofed, &trusted),
            Ok(ip("198.51.100.7"))
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), spoofed, &trusted),
            Ok(ip("203.0.113.9"))
        );
        // The client wrote the leftmost entry itself; the proxies' own
        // entries are skipped from the right.
        assert_eq!(
            client_address(
                ip("10.0.0.5"),
                ["1.2.3.4, 198.51.100.7", "10.0.0.6"],
                &trusted
            ),
            Ok(ip("198.51.100.7"))
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), [], &trusted),
            Ok(ip("10.0.0.5"))
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), ["[2001:db8::1]:443", "10.0.0.7"], &trusted),
            Ok(ip("2001:db8::1"))
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), ["10.0.0.9"], &trusted),
            Ok(ip("10.0.0.9"))
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), ["::ffff:192.0.2.1"], &trusted),
            Ok(ip("192.0.2.1"))
        );
        assert_eq!(
            client_address(ip("10.0.0.5"), ["unknown"], &trusted),
            Err(BadForwardedFor("unknown".into()))
        );
        assert_eq!(
            client_address(ip("198.51.100.7"), ["garbage"], &trusted),
            Ok(ip("198.51.100.7"))
        );
    }
}

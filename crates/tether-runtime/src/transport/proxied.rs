//! The client's real address behind a trusted load balancer: the PROXY
//! protocol header (HAProxy's, version 1 text or version 2 binary, parsed
//! by the `ppp` crate) at the start of a connection, and the
//! `X-Forwarded-For` header of a WebSocket upgrade. Both are believed only
//! from the proxies the operator lists: anyone else could write them.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The load balancers whose word on the client's address is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Networks: an address and a prefix length.
    nets: Vec<(IpAddr, u8)>,
    /// Connections from them begin with a PROXY protocol header (required).
    pub proxy_protocol: bool,
}

impl TrustedProxies {
    /// Parses addresses and networks (`"10.0.0.0/8"`, `"192.0.2.7"`,
    /// `"2001:db8::/32"`); the error names the one that is not.
    pub fn parse(list: &[String], proxy_protocol: bool) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list {
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item.as_str(), None),
            };
            let ip: IpAddr =
                addr.parse().map_err(|_| format!("{item:?} is not an IP address or network (e.g. \"10.0.0.0/8\")"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("{item:?}: the prefix length must be 0 to {max}"))?,
            };
            nets.push((ip, len));
        }
        Ok(TrustedProxies { nets, proxy_protocol })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|(net, len)| match (canonical(*net), ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), *len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), *len),
            _ => false,
        })
    }

    /// The client's address from an `X-Forwarded-For` value: the nearest
    /// address that is not a trusted proxy (each proxy appends the address
    /// it got the request from; only the part our proxies wrote is true).
    pub fn forwarded_for(&self, value: &[u8]) -> Option<IpAddr> {
        let text = std::str::from_utf8(value).ok()?;
        for item in text.rsplit(',') {
            let ip: IpAddr = item.trim().parse().ok()?;
            if !self.trusts(ip) {
                return Some(ip);
            }
        }
        None
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (bytes, bits) = (usize::from(len / 8), len % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    bits == 0 || {
        let mask = 0xffu8 << (8 - bits);
        (a[bytes] & mask) == (b[bytes] & mask)
    }
}

/// The longest a version 1 header can be (with its CRLF).
const V1_MAX: usize = 107;
/// Version 2: 16 bytes, then as many as they say (at most 65535).
const V2_FIXED: usize = 16;

/// Reads the PROXY protocol header that a trusted proxy sends first, and
/// nothing after it. The source address it carries, or None for a header
/// without one (a health check: `LOCAL`, `UNKNOWN`). Anything else is an
/// error: a connection from a trusted proxy must begin with a header.
pub(crate) async fn read_header(tcp: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("PROXY protocol header: {why}"));
    // Both versions start with at least 8 bytes ("PROXY " + "U"/"T", or the
    // 12-byte version 2 signature).
    let mut head = vec![0u8; 8];
    tcp.read_exact(&mut head).await?;
    if head.starts_with(b"\r\n\r\n\0\r\n") {
        head.resize(V2_FIXED, 0);
        tcp.read_exact(&mut head[8..]).await?;
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        head.resize(V2_FIXED + len, 0);
        tcp.read_exact(&mut head[V2_FIXED..]).await?;
    } else if head.starts_with(b"PROXY ") {
        // The text form ends at CRLF: read up to it, a byte at a time, so
        // that nothing of the client's own data is taken.
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n") {
            if head.len() >= V1_MAX {
                return Err(bad("a version 1 header longer than 107 bytes".into()));
            }
            tcp.read_exact(&mut b).await?;
            head.push(b[0]);
        }
    } else {
        return Err(bad("the connection does not begin with one (listen.proxy_protocol is on)".into()));
    }
    match ppp::HeaderResult::parse(&head) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            ppp::v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            (_, ppp::v2::Addresses::IPv6(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            _ => None,
        }),
        ppp::HeaderResult::V1(Err(e)) => Err(bad(e.to_string())),
        ppp::HeaderResult::V2(Err(e)) => Err(bad(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn networks_and_forwarded_for() {
        let t =
            TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.7".into(), "2001:db8::/32".into()], false).unwrap();
        assert!(t.trusts("10.1.2.3".parse().unwrap()) && !t.trusts("11.0.0.1".parse().unwrap()));
        assert!(t.trusts("192.0.2.7".parse().unwrap()) && !t.trusts("192.0.2.8".parse().unwrap()));
        assert!(t.trusts("::ffff:10.9.9.9".parse().unwrap()), "IPv4-mapped counts as IPv4");
        assert!(t.trusts("2001:db8:1::5".parse().unwrap()) && !t.trusts("2001:db9::1".parse().unwrap()));
        // The nearest untrusted address; a client's own forged entries come before.
        assert_eq!(t.forwarded_for(b"6.6.6.6, 203.0.113.9, 10.0.0.2"), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(t.forwarded_for(b"10.0.0.2"), None);
        assert_eq!(t.forwarded_for(b"nonsense, 10.0.0.2"), None);
        let t9 = TrustedProxies::parse(&["172.16.0.0/12".into()], false).unwrap();
        assert!(t9.trusts("172.31.255.255".parse().unwrap()) && !t9.trusts("172.32.0.0".parse().unwrap()));
        for bad in ["10.0.0.0/33", "ten", "::/129", "10.0.0.0/x"] {
            assert!(TrustedProxies::parse(&[bad.into()], false).is_err(), "{bad}");
        }
    }
}

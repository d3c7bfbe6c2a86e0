//! Where a client connects: `tcp://`, `tls://`, `ws://` or `wss://` URLs,
//! and the dialer that tries every resolved address in turn.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::transport::{self, Io, Kind, Transport};
use crate::tune::SocketTuning;

/// Port used when a `tcp://` or `tls://` URL names none.
pub const DEFAULT_TCP_PORT: u16 = 7400;

/// A server address with its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    kind: Kind,
    url: url::Url,
    host: String,
    port: u16,
}

/// A URL that cannot name a tether server.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {problem}; use tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH")]
pub struct EndpointError {
    url: String,
    problem: String,
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem: &str| EndpointError { url: s.to_owned(), problem: problem.to_owned() };
        let url = url::Url::parse(s).map_err(|e| err(&e.to_string()))?;
        let kind = match url.scheme() {
            "tcp" => Kind::Tcp,
            "tls" => Kind::Tls,
            "ws" => Kind::Ws,
            "wss" => Kind::Wss,
            other => return Err(err(&format!("unknown scheme {other:?}"))),
        };
        let host = url.host_str().ok_or_else(|| err("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_or_known_default().unwrap_or(DEFAULT_TCP_PORT);
        Ok(Endpoint { kind, url, host, port })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl Endpoint {
    /// The transport this URL asks for.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// What a connection attempt needs besides the address.
#[derive(Clone)]
pub struct DialConfig {
    /// Socket options.
    pub tuning: SocketTuning,
    /// Trust for `tls://` and `wss://`; None: the system's root certificates.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Largest frame accepted from the server.
    pub max_frame: u32,
    /// Connect from this local address (a load generator spreading its
    /// connections over many source addresses). On Linux the socket is
    /// bound with IP_BIND_ADDRESS_NO_PORT, so the port is chosen at connect
    /// time per destination: each source address has the whole port range
    /// for every server address. None: the kernel chooses.
    pub source: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for DialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialConfig")
            .field("tuning", &self.tuning)
            .field("tls", &self.tls.is_some())
            .field("max_frame", &self.max_frame)
            .field("source", &self.source)
            .finish()
    }
}

/// Opens a transport to `ep`: resolves the host, tries each address (IPv4
/// and IPv6; all but the last, and any that did not answer, within the
/// per-address connect timeout), tunes the socket, then runs the TLS and
/// WebSocket handshakes. Returns the transport and the address it reached.
/// A path that never answers leaves it pending: bound it with a timeout
/// (the client machine abandons it at its handshake timeout).
pub async fn dial(ep: &Endpoint, cfg: &DialConfig) -> io::Result<(Transport, SocketAddr)> {
    let (tcp, addr) = connect(ep, cfg, 0).await?;
    Ok((handshake(ep, cfg, tcp).await?, addr))
}

/// The first half of [`dial`]: a tuned TCP connection. The `nth`
/// transport raced within one attempt starts with the `nth` address the
/// host resolves to (wrapping around), then tries the others in order, so
/// racing also covers several addresses (`docs/PROTOCOL.md` §9.7).
pub async fn connect(ep: &Endpoint, cfg: &DialConfig, nth: usize) -> io::Result<(TcpStream, SocketAddr)> {
    let (tcp, addr) = connect_any(ep, cfg.tuning.connect_timeout, cfg.source, nth).await?;
    cfg.tuning.apply(&tcp)?;
    Ok((tcp, addr))
}

/// The second half of [`dial`]: TLS and WebSocket handshakes on `tcp`.
pub async fn handshake(ep: &Endpoint, cfg: &DialConfig, tcp: TcpStream) -> io::Result<Transport> {
    let io = match ep.kind {
        Kind::Tcp | Kind::Ws => Io::Plain(tcp),
        Kind::Tls | Kind::Wss => {
            // No CA given: the system's roots, as browsers and curl do.
            let tls = match &cfg.tls {
                Some(t) => t.clone(),
                None => crate::tls::system_roots().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            };
            let name = rustls::pki_types::ServerName::try_from(ep.host.clone()).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a valid TLS server name: {e}", ep.host))
            })?;
            let s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            Io::ClientTls(Box::new(s))
        }
    };
    let t = match ep.kind {
        Kind::Tcp | Kind::Tls => Transport::stream(io, cfg.max_frame),
        Kind::Ws | Kind::Wss => {
            let ws = transport::ws::client_handshake(&ep.url, io, cfg.max_frame).await?;
            Transport::ws(ws, ep.kind == Kind::Wss, cfg.max_frame)
        }
    };
    Ok(t)
}

/// One TCP connection, from `source` if given.
async fn connect_from(addr: SocketAddr, source: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source else { return TcpStream::connect(addr).await };
    let s = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(target_os = "linux")]
    if ip.is_ipv4() {
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
            .map_err(io::Error::from)?;
    }
    s.bind(SocketAddr::new(ip, 0)).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot connect from {ip}: {e}; is it an address of this host?"))
    })?;
    s.connect(addr).await
}

async fn connect_any(
    ep: &Endpoint,
    per_address: Duration,
    source: Option<std::net::IpAddr>,
    nth: usize,
) -> io::Result<(TcpStream, SocketAddr)> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {}: {e}", ep.host)))?
        .collect();
    if !addrs.is_empty() {
        let first = nth % addrs.len();
        addrs.rotate_left(first);
    }
    let mut failures = Vec::new();
    let mut hung = None;
    for (i, addr) in addrs.iter().enumerate() {
        // Every address but the last gets `per_address`; the last waits
        // until the client gives the transport up (its handshake timeout,
        // PROTOCOL §9.7): a connect timing out would count as the path
        // answering, and end an attempt that racing should carry on.
        let attempt = connect_from(*addr, source);
        let r = if i + 1 < addrs.len() { tokio::time::timeout(per_address, attempt).await } else { Ok(attempt.await) };
        match r {
            Ok(Ok(s)) => return Ok((s, *addr)),
            Ok(Err(e)) => failures.push((format!("{addr}: {e}"), e.kind())),
            Err(_) => {
                hung.get_or_insert(*addr);
                failures.push((
                    format!("{addr}: no answer within {} ms", per_address.as_millis()),
                    io::ErrorKind::TimedOut,
                ));
            }
        }
    }
    // The others answered with a refusal, but one never answered at all:
    // its path may just be silent for now. Wait on it again, without a
    // timeout, rather than report the path as answering.
    if let Some(addr) = hung {
        return connect_from(addr, source).await.map(|s| (s, addr));
    }
    let kind = failures.last().map_or(io::ErrorKind::NotFound, |f| f.1);
    let list: Vec<_> = failures.into_iter().map(|f| f.0).collect();
    Err(io::Error::new(kind, format!("cannot connect to {}: {}", ep, list.join("; "))))
}

//! Socket tuning: OS keepalive, TCP_USER_TIMEOUT and TCP_NODELAY, derived
//! from the heartbeat so the kernel and tether agree on when a link is dead
//! (the seeds' hand-tuned `SO_KEEPALIVE` / idle / interval / count).
//!
//! - **Keepalive** probes after `interval` of idleness, every
//!   `probe_timeout`, `probes` times: the same cycle as tether's heartbeat,
//!   so a peer whose application heartbeat is off (debug switch, or an idle
//!   server-side socket) is still swept by the kernel.
//! - **TCP_USER_TIMEOUT** = the heartbeat's whole dead-after time: unacked
//!   data can no longer hold a dead connection open for the kernel's default
//!   15+ minutes of retransmission. Per tcp(7) it also bounds keepalive.
//! - **TCP_NODELAY**: heartbeats and small messages go out at once.
//! - **Connect timeout** per address = the probe timeout (at least 1 s): a
//!   SYN unanswered that long is treated like an unanswered PING.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tether_proto::HeartbeatConfig;
use tokio::net::TcpStream;

/// OS keepalive settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe (TCP_KEEPIDLE).
    pub idle: Duration,
    /// Time between probes (TCP_KEEPINTVL).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT).
    pub count: u32,
}

/// How every socket is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketTuning {
    /// OS keepalive, or None to leave it off.
    pub keepalive: Option<Keepalive>,
    /// TCP_USER_TIMEOUT (Linux), or None for the kernel default.
    pub user_timeout: Option<Duration>,
    /// TCP_NODELAY.
    pub nodelay: bool,
    /// Longest one TCP connect may take, per resolved address.
    pub connect_timeout: Duration,
}

impl SocketTuning {
    /// The tuning that matches a heartbeat configuration.
    pub fn from_heartbeat(hb: &HeartbeatConfig) -> Self {
        let secs = |d: Duration| d.max(Duration::from_secs(1));
        SocketTuning {
            keepalive: Some(Keepalive {
                idle: secs(hb.max_interval()),
                interval: secs(hb.probe_timeout),
                count: hb.probes.max(1),
            }),
            user_timeout: Some(secs(hb.dead_after())),
            nodelay: true,
            connect_timeout: secs(hb.probe_timeout),
        }
    }

    /// Applies the settings to a connected or accepted socket.
    pub fn apply(&self, s: &TcpStream) -> io::Result<()> {
        let sock = SockRef::from(s);
        s.set_nodelay(self.nodelay)?;
        match self.keepalive {
            Some(k) => {
                let ka = TcpKeepalive::new().with_time(k.idle).with_interval(k.interval).with_retries(k.count);
                sock.set_tcp_keepalive(&ka)?;
            }
            None => sock.set_keepalive(false)?,
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(t) = self.user_timeout {
            sock.set_tcp_user_timeout(Some(t))?;
        }
        Ok(())
    }
}

/// The settings in effect on a socket, read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketReport {
    /// SO_KEEPALIVE with TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT.
    pub keepalive: Option<Keepalive>,
    /// TCP_USER_TIMEOUT (None: kernel default).
    pub user_timeout: Option<Duration>,
    /// TCP_NODELAY.
    pub nodelay: bool,
}

impl SocketReport {
    /// Reads the options back from `s`.
    pub fn read(s: &TcpStream) -> io::Result<Self> {
        let sock = SockRef::from(s);
        let keepalive = if sock.keepalive()? {
            Some(Keepalive {
                idle: sock.tcp_keepalive_time()?,
                interval: sock.tcp_keepalive_interval()?,
                count: sock.tcp_keepalive_retries()?,
            })
        } else {
            None
        };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let user_timeout = sock.tcp_user_timeout()?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let user_timeout = None;
        Ok(SocketReport { keepalive, user_timeout, nodelay: s.nodelay()? })
    }
}

impl std::fmt::Display for SocketReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.keepalive {
            Some(k) => write!(
                f,
                "SO_KEEPALIVE on (idle {}s, interval {}s, count {})",
                k.idle.as_secs(),
                k.interval.as_secs(),
                k.count
            )?,
            None => write!(f, "SO_KEEPALIVE off")?,
        }
        match self.user_timeout {
            Some(t) => write!(f, ", TCP_USER_TIMEOUT {} ms", t.as_millis())?,
            None => write!(f, ", TCP_USER_TIMEOUT kernel default")?,
        }
        write!(f, ", TCP_NODELAY {}", if self.nodelay { "on" } else { "off" })
    }
}

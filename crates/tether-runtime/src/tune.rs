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
    /// Longest one TCP connect may take, per resolved address, when another
    /// address remains to be tried (the last waits until the client gives
    /// the transport up at its handshake timeout).
    pub connect_timeout: Duration,
}

/// Linux's largest TCP_KEEPIDLE and TCP_KEEPINTVL (seconds).
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Linux's largest TCP_KEEPCNT.
const MAX_KEEPALIVE_COUNT: u32 = 127;

impl SocketTuning {
    /// The tuning that matches a heartbeat configuration.
    /// Values beyond what Linux accepts are clamped to its limits
    /// (keepalive idle and interval 32767 s, count 127; TCP_USER_TIMEOUT
    /// about 24 days), so a heartbeat set very long still gets a socket.
    pub fn from_heartbeat(hb: &HeartbeatConfig) -> Self {
        let secs = |d: Duration| d.max(Duration::from_secs(1));
        let keepalive_secs = |d: Duration| secs(d).min(Duration::from_secs(MAX_KEEPALIVE_SECS));
        SocketTuning {
            keepalive: Some(Keepalive {
                idle: keepalive_secs(hb.max_interval()),
                interval: keepalive_secs(hb.probe_timeout),
                count: hb.probes.clamp(1, MAX_KEEPALIVE_COUNT),
            }),
            user_timeout: Some(secs(hb.dead_after()).min(Duration::from_millis(u64::from(i32::MAX as u32)))),
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
    /// Reads the options back from `s` (Windows cannot report the
    /// keepalive timings: an `Unsupported` error there).
    pub fn read(s: &TcpStream) -> io::Result<Self> {
        let sock = SockRef::from(s);
        #[cfg(windows)]
        if sock.keepalive()? {
            let what = "Windows does not report TCP keepalive timings back";
            return Err(io::Error::new(io::ErrorKind::Unsupported, what));
        }
        #[cfg(not(windows))]
        let keepalive = if sock.keepalive()? {
            Some(Keepalive {
                idle: sock.tcp_keepalive_time()?,
                interval: sock.tcp_keepalive_interval()?,
                count: sock.tcp_keepalive_retries()?,
            })
        } else {
            None
        };
        #[cfg(windows)]
        let keepalive = None;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A heartbeat longer than the kernel's keepalive limit (here: one a
    /// day, i.e. heartbeats effectively off) still gives a socket the
    /// kernel accepts, clamped to its limits and read back as such.
    #[tokio::test]
    async fn very_long_heartbeats_are_clamped_to_what_linux_accepts() {
        let mut hb = HeartbeatConfig::profile(tether_proto::Profile::Default);
        hb.interval = Duration::from_secs(24 * 3600);
        hb.probes = 500;
        let t = SocketTuning::from_heartbeat(&hb);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        t.apply(&s).unwrap();
        let r = SocketReport::read(&s).unwrap();
        assert_eq!(r.keepalive.map(|k| k.idle), Some(Duration::from_secs(MAX_KEEPALIVE_SECS)));
        assert_eq!(r.keepalive.map(|k| k.count), Some(MAX_KEEPALIVE_COUNT));
    }
}

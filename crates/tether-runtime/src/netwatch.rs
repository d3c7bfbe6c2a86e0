//! The network watcher (Linux): subscribes to rtnetlink's link, address and
//! route notifications and tells the client at once, so a returning network
//! triggers an immediate probe or reconnect instead of waiting out a backoff
//! (the seeds' "react when the network comes back").
//!
//! Only the message type is read (a netlink header is 16 bytes); the core
//! decides what a change means. A burst of notifications (one link change
//! brings several) is folded into at most one signal per 100 ms, with a
//! trailing signal so the last state is never missed.

use tokio::sync::mpsc;

use crate::client::{Event, Watched};

#[cfg(target_os = "linux")]
pub(crate) fn spawn(watched: Watched, events: mpsc::Sender<Event>) {
    use std::time::Duration;

    use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

    const RTMGRP_LINK: u32 = 0x1;
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    const RTMGRP_IPV4_ROUTE: u32 = 0x40;
    const RTMGRP_IPV6_IFADDR: u32 = 0x100;
    const RTMGRP_IPV6_ROUTE: u32 = 0x400;
    const QUIET: Duration = Duration::from_millis(100);

    let socket = TokioSocket::new(NETLINK_ROUTE).and_then(|mut s| {
        let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;
        s.socket_mut().bind(&SocketAddr::new(0, groups))?;
        Ok(s)
    });
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%e, "no network watcher (netlink unavailable); call network_changed() yourself");
            return;
        }
    };
    tokio::spawn(async move {
        let mut last_signal: Option<tokio::time::Instant> = None;
        let mut pending = false;
        loop {
            let wait = match (pending, last_signal) {
                (true, Some(t)) => t + QUIET,
                _ => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                r = socket.recv_from_full() => {
                    let Ok((buf, _)) = r else { return };
                    if !is_change(&buf) {
                        continue;
                    }
                    if last_signal.is_some_and(|t| t.elapsed() < QUIET) {
                        pending = true;
                        continue;
                    }
                }
                () = tokio::time::sleep_until(wait) => {
                    if !pending { continue; }
                }
            }
            pending = false;
            last_signal = Some(tokio::time::Instant::now());
            if !watched.notify() {
                return; // the client is gone
            }
            let _ = events.try_send(Event::NetworkChanged);
        }
    });
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn spawn(_watched: Watched, _events: mpsc::Sender<Event>) {}

/// True if any netlink message in `buf` is a link, address or route change.
#[cfg(target_os = "linux")]
fn is_change(mut buf: &[u8]) -> bool {
    const RTM_NEWLINK: u16 = 16;
    const RTM_DELROUTE: u16 = 25;
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if (RTM_NEWLINK..=RTM_DELROUTE).contains(&kind) {
            return true;
        }
        if len < 16 || len > buf.len() {
            return false;
        }
        // Messages are 4-byte aligned.
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    false
}

//! The network watcher: tells the client at once when the machine's network
//! changes, so a returning network triggers an immediate probe or reconnect
//! instead of waiting out a backoff (the seeds' "react when the network
//! comes back").
//!
//! - Linux: rtnetlink's link, address and route notifications. Only the
//!   message type is read (a netlink header is 16 bytes); the core decides
//!   what a change means.
//! - Elsewhere (macOS, Windows, the BSDs): address changes, through the
//!   `if-watch` crate (routing sockets, `NotifyIpInterfaceChange`).
//!
//! A burst of notifications (one link change brings several) is folded into
//! at most one signal per 100 ms, with a trailing signal so the last state
//! is never missed.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::client::{Event, Watched};

/// Signals are at least this far apart.
const QUIET: Duration = Duration::from_millis(100);

#[cfg(target_os = "linux")]
pub(crate) fn spawn(watched: Watched, events: mpsc::Sender<Event>) {
    use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

    const RTMGRP_LINK: u32 = 0x1;
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    const RTMGRP_IPV4_ROUTE: u32 = 0x40;
    const RTMGRP_IPV6_IFADDR: u32 = 0x100;
    const RTMGRP_IPV6_ROUTE: u32 = 0x400;

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
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(fold(rx, watched, events));
    tokio::spawn(async move {
        while let Ok((buf, _)) = socket.recv_from_full().await {
            if is_change(&buf) && tx.try_send(()).is_err() && tx.is_closed() {
                return;
            }
        }
    });
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn spawn(watched: Watched, events: mpsc::Sender<Event>) {
    use futures_util::StreamExt as _;

    let mut watcher = match if_watch::tokio::IfWatcher::new() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(%e, "no network watcher; call network_changed() yourself");
            return;
        }
    };
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(fold(rx, watched, events));
    tokio::spawn(async move {
        // The first events list the addresses already there: not changes.
        let settled = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Some(e) = watcher.next().await {
            match e {
                Ok(_) if tokio::time::Instant::now() < settled => {}
                Ok(_) => {
                    if tx.try_send(()).is_err() && tx.is_closed() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(%e, "network watcher error"),
            }
        }
    });
}

/// Folds change notices into signals to the client (at most one per
/// `QUIET`, the last one never lost); ends when the client is gone.
async fn fold(mut changes: mpsc::Receiver<()>, watched: Watched, events: mpsc::Sender<Event>) {
    let mut last_signal: Option<tokio::time::Instant> = None;
    let mut pending = false;
    loop {
        let wait = match (pending, last_signal) {
            (true, Some(t)) => t + QUIET,
            _ => tokio::time::Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            c = changes.recv() => {
                if c.is_none() {
                    return;
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
}

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

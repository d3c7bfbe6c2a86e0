//! `tether serve`: the session server with in-memory sessions. Every message
//! a session sends is relayed to every session (a minimal chat), so two
//! `tether connect`s can talk. Ctrl-C drains: clients are told to come back
//! after a spread-out delay, then the server stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use tether_proto::{ServerConfig, SessionId};
use tether_runtime::server::{Server, ServerEvent, ServerOptions};
use tether_runtime::Kind;

use crate::{duration, stamp};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// TCP listener (length-prefixed frames); "off" to disable.
    #[arg(long, default_value = "127.0.0.1:7400")]
    tcp: String,
    /// WebSocket listener; "off" to disable.
    #[arg(long, default_value = "127.0.0.1:7401")]
    ws: String,
    /// TLS listener (needs --tls-cert and --tls-key).
    #[arg(long)]
    tls: Option<SocketAddr>,
    /// Secure WebSocket listener (needs --tls-cert and --tls-key).
    #[arg(long)]
    wss: Option<SocketAddr>,
    /// PEM certificate chain for TLS listeners.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS listeners.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// How long a session without a transport is kept for a resume.
    #[arg(long, default_value = "60s", value_parser = duration)]
    grace: Duration,
    /// Longest a new connection may take to send its HELLO.
    #[arg(long, default_value = "10s", value_parser = duration)]
    handshake_timeout: Duration,
    /// Handshakes admitted at once; more are told to retry later.
    #[arg(long, default_value_t = 512)]
    max_handshakes: usize,
    /// On Ctrl-C, clients reconnect after a delay spread over this window.
    #[arg(long, default_value = "5s", value_parser = duration)]
    drain: Duration,
}

fn listen_addr(s: &str, flag: &str) -> Result<Option<SocketAddr>> {
    if s == "off" {
        return Ok(None);
    }
    s.parse().map(Some).with_context(|| format!("--{flag} {s:?}: expected HOST:PORT (e.g. 127.0.0.1:7400) or \"off\""))
}

pub(crate) async fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    let core = ServerConfig { grace: a.grace, handshake_timeout: a.handshake_timeout, ..ServerConfig::default() };
    let mut opts = ServerOptions::new(core);
    opts.max_handshakes = a.max_handshakes;
    if let Some(addr) = listen_addr(&a.tcp, "tcp")? {
        opts = opts.listen(Kind::Tcp, addr);
    }
    if let Some(addr) = listen_addr(&a.ws, "ws")? {
        opts = opts.listen(Kind::Ws, addr);
    }
    if let Some(addr) = a.tls {
        opts = opts.listen(Kind::Tls, addr);
    }
    if let Some(addr) = a.wss {
        opts = opts.listen(Kind::Wss, addr);
    }
    match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => opts.tls = Some(tether_runtime::tls::server_config(c, k)?),
        (None, None) => {}
        _ => anyhow::bail!("give both --tls-cert and --tls-key, or neither"),
    }
    if opts.listen.is_empty() {
        anyhow::bail!("every listener is off; enable at least one of --tcp, --ws, --tls, --wss");
    }
    let server = Server::start(opts).await?;
    println!("tether serve: in-memory sessions, grace {}", humantime::format_duration(a.grace));
    for l in server.local_addrs() {
        println!("  listening on {}://{}", l.kind, l.addr);
    }
    if let Some(l) = server.local_addrs().first() {
        println!("  try: tether connect {}://{}", l.kind, l.addr);
    }
    println!("  every message is relayed to every session; Ctrl-C drains and stops");
    let (handle, mut events) = server.into_parts();
    loop {
        tokio::select! {
            e = events.recv() => {
                let Some(e) = e else { return Ok(()) };
                let t = stamp(start);
                match e {
                    ServerEvent::Opened { session, peer, kind } => {
                        println!("{t} {} opened from {kind}://{peer} ({} sessions)", short(session), handle.session_count());
                    }
                    ServerEvent::Message { session, payload } => {
                        let mut line = format!("{}: ", short(session)).into_bytes();
                        line.extend_from_slice(&payload);
                        let line = Bytes::from(line);
                        for s in handle.sessions() {
                            if let Err(e) = handle.send(s.id, line.clone()) {
                                println!("{t} relay to {} failed: {e}", short(s.id));
                            }
                        }
                    }
                    ServerEvent::Detached { session, reason } => {
                        println!("{t} {} detached: {reason}; kept {} for a resume", short(session), humantime::format_duration(a.grace));
                    }
                    ServerEvent::Resumed { session, replayed, peer, kind } => {
                        println!("{t} {} resumed from {kind}://{peer}, {replayed} message(s) replayed", short(session));
                    }
                    ServerEvent::Ended { session, reason, unacked } => {
                        println!("{t} {} ended: {reason}; {} unacknowledged message(s) dropped", short(session), unacked.len());
                    }
                    ServerEvent::Rejected { peer, reason } => println!("{t} refused {peer}: {reason:?}"),
                    _ => {}
                }
            }
            r = tokio::signal::ctrl_c() => {
                r?;
                let told = handle.drain(a.drain);
                println!(
                    "{} draining: {told} client(s) told to reconnect within {}; stopping",
                    stamp(start),
                    humantime::format_duration(a.drain)
                );
                // Give the CLOSE frames a moment to leave, then stop. The
                // sessions were in memory: a restarted server will not know
                // them, and clients will be told to start fresh.
                tokio::time::sleep(Duration::from_secs(1)).await;
                handle.shutdown();
                return Ok(());
            }
        }
    }
}

fn short(id: SessionId) -> String {
    id.to_string()[..8].to_owned()
}

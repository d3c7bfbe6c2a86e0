//! The processes a lab scenario runs inside its namespaces: the real tether
//! server and client (`tether_runtime`), each streaming numbered messages
//! to the other and printing what happens as JSON lines on stdout.
//!
//! The lab timestamps each line as it arrives, so the nodes need no shared
//! clock. Commands arrive as stdin lines: `pause` and `go` stop and restart
//! the stream, `finish` stops it and prints `{"ev":"finished"}` once
//! everything sent is acknowledged (or after 15 s). The node keeps running,
//! so its peer can drain too, until stdin is closed.
//!
//! Message keys are `c<n>` (client → server) and `s<epoch>:<n>` (server →
//! client, `epoch` telling a restarted server's numbers apart).

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use tether_proto::{AdaptiveConfig, ClientConfig, ClientEvent, ServerConfig, SessionId};
use tether_runtime::client::{Client, ClientOptions, Event};
use tether_runtime::server::{Server, ServerEvent, ServerOptions};
use tether_runtime::{Endpoint, Keepalive, Kind, SocketTuning};
use tokio::io::AsyncBufReadExt;

use tether_args::{duration, ProfileArg};

#[derive(clap::Subcommand)]
pub enum Node {
    /// The server: one TCP listener, a stream to the newest session.
    Server {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, value_parser = duration)]
        grace: Duration,
        #[arg(long, value_parser = duration, default_value = "50ms")]
        every: Duration,
        /// Number distinguishing this server process's messages from a previous one's.
        #[arg(long, default_value_t = 1)]
        epoch: u32,
        /// Do not detach sessions that go quiet (for heartbeat-off runs).
        #[arg(long)]
        no_idle_enforce: bool,
        /// The lab run this process belongs to (to find leftovers).
        #[arg(long)]
        tag: Option<String>,
        /// Keep sessions in this Redis (a cluster node): a session outlives
        /// this process and resumes on the next node.
        #[arg(long)]
        redis: Option<String>,
        /// This node's name in the cluster.
        #[arg(long, default_value = "lab")]
        node_id: String,
    },
    /// The client: connects, streams, reports every event.
    Client(ClientArgs),
}

#[derive(clap::Args)]
pub struct ClientArgs {
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    profile: ProfileArg,
    #[arg(long, value_parser = duration, default_value = "50ms")]
    every: Duration,
    /// No tether heartbeat (the OS keepalive below is all that is left).
    #[arg(long)]
    no_heartbeat: bool,
    /// OS keepalive idle,interval,count in seconds, e.g. 10,5,3 (replaces the derived tuning;
    /// TCP_USER_TIMEOUT is then left at the kernel default).
    #[arg(long)]
    keepalive: Option<String>,
    /// Adaptive heartbeat settings min,max,step,successes,precision in seconds,
    /// e.g. 2,30,3,1,1 (with --profile adaptive; the defaults take many minutes to learn).
    #[arg(long)]
    adaptive: Option<String>,
    /// Heartbeat probe timeout (replaces the profile's).
    #[arg(long, value_parser = duration)]
    probe_timeout: Option<Duration>,
    /// Do not watch netlink for link and address changes.
    #[arg(long)]
    no_watch: bool,
    /// The lab run this process belongs to (to find leftovers).
    #[arg(long)]
    tag: Option<String>,
}

/// Prints one JSON line and flushes it: the lab reads lines as they come.
fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Reports what `send` said about message `key`.
fn emit_send<T, E: std::fmt::Display>(key: String, r: Result<T, E>) {
    match r {
        Ok(_) => emit(json!({"ev": "sent", "k": key})),
        Err(e) => emit(json!({"ev": "refused", "k": key, "why": e.to_string()})),
    }
}

/// The keys of messages handed back when a session ended.
fn keys(unacked: &[Bytes]) -> Vec<String> {
    unacked.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect()
}

/// After `finish`: says `finished` once `pending()` (our unacknowledged
/// sends) is 0, or after 15 s. The node itself keeps running, so the peer
/// can drain too, until the lab closes stdin.
fn report_when_drained(pending: impl Fn() -> usize + Send + 'static) {
    tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until && pending() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        emit(json!({"ev": "finished", "buffered": pending()}));
    });
}

fn short(id: SessionId) -> String {
    id.to_string()
}

/// What stdin asked for.
struct Control {
    streaming: AtomicBool,
    finishing: AtomicBool,
}

fn read_commands(ctl: Arc<Control>) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            match l.trim() {
                "pause" => ctl.streaming.store(false, Ordering::SeqCst),
                "go" => ctl.streaming.store(true, Ordering::SeqCst),
                "finish" => {
                    ctl.streaming.store(false, Ordering::SeqCst);
                    if !ctl.finishing.swap(true, Ordering::SeqCst) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                _ => {}
            }
        }
        // The lab closed our stdin (it is done with us) or went away: stop.
        std::process::exit(0);
    });
    rx
}

/// Runs one node until its stdin closes (the `lab-node` subcommand).
pub async fn run(n: Node) -> Result<()> {
    match n {
        Node::Server { listen, grace, every, epoch, no_idle_enforce, redis, node_id, .. } => {
            let store = match redis {
                Some(url) => {
                    let mut o = tether_cluster::RedisOptions::new(url, node_id);
                    o.prefix = "lab".into();
                    let s: tether_runtime::store::SharedStore = tether_cluster::RedisStore::connect(o).await?;
                    Some(s)
                }
                None => None,
            };
            server(listen, grace, every, epoch, no_idle_enforce, store).await
        }
        Node::Client(args) => client(args).await,
    }
}

async fn server(
    listen: SocketAddr,
    grace: Duration,
    every: Duration,
    epoch: u32,
    no_idle: bool,
    store: Option<tether_runtime::store::SharedStore>,
) -> Result<()> {
    let mut core = ServerConfig { grace, enforce_idle: !no_idle, ..ServerConfig::default() };
    if no_idle {
        // Grant whatever silence a heartbeat-less client asks for.
        core.max_idle_timeout = Duration::from_secs(7 * 24 * 3600);
    }
    let stored = store.is_some();
    let mut opts = ServerOptions::new(core).listen(Kind::Tcp, listen);
    opts.store = store;
    let server = Server::start(opts).await.with_context(|| format!("cannot listen on {listen}"))?;
    let (handle, mut events) = server.into_parts();
    emit(json!({"ev": "listening", "addr": listen.to_string()}));
    let ctl = Arc::new(Control { streaming: AtomicBool::new(true), finishing: AtomicBool::new(false) });
    let mut finish = read_commands(ctl.clone());
    let mut tick = tokio::time::interval(every);
    let mut current: Option<SessionId> = None;
    let mut n = 0u64;
    let mut finished = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let (true, Some(s)) = (ctl.streaming.load(Ordering::SeqCst), current) {
                    n += 1;
                    let key = format!("s{epoch}:{n}");
                    if stored {
                        // Stored first (numbered by Redis), then sent.
                        let r = handle.publish(vec![(s, Bytes::from(key.clone()))]).await;
                        let r = r.map_err(|e| e.to_string()).and_then(|mut v| {
                            v.pop().unwrap_or(Err(tether_proto::SendError::NoSession)).map_err(|e| e.to_string())
                        });
                        emit_send(key, r);
                    } else {
                        emit_send(key.clone(), handle.send(s, Bytes::from(key)));
                    }
                }
            }
            e = events.recv() => {
                let Some(e) = e else { return Ok(()) };
                match e {
                    ServerEvent::Opened { session, peer, .. } => {
                        current = Some(session);
                        emit(json!({"ev": "opened", "session": short(session), "peer": peer.to_string()}));
                    }
                    ServerEvent::Message { session, seq, payload } => {
                        // With a store, a message counts once committed: a
                        // node that dies before that never acknowledged it,
                        // and the next node receives it again.
                        // Commits go in order: one not made is retried (a
                        // later one would cover it).
                        let mut committed = !stored;
                        while !committed {
                            match handle.commit(session, seq, Vec::new()).await {
                                Ok(_) => committed = true,
                                Err(tether_runtime::store::StoreError::Unavailable(_)) => {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                Err(_) => break, // carried on elsewhere: its client sends it there
                            }
                        }
                        if !committed {
                            continue;
                        }
                        emit(json!({"ev": "msg", "k": String::from_utf8_lossy(&payload)}));
                    }
                    ServerEvent::Detached { session, reason } => {
                        emit(json!({"ev": "detached", "session": short(session), "why": reason.to_string()}));
                    }
                    ServerEvent::Resumed { session, replayed, peer, .. } => {
                        current = Some(session); // a session carried on from another node
                        emit(json!({"ev": "resumed", "session": short(session), "replayed": replayed, "peer": peer.to_string()}));
                    }
                    ServerEvent::Ended { session, reason, unacked } => {
                        if current == Some(session) {
                            current = None;
                        }
                        emit(json!({"ev": "ended", "session": short(session), "why": reason.to_string(), "unacked": keys(&unacked)}));
                    }
                    _ => {}
                }
            }
            _ = &mut finish, if !finished => {
                finished = true;
                let handle = handle.clone();
                report_when_drained(move || handle.sessions().iter().map(|s| s.buffered.0).sum());
            }
        }
    }
}

fn parse_keepalive(s: &str) -> Result<Keepalive> {
    let parts: Vec<u64> = s
        .split(',')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--keepalive {s:?}: write idle,interval,count in seconds, e.g. 10,5,3"))?;
    let [idle, interval, count] = parts[..] else {
        anyhow::bail!("--keepalive {s:?}: write three numbers idle,interval,count, e.g. 10,5,3");
    };
    Ok(Keepalive {
        idle: Duration::from_secs(idle),
        interval: Duration::from_secs(interval),
        count: u32::try_from(count).context("--keepalive count is too large")?,
    })
}

fn parse_adaptive(s: &str) -> Result<AdaptiveConfig> {
    let how = "write min,max,step,successes,precision in seconds, e.g. 2,30,3,1,1";
    let parts: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--adaptive {s:?}: {how}"))?;
    let [min, max, step, successes, precision] = parts[..] else {
        anyhow::bail!("--adaptive {s:?}: {how}");
    };
    let d = |v: f64| Duration::try_from_secs_f64(v).with_context(|| format!("--adaptive {s:?}: {v} is not a duration"));
    let a = AdaptiveConfig {
        min_interval: d(min)?,
        max_interval: d(max)?,
        step: d(step)?,
        successes_to_grow: successes as u32,
        precision: d(precision)?,
    };
    a.validate()?;
    Ok(a)
}

async fn client(args: ClientArgs) -> Result<()> {
    let ClientArgs { url, profile, every, no_heartbeat, keepalive, adaptive, probe_timeout, no_watch, .. } = args;
    let endpoint: Endpoint = url.parse()?;
    let mut core = ClientConfig::profile(profile.into());
    if let Some(a) = adaptive {
        let a = parse_adaptive(&a)?;
        core.heartbeat.interval = a.min_interval;
        core.heartbeat.adaptive = Some(a);
    }
    if let Some(t) = probe_timeout {
        core.heartbeat.probe_timeout = t;
    }
    core.validate()?;
    if no_heartbeat {
        // Heartbeats so rare they never happen in a lab run, and never
        // enforced: only the OS can notice a dead link.
        core.heartbeat.interval = Duration::from_secs(24 * 3600);
        core.heartbeat.adaptive = None;
        core.heartbeat.enforce = false;
    }
    let mut opts = ClientOptions::new(core);
    opts.watch_network = !no_watch;
    if let Some(k) = keepalive {
        opts.dial.tuning =
            SocketTuning { keepalive: Some(parse_keepalive(&k)?), user_timeout: None, ..opts.dial.tuning };
    }
    let mut client = Client::start(endpoint, opts)?;
    let handle = client.handle();
    let ctl = Arc::new(Control { streaming: AtomicBool::new(true), finishing: AtomicBool::new(false) });
    let mut finish = read_commands(ctl.clone());
    let mut tick = tokio::time::interval(every);
    let mut n = 0u64;
    let mut finished = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if ctl.streaming.load(Ordering::SeqCst) {
                    n += 1;
                    let key = format!("c{n}");
                    emit_send(key.clone(), handle.send(key.into_bytes()));
                }
            }
            e = client.next_event() => {
                let Some(e) = e else { return Ok(()) };
                match e {
                    Event::Dialed { addr, .. } => emit(json!({"ev": "dialed", "addr": addr.to_string()})),
                    Event::DialFailed { error } => emit(json!({"ev": "dial_failed", "why": error})),
                    Event::NetworkChanged => emit(json!({"ev": "network_changed"})),
                    Event::Session(e) => match e {
                        ClientEvent::Connected { session } => emit(json!({"ev": "connected", "session": short(session)})),
                        ClientEvent::Resumed { session, replayed } => {
                            emit(json!({"ev": "resumed", "session": short(session), "replayed": replayed}));
                        }
                        ClientEvent::Disconnected { reason } => emit(json!({"ev": "disconnected", "why": reason.to_string()})),
                        ClientEvent::AttemptFailed { reason } => emit(json!({"ev": "attempt_failed", "why": reason.to_string()})),
                        ClientEvent::Reconnecting { attempt, delay } => {
                            emit(json!({"ev": "reconnecting", "attempt": attempt, "delay_ms": delay.as_millis() as u64}));
                        }
                        ClientEvent::Message(m) => emit(json!({"ev": "msg", "k": String::from_utf8_lossy(&m)})),
                        ClientEvent::Rtt(rtt) => emit(json!({"ev": "rtt", "ms": rtt.as_secs_f64() * 1000.0})),
                        ClientEvent::IntervalLearned { network, interval } => {
                            emit(json!({"ev": "interval", "net": network, "s": interval.as_secs_f64()}));
                        }
                        ClientEvent::SessionEnded { session, reason, unacked, restarting } => {
                            emit(json!({
                                "ev": "ended",
                                "session": session.map(short),
                                "why": reason.to_string(),
                                "unacked": keys(&unacked),
                                "restarting": restarting,
                            }));
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
            _ = &mut finish, if !finished => {
                finished = true;
                let handle = handle.clone();
                // Not drained while it has no transport to drain over.
                report_when_drained(move || handle.buffered().0 + usize::from(!handle.is_established()));
            }
        }
    }
}

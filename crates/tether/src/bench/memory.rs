//! `tether bench memory`: server user-space memory per idle session,
//! measured beside a minimal tokio program holding as many raw TCP
//! connections, and again after every session received one large message.
//!
//! One process holds at most ~19.9k sockets here (`ulimit -n` 20000), so the
//! sessions are spread over several server processes and as many client
//! processes; every process is this binary (`tether bench-node …`), driven
//! by line commands on stdin. Memory is `RssAnon` from `/proc/PID/status`:
//! the heap and stacks, not kernel socket buffers.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use tether_proto::{ClientConfig, ClientEvent, Profile, ServerConfig};
use tether_runtime::client::{Client, ClientOptions, Event};
use tether_runtime::server::{Server, ServerEvent, ServerOptions};
use tether_runtime::Kind;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// Sockets one process may hold, leaving room for the runtime's own.
const PER_PROCESS: usize = 18_000;

#[derive(clap::Args)]
pub(crate) struct MemoryArgs {
    /// Sessions to hold (also raw TCP connections for the floor).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Size of the message each session receives in the second phase.
    #[arg(long, default_value_t = 64 * 1024)]
    message: usize,
    /// Keep the sessions in this Redis (the cluster's store) and report
    /// Redis's memory per session too.
    #[arg(long)]
    redis: Option<String>,
    /// The sessions' transport: ws, wss, tcp or tls (TLS with a fresh
    /// ECDSA P-256 certificate, as `tether serve` would use one).
    #[arg(long, default_value = "ws", value_parser = ["ws", "wss", "tcp", "tls"])]
    transport: String,
    /// Run the gateway (rooms) instead of a bare session server, measured
    /// three times: its sessions idle, out of rooms; then in rooms of this
    /// many members once each said one message (to the members there by
    /// then); then after a burst of `--burst` more says each. Each figure is
    /// read once every say came back to its sayer and memory settled (the
    /// "after a large message" phase is skipped).
    #[arg(long)]
    rooms: Option<usize>,
    /// With `--rooms`: the says each member sends in the burst.
    #[arg(long, default_value_t = 10)]
    burst: usize,
    /// How long memory settles before each reading (after the sessions
    /// connected, after traffic).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

/// A certificate for the bench's TLS servers (self-signed, for
/// `localhost`), in a directory removed on drop.
struct BenchCert {
    dir: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl BenchCert {
    fn make() -> Result<BenchCert> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let dir = std::env::temp_dir().join(format!("tether-bench-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem())?;
        std::fs::write(&key, ck.signing_key.serialize_pem())?;
        Ok(BenchCert { dir, cert, key })
    }
}

impl Drop for BenchCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(clap::Subcommand)]
pub(crate) enum Node {
    /// A tether server; prints its port.
    Server {
        /// Keep sessions in this Redis.
        #[arg(long)]
        redis: Option<String>,
        /// ws, wss, tcp or tls.
        #[arg(long, default_value = "ws")]
        transport: String,
        /// Certificate and key (PEM) for wss and tls.
        #[arg(long)]
        cert: Option<std::path::PathBuf>,
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// Run the gateway (rooms and presence) instead.
        #[arg(long)]
        gateway: bool,
    },
    /// A minimal tokio program holding raw TCP connections; prints its port.
    Raw,
    /// One process of `tether bench load`: its share of the sessions.
    LoadWorker(super::load::WorkerArgs),
    /// Opens N tether sessions (or raw connections) to a port.
    Clients {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        raw: bool,
        /// ws, wss, tcp or tls.
        #[arg(long, default_value = "ws")]
        transport: String,
        /// The certificate to trust for wss and tls.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        /// Rooms of this many members: on `join`, each session joins its
        /// room and says one message; on `burst K`, says K more.
        #[arg(long)]
        room_size: Option<usize>,
    },
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(args: &[String]) -> Result<Proc> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("bench-node")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start a bench process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Proc { child, stdin, stdout })
    }

    fn ask(&mut self, cmd: &str) -> Result<String> {
        if !cmd.is_empty() {
            writeln!(self.stdin, "{cmd}")?;
            self.stdin.flush()?;
        }
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("a bench process exited unexpectedly (asked {cmd:?})");
        }
        Ok(line.trim().to_owned())
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no RssAnon in /proc/PID/status")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Holds `n` connections over server processes of one kind (`raw`, or
/// `server` over `transport`); returns the processes and the servers'
/// total RSS before and after, in KiB.
fn phase(
    kind: &str,
    n: usize,
    redis: Option<&str>,
    transport: &str,
    cert: Option<&BenchCert>,
    rooms: Option<usize>,
    settle: Duration,
) -> Result<(Vec<Proc>, Vec<Proc>, u64, u64)> {
    let procs = n.div_ceil(PER_PROCESS).max(1);
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let mut base = 0;
    for i in 0..procs {
        let share = n / procs + usize::from(i < n % procs);
        let mut node_args = vec![kind.to_owned()];
        if kind == "server" {
            if let Some(url) = redis {
                node_args.extend(["--redis".to_owned(), url.to_owned()]);
            }
            node_args.extend(["--transport".to_owned(), transport.to_owned()]);
            if rooms.is_some() {
                node_args.push("--gateway".to_owned());
            }
            if let Some(c) = cert {
                node_args.extend(["--cert".to_owned(), c.cert.display().to_string()]);
                node_args.extend(["--key".to_owned(), c.key.display().to_string()]);
            }
        }
        let mut s = Proc::spawn(&node_args)?;
        let port = s.ask("")?;
        std::thread::sleep(Duration::from_millis(200));
        base += s.rss_kib()?;
        let mut args = vec!["clients".to_owned(), "--port".into(), port, "--n".into(), share.to_string()];
        if kind == "raw" {
            args.push("--raw".into());
        } else {
            args.extend(["--transport".into(), transport.to_owned()]);
            if let Some(c) = cert {
                args.extend(["--ca".into(), c.cert.display().to_string()]);
            }
            if let Some(size) = rooms {
                args.extend(["--room-size".into(), size.to_string()]);
            }
        }
        servers.push(s);
        clients.push(Proc::spawn(&args)?);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.ask("")?;
        eprintln!("  {kind}: client process {}/{procs}: {r}", i + 1);
    }
    // Let every handshake finish and allocations settle.
    std::thread::sleep(settle);
    let mut held = 0;
    for s in servers.iter_mut() {
        held += s.ask("count")?.parse::<usize>().unwrap_or(0);
    }
    if held != n {
        bail!("{kind}: servers hold {held} of {n} connections");
    }
    let after = rss(&servers)?;
    Ok((servers, clients, base, after))
}

fn rss(servers: &[Proc]) -> Result<u64> {
    servers.iter().map(Proc::rss_kib).sum()
}

pub(crate) fn memory(a: MemoryArgs) -> Result<()> {
    let n = a.sessions;
    if n == 0 {
        bail!("--sessions must be at least 1");
    }
    let t = a.transport.as_str();
    eprintln!("tether bench memory: {n} idle sessions over {t} vs {n} raw TCP connections");
    let cert = if matches!(t, "wss" | "tls") { Some(BenchCert::make()?) } else { None };
    let t0 = Instant::now();
    if let Some(size) = a.rooms {
        if size == 0 || !n.is_multiple_of(size) || n > PER_PROCESS {
            bail!("--rooms {size}: use a room size that divides --sessions, and at most {PER_PROCESS} sessions");
        }
    }
    let (raw_servers, raw_clients, raw_base, raw_after) = phase("raw", n, None, t, None, None, a.settle)?;
    drop((raw_servers, raw_clients));
    eprintln!("  raw TCP floor measured ({:.0}s)", t0.elapsed().as_secs_f64());
    let redis_before = a.redis.as_deref().map(redis_used).transpose()?;
    let (mut servers, mut clients, base, idle) =
        phase("server", n, a.redis.as_deref(), t, cert.as_ref(), a.rooms, a.settle)?;
    eprintln!("  idle {t} sessions measured ({:.0}s)", t0.elapsed().as_secs_f64());
    if let Some(size) = a.rooms {
        let per = |kib: u64| kib.saturating_sub(base) as f64 / n as f64;
        let floor = raw_after.saturating_sub(raw_base) as f64 / n as f64;
        let settled = |servers: &[Proc]| -> Result<f64> {
            std::thread::sleep(a.settle);
            Ok(per(rss(servers)?))
        };
        for c in clients.iter_mut() {
            c.ask("join")?;
        }
        let joined = settled(&servers)?;
        eprintln!("  in rooms of {size}, one say each ({:.0}s)", t0.elapsed().as_secs_f64());
        for c in clients.iter_mut() {
            c.ask(&format!("burst {}", a.burst))?;
        }
        let burst = settled(&servers)?;
        eprintln!("  after {} more says each ({:.0}s)", a.burst, t0.elapsed().as_secs_f64());
        let idle = per(idle);
        println!("| transport | sessions | room size | raw TCP floor (KiB/conn) | gateway, idle out of rooms (KiB/session) | in rooms after one say each, settled | of which the membership and its traffic | after {} more says each, settled | ratio to floor (in rooms) |", a.burst);
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {t} | {n} | {size} | {floor:.2} | {idle:.2} | {joined:.2} | {:.2} | {burst:.2} | {:.2}× |",
            joined - idle,
            joined / floor.max(0.001)
        );
        drop((servers, clients));
        return Ok(());
    }
    if let (Some(url), Some(before)) = (a.redis.as_deref(), redis_before) {
        let used = redis_used(url)?;
        println!("Redis: {:.0} bytes per idle session (used_memory)", used.saturating_sub(before) as f64 / n as f64);
    }
    for s in servers.iter_mut() {
        s.ask(&format!("send {}", a.message))?;
    }
    for c in clients.iter_mut() {
        c.ask("wait")?;
    }
    eprintln!("  every session received {} bytes ({:.0}s)", a.message, t0.elapsed().as_secs_f64());
    std::thread::sleep(a.settle);
    let after = rss(&servers)?;
    let per = |kib: u64| kib as f64 / n as f64;
    let (floor, ws, big) =
        (per(raw_after.saturating_sub(raw_base)), per(idle.saturating_sub(base)), per(after.saturating_sub(base)));
    println!("| transport | sessions | server processes | raw TCP floor (KiB/conn) | tether idle (KiB/session) | ratio to floor | after one {} KiB message (KiB/session) |", a.message / 1024);
    println!("|---|---|---|---|---|---|---|");
    println!("| {t} | {n} | {} | {floor:.2} | {ws:.2} | {:.2}× | {big:.2} |", servers.len(), ws / floor.max(0.001));
    Ok(())
}

/// Redis's `used_memory`, in bytes.
fn redis_used(url: &str) -> Result<u64> {
    let client = tether_cluster::redis::Client::open(url)?;
    let mut con = client.get_connection().with_context(|| format!("cannot reach {}", tether_cluster::redacted(url)))?;
    let info: String = tether_cluster::redis::cmd("INFO").arg("memory").query(&mut con)?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
        .context("no used_memory in INFO memory")
}

pub(crate) async fn node(n: Node) -> Result<()> {
    match n {
        Node::Server { gateway: true, transport, cert, key, .. } => gateway_node(&transport, cert, key).await,
        Node::Server { redis, transport, cert, key, .. } => server_node(redis, &transport, cert, key).await,
        Node::Raw => raw_node().await,
        Node::Clients { port, n, raw, transport, ca, room_size } => {
            clients_node(port, n, raw, &transport, ca, room_size).await
        }
        Node::LoadWorker(a) => super::load::worker(a).await,
    }
}

fn kind_of(transport: &str) -> Result<Kind> {
    Ok(match transport {
        "ws" => Kind::Ws,
        "wss" => Kind::Wss,
        "tcp" => Kind::Tcp,
        "tls" => Kind::Tls,
        other => bail!("--transport {other:?}: use ws, wss, tcp or tls"),
    })
}

async fn server_node(
    redis: Option<String>,
    transport: &str,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
) -> Result<()> {
    let kind = kind_of(transport)?;
    let mut opts = ServerOptions::new(ServerConfig::default()).listen(kind, "127.0.0.1:0".parse()?);
    if let (Some(c), Some(k)) = (&cert, &key) {
        opts.tls = Some(tether_runtime::tls::server_config(c, k)?);
    }
    if let Some(url) = redis {
        let pid = std::process::id();
        let mut o = tether_cluster::RedisOptions::new(url, format!("bench{pid}"));
        o.prefix = format!("benchmem{pid}");
        opts.store = Some(tether_cluster::RedisStore::connect(o).await?);
    }
    let server = Server::start(opts).await?;
    println!("{}", server.local_addr(kind).context("no listener")?.port());
    let (handle, mut events) = server.into_parts();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let ServerEvent::Ended { .. } = e {
                eprintln!("bench server: a session ended");
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(cmd) = lines.next_line().await? {
        let mut parts = cmd.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("count"), _) => println!("{}", handle.session_count()),
            (Some("send"), Some(size)) => {
                let msg = Bytes::from(vec![7u8; size.parse()?]);
                let all: Vec<_> = handle.sessions().into_iter().map(|s| (s.id, msg.clone())).collect();
                for chunk in all.chunks(256) {
                    for fate in handle.publish(chunk.to_vec()).await? {
                        fate?;
                    }
                }
                println!("sent");
            }
            _ => bail!("unknown command {cmd:?}"),
        }
    }
    Ok(())
}

/// The gateway (rooms, presence, metrics) on one session listener; `count`
/// reads its attached sessions from its own `/metrics`.
async fn gateway_node(
    transport: &str,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
) -> Result<()> {
    let tls = match (&cert, &key) {
        (Some(c), Some(k)) => {
            format!("[tls]\ncert = {:?}\nkey = {:?}\n", c.display().to_string(), k.display().to_string())
        }
        _ => String::new(),
    };
    let listen: String = ["tcp", "ws", "tls", "wss"]
        .iter()
        .map(|k| format!("{k} = \"{}\"\n", if *k == transport { "127.0.0.1:0" } else { "off" }))
        .collect();
    let text = format!(
        "[listen]\n{listen}{tls}\
         [admin]\nlisten = \"127.0.0.1:0\"\nkey = \"bench-admin-key-0123456789\"\n[demo]\nlisten = \"off\"\n\
         [limits]\nmax_room_members = 100000\nconnections_per_address = 0\n[log]\nlevel = \"warn\"\n"
    );
    let cfg = tether_gateway::Config::parse(&text, "bench gateway")?.resolve()?;
    let g = tether_gateway::run(cfg, std::future::pending()).await?;
    let port = g.sessions.first().context("no session listener")?.addr.port();
    let admin = g.admin.context("no admin listener")?;
    println!("{port}");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(cmd) = lines.next_line().await? {
        match cmd.as_str() {
            "count" => println!("{}", attached(admin).await?),
            _ => bail!("unknown command {cmd:?}"),
        }
    }
    drop(g);
    Ok(())
}

/// `tether_sessions{state="attached"}` from a gateway's `/metrics`.
async fn attached(admin: std::net::SocketAddr) -> Result<usize> {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    body.lines()
        .find_map(|l| l.strip_prefix("tether_sessions{state=\"attached\"} ")?.trim().parse::<f64>().ok())
        .map(|v| v as usize)
        .context("no tether_sessions{state=\"attached\"} in /metrics")
}

async fn raw_node() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    let held = Arc::new(AtomicUsize::new(0));
    let h2 = held.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            h2.fetch_add(1, Ordering::Relaxed);
            let h3 = h2.clone();
            // The minimal connection handler: a task reading into a 1 KiB buffer.
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                h3.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(cmd) = lines.next_line().await? {
        match cmd.as_str() {
            "count" => println!("{}", held.load(Ordering::Relaxed)),
            _ => bail!("unknown command {cmd:?}"),
        }
    }
    Ok(())
}

async fn clients_node(
    port: u16,
    n: usize,
    raw: bool,
    transport: &str,
    ca: Option<std::path::PathBuf>,
    room_size: Option<usize>,
) -> Result<()> {
    let ready = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let mut raw_conns = Vec::new();
    let mut members = Vec::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    if raw {
        for _ in 0..n {
            raw_conns.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await?);
        }
        ready.store(n, Ordering::Relaxed);
    } else {
        let host = if ca.is_some() { "localhost" } else { "127.0.0.1" };
        let path = if transport.starts_with("ws") { "/" } else { "" };
        let url: tether_runtime::Endpoint = format!("{transport}://{host}:{port}{path}").parse()?;
        let tls = ca.as_deref().map(tether_runtime::tls::client_config).transpose()?;
        for i in 0..n {
            let mut opts = ClientOptions::new(ClientConfig::profile(Profile::Default));
            opts.watch_network = false;
            opts.dial.tls = tls.clone();
            let permit = gate.clone().acquire_owned().await?;
            let mut c = Client::start(url.clone(), opts)?;
            let (ready, received) = (ready.clone(), received.clone());
            // With rooms: on `join`, room i / size and one say once joined.
            let room = room_size.map(|size| format!("r{}", i / size));
            let handle = c.handle();
            if let Some(r) = &room {
                members.push((handle.clone(), r.clone()));
            }
            tokio::spawn(async move {
                let mut permit = Some(permit);
                while let Some(e) = c.next_event().await {
                    match e {
                        Event::Session(ClientEvent::Connected { .. }) => {
                            permit.take();
                            ready.fetch_add(1, Ordering::Relaxed);
                        }
                        Event::Session(ClientEvent::Message(m)) => match &room {
                            None => {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(r) => {
                                let v: serde_json::Value = serde_json::from_slice(&m).unwrap_or_default();
                                if v["ev"] == "joined" {
                                    let say = serde_json::json!({"op": "say", "room": r, "body": {"n": i}});
                                    let _ = handle.send(say.to_string());
                                } else if v["ev"] == "message" && v["body"]["n"] == i {
                                    // Its own say came back: handled and fanned out.
                                    received.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        },
                        _ => {}
                    }
                }
            });
        }
    }
    let started = Instant::now();
    while ready.load(Ordering::Relaxed) < n {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {} of {n} sessions connected in 300 s", ready.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{n} connected in {:.1}s", started.elapsed().as_secs_f64());
    // Every say of this node's members came back to its sayer.
    let says_back = |want: usize| {
        let received = received.clone();
        async move {
            let started = Instant::now();
            while received.load(Ordering::Relaxed) < want {
                if started.elapsed() > Duration::from_secs(300) {
                    bail!("only {} of {want} says came back in 300 s", received.load(Ordering::Relaxed));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        }
    };
    let mut said = 0;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(cmd) = lines.next_line().await? {
        let mut parts = cmd.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("wait"), _) => {
                while received.load(Ordering::Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                println!("received");
            }
            (Some("join"), _) => {
                for (h, r) in &members {
                    let _ = h.send(serde_json::json!({"op": "join", "room": r}).to_string());
                }
                said += members.len();
                says_back(said).await?;
                println!("joined");
            }
            (Some("burst"), Some(k)) => {
                let k: usize = k.parse()?;
                for j in 0..k {
                    for (i, (h, r)) in members.iter().enumerate() {
                        let say = serde_json::json!({"op": "say", "room": r, "body": {"n": i, "k": j + 1}});
                        let _ = h.send(say.to_string());
                    }
                }
                said += k * members.len();
                says_back(said).await?;
                println!("said");
            }
            _ => bail!("unknown command {cmd:?}"),
        }
    }
    drop(raw_conns);
    Ok(())
}

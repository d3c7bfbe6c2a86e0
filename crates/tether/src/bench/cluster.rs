//! `tether bench cluster`: sessions surviving their nodes, measured.
//!
//! K `tether serve` processes (this binary) form one cluster on a Redis and
//! share one TCP port (SO_REUSEPORT: the kernel spreads connections over
//! the live ones); N tether clients in this process join rooms. Then every
//! node is restarted in turn (SIGTERM: drain, start again under the same
//! name), and one node is killed (`kill -9`). Reported for each: the time
//! until every session is carried again, and how many sessions had to start
//! over (the goal: none). Also Redis's memory per session.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use serde_json::json;
use tether_proto::{ClientConfig, ClientEvent, Profile};
use tether_runtime::client::{Client, ClientHandle, ClientOptions, Event};

#[derive(clap::Args)]
pub(crate) struct ClusterArgs {
    /// Sessions (tether clients over TCP in this process; at most ~18000).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Nodes: `tether serve` processes sharing one port.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The Redis the cluster keeps its sessions in (`redis://HOST:PORT`).
    #[arg(long)]
    redis: String,
    /// Rooms the sessions are spread over (each joins one).
    #[arg(long, default_value_t = 100)]
    rooms: usize,
}

/// One node: a `tether serve` process; killed on drop.
struct Node {
    name: String,
    cfg: std::path::PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) -> Result<()> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--config"])
            .arg(&self.cfg)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start tether serve")?;
        let out = BufReader::new(child.stdout.take().context("no stdout")?);
        for line in out.lines() {
            if line?.contains("Ctrl-C") {
                break;
            }
        }
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.child.as_ref().context("not running")?.id().to_string();
        if !Command::new("kill").args([sig, &pid]).status()?.success() {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    fn wait(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.cfg);
    }
}

/// Redis's used_memory, bytes.
async fn redis_memory(url: &str) -> Result<u64> {
    let client = tether_cluster::redis::Client::open(url)?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot reach Redis at {}", tether_cluster::redacted(url)))?;
    let info: String = tether_cluster::redis::cmd("INFO").arg("memory").query_async(&mut con).await?;
    info.lines().find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok()).context("no used_memory")
}

struct Clients {
    handles: Vec<ClientHandle>,
    connected: Arc<AtomicUsize>,
    resumed: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
}

impl Clients {
    fn established(&self) -> usize {
        self.handles.iter().filter(|h| h.is_established()).count()
    }

    /// Waits until every session is carried again; the time it took.
    async fn all_back(&self, what: &str, since: Instant) -> Result<Duration> {
        let n = self.handles.len();
        let mut last = Instant::now();
        loop {
            let up = self.established();
            if up == n {
                return Ok(since.elapsed());
            }
            if since.elapsed() > Duration::from_secs(180) {
                bail!("{what}: {up} of {n} sessions carried after 180 s");
            }
            if last.elapsed() > Duration::from_secs(2) {
                println!("    {what}: {up}/{n} sessions carried ({:.1} s)", since.elapsed().as_secs_f64());
                last = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub(crate) async fn cluster(a: ClusterArgs) -> Result<()> {
    if a.sessions == 0 || a.sessions > 18_000 {
        bail!("--sessions {}: use 1 to 18000 (one process holds at most ~19.9k sockets here)", a.sessions);
    }
    if a.nodes < 2 {
        bail!("--nodes {}: a node's sessions need another node to go to; use 2 or more", a.nodes);
    }
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; figures are for release builds (cargo build --release -p tether)");
    }
    let redis0 = redis_memory(&a.redis).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let pid = std::process::id();
    let mut nodes = Vec::new();
    for i in 0..a.nodes {
        let cfg = std::env::temp_dir().join(format!("tether-bench-cluster-{pid}-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[listen]\ntcp = \"127.0.0.1:{port}\"\nws = \"off\"\nreuse_port = true\n[admin]\nlisten = \"off\"\n\
                 [demo]\nlisten = \"off\"\n[drain]\nwindow = \"5s\"\n[log]\nlevel = \"warn\"\n\
                 [limits]\nmax_handshakes = 2048\nmax_room_members = {}\n\
                 [cluster]\nredis = \"{}\"\nnode_id = \"n{i}\"\nkey_prefix = \"benchcluster{pid}\"\nlease_ttl = \"3s\"\n",
                a.sessions + 1,
                a.redis
            ),
        )?;
        let mut n = Node { name: format!("n{i}"), cfg, child: None };
        n.start()?;
        nodes.push(n);
    }
    println!(
        "tether bench cluster: {} sessions in {} rooms, {} nodes sharing tcp://127.0.0.1:{port}, Redis at {}",
        a.sessions,
        a.rooms,
        a.nodes,
        tether_cluster::redacted(&a.redis)
    );
    let mut c = Clients {
        handles: Vec::with_capacity(a.sessions),
        connected: Arc::default(),
        resumed: Arc::default(),
        rejected: Arc::default(),
    };
    let start = Instant::now();
    for i in 0..a.sessions {
        let mut opts = ClientOptions::new(ClientConfig::profile(Profile::Default));
        opts.watch_network = false;
        let mut client = Client::start(format!("tcp://127.0.0.1:{port}").parse()?, opts)?;
        let h = client.handle();
        h.send(Bytes::from(json!({"op": "join", "room": format!("r{}", i % a.rooms.max(1))}).to_string()))?;
        c.handles.push(h);
        let (connected, resumed, rejected) = (c.connected.clone(), c.resumed.clone(), c.rejected.clone());
        tokio::spawn(async move {
            while let Some(e) = client.next_event().await {
                let counter = match e {
                    Event::Session(ClientEvent::Connected { .. }) => &connected,
                    Event::Session(ClientEvent::Resumed { .. }) => &resumed,
                    Event::Session(ClientEvent::AttemptFailed { .. }) => &rejected,
                    _ => continue,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    c.all_back("connecting", start).await?;
    // The joins land: every session's buffer drains.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("  {} sessions connected and joined in {:.1} s", a.sessions, start.elapsed().as_secs_f64() - 3.0);
    let per = (redis_memory(&a.redis).await?.saturating_sub(redis0)) as f64 / a.sessions as f64;
    println!("  Redis: {per:.0} bytes per session (record, member entry, room membership)");

    let mut rows = Vec::new();
    for node in nodes.iter_mut() {
        let t0 = Instant::now();
        node.signal("-TERM")?;
        node.wait()?;
        let drained = t0.elapsed();
        node.start()?;
        let back = c.all_back(&format!("restart of {}", node.name), t0).await?;
        println!(
            "  rolling restart: {} drained in {:.1} s; every session carried again {:.1} s after its SIGTERM",
            node.name,
            drained.as_secs_f64(),
            back.as_secs_f64()
        );
        rows.push((format!("SIGTERM + restart {}", node.name), back));
    }
    let t0 = Instant::now();
    nodes[0].signal("-KILL")?;
    nodes[0].wait()?;
    let back = c.all_back("kill -9", t0).await?;
    println!("  kill -9 of {}: every session carried again {:.2} s after", nodes[0].name, back.as_secs_f64());
    rows.push((format!("kill -9 {}", nodes[0].name), back));

    let fresh = c.connected.load(Ordering::Relaxed).saturating_sub(a.sessions);
    println!(
        "  sessions started over: {fresh} of {} (resumes {}, failed attempts {})",
        a.sessions,
        c.resumed.load(Ordering::Relaxed),
        c.rejected.load(Ordering::Relaxed)
    );
    println!("| event | sessions | nodes | every session carried again after | sessions started over |");
    println!("|---|---|---|---|---|");
    for (what, t) in rows {
        println!("| {what} | {} | {} | {:.2} s | {fresh} (whole run) |", a.sessions, a.nodes, t.as_secs_f64());
    }
    drop(nodes);
    Ok(())
}

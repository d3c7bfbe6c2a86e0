//! `tether bench rooms`: the gateway's room fan-out, measured end to end.
//!
//! A real `tether serve` process (this binary) on loopback; N tether
//! clients (TCP, in this process) join one room, which costs the gateway a
//! presence message to every member for every join (N²/2 in all); then one
//! member says M numbered messages at a given rate and every member must
//! receive every one. Reported: join-storm time, delivery throughput,
//! latency from say to each delivery (p50/p99/max), and the gateway's CPU
//! time and resident memory, read from /proc.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use tether_proto::{ClientConfig, ClientEvent, Profile};
use tether_runtime::client::{Client, ClientOptions, Event};

#[derive(clap::Args)]
pub(crate) struct RoomsArgs {
    /// Members of the room (each a tether session over TCP; at most ~18000).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Messages said by one member, each delivered to every member.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Messages per second (0: as fast as the say rate allows).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Run the gateway as a cluster node on this Redis (`[cluster]`), and
    /// report Redis's commands, CPU and memory too.
    #[arg(long)]
    redis: Option<String>,
    /// Call backend hooks (join and say) on a backend in this process that
    /// allows everything: what the hooks cost (docs/GATEWAY.md §10).
    #[arg(long)]
    hooks: bool,
}

/// A backend that allows every join and say, counting the calls.
async fn allow_all_backend(calls: Arc<AtomicUsize>) -> Result<String> {
    let app = axum::Router::new().route(
        "/hooks/{hook}",
        axum::routing::post(move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::Relaxed);
                axum::Json(json!({"allow": true}))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", l.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok(url)
}

/// Redis's counters, read with INFO.
struct RedisProbe {
    con: tether_cluster::redis::aio::MultiplexedConnection,
}

impl RedisProbe {
    async fn connect(url: &str) -> Result<RedisProbe> {
        let client = tether_cluster::redis::Client::open(url)?;
        let con = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("cannot reach Redis at {}", tether_cluster::redacted(url)))?;
        Ok(RedisProbe { con })
    }

    async fn info(&mut self, section: &str) -> Result<String> {
        Ok(tether_cluster::redis::cmd("INFO").arg(section).query_async(&mut self.con).await?)
    }

    async fn reset(&mut self) -> Result<()> {
        let _: () = tether_cluster::redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut self.con).await?;
        Ok(())
    }

    /// Calls per command since the last reset, most first.
    async fn calls(&mut self) -> Result<Vec<(String, u64)>> {
        let text = self.info("commandstats").await?;
        let mut out: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
                Some((name.to_owned(), calls))
            })
            .collect();
        out.sort_by_key(|(_, calls)| std::cmp::Reverse(*calls));
        Ok(out)
    }

    /// (CPU seconds, used memory bytes).
    async fn usage(&mut self) -> Result<(f64, u64)> {
        let field = |text: &str, key: &str| -> f64 {
            text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok()).unwrap_or(0.0)
        };
        let cpu = self.info("cpu").await?;
        let mem = self.info("memory").await?;
        Ok((field(&cpu, "used_cpu_sys:") + field(&cpu, "used_cpu_user:"), field(&mem, "used_memory:") as u64))
    }
}

/// The gateway process; killed on drop.
struct Gateway {
    child: Child,
    _dir: tempdir::Dir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    /// A directory removed on drop.
    pub(super) struct Dir(pub(super) std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Gateway {
    fn start(members: usize, redis: Option<&str>, hooks: Option<&str>) -> Result<(Gateway, String)> {
        let dir = std::env::temp_dir().join(format!("tether-bench-rooms-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("gw.toml");
        std::fs::write(
            &cfg,
            format!(
                "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n[admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n\
                 [limits]\nmax_room_members = {}\nsay_rate = 100000.0\nsay_burst = 100000.0\n[log]\nlevel = \"warn\"\n{}{}",
                members + 1,
                hooks.map(|url| format!("[hooks]\nurl = \"{url}\"\ncall = [\"join\", \"say\"]\n")).unwrap_or_default(),
                redis
                    .map(|url| format!(
                        "[cluster]\nredis = \"{url}\"\nnode_id = \"bench\"\nkey_prefix = \"bench{}\"\n",
                        std::process::id()
                    ))
                    .unwrap_or_default()
            ),
        )?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start tether serve")?;
        let out = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut addr = None;
        for line in out.lines() {
            let line = line?;
            if let Some(a) = line.trim().strip_prefix("sessions on tcp://") {
                addr = Some(a.to_owned());
            }
            if line.contains("Ctrl-C") {
                break;
            }
        }
        let g = Gateway { child, _dir: tempdir::Dir(dir) };
        let addr = addr.context("the gateway printed no tcp listener")?;
        Ok((g, addr))
    }

    /// (CPU seconds used, resident KiB) from /proc.
    fn usage(&self) -> Result<(f64, u64)> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the ")" of the command name: utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Ok((ticks / 100.0, rss))
    }
}

/// Waits until `n` reaches `want`, printing progress every 2 s.
async fn wait_for(what: &str, n: &AtomicUsize, want: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let mut last_print = Instant::now();
    while n.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline {
            bail!("{what}: {} of {want} after {within:?}", n.load(Ordering::Relaxed));
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            println!("  {what}: {}/{want}", n.load(Ordering::Relaxed));
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub(crate) async fn rooms(a: RoomsArgs) -> Result<()> {
    if a.members == 0 || a.members > 18_000 {
        bail!("--members {}: use 1 to 18000 (one process holds at most ~19.9k sockets here)", a.members);
    }
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; figures are for release builds (cargo build --release -p tether)");
    }
    let mut probe = match &a.redis {
        Some(url) => Some(RedisProbe::connect(url).await?),
        None => None,
    };
    let redis0 = match probe.as_mut() {
        Some(p) => Some(p.usage().await?),
        None => None,
    };
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let hooks = if a.hooks { Some(allow_all_backend(hook_calls.clone()).await?) } else { None };
    let (gw, addr) = Gateway::start(a.members, a.redis.as_deref(), hooks.as_deref())?;
    println!(
        "tether bench rooms: {} members, {} messages at {}/s, gateway at tcp://{addr}, {}",
        a.members,
        a.messages,
        a.rate,
        match &a.redis {
            Some(url) => format!("sessions and rooms in Redis at {}", tether_cluster::redacted(url)),
            None => "in memory".to_owned(),
        }
    );
    if let Some(url) = &hooks {
        println!("  join and say hooks to an allow-all backend at {url}");
    }
    let origin = Instant::now();
    let joined = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::with_capacity(a.members * a.messages)));
    let mut handles = Vec::with_capacity(a.members);
    let connect_start = Instant::now();
    for i in 0..a.members {
        let mut opts = ClientOptions::new(ClientConfig::profile(Profile::Default));
        opts.watch_network = false;
        let mut client = Client::start(format!("tcp://{addr}").parse()?, opts)?;
        handles.push(client.handle());
        let (joined, connected, delivered, latencies) =
            (joined.clone(), connected.clone(), delivered.clone(), latencies.clone());
        tokio::spawn(async move {
            while let Some(e) = client.next_event().await {
                match e {
                    Event::Session(ClientEvent::Connected { .. }) => {
                        connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Session(ClientEvent::Message(m)) => {
                        let Ok(v) = serde_json::from_slice::<Value>(&m) else { continue };
                        match v["ev"].as_str() {
                            Some("joined") => {
                                joined.fetch_add(1, Ordering::Relaxed);
                            }
                            Some("message") => {
                                let sent = v["body"]["t"].as_u64().unwrap_or(0);
                                let now = origin.elapsed().as_micros() as u64;
                                latencies.lock().unwrap_or_else(|p| p.into_inner()).push(now.saturating_sub(sent));
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        });
        // Pace the connects a little: a handshake storm is another benchmark.
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_for("connected", &connected, a.members, Duration::from_secs(120)).await?;
    println!("  connected: {} sessions in {:.2} s", a.members, connect_start.elapsed().as_secs_f64());
    // Every member joins at once: the gateway announces each join to the
    // members already there (up to limits.presence_max_members, 1000).
    let (cpu0, _) = gw.usage()?;
    let join_start = Instant::now();
    for h in &handles {
        h.send(Bytes::from(json!({"op": "join", "room": "bench"}).to_string()))?;
    }
    wait_for("joined", &joined, a.members, Duration::from_secs(120)).await?;
    let join_time = join_start.elapsed();
    let (cpu1, rss1) = gw.usage()?;
    let announced = a.members.min(1000);
    println!(
        "  join storm: {} joins ({} presence messages) in {:.2} s; gateway CPU {:.2} s, RSS {} KiB",
        a.members,
        announced * (announced + 1) / 2,
        join_time.as_secs_f64(),
        cpu1 - cpu0,
        rss1
    );

    if let (Some(p), Some((_, mem0))) = (probe.as_mut(), redis0) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, mem1) = p.usage().await?;
        println!(
            "  Redis: {:.0} bytes per member (session record, member entry, room membership, joined/presence messages not yet trimmed)",
            mem1.saturating_sub(mem0) as f64 / a.members as f64
        );
        p.reset().await?;
    }
    let redis_cpu0 = match probe.as_mut() {
        Some(p) => p.usage().await?.0,
        None => 0.0,
    };
    let speaker = handles.first().context("no members")?;
    let want = a.members * a.messages;
    let say_start = Instant::now();
    let every = if a.rate > 0.0 { Duration::from_secs_f64(1.0 / a.rate) } else { Duration::ZERO };
    for i in 0..a.messages {
        let t = origin.elapsed().as_micros() as u64;
        let body = json!({"op": "say", "room": "bench", "body": {"i": i, "t": t}}).to_string();
        if let Err(e) = speaker.send(Bytes::from(body)) {
            bail!("say {i} not queued: {e}");
        }
        if !every.is_zero() {
            tokio::time::sleep_until(tokio::time::Instant::from_std(say_start + every * (i as u32 + 1))).await;
        }
    }
    wait_for("delivered", &delivered, want, Duration::from_secs(300)).await?;
    let took = say_start.elapsed();
    let (cpu2, rss2) = gw.usage()?;
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    println!(
        "  fan-out: {want} deliveries in {:.2} s ({:.0}/s); latency say → delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        took.as_secs_f64(),
        want as f64 / took.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        lat.len()
    );
    println!("  gateway CPU during fan-out {:.2} s, RSS {} KiB", cpu2 - cpu1, rss2);
    if a.hooks {
        println!("  backend hook calls: {}", hook_calls.load(Ordering::Relaxed));
    }
    if let Some(p) = probe.as_mut() {
        let calls = p.calls().await?;
        let total: u64 = calls.iter().map(|(_, c)| c).sum();
        let (redis_cpu, _) = p.usage().await?;
        let list: Vec<String> = calls.iter().take(6).map(|(n, c)| format!("{n} {c}")).collect();
        println!(
            "  Redis during fan-out: {total} commands ({:.2} per room message, {:.3} per delivery; {}), CPU {:.2} s ({:.1} µs per delivery)",
            total as f64 / a.messages as f64,
            total as f64 / want as f64,
            list.join(", "),
            redis_cpu - redis_cpu0,
            (redis_cpu - redis_cpu0) * 1e6 / want as f64
        );
    }
    println!(
        "| members | messages | rate/s | join storm | deliveries/s | p50 ms | p99 ms | max ms | gateway CPU (fan-out) | gateway RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.2} s | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} s | {:.1} MiB |",
        a.members,
        a.messages,
        a.rate,
        join_time.as_secs_f64(),
        want as f64 / took.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        cpu2 - cpu1,
        rss2 as f64 / 1024.0
    );
    drop(gw);
    Ok(())
}

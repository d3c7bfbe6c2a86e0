//! A real Redis for the tests: Debian's `redis-server`, started by the test
//! on a free loopback port in a temporary directory and killed when
//! dropped — or the one `TETHER_REDIS_URL` names (scripts/test.sh starts
//! one). Each test uses its own key prefix, so tests can share a server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tether_cluster::{RedisOptions, RedisStore};
use tether_proto::{BackoffConfig, ClientConfig, HeartbeatConfig, Profile, ServerConfig, SessionId};
use tether_runtime::server::{Server, ServerEvent, ServerHandle, ServerOptions};
use tether_runtime::store::{SharedStore, StoreError};
use tether_runtime::Kind;

pub struct Redis {
    pub url: String,
    child: Option<Child>,
    dir: Option<std::path::PathBuf>,
    port: u16,
    /// `appendonly yes`, `appendfsync always`: a restart keeps everything.
    durable: bool,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A key prefix no other test uses.
pub fn prefix() -> String {
    format!("test{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

impl Redis {
    /// The shared server of `TETHER_REDIS_URL`, or a private one.
    pub fn start() -> Redis {
        if let Ok(url) = std::env::var("TETHER_REDIS_URL") {
            return Redis { url, child: None, dir: None, port: 0, durable: false };
        }
        Redis::private()
    }

    /// A server of this test's own (it can be stopped and restarted).
    pub fn private() -> Redis {
        Redis::private_with(false)
    }

    /// A server of this test's own that keeps every write on disk before
    /// answering (AOF, fsync always): a restart loses nothing.
    pub fn private_durable() -> Redis {
        Redis::private_with(true)
    }

    fn private_with(durable: bool) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("tether-redis-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("redis://127.0.0.1:{port}");
        let mut r = Redis { url, child: None, dir: Some(dir), port, durable };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let dir = self.dir.as_ref().expect("a private server");
        let aof: &[&str] =
            if self.durable { &["--appendonly", "yes", "--appendfsync", "always"] } else { &["--appendonly", "no"] };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(aof)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server not found: install Debian's redis-server (scripts/test.sh does) or set TETHER_REDIS_URL",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the private server (every key is lost: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub async fn store(&self, node: &str, prefix: &str) -> std::sync::Arc<RedisStore> {
        RedisStore::connect(self.options(node, prefix)).await.unwrap()
    }

    pub fn options(&self, node: &str, prefix: &str) -> RedisOptions {
        let mut o = RedisOptions::new(self.url.clone(), node);
        o.prefix = prefix.to_owned();
        o
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub struct Node {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    pub app: tokio::task::JoinHandle<()>,
}

/// A node whose application echoes every client message back to its
/// sender, committed with it ("c7" → "e7"), taking 15 ms over each (a
/// backend at work): when the node dies, messages it took but had not
/// committed are in flight, and must not have been acknowledged.
pub async fn node(store: SharedStore, opened: Arc<Mutex<Option<SessionId>>>) -> Node {
    let core = ServerConfig {
        grace: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(2),
        min_idle_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let mut opts = ServerOptions::new(core).listen(Kind::Tcp, "127.0.0.1:0".parse().unwrap());
    opts.store = Some(store);
    let server = Server::start(opts).await.unwrap();
    let addr = server.local_addr(Kind::Tcp).unwrap();
    let (handle, mut events) = server.into_parts();
    let h = handle.clone();
    let app = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            match e {
                ServerEvent::Opened { session, .. } => *opened.lock().unwrap() = Some(session),
                ServerEvent::Message { session, seq, payload } => {
                    let echo = Bytes::from(format!("e{}", String::from_utf8_lossy(&payload[1..])));
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    // Retried while Redis is away; done, or the session moved
                    // (its client sends the message again where it is now).
                    while let Err(StoreError::Unavailable(_)) =
                        h.commit(session, seq, vec![(session, echo.clone())]).await
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                _ => {}
            }
        }
    });
    Node { handle, addr, app }
}

pub fn client_core() -> ClientConfig {
    let mut c = ClientConfig::profile(Profile::Realtime);
    c.heartbeat = HeartbeatConfig {
        interval: Duration::from_millis(500),
        probe_timeout: Duration::from_millis(500),
        probes: 2,
        ..HeartbeatConfig::profile(Profile::Realtime)
    };
    c.handshake_timeout = Duration::from_secs(2);
    c.backoff = BackoffConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        resume_max: Duration::from_millis(200),
        ..BackoffConfig::default()
    };
    c
}

/// A TCP balancer in front of nodes: each new connection goes to the next
/// target that accepts it, round robin (one target: a switch); `cut` drops
/// every connection made so far, as a dead node's kernel does.
pub struct Balancer {
    pub addr: SocketAddr,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Balancer {
    pub async fn start(targets: Vec<SocketAddr>) -> Balancer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let targets = Arc::new(Mutex::new(targets));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (t2, c2) = (targets.clone(), conns.clone());
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = l.accept().await {
                let (t3, next) = (t2.clone(), next.clone());
                c2.lock().unwrap().push(tokio::spawn(async move {
                    let list = t3.lock().unwrap().clone();
                    for _ in 0..list.len() {
                        let to = list[next.fetch_add(1, Ordering::Relaxed) % list.len()];
                        if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                }));
            }
        });
        Balancer { addr, targets, conns }
    }

    /// Where new connections go from now on.
    pub fn set(&self, targets: Vec<SocketAddr>) {
        *self.targets.lock().unwrap() = targets;
    }

    pub fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

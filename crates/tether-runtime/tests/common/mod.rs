//! Shared test rig: a server, a fault proxy in front of it, a client
//! through the proxy, event logs, and a two-way message stream whose
//! delivery can be checked exactly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_proto::{BackoffConfig, ClientConfig, HeartbeatConfig, Profile, ServerConfig, SessionId};
use tether_runtime::client::{Client, ClientHandle, ClientOptions, Event};
use tether_runtime::server::{Server, ServerEvent, ServerHandle, ServerOptions};
use tether_runtime::Kind;
use tokio::sync::Notify;

pub use proxy::Proxy;

/// An append-only, timestamped event log that tests can wait on.
pub struct Log<T> {
    items: Arc<Mutex<Vec<(Instant, T)>>>,
    changed: Arc<Notify>,
}

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Log { items: self.items.clone(), changed: self.changed.clone() }
    }
}

impl<T: Clone + std::fmt::Debug> Log<T> {
    pub fn new() -> Self {
        Log { items: Arc::default(), changed: Arc::default() }
    }

    pub fn push(&self, t: T) {
        self.items.lock().unwrap().push((Instant::now(), t));
        self.changed.notify_waiters();
    }

    pub fn snapshot(&self) -> Vec<(Instant, T)> {
        self.items.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }

    /// Waits (real time, generous bound) for the first event at index
    /// >= `from` matching `pred`; panics with the whole log if none comes.
    pub async fn wait_from<R>(
        &self,
        from: usize,
        within: Duration,
        mut pred: impl FnMut(&T) -> Option<R>,
    ) -> (Instant, R) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let items = self.items.lock().unwrap();
                for (at, t) in items.iter().skip(from) {
                    if let Some(r) = pred(t) {
                        return (*at, r);
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no matching event within {within:?}; log:\n{:#?}", self.snapshot());
            }
        }
    }

    pub async fn wait<R>(&self, within: Duration, pred: impl FnMut(&T) -> Option<R>) -> (Instant, R) {
        self.wait_from(0, within, pred).await
    }
}

/// Fast timers so faults resolve in seconds: the client declares a link
/// dead after 1.5 s of silence; the server after 2 s.
pub fn client_core() -> ClientConfig {
    let mut c = ClientConfig::profile(Profile::Realtime);
    c.heartbeat = HeartbeatConfig {
        interval: Duration::from_millis(500),
        probe_timeout: Duration::from_millis(500),
        probes: 2,
        ..HeartbeatConfig::profile(Profile::Realtime)
    };
    c.handshake_timeout = Duration::from_secs(1);
    c.backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        resume_max: Duration::from_millis(500),
        ..BackoffConfig::default()
    };
    c
}

pub fn server_core(grace: Duration) -> ServerConfig {
    ServerConfig {
        grace,
        handshake_timeout: Duration::from_secs(2),
        min_idle_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

pub struct Certs {
    dir: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub roots: rustls::RootCertStore,
}

static CERT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A self-signed certificate for "localhost", written to temporary files.
pub fn certs() -> Certs {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "tether-test-{}-{}",
        std::process::id(),
        CERT_SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    Certs { dir, cert, key, roots }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Rig {
    pub kind: Kind,
    pub server: ServerHandle,
    pub sev: Log<ServerEvent>,
    pub proxy: Proxy,
    pub client: ClientHandle,
    pub cev: Log<Event>,
    pub client_opts: ClientOptions,
    server_addr: SocketAddr,
}

pub async fn start_server(kind: Kind, opts: ServerOptions) -> (ServerHandle, Log<ServerEvent>, SocketAddr) {
    let mut opts = opts.listen(kind, "127.0.0.1:0".parse().unwrap());
    if matches!(kind, Kind::Tls | Kind::Wss) && opts.tls.is_none() {
        let c = certs();
        opts.tls = Some(tether_runtime::tls::server_config(&c.cert, &c.key).unwrap());
    }
    let server = Server::start(opts).await.unwrap();
    let addr = server.local_addr(kind).unwrap();
    let (handle, mut rx) = server.into_parts();
    let log = Log::new();
    let l2 = log.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            l2.push(e);
        }
    });
    (handle, log, addr)
}

pub fn url(kind: Kind, addr: SocketAddr) -> tether_runtime::Endpoint {
    // "localhost" resolves to ::1 and 127.0.0.1 here; the dialer must try both.
    let host = if matches!(kind, Kind::Tls | Kind::Wss) { "localhost".to_owned() } else { addr.ip().to_string() };
    let path = if matches!(kind, Kind::Ws | Kind::Wss) { "/tether" } else { "" };
    format!("{}://{host}:{}{path}", kind.scheme(), addr.port()).parse().unwrap()
}

pub fn start_client(kind: Kind, addr: SocketAddr, opts: ClientOptions) -> (ClientHandle, Log<Event>) {
    if matches!(kind, Kind::Tls | Kind::Wss) && opts.dial.tls.is_none() {
        // Trust every certificate made by `certs()` in this process: the
        // server's was made just before.
        panic!("TLS clients need opts.dial.tls");
    }
    let mut client = Client::start(url(kind, addr), opts).unwrap();
    let handle = client.handle();
    let log = Log::new();
    let l2 = log.clone();
    tokio::spawn(async move {
        while let Some(e) = client.next_event().await {
            l2.push(e);
        }
    });
    (handle, log)
}

impl Rig {
    pub async fn start(kind: Kind, grace: Duration) -> Rig {
        Rig::with(kind, ServerOptions::new(server_core(grace)), ClientOptions::new(client_core())).await
    }

    pub async fn with(kind: Kind, mut sopts: ServerOptions, mut copts: ClientOptions) -> Rig {
        copts.watch_network = false;
        if matches!(kind, Kind::Tls | Kind::Wss) {
            let c = certs();
            sopts.tls = Some(tether_runtime::tls::server_config(&c.cert, &c.key).unwrap());
            copts.dial.tls = Some(tether_runtime::tls::client_config_with_roots(c.roots.clone()).unwrap());
        }
        let (server, sev, server_addr) = start_server(kind, sopts).await;
        let proxy = Proxy::start(server_addr).await;
        let (client, cev) = start_client(kind, proxy.addr, copts.clone());
        Rig { kind, server, sev, proxy, client, cev, client_opts: copts, server_addr }
    }

    /// Waits for the client's first session; returns its id.
    pub async fn connected(&self) -> SessionId {
        let (_, id) = self
            .sev
            .wait(Duration::from_secs(10), |e| match e {
                ServerEvent::Opened { session, .. } => Some(*session),
                _ => None,
            })
            .await;
        self.cev
            .wait(Duration::from_secs(10), |e| {
                matches!(e, Event::Session(tether_proto::ClientEvent::Connected { .. })).then_some(())
            })
            .await;
        id
    }

    /// Messages the server received, in order.
    pub fn server_received(&self) -> Vec<Bytes> {
        self.sev
            .snapshot()
            .into_iter()
            .filter_map(|(_, e)| match e {
                ServerEvent::Message { payload, .. } => Some(payload),
                _ => None,
            })
            .collect()
    }

    /// Messages the client received, in order.
    pub fn client_received(&self) -> Vec<Bytes> {
        self.cev
            .snapshot()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Session(tether_proto::ClientEvent::Message(m)) => Some(m),
                _ => None,
            })
            .collect()
    }
}

/// A steady two-way stream: the client sends "c1", "c2", … and the server
/// "s1", "s2", … to `session`, every `every`, until stopped. Only sends the
/// core accepted are counted.
pub struct Streams {
    stop: Arc<AtomicBool>,
    pub client_sent: Arc<AtomicU64>,
    pub server_sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Streams {
    pub fn start(rig: &Rig, session: SessionId, every: Duration) -> Streams {
        let stop = Arc::new(AtomicBool::new(false));
        let client_sent = Arc::new(AtomicU64::new(0));
        let server_sent = Arc::new(AtomicU64::new(0));
        let (s1, n1, c) = (stop.clone(), client_sent.clone(), rig.client.clone());
        let t1 = tokio::spawn(async move {
            while !s1.load(Ordering::SeqCst) {
                let n = n1.load(Ordering::SeqCst) + 1;
                if c.send(Bytes::from(format!("c{n}"))).is_ok() {
                    n1.store(n, Ordering::SeqCst);
                }
                tokio::time::sleep(every).await;
            }
        });
        let (s2, n2, srv) = (stop.clone(), server_sent.clone(), rig.server.clone());
        let t2 = tokio::spawn(async move {
            while !s2.load(Ordering::SeqCst) {
                let n = n2.load(Ordering::SeqCst) + 1;
                if srv.send(session, Bytes::from(format!("s{n}"))).is_ok() {
                    n2.store(n, Ordering::SeqCst);
                }
                tokio::time::sleep(every).await;
            }
        });
        Streams { stop, client_sent, server_sent, tasks: vec![t1, t2] }
    }

    /// Stops sending; returns (client sent, server sent).
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.client_sent.load(Ordering::SeqCst), self.server_sent.load(Ordering::SeqCst))
    }
}

/// Checks `got` is exactly `{prefix}1 … {prefix}n`: nothing lost,
/// duplicated or reordered.
pub fn assert_exact(got: &[Bytes], prefix: char, n: u64, what: &str) {
    let want: Vec<Bytes> = (1..=n).map(|i| Bytes::from(format!("{prefix}{i}"))).collect();
    if got != want.as_slice() {
        let dup = got.len() as i64 - want.len() as i64;
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{what}: expected {n} messages {prefix}1..{prefix}{n} exactly once in order; got {} (diff {dup}), first mismatch at {first_bad:?}; got {:?}",
            got.len(),
            got.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>()
        );
    }
}

/// Waits until the counts delivered reach what was sent, then checks exactness.
pub async fn wait_delivered(rig: &Rig, client_sent: u64, server_sent: u64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (s, c) = (rig.server_received().len() as u64, rig.client_received().len() as u64);
        if (s >= client_sent && c >= server_sent) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_exact(&rig.server_received(), 'c', client_sent, "server received");
    assert_exact(&rig.client_received(), 's', server_sent, "client received");
}

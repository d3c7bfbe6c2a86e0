//! An in-process TCP fault proxy: sits between a client and a server on
//! loopback and breaks the path on command. It works below TLS and
//! WebSocket, so every transport meets the same faults.
//!
//! - blackhole: nothing moves either way (connections stay open, as after a
//!   pulled cable or a dead router; new connections are accepted by the
//!   kernel but carry nothing);
//! - stall one direction;
//! - reset: every current connection is torn down with an RST;
//! - delay: every chunk is held this long before it is forwarded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    pub up: bool,
    pub down: bool,
    pub delay: Duration,
}

pub struct Proxy {
    pub addr: SocketAddr,
    flow: watch::Sender<Flow>,
    conns: Arc<Mutex<Vec<Conn>>>,
    accepted: Arc<AtomicU64>,
}

struct Conn {
    frozen: watch::Sender<bool>,
    tasks: Vec<tokio::task::AbortHandle>,
    server_closed: Arc<AtomicBool>,
    reset: Arc<tokio::sync::Notify>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (flow, rx) = watch::channel(Flow { up: true, down: true, delay: Duration::ZERO });
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let (conns2, accepted2) = (conns.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted2.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(target).await else { continue };
                for s in [&client, &server] {
                    let _ = s.set_nodelay(true);
                    // Dropping the socket then sends RST, as a reset path does.
                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                }
                let server_closed = Arc::new(AtomicBool::new(false));
                let reset = Arc::new(tokio::sync::Notify::new());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let (frozen, frx) = watch::channel(false);
                let gate = Gate { flow: rx.clone(), frozen: frx };
                let up = tokio::spawn(pump(cr, sw, gate.clone(), true, None, reset.clone()));
                let down = tokio::spawn(pump(sr, cw, gate, false, Some(server_closed.clone()), reset.clone()));
                conns2.lock().expect("conns").push(Conn {
                    frozen,
                    tasks: vec![up.abort_handle(), down.abort_handle()],
                    server_closed,
                    reset,
                });
            }
        });
        Proxy { addr, flow, conns, accepted }
    }

    pub fn set(&self, f: impl FnOnce(&mut Flow)) {
        self.flow.send_modify(f);
    }

    pub fn blackhole(&self, on: bool) {
        self.set(|f| {
            f.up = !on;
            f.down = !on;
        });
    }

    /// Tears down every current connection with an RST.
    pub fn reset_all(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().expect("conns"));
        for c in conns {
            c.reset.notify_waiters();
            for t in c.tasks {
                t.abort();
            }
        }
    }

    /// Freezes one connection (in accept order) both ways; others flow.
    pub fn freeze(&self, i: usize, on: bool) {
        if let Some(c) = self.conns.lock().expect("conns").get(i) {
            c.frozen.send_replace(on);
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// True once the server closed connection `i` (in accept order).
    pub fn server_closed(&self, i: usize) -> Option<bool> {
        self.conns.lock().expect("conns").get(i).map(|c| c.server_closed.load(Ordering::SeqCst))
    }
}

#[derive(Clone)]
struct Gate {
    flow: watch::Receiver<Flow>,
    frozen: watch::Receiver<bool>,
}

impl Gate {
    /// Waits until `dir` may move; false if the proxy is gone.
    async fn open(&mut self, up: bool) -> bool {
        loop {
            let f = *self.flow.borrow_and_update();
            let open = if up { f.up } else { f.down };
            if open && !*self.frozen.borrow_and_update() {
                return true;
            }
            tokio::select! {
                r = self.flow.changed() => if r.is_err() { return false },
                r = self.frozen.changed() => if r.is_err() { return false },
            }
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: Gate,
    up: bool,
    closed: Option<Arc<AtomicBool>>,
    reset: Arc<tokio::sync::Notify>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Wait until this direction may move, then read and forward a chunk.
        if !gate.open(up).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => r.unwrap_or(0),
            () = reset.notified() => return,
        };
        if n == 0 {
            if let Some(c) = &closed {
                c.store(true, Ordering::SeqCst);
            }
            let _ = to.shutdown().await;
            return;
        }
        let delay = gate.flow.borrow().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !gate.open(up).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            // The client side is gone; keep reading the server side so
            // its close is still observed.
            while let Ok(n) = from.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            if let Some(c) = &closed {
                c.store(true, Ordering::SeqCst);
            }
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.reset_all();
    }
}

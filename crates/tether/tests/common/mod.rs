//! What the tests of the `tether` binary share: a temporary directory, and
//! `tether serve` started as a process on a config, read up to its banner.
#![allow(dead_code)] // each test file uses its part

use std::io::{BufRead as _, BufReader, Lines};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use tether_proto::{ClientConfig, ClientEvent};
use tether_runtime::client::{Client, ClientOptions, Event};
use tokio::sync::mpsc;

/// How long a test waits for what it expects.
const WAIT: Duration = Duration::from_secs(15);

/// A fresh directory under the system's temporary one, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("tether-test-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `tether serve` process, killed on drop.
pub struct Gateway {
    pub child: Child,
    /// The rest of stdout, after the banner.
    pub stdout: Lines<BufReader<ChildStdout>>,
    pub banner: Vec<String>,
    pub tcp: SocketAddr,
    pub admin: SocketAddr,
    pub _dir: TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tether serve` on `config` (written into `dir`, which the gateway
/// keeps), with its state directory at `state`, and returns once the banner
/// is printed (it must name a `tcp://` listener and the admin API).
pub fn launch(config: &str, stderr: Stdio, dir: TempDir, state: &Path) -> Gateway {
    let cfg = dir.0.join("gw.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("STATE_DIRECTORY", state)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start tether serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut tcp, mut admin, mut banner) = (None, None, Vec::new());
    for line in stdout.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.trim().strip_prefix("sessions on tcp://") {
            tcp = a.parse().ok();
        }
        if let Some(a) = line.trim().strip_prefix("admin API on http://") {
            admin = a.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        let last = line.contains("Ctrl-C");
        banner.push(line);
        if last {
            break;
        }
    }
    let (tcp, admin) = (tcp.expect("tcp listener"), admin.expect("admin listener"));
    Gateway { child, stdout, banner, tcp, admin, _dir: dir }
}

/// A runtime client whose session events are collected on a channel.
pub struct Peer {
    pub handle: tether_runtime::ClientHandle,
    pub events: mpsc::UnboundedReceiver<ClientEvent>,
}

/// A client of `core`'s profile on `tcp://addr` (no network watching).
pub fn connect(addr: SocketAddr, core: ClientConfig) -> Peer {
    let mut opts = ClientOptions::new(core);
    opts.watch_network = false;
    let mut client = Client::start(format!("tcp://{addr}").parse().unwrap(), opts).unwrap();
    let handle = client.handle();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = client.next_event().await {
            if let Event::Session(e) = e {
                if tx.send(e).is_err() {
                    return;
                }
            }
        }
    });
    Peer { handle, events }
}

impl Peer {
    /// The next event `f` accepts (others are skipped).
    pub async fn next(&mut self, what: &str, f: impl Fn(&ClientEvent) -> bool) -> ClientEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if f(&e) => return e,
                Ok(Some(_)) => {}
                Ok(None) => panic!("client stopped while waiting for {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }
}

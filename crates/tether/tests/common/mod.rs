//! What the tests of the `tether` binary share: a temporary directory, and
//! `tether serve` started as a process on a config, read up to its banner.
#![allow(dead_code)] // each test file uses its part

use std::io::{BufRead as _, BufReader, Lines};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

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

// The runtime test client of the gateway's tests.
#[path = "../../../tether-gateway/tests/common/peer.rs"]
mod peer;
#[allow(unused_imports)] // not every test file connects a client
pub use peer::connect_core as connect;

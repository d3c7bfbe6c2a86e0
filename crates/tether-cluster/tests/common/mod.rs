//! A real Redis for the tests: Debian's `redis-server`, started by the test
//! on a free loopback port in a temporary directory and killed when
//! dropped — or the one `TETHER_REDIS_URL` names (scripts/test.sh starts
//! one). Each test uses its own key prefix, so tests can share a server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tether_cluster::{RedisOptions, RedisStore};

pub struct Redis {
    pub url: String,
    child: Option<Child>,
    dir: Option<std::path::PathBuf>,
    port: u16,
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
            return Redis { url, child: None, dir: None, port: 0 };
        }
        Redis::private()
    }

    /// A server of this test's own (it can be stopped and restarted).
    pub fn private() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("tether-redis-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis { url: format!("redis://127.0.0.1:{port}"), child: None, dir: Some(dir), port };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let dir = self.dir.as_ref().expect("a private server");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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

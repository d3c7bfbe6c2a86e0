//! The `tether` binary as a user meets it: how user errors are reported
//! (one line, no backtrace).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("tether-cli-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

/// A user error (a bad config) is one line on stderr and exit status 1,
/// even with RUST_BACKTRACE=1 — no stack trace.
#[test]
fn user_errors_are_one_line_without_a_backtrace() {
    let dir = TempDir::new("bt");
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[session]\ngrace = \"1ms\"\n").unwrap();
    let out = tether().args(["config", "check"]).arg(&bad).env("RUST_BACKTRACE", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: session.grace"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
}

//! The fault lab suite, run for real: network namespaces, nftables drops,
//! a pulled cable, NAT timeouts, roaming, a killed server (Linux, root;
//! `scripts/test.sh` installs iproute2 and nftables and runs this apart from
//! the other tests so their CPU load does not skew its timings).
//!
//! The lab is the `tether-lab` crate; this test stays with the binary
//! because it runs `tether lab suite` end to end, and the lab's nodes are
//! this binary again (`tether lab-node`). Run it with
//! `cargo test -p tether --test lab`.
//!
//! The binary checks its own claims; this test reads the JSON reports and
//! asserts the figures again independently, then checks that
//! nothing the run created is left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn report(dir: &Path, name: &str) -> Value {
    let p = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("no report {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn int(v: &Value, path: &[&str]) -> u64 {
    num(v, path).unwrap_or(f64::NAN) as u64
}

#[test]
fn lab_suite_proves_every_claim() {
    if std::env::var("TETHER_LAB").as_deref() == Ok("skip") {
        eprintln!("lab suite skipped: TETHER_LAB=skip");
        return;
    }
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the lab needs root (network namespaces): run ./scripts/test.sh as root, or set TETHER_LAB=skip to skip it"
    );
    let dir = std::env::temp_dir().join(format!("tether-lab-test-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["lab", "suite", "--assert-clean", "--out"])
        .arg(&dir)
        .spawn()
        .expect("start tether lab");
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success(), "tether lab suite failed (its output above says which claim)");

    // Survived, with nothing lost or duplicated either way.
    for name in [
        "cable-pull",
        "blackhole",
        "realtime-cable",
        "realtime-blackhole",
        "loss",
        "one-way-loss",
        "nat-idle",
        "nat-adaptive",
        "roam",
        "heartbeat",
        "node-death",
    ] {
        let r = report(&dir, name);
        assert_eq!(r["survived"], Value::Bool(true), "{name}: session did not survive");
        for d in ["up", "down"] {
            assert!(int(&r, &[d, "sent"]) > 100, "{name} {d}: the stream did not run");
            assert_eq!(int(&r, &[d, "lost"]), 0, "{name} {d}: messages lost");
            assert_eq!(int(&r, &[d, "duplicated"]), 0, "{name} {d}: messages duplicated");
        }
    }
    // Back within 1 s of the link returning with a local signal, 5 s without.
    for (name, bound) in [("cable-pull", 1.0), ("realtime-cable", 1.0), ("blackhole", 5.0), ("realtime-blackhole", 5.0)]
    {
        let r = report(&dir, name);
        let back = num(&r, &["back_after_restore_s"]).unwrap_or(f64::INFINITY);
        assert!(back <= bound, "{name}: back after {back} s, bound {bound} s");
    }
    // The netlink watcher: plugging the cable back is seen at once, and the
    // resume follows it (not a backoff timer that happened to be short).
    let r = report(&dir, "cable-pull");
    let end = num(&r, &["fault", "end_s"]).unwrap();
    let marks = r["marks"].as_array().unwrap();
    let at = |kind: &str| {
        marks
            .iter()
            .filter(|m| m["kind"] == kind && m["lane"] == "client")
            .filter_map(|m| m["t_s"].as_f64())
            .find(|t| *t >= end)
    };
    let changed = at("network_changed").expect("no network change seen after the cable came back");
    let resumed = at("resumed").expect("no resume after the cable came back");
    assert!(changed - end < 0.5, "network change seen {} s after the link came back", changed - end);
    assert!(changed <= resumed, "resumed before the network change was seen");
    // Detection within the profile's bound on both ends (+1.5 s slack).
    for (name, client_bound, server_bound) in
        [("blackhole", 35.0 + 1.5, 40.0 + 1.5), ("realtime-blackhole", 7.5 + 1.5, 9.0 + 1.5)]
    {
        let r = report(&dir, name);
        let c = num(&r, &["detect_client_s"]).unwrap_or(f64::INFINITY);
        let s = num(&r, &["detect_server_s"]).unwrap_or(f64::INFINITY);
        assert!(c <= client_bound, "{name}: client detected after {c} s");
        assert!(s <= server_bound, "{name}: server detected after {s} s");
    }
    // 70 s cable pull with 60 s grace: explicit expiry, a fresh session,
    // nothing delivered twice, nothing lost without being handed back.
    let r = report(&dir, "cable-pull-expire");
    assert_eq!(r["survived"], Value::Bool(false));
    assert_eq!(r["sessions"].as_array().map(Vec::len), Some(2));
    for d in ["up", "down"] {
        assert_eq!(int(&r, &[d, "duplicated"]), 0, "expire {d}: duplicated");
        assert_eq!(int(&r, &[d, "lost"]), 0, "expire {d}: lost silently");
    }
    // NAT eviction: survived with heartbeats, the flow dead without.
    let r = report(&dir, "nat-idle");
    assert_eq!(r["detect_client_s"], Value::Null, "nat-idle: heartbeats should keep the NAT entry alive");
    let r = report(&dir, "nat-idle-no-heartbeat");
    assert!(int(&r, &["up", "lost"]) + int(&r, &["down", "lost"]) > 0, "nat-idle-no-heartbeat: flow was not dead");
    // The adaptive heartbeat learns the NAT's 10 s: its last interval (the
    // client reports every change) ends in [9 s, 10 s).
    let r = report(&dir, "nat-adaptive");
    let end = num(&r, &["fault", "end_s"]).unwrap();
    let last = r["marks"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|m| m["t_s"].as_f64().is_some_and(|t| t < end))
        .find_map(|m| m["label"].as_str()?.strip_prefix("interval ")?.strip_suffix(" s")?.parse::<f64>().ok())
        .expect("nat-adaptive: the interval never changed");
    assert!((9.0..10.0).contains(&last), "nat-adaptive: settled at {last} s, NAT timeout 10 s, precision 1 s");
    // Server restart: a fresh session, nothing duplicated.
    let r = report(&dir, "server-restart");
    assert_eq!(r["sessions"].as_array().map(Vec::len), Some(2));
    assert_eq!(int(&r, &["up", "duplicated"]) + int(&r, &["down", "duplicated"]), 0);
    // Keepalive beside heartbeat: tether's heartbeat notices the blackhole,
    // the OS keepalive alone does not (data in flight) within the outage.
    let hb = num(&report(&dir, "heartbeat"), &["detect_client_s"]).unwrap_or(f64::INFINITY);
    let ka = num(&report(&dir, "keepalive-only"), &["detect_client_s"]).unwrap_or(f64::INFINITY);
    assert!(hb < ka, "heartbeat detection {hb} s is not faster than keepalive-only {ka} s");
    // Timelines were drawn.
    let svg = std::fs::read_to_string(dir.join("cable-pull.svg")).unwrap();
    assert!(svg.trim_start().starts_with("<svg") && svg.contains("session"));

    // Nothing left behind: namespaces carry the lab process's pid.
    let prefix = format!("tl{pid:x}x");
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    assert!(!ns.lines().any(|l| l.starts_with(&prefix)), "namespaces left: {ns}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! The lab's network: three namespaces joined by veth links, built with
//! `ip` and `nft`, and torn down by [`Lab`]'s `Drop` whatever happens.
//!
//! ```text
//!  <p>-c (client)            <p>-r (router, NAT)              <p>-s (server)
//!  eth0 10.1.0.2/24 ──veth── c0 10.1.0.1   s0 10.2.0.1 ──veth── eth0 10.2.0.2/24
//!  default via 10.1.0.1      masquerade out of s0; conntrack timeouts and
//!                            the fault rules live in nft table `ip lab`;
//!                            the NAT timeout is the router's conntrack sysctl
//! ```
//!
//! The server sees every client as 10.2.0.1 (the NAT), as a real server
//! behind the Internet would. Faults are nft rules in the router's `fault`
//! chain (drop all, drop a share at random with `numgen`, one way only) or
//! link state on the client (`ip link set eth0 down`, a signal the client
//! sees). The router runs with `nf_conntrack_tcp_loose = 0` and drops
//! `ct state invalid`, so a flow whose NAT entry expired stays dead, as it
//! does behind a real NAT, instead of being silently re-learned.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

pub(crate) const CLIENT_ADDR: &str = "10.1.0.2";
pub(crate) const ROAM_ADDR: &str = "10.1.0.3";
pub(crate) const CLIENT_GW: &str = "10.1.0.1";
pub(crate) const SERVER_ADDR: &str = "10.2.0.2";
pub(crate) const SERVER_PORT: u16 = 7400;

/// Runs a command, failing with its stderr.
pub(crate) fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().with_context(|| {
        format!("cannot run {:?}: is it installed? (Debian: apt-get install iproute2 nftables procps)", args[0])
    })?;
    if !out.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Feeds an nft script to `nft -f -` inside a namespace.
fn nft(ns: &str, script: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft: install nftables (Debian: apt-get install nftables)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft in {ns} refused the rules: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A unique prefix for one run's names: short enough for interface names,
/// distinct across parallel runs and processes.
pub(crate) fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("tl{:x}x{n}", std::process::id())
}

/// Names of everything a lab created; deleting the namespaces deletes the
/// veth links and nft tables inside them, and their processes are killed
/// first.
pub(crate) struct Lab {
    pub(crate) prefix: String,
    pub(crate) client_ns: String,
    pub(crate) router_ns: String,
    pub(crate) server_ns: String,
    made: Vec<String>,
}

/// Router settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouterOpts {
    /// Conntrack (NAT) timeout for established TCP flows; None: kernel default (5 days).
    pub(crate) nat_timeout: Option<Duration>,
}

impl Lab {
    /// Builds the three namespaces and links. Fails with a clear message
    /// when not root or the tools are missing; whatever was made is removed.
    pub(crate) fn create(router: RouterOpts) -> Result<Lab> {
        check_root()?;
        let prefix = unique_prefix();
        let mut lab = Lab {
            client_ns: format!("{prefix}-c"),
            router_ns: format!("{prefix}-r"),
            server_ns: format!("{prefix}-s"),
            prefix,
            made: Vec::new(),
        };
        lab.build(router)?; // on error, Drop removes what exists
        Ok(lab)
    }

    fn build(&mut self, router: RouterOpts) -> Result<()> {
        let (c, r, s) = (self.client_ns.clone(), self.router_ns.clone(), self.server_ns.clone());
        for ns in [&c, &r, &s] {
            sh(&["ip", "netns", "add", ns])?;
            self.made.push(ns.clone());
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        sh(&["ip", "-n", &r, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", &c])?;
        sh(&["ip", "-n", &r, "link", "add", "s0", "type", "veth", "peer", "name", "eth0", "netns", &s])?;
        sh(&["ip", "-n", &r, "addr", "add", "10.1.0.1/24", "dev", "c0"])?;
        sh(&["ip", "-n", &r, "addr", "add", "10.2.0.1/24", "dev", "s0"])?;
        sh(&["ip", "-n", &c, "addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"])?;
        sh(&["ip", "-n", &s, "addr", "add", &format!("{SERVER_ADDR}/24"), "dev", "eth0"])?;
        for (ns, dev) in [(&r, "c0"), (&r, "s0"), (&c, "eth0"), (&s, "eth0")] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        sh(&["ip", "-n", &c, "route", "add", "default", "via", CLIENT_GW])?;
        sh(&["ip", "netns", "exec", &r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // Conntrack's sysctls appear once the module is in use in the namespace.
        nft(&r, ROUTER_RULES)?;
        sh(&["ip", "netns", "exec", &r, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"])?;
        if let Some(t) = router.nat_timeout {
            // Per namespace. (An nft `ct timeout` policy was accepted by this
            // kernel but not applied to the flows; the sysctl is.)
            let v = format!("net.netfilter.nf_conntrack_tcp_timeout_established={}", t.as_secs().max(1));
            sh(&["ip", "netns", "exec", &r, "sysctl", "-qw", &v])?;
        }
        Ok(())
    }

    /// Replaces the router's fault rules (an nft rule list, one per line);
    /// an empty list restores the network.
    pub(crate) fn set_fault(&self, rules: &[String]) -> Result<()> {
        let mut script = String::from("flush chain ip lab fault\n");
        for rule in rules {
            script.push_str(&format!("add rule ip lab fault {rule}\n"));
        }
        nft(&self.router_ns, &script)
    }

    /// Pulls (false) or plugs back (true) the client's cable. Plugging it
    /// back also restores the default route, as DHCP would.
    pub(crate) fn client_link(&self, up: bool) -> Result<()> {
        sh(&["ip", "-n", &self.client_ns, "link", "set", "eth0", if up { "up" } else { "down" }])?;
        if up {
            sh(&["ip", "-n", &self.client_ns, "route", "replace", "default", "via", CLIENT_GW])?;
        }
        Ok(())
    }

    /// Moves the client to a new address (roaming).
    pub(crate) fn client_roam(&self) -> Result<()> {
        let c = &self.client_ns;
        // As a DHCP client moving networks does: the old address goes
        // (taking its routes with it), the new one comes, the route returns.
        sh(&["ip", "-n", c, "addr", "del", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"])?;
        sh(&["ip", "-n", c, "addr", "add", &format!("{ROAM_ADDR}/24"), "dev", "eth0"])?;
        sh(&["ip", "-n", c, "route", "replace", "default", "via", CLIENT_GW])?;
        Ok(())
    }

    /// The command prefix that runs a program inside a namespace.
    pub(crate) fn exec_in(ns: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), ns.into()]
    }
}

/// The router's nftables: a `fault` chain the scenarios fill, invalid
/// (forgotten) flows dropped, masquerade towards the server.
const ROUTER_RULES: &str = "table ip lab {
  chain fault {
  }
  chain filter_forward {
    type filter hook forward priority 0;
    jump fault
    ct state invalid drop
  }
  chain nat_post {
    type nat hook postrouting priority 100;
    oifname \"s0\" masquerade
  }
}
";

fn check_root() -> Result<()> {
    let uid = sh(&["id", "-u"])?;
    if uid.trim() != "0" {
        bail!("the lab creates network namespaces and needs root: run it with sudo (or as root in a container with CAP_NET_ADMIN)");
    }
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // Processes first: a namespace with live processes lingers.
            if let Ok(pids) = sh(&["ip", "netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    let _ = sh(&["kill", "-9", pid]);
                }
            }
            if let Err(e) = sh(&["ip", "netns", "del", ns]) {
                eprintln!("tether lab: could not delete namespace {ns}: {e}; remove it with `ip netns del {ns}`");
            }
        }
    }
}

/// Whatever with this prefix is still there: namespaces, root-namespace
/// links, processes whose command line carries it. Empty after a clean run.
pub(crate) fn leftovers(prefix: &str) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for line in sh(&["ip", "netns", "list"])?.lines() {
        if line.starts_with(prefix) {
            left.push(format!("namespace {line}"));
        }
    }
    for line in sh(&["ip", "-o", "link", "show"])?.lines() {
        if line.contains(prefix) {
            left.push(format!("link {line}"));
        }
    }
    let tag = format!("--tag\0{prefix}");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains(&tag) {
            left.push(format!(
                "process {} ({})",
                entry.file_name().to_string_lossy(),
                cmdline.replace('\0', " ").trim()
            ));
        }
    }
    Ok(left)
}

//! `tether lab`: the fault lab. Client and server run in their own network
//! namespaces with a NAT router between them; the lab breaks the network
//! for real (link down, nftables drops, NAT timeouts, address changes, a
//! killed server) and measures what a user would feel. Linux, root.
//!
//! The lab starts its nodes by running the current executable again as
//! `<exe> lab-node …`: a binary embedding [`LabCmd`] must also dispatch a
//! hidden `lab-node` subcommand ([`node::Node`]) to [`node::run`], as
//! `tether` does.
//!
//! - `net.rs`: the namespaces, links and nftables rules, always torn down;
//! - `node.rs`: the server and client processes run inside them;
//! - `scenario.rs`: one run, from network set-up to message accounting;
//! - `report.rs`, `svg.rs`: the table, the JSON and the timeline picture.

mod net;
pub mod node;
mod report;
mod scenario;
mod svg;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use report::Report;
use scenario::{Expect, Fault, Scenario, INTERRUPTED};
use tether_args::{duration, ProfileArg};

#[derive(clap::Subcommand)]
pub enum LabCmd {
    /// List the scenarios and what each shows.
    List,
    /// Run one scenario (its parameters can be changed).
    Run(RunArgs),
    /// Run a set of scenarios in parallel and check every claim.
    Suite(SuiteArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario name (see `tether lab list`).
    scenario: String,
    /// How long the network stays broken.
    #[arg(long, value_parser = duration)]
    outage: Option<Duration>,
    /// Heartbeat profile of the client.
    #[arg(long, value_enum)]
    profile: Option<ProfileArg>,
    /// How long the server keeps a session without contact.
    #[arg(long, value_parser = duration)]
    grace: Option<Duration>,
    /// Packet loss in percent (loss scenarios).
    #[arg(long)]
    loss: Option<u8>,
    /// The router's NAT timeout for idle flows (nat scenarios).
    #[arg(long, value_parser = duration)]
    nat_timeout: Option<Duration>,
    /// Where to write the JSON report and the SVG timeline.
    #[arg(long, default_value = "lab-reports")]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// Which scenarios: `all` (about 90 s, in parallel) or a comma-separated list of names.
    #[arg(long, default_value = "all")]
    only: String,
    /// Where to write the reports (one JSON and SVG per scenario, and summary.md).
    #[arg(long, default_value = "lab-reports")]
    out: PathBuf,
    /// After the suite, fail if any namespace, link or process it made is left.
    #[arg(long)]
    assert_clean: bool,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Every scenario with its default parameters.
fn catalogue() -> Vec<Scenario> {
    let base = |name: &str, title: &str, fault: Fault, profile: ProfileArg, outage: u64, expect: Expect| Scenario {
        name: name.into(),
        title: title.into(),
        fault,
        profile,
        grace: secs(60),
        outage: secs(outage),
        before: secs(5),
        nat_timeout: None,
        no_heartbeat: false,
        keepalive: None,
        adaptive: None,
        probe_timeout: None,
        every: Duration::from_millis(50),
        expect,
    };
    use ProfileArg::{Default as D, Realtime as R};
    let survive = |back: u64| Expect::Survive { back_within: secs(back), detect: true };
    vec![
        base("cable-pull", "client cable pulled for 50 s (default profile)", Fault::CablePull, D, 50, survive(1)),
        base("cable-pull-expire", "client cable pulled for 70 s, 60 s grace", Fault::CablePull, D, 70, Expect::Expire),
        base("blackhole", "upstream blackhole for 50 s (default profile)", Fault::Blackhole, D, 50, survive(1)),
        base("realtime-cable", "client cable pulled for 20 s (realtime profile)", Fault::CablePull, R, 20, survive(1)),
        base(
            "realtime-blackhole",
            "upstream blackhole for 20 s (realtime profile)",
            Fault::Blackhole,
            R,
            20,
            survive(1),
        ),
        base(
            "loss",
            "30 % random loss both ways for 20 s (realtime profile)",
            Fault::Loss(30),
            R,
            20,
            Expect::Survive { back_within: secs(5), detect: false },
        ),
        base(
            "one-way-loss",
            "50 % loss client → server only for 20 s (realtime profile)",
            Fault::OneWayLoss(50),
            R,
            20,
            Expect::Survive { back_within: secs(5), detect: false },
        ),
        Scenario {
            nat_timeout: Some(secs(10)),
            ..base(
                "nat-idle",
                "25 s idle behind a NAT that forgets after 10 s, heartbeat on (realtime)",
                Fault::NatIdle,
                R,
                25,
                Expect::Untouched,
            )
        },
        Scenario {
            nat_timeout: Some(secs(10)),
            no_heartbeat: true,
            ..base(
                "nat-idle-no-heartbeat",
                "25 s idle behind a NAT that forgets after 10 s, heartbeat off",
                Fault::NatIdle,
                R,
                25,
                Expect::StuckWithoutHeartbeat,
            )
        },
        Scenario {
            nat_timeout: Some(secs(10)),
            adaptive: Some("2,30,3,1,1".into()),
            probe_timeout: Some(secs(1)),
            ..base(
                "nat-adaptive",
                "80 s idle behind a NAT that forgets after 10 s, adaptive heartbeat (2 s + 3 s steps, 1 s precision)",
                Fault::NatIdle,
                ProfileArg::Adaptive,
                80,
                Expect::Settle { precision: secs(1) },
            )
        },
        base("roam", "client address changes mid-session (default profile)", Fault::Roam, D, 0, survive(8)),
        base("server-restart", "server killed, restarted 3 s later", Fault::ServerRestart, D, 3, Expect::FreshStart),
        base(
            "node-death",
            "cluster node (sessions in Redis) killed with kill -9, another node 3 s later",
            Fault::NodeDeath,
            D,
            3,
            survive(5),
        ),
        Scenario {
            no_heartbeat: true,
            keepalive: Some("10,5,3".into()),
            ..base(
                "keepalive-only",
                "upstream blackhole for 45 s, heartbeat off, OS keepalive 10 s/5 s×3 only",
                Fault::Blackhole,
                D,
                45,
                Expect::Measure,
            )
        },
        base(
            "heartbeat",
            "upstream blackhole for 45 s, tether heartbeat (default profile)",
            Fault::Blackhole,
            D,
            45,
            survive(1),
        ),
    ]
}

fn find(name: &str) -> Result<Scenario> {
    catalogue().into_iter().find(|s| s.name == name).with_context(|| {
        let names: Vec<String> = catalogue().into_iter().map(|s| s.name).collect();
        format!("no scenario {name:?}; choose one of: {}", names.join(", "))
    })
}

fn on_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        eprintln!("tether lab: interrupted; tearing down the namespaces");
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
}

/// Runs a `tether lab` command.
pub fn run(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::List => {
            for s in catalogue() {
                println!("{:<24} {}", s.name, s.title);
            }
            Ok(())
        }
        LabCmd::Run(a) => {
            on_ctrl_c();
            let mut s = find(&a.scenario)?;
            if let Some(o) = a.outage {
                s.outage = o;
                s.title = format!("{} (outage {})", s.name, humantime::format_duration(o));
            }
            if let Some(p) = a.profile {
                s.profile = p;
            }
            if let Some(g) = a.grace {
                s.grace = g;
            }
            if let Some(l) = a.loss {
                if l > 100 {
                    bail!("--loss {l}: a share of packets in percent, 0 to 100");
                }
                s.fault = match s.fault {
                    Fault::OneWayLoss(_) => Fault::OneWayLoss(l),
                    _ => Fault::Loss(l),
                };
            }
            if a.nat_timeout.is_some() {
                s.nat_timeout = a.nat_timeout;
            }
            let reports = run_all(vec![s], &a.out)?;
            finish(&reports)
        }
        LabCmd::Suite(a) => {
            on_ctrl_c();
            let chosen = if a.only == "all" {
                catalogue()
            } else {
                a.only.split(',').map(|n| find(n.trim())).collect::<Result<Vec<_>>>()?
            };
            let reports = run_all(chosen, &a.out)?;
            let mut result = finish(&reports);
            if a.assert_clean {
                let left = net::leftovers(&format!("tl{:x}x", std::process::id()))?;
                if !left.is_empty() {
                    result = Err(anyhow::anyhow!("the lab left behind:\n  {}", left.join("\n  ")));
                } else {
                    println!("clean: no namespace, link or process of this run is left");
                }
            }
            result
        }
    }
}

/// Runs scenarios in parallel (each in its own namespaces), printing
/// progress, and writes every report.
fn run_all(scenarios: Vec<Scenario>, out: &Path) -> Result<Vec<Report>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let start = Instant::now();
    let longest = scenarios.iter().map(|s| s.outage).max().unwrap_or_default();
    println!(
        "tether lab: {} scenario(s) in parallel, about {} s; reports go to {}",
        scenarios.len(),
        longest.as_secs() + 25,
        out.display()
    );
    let handles: Vec<_> = scenarios
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let r = scenario::run(&s);
                (s, r)
            })
        })
        .collect();
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        let Ok((s, r)) = h.join() else {
            errors.push("a scenario thread panicked".to_owned());
            continue;
        };
        match r {
            Ok(r) => {
                println!(
                    "[{:>6.1}s] {:<24} {}",
                    start.elapsed().as_secs_f64(),
                    s.name,
                    if r.passed() { "ok" } else { "FAILED" }
                );
                write(out, &r)?;
                reports.push(r);
            }
            Err(e) => errors.push(format!("{}: {e:#}", s.name)),
        }
    }
    if !errors.is_empty() {
        bail!("{} scenario(s) could not run:\n  {}", errors.len(), errors.join("\n  "));
    }
    std::fs::write(out.join("summary.md"), report::table(&reports))?;
    Ok(reports)
}

fn write(out: &Path, r: &Report) -> Result<()> {
    std::fs::write(out.join(format!("{}.json", r.scenario)), serde_json::to_string_pretty(r)?)?;
    std::fs::write(out.join(format!("{}.svg", r.scenario)), svg::render(r))?;
    Ok(())
}

fn finish(reports: &[Report]) -> Result<()> {
    println!();
    print!("{}", report::table(reports));
    println!();
    for r in reports {
        print!("{}", report::detail(r));
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.passed()).map(|r| r.scenario.as_str()).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("claims failed in: {}", failed.join(", "))
    }
}

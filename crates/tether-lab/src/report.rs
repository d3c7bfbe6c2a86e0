//! What a lab scenario measured: the figures a user would feel, the claims
//! checked against them, and the timeline behind both. Printed as a table,
//! written as JSON, drawn as SVG (`svg.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name, e.g. `cable-pull`.
    pub scenario: String,
    /// What was done, in words, e.g. "client cable pulled for 50 s".
    pub title: String,
    /// Parameters that shape the run (profile, outage, grace, loss...).
    pub params: BTreeMap<String, String>,
    /// Length of the run, seconds from the start of the stream.
    pub duration_s: f64,
    /// When the network was broken and restored, if it was.
    pub fault: Option<Span>,
    /// Time from the fault's start to each end noticing (None: never did).
    pub detect_client_s: Option<f64>,
    /// As above, for the server.
    pub detect_server_s: Option<f64>,
    /// Time from the network's restoration to the session carrying data
    /// again (resumed, or a fresh session when it had expired).
    pub back_after_restore_s: Option<f64>,
    /// Sessions the client held, in order (one means it survived).
    pub sessions: Vec<String>,
    /// The client's session at the end is the one it started with.
    pub survived: bool,
    /// Client → server messages.
    pub up: DirStats,
    /// Server → client messages.
    pub down: DirStats,
    /// Everything seen, in time order.
    pub marks: Vec<Mark>,
    /// Claims checked against the figures.
    pub checks: Vec<Check>,
}

/// An interval of the run, seconds from its start.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
}

/// Message accounting for one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStats {
    /// Messages the sender's `send` accepted.
    pub sent: u64,
    /// Distinct accepted messages the receiver got.
    pub delivered: u64,
    /// Accepted, never delivered and never handed back: silently lost.
    pub lost: u64,
    /// Deliveries of a message already delivered.
    pub duplicated: u64,
    /// Deliveries of a message older than one already delivered.
    pub reordered: u64,
    /// Handed back to the sender's application when its session ended
    /// (told, not lost; some may have arrived anyway).
    pub handed_back: u64,
    /// Refused by `send` (replay buffer full): the sender was told at once.
    pub refused: u64,
}

/// Where a mark is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Network,
    Client,
    Server,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    /// The lab broke the network.
    FaultStart,
    /// The lab restored the network.
    FaultEnd,
    /// A heartbeat round trip completed (label: the RTT).
    Ping,
    /// The end noticed its transport was dead (client: Disconnected;
    /// server: Detached).
    Detect,
    /// A connection attempt started.
    Attempt,
    /// A connection attempt failed.
    AttemptFailed,
    /// A fresh session was opened.
    Connected,
    /// The session resumed on a new transport.
    Resumed,
    /// The session ended (grace ran out, or the server forgot it).
    Expired,
    /// The client's network watcher saw a link, address or route change.
    NetworkChanged,
    /// Anything else worth seeing.
    Note,
}

/// One point on the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark {
    /// Seconds from the start of the run.
    pub t_s: f64,
    pub lane: Lane,
    pub kind: MarkKind,
    /// Short text: a reason, an RTT, a session id prefix.
    pub label: String,
}

/// A claim and whether the run bore it out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub claim: String,
    pub ok: bool,
    /// The figure it was judged on.
    pub detail: String,
}

impl Report {
    /// True when every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |s| format!("{s:.2} s"))
}

fn dir(d: &DirStats) -> String {
    format!(
        "{} sent, {} delivered, {} lost, {} dup, {} reordered, {} handed back, {} refused",
        d.sent, d.delivered, d.lost, d.duplicated, d.reordered, d.handed_back, d.refused
    )
}

/// The summary table of several scenarios (Markdown, readable in a terminal).
pub fn table(reports: &[Report]) -> String {
    let mut s = String::new();
    s.push_str("| scenario | detect client | detect server | back after restore | survived | up (c→s) lost/dup | down (s→c) lost/dup | checks |\n");
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in reports {
        let failed = r.checks.iter().filter(|c| !c.ok).count();
        let verdict = if failed == 0 { format!("{} ok", r.checks.len()) } else { format!("**{failed} FAILED**") };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {}/{} of {} | {}/{} of {} | {} |",
            r.title,
            secs(r.detect_client_s),
            secs(r.detect_server_s),
            secs(r.back_after_restore_s),
            if r.survived { "yes" } else { "no (fresh session)" },
            r.up.lost,
            r.up.duplicated,
            r.up.sent,
            r.down.lost,
            r.down.duplicated,
            r.down.sent,
            verdict
        );
    }
    s
}

/// One scenario in full: figures, both directions, and every check.
pub fn detail(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} — {}", r.scenario, r.title);
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(s, "  params: {}", params.join(" "));
    if let Some(f) = r.fault {
        let _ = writeln!(s, "  fault: {:.2} s → {:.2} s ({:.1} s)", f.start_s, f.end_s, f.end_s - f.start_s);
    }
    let _ = writeln!(
        s,
        "  detection: client {}, server {}; back {} after restore",
        secs(r.detect_client_s),
        secs(r.detect_server_s),
        secs(r.back_after_restore_s)
    );
    let _ = writeln!(s, "  sessions: {} (survived: {})", r.sessions.join(" → "), r.survived);
    let _ = writeln!(s, "  up   (client → server): {}", dir(&r.up));
    let _ = writeln!(s, "  down (server → client): {}", dir(&r.down));
    for c in &r.checks {
        let _ = writeln!(s, "  [{}] {} — {}", if c.ok { " ok " } else { "FAIL" }, c.claim, c.detail);
    }
    s
}

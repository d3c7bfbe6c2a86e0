//! `tether connect URL`: an interactive client. It shows link state, RTT
//! and resumes as they happen; every stdin line is sent as a message and
//! every incoming message is printed.
//!
//! How it ends:
//! - end of input closes the session and exits (status 0), as does a
//!   closed stdout (`tether connect … | head -1`);
//! - a session ended for good by the server (a kick, a refused login) exits
//!   with status 1, saying why and what to do;
//! - so does a connection failure retrying cannot fix (an untrusted
//!   certificate, a port speaking another protocol); transient failures
//!   (refused, timed out) are retried with backoff, each said once.

use std::fmt;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, Result};
use tether_proto::{ClientConfig, ClientEvent, CloseCode, RejectReason, SessionEnd, TransportLoss};
use tether_runtime::client::{Client, ClientHandle, ClientOptions, Event};
use tether_runtime::{Endpoint, Kind, SocketReport, SocketTuning};
use tokio::io::AsyncBufReadExt;

use tether_args::ProfileArg;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Server URL: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH.
    #[arg(default_value = "tcp://127.0.0.1:7400")]
    url: String,
    /// Heartbeat profile.
    #[arg(long, value_enum, default_value_t = ProfileArg::Default)]
    profile: ProfileArg,
    /// CA certificate (PEM) to trust for tls:// and wss:// (default: the system's root certificates).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Do not watch the OS for network changes.
    #[arg(long)]
    no_watch: bool,
    /// Show socket options (read back from the kernel for tcp:// and tls://; as set for ws:// and
    /// wss://), every RTT sample and heartbeat details.
    #[arg(short, long)]
    verbose: bool,
    /// Login token (a JWT for the gateway) sent when a session opens.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the login token, read again for each fresh session
    /// (so a token refreshed in the file by another program is used).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// Prints a line on [`Out`]; `?` on a write error other than a closed pipe.
macro_rules! say {
    ($out:expr, $($t:tt)*) => {
        $out.line(format_args!($($t)*))?
    };
}

pub(crate) async fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    let endpoint: Endpoint = a.url.parse()?;
    let core = ClientConfig::profile(a.profile.into());
    let hb = core.heartbeat.clone();
    let mut opts = ClientOptions::new(core);
    opts.watch_network = !a.no_watch;
    if let Some(ca) = &a.ca {
        opts.dial.tls = Some(tether_runtime::tls::client_config(ca)?);
    }
    if let Some(t) = &a.token {
        opts.core.auth = bytes::Bytes::from(t.clone());
        opts.core.validate().map_err(|e| anyhow!("--token: {e}"))?;
    }
    if let Some(path) = a.token_file.clone() {
        // Read now, so that a missing file is said at once rather than as
        // a failed connection.
        read_token(&path)?;
        opts.token = Some(std::sync::Arc::new(move || {
            let path = path.clone();
            Box::pin(async move { read_token(&path).map_err(|e| format!("{e:#}")) })
        }));
    }
    let mut out = Out::default();
    say!(
        out,
        "tether connect {endpoint}: heartbeat after {} idle, dead after {}; type a line to send it, Ctrl-D to close",
        humantime::format_duration(hb.interval),
        humantime::format_duration(hb.dead_after()),
    );
    if out.gone {
        return Ok(());
    }
    let tuning = opts.dial.tuning;
    let mut client = Client::start(endpoint.clone(), opts)?;
    let handle = client.handle();
    let mut ui = Ui { a: &a, endpoint: &endpoint, tuning, start, out, handle, streak: Streak::default() };
    let r = ui.session(&mut client).await;
    // Whatever ended it, the session is closed and the client's task has
    // finished before the process exits (the network watcher would keep
    // the event stream open for ever: events alone cannot end the loop).
    client.shutdown().await;
    r
}

/// The running client and what is shown of it.
struct Ui<'a> {
    a: &'a Args,
    endpoint: &'a Endpoint,
    /// The socket options set on every connection.
    tuning: SocketTuning,
    start: Instant,
    out: Out,
    handle: ClientHandle,
    /// Permanent connection failures in a row.
    streak: Streak,
}

impl Ui<'_> {
    /// Until the session ends for good: Ok when this side closed it (end of
    /// input, stdout closed), an error saying why and what to do otherwise.
    async fn session(&mut self, client: &mut Client) -> Result<()> {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        let mut closing = false;
        let mut last_rtt = None;
        // A dial failure was said since the attempt began: the core's
        // "attempt failed: the connection closed or failed" that follows
        // would say it a second time, without its cause.
        let mut dial_failed = false;
        loop {
            if self.out.gone && !closing {
                // Nobody reads any more (`| head -1`): end quietly.
                closing = true;
                self.handle.close();
            }
            tokio::select! {
                line = stdin.next_line(), if stdin_open => match line {
                    Ok(Some(line)) => {
                        if let Err(e) = self.handle.send(line.into_bytes()) {
                            let t = self.stamp();
                            say!(self.out, "{t} not sent: {e}");
                        }
                    }
                    Ok(None) => {
                        // End of input: let what was typed be acknowledged
                        // (up to 3 s), then end the session.
                        stdin_open = false;
                        closing = true;
                        let h = self.handle.clone();
                        tokio::spawn(async move {
                            let until = Instant::now() + std::time::Duration::from_secs(3);
                            while h.buffered().0 > 0 && Instant::now() < until {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            }
                            h.close();
                        });
                    }
                    Err(e) => return Err(anyhow!("cannot read stdin: {e}")),
                },
                e = client.next_event() => {
                    // Only after the session ended, which returned already.
                    let Some(e) = e else { return Ok(()) };
                    if let Some(end) = self.event(e, &mut dial_failed, &mut last_rtt)? {
                        return end;
                    }
                }
            }
        }
    }

    /// Shows one event; Some(outcome) when the client is done.
    fn event(
        &mut self,
        e: Event,
        dial_failed: &mut bool,
        last_rtt: &mut Option<std::time::Duration>,
    ) -> Result<Option<Result<()>>> {
        let t = self.stamp();
        let verbose = self.a.verbose;
        match e {
            Event::Dialed { addr, kind, socket } if verbose => {
                say!(self.out, "{t} dialed {kind}://{addr}");
                match socket {
                    Some(s) => say!(self.out, "{t}   socket: {s}"),
                    // The WebSocket library owns the socket once upgraded;
                    // the options were set on it before the handshake.
                    None => say!(
                        self.out,
                        "{t}   socket: {} (as set before the {kind} handshake; not read back from the kernel for {kind}://)",
                        SocketReport {
                            keepalive: self.tuning.keepalive,
                            user_timeout: self.tuning.user_timeout,
                            nodelay: self.tuning.nodelay,
                        }
                    ),
                }
            }
            Event::DialFailed { error } => {
                *dial_failed = true;
                say!(self.out, "{t} connect failed: {error}");
                let p = permanent_dial(&error, self.endpoint, self.a.ca.is_some());
                if let Some(advice) = self.streak.count(p) {
                    return Ok(Some(Err(anyhow!(advice))));
                }
            }
            Event::NetworkChanged => say!(self.out, "{t} network changed: probing the link"),
            Event::Session(e) => match e {
                ClientEvent::Connected { session } => {
                    self.streak = Streak::default();
                    *dial_failed = false;
                    say!(self.out, "{t} link up: new session {}", &session.to_string()[..8]);
                }
                ClientEvent::Resumed { session, replayed } => {
                    self.streak = Streak::default();
                    *dial_failed = false;
                    say!(
                        self.out,
                        "{t} link up: resumed session {} ({replayed} message(s) replayed, {} resume(s) so far)",
                        &session.to_string()[..8],
                        self.handle.resumes()
                    );
                }
                ClientEvent::Disconnected { reason } => say!(self.out, "{t} link down: {reason}"),
                ClientEvent::AttemptFailed { reason } => {
                    let said = std::mem::take(dial_failed);
                    if said && reason == TransportLoss::Closed {
                        return Ok(None);
                    }
                    say!(self.out, "{t} attempt failed: {reason}");
                    if !said {
                        let p = permanent_attempt(&reason, self.endpoint);
                        if let Some(advice) = self.streak.count(p) {
                            return Ok(Some(Err(anyhow!(advice))));
                        }
                    }
                }
                ClientEvent::Reconnecting { attempt, delay } => {
                    say!(
                        self.out,
                        "{t} reconnecting in {} (attempt {})",
                        humantime::format_duration(round_ms(delay)),
                        attempt + 1
                    );
                }
                ClientEvent::Message(m) => say!(self.out, "{t} < {}", String::from_utf8_lossy(&m)),
                ClientEvent::Rtt(rtt) => {
                    // The gateway shows members' RTT as their clients report it on PINGs.
                    self.handle.set_ping_payload(format!("{{\"rtt_ms\":{:.1}}}", rtt.as_secs_f64() * 1000.0));
                    // Quiet unless verbose or the RTT moved by more than half.
                    let moved = last_rtt.is_none_or(|l: std::time::Duration| rtt > l + l / 2 || rtt < l / 2);
                    if verbose || moved {
                        say!(self.out, "{t} rtt {:.1} ms", rtt.as_secs_f64() * 1000.0);
                        *last_rtt = Some(rtt);
                    }
                }
                ClientEvent::SessionEnded { session, reason, unacked, restarting } => {
                    let id = session.map(|s| s.to_string()[..8].to_owned()).unwrap_or_else(|| "-".into());
                    say!(
                        self.out,
                        "{t} session {id} ended: {reason}; {} unacknowledged message(s) not delivered",
                        unacked.len()
                    );
                    for m in &unacked {
                        say!(self.out, "{t}   unsent: {}", String::from_utf8_lossy(m));
                    }
                    if restarting {
                        say!(self.out, "{t} starting a fresh session");
                    } else if reason == SessionEnd::LocalClose {
                        return Ok(Some(Ok(())));
                    } else {
                        let token = self.a.token.is_some() || self.a.token_file.is_some();
                        return Ok(Some(Err(anyhow!(ended_for_good(&reason, token)))));
                    }
                }
                ClientEvent::HeartbeatMissed => say!(self.out, "{t} heartbeat missed (not enforced)"),
                _ => {}
            },
            _ => {}
        }
        Ok(None)
    }

    /// Seconds since the start, for log lines.
    fn stamp(&self) -> String {
        format!("[{:>8.3}s]", self.start.elapsed().as_secs_f64())
    }
}

/// Stdout, which may close under us (`tether connect … | head -1`): lines
/// then go nowhere, and the session is closed, rather than a panic.
#[derive(Default)]
struct Out {
    gone: bool,
}

impl Out {
    fn line(&mut self, args: fmt::Arguments<'_>) -> Result<()> {
        if self.gone {
            return Ok(());
        }
        match writeln!(io::stdout().lock(), "{args}") {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.gone = true;
                Ok(())
            }
            Err(e) => Err(anyhow!("cannot write to stdout: {e}")),
        }
    }
}

/// A connection failure that retrying will not fix.
struct Permanent {
    /// Which failure: the same one in a row counts.
    what: String,
    /// How many in a row stop the client: 1 when only a change by the user
    /// can help; a few when a server being deployed might answer so for a
    /// moment (a load balancer's 404 before the backend is registered).
    after: u32,
    /// What happened and what to do.
    advice: String,
}

/// The permanent failures in a row, by kind.
#[derive(Default)]
struct Streak {
    what: Option<String>,
    count: u32,
}

impl Streak {
    /// Counts a failure (None: a transient one, which ends a streak); the
    /// advice once the streak is long enough to give up.
    fn count(&mut self, p: Option<Permanent>) -> Option<String> {
        let Some(p) = p else {
            *self = Streak::default();
            return None;
        };
        if self.what.as_ref() == Some(&p.what) {
            self.count += 1;
        } else {
            *self = Streak { what: Some(p.what), count: 1 };
        }
        (self.count >= p.after).then_some(p.advice)
    }
}

/// Judges a failed dial (the runtime's error text). Unknown failures are
/// transient: retrying is the safe default.
fn permanent_dial(error: &str, ep: &Endpoint, ca: bool) -> Option<Permanent> {
    let kind = ep.kind();
    let now = |what: &str, advice: String| Some(Permanent { what: what.to_owned(), after: 1, advice });
    if error.contains("invalid peer certificate") {
        if error.contains("NotValidForName") {
            return now(
                "certificate name",
                format!(
                    "the server's certificate is not valid for {:?} ({error}): connect with a host name the certificate was issued for",
                    ep.host()
                ),
            );
        }
        if error.contains("Expired") {
            return now(
                "certificate expired",
                format!("the server's certificate has expired ({error}): the server needs a renewed one"),
            );
        }
        let fix = if ca {
            "it was not issued by the CA given with --ca: pass the CA certificate (PEM) that issued it"
        } else {
            "pass --ca FILE with the CA certificate (PEM) that issued it (a self-signed certificate is its own CA)"
        };
        return now("certificate untrusted", format!("the server's certificate is not trusted ({error}): {fix}"));
    }
    // The same URL with another scheme.
    let with = |scheme: Kind| format!("{scheme}{}", ep.to_string().trim_start_matches(kind.scheme()));
    if matches!(kind, Kind::Tls | Kind::Wss) && error.contains("corrupt message") {
        let plain = if kind == Kind::Tls { Kind::Tcp } else { Kind::Ws };
        return now(
            "not TLS",
            format!(
                "this port does not speak TLS ({error}): is it the {plain}:// listener? then connect with {}",
                with(plain)
            ),
        );
    }
    if let Some(upgrade) = error.strip_prefix("WebSocket upgrade failed: ") {
        if let Some(code) = upgrade.strip_prefix("Invalid status code: ").and_then(|c| c.trim().parse::<u16>().ok()) {
            // 408, 429 and 5xx: a busy or restarting server; others: the wrong place.
            if (400..500).contains(&code) && code != 408 && code != 429 {
                return Some(Permanent {
                    what: format!("HTTP {code}"),
                    after: 3,
                    advice: format!(
                        "the server answered HTTP {code} instead of accepting a WebSocket: is the path in the URL right, and is this the gateway's {kind}:// listener (not its admin API or demo page)?"
                    ),
                });
            }
            return None;
        }
        if upgrade.contains("HTTP") || upgrade.contains("http") {
            let framed = if kind == Kind::Ws { Kind::Tcp } else { Kind::Tls };
            let url = format!("{framed}://{}:{}", ep.host(), ep.port());
            return now(
                "not HTTP",
                format!(
                    "this port does not speak WebSocket ({error}): is it the {framed}:// listener? then connect with {url}"
                ),
            );
        }
    }
    None
}

/// Judges an attempt that failed after the connection was open: bytes that
/// are not tether frames on tcp:// or tls:// mean another protocol.
fn permanent_attempt(reason: &TransportLoss, ep: &Endpoint) -> Option<Permanent> {
    match reason {
        TransportLoss::Malformed(_) if matches!(ep.kind(), Kind::Tcp | Kind::Tls) => Some(Permanent {
            what: "not tether".into(),
            after: 3,
            advice: format!(
                "this port does not speak tether over {} ({reason}): is it a ws://, wss:// or {} listener, or another service? connect with the scheme it serves",
                ep.kind(),
                if ep.kind() == Kind::Tcp { "tls://" } else { "tcp://" }
            ),
        }),
        _ => None,
    }
}

/// Why a session that ended for good ended, and what to do.
fn ended_for_good(reason: &SessionEnd, token: bool) -> String {
    match reason {
        SessionEnd::PeerClosed { code: CloseCode::Kicked, reason } => format!(
            "the server's operator ended the session (CLOSE 3004 Kicked: {reason}); it does not come back by itself: run tether connect again for a new one"
        ),
        SessionEnd::Refused { reason: RejectReason::Unauthorized, message } if token => {
            format!("the server refused the login token ({message}): check it is the right one and has not expired")
        }
        SessionEnd::Refused { reason: RejectReason::Unauthorized, message } => format!(
            "the server refused the session without a login token ({message}): pass one with --token or --token-file"
        ),
        SessionEnd::Refused { reason: RejectReason::UnsupportedVersion, message } => format!(
            "the server speaks another protocol version ({message}): use a tether release matching the server's"
        ),
        SessionEnd::Refused { reason, message } => format!("the server refused the session ({reason:?}: {message})"),
        SessionEnd::Incompatible(text) => {
            format!("the server's settings do not work with this client's ({text}): try another --profile")
        }
        SessionEnd::PeerClosed { code, reason } => {
            format!("the server ended the session (CLOSE {code}: {reason}); run tether connect again for a new one")
        }
        other => format!("the session ended for good: {other}"),
    }
}

fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

/// The token in `path`: its content without surrounding whitespace.
fn read_token(path: &std::path::Path) -> Result<String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("--token-file {}: {e}; write the login token into it", path.display()))?;
    let t = t.trim();
    if t.is_empty() {
        anyhow::bail!("--token-file {}: the file is empty; write the login token into it", path.display());
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn judge(error: &str, url: &str) -> Option<(u32, String)> {
        permanent_dial(error, &url.parse().unwrap(), false).map(|p| (p.after, p.advice))
    }

    #[test]
    fn dial_failures_are_judged() {
        let refused = "cannot connect to ws://127.0.0.1:1/: 127.0.0.1:1: Connection refused (os error 111)";
        assert!(judge(refused, "ws://127.0.0.1:1/").is_none());
        let (after, advice) = judge("invalid peer certificate: UnknownIssuer", "wss://localhost:7443/").unwrap();
        assert_eq!(after, 1);
        assert!(advice.contains("not trusted") && advice.contains("pass --ca FILE"), "{advice}");
        let (_, advice) =
            judge("WebSocket upgrade failed: invalid HTTP version parsed", "ws://127.0.0.1:7400/").unwrap();
        assert!(advice.contains("does not speak WebSocket") && advice.contains("tcp://127.0.0.1:7400"), "{advice}");
        let (after, advice) = judge("WebSocket upgrade failed: Invalid status code: 404", "ws://h:1/x").unwrap();
        assert!(after > 1 && advice.contains("HTTP 404"), "{advice}");
        assert!(judge("WebSocket upgrade failed: Invalid status code: 503", "ws://h:1/").is_none());
        let (_, advice) = judge("received corrupt message of type InvalidContentType", "tls://h:1").unwrap();
        assert!(advice.contains("does not speak TLS"), "{advice}");
    }
}

//! `tether connect URL`: an interactive client. It shows link state, RTT
//! and resumes as they happen; every stdin line is sent as a message and
//! every incoming message is printed. End of input closes the session.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use tether_proto::{ClientConfig, ClientEvent};
use tether_runtime::client::{Client, ClientOptions, Event};
use tether_runtime::Endpoint;
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
    /// Show socket options (read back from the kernel), every RTT sample and heartbeat details.
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
        opts.core.validate().map_err(|e| anyhow::anyhow!("--token: {e}"))?;
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
    println!(
        "tether connect {endpoint}: heartbeat after {} idle, dead after {}; type a line to send it, Ctrl-D to close",
        humantime::format_duration(hb.interval),
        humantime::format_duration(hb.dead_after()),
    );
    let mut client = Client::start(endpoint, opts)?;
    let handle = client.handle();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut last_rtt = None;
    loop {
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line? {
                Some(line) => {
                    if let Err(e) = handle.send(line.into_bytes()) {
                        println!("{} not sent: {e}", stamp(start));
                    }
                }
                None => {
                    // End of input: let what was typed be acknowledged
                    // (up to 3 s), then end the session.
                    stdin_open = false;
                    let h = handle.clone();
                    tokio::spawn(async move {
                        let until = Instant::now() + std::time::Duration::from_secs(3);
                        while h.buffered().0 > 0 && Instant::now() < until {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        h.close();
                    });
                }
            },
            e = client.next_event() => {
                let Some(e) = e else { return Ok(()) };
                let t = stamp(start);
                match e {
                    Event::Dialed { addr, kind, socket } if a.verbose => {
                        println!("{t} dialed {kind}://{addr}");
                        if let Some(s) = socket {
                            println!("{t}   socket: {s}");
                        }
                    }
                    Event::DialFailed { error } => println!("{t} connect failed: {error}"),
                    Event::NetworkChanged => println!("{t} network changed: probing the link"),
                    Event::Session(e) => match e {
                        ClientEvent::Connected { session } => {
                            println!("{t} link up: new session {}", &session.to_string()[..8]);
                        }
                        ClientEvent::Resumed { session, replayed } => println!(
                            "{t} link up: resumed session {} ({replayed} message(s) replayed, {} resume(s) so far)",
                            &session.to_string()[..8],
                            handle.resumes()
                        ),
                        ClientEvent::Disconnected { reason } => println!("{t} link down: {reason}"),
                        ClientEvent::AttemptFailed { reason } => println!("{t} attempt failed: {reason}"),
                        ClientEvent::Reconnecting { attempt, delay } => {
                            println!("{t} reconnecting in {} (attempt {})", humantime::format_duration(round_ms(delay)), attempt + 1);
                        }
                        ClientEvent::Message(m) => println!("{t} < {}", String::from_utf8_lossy(&m)),
                        ClientEvent::Rtt(rtt) => {
                            // The gateway shows members' RTT as their clients report it on PINGs.
                            handle.set_ping_payload(format!("{{\"rtt_ms\":{:.1}}}", rtt.as_secs_f64() * 1000.0));
                            // Quiet unless verbose or the RTT moved by more than half.
                            let moved = last_rtt.is_none_or(|l: std::time::Duration| {
                                rtt > l + l / 2 || rtt < l / 2
                            });
                            if a.verbose || moved {
                                println!("{t} rtt {:.1} ms", rtt.as_secs_f64() * 1000.0);
                                last_rtt = Some(rtt);
                            }
                        }
                        ClientEvent::SessionEnded { session, reason, unacked, restarting } => {
                            let id = session.map(|s| s.to_string()[..8].to_owned()).unwrap_or_else(|| "-".into());
                            println!("{t} session {id} ended: {reason}; {} unacknowledged message(s) not delivered", unacked.len());
                            for m in &unacked {
                                println!("{t}   unsent: {}", String::from_utf8_lossy(m));
                            }
                            if restarting {
                                println!("{t} starting a fresh session");
                            }
                        }
                        ClientEvent::HeartbeatMissed => println!("{t} heartbeat missed (not enforced)"),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
}

fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

/// Seconds since `start`, for log lines.
fn stamp(start: Instant) -> String {
    format!("[{:>8.3}s]", start.elapsed().as_secs_f64())
}

/// The token in `path`: its content without surrounding whitespace.
fn read_token(path: &std::path::Path) -> Result<String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--token-file {}: {e}; write the login token into it", path.display()))?;
    let t = t.trim();
    if t.is_empty() {
        anyhow::bail!("--token-file {}: the file is empty; write the login token into it", path.display());
    }
    Ok(t.to_owned())
}

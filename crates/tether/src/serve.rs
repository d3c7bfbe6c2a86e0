//! `tether serve` and `tether config`: a thin front end over the
//! `tether-gateway` library. It reads the config, installs the logger,
//! starts the gateway, prints the start banner from what the gateway
//! reports (the bound addresses, the admin key), and stops on Ctrl-C or
//! SIGTERM after the drain.

use std::future::Future;
use std::path::PathBuf;

use anyhow::Result;
use tether_gateway::{Config, Stopped};

/// Prints a line of the start-up banner or a notice, ignoring a closed
/// stdout (a supervisor may have closed it; that must not stop a drain).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The config file (TOML; see config/tether.example.toml). Without one,
    /// the embedded defaults: loopback listeners, anonymous clients.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub(crate) enum ConfigCmd {
    /// Checks a config file: every unknown or inconsistent setting is named with its fix.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Prints the commented example config (every key, with its default).
    Example,
}

pub(crate) fn config_cmd(c: ConfigCmd) -> Result<()> {
    match c {
        ConfigCmd::Check { file } => {
            let r = Config::load(&file)?.resolve()?;
            println!("{}: ok", file.display());
            for line in r.summary() {
                println!("  {line}");
            }
            Ok(())
        }
        ConfigCmd::Example => {
            print!("{}", tether_gateway::config::EXAMPLE);
            Ok(())
        }
    }
}

pub(crate) async fn serve(a: Args) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let r = cfg.resolve()?;
    let c = r.config();
    tether_gateway::init_logs(&c.log);
    let (grace, window) = (c.session.grace, c.drain.window);
    let g = tether_gateway::run(r, stop_signal()?).await?;

    let kind = match &g.cluster {
        Some((node, url)) => format!("cluster node {node}, sessions in Redis at {url}"),
        None => "in-memory gateway".to_owned(),
    };
    out!(
        "tether serve: {kind}, grace {}{}",
        humantime::format_duration(grace),
        a.config.as_ref().map(|p| format!(", config {}", p.display())).unwrap_or_default()
    );
    for l in &g.sessions {
        out!("  sessions on {}://{}", l.kind, l.addr);
    }
    if let Some(addr) = g.admin {
        out!("  admin API on http://{addr} (OpenAPI at /openapi.json)");
        // The key itself is never printed: output ends up in logs.
        match &g.admin_key_file {
            Some(p) => out!(
                "  admin key in {} ({}; mode 0600): curl -H \"Authorization: Bearer $(cat {})\" http://{addr}/v1/sessions",
                p.display(),
                if g.admin_key_generated { "made now" } else { "kept from an earlier start" },
                p.display()
            ),
            None => out!("  admin key: the one the config gives (admin.key or admin.key_env)"),
        }
        if g.metrics_key_required {
            out!("  metrics on http://{addr}/metrics (Bearer admin.metrics_key, or the admin key)");
        } else {
            out!("  metrics on http://{addr}/metrics (open; set admin.metrics_key_env to require a read-only key)");
        }
    }
    if let Some(addr) = g.demo {
        out!("  demo page on http://{addr}/");
    }
    // SIGHUP (`systemctl reload`) reloads what can be reloaded, and never
    // stops the gateway (its default action would).
    #[cfg(unix)]
    {
        let tls = g.tls.clone();
        if tls.is_some() {
            out!("  SIGHUP reloads the TLS certificate and key (open sessions keep theirs)");
        }
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match &tls {
                    Some(tls) => match tls.reload() {
                        Ok(()) => tracing::info!("TLS certificate and key reloaded; new handshakes use them"),
                        Err(e) => tracing::error!(%e, "TLS certificate not reloaded; still serving the previous one"),
                    },
                    None => tracing::info!("SIGHUP: nothing to reload (no [tls]); still serving"),
                }
            }
        });
    }
    out!("  Ctrl-C or SIGTERM drains (clients come back within {}) and stops", humantime::format_duration(window));

    if let Stopped::Drained { told, window } = g.stopped().await? {
        out!("draining: {told} client(s) told to reconnect within {}; stopped", humantime::format_duration(window));
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM (what service managers send to stop a process). The
/// handlers are installed now, so that a failure stops the start.
fn stop_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            r = tokio::signal::ctrl_c() => ctrl_c_failed(r).await,
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        ctrl_c_failed(tokio::signal::ctrl_c().await).await;
    })
}

/// A Ctrl-C handler that could not be installed leaves SIGTERM (or, off
/// unix, nothing) to stop the gateway; it is no reason to stop.
async fn ctrl_c_failed(r: std::io::Result<()>) {
    if let Err(e) = r {
        tracing::warn!(%e, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

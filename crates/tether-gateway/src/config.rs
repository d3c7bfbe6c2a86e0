//! The gateway's configuration file (TOML). Every knob has a default, so an
//! empty file (or none) is the embedded in-memory gateway on loopback.
//! Unknown keys are refused, and every inconsistency is reported with the
//! field's path and the fix. Secrets can come from the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;
use tether_proto::{HeartbeatConfig, OverflowPolicy, Profile, ReplayLimits, ServerConfig};

use crate::keys::{self, AdminKey, MIN_KEY_LEN};

/// The commented example, also checked by a test.
pub const EXAMPLE: &str = include_str!("../../../config/tether.example.toml");

/// A listener address, or "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub Option<SocketAddr>);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        listen_addr(&s).map(Addr).map_err(serde::de::Error::custom)
    }
}

/// A listener's address: `IP:PORT` (`[::1]:7400` for IPv6), `localhost:PORT`
/// (127.0.0.1), or `off`. Other host names are not resolved: a listener
/// binds one address, and a name may stand for several or change.
fn listen_addr(s: &str) -> std::result::Result<Option<SocketAddr>, String> {
    if s == "off" {
        return Ok(None);
    }
    if let Ok(a) = s.parse() {
        return Ok(Some(a));
    }
    let examples = "e.g. \"127.0.0.1:7400\" (this host only), \"0.0.0.0:7400\" (every interface), \"[::]:7400\", \"localhost:7400\", or \"off\"";
    match s.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => match port.parse::<u16>() {
            Ok(p) => Ok(Some(SocketAddr::from(([127, 0, 0, 1], p)))),
            Err(_) => Err(format!("{s:?}: {port:?} is not a port number (0 to 65535); write {examples}")),
        },
        Some((host, port)) if host.parse::<std::net::Ipv6Addr>().is_ok() => {
            Err(format!("{s:?}: an IPv6 address takes brackets before the port; write \"[{host}]:{port}\""))
        }
        Some((host, port)) if port.parse::<u16>().is_ok() => Err(format!(
            "{s:?}: {host:?} is not an IP address (host names other than localhost are not resolved: a listener binds one address); write {examples}"
        )),
        _ => Err(format!("{s:?} is not an IP address and port; write {examples}")),
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: Listen,
    pub tls: Tls,
    pub session: Session,
    pub heartbeat: Heartbeat,
    pub limits: Limits,
    pub auth: Auth,
    pub admin: Admin,
    pub demo: Demo,
    pub log: Log,
    pub drain: Drain,
    pub cluster: Cluster,
    pub hooks: Hooks,
}

pub use crate::hooks::Settings as Hooks;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub tcp: Addr,
    pub ws: Addr,
    pub tls: Addr,
    pub wss: Addr,
    /// SO_REUSEPORT on the session listeners: several `tether serve`
    /// processes (nodes of one cluster) may share the ports, the kernel
    /// spreading new connections over those alive.
    pub reuse_port: bool,
    /// Web pages (`scheme://host[:port]`) allowed to open WebSocket
    /// sessions besides those served from the gateway's own host; `"*"`:
    /// any. Others get 403 at the upgrade.
    pub allowed_origins: Vec<String>,
    /// Load balancers (addresses or networks, `"10.0.0.0/8"`) whose word on
    /// the client's address is taken: a WebSocket upgrade's
    /// `X-Forwarded-For`, and with `proxy_protocol` the PROXY header.
    pub trusted_proxies: Vec<String>,
    /// Connections from `trusted_proxies` begin with a PROXY protocol
    /// header (version 1 or 2), required of them.
    pub proxy_protocol: bool,
}

impl Default for Listen {
    fn default() -> Self {
        let a = |s: &str| Addr(s.parse().ok());
        Listen {
            tcp: a("127.0.0.1:7400"),
            ws: a("127.0.0.1:7401"),
            tls: Addr(None),
            wss: Addr(None),
            reuse_port: false,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Session {
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub min_idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_idle_timeout: Duration,
    pub max_frame: u32,
    pub replay_max_messages: usize,
    pub replay_max_bytes: usize,
    /// Debug switch: false never drops a silent transport.
    pub enforce_idle: bool,
}

impl Default for Session {
    fn default() -> Self {
        let c = ServerConfig::default();
        Session {
            grace: c.grace,
            handshake_timeout: c.handshake_timeout,
            min_idle_timeout: c.min_idle_timeout,
            max_idle_timeout: c.max_idle_timeout,
            max_frame: c.max_frame,
            replay_max_messages: c.replay.max_messages,
            replay_max_bytes: c.replay.max_bytes,
            enforce_idle: c.enforce_idle,
        }
    }
}

/// The heartbeat profile the server tunes accepted sockets for (keepalive
/// and TCP_USER_TIMEOUT); clients choose their own heartbeat.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Heartbeat {
    pub profile: String,
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Option<Duration>,
    pub probes: Option<u32>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { profile: "default".into(), interval: None, probe_timeout: None, probes: None }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_handshakes: usize,
    pub max_pending: usize,
    #[serde(with = "humantime_serde")]
    pub overload_retry: Duration,
    pub max_rooms_per_session: usize,
    pub max_room_members: usize,
    /// Largest room request (a `say` with its body), bytes.
    pub max_say_bytes: usize,
    /// `say`s per second per session, sustained, and the burst allowed.
    pub say_rate: f64,
    pub say_burst: f64,
    /// Most members listed in a `joined` or `members` answer.
    pub max_members_listed: usize,
    /// Rooms larger than this announce no presence changes (a join storm
    /// costs N²/2 messages).
    pub presence_max_members: usize,
    /// New connections per second per client address (0: no limit), and
    /// how many may come at once; beyond, closed at accept. Loopback
    /// addresses are not limited.
    pub connections_per_address: f64,
    pub connections_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_handshakes: 512,
            max_pending: 4096,
            overload_retry: Duration::from_secs(1),
            max_rooms_per_session: 32,
            max_room_members: 10_000,
            max_say_bytes: 16 * 1024,
            say_rate: 20.0,
            // A minute's worth: what a client queued through an outage
            // arrives at once on its resume, and must not be refused.
            say_burst: 1200.0,
            max_members_listed: 100,
            presence_max_members: 1000,
            // Generous: a whole office behind one NAT coming back after an
            // outage (its clients back off when refused).
            connections_per_address: 50.0,
            connections_burst: 500.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Admit clients whose HELLO carries no credential.
    pub anonymous: bool,
    /// HS256 secret; prefer `jwt_secret_env`.
    pub jwt_secret: Option<String>,
    /// Environment variable holding the HS256 secret.
    pub jwt_secret_env: Option<String>,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// When set, tokens must carry this `aud`; when not, `aud` is not checked.
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// An identity provider's JSON Web Key Set (`https://…/.well-known/jwks.json`):
    /// tokens signed with RS/PS/ES/EdDSA keys of it are accepted.
    pub jwks_url: Option<String>,
    /// How often the key set is fetched again (also at once, at most every
    /// 10 s, when a token names a key not in it).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            anonymous: true,
            jwt_secret: None,
            jwt_secret_env: None,
            leeway: Duration::from_secs(60),
            audience: None,
            issuer: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    pub listen: Addr,
    /// Bearer key; prefer `key_env`. None of key, key_env and key_file: a
    /// random key is kept in the state directory ([`crate::keys`]).
    pub key: Option<String>,
    pub key_env: Option<String>,
    /// A file holding the key, made at start (mode 0600) when missing.
    pub key_file: Option<PathBuf>,
    /// A read-only key for `/metrics`; prefer `metrics_key_env`. Neither:
    /// `/metrics` is open (the admin listener is on loopback by default).
    pub metrics_key: Option<String>,
    pub metrics_key_env: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: Addr("127.0.0.1:7402".parse().ok()),
            key: None,
            key_env: None,
            key_file: None,
            metrics_key: None,
            metrics_key_env: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Demo {
    /// Serves the demo page and the browser client.
    pub listen: Addr,
}

impl Default for Demo {
    fn default() -> Self {
        Demo { listen: Addr("127.0.0.1:7403".parse().ok()) }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter: "info", "debug", "tether=debug,info"…
    pub level: String,
    /// Log PING frames received too (at debug); off keeps logs readable.
    pub heartbeats: bool,
    /// "text" or "json".
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { level: "info".into(), heartbeats: false, format: "text".into() }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Drain {
    /// On shutdown, clients are told to come back spread over this window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Drain { window: Duration::from_secs(5) }
    }
}

/// Sessions kept in Redis, so they survive this process and can be resumed
/// on any node (docs/CLUSTER.md). Absent: everything in this process's
/// memory, as before.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// `redis://[user:password@]host:port[/db]`; prefer `redis_env`.
    pub redis: Option<String>,
    /// Environment variable holding the Redis URL.
    pub redis_env: Option<String>,
    /// This node's name, unique in the cluster (default: random per start).
    pub node_id: Option<String>,
    /// Prefix of every Redis key, so several clusters can share one Redis.
    pub key_prefix: Option<String>,
    /// A node silent this long in Redis is dead: its sessions wait for a
    /// resume on any node (renewed every third of it).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    /// How often this node looks for room members whose session is gone
    /// from Redis (ended while every node that would have told their rooms
    /// was down) and expires them.
    #[serde(with = "humantime_serde")]
    pub sweep: Option<Duration>,
}

/// A refused setting: where, what, and the fix.
fn refuse(field: &str, what: impl std::fmt::Display, fix: &str) -> anyhow::Error {
    anyhow::anyhow!("{field}: {what}; {fix}")
}

/// A core setting's error, named by its key in this file.
fn in_section(section: &str, e: tether_proto::ConfigError) -> anyhow::Error {
    let key = e.field.strip_prefix("heartbeat.").unwrap_or(e.field).replace("replay.", "replay_");
    refuse(&format!("{section}.{key}"), &e.problem, &e.fix)
}

/// The shortest `session.grace`: a client's way back (its first backoff
/// step, a round trip, a handshake) takes a good part of a second, so a
/// shorter grace would end sessions at every blip instead of resuming them.
const MIN_GRACE: Duration = Duration::from_secs(1);

/// The smallest `session.replay_max_bytes` whatever the other limits: room
/// for the gateway's largest messages (a `joined` list of 100 members is
/// about 32 KiB, a `say` up to 16 KiB) several at a time, while the
/// client's acknowledgement is on its way.
const MIN_REPLAY_BYTES: usize = 64 * 1024;

/// The smallest `session.replay_max_messages`: clients acknowledge every 32
/// messages (or 50 ms), so a smaller buffer ends sessions in an ordinary
/// burst (a join's answer and presence, a few says) on a good link.
const MIN_REPLAY_MESSAGES: usize = 64;

/// What a gateway message adds around a `say`'s body or a member list (the
/// event's keys, the room's name, the sender as a member): at most this.
const ENVELOPE_BYTES: usize = 1024;

/// About the most one member takes in a `joined` or `members` list.
const MEMBER_BYTES: usize = 320;

/// Levels a `log.level` directive may end with.
const LEVELS: &str = "error, warn, info, debug, trace or off";

/// Checks a `log.level` filter. `EnvFilter` takes a word alone as a target
/// name (logs of a module called so, at trace), so a misspelt level such as
/// "verbose" would silence every log: each directive must be a level, or a
/// target (with optional span) and `=level`.
fn check_log_filter(level: &str) -> Result<()> {
    use tracing_subscriber::filter::LevelFilter;
    let fix = format!(
        "write a level ({LEVELS}) or a list of target=level with an optional default level, e.g. \"info\" or \"tether=debug,warn\""
    );
    if level.trim().is_empty() {
        bail!(refuse("log.level", "is empty", &fix));
    }
    for d in level.split(',').map(str::trim) {
        // The level follows the last `=` outside a span's `[...]`.
        let tail = d.rsplit_once(']').map_or(d, |(_, t)| t);
        let ok = match tail.rsplit_once('=') {
            Some((_, lvl)) => !lvl.is_empty() && lvl.parse::<LevelFilter>().is_ok(),
            // `target[span]` alone is explicit syntax (at trace); a bare
            // word must be a level.
            None if d.contains('[') => true,
            None => !d.is_empty() && d.parse::<LevelFilter>().is_ok(),
        };
        if !ok {
            let what = if d.contains('=') {
                format!("{level:?}: {d:?} does not end with a level ({LEVELS})")
            } else {
                format!("{level:?}: {d:?} is not a level ({LEVELS}); a word alone would be read as a target and silence every other log")
            };
            bail!(refuse("log.level", what, &fix));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| refuse("log.level", format!("{level:?}: {e}"), &fix))?;
    Ok(())
}

/// Reads a secret given inline or through an environment variable.
impl Config {
    /// The session settings the core does not judge: a grace long enough
    /// for a client to come back, replay bounds that hold the gateway's own
    /// messages.
    fn check_session(&self) -> Result<()> {
        let s = &self.session;
        if s.grace < MIN_GRACE {
            bail!(refuse(
                "session.grace",
                format!(
                    "{} is too short: a client needs a backoff step, a round trip and a handshake to come back, so every blip would end its session",
                    humantime::format_duration(s.grace)
                ),
                "use at least 1s (60s is typical; it is how long an outage may last without losing the session)",
            ));
        }
        let lim = &self.limits;
        let say = lim.max_say_bytes.saturating_add(ENVELOPE_BYTES);
        let list = lim.max_members_listed.saturating_mul(MEMBER_BYTES).saturating_add(ENVELOPE_BYTES);
        let min_bytes = MIN_REPLAY_BYTES.max(say).max(list);
        if s.replay_max_bytes < min_bytes {
            bail!(refuse(
                "session.replay_max_bytes",
                format!(
                    "{} bytes cannot hold the gateway's own messages (a say of limits.max_say_bytes = {} with its envelope is up to {say} bytes, a joined list of limits.max_members_listed = {} members up to {list}): sessions would end (CLOSE 3001) at their first join",
                    s.replay_max_bytes, lim.max_say_bytes, lim.max_members_listed
                ),
                &format!("use at least {min_bytes} (64 KiB, or more for larger says and lists; 1048576 is the default)"),
            ));
        }
        if s.replay_max_messages < MIN_REPLAY_MESSAGES {
            bail!(refuse(
                "session.replay_max_messages",
                format!(
                    "{} is too few: clients acknowledge every 32 messages (or 50 ms), so an ordinary burst (a join's answer and presence, a few says) would end sessions (CLOSE 3001) on a good link",
                    s.replay_max_messages
                ),
                &format!("use at least {MIN_REPLAY_MESSAGES} (4096 is the default)"),
            ));
        }
        Ok(())
    }

    /// The trusted load balancers, checked.
    pub(crate) fn proxies(&self) -> Result<Option<tether_runtime::transport::TrustedProxies>> {
        let l = &self.listen;
        if l.trusted_proxies.is_empty() {
            if l.proxy_protocol {
                bail!(refuse(
                    "listen.proxy_protocol",
                    "is on but listen.trusted_proxies is empty",
                    "list the load balancers' addresses (e.g. [\"10.0.0.0/8\"]): only their PROXY headers are believed",
                ));
            }
            return Ok(None);
        }
        let p = tether_runtime::transport::TrustedProxies::parse(&l.trusted_proxies, l.proxy_protocol)
            .map_err(|e| refuse("listen.trusted_proxies", e, "write addresses or networks in CIDR form"))?;
        Ok(Some(p))
    }

    /// Where the admin key comes from: the config, or a key file (checked
    /// now if it exists; made at start if not).
    fn admin_key(&self) -> Result<AdminKey> {
        let a = &self.admin;
        if a.listen.0.is_none() {
            return Ok(AdminKey::Off);
        }
        let given = secret(&a.key, &a.key_env, "admin.key")?;
        match (given, &a.key_file) {
            (Some(_), Some(_)) => bail!(refuse("admin.key_file", "is set beside admin.key (or key_env)", "keep one")),
            (Some(k), None) if k.len() < MIN_KEY_LEN => {
                bail!(refuse("admin.key", format!("is {} bytes long", k.len()), "use at least 16 random bytes"))
            }
            (Some(k), None) => Ok(AdminKey::Given(k)),
            (None, file) => {
                let Some(path) = file.clone().or_else(keys::default_key_file) else {
                    bail!(refuse(
                        "admin.key_file",
                        "no state directory to keep a generated admin key in ($STATE_DIRECTORY, $XDG_STATE_HOME and $HOME are unset)",
                        "set admin.key_file, or admin.key_env",
                    ));
                };
                if path.exists() {
                    keys::read_key_file(&path)?;
                }
                Ok(AdminKey::File(path))
            }
        }
    }
}

fn secret(inline: &Option<String>, env: &Option<String>, field: &str) -> Result<Option<String>> {
    let s = read_secret(inline, env, field)?;
    if let Some(v) = &s {
        if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!(refuse(
                field,
                "contains whitespace or control characters (a trailing newline from a file?)",
                "strip them: the value is used byte for byte",
            ));
        }
    }
    Ok(s)
}

fn read_secret(inline: &Option<String>, env: &Option<String>, field: &str) -> Result<Option<String>> {
    match (inline, env) {
        (Some(_), Some(_)) => Err(refuse(field, "is given both inline and as _env", "keep one of the two")),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(refuse(
                &format!("{field}_env"),
                format!("environment variable {var} is not set"),
                "export it before starting, or set the value inline",
            )),
        },
        (None, None) => Ok(None),
    }
}

/// Settings checked to work together, with secrets resolved, ready to
/// start ([`crate::run`]); made by [`Config::resolve`] only.
#[derive(Clone)]
pub struct Resolved {
    pub(crate) cfg: Config,
    pub(crate) core: ServerConfig,
    pub(crate) heartbeat: HeartbeatConfig,
    pub(crate) jwt_secret: Option<String>,
    pub(crate) admin_key: AdminKey,
    /// `/metrics` needs this key (or the admin key) when set.
    pub(crate) metrics_key: Option<String>,
    /// The Redis URL, when sessions are kept in Redis.
    pub(crate) redis: Option<String>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets stay out of logs and panic messages.
        f.debug_struct("Resolved")
            .field("cfg", &"…")
            .field("core", &self.core)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "set"))
            .field("admin_key", &self.admin_key)
            .field("metrics_key", &self.metrics_key.as_ref().map(|_| "set"))
            .field("redis", &self.redis.as_ref().map(|_| "set"))
            .finish_non_exhaustive()
    }
}

impl Resolved {
    /// The settings as read (secrets given through the environment are not
    /// filled in here).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What the gateway would do, one line each: listeners, admin key, demo
    /// page, grace and auth (`tether config check` prints it).
    pub fn summary(&self) -> Vec<String> {
        let c = &self.cfg;
        let mut v = Vec::new();
        for (kind, a) in [("tcp", c.listen.tcp), ("ws", c.listen.ws), ("tls", c.listen.tls), ("wss", c.listen.wss)] {
            if let Some(a) = a.0 {
                v.push(format!("sessions on {kind}://{a}"));
            }
        }
        if let Some(a) = c.admin.listen.0 {
            let key = match &self.admin_key {
                AdminKey::File(p) if p.exists() => format!("key in {}", p.display()),
                AdminKey::File(p) => format!("key to be made at start in {}", p.display()),
                _ => "key set".to_owned(),
            };
            let metrics = if self.metrics_key.is_some() { "needs the metrics key" } else { "open" };
            v.push(format!("admin API on http://{a} ({key}); /metrics {metrics}"));
        }
        if c.listen.ws.0.is_some() || c.listen.wss.0.is_some() {
            v.push(match c.listen.allowed_origins.as_slice() {
                o if o.iter().any(|o| o == "*") => "WebSocket sessions from pages of any site".into(),
                [] => "WebSocket sessions from pages of the gateway's own host only".into(),
                o => format!("WebSocket sessions from pages of the gateway's own host and {}", o.join(", ")),
            });
        }
        if let Some(a) = c.demo.listen.0 {
            v.push(format!("demo page on http://{a}/"));
        }
        match &self.redis {
            Some(url) => v.push(format!(
                "sessions kept in Redis at {} as node {} (resumable on any node)",
                tether_cluster::redacted(url),
                c.cluster.node_id.as_deref().unwrap_or("<random per start>")
            )),
            None => v.push("sessions in this process's memory (no [cluster])".into()),
        }
        if let Some(url) = &c.hooks.url {
            v.push(format!(
                "backend hooks {} at {url}/<hook> (timeout {}, {} retries)",
                c.hooks.call.join(", "),
                humantime::format_duration(c.hooks.timeout),
                c.hooks.retries
            ));
        }
        v.push(format!(
            "grace {}, auth: {}{}",
            humantime::format_duration(c.session.grace),
            match (&self.jwt_secret, &c.auth.jwks_url) {
                (Some(_), Some(u)) => format!("HS256 JWT and the keys of {u}"),
                (Some(_), None) => "HS256 JWT".into(),
                (None, Some(u)) => format!("JWT checked with the keys of {u}"),
                (None, None) => "no JWT".into(),
            },
            if c.auth.anonymous { ", anonymous admitted" } else { "" }
        ));
        v
    }
}

impl Config {
    /// Parses a file's text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Checks the settings work together and resolves secrets.
    pub fn resolve(self) -> Result<Resolved> {
        let s = &self.session;
        self.check_session()?;
        let core = ServerConfig {
            grace: s.grace,
            handshake_timeout: s.handshake_timeout,
            min_idle_timeout: s.min_idle_timeout,
            max_idle_timeout: s.max_idle_timeout,
            max_frame: s.max_frame,
            replay: ReplayLimits {
                max_bytes: s.replay_max_bytes,
                max_messages: s.replay_max_messages,
                overflow: OverflowPolicy::EndSession,
            },
            enforce_idle: s.enforce_idle,
            ..ServerConfig::default()
        };
        core.validate().map_err(|e| in_section("session", e))?;

        let profile: Profile = self.heartbeat.profile.parse().map_err(|e| anyhow::anyhow!("heartbeat.profile: {e}"))?;
        let mut heartbeat = HeartbeatConfig::profile(profile);
        if let Some(i) = self.heartbeat.interval {
            heartbeat.interval = i;
        }
        if let Some(t) = self.heartbeat.probe_timeout {
            heartbeat.probe_timeout = t;
        }
        if let Some(p) = self.heartbeat.probes {
            heartbeat.probes = p;
        }
        heartbeat.validate().map_err(|e| in_section("heartbeat", e))?;

        let l = &self.listen;
        if [l.tcp, l.ws, l.tls, l.wss].iter().all(|a| a.0.is_none()) {
            bail!(refuse("listen", "every listener is off", "enable at least one of tcp, ws, tls, wss"));
        }
        let wants_tls = l.tls.0.is_some() || l.wss.0.is_some();
        match (&self.tls.cert, &self.tls.key, wants_tls) {
            (Some(_), Some(_), _) | (None, None, false) => {}
            (None, None, true) => bail!(refuse(
                "tls.cert",
                "listen.tls or listen.wss is on but no certificate is given",
                "set tls.cert and tls.key to PEM files, or turn those listeners \"off\"",
            )),
            _ => bail!(refuse("tls", "only one of cert and key is given", "give both tls.cert and tls.key")),
        }
        let mut seen = Vec::new();
        for (name, a) in [
            ("listen.tcp", l.tcp),
            ("listen.ws", l.ws),
            ("listen.tls", l.tls),
            ("listen.wss", l.wss),
            ("admin.listen", self.admin.listen),
            ("demo.listen", self.demo.listen),
        ] {
            if let Some(addr) = a.0 {
                if addr.port() != 0 {
                    if let Some((other, _)) = seen.iter().find(|(_, b)| *b == addr) {
                        bail!(refuse(name, format!("{addr} is also {other}"), "give each listener its own port"));
                    }
                }
                seen.push((name, addr));
            }
        }
        for (field, d, max, fix) in [
            ("session.handshake_timeout", s.handshake_timeout, 300, "a few seconds is typical (10s)"),
            ("limits.overload_retry", self.limits.overload_retry, 600, "a second or a few is typical"),
            ("auth.leeway", self.auth.leeway, 3600, "allow at most an hour of clock skew (60s is typical)"),
            ("drain.window", self.drain.window, 3600, "spread reconnects over seconds or minutes"),
        ] {
            if d > Duration::from_secs(max) {
                bail!(refuse(field, format!("{} is too long", humantime::format_duration(d)), fix));
            }
        }
        for (field, p) in [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
            if let Some(p) = p {
                if !p.is_file() {
                    bail!(refuse(
                        field,
                        format!("{} is not a readable file", p.display()),
                        "give the path of a PEM file"
                    ));
                }
            }
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert, &self.tls.key) {
            // Built now, so that `config check` finds a key that is not the
            // certificate's, or a CA's certificate given as the server's.
            if let Err(e) = tether_runtime::tls::server_config(cert, key) {
                bail!("tls: {e}");
            }
        }
        self.hooks.check()?;
        self.proxies()?;
        let lim = &self.limits;
        let rate_ok = lim.connections_per_address == 0.0
            || (lim.connections_per_address.is_finite()
                && lim.connections_per_address > 0.0
                && lim.connections_burst >= 1.0
                && lim.connections_burst.is_finite());
        if !rate_ok {
            bail!(refuse(
                "limits.connections_per_address",
                format!("{} per second with a burst of {}", lim.connections_per_address, lim.connections_burst),
                "use a positive rate and a burst of at least 1 (50 and 500 are the defaults), or 0 for no limit",
            ));
        }
        if lim.max_say_bytes < 256 || lim.max_say_bytes > s.max_frame as usize {
            bail!(refuse(
                "limits.max_say_bytes",
                format!("{} is outside 256..=session.max_frame ({})", lim.max_say_bytes, s.max_frame),
                "16384 is typical",
            ));
        }
        if !(lim.say_rate > 0.0 && lim.say_rate.is_finite() && lim.say_burst >= 1.0 && lim.say_burst.is_finite()) {
            bail!(refuse(
                "limits.say_rate",
                "must be above 0, with say_burst at least 1",
                "e.g. say_rate = 20.0, say_burst = 40.0"
            ));
        }
        // A member list must fit a frame: about 300 bytes per member at most.
        if lim.max_members_listed == 0 || lim.max_members_listed * 320 > s.max_frame as usize {
            bail!(refuse(
                "limits.max_members_listed",
                format!("{} members would not fit one {}-byte frame", lim.max_members_listed, s.max_frame),
                "list at most session.max_frame / 320 members (100 is typical)",
            ));
        }
        if self.limits.max_handshakes == 0 {
            bail!(refuse("limits.max_handshakes", "is 0", "admit at least 1 handshake at once (512 is typical)"));
        }
        if self.limits.max_rooms_per_session == 0 || self.limits.max_room_members == 0 {
            bail!(refuse(
                "limits.max_rooms_per_session",
                "a zero room limit refuses every join",
                "set max_rooms_per_session and max_room_members above 0",
            ));
        }

        let jwt_secret = secret(&self.auth.jwt_secret, &self.auth.jwt_secret_env, "auth.jwt_secret")?;
        if let Some(s) = &jwt_secret {
            if s.len() < 32 {
                bail!(refuse(
                    "auth.jwt_secret",
                    format!("is {} bytes long", s.len()),
                    "use a random secret of at least 32 bytes (e.g. `openssl rand -hex 32`)",
                ));
            }
        }
        if let Some(u) = &self.auth.jwks_url {
            let ok = reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                bail!(refuse(
                    "auth.jwks_url",
                    format!("{u:?} is not an http(s) URL"),
                    "give the provider's JWKS URL, e.g. https://id.example.com/.well-known/jwks.json"
                ));
            }
            if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&self.auth.jwks_refresh) {
                bail!(refuse(
                    "auth.jwks_refresh",
                    format!("{} is out of range", humantime::format_duration(self.auth.jwks_refresh)),
                    "use between 1s and 24h (5m is typical)",
                ));
            }
        }
        let connect_hook = self.hooks.url.is_some() && self.hooks.call.iter().any(|c| c == "connect");
        if !self.auth.anonymous && jwt_secret.is_none() && self.auth.jwks_url.is_none() && !connect_hook {
            bail!(refuse(
                "auth",
                "anonymous = false and neither jwt_secret, jwks_url nor a connect hook: nobody could connect",
                "set auth.jwt_secret_env (or jwt_secret), auth.jwks_url or hooks.url, or allow anonymous clients",
            ));
        }
        for o in &self.listen.allowed_origins {
            let ok = o == "*"
                || o.split_once("://").is_some_and(|(scheme, host)| {
                    !scheme.is_empty() && !host.is_empty() && !host.trim_end_matches('/').contains('/')
                });
            if !ok {
                bail!(refuse(
                    "listen.allowed_origins",
                    format!("{o:?} is not an origin"),
                    "write scheme://host[:port], as browsers send it (e.g. \"https://app.example.com\"), or \"*\" for any",
                ));
            }
        }
        let admin_key = self.admin_key()?;
        let metrics_key = secret(&self.admin.metrics_key, &self.admin.metrics_key_env, "admin.metrics_key")?;
        if let Some(k) = &metrics_key {
            if k.len() < MIN_KEY_LEN {
                let why = format!("is {} bytes long", k.len());
                bail!(refuse("admin.metrics_key", why, "use at least 16 random bytes"));
            }
        }
        if self.log.format != "text" && self.log.format != "json" {
            bail!(refuse("log.format", format!("{:?} is unknown", self.log.format), "use \"text\" or \"json\""));
        }
        check_log_filter(&self.log.level)?;
        if self.drain.window.is_zero() {
            bail!(refuse("drain.window", "is 0", "spread reconnects over a few seconds, e.g. \"5s\""));
        }
        let cl = &self.cluster;
        let redis = read_secret(&cl.redis, &cl.redis_env, "cluster.redis")?;
        if self.listen.reuse_port && redis.is_none() {
            bail!(refuse(
                "listen.reuse_port",
                "processes sharing a port without [cluster] would each hold sessions the others cannot resume",
                "set cluster.redis too, or turn reuse_port off",
            ));
        }
        if let Some(url) = &redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://")) {
                bail!(refuse(
                    "cluster.redis",
                    format!("{:?} is not a Redis URL", tether_cluster::redacted(url)),
                    "write redis://HOST:PORT (rediss:// for TLS), e.g. \"redis://127.0.0.1:6379\"",
                ));
            }
        }
        let name_ok = |s: &str| {
            !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        for (field, value, (lo, hi), fix) in [
            (
                "cluster.sweep",
                cl.sweep,
                (Duration::from_millis(200), Duration::from_secs(3600)),
                "use 200ms to 1h; 30s is typical",
            ),
            (
                "cluster.lease_ttl",
                cl.lease_ttl,
                (Duration::from_millis(300), Duration::from_secs(600)),
                "use 300ms to 10m; 6s is typical (a dead node's sessions are found within it)",
            ),
        ] {
            let Some(t) = value else { continue };
            if t < lo || t > hi {
                bail!(refuse(field, format!("{} is out of range", humantime::format_duration(t)), fix));
            }
            if redis.is_none() {
                bail!(refuse(field, "is set but cluster.redis is not", "set cluster.redis, or remove this key"));
            }
        }
        for (field, v) in [("cluster.node_id", &cl.node_id), ("cluster.key_prefix", &cl.key_prefix)] {
            if let Some(v) = v {
                if !name_ok(v) {
                    bail!(refuse(
                        field,
                        format!("{v:?} is not a name"),
                        "use 1 to 64 letters, digits, '-', '_' or '.'"
                    ));
                }
                if redis.is_none() {
                    bail!(refuse(field, "is set but cluster.redis is not", "set cluster.redis, or remove this key"));
                }
            }
        }
        Ok(Resolved { cfg: self, core, heartbeat, jwt_secret, admin_key, metrics_key, redis })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn err(text: &str) -> String {
        match Config::parse(text, "test.toml").and_then(Config::resolve) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn no_file_is_the_embedded_default_and_the_example_is_valid() {
        let d = Config::parse("", "empty").unwrap();
        assert_eq!(d, Config::default());
        let r = d.resolve().unwrap();
        assert_eq!(r.core, ServerConfig::default());
        let ex = Config::parse(EXAMPLE, "example").unwrap();
        ex.resolve().unwrap();
    }

    #[test]
    fn the_production_example_is_valid_in_its_environment() {
        let text = include_str!("../../../config/tether.production.toml");
        let c = Config::parse(text, "config/tether.production.toml").unwrap();
        for (var, value) in [
            ("TETHER_ADMIN_KEY", "admin-0123456789abcdef"),
            ("TETHER_METRICS_KEY", "metrics-0123456789abcdef"),
            ("TETHER_REDIS_URL", "redis://127.0.0.1:6379"),
            ("TETHER_HOOK_AUTH", "Bearer backend-secret"),
        ] {
            // Only this test reads these variables.
            std::env::set_var(var, value);
        }
        let r = c.resolve().unwrap();
        assert!(!r.config().auth.anonymous);
        assert!(r.metrics_key.is_some());
        let summary = r.summary().join("\n");
        assert!(summary.contains("backend hooks join, say, rpc, lifecycle"), "{summary}");
        assert!(summary.contains("sessions kept in Redis"), "{summary}");
    }

    #[test]
    fn hooks_are_checked() {
        let e = err("[hooks]\nurl = \"localhost:8080\"");
        assert!(e.contains("hooks.url") && e.contains("http://"), "{e}");
        let e = err("[hooks]\nurl = \"http://127.0.0.1:8080\"\ncall = [\"publish\"]");
        assert!(e.contains("hooks.call") && e.contains("connect, join, say, rpc and lifecycle"), "{e}");
        let e = err("[hooks]\nurl = \"http://127.0.0.1:8080\"\ntimeout = \"5m\"");
        assert!(e.contains("hooks.timeout"), "{e}");
        let e = err("[hooks]\nurl = \"http://127.0.0.1:8080\"\nheaders_env = { x-k = \"TETHER_TEST_UNSET_VAR\" }");
        assert!(e.contains("TETHER_TEST_UNSET_VAR"), "{e}");
        let e = err("[listen]\nproxy_protocol = true");
        assert!(e.contains("listen.proxy_protocol") && e.contains("trusted_proxies"), "{e}");
        let e = err("[listen]\ntrusted_proxies = [\"10.0.0.0/33\"]");
        assert!(e.contains("listen.trusted_proxies") && e.contains("0 to 32"), "{e}");
        // A connect hook can stand for tokens.
        let r = Config::parse("[auth]\nanonymous = false\n[hooks]\nurl = \"http://127.0.0.1:8080/t\"", "t").unwrap();
        r.resolve().unwrap();
        let e = err("[auth]\nanonymous = false\n[hooks]\nurl = \"http://127.0.0.1:8080/t\"\ncall = [\"say\"]");
        assert!(e.contains("nobody could connect"), "{e}");
    }

    #[test]
    fn values_are_read() {
        let c = Config::parse(
            "[session]\ngrace = \"90s\"\nenforce_idle = false\n[listen]\ntcp = \"off\"\n[log]\nheartbeats = true",
            "t",
        )
        .unwrap();
        assert_eq!(c.session.grace, Duration::from_secs(90));
        assert!(!c.session.enforce_idle);
        assert_eq!(c.listen.tcp, Addr(None));
        assert!(c.log.heartbeats);
        let r = c.resolve().unwrap();
        assert_eq!(r.core.grace, Duration::from_secs(90));
    }

    #[test]
    fn a_jwks_url_is_checked_and_may_stand_for_the_secret() {
        let e = err("[auth]\njwks_url = \"id.example.com/jwks\"");
        assert!(e.contains("auth.jwks_url") && e.contains("http(s) URL"), "{e}");
        let e = err("[auth]\njwks_url = \"https://id.example/jwks.json\"\njwks_refresh = \"100ms\"");
        assert!(e.contains("auth.jwks_refresh"), "{e}");
        let r = Config::parse("[auth]\nanonymous = false\njwks_url = \"https://id.example/jwks.json\"", "t")
            .unwrap()
            .resolve()
            .unwrap();
        assert!(r.summary().iter().any(|l| l.contains("JWT checked with the keys of https://id.example/jwks.json")));
    }

    #[test]
    fn origins_and_admin_keys_are_checked() {
        let e = err("[listen]\nallowed_origins = [\"app.example.com\"]");
        assert!(e.contains("listen.allowed_origins") && e.contains("scheme://host"), "{e}");
        let e = err("[listen]\nallowed_origins = [\"https://app.example.com/chat\"]");
        assert!(e.contains("is not an origin"), "{e}");
        Config::parse("[listen]\nallowed_origins = [\"https://a.example\", \"*\"]", "t").unwrap().resolve().unwrap();
        let e = err("[admin]\nkey = \"0123456789abcdef0\"\nkey_file = \"/tmp/k\"");
        assert!(e.contains("admin.key_file") && e.contains("keep one"), "{e}");
        let e = err("[limits]\nconnections_per_address = -1.0");
        assert!(e.contains("limits.connections_per_address") && e.contains("0 for no limit"), "{e}");
        let e = err("[limits]\nconnections_burst = 0.5");
        assert!(e.contains("burst of at least 1"), "{e}");
        let e = err("[admin]\nmetrics_key = \"short\"");
        assert!(e.contains("admin.metrics_key") && e.contains("16"), "{e}");
        let r = Config::parse("[admin]\nkey_file = \"/nonexistent-dir/admin.key\"", "t").unwrap().resolve().unwrap();
        assert!(r.summary().iter().any(|l| l.contains("key to be made at start in /nonexistent-dir/admin.key")));
        assert!(r.summary().iter().any(|l| l.contains("/metrics open")));
        assert!(r.summary().iter().any(|l| l.contains("pages of the gateway's own host only")));
    }

    /// `localhost:PORT` is what people write: it binds 127.0.0.1. Other
    /// names are refused saying the real rule (an IP address), not that
    /// the value lacks a port.
    #[test]
    fn listeners_take_localhost_and_say_that_names_are_not_resolved() {
        let c = Config::parse("[listen]\ntcp = \"localhost:7400\"\nws = \"LOCALHOST:7401\"", "t").unwrap();
        assert_eq!(c.listen.tcp, Addr(Some("127.0.0.1:7400".parse().unwrap())));
        assert_eq!(c.listen.ws, Addr(Some("127.0.0.1:7401".parse().unwrap())));
        c.resolve().unwrap();
        let c = Config::parse("[admin]\nlisten = \"[::1]:7402\"", "t").unwrap();
        assert_eq!(c.admin.listen, Addr(Some("[::1]:7402".parse().unwrap())));
        let e = err("[listen]\ntcp = \"gateway.example.com:7400\"");
        assert!(e.contains("is not an IP address") && e.contains("not resolved") && e.contains("0.0.0.0:7400"), "{e}");
        assert!(!e.contains("HOST:PORT"), "{e}");
        let e = err("[listen]\ntcp = \"localhost:http\"");
        assert!(e.contains("is not a port number"), "{e}");
        let e = err("[listen]\ntcp = \"::1:7400\"");
        assert!(e.contains("[::1]:7400"), "{e}");
    }

    /// Replay bounds too small for the gateway's own messages would end
    /// every session at its first join (CLOSE 3001): refused, naming the
    /// smallest that works.
    #[test]
    fn replay_bounds_must_hold_the_gateways_messages() {
        let e = err("[session]\nreplay_max_bytes = 10");
        assert!(e.contains("session.replay_max_bytes") && e.contains("at least 65536"), "{e}");
        assert!(e.contains("CLOSE 3001"), "{e}");
        let e = err("[session]\nreplay_max_messages = 4");
        assert!(e.contains("session.replay_max_messages") && e.contains("at least 64"), "{e}");
        // Larger says need a larger buffer.
        let e = err("[session]\nreplay_max_bytes = 100000\n[limits]\nmax_say_bytes = 200000");
        assert!(e.contains("at least 201024"), "{e}");
        let r = Config::parse("[session]\nreplay_max_bytes = 65536\nreplay_max_messages = 64", "t").unwrap();
        r.resolve().unwrap();
    }

    /// A grace shorter than a client's way back would turn every blip into
    /// a lost session.
    #[test]
    fn a_grace_under_a_second_is_refused() {
        for g in ["1ms", "999ms", "0s"] {
            let e = err(&format!("[session]\ngrace = \"{g}\""));
            assert!(e.contains("session.grace") && e.contains("at least 1s"), "{g}: {e}");
        }
        Config::parse("[session]\ngrace = \"1s\"", "t").unwrap().resolve().unwrap();
    }

    /// `EnvFilter` reads a word alone as a target name, so "verbose" would
    /// silence every log: every directive must name a level.
    #[test]
    fn log_level_must_name_levels() {
        for bad in ["verbose", "tether", "info,verbose", "tether=loud", "tether=", "", " "] {
            let e = err(&format!("[log]\nlevel = \"{bad}\""));
            assert!(e.contains("log.level") && e.contains("error, warn, info, debug, trace"), "{bad:?}: {e}");
        }
        let e = err("[log]\nlevel = \"verbose\"");
        assert!(e.contains("\"verbose\" is not a level"), "{e}");
        for good in
            ["info", "DEBUG", "warn,tether=debug", "tether_gateway=trace,tether_runtime=debug,info", "off", "t[s]"]
        {
            Config::parse(&format!("[log]\nlevel = \"{good}\""), "t").unwrap().resolve().unwrap();
        }
    }

    #[test]
    fn bad_settings_name_the_field_and_the_fix() {
        assert!(err("[session]\ngraec = \"1s\"").contains("unknown field `graec`"));
        assert!(err("[sesion]").contains("unknown field `sesion`"));
        let e = err("[session]\ngrace = \"60\"");
        assert!(e.contains("grace"), "{e}");
        let e = err("[listen]\ntcp = \"localhost\"");
        assert!(e.contains("is not an IP address and port") && e.contains("\"127.0.0.1:7400\""), "{e}");
        let e = err("[listen]\ntcp = \"off\"\nws = \"off\"");
        assert!(e.contains("listen: every listener is off"), "{e}");
        let e = err("[listen]\nwss = \"127.0.0.1:7443\"");
        assert!(e.contains("tls.cert") && e.contains("PEM"), "{e}");
        let e = err("[admin]\nlisten = \"127.0.0.1:7400\"");
        assert!(e.contains("admin.listen: 127.0.0.1:7400 is also listen.tcp"), "{e}");
        let e = err("[auth]\nanonymous = false");
        assert!(e.contains("nobody could connect"), "{e}");
        let e = err("[auth]\njwt_secret = \"short\"");
        assert!(e.contains("at least 32 bytes"), "{e}");
        let e = err("[auth]\njwt_secret_env = \"TETHER_TEST_SURELY_UNSET_VAR\"");
        assert!(e.contains("TETHER_TEST_SURELY_UNSET_VAR is not set"), "{e}");
        let e = err("[session]\nmin_idle_timeout = \"10m\"\nmax_idle_timeout = \"1m\"");
        assert!(e.contains("session.max_idle_timeout"), "{e}");
        let e = err("[heartbeat]\nprofile = \"fast\"");
        assert!(e.contains("heartbeat.profile") && e.contains("realtime"), "{e}");
        let e = err("[log]\nformat = \"xml\"");
        assert!(e.contains("log.format"), "{e}");
        let e = err("[session]\nmax_frame = 10");
        assert!(e.contains("max_frame"), "{e}");
        let e = err("[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\\n\"");
        assert!(e.contains("auth.jwt_secret") && e.contains("trailing newline"), "{e}");
        let e = err("[auth]\nleeway = \"2h\"");
        assert!(e.contains("auth.leeway") && e.contains("too long"), "{e}");
        let e = err("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"");
        assert!(e.contains("tls.cert") && e.contains("not a readable file"), "{e}");
        let e = err("[limits]\nmax_members_listed = 100000");
        assert!(e.contains("limits.max_members_listed"), "{e}");
        let e = err("[limits]\nsay_rate = 0.0");
        assert!(e.contains("limits.say_rate"), "{e}");
        let e = err("[cluster]\nredis = \"127.0.0.1:6379\"");
        assert!(e.contains("cluster.redis") && e.contains("redis://HOST:PORT"), "{e}");
        let e = err("[cluster]\nredis = \"redis://:hunter2@10.0.0.1:6379\"\nnode_id = \"a b\"");
        assert!(e.contains("cluster.node_id") && !e.contains("hunter2"), "{e}");
        let e = err("[cluster]\nnode_id = \"a\"");
        assert!(e.contains("cluster.redis is not"), "{e}");
    }
}

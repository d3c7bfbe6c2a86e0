//! Backend hooks (docs/GATEWAY.md §10): the application's backend hears what
//! clients ask and decides. Each hook is a JSON POST to `{hooks.url}/{hook}`
//! with the configured headers and an `Idempotency-Key`: the same key for
//! every attempt at the same client message (its session and sequence
//! number), so a backend that stores the key sees each message once, across
//! retries, resumes and node deaths.
//!
//! - `connect`: a new session may open (as who); asked in the handshake.
//! - `join`, `say`, `rpc`: a client request, before the gateway acts on it;
//!   the client message is acknowledged only once it is handled.
//! - `lifecycle`: opened, detached, resumed, expired, closed; in order per
//!   session, after the fact.
//!
//! Requests of one session go through the backend one at a time, in the
//! order the client sent them ([`lanes`]); sessions do not wait for each other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::metrics::Metrics;

pub(crate) mod connect;
pub(crate) mod lanes;
pub(crate) mod requests;

/// `[hooks]` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The backend's base URL (`http://…` or `https://…`): hook `h` is
    /// POSTed to `{url}/{h}`. Absent: no hooks.
    pub url: Option<String>,
    /// Which hooks are called (any of connect, join, say, rpc, lifecycle).
    pub call: Vec<String>,
    /// How long one attempt may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first when the backend cannot be reached, times
    /// out or answers 5xx/429 (100 ms, 200 ms, 400 ms … apart).
    pub retries: u32,
    /// Headers sent with every call (e.g. a shared secret).
    pub headers: BTreeMap<String, String>,
    /// Headers whose value is read from an environment variable:
    /// header name → variable.
    pub headers_env: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url: None,
            call: Hook::ALL.iter().map(|h| h.name().to_owned()).collect(),
            timeout: Duration::from_secs(5),
            retries: 2,
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
        }
    }
}

/// A hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Connect,
    Join,
    Say,
    Rpc,
    Lifecycle,
}

impl Hook {
    pub(crate) const ALL: [Hook; 5] = [Hook::Connect, Hook::Join, Hook::Say, Hook::Rpc, Hook::Lifecycle];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Join => "join",
            Hook::Say => "say",
            Hook::Rpc => "rpc",
            Hook::Lifecycle => "lifecycle",
        }
    }
}

/// Why a hook gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookError {
    /// Not reached, timed out, or 5xx/429, on every attempt.
    Unavailable(String),
    /// An answer that is not the hook's (another 4xx, not JSON, wrong fields).
    Garbage(String),
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookError::Unavailable(e) => write!(f, "the backend did not answer: {e}"),
            HookError::Garbage(e) => write!(f, "the backend answered something unexpected: {e}"),
        }
    }
}

/// The answer of `connect`, `join` and `say`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Verdict {
    pub(crate) allow: bool,
    /// Refused: why (the client sees it).
    #[serde(default)]
    pub(crate) reason: Option<String>,
    /// connect: the user id (default: the token's subject, or anonymous).
    #[serde(default)]
    pub(crate) user: Option<String>,
    /// connect, join: the display name.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// connect: rooms the session may join (`*` at the end: a prefix).
    #[serde(default)]
    pub(crate) rooms: Option<Vec<String>>,
    /// connect: rooms the session may say in.
    #[serde(default)]
    pub(crate) publish: Option<Vec<String>>,
    /// say: the body to fan out instead of the client's.
    #[serde(default)]
    pub(crate) body: Option<Value>,
}

/// The answer of `rpc`: a result, or an error for the caller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RpcAnswer {
    #[serde(default)]
    pub(crate) result: Option<Value>,
    #[serde(default)]
    pub(crate) error: Option<RpcError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RpcError {
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
}

/// The backend's client.
pub(crate) struct Hooks {
    http: reqwest::Client,
    base: String,
    on: Vec<Hook>,
    timeout: Duration,
    retries: u32,
    metrics: Arc<Metrics>,
}

impl Settings {
    /// The hooks on, checked: None without a URL.
    pub(crate) fn check(&self) -> Result<Option<Vec<Hook>>> {
        let Some(url) = &self.url else { return Ok(None) };
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            anyhow::anyhow!("hooks.url: {url:?} is not a URL ({e}); write e.g. \"http://127.0.0.1:8080/tether\"")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            bail!("hooks.url: {url:?} must be http:// or https:// without a query; each hook is {url}/<hook>");
        }
        let mut on = Vec::new();
        for c in &self.call {
            match Hook::ALL.iter().find(|h| h.name() == c) {
                Some(h) if !on.contains(h) => on.push(*h),
                Some(_) => {}
                None => bail!("hooks.call: {c:?} is not a hook; the hooks are connect, join, say, rpc and lifecycle"),
            }
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            bail!(
                "hooks.timeout: {} is outside 1ms..=60s; a backend answers in well under a second (5s is the default)",
                humantime::format_duration(self.timeout)
            );
        }
        if self.retries > 10 {
            bail!("hooks.retries: {} is too many; 2 is typical, 10 the most", self.retries);
        }
        self.header_map()?;
        Ok(Some(on))
    }

    fn header_map(&self) -> Result<HeaderMap> {
        let mut h = HeaderMap::new();
        let env = self.headers_env.iter().map(|(k, var)| {
            let v = std::env::var(var).map_err(|_| {
                anyhow::anyhow!("hooks.headers_env: environment variable {var} (for {k}) is not set; export it")
            })?;
            Ok::<_, anyhow::Error>((k, v))
        });
        for kv in self.headers.iter().map(|(k, v)| Ok::<_, anyhow::Error>((k, v.clone()))).chain(env) {
            let (k, v): (&String, String) = kv?;
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| anyhow::anyhow!("hooks.headers: {k:?} is not a header name"))?;
            let value = HeaderValue::from_str(&v)
                .map_err(|_| anyhow::anyhow!("hooks.headers: the value of {k} is not a valid header value"))?;
            h.insert(name, value);
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(h)
    }
}

impl Hooks {
    /// The backend's client, None without `hooks.url`.
    pub(crate) fn new(s: &Settings, metrics: Arc<Metrics>) -> Result<Option<Arc<Hooks>>> {
        let Some(on) = s.check()? else { return Ok(None) };
        let http = reqwest::Client::builder()
            .default_headers(s.header_map()?)
            .timeout(s.timeout)
            .connect_timeout(s.timeout)
            .build()?;
        let base = s.url.as_deref().unwrap_or_default().trim_end_matches('/').to_owned();
        Ok(Some(Arc::new(Hooks { http, base, on, timeout: s.timeout, retries: s.retries, metrics })))
    }

    /// Whether this hook is called.
    pub(crate) fn calls(&self, h: Hook) -> bool {
        self.on.contains(&h)
    }

    /// Calls a hook with `body` under idempotency `key`, retrying what may
    /// pass, never beyond `deadline`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        hook: Hook,
        key: &str,
        body: &Value,
        deadline: Option<Instant>,
    ) -> Result<T, HookError> {
        let started = Instant::now();
        let r = self.attempts(hook, key, body, deadline).await;
        let outcome = match &r {
            Ok(_) => "ok",
            Err(HookError::Unavailable(_)) => "unavailable",
            Err(HookError::Garbage(_)) => "garbage",
        };
        self.metrics.hook(hook.name(), outcome, started.elapsed().as_secs_f64());
        if let Err(e) = &r {
            tracing::warn!(hook = hook.name(), key, %e, "backend hook failed");
        }
        r
    }

    async fn attempts<T: DeserializeOwned>(
        &self,
        hook: Hook,
        key: &str,
        body: &Value,
        deadline: Option<Instant>,
    ) -> Result<T, HookError> {
        let url = format!("{}/{}", self.base, hook.name());
        let bytes = serde_json::to_vec(body).map_err(|e| HookError::Garbage(e.to_string()))?;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let timeout = left.map_or(self.timeout, |l| l.min(self.timeout));
            if timeout.is_zero() {
                return Err(HookError::Unavailable(format!("no time left for {url}")));
            }
            let sent =
                self.http.post(&url).header("Idempotency-Key", key).timeout(timeout).body(bytes.clone()).send().await;
            let why = match sent {
                Ok(resp) if resp.status().is_success() => {
                    let text = resp.bytes().await.map_err(|e| HookError::Unavailable(e.to_string()))?;
                    return serde_json::from_slice(if text.is_empty() { b"{}" } else { &text }).map_err(|e| {
                        let shown = String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned();
                        HookError::Garbage(format!("POST {url} answered {shown:?}: {e}"))
                    });
                }
                Ok(resp) => {
                    let st = resp.status();
                    if !(st.is_server_error() || st.as_u16() == 429 || st.as_u16() == 408) {
                        return Err(HookError::Garbage(format!("POST {url} answered {st}")));
                    }
                    format!("POST {url} answered {st}")
                }
                Err(e) if e.is_timeout() => {
                    format!("POST {url} took longer than {}", humantime::format_duration(timeout))
                }
                Err(e) => format!("POST {url}: {}", error_chain(&e)),
            };
            attempt += 1;
            let past = deadline.is_some_and(|d| Instant::now() + backoff >= d);
            if attempt > self.retries || past {
                return Err(HookError::Unavailable(why));
            }
            tracing::debug!(hook = hook.name(), key, %why, ?backoff, "backend hook failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Milliseconds since the Unix epoch (lifecycle events' `at`).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

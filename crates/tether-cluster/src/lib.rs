//! # tether-cluster — sessions kept in Redis
//!
//! The Redis engine of [`tether_runtime::store::Store`]: every session's
//! record, tokens and unacknowledged messages live in Redis, so a session
//! can be resumed on any node and outlives the node that held it
//! (docs/CLUSTER.md). Each operation is one Lua script, atomic in Redis;
//! ownership is fenced; nodes hold leases, and sessions of a node whose
//! lease lapsed become orphans, kept for their grace and expired once,
//! cluster-wide.
//!
//! Targets one Redis (7.0 or later, or Valkey) — with replicas or Sentinel
//! for availability — not Redis Cluster: a commit stores messages for
//! several sessions in one atomic script.

mod scripts;

pub use redis;

/// The Lua every script of this engine starts with: the key layout and the
/// shared `append` (store a message for a session, numbered, waking its
/// owner). Applications that keep their own state beside the sessions in
/// the same Redis (the gateway's rooms) prefix their scripts with it, so
/// that their writes and the messages they send commit atomically.
pub const COMMON_LUA: &str = scripts::COMMON;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::Value;
use tether_proto::{ReplayLimits, SendError, SessionId, SessionRecord, TokenHash, TokenState};
use tether_runtime::store::{ClaimRefused, Claimed, Fence, Kicked, Notice, Store, StoreError, StoreFuture};
use tokio::sync::mpsc;

use self::scripts::Scripts;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS).
    pub url: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// Prefix of every key, so several clusters can share one Redis.
    pub prefix: String,
    /// Bounds on a session's stored messages (the server's replay limits).
    pub replay: ReplayLimits,
    /// How often the node renews its lease.
    pub lease_interval: Duration,
    /// A node silent this long is dead: its sessions become orphans.
    pub lease_ttl: Duration,
    /// Longest a Redis command may take before it counts as a failure.
    pub timeout: Duration,
}

impl RedisOptions {
    /// Defaults for `url` and `node`: prefix `tether`, the server's default
    /// replay limits, a lease renewed every 2 s and lapsing after 6 s, 2 s
    /// per command.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            node: node.into(),
            prefix: "tether".into(),
            replay: ReplayLimits::server_default(),
            lease_interval: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(6),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Redis could not be used at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use Redis at {url}: {source}; check that redis-server runs there, that the address, port and password are right, and that this host may reach it")]
pub struct ConnectError {
    /// The URL, password removed.
    pub url: String,
    /// What failed.
    #[source]
    pub source: redis::RedisError,
}

/// The Redis engine. Cheap to share; its lease, reaper and notice tasks run
/// until it is dropped.
pub struct RedisStore {
    opts: RedisOptions,
    con: ConnectionManager,
    scripts: Arc<Scripts>,
    notices: std::sync::Mutex<Option<mpsc::Receiver<Notice>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &redacted(&self.opts.url)).field("node", &self.opts.node).finish()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {e}"))
}

fn garbage(what: &str, v: &Value) -> StoreError {
    StoreError::Unavailable(format!("Redis answered {what} with something unexpected: {v:?}"))
}

impl RedisStore {
    /// Connects, checks Redis answers, takes this node's lease and starts
    /// the lease, reaper and notice tasks. Needs a tokio runtime.
    pub async fn connect(opts: RedisOptions) -> Result<Arc<RedisStore>, ConnectError> {
        let err = |source| ConnectError { url: redacted(&opts.url), source };
        let client = redis::Client::open(opts.url.as_str()).map_err(err)?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut con = tokio::time::timeout(opts.timeout * 2, ConnectionManager::new_with_config(client.clone(), cfg))
            .await
            .map_err(|_| err(redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))))?
            .map_err(err)?;
        let scripts = Arc::new(Scripts::new());
        let adopted: i64 =
            scripts.restart.arg(&opts.prefix).arg(&opts.node).invoke_async(&mut con).await.map_err(err)?;
        if adopted > 0 {
            tracing::info!(node = %opts.node, sessions = adopted, "sessions this node held before its restart are open for resumes on any node");
        }
        let lease: i64 = scripts.lease.arg(&opts.prefix).arg(&opts.node).invoke_async(&mut con).await.map_err(err)?;
        if lease == 0 {
            // A restart within the lease TTL (a deploy), or a second node
            // under the same name (a mistake the operator should hear of).
            tracing::info!(node = %opts.node, "this node id held a lease until now: a restart, or another node runs under it (give every node its own)");
        }
        let (tx, rx) = mpsc::channel(4096);
        let tasks = vec![
            tokio::spawn(lease_loop(opts.clone(), con.clone(), scripts.clone(), tx.clone())),
            tokio::spawn(notice_loop(opts.clone(), client, tx)),
        ];
        Ok(Arc::new(RedisStore { opts, con, scripts, notices: std::sync::Mutex::new(Some(rx)), tasks }))
    }

    /// The options it runs with.
    pub fn options(&self) -> &RedisOptions {
        &self.opts
    }

    /// Its command connection (multiplexed, reconnecting), for scripts of
    /// the application's own that start with [`COMMON_LUA`].
    pub fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    /// A message's fate from `append` (as the scripts return it): its seq,
    /// 0 gone, -1 replay buffer full, -(max + 3) too large for the client's
    /// frames (which carry `max` bytes of payload).
    pub fn fate(&self, v: &Value, len: usize) -> Result<u64, SendError> {
        fate(v, len, &self.opts.replay)
    }

    fn limits(&self) -> (usize, usize) {
        (self.opts.replay.max_messages, self.opts.replay.max_bytes)
    }
}

fn hex_hash(h: &TokenHash) -> String {
    hex::encode(h.as_bytes())
}

fn hashes(list: &[u8]) -> Vec<TokenHash> {
    list.chunks(64)
        .filter_map(|c| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(c, &mut b).ok().map(|()| TokenHash::from_bytes(b))
        })
        .collect()
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

fn messages(v: &Value, first: u64) -> Option<Vec<(u64, Bytes)>> {
    let Value::Array(items) = v else { return None };
    items.iter().enumerate().map(|(i, m)| Some((first + i as u64, Bytes::copy_from_slice(bytes(m)?)))).collect()
}

fn parse_id(hex_id: &[u8]) -> Option<SessionId> {
    let mut b = [0u8; 16];
    hex::decode_to_slice(hex_id, &mut b).ok()?;
    Some(SessionId::from_bytes(b))
}

/// The claim script's answer, as a record.
fn claimed(id: SessionId, v: &Value) -> Option<Result<Claimed, ClaimRefused>> {
    let Value::Array(f) = v else { return None };
    match int(f.first()?)? {
        -1 => return Some(Err(ClaimRefused::Unknown)),
        -2 => return Some(Err(ClaimRefused::InvalidToken)),
        -3 => return Some(Err(ClaimRefused::TokenReused)),
        _ => {}
    }
    let fence = u64::try_from(int(&f[0])?).ok()?;
    let user = bytes(f.get(1)?).filter(|u| !u.is_empty()).map(|u| Arc::from(String::from_utf8_lossy(u).as_ref()));
    let current = *hashes(bytes(f.get(2)?)?).first()?;
    let tokens = TokenState::from_parts(current, &hashes(bytes(f.get(3)?)?), &hashes(bytes(f.get(4)?)?));
    let n = |i: usize| f.get(i).and_then(int).and_then(|x| u64::try_from(x).ok());
    let (committed, acked, next_seq, idle, mf) = (n(5)?, n(6)?, n(7)?, n(8)?, n(9)?);
    let record = SessionRecord {
        id,
        tokens,
        committed,
        acked,
        next_seq,
        unacked: messages(f.get(10)?, acked + 1)?,
        idle_timeout: Duration::from_millis(idle),
        peer_max_frame: u32::try_from(mf).ok()?,
    };
    Some(Ok(Claimed { fence, record, user }))
}

/// Each message's fate from the append script.
fn fates(items: &[Value], messages: &[(SessionId, Bytes)], limits: &ReplayLimits) -> Vec<Result<u64, SendError>> {
    items.iter().zip(messages).map(|(v, (_, payload))| fate(v, payload.len(), limits)).collect()
}

/// One message's fate: its seq, 0 gone, -1 full, -(max + 3) too large.
fn fate(v: &Value, len: usize, limits: &ReplayLimits) -> Result<u64, SendError> {
    match int(v) {
        Some(s) if s > 0 => Ok(s.unsigned_abs()),
        Some(-1) => Err(SendError::BufferFull { messages: limits.max_messages, bytes: limits.max_bytes }),
        Some(s) if s <= -3 => Err(SendError::TooLarge { len, max: usize::try_from(-s - 3).unwrap_or(usize::MAX) }),
        _ => Err(SendError::NoSession),
    }
}

fn pairs(inv: &mut redis::ScriptInvocation<'_>, messages: &[(SessionId, Bytes)]) {
    inv.arg(messages.len());
    for (to, payload) in messages {
        inv.arg(to.to_string()).arg(payload.as_ref());
    }
}

impl Store for RedisStore {
    fn node(&self) -> &str {
        &self.opts.node
    }

    fn open<'a>(&'a self, record: &'a SessionRecord, user: Option<&'a str>, grace: Duration) -> StoreFuture<'a, Fence> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let (current, _, _) = record.tokens.parts();
            let _: i64 = self
                .scripts
                .open
                .arg(&self.opts.prefix)
                .arg(record.id.to_string())
                .arg(&self.opts.node)
                .arg(user.unwrap_or(""))
                .arg(hex_hash(&current))
                .arg(record.committed)
                .arg(record.acked)
                .arg(record.next_seq)
                .arg(u64::try_from(record.idle_timeout.as_millis()).unwrap_or(u64::MAX))
                .arg(record.peer_max_frame)
                .arg(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX))
                .invoke_async(&mut con)
                .await
                .map_err(unavailable)?;
            Ok(1)
        })
    }

    fn claim(
        &self,
        id: SessionId,
        presented: TokenHash,
        fresh: TokenHash,
    ) -> StoreFuture<'_, Result<Claimed, ClaimRefused>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let v: Value = self
                .scripts
                .claim
                .arg(&self.opts.prefix)
                .arg(id.to_string())
                .arg(&self.opts.node)
                .arg(hex_hash(&presented))
                .arg(hex_hash(&fresh))
                .invoke_async(&mut con)
                .await
                .map_err(unavailable)?;
            claimed(id, &v).ok_or_else(|| garbage("a claim", &v))
        })
    }

    fn commit(
        &self,
        id: SessionId,
        fence: Fence,
        seq: u64,
        effects: Vec<(SessionId, Bytes)>,
    ) -> StoreFuture<'_, Vec<Result<u64, SendError>>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let (maxm, maxb) = self.limits();
            let mut inv = self.scripts.commit.prepare_invoke();
            inv.arg(&self.opts.prefix).arg(id.to_string()).arg(&self.opts.node).arg(fence).arg(seq).arg(maxm).arg(maxb);
            pairs(&mut inv, &effects);
            let v: Value = inv.invoke_async(&mut con).await.map_err(unavailable)?;
            let Value::Array(items) = &v else { return Err(garbage("a commit", &v)) };
            match items.first().and_then(int) {
                Some(-2) => Err(StoreError::Gone(id)),
                Some(-1) => Err(StoreError::Fenced(id)),
                Some(0) => Ok(Vec::new()), // committed before: nothing stored again
                Some(1) => Ok(fates(&items[1..], &effects, &self.opts.replay)),
                _ => Err(garbage("a commit", &v)),
            }
        })
    }

    fn append(&self, messages: Vec<(SessionId, Bytes)>) -> StoreFuture<'_, Vec<Result<u64, SendError>>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let (maxm, maxb) = self.limits();
            let mut inv = self.scripts.append.prepare_invoke();
            inv.arg(&self.opts.prefix).arg(&self.opts.node).arg(maxm).arg(maxb);
            pairs(&mut inv, &messages);
            let v: Value = inv.invoke_async(&mut con).await.map_err(unavailable)?;
            match &v {
                Value::Array(items) => Ok(fates(items, &messages, &self.opts.replay)),
                _ => Err(garbage("an append", &v)),
            }
        })
    }

    fn fetch(&self, id: SessionId, from: u64) -> StoreFuture<'_, Vec<(u64, Bytes)>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let v: Value = self
                .scripts
                .fetch
                .arg(&self.opts.prefix)
                .arg(id.to_string())
                .arg(from)
                .invoke_async(&mut con)
                .await
                .map_err(unavailable)?;
            let Value::Array(f) = &v else { return Err(garbage("a fetch", &v)) };
            match f.first().and_then(int) {
                Some(-1) => Err(StoreError::Gone(id)),
                Some(first) if first > 0 => {
                    f.get(1).and_then(|m| messages(m, first.unsigned_abs())).ok_or_else(|| garbage("a fetch", &v))
                }
                _ => Err(garbage("a fetch", &v)),
            }
        })
    }

    fn acked(&self, id: SessionId, fence: Fence, ack: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let r: i64 = self
                .scripts
                .acked
                .arg(&self.opts.prefix)
                .arg(id.to_string())
                .arg(fence)
                .arg(ack)
                .invoke_async(&mut con)
                .await
                .map_err(unavailable)?;
            fenced(id, r)
        })
    }

    fn confirm(&self, id: SessionId, fence: Fence, token: TokenHash) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let r: i64 = self
                .scripts
                .confirm
                .arg(&self.opts.prefix)
                .arg(id.to_string())
                .arg(fence)
                .arg(hex_hash(&token))
                .invoke_async(&mut con)
                .await
                .map_err(unavailable)?;
            fenced(id, r)
        })
    }

    fn end(&self, id: SessionId, fence: Fence) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let r: i64 = self
                .scripts
                .end
                .arg(&self.opts.prefix)
                .arg(id.to_string())
                .arg(fence)
                .invoke_async(&mut con)
                .await
                .map_err(unavailable)?;
            fenced(id, r)
        })
    }

    fn kick<'a>(&'a self, id: SessionId, reason: &'a str) -> StoreFuture<'a, Kicked> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let r: i64 = self
                .scripts
                .kick
                .arg(&self.opts.prefix)
                .arg(id.to_string())
                .arg(reason)
                .invoke_async(&mut con)
                .await
                .map_err(unavailable)?;
            Ok(match r {
                1 => Kicked::Forwarded,
                2 => Kicked::Ended,
                _ => Kicked::Unknown,
            })
        })
    }

    fn notices(&self) -> Option<mpsc::Receiver<Notice>> {
        self.notices.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn fenced(id: SessionId, r: i64) -> Result<(), StoreError> {
    match r {
        -2 => Err(StoreError::Gone(id)),
        -1 => Err(StoreError::Fenced(id)),
        _ => Ok(()),
    }
}

/// Renews this node's lease and runs the reaper: sessions of dead nodes
/// become orphans; due orphans expire (reported by whichever node expired
/// them, once).
async fn lease_loop(opts: RedisOptions, mut con: ConnectionManager, scripts: Arc<Scripts>, tx: mpsc::Sender<Notice>) {
    let every = (opts.lease_interval / 2).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_lease = tokio::time::Instant::now();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    loop {
        tick.tick().await;
        if last_lease.elapsed() >= opts.lease_interval {
            let r: redis::RedisResult<i64> =
                scripts.lease.arg(&opts.prefix).arg(&opts.node).invoke_async(&mut con).await;
            match r {
                Ok(fresh) => {
                    last_lease = tokio::time::Instant::now();
                    if fresh == 1 {
                        tracing::warn!(node = %opts.node, "this node's lease had lapsed: its sessions were handed to the cluster");
                        if tx.send(Notice::LeaseLost).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!(%e, "cannot renew this node's lease in Redis"),
            }
        }
        let r: redis::RedisResult<Value> = scripts
            .reap
            .arg(&opts.prefix)
            .arg(ms(opts.lease_ttl))
            .arg(ms(opts.lease_interval))
            .arg(256)
            .invoke_async(&mut con)
            .await;
        let Ok(Value::Array(parts)) = r else { continue };
        let (Some(Value::Array(items)), Some(Value::Array(orphaned))) = (parts.first(), parts.get(1)) else { continue };
        for id in orphaned.iter().filter_map(bytes).filter_map(parse_id) {
            if tx.send(Notice::Orphaned(id)).await.is_err() {
                return;
            }
        }
        for pair in items.chunks(2) {
            let Some(session) = pair.first().and_then(bytes).and_then(parse_id) else { continue };
            let user = pair.get(1).and_then(bytes).filter(|u| !u.is_empty());
            let user = user.map(|u| Arc::from(String::from_utf8_lossy(u).as_ref()));
            if tx.send(Notice::OrphanExpired { session, user }).await.is_err() {
                return;
            }
        }
    }
}

/// Listens on this node's channel; after a reconnect, wake-ups may have
/// been missed, so every session is told to catch up.
async fn notice_loop(opts: RedisOptions, client: redis::Client, tx: mpsc::Sender<Notice>) {
    use futures_util::StreamExt as _;
    let channel = format!("{}:w:{}", opts.prefix, opts.node);
    let mut first = true;
    loop {
        let sub = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            redis::RedisResult::Ok(ps)
        };
        let mut ps = match tokio::time::timeout(opts.timeout * 2, sub).await {
            Ok(Ok(ps)) => ps,
            Ok(Err(e)) => {
                tracing::warn!(%e, "cannot subscribe to this node's Redis channel; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => continue,
        };
        if !first && tx.send(Notice::Missed).await.is_err() {
            return;
        }
        first = false;
        let mut stream = ps.on_message();
        while let Some(msg) = stream.next().await {
            let payload = msg.get_payload_bytes();
            let (Some(kind), Some(id)) = (payload.first(), payload.get(1..33).and_then(parse_id)) else { continue };
            let n = match kind {
                b'w' => Notice::Wake(id),
                b't' => Notice::TakenOver(id),
                b'k' => Notice::Kick {
                    session: id,
                    reason: String::from_utf8_lossy(payload.get(33..).unwrap_or_default()).into_owned(),
                },
                _ => continue,
            };
            if tx.send(n).await.is_err() {
                return;
            }
        }
        tracing::warn!("this node's Redis channel closed; resubscribing");
    }
}

//! Accepting connections: admission control, TLS and WebSocket set-up, the
//! first frame within the handshake timeout, then the core's [`admit`]:
//! a new session, a resume claimed under the session's lock, or a refusal.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tether_proto::{
    admit, Admission, Admitted, CloseCode, Frame, Refusal, RejectReason, ResumeToken, ServerSession, SessionId,
    Sessions, TransportId,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use super::session::{self, Durable, Incoming, SessionCell};
use super::{stored, Applicant, Denial, Inner, ServerEvent};
use crate::driver::now;
use crate::store::{ClaimRefused, Fence, SharedStore};
use crate::transport::{self, http, Io, Kind, RecvError, Transport};

const REFUSAL_FLUSH: Duration = Duration::from_secs(1);

pub(super) async fn accept_loop(inner: Arc<Inner>, kind: Kind, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = inner.accepting.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(%e, %kind, "accept failed; pausing 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if inner.pending.load(Ordering::Relaxed) >= inner.max_pending {
            // A flood: dropping unanswered costs nothing; clients back off.
            drop(tcp);
            continue;
        }
        if inner.limiter.as_ref().is_some_and(|l| !l.allow(peer.ip(), std::time::Instant::now())) {
            // One address opening connections in a loop: turned away before
            // any TLS or WebSocket work; other addresses are unaffected.
            inner.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection refused: too many from this address");
            drop(tcp);
            continue;
        }
        let permit = inner.handshakes.clone().try_acquire_owned().ok();
        let pending = Pending::new(inner.clone());
        tokio::spawn(async move {
            handshake(&pending.0, kind, tcp, peer, permit).await;
            drop(pending);
        });
    }
}

/// Counts a handshake in progress until dropped, also when the handshake
/// task panics (e.g. in an application's authenticator): a leaked count
/// would end in every connection being dropped unanswered.
struct Pending(Arc<Inner>);

impl Pending {
    fn new(inner: Arc<Inner>) -> Self {
        inner.pending.fetch_add(1, Ordering::Relaxed);
        Pending(inner)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handshake(
    inner: &Arc<Inner>,
    kind: Kind,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let deadline = tokio::time::Instant::now() + inner.cfg.handshake_timeout;
    if let Err(e) = inner.tuning.apply(&tcp) {
        tracing::debug!(%e, %peer, "socket tuning failed");
    }
    let max = inner.cfg.max_frame;
    let left = PeerLeft::of(&tcp);
    // From a trusted load balancer: the client's address it reports.
    let proxy = inner.proxies.as_ref().filter(|p| p.trusts(peer.ip()));
    if proxy.is_some_and(|p| p.proxy_protocol) {
        match tokio::time::timeout_at(deadline, transport::proxied::read_header(&mut tcp)).await {
            Ok(Ok(Some(client))) => peer = client,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return tracing::debug!(%e, %peer, "connection from a trusted proxy refused"),
            Err(_) => return tracing::debug!(%peer, "no PROXY protocol header in time"),
        }
    }
    let mut forwarded = None;
    let setup = async {
        let io = match (kind, &inner.tls) {
            (Kind::Tcp | Kind::Ws, _) => Io::Plain(tcp),
            (Kind::Tls | Kind::Wss, Some(config)) => {
                Io::ServerTls(Box::new(transport::server_tls::ServerTlsStream::accept(tcp, config.clone()).await?))
            }
            (Kind::Tls | Kind::Wss, None) => return Err(std::io::Error::other("no TLS certificate configured")),
        };
        Ok(match kind {
            Kind::Tcp | Kind::Tls => Some(Transport::stream(io, max)),
            Kind::Ws | Kind::Wss => {
                let tls = kind == Kind::Wss;
                match http::accept(io, max, &inner.origins, proxy, &inner.routes, tls).await? {
                    http::Accepted::Ws(ws, xff) => {
                        forwarded = xff;
                        Some(Transport::ws(*ws, tls, max))
                    }
                    http::Accepted::Http(t, xff) => {
                        forwarded = xff;
                        Some(t)
                    }
                    http::Accepted::Upstream => None, // POSTs of a fallback transport, served on their own
                }
            }
        })
    };
    let mut t = match tokio::time::timeout_at(deadline, setup).await {
        Ok(Ok(Some(t))) => t,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return tracing::debug!(%e, %peer, %kind, "connection set-up failed"),
        Err(_) => return tracing::debug!(%peer, %kind, "connection set-up timed out"),
    };
    if let Some(ip) = forwarded {
        peer = SocketAddr::new(ip, 0);
    }
    let bytes = match tokio::time::timeout_at(deadline, t.recv()).await {
        Ok(Ok(b)) => b,
        Ok(Err(RecvError::Decode(e))) => return refuse(inner, t, peer, Refusal::decode(&e)).await,
        Ok(Err(RecvError::Io(e))) => return tracing::debug!(%e, %peer, "closed before HELLO"),
        Err(_) => return refuse(inner, t, peer, Refusal::handshake_timeout()).await,
    };
    let hello_at = std::time::Instant::now();
    inner.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    if left.check() {
        // A HELLO its client gave up on while this server was busy (every
        // client reconnecting at once): the client has resumed elsewhere
        // since, or will. Claiming the session now would only take it away
        // from the transport that carries it (PROTOCOL §5.4).
        return tracing::debug!(%peer, "the client closed the connection before its HELLO was handled; ignored");
    }
    let refusal = inner.refusal().or_else(|| {
        permit.is_none().then(|| {
            // Spread over a window that grows with the storm (pace.rs),
            // within a third of the grace for a new session, a sixth for a
            // resume: a session found lost late in its grace must still have
            // time for its retry, and another if that one is refused too.
            let resume =
                matches!(Frame::decode(&bytes, inner.cfg.max_frame), Ok(Frame::Hello(h)) if h.resume.is_some());
            let cap = inner.cfg.grace / if resume { 6 } else { 3 };
            let window = inner.pace.refused(std::time::Instant::now(), inner.overload_retry, cap);
            (RejectReason::Overloaded, inner.spread(inner.overload_retry, window))
        })
    });
    // A new session's admission may need I/O (an application's backend):
    // decided here, before anything is claimed, within the handshake's time.
    let mut decided = None;
    if let (Some(a), None) = (&inner.auth, refusal) {
        if let Ok(Frame::Hello(h)) = Frame::decode(&bytes, inner.cfg.max_frame) {
            let speaks = (h.min_version..=h.max_version).contains(&tether_proto::frame::VERSION);
            if h.resume.is_none() && speaks {
                let who = Applicant { credential: &h.auth, peer, kind };
                match tokio::time::timeout_at(deadline, a.admit(who)).await {
                    Ok(Ok(user)) => decided = Some(Ok(user)),
                    Ok(Err(Denial::Refused(why))) => decided = Some(Err(why)),
                    Ok(Err(Denial::Unavailable { message, retry_after })) => {
                        let retry = inner.spread(retry_after, retry_after);
                        return refuse(inner, t, peer, Refusal::reject(RejectReason::Overloaded, retry, &message))
                            .await;
                    }
                    Err(_) => return refuse(inner, t, peer, Refusal::handshake_timeout()).await,
                }
            }
        }
    }
    let tid = TransportId(inner.next_tid.fetch_add(1, Ordering::Relaxed) + 1);
    // A fork: the shared generator is not held through the authenticator.
    let mut rng = inner.rng().fork();
    let mut fresh_token = None;
    if let Some(store) = &inner.store {
        match claim_from_store(inner, store, &mut rng, &bytes, refusal, kind, peer).await {
            Ok(token) => fresh_token = token,
            Err(r) => return refuse(inner, t, peer, r).await,
        }
    }
    let mut claim = Claim { inner, kind, incoming: Some(Incoming { tid, transport: t, peer }), hello_at };
    let authenticate = |hello: &tether_proto::frame::Hello| match (&inner.auth, decided) {
        (None, _) => Ok(None),
        (Some(_), Some(d)) => d.map(Some),
        (Some(a), None) => a.authenticate(&hello.auth).map(Some),
    };
    let a = Admission { now: now(), tid, refusal, fresh_token };
    match admit(a, &inner.cfg, &mut rng, &bytes, &mut claim, authenticate) {
        Admitted::Opened { session, user } => {
            let Some(incoming) = claim.incoming.take() else { return };
            let mut fence = None;
            if let Some(store) = &inner.store {
                let grace = inner.cfg.grace;
                match bounded(store.open(&session.record(), user.as_deref(), grace)).await {
                    Ok(f) => fence = Some(f),
                    Err(e) => {
                        tracing::warn!(%e, %peer, "new session not recorded in the store; refused for now");
                        return refuse(inner, incoming.transport, peer, store_trouble(inner)).await;
                    }
                }
            }
            open(inner, kind, *session, user, incoming, fence);
            inner.pace.admitted();
        }
        Admitted::Resumed { .. } => inner.pace.admitted(), // the claim handed the transport over
        Admitted::Refused(r) => {
            if let Some(inc) = claim.incoming.take() {
                refuse(inner, inc.transport, peer, r).await;
            }
        }
    }
}

/// Whether the client has already closed a connection: on Linux, a
/// non-blocking peek at the socket under any TLS or WebSocket layer finds
/// the end of the stream (or a reset) with nothing left before it.
struct PeerLeft(#[cfg(target_os = "linux")] std::os::fd::RawFd);

impl PeerLeft {
    fn of(tcp: &TcpStream) -> Self {
        #[cfg(target_os = "linux")]
        return PeerLeft(std::os::fd::AsRawFd::as_raw_fd(tcp));
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tcp;
            PeerLeft()
        }
    }

    /// Only while the connection's transport is alive (the descriptor is
    /// its own).
    fn check(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            use nix::errno::Errno;
            use nix::sys::socket::{recv, MsgFlags};
            let mut b = [0u8; 1];
            matches!(
                recv(self.0, &mut b, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
                Ok(0) | Err(Errno::ECONNRESET | Errno::EPIPE)
            )
        }
        #[cfg(not(target_os = "linux"))]
        false
    }
}

/// With a store, a resume first claims its session there in one atomic
/// step (token check, the fresh token recorded, this node the owner) and
/// carries it on from the record; the handshake then goes on with that
/// fresh token. Anything else passes through untouched.
async fn claim_from_store(
    inner: &Arc<Inner>,
    store: &SharedStore,
    rng: &mut tether_proto::Rng,
    bytes: &[u8],
    refusal: Option<(RejectReason, Duration)>,
    kind: Kind,
    peer: SocketAddr,
) -> Result<Option<ResumeToken>, Refusal> {
    let Ok(Frame::Hello(hello)) = Frame::decode(bytes, inner.cfg.max_frame) else { return Ok(None) };
    let Some(r) = hello.resume else { return Ok(None) };
    if refusal.is_some_and(|(reason, _)| reason == RejectReason::ShuttingDown) {
        return Ok(None); // refused by admit, without touching the store
    }
    let fresh = ResumeToken::random(rng);
    match bounded(store.claim(r.session_id, r.token.hash(), fresh.hash())).await {
        Ok(Ok(claimed)) => match stored::install(inner, claimed, kind, peer) {
            Ok(()) => Ok(Some(fresh)),
            Err(e) => {
                tracing::error!(%e, "a damaged session record; the client starts a new session");
                Err(Refusal::resume_failed(RejectReason::UnknownSession))
            }
        },
        Ok(Err(refused)) => Err(Refusal::resume_failed(match refused {
            ClaimRefused::Unknown => RejectReason::UnknownSession,
            ClaimRefused::InvalidToken => RejectReason::InvalidToken,
            ClaimRefused::TokenReused => RejectReason::TokenReused,
        })),
        Err(e) => {
            tracing::warn!(%e, session = %r.session_id, "resume not claimed in the store; refused for now");
            Err(store_trouble(inner))
        }
    }
}

/// Longest a handshake waits for the store before refusing for now.
const STORE_WAIT: Duration = Duration::from_secs(3);

/// A store operation, or Unavailable after [`STORE_WAIT`].
async fn bounded<T>(op: crate::store::StoreFuture<'_, T>) -> Result<T, crate::store::StoreError> {
    match tokio::time::timeout(STORE_WAIT, op).await {
        Ok(r) => r,
        Err(_) => Err(crate::store::StoreError::Unavailable(format!("the store did not answer within {STORE_WAIT:?}"))),
    }
}

/// The store cannot answer: come back shortly (REJECT 5, retry-after).
fn store_trouble(inner: &Inner) -> Refusal {
    let retry = inner.spread(inner.overload_retry, inner.overload_retry * 2);
    Refusal::reject(RejectReason::Overloaded, retry, "the session store is unavailable; retry after the delay given")
}

/// Registers a new session and starts its task on its first transport.
fn open(
    inner: &Arc<Inner>,
    kind: Kind,
    core: ServerSession,
    user: Option<Arc<str>>,
    first: Incoming,
    fence: Option<Fence>,
) {
    let id = core.id();
    let cell = Arc::new(SessionCell::new(core));
    {
        let mut st = cell.lock();
        st.peer = Some((kind, first.peer));
        st.user = user;
        let token = Some(st.core.token());
        st.durable = fence.map(|fence| Box::new(Durable { fence, stored_token: token, ..Durable::default() }));
    }
    inner.registry().insert(id, cell.clone());
    session::spawn(inner.clone(), id, cell, first);
}

/// The registry as [`admit`] sees it: a resume is claimed under the
/// session's own lock, and a transport it attached is handed to the
/// session's task in that same critical section.
struct Claim<'a> {
    inner: &'a Arc<Inner>,
    kind: Kind,
    incoming: Option<Incoming>,
    /// When the HELLO was read (the resume handshake's time).
    hello_at: std::time::Instant,
}

impl Sessions for Claim<'_> {
    fn claim<R>(&mut self, id: SessionId, claim: impl FnOnce(&mut ServerSession) -> R) -> Option<R> {
        let cell = self.inner.cell(id)?;
        let mut timings = None;
        let r = {
            let mut st = cell.lock();
            let since = st.outage_since();
            let r = claim(&mut st.core);
            let attached = self.incoming.as_ref().is_some_and(|inc| st.core.transport() == Some(inc.tid));
            if attached {
                let outage = since.map(|s| now().saturating_duration_since(s));
                timings = Some((outage, self.hello_at.elapsed()));
                if let Some(d) = st.durable.as_mut() {
                    (d.restored, d.outage_since) = (false, None);
                }
                if let Some(inc) = self.incoming.take() {
                    st.peer = Some((self.kind, inc.peer));
                    if let Some(displaced) = st.incoming.replace(Box::new(inc)) {
                        // This resume overtook one whose transport the task
                        // had not taken yet: the core closed that transport
                        // (1000), so say so on it here.
                        let bye =
                            Frame::close(CloseCode::TransportReplaced, Duration::ZERO, "resumed on another transport");
                        tokio::spawn(transport::close_with(displaced.transport, Some(bye), REFUSAL_FLUSH));
                    }
                }
            }
            r
        };
        // Observed before the session's task is woken to write the WELCOME
        // (a client that sees it has, almost always, its resume counted).
        if let (Some((outage, handshake)), Some(o)) = (timings, &self.inner.observer) {
            if let Some(outage) = outage {
                o.resumed(outage);
            }
            o.resume_handshake(handshake);
        }
        // Whatever the outcome (attached, or ended by a frame limit), the
        // session's task has work.
        cell.wake();
        Some(r)
    }
}

async fn refuse(inner: &Inner, t: Transport, peer: SocketAddr, r: Refusal) {
    if let Some(reason) = r.reason {
        // Counted always; the event may be dropped when the queue is full.
        if let Some(c) = inner.rejects.get(usize::from(reason.to_u8())) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let _ = inner.events.try_send(ServerEvent::Rejected { peer, reason });
    }
    transport::close_with(t, r.frame, REFUSAL_FLUSH).await;
}

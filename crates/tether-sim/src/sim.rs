//! The driver: one [`Client`] and one [`Server`] from tether-proto, a virtual
//! clock, the simulated [`Path`], application traffic and the [`Ledger`].
//!
//! It follows the core's drive contract to the letter: after every input it
//! drains transmits, and takes events as the applications can (not while an
//! [`Fault::AppLag`] holds one back); it sleeps (jumps the clock) to the
//! earliest of the next network event and both machines' `poll_timeout`.
//!
//! With [`SimConfig::store`], the server is one node of a cluster whose
//! sessions live in a [`Store`]: see `sim/durable.rs` for what a node does around
//! its core, and how a node dies ([`Fault::NodeDeath`]).

mod durable;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use tether_proto::{
    Client, ClientConfig, ClientEvent, Frame, Rng, SendError, Server, ServerConfig, SessionEvent, SessionId, Transmit,
    TransportId,
};

use crate::check::{client_msg, server_msg, Ledger};
use crate::net::{Dir, Fault, Path, PathConfig, Side};
use crate::store::Store;
use durable::Node;

/// Everything that defines one run. Two runs with equal configs are identical.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds the network, the traffic and both machines.
    pub seed: u64,
    /// Client settings.
    pub client: ClientConfig,
    /// Server settings.
    pub server: ServerConfig,
    /// Delay, jitter, RTO.
    pub path: PathConfig,
    /// The faults.
    pub faults: Vec<Fault>,
    /// Total virtual time.
    pub duration: Duration,
    /// Applications stop sending after this.
    pub traffic_until: Duration,
    /// Mean gap between client messages (None: the client sends nothing).
    pub client_every: Option<Duration>,
    /// Mean gap between server messages (None: the server sends nothing).
    pub server_every: Option<Duration>,
    /// Messages get 0..=max_pad extra bytes.
    pub max_pad: usize,
    /// Gaps between messages: exponential around the mean (true) or exactly
    /// the mean (false, for tests that need a fixed cadence).
    pub poisson: bool,
    /// A store-backed server (None: sessions live in the server's memory
    /// only, and die with it).
    pub store: Option<StoreConfig>,
}

/// How a store-backed server application behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Every `echo_every`-th client message (by index) is answered with a
    /// server message stored as an effect of its commit (0: none).
    pub echo_every: u32,
    /// How long the application waits before retrying store operations
    /// that failed because the store was down.
    pub retry: Duration,
    /// The retry-after of a handshake refused because the store is down.
    pub refuse_for: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { echo_every: 4, retry: Duration::from_millis(500), refuse_for: Duration::from_secs(1) }
    }
}

impl SimConfig {
    /// A quiet default run: default settings, no faults, no traffic.
    pub fn new(seed: u64, client: ClientConfig) -> Self {
        SimConfig {
            seed,
            client,
            server: ServerConfig::default(),
            path: PathConfig::default(),
            faults: Vec::new(),
            duration: Duration::from_secs(120),
            traffic_until: Duration::from_secs(120),
            client_every: None,
            server_every: None,
            max_pad: 32,
            poisson: true,
            store: None,
        }
    }

    /// Makes the server store-backed: sessions live in a [`Store`] that
    /// survives node deaths, acks wait for commits (`commit_acks`).
    pub fn with_store(mut self) -> Self {
        self.store = Some(StoreConfig::default());
        self.server.commit_acks = true;
        self
    }
}

/// Frame counts, by sender.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// PINGs the client sent.
    pub client_pings: u64,
    /// Frames the client sent.
    pub client_frames: u64,
    /// Frames the server sent.
    pub server_frames: u64,
    /// Connection attempts.
    pub connects: u64,
    /// Sends refused with BufferFull (client, server; a store-backed
    /// server's sends also when the store is down or its outbox full).
    pub refused: (u64, u64),
    /// Server nodes that died.
    pub node_deaths: u64,
    /// Resumes whose session was claimed from the store.
    pub claims: u64,
    /// Handshakes refused because the store was down.
    pub store_refusals: u64,
    /// Commits retried after a lost reply and found already done.
    pub recommits: u64,
}

#[derive(Debug)]
enum Ev {
    ConnectDone(u64),
    ConnectFail(u64),
    ToServer(u64, Vec<u8>),
    ToClient(u64, Vec<u8>),
    FinToServer(u64),
    FinToClient(u64),
    KillAll,
    /// The server node dies; a new one accepts connections after `down`.
    NodeDeath {
        down: Duration,
        reset: bool,
    },
    /// The node retries its failed store operations.
    StoreRetry(u32),
    /// A dead node's session is due to expire in the store.
    Reap(SessionId),
    LinkSignal(bool),
    ClientSend,
    ServerSend,
    /// An application lag ends: it takes its backlog now.
    LagEnd,
}

struct Queued {
    at: Instant,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Debug)]
struct SimLink {
    stid: Option<TransportId>,
    client_open: bool,
    server_open: bool,
    reset: bool,
    last_up: Instant,
    last_down: Instant,
    nat_last: Instant,
    nat_dead: bool,
    /// The server has had this transport's first frame.
    hello: bool,
    /// The session a WELCOME on this transport named.
    session: Option<SessionId>,
    /// The server end died with its node: nothing it sent that has not
    /// arrived yet ever will (no host is left to retransmit it).
    dead: bool,
}

/// One simulated run.
pub struct Sim {
    /// The configuration it was built from.
    pub cfg: SimConfig,
    base: Instant,
    now: Instant,
    net_rng: Rng,
    app_rng: Rng,
    /// The client machine under test.
    pub client: Client,
    /// The server machine under test (the node alive now).
    pub server: Server,
    /// The session store of a store-backed server.
    pub store: Option<Store>,
    /// What the current node holds in memory beside its core.
    node: Node,
    node_rng: Rng,
    /// Node deaths, claims, refusals, orphans, with their times.
    pub node_log: Vec<(Duration, String)>,
    path: Path,
    links: BTreeMap<u64, SimLink>,
    by_stid: HashMap<TransportId, u64>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    /// Deliveries, hand-backs and violations.
    pub ledger: Ledger,
    /// Every client event but messages, with its time.
    pub client_log: Vec<(Duration, ClientEvent)>,
    /// Every server event but messages, with its time and session.
    pub server_log: Vec<(Duration, SessionId, SessionEvent)>,
    /// Frame counts.
    pub stats: Stats,
    /// Times the client sent a PING.
    pub ping_times: Vec<Duration>,
    /// Times the client asked for a connection.
    pub connect_times: Vec<Duration>,
    /// Most transports the client had opening (not yet connected) at once.
    pub max_opening: usize,
    epoch: u32,
    client_session: Option<SessionId>,
    server_session: Option<SessionId>,
    kills_after_resume: (u32, Duration),
}

impl Sim {
    /// Builds a run. Panics on an invalid machine config (a test bug).
    pub fn new(cfg: SimConfig) -> Self {
        Self::with_base(cfg, epoch())
    }

    /// Builds a run on a given virtual epoch.
    pub fn with_base(cfg: SimConfig, base: Instant) -> Self {
        let mut root = Rng::from_seed(cfg.seed);
        let client = Client::new(cfg.client.clone(), root.fork(), base).expect("client config must be valid");
        let server = Server::new(cfg.server.clone(), root.fork()).expect("server config must be valid");
        let store = cfg.store.as_ref().map(|_| {
            let down: Vec<_> = cfg
                .faults
                .iter()
                .filter_map(|f| match f {
                    Fault::StoreDown { start, len } => Some((*start, *len)),
                    _ => None,
                })
                .collect();
            Store::new(base, &down, cfg.server.replay.clone(), cfg.server.grace)
        });
        let kills = cfg.faults.iter().find_map(|f| match f {
            Fault::KillDuringReplay { count, after } => Some((*count, *after)),
            _ => None,
        });
        let mut sim = Sim {
            base,
            now: base,
            net_rng: root.fork(),
            app_rng: root.fork(),
            // Forked after the others: runs without node deaths draw exactly
            // what they drew before nodes could die.
            node_rng: root.fork(),
            client,
            server,
            store,
            node: Node::default(),
            node_log: Vec::new(),
            path: Path { base, cfg: cfg.path.clone(), faults: cfg.faults.clone() },
            links: BTreeMap::new(),
            by_stid: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            ledger: Ledger::default(),
            client_log: Vec::new(),
            server_log: Vec::new(),
            stats: Stats::default(),
            ping_times: Vec::new(),
            connect_times: Vec::new(),
            max_opening: 0,
            epoch: 0,
            client_session: None,
            server_session: None,
            kills_after_resume: kills.unwrap_or((0, Duration::ZERO)),
            cfg,
        };
        for f in sim.cfg.faults.clone() {
            match f {
                Fault::Kill { at } => sim.push(base + at, Ev::KillAll),
                Fault::Outage { start, len, link_signal: true } => {
                    sim.push(base + start, Ev::LinkSignal(false));
                    sim.push(base + start + len, Ev::LinkSignal(true));
                }
                Fault::AppLag { start, len, .. } => sim.push(base + start + len, Ev::LagEnd),
                Fault::NodeDeath { at, down, reset } => sim.push(base + at, Ev::NodeDeath { down, reset }),
                _ => {}
            }
        }
        if let Some(m) = sim.cfg.client_every {
            let d = sim.exp_gap(m);
            sim.push(base + d, Ev::ClientSend);
        }
        if let Some(m) = sim.cfg.server_every {
            let d = sim.exp_gap(m);
            sim.push(base + d, Ev::ServerSend);
        }
        sim
    }

    /// Virtual time since the start.
    pub fn t(&self) -> Duration {
        self.now - self.base
    }

    /// The virtual epoch.
    pub fn base(&self) -> Instant {
        self.base
    }

    /// The session the client application believes it is in.
    pub fn client_session(&self) -> Option<SessionId> {
        self.client_session
    }

    /// Runs to the configured end.
    pub fn run(&mut self) {
        let end = self.base + self.cfg.duration;
        self.run_until(end);
    }

    /// Runs until virtual time `end` (absolute).
    pub fn run_until(&mut self, end: Instant) {
        let mut spins = 0u32;
        loop {
            self.drain();
            let next = [self.queue.peek().map(|q| q.0.at), self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|n| *n <= end) else {
                self.now = self.now.max(end);
                return;
            };
            if next <= self.now {
                spins += 1;
                assert!(spins < 100_000, "livelock: no progress at t={:?} (seed {})", self.t(), self.cfg.seed);
            } else {
                spins = 0;
                self.now = next;
            }
            while self.queue.peek().is_some_and(|q| q.0.at <= self.now) {
                if let Some(Reverse(q)) = self.queue.pop() {
                    self.apply(q.ev);
                    self.drain();
                }
            }
            if self.client.poll_timeout().is_some_and(|d| d <= self.now) {
                self.client.handle_timeout(self.now);
            }
            if self.server.poll_timeout().is_some_and(|d| d <= self.now) {
                self.server.handle_timeout(self.now);
            }
        }
    }

    /// Reports a network change to the client now.
    pub fn network_change(&mut self, key: Option<&str>) {
        self.client.handle_network_change(self.now, key);
        self.drain();
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued { at, seq: self.seq, ev }));
    }

    fn exp_gap(&mut self, mean: Duration) -> Duration {
        if !self.cfg.poisson {
            return mean;
        }
        let u = self.app_rng.unit().max(1e-9);
        mean.mul_f64(-u.ln()).min(mean * 20)
    }

    fn apply(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::ConnectDone(c) => {
                let node_down = self.node.down(now);
                let Some(l) = self.links.get_mut(&c) else { return };
                if !l.client_open || l.reset {
                    return;
                }
                if node_down {
                    // Nothing listens yet: the connection is refused.
                    l.client_open = false;
                    self.client.handle_transport_closed(now, TransportId(c));
                    return;
                }
                let stid = self.server.handle_accept(now);
                l.stid = Some(stid);
                l.nat_last = now;
                self.by_stid.insert(stid, c);
                // As the runtime does over tcp://: reachable when TCP is open
                // (racing stops, the handshake clock restarts, PROTOCOL §9.7),
                // then connected, with no TLS or WebSocket step between.
                self.client.handle_reachable(now, TransportId(c));
                self.client.handle_connected(now, TransportId(c));
            }
            Ev::ConnectFail(c) => {
                if let Some(l) = self.links.get_mut(&c).filter(|l| l.client_open) {
                    l.client_open = false;
                    self.client.handle_transport_closed(now, TransportId(c));
                }
            }
            Ev::ToServer(c, bytes) => {
                if let Some((Some(stid), true)) = self.links.get(&c).map(|l| (l.stid, l.server_open && !l.reset)) {
                    if self.store.is_some()
                        && self.links.get_mut(&c).is_some_and(|l| !std::mem::replace(&mut l.hello, true))
                    {
                        // A store-backed node's handshake: a resume claims its
                        // session from the store first.
                        if self.durable_handshake(stid, &bytes) {
                            self.server.handle_frame(now, stid, &bytes);
                        }
                        self.server.set_refusal(None);
                    } else {
                        self.server.handle_frame(now, stid, &bytes);
                    }
                }
            }
            Ev::ToClient(c, bytes) => {
                if self.links.get(&c).is_some_and(|l| l.client_open && !l.reset && !l.dead) {
                    self.client.handle_frame(now, TransportId(c), &bytes);
                }
            }
            Ev::FinToServer(c) => {
                if let Some(l) = self.links.get_mut(&c).filter(|l| l.server_open) {
                    l.server_open = false;
                    if let Some(stid) = l.stid {
                        self.server.handle_transport_closed(now, stid);
                    }
                }
            }
            Ev::FinToClient(c) => {
                if let Some(l) = self.links.get_mut(&c).filter(|l| l.client_open) {
                    l.client_open = false;
                    self.client.handle_transport_closed(now, TransportId(c));
                }
            }
            Ev::KillAll => {
                let delay = self.cfg.path.delay;
                let ids: Vec<u64> = self
                    .links
                    .iter()
                    .filter(|(_, l)| !l.reset && (l.client_open || l.server_open))
                    .map(|(c, _)| *c)
                    .collect();
                for c in ids {
                    if let Some(l) = self.links.get_mut(&c) {
                        l.reset = true;
                    }
                    self.push(now + delay, Ev::FinToClient(c));
                    self.push(now + delay, Ev::FinToServer(c));
                }
            }
            Ev::NodeDeath { down, reset } => self.node_death(down, reset),
            Ev::StoreRetry(node) => self.store_retry(node),
            Ev::Reap(id) => self.reap(id),
            Ev::LinkSignal(_up) => self.client.handle_network_change(now, None),
            Ev::LagEnd => {} // the drain after every event takes the backlog
            Ev::ClientSend => {
                // A lagging application is busy: it sends nothing either.
                if self.t() < self.cfg.traffic_until {
                    if !self.lagging(Side::Client) {
                        self.client_sends(now);
                    }
                    if let Some(m) = self.cfg.client_every {
                        let d = self.exp_gap(m);
                        self.push(now + d, Ev::ClientSend);
                    }
                }
            }
            Ev::ServerSend => {
                if self.t() < self.cfg.traffic_until {
                    if !self.lagging(Side::Server) {
                        if self.store.is_some() {
                            self.store_send();
                        } else {
                            self.server_sends(now);
                        }
                    }
                    if let Some(m) = self.cfg.server_every {
                        let d = self.exp_gap(m);
                        self.push(now + d, Ev::ServerSend);
                    }
                }
            }
        }
    }

    fn client_sends(&mut self, now: Instant) {
        let idx = self.ledger.client_sent.get(&self.epoch).copied().unwrap_or(0);
        let pad = self.app_rng.below_inclusive(self.cfg.max_pad as u64) as usize;
        match self.client.send(now, client_msg(self.epoch, idx, pad)) {
            Ok(_) => {
                self.ledger.client_sent.insert(self.epoch, idx + 1);
            }
            Err(SendError::BufferFull { .. }) => self.stats.refused.0 += 1,
            Err(e) => self.ledger.violations.push(format!("client send failed unexpectedly: {e}")),
        }
    }

    fn server_sends(&mut self, now: Instant) {
        if let Some(s) = self.server_session {
            let idx = self.ledger.server_sent.get(&s).copied().unwrap_or(0);
            let pad = self.app_rng.below_inclusive(self.cfg.max_pad as u64) as usize;
            match self.server.send(now, s, server_msg(s, idx, pad)) {
                Ok(_) => {
                    self.ledger.server_sent.insert(s, idx + 1);
                }
                Err(SendError::BufferFull { .. }) => self.stats.refused.1 += 1,
                Err(_) => {} // ended by overflow: the Ended event carries the hand-back
            }
        }
    }

    /// Carries out every transmit and handles every event, until both
    /// machines have nothing more to say.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.client.poll_transmit() {
                progressed = true;
                self.client_transmit(t);
            }
            while let Some(t) = self.server.poll_transmit() {
                progressed = true;
                self.server_transmit(t);
            }
            if !self.lagging(Side::Client) {
                while let Some(e) = self.client.poll_event() {
                    progressed = true;
                    self.client_event(e);
                }
            }
            if !self.lagging(Side::Server) {
                while let Some((id, e)) = self.server.poll_event() {
                    progressed = true;
                    self.server_event(id, e);
                }
            }
            if !progressed {
                if self.store.is_some() {
                    self.store_acks();
                }
                return;
            }
        }
    }

    /// True while `side`'s application takes no events.
    pub fn lagging(&self, side: Side) -> bool {
        let t = self.t();
        self.cfg.faults.iter().any(|f| match f {
            Fault::AppLag { start, len, side: s } => *s == side && t >= *start && t < *start + *len,
            _ => false,
        })
    }

    fn arrival(&mut self, c: u64, dir: Dir) -> Option<Instant> {
        let now = self.now;
        let nat = self.path.nat_timeout();
        let at = self.path.arrival(&mut self.net_rng, dir, now);
        let l = self.links.get_mut(&c)?;
        if l.reset {
            return None;
        }
        if let Some(x) = nat {
            if now.saturating_duration_since(l.nat_last) >= x {
                l.nat_dead = true;
            }
            if l.nat_dead {
                return None;
            }
            l.nat_last = now;
        }
        let last = if dir == Dir::Up { &mut l.last_up } else { &mut l.last_down };
        let at = at.max(*last);
        *last = at;
        Some(at)
    }

    fn client_transmit(&mut self, t: Transmit) {
        let now = self.now;
        match t {
            Transmit::Connect { transport } => {
                self.stats.connects += 1;
                self.connect_times.push(self.t());
                let opening = self.links.values().filter(|l| l.client_open && l.stid.is_none()).count();
                self.max_opening = self.max_opening.max(opening + 1);
                let c = transport.0;
                self.links.insert(
                    c,
                    SimLink {
                        stid: None,
                        client_open: true,
                        server_open: true,
                        reset: false,
                        last_up: now,
                        last_down: now,
                        nat_last: now,
                        nat_dead: false,
                        hello: false,
                        session: None,
                        dead: false,
                    },
                );
                match self.path.outage_at(now) {
                    Some((_, true)) => self.push(now + Duration::from_millis(1), Ev::ConnectFail(c)),
                    Some((end, false)) => {
                        // Linux retransmits a SYN 1, 3, 7, 15, 31 s after the
                        // first: the first one sent after the path returns
                        // connects (unless the client gave up before).
                        let syn =
                            [1u64, 3, 7, 15, 31, 63].iter().map(|s| now + Duration::from_secs(*s)).find(|t| *t >= end);
                        if let Some(syn) = syn {
                            self.push(syn + self.cfg.path.delay * 2, Ev::ConnectDone(c));
                        }
                    }
                    None => {
                        let up = self.path.arrival(&mut self.net_rng, Dir::Up, now);
                        let down = self.path.arrival(&mut self.net_rng, Dir::Down, up);
                        self.push(down, Ev::ConnectDone(c));
                    }
                }
            }
            Transmit::Send { transport, frame } => {
                self.stats.client_frames += 1;
                if matches!(frame, Frame::Ping { .. }) {
                    self.stats.client_pings += 1;
                    self.ping_times.push(self.t());
                }
                let c = transport.0;
                if self.links.get(&c).is_some_and(|l| l.client_open && l.stid.is_some()) {
                    if let Some(at) = self.arrival(c, Dir::Up) {
                        self.push(at, Ev::ToServer(c, frame.to_vec()));
                    }
                }
            }
            Transmit::Close { transport, .. } => {
                let c = transport.0;
                let was_open = self.links.get_mut(&c).map(|l| std::mem::replace(&mut l.client_open, false));
                if was_open == Some(true) && self.links.get(&c).is_some_and(|l| l.stid.is_some()) {
                    if let Some(at) = self.arrival(c, Dir::Up) {
                        self.push(at, Ev::FinToServer(c));
                    }
                }
            }
        }
    }

    fn server_transmit(&mut self, t: Transmit) {
        match t {
            Transmit::Connect { .. } => self.ledger.violations.push("server asked to connect".into()),
            Transmit::Send { transport, frame } => {
                self.stats.server_frames += 1;
                let Some(c) = self.by_stid.get(&transport).copied() else { return };
                if self.store.is_some() {
                    self.durable_frame(c, &frame);
                }
                if self.links.get(&c).is_some_and(|l| l.server_open) {
                    if let Some(at) = self.arrival(c, Dir::Down) {
                        self.push(at, Ev::ToClient(c, frame.to_vec()));
                    }
                }
            }
            Transmit::Close { transport, .. } => {
                let Some(c) = self.by_stid.get(&transport).copied() else { return };
                let was_open = self.links.get_mut(&c).map(|l| std::mem::replace(&mut l.server_open, false));
                if was_open == Some(true) {
                    if let Some(at) = self.arrival(c, Dir::Down) {
                        self.push(at, Ev::FinToClient(c));
                    }
                }
            }
        }
    }

    fn client_event(&mut self, e: ClientEvent) {
        let t = self.t();
        match &e {
            ClientEvent::Message(b) => return self.ledger.delivered_at_client(self.client_session, b),
            ClientEvent::Connected { session } => self.client_session = Some(*session),
            ClientEvent::Resumed { .. } if self.kills_after_resume.0 > 0 => {
                self.kills_after_resume.0 -= 1;
                let at = self.now + self.kills_after_resume.1;
                self.push(at, Ev::KillAll);
            }
            ClientEvent::SessionEnded { session, unacked, .. } => {
                if let Some(s) = session {
                    self.ledger.ended_client.push(*s);
                }
                self.ledger.client_handed_back(self.epoch, unacked);
                self.epoch += 1;
                self.client_session = None;
            }
            _ => {}
        }
        self.client_log.push((t, e));
    }

    fn server_event(&mut self, session: SessionId, e: SessionEvent) {
        let t = self.t();
        match &e {
            SessionEvent::Message(b) if self.store.is_some() => return self.took(session, b.clone()),
            SessionEvent::Message(b) => return self.ledger.delivered_at_server(session, b),
            SessionEvent::Opened => self.server_session = Some(session),
            SessionEvent::Ended { unacked, .. } => {
                if self.store.is_some() {
                    self.durable_end(session);
                }
                self.ledger.ended_server.push(session);
                self.ledger.server_handed_back(session, unacked);
                if self.server_session == Some(session) {
                    self.server_session = None;
                }
            }
            _ => {}
        }
        self.server_log.push((t, session, e));
    }

    /// A human-readable timeline of faults and both machines' events.
    pub fn timeline(&self) -> String {
        let mut lines: Vec<(Duration, u8, String)> = Vec::new();
        for f in &self.cfg.faults {
            match f {
                Fault::Outage { start, len, link_signal } => {
                    let what = if *link_signal { "cable pulled (link down)" } else { "upstream blackhole begins" };
                    lines.push((*start, 0, format!("network  {what}")));
                    let what = if *link_signal { "cable back (link up)" } else { "blackhole ends" };
                    lines.push((*start + *len, 0, format!("network  {what}")));
                }
                Fault::Stall { start, len, dir } => {
                    lines.push((*start, 0, format!("network  {dir:?} direction stalls for {len:?}")));
                }
                Fault::Loss { start, len, up, down } => {
                    lines.push((
                        *start,
                        0,
                        format!("network  loss {:.0}% up / {:.0}% down for {len:?}", up * 100.0, down * 100.0),
                    ));
                }
                Fault::Kill { at } => lines.push((*at, 0, "network  transport reset".into())),
                Fault::AppLag { start, len, side } => {
                    lines.push((*start, 0, format!("app      {side:?} application takes no events for {len:?}")));
                }
                Fault::StoreDown { start, len } => {
                    lines.push((*start, 0, format!("store    down for {len:?}")));
                    lines.push((*start + *len, 0, "store    back".into()));
                }
                _ => {}
            }
        }
        for (t, s) in &self.node_log {
            lines.push((*t, 0, format!("node     {s}")));
        }
        for (t, e) in &self.client_log {
            let s = match e {
                ClientEvent::Rtt(_) | ClientEvent::PongPayload(_) | ClientEvent::PingPayload(_) => continue,
                ClientEvent::Reconnecting { attempt, delay } => {
                    format!("attempt {} in {:.1}s", attempt + 1, delay.as_secs_f64())
                }
                ClientEvent::SessionEnded { session, reason, unacked, restarting } => {
                    format!(
                        "session {session:?} ended: {reason:?}; {} unacked handed back; restarting: {restarting}",
                        unacked.len()
                    )
                }
                other => format!("{other:?}"),
            };
            lines.push((*t, 1, format!("client   {s}")));
        }
        for p in &self.ping_times {
            lines.push((*p, 1, "client   PING".into()));
        }
        for (t, session, e) in &self.server_log {
            let s = match e {
                SessionEvent::Ended { reason, unacked } => {
                    format!("session {session:?} ended: {reason:?}; {} unacked handed back", unacked.len())
                }
                event => format!("session {session:?} {event:?}"),
            };
            lines.push((*t, 2, format!("server   {s}")));
        }
        lines.sort_by_key(|l| (l.0, l.1));
        lines.iter().map(|(t, _, s)| format!("{:>9.3}s  {s}\n", t.as_secs_f64())).collect()
    }
}

/// The one real clock read in the simulator: an anchor that virtual time is
/// counted from. Nothing depends on its value.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

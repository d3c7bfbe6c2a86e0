//! A runtime client of the gateway's room protocol for the tests, with
//! its session events on a channel.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tether_proto::{ClientConfig, ClientEvent, Profile};
use tether_runtime::client::{Client, ClientHandle, ClientOptions, Event};
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(15);

pub struct Peer {
    pub handle: ClientHandle,
    pub events: mpsc::UnboundedReceiver<ClientEvent>,
}

/// A client of `addr` presenting `credential`.
pub fn connect(addr: SocketAddr, credential: &str) -> Peer {
    let mut core = ClientConfig::profile(Profile::Realtime);
    core.auth = Bytes::from(credential.to_owned());
    connect_core(addr, core)
}

/// A client of `addr` with these session settings (no network watching).
pub fn connect_core(addr: SocketAddr, core: ClientConfig) -> Peer {
    let mut opts = ClientOptions::new(core);
    opts.watch_network = false;
    let mut client = Client::start(format!("tcp://{addr}").parse().unwrap(), opts).unwrap();
    let handle = client.handle();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = client.next_event().await {
            if let Event::Session(e) = e {
                if tx.send(e).is_err() {
                    return;
                }
            }
        }
    });
    Peer { handle, events }
}

impl Peer {
    pub async fn next(&mut self, what: &str, mut f: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if f(&e) => return e,
                Ok(Some(_)) => {}
                Ok(None) => panic!("client stopped while waiting for {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// The next room-protocol event matching `f`.
    pub async fn msg(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        loop {
            let e = self.next(what, |e| matches!(e, ClientEvent::Message(_))).await;
            let ClientEvent::Message(m) = e else { unreachable!() };
            let v: Value = serde_json::from_slice(&m).unwrap();
            if f(&v) {
                return v;
            }
        }
    }

    pub fn send(&self, v: Value) {
        self.handle.send(Bytes::from(v.to_string())).unwrap();
    }
}

/// The `error` event answering an `op`.
pub fn error_for(op: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["ev"] == "error" && v["op"] == op
}

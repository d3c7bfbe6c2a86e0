//! A client's login credential from a token source (`ClientOptions::token`):
//! asked before each fresh session's first connection, not for resumes;
//! a source that fails fails the attempt, which is retried with backoff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proxy::Proxy;
use common::{client_core, server_core, start_client, start_server};
use tether_proto::{ClientEvent, CloseCode};
use tether_runtime::client::{Event, TokenSource};
use tether_runtime::server::ServerEvent;
use tether_runtime::{Authenticate, ClientOptions, Kind, ServerOptions};

const WAIT: Duration = Duration::from_secs(10);

/// Accepts credentials "tok-N" and records every one it was shown.
struct Record(Arc<Mutex<Vec<String>>>);

impl Authenticate for Record {
    fn authenticate(&self, credential: &[u8]) -> Result<Arc<str>, String> {
        let c = String::from_utf8_lossy(credential).into_owned();
        self.0.lock().unwrap().push(c.clone());
        if c.starts_with("tok-") {
            Ok(Arc::from(c))
        } else {
            Err(format!("{c:?} is not a token"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fresh_session_asks_the_token_source_and_resumes_do_not() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut sopts = ServerOptions::new(server_core(Duration::from_secs(10)));
    sopts.auth = Some(Arc::new(Record(seen.clone())));
    let (server, slog, addr) = start_server(Kind::Tcp, sopts).await;

    // The first call fails (the identity provider is unreachable); then tok-1, tok-2...
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let source: TokenSource = Arc::new(move || {
        let n = c2.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n == 0 {
                Err("provider unreachable".to_owned())
            } else {
                Ok(format!("tok-{n}"))
            }
        })
    });
    let mut opts = ClientOptions::new(client_core());
    opts.watch_network = false;
    opts.token = Some(source);
    let proxy = Proxy::start(addr).await;
    let (client, log) = start_client(Kind::Tcp, proxy.addr, opts);

    log.wait(WAIT, |e| {
        matches!(e, Event::DialFailed { error } if error.contains("provider unreachable")).then_some(())
    })
    .await;
    let (_, first) = log
        .wait(WAIT, |e| if let Event::Session(ClientEvent::Connected { session }) = e { Some(*session) } else { None })
        .await;
    assert_eq!(*seen.lock().unwrap(), ["tok-1"]);

    // A transport loss: the session resumes, proven by its resume token; no call.
    proxy.reset_all();
    log.wait(WAIT, |e| matches!(e, Event::Session(ClientEvent::Resumed { .. })).then_some(())).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // The session ends (expired on the server): the fresh one asks again.
    server.close_session(first, CloseCode::SessionExpired, "expired");
    let (_, second) = log
        .wait(WAIT, |e| match e {
            Event::Session(ClientEvent::Connected { session }) if *session != first => Some(*session),
            _ => None,
        })
        .await;
    assert_ne!(first, second);
    assert_eq!(*seen.lock().unwrap(), ["tok-1", "tok-2"]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // The server's log is written after its WELCOME goes out: wait for the
    // second Opened, then check there was no third.
    slog.wait(WAIT, |e| match e {
        ServerEvent::Opened { session, .. } if *session == second => Some(()),
        _ => None,
    })
    .await;
    let opened = slog.snapshot().iter().filter(|(_, e)| matches!(e, ServerEvent::Opened { .. })).count();
    assert_eq!(opened, 2);
    client.close();
}

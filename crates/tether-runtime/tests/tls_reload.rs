//! A renewed certificate is served without a restart: after
//! `ServerTls::reload`, new handshakes get the new certificate, and the
//! session opened under the old one goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{certs, client_core, server_core, start_client, start_server};
use tether_proto::ClientEvent;
use tether_runtime::client::Event;
use tether_runtime::tls::{client_config_with_roots, ServerTls};
use tether_runtime::{ClientOptions, Kind, ServerOptions};

const WAIT: Duration = Duration::from_secs(10);

fn client(roots: rustls::RootCertStore) -> ClientOptions {
    let mut opts = ClientOptions::new(client_core());
    opts.watch_network = false;
    opts.dial.tls = Some(client_config_with_roots(roots).unwrap());
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_serves_new_handshakes_and_open_sessions_go_on() {
    let (old, new) = (certs(), certs());
    // The served files: the old pair first.
    std::fs::copy(&old.cert, old.cert.with_extension("served")).unwrap();
    std::fs::copy(&old.key, old.key.with_extension("served")).unwrap();
    let (cert, key) = (old.cert.with_extension("served"), old.key.with_extension("served"));
    let tls = Arc::new(ServerTls::load(&cert, &key).unwrap());
    let mut opts = ServerOptions::new(server_core(Duration::from_secs(10)));
    opts.tls = Some(tls.config());
    let (server, _slog, addr) = start_server(Kind::Wss, opts).await;

    let (first, flog) = start_client(Kind::Wss, addr, client(old.roots.clone()));
    let (_, (id, _)) = flog
        .wait(WAIT, |e| match e {
            Event::Session(ClientEvent::Connected { session }) => Some((*session, ())),
            _ => None,
        })
        .await;

    // Renewed: the files now hold the new pair; reloaded.
    std::fs::copy(&new.cert, &cert).unwrap();
    std::fs::copy(&new.key, &key).unwrap();
    tls.reload().unwrap();

    // A client trusting only the new certificate gets in; one trusting only
    // the old one no longer does.
    let (_second, slog2) = start_client(Kind::Wss, addr, client(new.roots.clone()));
    slog2.wait(WAIT, |e| matches!(e, Event::Session(ClientEvent::Connected { .. })).then_some(())).await;
    let (_third, tlog) = start_client(Kind::Wss, addr, client(old.roots.clone()));
    tlog.wait(WAIT, |e| matches!(e, Event::DialFailed { error } if error.contains("certificate")).then_some(())).await;

    // The session opened under the old certificate is still carried.
    server.send(id, "still here").unwrap();
    flog.wait(WAIT, |e| matches!(e, Event::Session(ClientEvent::Message(m)) if &m[..] == b"still here").then_some(()))
        .await;
    assert!(flog.snapshot().iter().all(|(_, e)| !matches!(e, Event::Session(ClientEvent::Disconnected { .. }))));
    first.close();
}

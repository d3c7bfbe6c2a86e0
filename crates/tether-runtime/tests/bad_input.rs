//! Bad input on real sockets gets the documented close code and does not
//! disturb other sessions; admission control and drain spread clients out;
//! socket options are read back from the kernel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client_core, server_core, start_client, start_server, wait_delivered, Rig};
use tether_proto::frame::{decode_stream, Close, Hello};
use tether_proto::{ClientEvent, CloseCode, Frame, RejectReason, TransportLoss};
use tether_runtime::client::Event;
use tether_runtime::server::ServerEvent;
use tether_runtime::{ClientOptions, Kind, ServerOptions, SocketReport, SocketTuning};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECS_10: Duration = Duration::from_secs(10);

/// Reads length-prefixed frames until one decodes or the stream ends.
async fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut buf = Vec::new();
    loop {
        if let Ok(Some((f, _))) = decode_stream(&buf, 1 << 20) {
            return Some(f);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(SECS_10, s.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn close_code(f: Option<Frame>) -> Option<CloseCode> {
    match f {
        Some(Frame::Close(Close { code, .. })) => Some(code),
        other => panic!("expected CLOSE, got {other:?}"),
    }
}

fn hello() -> Frame {
    Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        max_frame: 1 << 20,
        idle_timeout_ms: 10_000,
        resume: None,
        auth: Bytes::new(),
    })
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// A healthy session keeps exchanging messages while bad peers are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_their_close_codes_and_disturb_nobody() {
    let rig = Rig::start(Kind::Tcp, Duration::from_secs(30)).await;
    let id = rig.connected().await;
    let addr = rig.proxy.addr;

    // Unknown frame type → 2000.
    let mut s = raw(addr, &[0, 0, 0, 1, 0xff]).await;
    assert_eq!(close_code(read_frame(&mut s).await), Some(CloseCode::ProtocolError));
    // Zero length → 2000.
    let mut s = raw(addr, &[0, 0, 0, 0]).await;
    assert_eq!(close_code(read_frame(&mut s).await), Some(CloseCode::ProtocolError));
    // Oversize length, refused from the prefix alone → 2001.
    let mut s = raw(addr, &[0x7f, 0xff, 0xff, 0xff]).await;
    assert_eq!(close_code(read_frame(&mut s).await), Some(CloseCode::FrameTooLarge));
    // Not a HELLO first → 2000.
    let mut v = Vec::new();
    Frame::Ack { ack: 1 }.encode_length_prefixed(&mut v);
    let mut s = raw(addr, &v).await;
    assert_eq!(close_code(read_frame(&mut s).await), Some(CloseCode::ProtocolError));
    // An HTTP request on the TCP port: "GET " read as a length prefix is
    // 1.19 GB → 2001 from the prefix alone (§13), nothing buffered.
    let mut s = raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(close_code(read_frame(&mut s).await), Some(CloseCode::FrameTooLarge));

    // A valid HELLO, then garbage on the established transport → 2000, and
    // the session is detached, not ended.
    let mut v = Vec::new();
    hello().encode_length_prefixed(&mut v);
    let mut s = raw(addr, &v).await;
    assert!(matches!(read_frame(&mut s).await, Some(Frame::Welcome(_))));
    s.write_all(&[0, 0, 0, 2, 0x10, 0x00]).await.unwrap(); // truncated DATA
    let mut code = None;
    while let Some(f) = read_frame(&mut s).await {
        if let Frame::Close(c) = f {
            code = Some(c.code);
            break;
        }
    }
    assert_eq!(code, Some(CloseCode::ProtocolError));
    rig.sev
        .wait(SECS_10, |e| matches!(e, ServerEvent::Detached { reason: TransportLoss::Malformed(_), .. }).then_some(()))
        .await;

    // The healthy session never noticed.
    rig.client.send("c1").unwrap();
    rig.server.send(id, "s1").unwrap();
    wait_delivered(&rig, 1, 1, SECS_10).await;
    assert_eq!(rig.client.resumes(), 0);
}

/// A connection that sends nothing gets CLOSE 1002 after the handshake
/// timeout (2 s here), not before and not much after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshake_gets_1002() {
    let (_server, _log, addr) = start_server(Kind::Tcp, ServerOptions::new(server_core(SECS_10))).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0]).await.unwrap(); // half a length prefix, then nothing
    assert_eq!(close_code(read_frame(&mut s).await), Some(CloseCode::HandshakeTimeout));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "closed after only {took:?}");
    assert!(took <= Duration::from_secs(5), "closed only after {took:?}");
}

/// WebSocket: a text message is 2000, an oversize message WebSocket status
/// 1009; an upgrade without `tether.v1` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_text_and_missing_subprotocol() {
    let (_server, _log, addr) = start_server(Kind::Ws, ServerOptions::new(server_core(SECS_10))).await;
    let url: url::Url = format!("ws://{addr}/t").parse().unwrap();

    let tcp = TcpStream::connect(addr).await.unwrap();
    let req = yawc::HttpRequest::builder().header("Sec-WebSocket-Protocol", "tether.v1");
    let mut ws =
        yawc::WebSocket::handshake_with_request(url.clone(), tcp, yawc::Options::default(), req).await.unwrap();
    use futures_util::SinkExt;
    ws.send(yawc::Frame::text("hello")).await.unwrap();
    let msg = tokio::time::timeout(SECS_10, ws.next_frame()).await.unwrap().unwrap();
    assert_eq!(msg.opcode(), yawc::OpCode::Binary);
    let f = Frame::decode(msg.payload(), 1 << 20).unwrap();
    assert!(matches!(f, Frame::Close(Close { code: CloseCode::ProtocolError, .. })), "{f:?}");

    // A binary message over the server's max_frame is refused by the
    // WebSocket layer as soon as its header arrives: close status 1009
    // (Message Too Big), the WebSocket's own code for it (PROTOCOL.md §2.2).
    // Only the header is sent: it announces more than max_frame, and the
    // server must answer without waiting for (or reading) the payload. (Had
    // the payload been sent, the server's close with unread data would reset
    // the connection, and the test would race the reset.)
    let max = ServerOptions::new(server_core(SECS_10)).core.max_frame as u64;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Protocol: tether.v1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(SECS_10, s.read_exact(&mut b)).await.unwrap().unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // FIN + binary, masked, 64-bit length, then the mask key.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(max + 1000).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&frame).await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(SECS_10, s.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply[0], 0x88, "expected a WebSocket close frame, got {reply:?}");
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 1009, "close status");

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("tether.v1"), "{resp}");
}

/// Too many handshakes at once: the extra client is refused with
/// Overloaded and a retry-after, obeys it, and gets in once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_rejects_with_retry_after_that_clients_obey() {
    let mut sopts = ServerOptions::new(server_core(SECS_10));
    sopts.max_handshakes = 1;
    sopts.overload_retry = Duration::from_millis(700);
    let (server, _log, addr) = start_server(Kind::Tcp, sopts).await;
    // Holds the only handshake slot until its 2 s handshake timeout.
    let _slow = TcpStream::connect(addr).await.unwrap();
    while server.handshakes_in_progress() == 0 {
        tokio::task::yield_now().await;
    }
    let mut copts = ClientOptions::new(client_core());
    copts.watch_network = false;
    let (client, log) = start_client(Kind::Tcp, addr, copts);
    let (rejected_at, _) = log
        .wait(SECS_10, |e| match e {
            Event::Session(ClientEvent::AttemptFailed {
                reason: TransportLoss::Rejected { reason: RejectReason::Overloaded, .. },
            }) => Some(()),
            _ => None,
        })
        .await;
    let (_, delay) = log
        .wait(SECS_10, |e| match e {
            Event::Session(ClientEvent::Reconnecting { delay, .. }) if !delay.is_zero() => Some(*delay),
            _ => None,
        })
        .await;
    assert!(delay >= Duration::from_millis(700), "retry-after ignored: waited {delay:?}");
    let (connected_at, _) =
        log.wait(SECS_10, |e| matches!(e, Event::Session(ClientEvent::Connected { .. })).then_some(())).await;
    assert!(connected_at - rejected_at >= Duration::from_millis(700));
    assert!(client.is_established());
    // The server counted the refusal (the metric of the gateway reads this).
    let overloaded = server.rejects().into_iter().find(|(r, _)| *r == RejectReason::Overloaded).map(|(_, n)| n);
    assert!(overloaded.is_some_and(|n| n >= 1), "rejects: {:?}", server.rejects());
}

/// Drain: every attached client is told to go away with a delay spread over
/// the window, so they do not all come back in the same instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_spreads_reconnects() {
    let mut sopts = ServerOptions::new(server_core(SECS_10));
    sopts.seed = Some(7);
    let (server, slog, addr) = start_server(Kind::Tcp, sopts).await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        let mut copts = ClientOptions::new(client_core());
        copts.watch_network = false;
        clients.push(start_client(Kind::Tcp, addr, copts));
    }
    for (_, log) in &clients {
        log.wait(SECS_10, |e| matches!(e, Event::Session(ClientEvent::Connected { .. })).then_some(())).await;
    }
    let told = server.drain(Duration::from_secs(2));
    assert_eq!(told, 12);
    let mut delays = Vec::new();
    for (_, log) in &clients {
        let (_, reason) = log
            .wait(SECS_10, |e| match e {
                Event::Session(ClientEvent::Disconnected { reason }) => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert!(matches!(&reason, TransportLoss::PeerClosed { code: CloseCode::GoingAway, .. }), "{reason:?}");
        let (_, d) = log
            .wait(SECS_10, |e| match e {
                Event::Session(ClientEvent::Reconnecting { delay, .. }) => Some(*delay),
                _ => None,
            })
            .await;
        delays.push(d);
    }
    delays.sort();
    let spread = delays[delays.len() - 1] - delays[0];
    assert!(delays[delays.len() - 1] <= Duration::from_millis(2600), "{delays:?}");
    assert!(spread >= Duration::from_millis(500), "reconnects not spread out: {delays:?}");
    // Sessions stay in grace for another node (or a restart) to take.
    assert_eq!(server.session_count(), 12);
    drop(slog);
}

/// Shutdown stops every session task at once (they are woken, they hold no
/// cancellation future each): the clients lose their transports and the
/// registry empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_session_task() {
    let (server, slog, addr) = start_server(Kind::Ws, ServerOptions::new(server_core(SECS_10))).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        // Quiet clients (default profile: a heartbeat every 25 s), so no
        // frame from them wakes a session task before shutdown does.
        let mut copts = ClientOptions::new(tether_proto::ClientConfig::profile(tether_proto::Profile::Default));
        copts.watch_network = false;
        clients.push(start_client(Kind::Ws, addr, copts));
    }
    for (_, log) in &clients {
        log.wait(SECS_10, |e| matches!(e, Event::Session(ClientEvent::Connected { .. })).then_some(())).await;
    }
    assert_eq!(server.session_count(), 5);
    server.shutdown();
    for (_, log) in &clients {
        log.wait(Duration::from_secs(5), |e| {
            matches!(e, Event::Session(ClientEvent::Disconnected { .. })).then_some(())
        })
        .await;
    }
    let deadline = Instant::now() + SECS_10;
    while server.session_count() > 0 {
        assert!(Instant::now() < deadline, "{} sessions left after shutdown", server.session_count());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(slog);
}

/// Keepalive, TCP_USER_TIMEOUT and NODELAY are in effect on real sockets,
/// as derived from the heartbeat, on the client and on an accepted socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_options_read_back() {
    let rig = Rig::start(Kind::Tcp, SECS_10).await;
    rig.connected().await;
    let want = SocketTuning::from_heartbeat(&rig.client_opts.core.heartbeat);
    let (_, report) = rig
        .cev
        .wait(SECS_10, |e| match e {
            Event::Dialed { socket, .. } => *socket,
            _ => None,
        })
        .await;
    assert_eq!(report.keepalive, want.keepalive);
    assert_eq!(report.user_timeout, want.user_timeout);
    assert!(report.nodelay);
    assert_eq!(want.user_timeout, Some(Duration::from_millis(1500)), "dead-after of the test heartbeat");

    // Server side: the tuning applied at accept.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    let _c = TcpStream::connect(a).await.unwrap();
    let (s, _) = listener.accept().await.unwrap();
    let before = SocketReport::read(&s).unwrap();
    assert_eq!(before.keepalive, None);
    let tuning = ServerOptions::new(server_core(SECS_10)).tuning;
    tuning.apply(&s).unwrap();
    let after = SocketReport::read(&s).unwrap();
    assert_eq!(after.keepalive, tuning.keepalive);
    assert_eq!(after.user_timeout, tuning.user_timeout);
    assert!(after.nodelay);
}

/// A client drops; a message too large for the maximum frame it will
/// announce waits for it; it resumes announcing that smaller maximum. The
/// session ends with CLOSE 3005 and the message is handed back — it is
/// never written in a frame the client must refuse (which looped forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_too_small_for_a_queued_message_ends_with_3005_and_hands_it_back() {
    let (server, slog, addr) = start_server(Kind::Tcp, ServerOptions::new(server_core(SECS_10))).await;
    let mut v = Vec::new();
    hello().encode_length_prefixed(&mut v);
    let mut s = raw(addr, &v).await;
    let Some(Frame::Welcome(w)) = read_frame(&mut s).await else { panic!("expected WELCOME") };
    drop(s);
    slog.wait(SECS_10, |e| matches!(e, ServerEvent::Detached { .. }).then_some(())).await;
    let big = Bytes::from(vec![b'x'; 16_520]);
    server.send(w.session_id, big.clone()).expect("the client announced 1 MiB");
    let resume = tether_proto::frame::Resume { session_id: w.session_id, token: w.token, last_received: 0 };
    let Frame::Hello(mut h) = hello() else { unreachable!() };
    h.max_frame = 16_384;
    h.resume = Some(resume);
    let mut v = Vec::new();
    Frame::Hello(h).encode_length_prefixed(&mut v);
    let mut s = raw(addr, &v).await;
    assert_eq!(close_code(read_frame(&mut s).await), Some(CloseCode::FrameLimit));
    assert!(read_frame(&mut s).await.is_none(), "closed after the CLOSE");
    let (_, (reason, unacked)) = slog
        .wait(SECS_10, |e| match e {
            ServerEvent::Ended { reason, unacked, .. } => Some((reason.clone(), unacked.clone())),
            _ => None,
        })
        .await;
    assert!(matches!(reason, tether_proto::SessionEnd::Incompatible(_)), "{reason:?}");
    assert_eq!(unacked, vec![big]);
    assert_eq!(server.send(w.session_id, "after"), Err(tether_proto::SendError::NoSession));
}

/// The WebSocket request path carries no meaning: any path (and query) is
/// accepted (docs/PROTOCOL.md §2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_websocket_path_is_accepted() {
    let (_server, _slog, addr) = start_server(Kind::Ws, ServerOptions::new(server_core(SECS_10))).await;
    for path in ["/", "/some/where?room=lobby&x=1"] {
        let url: tether_runtime::Endpoint = format!("ws://{addr}{path}").parse().unwrap();
        let mut copts = ClientOptions::new(client_core());
        copts.watch_network = false;
        let mut client = tether_runtime::client::Client::start(url, copts).unwrap();
        let connected = tokio::time::timeout(SECS_10, async {
            while let Some(e) = client.next_event().await {
                if matches!(e, Event::Session(ClientEvent::Connected { .. })) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(connected, Ok(true), "path {path}");
    }
}

/// During a drain the listeners close (new connections are refused by the
/// OS, so a load balancer or a process sharing the port takes them), and a
/// handshake already accepted is answered REJECT 6 with a retry-after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_refuses_handshakes_in_progress_with_6_and_closes_the_listener() {
    let (server, _slog, addr) = start_server(Kind::Tcp, ServerOptions::new(server_core(SECS_10))).await;
    let mut early = TcpStream::connect(addr).await.unwrap();
    // The drain must come after the server accepted it (a connection still in
    // the kernel's backlog is reset when the listener closes): wait for the
    // handshake to be counted, not for a guessed time.
    let deadline = tokio::time::Instant::now() + SECS_10;
    while server.handshakes_in_progress() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the server never accepted the connection");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.drain(Duration::from_secs(3));
    let mut v = Vec::new();
    hello().encode_length_prefixed(&mut v);
    early.write_all(&v).await.unwrap();
    match read_frame(&mut early).await {
        Some(Frame::Reject(r)) => {
            assert_eq!(r.reason, RejectReason::ShuttingDown);
            assert!(r.retry_after_ms > 0);
        }
        other => panic!("expected REJECT 6, got {other:?}"),
    }
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener must be closed during a drain");
}

/// A HELLO whose client has already closed the connection is one it gave up
/// on (its handshake timed out while the server was busy); acting on it
/// would take the session away from the transport carrying it. The HELLO
/// and the FIN arrive in one segment (TCP_CORK holds the data until the
/// shutdown), so the server has both before it reads the HELLO.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_whose_client_already_left_is_ignored_and_the_live_transport_keeps_its_session() {
    let (_server, slog, addr) = start_server(Kind::Tcp, ServerOptions::new(server_core(SECS_10))).await;
    let mut v = Vec::new();
    hello().encode_length_prefixed(&mut v);
    let mut live = raw(addr, &v).await;
    let Some(Frame::Welcome(w)) = read_frame(&mut live).await else { panic!("expected WELCOME") };
    let resume = tether_proto::frame::Resume { session_id: w.session_id, token: w.token, last_received: 0 };
    let Frame::Hello(mut h) = hello() else { unreachable!() };
    h.resume = Some(resume);
    let mut stale_hello = Vec::new();
    Frame::Hello(h).encode_length_prefixed(&mut stale_hello);
    for left in [true, false] {
        let s = std::net::TcpStream::connect(addr).unwrap();
        socket2::SockRef::from(&s).set_tcp_cork(true).unwrap();
        std::io::Write::write_all(&mut &s, &stale_hello).unwrap();
        if !left {
            // The control: the same HELLO from a client still there resumes.
            socket2::SockRef::from(&s).set_tcp_cork(false).unwrap();
            s.set_nonblocking(true).unwrap();
            let mut s = TcpStream::from_std(s).unwrap();
            assert!(matches!(read_frame(&mut s).await, Some(Frame::Welcome(w)) if w.resumed));
            assert_eq!(close_code(read_frame(&mut live).await), Some(CloseCode::TransportReplaced));
            break;
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut s = TcpStream::from_std(s).unwrap();
        assert!(read_frame(&mut s).await.is_none(), "answered a client that had left");
        // The live transport still carries the session: a PING is answered.
        let mut p = Vec::new();
        Frame::Ping { nonce: 7, ack: 0, payload: Bytes::new() }.encode_length_prefixed(&mut p);
        live.write_all(&p).await.unwrap();
        assert!(matches!(read_frame(&mut live).await, Some(Frame::Pong { nonce: 7, .. })));
    }
    // One resume only: the control's. Events reach the log after the
    // frames go out, so wait for the control's; a stale one would precede it.
    slog.wait(Duration::from_secs(10), |e| matches!(e, ServerEvent::Resumed { .. }).then_some(())).await;
    let resumed = slog.snapshot().iter().filter(|(_, e)| matches!(e, ServerEvent::Resumed { .. })).count();
    assert_eq!(resumed, 1);
}

/// The Origin of a WebSocket upgrade (cross-site WebSocket hijacking): with
/// the same-host policy, a page of another site gets 403 naming the fix; a
/// page of the gateway's host, a listed origin and a client that is not a
/// browser (no Origin) are upgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_from_a_foreign_origin_is_refused_with_403() {
    let mut opts = ServerOptions::new(server_core(SECS_10));
    opts.origins = tether_runtime::transport::Origins::same_host(vec!["https://app.example.com".into()]);
    let (_server, _log, addr) = start_server(Kind::Ws, opts).await;
    let upgrade = |origin: Option<&str>| {
        let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
        format!(
            "GET /t HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: tether.v1\r\n\r\n",
            addr.port()
        )
    };
    let status = |req: String| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tokio::time::timeout(SECS_10, s.read_exact(&mut b)).await.unwrap().unwrap();
            head.push(b[0]);
        }
        let mut rest = String::new();
        if head.starts_with(b"HTTP/1.1 403") {
            s.read_to_string(&mut rest).await.unwrap();
        }
        (String::from_utf8(head).unwrap(), rest)
    };
    let (head, body) = status(upgrade(Some("https://evil.example"))).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(body.contains("listen.allowed_origins"), "{body}");
    for ok in [None, Some("http://localhost:7403"), Some("http://127.0.0.1:7403"), Some("https://app.example.com")] {
        let (head, _) = status(upgrade(ok)).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{ok:?}: {head}");
    }
}

/// A `wss://` client given no CA file trusts the system's root
/// certificates (as browsers and curl do), not nothing: against a server
/// with a test certificate the dial fails on that certificate's issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_file_tls_clients_trust_the_systems_roots() {
    let (_server, _log, addr) = start_server(Kind::Wss, ServerOptions::new(server_core(SECS_10))).await;
    let mut opts = ClientOptions::new(client_core());
    opts.watch_network = false;
    assert!(opts.dial.tls.is_none());
    let mut client = tether_runtime::Client::start(common::url(Kind::Wss, addr), opts).unwrap();
    let error = tokio::time::timeout(SECS_10, async {
        loop {
            if let Some(Event::DialFailed { error }) = client.next_event().await {
                return error;
            }
        }
    })
    .await
    .expect("no dial failure");
    assert!(error.contains("UnknownIssuer") || error.contains("found no root certificates on this system"), "{error}");
    client.handle().close();
}

/// One address opening connections in a loop is turned away at accept
/// once past its burst (closed, unanswered), while another address is
/// served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_an_addresss_burst_are_closed_at_accept_others_are_served() {
    let mut opts = ServerOptions::new(server_core(SECS_10));
    // One more per 100 s: none refills during the test.
    opts.per_address = Some(tether_runtime::server::PerAddress { rate: 0.01, burst: 2.0, exempt_loopback: false });
    let (server, _log, addr) = start_server(Kind::Tcp, opts).await;
    let mut v = Vec::new();
    hello().encode_length_prefixed(&mut v);
    let from = |src: &str| {
        let src: std::net::IpAddr = src.parse().unwrap();
        let v = v.clone();
        async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::new(src, 0)).unwrap();
            let mut s = s.connect(addr).await.unwrap();
            let _ = s.write_all(&v).await; // may fail: the server closed it
            read_frame(&mut s).await
        }
    };
    for i in 0..2 {
        assert!(matches!(from("127.0.0.1").await, Some(Frame::Welcome(_))), "connection {i} within the burst");
    }
    assert!(from("127.0.0.1").await.is_none(), "past the burst: closed unanswered");
    assert!(from("127.0.0.1").await.is_none());
    assert!(matches!(from("127.0.0.2").await, Some(Frame::Welcome(_))), "another address is served");
    assert_eq!(server.rate_limited(), 2);
}

/// Behind a trusted load balancer speaking the PROXY protocol, a session's
/// address is the client's from the header (version 1 and 2); a connection
/// from the balancer without a header is closed unanswered, and one from
/// elsewhere needs none (its own address is the truth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_proxy_protocol_header_names_the_client() {
    let peer_of = |log: &common::Log<ServerEvent>, n: usize| {
        let opened: Vec<SocketAddr> = log
            .snapshot()
            .iter()
            .filter_map(|(_, e)| match e {
                ServerEvent::Opened { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect();
        opened.get(n).copied()
    };
    let mut opts = ServerOptions::new(server_core(SECS_10));
    opts.proxies = Some(tether_runtime::transport::TrustedProxies::parse(&["127.0.0.0/8".into()], true).unwrap());
    let (_server, log, addr) = start_server(Kind::Tcp, opts).await;
    let mut h = Vec::new();
    hello().encode_length_prefixed(&mut h);

    let mut v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 4567 7400\r\n".to_vec();
    v1.extend_from_slice(&h);
    let mut s = raw(addr, &v1).await;
    assert!(matches!(read_frame(&mut s).await, Some(Frame::Welcome(_))));
    log.wait(SECS_10, |e| matches!(e, ServerEvent::Opened { .. }).then_some(())).await;
    assert_eq!(peer_of(&log, 0), Some("203.0.113.9:4567".parse().unwrap()));

    // Version 2, TCP over IPv6: signature, version/command, family, length, addresses, ports.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x21, 0, 36]);
    let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    v2.extend_from_slice(&src.octets());
    v2.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    v2.extend_from_slice(&[0x1f, 0x90, 0x1c, 0xe8]);
    v2.extend_from_slice(&h);
    let mut s2 = raw(addr, &v2).await;
    assert!(matches!(read_frame(&mut s2).await, Some(Frame::Welcome(_))));
    log.wait_from(1, SECS_10, |e| matches!(e, ServerEvent::Opened { .. }).then_some(())).await;
    assert_eq!(peer_of(&log, 1), Some("[2001:db8::7]:8080".parse().unwrap()));

    // From the trusted proxy, no header: closed without an answer.
    let mut s3 = raw(addr, &h).await;
    assert!(read_frame(&mut s3).await.is_none(), "a headerless connection from the proxy is refused");

    // Another server trusting another network: this client's header is not
    // believed (it is not read at all: the HELLO after it is garbage).
    let mut opts = ServerOptions::new(server_core(SECS_10));
    opts.proxies = Some(tether_runtime::transport::TrustedProxies::parse(&["10.0.0.0/8".into()], true).unwrap());
    let (_server, log2, addr2) = start_server(Kind::Tcp, opts).await;
    let mut direct = raw(addr2, &h).await;
    assert!(matches!(read_frame(&mut direct).await, Some(Frame::Welcome(_))));
    log2.wait(SECS_10, |e| matches!(e, ServerEvent::Opened { .. }).then_some(())).await;
    assert!(peer_of(&log2, 0).is_some_and(|p| p.ip().is_loopback()), "a direct client is its own address");
}

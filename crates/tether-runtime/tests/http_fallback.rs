//! The HTTP fallback (PROTOCOL §2.4) on a real WebSocket listener, spoken
//! by hand: a streaming POST carries the HELLO and gets the server's frames
//! as chunks; POSTs carry the client's frames; the transport ends with its
//! stream; a resume works on a new stream; and the refusals (unknown id,
//! reused id, foreign origin, no length) are the documented ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{server_core, start_server};
use tether_proto::frame::{decode_stream, Hello, Resume};
use tether_proto::Frame;
use tether_runtime::server::ServerEvent;
use tether_runtime::{Kind, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn hello(resume: Option<Resume>) -> Vec<u8> {
    let mut v = Vec::new();
    Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        max_frame: 1 << 20,
        idle_timeout_ms: 10_000,
        resume,
        auth: Bytes::new(),
    })
    .encode_length_prefixed(&mut v);
    v
}

fn post(id: &str, role: &str, body: &[u8], origin: Option<&str>) -> Vec<u8> {
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let mut r = format!(
        "POST /tether?tether={role}&id={id} HTTP/1.1\r\nHost: gw.example\r\n{origin}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The response head (status line and headers) of a request.
async fn head(s: &mut TcpStream) -> String {
    let mut h = Vec::new();
    let mut b = [0u8; 1];
    while !h.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut b)).await.expect("a response in time").unwrap();
        assert_eq!(n, 1, "closed before the response head ended: {}", String::from_utf8_lossy(&h));
        h.push(b[0]);
    }
    String::from_utf8(h).unwrap()
}

/// A fallback stream: its connection, and the frames decoded so far.
struct Stream {
    s: TcpStream,
    chunked: Vec<u8>,
}

impl Stream {
    async fn open(addr: SocketAddr, id: &str, first: &[u8]) -> (Stream, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&post(id, "stream", first, None)).await.unwrap();
        let h = head(&mut s).await;
        (Stream { s, chunked: Vec::new() }, h)
    }

    /// The next frame: chunks are undone, then length-prefixed frames cut.
    async fn frame(&mut self) -> Option<Frame> {
        let mut body = Vec::new();
        loop {
            // Undo the chunking of what has arrived.
            let mut rest = &self.chunked[..];
            let mut plain = Vec::new();
            while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
                let len = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
                if len == 0 {
                    return None; // the last chunk: the transport ended
                }
                if rest.len() < eol + 2 + len + 2 {
                    break;
                }
                plain.extend_from_slice(&rest[eol + 2..eol + 2 + len]);
                rest = &rest[eol + 2 + len + 2..];
            }
            body.clear();
            body.extend_from_slice(&plain);
            if let Ok(Some((f, used))) = decode_stream(&body, 1 << 20) {
                // Drop the chunks that carried it (one frame per chunk).
                let consumed = self.chunked.len() - rest.len();
                assert_eq!(used, plain.len(), "one frame per chunk");
                self.chunked.drain(..consumed);
                return Some(f);
            }
            let mut b = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.s.read(&mut b)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
            self.chunked.extend_from_slice(&b[..n]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_over_the_http_fallback_sends_receives_ends_and_resumes() {
    let (server, log, addr) = start_server(Kind::Ws, ServerOptions::new(server_core(Duration::from_secs(10)))).await;
    let id = "0123456789abcdef0123456789abcdef";
    let (mut stream, h) = Stream::open(addr, id, &hello(None)).await;
    assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
    assert!(h.contains("Transfer-Encoding: chunked") && h.contains("Cache-Control: no-store"), "{h}");
    let Some(Frame::Welcome(w)) = stream.frame().await else { panic!("expected WELCOME") };

    // Client → server: DATA in POSTs on one kept-alive connection, answered 204.
    let mut up = TcpStream::connect(addr).await.unwrap();
    for seq in 1..=2u64 {
        let mut f = Vec::new();
        Frame::Data { seq, payload: Bytes::from(format!("m{seq}")) }.encode_length_prefixed(&mut f);
        up.write_all(&post(id, "send", &f, None)).await.unwrap();
        let h = head(&mut up).await;
        assert!(h.starts_with("HTTP/1.1 204 No Content\r\n"), "{h}");
    }
    for n in 1..=2 {
        let want = Bytes::from(format!("m{n}"));
        log.wait(WAIT, |e| matches!(e, ServerEvent::Message { payload, .. } if *payload == want).then_some(())).await;
    }
    // Server → client: a chunk on the stream (the acks may come first).
    server.send(w.session_id, Bytes::from_static(b"hi")).unwrap();
    loop {
        match stream.frame().await {
            Some(Frame::Data { payload, .. }) => break assert_eq!(&payload[..], b"hi"),
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }

    // The client gives the stream up: the transport is lost, the session kept;
    // a POST for it now finds nothing.
    drop(stream);
    log.wait(WAIT, |e| matches!(e, ServerEvent::Detached { .. }).then_some(())).await;
    let mut f = Vec::new();
    Frame::Ping { nonce: 1, ack: 0, payload: Bytes::new() }.encode_length_prefixed(&mut f);
    up.write_all(&post(id, "send", &f, None)).await.unwrap();
    assert!(head(&mut up).await.starts_with("HTTP/1.1 404"), "a POST to a transport that ended");

    // A resume on a new stream (another id) carries the session on.
    let resume = Resume { session_id: w.session_id, token: w.token, last_received: 1 };
    let (mut again, h) = Stream::open(addr, "fedcba9876543210fedcba9876543210", &hello(Some(resume))).await;
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    let Some(Frame::Welcome(w2)) = again.frame().await else { panic!("expected WELCOME") };
    assert!(w2.resumed && w2.session_id == w.session_id);
    log.wait(WAIT, |e| matches!(e, ServerEvent::Resumed { .. }).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_requests_that_cannot_work_get_their_http_errors() {
    let mut opts = ServerOptions::new(server_core(Duration::from_secs(10)));
    opts.origins = tether_runtime::transport::Origins::same_host(vec!["https://app.example".into()]);
    let (_server, _log, addr) = start_server(Kind::Ws, opts).await;
    let status = |req: Vec<u8>| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&req).await.unwrap();
        head(&mut s).await
    };
    let id = "00000000000000000000000000000001";
    // A POST for a transport nobody opened.
    assert!(status(post(id, "send", b"x", None)).await.starts_with("HTTP/1.1 404"));
    // A page of a foreign site; a listed one is answered with CORS.
    assert!(status(post(id, "stream", &hello(None), Some("https://evil.example"))).await.starts_with("HTTP/1.1 403"));
    let (_keep, ok) = {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&post(id, "stream", &hello(None), Some("https://app.example"))).await.unwrap();
        let h = head(&mut s).await;
        (s, h)
    };
    assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("Access-Control-Allow-Origin: https://app.example"), "{ok}");
    // The same id again while that transport is open.
    assert!(status(post(id, "stream", &hello(None), None)).await.starts_with("HTTP/1.1 409"));
    // No Content-Length.
    let chunked = format!(
        "POST /?tether=stream&id={} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "00000000000000000000000000000002"
    );
    assert!(status(chunked.into_bytes()).await.starts_with("HTTP/1.1 411"));
    // Too large for one largest frame and 64 KiB.
    let big = format!(
        "POST /?tether=send&id={id} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        (1usize << 20) + 4 + 65_537
    );
    assert!(status(big.into_bytes()).await.starts_with("HTTP/1.1 413"));
    // A plain GET is still told what this port speaks.
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let h = status(get).await;
    assert!(h.starts_with("HTTP/1.1 426"), "{h}");
}

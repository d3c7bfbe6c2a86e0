//! The server's TLS stream on rustls's unbuffered API
//! (`transport::server_tls`): against tokio-rustls clients, over TLS 1.2
//! and 1.3, whole and in pieces; bad input gets an error, never a panic;
//! an idle connection holds no buffers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tether_runtime::transport::server_tls::ServerTlsStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(20);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn configs(
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let der = CertificateDer::from(cert.der().to_vec());
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A tokio-rustls client's connection to `addr`.
async fn connect(
    addr: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(client).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// A listener whose first connection is accepted over TLS and handed to `serve`.
async fn serve_one<F, Fut>(
    server: Arc<rustls::ServerConfig>,
    serve: F,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Fut::Output>)
where
    F: FnOnce(ServerTlsStream) -> Fut + Send + 'static,
    Fut: std::future::Future + Send,
    Fut::Output: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        serve(ServerTlsStream::accept(tcp, server).await.unwrap()).await
    });
    (addr, task)
}

const SIZES: [usize; 6] = [1, 100, 4095, 16_384, 16_385, 200_000];

fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Accepts one connection and echoes every byte until the client's
/// close_notify; then checks that nothing is held and closes in turn.
async fn echo_server(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> usize {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut s = ServerTlsStream::accept(tcp, config).await.unwrap();
    let mut total = 0;
    let mut buf = vec![0u8; 777];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
        s.write_all(&buf[..n]).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(s.buffered_capacity(), 0, "an idle connection holds no buffers");
    s.shutdown().await.unwrap();
    total
}

/// Sends each message and reads it back whole, then closes with
/// close_notify and reads the server's close as a clean end.
async fn exchange(tcp: TcpStream, client: Arc<rustls::ClientConfig>) {
    let mut c = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    for (i, len) in SIZES.into_iter().enumerate() {
        let m = message(len, i as u8);
        let (mut r, mut w) = tokio::io::split(&mut c);
        let write = async {
            w.write_all(&m).await.unwrap();
            w.flush().await.unwrap();
        };
        let mut back = vec![0u8; len];
        let (_, read) = tokio::join!(write, r.read_exact(&mut back));
        read.unwrap();
        assert!(back == m, "message {i} of {len} bytes came back changed");
    }
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.expect("the server's close_notify is a clean end");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn data_of_every_size_crosses_both_ways_over_tls_1_2_and_1_3() {
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (server, client) = configs(version);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = tokio::spawn(echo_server(listener, server));
        tokio::time::timeout(WAIT, exchange(TcpStream::connect(addr).await.unwrap(), client)).await.unwrap();
        let total = tokio::time::timeout(WAIT, echo).await.unwrap().unwrap();
        assert_eq!(total, SIZES.iter().sum::<usize>());
    }
}

/// Forwards the client's bytes to the server one at a time (each in its own
/// segment, so records and handshake messages arrive in pieces), and the
/// server's bytes back as they come.
async fn trickle(client_side: TcpStream, server: std::net::SocketAddr) {
    let upstream = TcpStream::connect(server).await.unwrap();
    upstream.set_nodelay(true).unwrap();
    let (mut cr, mut cw) = client_side.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async move {
        let mut buf = [0u8; 4096];
        loop {
            let n = cr.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = uw.shutdown().await;
                return;
            }
            for b in &buf[..n] {
                if uw.write_all(std::slice::from_ref(b)).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

#[tokio::test]
async fn records_arriving_a_byte_at_a_time_are_put_together() {
    let (server, client) = configs(&rustls::version::TLS13);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let echo = tokio::spawn(echo_server(listener, server));
    let relayed = tokio::spawn(async move {
        let (c, _) = relay.accept().await.unwrap();
        trickle(c, addr).await;
    });
    let tcp = TcpStream::connect(relay_addr).await.unwrap();
    let mut c = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    // Smaller messages: every byte is a segment of its own.
    for (i, len) in [1usize, 300, 5000].into_iter().enumerate() {
        let m = message(len, i as u8);
        c.write_all(&m).await.unwrap();
        c.flush().await.unwrap();
        let mut back = vec![0u8; len];
        tokio::time::timeout(WAIT, c.read_exact(&mut back)).await.unwrap().unwrap();
        assert!(back == m, "message {i} came back changed");
    }
    c.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, echo).await.unwrap().unwrap();
    relayed.await.unwrap();
}

#[tokio::test]
async fn bad_input_and_early_ends_are_errors_not_panics() {
    let (server, _) = configs(&rustls::version::TLS13);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cases: [(&[u8], std::io::ErrorKind); 3] = [
        // Plain HTTP to a TLS port.
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", std::io::ErrorKind::InvalidData),
        // A handshake record that claims 16 MB.
        (&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff], std::io::ErrorKind::InvalidData),
        // The start of a ClientHello, then the end of the connection.
        (&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03], std::io::ErrorKind::UnexpectedEof),
    ];
    for (bytes, kind) in cases {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        c.write_all(bytes).await.unwrap();
        c.shutdown().await.unwrap();
        let e = tokio::time::timeout(WAIT, ServerTlsStream::accept(tcp, server.clone()))
            .await
            .unwrap()
            .err()
            .expect("refused");
        assert_eq!(e.kind(), kind, "{bytes:?}: {e}");
    }
}

/// A failed handshake tells the client why (its fatal alert goes out before
/// the error), as rustls's own streams do: no common ALPN protocol, and
/// plain HTTP sent to the TLS port.
#[tokio::test]
async fn a_failed_handshake_sends_its_alert() {
    let (server, client) = configs(&rustls::version::TLS13);
    let mut server = (*server).clone();
    server.alpn_protocols = vec![b"a".to_vec()];
    let mut client = (*client).clone();
    client.alpn_protocols = vec![b"b".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(server);
    let s2 = server.clone();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let e = ServerTlsStream::accept(tcp, s2).await.err().expect("no common ALPN protocol");
        (e, listener)
    });
    let e = connect(addr, Arc::new(client)).await.expect_err("refused");
    assert!(e.to_string().contains("NoApplicationProtocol"), "the client heard no alert: {e}");
    let (_, listener) = tokio::time::timeout(WAIT, srv).await.unwrap().unwrap();

    let mut c = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let e = tokio::time::timeout(WAIT, ServerTlsStream::accept(tcp, server)).await.unwrap().err().unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, c.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got.first(), Some(&0x15), "an alert record, not {got:?}");
}

/// A record that does not decrypt fails the stream for good: reading again
/// or closing gives an error, never a second pass over the bad record
/// (which rustls answers with a second fatal alert, a panic in debug builds).
#[tokio::test]
async fn a_bad_record_fails_the_stream_for_good() {
    let (server, client) = configs(&rustls::version::TLS13);
    let (addr, srv) = serve_one(server, |mut s| async move {
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).await.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(s.read(&mut buf).await.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        let _ = s.shutdown().await;
    })
    .await;
    let mut c = connect(addr, client).await.unwrap();
    let mut junk = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    junk.extend([0xAA; 32]);
    c.get_mut().0.write_all(&junk).await.unwrap();
    tokio::time::timeout(WAIT, srv).await.unwrap().unwrap();
}

/// A handshake message sent in one-byte records (six bytes on the wire per
/// byte) is refused once its fragments pass rustls's 64 KiB bound for a
/// handshake message, instead of being held whole.
#[tokio::test]
async fn a_handshake_message_in_tiny_fragments_is_bounded() {
    let (server, _) = configs(&rustls::version::TLS13);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let accept = tokio::spawn(ServerTlsStream::accept(tcp, server));
    // A ClientHello declaring 65 535 bytes, 20 000 of them sent.
    let body = [0x01, 0x00, 0xff, 0xff].into_iter().chain(std::iter::repeat_n(0u8, 20_000));
    let wire: Vec<u8> = body.flat_map(|b| [0x16, 0x03, 0x01, 0x00, 0x01, b]).collect();
    let _ = c.write_all(&wire).await; // the server may close before it all went
    let e = tokio::time::timeout(WAIT, accept).await.expect("refused, not held").unwrap().err().unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
}

/// The end of the connection without close_notify is an error (it may be a
/// truncation), as in rustls's own streams; after close_notify, a clean end.
#[tokio::test]
async fn an_end_without_close_notify_is_not_a_clean_end() {
    let (server, client) = configs(&rustls::version::TLS13);
    let (addr, srv) = serve_one(server, |mut s| async move {
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).await.unwrap(), 2);
        s.read(&mut buf).await.unwrap_err()
    })
    .await;
    let mut c = connect(addr, client).await.unwrap();
    c.write_all(b"hi").await.unwrap();
    c.flush().await.unwrap();
    c.get_mut().0.shutdown().await.unwrap(); // TCP FIN, no close_notify
    let e = tokio::time::timeout(WAIT, srv).await.unwrap().unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(e.to_string().contains("close_notify"), "{e}");
}

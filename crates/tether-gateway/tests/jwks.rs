//! Login as identity providers do it: a gateway with `auth.jwks_url`
//! pointing at a key set served by this test accepts RS256, ES256 and EdDSA
//! tokens signed with the set's keys, refuses others with the reason, and
//! follows a key rotation without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tether_gateway::{Config, Running};
use tether_proto::{ClientConfig, ClientEvent, Profile, SessionEnd};
use tether_runtime::client::{Client, ClientOptions, Event};
use tether_runtime::Kind;

const WAIT: Duration = Duration::from_secs(15);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../../fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("jwk-{name}.json"))).unwrap()
}

/// A token for `sub`, signed with fixture key `name` ("a" RSA, "b" EC, "c" Ed25519).
fn token(name: &str, sub: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (alg, key) = match name {
        "a" => (Algorithm::RS256, EncodingKey::from_rsa_pem(fixture("rsa-a.pem").as_bytes()).unwrap()),
        "b" => (Algorithm::ES256, EncodingKey::from_ec_pem(fixture("ec-b.pem").as_bytes()).unwrap()),
        _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(fixture("ed-c.pem").as_bytes()).unwrap()),
    };
    let mut h = Header::new(alg);
    h.kid = Some(name.to_owned());
    jsonwebtoken::encode(&h, &json!({"sub": sub, "exp": now + 600}), &key).unwrap()
}

/// Serves `/jwks.json` with whatever `set` holds at each request.
async fn serve_jwks(set: Arc<Mutex<Value>>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let set = set.clone();
            async move { axum::Json(set.lock().unwrap().clone()) }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

async fn start_gateway(jwks: SocketAddr) -> (Running, SocketAddr) {
    let text = format!(
        "[listen]\ntcp = \"127.0.0.1:0\"\nws = \"off\"\n\
         [auth]\nanonymous = false\njwks_url = \"http://{jwks}/jwks.json\"\njwks_refresh = \"1s\"\n\
         [admin]\nlisten = \"off\"\n[demo]\nlisten = \"off\"\n"
    );
    let cfg = Config::parse(&text, "test config").unwrap().resolve().unwrap();
    let running = tether_gateway::run(cfg, std::future::pending()).await.expect("start the gateway");
    let tcp = running.session_addr(Kind::Tcp).unwrap();
    (running, tcp)
}

/// Connects with `auth`: Ok when the session opens, Err(the refusal's message).
async fn login(addr: SocketAddr, auth: &str) -> Result<(), String> {
    let mut core = ClientConfig::profile(Profile::Realtime);
    core.auth = Bytes::from(auth.to_owned());
    let mut opts = ClientOptions::new(core);
    opts.watch_network = false;
    let mut client = Client::start(format!("tcp://{addr}").parse().unwrap(), opts).unwrap();
    let outcome = tokio::time::timeout(WAIT, async {
        while let Some(e) = client.next_event().await {
            match e {
                Event::Session(ClientEvent::Connected { .. }) => return Ok(()),
                Event::Session(ClientEvent::SessionEnded { reason: SessionEnd::Refused { message, .. }, .. }) => {
                    return Err(message)
                }
                _ => {}
            }
        }
        Err("the client stopped".into())
    })
    .await
    .expect("neither connected nor refused");
    client.handle().close();
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_the_providers_keys_are_accepted_and_a_rotation_is_followed() {
    let set = Arc::new(Mutex::new(json!({"keys": [jwk("a"), jwk("c")]})));
    let jwks = serve_jwks(set.clone()).await;
    let (_g, addr) = start_gateway(jwks).await;

    // The set is fetched at start (in the background): RS256 and EdDSA keys.
    let deadline = tokio::time::Instant::now() + WAIT;
    while login(addr, &token("a", "alice")).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the RS256 token was never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    login(addr, &token("c", "carol")).await.expect("an EdDSA token of the set");
    // A key not in the set, an HS256 token, a tampered signature: refused, saying why.
    let e = login(addr, &token("b", "bob")).await.unwrap_err();
    assert!(e.contains("kid \"b\"") && e.contains("not in the gateway's key set"), "{e}");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "mallory", "exp": 4_000_000_000u64}),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    let e = login(addr, &hs).await.unwrap_err();
    assert!(e.contains("HS256"), "{e}");
    let t = token("a", "alice");
    let (head, sig) = t.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", sig.chars().rev().collect::<String>());
    let e = login(addr, &forged).await.unwrap_err();
    assert!(e.contains("signature") || e.contains("not a valid JWT"), "{e}");

    // The provider rotates: key a out, key b in. The gateway follows without
    // a restart (its next fetch, at most jwks_refresh later).
    *set.lock().unwrap() = json!({"keys": [jwk("b"), jwk("c")]});
    let deadline = tokio::time::Instant::now() + WAIT;
    while login(addr, &token("b", "bob")).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the rotated-in key was never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = login(addr, &token("a", "alice")).await.unwrap_err();
    assert!(e.contains("not in the gateway's key set"), "the rotated-out key still works: {e}");
}

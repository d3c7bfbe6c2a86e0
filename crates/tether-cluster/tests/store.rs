//! The Redis engine against a real redis-server: claims with token checks
//! and fencing, commits that store effects exactly once, numbering,
//! fetching and trimming, and orphans of a dead node expired once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{prefix, Redis};
use tether_proto::{ResumeToken, Rng, SendError, SessionId, SessionRecord, TokenState};
use tether_runtime::store::{ClaimRefused, Notice, Store, StoreError};

fn record(rng: &mut Rng) -> (SessionRecord, ResumeToken) {
    let token = ResumeToken::random(rng);
    let r = SessionRecord {
        id: SessionId::random(rng),
        tokens: TokenState::new(&token),
        committed: 0,
        acked: 0,
        next_seq: 1,
        unacked: Vec::new(),
        idle_timeout: Duration::from_secs(30),
        peer_max_frame: 1 << 16,
    };
    (r, token)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn a_claim_checks_the_token_raises_the_fence_and_fences_the_old_owner_out() {
    let redis = Redis::start();
    let p = prefix();
    let (a, bn) = (redis.store("a", &p).await, redis.store("b", &p).await);
    let mut rng = Rng::from_seed(1);
    let (rec, token) = record(&mut rng);
    let id = rec.id;
    let fence_a = a.open(&rec, Some("alice"), Duration::from_secs(60)).await.unwrap();
    let stranger = ResumeToken::random(&mut rng);
    let fresh = ResumeToken::random(&mut rng);
    assert_eq!(bn.claim(id, stranger.hash(), fresh.hash()).await.unwrap().unwrap_err(), ClaimRefused::InvalidToken);
    let unknown = SessionId::random(&mut rng);
    assert_eq!(bn.claim(unknown, token.hash(), fresh.hash()).await.unwrap().unwrap_err(), ClaimRefused::Unknown);

    let c = bn.claim(id, token.hash(), fresh.hash()).await.unwrap().unwrap();
    assert!(c.fence > fence_a);
    assert_eq!(c.user.as_deref(), Some("alice"));
    assert_eq!(c.record.tokens.check(&fresh), tether_proto::token::TokenCheck::Valid, "the fresh token is pending");
    // A's writes are refused from now on.
    assert_eq!(a.commit(id, fence_a, 1, vec![]).await, Err(StoreError::Fenced(id)));
    assert_eq!(a.acked(id, fence_a, 0).await, Err(StoreError::Fenced(id)));
    assert_eq!(a.end(id, fence_a).await, Err(StoreError::Fenced(id)));
    // B's are not.
    assert_eq!(bn.commit(id, c.fence, 1, vec![]).await, Ok(vec![]));
}

/// A storm of handshakes that time out after the claim: the client keeps
/// presenting the token it holds (an issued one it never confirmed), every
/// WELCOME lost. It must keep working however many there are (a token
/// presented is a token held: it becomes current), and the one before it
/// is retired (PROTOCOL §5.4).
#[tokio::test]
async fn a_token_presented_is_held_however_many_welcomes_are_lost_after_it() {
    let redis = Redis::start();
    let p = prefix();
    let a = redis.store("a", &p).await;
    let mut rng = Rng::from_seed(11);
    let (rec, t0) = record(&mut rng);
    let id = rec.id;
    a.open(&rec, None, Duration::from_secs(60)).await.unwrap();
    let t1 = ResumeToken::random(&mut rng);
    a.claim(id, t0.hash(), t1.hash()).await.unwrap().unwrap();
    // The client got t1's WELCOME, then nothing more goes through.
    for _ in 0..10 {
        let lost = ResumeToken::random(&mut rng);
        let c = a.claim(id, t1.hash(), lost.hash()).await.unwrap().unwrap();
        assert_eq!(c.record.tokens.check(&t1), tether_proto::token::TokenCheck::Valid);
    }
    let fresh = ResumeToken::random(&mut rng);
    let refused = a.claim(id, t0.hash(), fresh.hash()).await.unwrap().unwrap_err();
    assert!(matches!(refused, ClaimRefused::TokenReused | ClaimRefused::InvalidToken), "{refused:?}");
}

/// Once the node carrying a session writes the token the client proved it
/// holds, a stale handshake with the token before it (an abandoned attempt
/// processed late, by any node) is refused instead of claiming the session
/// away — in a reconnect storm such claims moved tens of thousands of
/// sessions between nodes.
#[tokio::test]
async fn a_confirmed_token_retires_the_ones_before_it_in_the_store() {
    let redis = Redis::start();
    let p = prefix();
    let (a, bn) = (redis.store("a", &p).await, redis.store("b", &p).await);
    let mut rng = Rng::from_seed(12);
    let (rec, t0) = record(&mut rng);
    let id = rec.id;
    a.open(&rec, None, Duration::from_secs(60)).await.unwrap();
    let t1 = ResumeToken::random(&mut rng);
    let c = a.claim(id, t0.hash(), t1.hash()).await.unwrap().unwrap();
    // Before the confirmation the old token still works (the WELCOME may be lost)...
    assert_eq!(c.record.tokens.check(&t0), tether_proto::token::TokenCheck::Valid);
    a.confirm(id, c.fence, t1.hash()).await.unwrap();
    // ...after it, not any more, on any node; the confirmed one does.
    let stale = bn.claim(id, t0.hash(), ResumeToken::random(&mut rng).hash()).await.unwrap().unwrap_err();
    assert_eq!(stale, ClaimRefused::TokenReused);
    assert!(bn.claim(id, t1.hash(), ResumeToken::random(&mut rng).hash()).await.unwrap().is_ok());
    // A node that lost the session cannot write a confirmation.
    assert_eq!(a.confirm(id, c.fence, t1.hash()).await, Err(StoreError::Fenced(id)));
}

#[tokio::test]
async fn two_resumes_racing_for_one_session_leave_exactly_one_owner() {
    let redis = Redis::start();
    let p = prefix();
    let (a, bn) = (redis.store("a", &p).await, redis.store("b", &p).await);
    let mut rng = Rng::from_seed(2);
    let (rec, token) = record(&mut rng);
    let id = rec.id;
    a.open(&rec, None, Duration::from_secs(60)).await.unwrap();
    let (f1, f2) = (ResumeToken::random(&mut rng), ResumeToken::random(&mut rng));
    let (ra, rb) = tokio::join!(a.claim(id, token.hash(), f1.hash()), bn.claim(id, token.hash(), f2.hash()));
    let (ca, cb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
    assert_ne!(ca.fence, cb.fence);
    let (winner, loser): (Arc<dyn Store>, Arc<dyn Store>) = if ca.fence > cb.fence { (a, bn) } else { (bn, a) };
    let (wf, lf) = (ca.fence.max(cb.fence), ca.fence.min(cb.fence));
    assert_eq!(loser.commit(id, lf, 1, vec![(id, b("x"))]).await, Err(StoreError::Fenced(id)));
    assert_eq!(winner.commit(id, wf, 1, vec![(id, b("x"))]).await, Ok(vec![Ok(1)]));
}

#[tokio::test]
async fn a_commit_stores_its_effects_once_and_numbers_them_in_the_store() {
    let redis = Redis::start();
    let p = prefix();
    let a = redis.store("a", &p).await;
    let mut rng = Rng::from_seed(3);
    let (r1, _) = record(&mut rng);
    let (r2, _) = record(&mut rng);
    let f1 = a.open(&r1, None, Duration::from_secs(60)).await.unwrap();
    let f2 = a.open(&r2, None, Duration::from_secs(60)).await.unwrap();
    let effects = vec![(r1.id, b("reply")), (r2.id, b("fan-out"))];
    assert_eq!(a.commit(r1.id, f1, 1, effects.clone()).await, Ok(vec![Ok(1), Ok(1)]));
    // The same message committed again (an answer lost, a retry): nothing stored twice.
    assert_eq!(a.commit(r1.id, f1, 1, effects).await, Ok(vec![]));
    assert_eq!(a.append(vec![(r2.id, b("direct"))]).await, Ok(vec![Ok(2)]));
    assert_eq!(a.fetch(r2.id, 1).await.unwrap(), vec![(1, b("fan-out")), (2, b("direct"))]);
    assert_eq!(a.fetch(r2.id, 2).await.unwrap(), vec![(2, b("direct"))]);
    // The client acknowledged 1: it is forgotten, numbering goes on.
    let other = redis.store("b", &p).await; // any node may read; acks need the fence
    assert_eq!(other.fetch(r2.id, 1).await.unwrap().len(), 2);
    a.acked(r2.id, f2, 1).await.unwrap();
    assert_eq!(a.fetch(r2.id, 1).await.unwrap(), vec![(2, b("direct"))]);
    let gone = SessionId::random(&mut rng);
    assert_eq!(a.append(vec![(gone, b("x"))]).await, Ok(vec![Err(SendError::NoSession)]), "no such session");
}

#[tokio::test]
async fn the_replay_bounds_hold_in_the_store() {
    let redis = Redis::start();
    let p = prefix();
    let mut o = redis.options("a", &p);
    o.replay.max_messages = 2;
    let a = tether_cluster::RedisStore::connect(o).await.unwrap();
    let mut rng = Rng::from_seed(4);
    let (r, _) = record(&mut rng);
    a.open(&r, None, Duration::from_secs(60)).await.unwrap();
    let big = Bytes::from(vec![b'x'; (r.peer_max_frame as usize) - 8]);
    let max = (r.peer_max_frame as usize) - 9;
    assert_eq!(a.append(vec![(r.id, big)]).await.unwrap()[0], Err(SendError::TooLarge { len: max + 1, max }));
    let three = vec![(r.id, b("1")), (r.id, b("2")), (r.id, b("3"))];
    assert_eq!(
        a.append(three).await,
        Ok(vec![Ok(1), Ok(2), Err(SendError::BufferFull { messages: 2, bytes: 1 << 20 })])
    );
}

#[tokio::test]
async fn sessions_of_a_dead_node_expire_once_after_their_grace() {
    let redis = Redis::start();
    let p = prefix();
    let fast = |node: &str| {
        let mut o = redis.options(node, &p);
        o.lease_interval = Duration::from_millis(200);
        o.lease_ttl = Duration::from_millis(600);
        o
    };
    let a = tether_cluster::RedisStore::connect(fast("a")).await.unwrap();
    let mut rng = Rng::from_seed(5);
    let (r, _) = record(&mut rng);
    let fence = a.open(&r, Some("bob"), Duration::from_millis(500)).await.unwrap();
    let b = tether_cluster::RedisStore::connect(fast("b")).await.unwrap();
    let c = tether_cluster::RedisStore::connect(fast("c")).await.unwrap();
    drop(a); // node A dies: no more lease
    let mut expired = Vec::new();
    let (mut nb, mut nc) = (b.notices().unwrap(), c.notices().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline && expired.is_empty() {
        tokio::select! {
            Some(n) = nb.recv() => expired.push(("b", n)),
            Some(n) = nc.recv() => expired.push(("c", n)),
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    // A little longer: a second report would be a bug.
    let settle = tokio::time::sleep(Duration::from_millis(1500));
    tokio::pin!(settle);
    loop {
        tokio::select! {
            Some(n) = nb.recv() => expired.push(("b", n)),
            Some(n) = nc.recv() => expired.push(("c", n)),
            () = &mut settle => break,
        }
    }
    let orphans: Vec<_> = expired
        .iter()
        .filter(|(_, n)| matches!(n, Notice::OrphanExpired { session, .. } if *session == r.id))
        .collect();
    assert_eq!(orphans.len(), 1, "expired exactly once, cluster-wide: {expired:?}");
    match &orphans[0].1 {
        Notice::OrphanExpired { user, .. } => assert_eq!(user.as_deref(), Some("bob")),
        _ => unreachable!(),
    }
    assert_eq!(b.end(r.id, fence).await, Err(StoreError::Gone(r.id)));
}

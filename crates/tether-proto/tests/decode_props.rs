//! The decoder against arbitrary and mutated bytes: it never panics, "need
//! more bytes" is never confused with "invalid", every error maps to a close
//! code, and whatever it accepts re-encodes to the same bytes.

use bytes::Bytes;
use proptest::prelude::*;
use tether_proto::frame::{self, decode_stream, Close, Hello, Reject, Resume, Welcome};
use tether_proto::{CloseCode, Frame, RejectReason, ResumeToken, SessionId};

const MAX: u32 = 64 * 1024;

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é✓]{0,40}"
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let resume = (any::<[u8; 16]>(), any::<[u8; 32]>(), any::<u64>()).prop_map(|(s, t, l)| Resume {
        session_id: SessionId::from_bytes(s),
        token: ResumeToken::from_bytes(t),
        last_received: l,
    });
    prop_oneof![
        (
            1u8..=3,
            0u8..=2,
            frame::MIN_MAX_FRAME..=frame::MAX_MAX_FRAME,
            any::<u32>(),
            prop::option::of(resume),
            arb_bytes(64)
        )
            .prop_map(|(min, extra, max_frame, idle, resume, auth)| Frame::Hello(Hello {
                min_version: min,
                max_version: min + extra,
                max_frame,
                idle_timeout_ms: idle,
                resume,
                auth
            })),
        (
            any::<u8>(),
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            frame::MIN_MAX_FRAME..=u32::MAX,
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(version, resumed, s, t, last_received, max_frame, idle_timeout_ms, grace_ms)| {
                Frame::Welcome(Welcome {
                    version,
                    resumed,
                    session_id: SessionId::from_bytes(s),
                    token: ResumeToken::from_bytes(t),
                    last_received,
                    max_frame,
                    idle_timeout_ms,
                    grace_ms,
                })
            }),
        (1u8..=8, any::<u32>(), any::<u8>(), any::<u8>(), arb_text()).prop_map(
            |(r, retry_after_ms, min_version, max_version, message)| Frame::Reject(Reject {
                reason: RejectReason::from_u8(r).expect("assigned"),
                retry_after_ms,
                min_version,
                max_version,
                message
            })
        ),
        (1u64.., arb_bytes(200)).prop_map(|(seq, payload)| Frame::Data { seq, payload }),
        any::<u64>().prop_map(|ack| Frame::Ack { ack }),
        (any::<u32>(), any::<u64>(), arb_bytes(frame::MAX_PING_PAYLOAD))
            .prop_map(|(nonce, ack, payload)| Frame::Ping { nonce, ack, payload }),
        (any::<u32>(), any::<u64>(), arb_bytes(64)).prop_map(|(nonce, ack, payload)| Frame::Pong {
            nonce,
            ack,
            payload
        }),
        (
            prop_oneof![
                Just(1000u16),
                Just(1001),
                Just(1002),
                Just(1003),
                Just(2000),
                Just(2001),
                Just(3000),
                Just(3001),
                Just(3002),
                Just(3003),
                Just(3004),
                Just(3005),
                4000u16..5000
            ],
            any::<u32>(),
            arb_text()
        )
            .prop_map(|(c, retry_after_ms, reason)| Frame::Close(Close {
                code: CloseCode::from_u16(c).expect("assigned"),
                retry_after_ms,
                reason
            })),
    ]
}

/// Decoding must never panic; errors must map to a close code; an accepted
/// frame must re-encode to exactly the input.
fn check_whole(bytes: &[u8]) {
    match Frame::decode(bytes, MAX) {
        Ok(f) => assert_eq!(f.to_vec(), bytes, "accepted bytes must re-encode identically: {f:?}"),
        Err(e) => assert!(matches!(e.close_code(), CloseCode::ProtocolError | CloseCode::FrameTooLarge)),
    }
}

/// Every strict prefix of a valid stream is "need more", never "invalid".
fn check_stream_prefixes(stream: &[u8]) {
    for cut in 0..stream.len() {
        assert_eq!(decode_stream(&stream[..cut], MAX), Ok(None), "prefix of {cut} bytes must need more");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_whole(&bytes);
        let _ = decode_stream(&bytes, MAX);
    }

    #[test]
    fn valid_frames_round_trip_whole_and_streamed(f in arb_frame()) {
        let bytes = f.to_vec();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(Frame::decode(&bytes, MAX), Ok(f.clone()));
        let mut stream = Vec::new();
        f.encode_length_prefixed(&mut stream);
        check_stream_prefixes(&stream);
        stream.extend_from_slice(&[0, 0]); // the start of the next frame
        let (g, used) = decode_stream(&stream, MAX).expect("valid").expect("complete");
        prop_assert_eq!(g, f);
        prop_assert_eq!(used, stream.len() - 2);
    }

    #[test]
    fn mutated_frames_never_panic(f in arb_frame(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
        let mut bytes = f.to_vec();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check_whole(&bytes);
        let mut stream = (bytes.len() as u32).to_be_bytes().to_vec();
        stream.extend_from_slice(&bytes);
        let _ = decode_stream(&stream, MAX);
    }
}

#[test]
fn oversize_length_is_refused_from_the_prefix_alone() {
    let prefix = (MAX + 1).to_be_bytes();
    assert_eq!(decode_stream(&prefix, MAX).map_err(|e| e.close_code()), Err(CloseCode::FrameTooLarge));
    assert_eq!(decode_stream(&[0, 0, 0, 0], MAX).map_err(|e| e.close_code()), Err(CloseCode::ProtocolError));
    let big = vec![frame::kind::DATA; MAX as usize + 1];
    assert_eq!(Frame::decode(&big, MAX).map_err(|e| e.close_code()), Err(CloseCode::FrameTooLarge));
}

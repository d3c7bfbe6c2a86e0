//! Pieces shared by the fuzz targets (`fuzz_targets/*.rs`): virtual time,
//! the choices an input makes (sizes, deltas, frame limits, close codes),
//! and the frame check every transmitted frame goes through.
//!
//! Not part of tether: this crate only builds under cargo-fuzz (nightly).
//! See docs/FUZZING.md.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use tether_proto::frame::{self, Frame};
use tether_proto::{CloseCode, RejectReason};

/// Most operations one input runs (the rest of a long input is ignored).
pub const MAX_OPS: usize = 256;
/// Most payload bytes one input may make the machines carry.
pub const PAYLOAD_BUDGET: usize = 4 << 20;

/// The one real instant the targets read: every `now` is this plus a
/// virtual duration (the core itself never reads the clock).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// How far virtual time moves before the next `handle_timeout`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Step {
    /// 0–255 ms.
    Millis(u8),
    /// 0–25.5 s in tenths.
    Tenths(u8),
    /// 0–255 s.
    Secs(u8),
    /// Exactly to the machine's next deadline (the drive contract's step 3).
    ToDeadline,
    /// A little past it (a late timer).
    PastDeadline(u8),
}

impl Step {
    /// The instant after this step from `now`, given the machine's deadline.
    pub fn apply(self, now: Instant, deadline: Option<Instant>) -> Instant {
        let ms = |n: u64| Duration::from_millis(n);
        match self {
            Step::Millis(n) => now + ms(n.into()),
            Step::Tenths(n) => now + ms(100 * u64::from(n)),
            Step::Secs(n) => now + Duration::from_secs(n.into()),
            Step::ToDeadline => deadline.map_or(now, |d| d.max(now)),
            Step::PastDeadline(n) => deadline.map_or(now, |d| d.max(now)) + ms(1 + u64::from(n)),
        }
    }
}

/// A value near `base`: mostly base−2..=base+2, sometimes far off.
pub fn near(base: u64, d: i8) -> u64 {
    match d {
        i8::MIN => u64::MAX,
        i8::MAX => base.saturating_add(1 << 20),
        _ => base.saturating_add_signed(i64::from(d % 3)),
    }
}

/// A payload length, relative to the largest one the peer allows.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    /// Nothing.
    Empty,
    /// 0–255 bytes.
    Small(u8),
    /// 0–64 KiB.
    Medium(u16),
    /// The maximum, or up to 3 bytes below it.
    NearMax(u8),
    /// 1–4 bytes above the maximum.
    OverMax(u8),
}

impl Size {
    /// The length for a peer whose largest payload is `max`, charged to
    /// `budget`; a length the budget cannot pay for becomes small.
    pub fn resolve(self, max: usize, budget: &mut usize) -> usize {
        let want = match self {
            Size::Empty => 0,
            Size::Small(n) => n.into(),
            Size::Medium(n) => n.into(),
            Size::NearMax(d) => max.saturating_sub(usize::from(d % 4)),
            Size::OverMax(d) => max.saturating_add(1 + usize::from(d % 4)),
        };
        let len = if want > *budget { want % 64 } else { want };
        *budget = budget.saturating_sub(len);
        len
    }
}

/// A `max_frame` announced in a HELLO or WELCOME.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum MaxFrame {
    /// 16 KiB, the protocol minimum.
    Min,
    /// A few bytes above the minimum.
    MinPlus(u8),
    /// 64 KiB.
    K64,
    /// 1 MiB (the default).
    M1,
    /// 16 MiB (the protocol maximum).
    M16,
    /// Anything, valid or not.
    Wire(u32),
}

impl MaxFrame {
    /// The value on the wire.
    pub fn value(self) -> u32 {
        match self {
            MaxFrame::Min => frame::MIN_MAX_FRAME,
            MaxFrame::MinPlus(n) => frame::MIN_MAX_FRAME + u32::from(n),
            MaxFrame::K64 => 64 * 1024,
            MaxFrame::M1 => frame::DEFAULT_MAX_FRAME,
            MaxFrame::M16 => frame::MAX_MAX_FRAME,
            MaxFrame::Wire(n) => n,
        }
    }
}

/// A CLOSE code, assigned or not.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Code {
    /// One of the assigned 1xxx–3xxx codes, by index.
    Assigned(u8),
    /// 4000–4999.
    App(u16),
    /// Any number (unassigned ones do not decode).
    Wire(u16),
}

impl Code {
    /// The code (an unassigned number is carried as `Application(n)`, which
    /// encodes as `n`).
    pub fn value(self) -> CloseCode {
        const ASSIGNED: [u16; 12] = [1000, 1001, 1002, 1003, 2000, 2001, 3000, 3001, 3002, 3003, 3004, 3005];
        let n = match self {
            Code::Assigned(i) => ASSIGNED[usize::from(i) % ASSIGNED.len()],
            Code::App(n) => 4000 + n % 1000,
            Code::Wire(n) => n,
        };
        CloseCode::from_u16(n).unwrap_or(CloseCode::Application(n))
    }
}

/// A REJECT reason by index.
pub fn reject_reason(i: u8) -> RejectReason {
    RejectReason::from_u8(1 + i % 8).expect("1..=8 are assigned")
}

/// A reason text of `n × 5` bytes (above 1024 does not decode).
pub fn reason_text(n: u8) -> String {
    "fuzz!".repeat(n.into())
}

/// A retry-after in milliseconds.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Retry {
    /// None.
    Zero,
    /// Up to 65.5 s.
    Ms(u16),
    /// 49 days.
    Max,
}

impl Retry {
    /// Milliseconds on the wire.
    pub fn ms(self) -> u32 {
        match self {
            Retry::Zero => 0,
            Retry::Ms(n) => n.into(),
            Retry::Max => u32::MAX,
        }
    }
}

/// The check every frame a machine transmits goes through: it encodes to
/// exactly `encoded_len` bytes, and decodes back to itself within `max`,
/// the largest frame the receiving peer announced.
pub fn check_frame(frame: &Frame, max: u32, who: &str) {
    let bytes = frame.to_vec();
    assert_eq!(bytes.len(), frame.encoded_len(), "{who}: encoded_len is wrong for {frame:?}");
    match Frame::decode(&bytes, max) {
        Ok(back) => assert_eq!(&back, frame, "{who}: frame does not survive a round trip"),
        Err(e) => panic!("{who} sent a frame its peer (max_frame {max}) cannot decode: {e}: {frame:?}"),
    }
}

/// Flips one byte of `bytes` or cuts it short: a nearly valid frame.
pub fn mutate(mut bytes: Vec<u8>, at: u16, xor: u8) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    let i = usize::from(at) % bytes.len();
    if xor == 0 {
        bytes.truncate(i);
    } else {
        bytes[i] ^= xor;
    }
    bytes
}

/// Counts how often each interesting thing happened, for judging how deep
/// the fuzzer gets: with `TETHER_FUZZ_STATS=1` in the environment, the
/// running totals are printed after every input (run a target over its
/// corpus with `-runs=0` and read the last line). Free otherwise.
pub mod stats {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var_os("TETHER_FUZZ_STATS").is_some())
    }

    thread_local! {
        static COUNTS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
    }

    /// Counts one `what`.
    pub fn hit(what: &'static str) {
        if enabled() {
            COUNTS.with(|c| *c.borrow_mut().entry(what).or_default() += 1);
        }
    }

    /// Prints the totals so far (end of an input).
    pub fn report() {
        if enabled() {
            COUNTS.with(|c| eprintln!("stats: {:?}", c.borrow()));
        }
    }
}

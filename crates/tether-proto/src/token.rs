//! Session identifiers and resume tokens.
//!
//! Tokens are 32 random bytes from the injected CSPRNG. The server keeps only
//! their SHA-256 hash and compares hashes in constant time, so a leaked session
//! table does not let anyone resume, and timing does not reveal how much of a
//! guess matched. Every successful resume rotates the token
//! (`docs/PROTOCOL.md` §5.4).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::rng::Rng;

/// A session's identity: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// Wraps raw bytes (as read from the wire).
    pub fn from_bytes(b: [u8; 16]) -> Self {
        SessionId(b)
    }

    /// Draws a fresh random id.
    pub fn random(rng: &mut Rng) -> Self {
        let mut b = [0u8; 16];
        rng.fill(&mut b);
        SessionId(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The first 8 hex digits are enough to tell sessions apart in logs.
        write!(f, "SessionId({})", &self.to_string()[..8])
    }
}

/// A secret that proves the right to resume a session. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumeToken([u8; 32]);

impl ResumeToken {
    /// Wraps raw bytes (as read from the wire).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        ResumeToken(b)
    }

    /// Draws a fresh random token.
    pub fn random(rng: &mut Rng) -> Self {
        let mut b = [0u8; 32];
        rng.fill(&mut b);
        ResumeToken(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The form the server stores.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }
}

impl std::fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeToken(<redacted>)")
    }
}

/// SHA-256 of a resume token.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Wraps a stored hash.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        TokenHash(b)
    }

    /// The raw hash (what a durable store keeps).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// Most unconfirmed tokens kept valid at once (each from a WELCOME whose
/// transport has not yet proven the client received it).
const MAX_PENDING: usize = 4;
/// Most retired tokens remembered, to tell a replay from a stranger.
const MAX_RETIRED: usize = 4;

/// The server's view of a session's tokens across rotations.
///
/// Every WELCOME of a resume issues a new token, but a WELCOME can be lost
/// with its transport, and handshakes can overtake each other (a stale
/// attempt's HELLO arriving after a newer one succeeded). So every issued
/// token stays valid until a transport proves the client holds *its* token by
/// sending any frame after that WELCOME. Then that token becomes the only
/// valid one, and all others are retired: presenting them again is a replayed
/// handshake ([`TokenCheck::Reused`]).
#[derive(Debug, Clone)]
pub struct TokenState {
    current: TokenHash,
    pending: Vec<TokenHash>,
    retired: Vec<TokenHash>,
}

/// Outcome of checking a presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// The token is valid.
    Valid,
    /// The token is not, and never was, this session's.
    Invalid,
    /// The token was this session's but has been rotated away.
    Reused,
}

impl TokenState {
    /// State for a new session whose first token is `token`.
    pub fn new(token: &ResumeToken) -> Self {
        TokenState { current: token.hash(), pending: Vec::new(), retired: Vec::new() }
    }

    /// Rebuilds the state a durable store kept ([`TokenState::parts`]);
    /// longer lists keep their newest entries.
    pub fn from_parts(current: TokenHash, pending: &[TokenHash], retired: &[TokenHash]) -> Self {
        let newest = |l: &[TokenHash], n: usize| l[l.len().saturating_sub(n)..].to_vec();
        TokenState { current, pending: newest(pending, MAX_PENDING), retired: newest(retired, MAX_RETIRED) }
    }

    /// The current token, the issued ones awaiting confirmation, and the
    /// retired ones, oldest first.
    pub fn parts(&self) -> (TokenHash, &[TokenHash], &[TokenHash]) {
        (self.current, &self.pending, &self.retired)
    }

    /// Checks a presented token. Every candidate is compared in constant
    /// time, whichever matches.
    pub fn check(&self, presented: &ResumeToken) -> TokenCheck {
        let h = presented.hash();
        let valid = self.pending.iter().fold(h.matches(&self.current), |acc, p| acc | h.matches(p));
        let reused = self.retired.iter().fold(false, |acc, p| acc | h.matches(p));
        if valid {
            TokenCheck::Valid
        } else if reused {
            TokenCheck::Reused
        } else {
            TokenCheck::Invalid
        }
    }

    /// A resume presented `token`, found valid: whoever presents a token
    /// holds it, so an issued one becomes the current token. The current
    /// token and those issued before it are retired; those issued after it
    /// stay valid (the resume may be a stale handshake, overtaken by one
    /// whose WELCOME the client did receive). Without this, a client that
    /// never got to confirm the token it holds would lose it once
    /// `MAX_PENDING` later resumes were processed but their WELCOMEs lost
    /// (a storm of handshake timeouts), and its session with it.
    pub fn presented(&mut self, token: &ResumeToken) {
        let h = token.hash();
        let Some(i) = self.pending.iter().position(|p| p.matches(&h)) else { return };
        let older: Vec<TokenHash> = self.pending.drain(..=i).collect();
        let old = std::mem::replace(&mut self.current, h);
        self.retire(old);
        for p in older.into_iter().filter(|p| !p.matches(&h)) {
            self.retire(p);
        }
    }

    /// A WELCOME carries `fresh`: it is valid from now on, beside the others,
    /// until some transport confirms its own token.
    pub fn issue(&mut self, fresh: &ResumeToken) -> TokenHash {
        let h = fresh.hash();
        if self.pending.iter().any(|p| p.matches(&h)) {
            return h; // a store already recorded it (issued before the WELCOME)
        }
        if self.pending.len() == MAX_PENDING {
            let oldest = self.pending.remove(0);
            self.retire(oldest);
        }
        self.pending.push(h);
        h
    }

    /// The transport that received the WELCOME carrying `issued` sent a
    /// frame: the client holds that token. Everything else is retired.
    pub fn confirm(&mut self, issued: TokenHash) {
        let old = std::mem::replace(&mut self.current, issued);
        self.retire(old);
        for p in std::mem::take(&mut self.pending) {
            if !p.matches(&issued) {
                self.retire(p);
            }
        }
    }

    fn retire(&mut self, h: TokenHash) {
        if self.retired.len() == MAX_RETIRED {
            self.retired.remove(0);
        }
        self.retired.push(h);
    }

    /// True while issued tokens await confirmation.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_accepts_the_confirmed_token_and_refuses_the_retired_one() {
        let mut rng = Rng::from_seed(7);
        let t0 = ResumeToken::random(&mut rng);
        let mut s = TokenState::new(&t0);
        assert_eq!(s.check(&t0), TokenCheck::Valid);
        let t1 = ResumeToken::random(&mut rng);
        let h1 = s.issue(&t1);
        // The WELCOME may have been lost: both work until confirmation.
        assert_eq!(s.check(&t0), TokenCheck::Valid);
        assert_eq!(s.check(&t1), TokenCheck::Valid);
        s.confirm(h1);
        assert_eq!(s.check(&t1), TokenCheck::Valid);
        assert_eq!(s.check(&t0), TokenCheck::Reused);
        assert_eq!(s.check(&ResumeToken::random(&mut rng)), TokenCheck::Invalid);
    }

    #[test]
    fn overtaking_handshakes_leave_every_issued_token_valid_until_one_is_confirmed() {
        let mut rng = Rng::from_seed(8);
        let t0 = ResumeToken::random(&mut rng);
        let mut s = TokenState::new(&t0);
        // Two resumes with t0 race: the client keeps the first WELCOME's token.
        let t1 = ResumeToken::random(&mut rng);
        s.issue(&t1);
        let t2 = ResumeToken::random(&mut rng);
        s.issue(&t2);
        assert_eq!(s.check(&t1), TokenCheck::Valid, "the token the client holds must still work");
        let t3 = ResumeToken::random(&mut rng);
        let h3 = s.issue(&t3);
        s.confirm(h3);
        for old in [&t0, &t1, &t2] {
            assert_eq!(s.check(old), TokenCheck::Reused);
        }
        assert!(!s.has_pending());
    }

    #[test]
    fn presenting_an_issued_token_makes_it_current_and_survives_any_number_of_lost_welcomes() {
        let mut rng = Rng::from_seed(9);
        let t0 = ResumeToken::random(&mut rng);
        let mut s = TokenState::new(&t0);
        let t1 = ResumeToken::random(&mut rng);
        s.issue(&t1);
        let t2 = ResumeToken::random(&mut rng);
        s.issue(&t2);
        // The client got t1's WELCOME but never sent a frame after it; now
        // it resumes with t1, again and again, each WELCOME lost.
        for _ in 0..10 {
            assert_eq!(s.check(&t1), TokenCheck::Valid, "the token the client holds");
            s.presented(&t1);
            s.issue(&ResumeToken::random(&mut rng));
        }
        assert_ne!(s.check(&t0), TokenCheck::Valid, "the token before it is retired");
        // t2, issued after t1, stays valid: a stale HELLO with t1 may have
        // overtaken the one whose WELCOME (t2) the client did get.
        let mut s = TokenState::new(&t0);
        s.issue(&t1);
        s.issue(&t2);
        s.presented(&t1);
        assert_eq!(s.check(&t2), TokenCheck::Valid);
        assert_eq!(s.check(&t0), TokenCheck::Reused);
        // Presenting the current token changes nothing.
        s.presented(&t1);
        assert_eq!((s.check(&t1), s.check(&t2)), (TokenCheck::Valid, TokenCheck::Valid));
    }
}

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

/// The server's view of a session's tokens across rotations.
///
/// A WELCOME carrying a new token can be lost with its transport. The old
/// token therefore stays valid until the client proves it received the new one
/// by sending any frame after that WELCOME; only then does it become
/// `previous`, and presenting it again is a replayed handshake.
#[derive(Debug, Clone)]
pub struct TokenState {
    current: TokenHash,
    pending: Option<TokenHash>,
    previous: Option<TokenHash>,
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
        TokenState { current: token.hash(), pending: None, previous: None }
    }

    /// Checks a presented token. All candidates are compared, in constant
    /// time each, whatever matches first.
    pub fn check(&self, presented: &ResumeToken) -> TokenCheck {
        let h = presented.hash();
        let cur = h.matches(&self.current);
        let pend = self.pending.as_ref().is_some_and(|p| h.matches(p));
        let prev = self.previous.as_ref().is_some_and(|p| h.matches(p));
        if cur || pend {
            TokenCheck::Valid
        } else if prev {
            TokenCheck::Reused
        } else {
            TokenCheck::Invalid
        }
    }

    /// Rotation on a successful resume: `fresh` becomes pending. If the client
    /// presented the pending token it had received, that one becomes current
    /// first (its WELCOME arrived, only the confirmation was lost).
    pub fn rotate(&mut self, presented: &ResumeToken, fresh: &ResumeToken) {
        let h = presented.hash();
        if self.pending.as_ref().is_some_and(|p| h.matches(p)) {
            self.previous = Some(self.current);
            self.current = h;
        }
        self.pending = Some(fresh.hash());
    }

    /// The client sent a frame after the WELCOME carrying the pending token,
    /// so it holds that token: make it current and retire the old one.
    pub fn confirm(&mut self) {
        if let Some(p) = self.pending.take() {
            self.previous = Some(self.current);
            self.current = p;
        }
    }

    /// True while a rotated token awaits confirmation.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_accepts_new_token_and_refuses_the_retired_one() {
        let mut rng = Rng::from_seed(7);
        let t0 = ResumeToken::random(&mut rng);
        let mut s = TokenState::new(&t0);
        assert_eq!(s.check(&t0), TokenCheck::Valid);
        let t1 = ResumeToken::random(&mut rng);
        s.rotate(&t0, &t1);
        // WELCOME may have been lost: both still work until confirmation.
        assert_eq!(s.check(&t0), TokenCheck::Valid);
        assert_eq!(s.check(&t1), TokenCheck::Valid);
        s.confirm();
        assert_eq!(s.check(&t1), TokenCheck::Valid);
        assert_eq!(s.check(&t0), TokenCheck::Reused);
        assert_eq!(s.check(&ResumeToken::random(&mut rng)), TokenCheck::Invalid);
    }

    #[test]
    fn resuming_with_the_pending_token_promotes_it() {
        let mut rng = Rng::from_seed(8);
        let t0 = ResumeToken::random(&mut rng);
        let mut s = TokenState::new(&t0);
        let t1 = ResumeToken::random(&mut rng);
        s.rotate(&t0, &t1);
        // The client got t1 but its confirmation never arrived; it resumes with t1.
        let t2 = ResumeToken::random(&mut rng);
        s.rotate(&t1, &t2);
        s.confirm();
        assert_eq!(s.check(&t2), TokenCheck::Valid);
        assert_eq!(s.check(&t1), TokenCheck::Reused);
        assert_eq!(s.check(&t0), TokenCheck::Invalid);
    }
}

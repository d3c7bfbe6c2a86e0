//! Who may open a session: a JWT in the HELLO's `auth` field (subject =
//! user id, expiry checked) signed with the gateway's HS256 secret or with a
//! key of the provider's key set (`jwks.rs`), or nobody's credential at all
//! when anonymous clients are admitted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, TokenData, Validation};
use serde::{Deserialize, Serialize};
use tether_runtime::Authenticate;

use crate::jwks::{self, Jwks};

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// The display name (OIDC's `name`).
    #[serde(default)]
    name: Option<String>,
    /// Rooms the user may join (`*` at the end: a prefix); absent: any.
    #[serde(default)]
    rooms: Option<Vec<String>>,
    /// Rooms the user may say in; absent: those it may join.
    #[serde(default)]
    publish: Option<Vec<String>>,
}

/// Who a session is: its user id, display name and permissions. The
/// runtime keeps it as the session's user (stored with the session, so it
/// follows a resume to any node): the bare user id when there is nothing
/// more, else compact JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Principal {
    #[serde(rename = "u")]
    pub(crate) user: String,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Rooms it may join; None: any.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub(crate) rooms: Option<Vec<String>>,
    /// Rooms it may say in; None: those it may join.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub(crate) publish: Option<Vec<String>>,
}

impl Principal {
    pub(crate) fn user(user: impl Into<String>) -> Self {
        Principal { user: user.into(), ..Principal::default() }
    }

    pub(crate) fn encode(&self) -> Arc<str> {
        let bare = self.name.is_none() && self.rooms.is_none() && self.publish.is_none();
        if bare && !self.user.starts_with('{') {
            return Arc::from(self.user.as_str());
        }
        // Cannot fail: strings and lists of strings.
        Arc::from(serde_json::to_string(self).unwrap_or_default())
    }

    /// What [`Principal::encode`] made (empty: anonymous).
    pub(crate) fn decode(s: &str) -> Self {
        if s.starts_with('{') {
            if let Ok(p) = serde_json::from_str(s) {
                return p;
            }
        }
        Principal::user(s)
    }

    pub(crate) fn may_join(&self, room: &str) -> bool {
        self.rooms.as_deref().is_none_or(|r| matches(r, room))
    }

    pub(crate) fn may_say(&self, room: &str) -> bool {
        match &self.publish {
            Some(p) => matches(p, room),
            None => self.may_join(room),
        }
    }
}

/// The user id of a session's stored user (None: anonymous).
pub(crate) fn user_of(raw: Option<&str>) -> Option<String> {
    raw.map(|r| Principal::decode(r).user).filter(|u| !u.is_empty())
}

/// A room name against permission patterns: equal, or a prefix before `*`.
fn matches(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => p == room,
    })
}

/// Users the operator banned, until when (kept in memory, like sessions).
#[derive(Clone, Default)]
pub(crate) struct Bans(Arc<Mutex<HashMap<String, Instant>>>);

impl Bans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ban(&self, user: &str, until: Instant) {
        self.lock().insert(user.to_owned(), until);
    }

    /// True if the user was banned (and the ban is lifted).
    pub(crate) fn lift(&self, user: &str) -> bool {
        self.lock().remove(user).is_some()
    }

    /// How long the user stays banned, if they are.
    pub(crate) fn remaining(&self, user: &str, now: Instant) -> Option<Duration> {
        let mut bans = self.lock();
        bans.retain(|_, until| *until > now);
        bans.get(user).map(|until| *until - now)
    }

    /// Every current ban with the time it has left.
    pub(crate) fn list(&self, now: Instant) -> Vec<(String, Duration)> {
        let mut bans = self.lock();
        bans.retain(|_, until| *until > now);
        let mut v: Vec<_> = bans.iter().map(|(u, until)| (u.clone(), *until - now)).collect();
        v.sort();
        v
    }
}

/// The gateway's authenticator.
pub(crate) struct JwtAuth {
    key: Option<DecodingKey>,
    /// The provider's keys (`auth.jwks_url`).
    jwks: Option<Arc<Jwks>>,
    validation: Validation,
    anonymous: bool,
    bans: Bans,
}

impl JwtAuth {
    /// `audience` and `issuer`, when given, must match the token's `aud`
    /// and `iss`; without an audience, `aud` is not checked.
    pub(crate) fn new(
        secret: Option<&str>,
        anonymous: bool,
        leeway: Duration,
        audience: Option<&str>,
        issuer: Option<&str>,
        bans: Bans,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match audience {
            Some(a) => {
                validation.set_audience(&[a]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(i) = issuer {
            validation.set_issuer(&[i]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        JwtAuth { key: secret.map(|s| DecodingKey::from_secret(s.as_bytes())), jwks: None, validation, anonymous, bans }
    }

    /// Also accepts tokens signed with a key of this set.
    pub(crate) fn with_jwks(mut self, jwks: Option<Arc<Jwks>>) -> Self {
        self.jwks = jwks;
        self
    }

    /// Checks the signature (with the key the header's algorithm calls
    /// for) and the claims.
    fn verify(&self, token: &str) -> Result<TokenData<Claims>, String> {
        let header = decode_header(token).map_err(|e| format!("the token is not a valid JWT ({e})"))?;
        if jwks::is_asymmetric(header.alg) {
            let Some(set) = &self.jwks else {
                return Err(format!(
                    "the token is signed with {:?}; this gateway checks HS256 tokens only (its operator can set auth.jwks_url)",
                    header.alg
                ));
            };
            let mut v = self.validation.clone();
            v.algorithms = vec![header.alg];
            let mut last = None;
            for key in set.keys_for(header.alg, header.kid.as_deref())? {
                match decode::<Claims>(token, &key, &v) {
                    Ok(d) => return Ok(d),
                    Err(e) => last = Some(e),
                }
            }
            return Err(last.map_or_else(|| "no key verifies the token".into(), |e| explain(&e)));
        }
        let Some(key) = &self.key else {
            return Err(if self.jwks.is_some() {
                format!(
                    "the token is signed with {:?}; this gateway checks its provider's RS/PS/ES/EdDSA keys",
                    header.alg
                )
            } else {
                "this gateway accepts anonymous clients only: connect without a token".into()
            });
        };
        decode::<Claims>(token, key, &self.validation).map_err(|e| explain(&e))
    }
}

/// What a rejected token's client is told.
fn explain(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired: get a new one and reconnect".into(),
        K::InvalidSignature => "the token's signature does not match this gateway's secret or keys".into(),
        K::InvalidAlgorithm => "the token's algorithm is not accepted: HMAC tokens must be HS256".into(),
        K::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
        K::ImmatureSignature => "the token is not valid yet (nbf is in the future)".into(),
        K::InvalidAudience => "the token's audience (aud) is not this gateway's".into(),
        K::InvalidIssuer => "the token's issuer (iss) is not the one this gateway trusts".into(),
        _ => format!("the token is not a valid JWT ({e})"),
    }
}

/// The user id an anonymous session is shown as (from its session id).
pub(crate) fn anonymous_user(session: &str) -> String {
    format!("anon-{}", session.get(..8).unwrap_or(session))
}

impl JwtAuth {
    /// Why this user may not open a session now, if banned.
    pub(crate) fn banned(&self, user: &str) -> Option<String> {
        let left = self.bans.remaining(user, Instant::now())?;
        Some(format!(
            "user {user} is banned by the operator for another {}",
            humantime::format_duration(Duration::from_secs(left.as_secs().max(1)))
        ))
    }

    /// Whether a token can be checked here (a secret or a key set).
    pub(crate) fn checks_tokens(&self) -> bool {
        self.key.is_some() || self.jwks.is_some()
    }

    /// Who the credential says the client is: the token's subject, or
    /// anonymous (an empty user) for no credential where that is allowed.
    pub(crate) fn principal(&self, credential: &[u8]) -> Result<Principal, String> {
        if credential.is_empty() {
            return if self.anonymous {
                Ok(Principal::default())
            } else {
                Err("this gateway requires a token: pass a JWT from its operator's identity provider".into())
            };
        }
        if !self.checks_tokens() {
            return Err("this gateway accepts anonymous clients only: connect without a token".into());
        }
        let token =
            std::str::from_utf8(credential).map_err(|_| "the token is not UTF-8 text: send a JWT".to_owned())?;
        match self.verify(token) {
            Ok(data) if data.claims.sub.starts_with("anon-") => {
                Err("the token's subject (sub) may not start with \"anon-\": that names anonymous users".into())
            }
            Ok(data) if !data.claims.sub.is_empty() && data.claims.sub.len() <= 128 => {
                match self.banned(&data.claims.sub) {
                    Some(why) => Err(why),
                    None => {
                        let c = data.claims;
                        let name = c.name.filter(|n| !n.is_empty() && n.len() <= 64);
                        Ok(Principal { user: c.sub, name, rooms: c.rooms, publish: c.publish })
                    }
                }
            }
            Ok(_) => Err("the token's subject (sub) must be a user id of 1 to 128 bytes".into()),
            Err(e) => Err(e),
        }
    }
}

impl Authenticate for JwtAuth {
    fn authenticate(&self, credential: &[u8]) -> Result<Arc<str>, String> {
        self.principal(credential).map(|p| p.encode())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn token(secret: &str, alg: Algorithm, claims: serde_json::Value) -> Vec<u8> {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap().into_bytes()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn a_valid_token_names_the_user_and_bad_ones_say_why() {
        let a = JwtAuth::new(Some(SECRET), false, Duration::from_secs(60), None, None, Bans::default());
        let good = token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "alice", "exp": now() + 600}));
        assert_eq!(&*a.authenticate(&good).unwrap(), "alice");
        let expired = token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "alice", "exp": now() - 3600}));
        assert!(a.authenticate(&expired).unwrap_err().contains("expired"));
        // Within the leeway, still accepted.
        let recent = token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "bob", "exp": now() - 10}));
        assert_eq!(&*a.authenticate(&recent).unwrap(), "bob");
        let forged = token(&"x".repeat(32), Algorithm::HS256, serde_json::json!({"sub": "eve", "exp": now() + 600}));
        assert!(a.authenticate(&forged).unwrap_err().contains("signature"));
        let other_alg = token(SECRET, Algorithm::HS512, serde_json::json!({"sub": "eve", "exp": now() + 600}));
        assert!(a.authenticate(&other_alg).unwrap_err().contains("HS256"));
        let no_exp = token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "eve"}));
        assert!(a.authenticate(&no_exp).unwrap_err().contains("exp"));
        assert!(a.authenticate(b"not a jwt").unwrap_err().contains("not a valid JWT"));
        assert!(a.authenticate(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        assert!(a.authenticate(b"").unwrap_err().contains("requires a token"));
        let early =
            token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "eve", "exp": now() + 600, "nbf": now() + 300}));
        assert!(a.authenticate(&early).unwrap_err().contains("not valid yet"));
        let anon = token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "anon-12345678", "exp": now() + 600}));
        assert!(a.authenticate(&anon).unwrap_err().contains("anon-"));
        // Without a configured audience, a token's aud is not checked.
        let with_aud =
            token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "carl", "exp": now() + 600, "aud": "x"}));
        assert_eq!(&*a.authenticate(&with_aud).unwrap(), "carl");
    }

    #[test]
    fn banned_users_are_refused_until_the_ban_ends_or_is_lifted() {
        let bans = Bans::default();
        let a = JwtAuth::new(Some(SECRET), false, Duration::from_secs(60), None, None, bans.clone());
        let t = token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "mallory", "exp": now() + 600}));
        bans.ban("mallory", Instant::now() + Duration::from_secs(600));
        assert!(a.authenticate(&t).unwrap_err().contains("banned by the operator for another 9m"));
        assert_eq!(bans.list(Instant::now()).len(), 1);
        assert!(bans.lift("mallory"));
        assert_eq!(&*a.authenticate(&t).unwrap(), "mallory");
        // An expired ban is forgotten.
        bans.ban("mallory", Instant::now());
        assert_eq!(&*a.authenticate(&t).unwrap(), "mallory");
        assert!(bans.list(Instant::now()).is_empty());
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let a = JwtAuth::new(
            Some(SECRET),
            false,
            Duration::from_secs(60),
            Some("tether"),
            Some("https://id.example"),
            Bans::default(),
        );
        let claims =
            |aud: &str, iss: &str| serde_json::json!({"sub": "dan", "exp": now() + 600, "aud": aud, "iss": iss});
        let ok = token(SECRET, Algorithm::HS256, claims("tether", "https://id.example"));
        assert_eq!(&*a.authenticate(&ok).unwrap(), "dan");
        let wrong_aud = token(SECRET, Algorithm::HS256, claims("other", "https://id.example"));
        assert!(a.authenticate(&wrong_aud).unwrap_err().contains("audience"));
        let wrong_iss = token(SECRET, Algorithm::HS256, claims("tether", "https://evil.example"));
        assert!(a.authenticate(&wrong_iss).unwrap_err().contains("issuer"));
        let none = token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "dan", "exp": now() + 600}));
        let e = a.authenticate(&none).unwrap_err();
        assert!(e.contains("has no `aud`") || e.contains("has no `iss`"), "{e}");
    }

    #[test]
    fn anonymous_gateways_admit_empty_credentials_only() {
        let a = JwtAuth::new(None, true, Duration::from_secs(60), None, None, Bans::default());
        assert_eq!(&*a.authenticate(b"").unwrap(), "");
        assert!(a.authenticate(b"abc").unwrap_err().contains("anonymous clients only"));
        assert_eq!(anonymous_user("0123456789abcdef"), "anon-01234567");
    }

    #[test]
    fn claims_carry_the_display_name_and_room_permissions_through_the_session() {
        let a = JwtAuth::new(Some(SECRET), false, Duration::from_secs(60), None, None, Bans::default());
        let t = token(
            SECRET,
            Algorithm::HS256,
            serde_json::json!({"sub": "ann", "exp": now() + 600, "name": "Ann", "rooms": ["lobby", "team:*"], "publish": ["team:*"]}),
        );
        let raw = a.authenticate(&t).unwrap();
        let p = Principal::decode(&raw);
        assert_eq!((p.user.as_str(), p.name.as_deref()), ("ann", Some("Ann")));
        assert!(p.may_join("lobby") && p.may_join("team:red") && !p.may_join("staff") && !p.may_join("team"));
        assert!(p.may_say("team:red") && !p.may_say("lobby"), "publish narrows what it may say in");
        assert_eq!(user_of(Some(&raw)).as_deref(), Some("ann"));
        // Without permissions or name: the bare user id, any room.
        let plain =
            a.authenticate(&token(SECRET, Algorithm::HS256, serde_json::json!({"sub": "bo", "exp": now() + 600})));
        assert_eq!(&*plain.unwrap(), "bo");
        assert!(Principal::decode("bo").may_join("anything") && Principal::decode("bo").may_say("anything"));
        // A user id that looks like JSON is kept unambiguous.
        let odd = Principal::user("{x}");
        assert_eq!(Principal::decode(&odd.encode()), odd);
        assert_eq!(user_of(Some("")), None, "anonymous");
    }
}

//! The `connect` hook: the gateway's own token check first (where it has a
//! secret or a key set), then the backend decides who the client is and
//! what it may do, or refuses it with a reason the client sees.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tether_runtime::server::{AdmitFuture, Applicant, Denial};
use tether_runtime::Authenticate;

use super::{Hook, HookError, Hooks, Verdict};
use crate::auth::{JwtAuth, Principal};

/// How long a client refused for a backend that did not answer waits (plus
/// up to as much again of jitter) before its next attempt.
const BACKEND_RETRY: Duration = Duration::from_secs(2);

/// The gateway's authenticator: tokens, then the `connect` hook if on.
pub(crate) struct GatewayAuth {
    pub(crate) jwt: JwtAuth,
    pub(crate) hooks: Option<Arc<Hooks>>,
    /// Within the handshake's time: a refusal for a backend away still
    /// reaches the client as REJECT 5 instead of a timeout.
    pub(crate) patience: Duration,
}

impl Authenticate for GatewayAuth {
    fn authenticate(&self, credential: &[u8]) -> Result<Arc<str>, String> {
        self.jwt.authenticate(credential)
    }

    fn admit<'a>(&'a self, who: Applicant<'a>) -> AdmitFuture<'a> {
        let Some(hooks) = self.hooks.as_ref().filter(|h| h.calls(Hook::Connect)) else {
            return Box::pin(std::future::ready(self.authenticate(who.credential).map_err(Denial::Refused)));
        };
        Box::pin(async move {
            // An opaque credential (not a token this gateway can check) is
            // the backend's to judge; a token is checked here first.
            let opaque = !who.credential.is_empty() && !self.jwt.checks_tokens();
            let verified =
                if opaque { None } else { Some(self.jwt.principal(who.credential).map_err(Denial::Refused)?) };
            let body = json!({
                "credential": String::from_utf8_lossy(who.credential),
                "user": verified.as_ref().map(|p| p.user.as_str()).filter(|u| !u.is_empty()),
                "peer": who.peer.to_string(),
                "transport": who.kind.to_string(),
            });
            let key = format!("connect-{}", &crate::random_key()[..32]);
            let deadline = Instant::now() + self.patience;
            let v: Verdict = match hooks.call(Hook::Connect, &key, &body, Some(deadline)).await {
                Ok(v) => v,
                Err(e) => {
                    let message = match e {
                        HookError::Unavailable(_) => "the application's backend is not answering; retrying",
                        HookError::Garbage(_) => "the application's backend answered something unexpected; retrying",
                    };
                    return Err(Denial::Unavailable { message: message.into(), retry_after: BACKEND_RETRY });
                }
            };
            if !v.allow {
                let reason = v.reason.filter(|r| !r.is_empty());
                return Err(Denial::Refused(reason.unwrap_or_else(|| "refused by the application".into())));
            }
            let base = verified.unwrap_or_default();
            let user = match v.user {
                Some(u) if u.is_empty() || u.len() > 128 || u.starts_with("anon-") => {
                    tracing::warn!(user = %u, "the connect hook named a user id that is not 1 to 128 bytes or starts with anon-");
                    return Err(Denial::Unavailable {
                        message: "the application's backend answered something unexpected; retrying".into(),
                        retry_after: BACKEND_RETRY,
                    });
                }
                Some(u) => u,
                None if opaque => {
                    tracing::warn!("the connect hook admitted an opaque credential without naming its user");
                    String::new()
                }
                None => base.user,
            };
            if let Some(why) = self.jwt.banned(&user) {
                return Err(Denial::Refused(why));
            }
            let p = Principal {
                user,
                name: v.name.filter(|n| !n.is_empty() && n.len() <= 64).or(base.name),
                rooms: v.rooms.or(base.rooms),
                publish: v.publish.or(base.publish),
            };
            Ok(p.encode())
        })
    }
}

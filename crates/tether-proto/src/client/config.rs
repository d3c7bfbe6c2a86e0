//! The client's settings.

use std::time::Duration;

use bytes::Bytes;

use crate::backoff::BackoffConfig;
use crate::error::ConfigError;
use crate::frame;
use crate::heartbeat::{HeartbeatConfig, Profile};
use crate::race::RaceConfig;
use crate::stream::{AckConfig, ReceiveWindow, ReplayLimits};

/// Client settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Liveness probing.
    pub heartbeat: HeartbeatConfig,
    /// Reconnection delays.
    pub backoff: BackoffConfig,
    /// Connection attempts raced beside a slow one (§9.7).
    pub race: RaceConfig,
    /// Bounds on unacknowledged outgoing messages (also bounds `send` while
    /// disconnected).
    pub replay: ReplayLimits,
    /// Ack pacing.
    pub ack: AckConfig,
    /// Server messages held for a busy application before further ones are
    /// deferred (`docs/PROTOCOL.md` §7.8).
    pub receive_window: ReceiveWindow,
    /// Longest a connection attempt may take, from asking the caller to
    /// connect to receiving WELCOME.
    pub handshake_timeout: Duration,
    /// Largest frame this client accepts.
    pub max_frame: u32,
    /// Credential sent in every HELLO.
    pub auth: Bytes,
}

impl ClientConfig {
    /// Settings built around a heartbeat profile.
    pub fn profile(p: Profile) -> Self {
        ClientConfig {
            heartbeat: HeartbeatConfig::profile(p),
            backoff: BackoffConfig::default(),
            race: RaceConfig::default(),
            replay: ReplayLimits::client_default(),
            ack: AckConfig::default(),
            receive_window: ReceiveWindow::default(),
            handshake_timeout: match p {
                Profile::Realtime => Duration::from_secs(3),
                _ => Duration::from_secs(5),
            },
            max_frame: frame::DEFAULT_MAX_FRAME,
            auth: Bytes::new(),
        }
    }

    /// Checks every setting; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.heartbeat.validate()?;
        self.backoff.validate()?;
        self.race.validate()?;
        self.replay.validate()?;
        self.receive_window.validate()?;
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::new("handshake_timeout", "is 0", "use a few seconds, e.g. 5s"));
        }
        if !(frame::MIN_MAX_FRAME..=frame::MAX_MAX_FRAME).contains(&self.max_frame) {
            return Err(ConfigError::new(
                "max_frame",
                format!("{} is outside 16384..=16777216", self.max_frame),
                "pick a frame limit within the protocol's range",
            ));
        }
        if self.auth.len() > frame::MAX_AUTH_LEN {
            return Err(ConfigError::new("auth", "longer than 4096 bytes", "use a shorter credential"));
        }
        Ok(())
    }
}

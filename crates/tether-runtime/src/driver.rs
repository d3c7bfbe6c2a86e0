//! What every driver loop (client task, session task) shares: the clock fed
//! to the core, the lazily re-armed deadline, and reading an optional
//! transport.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::time::Sleep;

use crate::transport::{RecvError, Transport};

/// The time given to the core (tokio's clock, so paused-time tests work).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A sleep that fires only when re-armed.
pub(crate) fn idle_sleep() -> Sleep {
    tokio::time::sleep_until(far())
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

/// Arms `sleep` for the core's next deadline, lazily: only when the
/// deadline moved earlier or the sleep already fired. A later deadline
/// leaves it armed; firing early is harmless (the core re-checks).
pub(crate) fn rearm(mut sleep: Pin<&mut Sleep>, deadline: Option<Instant>) {
    match deadline {
        Some(d) => {
            let d = tokio::time::Instant::from_std(d);
            if d < sleep.deadline() || sleep.is_elapsed() {
                sleep.as_mut().reset(d);
            }
        }
        None if sleep.is_elapsed() => sleep.reset(far()),
        None => {}
    }
}

/// The next frame on `t`, or never when there is no transport.
pub(crate) async fn recv(t: Option<&mut Transport>) -> Result<Bytes, RecvError> {
    match t {
        Some(t) => t.recv().await,
        None => std::future::pending().await,
    }
}

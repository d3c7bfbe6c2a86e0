//! Prometheus metrics, one registry per gateway (so that several gateways,
//! in tests say, never mix their figures; nothing is installed process-wide).
//! Counters are recorded as events happen; gauges of the session table (by
//! state, by transport), of the room table, the counts kept by the runtime
//! (pings, rejects, bytes) and the process's figures are read when
//! Prometheus scrapes. The runtime reports its timings (detection, outage,
//! resume handshake) through [`Observer`], on its own tasks.
//!
//! Every labelled counter whose labels are known in advance (ends by
//! reason, rejects by reason, hook calls by hook and outcome) is there at 0
//! from the start, so that `rate()` and alerts see its first increment.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tether_proto::{CloseCode, RejectReason, SessionEnd, SessionId};
use tether_runtime::server::Observer;
use tether_runtime::{Kind, ServerHandle};

use crate::hooks::Hook;

/// Every `reason` of `tether_sessions_ended_total` ([`end_label`]).
pub(crate) const END_LABELS: [&str; 7] =
    ["closed", "kicked", "banned", "expired", "drained", "replay_overflow", "other"];

/// Every `outcome` of `tether_hook_calls_total`.
const HOOK_OUTCOMES: [&str; 3] = ["ok", "unavailable", "garbage"];

/// How long a kick is remembered while its session's end has not been
/// seen (an end that never comes, e.g. a session that ended at that very
/// moment, must not keep its entry for ever).
const KICK_MEMORY: Duration = Duration::from_secs(600);

pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The process's CPU, memory, descriptors, threads and start time:
    /// `metrics-process` reads them (on Linux, from /proc) and records them
    /// through whatever recorder is current, so it fits the local registry
    /// (it runs inside [`Metrics::with`] when Prometheus scrapes).
    process: metrics_process::Collector,
    /// Sessions this gateway's admin API ended (`kicked` or `banned`),
    /// until their end is counted.
    kicks: Mutex<HashMap<SessionId, (&'static str, Instant)>>,
}

impl Metrics {
    pub(crate) fn new() -> anyhow::Result<Metrics> {
        let fast = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let detection = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0];
        let outage = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("tether_rtt_seconds".into()), &fast)?
            .set_buckets_for_metric(Matcher::Full("tether_hook_seconds".into()), &fast)?
            .set_buckets_for_metric(Matcher::Full("tether_resume_handshake_seconds".into()), &fast)?
            .set_buckets_for_metric(Matcher::Full("tether_detection_seconds".into()), &detection)?
            .set_buckets_for_metric(Matcher::Full("tether_outage_seconds".into()), &outage)?
            .build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            recorder,
            handle,
            process: metrics_process::Collector::default(),
            kicks: Mutex::new(HashMap::new()),
        };
        m.with(|| {
            describe();
            m.process.describe();
            for reason in END_LABELS {
                counter!("tether_sessions_ended_total", "reason" => reason).absolute(0);
            }
            for reason in (1..=u8::MAX).map_while(RejectReason::from_u8) {
                counter!("tether_rejects_total", "reason" => format!("{reason:?}")).absolute(0);
            }
            for hook in Hook::ALL {
                for outcome in HOOK_OUTCOMES {
                    counter!("tether_hook_calls_total", "hook" => hook.name(), "outcome" => outcome).absolute(0);
                }
            }
            gauge!(
                "tether_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "protocol" => tether_proto::frame::VERSION.to_string(),
                "profile" => if cfg!(debug_assertions) { "debug" } else { "release" },
            )
            .set(1.0);
        });
        Ok(m)
    }

    /// Runs `f` with this gateway's registry as the metrics recorder.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    pub(crate) fn opened(&self) {
        self.with(|| counter!("tether_sessions_opened_total").increment(1));
    }
    pub(crate) fn detected(&self) {
        self.with(|| counter!("tether_detections_total").increment(1));
    }
    pub(crate) fn resumed(&self, replayed: u64) {
        self.with(|| {
            counter!("tether_resumes_total").increment(1);
            counter!("tether_replayed_messages_total").increment(replayed);
        });
    }

    /// The admin API is about to end this session: `banned` with a ban.
    pub(crate) fn kicking(&self, session: SessionId, banned: bool) {
        let now = Instant::now();
        let mut k = self.kicks.lock().unwrap_or_else(|p| p.into_inner());
        k.retain(|_, (_, at)| now.duration_since(*at) < KICK_MEMORY);
        k.insert(session, (if banned { "banned" } else { "kicked" }, now));
    }

    /// The kick of this session did not reach it (not held here).
    pub(crate) fn not_kicked(&self, session: SessionId) {
        self.kicks.lock().unwrap_or_else(|p| p.into_inner()).remove(&session);
    }

    /// A session ended here (`draining`: while this gateway drains).
    pub(crate) fn ended(&self, session: SessionId, reason: &SessionEnd, draining: bool) {
        let kick = self.kicks.lock().unwrap_or_else(|p| p.into_inner()).remove(&session).map(|(k, _)| k);
        self.count_end(end_label(reason, kick, draining));
    }

    /// A session ended with this label (`ended` works it out).
    pub(crate) fn count_end(&self, label: &'static str) {
        self.with(|| {
            if label == "expired" || label == "drained" {
                counter!("tether_expiries_total").increment(1);
            }
            counter!("tether_sessions_ended_total", "reason" => label).increment(1);
        });
    }

    pub(crate) fn message_in(&self) {
        self.with(|| counter!("tether_messages_in_total").increment(1));
    }
    pub(crate) fn messages_out(&self, n: u64) {
        self.with(|| counter!("tether_messages_out_total").increment(n));
    }
    pub(crate) fn send_failed(&self) {
        self.with(|| counter!("tether_send_failures_total").increment(1));
    }
    pub(crate) fn hook(&self, hook: &'static str, outcome: &'static str, seconds: f64) {
        self.with(|| {
            counter!("tether_hook_calls_total", "hook" => hook, "outcome" => outcome).increment(1);
            histogram!("tether_hook_seconds", "hook" => hook).record(seconds);
        });
    }
    pub(crate) fn rtt(&self, seconds: f64) {
        self.with(|| histogram!("tether_rtt_seconds").record(seconds));
    }

    /// An admin API request was answered. `route` is the matched path
    /// template (or `unmatched`); other methods than the API's are `other`,
    /// so that no client can grow the label sets.
    pub(crate) fn admin_request(&self, route: &str, method: &axum::http::Method, status: u16) {
        use axum::http::Method;
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            Method::HEAD => "HEAD",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.with(|| {
            let (route, status) = (route.to_owned(), status.to_string());
            counter!("tether_admin_requests_total", "route" => route, "method" => method, "status" => status)
                .increment(1);
        });
    }

    /// Folds histogram samples in (they pile up until then).
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Reads the session table, the room table (`rooms`: rooms and
    /// memberships, None with `[cluster]`), the runtime's counts and the
    /// process's figures, then renders everything.
    pub(crate) fn render(&self, server: &ServerHandle, rooms: Option<(usize, usize)>) -> String {
        let sessions = server.sessions();
        let rejects: HashMap<RejectReason, u64> = server.rejects().into_iter().collect();
        self.with(|| {
            let attached = sessions.iter().filter(|s| s.attached).count();
            gauge!("tether_sessions", "state" => "attached").set(attached as f64);
            gauge!("tether_sessions", "state" => "detached").set((sessions.len() - attached) as f64);
            for kind in [Kind::Tcp, Kind::Tls, Kind::Ws, Kind::Wss] {
                let n = sessions.iter().filter(|s| s.attached && s.peer.is_some_and(|(k, _)| k == kind)).count();
                gauge!("tether_connections", "transport" => kind.to_string()).set(n as f64);
            }
            if let Some((rooms, members)) = rooms {
                gauge!("tether_rooms").set(rooms as f64);
                gauge!("tether_room_members").set(members as f64);
            }
            counter!("tether_pings_total").absolute(server.pings_answered());
            for reason in (1..=u8::MAX).map_while(RejectReason::from_u8) {
                let n = rejects.get(&reason).copied().unwrap_or(0);
                counter!("tether_rejects_total", "reason" => format!("{reason:?}")).absolute(n);
            }
            counter!("tether_connections_rate_limited_total").absolute(server.rate_limited());
            counter!("tether_bytes_in_total").absolute(server.bytes_received());
            counter!("tether_bytes_out_total").absolute(server.bytes_sent());
            self.process.collect();
        });
        self.handle.render()
    }
}

/// The runtime's timings, recorded where they are measured (a session's or
/// a handshake's task).
impl Observer for Metrics {
    fn transport_lost(&self, silence: Duration, timed_out: bool) {
        let cause = if timed_out { "heartbeat" } else { "closed" };
        self.with(|| histogram!("tether_detection_seconds", "cause" => cause).record(silence.as_secs_f64()));
    }

    fn resumed(&self, outage: Duration) {
        self.with(|| histogram!("tether_outage_seconds").record(outage.as_secs_f64()));
    }

    fn resume_handshake(&self, took: Duration) {
        self.with(|| histogram!("tether_resume_handshake_seconds").record(took.as_secs_f64()));
    }
}

/// The `reason` a session's end is counted under: `kick` is what this
/// gateway's admin API did to it (`kicked`, `banned`), `draining` whether
/// the gateway drains (resumes are refused here then, so a session that
/// expires did so because of the drain).
pub(crate) fn end_label(r: &SessionEnd, kick: Option<&'static str>, draining: bool) -> &'static str {
    match r {
        SessionEnd::Expired if draining => "drained",
        SessionEnd::Expired => "expired",
        // A kick made on another node's admin API reaches this one through
        // the cluster's store (bans end only the sessions of their node).
        SessionEnd::PeerClosed { code: CloseCode::Kicked, .. } => kick.unwrap_or("kicked"),
        SessionEnd::PeerClosed { .. } | SessionEnd::LocalClose => "closed",
        SessionEnd::ReplayOverflow { .. } => "replay_overflow",
        _ => "other",
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("tether_sessions", "Sessions by state: attached (a transport carries it) or detached (in grace)");
    describe_gauge!("tether_connections", "Attached sessions by transport (tcp, tls, ws, wss)");
    describe_gauge!("tether_rooms", "Rooms with at least one member (in memory; absent with [cluster])");
    describe_gauge!(
        "tether_room_members",
        "Room memberships: members summed over rooms (in memory; absent with [cluster])"
    );
    describe_gauge!("tether_build_info", "Always 1; the labels name the build (version, protocol, profile)");
    describe_counter!("tether_sessions_opened_total", "New sessions opened");
    describe_counter!("tether_pings_total", "Heartbeat PINGs answered");
    describe_histogram!("tether_rtt_seconds", Unit::Seconds, "Round-trip times reported by clients on their PINGs");
    describe_counter!("tether_detections_total", "Transports found lost (sessions detached)");
    describe_histogram!(
        "tether_detection_seconds",
        Unit::Seconds,
        "Silence before a lost transport was found: last frame heard to the detach, by cause \
         (heartbeat: nothing heard for the idle timeout; closed: the connection closed or failed)"
    );
    describe_counter!("tether_resumes_total", "Sessions resumed on a new transport");
    describe_histogram!(
        "tether_outage_seconds",
        Unit::Seconds,
        "How long sessions were detached before they resumed (detach and resume seen by this node)"
    );
    describe_histogram!(
        "tether_resume_handshake_seconds",
        Unit::Seconds,
        "Resume handshakes: the HELLO read to the WELCOME queued (the store's claim included)"
    );
    describe_counter!("tether_replayed_messages_total", "Messages written again after a resume");
    describe_counter!("tether_expiries_total", "Sessions whose grace ran out without a resume");
    describe_counter!(
        "tether_sessions_ended_total",
        "Sessions ended, by reason (closed, kicked, banned, expired, drained, replay_overflow, other)"
    );
    describe_counter!("tether_rejects_total", "Handshakes refused, by reason");
    describe_counter!(
        "tether_connections_rate_limited_total",
        "Connections closed at accept: their address opened too many (limits.connections_per_address)"
    );
    describe_counter!(
        "tether_hook_calls_total",
        "Backend hook calls by hook and outcome (ok, unavailable, garbage), retries included in one call"
    );
    describe_histogram!("tether_hook_seconds", Unit::Seconds, "Backend hook call durations, retries included");
    describe_counter!("tether_messages_in_total", "Application messages received");
    describe_counter!("tether_messages_out_total", "Application messages queued to sessions");
    describe_counter!("tether_send_failures_total", "Messages that could not be queued (buffer full, session gone)");
    describe_counter!(
        "tether_bytes_in_total",
        Unit::Bytes,
        "Tether frame bytes read from clients (HELLOs and every frame after; no transport framing)"
    );
    describe_counter!(
        "tether_bytes_out_total",
        Unit::Bytes,
        "Tether frame bytes written to clients (WELCOMEs and every frame after; no transport framing)"
    );
    describe_counter!("tether_admin_requests_total", "Admin API requests by route template, method and status");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_labelled_by_what_ended_them() {
        let kicked = SessionEnd::PeerClosed { code: CloseCode::Kicked, reason: "spam".into() };
        assert_eq!(end_label(&kicked, Some("banned"), false), "banned");
        assert_eq!(end_label(&kicked, Some("kicked"), false), "kicked");
        assert_eq!(end_label(&kicked, None, false), "kicked", "a kick forwarded by another node");
        let client = SessionEnd::PeerClosed { code: CloseCode::Normal, reason: String::new() };
        assert_eq!(end_label(&client, Some("kicked"), false), "closed", "ended otherwise before the kick");
        assert_eq!(end_label(&SessionEnd::LocalClose, None, false), "closed");
        assert_eq!(end_label(&SessionEnd::Expired, None, false), "expired");
        assert_eq!(end_label(&SessionEnd::Expired, None, true), "drained");
        assert_eq!(end_label(&SessionEnd::ReplayOverflow { messages: 1, bytes: 1 }, None, false), "replay_overflow");
        assert_eq!(end_label(&SessionEnd::Incompatible("x".into()), None, false), "other");
        for r in [kicked, client, SessionEnd::Expired] {
            for kick in [None, Some("kicked"), Some("banned")] {
                for draining in [false, true] {
                    assert!(END_LABELS.contains(&end_label(&r, kick, draining)));
                }
            }
        }
    }
}

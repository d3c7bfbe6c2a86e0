//! Prometheus metrics, one registry per gateway (so that several gateways,
//! in tests say, never mix their figures; nothing is installed process-wide).
//! Counters are recorded as events happen; gauges of the session table (by
//! state, by transport) and the ping count kept by the runtime are read when
//! Prometheus scrapes.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tether_runtime::{Kind, ServerHandle};

pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Metrics {
    pub(crate) fn new() -> anyhow::Result<Metrics> {
        let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("tether_rtt_seconds".into()), &buckets)?
            .set_buckets_for_metric(Matcher::Full("tether_hook_seconds".into()), &buckets)?
            .build_recorder();
        let handle = recorder.handle();
        let m = Metrics { recorder, handle };
        m.with(describe);
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
    pub(crate) fn ended(&self, reason: &'static str) {
        self.with(|| {
            if reason == "expired" {
                counter!("tether_expiries_total").increment(1);
            }
            counter!("tether_sessions_ended_total", "reason" => reason).increment(1);
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

    /// Folds histogram samples in (they pile up until then).
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Reads the session table into the gauges, then renders everything.
    pub(crate) fn render(&self, server: &ServerHandle) -> String {
        let sessions = server.sessions();
        self.with(|| {
            let attached = sessions.iter().filter(|s| s.attached).count();
            gauge!("tether_sessions", "state" => "attached").set(attached as f64);
            gauge!("tether_sessions", "state" => "detached").set((sessions.len() - attached) as f64);
            for kind in [Kind::Tcp, Kind::Tls, Kind::Ws, Kind::Wss] {
                let n = sessions.iter().filter(|s| s.attached && s.peer.is_some_and(|(k, _)| k == kind)).count();
                gauge!("tether_connections", "transport" => kind.to_string()).set(n as f64);
            }
            counter!("tether_pings_total").absolute(server.pings_answered());
            for (reason, n) in server.rejects() {
                counter!("tether_rejects_total", "reason" => format!("{reason:?}")).absolute(n);
            }
            counter!("tether_connections_rate_limited_total").absolute(server.rate_limited());
        });
        self.handle.render()
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("tether_sessions", "Sessions by state: attached (a transport carries it) or detached (in grace)");
    describe_gauge!("tether_connections", "Attached sessions by transport (tcp, tls, ws, wss)");
    describe_counter!("tether_sessions_opened_total", "New sessions opened");
    describe_counter!("tether_pings_total", "Heartbeat PINGs answered");
    describe_histogram!("tether_rtt_seconds", Unit::Seconds, "Round-trip times reported by clients on their PINGs");
    describe_counter!("tether_detections_total", "Transports found lost (sessions detached)");
    describe_counter!("tether_resumes_total", "Sessions resumed on a new transport");
    describe_counter!("tether_replayed_messages_total", "Messages written again after a resume");
    describe_counter!("tether_expiries_total", "Sessions whose grace ran out without a resume");
    describe_counter!("tether_sessions_ended_total", "Sessions ended, by reason");
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
}

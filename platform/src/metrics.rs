//! `outpostd run --metrics ADDR`: the Prometheus text format at
//! `/metrics`, made from the daemon's status snapshot at each scrape (so a
//! scrape never waits behind the daemon's work). Off by default, and only
//! on a loopback address unless `--metrics-allow-remote`.
//!
//! Families (every one labelled by `instrument`):
//! - `outpost_instrument_state{state}`: 1 for its lifecycle state;
//! - `outpost_instrument_health{health}`: 1 for its health;
//! - `outpost_instrument_restarts_total`;
//! - `outpost_health_check_round_trip_seconds`: its last answered check;
//! - `outpost_health_checks_unanswered_total`;
//! - `outpost_instrument_config_version{which="applied"|"desired"}`;
//! - `outpost_instrument_storage_bytes{which="used"|"size"}`;
//! - `outpost_instrument_events_total{which="published"|"dropped"|"resent"}`
//!   and `outpost_instrument_events_queued`, as its SDK reports them in its
//!   health details;
//! - `outpost_bus_connections_open` and
//!   `outpost_bus_connections_total{which="accepted"|"refused"}`, counted
//!   by its proxy;
//! - `outpost_retention_runs_total{outcome}` (since outpostd started),
//!   `outpost_retention_last_run_timestamp_seconds` and
//!   `outpost_retention_last_outcome{outcome}`;
//! - and `outpost_desired_state_version`, `outpost_instruments`.

use std::fmt::Write;
use std::net::SocketAddr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::daemon::{Handle, Snapshot};

/// Why the metrics endpoint was not started.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "refusing to serve metrics on {0}: it is not a loopback address and metrics say a lot \
         about the sensor (fix: use 127.0.0.1:PORT, or pass --metrics-allow-remote)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Instrument {
    instrument: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstrumentState {
    instrument: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstrumentHealth {
    instrument: String,
    health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    instrument: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Which {
    instrument: String,
    which: String,
}

/// The metrics of one snapshot, in the text format.
pub fn render(snap: &Snapshot) -> String {
    let mut r = Registry::with_prefix("outpost");
    let instruments = Gauge::<i64>::default();
    instruments.set(snap.instruments.len() as i64);
    r.register(
        "instruments",
        "Instruments in the sensor's status",
        instruments,
    );
    let desired = Gauge::<i64>::default();
    desired.set(snap.desired_version.unwrap_or(0));
    r.register(
        "desired_state_version",
        "The desired-state version in force (0: none)",
        desired,
    );
    let state = Family::<InstrumentState, Gauge>::default();
    let health = Family::<InstrumentHealth, Gauge>::default();
    let restarts = Family::<Instrument, Counter>::default();
    let rtt = Family::<Instrument, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let unanswered = Family::<Instrument, Counter>::default();
    let config = Family::<Which, Gauge>::default();
    let storage = Family::<Which, Gauge>::default();
    for i in &snap.instruments {
        let who = Instrument {
            instrument: i.name.clone(),
        };
        state
            .get_or_create(&InstrumentState {
                instrument: i.name.clone(),
                state: i.state.to_string(),
            })
            .set(1);
        health
            .get_or_create(&InstrumentHealth {
                instrument: i.name.clone(),
                health: i.health.clone(),
            })
            .set(1);
        restarts.get_or_create(&who).inc_by(u64::from(i.restarts));
        unanswered.get_or_create(&who).inc_by(i.health_unanswered);
        if let Some(us) = i.health_rtt_us {
            rtt.get_or_create(&who).set(us as f64 / 1e6);
        }
        let which = |w: &str| Which {
            instrument: i.name.clone(),
            which: w.into(),
        };
        if let Some(v) = i.config_applied {
            config.get_or_create(&which("applied")).set(v);
        }
        if let Some(v) = i.config_version {
            config.get_or_create(&which("desired")).set(v);
        }
        if let Some(u) = &i.storage {
            storage
                .get_or_create(&which("used"))
                .set(u.used_bytes as i64);
            storage
                .get_or_create(&which("size"))
                .set(u.size_bytes as i64);
        }
    }
    r.register(
        "instrument_state",
        "1 for the instrument's lifecycle state",
        state,
    );
    r.register("instrument_health", "1 for the instrument's health", health);
    r.register(
        "instrument_restarts",
        "Restarts by the supervisor since the instrument was defined",
        restarts,
    );
    r.register(
        "health_check_round_trip_seconds",
        "Round trip of the instrument's last answered health check",
        rtt,
    );
    r.register(
        "health_checks_unanswered",
        "Health checks the instrument did not answer in time, since outpostd started",
        unanswered,
    );
    r.register(
        "instrument_config_version",
        "Config versions: the one it applied and the one the desired state holds",
        config,
    );
    r.register(
        "instrument_storage_bytes",
        "Persistent storage: used and size",
        storage,
    );
    register_bus(&mut r, snap);
    register_retention(&mut r, snap);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
        let _ = writeln!(out, "# encoding failed");
    }
    out
}

/// Events and bus connections of every running instrument.
fn register_bus(r: &mut Registry, snap: &Snapshot) {
    let events = Family::<Which, Counter>::default();
    let queued = Family::<Instrument, Gauge>::default();
    let open = Family::<Instrument, Gauge>::default();
    let conns = Family::<Which, Counter>::default();
    for i in &snap.instruments {
        let which = |w: &str| Which {
            instrument: i.name.clone(),
            which: w.into(),
        };
        let sdk = &i.health_details["sdk"]["events"];
        for w in ["published", "dropped", "resent"] {
            if let Some(n) = sdk[w].as_u64() {
                events.get_or_create(&which(w)).inc_by(n);
            }
        }
        if let Some(n) = sdk["queued"].as_i64() {
            queued
                .get_or_create(&Instrument {
                    instrument: i.name.clone(),
                })
                .set(n);
        }
        if let Some(b) = &i.bus_connections {
            open.get_or_create(&Instrument {
                instrument: i.name.clone(),
            })
            .set(b.open as i64);
            conns.get_or_create(&which("accepted")).inc_by(b.accepted);
            conns.get_or_create(&which("refused")).inc_by(b.refused);
        }
    }
    r.register(
        "instrument_events",
        "Events the instrument's SDK published, dropped (buffer full) and sent again, as it reports",
        events,
    );
    r.register(
        "instrument_events_queued",
        "Events waiting in the instrument's SDK buffer, as it reports",
        queued,
    );
    r.register(
        "bus_connections_open",
        "Bus connections open through the instrument's proxy",
        open,
    );
    r.register(
        "bus_connections",
        "Bus connections accepted and refused (over the cap) by the instrument's proxy",
        conns,
    );
}

/// Retention runs of every instrument.
fn register_retention(r: &mut Registry, snap: &Snapshot) {
    let runs = Family::<Outcome, Counter>::default();
    let last_at = Family::<Instrument, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let last = Family::<Outcome, Gauge>::default();
    for (name, st) in &snap.retention {
        let outcome = |o: &str| Outcome {
            instrument: name.clone(),
            outcome: o.into(),
        };
        runs.get_or_create(&outcome("ok")).inc_by(st.runs.ok);
        runs.get_or_create(&outcome("failed"))
            .inc_by(st.runs.failed);
        runs.get_or_create(&outcome("violated"))
            .inc_by(st.runs.violated);
        if let Some(run) = &st.last {
            last_at
                .get_or_create(&Instrument {
                    instrument: name.clone(),
                })
                .set(run.started_at_ms as f64 / 1e3);
            last.get_or_create(&outcome(&run.outcome.to_string()))
                .set(1);
        }
    }
    r.register(
        "retention_runs",
        "Retention runs by outcome since outpostd started",
        runs,
    );
    r.register(
        "retention_last_run_timestamp_seconds",
        "When the instrument's last retention run started",
        last_at,
    );
    r.register(
        "retention_last_outcome",
        "1 for the outcome of the instrument's last retention run",
        last,
    );
}

/// Checks `addr` and binds it; the server runs until the process ends.
pub async fn serve(
    addr: SocketAddr,
    allow_remote: bool,
    handle: Handle,
    shutdown: crate::shutdown::Shutdown,
) -> Result<(), MetricsError> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(MetricsError::NotLoopback(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let snap = handle.status();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(&snap),
                )
            }
        }),
    );
    info!(%addr, "serving metrics at /metrics");
    tokio::spawn(async move {
        let stop = async move { shutdown.triggered().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!("the metrics server stopped: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::InstrumentStatus;

    #[test]
    fn a_snapshot_renders_as_prometheus_text() {
        let status: InstrumentStatus = serde_json::from_value(serde_json::json!({
            "name": "beacon", "state": "running", "detail": "", "image": "beacon",
            "version": "0.1.0", "init_pid": 42, "started_at_ms": 0, "restarts": 3,
            "failures": 0, "next_restart_ms": null, "last_exit": null, "spec_hash": null,
            "config_version": 2, "config_applied": 2, "health": "ok",
            "health_rtt_us": 1500, "health_unanswered": 1, "updated_at_ms": 0
        }))
        .unwrap();
        let text = render(&Snapshot {
            desired_version: Some(7),
            instruments: vec![status],
            ..Default::default()
        });
        for line in [
            "outpost_desired_state_version 7",
            "outpost_instruments 1",
            "outpost_instrument_state{instrument=\"beacon\",state=\"running\"} 1",
            "outpost_instrument_health{instrument=\"beacon\",health=\"ok\"} 1",
            "outpost_instrument_restarts_total{instrument=\"beacon\"} 3",
            "outpost_health_check_round_trip_seconds{instrument=\"beacon\"} 0.0015",
            "outpost_health_checks_unanswered_total{instrument=\"beacon\"} 1",
            "outpost_instrument_config_version{instrument=\"beacon\",which=\"applied\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}

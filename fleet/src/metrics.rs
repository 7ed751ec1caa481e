//! `/metrics` (Prometheus text): sensors by state, events this instance
//! stored, each sensor's link backlog as its last heartbeat said, and
//! rollouts by state. Read from the hub at each scrape, so every instance
//! answers the same (but for its own ingest counter).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::hub::{Hub, now_ms};
use crate::presence;

/// What this instance counts itself.
#[derive(Debug, Default)]
pub struct Counters {
    pub events_stored: AtomicU64,
    pub events_duplicate: AtomicU64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Sensor {
    sensor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    sensor: String,
    instrument: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

fn label(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The metrics text.
pub async fn render(
    hub: &Hub,
    every: std::time::Duration,
    counters: &Counters,
    checker: &crate::signals::Checker,
) -> String {
    let sensors = Family::<State, Gauge>::default();
    let backlog = Family::<Sensor, Gauge>::default();
    let dropped = Family::<Sensor, Gauge>::default();
    let rollouts = Family::<State, Gauge>::default();
    for s in ["online", "offline", "never", "revoked"] {
        sensors.get_or_create(&State { state: s.into() }).set(0);
    }
    for rec in crate::registry::all_sensors(hub).await.unwrap_or_default() {
        let p = presence::get(hub, &rec.name);
        let state = if rec.revoked_at_ms.is_some() {
            "revoked".to_string()
        } else {
            label(&presence::judge(p.as_ref(), every, now_ms()).0)
        };
        sensors.get_or_create(&State { state }).inc();
        if let Some(p) = p.filter(|_| rec.revoked_at_ms.is_none()) {
            let who = Sensor {
                sensor: rec.name.clone(),
            };
            backlog
                .get_or_create(&who)
                .set(p.heartbeat.backlog.events as i64);
            dropped
                .get_or_create(&who)
                .set(p.heartbeat.backlog.dropped as i64);
        }
        if let Some((r, _)) = hub.index.rollouts.get(&rec.name) {
            rollouts
                .get_or_create(&State {
                    state: label(&r.state),
                })
                .inc();
        }
    }
    let ingested = Family::<Outcome, Counter>::default();
    ingested
        .get_or_create(&Outcome {
            outcome: "stored".into(),
        })
        .inc_by(counters.events_stored.load(Ordering::Relaxed));
    ingested
        .get_or_create(&Outcome {
            outcome: "duplicate".into(),
        })
        .inc_by(counters.events_duplicate.load(Ordering::Relaxed));
    let invalid = Family::<Source, Counter>::default();
    for ((sensor, instrument), n) in checker.invalid.lock().expect("invalid").iter() {
        invalid
            .get_or_create(&Source {
                sensor: sensor.clone(),
                instrument: instrument.clone(),
            })
            .inc_by(*n);
    }
    let mut r = Registry::with_prefix("outpost_fleet");
    r.register(
        "events_invalid",
        "Events this instance stored whose payload does not match the schema their image declares",
        invalid,
    );
    r.register("sensors", "Sensors by state", sensors);
    r.register(
        "sensor_backlog_events",
        "Events waiting on the sensor for the fleet, as its last heartbeat said",
        backlog,
    );
    r.register(
        "sensor_dropped_events",
        "Events the sensor dropped before the fleet had them",
        dropped,
    );
    r.register("rollouts", "Sensors' newest rollouts by state", rollouts);
    r.register(
        "events_ingested",
        "Events this instance took from sensors: stored, or already stored",
        ingested,
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
        let _ = writeln!(out, "# encoding failed");
    }
    out
}

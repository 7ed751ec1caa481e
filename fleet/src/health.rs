//! Instruments' health history at the fleet: every change of an
//! instrument's health or state that a heartbeat shows is kept in the hub
//! stream `FLEET_HEALTH` (subject `fleet.health.<sensor>.<instrument>`),
//! as long as events are.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::error::ApiError;
use crate::hub::{Hub, HubError};
use crate::presence::Presence;

pub const STREAM: &str = "FLEET_HEALTH";

/// One change of an instrument's health or state.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthChange {
    pub sensor: String,
    pub instrument: String,
    /// When the fleet got the heartbeat that showed it (ms since the epoch).
    pub at_ms: i64,
    pub health: String,
    #[serde(default)]
    pub message: String,
    pub state: String,
    pub restarts: u32,
}

pub async fn ensure_stream(
    hub: &Hub,
    retention: Duration,
    replicas: usize,
) -> Result<stream::Stream, HubError> {
    crate::hub::stream(
        hub,
        stream::Config {
            name: STREAM.into(),
            subjects: vec!["fleet.health.*.*".into()],
            storage: stream::StorageType::File,
            max_age: retention,
            num_replicas: replicas.max(1),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        },
    )
    .await
}

fn subject(sensor: &str, instrument: &str) -> String {
    format!("fleet.health.{sensor}.{instrument}")
}

/// Records what changed between the sensor's previous heartbeat and
/// this one.
pub async fn record(hub: &Hub, sensor: &str, before: Option<&Presence>, now: &Presence) {
    for i in &now.heartbeat.instruments {
        if outpost_protocol::names::name_problem(&i.name).is_some() {
            continue;
        }
        let prev = before.and_then(|b| b.heartbeat.instruments.iter().find(|p| p.name == i.name));
        let changed = prev.is_none_or(|p| {
            p.health != i.health || p.state != i.state || p.health_message != i.health_message
        });
        if !changed {
            continue;
        }
        let c = HealthChange {
            sensor: sensor.to_string(),
            instrument: i.name.clone(),
            at_ms: now.received_at_ms,
            health: i.health.clone(),
            message: i.health_message.chars().take(500).collect(),
            state: i.state.clone(),
            restarts: i.restarts,
        };
        let msg = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(serde_json::to_vec(&c).expect("serializes")))
            .message_id(format!(
                "health:{sensor}:{}:{}:{}",
                i.name, now.heartbeat.seq, now.heartbeat.at_ms
            ));
        match hub.js.send_publish(subject(sensor, &i.name), msg).await {
            Ok(ack) => {
                if let Err(e) = ack.await {
                    debug!(sensor, instrument = %i.name, "health change not stored: {e}");
                }
            }
            Err(e) => debug!(sensor, instrument = %i.name, "health change not stored: {e}"),
        }
    }
}

/// The last `limit` changes of one instrument, oldest first.
pub async fn history(
    s: &stream::Stream,
    sensor: &str,
    instrument: &str,
    limit: usize,
) -> Result<Vec<HealthChange>, ApiError> {
    let op = |e: &dyn std::fmt::Display| {
        ApiError::Hub(HubError::Op {
            what: "reading health history".into(),
            why: e.to_string(),
        })
    };
    if outpost_protocol::names::name_problem(instrument).is_some() {
        return Err(ApiError::NotFound(format!("instrument {instrument:?}")));
    }
    let mut out: Vec<HealthChange> = crate::hub::read_all(s, subject(sensor, instrument))
        .await
        .map_err(|e| op(&e))?;
    let from = out.len().saturating_sub(limit);
    Ok(out.split_off(from))
}

//! Heartbeats in, presence out: every fleet instance takes a share of the
//! sensors' heartbeats (one queue group) and keeps the last one per
//! sensor in the hub's `presence` bucket, with the time it arrived.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use outpost_protocol::fleet::{self as proto, Heartbeat};
use outpost_protocol::ratelimit::RateLimited;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::hub::{Hub, now_ms};
use crate::shutdown::Shutdown;

/// A sensor's last heartbeat, as the fleet received it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Presence {
    /// Fleet clock, ms since the epoch.
    pub received_at_ms: i64,
    pub heartbeat: Heartbeat,
}

/// Whether a sensor is reachable, and what that is based on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Online {
    /// Never sent a heartbeat.
    Never,
    Online,
    Offline,
}

/// `presence` judged against the heartbeat period: offline after three
/// missed heartbeats.
pub fn judge(p: Option<&Presence>, every: Duration, now_ms: i64) -> (Online, String) {
    let threshold = every * 3;
    match p {
        None => (Online::Never, "no heartbeat yet".into()),
        Some(p) => {
            let ago = Duration::from_millis((now_ms - p.received_at_ms).max(0) as u64);
            let secs = |d: Duration| format!("{} s", d.as_secs());
            if ago > threshold {
                (
                    Online::Offline,
                    format!(
                        "offline: last heartbeat {} ago, threshold {}",
                        secs(ago),
                        secs(threshold)
                    ),
                )
            } else {
                (
                    Online::Online,
                    format!("online: last heartbeat {} ago", secs(ago)),
                )
            }
        }
    }
}

/// The last heartbeat of `sensor`, if any.
pub async fn get(hub: &Hub, sensor: &str) -> Option<Presence> {
    let v = hub.presence.get(sensor).await.ok()??;
    serde_json::from_slice(&v).ok()
}

/// Takes heartbeats until `shutdown`.
pub async fn ingest(hub: Hub, shutdown: Shutdown) {
    let mut sub = match hub
        .client
        .queue_subscribe(proto::ALL_HEARTBEATS, "outpost-fleet".into())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot take heartbeats: {e}");
            return;
        }
    };
    let mut complain = RateLimited::new(5, Duration::from_secs(60));
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => return },
            _ = shutdown.cancelled() => return,
        };
        let Some(sensor) = proto::sensor_of(&msg.subject) else {
            continue;
        };
        let hb: Heartbeat = match serde_json::from_slice(&msg.payload) {
            Ok(h) => h,
            Err(e) => {
                if complain.allow(std::time::Instant::now()).is_some() {
                    warn!(sensor, "a heartbeat that does not parse: {e}");
                }
                continue;
            }
        };
        if hb.sensor != sensor {
            // The subject is what the hub let this sensor publish on; the
            // body's name is only what it claims.
            if complain.allow(std::time::Instant::now()).is_some() {
                warn!(
                    sensor,
                    claimed = %hb.sensor,
                    "a heartbeat naming another sensor; kept under its subject's sensor"
                );
            }
        }
        let mut hb = hb;
        hb.sensor = sensor.to_string();
        let p = Presence {
            received_at_ms: now_ms(),
            heartbeat: hb,
        };
        debug!(sensor, seq = p.heartbeat.seq, "heartbeat");
        if let Err(e) = hub
            .presence
            .put(
                sensor,
                Bytes::from(serde_json::to_vec(&p).expect("serializes")),
            )
            .await
            && complain.allow(std::time::Instant::now()).is_some()
        {
            warn!(sensor, "cannot record a heartbeat: {e}");
        }
    }
}

//! Heartbeats in, presence out: every fleet instance takes a share of the
//! sensors' heartbeats (one queue group) and keeps the last one per
//! sensor in the hub's `presence` bucket, with the time it arrived.

use std::time::Duration;

use bytes::Bytes;
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
    /// Set once the fleet raised `sensor-offline` for this silence.
    #[serde(default)]
    pub offline_since_ms: Option<i64>,
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
pub fn get(hub: &Hub, sensor: &str) -> Option<Presence> {
    hub.index.presence.get(sensor).map(|(p, _)| p)
}

/// Takes heartbeats until `shutdown`; a sensor behind its newest desired
/// version gets it again.
pub async fn ingest(hub: Hub, desired: async_nats::jetstream::stream::Stream, shutdown: Shutdown) {
    let Some(mut share) = hub
        .share(proto::ALL_HEARTBEATS, "heartbeats", &shutdown)
        .await
    else {
        return;
    };
    let mut complain = RateLimited::new(5, Duration::from_secs(60));
    while let Some((sensor, msg)) = share.next().await {
        let sensor = sensor.as_str();
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
        let before = get(&hub, sensor);
        let p = Presence {
            received_at_ms: now_ms(),
            heartbeat: hb,
            offline_since_ms: None,
        };
        crate::health::record(&hub, sensor, before.as_ref(), &p).await;
        if let Some(d) = &p.heartbeat.drift {
            let known = before
                .as_ref()
                .and_then(|b| b.heartbeat.drift.as_ref())
                .is_some_and(|b| b.local_version == d.local_version);
            if !known {
                warn!(sensor, version = d.local_version, author = %d.author, "the sensor was changed locally against the fleet");
                raise(
                    &hub,
                    sensor,
                    "config-drift",
                    format!("drift:{sensor}:{}", d.local_version),
                    serde_json::json!({
                        "detail": format!(
                            "changed on the sensor against the fleet: local version {} by {} ({}): {}",
                            d.local_version, d.author, d.source, d.reason
                        ),
                        "drift": d,
                    }),
                )
                .await;
            }
        }
        if let Some(b) = before.filter(|b| b.offline_since_ms.is_some()) {
            let silent = Duration::from_millis((p.received_at_ms - b.received_at_ms).max(0) as u64);
            raise(
                &hub,
                sensor,
                "sensor-online",
                format!("online:{sensor}:{}", p.received_at_ms),
                serde_json::json!({
                    "detail": format!("online again: a heartbeat after {} s of silence", silent.as_secs()),
                    "silent_s": silent.as_secs(),
                }),
            )
            .await;
        }
        debug!(sensor, seq = p.heartbeat.seq, "heartbeat");
        crate::desired::on_heartbeat(&hub, &desired, sensor, p.heartbeat.fleet_version.as_ref())
            .await;
        let body = Bytes::from(serde_json::to_vec(&p).expect("serializes"));
        match hub.presence.put(sensor, body).await {
            Ok(rev) => hub.index.presence.note(sensor, p, rev),
            Err(e) => {
                if complain.allow(std::time::Instant::now()).is_some() {
                    warn!(sensor, "cannot record a heartbeat: {e}");
                }
            }
        }
    }
}

/// Raises an event about `sensor` in the fleet's event stream, once per
/// `id` (two instances that see the same change store it once).
pub async fn raise(hub: &Hub, sensor: &str, kind: &str, id: String, payload: serde_json::Value) {
    let env = outpost_protocol::Envelope::new(
        ulid::Ulid::new().to_string(),
        std::time::SystemTime::now(),
        sensor,
        proto::FLEET_SOURCE,
        kind,
        &format!("outpost.fleet.{kind}/1"),
        payload,
    );
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload(Bytes::from(env.encode()))
        .message_id(id);
    match hub
        .js
        .send_publish(proto::fleet_raised_events(sensor), msg)
        .await
    {
        Ok(ack) => {
            if let Err(e) = ack.await {
                warn!(sensor, kind, "cannot store a fleet event: {e}");
            }
        }
        Err(e) => warn!(sensor, kind, "cannot store a fleet event: {e}"),
    }
}

/// Marks sensors offline after three missed heartbeats, once per
/// silence (a compare-and-set on the presence entry decides which fleet
/// instance raises `sensor-offline`).
pub async fn watch_offline(hub: Hub, every: Duration, shutdown: Shutdown) {
    let threshold = every * 3;
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(every));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        crate::desired::check_deadlines(&hub).await;
        // The index says who looks silent; the hub's entry decides.
        let now = now_ms();
        let silent = hub.index.presence.all().into_iter().filter(|(_, p, _)| {
            p.offline_since_ms.is_none()
                && Duration::from_millis((now - p.received_at_ms).max(0) as u64) > threshold
        });
        for (name, _, _) in silent {
            let Ok(Some(entry)) = hub.presence.entry(name.as_str()).await else {
                continue;
            };
            let Ok(mut p) = serde_json::from_slice::<Presence>(&entry.value) else {
                continue;
            };
            let now = now_ms();
            let silent = Duration::from_millis((now - p.received_at_ms).max(0) as u64);
            if p.offline_since_ms.is_some() || silent <= threshold {
                continue;
            }
            p.offline_since_ms = Some(now);
            let body = Bytes::from(serde_json::to_vec(&p).expect("serializes"));
            if hub
                .presence
                .update(name.as_str(), body, entry.revision)
                .await
                .is_err()
            {
                // Another instance marked it, or a heartbeat came.
                continue;
            }
            let (_, detail) = judge(Some(&p), every, now);
            warn!(sensor = %name, "{detail}");
            raise(
                &hub,
                &name,
                "sensor-offline",
                format!("offline:{name}:{}", p.received_at_ms),
                serde_json::json!({
                    "detail": detail,
                    "last_heartbeat_ms": p.received_at_ms,
                    "threshold_s": threshold.as_secs(),
                }),
            )
            .await;
        }
    }
}

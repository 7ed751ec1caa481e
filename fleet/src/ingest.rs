//! Events in: sensors forward batches of their local `EVENTS` stream
//! (`fleet.in.<sensor>.events`, request/reply) and get an answer only once
//! the hub has stored them in `FLEET_EVENTS`, one subject per sensor
//! (`fleet.events.<sensor>.sensor`).
//!
//! Each stored event carries the sensor's local sequence. Before a batch
//! is stored, the last stored event of that sensor says how far it got
//! (the high-water mark): anything at or below it is a re-send and is
//! dropped, however long ago the first copy came, so no duplicate
//! window limits the outage a sensor may have. The batch's first publish
//! expects that last event to still be the last one of the sensor's
//! subject (`Nats-Expected-Last-Subject-Sequence`), so two fleet instances
//! handling a re-sent batch at once cannot both store it; every publish
//! also has a message id (`<sensor>:<local seq>`) for JetStream's own
//! window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use outpost_protocol::fleet::{
    self as proto, ALL_EVENTS_IN, BatchAck, EventBatch, FLEET_EVENTS_STREAM, HDR_LOCAL_SEQ,
    HDR_LOCAL_SUBJECT,
};
use outpost_protocol::ratelimit::RateLimited;
use tracing::{debug, warn};

use crate::hub::{Hub, HubError};
use crate::shutdown::Shutdown;

/// How long the fleet keeps events, and JetStream's own duplicate window.
#[derive(Debug, Clone, Copy)]
pub struct EventsPolicy {
    /// Set at start (`--events-retention`); `None` keeps what the stream
    /// has (set through the API), or the default for a new one.
    pub retention: Option<Duration>,
    pub duplicate_window: Duration,
}

/// How long events are kept unless told.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Makes `FLEET_EVENTS`, or applies a changed retention to it (which
/// then also holds for what is stored already).
pub async fn ensure_stream(
    hub: &Hub,
    policy: EventsPolicy,
    replicas: usize,
) -> Result<stream::Stream, HubError> {
    let kept = match hub.js.get_stream(FLEET_EVENTS_STREAM).await {
        Ok(mut s) => s.info().await.ok().map(|i| i.config.max_age),
        Err(_) => None,
    };
    let cfg = stream::Config {
        name: FLEET_EVENTS_STREAM.into(),
        subjects: vec![proto::ALL_STORED_EVENTS.into()],
        max_age: policy.retention.or(kept).unwrap_or(DEFAULT_RETENTION),
        duplicate_window: policy.duplicate_window,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        allow_direct: true,
        ..Default::default()
    };
    crate::hub::stream(hub, cfg).await
}

/// Takes event batches until `shutdown`; batches of one sensor are
/// stored one after the other, different sensors' at once.
pub async fn run(
    hub: Hub,
    events: stream::Stream,
    counters: Arc<crate::metrics::Counters>,
    checker: Arc<crate::signals::Checker>,
    shutdown: Shutdown,
) {
    let Some(mut share) = hub.share(ALL_EVENTS_IN, "events", &shutdown).await else {
        return;
    };
    let locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Arc::default();
    let complain = Arc::new(Mutex::new(RateLimited::new(5, Duration::from_secs(60))));
    while let Some((sensor, msg)) = share.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let lock = locks
            .lock()
            .expect("lock")
            .entry(sensor.clone())
            .or_default()
            .clone();
        let (hub, events, complain) = (hub.clone(), events.clone(), complain.clone());
        let (counters, checker) = (counters.clone(), checker.clone());
        tokio::spawn(async move {
            let _one_at_a_time = lock.lock().await;
            let ack = match serde_json::from_slice::<EventBatch>(&msg.payload) {
                Ok(batch) => store(&hub.js, &events, &checker, &sensor, batch).await,
                Err(e) => refusal(format!("the batch does not parse: {e}")),
            };
            if let Some(e) = &ack.error
                && complain
                    .lock()
                    .expect("lock")
                    .allow(std::time::Instant::now())
                    .is_some()
            {
                warn!(sensor, "event batch not stored: {e}");
            }
            counters
                .events_stored
                .fetch_add(u64::from(ack.stored), std::sync::atomic::Ordering::Relaxed);
            counters.events_duplicate.fetch_add(
                u64::from(ack.duplicates),
                std::sync::atomic::Ordering::Relaxed,
            );
            let body = serde_json::to_vec(&ack).expect("serializes");
            if let Err(e) = hub.client.publish(reply, body.into()).await {
                debug!(sensor, "cannot answer an event batch: {e}");
            }
        });
    }
}

fn refusal(why: String) -> BatchAck {
    BatchAck {
        upto: 0,
        stored: 0,
        duplicates: 0,
        error: Some(why),
    }
}

/// How far a sensor's events are stored: (its local sequence, the
/// stream sequence of that last stored event), (0, 0) for none.
pub async fn high_water(events: &stream::Stream, sensor: &str) -> Result<(u64, u64), String> {
    match events
        .get_last_raw_message_by_subject(&proto::stored_events(sensor))
        .await
    {
        Ok(m) => {
            let local = m
                .headers
                .get(HDR_LOCAL_SEQ)
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .ok_or_else(|| format!("stored event {} has no local sequence", m.sequence))?;
            Ok((local, m.sequence))
        }
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok((0, 0)),
        Err(e) => Err(format!("cannot read how far sensor {sensor} got: {e}")),
    }
}

/// Stores what is new in `batch` for `sensor`.
async fn store(
    js: &jetstream::Context,
    events: &stream::Stream,
    checker: &crate::signals::Checker,
    sensor: &str,
    batch: EventBatch,
) -> BatchAck {
    if batch.events.windows(2).any(|w| w[0].seq >= w[1].seq) {
        return refusal("the batch is not in local sequence order".into());
    }
    let Some(last) = batch.events.last().map(|e| e.seq) else {
        return BatchAck {
            upto: 0,
            stored: 0,
            duplicates: 0,
            error: None,
        };
    };
    let (hw, last_stored) = match high_water(events, sensor).await {
        Ok(x) => x,
        Err(e) => return refusal(e),
    };
    let sent = batch.events.len() as u32;
    let fresh: Vec<_> = batch.events.into_iter().filter(|e| e.seq > hw).collect();
    // Re-sent events at or below the mark are not published at all.
    let mut duplicates = sent - fresh.len() as u32;
    let subject = proto::stored_events(sensor);
    // Each new event checked against its image's schema first.
    let data: Vec<Bytes> = fresh
        .iter()
        .map(|e| {
            B64.decode(&e.data)
                .map(Bytes::from)
                .unwrap_or_else(|_| Bytes::from(e.data.clone()))
        })
        .collect();
    let invalid = {
        let items: Vec<(&str, &[u8])> = fresh
            .iter()
            .zip(&data)
            .map(|(e, d)| (e.subject.as_str(), d.as_ref()))
            .collect();
        checker.check_batch(sensor, &items).await
    };
    let message = |i: usize| {
        let e = &fresh[i];
        let (data, invalid) = (data[i].clone(), invalid[i].clone());
        let m = jetstream::message::PublishMessage::build()
            .payload(data)
            .message_id(format!("{sensor}:{}", e.seq))
            .header(HDR_LOCAL_SEQ, e.seq.to_string().as_str())
            .header(HDR_LOCAL_SUBJECT, e.subject.as_str());
        match invalid {
            Some(why) => m.header(crate::signals::HDR_INVALID, why.as_str()),
            None => m,
        }
    };
    let Some((first, rest)) = fresh.split_first() else {
        return BatchAck {
            upto: last,
            stored: 0,
            duplicates,
            error: None,
        };
    };
    // The first, awaited, and only if nothing was stored for this sensor
    // since we looked.
    let ack = match js
        .send_publish(
            subject.clone(),
            message(0).expected_last_subject_sequence(last_stored),
        )
        .await
    {
        Ok(f) => f.await,
        Err(e) => return refusal(format!("storing event {}: {e}", first.seq)),
    };
    match ack {
        Ok(a) if a.duplicate => duplicates += 1,
        Ok(_) => {}
        Err(e) => return refusal(format!("storing event {}: {e}", first.seq)),
    }
    // The rest pipelined, in order on one connection.
    let mut pending = Vec::with_capacity(rest.len());
    let mut error = None;
    for (i, e) in rest.iter().enumerate() {
        match js.send_publish(subject.clone(), message(i + 1)).await {
            Ok(f) => pending.push((e.seq, f)),
            Err(err) => {
                error = Some(format!("storing event {}: {err}", e.seq));
                break;
            }
        }
    }
    let mut upto = first.seq;
    for (seq, f) in pending {
        match f.await {
            Ok(a) => {
                if a.duplicate {
                    duplicates += 1;
                }
                if error.is_none() {
                    upto = seq;
                }
            }
            Err(e) => {
                // What came before is stored; the sensor sends the rest
                // again (and the mark drops what did get stored).
                error.get_or_insert(format!("storing event {seq}: {e}"));
            }
        }
    }
    if error.is_none() {
        upto = last;
    }
    BatchAck {
        upto,
        stored: sent - duplicates,
        duplicates,
        error,
    }
}

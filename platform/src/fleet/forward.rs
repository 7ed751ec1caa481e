//! Store-and-forward: every event in the local `EVENTS` stream goes to the
//! fleet in local order, and is acknowledged locally (durable consumer
//! `fleet-link`, ack-all) only after the fleet answered that the hub
//! stored it. A batch that is not acknowledged is sent again, whole; the
//! fleet drops what it has by the local sequence.
//!
//! The local stream is bounded in bytes (`--events-max-bytes`, oldest
//! dropped first). Events it drops before they were forwarded are found
//! as a gap in the sequence, counted and raised as `events-dropped`;
//! nearing the bound raises `backlog-high`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use base64::Engine;
use futures::StreamExt;
use outpost_protocol::fleet::{self as proto, Backlog, BatchAck, EventBatch, ForwardedEvent};
use outpost_protocol::messages::schema;
use outpost_protocol::subjects::EVENTS_STREAM;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::db::now_ms;
use crate::messaging::shared::SharedBus;

/// The local durable consumer that remembers how far the fleet has it.
pub const CONSUMER: &str = "fleet-link";
/// Events per batch, and bytes (the hub takes 1 MiB per message).
const BATCH_EVENTS: usize = 500;
const BATCH_BYTES: usize = 512 * 1024;
/// `backlog-high` when the local stream is this full, cleared below
/// `BACKLOG_CLEAR`.
const BACKLOG_HIGH: f64 = 0.8;
const BACKLOG_CLEAR: f64 = 0.6;

/// What the forwarder counts, shared with the heartbeat.
#[derive(Debug, Default)]
pub struct Counters {
    pub forwarded: AtomicU64,
    /// Forwarded events the fleet had already (re-sends).
    pub already_stored: AtomicU64,
    pub dropped: AtomicU64,
    backlog_high: std::sync::atomic::AtomicBool,
}

/// Forwards events from the local bus to `hub` as `sensor`, for ever.
pub async fn run(
    local: SharedBus,
    hub: async_nats::Client,
    sensor: String,
    counters: Arc<Counters>,
) {
    let mut next_expected: Option<u64> = None;
    loop {
        let Some(bus) = local.get() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let c = match consumer(&bus).await {
            Ok(c) => c,
            Err(e) => {
                debug!("fleet link: local consumer: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if next_expected.is_none() {
            let floor = c.cached_info().ack_floor.stream_sequence;
            next_expected = (floor > 0).then_some(floor + 1);
        }
        if let Err(e) = pump(&local, &c, &hub, &sensor, &counters, &mut next_expected).await {
            debug!("fleet link: forwarding paused: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn consumer(
    bus: &crate::messaging::bus::Bus,
) -> Result<consumer::Consumer<pull::Config>, String> {
    let stream = bus
        .jetstream()
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                description: Some("events not yet stored by the fleet".into()),
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(600),
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
}

/// Makes the forwarder start again at local sequence `from` (the fleet
/// drops what it has already). Call while the forwarder is stopped.
pub async fn reset(local: &SharedBus, from: u64) -> Result<(), String> {
    let bus = local
        .get()
        .ok_or("the local bus is not up yet; try again in a moment")?;
    let stream = bus
        .jetstream()
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.delete_consumer(CONSUMER).await;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            description: Some("events not yet stored by the fleet".into()),
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(600),
            max_ack_pending: 100_000,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Fetches batches and forwards each until the fleet has it.
async fn pump(
    local: &SharedBus,
    c: &consumer::Consumer<pull::Config>,
    hub: &async_nats::Client,
    sensor: &str,
    counters: &Counters,
    next_expected: &mut Option<u64>,
) -> Result<(), String> {
    loop {
        let mut msgs = c
            .fetch()
            .max_messages(BATCH_EVENTS)
            .max_bytes(BATCH_BYTES)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut batch = Vec::new();
        let mut last_msg = None;
        while let Some(m) = msgs.next().await {
            let m = m.map_err(|e| e.to_string())?;
            let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
            batch.push(ForwardedEvent {
                seq,
                subject: m.subject.to_string(),
                data: base64::engine::general_purpose::STANDARD.encode(&m.payload),
            });
            last_msg = Some(m);
        }
        let Some(last_msg) = last_msg else {
            continue;
        };
        // Sequences the local stream dropped before we got to them.
        let first = batch[0].seq;
        if let Some(want) = *next_expected
            && first > want
        {
            let lost = first - want;
            counters.dropped.fetch_add(lost, Ordering::Relaxed);
            warn!(
                lost,
                from = want,
                to = first - 1,
                "events dropped by the local stream before the fleet had them"
            );
            if let Some(bus) = local.get() {
                let payload = json!({ "dropped": lost, "from_seq": want, "to_seq": first - 1 });
                if let Err(e) = bus
                    .publish_event("events-dropped", schema::EVENTS_DROPPED, &payload)
                    .await
                {
                    warn!("events-dropped not stored: {e}");
                }
            }
        }
        let last = batch.last().map(|e| e.seq).unwrap_or(first);
        let dupes = send(hub, sensor, EventBatch { events: batch }).await;
        counters.already_stored.fetch_add(dupes, Ordering::Relaxed);
        // Everything up to the last one is stored at the hub.
        last_msg
            .double_ack()
            .await
            .map_err(|e| format!("local ack: {e}"))?;
        *next_expected = Some(last + 1);
        counters
            .forwarded
            .fetch_add(last + 1 - first, Ordering::Relaxed);
    }
}

/// Sends `batch` until the fleet has stored all of it, with back-off;
/// answers how many of them the fleet had already.
async fn send(hub: &async_nats::Client, sensor: &str, mut batch: EventBatch) -> u64 {
    let subject = proto::events_in(sensor);
    let mut backoff = Duration::from_millis(200);
    let mut dupes = 0u64;
    loop {
        let body = serde_json::to_vec(&batch).expect("serializes");
        let answer = tokio::time::timeout(
            Duration::from_secs(15),
            hub.request(subject.clone(), body.into()),
        )
        .await;
        let why = match answer {
            Ok(Ok(reply)) => match serde_json::from_slice::<BatchAck>(&reply.payload) {
                Ok(a) if a.error.is_none() => return dupes + u64::from(a.duplicates),
                Ok(a) => {
                    // Part of it may be stored; send the rest.
                    dupes += u64::from(a.duplicates);
                    batch.events.retain(|e| e.seq > a.upto);
                    if batch.events.is_empty() {
                        return dupes;
                    }
                    a.error.unwrap_or_default()
                }
                Err(e) => format!("an answer that does not parse: {e}"),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 15 s".into(),
        };
        debug!(
            events = batch.events.len(),
            "fleet link: batch not stored ({why}); again in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// The backlog: what the fleet does not have yet, from the local
/// consumer; raises or clears `backlog-high`.
pub async fn backlog(local: &SharedBus, counters: &Counters) -> Backlog {
    let dropped = counters.dropped.load(Ordering::Relaxed);
    let none = Backlog {
        dropped,
        ..Backlog::default()
    };
    let Some(bus) = local.get() else {
        return none;
    };
    let Ok(mut stream) = bus.jetstream().get_stream(EVENTS_STREAM).await else {
        return none;
    };
    let Ok(info) = stream.info().await else {
        return none;
    };
    let st = info.state.clone();
    let max_bytes = info.config.max_bytes;
    let (waiting, floor) = match stream.consumer_info(CONSUMER).await {
        Ok(ci) => (
            ci.num_pending + ci.num_ack_pending as u64,
            ci.ack_floor.stream_sequence,
        ),
        // Not forwarding yet: all of it waits.
        Err(_) => (st.messages, st.first_sequence.saturating_sub(1)),
    };
    let bytes = if st.messages > 0 {
        (st.bytes as f64 * waiting as f64 / st.messages as f64) as u64
    } else {
        0
    };
    let oldest_age_s = if waiting == 0 {
        None
    } else {
        match stream
            .get_raw_message((floor + 1).max(st.first_sequence))
            .await
        {
            Ok(m) => Some((now_ms() / 1000 - m.time.unix_timestamp()).max(0) as u64),
            Err(_) => None,
        }
    };
    if max_bytes > 0 {
        let full = st.bytes as f64 / max_bytes as f64;
        let was = counters.backlog_high.load(Ordering::Relaxed);
        if !was && full >= BACKLOG_HIGH && waiting > 0 {
            counters.backlog_high.store(true, Ordering::Relaxed);
            warn!(
                waiting,
                bytes = st.bytes,
                max_bytes,
                "the fleet link's backlog is nearly full"
            );
            let _ = bus
                .publish_event(
                    "backlog-high",
                    schema::BACKLOG_HIGH,
                    &json!({
                        "events_waiting": waiting,
                        "bytes": st.bytes,
                        "max_bytes": max_bytes,
                        "dropped": dropped,
                    }),
                )
                .await;
        } else if was && full < BACKLOG_CLEAR {
            counters.backlog_high.store(false, Ordering::Relaxed);
            info!("the fleet link's backlog is below {BACKLOG_CLEAR:.0}% again");
        }
    }
    Backlog {
        events: waiting,
        bytes,
        oldest_age_s,
        dropped,
    }
}

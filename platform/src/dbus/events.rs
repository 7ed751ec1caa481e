//! Reading the sensor's `EVENTS` stream for `Events`: through the
//! platform's one bus client (shared by the daemon once its bus is up), one
//! batch per call from a stream sequence on, so a client follows by asking
//! again from where the last answer ended.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use outpost_protocol::Envelope;
use outpost_protocol::subjects::{self, EVENTS_ALL, EVENTS_STREAM};
use serde::{Deserialize, Serialize};

use super::SensorError;
use crate::messaging::shared::SharedBus;

/// One event and where it is in the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub envelope: Envelope,
}

/// Reads events through the shared platform client.
pub struct Reader {
    bus: SharedBus,
}

impl Reader {
    pub fn new(bus: SharedBus) -> Reader {
        Reader { bus }
    }

    /// Up to `max` events from stream sequence `since` on (0: the first),
    /// of `instrument` (empty: all) and `kind` (empty: all), and the
    /// sequence to ask from next.
    pub async fn read(
        &self,
        since: u64,
        max: u32,
        instrument: &str,
        kind: &str,
    ) -> Result<(Vec<Event>, u64), SensorError> {
        let filter = if instrument.is_empty() {
            EVENTS_ALL.to_string()
        } else {
            if let Some(p) = outpost_protocol::names::name_problem(instrument) {
                return Err(SensorError::Invalid(format!("instrument {p}")));
            }
            subjects::events_of(instrument)
        };
        let js = self
            .bus
            .get()
            .ok_or_else(|| {
                SensorError::Failed(
                    "outpostd's bus has not started yet (fix: try again in a moment)".into(),
                )
            })?
            .jetstream()
            .clone();
        let stream = js.get_stream(EVENTS_STREAM).await.map_err(|e| {
            SensorError::Failed(format!("stream {EVENTS_STREAM} is not there yet: {e}"))
        })?;
        let mut consumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter.clone(),
                deliver_policy: if since == 0 {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: since,
                    }
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(10),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                SensorError::Failed(format!("cannot read {EVENTS_STREAM} ({filter}): {e}"))
            })?;
        // A batch that comes back short (or empty, on a loaded machine)
        // is not the end of the stream: read on while the consumer says
        // matching events are pending, up to `max` and a time limit.
        let max = max.clamp(1, 1000) as usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        let mut next = since.max(1);
        let mut failed = None;
        'batches: loop {
            let mut batch = match consumer
                .fetch()
                .max_messages(max - out.len())
                .expires(Duration::from_millis(300))
                .messages()
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(SensorError::Failed(format!("reading {EVENTS_STREAM}: {e}")));
                    break;
                }
            };
            while let Some(m) = batch.next().await {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        failed = Some(SensorError::Failed(format!("reading {EVENTS_STREAM}: {e}")));
                        break 'batches;
                    }
                };
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(next);
                next = seq + 1;
                let Ok(envelope) = Envelope::decode(&m.payload) else {
                    continue;
                };
                if kind.is_empty() || envelope.kind == kind {
                    out.push(Event { seq, envelope });
                }
            }
            if out.len() >= max || tokio::time::Instant::now() >= deadline {
                break;
            }
            match consumer.info().await {
                Ok(i) if i.num_pending > 0 => continue,
                Ok(_) => break,
                Err(e) => {
                    failed = Some(SensorError::Failed(format!("reading {EVENTS_STREAM}: {e}")));
                    break;
                }
            }
        }
        // One consumer per call: gone at once, not after its inactivity
        // threshold, so a client that follows leaves none behind.
        let name = consumer.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        match failed {
            Some(e) => Err(e),
            None => Ok((out, next)),
        }
    }
}

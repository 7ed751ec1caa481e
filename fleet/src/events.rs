//! Reading the fleet's events: filter by sensor, instrument, kind and time,
//! paged by the hub stream's sequence (the cursor).

use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy, pull};
use async_nats::jetstream::stream;
use futures::StreamExt;
use outpost_protocol::fleet::{self as proto, HDR_LOCAL_SEQ, HDR_LOCAL_SUBJECT};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::hub::HubError;

/// `GET /api/v1/events` parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub sensor: Option<String>,
    pub instrument: Option<String>,
    pub kind: Option<String>,
    /// Events stored after this cursor (the `next` of a previous page).
    pub after: Option<u64>,
    /// Events the fleet received at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// … and before this time.
    pub until_ms: Option<i64>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Only events whose payload does not match their schema (`true`),
    /// or only those that do (`false`).
    pub invalid: Option<bool>,
}

/// One stored event.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredEvent {
    /// Its place in the fleet's event stream (a cursor).
    pub seq: u64,
    pub sensor: String,
    /// Its sequence in the sensor's own stream.
    pub local_seq: u64,
    pub instrument: String,
    pub kind: String,
    /// When the hub stored it (ms since the epoch).
    pub stored_at_ms: i64,
    /// The event's envelope; `null` when it was not JSON.
    pub envelope: serde_json::Value,
    /// Why its payload does not match the schema its image declares for
    /// its kind (stored all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// The cursor to go on from (`after`): the last event looked at.
    pub next: Option<u64>,
    /// Whether more events were there when this page was read.
    pub more: bool,
}

fn op(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> ApiError {
    move |why| {
        ApiError::Hub(HubError::Op {
            what: format!("reading events ({what})"),
            why: why.to_string(),
        })
    }
}

/// One stored message as an event.
pub fn from_message(
    seq: u64,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    stored_at_ms: i64,
) -> StoredEvent {
    let sensor = subject
        .strip_prefix("fleet.events.")
        .and_then(|r| r.split('.').next())
        .unwrap_or_default()
        .to_string();
    let h = |k: &str| {
        headers
            .and_then(|h| h.get(k))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    };
    let local_subject = h(HDR_LOCAL_SUBJECT);
    let envelope: serde_json::Value =
        serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null);
    // A sensor's event says who by its local subject; one the fleet raised
    // by its envelope.
    let (instrument, kind) = match outpost_protocol::subjects::parse_event(&local_subject) {
        Some((i, k)) => (i.to_string(), k.to_string()),
        None => (
            envelope["instrument"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            envelope["kind"].as_str().unwrap_or_default().to_string(),
        ),
    };
    StoredEvent {
        seq,
        sensor,
        local_seq: h(HDR_LOCAL_SEQ).parse().unwrap_or(0),
        instrument,
        kind,
        stored_at_ms,
        envelope,
        invalid: headers
            .and_then(|h| h.get(crate::signals::HDR_INVALID))
            .map(|v| v.as_str().to_string()),
    }
}

impl EventQuery {
    /// The hub subject filter for the sensor asked for.
    fn subject_filter(&self) -> Result<String, ApiError> {
        match &self.sensor {
            Some(s) if proto::sensor_name_problem(s).is_some() => Err(ApiError::field(
                "sensor",
                format!("{s:?} is not a sensor name"),
                "give a sensor's name as the fleet lists it",
            )),
            Some(s) => Ok(proto::all_stored_events_of(s)),
            None => Ok(proto::ALL_STORED_EVENTS.to_string()),
        }
    }

    /// Whether `e` is of the instrument and kind asked for.
    fn matches(&self, e: &StoredEvent) -> bool {
        self.instrument.as_ref().is_none_or(|i| *i == e.instrument)
            && self.kind.as_ref().is_none_or(|k| *k == e.kind)
            && self.invalid.is_none_or(|b| b == e.invalid.is_some())
    }
}

/// An ephemeral reader of the events `q` asks for, from `deliver_policy`.
async fn reader(
    events: &stream::Stream,
    q: &EventQuery,
    deliver_policy: DeliverPolicy,
) -> Result<consumer::Consumer<pull::Config>, ApiError> {
    events
        .create_consumer(pull::Config {
            filter_subject: q.subject_filter()?,
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| op("making a reader")(&e))
}

/// A stored message as an event, with the time the hub stored it.
fn event_of(m: &async_nats::jetstream::Message) -> Option<(StoredEvent, u64)> {
    let info = m.info().ok()?;
    let at = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
    let e = from_message(
        info.stream_sequence,
        &m.subject,
        m.headers.as_ref(),
        &m.payload,
        at,
    );
    Some((e, info.pending))
}

/// A page of events matching `q`.
pub async fn query(events: &stream::Stream, q: &EventQuery) -> Result<EventPage, ApiError> {
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=1000) => n,
        Some(n) => {
            return Err(ApiError::field(
                "limit",
                format!("{n} is not from 1 to 1000"),
                "ask for 1 to 1000 events a page and follow `next`",
            ));
        }
    };
    let deliver_policy = match (q.after, q.since_ms) {
        (Some(a), _) => DeliverPolicy::ByStartSequence {
            start_sequence: a + 1,
        },
        (None, Some(t)) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1_000_000)
                .map_err(|e| {
                    ApiError::field("since_ms", e.to_string(), "give ms since the epoch")
                })?,
        },
        (None, None) => DeliverPolicy::All,
    };
    let c = reader(events, q, deliver_policy).await?;
    let mut out = Vec::new();
    let mut last_seen = q.after;
    let mut more = true;
    'pages: while out.len() < limit {
        let mut batch = c
            .fetch()
            .max_messages(limit.min(500))
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| op("asking for a page")(&e))?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| op("reading a page")(&e))?;
            got += 1;
            let (e, pending) = event_of(&m).ok_or_else(|| op("an event's place")(&"no info"))?;
            last_seen = Some(e.seq);
            if q.until_ms.is_some_and(|u| e.stored_at_ms >= u) {
                more = false;
                break 'pages;
            }
            if q.matches(&e) {
                out.push(e);
            }
            if pending == 0 {
                more = false;
                break 'pages;
            }
            if out.len() >= limit {
                break 'pages;
            }
        }
        if got == 0 {
            more = false;
            break;
        }
    }
    let _ = events.delete_consumer(c.cached_info().name.as_str()).await;
    Ok(EventPage {
        next: last_seen,
        more,
        events: out,
    })
}

/// A live feed of stored events matching `q` (sensor, instrument, kind),
/// from after `after` (an SSE `Last-Event-ID`) or from now on.
pub async fn live(
    events: &stream::Stream,
    q: &EventQuery,
    after: Option<u64>,
) -> Result<impl futures::Stream<Item = StoredEvent> + use<>, ApiError> {
    let deliver_policy = match after {
        Some(a) => DeliverPolicy::ByStartSequence {
            start_sequence: a + 1,
        },
        None => DeliverPolicy::New,
    };
    let c = reader(events, q, deliver_policy).await?;
    let msgs = c.messages().await.map_err(|e| op("following")(&e))?;
    let q = q.clone();
    Ok(msgs.filter_map(move |m| {
        let keep = m
            .ok()
            .and_then(|m| event_of(&m))
            .map(|(e, _)| e)
            .filter(|e| q.matches(e));
        futures::future::ready(keep)
    }))
}

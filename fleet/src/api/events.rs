//! Events: paged queries, the live feed, retention.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{AppState, Body, Params};
use crate::auth::Role;
use crate::error::{ApiError, ErrorBody};
use crate::events::{EventPage, EventQuery};

/// Stored events, oldest first: filter by sensor, instrument, kind and
/// time; page with `after` = the previous page's `next`.
#[utoipa::path(get, path = "/api/v1/events", security(("bearer" = [])), params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody)))]
pub(super) async fn list_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    Ok(Json(crate::events::query(&s.events, &q).await?))
}

/// How long the fleet keeps what it stores, and what enforces it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetentionView {
    /// Events (the sensors' and the fleet's own) and instruments' health
    /// history, e.g. "90days".
    pub events: String,
    pub events_seconds: u64,
    /// What enforces it.
    pub enforced_by: String,
    /// Events stored now, and the oldest one's time (ms since the epoch).
    pub events_stored: u64,
    pub oldest_ms: Option<i64>,
}

pub(super) async fn retention_view(s: &AppState) -> Result<RetentionView, ApiError> {
    let mut stream = s.events.clone();
    let info = stream.info().await.map_err(|e| {
        ApiError::Hub(crate::hub::HubError::Op {
            what: "reading the events stream".into(),
            why: e.to_string(),
        })
    })?;
    let age = info.config.max_age;
    Ok(RetentionView {
        events: humantime::format_duration(age).to_string(),
        events_seconds: age.as_secs(),
        enforced_by: format!(
            "the hub: stream {} max_age",
            outpost_protocol::fleet::FLEET_EVENTS_STREAM
        ),
        events_stored: info.state.messages,
        oldest_ms: (info.state.messages > 0)
            .then(|| (info.state.first_timestamp.unix_timestamp_nanos() / 1_000_000) as i64),
    })
}

/// How long events are kept at the fleet.
#[utoipa::path(get, path = "/api/v1/retention", security(("bearer" = [])),
    responses((status = 200, body = RetentionView)))]
pub(super) async fn get_retention(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<RetentionView>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    Ok(Json(retention_view(&s).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRetention {
    /// How long to keep events, e.g. "30days"; applies to what is stored
    /// already.
    #[schema(pattern = r"^\s*([0-9]{1,9}\s*[a-zA-Z]+\s*)+$", example = "30days")]
    pub events: String,
}

/// Changes how long events are kept; the hub applies it to what it holds
/// at once.
#[utoipa::path(put, path = "/api/v1/retention", request_body = SetRetention,
    security(("bearer" = [])),
    responses((status = 200, body = RetentionView), (status = 400, body = ErrorBody)))]
pub(super) async fn put_retention(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<SetRetention>,
) -> Result<Json<RetentionView>, ApiError> {
    let who = s.who(&headers, Role::Admin).await?;
    let age = humantime::parse_duration(&req.events).map_err(|e| {
        ApiError::field(
            "events",
            format!("{:?}: {e}", req.events),
            "write a duration such as \"90days\"",
        )
    })?;
    if age < Duration::from_secs(60) {
        return Err(ApiError::field(
            "events",
            format!("{} is shorter than a minute", req.events),
            "keep events at least a minute",
        ));
    }
    let mut stream = s.events.clone();
    let mut cfg = stream
        .info()
        .await
        .map_err(|e| {
            ApiError::Hub(crate::hub::HubError::Op {
                what: "reading the events stream".into(),
                why: e.to_string(),
            })
        })?
        .config
        .clone();
    cfg.max_age = age;
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::Hub(crate::hub::HubError::Op {
            what: "changing the events' retention".into(),
            why: e.to_string(),
        })
    };
    s.hub.js.update_stream(cfg).await.map_err(|e| failed(&e))?;
    // Health history follows.
    let mut health = s.health.clone();
    let mut hcfg = health.info().await.map_err(|e| failed(&e))?.config.clone();
    hcfg.max_age = age;
    s.hub.js.update_stream(hcfg).await.map_err(|e| failed(&e))?;
    tracing::warn!(events = %req.events, by = %who.name, "events retention changed");
    Ok(Json(retention_view(&s).await?))
}

/// A live feed of events (server-sent events: `id` is the cursor, `data`
/// a stored event as JSON); resumes after `Last-Event-ID`, else starts
/// now. Filters as `/api/v1/events`.
#[utoipa::path(get, path = "/api/v1/events/stream", security(("bearer" = [])), params(EventQuery),
    responses((status = 200, description = "text/event-stream of StoredEvent"),
              (status = 400, body = ErrorBody)))]
pub(super) async fn stream_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<EventQuery>,
) -> Result<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    s.who(&headers, Role::Viewer).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.after);
    let feed = crate::events::live(&s.events, &q, after).await?;
    let events = feed.map(|e| {
        Ok(Event::default()
            .id(e.seq.to_string())
            .event("event")
            .data(serde_json::to_string(&e).expect("an event serializes")))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

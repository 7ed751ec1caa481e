//! Sensors: enrollment, the registry, tokens, revocation, instruments.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{AppState, Body, Params};
use crate::auth::Role;
use crate::error::{ApiError, ErrorBody};
use crate::hub::now_ms;
use crate::presence::{self, Online};
use crate::registry::{self, Enrollment, SensorRecord};
use outpost_protocol::fleet::{EnrollRequest, EnrollResponse, Heartbeat};

/// A sensor trades its one-time token and its public key for hub
/// credentials.
#[utoipa::path(post, path = "/api/v1/enroll", request_body = EnrollRequest,
    responses((status = 200, body = EnrollResponse), (status = 401, body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn enroll(
    State(s): State<AppState>,
    Body(req): Body<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let r = registry::enroll(
        &s.hub,
        &req,
        s.hub_urls.clone(),
        s.hub_ca_pem.clone(),
        s.heartbeat_every,
    )
    .await?;
    tracing::info!(sensor = %r.sensor, "sensor enrolled");
    Ok(Json(r))
}

/// A sensor with what the fleet last heard from it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct SensorView {
    #[serde(flatten)]
    pub record: SensorRecord,
    pub online: Online,
    /// What `online` is based on, in words.
    pub online_detail: String,
    pub last_seen_ms: Option<i64>,
    /// The last heartbeat (with instruments, versions and backlog).
    pub last_heartbeat: Option<Heartbeat>,
}

pub(super) async fn view(s: &AppState, record: SensorRecord) -> SensorView {
    let p = presence::get(&s.hub, &record.name);
    let (online, online_detail) = if record.revoked_at_ms.is_some() {
        (Online::Offline, "revoked".to_string())
    } else {
        presence::judge(p.as_ref(), s.heartbeat_every, now_ms())
    };
    SensorView {
        record,
        online,
        online_detail,
        last_seen_ms: p.as_ref().map(|p| p.received_at_ms),
        last_heartbeat: p.map(|p| p.heartbeat),
    }
}

/// Every sensor, with last-seen, link state and backlog.
#[utoipa::path(get, path = "/api/v1/sensors", security(("bearer" = [])),
    responses((status = 200, body = [SensorView]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_sensors(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<SensorView>>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    let mut out = Vec::new();
    for r in registry::all_sensors(&s.hub).await? {
        out.push(view(&s, r).await);
    }
    Ok(Json(out))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSensor {
    /// The sensor's name at the fleet (its subjects use it).
    pub name: String,
    /// How long the enrollment token works (default 1h).
    #[serde(default)]
    #[schema(pattern = r"^\s*([0-9]{1,9}\s*[a-zA-Z]+\s*)+$", example = "1h")]
    pub token_ttl: Option<String>,
}

pub(super) fn ttl(s: &AppState, given: Option<&str>) -> Result<Duration, ApiError> {
    match given {
        None => Ok(s.enroll_ttl),
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            ApiError::field(
                "token_ttl",
                format!("{t:?}: {e}"),
                "write a duration such as \"1h\" or \"30m\"",
            )
        }),
    }
}

/// Adds a sensor and returns its one-time enrollment token.
#[utoipa::path(post, path = "/api/v1/sensors", request_body = AddSensor, security(("bearer" = [])),
    responses((status = 200, body = Enrollment), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(super) async fn add_sensor(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<AddSensor>,
) -> Result<Json<Enrollment>, ApiError> {
    let who = s.who(&headers, Role::Operator).await?;
    let ttl = ttl(&s, req.token_ttl.as_deref())?;
    let e = registry::add_sensor(&s.hub, &req.name, &who.name, ttl, &s.fingerprint).await?;
    tracing::info!(sensor = %req.name, by = %who.name, "sensor added");
    Ok(Json(e))
}

/// One sensor.
#[utoipa::path(get, path = "/api/v1/sensors/{name}", security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = SensorView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_sensor(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<SensorView>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    let (r, _) = registry::sensor(&s.hub, &name).await?;
    Ok(Json(view(&s, r).await))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[serde(default)]
    #[schema(pattern = r"^\s*([0-9]{1,9}\s*[a-zA-Z]+\s*)+$", example = "1h")]
    pub token_ttl: Option<String>,
}

/// A new enrollment token for a sensor that has not enrolled yet.
#[utoipa::path(post, path = "/api/v1/sensors/{name}/token", request_body = NewToken,
    security(("bearer" = [])), params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = Enrollment), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(super) async fn new_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(req): Body<NewToken>,
) -> Result<Json<Enrollment>, ApiError> {
    s.who(&headers, Role::Operator).await?;
    let ttl = ttl(&s, req.token_ttl.as_deref())?;
    Ok(Json(
        registry::reissue_token(&s.hub, &name, ttl, &s.fingerprint).await?,
    ))
}

/// Revokes a sensor: its hub credentials stop working within seconds.
#[utoipa::path(post, path = "/api/v1/sensors/{name}/revoke", security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = SensorRecord), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_sensor(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<SensorRecord>, ApiError> {
    let who = s.who(&headers, Role::Admin).await?;
    let r = registry::revoke(&s.hub, &name, &who.name).await?;
    tracing::warn!(sensor = %name, by = %who.name, "sensor revoked");
    Ok(Json(r))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddApiToken {
    pub name: String,
    pub role: Role,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewApiToken {
    pub name: String,
    pub role: Role,
    /// Shown once; only its hash is kept.
    pub token: String,
}

/// Makes an API token with a role.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = AddApiToken, security(("bearer" = [])),
    responses((status = 200, body = NewApiToken), (status = 403, body = ErrorBody)))]
pub(super) async fn add_api_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<AddApiToken>,
) -> Result<Json<NewApiToken>, ApiError> {
    let who = s.who(&headers, Role::Admin).await?;
    if req.name.trim().is_empty() || req.name.len() > 64 {
        return Err(ApiError::field(
            "name",
            "is empty or longer than 64 bytes",
            "name the token after who uses it",
        ));
    }
    let token = s.tokens.create(&req.name, req.role, &who.name).await?;
    Ok(Json(NewApiToken {
        name: req.name,
        role: req.role,
        token,
    }))
}

/// The sensor's instruments as its last heartbeat showed them (state,
/// health and message, restarts, config versions).
#[utoipa::path(get, path = "/api/v1/sensors/{name}/instruments", security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = [outpost_protocol::fleet::InstrumentSummary]),
              (status = 404, body = ErrorBody)))]
pub(super) async fn list_instruments(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Vec<outpost_protocol::fleet::InstrumentSummary>>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    registry::sensor(&s.hub, &name).await?;
    Ok(Json(
        presence::get(&s.hub, &name)
            .map(|p| p.heartbeat.instruments)
            .unwrap_or_default(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// The newest this many changes (default 100).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

/// An instrument's health history: every change of its health or state,
/// oldest first.
#[utoipa::path(get, path = "/api/v1/sensors/{name}/instruments/{instrument}/health",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name"),
           ("instrument" = String, Path, description = "instrument name"), HealthQuery),
    responses((status = 200, body = [crate::health::HealthChange]),
              (status = 404, body = ErrorBody)))]
pub(super) async fn health_history(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((name, instrument)): Path<(String, String)>,
    Params(q): Params<HealthQuery>,
) -> Result<Json<Vec<crate::health::HealthChange>>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    registry::sensor(&s.hub, &name).await?;
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=10_000) => n,
        Some(n) => {
            return Err(ApiError::field(
                "limit",
                format!("{n} is not from 1 to 10000"),
                "ask for 1 to 10000 changes",
            ));
        }
    };
    Ok(Json(
        crate::health::history(&s.health, &name, &instrument, limit).await?,
    ))
}

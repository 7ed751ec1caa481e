//! The REST API (`/api/v1`), with its OpenAPI document generated from
//! these handlers (`/api/v1/openapi.json`).

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use outpost_protocol::fleet::{EnrollRequest, EnrollResponse, Heartbeat};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::auth::{Principal, Role, Tokens};
use crate::error::{ApiError, ErrorBody};
use crate::events::{EventPage, EventQuery, StoredEvent};
use crate::hub::{Hub, now_ms};
use crate::presence::{self, Online, Presence};
use crate::registry::{self, Enrollment, SensorRecord};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub tokens: Tokens,
    /// The HTTPS certificate's pin, handed out with enrollment tokens.
    pub fingerprint: String,
    /// Where sensors reach the hub.
    pub hub_urls: Vec<String>,
    pub hub_ca_pem: String,
    pub heartbeat_every: Duration,
    pub enroll_ttl: Duration,
    /// The hub's `FLEET_EVENTS` stream.
    pub events: async_nats::jetstream::stream::Stream,
    /// The hub's `FLEET_DESIRED` stream.
    pub desired: async_nats::jetstream::stream::Stream,
    /// The hub's `FLEET_HEALTH` stream.
    pub health: async_nats::jetstream::stream::Stream,
    pub rollout_timeout: Duration,
    pub counters: std::sync::Arc<crate::metrics::Counters>,
}

/// A JSON body whose rejection is a JSON error naming the problem.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(ApiError::BadRequest(format!(
                "the request body: {} (fix: send JSON as the API document describes)",
                r.body_text()
            ))),
        }
    }
}

/// Query parameters whose rejection is a JSON error naming the problem.
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(r) => Err(ApiError::BadRequest(format!(
                "the query string: {} (fix: use the parameters the API document lists)",
                r.body_text()
            ))),
        }
    }
}

impl AppState {
    async fn who(&self, headers: &HeaderMap, role: Role) -> Result<Principal, ApiError> {
        let h = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let p = self.tokens.verify(h).await?;
        p.needs(role)?;
        Ok(p)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/sensors", get(list_sensors).post(add_sensor))
        .route("/api/v1/sensors/{name}", get(get_sensor))
        .route("/api/v1/sensors/{name}/token", post(new_token))
        .route("/api/v1/sensors/{name}/revoke", post(revoke_sensor))
        .route("/api/v1/tokens", post(add_api_token))
        .route("/api/v1/events", get(list_events))
        .route("/metrics", get(metrics))
        .route("/api/v1/events/stream", get(stream_events))
        .route("/api/v1/retention", get(get_retention).put(put_retention))
        .route(
            "/api/v1/sensors/{name}/desired",
            get(get_desired).put(put_desired),
        )
        .route(
            "/api/v1/sensors/{name}/desired/history",
            get(desired_history),
        )
        .route("/api/v1/sensors/{name}/rollout", get(get_rollout))
        .route("/api/v1/sensors/{name}/instruments", get(list_instruments))
        .route(
            "/api/v1/sensors/{name}/instruments/{instrument}/health",
            get(health_history),
        )
        .route("/api/v1/sensors/{name}/desired/diff", get(desired_diff))
        .route(
            "/api/v1/sensors/{name}/desired/rollback",
            post(desired_rollback),
        )
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Outpost fleet API", version = "1"),
    paths(
        health,
        enroll,
        list_sensors,
        add_sensor,
        get_sensor,
        new_token,
        revoke_sensor,
        add_api_token,
        list_events,
        stream_events,
        get_desired,
        put_desired,
        desired_history,
        desired_diff,
        desired_rollback,
        get_rollout,
        get_retention,
        put_retention,
        list_instruments,
        health_history
    ),
    components(schemas(ErrorBody, SensorView, Presence, Heartbeat, StoredEvent)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub ok: bool,
    /// Whether this instance's connection to the hub is up.
    pub hub: bool,
}

/// Whether this fleet instance serves and reaches its hub.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, body = Health)))]
async fn health(State(s): State<AppState>) -> Json<Health> {
    let hub = s.hub.client.connection_state() == async_nats::connection::State::Connected;
    Json(Health { ok: hub, hub })
}

/// A sensor trades its one-time token and its public key for hub
/// credentials.
#[utoipa::path(post, path = "/api/v1/enroll", request_body = EnrollRequest,
    responses((status = 200, body = EnrollResponse), (status = 401, body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn enroll(
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

async fn view(s: &AppState, record: SensorRecord) -> SensorView {
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
async fn list_sensors(
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
    pub token_ttl: Option<String>,
}

fn ttl(s: &AppState, given: Option<&str>) -> Result<Duration, ApiError> {
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
async fn add_sensor(
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
async fn get_sensor(
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
    pub token_ttl: Option<String>,
}

/// A new enrollment token for a sensor that has not enrolled yet.
#[utoipa::path(post, path = "/api/v1/sensors/{name}/token", request_body = NewToken,
    security(("bearer" = [])), params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = Enrollment), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn new_token(
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
async fn revoke_sensor(
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
async fn add_api_token(
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

/// Stored events, oldest first: filter by sensor, instrument, kind and
/// time; page with `after` = the previous page's `next`.
#[utoipa::path(get, path = "/api/v1/events", security(("bearer" = [])), params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody)))]
async fn list_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    Ok(Json(crate::events::query(&s.events, &q).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutDesired {
    /// The whole sensor file (TOML), as `outpostd --sensor-file` reads it.
    pub toml: String,
    /// Why; kept with the version.
    #[serde(default)]
    pub reason: String,
    /// How long the rollout waits for the sensor (default: the fleet's).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Keep it only if the sensor's link is healthy again within this
    /// (e.g. "2m"); otherwise the sensor rolls back by itself.
    #[serde(default)]
    pub confirm_within: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct DesiredAndRollout {
    pub desired: crate::desired::DesiredVersion,
    pub rollout: crate::desired::Rollout,
}

/// Stores a new version of the sensor's desired state (validated first,
/// every problem named) and pushes it.
#[utoipa::path(put, path = "/api/v1/sensors/{name}/desired", request_body = PutDesired,
    security(("bearer" = [])), params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = DesiredAndRollout), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn put_desired(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(req): Body<PutDesired>,
) -> Result<Json<DesiredAndRollout>, ApiError> {
    let who = s.who(&headers, Role::Operator).await?;
    let timeout = match req.timeout.as_deref() {
        None => s.rollout_timeout,
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            ApiError::field(
                "timeout",
                format!("{t:?}: {e}"),
                "write a duration such as \"10m\"",
            )
        })?,
    };
    let confirm_within = match req.confirm_within.as_deref() {
        None => None,
        Some(t) => Some(humantime::parse_duration(t).map_err(|e| {
            ApiError::field(
                "confirm_within",
                format!("{t:?}: {e}"),
                "write a duration such as \"2m\"",
            )
        })?),
    };
    let (desired, rollout) = crate::desired::put(
        &s.hub,
        &s.desired,
        &name,
        crate::desired::Change {
            toml: req.toml,
            reason: req.reason,
            author: who.name,
            timeout,
            confirm_within,
        },
        s.heartbeat_every,
    )
    .await?;
    Ok(Json(DesiredAndRollout { desired, rollout }))
}

/// The sensor's newest desired state.
#[utoipa::path(get, path = "/api/v1/sensors/{name}/desired", security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = crate::desired::DesiredVersion), (status = 404, body = ErrorBody)))]
async fn get_desired(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<crate::desired::DesiredVersion>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    registry::sensor(&s.hub, &name).await?;
    crate::desired::latest(&s.desired, &name)
        .await?
        .map(|(v, _)| Json(v))
        .ok_or_else(|| ApiError::NotFound(format!("desired state of sensor {name:?}")))
}

/// Every version of the sensor's desired state, oldest first.
#[utoipa::path(get, path = "/api/v1/sensors/{name}/desired/history", security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = [crate::desired::DesiredVersion]), (status = 404, body = ErrorBody)))]
async fn desired_history(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Vec<crate::desired::DesiredVersion>>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    registry::sensor(&s.hub, &name).await?;
    Ok(Json(crate::desired::history(&s.desired, &name).await?))
}

/// The rollout of the sensor's newest version.
#[utoipa::path(get, path = "/api/v1/sensors/{name}/rollout", security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = crate::desired::Rollout), (status = 404, body = ErrorBody)))]
async fn get_rollout(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<crate::desired::Rollout>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    registry::sensor(&s.hub, &name).await?;
    crate::desired::rollout(&s.hub, &name)
        .await?
        .map(|(r, _)| Json(r))
        .ok_or_else(|| ApiError::NotFound(format!("rollout of sensor {name:?}")))
}

/// Prometheus text format; needs a viewer token.
async fn metrics(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    s.who(&headers, Role::Viewer).await?;
    let text = crate::metrics::render(&s.hub, s.heartbeat_every, &s.counters).await;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The older version.
    pub a: u64,
    /// The newer version.
    pub b: u64,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiffText {
    /// A unified diff of the two sensor files.
    pub diff: String,
}

/// A unified diff of two versions of the sensor's desired state.
#[utoipa::path(get, path = "/api/v1/sensors/{name}/desired/diff", security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name"), DiffQuery),
    responses((status = 200, body = DiffText), (status = 404, body = ErrorBody)))]
async fn desired_diff(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Params(q): Params<DiffQuery>,
) -> Result<Json<DiffText>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    registry::sensor(&s.hub, &name).await?;
    Ok(Json(DiffText {
        diff: crate::desired::diff(&s.desired, &name, q.a, q.b).await?,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version whose sensor file becomes the new version.
    pub version: u64,
    #[serde(default)]
    pub reason: String,
}

/// Rolls back: a new version with an old version's sensor file, pushed
/// like any other.
#[utoipa::path(post, path = "/api/v1/sensors/{name}/desired/rollback", request_body = Rollback,
    security(("bearer" = [])), params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = DesiredAndRollout), (status = 404, body = ErrorBody)))]
async fn desired_rollback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(req): Body<Rollback>,
) -> Result<Json<DesiredAndRollout>, ApiError> {
    let who = s.who(&headers, Role::Operator).await?;
    let old = crate::desired::version(&s.desired, &name, req.version).await?;
    let reason = if req.reason.is_empty() {
        format!("rollback to version {}", req.version)
    } else {
        req.reason
    };
    let (desired, rollout) = crate::desired::put(
        &s.hub,
        &s.desired,
        &name,
        crate::desired::Change {
            toml: old.toml,
            reason,
            author: who.name,
            timeout: s.rollout_timeout,
            confirm_within: old.confirm_within,
        },
        s.heartbeat_every,
    )
    .await?;
    Ok(Json(DesiredAndRollout { desired, rollout }))
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

async fn retention_view(s: &AppState) -> Result<RetentionView, ApiError> {
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
async fn get_retention(
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
    pub events: String,
}

/// Changes how long events are kept; the hub applies it to what it holds
/// at once.
#[utoipa::path(put, path = "/api/v1/retention", request_body = SetRetention,
    security(("bearer" = [])),
    responses((status = 200, body = RetentionView), (status = 400, body = ErrorBody)))]
async fn put_retention(
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
async fn stream_events(
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

/// The sensor's instruments as its last heartbeat showed them (state,
/// health and message, restarts, config versions).
#[utoipa::path(get, path = "/api/v1/sensors/{name}/instruments", security(("bearer" = [])),
    params(("name" = String, Path, description = "sensor name")),
    responses((status = 200, body = [outpost_protocol::fleet::InstrumentSummary]),
              (status = 404, body = ErrorBody)))]
async fn list_instruments(
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
pub struct HealthQuery {
    /// The newest this many changes (default 100, at most 10000).
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
async fn health_history(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((name, instrument)): Path<(String, String)>,
    Params(q): Params<HealthQuery>,
) -> Result<Json<Vec<crate::health::HealthChange>>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    registry::sensor(&s.hub, &name).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(
        crate::health::history(&s.health, &name, &instrument, limit).await?,
    ))
}

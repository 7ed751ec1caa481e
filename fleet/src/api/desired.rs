//! Desired state: versions, history, diff, rollback, rollouts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{AppState, Body, Params};
use crate::auth::Role;
use crate::error::{ApiError, ErrorBody};
use crate::registry;

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
    #[schema(pattern = r"^\s*([0-9]{1,9}\s*[a-zA-Z]+\s*)+$", example = "10m")]
    pub timeout: Option<String>,
    /// Keep it only if the sensor's link is healthy again within this
    /// (e.g. "2m"); otherwise the sensor rolls back by itself.
    #[serde(default)]
    #[schema(pattern = r"^\s*([0-9]{1,9}\s*[a-zA-Z]+\s*)+$", example = "2m")]
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
pub(super) async fn put_desired(
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
        &s.images,
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
pub(super) async fn get_desired(
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
pub(super) async fn desired_history(
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
pub(super) async fn get_rollout(
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
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
pub(super) async fn desired_diff(
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
pub(super) async fn desired_rollback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(req): Body<Rollback>,
) -> Result<Json<DesiredAndRollout>, ApiError> {
    let who = s.who(&headers, Role::Operator).await?;
    registry::sensor(&s.hub, &name).await?;
    let old = crate::desired::version(&s.desired, &name, req.version).await?;
    let reason = if req.reason.is_empty() {
        format!("rollback to version {}", req.version)
    } else {
        req.reason
    };
    let (desired, rollout) = crate::desired::put(
        &s.hub,
        &s.images,
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

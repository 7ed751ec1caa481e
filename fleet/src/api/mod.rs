//! The REST API (`/api/v1`), with its OpenAPI document generated from
//! these handlers (`/api/v1/openapi.json`).

mod desired;
mod events;
mod images;
mod sensors;

pub use sensors::{NewApiToken, SensorView};

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use outpost_protocol::fleet::Heartbeat;
use serde::Serialize;
use utoipa::OpenApi;

use crate::auth::{Principal, Role, Tokens};
use crate::error::{ApiError, ErrorBody};
use crate::events::StoredEvent;
use crate::hub::Hub;
use crate::presence::Presence;

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
    pub images: crate::images::Images,
    pub checker: std::sync::Arc<crate::signals::Checker>,
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
    let public = Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/enroll", post(sensors::enroll));
    // Everything else needs a valid token before its request is even
    // parsed (each handler then checks the role it needs).
    let guarded = Router::new()
        .route(
            "/api/v1/sensors",
            get(sensors::list_sensors).post(sensors::add_sensor),
        )
        .route("/api/v1/sensors/{name}", get(sensors::get_sensor))
        .route("/api/v1/sensors/{name}/token", post(sensors::new_token))
        .route(
            "/api/v1/sensors/{name}/revoke",
            post(sensors::revoke_sensor),
        )
        .route("/api/v1/tokens", post(sensors::add_api_token))
        .route("/api/v1/events", get(events::list_events))
        .route("/metrics", get(metrics))
        .route("/api/v1/events/stream", get(events::stream_events))
        .route(
            "/api/v1/retention",
            get(events::get_retention).put(events::put_retention),
        )
        .route(
            "/api/v1/sensors/{name}/desired",
            get(desired::get_desired).put(desired::put_desired),
        )
        .route(
            "/api/v1/sensors/{name}/desired/history",
            get(desired::desired_history),
        )
        .route("/api/v1/sensors/{name}/rollout", get(desired::get_rollout))
        .route(
            "/api/v1/sensors/{name}/instruments",
            get(sensors::list_instruments),
        )
        .route(
            "/api/v1/sensors/{name}/instruments/{instrument}/health",
            get(sensors::health_history),
        )
        .route(
            "/api/v1/sensors/{name}/desired/diff",
            get(desired::desired_diff),
        )
        .route(
            "/api/v1/sensors/{name}/desired/rollback",
            post(desired::desired_rollback),
        )
        .route(
            "/api/v1/images",
            get(images::list_images).post(images::upload_image).layer(
                axum::extract::DefaultBodyLimit::max(crate::images::MAX_UPLOAD as usize),
            ),
        )
        .route("/api/v1/images/{name}/{version}", get(images::get_image))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    public.merge(guarded).with_state(state)
}

async fn require_token(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    s.who(req.headers(), Role::Viewer).await?;
    Ok(next.run(req).await)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Outpost fleet API", version = "1"),
    paths(
        health,
        sensors::enroll,
        sensors::list_sensors,
        sensors::add_sensor,
        sensors::get_sensor,
        sensors::new_token,
        sensors::revoke_sensor,
        sensors::add_api_token,
        events::list_events,
        events::stream_events,
        desired::get_desired,
        desired::put_desired,
        desired::desired_history,
        desired::desired_diff,
        desired::desired_rollback,
        desired::get_rollout,
        images::list_images,
        images::upload_image,
        images::get_image,
        events::get_retention,
        events::put_retention,
        sensors::list_instruments,
        sensors::health_history,
    ),
    components(schemas(ErrorBody, sensors::SensorView, Presence, Heartbeat, StoredEvent)),
    modifiers(&BearerAuth, &CommonErrors)
)]
pub struct ApiDoc;

struct BearerAuth;

/// The errors every operation may answer, documented on each: a request
/// that does not parse (400), no or a bad token (401) or too weak a role
/// (403) where a token is needed, and a hub that does not answer (503).
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut add = vec![
                    (
                        "400",
                        "the request does not parse or is invalid; the error names the field and the fix",
                    ),
                    ("503", "the hub does not answer"),
                ];
                if secured {
                    add.push(("401", "no bearer token, or one this fleet does not know"));
                    add.push(("403", "the token's role may not do this"));
                }
                for (code, what) in add {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(what).into());
                }
            }
        }
    }
}

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
pub(super) async fn health(State(s): State<AppState>) -> Json<Health> {
    let hub = s.hub.client.connection_state() == async_nats::connection::State::Connected;
    Json(Health { ok: hub, hub })
}

/// Prometheus text format; needs a viewer token.
pub(super) async fn metrics(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    s.who(&headers, Role::Viewer).await?;
    let text = crate::metrics::render(&s.hub, s.heartbeat_every, &s.counters, &s.checker).await;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

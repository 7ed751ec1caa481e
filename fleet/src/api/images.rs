//! Images: upload (the archive as the body), catalog, one image.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;

use super::AppState;
use crate::auth::Role;
use crate::error::{ApiError, ErrorBody};
use crate::images::ImageRecord;

/// What an upload did.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Uploaded {
    pub image: ImageRecord,
    /// `false` when the fleet had this very archive already.
    pub new: bool,
}

/// Every image the fleet distributes.
#[utoipa::path(get, path = "/api/v1/images", security(("bearer" = [])),
    responses((status = 200, body = [ImageRecord])))]
pub(super) async fn list_images(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ImageRecord>>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    Ok(Json(s.images.list()))
}

/// Uploads an image archive (as `outpost-image` builds it); its name and
/// version come from its manifest.
#[utoipa::path(post, path = "/api/v1/images", security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "an image archive (.tar.gz)"),
    responses((status = 200, body = Uploaded), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(super) async fn upload_image(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Uploaded>, ApiError> {
    let who = s.who(&headers, Role::Operator).await?;
    let (image, new) = s.images.upload(body, &who.name).await?;
    Ok(Json(Uploaded { image, new }))
}

/// One image, with its manifest.
#[utoipa::path(get, path = "/api/v1/images/{name}/{version}", security(("bearer" = [])),
    params(("name" = String, Path, description = "image name"),
           ("version" = String, Path, description = "image version")),
    responses((status = 200, body = ImageRecord), (status = 404, body = ErrorBody)))]
pub(super) async fn get_image(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ImageRecord>, ApiError> {
    s.who(&headers, Role::Viewer).await?;
    s.images
        .get(&name, &version)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("image {name} {version}")))
}

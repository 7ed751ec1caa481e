//! Images the fleet distributes. An upload is stored in the hub's object
//! store `fleet_images` (replicated like everything else) and catalogued
//! in KV `images` under `<name>/<version>` with its sha256, size and
//! manifest; the catalog record is written last, so an image is listed
//! only once all of it is stored. A name and version are taken once: the
//! same archive again is accepted, another one refused.
//!
//! Sensors fetch an archive over the link in pieces (`fleet.in.<s>.image`);
//! any instance answers from its local copy (`<state>/images/<sha256>`),
//! which it fetches from the hub and verifies the first time. A sensor may
//! fetch only images its newest desired version names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::object_store::{self, ObjectStore};
use bytes::Bytes;
use futures::StreamExt;
use outpost_protocol::Manifest;
use outpost_protocol::fleet::{self as proto, ImageChunkRequest, ImageRef};
use outpost_protocol::ratelimit::RateLimited;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::hub::{Hub, HubError, now_ms};
use crate::shutdown::Shutdown;

/// The object store bucket of the archives.
pub const OBJECTS: &str = "fleet_images";

/// Largest archive the fleet takes.
pub const MAX_UPLOAD: u64 = 2 << 30;

/// A catalogued image.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageRecord {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    /// Its `manifest.toml`.
    pub manifest: String,
    pub uploaded_by: String,
    pub uploaded_at_ms: i64,
}

impl ImageRecord {
    pub fn key(name: &str, version: &str) -> String {
        format!("{name}/{version}")
    }

    pub fn reference(&self) -> ImageRef {
        ImageRef {
            name: self.name.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

/// The fleet's images: the catalog, the archives and the local copies.
#[derive(Clone)]
pub struct Images {
    hub: Hub,
    store: ObjectStore,
    /// The hub's `FLEET_DESIRED` stream (who may fetch what).
    desired: async_nats::jetstream::stream::Stream,
    dir: PathBuf,
    /// Parsed manifests by `<name>/<version>` (images never change).
    manifests: Arc<Mutex<HashMap<String, Arc<Manifest>>>>,
    /// One fetch from the hub at a time into the local copies.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

fn op(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Hub(HubError::Op {
        what: what.to_string(),
        why: e.to_string(),
    })
}

impl Images {
    /// Opens (or makes) the object store; local copies go to `dir`.
    pub async fn open(
        hub: &Hub,
        replicas: usize,
        dir: &Path,
        desired: async_nats::jetstream::stream::Stream,
    ) -> Result<Images, HubError> {
        let err = |e: &dyn std::fmt::Display| HubError::Bucket {
            bucket: OBJECTS.into(),
            why: e.to_string(),
        };
        let store = match hub.js.get_object_store(OBJECTS).await {
            Ok(s) => s,
            Err(_) => match hub
                .js
                .create_object_store(object_store::Config {
                    bucket: OBJECTS.into(),
                    description: Some("image archives the fleet distributes".into()),
                    num_replicas: replicas.max(1),
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
            {
                Ok(s) => s,
                // Another instance made it meanwhile.
                Err(e) => hub
                    .js
                    .get_object_store(OBJECTS)
                    .await
                    .map_err(|_| err(&e))?,
            },
        };
        std::fs::create_dir_all(dir).map_err(|e| err(&format!("{}: {e}", dir.display())))?;
        Ok(Images {
            hub: hub.clone(),
            store,
            desired,
            dir: dir.to_path_buf(),
            manifests: Arc::default(),
            fetching: Arc::default(),
        })
    }

    /// Every catalogued image, by name and version.
    pub fn list(&self) -> Vec<ImageRecord> {
        let mut all: Vec<ImageRecord> = self
            .hub
            .index
            .images
            .all()
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
        all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        all
    }

    pub fn get(&self, name: &str, version: &str) -> Option<ImageRecord> {
        self.hub
            .index
            .images
            .get(&ImageRecord::key(name, version))
            .map(|(r, _)| r)
    }

    /// The manifest of a catalogued image.
    pub fn manifest(&self, name: &str, version: &str) -> Option<Arc<Manifest>> {
        let key = ImageRecord::key(name, version);
        if let Some(m) = self.manifests.lock().expect("manifests").get(&key) {
            return Some(m.clone());
        }
        let rec = self.get(name, version)?;
        let m = Arc::new(Manifest::parse_valid(&rec.manifest).ok()?);
        self.manifests
            .lock()
            .expect("manifests")
            .insert(key, m.clone());
        Some(m)
    }

    fn local(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.tar.gz"))
    }

    /// Takes an uploaded archive: stored, then catalogued. The record, and
    /// whether it is new.
    pub async fn upload(
        &self,
        body: axum::body::Body,
        by: &str,
    ) -> Result<(ImageRecord, bool), ApiError> {
        let tmp = self.dir.join(format!(
            ".upload-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = self.upload_via(&tmp, body, by).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result
    }

    async fn upload_via(
        &self,
        tmp: &Path,
        body: axum::body::Body,
        by: &str,
    ) -> Result<(ImageRecord, bool), ApiError> {
        let io = |e: std::io::Error| op(&format!("writing {}", tmp.display()), e);
        let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut data = body.into_data_stream();
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("the upload broke off: {e} (fix: send it again)"))
            })?;
            size += chunk.len() as u64;
            if size > MAX_UPLOAD {
                return Err(ApiError::BadRequest(format!(
                    "the archive is larger than {MAX_UPLOAD} bytes (fix: make the image smaller)"
                )));
            }
            hash.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        if size == 0 {
            return Err(ApiError::BadRequest(
                "the body is empty (fix: send an image archive as application/octet-stream, e.g. outpost-fleet image push FILE)".into(),
            ));
        }
        let sha256 = hex::encode(hash.finalize());
        let path = tmp.to_path_buf();
        let (manifest, text) =
            tokio::task::spawn_blocking(move || outpost_image::unpack::read_manifest(&path))
                .await
                .map_err(|e| op("reading the manifest", e))?
                .map_err(|e| {
                    ApiError::BadRequest(
                        e.to_string()
                            .replace(&tmp.display().to_string(), "the upload"),
                    )
                })?;
        if let Some(existing) = self.get(&manifest.name, &manifest.version) {
            if existing.sha256 == sha256 {
                return Ok((existing, false));
            }
            return Err(ApiError::Conflict(format!(
                "image {} {} is at the fleet already with sha256 {}; this archive's is {sha256} (fix: give the new image a new version)",
                manifest.name, manifest.version, existing.sha256
            )));
        }
        let key = ImageRecord::key(&manifest.name, &manifest.version);
        let mut f = tokio::fs::File::open(tmp).await.map_err(io)?;
        self.store
            .put(key.as_str(), &mut f)
            .await
            .map_err(|e| op(&format!("storing image {key}"), e))?;
        // Our own copy, for the sensors that ask.
        tokio::fs::rename(tmp, self.local(&sha256))
            .await
            .map_err(io)?;
        let rec = ImageRecord {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            sha256,
            size,
            manifest: text,
            uploaded_by: by.to_string(),
            uploaded_at_ms: now_ms(),
        };
        let body = Bytes::from(serde_json::to_vec(&rec).expect("serializes"));
        match self.hub.images.create(&key, body).await {
            Ok(rev) => self.hub.index.images.note(&key, rec.clone(), rev),
            Err(e) => {
                // Another instance catalogued it meanwhile: the same bytes
                // are fine, others are not.
                if let Ok(Some(v)) = self.hub.images.get(&key).await
                    && let Ok(other) = serde_json::from_slice::<ImageRecord>(&v)
                {
                    if other.sha256 == rec.sha256 {
                        return Ok((other, false));
                    }
                    return Err(ApiError::Conflict(format!(
                        "image {key} was uploaded meanwhile with sha256 {} (fix: give the new image a new version)",
                        other.sha256
                    )));
                }
                return Err(op(&format!("cataloguing image {key}"), e));
            }
        }
        info!(image = %rec.name, version = %rec.version, sha256 = %rec.sha256, bytes = rec.size, by, "image uploaded");
        Ok((rec, true))
    }

    /// The local copy of `rec`, fetched from the hub and verified if this
    /// instance has none yet.
    async fn local_copy(&self, rec: &ImageRecord) -> Result<PathBuf, String> {
        let path = self.local(&rec.sha256);
        if path.exists() {
            return Ok(path);
        }
        let _one = self.fetching.lock().await;
        if path.exists() {
            return Ok(path);
        }
        let key = ImageRecord::key(&rec.name, &rec.version);
        let tmp = self.dir.join(format!(".fetch-{}", rec.sha256));
        let fetched = async {
            let mut obj = self.store.get(&key).await.map_err(|e| e.to_string())?;
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| e.to_string())?;
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                use tokio::io::AsyncReadExt;
                let n = obj.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                file.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
            }
            file.sync_all().await.map_err(|e| e.to_string())?;
            let got = hex::encode(hash.finalize());
            if got != rec.sha256 {
                return Err(format!(
                    "the hub's copy of {key} has sha256 {got}, its record says {}",
                    rec.sha256
                ));
            }
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if fetched.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        fetched.map(|()| path)
    }

    /// Answers the sensors' requests for pieces of archives until
    /// `shutdown` (every instance takes a share: one queue group).
    pub async fn serve(self, shutdown: Shutdown) {
        let Some(mut share) = self
            .hub
            .share(proto::ALL_IMAGE_REQUESTS, "image requests", &shutdown)
            .await
        else {
            return;
        };
        let complain = Arc::new(Mutex::new(RateLimited::new(5, Duration::from_secs(60))));
        let busy = Arc::new(tokio::sync::Semaphore::new(16));
        while let Some((sensor, msg)) = share.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let (this, complain) = (self.clone(), complain.clone());
            let Ok(permit) = busy.clone().acquire_owned().await else {
                return;
            };
            tokio::spawn(async move {
                let _permit = permit;
                let answer = this.piece(&sensor, &msg.payload).await;
                let sent = match answer {
                    Ok(bytes) => this.hub.client.publish(reply, bytes).await,
                    Err(why) => {
                        if complain
                            .lock()
                            .expect("limiter")
                            .allow(std::time::Instant::now())
                            .is_some()
                        {
                            warn!(sensor, "an image request refused: {why}");
                        }
                        let mut h = async_nats::HeaderMap::new();
                        h.insert(proto::HDR_ERROR, why.as_str());
                        this.hub
                            .client
                            .publish_with_headers(reply, h, Bytes::new())
                            .await
                    }
                };
                let _ = sent;
            });
        }
    }

    /// The piece a sensor asked for, or why not.
    async fn piece(&self, sensor: &str, payload: &[u8]) -> Result<Bytes, String> {
        let req: ImageChunkRequest = serde_json::from_slice(payload)
            .map_err(|e| format!("a request that does not parse: {e}"))?;
        let label = format!("image {} {}", req.name, req.version);
        let rec = self
            .get(&req.name, &req.version)
            .ok_or_else(|| format!("{label} is not at the fleet"))?;
        if !self.named_for(sensor, &rec).await {
            return Err(format!(
                "{label} is not in sensor {sensor}'s desired state at the fleet"
            ));
        }
        if req.offset >= rec.size {
            return Err(format!(
                "{label} has {} bytes; nothing at {}",
                rec.size, req.offset
            ));
        }
        let path = self
            .local_copy(&rec)
            .await
            .map_err(|e| format!("{label} cannot be read at the fleet: {e}"))?;
        let len = proto::IMAGE_CHUNK.min(rec.size - req.offset) as usize;
        let offset = req.offset;
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, offset)
                .map_err(|e| e.to_string())?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Whether `sensor`'s newest desired version names `rec`.
    async fn named_for(&self, sensor: &str, rec: &ImageRecord) -> bool {
        match crate::desired::latest(&self.desired, sensor).await {
            Ok(Some((v, _))) => v
                .images
                .iter()
                .any(|i| i.name == rec.name && i.version == rec.version && i.sha256 == rec.sha256),
            _ => false,
        }
    }
}

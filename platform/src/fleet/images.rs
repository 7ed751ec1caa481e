//! Images from the fleet: a pushed version names the images the fleet
//! distributes; the sensor fetches each one it lacks over the link (in
//! pieces, answered by any fleet instance), checks the sha256 the push
//! named, and imports it as `outpostctl image import` would. Nothing is
//! imported that does not match, and nothing half-fetched stays behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::fleet::{self as proto, ImageChunkRequest, ImageRef};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::daemon::{Command, Handle};
use crate::db::Db;
use crate::images::{ImageStore, Imported};
use crate::paths::StateDir;

/// Why the images of a push are not all here.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// For good: the push is answered `rejected` with this.
    #[error("{0}")]
    Refused(String),
    /// For now (the hub or the fleet did not answer): the fleet pushes
    /// again, and the fetch is tried again then.
    #[error("{0}")]
    NotYet(String),
}

/// How long one piece may take to come.
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);

/// Fetches and imports every image of `refs` this sensor lacks.
pub async fn ensure(
    client: &async_nats::Client,
    sensor: &str,
    refs: &[ImageRef],
    state: &StateDir,
    handle: &Handle,
) -> Result<(), FetchError> {
    let mut imported = false;
    for r in refs {
        let label = format!("image {} {}", r.name, r.version);
        let here = {
            let state = state.clone();
            let (name, version) = (r.name.clone(), r.version.clone());
            tokio::task::spawn_blocking(move || Db::open(&state.db())?.image(&name, &version))
                .await
                .map_err(|e| FetchError::NotYet(e.to_string()))?
                .map_err(|e| FetchError::NotYet(format!("{label}: {e}")))?
        };
        match here {
            Some(rec) if rec.sha256 == r.sha256 => continue,
            Some(rec) => {
                return Err(FetchError::Refused(format!(
                    "{label}: this sensor has it with sha256 {}, the fleet's is {} (fix: give the fleet's image a new version, or remove the sensor's copy with outpostctl image remove)",
                    rec.sha256, r.sha256
                )));
            }
            None => {}
        }
        let dir = state.root().join("fleet").join("downloads");
        crate::paths::create_private_dir(&dir)
            .map_err(|e| FetchError::NotYet(format!("{}: {e}", dir.display())))?;
        let part = dir.join(format!("{}-{}.part", r.name, r.version));
        info!(image = %r.name, version = %r.version, bytes = r.size, "fetching an image from the fleet");
        let fetched = fetch(client, sensor, r, &part).await;
        let result = match fetched {
            Ok(()) => import(state, &part, r).await,
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&part);
        result?;
        imported = true;
    }
    if imported {
        // Instruments that waited for an image can start now.
        let _ = handle.send(Command::Wake).await;
    }
    Ok(())
}

/// Fetches `r` into `part`, checking size and sha256 as it comes.
async fn fetch(
    client: &async_nats::Client,
    sensor: &str,
    r: &ImageRef,
    part: &Path,
) -> Result<(), FetchError> {
    let label = format!("image {} {}", r.name, r.version);
    let io = |e: std::io::Error| FetchError::NotYet(format!("{}: {e}", part.display()));
    let mut file = std::fs::File::create(part).map_err(io)?;
    let mut hash = Sha256::new();
    let mut offset = 0u64;
    let mut last_report = 0u64;
    while offset < r.size {
        let req = ImageChunkRequest {
            name: r.name.clone(),
            version: r.version.clone(),
            offset,
        };
        let body = serde_json::to_vec(&req).expect("serializes");
        let answer = tokio::time::timeout(
            PIECE_TIMEOUT,
            client.request(proto::image_request(sensor), body.into()),
        )
        .await
        .map_err(|_| {
            FetchError::NotYet(format!(
                "{label}: the fleet did not answer for the piece at {offset} within {PIECE_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| FetchError::NotYet(format!("{label}: {e}")))?;
        if let Some(why) = answer
            .headers
            .as_ref()
            .and_then(|h| h.get(proto::HDR_ERROR))
        {
            return Err(FetchError::Refused(format!(
                "{label}: the fleet refused it: {}",
                why.as_str()
            )));
        }
        let piece = &answer.payload;
        if piece.is_empty() || offset + piece.len() as u64 > r.size {
            return Err(FetchError::Refused(format!(
                "{label}: the fleet sent {} bytes at {offset} of an archive of {} (fix: push the image to the fleet again)",
                piece.len(),
                r.size
            )));
        }
        hash.update(piece);
        file.write_all(piece).map_err(io)?;
        offset += piece.len() as u64;
        // Progress: every 16 MiB.
        if offset - last_report >= 16 << 20 {
            last_report = offset;
            info!(image = %r.name, version = %r.version, done = offset, total = r.size, "fetching");
        }
    }
    file.sync_all().map_err(io)?;
    let got = hex::encode(hash.finalize());
    if got != r.sha256 {
        warn!(image = %r.name, version = %r.version, expected = %r.sha256, got = %got, "an image from the fleet does not match its sha256");
        return Err(FetchError::Refused(format!(
            "{label}: what came has sha256 {got}, the push named {} (nothing imported)",
            r.sha256
        )));
    }
    Ok(())
}

/// Imports a fetched archive (verified again, unpacked, placed).
async fn import(state: &StateDir, part: &Path, r: &ImageRef) -> Result<(), FetchError> {
    let label = format!("image {} {}", r.name, r.version);
    let (state, part, sha): (StateDir, PathBuf, String) =
        (state.clone(), part.to_path_buf(), r.sha256.clone());
    let imported = tokio::task::spawn_blocking(move || {
        let db = Db::open(&state.db()).map_err(|e| e.to_string())?;
        ImageStore::new(&state)
            .import(&db, &part, &sha, |_| {})
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| FetchError::NotYet(e.to_string()))?
    .map_err(|e| FetchError::Refused(format!("{label}: {e}")))?;
    let rec = match imported {
        Imported::New(rec) | Imported::AlreadyThere(rec) => rec,
    };
    if rec.name != r.name || rec.version != r.version {
        return Err(FetchError::Refused(format!(
            "{label}: the archive holds image {} {} (fix: push the right archive to the fleet)",
            rec.name, rec.version
        )));
    }
    info!(image = %r.name, version = %r.version, sha256 = %r.sha256, "image from the fleet imported");
    Ok(())
}

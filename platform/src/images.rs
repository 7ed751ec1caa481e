//! The image store: import (verify + unpack), list, remove.
//!
//! An import unpacks into `images/.staging-*` and only then renames the tree
//! into place and records it, so a failed or interrupted import leaves
//! nothing behind (staging dirs and unrecorded trees are removed by
//! [`ImageStore::recover`] when outpostd starts).

use std::fs;
use std::path::{Path, PathBuf};

use outpost_image::unpack::{Limits, Progress};
use outpost_image::{UnpackError, unpack};
use outpost_protocol::Manifest;
use tracing::{info, warn};

use crate::db::{Db, DbError, ImageRecord, now_ms};
use crate::paths::StateDir;

/// Image store failure.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "image {name}:{version} is already imported with sha256 {existing}, and this archive has {new}; images are immutable (fix: give the new image a new version)"
    )]
    Conflict {
        name: String,
        version: String,
        existing: String,
        new: String,
    },
    #[error("image store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {name}:{version}: stored manifest is unreadable: {detail}")]
    BadRecord {
        name: String,
        version: String,
        detail: String,
    },
}

/// What an import did.
#[derive(Debug, Clone)]
pub enum Imported {
    New(ImageRecord),
    /// The same archive was imported before; nothing changed.
    AlreadyThere(ImageRecord),
}

/// Images under `<state>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    state: StateDir,
}

impl ImageStore {
    pub fn new(state: &StateDir) -> ImageStore {
        ImageStore {
            state: state.clone(),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The read-only rootfs of an image.
    pub fn rootfs(&self, name: &str, version: &str) -> PathBuf {
        self.state.image(name, version).join("rootfs")
    }

    /// Verifies `archive` against `sha256` and imports it.
    pub fn import(
        &self,
        db: &Db,
        archive: &Path,
        sha256: &str,
        progress: impl FnMut(Progress),
    ) -> Result<Imported, ImageError> {
        let images = self.state.images();
        fs::create_dir_all(&images).map_err(|e| Self::io(&images, e))?;
        let staging = images.join(format!(
            ".staging-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let unpacked = unpack(archive, sha256, &staging, Limits::default(), progress)?;
        crate::failpoint::hit("import-after-unpack");
        let m = &unpacked.manifest;
        let result = self.place(
            db,
            &staging,
            &unpacked.manifest_text,
            m,
            &unpacked.sha256,
            unpacked.bytes,
        );
        if staging.exists() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    fn place(
        &self,
        db: &Db,
        staging: &Path,
        manifest_text: &str,
        m: &Manifest,
        sha256: &str,
        bytes: u64,
    ) -> Result<Imported, ImageError> {
        if let Some(existing) = db.image(&m.name, &m.version)? {
            return if existing.sha256 == sha256 {
                Ok(Imported::AlreadyThere(existing))
            } else {
                Err(ImageError::Conflict {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    existing: existing.sha256,
                    new: sha256.to_string(),
                })
            };
        }
        let dest = self.state.image(&m.name, &m.version);
        let parent = dest.parent().expect("image dir has a parent");
        fs::create_dir_all(parent).map_err(|e| Self::io(parent, e))?;
        if dest.exists() {
            // A tree without a record: left by a crash; replace it.
            warn!(path = %dest.display(), "removing an unrecorded image tree");
            fs::remove_dir_all(&dest).map_err(|e| Self::io(&dest, e))?;
        }
        fs::rename(staging, &dest).map_err(|e| Self::io(&dest, e))?;
        let rec = ImageRecord {
            name: m.name.clone(),
            version: m.version.clone(),
            sha256: sha256.to_string(),
            manifest: manifest_text.to_string(),
            imported_at_ms: now_ms(),
            bytes: bytes as i64,
        };
        if let Err(e) = db.insert_image(&rec) {
            let _ = fs::remove_dir_all(&dest);
            let _ = fs::remove_dir(parent);
            return Err(e.into());
        }
        info!(image = %m.name, version = %m.version, sha256, "image imported");
        Ok(Imported::New(rec))
    }

    /// The record and parsed manifest of an imported image.
    pub fn get(
        &self,
        db: &Db,
        name: &str,
        version: &str,
    ) -> Result<Option<(ImageRecord, Manifest)>, ImageError> {
        let Some(rec) = db.image(name, version)? else {
            return Ok(None);
        };
        let m = Manifest::parse_valid(&rec.manifest).map_err(|e| ImageError::BadRecord {
            name: name.into(),
            version: version.into(),
            detail: e.to_string(),
        })?;
        Ok(Some((rec, m)))
    }

    /// Removes an image unless it is in use.
    pub fn remove(&self, db: &mut Db, name: &str, version: &str) -> Result<(), ImageError> {
        db.delete_image_if_unused(name, version)?;
        let dir = self.state.image(name, version);
        fs::remove_dir_all(&dir).map_err(|e| Self::io(&dir, e))?;
        if let Some(parent) = dir.parent() {
            let _ = fs::remove_dir(parent); // only if now empty
        }
        info!(image = name, version, "image removed");
        Ok(())
    }

    /// Removes what an interrupted import or removal left: staging dirs
    /// and trees without a record. Returns what it removed.
    pub fn recover(&self, db: &Db) -> Result<Vec<PathBuf>, ImageError> {
        let images = self.state.images();
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(&images) else {
            return Ok(removed);
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(".staging-") {
                // `.staging-<pid>-<random>`: leave an import that is still
                // running in another process alone.
                let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                if owner.is_some_and(|pid| {
                    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
                }) {
                    continue;
                }
                fs::remove_dir_all(&path).map_err(|e| Self::io(&path, e))?;
                removed.push(path);
                continue;
            }
            if !path.is_dir() {
                continue;
            }
            for v in fs::read_dir(&path)
                .map_err(|e| Self::io(&path, e))?
                .flatten()
            {
                let version = v.file_name().to_string_lossy().into_owned();
                if db.image(&name, &version)?.is_none() {
                    let p = v.path();
                    fs::remove_dir_all(&p).map_err(|e| Self::io(&p, e))?;
                    removed.push(p);
                }
            }
            let _ = fs::remove_dir(&path);
        }
        for p in &removed {
            warn!(path = %p.display(), "removed what an interrupted image import left");
        }
        Ok(removed)
    }
}

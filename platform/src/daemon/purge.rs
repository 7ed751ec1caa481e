//! Purging a removed instrument's data (`outpostctl purge`, asked over
//! D-Bus and done by the actor, so nothing starts the instrument meanwhile).

use std::fs;
use std::path::Path;

use crate::db::Db;
use crate::paths::StateDir;
use crate::runtime::acl;

/// Why a purge was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("instrument name {0}")]
    BadName(String),
    #[error(
        "instrument {0} is still in the desired state (fix: remove it from the desired state, let outpostd remove it, then purge)"
    )]
    Wanted(String),
    #[error("instrument {0} still exists (fix: wait until outpostd has removed it, then purge)")]
    Exists(String),
    #[error("cannot remove {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot update the ACL of {}: {source}", path.display())]
    Acl {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Deletes an instrument's persistent storage, logs and host ids; what it
/// removed. Refused while the instrument is in the desired state or has a
/// status.
pub fn purge_data(st: &StateDir, db: &Db, name: &str) -> Result<Vec<String>, PurgeError> {
    if let Some(p) = outpost_protocol::names::name_problem(name) {
        return Err(PurgeError::BadName(p));
    }
    if let Some((_, spec)) = db.latest_desired()?
        && spec.instrument(name).is_some()
    {
        return Err(PurgeError::Wanted(name.into()));
    }
    if db.status(name)?.is_some() {
        return Err(PurgeError::Exists(name.into()));
    }
    let mut removed = Vec::new();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PurgeError::Io { path, source }
    };
    for dir in [st.persist_legacy(name), st.logs(name)] {
        if fs::symlink_metadata(&dir).is_ok() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
            removed.push(dir.display().to_string());
        }
    }
    let image = st.persist_image(name);
    if image.exists() {
        fs::remove_file(&image).map_err(io(&image))?;
        removed.push(image.display().to_string());
    }
    // Its host ids are free again once nothing it owned is left.
    if let Some(ids) = db.ids(name)? {
        for dir in [st.root().to_path_buf(), st.instances(), st.lxcpath()] {
            if dir.exists() {
                acl::revoke(&dir, ids.base).map_err(|source| PurgeError::Acl {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        db.free_ids(name)?;
        removed.push(format!("host ids {}-{}", ids.base, ids.last()));
    }
    Ok(removed)
}

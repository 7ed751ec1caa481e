//! The state directory and what lives where in it.
//!
//! ```text
//! <state>/
//!   outpostd.db               desired state, images, instrument status (SQLite)
//!   outpostd.lock             held (flock) by the running daemon
//!   images/<name>/<version>/  manifest.toml + rootfs/ (read-only lower dirs)
//!   images/.staging-*         imports in progress (removed on start)
//!   containers/<name>/        LXC config (lxcpath)
//!   instances/<name>/         upper/, work/, status/ of a defined container
//!   persist/<name>/           persistent storage; removed only by purge
//!   logs/<name>/              console.log (+ .1), lxc.log
//!   secrets/<name>.nkey       bus identities (0600); outpostd.nkey is the platform's
//!   nats/                     nats-server config, pid, log, port, JetStream store
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (and missing parents) and makes it `0700`: nothing under
/// the state directory is for other host users, and an instrument's files
/// must not be reachable from the host by anyone but root.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Paths under one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("outpostd.db")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("outpostd.lock")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn image(&self, name: &str, version: &str) -> PathBuf {
        self.images().join(name).join(version)
    }
    pub fn lxcpath(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn instances(&self) -> PathBuf {
        self.root.join("instances")
    }
    pub fn instance(&self, name: &str) -> PathBuf {
        self.instances().join(name)
    }
    pub fn upper(&self, name: &str) -> PathBuf {
        self.instance(name).join("upper")
    }
    /// The overlay work dir LXC uses next to the upper dir.
    pub fn overlay_work(&self, name: &str) -> PathBuf {
        self.instance(name).join("work")
    }
    pub fn status_dir(&self, name: &str) -> PathBuf {
        self.instance(name).join("status")
    }
    pub fn persist(&self, name: &str) -> PathBuf {
        self.root.join("persist").join(name)
    }
    pub fn logs(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(name)
    }
    pub fn console_log(&self, name: &str) -> PathBuf {
        self.logs(name).join("console.log")
    }
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }
    pub fn nats(&self) -> PathBuf {
        self.root.join("nats")
    }
}

//! The state directory and what lives where in it.
//!
//! ```text
//! <state>/                    0700 (+ a search-only ACL entry per instrument root)
//!   outpostd.db               desired state, images, status, id ranges (SQLite)
//!   outpostd.lock             held (flock) by the running daemon
//!   images/<name>/<version>/  manifest.toml + rootfs/ (read-only lower dirs)
//!   images/.staging-*         imports in progress (removed on start)
//!   containers/<name>/        LXC config and seccomp policy (lxcpath)
//!   instances/<name>/         one defined container's tree, 0700 root:
//!     lower/                    the image, idmapped to the instrument's ids (mount)
//!     scratch/                  a tmpfs (16 MiB, its root's) holding the
//!       upper/ work/            overlay's upper and work dirs
//!     rootfs/                   the overlay (mount), with outpost-init, the
//!                               status dir, the bus key and persistent
//!                               storage bound into it: liblxc's rootfs
//!     status/                   a tmpfs (256 KiB, its root's): exit record, net-ready
//!     persist/                  persistent storage while mounted
//!   persist/<name>.ext4       persistent storage: an ext4 image of the
//!                             manifest's size; removed only by purge
//!   logs/<name>/              console.log (+ .1), lxc.log
//!   secrets/<name>.nkey       bus identities (0400, the instrument root's);
//!                             outpostd.nkey is the platform's
//!   nats/                     nats-server config, pid, log, port, JetStream store
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (and missing parents) and makes it `0700` for its owner
/// and others (group bits, which an ACL mask shows in, are kept): nothing under
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
    // Others get nothing; the group bits are left alone, as they show the
    // mask of a search-only ACL entry an instrument's root may have here.
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o7707 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700 | (mode & 0o070)))?;
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
    /// The artifacts installed for instrument `name` (its `/run/artifacts`).
    pub fn artifacts(&self, name: &str) -> PathBuf {
        self.root.join("artifacts").join(name)
    }
    /// The overlay upper dir of a defined container (on its scratch
    /// tmpfs).
    pub fn upper(&self, name: &str) -> PathBuf {
        self.instance(name).join("scratch/upper")
    }
    /// Where the image is mounted, idmapped, as the overlay's lower layer.
    pub fn lower_mount(&self, name: &str) -> PathBuf {
        self.instance(name).join("lower")
    }
    /// The container's root tree, handed to liblxc.
    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.instance(name).join("rootfs")
    }
    /// outpost-init's status directory (writable by the instrument).
    pub fn status_dir(&self, name: &str) -> PathBuf {
        self.instance(name).join("status")
    }
    /// Where persistent storage is mounted while the container exists.
    pub fn persist_mount(&self, name: &str) -> PathBuf {
        self.instance(name).join("persist")
    }
    pub fn persist_root(&self) -> PathBuf {
        self.root.join("persist")
    }
    /// The ext4 image holding an instrument's persistent storage.
    pub fn persist_image(&self, name: &str) -> PathBuf {
        self.persist_root().join(format!("{name}.ext4"))
    }
    /// Persistent storage as a plain directory, as outpostd before user
    /// namespaces kept it; migrated into the image at the next start.
    pub fn persist_legacy(&self, name: &str) -> PathBuf {
        self.persist_root().join(name)
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

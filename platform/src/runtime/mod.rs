//! Running containers: the narrow seam between outpostd and the kernel.
//!
//! [`Runtime`] is what the daemon needs from a container runtime: define,
//! start, observe, stop and destroy containers by name. [`lxc::LxcRuntime`]
//! is the real one (liblxc through [`ffi`]); the container's LXC config is
//! produced by the pure [`lxc_config`] module from a [`ContainerSpec`], and
//! its root tree (an idmapped, overlaid image with outpostd's mounts in it)
//! is built by [`rootfs`], with persistent storage from [`storage`] and
//! search permissions from [`acl`].

pub mod acl;
#[cfg(test)]
pub mod fake;
pub mod ffi;
pub mod idmap;
pub mod lxc;
pub mod lxc_config;
pub mod rootfs;
pub mod spec_hash;
pub mod storage;

use std::path::PathBuf;
use std::time::Duration;

use crate::db::IdRange;
pub use storage::PersistSpec;

/// Everything needed to build one instrument's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Container name (= instrument name).
    pub name: String,
    /// The image's shared read-only rootfs (overlay lower layer).
    pub lower: PathBuf,
    /// The instance directory the container's tree is built in (see
    /// [`rootfs`]); emptied at every start.
    pub instance: PathBuf,
    /// Directories above `instance` its root must be able to search.
    pub search: Vec<PathBuf>,
    /// Persistent storage, bind-mounted at `/var/lib/instrument`.
    pub persist: PersistSpec,
    /// The host ids its user namespace maps to; `None` runs it as host
    /// root with dropped capabilities (only the benchmark's comparison).
    pub ids: Option<IdRange>,
    /// The static `outpost-init`, bind-mounted read-only at `/.outpost/init`.
    pub init: PathBuf,
    /// The instrument's bus credentials (nkey seed), bind-mounted read-only
    /// at `/.outpost/nats.nkey`.
    pub nkey: PathBuf,
    /// Console log (stdout and stderr of the instrument), rotated by size.
    pub console_log: PathBuf,
    pub console_log_size: u64,
    /// liblxc's own log for this container (warnings and errors).
    pub lxc_log: PathBuf,
    /// The entrypoint, run by outpost-init.
    pub entrypoint: Vec<String>,
    /// Environment of the instrument.
    pub env: Vec<(String, String)>,
    /// Capabilities kept (lowercase, no `cap_`); all others are dropped.
    pub capabilities: Vec<String>,
    pub memory_bytes: u64,
    /// CPU in cores (0.5 = half a core).
    pub cpu: f64,
    pub pids: u32,
    /// Size of the tmpfs at `/run/instrument`.
    pub transient_bytes: u64,
    /// The interface bindings, canonical JSON (empty: none). With any, the
    /// entrypoint waits until outpostd has put them in place.
    pub bindings: String,
    /// The artifacts installed for it, bind-mounted read-only at
    /// `/run/artifacts` (an instrument that consumes none has none).
    pub artifacts: Option<PathBuf>,
}

impl ContainerSpec {
    /// The tmpfs that holds the overlay's writable layer.
    pub fn scratch(&self) -> PathBuf {
        self.instance.join("scratch")
    }
    /// The overlay's writable layer.
    pub fn upper(&self) -> PathBuf {
        self.scratch().join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.scratch().join("work")
    }
    /// Where the (idmapped) image is mounted as the lower layer.
    pub fn lower_mount(&self) -> PathBuf {
        self.instance.join("lower")
    }
    /// The root tree liblxc gets.
    pub fn rootfs(&self) -> PathBuf {
        self.instance.join("rootfs")
    }
    /// outpost-init's status directory, `/.outpost/status` inside.
    pub fn status_dir(&self) -> PathBuf {
        self.instance.join("status")
    }
    /// Where persistent storage is mounted on the host.
    pub fn persist_mount(&self) -> PathBuf {
        self.instance.join("persist")
    }
}

/// Size of the tmpfs that holds what an instrument writes to its root
/// filesystem (outside its storage): emptied at every start, and counted
/// against its memory limit, so writing there never fills the host's disk.
pub const ROOTFS_WRITABLE_BYTES: u64 = 16 << 20;

/// Size of the status directory's tmpfs: outpost-init writes a record of
/// a few dozen bytes there.
pub const STATUS_DIR_BYTES: u64 = 256 << 10;

/// The file outpost-init waits for when an instrument has interfaces.
pub const NET_READY: &str = "net-ready";

impl ContainerSpec {
    /// The argv of the container's init.
    pub fn init_argv(&self) -> Vec<String> {
        let mut argv = vec![
            "/.outpost/init".to_string(),
            "--status-dir".into(),
            "/.outpost/status".into(),
        ];
        if !self.bindings.is_empty() {
            argv.push("--wait-for".into());
            argv.push(format!("/.outpost/status/{NET_READY}"));
        }
        argv.push("--".into());
        argv.extend(self.entrypoint.iter().cloned());
        argv
    }
}

/// What the runtime sees of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// No such container is defined.
    Absent,
    /// Defined but not running.
    Stopped,
    /// Running, with its init's host PID.
    Running { init_pid: i32 },
}

/// Runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {name}: {detail}")]
    Container { name: String, detail: String },
    #[error("container {name}: cannot write {path}: {source}")]
    Io {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// liblxc started it, but its init had already exited when the start
    /// returned: an exit (its record says how), not a failure to start.
    #[error("container {name}: its init exited before the start returned")]
    ExitedAtOnce { name: String },
    #[error("container {name}: {source}")]
    Rootfs {
        name: String,
        source: rootfs::RootfsError,
    },
}

/// The operations outpostd needs from a container runtime. Blocking: call
/// from a blocking thread.
pub trait Runtime: Send + Sync + 'static {
    /// Writes the container's definition (replacing an old one).
    fn define(&self, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    /// Builds the container's root tree and starts it; returns its init's
    /// host PID, or [`RuntimeError::ExitedAtOnce`] when init already ended
    /// (its exit record is then in the status directory).
    fn start(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError>;
    /// What the container is doing now.
    fn observe(&self, name: &str) -> Result<Observed, RuntimeError>;
    /// The spec hash the definition was written from, if defined by us.
    fn defined_hash(&self, name: &str) -> Option<String>;
    /// Stops it: `halt` signal to init, then a kill after `grace`.
    fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Waits until a container whose init exited is fully stopped.
    fn wait_stopped(&self, name: &str, timeout: Duration) -> bool;
    /// Removes the definition and the root tree of a stopped container
    /// (persistent storage stays in its image).
    fn destroy(&self, name: &str) -> Result<(), RuntimeError>;
    /// Names of every defined container.
    fn list(&self) -> Result<Vec<String>, RuntimeError>;
}

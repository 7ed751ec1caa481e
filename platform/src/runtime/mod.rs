//! Running containers: the narrow seam between outpostd and the kernel.
//!
//! [`Runtime`] is what the daemon needs from a container runtime: define,
//! start, observe, stop and destroy containers by name. [`lxc::LxcRuntime`]
//! is the real one (liblxc through [`ffi`]); the container's LXC config is
//! produced by the pure [`lxc_config`] module from a [`ContainerSpec`].

pub mod ffi;
pub mod lxc;
pub mod lxc_config;

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Everything needed to build one instrument's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Container name (= instrument name).
    pub name: String,
    /// The image's shared read-only rootfs (overlay lower dir).
    pub lower: PathBuf,
    /// Per-instrument overlay upper dir; emptied at every start.
    pub upper: PathBuf,
    /// Host directory bind-mounted at `/var/lib/instrument`.
    pub persist: PathBuf,
    /// Host directory bind-mounted at `/.outpost/status`, where
    /// outpost-init records the exit status.
    pub status_dir: PathBuf,
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
}

/// The file outpost-init waits for when an instrument has interfaces.
pub const NET_READY: &str = "net-ready";

impl ContainerSpec {
    /// A short hash of everything that needs a new container when it
    /// changes. Config bodies are not in it: they are delivered live.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("{self:?}").as_bytes());
        hex::encode(&h.finalize()[..12])
    }

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
}

/// The operations outpostd needs from a container runtime. Blocking: call
/// from a blocking thread.
pub trait Runtime: Send + Sync + 'static {
    /// Writes the container's definition (replacing an old one).
    fn define(&self, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    /// Starts a defined container; returns its init's host PID.
    fn start(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError>;
    /// What the container is doing now.
    fn observe(&self, name: &str) -> Result<Observed, RuntimeError>;
    /// The spec hash the definition was written from, if defined by us.
    fn defined_hash(&self, name: &str) -> Option<String>;
    /// Stops it: `halt` signal to init, then a kill after `grace`.
    fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Waits until a container whose init exited is fully stopped.
    fn wait_stopped(&self, name: &str, timeout: Duration) -> bool;
    /// Removes the definition of a stopped container.
    fn destroy(&self, name: &str) -> Result<(), RuntimeError>;
    /// Names of every defined container.
    fn list(&self) -> Result<Vec<String>, RuntimeError>;
}

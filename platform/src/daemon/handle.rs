//! The daemon's way in and out: [`Command`]s on one channel (those that
//! need an answer carry a reply channel), the [`Handle`] with typed async
//! methods, and the status [`Snapshot`] the actor publishes after every
//! command so that no question waits behind work.

use std::collections::BTreeMap;
use std::sync::Arc;

use outpost_protocol::messages::StorageUse;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Applied, ApplyError, Change, RetentionError, RetentionState};
use crate::db::{InstrumentStatus, Origin, Refusal, RetentionRun};
use crate::health;

/// What the daemon is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Re-read the sensor file.
    Reload,
    /// An instrument's init exited (sent by its watcher).
    Exited { name: String, generation: u64 },
    /// An exited instrument is fully stopped and its exit record read
    /// (sent by the job `Exited` started).
    ExitCollected {
        name: String,
        exit: crate::supervisor::ExitRecord,
        ran_for: std::time::Duration,
    },
    /// A start job ended: the container's init pid, or why not.
    Started {
        name: String,
        spec: Box<crate::runtime::ContainerSpec>,
        started: Result<i32, crate::runtime::RuntimeError>,
        /// A restart after an exit (counted in `restarts`).
        restarting: bool,
        /// It was crash-looping.
        looping: bool,
    },
    /// A stop job ended (sent by the job).
    StopDone {
        name: String,
        exit: crate::supervisor::ExitRecord,
    },
    /// Reconcile now (a restart is due).
    Wake,
    /// A provider announced an artifact (`artifact-fetched`).
    ArtifactAnnounced {
        from: String,
        payload: serde_json::Value,
        /// Told once it is handled.
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// An artifact install job ended.
    ArtifactDone {
        job: Box<super::artifacts::Job>,
        result: Result<super::artifacts::Installed, super::artifacts::InstallError>,
    },
    /// A health check ended.
    Health {
        name: String,
        generation: u64,
        outcome: health::Outcome,
        latency_ms: Option<f64>,
        /// Persistent storage use, measured with the check.
        storage: Option<StorageUse>,
    },
    /// An instrument answered a config push.
    ConfigResult {
        name: String,
        generation: u64,
        version: i64,
        applied: bool,
        reason: Option<String>,
    },
    /// nats-server (this pid) ended.
    NatsExited { pid: i32 },
    /// A nats-server restart job ended: the new pid, or why not.
    NatsBack {
        started: Result<i32, String>,
        why: &'static str,
        took: std::time::Duration,
    },
    /// A desired-state change (see `intake`).
    Apply {
        change: Change,
        origin: Origin,
        force: bool,
        reply: oneshot::Sender<Result<Applied, ApplyError>>,
    },
    /// Stop an instrument's container and start it again, its desired
    /// state unchanged.
    Restart {
        name: String,
        reply: oneshot::Sender<Result<(), ApplyError>>,
    },
    /// Remove an imported image unless the desired state uses it.
    RemoveImage {
        name: String,
        version: String,
        reply: oneshot::Sender<Result<(), crate::images::ImageError>>,
    },
    /// Delete a removed instrument's storage, logs and host ids.
    Purge {
        name: String,
        reply: oneshot::Sender<Result<Vec<String>, super::purge::PurgeError>>,
    },
    /// Run retention on an instrument now; answered when the run ended.
    RetentionNow {
        name: String,
        /// The period to keep (default: the instrument's).
        older_than: Option<std::time::Duration>,
        reply: oneshot::Sender<Result<RetentionRun, RetentionError>>,
    },
    /// A retention run ended (sent by its job).
    RetentionDone { run: RetentionRun },
    /// Stop the daemon.
    Shutdown,
}

/// What the daemon answers status questions from: published after every
/// command, so a question never waits behind work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub desired_version: Option<i64>,
    /// The last desired state refused, while no newer one was accepted.
    pub refused: Option<Refusal>,
    pub fleet_managed: bool,
    /// The newest version, when it was made locally against the fleet.
    #[serde(default)]
    pub drift: Option<outpost_protocol::fleet::Drift>,
    pub instruments: Vec<InstrumentStatus>,
    /// Retention policy, schedule and last run of every instrument.
    #[serde(default)]
    pub retention: BTreeMap<String, RetentionState>,
}

/// The daemon has stopped (or is stopping): nothing more can be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outpostd is stopping and takes no more requests")]
pub struct Stopped;

/// A cloneable handle to the daemon: commands in, answers and the status
/// snapshot out.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) status: watch::Receiver<Arc<Snapshot>>,
}

impl Handle {
    /// Sends a command that needs no answer.
    pub async fn send(&self, c: Command) -> Result<(), Stopped> {
        self.tx.send(c).await.map_err(|_| Stopped)
    }

    /// Applies a desired state (see `intake`); the stored version, or why
    /// nothing was stored.
    pub async fn apply(
        &self,
        change: Change,
        origin: Origin,
        force: bool,
    ) -> Result<Applied, ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Apply {
            change,
            origin,
            force,
            reply,
        })
        .await
        .map_err(|e| ApplyError::Store(e.to_string()))?;
        answer
            .await
            .map_err(|_| ApplyError::Store(Stopped.to_string()))?
    }

    /// Restarts an instrument (stop, then start), its desired state
    /// unchanged; answers once it was stopped and started again.
    pub async fn restart(&self, name: String) -> Result<(), ApplyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Restart { name, reply })
            .await
            .map_err(|e| ApplyError::Store(e.to_string()))?;
        answer
            .await
            .map_err(|_| ApplyError::Store(Stopped.to_string()))?
    }

    /// Removes an image through the daemon, so that no change that uses
    /// it is validated meanwhile.
    pub async fn remove_image(
        &self,
        name: String,
        version: String,
    ) -> Result<Result<(), crate::images::ImageError>, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::RemoveImage {
            name,
            version,
            reply,
        })
        .await?;
        answer.await.map_err(|_| Stopped)
    }

    /// Purges a removed instrument through the daemon, so that it cannot
    /// be started again meanwhile; what was removed.
    pub async fn purge(
        &self,
        name: String,
    ) -> Result<Result<Vec<String>, super::purge::PurgeError>, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Purge { name, reply }).await?;
        answer.await.map_err(|_| Stopped)
    }

    /// Runs retention on an instrument now (`older_than`, or its period);
    /// the record of the run once it ended.
    pub async fn retention_now(
        &self,
        name: String,
        older_than: Option<std::time::Duration>,
    ) -> Result<RetentionRun, RetentionError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::RetentionNow {
            name,
            older_than,
            reply,
        })
        .await
        .map_err(|_| RetentionError::Stopped)?;
        answer.await.map_err(|_| RetentionError::Stopped)?
    }

    /// The latest status snapshot; never waits.
    pub fn status(&self) -> Arc<Snapshot> {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn watch_status(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.status.clone()
    }
}

//! The `org.outpost.Sensor1` interface: every method checks the caller
//! first, reads come from the status snapshot or the database, changes go
//! through the daemon's intake.

use std::sync::{Arc, Mutex};

use tracing::info;
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;

use super::auth::{Access, Caller, Groups, authorize};
use super::{SensorError, StatusReport};
use outpost_image::unpack::Progress;

use crate::daemon::{Change, Command, Handle};
use crate::db::{Db, Origin, Source};
use crate::images::{ImageError, ImageStore, Imported};
use crate::paths::StateDir;

/// The `org.outpost.Sensor1` object.
pub struct Sensor {
    handle: Handle,
    db: Arc<Mutex<Db>>,
    state: StateDir,
    events: super::events::Reader,
    link: crate::fleet::Link,
}

impl Sensor {
    pub(super) fn new(
        handle: Handle,
        db: Arc<Mutex<Db>>,
        state: StateDir,
        bus: crate::messaging::shared::SharedBus,
        link: crate::fleet::Link,
    ) -> Sensor {
        Sensor {
            handle,
            db,
            state,
            events: super::events::Reader::new(bus),
            link,
        }
    }

    /// Applies `change` for `caller` and answers (version, changed).
    async fn change(
        &self,
        caller: &Caller,
        change: Change,
        force: bool,
        reason: String,
    ) -> Result<(i64, bool), SensorError> {
        let origin = Origin::new(Source::Local, caller.to_string(), reason);
        let applied = self.handle.apply(change, origin, force).await?;
        Ok((applied.version, applied.changed))
    }
}

#[zbus::interface(name = "org.outpost.Sensor1")]
impl Sensor {
    /// The sensor's status as JSON (see `StatusReport`).
    async fn status(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        let snapshot = (*self.handle.status()).clone();
        // Interface counters are read now, in each running instrument's
        // namespace, for the bindings its desired state names.
        let desired = self.db.lock().expect("lock").latest_desired()?;
        let mut interfaces = std::collections::BTreeMap::new();
        for i in &snapshot.instruments {
            let bindings = desired
                .as_ref()
                .and_then(|(_, d)| d.instrument(&i.name))
                .map(|s| s.interfaces.clone())
                .unwrap_or_default();
            if let (Some(pid), false) = (i.init_pid, bindings.is_empty())
                && let Ok(st) = crate::network::statuses(pid, &bindings).await
            {
                interfaces.insert(i.name.clone(), st);
            }
        }
        let report = StatusReport {
            daemon_pid: std::process::id(),
            snapshot,
            interfaces,
            fleet: self.link.status(),
        };
        serde_json::to_string(&report).map_err(|e| SensorError::Failed(e.to_string()))
    }

    /// Applies a whole desired state (a sensor file's TOML); `label`
    /// names it in problems, `force` overrides a fleet, `reason` is kept
    /// with the version. Answers the version and whether it is new.
    async fn apply(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        text: String,
        label: String,
        force: bool,
        reason: String,
    ) -> Result<(i64, bool), SensorError> {
        let caller = caller(conn, &hdr, Access::Change).await?;
        let label = if label.is_empty() {
            "desired state".to_string()
        } else {
            label
        };
        self.change(&caller, Change::Whole { text, label }, force, reason)
            .await
    }

    /// The desired-state versions, newest first (JSON): source, author,
    /// reason and drift of each; at most `limit` (0: 50).
    async fn history(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        limit: u32,
    ) -> Result<String, SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        let limit = if limit == 0 { 50 } else { i64::from(limit) };
        let h = self.db.lock().expect("lock").desired_history(limit)?;
        serde_json::to_string(&h).map_err(|e| SensorError::Failed(e.to_string()))
    }

    /// An instrument's config versions, newest first (JSON), each with
    /// the origin of the desired-state version that brought it.
    async fn config_history(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
    ) -> Result<String, SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        super::ops::config_history(&self.db, &self.handle, &name)
    }

    /// Replaces an instrument's config body (JSON); it is checked against
    /// the image's schema before anything is stored.
    async fn set_config(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        body: String,
        force: bool,
        reason: String,
    ) -> Result<(i64, bool), SensorError> {
        let caller = caller(conn, &hdr, Access::Change).await?;
        let change = super::ops::config_change(name, &body)?;
        self.change(&caller, change, force, reason).await
    }

    /// Makes an old config version current again (as a new version).
    async fn rollback_config(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        version: i64,
        force: bool,
        reason: String,
    ) -> Result<(i64, bool), SensorError> {
        let caller = caller(conn, &hdr, Access::Change).await?;
        let (change, reason) = super::ops::rollback(&self.db, name, version, reason)?;
        self.change(&caller, change, force, reason).await
    }

    /// Starts (`true`) or stops (`false`) an instrument by changing its
    /// `enabled` in the desired state.
    async fn set_enabled(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        enabled: bool,
        force: bool,
        reason: String,
    ) -> Result<(i64, bool), SensorError> {
        let caller = caller(conn, &hdr, Access::Change).await?;
        let change = Change::Enabled {
            instrument: name,
            on: enabled,
        };
        self.change(&caller, change, force, reason).await
    }

    /// Stops an instrument's container and starts it again; answers once
    /// it was started.
    async fn restart(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
    ) -> Result<(), SensorError> {
        let caller = caller(conn, &hdr, Access::Change).await?;
        info!(instrument = %name, caller = %caller, "restart asked over D-Bus");
        self.handle.restart(name).await?;
        Ok(())
    }

    /// Up to `max` events of the `EVENTS` stream from sequence `since`
    /// on (0: the oldest kept), of one instrument and kind (empty: all),
    /// as JSON `[{seq, envelope}]`, and the sequence to ask from next.
    async fn events(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        since: u64,
        max: u32,
        instrument: String,
        kind: String,
    ) -> Result<(String, u64), SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        let (events, next) = self.events.read(since, max, &instrument, &kind).await?;
        let json =
            serde_json::to_string(&events).map_err(|e| SensorError::Failed(e.to_string()))?;
        Ok((json, next))
    }

    /// Deletes a removed instrument's persistent storage, logs and host
    /// ids; refused while it is in the desired state or still exists.
    /// Answers what was removed.
    async fn purge(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
    ) -> Result<Vec<String>, SensorError> {
        let who = caller(conn, &hdr, Access::Change).await?;
        info!(instrument = %name, caller = %who, "purge asked over D-Bus");
        use crate::daemon::purge::PurgeError;
        match self.handle.purge(name).await {
            Err(e) => Err(SensorError::Failed(e.to_string())),
            Ok(Ok(removed)) => Ok(removed),
            Ok(Err(
                e @ (PurgeError::BadName(_) | PurgeError::Wanted(_) | PurgeError::Exists(_)),
            )) => Err(SensorError::Invalid(e.to_string())),
            Ok(Err(e)) => Err(SensorError::Failed(e.to_string())),
        }
    }

    /// Runs retention on an instrument now: asks it to delete what is
    /// older than `older_than_s` seconds (0: its period), checks its
    /// storage, records the run and answers the record (JSON) once it
    /// ended.
    async fn run_retention(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        older_than_s: u64,
    ) -> Result<String, SensorError> {
        let who = caller(conn, &hdr, Access::Change).await?;
        info!(instrument = %name, caller = %who, "retention run asked over D-Bus");
        let older = (older_than_s > 0).then(|| std::time::Duration::from_secs(older_than_s));
        let run = self.handle.retention_now(name, older).await?;
        Ok(serde_json::to_string(&run).expect("a run serializes"))
    }

    /// Every instrument's retention policy, schedule and last run (JSON,
    /// by instrument).
    async fn retention_status(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        let snap = self.handle.status();
        Ok(serde_json::to_string(&snap.retention).expect("retention serializes"))
    }

    /// The recorded retention runs of one instrument ("" for all), newest
    /// first (JSON).
    async fn retention_history(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        max: u32,
    ) -> Result<String, SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        let runs = self.db.lock().expect("lock").retention_runs(
            (!name.is_empty()).then_some(name.as_str()),
            max.clamp(1, 1000),
        )?;
        Ok(serde_json::to_string(&runs).expect("runs serialize"))
    }

    /// Every imported image (JSON).
    async fn images(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        let images = self.db.lock().expect("lock").images()?;
        serde_json::to_string(&images).map_err(|e| SensorError::Failed(e.to_string()))
    }

    /// Imports the image archive the caller opened and passes as `archive`
    /// (a file descriptor: outpostd reads only what the caller could, never
    /// a path in its own name), if its sha256 is `sha256`: verified before
    /// anything is unpacked, placed atomically. `label` names it in
    /// messages and in the `ImportProgress` signals that report progress.
    /// Answers the record (JSON) and whether it is new.
    async fn import_image(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        archive: zbus::zvariant::OwnedFd,
        label: String,
        sha256: String,
    ) -> Result<(String, bool), SensorError> {
        let who = caller(conn, &hdr, Access::Change).await?;
        let expected = outpost_image::hash::parse_sha256(&sha256)
            .map_err(|e| SensorError::Invalid(format!("sha256 {sha256:?}: {e}")))?;
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(archive));
        match file.metadata() {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(SensorError::Invalid(format!(
                    "{label} is not a regular file (fix: give the path of an image archive)"
                )));
            }
        }
        info!(archive = %label, caller = %who, "image import asked over D-Bus");
        let path = label.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let state = self.state.clone();
        let fd_path = std::path::PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ));
        let shown = fd_path.display().to_string();
        // The import is slow (hash, unpack): a blocking job with its own
        // database connection, not the daemon's loop. The file stays open
        // (and its /proc path valid) until the job ends.
        let job = tokio::task::spawn_blocking(move || {
            let _open = &file;
            let db = Db::open(&state.db())?;
            ImageStore::new(&state).import(&db, &fd_path, &expected, |p| {
                let _ = tx.send(p);
            })
        });
        let mut last = (String::new(), u64::MAX);
        while let Some(p) = rx.recv().await {
            let (phase, done, total) = match p {
                Progress::Verifying { done, total } => ("verifying", done, total),
                Progress::Unpacking { entries, bytes } => ("unpacking", bytes, entries),
            };
            // A signal per 10% of the hash, per 4 MiB unpacked.
            let step = if phase == "verifying" {
                (done * 10).checked_div(total).unwrap_or(10)
            } else {
                done >> 22
            };
            if last.0 != phase || last.1 != step {
                last = (phase.to_string(), step);
                let _ = Sensor::import_progress(&emitter, &path, phase, done, total).await;
            }
        }
        let imported = job
            .await
            .map_err(|e| SensorError::Failed(format!("the import job failed: {e}")))?
            .map_err(|e| {
                let text = e.to_string().replace(&shown, &label);
                match e {
                    ImageError::Unpack(_) | ImageError::Conflict { .. } => {
                        SensorError::Invalid(format!("{label}: {text}"))
                    }
                    _ => SensorError::Failed(format!("{label}: {text}")),
                }
            })?;
        // Instruments that waited for this image can start now.
        let _ = self.handle.send(Command::Wake).await;
        let (rec, new) = match imported {
            Imported::New(r) => (r, true),
            Imported::AlreadyThere(r) => (r, false),
        };
        let json = serde_json::to_string(&rec).map_err(|e| SensorError::Failed(e.to_string()))?;
        Ok((json, new))
    }

    /// Removes an image; refused while the desired state uses it.
    async fn remove_image(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        version: String,
    ) -> Result<(), SensorError> {
        caller(conn, &hdr, Access::Change).await?;
        match self
            .handle
            .remove_image(name.clone(), version.clone())
            .await
        {
            Err(e) => Err(SensorError::Failed(e.to_string())),
            Ok(Ok(())) => Ok(()),
            Ok(Err(ImageError::Db(e @ crate::db::DbError::NoSuchImage { .. }))) => {
                Err(SensorError::NotFound(e.to_string()))
            }
            Ok(Err(e)) => Err(SensorError::Invalid(e.to_string())),
        }
    }

    /// An instrument's console log (its stdout and stderr) from byte
    /// `offset` of the current file (negative: that many bytes before its
    /// end), at most 256 KiB; answers the text and the offset to go on
    /// from (a smaller one than asked: the log was rotated).
    async fn logs(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        offset: i64,
    ) -> Result<(String, i64), SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        super::ops::logs(&self.state, &name, offset).await
    }

    /// An image import made progress: `phase` "verifying" (`done` of
    /// `total` bytes hashed) or "unpacking" (`done` bytes, `total`
    /// entries so far).
    #[zbus(signal)]
    pub(super) async fn import_progress(
        emitter: &SignalEmitter<'_>,
        path: &str,
        phase: &str,
        done: u64,
        total: u64,
    ) -> zbus::Result<()>;

    /// The daemon's status snapshot changed (state, health, versions).
    #[zbus(signal)]
    pub(super) async fn changed(
        emitter: &SignalEmitter<'_>,
        desired_version: i64,
    ) -> zbus::Result<()>;
}

/// The caller of the current message, as the bus daemon vouches for
/// it, if `access` allows the call.
pub(super) async fn caller(
    conn: &zbus::Connection,
    hdr: &Header<'_>,
    access: Access,
) -> Result<Caller, SensorError> {
    let sender = hdr
        .sender()
        .ok_or_else(|| SensorError::AccessDenied("a call without a sender".into()))?
        .to_owned();
    let creds = DBusProxy::new(conn)
        .await?
        .get_connection_credentials(BusName::Unique(sender.clone()))
        .await
        .map_err(|e| SensorError::Failed(format!("cannot read the caller's credentials: {e}")))?;
    let uid = creds.unix_user_id().ok_or_else(|| {
        SensorError::AccessDenied(format!(
            "the bus did not say which user {sender} is; refused"
        ))
    })?;
    let caller = Caller {
        sender: sender.to_string(),
        uid,
        gids: creds.unix_group_ids().cloned().unwrap_or_default(),
    };
    authorize(&caller, access, Groups::lookup())
        .map_err(|e| SensorError::AccessDenied(e.to_string()))?;
    Ok(caller)
}

//! One object per instrument under `/org/outpost/Sensor1/instrument/<name>`
//! (`-` in a name becomes `_`, as object paths want), interface
//! `org.outpost.Instrument1`: properties that emit `PropertiesChanged`
//! when the daemon's snapshot changes them, and methods to restart, start
//! and stop it, for its config (history, set, rollback), retention and
//! console log. Objects come and go with the instruments.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};
use zbus::message::Header;

use super::auth::Access;
use super::sensor::caller;
use super::{PATH, SensorError};
use crate::daemon::{Change, Handle, Snapshot};
use crate::db::{Db, InstrumentStatus, Origin, Source};
use crate::paths::StateDir;

/// The object path of instrument `name`.
pub fn path(name: &str) -> String {
    format!("{PATH}/instrument/{}", name.replace('-', "_"))
}

pub struct Instrument {
    handle: Handle,
    status: InstrumentStatus,
    db: Arc<Mutex<Db>>,
    state: StateDir,
}

impl Instrument {
    async fn enable(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        on: bool,
    ) -> Result<i64, SensorError> {
        let verb = if on { "Start" } else { "Stop" };
        let change = Change::Enabled {
            instrument: self.status.name.clone(),
            on,
        };
        let (v, _) = self
            .change(conn, hdr, change, false, format!("D-Bus {verb}"))
            .await?;
        Ok(v)
    }

    async fn change(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        change: Change,
        force: bool,
        reason: String,
    ) -> Result<(i64, bool), SensorError> {
        let who = caller(conn, hdr, Access::Change).await?;
        let origin = Origin::new(Source::Local, who.to_string(), reason);
        let a = self.handle.apply(change, origin, force).await?;
        Ok((a.version, a.changed))
    }
}

#[zbus::interface(name = "org.outpost.Instrument1")]
impl Instrument {
    #[zbus(property)]
    fn name(&self) -> String {
        self.status.name.clone()
    }

    /// Lifecycle state: pending, starting, running, stopping, stopped,
    /// exited, crashed, failed, backoff.
    #[zbus(property)]
    fn state(&self) -> String {
        self.status.state.to_string()
    }

    /// Why it is in that state.
    #[zbus(property)]
    fn state_detail(&self) -> String {
        self.status.detail.clone()
    }

    /// ok, degraded, failed, unresponsive, starting, stopped.
    #[zbus(property)]
    fn health(&self) -> String {
        self.status.health.clone()
    }

    /// The health message and details (JSON).
    #[zbus(property)]
    fn health_detail(&self) -> String {
        serde_json::json!({
            "message": self.status.health_message,
            "details": self.status.health_details,
        })
        .to_string()
    }

    /// The config version it last confirmed (-1: none yet).
    #[zbus(property)]
    fn applied_config_version(&self) -> i64 {
        self.status.config_applied.unwrap_or(-1)
    }

    /// The config version the desired state holds (-1: none).
    #[zbus(property)]
    fn desired_config_version(&self) -> i64 {
        self.status.config_version.unwrap_or(-1)
    }

    /// Host pid of its init (0: not running).
    #[zbus(property)]
    fn pid(&self) -> u32 {
        self.status.init_pid.map(|p| p as u32).unwrap_or(0)
    }

    #[zbus(property)]
    fn restarts(&self) -> u64 {
        u64::from(self.status.restarts)
    }

    /// Stops the container and starts it again; the desired state is
    /// unchanged.
    async fn restart(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), SensorError> {
        let who = caller(conn, &hdr, Access::Change).await?;
        info!(instrument = %self.status.name, caller = %who, "restart asked over D-Bus");
        self.handle.restart(self.status.name.clone()).await?;
        Ok(())
    }

    /// Enables it in the desired state; answers the new version.
    async fn start(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<i64, SensorError> {
        self.enable(conn, &hdr, true).await
    }

    /// Disables it in the desired state; answers the new version.
    async fn stop(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<i64, SensorError> {
        self.enable(conn, &hdr, false).await
    }

    /// Its config versions, newest first (JSON).
    async fn config_history(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        super::ops::config_history(&self.db, &self.handle, &self.status.name)
    }

    /// Replaces its config body (JSON), checked against the image's schema
    /// before anything is stored; answers (version, changed).
    async fn set_config(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        body: String,
        force: bool,
        reason: String,
    ) -> Result<(i64, bool), SensorError> {
        let change = super::ops::config_change(self.status.name.clone(), &body)?;
        self.change(conn, &hdr, change, force, reason).await
    }

    /// Makes config `version` current again (as a new version).
    async fn rollback_config(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        version: i64,
        force: bool,
        reason: String,
    ) -> Result<(i64, bool), SensorError> {
        caller(conn, &hdr, Access::Change).await?;
        let (change, reason) =
            super::ops::rollback(&self.db, self.status.name.clone(), version, reason)?;
        self.change(conn, &hdr, change, force, reason).await
    }

    /// Its console log from byte `offset` (negative: from the end), and
    /// the offset to go on from.
    async fn logs(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        offset: i64,
    ) -> Result<(String, i64), SensorError> {
        caller(conn, &hdr, Access::Read).await?;
        super::ops::logs(&self.state, &self.status.name, offset).await
    }

    /// Runs retention now (`older_than_s` 0: its period); answers the
    /// run's record (JSON) once it ended.
    async fn retention(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        older_than_s: u64,
    ) -> Result<String, SensorError> {
        let who = caller(conn, &hdr, Access::Change).await?;
        info!(instrument = %self.status.name, caller = %who, "retention run asked over D-Bus");
        let older = (older_than_s > 0).then(|| Duration::from_secs(older_than_s));
        let run = self
            .handle
            .retention_now(self.status.name.clone(), older)
            .await?;
        Ok(serde_json::to_string(&run).expect("a run serializes"))
    }
}

/// Keeps one object per instrument in step with the snapshot, and emits
/// `PropertiesChanged` for what changed (at most four times a second).
pub(super) async fn mirror(
    conn: zbus::Connection,
    handle: Handle,
    db: Arc<Mutex<Db>>,
    state: StateDir,
) {
    let mut rx = handle.watch_status();
    let mut have: BTreeMap<String, InstrumentStatus> = BTreeMap::new();
    let ctx = (handle.clone(), db, state);
    loop {
        let snap = rx.borrow_and_update().clone();
        sync(&conn, &ctx, &mut have, &snap).await;
        if rx.changed().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn sync(
    conn: &zbus::Connection,
    (handle, db, state): &(Handle, Arc<Mutex<Db>>, StateDir),
    have: &mut BTreeMap<String, InstrumentStatus>,
    snap: &Snapshot,
) {
    let server = conn.object_server();
    for st in &snap.instruments {
        let p = path(&st.name);
        let Some(old) = have.get(&st.name) else {
            let obj = Instrument {
                handle: handle.clone(),
                status: st.clone(),
                db: db.clone(),
                state: state.clone(),
            };
            if let Err(e) = server.at(p.as_str(), obj).await {
                warn!(instrument = %st.name, "cannot add its D-Bus object: {e}");
                continue;
            }
            have.insert(st.name.clone(), st.clone());
            continue;
        };
        if old == st {
            continue;
        }
        let Ok(iref) = server.interface::<_, Instrument>(p.as_str()).await else {
            continue;
        };
        let old = old.clone();
        {
            let mut obj = iref.get_mut().await;
            obj.status = st.clone();
        }
        let obj = iref.get().await;
        let em = iref.signal_emitter();
        let mut sent = Vec::new();
        if old.state != st.state {
            sent.push(obj.state_changed(em).await);
        }
        if old.detail != st.detail {
            sent.push(obj.state_detail_changed(em).await);
        }
        if old.health != st.health {
            sent.push(obj.health_changed(em).await);
        }
        if old.health_message != st.health_message || old.health_details != st.health_details {
            sent.push(obj.health_detail_changed(em).await);
        }
        if old.config_applied != st.config_applied {
            sent.push(obj.applied_config_version_changed(em).await);
        }
        if old.config_version != st.config_version {
            sent.push(obj.desired_config_version_changed(em).await);
        }
        if old.init_pid != st.init_pid {
            sent.push(obj.pid_changed(em).await);
        }
        if old.restarts != st.restarts {
            sent.push(obj.restarts_changed(em).await);
        }
        if let Some(Err(e)) = sent.into_iter().find(|r| r.is_err()) {
            warn!(instrument = %st.name, "cannot emit PropertiesChanged: {e}");
        }
        have.insert(st.name.clone(), st.clone());
    }
    let gone: Vec<String> = have
        .keys()
        .filter(|n| snap.instruments.iter().all(|i| &i.name != *n))
        .cloned()
        .collect();
    for name in gone {
        let _ = server.remove::<Instrument, _>(path(&name).as_str()).await;
        have.remove(&name);
    }
}

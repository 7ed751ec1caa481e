//! The `org.outpost.Sensor1` interface: every method checks the caller
//! first, reads come from the status snapshot or the database, changes go
//! through the daemon's intake.

use std::sync::Mutex;

use tracing::info;
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;

use super::auth::{Access, Caller, Groups, authorize};
use super::{SensorError, StatusReport};
use crate::daemon::{Change, Handle};
use crate::db::{Db, Origin, Source};

/// The `org.outpost.Sensor1` object.
pub struct Sensor {
    handle: Handle,
    db: Mutex<Db>,
}

impl Sensor {
    pub(super) fn new(handle: Handle, db: Db) -> Sensor {
        Sensor {
            handle,
            db: Mutex::new(db),
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
        let h = self.db.lock().expect("lock").config_history(&name)?;
        if h.is_empty()
            && self
                .handle
                .status()
                .instruments
                .iter()
                .all(|i| i.name != name)
        {
            return Err(SensorError::NotFound(format!(
                "no instrument {name} (fix: check the name with outpostctl instruments)"
            )));
        }
        serde_json::to_string(&h).map_err(|e| SensorError::Failed(e.to_string()))
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
        let body: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| SensorError::Invalid(format!("the config body is not JSON: {e}")))?;
        self.change(
            &caller,
            Change::Config {
                instrument: name,
                body,
            },
            force,
            reason,
        )
        .await
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
        let history = self.db.lock().expect("lock").config_history(&name)?;
        let Some(old) = history.iter().find(|c| c.version == version) else {
            let have: Vec<String> = history.iter().map(|c| c.version.to_string()).collect();
            return Err(SensorError::NotFound(format!(
                "instrument {name} has no config version {version} (it has: {}) \
                 (fix: see outpostctl config history {name})",
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                }
            )));
        };
        let reason = if reason.is_empty() {
            format!("rollback to config version {version}")
        } else {
            reason
        };
        let change = Change::Config {
            instrument: name,
            body: old.body.clone(),
        };
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

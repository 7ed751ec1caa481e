//! The local admin API: `org.outpost.Sensor1` at `/org/outpost/Sensor1`
//! on the system bus (or any bus `outpostd run --dbus` names), and the
//! client side `outpostctl` uses.
//!
//! Every method checks the caller's credentials from the bus daemon
//! ([`auth`]) before it asks the daemon anything. Reads are answered from
//! the daemon's status snapshot, so they never wait behind a stop; changes
//! go through the daemon's one intake (`Handle::apply`). The `Changed`
//! signal fires when the snapshot changes, at most four times a second.
//!
//! - [`auth`]: who may read and who may change.
//! - [`client`]: the proxy and the error names `outpostctl` maps to exit
//!   codes.

pub mod auth;
pub mod client;
pub mod events;
mod fleet;
pub mod instrument;
mod ops;
mod sensor;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use zbus::object_server::SignalEmitter;

use crate::daemon::{ApplyError, Handle, RetentionError, Snapshot};
use crate::db::{Db, DbError};
use crate::paths::StateDir;
use sensor::Sensor;

/// The service's well-known name, object path and interface.
pub const NAME: &str = "org.outpost.Sensor1";
pub const PATH: &str = "/org/outpost/Sensor1";

/// Errors a method answers with; the D-Bus error names are
/// `org.outpost.Sensor1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.outpost.Sensor1.Error")]
pub enum SensorError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller's credentials do not allow the call.
    AccessDenied(String),
    /// The desired state is invalid; every problem is in the message.
    Invalid(String),
    /// The sensor is fleet-managed and the change was not an override.
    FleetManaged(String),
    /// No such instrument or version.
    NotFound(String),
    /// Anything else (the daemon is stopping, the store failed).
    Failed(String),
}

impl From<ApplyError> for SensorError {
    fn from(e: ApplyError) -> SensorError {
        match e {
            ApplyError::Invalid(_) | ApplyError::Unreadable { .. } => {
                SensorError::Invalid(e.to_string())
            }
            ApplyError::FleetManaged(_) => SensorError::FleetManaged(e.to_string()),
            ApplyError::UnknownInstrument { .. } | ApplyError::NoDesiredState => {
                SensorError::NotFound(e.to_string())
            }
            ApplyError::Store(_) => SensorError::Failed(e.to_string()),
        }
    }
}

/// What `Status` answers (JSON): the snapshot and the daemon's pid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub daemon_pid: u32,
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// Bound interfaces of running instruments, by instrument, with their
    /// state and counters read at the call.
    #[serde(default)]
    pub interfaces: std::collections::BTreeMap<String, Vec<crate::network::InterfaceStatus>>,
    /// The link to the fleet, when enrolled.
    #[serde(default)]
    pub fleet: crate::fleet::LinkStatus,
}

impl From<RetentionError> for SensorError {
    fn from(e: RetentionError) -> SensorError {
        match e {
            RetentionError::Unknown(a) => a.into(),
            RetentionError::NoManifest { .. } => SensorError::NotFound(e.to_string()),
            RetentionError::Unsupported { .. }
            | RetentionError::Off { .. }
            | RetentionError::NotRunning { .. }
            | RetentionError::Busy { .. } => SensorError::Invalid(e.to_string()),
            RetentionError::Stopped => SensorError::Failed(e.to_string()),
        }
    }
}

impl From<DbError> for SensorError {
    fn from(e: DbError) -> SensorError {
        SensorError::Failed(e.to_string())
    }
}

/// Where the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    System,
    Address(String),
    None,
}

impl std::str::FromStr for BusChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<BusChoice, Self::Err> {
        Ok(match s {
            "system" => BusChoice::System,
            "none" => BusChoice::None,
            a => BusChoice::Address(a.to_string()),
        })
    }
}

/// Serves the API for `handle` on `bus` until the connection is dropped;
/// reads of history come from the state database at `db` (its own
/// connection, so they never wait behind the daemon). Failing to reach the
/// bus is not fatal to the daemon: instruments run on, and the error says
/// how to get the API back.
pub async fn serve(
    bus: &BusChoice,
    handle: Handle,
    state: &StateDir,
    shared_bus: crate::messaging::shared::SharedBus,
    link: crate::fleet::Link,
) -> Option<zbus::Connection> {
    let builder = match bus {
        BusChoice::None => return None,
        BusChoice::System => zbus::connection::Builder::system(),
        BusChoice::Address(a) => zbus::connection::Builder::address(a.as_str()),
    };
    let db = match Db::open(&state.db()) {
        Ok(db) => db,
        Err(e) => {
            warn!("cannot serve {NAME} on D-Bus: {e}");
            return None;
        }
    };
    let db = std::sync::Arc::new(std::sync::Mutex::new(db));
    let sensor = Sensor::new(
        handle.clone(),
        db.clone(),
        state.clone(),
        shared_bus,
        link.clone(),
    );
    let fleet = fleet::Fleet {
        link,
        db: db.clone(),
        state: state.clone(),
    };
    let built = async {
        builder?
            .name(NAME)?
            .serve_at(PATH, sensor)?
            .serve_at(PATH, fleet)?
            .build()
            .await
    }
    .await;
    let conn = match built {
        Ok(c) => c,
        Err(e) => {
            warn!(
                bus = ?bus,
                "cannot serve {NAME} on D-Bus: {e}; outpostctl cannot reach this daemon \
                 (fix: start the system bus, install platform/dbus/{NAME}.conf into \
                 /usr/share/dbus-1/system.d/, or pass --dbus ADDRESS)"
            );
            return None;
        }
    };
    info!(bus = ?bus, "serving {NAME} on D-Bus");
    tokio::spawn(instrument::mirror(
        conn.clone(),
        handle.clone(),
        db,
        state.clone(),
    ));
    tokio::spawn(signal_changes(conn.clone(), handle));
    Some(conn)
}

/// Emits `Changed` when the snapshot changes, at most four times a second.
async fn signal_changes(conn: zbus::Connection, handle: Handle) {
    let mut rx = handle.watch_status();
    let Ok(emitter) = SignalEmitter::new(&conn, PATH) else {
        return;
    };
    while rx.changed().await.is_ok() {
        let version = rx.borrow_and_update().desired_version.unwrap_or(0);
        if let Err(e) = Sensor::changed(&emitter, version).await {
            warn!("cannot emit Changed: {e}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

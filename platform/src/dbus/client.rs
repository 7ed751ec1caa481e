//! The client side of `org.outpost.Sensor1`, for `outpostctl`.

use std::process::ExitCode;

use super::{NAME, PATH};

#[zbus::proxy(
    interface = "org.outpost.Sensor1",
    default_service = "org.outpost.Sensor1",
    default_path = "/org/outpost/Sensor1"
)]
pub trait Sensor {
    fn status(&self) -> zbus::Result<String>;
    fn apply(
        &self,
        text: &str,
        label: &str,
        force: bool,
        reason: &str,
    ) -> zbus::Result<(i64, bool)>;
    fn config_history(&self, name: &str) -> zbus::Result<String>;
    fn history(&self, limit: u32) -> zbus::Result<String>;
    fn set_config(
        &self,
        name: &str,
        body: &str,
        force: bool,
        reason: &str,
    ) -> zbus::Result<(i64, bool)>;
    fn rollback_config(
        &self,
        name: &str,
        version: i64,
        force: bool,
        reason: &str,
    ) -> zbus::Result<(i64, bool)>;
    fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        force: bool,
        reason: &str,
    ) -> zbus::Result<(i64, bool)>;
    fn restart(&self, name: &str) -> zbus::Result<()>;
    fn images(&self) -> zbus::Result<String>;
    fn import_image(
        &self,
        archive: zbus::zvariant::Fd<'_>,
        label: &str,
        sha256: &str,
    ) -> zbus::Result<(String, bool)>;
    fn remove_image(&self, name: &str, version: &str) -> zbus::Result<()>;
    fn purge(&self, name: &str) -> zbus::Result<Vec<String>>;
    fn run_retention(&self, name: &str, older_than_s: u64) -> zbus::Result<String>;
    fn retention_status(&self) -> zbus::Result<String>;
    fn retention_history(&self, name: &str, max: u32) -> zbus::Result<String>;
    fn logs(&self, name: &str, offset: i64) -> zbus::Result<(String, i64)>;
    fn events(
        &self,
        since: u64,
        max: u32,
        instrument: &str,
        kind: &str,
    ) -> zbus::Result<(String, u64)>;
    #[zbus(signal)]
    fn import_progress(&self, path: &str, phase: &str, done: u64, total: u64) -> zbus::Result<()>;
    #[zbus(signal)]
    fn changed(&self, desired_version: i64) -> zbus::Result<()>;
}

/// Why a call failed, sorted by what the operator should do; each maps to
/// an exit code (sysexits.h).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "cannot reach outpostd over D-Bus at {bus}: {detail} (fix: start outpostd, check that \
         it serves {NAME} (outpostd run --dbus), or pass --bus ADDRESS)"
    )]
    Unreachable { bus: String, detail: String },
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    FleetManaged(String),
    #[error("{0}")]
    NotFound(String),
    #[error("outpostd failed: {0}")]
    Failed(String),
    /// The call worked; what it checked does not hold (a retention run
    /// that failed or left old data).
    #[error("{0}")]
    Unmet(String),
}

impl CallError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CallError::Unreachable { .. } => 69, // EX_UNAVAILABLE
            CallError::AccessDenied(_) => 77,    // EX_NOPERM
            CallError::Invalid(_) => 65,         // EX_DATAERR
            CallError::FleetManaged(_) => 75,    // EX_TEMPFAIL: ask the fleet
            CallError::NotFound(_) => 66,        // EX_NOINPUT
            CallError::Failed(_) => 70,          // EX_SOFTWARE
            CallError::Unmet(_) => 1,
        })
    }

    /// Sorts a zbus error by its D-Bus error name; `bus` names the bus
    /// for "unreachable".
    pub fn from_zbus(e: zbus::Error, bus: &str) -> CallError {
        if let zbus::Error::MethodError(name, msg, _) = &e {
            let msg = msg.clone().unwrap_or_default();
            let short = name.as_str().rsplit('.').next().unwrap_or_default();
            return match name.as_str() {
                n if n.starts_with("org.outpost.Sensor1.Error.") => match short {
                    "AccessDenied" => CallError::AccessDenied(msg),
                    "Invalid" => CallError::Invalid(msg),
                    "FleetManaged" => CallError::FleetManaged(msg),
                    "NotFound" => CallError::NotFound(msg),
                    _ => CallError::Failed(msg),
                },
                // The bus's own policy refused it before outpostd saw it.
                "org.freedesktop.DBus.Error.AccessDenied" => CallError::AccessDenied(format!(
                    "refused by the bus policy: {msg} (fix: run it as root, or add the user \
                     to group outpost (reads) or outpost-admin (changes))"
                )),
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => CallError::Unreachable {
                    bus: bus.to_string(),
                    detail: format!("nobody serves {NAME} ({msg})"),
                },
                _ => CallError::Failed(format!("{name}: {msg}")),
            };
        }
        CallError::Unreachable {
            bus: bus.to_string(),
            detail: e.to_string(),
        }
    }
}

#[zbus::proxy(
    interface = "org.outpost.Fleet1",
    default_service = "org.outpost.Sensor1",
    default_path = "/org/outpost/Sensor1"
)]
pub trait Fleet {
    fn enroll(&self, url: &str, token: &str, fingerprint: &str) -> zbus::Result<String>;
    fn status(&self) -> zbus::Result<String>;
    fn resend(&self, from: u64) -> zbus::Result<()>;
}

/// A connection to `bus` ("system" or an address) and a proxy on it.
pub async fn connect(bus: &str) -> Result<SensorProxy<'static>, CallError> {
    let unreachable = |e: zbus::Error| CallError::from_zbus(e, bus);
    let conn = match bus {
        "system" => zbus::Connection::system().await,
        a => {
            zbus::connection::Builder::address(a)
                .map_err(unreachable)?
                .build()
                .await
        }
    }
    .map_err(unreachable)?;
    SensorProxy::builder(&conn)
        .path(PATH)
        .map_err(unreachable)?
        .build()
        .await
        .map_err(unreachable)
}

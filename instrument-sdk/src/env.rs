//! What the platform passes to an instrument in its environment.

use std::path::PathBuf;

use crate::error::SdkError;

/// Where the bus credentials are inside an Outpost container.
pub const DEFAULT_NKEY_FILE: &str = "/.outpost/nats.nkey";
/// The loopback proxy outpostd opens in every instrument's namespace.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Events kept while the bus is unreachable.
pub const DEFAULT_EVENT_BUFFER: usize = 100_000;

/// The environment, read once at start.
#[derive(Debug, Clone)]
pub struct Env {
    pub instrument: String,
    pub sensor: String,
    pub nats_url: String,
    pub nkey_file: PathBuf,
    pub event_buffer: usize,
    pub persistent_dir: PathBuf,
    pub transient_dir: PathBuf,
}

fn required(var: &'static str) -> Result<String, SdkError> {
    let v = std::env::var(var).map_err(|_| SdkError::Env {
        var,
        problem: "is not set".into(),
    })?;
    if let Some(p) = outpost_protocol::names::name_problem(&v) {
        return Err(SdkError::Env { var, problem: p });
    }
    Ok(v)
}

impl Env {
    /// Reads `OUTPOST_INSTRUMENT`, `OUTPOST_SENSOR` (required),
    /// `OUTPOST_NATS_URL`, `OUTPOST_NATS_NKEY`, `OUTPOST_EVENT_BUFFER`,
    /// `OUTPOST_PERSISTENT_DIR` and `OUTPOST_TRANSIENT_DIR` (defaults for an
    /// Outpost container).
    pub fn from_environment() -> Result<Env, SdkError> {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let event_buffer = match std::env::var("OUTPOST_EVENT_BUFFER") {
            Ok(v) => v.parse().map_err(|_| SdkError::Env {
                var: "OUTPOST_EVENT_BUFFER",
                problem: format!("{v:?} is not a number"),
            })?,
            Err(_) => DEFAULT_EVENT_BUFFER,
        };
        Ok(Env {
            instrument: required("OUTPOST_INSTRUMENT")?,
            sensor: required("OUTPOST_SENSOR")?,
            nats_url: var("OUTPOST_NATS_URL", DEFAULT_NATS_URL),
            nkey_file: var("OUTPOST_NATS_NKEY", DEFAULT_NKEY_FILE).into(),
            event_buffer,
            persistent_dir: var("OUTPOST_PERSISTENT_DIR", crate::storage::PERSISTENT).into(),
            transient_dir: var("OUTPOST_TRANSIENT_DIR", crate::storage::TRANSIENT).into(),
        })
    }
}

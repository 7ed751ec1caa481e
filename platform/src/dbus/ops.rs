//! What `org.outpost.Sensor1` (by instrument name) and
//! `org.outpost.Instrument1` (on the instrument's own object) both answer:
//! config history, a config change, a rollback, the console log.

use std::sync::Mutex;

use super::SensorError;
use crate::daemon::{Change, Handle};
use crate::db::Db;
use crate::paths::StateDir;

/// Most bytes of a console log one `Logs` call answers.
const LOG_CHUNK: u64 = 256 << 10;

/// An instrument's config versions, newest first (JSON), each with the
/// origin of the desired-state version that brought it.
pub(super) fn config_history(
    db: &Mutex<Db>,
    handle: &Handle,
    name: &str,
) -> Result<String, SensorError> {
    let h = db.lock().expect("lock").config_history(name)?;
    if h.is_empty() && handle.status().instruments.iter().all(|i| i.name != name) {
        return Err(SensorError::NotFound(format!(
            "no instrument {name} (fix: check the name with outpostctl instruments)"
        )));
    }
    serde_json::to_string(&h).map_err(|e| SensorError::Failed(e.to_string()))
}

/// A new config body (JSON) for `name`, as a change for the intake.
pub(super) fn config_change(name: String, body: &str) -> Result<Change, SensorError> {
    let body: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| SensorError::Invalid(format!("the config body is not JSON: {e}")))?;
    Ok(Change::Config {
        instrument: name,
        body,
    })
}

/// The change that makes config `version` of `name` current again (a new
/// version with the old body), and the reason to record.
pub(super) fn rollback(
    db: &Mutex<Db>,
    name: String,
    version: i64,
    reason: String,
) -> Result<(Change, String), SensorError> {
    let history = db.lock().expect("lock").config_history(&name)?;
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
    Ok((change, reason))
}

/// An instrument's console log from byte `offset` of the current file
/// (negative: that many bytes before its end), at most 256 KiB, and the
/// offset to go on from (a smaller one than asked: the log was rotated).
pub(super) async fn logs(
    state: &StateDir,
    name: &str,
    offset: i64,
) -> Result<(String, i64), SensorError> {
    if let Some(p) = outpost_protocol::names::name_problem(name) {
        return Err(SensorError::Invalid(format!("instrument name {p}")));
    }
    let path = state.console_log(name);
    let read = tokio::task::spawn_blocking(move || read_log(&path, offset))
        .await
        .map_err(|e| SensorError::Failed(e.to_string()))?;
    match read {
        Ok(x) => Ok(x),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SensorError::NotFound(format!(
            "instrument {name} has no console log (has it ever started?)"
        ))),
        Err(e) => Err(SensorError::Failed(format!("console log of {name}: {e}"))),
    }
}

/// Up to [`LOG_CHUNK`] bytes of `path` from `offset` (negative: from the
/// end), and where to go on from.
fn read_log(path: &std::path::Path, offset: i64) -> std::io::Result<(String, i64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len() as i64;
    let start = if offset < 0 {
        (len + offset).max(0)
    } else if offset > len {
        0 // rotated since: start over on the new file
    } else {
        offset
    };
    f.seek(SeekFrom::Start(start as u64))?;
    let mut buf = Vec::new();
    f.take(LOG_CHUNK).read_to_end(&mut buf)?;
    let next = start + buf.len() as i64;
    Ok((String::from_utf8_lossy(&buf).into_owned(), next))
}

//! Payloads of the platform ↔ instrument messages, and their schema names.
//! Each travels inside an [`Envelope`](crate::envelope::Envelope) whose
//! `schema` is the constant next to the type.

use serde::{Deserialize, Serialize};

/// Schema names.
pub mod schema {
    pub const HEALTH_REQUEST: &str = "outpost.health-request/1";
    pub const HEALTH_REPLY: &str = "outpost.health/1";
    pub const CONFIG_REQUEST: &str = "outpost.config/1";
    pub const CONFIG_REPLY: &str = "outpost.config-result/1";
    pub const RETENTION_REQUEST: &str = "outpost.retention-request/1";
    pub const RETENTION_REPLY: &str = "outpost.retention-result/1";
    pub const ARTIFACT: &str = "outpost.artifact/1";
    pub const HEALTH_TRANSITION: &str = "outpost.health-transition/1";
    pub const CONFIG_RESULT: &str = "outpost.config-applied/1";
    pub const RPC_ERROR: &str = "outpost.rpc-error/1";
    pub const STORAGE_FULL: &str = "outpost.storage-full/1";
    pub const RETENTION_FAILED: &str = "outpost.retention-failed/1";
    pub const RETENTION_VIOLATED: &str = "outpost.retention-violated/1";
    /// An instrument crashed (sent to the fleet with the events).
    pub const CRASH_REPORT: &str = "outpost.crash-report/1";
    pub const ARTIFACT_INSTALLED: &str = "outpost.artifact-installed/1";
    pub const ARTIFACT_REFUSED: &str = "outpost.artifact-refused/1";
    /// The fleet link's local buffer is nearly full.
    pub const BACKLOG_HIGH: &str = "outpost.backlog-high/1";
    /// Events the local buffer dropped before the fleet had them.
    pub const EVENTS_DROPPED: &str = "outpost.events-dropped/1";
}

/// What an instrument says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Failed,
}

/// The platform's view of an instrument's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstrumentHealth {
    /// Started, not answered yet.
    Starting,
    Ok,
    Degraded,
    Failed,
    /// Did not answer within the timeout.
    Unresponsive,
    /// Not running, on purpose.
    Stopped,
    /// Not running, after a failure.
    Crashed,
}

impl From<HealthStatus> for InstrumentHealth {
    fn from(s: HealthStatus) -> Self {
        match s {
            HealthStatus::Ok => InstrumentHealth::Ok,
            HealthStatus::Degraded => InstrumentHealth::Degraded,
            HealthStatus::Failed => InstrumentHealth::Failed,
        }
    }
}

impl std::fmt::Display for InstrumentHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstrumentHealth::Starting => "starting",
            InstrumentHealth::Ok => "ok",
            InstrumentHealth::Degraded => "degraded",
            InstrumentHealth::Failed => "failed",
            InstrumentHealth::Unresponsive => "unresponsive",
            InstrumentHealth::Stopped => "stopped",
            InstrumentHealth::Crashed => "crashed",
        })
    }
}

/// Reply to a health request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReply {
    pub status: HealthStatus,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: serde_json::Value,
    /// The config version the instrument runs (0: none yet). The platform
    /// believes this over anything it remembers, so an instrument adopted
    /// after a crash of outpostd gets the config it is missing. `None` from
    /// an instrument that does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<u64>,
}

/// A config version pushed to an instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRequest {
    pub version: u64,
    pub config: serde_json::Value,
}

/// Whether the instrument applied a config version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReply {
    pub version: u64,
    pub applied: bool,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Delete what is older than `cutoff` (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRequest {
    pub cutoff: String,
}

/// What a retention run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReply {
    pub items: u64,
    pub bytes: u64,
    /// Files that could not be removed, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// When the oldest item left was last modified (RFC 3339); absent when
    /// nothing is left. The platform compares it with the cutoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_remaining: Option<String>,
}

/// Platform event: a retention run got no (valid) answer in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionFailed {
    pub instrument: String,
    /// The cutoff asked for (RFC 3339).
    pub cutoff: String,
    pub reason: String,
}

/// Platform event: after a retention run, data older than the cutoff is
/// still there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionViolated {
    pub instrument: String,
    /// The cutoff asked for (RFC 3339).
    pub cutoff: String,
    /// The oldest item left (RFC 3339).
    pub oldest_remaining: String,
    /// Who saw it: `instrument` (its own answer) or `platform` (the
    /// platform's walk of the instrument's storage).
    pub seen_by: String,
    /// What the instrument said it removed.
    pub items: u64,
    pub bytes: u64,
    /// What it said it could not remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A verified artifact was installed for the instrument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactNotice {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Where it is inside the container.
    pub path: String,
}

/// Platform event: an instrument's health changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTransition {
    pub instrument: String,
    pub from: InstrumentHealth,
    pub to: InstrumentHealth,
    #[serde(default)]
    pub message: String,
}

/// Platform event: an instrument applied or rejected a config version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigResult {
    pub instrument: String,
    pub version: u64,
    pub applied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How full an instrument's persistent storage is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageUse {
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

impl StorageUse {
    /// Full enough that writes fail: less than 1% (at least 64 KiB) free.
    pub fn is_full(&self) -> bool {
        self.free_bytes < (self.size_bytes / 100).max(64 << 10)
    }

    /// Room again after being full: more than 5% free.
    pub fn has_room(&self) -> bool {
        self.free_bytes > self.size_bytes / 20
    }
}

/// Platform event: an instrument's persistent storage is full; its writes
/// fail with ENOSPC until it (or retention) deletes something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageFull {
    pub instrument: String,
    #[serde(flatten)]
    pub usage: StorageUse,
}

/// Reply of an RPC handler that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        let r = HealthReply {
            status: HealthStatus::Degraded,
            message: "probe slow".into(),
            details: serde_json::json!({"last": 3}),
            config_version: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"status": "degraded", "message": "probe slow", "details": {"last": 3}})
        );
        let r: HealthReply = serde_json::from_str(r#"{"status":"ok","config_version":4}"#).unwrap();
        assert_eq!(r.config_version, Some(4));
        let c = ConfigReply {
            version: 3,
            applied: false,
            reason: Some("bad".into()),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"version":3,"applied":false,"reason":"bad"}"#
        );
        assert_eq!(InstrumentHealth::Unresponsive.to_string(), "unresponsive");
        assert_eq!(
            serde_json::to_string(&InstrumentHealth::Unresponsive).unwrap(),
            "\"unresponsive\""
        );
    }
}

/// What the platform reports when an instrument crashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    pub instrument: String,
    pub image: String,
    pub version: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub signal_name: Option<String>,
    /// The exit in words.
    pub detail: String,
    /// Restarts so far.
    pub restarts: u32,
    /// The last lines of its console log, unless the sensor file says
    /// `crash-report-logs = false`.
    pub log_tail: Option<Vec<String>>,
}

/// Lines of console log a crash report carries, and the longest line.
pub const CRASH_LOG_LINES: usize = 50;
pub const CRASH_LOG_LINE_MAX: usize = 1000;
